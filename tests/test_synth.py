"""The synthetic VGAF-layout dataset: layout, decodability, determinism, planted cues."""

import json
import re

import av
import numpy as np
import pytest

from gemo.data.synth import make_dataset
from gemo.labels import parse_label

SPLITS = ("Train", "Val", "Test")
SIZE = dict(width=160, height=90, fps=10, sample_rate=16000)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """No cue noise: every clip's planted cues are just its class, so cues can be tested."""
    out = tmp_path_factory.mktemp("synth") / "data"
    calls = []
    make_dataset(out, clips_per_class=3, seed=7, duration=2.0, cue_noise=0.0,
                 progress=lambda done, total: calls.append((done, total)), **SIZE)
    return out, json.loads((out / "synth.json").read_text()), calls


def labels_of(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "Vid_name Label"
    return dict(line.split() for line in lines[1:])


def decode(path):
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio


def centroid(signal, rate=16000):
    """Mean spectral centroid over 25 ms Hann windows."""
    n = int(0.025 * rate)
    windows = signal[: len(signal) // n * n].reshape(-1, n) * np.hanning(n)
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    return float(np.mean((power * freqs).sum(1) / (power.sum(1) + 1e-12)))


def test_layout_ids_and_labels(dataset):
    out, meta, calls = dataset
    by_id = {c["id"]: c for c in meta["clips"]}
    videos = {}
    for split in SPLITS:
        labels = labels_of(out / f"{split}_labels.txt")
        files = {p.stem for p in (out / split).iterdir()}
        assert files == set(labels)  # no .tmp leftovers, every clip labelled
        counts = [0, 0, 0]
        for clip_id, code in labels.items():
            video, segment = re.fullmatch(r"(\d+)_(\d+)", clip_id).groups()
            label = parse_label(code)
            counts[label] += 1
            assert by_id[clip_id]["label"] == label and by_id[clip_id]["split"] == split
            # one source video: one split, one class
            assert videos.setdefault(video, (split, label)) == (split, label)
        assert counts == ([3] * 3 if split == "Train" else [2] * 3)  # max(2, round(3 * 0.5))
    assert len(videos) < len(by_id)  # some videos have several segments
    assert len(by_id) == len(meta["clips"]) == 21
    assert calls == [(i, 21) for i in range(1, 22)]
    assert meta["params"]["seed"] == 7 and meta["classes"] == ["Positive", "Neutral", "Negative"]


def test_clips_decode_as_h264_aac(dataset):
    out, meta, _ = dataset
    clip = meta["clips"][0]
    path = out / clip["split"] / f"{clip['id']}.mp4"
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == 16000
        assert (video.width, video.height) == (160, 90)
        assert float(video.duration * video.time_base) == pytest.approx(2.0, abs=0.11)
        assert float(audio.duration * audio.time_base) == pytest.approx(2.0, abs=0.11)
    frames, sound = decode(path)
    assert frames.shape == (20, 90, 160, 3)
    assert sound.size >= 2.0 * 16000 and np.isfinite(sound).all()
    assert np.abs(sound).min() < np.abs(sound).max() and np.std(sound) > 1e-3  # never silent


def test_visual_cue_brightness_and_warmth(dataset):
    out, meta, _ = dataset
    bright, warm = {0: [], 1: [], 2: []}, {0: [], 1: [], 2: []}
    for clip in meta["clips"]:
        frames, _ = decode(out / clip["split"] / f"{clip['id']}.mp4")
        frames = frames.astype(np.float32)
        assert clip["visual"] == [clip["label"]]
        bright[clip["label"]].append(frames.mean())
        warm[clip["label"]].append((frames[..., 0] - frames[..., 2]).mean())
    means = [np.mean(bright[c]) for c in range(3)]
    assert means[0] > means[1] > means[2] + 20  # Positive light, Negative dark
    assert min(bright[0]) > max(bright[2])
    assert np.mean(warm[0]) > np.mean(warm[1]) + 10  # Positive yellow/orange vs grey-blue


def test_audio_cue_spectral_centroid(dataset):
    out, meta, _ = dataset
    centroids = {0: [], 1: [], 2: []}
    for clip in meta["clips"]:
        _, sound = decode(out / clip["split"] / f"{clip['id']}.mp4")
        assert clip["audio"] == [clip["label"]]
        centroids[clip["label"]].append(centroid(sound))
    # Positive bright chord + claps > Neutral hum > Negative low rumble, clip by clip
    assert min(centroids[0]) > max(centroids[1])
    assert min(centroids[1]) > max(centroids[2])


def test_cue_noise_makes_cues_ambiguous(tmp_path):
    make_dataset(tmp_path, clips_per_class=4, seed=3, duration=0.5, cue_noise=1.0, **SIZE)
    clips = json.loads((tmp_path / "synth.json").read_text())["clips"]
    for clip in clips:  # every cue blends the true class with another one
        for cue in (clip["visual"], clip["audio"]):
            assert cue[0] == clip["label"] and len(cue) == 2 and cue[1] != cue[0]
    assert any(c["visual"] != c["audio"] for c in clips)  # drawn independently


def test_deterministic_per_seed(tmp_path):
    small = dict(clips_per_class=1, duration=1.0, splits=(("Train", 1.0), ("Test", 0.5)), **SIZE)
    a = make_dataset(tmp_path / "a", seed=1, **small)
    b = make_dataset(tmp_path / "b", seed=1, **small)
    c = make_dataset(tmp_path / "c", seed=2, **small)
    for name in ("Train_labels.txt", "Test_labels.txt", "synth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    clips = sorted(p.relative_to(a) for p in a.glob("*/*.mp4"))
    assert clips == sorted(p.relative_to(b) for p in b.glob("*/*.mp4")) and len(clips) == 12
    for clip in clips:
        assert (a / clip).read_bytes() == (b / clip).read_bytes()
    assert (a / "synth.json").read_bytes() != (c / "synth.json").read_bytes()
    first = clips[0]
    other = next(p for p in sorted(c.glob("*/*.mp4")))
    assert not np.array_equal(decode(a / first)[0], decode(other)[0])


def test_rerun_replaces_previous_clips(tmp_path):
    make_dataset(tmp_path, clips_per_class=3, seed=0, duration=0.5, **SIZE)
    make_dataset(tmp_path, clips_per_class=1, seed=5, duration=0.5, **SIZE)
    for split in SPLITS:
        files = {p.stem for p in (tmp_path / split).iterdir()}
        assert files == set(labels_of(tmp_path / f"{split}_labels.txt"))


def test_rejects_odd_frame_size(tmp_path):
    with pytest.raises(ValueError):
        make_dataset(tmp_path, clips_per_class=1, width=161, height=90)


def test_write_mp4_rgb_without_audio(tmp_path):
    from gemo.data.synth import write_mp4

    rgb = np.zeros((12, 48, 64, 3), np.uint8)
    rgb[..., 1] = 200
    path = tmp_path / "green.mp4"
    write_mp4(path, frames=rgb, audio=None, fps=6)
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    with av.open(str(path)) as container:
        assert not container.streams.audio
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (12, 48, 64, 3)
    assert abs(frames[..., 1].mean() - 200) < 6 and frames[..., 0].mean() < 10
