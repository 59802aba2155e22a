"""Killing extract at any moment loses nothing already completed; a rerun completes identically."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

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


def _contents(workdir):
    result = {}
    for name in SETS:
        with FeatureCache(Workspace(workdir).cache_path(name)) as cache:
            assert not cache.failures()
            result[name] = {clip_id: cache.read(clip_id) for clip_id in cache.ids()}
    return result


def test_sigkill_then_resume_gives_identical_caches(synth_data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(synth_data, reference), check=True, capture_output=True)
    expected = _contents(reference)

    interrupted = tmp_path / "interrupted"
    rng = random.Random(7)
    total = sum(len(clips) for clips in expected.values())
    progress = []
    for _ in range(3):
        process = subprocess.Popen(_command(synth_data, interrupted), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        workers = _descendants(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "worker processes outlived the killed run"
        progress.append(_done(interrupted))
    assert progress == sorted(progress) and 0 < progress[0] and progress[0] < total, progress
    subprocess.run(_command(synth_data, interrupted), check=True, capture_output=True)
    got = _contents(interrupted)

    assert got.keys() == expected.keys()
    for name in SETS:
        assert got[name].keys() == expected[name].keys(), name
        for clip_id, arrays in expected[name].items():
            assert got[name][clip_id].keys() == arrays.keys()
            for key, array in arrays.items():
                np.testing.assert_array_equal(got[name][clip_id][key], array,
                                              err_msg=f"{name}/{clip_id}/{key}")
