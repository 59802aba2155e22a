"""Training time of `gemo train` alone and beside a competing CPU load (issue 10).

    python benchmarks/train.py [--threads default,1,2] [--runs audio:pyaudio,scene:frames]
                               [--epochs 20] [--repeat 1] [--workdir DIR] [--json out.json]

Makes the demo's synthetic dataset (24 train clips per class, 5 s) and extracts
the feature sets the runs need, in a temporary folder (or in ``--workdir``,
kept and reused as it is, which saves that step on the next call). Each run is
`gemo train MODALITY --features SET --folds 0 --epochs E --patience E` in a
fresh process, so every run does the same work: one training of E epochs, then
scoring. ``default`` leaves GEMO_THREADS unset (gemo's own choice); a number
sets it.

Every setting runs alone, then beside a competing load: a process spinning on
one CPU (the last one this process may use), as another job on a shared
machine would. The load stops itself after ``--timeout`` seconds and is killed
when the run ends; a run still going after ``--timeout`` seconds is killed and
reported as such. The figure is the time of `train()` itself as the model's
config.json records it (imports apart), with the thread count it recorded;
the wall time of the process is in the JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gemo
from gemo.data.synth import make_dataset

# Spins on one CPU until killed, or until its deadline if this script dies first.
LOAD = """import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""


def prepare(folder, runs, clips_per_class, duration):
    """The synthetic dataset and the caches of ``runs``' feature sets under ``folder``."""
    data, work = folder / "data", folder / "work"
    if not (data / "synth.json").exists():
        make_dataset(data, clips_per_class=clips_per_class, duration=duration, seed=0,
                     workers=os.cpu_count() or 1)
    sets = sorted({features for _, features in runs})
    done = subprocess.run([sys.executable, "-m", "gemo", "extract", str(data), "--workdir",
                           str(work), "--only", ",".join(sets), "--quiet"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gemo extract failed:\n{done.stderr}")
    return work


def timed_train(work, modality, features, threads, epochs, timeout):
    """Wall seconds, train() seconds and recorded threads of one `gemo train` (None: timed out)."""
    env = {key: value for key, value in os.environ.items() if key != "GEMO_THREADS"}
    if threads != "default":
        env["GEMO_THREADS"] = threads
    command = [sys.executable, "-m", "gemo", "train", modality, "--features", features,
               "--workdir", str(work), "--folds", "0", "--epochs", str(epochs),
               "--patience", str(epochs), "--quiet"]
    config = work / "models" / f"{modality}-{features}" / "config.json"
    config.unlink(missing_ok=True)  # the run's own figures, never an earlier run's
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"wall_s": None, "train_s": None, "threads": None}
    wall = time.perf_counter() - start
    if done.returncode != 0 or not config.exists():
        raise SystemExit(f"gemo train failed:\n{done.stderr}")
    config = json.loads(config.read_text())
    return {"wall_s": round(wall, 2), "train_s": config["summary"]["seconds"],
            "threads": config["hyperparameters"]["threads"]}


def beside_load(timeout, function, *args):
    """``function(*args)`` while another process keeps one CPU busy."""
    cpu = max(os.sched_getaffinity(0))
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(cpu), str(timeout + 10)])
    try:
        time.sleep(0.5)  # the load is spinning before the run starts
        return function(*args)
    finally:
        load.kill()
        load.wait()


def show(value, timeout):
    return f">{timeout:.0f}s" if value is None else f"{value:.2f}s"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="default",
                        help="comma-separated settings: default (GEMO_THREADS unset) or a count")
    parser.add_argument("--runs", default="audio:pyaudio,scene:frames",
                        help="comma-separated MODALITY:SET to train")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting")
    parser.add_argument("--clips-per-class", type=int, default=24)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds after which a run (and the load) is stopped")
    parser.add_argument("--workdir", type=Path,
                        help="scratch folder for the dataset and workspace, kept and reused")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs = [tuple(run.split(":")) for run in args.runs.split(",")]
    settings = args.threads.split(",")
    for setting in settings:
        if setting != "default" and not setting.isdigit():
            parser.error(f"--threads takes 'default' or thread counts, not {setting!r}")
    results = {"gemo": str(Path(gemo.__file__).parent),  # which checkout the runs used
               "cpu_count": os.cpu_count(), "cpus": len(os.sched_getaffinity(0)),
               "epochs": args.epochs, "clips_per_class": args.clips_per_class,
               "duration": args.duration, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
               "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.workdir or Path(scratch)
        started = time.perf_counter()
        work = prepare(folder, runs, args.clips_per_class, args.duration)
        print(f"dataset and caches ready in {time.perf_counter() - started:.0f} s; "
              f"{args.epochs} epochs, {results['cpus']} CPUs")
        print(f"{'run':<14} {'setting':>8} {'threads':>7} {'alone':>9} {'beside load':>12}")
        for modality, features in runs:
            for setting in settings:
                for _ in range(args.repeat):
                    run = (work, modality, features, setting, args.epochs, args.timeout)
                    alone = timed_train(*run)
                    loaded = beside_load(args.timeout, timed_train, *run)
                    key = f"{modality}-{features}"
                    results["runs"].setdefault(key, {}).setdefault(setting, []).append(
                        {"alone": alone, "loaded": loaded})
                    threads = alone["threads"] or loaded["threads"] or "-"
                    print(f"{key:<14} {setting:>8} {threads!s:>7} "
                          f"{show(alone['train_s'], args.timeout):>9} "
                          f"{show(loaded['train_s'], args.timeout):>12}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
