"""Throughput of `gemo extract` itself: all sets together, 1..N workers, start-up apart.

    python benchmarks/pipeline.py CLIPS [--workers 1,2] [--copies 3] [--json out.json]

Each run is `gemo extract --workers N` in a fresh process and a fresh
workspace, as a user would run it: worker start-up, each clip decoded once for
all sets, one writer. Every process gets OMP_NUM_THREADS=1, so N workers use N
cores (gemo's pool workers set this themselves; with one worker the work runs
in the main process, which would otherwise give torch every core). Start-up
(importing pyAudioAnalysis, openSMILE, facenet-pytorch and torch, loading the
networks) costs seconds once per run, which a 5-clip folder cannot hide. So
every worker count runs twice: over the folder once, and over ``--copies``
links to each clip (new ids, same content). The difference is pure clip work:

    steady real-time factor = (copies - 1) x media seconds / (wall(copies) - wall(1))

The links live in a temporary folder and are removed afterwards.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from media import media_seconds, videos  # benchmarks/media.py

ALL_SETS = "frames,pyaudio,egemaps,compare-lld,faces,fer,pose"  # pose needs gemo[pose]


def manifest(paths, copies, folder):
    """A CSV manifest of ``copies`` links to each clip (ids c0_name, c1_name, ...)."""
    folder.mkdir(parents=True)
    rows = []
    for copy in range(copies):
        for path in paths:
            link = folder / f"c{copy}_{path.name}"
            os.symlink(path.resolve(), link)
            rows.append({"path": link.name, "split": "test", "label": ""})
    target = folder / "manifest.csv"
    with open(target, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "split", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return target


def timed_run(paths, copies, workers, sets, params, scratch):
    folder = Path(tempfile.mkdtemp(dir=scratch))
    dataset = manifest(paths, copies, folder / "clips")
    command = [sys.executable, "-m", "gemo", "extract", str(dataset), "--workdir",
               str(folder / "work"), "--only", ",".join(sets), "--workers", str(workers), "--quiet"]
    for param in params:
        command += ["-p", param]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    took = time.perf_counter() - start
    if done.returncode not in (0, 3):  # 3: some clips failed (e.g. no audio), listed below
        raise SystemExit(f"gemo extract failed:\n{done.stderr}")
    report = (done.stdout + done.stderr).splitlines()  # gemo prints failed clips indented
    failed = sorted({line.split(":")[0].strip() for line in report
                     if line.startswith("  ") and ":" in line})
    return took, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sets", default=ALL_SETS)
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated worker counts (default: 1 and the machine's cores)")
    parser.add_argument("--copies", type=int, default=3, help="links per clip in the long run")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="SET.KEY=VALUE",
                        help="extractor parameter passed to gemo extract, e.g. -p faces.count=5")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = videos(args.folder)
    if not paths:
        parser.error(f"no video files in {args.folder}")
    if args.copies < 2:
        parser.error("--copies must be at least 2")
    sets = args.sets.split(",")
    seconds = media_seconds(paths)
    results = {"clips": len(paths), "media_seconds": round(seconds, 2), "sets": sets,
               "params": args.param,
               "copies": args.copies, "cpu_count": os.cpu_count(), "runs": {}}
    print(f"{len(paths)} clips, {seconds:.1f} s of media; sets {args.sets} {' '.join(args.param)}")
    print(f"{'workers':>7} {'wall x1':>8} {'RTF x1':>7} {'wall x' + str(args.copies):>8} "
          f"{'steady RTF':>10} {'start-up':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for workers in (int(w) for w in args.workers.split(",")):
            once, failed = timed_run(paths, 1, workers, sets, args.param, scratch)
            many, _ = timed_run(paths, args.copies, workers, sets, args.param, scratch)
            per_pass = (many - once) / (args.copies - 1)  # clip work of one pass over the folder
            row = {"wall_once_s": round(once, 2), "rtf_once": round(seconds / once, 2),
                   f"wall_x{args.copies}_s": round(many, 2),
                   "steady_s_per_pass": round(per_pass, 2),
                   "steady_rtf": round(seconds / per_pass, 2),
                   "startup_s": round(once - per_pass, 2), "failed_clips": failed}
            results["runs"][str(workers)] = row
            print(f"{workers:7d} {once:7.2f}s {row['rtf_once']:6.1f}x {many:7.2f}s "
                  f"{row['steady_rtf']:9.1f}x {row['startup_s']:7.2f}s")
    runs = results["runs"]
    if "1" in runs and len(runs) > 1:
        most = max(runs, key=int)
        results["speedup"] = {
            "steady": round(runs["1"]["steady_s_per_pass"] / runs[most]["steady_s_per_pass"], 2),
            "once": round(runs["1"]["wall_once_s"] / runs[most]["wall_once_s"], 2)}
        print(f"{most} workers vs 1: {results['speedup']['steady']:.2f}x steady, "
              f"{results['speedup']['once']:.2f}x on a single pass")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
