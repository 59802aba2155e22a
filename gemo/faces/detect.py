"""Face detectors behind one small interface: boxes, scores and five landmarks per face.

Detectors are registered by name: ``mtcnn`` (default; its weights ship inside
facenet-pytorch) and ``retinaface`` (mobilenet0.25; its weights file must be
put in place, see :mod:`gemo.faces.retinaface`). Both return, per image, a
:class:`Faces` in the pixels of the image given, largest face first.

Images are scaled down before detection so that their longer side is at most
``max_side`` (0: never), which bounds the cost on 1080p frames; boxes and
landmarks are scaled back. A face's size is the longer side of its box;
faces under ``min_face_size`` pixels of the original image are dropped.

>>> detector = create_detector("mtcnn", min_face_size=40, max_side=640)   # doctest: +SKIP
>>> [faces] = detector.detect([image])      # image: H x W x 3 uint8 RGB   # doctest: +SKIP
>>> faces.boxes.shape, faces.landmarks.shape                               # doctest: +SKIP
((1, 4), (1, 5, 2))
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from gemo import pretrained
from gemo.data.media import check_rgb
from gemo.device import resolve_device
from gemo.errors import GemoError
from gemo.registry import Registry

LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # as seen in the image

_DETECTORS = Registry("face detector")
register, available = _DETECTORS.register, _DETECTORS.available


@dataclass(frozen=True)
class Faces:
    """Faces of one image: float32 ``boxes`` [n, 4] (x1, y1, x2, y2), ``scores`` [n],
    ``landmarks`` [n, 5, 2] (x, y in :data:`LANDMARKS` order), largest box first."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self):
        return len(self.scores)

    def __getitem__(self, index):
        """A subset, e.g. ``faces[:16]`` for the 16 largest."""
        return Faces(self.boxes[index], self.scores[index], self.landmarks[index])


def create_detector(name="mtcnn", *, min_face_size=40, max_side=640, device="cpu", weights=None,
                    threshold=None, batch_size=0):
    """A detector by name; ``threshold`` None takes the detector's default score threshold.

    ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``. ``weights`` is a file or a
    folder holding the detector's files, or None for the standard places (see
    :mod:`gemo.pretrained`). Networks are loaded on the first :meth:`~Detector.detect`.
    ``batch_size`` caps the images per network call (0: all images of one size at once).
    """
    return _DETECTORS.get(name)(min_face_size=min_face_size, max_side=max_side, device=device,
                                weights=weights, threshold=threshold, batch_size=batch_size)


class Detector:
    """Shared part: batching by image size, scaling, the size filter and the ordering.

    Subclasses set ``name`` and ``default_threshold`` and implement ``_load()``
    and ``_detect_batch(batch, min_size)`` (``batch`` uint8 [B, h, w, 3] at
    detection scale, ``min_size`` in those pixels), returning per image
    ``(boxes, scores, landmarks)`` in batch pixels.
    """

    name = ""
    default_threshold = 0.9

    def __init__(self, *, min_face_size=40, max_side=640, device="cpu", weights=None,
                 threshold=None, batch_size=0):
        if min_face_size < 0 or max_side < 0 or batch_size < 0:
            raise GemoError("min_face_size, max_side and batch_size must be >= 0")
        self.batch_size = int(batch_size)
        self.min_face_size = float(min_face_size)
        self.max_side = int(max_side)
        self.device = resolve_device(device)
        self.weights = weights
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        self.sources = None  # where the weights came from, once loaded

    def describe(self):
        """Settings and weight files, for provenance (loads the networks)."""
        self.load()
        return {"name": self.name, "threshold": self.threshold, "min_face_size": self.min_face_size,
                "max_side": self.max_side, "weights": self.sources}

    def detect(self, images, *, scaled=None):
        """One :class:`Faces` per image (``H x W x 3`` uint8 RGB), in the input order.

        ``scaled`` may give the same images already scaled to ``max_side`` (the video
        decoder does that faster than a resize here); detection then runs on them, and
        the faces are still in the pixels of ``images``.
        """
        images = [check_rgb(image, task="face detection") for image in images]
        if scaled is not None and len(scaled) != len(images):
            raise GemoError(f"{len(scaled)} scaled images for {len(images)} images")
        self.load()
        results = [None] * len(images)
        by_shape = {}
        for i, image in enumerate(images):  # equal sizes go through the network together
            by_shape.setdefault(image.shape, []).append(i)
        for (height, width, _), indices in by_shape.items():
            scale = min(1.0, self.max_side / max(height, width)) if self.max_side else 1.0
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            back = np.array([width / size[0], height / size[1]], np.float32)
            # MTCNN's pyramid cannot look for faces under its 12-pixel window.
            min_size = max(12.0, self.min_face_size / float(back.max()))
            step = self.batch_size or len(indices)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                batch = np.stack([_resize(images[i], size) if scaled is None
                                  else _check_scaled(scaled[i], size) for i in chunk])
                for i, found in zip(chunk, self._detect_batch(batch, min_size)):
                    results[i] = self._finish(*found, back)
        return results

    def _finish(self, boxes, scores, landmarks, back):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.tile(back, 2)
        scores = np.asarray(scores, np.float32).reshape(-1)
        landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2) * back
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = (scores >= self.threshold) & (sides >= self.min_face_size)
        boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area, kind="stable")
        return Faces(boxes[order], scores[order], landmarks[order])

    def load(self):
        """Load the networks now (else on the first :meth:`detect`); loading twice is free."""
        if self.sources is None:
            self.sources = self._load()

    def _load(self):
        raise NotImplementedError

    def _detect_batch(self, batch, min_size):
        raise NotImplementedError


