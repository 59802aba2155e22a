"""Trained fusions and their models as one :class:`Pipeline`, from a workspace or a bundle.

A bundle (``gemo export``) carries a workspace's fusions and models to any path, without
the workspace: a folder, or the same files in a ``.zip``::

    manifest.json                  format, gemo and library versions, class names, the feature
                                   sets (extractor version, parameters, fingerprint), the models
                                   and fusions, and the SHA-256 of every other file
    models/<name>/model.pt         each model's checkpoint
    models/<name>/config.json      how it was trained (for people; gemo does not read it)
    fusions/<name>/fuser.joblib    each fitted fuser (a scikit-learn estimator, pickled)
    fusions/<name>/config.json     how it was fitted (for people)

Loading (:func:`load_bundle`) refuses, before loading anything: another format or other
class names, a feature set this gemo lacks or has at another extractor version (the models'
features would differ), and any file whose SHA-256 differs from the manifest's. Each file is
read once into memory, hashed, and loaded from those very bytes, so what was checked is what
is loaded. Checkpoints load with ``torch.load(weights_only=True)``, which runs no code; the
fusers are the only files unpickled.

Trust: unpickling runs code, so a bundle is as trustworthy as a program. The manifest is the
trust anchor: its hashes catch a damaged or swapped file, but whoever can edit a bundle can
edit its manifest too. Load only bundles you made or got from someone you trust, and check
the manifest's own SHA-256 (``gemo export`` prints it) against the one its maker gives you.

>>> pipeline = load_bundle("model.zip")                 # doctest: +SKIP
>>> list(pipeline.fusions), list(pipeline.checkpoints)  # doctest: +SKIP
(['fusion-svm'], ['audio-pyaudio-blstm-attention', 'scene-frames-frame-cnn'])
"""

import hashlib
import io
import json
import os
import re
import shutil
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import joblib

import gemo
from gemo import artifacts, extractors
from gemo.cache.store import FeatureCache
from gemo.errors import GemoError
from gemo.files import atomic_write, plain
from gemo.labels import CLASSES

FORMAT = "gemo-bundle/1"
MANIFEST = "manifest.json"
# A member name: folders and files of artifact-name characters, never '..' nor absolute.
_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
UPSTREAM = "upstream."  # a set computed from another records its fingerprint under this prefix


@dataclass
class Fusion:
    """A fitted fuser and what it takes: its models' ``inputs`` (probs or embeddings) in order."""

    name: str
    method: str
    models: list
    inputs: str
    fuser: object
    seen_missing: dict  # model -> clips of the fit split(s) that lacked its scores


@dataclass
class Pipeline:
    """What ``gemo predict`` runs: feature sets to extract, model checkpoints, fusions."""

    source: str  # "workspace PATH" or "bundle PATH", for messages
    feature_sets: dict  # set -> {"extractor_version", "params", "fingerprint"}
    checkpoints: dict  # model name -> checkpoint dict (gemo.models.checkpoint)
    fusions: dict  # name -> Fusion, the first one's label is a clip's label
    manifest_sha256: str | None = None  # a bundle's


def extractor_params(spec):
    """A set's stored parameters as its extractor takes them (without upstream fingerprints)."""
    return {key: value for key, value in spec["params"].items() if not key.startswith(UPSTREAM)}


def from_workspace(workspace, fusions=None):
    """The ``fusions`` (default: every fusion) of ``workspace`` and the models they fuse.

    A stale fusion (its models retrained since it was fitted) is refused, as
    ``gemo evaluate`` refuses it. The fusers are the workspace's own files.
    """
    from gemo.models.checkpoint import load_checkpoint

    source = f"workspace {workspace.root}"
    known = [name for name in artifacts.names_of(workspace) if artifacts.is_fusion(name)]
    chosen = {name: workspace_fusion(workspace, name) for name in _choose(known, fusions, source)}
    checkpoints = {model: load_checkpoint(workspace.model_dir(model) / "model.pt")
                   for fusion in chosen.values() for model in fusion.models}
    sets = _feature_sets(checkpoints, lambda name: _cache_spec(workspace, name), source)
    check_installed(sets, source)
    return Pipeline(source, sets, checkpoints, chosen)


