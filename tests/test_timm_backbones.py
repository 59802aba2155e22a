"""timm backbones (Evtodienko's ResNet-50d, ResNet-101d, ReXNet-100): optional timm, weights from
a registered file or timm's own Hugging Face cache, read offline and checked.

A tiny timm network (``test_efficientnet``, 356k parameters) stands in for the real ones where
weights are written: the tests write its weights themselves, as a file or as the hub cache holds
them, so nothing is downloaded.
"""

import dataclasses
import hashlib

import pytest
import torch

from gemo import pretrained
from gemo.errors import GemoError
from gemo.files import sha256_file
from gemo.models import backbones

timm = pytest.importorskip("timm")

REPO = "timm/test_efficientnet.r160_in1k"


class Tiny(backbones.Timm):
    name, width, hub = "test_efficientnet", 256, REPO


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty $GEMO_HOME, torch hub and Hugging Face hub caches; returns the hub cache."""
    from huggingface_hub import constants

    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.fixture
def tiny(enter):
    enter(backbones.BACKBONES.registered(Tiny))
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet").state_dict()


def _hub_file(cache, state, *, corrupt=False):
    """``state`` stored as the hub cache stores model.safetensors: a blob named by its SHA-256,
    linked from the snapshot of the commit that refs/main names."""
    from safetensors.torch import save_file

    repo = cache / ("models--" + REPO.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    staged = repo / "staged"
    save_file(state, staged)
    digest = sha256_file(staged)
    blob = repo / "blobs" / digest
    staged.rename(blob)
    if corrupt:
        blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    return snapshot / "model.safetensors"


def test_the_registered_timm_backbones_match_timm():
    for name, width in [("resnet50d", 2048), ("resnet101d", 2048), ("rexnet_100", 1280)]:
        backbone = backbones.get(name)
        config = timm.models.get_pretrained_cfg(name)
        assert backbone.width == width and backbone.hub == config.hf_hub_id
        assert backbone.input_size == config.input_size[-1] and backbone.has_weights()
        for entry in backbone.weights:  # release files: the 8 hex in the name are the SHA-256's
            item = pretrained.get(entry)
            assert item.url == config.url and item.filename == config.url.rsplit("/", 1)[1]
            assert item.filename.endswith(f"-{item.sha256}.pth") and len(item.sha256) == 8
            assert item.input_size == config.input_size[-1]
    with torch.no_grad():
        network, width = backbones.get("rexnet_100")().build(channels=3, width=0, spatial="avg")
        assert network.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, width)


def test_weights_from_timm_hub_cache_are_checked_and_loaded(homes, tiny):
    path = _hub_file(homes, tiny)
    backbone = backbones.get("test_efficientnet")()
    assert backbone.find_weights() == path
    network, source = backbone.pretrained()
    assert source["file"] == str(path) and source["sha256"] == path.resolve().name
    assert torch.equal(network.conv_stem.weight, tiny["conv_stem.weight"])
    assert network.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 256)
    entry = backbone.weight_file(path)  # preprocessing from timm's configuration
    assert (entry.input_size, entry.mean, entry.licence) == (160, (0.485, 0.456, 0.406),
                                                             "apache-2.0 (timm)")


def test_a_corrupt_hub_file_is_refused(homes, tiny):
    _hub_file(homes, tiny, corrupt=True)
    with pytest.raises(GemoError, match="does not match its hub blob"):
        backbones.get("test_efficientnet")().find_weights()


def test_a_registered_file_comes_first_and_missing_weights_are_one_line(homes, tiny, enter,
                                                                       tmp_path):
    backbone = backbones.get("test_efficientnet")()
    with pytest.raises(pretrained.WeightsNotFound) as error:
        backbone.find_weights()
    assert str(error.value) == (
        f"the test_efficientnet weights are missing: let timm cache {REPO} once with internet "
        "(timm.create_model('test_efficientnet', pretrained=True))")

    file = tmp_path / "gemo" / "weights" / "test_efficientnet-0123.pth"
    file.parent.mkdir(parents=True)
    torch.save(tiny, file)
    enter(pretrained.registered(pretrained.WeightFile(
        "test.efficientnet", file.name, hashlib.sha256(file.read_bytes()).hexdigest())))
    enter(backbones.BACKBONES.registered(
        type("Registered", (Tiny,), {"weights": ("test.efficientnet",)}), replace=True))
    _hub_file(homes, {"other": torch.zeros(1)})  # would not fit: never read
    backbone = backbones.get("test_efficientnet")()
    assert backbone.find_weights() == file
    network, source = backbone.pretrained()
    assert source["name"] == "test.efficientnet"


def test_without_timm_the_error_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(GemoError, match=r"pip install 'gemo\[timm\]'"):
        backbones.get("rexnet_100")().build(channels=3, width=0, spatial="avg")


def test_frame_cnn_takes_a_timm_backbone_with_its_weights(homes, tiny):
    from gemo import models

    _hub_file(homes, tiny)
    model = models.create("frame-cnn", input_dim=3, backbone="test_efficientnet", input_size=32)
    source = model.load_pretrained()
    assert source["file"].endswith("model.safetensors")
    assert torch.equal(model.backbone.conv_stem.weight, tiny["conv_stem.weight"])
    assert dataclasses.asdict(model.options)["backbone"] == "test_efficientnet"
