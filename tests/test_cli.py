"""The command line's contract: results on stdout, progress and errors on stderr, one-line
errors that say what to run, nothing created by a command that only reads."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from gemo import api, fusion
from gemo.cli import cli
from gemo.data.index import Clip, DatasetIndex, index_dataset
from gemo.data.media import MediaError, read_audio, read_frames
from gemo.scores import ScoreTable, save_scores
from gemo.workspace import Workspace


def invoke(*args):
    """Run gemo; stdout and stderr are kept apart (``result.stdout``, ``result.stderr``)."""
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def extracted(synth_data, tmp_path_factory):
    """``(workdir, result)`` of `gemo extract` of the pyaudio set, progress on, no terminal."""
    work = tmp_path_factory.mktemp("cli") / "work"
    result = invoke("extract", synth_data, "--only", "pyaudio", "--workers", 1, "--workdir", work)
    assert result.exit_code == 0, result.output
    return work, result


@pytest.mark.parametrize("workdir", [None, "typo"])
@pytest.mark.parametrize("command", ["extract", "info", "train audio --features pyaudio", "fuse",
                                     "evaluate"])
def test_fresh_workdir_one_line_naming_what_to_run_and_nothing_created(command, workdir, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEMO_WORKDIR", raising=False)
    result = invoke(*command.split(), *(["--workdir", workdir] if workdir else []))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "`gemo extract DATASET`" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_info_on_a_missing_workdir_says_there_is_no_workspace(tmp_path):
    result = invoke("info", "--workdir", tmp_path / "typo")
    assert result.exit_code == 2
    assert f"no workspace at {tmp_path / 'typo'}" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_extract_progress_in_a_log_is_lines_and_the_report_is_on_stdout(extracted, synth_data):
    _, result = extracted
    clips = len(index_dataset(synth_data).clips)
    progress = [line for line in result.stderr.splitlines() if line.startswith("pyaudio: ")]
    assert len(progress) >= 2, result.stderr  # some lines along the way, one at the end
    assert progress[-1].startswith(f"pyaudio: {clips}/{clips} clips (100%)")
    assert "clips/s" in progress[-1] and "elapsed" in progress[-1]
    assert result.stdout.splitlines() == [f"pyaudio: {clips} extracted, 0 already done, 0 failed"]


def test_info_table_goes_to_stdout_with_done_of_indexed_clips(extracted, synth_data):
    work, _ = extracted
    clips = len(index_dataset(synth_data).clips)
    result = invoke("info", "--workdir", work)
    assert result.exit_code == 0 and result.stderr == ""
    assert f"dataset {synth_data} (vgaf, {clips} clips)" in result.stdout
    assert f"{clips} of {clips}" in result.stdout and "pyaudio" in result.stdout
    info = json.loads(invoke("info", "--json", "--workdir", work).stdout)
    assert info["dataset"]["clips"] == clips and info["caches"][0]["done"] == clips


def test_training_in_a_log_leaves_a_line_per_ten_epochs(extracted, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted[0], work)
    result = invoke("train", "audio", "--features", "pyaudio", "--folds", 0, "--epochs", 25,
                    "--patience", 25, "--device", "cpu", "--workdir", work)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("audio-pyaudio-blstm-attention final: ")]
    assert [line.split(",")[0] for line in lines] == [
        "audio-pyaudio-blstm-attention final: 10/25 epochs (40%)", "audio-pyaudio-blstm-attention final: 20/25 epochs (80%)",
        "audio-pyaudio-blstm-attention final: 25/25 epochs (100%)"]
    assert "loss" in lines[0] and "best epoch" in lines[-1]
    assert str(work / "models" / "audio-pyaudio-blstm-attention" / "model.pt") in result.stdout
    assert "elapsed" not in result.stdout


def test_mel_is_extracted_and_trains_fusicals_cnn_blstm(synth_data, tmp_path):
    work = tmp_path / "work"
    result = invoke("extract", synth_data, "--only", "mel", "--workers", 1, "--workdir", work)
    assert result.exit_code == 0, result.output
    result = invoke("train", "audio", "--features", "mel", "--model", "cnn-blstm", "--folds", 0,
                    "--epochs", 3, "--device", "cpu", "--workdir", work)
    assert result.exit_code == 0, result.output
    assert str(work / "models" / "audio-mel-cnn-blstm" / "model.pt") in result.stdout


@pytest.mark.parametrize("command, after", [
    ("extract", "finished clips are kept; rerun to resume"),
    ("train", "nothing was written; rerun to start again"),
    ("fuse", "nothing was written; rerun to start again"),
])
def test_ctrl_c_says_what_the_command_leaves(command, after, monkeypatch, tmp_path):
    def interrupted(**options):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, command, interrupted)
    args = {"train": ["audio", "--features", "pyaudio"]}.get(command, [])
    result = invoke(command, *args, "--workdir", tmp_path)
    assert result.exit_code == 130
    assert result.stderr == f"interrupted: {after}\n"


def test_interrupted_training_writes_nothing(extracted, tmp_path, monkeypatch):
    from gemo.training import crossfit

    def interrupted(*args, **options):
        raise KeyboardInterrupt

    work = tmp_path / "work"
    shutil.copytree(extracted[0], work)
    monkeypatch.setattr(crossfit, "fit_model", interrupted)
    result = invoke("train", "audio", "--features", "pyaudio", "--folds", 0, "--workdir", work)
    assert result.exit_code == 130 and "nothing was written" in result.stderr
    assert sorted(path.name for path in work.iterdir()) == ["cache", "dataset.json"]


def test_help_texts_name_what_exists():
    from gemo import extractors

    features = " ".join(invoke("train", "--help").stdout.split()).replace("- ", "-")  # wrapped
    assert all(name in features for name in extractors.available()) and "fer" in features
    assert "audio, scene and face" in " ".join(invoke("demo", "--help").stdout.split())
    top = invoke("--help").stdout
    for step in ("gemo synth", "gemo extract", "gemo info", "gemo train", "gemo fuse",
                 "gemo evaluate", "gemo demo", "gemo inspect"):
        assert step in top


def test_label_less_train_folder_names_the_label_files_looked_for(synth_data, tmp_path):
    shutil.copytree(synth_data / "Train", tmp_path / "Train")
    with pytest.warns(UserWarning) as caught:
        index = index_dataset(tmp_path)
    text = " ".join(str(w.message) for w in caught)
    assert f"no Train_labels.txt or train_label.txt in {tmp_path}" in text
    assert "left out of training" in text
    assert not index.labelled("train")


def test_training_without_labels_says_how_to_give_them(extracted, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(extracted[0], work)
    workspace = Workspace(work)
    index = workspace.load_index()
    index.clips = [Clip(c.id, c.path, c.split, None, c.group) for c in index.clips]
    workspace.save_index(index)
    result = invoke("train", "audio", "--features", "pyaudio", "--workdir", work)
    assert result.exit_code == 2
    assert "no train clip has a label" in result.stderr and "Train_labels.txt" in result.stderr
    assert "usable" not in result.stderr


def test_broken_video_gives_a_plain_reason(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(20000))
    for read in (read_frames, read_audio):
        with pytest.raises(MediaError) as caught:
            read(path)
        assert caught.value.kind == "decode"
        assert str(caught.value) == ("not a video file or damaged: Invalid data found when "
                                     "processing input")


def test_inspect_report_goes_to_stdout(tmp_path, fer_weights):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\0" * 1000)
    result = invoke("inspect", path)
    assert result.exit_code == 3
    assert result.stdout.strip() == f"{path}: not a video file or damaged: Invalid data found " \
                                    "when processing input"


def test_weights_list_goes_to_stdout():
    result = invoke("weights", "list")
    assert result.exit_code == 0 and "fer.mini_xception" in result.stdout and result.stderr == ""


def _scores_workspace(root):
    """Two models' score tables on 15 labelled train and 6 val clips, fused by their mean."""
    rng = np.random.default_rng(0)
    clips = [Clip(f"{i}_1", f"/data/{i}_1.mp4", "train" if i < 15 else "val", i % 3, str(i))
             for i in range(21)]
    workspace = Workspace(root)
    workspace.save_index(DatasetIndex(str(root), "vgaf", clips))
    for name in ("audio", "scene"):
        probs = np.eye(3)[[c.label for c in clips]] + rng.random((len(clips), 3))
        save_scores(workspace.scores_path(name), ScoreTable(
            name, [c.id for c in clips], [c.split for c in clips],
            probs / probs.sum(1, keepdims=True), [c.split == "train" for c in clips]))
    fusion.fuse(workspace=workspace, method="mean", progress=False)
    return workspace


