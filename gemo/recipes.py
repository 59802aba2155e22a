"""Paper recipes: one TOML file runs extract, train, fuse and evaluate as a paper did.

A recipe is plain data (``recipes/*.toml``, docs/recipes.md): the stages' keywords are
those of :mod:`gemo.api`'s functions, so every option a stage has is a recipe key and
nothing else is (an unknown key is refused in one line naming the known ones).

Stages resume: extraction skips finished clips by itself; a model or fusion is
skipped when the recipe made it before from the same entry and its recorded request
(``config.json``, :mod:`gemo.artifacts`) is still the one it made. What the recipe made
is kept in ``<workdir>/recipes/<name>.json``. An entry the user edited replaces the
artifact the recipe made earlier; an artifact of that name made otherwise is refused
by :func:`gemo.artifacts.claim` as with ``gemo train``.
"""

import inspect
import tomllib
from pathlib import Path

from gemo import api, artifacts
from gemo.errors import GemoError
from gemo.files import plain, write_json
from gemo.progress import console

# The paper's figures gemo can set beside its own: percent, from evaluate's metrics of a model.
METRICS = {"accuracy": lambda m: m["accuracy"], "f1": lambda m: m["f1"]["macro"],
           "uar": lambda m: m["uar"]}
TOP = ("name", "title", "leaves_out", "extract", "train", "fuse", "evaluate", "paper", "quick")
# Keywords of the api functions a recipe does not set: the runner passes them.
_RUNNER = {"workspace", "dataset", "overwrite", "progress", "console", "json_path",
           "group_sizes", "scheduler", "model_options"}


def _keys(stage):
    """The recipe keys of ``stage``: its api function's keywords (``options`` for a model's)."""
    names = [p for p in inspect.signature(getattr(api, stage)).parameters if p not in _RUNNER]
    return names + (["options"] if stage == "train" else [])


def _check(table, known, where, path):
    if not isinstance(table, dict):
        raise GemoError(f"{path}: {where} must be a table, not {type(table).__name__}")
    for key in table:
        if key not in known:
            raise GemoError(f"{path}: unknown key {key!r} in {where}; known: {', '.join(known)}")


def load(path, *, quick=False):
    """The recipe at ``path``, checked, with its ``[quick]`` overrides applied when ``quick``."""
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GemoError(f"no recipe at {path}: give a file such as recipes/pinto2020.toml")
    except tomllib.TOMLDecodeError as error:
        raise GemoError(f"{path} is not valid TOML: {error}")
    _check(recipe, TOP, "the recipe", path)
    for key in ("name", "extract", "train", "evaluate"):
        if key not in recipe:
            raise GemoError(f"{path}: the recipe has no {key!r}; it needs name, extract, train "
                            "and evaluate (docs/recipes.md)")
    artifacts.check_name(recipe["name"])
    _check(recipe["extract"], _keys("extract"), "[extract]", path)
    _check(recipe["evaluate"], _keys("evaluate"), "[evaluate]", path)
    names = []  # the models the recipe makes: --full-train makes NAME-full
    for entry in recipe["train"]:
        _check(entry, _keys("train"), "[[train]]", path)
        for key in ("name", "modality", "features"):
            if key not in entry:
                raise GemoError(f"{path}: a [[train]] entry has no {key!r}")
        names.append(entry["name"] + ("-full" if entry.get("full_train") else ""))
    for entry in recipe.get("fuse", []):
        _check(entry, _keys("fuse"), "[[fuse]]", path)
        if "name" not in entry:
            raise GemoError(f"{path}: a [[fuse]] entry has no 'name'")
        unknown = [m for m in entry.get("models", []) if m not in names]
        if unknown:
            raise GemoError(f"{path}: fusion {entry['name']} fuses {', '.join(unknown)}, which "
                            f"no [[train]] entry makes; trained: {', '.join(names)}")
    made = names + [f["name"] for f in recipe.get("fuse", [])]
    _check(recipe.get("paper", {}), ("train", "val", "test"), "[paper]", path)
    for split, by_metric in recipe.get("paper", {}).items():
        _check(by_metric, list(METRICS), f"[paper.{split}]", path)
        for metric, rows in by_metric.items():
            _check(rows, made, f"[paper.{split}.{metric}]", path)
    if quick:
        recipe = _quick(recipe, path)
    _check_options(recipe, path)
    return recipe