def workspace_fusion(workspace, name):
    """The fitted fusion ``name`` of ``workspace`` (a :class:`Fusion`); refused when stale."""
    config = artifacts.read_config(workspace, name)
    path = workspace.model_dir(name) / "fuser.joblib"
    if config is None or not path.exists():
        raise GemoError(f"fusion {name} lacks its fuser.joblib or config.json in "
                        f"{workspace.models_dir}: fit it again with `gemo fuse`")
    stale = artifacts.stale_inputs(workspace, config)
    if stale:
        raise GemoError(f"fusion {name} is stale: {', '.join(stale)} changed since it was "
                        f"fitted; refit it: {config.get('command') or 'gemo fuse'}")
    return _fusion(name, config, joblib.load(path))


def check_installed(feature_sets, source):
    """Refuse feature sets this gemo lacks, has at another extractor version, or whose stored
    parameters it no longer takes: the models would get other features than they learnt."""
    for name, spec in sorted(feature_sets.items()):
        if name not in extractors.available():
            raise GemoError(f"{source} needs the feature set {name}, which this gemo does not have "
                            "(a plug-in not installed?); it has "
                            f"{', '.join(extractors.available())}")
        installed = extractors.get(name).version
        if installed != spec["extractor_version"]:
            raise GemoError(
                f"{source} was made for the {name} extractor version {spec['extractor_version']}, "
                f"this gemo's is version {installed}: its features would differ from those the "
                "models learnt; use the gemo it was made with, or retrain (and export) with this "
                "one")
        extractors.create(name, **extractor_params(spec))  # refuses parameters it no longer has