def test_evaluate_tables_on_stdout_progress_on_stderr(tmp_path):
    workspace = _scores_workspace(tmp_path / "work")
    result = invoke("evaluate", "--ablate", "--workdir", workspace.root)
    assert result.exit_code == 0, result.output
    assert "fusion-mean" in result.stdout and "without audio" in result.stdout
    assert f"wrote {workspace.reports_dir('val') / 'metrics.json'}" in result.stdout
    assert "ablation of fusion-mean: refitting without audio" in result.stderr
    assert "refitting" not in result.stdout


def test_evaluate_counts_group_sizes_from_the_cache_asked_for(tmp_path):
    from gemo.cache.store import FeatureCache

    workspace = _scores_workspace(tmp_path / "work")
    provenance = {"feature_set": "pose", "extractor_version": 2, "params": {}}
    with FeatureCache(workspace.cache_path("pose"), mode="a", provenance=provenance) as cache:
        for clip in workspace.load_index().split("val"):
            cache.write(clip.id, {"counts": np.array([6, 7], np.int32)},
                        fingerprint={"sha256": clip.id})
    result = invoke("evaluate", "--by", "group-size", "--workdir", workspace.root)
    assert result.exit_code == 2 and "extract the faces feature set" in result.stderr
    result = invoke("evaluate", "--by", "group-size", "--group-size-from", "pose",
                    "--workdir", workspace.root)
    assert result.exit_code == 0, result.output
    assert "persons per frame, pose cache" in " ".join(result.stdout.split())
    saved = json.loads((workspace.reports_dir("val") / "metrics.json").read_text())
    assert saved["by_group_size"]["counter"] == "pose"
    assert saved["by_group_size"]["counts"] == {"small": 0, "large": 6, "unknown": 0}
    result = invoke("evaluate", "--group-size-from", "pose", "--workdir", workspace.root)
    assert result.exit_code == 2 and "add --by group-size" in result.stderr


