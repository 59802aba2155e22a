"""End to end through the command line: synth -> extract -> train -> fuse -> evaluate."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gemo.cli import cli
from gemo.scores import load_scores
from gemo.workspace import Workspace


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data, work = root / "data", root / "work"
    _run("synth", data, "--clips-per-class", 8, "--duration", 2, "--seed", 4)
    _run("extract", data, "--workdir", work, "--only", "frames,pyaudio", "-p", "frames.size=64",
         "--workers", 1, "--quiet")
    for modality, features in (("audio", "pyaudio"), ("scene", "frames")):
        _run("train", modality, "--features", features, "--workdir", work, "--folds", 3,
             "--epochs", 40, "--patience", 8, "--quiet")
    _run("fuse", "--method", "svm", "--workdir", work, "--quiet")
    return work


def test_models_and_fusion_are_evaluated(trained, tmp_path):
    out = tmp_path / "m.json"
    text = _run("evaluate", "--split", "val", "--json", out, "--workdir", trained, "--quiet")
    metrics = json.loads(out.read_text())
    assert set(metrics["models"]) == {"audio-pyaudio-blstm-attention", "scene-frames-frame-cnn", "fusion-svm"}
    for name, entry in metrics["models"].items():
        assert name in text
        assert entry["n"] == 12
        assert {"accuracy", "per_class", "confusion", "f1", "uar"} <= set(entry)
        assert np.sum(entry["confusion"]) == 12
        assert (Workspace(trained).reports_dir("val") / f"confusion-{name}.png").stat().st_size > 0
    # The planted sound is clear in 70% of clips: the audio model is far above chance (1/3).
    assert metrics["models"]["audio-pyaudio-blstm-attention"]["accuracy"] >= 0.6


def test_test_split_predictions_in_vgaf_format(trained):
    workspace = Workspace(trained)
    _run("evaluate", "--split", "test", "--workdir", trained, "--quiet")
    lines = (workspace.reports_dir("test") / "predictions-fusion-svm.txt").read_text().splitlines()
    assert lines[0] == "Vid_name Label"
    test_ids = sorted(c.id for c in workspace.load_index().split("test"))
    assert [line.split()[0] for line in lines[1:]] == test_ids
    assert {line.split()[1] for line in lines[1:]} <= {"1", "2", "3"}


def test_same_seed_same_scores(trained):
    before = load_scores(Workspace(trained).scores_path("audio-pyaudio-blstm-attention"))
    _run("train", "audio", "--features", "pyaudio", "--workdir", trained, "--folds", 3,
         "--epochs", 40, "--patience", 8, "--quiet")
    after = load_scores(Workspace(trained).scores_path("audio-pyaudio-blstm-attention"))
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_array_equal(before.probs, after.probs)


@pytest.mark.slow
def test_demo_fusion_beats_single_models(tmp_path):
    """README's first command: the SVM fusion is at least as accurate as the best single model,
    and the FC fusion of embeddings (one encoder per model) is within one clip of it."""
    from gemo.demo import run_demo
    from gemo.evaluation import evaluate
    from gemo.fusion import fuse

    result = run_demo(tmp_path, progress=False)
    accuracy = {name: entry["accuracy"] for name, entry in result["models"].items()}
    best = max(value for name, value in accuracy.items() if not name.startswith("fusion-"))
    assert accuracy["fusion-svm"] >= best
    workspace = Workspace(tmp_path / "work")
    fuse(workspace=workspace, method="fc", inputs="embeddings", progress=False)
    result = evaluate(workspace=workspace, split="val", progress=False)
    n = result["models"]["fusion-fc-embeddings"]["n"]
    assert result["models"]["fusion-fc-embeddings"]["accuracy"] >= best - 1 / n - 1e-9


@pytest.mark.slow
def test_demo_trains_the_same_models_side_by_side(tmp_path):
    """The demo's three trainings in 2 processes give the scores they give one after another."""
    from gemo.demo import MODELS, run_demo

    tables = {}
    for workers in (1, 2):
        run_demo(tmp_path / str(workers), clips_per_class=6, workers=workers, progress=False)
        workspace = Workspace(tmp_path / str(workers) / "work")
        tables[workers] = {path.name: load_scores(path)
                           for path in sorted(workspace.scores_dir.glob("*"))}
    assert len(tables[1]) == len(MODELS) + 1  # and the SVM fusion
    assert tables[1].keys() == tables[2].keys()
    for name, table in tables[1].items():
        np.testing.assert_array_equal(table.ids, tables[2][name].ids)
        np.testing.assert_array_equal(table.probs, tables[2][name].probs)
