"""Peak memory of `gemo extract` against the number of clips (it should not grow).

    python benchmarks/memory.py [--clips 20,400] [--workers 2] [--json out.json]

Makes one synthetic dataset large enough for the biggest count, then runs
`gemo extract` (a subprocess, as a user would) on manifests of the first N clips,
sampling the resident memory (RSS) of the writer process and of each worker
from /proc every 50 ms. Prints the peaks per count and their ratio to the
smallest count's.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gemo.data.synth import make_dataset

ALL_SETS = "frames,pyaudio,egemaps,compare-lld,faces,fer"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE / 2**20
    except OSError:
        return 0.0


def children(pid):
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                kids = [int(k) for k in handle.read().split()]
        except OSError:
            kids = []
        found += kids
        queue += kids
    return found


def peak_memory(command):
    """Run ``command``; return its wall time and peak RSS (MB) of itself, one worker, all."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    writer = worker = total = 0.0
    while process.poll() is None:
        own = rss_mb(process.pid)
        others = [rss_mb(pid) for pid in children(process.pid)]
        writer, worker = max(writer, own), max([worker, *others])
        total = max(total, own + sum(others))
        time.sleep(0.05)
    if process.returncode not in (0, 3):  # 3: some clips failed, reported by gemo
        raise SystemExit(f"gemo extract failed:\n{process.stderr.read().decode()}")
    return time.perf_counter() - start, writer, worker, total


def manifest(clips, count, target):
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", "label"])
        for path in clips[:count]:
            writer.writerow([str(path), "train", 1])
    return target


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default="20,400", help="comma-separated clip counts")
    parser.add_argument("--sets", default=ALL_SETS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.clips.split(","))
    results = {"sets": args.sets, "workers": args.workers, "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        # Three classes, each with clips_per_class train clips and half as many val and test.
        data = make_dataset(scratch / "data", clips_per_class=math.ceil(counts[-1] / 6) + 1, seed=1,
                            duration=2.0, width=160, height=120, workers=os.cpu_count() or 1)
        clips = sorted(data.rglob("*.mp4"))
        assert len(clips) >= counts[-1], len(clips)
        print(f"{len(clips)} synthetic clips made in {time.perf_counter() - started:.0f} s")
        print(f"{'clips':>6} {'wall':>7} {'writer MB':>10} {'worker MB':>10} {'total MB':>9}")
        for count in counts:
            command = [sys.executable, "-m", "gemo", "extract",
                       str(manifest(clips, count, scratch / f"{count}.csv")),
                       "--workdir", str(scratch / f"work{count}"), "--only", args.sets,
                       "--workers", str(args.workers), "--quiet"]
            took, writer, worker, total = peak_memory(command)
            results["runs"][str(count)] = {"wall_s": round(took, 1), "writer_mb": round(writer),
                                           "worker_mb": round(worker), "total_mb": round(total)}
            print(f"{count:6d} {took:6.1f}s {writer:10.0f} {worker:10.0f} {total:9.0f}")
    small, large = results["runs"][str(counts[0])], results["runs"][str(counts[-1])]
    results["ratio_total"] = round(large["total_mb"] / small["total_mb"], 3)
    results["ratio_writer"] = round(large["writer_mb"] / small["writer_mb"], 3)
    print(f"peak at {counts[-1]} clips / peak at {counts[0]}: total "
          f"{results['ratio_total']:.2f}, writer {results['ratio_writer']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
