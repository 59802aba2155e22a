"""Throughput of `gemo extract` itself, as a user runs it: end to end and in steady state.

    python benchmarks/pipeline.py CLIPS [--match 'Test_*'] [--workers 1,2] [--copies 20]
                                        [--sets frames,faces] [--per-set] [--repeat 5]
                                        [--json out.json]

Each run is `gemo extract --workers N` in a fresh process and a fresh
workspace: start-up (imports, the workers' fork server, networks loading),
each clip decoded once for all sets, one writer. Every process gets
OMP_NUM_THREADS=1, so N workers use N cores (gemo's pool workers set this
themselves; with one worker the work runs in the main process). Every worker
count runs twice, over links to the clips under new ids (same content):

- once over the folder, and once over ``--copies`` links to each clip;
- **end to end** is the long run as a user sees it, start-up included:
  ``copies x media seconds / wall(copies)``;
- **steady state** is clip work alone, the difference of the two runs:
  ``(copies - 1) x media seconds / (wall(copies) - wall(1))``;
- **start-up** is what the single pass took beyond its share of clip work;
- **probe** is how long this process took to decode the clips once (best of three, one
  thread) just before the row: the machine's speed then. Compare rows whose probes agree.

``--per-set`` also runs each set alone (a set that reads another's cache, such
as fer, runs on a workspace where that set was extracted first, untimed), then
all of them together. The links live in a temporary folder, removed afterwards.

``--repeat N`` runs the whole table N times, row after row (so a slow minute of a
shared machine falls on different rows each time), then gives per row the lowest,
median and highest end-to-end and steady factors: on a shared machine, single runs
of the same code differ by a fifth or more.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from media import decode_probe, machine, media_seconds, videos  # benchmarks/media.py

from gemo import extractors

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


def gemo_extract(dataset, workdir, sets, workers, params):
    """Run `gemo extract` in a fresh process; seconds it took and the clips that failed."""
    command = [sys.executable, "-m", "gemo", "extract", str(dataset), "--workdir", str(workdir),
               "--only", ",".join(sets), "--workers", str(workers), "--quiet"]
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


def timed_run(paths, copies, workers, sets, params, scratch):
    """Seconds of `gemo extract --only sets` over ``copies`` links to each clip, in a fresh
    workspace where the sets they read (their ``requires``) were extracted first, untimed."""
    folder = Path(tempfile.mkdtemp(dir=scratch))
    dataset = manifest(paths, copies, folder / "clips")
    upstream = [name for name in dict.fromkeys(r for s in sets for r in extractors.get(s).requires)
                if name not in sets]
    if upstream:
        gemo_extract(dataset, folder / "work", upstream, workers,
                     [p for p in params if p.split(".")[0] in upstream])
    return gemo_extract(dataset, folder / "work", sets, workers, params)


def measure(paths, seconds, sets, workers, copies, params, scratch):
    once, failed = timed_run(paths, 1, workers, sets, params, scratch)
    many, _ = timed_run(paths, copies, workers, sets, params, scratch)
    per_pass = (many - once) / (copies - 1)  # clip work of one pass over the folder
    return {"wall_once_s": round(once, 2), f"wall_x{copies}_s": round(many, 2),
            "end_to_end_rtf": round(copies * seconds / many, 2),
            "steady_s_per_pass": round(per_pass, 2),
            "steady_rtf": round(seconds / per_pass, 2) if per_pass > 0 else None,
            "startup_s": round(once - per_pass, 2), "failed_clips": failed}


def label_of(group, sets):
    return ",".join(group) if len(group) < len(sets) or len(sets) == 1 else "all"


def spread(values, form):
    """``lowest / median / highest`` of ``values``, each written by ``form``: ``"{:.1f}x"``
    gives ``7.9x / 8.3x / 10.5x``."""
    if not values:
        return "n/a"
    return " / ".join(form.format(v) for v in (min(values), statistics.median(values), max(values)))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--match", default="*", metavar="GLOB",
                        help="only the videos whose file name matches, e.g. 'Test_*'")
    parser.add_argument("--sets", default=ALL_SETS)
    parser.add_argument("--per-set", action="store_true",
                        help="also run each set alone, before all of them together")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated worker counts (default: 1 and the machine's cores)")
    parser.add_argument("--copies", type=int, default=20,
                        help="links per clip in the long run (20 x 3 VGAF clips: 60 clips)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="SET.KEY=VALUE",
                        help="extractor parameter passed to gemo extract, e.g. -p faces.count=5")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the whole table N times, rows in turns, and summarise each row")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = videos(args.folder, args.match)
    if not paths:
        parser.error(f"no video files matching {args.match!r} in {args.folder}")
    if args.copies < 2:
        parser.error("--copies must be at least 2")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sets = args.sets.split(",")
    counts = [int(w) for w in args.workers.split(",")]
    groups = ([[name] for name in sets] if args.per_set and len(sets) > 1 else []) + [sets]
    seconds = media_seconds(paths)
    results = {"clips": [p.name for p in paths], "media_seconds": round(seconds, 2),
               "params": args.param, "copies": args.copies, "machine": machine(), "runs": []}
    print(", ".join(f"{key} {value}" for key, value in results["machine"].items()))
    print(f"{len(paths)} clips, {seconds:.1f} s of media; {args.copies} copies in the long run "
          f"({args.copies * len(paths)} clips) {' '.join(args.param)}")
    print(f"{'sets':<44} {'workers':>7} {'wall x1':>8} {'wall xN':>8} {'end to end':>10} "
          f"{'steady':>7} {'start-up':>8} {'probe':>6}")
    with tempfile.TemporaryDirectory() as scratch:
        for turn in range(args.repeat):
            for group in groups:
                for workers in counts:
                    probe = decode_probe(paths)
                    row = {"sets": group, "workers": workers, "turn": turn, "probe_s": round(probe, 3),
                           **measure(paths, seconds, group, workers, args.copies, args.param,
                                     scratch)}
                    results["runs"].append(row)
                    steady = f"{row['steady_rtf']:6.1f}x" if row["steady_rtf"] else "    n/a"
                    print(f"{label_of(group, sets):<44} {workers:7d} {row['wall_once_s']:7.2f}s "
                          f"{row[f'wall_x{args.copies}_s']:7.2f}s {row['end_to_end_rtf']:9.1f}x "
                          f"{steady} {row['startup_s']:7.2f}s {probe:5.2f}s", flush=True)
                rows = [r for r in results["runs"] if r["sets"] == group and r["turn"] == turn]
                if 1 in counts and len(counts) > 1:
                    one, most = rows[counts.index(1)], rows[counts.index(max(counts))]
                    print(f"{'':<44} {max(counts)} workers vs 1: "
                          f"{one[f'wall_x{args.copies}_s'] / most[f'wall_x{args.copies}_s']:.2f}x "
                          f"end to end, {one['steady_s_per_pass'] / most['steady_s_per_pass']:.2f}x "
                          f"steady")
    if args.repeat > 1:
        print(f"\nover {args.repeat} turns: lowest / median / highest")
        print(f"{'sets':<44} {'workers':>7} {'end to end':>23} {'steady':>23} {'probe':>20}")
        for group in groups:
            for workers in counts:
                rows = [r for r in results["runs"] if r["sets"] == group and r["workers"] == workers]
                print(f"{label_of(group, sets):<44} {workers:7d} "
                      f"{spread([r['end_to_end_rtf'] for r in rows], '{:.1f}x'):>23} "
                      f"{spread([r['steady_rtf'] for r in rows if r['steady_rtf']], '{:.1f}x'):>23} "
                      f"{spread([r['probe_s'] for r in rows], '{:.2f}s'):>20}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
