"""A Dask cluster of SLURM jobs (dask-jobqueue) running gemo's extraction.

    pip install 'gemo[dask]' dask-jobqueue
    python examples/slurm_cluster.py DATASET WORKDIR --jobs 4 [--partition cpu]
    python examples/slurm_cluster.py --print-job-script      # the sbatch script it submits

Each SLURM job runs one Dask worker process per core (one thread each); this process
stays the only writer of the caches and can run on the login node. The clips must be on a
filesystem the compute nodes share, under the same paths. Without dask-jobqueue, submit
examples/slurm/extract.sbatch instead (the whole extraction in one job).
"""

import argparse
import sys


def cluster(*, partition, cores, memory, walltime):
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        sys.exit("error: dask-jobqueue is not installed: pip install dask-jobqueue, "
                 "or submit examples/slurm/extract.sbatch")
    return SLURMCluster(queue=partition, cores=cores, processes=cores, memory=memory,
                        walltime=walltime, job_name="gemo-extract")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?")
    parser.add_argument("workdir", nargs="?", default="gemo-work")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (nodes) to start")
    parser.add_argument("--cores", type=int, default=8, help="cores (worker processes) per job")
    parser.add_argument("--memory", default="16GB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--print-job-script", action="store_true")
    args = parser.parse_args(argv)
    slurm = cluster(partition=args.partition, cores=args.cores, memory=args.memory,
                    walltime=args.walltime)
    if args.print_job_script:
        print(slurm.job_script())
        return
    if args.dataset is None:
        parser.error("give DATASET (or --print-job-script)")
    from dask_extract import extract

    with slurm:
        slurm.scale(jobs=args.jobs)
        for report in extract(args.dataset, args.workdir, slurm.scheduler_address):
            print(f"{report.feature_set}: {report.extracted} extracted, "
                  f"{len(report.failed)} failed")


if __name__ == "__main__":
    main()