def _quick(recipe, path):
    """The recipe with ``[quick]``'s overrides: ``[quick.extract]`` and ``[quick.train.NAME]``."""
    quick = recipe.get("quick")
    if quick is None:
        raise GemoError(f"{path} has no [quick] table: run it without --quick")
    _check(quick, ("extract", "train"), "[quick]", path)
    overrides = quick.get("extract", {})
    _check(overrides, _keys("extract"), "[quick.extract]", path)
    extract = {**recipe["extract"], **{k: v for k, v in overrides.items() if k != "params"}}
    params = {name: dict(values) for name, values in recipe["extract"].get("params", {}).items()}
    for name, values in overrides.get("params", {}).items():  # merged per set, key by key
        params.setdefault(name, {}).update(values)
    extract["params"] = params
    by_name = quick.get("train", {})
    _check(by_name, [entry["name"] for entry in recipe["train"]], "[quick.train]", path)
    train = []
    for entry in recipe["train"]:
        override = by_name.get(entry["name"], {})
        _check(override, _keys("train"), f"[quick.train.{entry['name']}]", path)
        train.append({**entry, **override})
    return {**recipe, "extract": extract, "train": train}


def _check_options(recipe, path):
    """Refuse unknown feature-set parameters and model options (the stages would, but later)."""
    from gemo import extractors, models

    for name, values in recipe["extract"].get("params", {}).items():
        _check(values, list(extractors.get(name).Params.defaults()),
               f"[extract.params.{name}]", path)
    for entry in recipe["train"]:
        if "model" in entry:
            _check(entry.get("options", {}), list(models.get(entry["model"]).Options.defaults()),
                   f"the options of {entry['name']}", path)


def _preflight(recipe):
    """Refuse now, before any work, a pretrained backbone whose weights file is absent."""
    from gemo.models import backbones

    for entry in recipe["train"]:
        if entry.get("pretrained") or entry.get("weights"):
            backbone = entry.get("backbone") or entry.get("options", {}).get("backbone")
            if backbone:
                backbones.get(backbone)().pretrained(weights=entry.get("weights"))


def run(path, *, workspace, dataset=None, quick=False, progress=True):
    """Run the recipe at ``path`` in ``workspace``; returns what each stage did and the
    paper's numbers beside gemo's."""
    recipe = load(path, quick=quick)
    workspace = workspace if isinstance(workspace, api.Workspace) else api.Workspace(workspace)
    _preflight(recipe)
    state_path = workspace.root / "recipes" / f"{recipe['name']}.json"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state = _read_state(state_path)
    stages = []

    extract = dict(recipe["extract"])
    reports = api.extract(workspace=workspace, dataset=dataset, progress=progress, **extract)
    new = sum(report.extracted for report in reports)
    failed = sum(len(report.failed) for report in reports)
    stages.append(("extract", ", ".join(report.feature_set for report in reports),
                   f"{new} clip-sets extracted" if new else "nothing to do: every clip cached")
                  + ((f", {failed} failed",) if failed else ()))

    for entry in recipe["train"]:
        stages.append(_make("train", entry, workspace, state, state_path, progress))
    for entry in recipe.get("fuse", []):
        stages.append(_make("fuse", entry, workspace, state, state_path, progress))

    settings = recipe["evaluate"]
    result = api.evaluate(workspace=workspace, progress=progress, **settings)
    split = result["split"]
    stages.append(("evaluate", split, f"{len(result['models'])} models and fusions scored"))
    comparison = []
    for metric, rows in recipe.get("paper", {}).get(split, {}).items():
        for name, figure in rows.items():
            metrics = result["models"].get(name)
            ours = None if metrics is None else round(100 * METRICS[metric](metrics), 2)
            comparison.append({"name": name, "split": split, "metric": metric,
                               "paper": figure, "gemo": ours})
    return {"recipe": recipe["name"], "stages": [list(s) for s in stages],
            "comparison": comparison, "evaluation": result}


def _make(stage, entry, workspace, state, state_path, progress):
    """Train or fuse ``entry`` unless the recipe made it already from the same entry."""
    # --full-train writes NAME-full (Pinto 2020's train+val model): that is what is checked
    name = f"{entry['name']}-full" if stage == "train" and entry.get("full_train") else entry["name"]
    made = state.setdefault(stage, {}).get(name)
    config = artifacts.read_config(workspace, name)
    current = None if config is None else config.get("request")
    ours = made is not None and current == made["request"]  # not changed since we made it
    if (ours and made["entry"] == plain(entry) and workspace.scores_path(name).exists()
            and not (stage == "fuse" and artifacts.stale_inputs(workspace, config))):
        return (stage, name, "nothing to do: made before from this entry")
    console.print(f"recipe: {stage} {name}", highlight=False)
    kwargs = dict(entry)
    kwargs.update(kwargs.pop("options", {}))
    # The recipe replaces what it made itself; anything else of that name is claim's to refuse.
    getattr(api, stage)(workspace=workspace, overwrite=ours, progress=progress, **kwargs)
    state[stage][name] = {"entry": plain(entry),
                          "request": artifacts.read_config(workspace, name)["request"]}
    write_json(state_path, state)
    return (stage, name, "made again" if ours else "made")


def _read_state(path):
    import json

    return json.loads(path.read_text()) if path.exists() else {}
