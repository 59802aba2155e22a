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
from gemo.errors import GemoError
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


def test_pyaudio_memoised_chroma_tables_leave_features_unchanged():
    from gemo.extractors.pyaudio import short_term_features

    library = short_term_features()
    memoised = library.chroma_features_init
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 3000, 16000)  # 1 s of int16-scaled noise at 16 kHz
    fast, _ = library.feature_extraction(signal, 16000, 400, 160, deltas=False)
    assert memoised.cache_info().currsize >= 1
    library.chroma_features_init = memoised.__wrapped__  # uncached: built for every window
    try:
        slow, _ = library.feature_extraction(signal, 16000, 400, 160, deltas=False)
    finally:
        library.chroma_features_init = memoised
    assert np.array_equal(fast, slow)
    tables = memoised(400, 16000)
    with pytest.raises(ValueError):
        tables[0][0] = 1  # shared between windows: read-only


def test_opensmile_sets(tmp_path):
    clip = make_clip(tmp_path / "tone.mp4", seconds=2.0)
    egemaps = extractors.create("egemaps").extract(clip)["features"]
    assert egemaps.shape == (88,) and np.isfinite(egemaps).all()
    lld = extractors.create("compare-lld")
    values = lld.extract(clip)["features"]
    assert values.shape[1] == 65 and 150 < values.shape[0] < 200
    assert len(lld.info()["feature_names"]) == 65


