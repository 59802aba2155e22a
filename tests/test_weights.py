"""Pretrained weights: search order, checksums, clear errors, loading into a backbone.

The tests write their own weight files (a resnet18 state dict made here), so
nothing is downloaded and the real ImageNet files are never needed.
"""

import hashlib

import pytest
import torch
from torchvision.models import resnet18

from gemo import models, weights
from gemo.errors import GemoError
from gemo.weights import WeightFile

RESNET18 = "resnet18-f37072fd.pth"


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty $GEMO_HOME and $TORCH_HOME; returns (gemo weights dir, torch hub checkpoints dir)."""
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "gemo" / "weights", tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet_state():
    torch.manual_seed(0)
    return resnet18(weights=None).state_dict()


def _write(path, state):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _accept(monkeypatch, digest, name="resnet18.imagenet1k_v1", filename=RESNET18):
    """Make the table expect our test file (the real entry holds the real ImageNet hash)."""
    item = WeightFile(name, filename, digest, "", None, "test")
    monkeypatch.setitem(weights._ENTRIES, name, item)


def test_the_known_torchvision_files_match_torchvision():
    from torchvision.models import ResNet18_Weights, ResNet50_Weights, VGG19_Weights

    for name, enum in [("resnet18.imagenet1k_v1", ResNet18_Weights.IMAGENET1K_V1),
                       ("resnet50.imagenet1k_v1", ResNet50_Weights.IMAGENET1K_V1),
                       ("resnet50.imagenet1k_v2", ResNet50_Weights.IMAGENET1K_V2),
                       ("vgg19.imagenet1k_v1", VGG19_Weights.IMAGENET1K_V1)]:
        item = weights.entry(name)
        assert enum.url == item.url and enum.url.endswith("/" + item.filename)
        prefix = item.filename.rsplit("-", 1)[1].split(".")[0]
        assert item.sha256.startswith(prefix) and len(item.sha256) == 64


def test_missing_file_error_names_file_folders_and_url(homes):
    gemo_dir, hub_dir = homes
    with pytest.raises(GemoError) as error:
        weights.find(["resnet18.imagenet1k_v1"])
    message = str(error.value)
    assert RESNET18 in message
    assert str(gemo_dir) in message and str(hub_dir) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "--weights" in message


def test_missing_error_lists_every_acceptable_file(homes):
    with pytest.raises(GemoError, match="resnet50-11ad3fa6.pth.*or resnet50-0676ba61.pth"):
        model = models.create("frame-cnn", input_dim=3, backbone="resnet50", input_size=32)
        model.load_pretrained()


def test_found_in_torch_hub_cache_and_loaded_into_the_backbone(homes, resnet_state, monkeypatch):
    _, hub_dir = homes
    digest = _write(hub_dir / RESNET18, resnet_state)
    _accept(monkeypatch, digest)
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", input_size=32)
    source = model.load_pretrained()
    assert source == {"file": str(hub_dir / RESNET18), "name": "resnet18.imagenet1k_v1",
                      "sha256": digest}
    assert torch.equal(model.backbone.conv1.weight, resnet_state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var,
                       resnet_state["layer4.1.bn2.running_var"])


def test_gemo_home_comes_before_the_hub_cache(homes, resnet_state, monkeypatch):
    gemo_dir, hub_dir = homes
    digest = _write(gemo_dir / RESNET18, resnet_state)
    _write(hub_dir / RESNET18, {"other": torch.zeros(1)})  # would fail the checksum if read
    _accept(monkeypatch, digest)
    assert weights.find("resnet18.imagenet1k_v1") == gemo_dir / RESNET18


def test_explicit_folder_comes_first(homes, resnet_state, monkeypatch, tmp_path):
    gemo_dir, _ = homes
    digest = _write(tmp_path / "mine" / RESNET18, resnet_state)
    _write(gemo_dir / RESNET18, {"other": torch.zeros(1)})
    _accept(monkeypatch, digest)
    _, source = weights.resolve(["resnet18.imagenet1k_v1"], weights=tmp_path / "mine")
    assert source["file"] == str(tmp_path / "mine" / RESNET18)


def test_wrong_checksum_is_refused(homes, resnet_state, monkeypatch):
    _, hub_dir = homes
    _write(hub_dir / RESNET18, resnet_state)
    _accept(monkeypatch, "0" * 64)
    with pytest.raises(GemoError, match=f"SHA-256 .* does not match {RESNET18}.*delete it"):
        weights.find("resnet18.imagenet1k_v1")


def test_wrong_size_is_refused_before_hashing(homes):
    """The real entry knows the published size; our small file cannot be it."""
    _, hub_dir = homes
    hub_dir.mkdir(parents=True)
    (hub_dir / RESNET18).write_bytes(b"truncated download")
    with pytest.raises(GemoError, match="18 bytes, but resnet18-f37072fd.pth .* has 46830571"):
        weights.find("resnet18.imagenet1k_v1")


def test_prefix_only_entry_checks_the_prefix(homes, resnet_state, monkeypatch):
    _, hub_dir = homes
    digest = _write(hub_dir / "net-x.pth", resnet_state)
    _accept(monkeypatch, digest[:8], name="test.prefix", filename="net-x.pth")
    assert weights.find("test.prefix") == hub_dir / "net-x.pth"
    _accept(monkeypatch, "deadbeef", name="test.prefix", filename="net-x.pth")
    with pytest.raises(GemoError, match="does not match"):
        weights.find("test.prefix")


def test_explicit_unknown_file_is_loaded_when_it_fits(homes, resnet_state, tmp_path):
    _write(tmp_path / "finetuned.pth", {"state_dict": resnet_state})  # wrapped, as many are
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", input_size=32)
    source = model.load_pretrained(weights=tmp_path / "finetuned.pth")
    assert source["name"] is None and len(source["sha256"]) == 64
    assert torch.equal(model.backbone.conv1.weight, resnet_state["conv1.weight"])


def test_explicit_unknown_file_that_does_not_fit_is_refused(homes, resnet_state, tmp_path):
    state = dict(resnet_state)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    _write(tmp_path / "other.pth", state)
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", input_size=32)
    with pytest.raises(GemoError) as error:
        model.load_pretrained(weights=tmp_path / "other.pth")
    message = str(error.value)
    assert "does not fit the ResNet network" in message
    assert "missing 1 key(s), e.g. fc.bias" in message
    assert "unexpected 1 key(s), e.g. extra.weight" in message
    assert "conv1.weight (64, 3, 5, 5) != (64, 3, 7, 7)" in message


def test_a_known_file_for_another_network_is_verified_then_refused(homes, monkeypatch, tmp_path):
    torch.manual_seed(0)
    from torchvision.models import resnet50

    path = tmp_path / "resnet50-11ad3fa6.pth"
    digest = _write(path, resnet50(weights=None).state_dict())
    monkeypatch.setitem(weights._ENTRIES, "resnet50.imagenet1k_v2", WeightFile(
        "resnet50.imagenet1k_v2", path.name, digest, "", None, "test"))
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", input_size=32)
    with pytest.raises(GemoError, match="does not fit"):
        model.load_pretrained(weights=path)


def test_bad_weights_argument_and_non_tensor_file(homes, tmp_path):
    with pytest.raises(GemoError, match="not a file, a folder or a known weights name"):
        weights.resolve(["resnet18.imagenet1k_v1"], weights=tmp_path / "nope.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(GemoError, match="cannot load as a state dict"):
        weights.load_file(tmp_path / "notes.pth")


def test_a_known_name_picks_that_entry(homes, resnet_state, monkeypatch):
    gemo_dir, _ = homes
    digest = _write(gemo_dir / "resnet50-0676ba61.pth", {"x": torch.zeros(1)})
    monkeypatch.setitem(weights._ENTRIES, "resnet50.imagenet1k_v1", WeightFile(
        "resnet50.imagenet1k_v1", "resnet50-0676ba61.pth", digest, "", None, "test"))
    state, source = weights.resolve(["resnet50.imagenet1k_v2"], weights="resnet50.imagenet1k_v1")
    assert source["name"] == "resnet50.imagenet1k_v1" and set(state) == {"x"}


def test_registering_entries():
    item = WeightFile("test.face", "face-0123abcd.pt", "0123abcd", "", None, "a face model")
    weights.register_weights(item)
    try:
        assert "test.face" in weights.known()
        assert weights.by_filename("face-0123abcd.pt") is item
        with pytest.raises(ValueError, match="already registered"):
            weights.register_weights(item)
    finally:
        weights.unregister_weights("test.face")
    with pytest.raises(ValueError, match="lowercase hex"):
        weights.register_weights(WeightFile("bad", "bad.pt", "XYZ"))
    with pytest.raises(GemoError, match="unknown weights"):
        weights.entry("test.face")
