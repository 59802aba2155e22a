"""Extraction on a Dask cluster (docs/distributed.md): here a local cluster started by the
script, the same call as with a real one's scheduler address.

    pip install 'gemo[dask]'
    python examples/dask_extract.py DATASET WORKDIR [SCHEDULER]

With SCHEDULER (e.g. tcp://10.0.0.5:8786, or the address examples/slurm_cluster.py prints)
the clips go to that cluster; the workers need gemo installed and the clips under the same
paths. The command line does the same: gemo extract DATASET --executor dask --scheduler ADDR.
"""

import sys

from gemo import api


def extract(dataset, workdir, scheduler):
    return api.extract(workspace=api.Workspace(workdir), dataset=dataset,
                       sets=["frames", "pyaudio"], params={"frames": {"count": 3, "size": 64}},
                       executor="dask", scheduler=scheduler, progress=False)


def main(dataset, workdir, scheduler=None):
    if scheduler is None:
        from distributed import LocalCluster

        # One thread per worker process: the extractors run on one core each.
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster:
            reports = extract(dataset, workdir, cluster.scheduler_address)
    else:
        reports = extract(dataset, workdir, scheduler)
    for report in reports:
        print(f"{report.feature_set}: {report.extracted} extracted, {report.skipped} already "
              f"done, {len(report.failed)} failed")
    return reports


if __name__ == "__main__":
    main(*sys.argv[1:4])
