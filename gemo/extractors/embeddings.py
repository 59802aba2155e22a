"""Cached backbone embeddings: a frozen pretrained network as a feature set, one per backbone.

``embed-<backbone>`` (``embed-mobilenet_v2``, ``embed-resnet18``...) takes the same
K evenly spaced frames as the ``frames`` set (one decode serves both), prepares
them as the backbone's ImageNet weights expect (input size, mean and std of its
:class:`gemo.pretrained.WeightFile`) and stores the network's pooled features:

* ``features``: ``[K, width]`` float32 (1280 for MobileNetV2), one row per frame, so
  the sequence models read it (``temporal-head`` by default, ``blstm-attention``);
* ``timestamps``: ``[K]`` seconds of the frames taken.

The network runs once per clip at extraction, with ``--device`` and ``--batch-size``
(frames per network call), and the cache resumes like every other; a head then
trains on a CPU in seconds. ``fit`` chooses the preprocessing: ``squash`` (the
default) resizes the whole frame to size x size as the ``frames`` set does, keeping
people at the edges of a wide scene; ``crop`` is ImageNet's evaluation transform
(shorter side to 256/224 of the size, centre crop). The weights file is found and
verified when the set is created, so a missing one stops a run before any clip;
its SHA-256 is among the cache's parameters, so other weights never mix with it.

Video (3D) backbones (``embed-i3d``, ``embed-resnet50-inflated``,
``embed-resnet3d50-mmit``, ``embed-r2plus1d_18``; :class:`VideoEmbeddings`) read the
K frames as one clip and store ``[T', width]``, one row per temporal position
(``T' = ceil(K / 8)`` for I3D and R(2+1)D, ``ceil(K / 16)`` for the 3D ResNets); K is
16 by default. ``maps-<backbone>`` (:class:`Maps`) keeps each frame's last feature
maps instead of their average, pooled to ``grid`` x ``grid``: ``[K, grid, grid, C]``,
for the ``convlstm`` model (Fusical's scene model).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gemo.errors import GemoError
from gemo.extractors.base import Extractor, register
from gemo.options import Options

# The backbones of gemo.models.backbones that get a set; named here rather than read from
# that registry, which imports torch (the feature-set registry must not: `gemo --help`).
VIDEO_BACKBONES = ("i3d", "resnet50-inflated", "resnet3d50-mmit", "r2plus1d_18")
EMBEDDING_BACKBONES = ("mobilenet_v2", "resnet18", "resnet50", "vgg19",
                       "resnet50d", "resnet101d", "rexnet_100",  # these three need timm
                       *VIDEO_BACKBONES)
MAP_BACKBONES = ("resnet50", "resnet18", "vgg19", "mobilenet_v2")  # maps-<backbone>
PREFIX, MAPS_PREFIX = "embed-", "maps-"


class Embeddings(Extractor):
    """The features of the frozen, pretrained backbone ``backbone`` for K frames per clip."""

    backbone = ""  # a name in gemo.models.backbones that has pretrained weights
    prefix = PREFIX
    summary = "frozen {} (pretrained) features of K frames, [K, width] float32"
    version = 1
    libraries = ("av", "torch", "torchvision", "timm")
    modules = ("torchvision.models",)
    modality = "scene"
    uses_device = True

    @dataclass(frozen=True)
    class Params(Options):
        count: int = 10  # frames per clip, evenly spaced (as the frames set's default)
        fit: Literal["squash", "crop"] = "squash"

        def check(self):
            return "count must be positive" if self.count < 1 else None

    def __init__(self, **params):
        super().__init__(**params)
        self._network = None
        try:  # found and verified now, so a missing file stops the run before any clip
            self.weights_file = self._backbone().find_weights()
        except GemoError as error:
            raise GemoError(f"{self.name}: {error}") from None
        self.entry, self.weights_sha256 = self._describe(self.weights_file)

    def _backbone(self):
        from gemo.models import backbones

        return backbones.get(self.backbone)()

    def _describe(self, path):
        """The :class:`WeightFile` that describes the file (input size, mean, std) and its
        full SHA-256."""
        from gemo.files import sha256_file

        item = self._backbone().weight_file(path)
        return item, item.sha256 if item.sha256 and len(item.sha256) == 64 else sha256_file(path)

    def provenance(self):
        provenance = super().provenance()
        # Compared before stored clips are reused: features of other weights never mix.
        provenance["params"]["weights_sha256"] = self.weights_sha256
        return provenance

    def info(self):
        item = self.entry
        return {"backbone": self.backbone, "weights": item.name, "weights_file": item.filename,
                "weights_sha256": self.weights_sha256, "licence": item.licence,
                "preprocessing": {"fit": self.params.fit, "size": self.size(),
                                  "mean": list(item.mean), "std": list(item.std),
                                  "scale": "RGB / 255"}}

    def size(self):
        """The side of the square frames the network reads (the weights' input size)."""
        return self.entry.input_size or self._backbone().input_size

    def frame_counts(self):
        return (self.params.count,)

    def load(self):
        """Build the network and load its weights, once per process (never pickled)."""
        if self._network is not None:
            return
        import torch

        from gemo.device import resolve_device

        network, _ = self._backbone().pretrained(weights=self.weights_file)
        item = self.entry
        device = resolve_device(self.device)
        self._network = network.eval().requires_grad_(False).to(device)
        self._mean = torch.tensor(item.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(item.std, device=device).view(1, 3, 1, 1)

    def __getstate__(self):
        return {**self.__dict__, "_network": None}

    def compute(self, media):
        import torch

        self.load()
        size = self.size()
        if self.params.fit == "squash":
            frames, timestamps = media.frames(count=self.params.count, size=size)
            x = torch.from_numpy(frames).permute(0, 3, 1, 2)
        else:
            frames, timestamps = media.frames(count=self.params.count, max_side=0)
            x = _centre_crop(torch.from_numpy(frames).permute(0, 3, 1, 2), size)
        device = self._mean.device
        with torch.inference_mode():
            x = (x.to(device).float().div_(255.0) - self._mean) / self._std
            features = self.embed(x)
        return {"features": features.float().cpu().numpy().astype(np.float32),
                "timestamps": timestamps}

    def embed(self, x):
        """Normalised frames ``[K, 3, S, S]`` -> ``[K, width]``, ``batch_size`` frames per call
        (0: all K at once).

        A video backbone overrides it to return ``[T', width]`` for the clip."""
        import torch

        step = self.batch_size or len(x)
        return torch.cat([self._network(x[i:i + step]) for i in range(0, len(x), step)])


def _centre_crop(frames, size):
    """uint8 ``[K, 3, H, W]`` -> float ``[K, 3, size, size]``: the shorter side resized to
    ``size * 256 / 224`` (antialiased bilinear), then the centre ``size`` x ``size``."""
    from torch.nn import functional as F

    height, width = frames.shape[-2:]
    short = round(size * 256 / 224)
    scale = short / min(height, width)
    new = (max(short, round(height * scale)), max(short, round(width * scale)))
    x = F.interpolate(frames.float(), size=new, mode="bilinear", antialias=True,
                      align_corners=False)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return x[..., top:top + size, left:left + size].round_().clamp_(0, 255)


class VideoEmbeddings(Embeddings):
    """A video backbone's features of the clip's K frames read as one clip: ``[T', width]``.

    16 frames by default: I3D halves time three times (``T' = ceil(K / 8)``), so 16 is the
    smallest count above 8 that gives more than one position with none made of padding alone
    (10 frames give 2 positions too, the second from the last frames and padding); 16 evenly
    spaced frames of a 5 s clip are about 3 per second. The network gets the frames with the ImageNet
    mean/std, as every frame model's input, and rescales them to its own (I3D: [-1, 1]).
    One clip is one network call: ``batch_size`` does not split it (a 3D network reads the
    frames together).
    """

    summary = ("frozen {} (pretrained video network) features of K frames read as one clip, "
               "[T', width] float32")

    @dataclass(frozen=True)
    class Params(Embeddings.Params):
        count: int = 16

    def load(self):
        if self._network is not None:
            return
        import torch

        from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD

        super().load()
        device = self._mean.device  # the module rescales ImageNet input to the weights' own
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def embed(self, x):
        """Normalised frames ``[K, 3, S, S]`` -> ``[T', width]``."""
        return self._network(x.transpose(0, 1).unsqueeze(0))[0]


class Maps(Embeddings):
    """The last feature maps of each of K frames, averaged to ``grid`` x ``grid``:
    ``features`` ``[K, grid, grid, C]`` float32 (C: 2048 for ResNet-50), channels last.

    Fusical's scene model runs ConvLSTMs over ResNet-50's maps (``convlstm``). At 224 pixels
    the maps are 7 x 7; ``grid`` 4 (the default) keeps their layout in 1.3 MB per clip of 10
    ResNet-50 frames (4 MB at ``grid`` 7, 3.5 or 11 GB for VGAF's 2,661 clips, which training
    holds in memory).
    """

    prefix = MAPS_PREFIX
    summary = "frozen {} (pretrained) feature maps of K frames, [K, grid, grid, C] float32"

    @dataclass(frozen=True)
    class Params(Embeddings.Params):
        grid: int = 4

        def check(self):
            return super().check() or ("grid must be positive" if self.grid < 1 else None)

    def load(self):
        if self._network is None:
            super().load()
            self._network = self._backbone().maps(self._network)

    def info(self):
        return {**super().info(), "layout": "[frame, grid row, grid column, channel]"}

    def embed(self, x):
        """Normalised frames ``[K, 3, S, S]`` -> ``[K, grid, grid, C]``."""
        from torch.nn import functional as F

        maps = super().embed(x)  # [K, C, h, w]
        return F.adaptive_avg_pool2d(maps, self.params.grid).permute(0, 2, 3, 1)


def embedding_set(backbone, base=Embeddings):
    """Register the set ``<base.prefix><backbone>`` (a subclass of ``base``) and return it."""
    cls = type(f"{base.__name__}_{backbone.replace('-', '_')}", (base,), {
        "name": base.prefix + backbone, "backbone": backbone, "__module__": __name__,
        "description": base.summary.format(backbone),
    })
    globals()[cls.__name__] = cls  # found by name when an instance is pickled
    return register(cls)


for _backbone in EMBEDDING_BACKBONES:
    embedding_set(_backbone, VideoEmbeddings if _backbone in VIDEO_BACKBONES else Embeddings)
for _backbone in MAP_BACKBONES:
    embedding_set(_backbone, Maps)
