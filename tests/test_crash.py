"""Killing extract at any moment loses nothing already completed; a rerun completes identically."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gemo.cache.store import FeatureCache
from gemo.workspace import Workspace

SETS = ["frames", "pyaudio", "egemaps"]


def _command(dataset, workdir):
    return [sys.executable, "-m", "gemo", "extract", str(dataset), "--workdir", str(workdir),
            "--only", ",".join(SETS), "-p", "frames.size=48", "--workers", "2", "--quiet"]


def _descendants(pid):
    """Pids of a process's children and their children (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        try:
            children = open(f"/proc/{current}/task/{current}/children").read().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        queue += [int(c) for c in children]
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _done(workdir):
    total = 0
    for name in SETS:
        path = Workspace(workdir).cache_path(name)
        if path.exists():
            with FeatureCache(path) as cache:  # a killed writer must leave a readable file
                total += len(cache.ids())
    return total


def _cache_bytes(workdir):
    """Bytes in the workspace's cache files: grows as the writer stores clips."""
    return sum(path.stat().st_size for path in Workspace(workdir).cache_dir.glob("*.h5"))


def _contents(workdir):
    result = {}
    for name in SETS:
        with FeatureCache(Workspace(workdir).cache_path(name)) as cache:
            assert not cache.failures()
            result[name] = {clip_id: cache.read(clip_id) for clip_id in cache.ids()}
    return result


def _kill_resume_compare(dataset, tmp_path, *, kills, seed):
    """Kill a 2-worker extract ``kills`` times, resume, compare with an uninterrupted run.

    Each kill comes at a random moment shortly after the caches start growing
    (start-up, spawning workers and importing libraries, takes seconds and
    varies with the machine's load), so it lands among clips being written. A
    kill that finds no new clip done is not counted. Returns the clips done
    after each counted kill.
    """
    reference = tmp_path / "reference"
    subprocess.run(_command(dataset, reference), check=True, capture_output=True)
    expected = _contents(reference)
    total = sum(len(clips) for clips in expected.values())

    interrupted = tmp_path / "interrupted"
    rng = random.Random(seed)
    progress, early = [0], 0
    while len(progress) <= kills:
        before = _cache_bytes(interrupted)
        process = subprocess.Popen(_command(dataset, interrupted), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _cache_bytes(interrupted) <= before and time.monotonic() < deadline:
            assert process.poll() is None, f"the run ended before kill {len(progress)}: {progress}"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        assert process.poll() is None, f"the run finished before kill {len(progress)}: {progress}"
        workers = _descendants(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "worker processes outlived the killed run"
        done = _done(interrupted)
        assert done >= progress[-1], (done, progress)
        if done == progress[-1]:  # killed while the caches were created, or mid-write
            early += 1
            assert early <= kills, f"{early} kills found no new clip: {progress}"
            continue
        assert done < total, f"kill {len(progress)} came after the run had finished: {progress}"
        progress.append(done)
    subprocess.run(_command(dataset, interrupted), check=True, capture_output=True)
    got = _contents(interrupted)

    assert got.keys() == expected.keys()
    for name in SETS:
        assert got[name].keys() == expected[name].keys(), name
        for clip_id, arrays in expected[name].items():
            assert got[name][clip_id].keys() == arrays.keys()
            for key, array in arrays.items():
                np.testing.assert_array_equal(got[name][clip_id][key], array,
                                              err_msg=f"{name}/{clip_id}/{key}")
    return progress[1:]


def test_sigkill_then_resume_gives_identical_caches(synth_data, tmp_path):
    _kill_resume_compare(synth_data, tmp_path, kills=3, seed=7)


@pytest.mark.slow
def test_twenty_sigkills_lose_nothing(tmp_path):
    """The issue's soak: 20 kills at random moments of a 2-worker run, each then resumed."""
    from gemo.data.synth import make_dataset

    dataset = make_dataset(tmp_path / "data", clips_per_class=20, seed=5, duration=2.0,
                           width=96, height=64)
    progress = _kill_resume_compare(dataset, tmp_path, kills=20, seed=11)
    print("clips done after each kill:", progress)
