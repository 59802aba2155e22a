"""gemo's CPU thread count (issue 10): one by default, ``$GEMO_THREADS`` to change it, for
torch and for the BLAS and OpenMP libraries, and the previous counts restored after.

Each test sets 3 threads beforehand, so a run that kept the process's counts
(torch's default is one per core) cannot pass for one that set them.
"""

import json

import pytest
import test_fusion
import test_training
import torch
from conftest import make_clip
from threadpoolctl import threadpool_info, threadpool_limits

from gemo import fusion, threads
from gemo.errors import GemoError
from gemo.extraction import executors, extract
from gemo.training import train
from gemo.workspace import Workspace

BEFORE = 3


def blas_threads():
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture
def three_threads(monkeypatch):
    """torch and the BLAS libraries at 3 threads, $GEMO_THREADS unset; restored after."""
    monkeypatch.delenv("GEMO_THREADS", raising=False)
    torch_before = torch.get_num_threads()
    torch.set_num_threads(BEFORE)
    try:
        with threadpool_limits(BEFORE, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(torch_before)


@pytest.mark.parametrize(("setting", "expected"), [(None, 1), ("2", 2), (" 2 ", 2)])
def test_training_uses_one_thread_unless_gemo_threads_says(setting, expected, tmp_path,
                                                            monkeypatch, three_threads):
    if setting is not None:
        monkeypatch.setenv("GEMO_THREADS", setting)
    workspace = test_training.make_workspace(tmp_path)
    train(workspace=workspace, modality="audio", features="pyaudio", folds=0,
          **{**test_training.FAST, "epochs": 2})
    config = json.loads((workspace.model_dir("audio-pyaudio-blstm-attention") / "config.json").read_text())
    assert config["hyperparameters"]["threads"] == expected
    assert torch.get_num_threads() == BEFORE and blas_threads() == {BEFORE}


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_bad_gemo_threads_is_a_clear_error(value, monkeypatch):
    monkeypatch.setenv("GEMO_THREADS", value)
    with pytest.raises(GemoError, match=f"GEMO_THREADS must be .* not '{value}': unset it"):
        threads.count()


def test_a_bad_gemo_threads_stops_training_and_changes_nothing(tmp_path, monkeypatch,
                                                               three_threads):
    workspace = test_training.make_workspace(tmp_path)
    monkeypatch.setenv("GEMO_THREADS", "0")
    deterministic = torch.are_deterministic_algorithms_enabled()
    with pytest.raises(GemoError, match="GEMO_THREADS"):
        train(workspace=workspace, modality="audio", features="pyaudio", folds=0,
              **test_training.FAST)
    assert not workspace.model_dir("audio-pyaudio-blstm-attention").joinpath("config.json").exists()
    assert torch.get_num_threads() == BEFORE
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_extraction_with_one_worker_runs_the_networks_at_gemo_threads(tmp_path, monkeypatch,
                                                                      three_threads):
    """With one worker the sets run in this process, where torch would take every core."""
    seen = []
    run_task = executors.run_task

    def recording(*args, **kwargs):
        seen.append((torch.get_num_threads(), blas_threads()))
        return run_task(*args, **kwargs)

    monkeypatch.setattr(executors, "run_task", recording)
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0)
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"path,split,label\n{clip},test,\n")
    extract(workspace=Workspace(tmp_path / "ws"), dataset=manifest, sets=["faces"], workers=1,
            progress=False)
    assert seen == [(1, {1})]
    assert torch.get_num_threads() == BEFORE and blas_threads() == {BEFORE}


def test_fusion_fits_at_gemo_threads(tmp_path, monkeypatch, three_threads):
    """The fc fuser's BLAS oversubscribed the cores too (docs/performance.md)."""
    seen = []
    fit = fusion.get("mean")._fit

    def recording(self, *args):
        seen.append(blas_threads())
        return fit(self, *args)

    monkeypatch.setattr(fusion.get("mean"), "_fit", recording)
    monkeypatch.setenv("GEMO_THREADS", "2")
    workspace, _ = test_fusion.make_workspace(tmp_path)
    fusion.fuse(workspace=workspace, method="mean")
    assert seen and all(counts == {2} for counts in seen)
    assert blas_threads() == {BEFORE}
