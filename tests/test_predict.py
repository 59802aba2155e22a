"""`gemo predict` and bundles: new files scored as evaluate scores, bundles portable and checked."""

import hashlib
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_clip
from gemo import api, extractors
from gemo.bundle import load_bundle
from gemo.cli import cli
from gemo.errors import GemoError
from gemo.labels import CLASSES
from gemo.scores import load_scores
from gemo.workspace import Workspace

AUDIO = "audio-pyaudio-blstm-attention"
SCENE = "scene-frames-frame-cnn"
FUSION = "fusion-svm"
QUICK = {"folds": 2, "patience": 3, "progress": False, "device": "cpu", "seed": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny workspace: pyaudio and frames extracted, an audio and a scene model, an SVM
    fusion, evaluated on val. Returns ``(workspace, data folder)``."""
    root = tmp_path_factory.mktemp("predict")
    data = api.synth(root / "data", clips_per_class=8, seed=5, duration=2.0, width=64, height=48,
                     workers=1)
    workspace = Workspace(root / "work")
    api.extract(workspace=workspace, dataset=data, sets=["pyaudio", "frames"], workers=1,
                params={"frames": {"count": 4, "size": 32}}, progress=False)
    api.train(workspace=workspace, modality="audio", features="pyaudio", epochs=6, hidden=8,
              attention_dim=8, **QUICK)
    api.train(workspace=workspace, modality="scene", features="frames", epochs=3, input_size=32,
              width=4, hidden=8, **QUICK)
    api.fuse(workspace=workspace, method="svm", progress=False)
    api.evaluate(workspace=workspace, split="val", progress=False)
    return workspace, Path(data)


def _apply(files, workspace, **kwargs):
    return api.apply(files=files, workspace=workspace, workers=1, device="cpu", progress=False,
                     **kwargs)


def _outcome(report):
    """What a prediction says, per file name: label, probabilities, votes, fusion notes."""
    return {Path(e["path"]).name: {key: e.get(key) for key in
                                   ("label", "probs", "votes", "imputed", "error")}
            for e in report["files"]}


def test_predictions_on_val_clips_equal_evaluate(trained):
    workspace, data = trained
    report = _apply([data / "Val"], workspace)
    index = {Path(c.path).resolve(): c.id for c in workspace.load_index().clips}
    assert report["fusions"] == [FUSION] and report["models"] == [AUDIO, SCENE]
    entries = {index[Path(e["path"]).resolve()]: e for e in report["files"]}
    val = [c.id for c in workspace.load_index().split("val")]
    assert sorted(entries) == sorted(val) and not any("error" in e for e in entries.values())
    reports = workspace.reports_dir("val")
    for name in (AUDIO, SCENE, FUSION):
        lines = (reports / f"predictions-{name}.txt").read_text().splitlines()[1:]
        expected = {clip_id: CLASSES[int(code) - 1] for clip_id, code in map(str.split, lines)}
        outcome = {clip_id: (e["fusions"] if name == FUSION else e["votes"])[name]
                   for clip_id, e in entries.items()}
        assert {clip_id: o["label"] for clip_id, o in outcome.items()} == expected
        table = load_scores(workspace.scores_path(name))
        row = {clip_id: i for i, clip_id in enumerate(table.ids)}
        for clip_id, o in outcome.items():
            np.testing.assert_allclose(list(o["probs"].values()), table.probs[row[clip_id]],
                                       atol=1e-6)
    speed = report["throughput"]
    assert speed["clips"] == len(val) and speed["extracted_now"] == len(val)
    assert speed["media_seconds"] == pytest.approx(2.0 * len(val), abs=0.5)
    assert speed["real_time_factor"] == pytest.approx(speed["seconds"] / speed["media_seconds"],
                                                      abs=1e-3)
    # Again: the predict cache is resumed, nothing is extracted, the same comes out.
    again = _apply([data / "Val"], workspace)
    assert again["throughput"]["extracted_now"] == 0
    assert _outcome(again) == _outcome(report)


def test_bundle_copied_elsewhere_predicts_the_same(trained, tmp_path):
    workspace, data = trained
    files = sorted((data / "Test").glob("*.mp4"))[:3]
    expected = _outcome(_apply(files, workspace))
    summary = api.export(workspace=workspace, out=tmp_path / "made" / "bundle")
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "made" / "bundle.zip"),
                                      "--workdir", str(workspace.root)])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "made" / "bundle.zip") as archive:
        digest = hashlib.sha256(archive.read("manifest.json")).hexdigest()
    assert f"manifest_sha256  {digest}" in result.output
    manifest = json.loads((tmp_path / "made" / "bundle" / "manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(tmp_path / "made" / "bundle"))
                     for p in (tmp_path / "made" / "bundle").rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [p for p in on_disk if p != "manifest.json"]
    assert manifest["classes"] == list(CLASSES)
    assert {name: spec["extractor_version"] for name, spec in manifest["feature_sets"].items()} \
        == {"pyaudio": extractors.get("pyaudio").version,
            "frames": extractors.get("frames").version}
    assert manifest["feature_sets"]["frames"]["params"] == {"count": 4, "size": 32}
    assert summary["models"] == [AUDIO, SCENE] and summary["fusions"] == [FUSION]

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "made" / "bundle", elsewhere / "copied")
    shutil.copy(tmp_path / "made" / "bundle.zip", elsewhere / "copied.zip")
    shutil.rmtree(tmp_path / "made")
    for bundle in (elsewhere / "copied", elsewhere / "copied.zip"):
        report = _apply(files, tmp_path / "fresh", bundle=bundle)
        assert _outcome(report) == expected
        assert report["source"] == f"bundle {bundle}"
    assert report["manifest_sha256"] == digest
    with pytest.raises(GemoError, match="exists"):
        api.export(workspace=workspace, out=elsewhere / "copied")


@pytest.fixture
def bundle(trained, tmp_path):
    out = tmp_path / "bundle"
    api.export(workspace=trained[0], out=out)
    return out


class _Planted:
    """A pickle that leaves a file behind when it is loaded: code running on unpickling."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_tampered_bundle_is_refused_before_anything_is_unpickled(bundle, tmp_path):
    load_bundle(bundle)  # untouched: loads
    fuser = bundle / "fusions" / FUSION / "fuser.joblib"
    marker = tmp_path / "code-ran"
    joblib.dump(_Planted(marker), fuser)
    with pytest.raises(GemoError, match=r"fuser.joblib does not match its SHA-256"):
        load_bundle(bundle)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Planted(marker)))  # the planted pickle does run code
    assert marker.exists()

    checkpoint = bundle / "models" / AUDIO / "model.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-1] + b"x")
    with pytest.raises(GemoError, match=r"model.pt does not match its SHA-256"):
        load_bundle(bundle)
    checkpoint.unlink()
    with pytest.raises(GemoError, match=r"model.pt is missing"):
        load_bundle(bundle)

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["../outside"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GemoError, match="not a file inside a bundle"):
        load_bundle(bundle)
    with pytest.raises(GemoError, match="not a gemo bundle"):
        load_bundle(tmp_path)


