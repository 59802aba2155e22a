"""A catalogue of bad or unusual input: each is recorded clearly or handled, and never costs
the clips already cached.

Most cases share one extraction run (``catalogue``): a good clip is extracted first, then the
manifest grows by the odd files and the run is resumed in the same workspace.
"""

import errno
import shutil
import subprocess
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import make_clip

from gemo.cache.store import FeatureCache
from gemo.data.index import index_dataset
from gemo.data.media import read_frames
from gemo.data.synth import write_mp4
from gemo.extraction import extract
from gemo.labels import CLASSES
from gemo.workspace import Workspace

SETS = ["frames", "pyaudio", "egemaps"]
PARAMS = {"frames": {"count": 4, "size": 32}}
UNICODE_NAME = "fête_ß_日本"
VFR_TIMES = [0.0, 0.05, 0.1, 0.5, 0.55, 0.6, 1.2, 1.25, 1.3, 1.35, 1.4, 1.9, 1.95]


def write_audio_only(path, signal, sample_rate=16000):
    """An mp4 container holding one AAC stream and no video (what an .m4a is)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for start in range(0, signal.size, 1024):
            frame = av.AudioFrame.from_ndarray(signal[None, start:start + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_video(path, pictures, *, times=None, fps=10, rotation=None):
    """H.264 mp4 of RGB ``pictures``; ``times`` (seconds) gives each frame's pts (variable rate),
    ``rotation`` a display-matrix rotation (degrees counter-clockwise) as phones store it."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = pictures.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"tune": "zerolatency"}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            if times is None:
                frame.pts = i
            else:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def vfr_pictures():
    """Grey level = 100 x the frame's time, so a frame shows when it was taken."""
    return np.stack([np.full((48, 64, 3), round(t * 100), np.uint8) for t in VFR_TIMES])


def upright_picture():
    """Portrait 48x64 (w x h): blue, red top band, green top-left corner (no symmetry)."""
    picture = np.zeros((64, 48, 3), np.uint8)
    picture[:] = (0, 0, 250)
    picture[:16] = (250, 0, 0)
    picture[:16, :12] = (0, 250, 0)
    return picture


