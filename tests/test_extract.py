import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_clip

from gemo import extractors
from gemo.cache.store import CacheMismatch, FeatureCache
from gemo.cli import cli
from gemo.data.media import MediaError
from gemo.extraction import extract
from gemo.extractors import base
from gemo.workspace import Workspace

SMALL = {"frames": {"size": 32, "count": 4}}


def test_frames_shape_colour_and_timestamps(tmp_path):
    clip = make_clip(tmp_path / "red.mp4", seconds=2.0, fps=10, color=(200, 30, 30))
    out = extractors.create("frames", count=4, size=32).extract(clip)
    assert out["frames"].shape == (4, 32, 32, 3) and out["frames"].dtype == np.uint8
    assert np.allclose(out["frames"].reshape(-1, 3).mean(axis=0), (200, 30, 30), atol=8)
    # Centres of four 0.5 s slices, within two frame intervals (non-reference frames are skipped).
    assert np.allclose(out["timestamps"], [0.25, 0.75, 1.25, 1.75], atol=0.2)
    assert np.all(np.diff(out["timestamps"]) > 0)


@pytest.mark.parametrize("tone_hz", [1000.0, 2500.0])
def test_pyaudio_tone_spectral_centroid(tmp_path, tone_hz):
    clip = make_clip(tmp_path / "tone.mp4", seconds=2.0, tone_hz=tone_hz)
    extractor = extractors.create("pyaudio")
    features = extractor.extract(clip)["features"]
    names = extractor.info()["feature_names"]
    assert features.shape[1] == 34 and len(names) == 34
    assert 190 <= features.shape[0] <= 200  # 2 s, 25 ms windows, 10 ms step
    # pyAudioAnalysis gives the centroid as a fraction of the Nyquist frequency (8 kHz). It uses no
    # window function, so leakage pulls the centroid of low tones up: stay above 1 kHz.
    centroid = np.median(features[5:-5, names.index("spectral_centroid")]) * 8000
    assert centroid == pytest.approx(tone_hz, rel=0.1)


def test_opensmile_sets(tmp_path):
    clip = make_clip(tmp_path / "tone.mp4", seconds=2.0)
    egemaps = extractors.create("egemaps").extract(clip)["features"]
    assert egemaps.shape == (88,) and np.isfinite(egemaps).all()
    lld = extractors.create("compare-lld")
    values = lld.extract(clip)["features"]
    assert values.shape[1] == 65 and 150 < values.shape[0] < 200
    assert len(lld.info()["feature_names"]) == 65


def test_extract_dataset_and_resume_does_no_work(synth_data, tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "ws")
    reports = extract(workspace=workspace, dataset=synth_data, sets=["frames", "pyaudio"],
                      params=SMALL, workers=1, progress=False)
    clips = workspace.load_index().clips
    assert [(r.extracted, r.skipped, r.failed) for r in reports] == [(len(clips), 0, {})] * 2
    with FeatureCache(workspace.cache_path("frames")) as cache:
        assert cache.ids() == sorted(c.id for c in clips)
        assert cache.read(clips[0].id)["frames"].shape == (4, 32, 32, 3)
        assert cache.params == {"count": 4, "size": 32}

    def fail(*args, **kwargs):
        raise AssertionError("a resumed run must not extract again")

    for name in ("frames", "pyaudio"):
        monkeypatch.setattr(extractors.get(name), "extract", fail)
    reports = extract(workspace=workspace, sets=["frames", "pyaudio"], params=SMALL, workers=1,
                      progress=False)
    assert [(r.extracted, r.skipped) for r in reports] == [(0, len(clips))] * 2