def test_bundle_for_other_extractor_versions_is_refused(bundle, trained, tmp_path, monkeypatch):
    zipped = tmp_path / "b.zip"
    api.export(workspace=trained[0], out=zipped)
    monkeypatch.setattr(extractors.get("pyaudio"), "version", 99)
    for path in (bundle, zipped):
        with pytest.raises(GemoError, match=r"pyaudio extractor version 1, this gemo's is "
                                            r"version 99"):
            load_bundle(path)
    with pytest.raises(GemoError, match="extractor version"):
        _apply([tmp_path], trained[0])  # a workspace's models are checked alike
    monkeypatch.undo()

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["feature_sets"]["frames"]["extractor_version"] += 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GemoError, match="made for the frames extractor version"):
        load_bundle(bundle)
    with zipfile.ZipFile(zipped) as archive:
        assert sorted(archive.namelist()) == sorted([*manifest["files"], "manifest.json"])


def test_unreadable_files_are_reported_and_a_clip_without_audio_is_fused_as_documented(
        trained, tmp_path):
    workspace, _ = trained
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "loud.mp4", color=(30, 200, 30), tone_hz=600.0)
    make_clip(media / "silent.mp4", color=(30, 30, 200), audio=False)
    (media / "broken.mp4").write_text("not a video")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["predict", str(media), str(tmp_path / "gone.mp4"),
                                      str(tmp_path / "empty"), "--workdir", str(workspace.root),
                                      "--workers", "1", "--quiet", "--json",
                                      str(tmp_path / "p.json"), "--csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 3, result.output
    report = json.loads((tmp_path / "p.json").read_text())
    entries = {Path(e["path"]).name: e for e in report["files"]}
    assert list(entries) == ["broken.mp4", "loud.mp4", "silent.mp4", "gone.mp4", "empty"]
    assert entries["broken.mp4"]["error"].startswith("decode: ")
    assert "No such file" in entries["gone.mp4"]["error"]
    assert entries["empty"]["error"].startswith("no video file")
    assert "broken.mp4: decode: " in result.output

    loud, silent = entries["loud.mp4"], entries["silent.mp4"]
    assert loud["imputed"] == [] and loud["note"] is None
    assert {vote["label"] is not None for vote in loud["votes"].values()} == {True}
    assert silent["votes"][AUDIO] == {"label": None, "probs": None,
                                      "missing": "no-audio: no audio stream"}
    assert silent["imputed"] == [AUDIO]
    assert "uniform probabilities (1/3 each) in place of " + AUDIO in silent["note"]
    assert "missing: no-audio: no audio stream" in result.output and "note: " in result.output
    # As documented: the fuser sees 1/3 each in the audio model's place.
    fuser = joblib.load(workspace.model_dir(FUSION) / "fuser.joblib")
    X = [[1 / 3] * 3 + list(silent["votes"][SCENE]["probs"].values())]
    np.testing.assert_allclose(list(silent["probs"].values()), fuser.predict_proba(X)[0],
                               atol=1e-6)
    assert silent["label"] == CLASSES[int(np.argmax(fuser.predict_proba(X)[0]))]

    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == f"path,id,label,Positive,Neutral,Negative,fusion,imputed,{AUDIO},{SCENE},error"
    silent_row = next(row for row in rows if "silent.mp4" in row).split(",")
    assert silent_row[2] == silent["label"] and silent_row[7] == AUDIO and silent_row[8] == ""


def test_unknown_fusion_and_workspace_without_one(trained, tmp_path):
    with pytest.raises(GemoError, match="no fusion named fusion-x"):
        _apply([tmp_path], trained[0], fusions=["fusion-x"])
    with pytest.raises(GemoError, match="no fusion in workspace"):
        _apply([tmp_path], tmp_path / "nothing")