def assert_upright(image):
    h, w = image.shape[:2]

    def colour(rows, cols):
        return image[rows, cols].reshape(-1, 3).mean(axis=0)

    assert np.allclose(colour(slice(h // 16, h // 5), slice(w // 2, None)), (250, 0, 0), atol=40)
    assert np.allclose(colour(slice(0, h // 8), slice(0, w // 8)), (0, 250, 0), atol=60)
    assert np.allclose(colour(slice(h // 2, None), slice(None)), (0, 0, 250), atol=40)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Extract a good clip, then resume with the odd files added to the same manifest."""
    root = tmp_path_factory.mktemp("catalogue")
    media = root / "données"
    media.mkdir()
    make_clip(media / "good.mp4", seconds=2.0)
    manifest = root / "list.csv"
    manifest.write_text("path,split,label\ndonnées/good.mp4,train,1\n", encoding="utf-8")
    workspace = Workspace(root / "ws")
    extract(workspace=workspace, dataset=manifest, sets=SETS, params=PARAMS, workers=1,
            progress=False)
    with FeatureCache(workspace.cache_path("frames")) as cache:
        good_frames = cache.read("good")

    t = np.arange(32000) / 16000
    write_audio_only(media / "voice.m4a", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    write_mp4(media / "silent.mp4", frames=np.full((20, 48, 64, 3), 90, np.uint8),
              audio=np.zeros(32000, np.float32), fps=10)
    write_video(media / "vfr.mp4", vfr_pictures(), times=VFR_TIMES)
    write_video(media / "rotated.mp4", np.stack([np.rot90(upright_picture(), -1)] * 20),
                rotation=90)
    make_clip(media / f"{UNICODE_NAME}.mp4", seconds=2.0, color=(30, 200, 30))
    (media / "folder.mp4").mkdir()  # a directory named like a video
    (media / "dangling.mp4").symlink_to(media / "gone.mp4")
    names = ["voice.m4a", "silent.mp4", "vfr.mp4", "rotated.mp4", f"{UNICODE_NAME}.mp4",
             "folder.mp4", "dangling.mp4"]
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.writelines(f"données/{name},train,2\n" for name in names)
    reports = extract(workspace=workspace, dataset=manifest, sets=SETS, params=PARAMS, workers=1,
                      progress=False)
    return {"workspace": workspace, "reports": {r.feature_set: r for r in reports},
            "good_frames": good_frames, "media": media}


def failure_kinds(catalogue, feature_set):
    return {i: f["kind"] for i, f in catalogue["reports"][feature_set].failed.items()}


def read(catalogue, feature_set, clip_id):
    with FeatureCache(catalogue["workspace"].cache_path(feature_set)) as cache:
        return cache.read(clip_id)


def test_catalogue_keeps_the_good_clip_and_records_only_the_expected_failures(catalogue):
    for name in SETS:
        assert catalogue["reports"][name].skipped == 1  # good: done in the first run
    assert failure_kinds(catalogue, "frames") == {"voice": "no-video", "folder": "unreadable",
                                                  "dangling": "unreadable"}
    for name in ("pyaudio", "egemaps"):
        assert failure_kinds(catalogue, name) == {"vfr": "no-audio", "rotated": "no-audio",
                                                  "folder": "unreadable", "dangling": "unreadable"}
    again = read(catalogue, "frames", "good")
    assert again.keys() == catalogue["good_frames"].keys()
    for key, array in again.items():
        assert np.array_equal(array, catalogue["good_frames"][key])
    for name in ("pyaudio", "egemaps"):
        assert np.isfinite(read(catalogue, name, "good")["features"]).all()


def test_audio_only_file(catalogue):
    failure = catalogue["reports"]["frames"].failed["voice"]
    assert failure == {"kind": "no-video", "message": "no video stream"}
    assert read(catalogue, "pyaudio", "voice")["features"].shape[1] == 34
    assert read(catalogue, "egemaps", "voice")["features"].shape == (88,)


def test_silent_audio_gives_finite_features(catalogue):
    # Digital silence is a real (if dull) input: both audio sets give finite features for it.
    pyaudio = read(catalogue, "pyaudio", "silent")["features"]
    assert pyaudio.shape[0] > 150 and np.isfinite(pyaudio).all()
    egemaps = read(catalogue, "egemaps", "silent")["features"]
    assert egemaps.shape == (88,) and np.isfinite(egemaps).all()


def test_variable_frame_rate_takes_frames_near_the_slice_centres(catalogue):
    path = catalogue["media"] / "vfr.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
    for count in (4, 7):
        frames, times = read_frames(path, count=count, size=16)
        assert frames.shape == (count, 16, 16, 3) and times.shape == (count,)
        centres = (np.arange(count) + 0.5) * duration / count
        nearest = [min(VFR_TIMES, key=lambda t, c=c: (abs(t - c), t)) for c in centres]
        assert np.allclose(times, nearest, atol=1e-3), (times, nearest)
        # the picture is the one shown at that time (grey = 100 x time)
        assert np.allclose(frames.reshape(count, -1).mean(axis=1), np.round(times * 100), atol=6)
    stored = read(catalogue, "frames", "vfr")
    assert stored["frames"].shape == (4, 32, 32, 3)
    assert np.allclose(stored["timestamps"], read_frames(path, count=4, size=32)[1])


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation):
    turns = rotation // 90
    stored = np.rot90(upright_picture(), -turns)  # what the camera wrote
    path = write_video(tmp_path / "phone.mp4", np.stack([stored] * 10), rotation=rotation)
    frames, _ = read_frames(path, count=2, max_side=0)
    assert frames.shape == (2, 64, 48, 3) and frames.flags.c_contiguous
    for frame in frames:
        assert_upright(frame)
    frames, _ = read_frames(path, count=2, max_side=32)
    assert frames.shape == (2, 32, 24, 3)
    assert_upright(frames[0])
    frames, _ = read_frames(path, count=2, size=32)
    assert_upright(frames[0])


def test_rotated_clip_in_the_cache_is_upright_like_ffmpeg_shows_it(catalogue):
    assert_upright(read(catalogue, "frames", "rotated")["frames"][0])
    try:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        pytest.skip("imageio_ffmpeg absent: no ffmpeg binary to compare with")
    path = catalogue["media"] / "rotated.mp4"
    raw = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-frames:v", "1", "-f",
                          "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(64, 48, 3)  # ffmpeg auto-rotates
    ours = read_frames(path, count=1, max_side=0)[0][0]
    assert np.abs(ours.astype(int) - shown).mean() < 4


def test_4k_frames_are_scaled_without_full_size_copies(tmp_path):
    pictures = np.empty((4, 2160, 3840, 3), np.uint8)
    pictures[:, :1080] = (250, 0, 0)
    pictures[:, 1080:] = (0, 0, 250)
    path = tmp_path / "uhd.mp4"
    write_mp4(path, frames=pictures, fps=4)
    del pictures
    tracemalloc.start()
    try:
        frames, times = read_frames(path, count=4, size=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape == (4, 64, 64, 3)
    assert np.allclose(times, [0, 0.25, 0.5, 0.75])
    assert np.allclose(frames[:, :24].reshape(-1, 3).mean(axis=0), (250, 0, 0), atol=8)
    assert np.allclose(frames[:, 40:].reshape(-1, 3).mean(axis=0), (0, 0, 250), atol=8)
    assert peak < 4 * 2**20  # one 4K RGB frame is 24 MiB: none is ever held as a numpy array
    assert read_frames(path, count=1, max_side=640)[0].shape == (1, 360, 640, 3)


def test_non_ascii_name_in_a_csv_manifest(catalogue):
    assert UNICODE_NAME in catalogue["workspace"].load_index().by_id()
    frames = read(catalogue, "frames", UNICODE_NAME)["frames"]
    assert np.allclose(frames.reshape(-1, 3).mean(axis=0), (30, 200, 30), atol=8)
    assert read(catalogue, "pyaudio", UNICODE_NAME)["features"].shape[1] == 34


def test_non_ascii_name_in_a_vgaf_folder(tmp_path):
    train = tmp_path / "vgaf" / "Train"
    train.mkdir(parents=True)
    make_clip(train / "1_1.mp4", seconds=1.0, audio=False)
    (tmp_path / "vgaf" / "Train_labels.txt").write_text(f"Vid_name Label\n1_1 1\n{UNICODE_NAME} 3\n",
                                                        encoding="utf-8")
    workspace = Workspace(tmp_path / "ws")
    with pytest.warns(UserWarning, match="not found"):
        index_dataset(tmp_path / "vgaf")
    extract(workspace=workspace, dataset=tmp_path / "vgaf", sets=["frames"], params=PARAMS,
            workers=1, progress=False)
    with FeatureCache(workspace.cache_path("frames")) as cache:
        before = cache.read("1_1")["frames"]
    make_clip(train / f"{UNICODE_NAME}.mp4", seconds=1.0, audio=False)
    [report] = extract(workspace=workspace, dataset=tmp_path / "vgaf", sets=["frames"],
                       params=PARAMS, workers=1, progress=False)
    assert (report.extracted, report.skipped, report.failed) == (1, 1, {})
    clip = workspace.load_index().by_id()[UNICODE_NAME]
    assert clip.label_name == CLASSES[2] and clip.group == "fête_ß"
    with FeatureCache(workspace.cache_path("frames")) as cache:
        assert cache.ids() == sorted(["1_1", UNICODE_NAME])
        assert np.array_equal(cache.read("1_1")["frames"], before)
        assert cache.read(UNICODE_NAME)["frames"].shape == (4, 32, 32, 3)


def test_unreadable_paths(catalogue):
    for name in ("frames", "pyaudio", "egemaps"):
        failed = catalogue["reports"][name].failed
        assert failed["folder"]["kind"] == "unreadable"
        assert "IsADirectoryError" in failed["folder"]["message"]
        assert failed["dangling"]["kind"] == "unreadable"
        assert "FileNotFoundError" in failed["dangling"]["message"]


def test_label_file_with_bom_crlf_trailing_spaces_and_no_header(tmp_path):
    root = tmp_path / "vgaf"
    (root / "Train").mkdir(parents=True)
    for clip_id in ("4_1", "4_2", "7_1"):
        (root / "Train" / f"{clip_id}.mp4").write_bytes(b"")  # indexing does not decode
    (root / "train_label.txt").write_bytes(b"\xef\xbb\xbf4_1 1  \r\n4_2\t2 \r\n\r\n7_1.mp4 3\t\r\n")
    index = index_dataset(root)
    assert {c.id: c.label_name for c in index.clips} == dict(zip(("4_1", "4_2", "7_1"), CLASSES))
    assert {c.group for c in index.clips} == {"4", "7"}


def _frames_dataset(root, count):
    (root / "Train").mkdir(parents=True)
    for i in range(count):
        make_clip(root / "Train" / f"{i}_1.mp4", seconds=1.0, audio=False)
    return root


def _check_survivors(workspace, expected):
    with FeatureCache(workspace.cache_path("frames")) as cache:
        assert cache.ids() == expected
        for clip_id in expected:
            frames = cache.read(clip_id)["frames"]
            assert frames.shape[0] == 4 and np.allclose(frames.mean(axis=(0, 1, 2)),
                                                        (200, 30, 30), atol=8)


def test_disk_full_while_writing_stops_the_run_and_keeps_done_clips(tmp_path, monkeypatch):
    data = _frames_dataset(tmp_path / "data", 5)
    workspace = Workspace(tmp_path / "ws")
    written = []
    original = FeatureCache.write

    def write(self, clip_id, arrays, **kwargs):
        if len(written) == 2:  # the third clip: half its arrays, then the disk is full
            group = self._file["clips"].create_group(clip_id)
            group.create_dataset("frames", data=arrays["frames"])
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(clip_id)
        return original(self, clip_id, arrays, **kwargs)

    monkeypatch.setattr(FeatureCache, "write", write)
    with pytest.raises(OSError) as caught:
        extract(workspace=workspace, dataset=data, sets=["frames"], params=PARAMS, workers=1,
                progress=False)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.setattr(FeatureCache, "write", original)
    _check_survivors(workspace, written)  # the half-written clip is not counted
    # once there is room again, the run resumes and redoes only the rest
    [report] = extract(workspace=workspace, sets=["frames"], params=PARAMS, workers=1,
                       progress=False)
    assert (report.extracted, report.skipped, report.failed) == (3, 2, {})
    _check_survivors(workspace, [f"{i}_1" for i in range(5)])


def test_disk_full_on_a_real_small_filesystem(tmp_path):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    data = _frames_dataset(tmp_path / "data", 6)
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        workspace = Workspace(disk / "ws")
        big = {"frames": {"count": 4, "size": 224}}  # 0.6 MB a clip: the disk holds three
        with pytest.raises(OSError) as caught:
            extract(workspace=workspace, dataset=data, sets=["frames"], params=big, workers=1,
                    progress=False)
        assert caught.value.errno == errno.ENOSPC or "No space left" in str(caught.value)
        with FeatureCache(workspace.cache_path("frames")) as cache:
            done = cache.ids()
            assert 1 <= len(done) < 6
            for clip_id in done:
                assert cache.read(clip_id)["frames"].shape == (4, 224, 224, 3)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
