"""The PyTorch rebuild of Keras models, checked against numpy layer by layer; FER aggregation."""

import json

import h5py
import numpy as np
import pytest
import torch

from gemo.faces import fer
from gemo.faces.keras_graph import KerasGraph

# A miniature of the mini-XCEPTION's layer types and wiring: valid and "same" convolutions,
# a separable convolution, batch norm, a strided 1x1 shortcut, "same" max pooling, Add, GAP, softmax.
LAYERS = [
    ("input_1", "InputLayer", {}, []),
    ("conv_a", "Conv2D", {"filters": 3, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
                          "use_bias": False, "activation": "linear"}, ["input_1"]),
    ("bn_a", "BatchNormalization", {"axis": -1, "epsilon": 1e-3}, ["conv_a"]),
    ("relu_a", "Activation", {"activation": "relu"}, ["bn_a"]),
    ("sep_b", "SeparableConv2D", {"filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
                                  "padding": "same", "use_bias": False, "activation": "linear",
                                  "depth_multiplier": 1}, ["relu_a"]),
    ("bn_b", "BatchNormalization", {"axis": -1, "epsilon": 1e-3}, ["sep_b"]),
    ("pool_b", "MaxPooling2D", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}, ["bn_b"]),
    ("short", "Conv2D", {"filters": 4, "kernel_size": [1, 1], "strides": [2, 2], "padding": "same",
                         "use_bias": False, "activation": "linear"}, ["relu_a"]),
    ("add", "Add", {}, ["pool_b", "short"]),
    ("conv_c", "Conv2D", {"filters": 7, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                          "use_bias": True, "activation": "linear"}, ["add"]),
    ("gap", "GlobalAveragePooling2D", {}, ["conv_c"]),
    ("predictions", "Activation", {"activation": "softmax"}, ["gap"]),
]


def _weights(rng):
    def bn(channels):
        return {"gamma": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 0.1, channels),
                "moving_mean": rng.normal(0, 0.1, channels),
                "moving_variance": rng.uniform(0.5, 1.5, channels)}

    return {
        "conv_a": {"kernel": rng.normal(0, 0.5, (3, 3, 1, 3))}, "bn_a": bn(3),
        "sep_b": {"depthwise_kernel": rng.normal(0, 0.5, (3, 3, 3, 1)),
                  "pointwise_kernel": rng.normal(0, 0.5, (1, 1, 3, 4))}, "bn_b": bn(4),
        "short": {"kernel": rng.normal(0, 0.5, (1, 1, 3, 4))},
        "conv_c": {"kernel": rng.normal(0, 0.5, (3, 3, 4, 7)), "bias": rng.normal(0, 0.1, 7)},
    }


def _write_keras_file(path, weights):
    """An .hdf5 laid out as Keras 2.0 saves models (architecture JSON + model_weights groups)."""
    config = {"class_name": "Model", "config": {
        "layers": [{"name": n, "class_name": k, "config": {"name": n, **c},
                    "inbound_nodes": [[[i, 0, 0, {}] for i in ins]] if ins else []}
                   for n, k, c, ins in LAYERS],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["predictions", 0, 0]]}}
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        group = f.create_group("model_weights")
        for layer, arrays in weights.items():
            inner = group.create_group(layer).create_group(f"{layer}_1")
            for name, value in arrays.items():
                inner.create_dataset(f"{name}:0", data=np.asarray(value, np.float32))