def _check_scaled(image, size):
    image = check_rgb(image, task="face detection")
    if (image.shape[1], image.shape[0]) != size:
        raise GemoError(f"a scaled image is {image.shape[1]} x {image.shape[0]}, "
                        f"not {size[0]} x {size[1]}")
    return image


def _resize(image, size):
    if (image.shape[1], image.shape[0]) == size:
        return image
    # Pillow widens the bilinear kernel when shrinking, so small faces are not aliased away.
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


@_DETECTORS.register
class MTCNNDetector(Detector):
    """MTCNN (Zhang et al. 2016) from facenet-pytorch, with its bundled, checksummed weights.

    ``threshold`` applies to the final (O-Net) score; the first two stages keep
    facenet-pytorch's 0.6 and 0.7. ``weights`` may name a folder holding
    pnet.pt, rnet.pt and onet.pt.
    """

    name = "mtcnn"
    default_threshold = 0.9
    parts = ("pnet", "rnet", "onet")

    def _load(self):
        # on first use: torch's import is slow; gemo.faces.mtcnn registers the weight entries
        from gemo.faces import mtcnn  # noqa: F401
        from gemo.faces import mtcnn_nets

        folder = self.weights  # None: the usual places, then facenet-pytorch's own data folder
        if folder is not None and not os.path.isdir(folder):
            raise GemoError(f"MTCNN weights: {folder} is not a folder holding "
                            "pnet.pt, rnet.pt and onet.pt")
        nets, sources = [], []
        for part in self.parts:
            path = pretrained.find(f"mtcnn.{part}", folder=folder)
            state, source = pretrained.load_file(path)
            net = mtcnn_nets.build(part)
            pretrained.check_state_dict(state, net, source=str(path))
            net.load_state_dict(state)
            # Channels-last makes the convolutions and poolings 1.7-2.5x faster on CPU;
            # results change by float rounding only.
            nets.append(net.to(self.device, memory_format=torch.channels_last))
            sources.append(source)
        self._nets = tuple(nets)
        return sources

    def _detect_batch(self, batch, min_size):
        from gemo.faces import mtcnn

        thresholds = (*mtcnn.THRESHOLDS[:2], min(mtcnn.THRESHOLDS[2], self.threshold))
        return mtcnn.detect(self._nets, batch, min_size=min_size, thresholds=thresholds)


@_DETECTORS.register
class RetinaFaceDetector(Detector):
    """RetinaFace mobilenet0.25 (Deng et al. 2020), as used by Quach et al. for aligned faces.

    ``weights`` is the file ``mobilenet0.25_Final.pth`` or a folder holding it.
    """

    name = "retinaface"
    default_threshold = 0.8

    def _load(self):
        from gemo.faces.retinaface import load_retinaface

        self._net, source = load_retinaface(weights=self.weights, device=self.device)
        return [source]

    def _detect_batch(self, batch, min_size):
        from gemo.faces.retinaface import detect_batch

        # min_size is applied afterwards: the anchors already start at 16 pixels.
        return detect_batch(self._net, batch, threshold=self.threshold)