def test_help_takes_defaults_from_the_api_and_choices_from_the_registries():
    from gemo import fusion, models
    from gemo.models import backbones

    # Help wraps lines, long names at their hyphens.
    text = " ".join(invoke("train", "--help").stdout.split()).replace("- ", "-")
    assert "[default: 200]" in text and "[default: 0.001]" in text  # training.train's
    assert all(name in text for name in models.available())
    assert "one of: " + ", ".join(backbones.available()) in text
    assert "mobilenet_v2" in backbones.available()
    text = " ".join(invoke("fuse", "--help").stdout.split())
    assert "one of: " + ", ".join(fusion.available()) in text and "default: svm]" in text


def test_options_left_out_are_not_passed_so_the_api_defaults_apply(monkeypatch):
    from gemo import api

    calls = []
    monkeypatch.setattr(api, "fuse", lambda **kwargs: calls.append(kwargs) or {"name": "x"})
    assert invoke("fuse", "--models", "a, b").exit_code == 0
    assert calls[0]["models"] == ["a", "b"]
    assert not {"method", "seed", "inputs", "name"} & set(calls[0])


def test_class_weight_reaches_train_and_is_left_to_its_default_when_not_given(monkeypatch):
    from gemo import api

    text = " ".join(invoke("train", "--help").stdout.split())
    assert "--class-weight [none|balanced]" in text and "[default: none]" in text
    calls = []
    monkeypatch.setattr(api, "train", lambda **kwargs: calls.append(kwargs) or {"name": "x"})
    words = ["train", "audio", "--features", "egemaps", "--model", "svm"]
    assert invoke(*words, "--class-weight", "balanced").exit_code == 0
    assert invoke(*words).exit_code == 0
    assert calls[0]["class_weight"] == "balanced" and "class_weight" not in calls[1]
    result = invoke(*words, "--class-weight", "inverse")
    assert result.exit_code == 2 and "'inverse' is not one of 'none', 'balanced'" in result.output


def test_the_loop_options_reach_train_and_are_left_to_their_defaults_when_not_given(monkeypatch):
    from gemo import api

    text = " ".join(invoke("train", "--help").stdout.split())
    assert "--optimizer [adam|adamw|sgd] [default: adam]" in text
    assert "--schedule [none|cosine|step]" in text and "[default: 0.9]" in text
    calls = []
    monkeypatch.setattr(api, "train", lambda **kwargs: calls.append(kwargs) or {"name": "x"})
    words = ["train", "scene", "--features", "frames"]
    given = ["--optimizer", "sgd", "--momentum", "0.8", "--nesterov", "--weight-decay", "1e-4",
             "--label-smoothing", "0.2", "--schedule", "step", "--step-every", "5",
             "--step-factor", "0.5", "--backbone-lr-scale", "0.1", "--freeze-backbone", "--amp",
             "--full-train"]
    assert invoke(*words, *given).exit_code == 0
    assert invoke(*words).exit_code == 0
    assert {key: calls[0][key] for key in (
        "optimizer", "momentum", "nesterov", "weight_decay", "label_smoothing", "schedule",
        "step_every", "step_factor", "backbone_lr_scale", "freeze_backbone", "amp",
        "full_train")} == {
        "optimizer": "sgd", "momentum": 0.8, "nesterov": True, "weight_decay": 1e-4,
        "label_smoothing": 0.2, "schedule": "step", "step_every": 5, "step_factor": 0.5,
        "backbone_lr_scale": 0.1, "freeze_backbone": True, "amp": True, "full_train": True}
    assert not {"optimizer", "momentum", "weight_decay", "label_smoothing", "schedule",
                "step_every", "step_factor", "backbone_lr_scale"} & set(calls[1])
    assert not any(calls[1][key] for key in ("nesterov", "freeze_backbone", "amp", "full_train"))


def test_the_command_line_starts_without_torch():
    import subprocess
    import sys

    code = "import sys, gemo.cli; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_demo_refuses_too_few_clips_before_writing_anything(tmp_path):
    """5 clips a class would fail after synthesis and extraction, at the SVM fusion."""
    result = invoke("demo", tmp_path / "demo", "--clips-per-class", 5)
    assert result.exit_code == 2
    assert "clips_per_class >= 6" in result.stderr
    assert not (tmp_path / "demo").exists()