@pytest.mark.parametrize("tone_hz", [440.0, 1000.0, 2500.0])
def test_mel_tone_lands_in_the_band_around_its_frequency(tmp_path, tone_hz):
    from gemo.data.media import Media

    clip = make_clip(tmp_path / "tone.mp4", seconds=2.0, tone_hz=tone_hz)
    extractor = extractors.create("mel", n_mels=40, window=0.032, step=0.016)
    features = extractor.extract(clip)["features"]
    samples = len(Media(clip).audio(sample_rate=16000))
    assert features.shape == (1 + (samples - 512) // 256, 40) and features.dtype == np.float32
    assert len(extractor.info()["feature_names"]) == 40
    mel = np.linspace(*(2595 * np.log10(1 + np.array([125.0, 7500.0]) / 700)), 42)  # HTK scale
    edges = 700 * (10 ** (mel / 2595) - 1)
    loudest = int(np.median(features[5:-5], axis=0).argmax())
    # The tone lies inside the loudest band's triangle, nearer its peak than any other band's.
    assert edges[loudest] < tone_hz < edges[loudest + 2]
    assert loudest == int(np.abs(edges[1:-1] - tone_hz).argmin())


def test_mel_silence_gives_the_log_floor_and_parameters_are_checked():
    from gemo.extractors.mel import log_mel

    params = extractors.create("mel", log_offset=0.001).params
    silence = log_mel(np.zeros(16000, np.float32), params)
    assert silence.shape == (98, 64)  # 1 s: 1 + (16000 - 400) // 160 windows
    assert np.all(silence == np.float32(np.log(0.001)))
    with pytest.raises(MediaError, match="less than one 25 ms window") as error:
        log_mel(np.zeros(300, np.float32), params)
    assert error.value.kind == "too-short"
    with pytest.raises(GemoError, match="fmax <= 4000 Hz"):
        extractors.create("mel", sample_rate=8000)
    with pytest.raises(GemoError, match="128 bands are narrower.*25 ms window"):
        extractors.create("mel", n_mels=128, fmin=0.0, fmax=8000.0)


def test_mel_cache_records_its_parameters_and_a_clip_without_audio(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "tone.mp4", seconds=1.0)
    make_clip(media / "silent_film.mp4", seconds=1.0, audio=False)
    rows = ["path,split,label"] + [f"media/{p.name},train,1" for p in sorted(media.iterdir())]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    workspace = Workspace(tmp_path / "ws")
    [report] = extract(workspace=workspace, dataset=tmp_path / "list.csv", sets=["mel"],
                       params={"mel": {"n_mels": 32}}, workers=1, progress=False)
    assert report.extracted == 1 and report.failed["silent_film"]["kind"] == "no-audio"
    with FeatureCache(workspace.cache_path("mel")) as cache:
        assert cache.params == {"sample_rate": 16000, "n_mels": 32, "window": 0.025,
                                "step": 0.01, "fmin": 125.0, "fmax": 7500.0, "log_offset": 0.01}
        assert len(cache.info["feature_names"]) == 32
        assert cache.read("tone")["features"].shape[1] == 32
    with pytest.raises(CacheMismatch, match="n_mels: cache has 32, asked 64"):
        extract(workspace=workspace, sets=["mel"], workers=1, progress=False)


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


def test_nan_features_fail_the_clip(tmp_path, enter):
    class Hollow(base.Extractor):
        name = "hollow-test"

        def compute(self, media):
            from gemo.extractors.audio import require_finite_rows

            return {"features": require_finite_rows(np.full((5, 3), np.nan))}

    enter(base.registered(Hollow))
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


def test_one_decode_serves_every_set_of_a_clip(tmp_path, monkeypatch):
    from gemo.data import media
    from gemo.extraction import run_clip

    clip = make_clip(tmp_path / "a.mp4", seconds=2.0)
    calls = {"video": 0, "audio": 0}
    pick, read = media._pick_frames, media.read_audio

    def counted_pick(*args):
        calls["video"] += 1
        return pick(*args)

    def counted_read(*args, **kwargs):
        calls["audio"] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(media, "_pick_frames", counted_pick)
    monkeypatch.setattr(media, "read_audio", counted_read)
    chosen = [extractors.create("frames", count=4, size=32), extractors.create("faces", count=4),
              extractors.create("pyaudio"), extractors.create("egemaps")]
    outcomes = run_clip(chosen, clip)
    assert {name: outcome.status for name, outcome in outcomes.items()} == dict.fromkeys(
        ["frames", "faces", "pyaudio", "egemaps"], "ok")
    assert calls == {"video": 1, "audio": 1}
    # The same values as each set decoding on its own.
    alone = extractors.create("frames", count=4, size=32).extract(clip)
    np.testing.assert_array_equal(outcomes["frames"].arrays["frames"], alone["frames"])
    np.testing.assert_array_equal(outcomes["faces"].arrays["timestamps"], alone["timestamps"])
    assert outcomes["faces"].arrays["counts"].tolist() == [0, 0, 0, 0]


def test_one_decoding_pass_picks_the_frames_of_every_count(tmp_path, monkeypatch):
    """frames takes 6 frames and faces 3 other ones: one pass over the video picks both, the
    same frames as each set decoding alone."""
    from gemo.data import media
    from gemo.extraction import run_clip

    clip = make_clip(tmp_path / "a.mp4", seconds=3.0, fps=10)
    passes = []
    pick = media._pick_frames
    monkeypatch.setattr(media, "_pick_frames", lambda path, counts, least: (
        passes.append(sorted(counts)) or pick(path, counts, least)))
    chosen = [extractors.create("frames", count=6, size=32), extractors.create("faces", count=3)]
    outcomes = run_clip(chosen, clip)
    assert passes == [[3, 6]]
    for extractor in chosen:
        alone = type(extractor)(**extractor.params.as_dict()).extract(clip)
        np.testing.assert_array_equal(outcomes[extractor.name].arrays["timestamps"],
                                      alone["timestamps"])
    np.testing.assert_allclose(outcomes["faces"].arrays["timestamps"], [0.5, 1.5, 2.5], atol=0.2)
    np.testing.assert_array_equal(
        outcomes["frames"].arrays["frames"],
        extractors.create("frames", count=6, size=32).extract(clip)["frames"])
    # A count nobody planned still works: it takes a second pass.
    extra = media.Media(clip, frame_counts=[6]).frames(count=2, size=16)[0]
    assert extra.shape == (2, 16, 16, 3)


def test_frames_are_converted_on_one_thread_with_the_values_of_many(tmp_path, monkeypatch):
    """PyAV's default scales each frame on a new thread per core; a worker asks for one (the
    values do not depend on it)."""
    from gemo.data import media

    clip = make_clip(tmp_path / "a.mp4", seconds=2.0, size=(96, 64))
    asked = []

    class Spy:  # a decoded frame that records how it is converted
        def __init__(self, frame):
            self.frame = frame

        def __getattr__(self, name):
            return getattr(self.frame, name)

        def to_ndarray(self, **kwargs):
            asked.append(kwargs.get("threads"))
            default = {key: value for key, value in kwargs.items() if key != "threads"}
            np.testing.assert_array_equal(self.frame.to_ndarray(**kwargs),
                                          self.frame.to_ndarray(**default, threads=2))
            return self.frame.to_ndarray(**kwargs)

    pick = media._pick_frames
    monkeypatch.setattr(media, "_pick_frames", lambda *args: {
        count: ([Spy(frame) for frame in frames], times)
        for count, (frames, times) in pick(*args).items()})
    clip_media = media.Media(clip)
    assert clip_media.frames(count=3, size=32)[0].shape == (3, 32, 32, 3)  # scaled
    assert clip_media.frames(count=2, max_side=0)[0].shape == (2, 64, 96, 3)  # as stored
    assert asked == [1] * 5


def test_a_decode_error_reaches_every_set_without_a_second_try(tmp_path, monkeypatch):
    from gemo.data import media
    from gemo.extraction import run_clip

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    calls = []
    opener = media._open
    monkeypatch.setattr(media, "_open", lambda path: calls.append(path) or opener(path))
    outcomes = run_clip([extractors.create("frames"), extractors.create("faces")], bad)
    assert [outcome.kind for outcome in outcomes.values()] == ["decode", "decode"]
    assert len(calls) == 1


def test_shared_audio_is_read_only(tmp_path):
    from gemo.data.media import Media

    signal = Media(make_clip(tmp_path / "a.mp4")).audio(sample_rate=16000)
    with pytest.raises(ValueError):
        signal[0] = 1.0


def test_cuda_without_a_gpu_stops_before_any_clip(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    make_clip(tmp_path / "a_1.mp4")
    (tmp_path / "list.csv").write_text("path,split,label\na_1.mp4,train,1\n")
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(GemoError, match="torch sees no CUDA GPU"):
        extract(workspace=workspace, dataset=tmp_path / "list.csv", sets=["faces"],
                device="cuda", workers=1, progress=False)
    assert not workspace.cache_path("faces").exists()
    # Sets without networks ignore the device.
    [report] = extract(workspace=workspace, sets=["frames"], device="cuda", workers=1,
                       progress=False)
    assert report.extracted == 1
    result = CliRunner().invoke(cli, ["extract", "--workdir", str(tmp_path / "ws"),
                                      "--batch-size", "-1"])
    assert result.exit_code == 2 and "batch-size" in result.output


@pytest.fixture
def forked_pool(monkeypatch):
    """Pool workers forked from the test, so they know the extractors the test registers."""
    from multiprocessing import get_context

    from gemo.extraction import workers

    monkeypatch.setattr(workers, "pool_context", lambda modules: get_context("fork"))


@pytest.mark.parametrize(("death", "how"), [("exit", "exit code 1"),
                                             ("sigkill", "killed by signal SIGKILL")])
def test_a_clip_that_kills_its_worker_takes_no_other_clip_with_it(tmp_path, enter,
                                                                   forked_pool, death, how):
    import os
    import signal
    import time

    class Killer(base.Extractor):
        name = "killer-test"

        def compute(self, media):
            if "victim" in str(media.path):  # like a decoder crash: the whole worker process goes
                if death == "exit":
                    os._exit(1)
                os.kill(os.getpid(), signal.SIGKILL)  # as the kernel does when memory runs out
            time.sleep(0.3)  # the neighbours are still running when the victim's worker dies
            return {"x": np.zeros(1)}

    enter(base.registered(Killer))
    names = ["a_1", "a_2", "victim", "a_3", "a_4", "a_5"]
    for name in names:
        make_clip(tmp_path / f"{name}.mp4", seconds=1.0)
    (tmp_path / "list.csv").write_text(
        "path,split,label\n" + "".join(f"{n}.mp4,train,1\n" for n in names))
    [report] = extract(workspace=Workspace(tmp_path / "ws"), dataset=tmp_path / "list.csv",
                       sets=["killer-test"], workers=2, progress=False)
    assert report.failed == {"victim": {"kind": "crash",
                                        "message": f"the worker process died on this clip ({how})"}}
    assert report.extracted == 5


@pytest.mark.parametrize("workers", [1, 2])
def test_a_set_whose_required_set_failed_records_upstream(tmp_path, enter, forked_pool,
                                                          workers):
    class Source(base.Extractor):
        name = "source-test"

        def compute(self, media):
            if "broken" in str(media.path):
                raise MediaError("decode", "cannot open")
            return {"x": np.ones(2)}

    class Derived(base.Extractor):
        name = "derived-test"
        requires = ("source-test",)

        def compute(self, media, inputs):
            return {"y": inputs["source-test"]["x"] * 2}

    enter(base.registered(Source))
    enter(base.registered(Derived))
    for name in ("good", "broken"):
        make_clip(tmp_path / f"{name}.mp4", seconds=1.0)
    (tmp_path / "list.csv").write_text("path,split,label\ngood.mp4,train,1\nbroken.mp4,train,1\n")
    workspace = Workspace(tmp_path / "ws")
    extract(workspace=workspace, dataset=tmp_path / "list.csv", sets=["source-test"],
            workers=workers, progress=False)
    [report] = extract(workspace=workspace, sets=["derived-test"], workers=workers,
                       progress=False)
    assert report.extracted == 1
    assert report.failed == {"broken": {
        "kind": "upstream", "message": "source-test failed for this clip (decode: cannot open)"}}
    with FeatureCache(workspace.cache_path("derived-test")) as cache:
        np.testing.assert_array_equal(cache.read("good")["y"], [2.0, 2.0])


def test_every_set_names_modules_that_import():
    """Pool workers fork from a server that imports each set's ``modules``; the server skips
    a name that fails to import, so a wrong name would only make workers slow to start."""
    import importlib

    assert {"pyaudio", "faces"} <= set(extractors.available())
    for name in extractors.available():
        for module in extractors.get(name).modules:
            importlib.import_module(module)


def test_executors_are_registered_by_name(synth_data, tmp_path, enter):
    """An executor is one registered class: ``cls(workers=, chosen=, scheduler=)`` with
    ``start()`` and ``run(tasks, caches)``."""
    from gemo.extraction import executors

    with pytest.raises(GemoError, match="unknown executor 'ray'; available: dask, local"):
        extract(workspace=Workspace(tmp_path / "a"), dataset=synth_data, sets=["pyaudio"],
                executor="ray", progress=False)
    seen = []

    class Recording(executors.LocalPool):
        name = "recording-test"

        def run(self, tasks, caches):
            for clip, outcomes in super().run(tasks, caches):
                seen.append(clip.id)
                yield clip, outcomes

    enter(executors.EXECUTORS.registered(Recording))
    [report] = extract(workspace=Workspace(tmp_path / "b"), dataset=synth_data, sets=["pyaudio"],
                       executor="recording-test", workers=1, progress=False)
    assert report.extracted == len(seen) > 0


def test_freed_heap_is_kept_for_the_next_clip_up_to_a_bound():
    from gemo.extraction import memory

    if memory.free_heap() == 0:
        pytest.skip("glibc's allocator only")
    memory.release_memory()  # start from a trimmed heap
    assert memory.release_memory() is False  # nothing freed since: kept
    step = 8 * 2**20
    # Freed blocks between blocks still in use: they stay free heap, not the heap's top.
    blocks = [(np.ones(step, np.uint8), np.empty(step, np.uint8))
              for _ in range(memory.KEPT // step + 8)]
    before = memory.free_heap()
    in_use = [second for _, second in blocks]
    del blocks  # frees the first of each pair
    assert memory.free_heap() - before > memory.KEPT
    assert memory.release_memory() is True  # more than KEPT freed: handed back
    assert memory.release_memory() is False  # and not again for the same freed heap
    del in_use