def export(*, workspace, out, fusions=None):
    """Write the ``fusions`` (default: all) of ``workspace`` and their models as a bundle.

    ``out``: a folder to create, or a file ending in ``.zip``; an existing path is refused.
    Returns a summary with the manifest's SHA-256 (give it to whoever loads the bundle).
    """
    out = Path(out)
    if out.exists():
        raise GemoError(f"{out} exists: remove it or choose another path (a bundle is never "
                        "written over)")
    pipeline = from_workspace(workspace, fusions)
    files = {}
    for name in pipeline.checkpoints:
        files[f"models/{name}/model.pt"] = workspace.model_dir(name) / "model.pt"
        files[f"models/{name}/config.json"] = workspace.model_dir(name) / "config.json"
    for name in pipeline.fusions:
        files[f"fusions/{name}/fuser.joblib"] = workspace.model_dir(name) / "fuser.joblib"
        files[f"fusions/{name}/config.json"] = workspace.model_dir(name) / "config.json"
    contents = {member: path.read_bytes() for member, path in files.items() if path.exists()}
    manifest = {
        "format": FORMAT,
        "gemo_version": gemo.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "made_from": str(workspace.root),
        "classes": list(CLASSES),
        "libraries": {name: metadata.version(name) for name in ("torch", "scikit-learn")},
        "feature_sets": pipeline.feature_sets,
        "models": {name: {"checkpoint": f"models/{name}/model.pt",
                          "features": checkpoint["features"]["set"],
                          "modality": checkpoint["modality"],
                          "architecture": checkpoint["architecture"]}
                   for name, checkpoint in pipeline.checkpoints.items()},
        "fusions": {name: {"fuser": f"fusions/{name}/fuser.joblib", "method": fusion.method,
                           "models": fusion.models, "inputs": fusion.inputs,
                           "seen_missing": fusion.seen_missing}
                    for name, fusion in pipeline.fusions.items()},
        "files": {member: hashlib.sha256(data).hexdigest() for member, data in contents.items()},
    }
    contents[MANIFEST] = (json.dumps(plain(manifest), indent=1) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".zip":
        atomic_write(out, lambda tmp: _write_zip(tmp, contents))
    else:
        _write_folder(out, contents)
    return {
        "bundle": str(out),
        "manifest_sha256": hashlib.sha256(contents[MANIFEST]).hexdigest(),
        "fusions": list(pipeline.fusions),
        "models": list(pipeline.checkpoints),
        "feature_sets": {name: spec["extractor_version"]
                         for name, spec in pipeline.feature_sets.items()},
        "files": len(contents),
        "bytes": sum(map(len, contents.values())),
    }


def load_bundle(path, fusions=None):
    """The :class:`Pipeline` of the bundle at ``path`` (a folder or a ``.zip``), checked as the
    module docstring says; ``fusions`` picks some of its fusions (default: all)."""
    from gemo.models.checkpoint import load_checkpoint

    path = Path(path)
    source = f"bundle {path}"
    with _reader(path) as read:
        try:
            manifest_bytes = read(MANIFEST)
            manifest = json.loads(manifest_bytes)
        except (OSError, KeyError, ValueError):
            raise GemoError(f"{path} is not a gemo bundle (no readable {MANIFEST}): make one "
                            "with `gemo export`") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise GemoError(f"{path}: not a {FORMAT} bundle; export it again with this gemo")
        if manifest.get("classes") != list(CLASSES):
            raise GemoError(f"{path}: made for the classes {manifest.get('classes')}, this gemo "
                            f"has {list(CLASSES)}")
        check_installed(manifest["feature_sets"], source)  # before reading anything else
        verified = _verified_files(path, manifest["files"], read)

    def member(name):
        if name not in verified:  # only files the manifest vouches for are ever loaded
            raise GemoError(f"{path}: {name} has no SHA-256 in {MANIFEST}: refused")
        return verified[name]

    chosen = {}
    for name in _choose(list(manifest["fusions"]), fusions, source):
        entry = manifest["fusions"][name]
        # The one unpickling: of bytes whose SHA-256 matched the manifest's.
        fuser = joblib.load(io.BytesIO(member(entry["fuser"])))
        method = _fusion_class(entry["method"])
        if not isinstance(fuser, method):
            raise GemoError(f"{path}: {entry['fuser']} is not a {entry['method']} fuser")
        chosen[name] = Fusion(name, entry["method"], list(entry["models"]), entry["inputs"], fuser,
                              dict(entry.get("seen_missing", {})))
    checkpoints = {}
    for fusion in chosen.values():
        for model in fusion.models:
            if model not in manifest["models"]:
                raise GemoError(f"{path}: fusion {fusion.name} needs model {model}, which the "
                                "bundle lacks")
            where = manifest["models"][model]["checkpoint"]
            checkpoints[model] = load_checkpoint(f"{path}/{where}", data=member(where))

    def stored_spec(name):
        if name not in manifest["feature_sets"]:
            raise GemoError(f"{path}: {MANIFEST} lacks the parameters of the {name} feature set")
        return manifest["feature_sets"][name]

    sets = _feature_sets(checkpoints, stored_spec, source)
    check_installed(sets, source)  # the checkpoints' own record, not only the manifest's
    return Pipeline(source, sets, checkpoints, chosen,
                    hashlib.sha256(manifest_bytes).hexdigest())


def _choose(known, wanted, source):
    """The fusions asked for (default: all ``known``), in the order asked."""
    if not known:
        raise GemoError(f"no fusion in {source}: `gemo fuse` first (predict labels clips with a "
                        "fusion of the trained models)")
    names = list(dict.fromkeys(wanted or known))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise GemoError(f"no fusion named {', '.join(unknown)} in {source}; it has "
                        f"{', '.join(known)}")
    return names


def _fusion(name, config, fuser):
    """A :class:`Fusion` from a fusion's ``config.json`` and its fitted fuser."""
    fitted_on = ("train", "val") if config.get("full_train") else ("train",)
    imputed = config.get("imputed", {})
    seen = {model: sum(imputed.get(model, {}).get(split, 0) for split in fitted_on)
            for model in config["models"]}
    return Fusion(name, config["method"], list(config["models"]), config.get("inputs", "probs"),
                  fuser, seen)


def _fusion_class(method):
    from gemo import fusion

    return fusion.get(method)


def _cache_spec(workspace, name):
    """A feature set's extractor version, parameters and fingerprint, from the workspace cache."""
    path = workspace.cache_path(name)
    if not path.exists():
        raise GemoError(f"the {name} cache of {workspace.root} is gone, and with it the parameters "
                        f"the models' features were computed from; extract {name} again")
    with FeatureCache(path) as cache:
        return {"extractor_version": cache.provenance["extractor_version"],
                "params": cache.params, "fingerprint": cache.fingerprint()}


def _feature_sets(checkpoints, required_spec, source):
    """``{set: spec}``: the sets the models were trained on, as their checkpoints record them,
    and the sets those are computed from (``required_spec(name)``), checked to be the very
    ones (their fingerprint is the one the dependent set recorded)."""
    specs, user = {}, {}
    for model, checkpoint in checkpoints.items():
        recorded = checkpoint["features"]
        # a multimodal model records each of its sets under "sets"
        for name, features in recorded.get("sets", {recorded["set"]: recorded}).items():
            spec = {key: features[key] for key in ("extractor_version", "params", "fingerprint")}
            if name in specs and specs[name] != spec:
                raise GemoError(f"{source}: models {user[name]} and {model} were trained on "
                                f"{name} features of other settings, and a clip gets one of each "
                                "set; choose fusions whose models agree (--fusion)")
            specs[name], user[name] = spec, user.get(name, model)
    todo = list(specs)
    while todo:
        name = todo.pop()
        if name not in extractors.available():
            continue  # check_installed says so
        for required in extractors.get(name).requires:
            spec = required_spec(required)
            if spec["fingerprint"] != specs[name]["params"].get(UPSTREAM + required):
                raise GemoError(f"{source}: the {required} features differ from those the {name} "
                                f"features of the models were computed from ({required} was "
                                f"re-extracted since); extract {name} again and retrain")
            if required not in specs:
                specs[required] = spec
                todo.append(required)
    return specs


@contextmanager
def _reader(path):
    """``read(member) -> bytes`` of a bundle folder or zip file."""
    if path.is_dir():
        yield lambda member: (path / member).read_bytes()
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            yield archive.read
    else:
        raise GemoError(f"{path} is not a bundle (a folder or .zip that `gemo export` wrote)")


def _verified_files(path, hashes, read):
    """``{member: bytes}`` of every file the manifest lists, each matching its SHA-256."""
    outside = [member for member in hashes if not _MEMBER.fullmatch(member)]
    if outside:
        raise GemoError(f"{path}: {MANIFEST} names {outside[0]!r}, not a file inside a bundle: "
                        "refused")
    verified = {}
    for member, expected in hashes.items():
        try:
            data = read(member)
        except (OSError, KeyError):
            raise GemoError(f"{path}: {member} is missing: the bundle is incomplete; export it "
                            "again") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise GemoError(f"{path}: {member} does not match its SHA-256 in {MANIFEST} (changed "
                            "or damaged): refused; export the bundle again")
        verified[member] = data
    return verified


def _write_zip(target, contents):
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in contents.items():
            archive.writestr(member, data)


def _write_folder(out, contents):
    """Write into ``.<name>.partial`` beside ``out``, then rename: never half a bundle."""
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted export
    try:
        for member, data in contents.items():
            (partial / member).parent.mkdir(parents=True, exist_ok=True)
            (partial / member).write_bytes(data)
        os.rename(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