def test_changed_parameters_are_refused_then_overwritten(synth_data, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    extract(workspace=workspace, dataset=synth_data, sets=["frames"], params=SMALL, workers=1,
            progress=False)
    bigger = {"frames": {"size": 48, "count": 4}}
    with pytest.raises(CacheMismatch, match="size: cache has 32, asked 48"):
        extract(workspace=workspace, sets=["frames"], params=bigger, workers=1, progress=False)
    [report] = extract(workspace=workspace, sets=["frames"], params=bigger, workers=1,
                       overwrite=True, progress=False)
    assert report.extracted == len(workspace.load_index().clips)
    with FeatureCache(workspace.cache_path("frames")) as cache:
        assert cache.params["size"] == 48


def test_changed_source_file_is_refused(synth_data, tmp_path):
    data = shutil.copytree(synth_data, tmp_path / "data")
    workspace = Workspace(tmp_path / "ws")
    extract(workspace=workspace, dataset=data, sets=["frames"], params=SMALL, workers=1,
            progress=False)
    victim = sorted((data / "Train").glob("*.mp4"))[0]
    make_clip(victim, seconds=2.0)
    with pytest.raises(CacheMismatch, match=f"changed on disk.*{victim.stem}"):
        extract(workspace=workspace, sets=["frames"], params=SMALL, workers=1, progress=False)


@pytest.fixture
def bad_dataset(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "good.mp4", seconds=2.0)
    make_clip(media / "silent_film.mp4", seconds=2.0, audio=False)
    make_clip(media / "blip.mp4", seconds=0.3)
    (media / "text.mp4").write_text("this is not a video\n")
    (media / "empty.mp4").write_bytes(b"")
    full = (media / "good.mp4").read_bytes()
    (media / "truncated.mp4").write_bytes(full[: len(full) // 3])
    rows = ["path,split,label"] + [f"media/{p.name},train,1" for p in sorted(media.iterdir())]
    rows.append("media/missing.mp4,train,2")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "list.csv"


def test_failures_are_recorded_and_the_run_goes_on(bad_dataset, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    frames, pyaudio = extract(workspace=workspace, dataset=bad_dataset, sets=["frames", "pyaudio"],
                              params=SMALL, workers=1, progress=False)
    kinds = {name: failure["kind"] for name, failure in pyaudio.failed.items()}
    assert kinds == {"blip": "too-short", "empty": "decode", "missing": "unreadable",
                     "silent_film": "no-audio", "text": "decode", "truncated": "decode"}
    assert "no audio stream" in pyaudio.failed["silent_film"]["message"]
    assert set(frames.failed) == {"blip", "empty", "missing", "text", "truncated"}
    with FeatureCache(workspace.cache_path("frames")) as cache:
        assert cache.ids() == ["good", "silent_film"]
    # Failures are remembered: a rerun does not retry unchanged files.
    again = extract(workspace=workspace, sets=["pyaudio"], workers=1, progress=False)[0]
    assert again.extracted == 0 and set(again.failed) == set(kinds)


def test_nan_features_fail_the_clip(tmp_path, monkeypatch):
    class Hollow(base.Extractor):
        name = "hollow-test"
        defaults = {}

        def extract(self, path):
            from gemo.extractors.audio import require_finite_rows

            return {"features": require_finite_rows(np.full((5, 3), np.nan))}

    monkeypatch.setitem(base._REGISTRY._classes, "hollow-test", Hollow)
    clip = make_clip(tmp_path / "a_1.mp4")
    (tmp_path / "list.csv").write_text("path,split,label\na_1.mp4,train,1\n")
    [report] = extract(workspace=Workspace(tmp_path / "ws"), dataset=tmp_path / "list.csv",
                       sets=["hollow-test"], workers=1, progress=False)
    assert report.failed == {"a_1": {"kind": "nan",
                                     "message": "all 5 feature window(s) contain NaN or inf"}}
    partial = np.ones((4, 3))
    partial[1, 2] = np.nan
    from gemo.extractors.audio import require_finite_rows

    assert require_finite_rows(partial) is partial  # some NaN windows are kept (NaN policy)
    with pytest.raises(MediaError):
        require_finite_rows(np.array([np.inf, 1.0]))
    assert clip.exists()


def test_cli_exit_status_and_info(bad_dataset, tmp_path):
    runner = CliRunner()
    workdir = str(tmp_path / "ws")
    result = runner.invoke(cli, ["extract", str(bad_dataset), "--only", "frames", "--workers", "1",
                                 "-p", "frames.size=32", "--quiet", "--workdir", workdir])
    assert result.exit_code == 3, result.output
    assert "text: decode" in result.output
    result = runner.invoke(cli, ["info", "--json", "--workdir", workdir])
    assert result.exit_code == 0
    [row] = json.loads(result.output)["caches"]
    assert row["feature_set"] == "frames" and row["done"] == 2 and row["params"]["size"] == 32
    assert row["failed"]["empty"]["kind"] == "decode" and row["size_bytes"] > 0
    for args in (["--only", "nosuchset"], ["-p", "frames.size"], ["-p", "frames.colour=1"]):
        result = runner.invoke(cli, ["extract", "--workdir", workdir, "--quiet", *args])
        assert result.exit_code == 2, (args, result.output)


def test_cache_files_are_readable_with_h5py_alone(synth_data, tmp_path):
    workspace = Workspace(tmp_path / "ws")
    extract(workspace=workspace, dataset=synth_data, sets=["pyaudio"], workers=1, progress=False)
    with h5py.File(workspace.cache_path("pyaudio")) as f:
        assert f.attrs["feature_set"] == "pyaudio"
        assert json.loads(f.attrs["params"])["sample_rate"] == 16000
        names = json.loads(f.attrs["info"])["feature_names"]
        first = next(iter(f["clips"].values()))
        assert first.attrs["complete"] and first["features"].shape[1] == len(names) == 34
        assert len(json.loads(first.attrs["fingerprint"])["sha256"]) == 64