# -- an independent numpy reference, written out the slow, obvious way (NHWC like Keras) --
def _tf_same(size, kernel, stride):
    """TensorFlow's rule: output ceil(size / stride); odd padding puts the extra pixel last."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x, kernel, stride, value=0.0):
    (top, bottom), (left, right) = _tf_same(x.shape[0], kernel, stride), _tf_same(x.shape[1], kernel, stride)
    return np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=value)


def _conv(x, kernel, stride=1, padding="valid"):
    kh, kw, _, out_channels = kernel.shape
    if padding == "same":
        x = _pad_same(x, kh, stride)
    rows = (x.shape[0] - kh) // stride + 1
    cols = (x.shape[1] - kw) // stride + 1
    out = np.zeros((rows, cols, out_channels))
    for i in range(rows):
        for j in range(cols):
            patch = x[i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2]))
    return out


def _depthwise(x, kernel):
    x = _pad_same(x, kernel.shape[0], 1)
    return np.stack([_conv(x[:, :, c:c + 1], kernel[:, :, c:c + 1, :])[:, :, 0]
                     for c in range(x.shape[2])], axis=2)


def _bn(x, p, eps=1e-3):
    return (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + eps) * p["gamma"] + p["beta"]


def _maxpool_same(x, size, stride):
    x = _pad_same(x, size, stride, value=-np.inf)
    rows, cols = (x.shape[0] - size) // stride + 1, (x.shape[1] - size) // stride + 1
    return np.array([[x[i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(0, 1))
                      for j in range(cols)] for i in range(rows)])


def _reference(image, w):
    a = np.maximum(_bn(_conv(image, w["conv_a"]["kernel"]), w["bn_a"]), 0)
    b = _conv(_depthwise(a, w["sep_b"]["depthwise_kernel"]), w["sep_b"]["pointwise_kernel"])
    b = _maxpool_same(_bn(b, w["bn_b"]), 3, 2)
    s = _conv(a, w["short"]["kernel"], stride=2, padding="same")
    c = _conv(b + s, w["conv_c"]["kernel"], padding="same") + w["conv_c"]["bias"]
    logits = c.mean(axis=(0, 1))
    e = np.exp(logits - logits.max())
    return e / e.sum()


@pytest.mark.parametrize("size", [10, 11])  # even and odd sizes: asymmetric "same" padding
def test_keras_graph_matches_numpy_reference(tmp_path, size):
    rng = np.random.default_rng(size)
    weights = _weights(rng)
    _write_keras_file(tmp_path / "model.hdf5", weights)
    net = KerasGraph.from_hdf5(tmp_path / "model.hdf5").eval()
    image = rng.uniform(-1, 1, (size, size, 1))
    with torch.no_grad():
        got = net(torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32)))[0].numpy()
    np.testing.assert_allclose(got, _reference(image, weights), rtol=1e-4, atol=1e-5)


def test_unsupported_layer_is_refused(tmp_path):
    _write_keras_file(tmp_path / "model.hdf5", _weights(np.random.default_rng(0)))
    with h5py.File(tmp_path / "model.hdf5", "a") as f:
        f.attrs["model_config"] = f.attrs["model_config"].replace('"GlobalAveragePooling2D"', '"Dense"')
    with pytest.raises(ValueError, match="unsupported Keras layer type 'Dense'"):
        KerasGraph.from_hdf5(tmp_path / "model.hdf5")


def test_frame_features_22_values():
    probs = np.array([[0.1, 0, 0, 0.7, 0.1, 0, 0.1],
                      [0.3, 0, 0, 0.1, 0.4, 0, 0.2],
                      [0, 0, 0, 0, 0, 0, 1.0]], np.float32)
    features = fer.frame_features(probs, np.array([0, 0, 2]), 4)
    assert features.shape == (4, 22) and np.isfinite(features).all()
    np.testing.assert_allclose(features[0, :7], [0.1, 0, 0, 0.1, 0.1, 0, 0.1])   # min
    np.testing.assert_allclose(features[0, 7:14], [0.3, 0, 0, 0.7, 0.4, 0, 0.2])  # max
    np.testing.assert_allclose(features[0, 14:21], [0.2, 0, 0, 0.4, 0.25, 0, 0.15])  # mean
    assert features[0, 21] == 2 and features[2, 21] == 1
    assert not features[1].any() and not features[3].any()  # frames without faces: zeros
    assert len(fer.feature_names()) == 22


def test_valence_mapping():
    probs = np.zeros((3, 7))
    probs[0, fer.FER_CLASSES.index("happy")] = 1
    probs[1, fer.FER_CLASSES.index("neutral")] = 1
    probs[2, [0, 4]] = 0.5  # angry + sad
    np.testing.assert_allclose(fer.valence(probs), np.eye(3), atol=1e-6)


def test_box_crop_is_square_padded_and_scaled():
    image = np.full((100, 200, 3), 255, np.uint8)
    x = fer.fer_input_from_box(image, (150, 10, 210, 90))  # runs off the right edge
    assert x.shape == (64, 64) and x.dtype == np.float32
    assert x.max() == pytest.approx(1.0) and x.min() == pytest.approx(-1.0)  # black padding
    assert (x[:, -5:] == -1).all() and (x[20:40, 5:20] == 1).all()


def test_predict_gives_the_last_hidden_layer_averaged_from_the_same_pass(tmp_path):
    weights = _weights(np.random.default_rng(5))
    _write_keras_file(tmp_path / "model.hdf5", weights)
    net = KerasGraph.from_hdf5(tmp_path / "model.hdf5").eval()
    assert fer.hidden_layer(net) == "add"  # what the class convolution reads
    faces = np.random.default_rng(6).uniform(-1, 1, (3, 64, 64)).astype(np.float32)
    probs, embeddings = fer.predict(net, faces, batch_size=2, embeddings=True)
    with torch.no_grad():
        x = torch.from_numpy(faces[:, None])
        np.testing.assert_allclose(probs, net(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(embeddings, net(x, until="add").mean(dim=(2, 3)).numpy(),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fer.predict(net, faces, batch_size=2), probs)
    none, no_embeddings = fer.predict(net, faces[:0], embeddings=True)
    assert none.shape == (0, 7) and no_embeddings.shape == (0, 4)


def test_fer_set_stores_each_faces_embedding(fer_weights):
    from gemo.extractors.fer import FER

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    faces = {"crops": crops, "frame_index": np.array([0, 0, 2], np.int32),
             "counts": np.array([2, 0, 1, 0], np.int32)}
    out = FER().compute(None, {"faces": faces})
    assert out["embeddings"].shape == (3, 128) and out["embeddings"].dtype == np.float32
    assert np.isfinite(out["embeddings"]).all() and out["embeddings"].std(0).max() > 0
    model = fer.load_fer(weights=fer_weights)
    np.testing.assert_allclose(out["probs"], fer.predict(
        model, [fer.fer_input_from_crop(c) for c in crops]), rtol=1e-5, atol=1e-6)
    assert out["features"].shape == (4, 22)
    empty = FER().compute(None, {"faces": {**faces, "crops": crops[:0],
                                           "frame_index": np.zeros(0, np.int32)}})
    assert empty["embeddings"].shape == (0, 128) and empty["probs"].shape == (0, 7)
