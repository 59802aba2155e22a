"""Trained models and fusions in a workspace: their names, replacing, listing and removing.

An artifact is ``models/<name>/`` (checkpoint or fuser, ``config.json``) plus
``scores/<name>.h5``. Its ``config.json`` keeps the *request* it was made
from (family, options, recipe, seed; method and input models for a fusion)
and the *command* that makes it again. Training or fusing again under an
existing name with another request is refused unless ``overwrite``, so one
name never silently stands for two different things.

>>> check_name("audio-pyaudio-blstm-attention")
'audio-pyaudio-blstm-attention'
"""

import json
import re
import shutil

from gemo.errors import GemoError
from gemo.files import plain

FUSION_PREFIX = "fusion-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")


def is_fusion(name):
    """Whether an artifact name is a fusion's (``fusion-<...>``)."""
    return name.startswith(FUSION_PREFIX)


def check_name(name, *, fusion=False):
    """``name`` if it is a usable artifact name (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GemoError(f"{name!r} is not a usable name: use letters, digits, '.', '_' and '-' "
                        "(at most 120, starting with a letter or digit)")
    if fusion != is_fusion(name):
        raise GemoError(f"{name!r}: fusion names start with {FUSION_PREFIX!r} and model names "
                        "do not, e.g. --name fusion-svm-av" if fusion else
                        f"{name!r}: names starting with {FUSION_PREFIX!r} are kept for fusions")
    return name


def read_config(workspace, name):
    """The ``config.json`` of artifact ``name``, or None when it has none."""
    path = workspace.model_dir(name) / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def claim(workspace, name, request, *, overwrite, what):
    """Refuse to replace artifact ``name`` made from another ``request`` unless ``overwrite``.

    The same request again (e.g. after extracting new clips) is fine: it retrains.
    """
    old = read_config(workspace, name)
    if old is None or overwrite:
        return
    previous = old.get("request")
    if previous == plain(request):
        return
    changed = ("made by a gemo that did not record them" if previous is None
               else "; ".join(differences(previous, plain(request))))
    raise GemoError(
        f"{what} {name} already exists, made with other options ({changed}): pass --overwrite "
        f"to replace it, or --name NEW to keep both (`gemo models list` shows them)"
    )


def differences(old, new, prefix=""):
    """``key old -> new`` for every value that differs; nested dicts by dotted key.

    >>> differences({"recipe": {"lr": 0.1}}, {"recipe": {"lr": 0.2}})
    ['recipe.lr 0.1 -> 0.2']
    """
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} -> {b!r}")
    return out


def names_of(workspace):
    """Names of the artifacts with a score table: models first, then fusions, each sorted."""
    folder = workspace.scores_dir
    found = sorted(path.stem for path in folder.glob("*.h5")) if folder.is_dir() else []
    return [n for n in found if not is_fusion(n)] + [n for n in found if is_fusion(n)]


def stale_inputs(workspace, config):
    """Input score tables of a fusion changed or gone since it was fitted (``config``)."""
    from gemo.cache import fingerprint_file

    stale = []
    for model, recorded in config.get("score_tables", {}).items():
        path = workspace.scores_path(model)
        if not path.exists():
            stale.append(model)
            continue
        current = fingerprint_file(path, previous=recorded["fingerprint"])
        if current["sha256"] != recorded["fingerprint"]["sha256"]:
            stale.append(model)
    return stale


def describe(*, workspace):
    """One dict per artifact: name, kind, what it was made from, how to make it again, staleness."""
    rows = []
    for name in names_of(workspace):
        config = read_config(workspace, name) or {}
        summary = config.get("summary", config)
        if is_fusion(name):
            made_of = f"{config.get('method', '?')} of {', '.join(config.get('models', []))}"
            stale = stale_inputs(workspace, config)
        else:
            features = config.get("features", {}).get("set", "?")
            made_of = f"{config.get('architecture', '?')} on {features}"
            stale = []
        rows.append({
            "name": name,
            "kind": "fusion" if is_fusion(name) else "model",
            "modality": config.get("modality", "fusion" if is_fusion(name) else None),
            "made_of": made_of,
            "val_accuracy": summary.get("val_accuracy"),
            "stale_inputs": stale,
            "command": config.get("command"),
        })
    return rows


def remove(*, workspace, names):
    """Delete models or fusions (folder and score table); returns the fusions now left stale."""
    names_to_remove = names
    for name in names_to_remove:  # never a path: nothing outside the workspace is touched
        check_name(name, fusion=is_fusion(name))
    known = names_of(workspace)
    unknown = [name for name in names_to_remove
               if name not in known and not (workspace.model_dir(name)).is_dir()]
    if unknown:
        raise GemoError(f"no model or fusion named {', '.join(unknown)}; "
                        f"known: {', '.join(known) or 'none'} (`gemo models list`)")
    for name in names_to_remove:
        (workspace.scores_path(name)).unlink(missing_ok=True)
        shutil.rmtree(workspace.model_dir(name), ignore_errors=True)
    return [row["name"] for row in describe(workspace=workspace)
            if row["kind"] == "fusion" and row["stale_inputs"]]
