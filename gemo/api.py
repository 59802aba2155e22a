"""Every stage as a Python call: what the command line calls, and what a notebook calls.

Each function has keyword-only arguments, their defaults and a docstring where it
is defined; they are imported here on first use, so ``import gemo.api`` stays quick
(torch and scikit-learn load only with the stage that needs them).

>>> from gemo import api
>>> ws = api.Workspace("gemo-work")                                         # doctest: +SKIP
>>> api.synth("demo-data", clips_per_class=8)                               # doctest: +SKIP
>>> api.extract(workspace=ws, dataset="demo-data", sets=["frames", "pyaudio"])  # doctest: +SKIP
>>> api.train(workspace=ws, modality="audio", features="pyaudio")           # doctest: +SKIP
>>> api.fuse(workspace=ws, method="svm")                                    # doctest: +SKIP
>>> api.evaluate(workspace=ws, split="val")["models"]                       # doctest: +SKIP

=============  ====================================================
``synth``      :func:`gemo.data.synth.make_dataset`
``synth_groups`` :func:`gemo.data.groups.make_groups` (Petrova's group images)
``extract``    :func:`gemo.extraction.extract`
``train``      :func:`gemo.training.train`
``predict``    :func:`gemo.training.predict` (a trained model's scores)
``apply``      :func:`gemo.apply.apply` (fusions on new video files: ``gemo predict``)
``export``     :func:`gemo.bundle.export` (a portable bundle)
``explain``    :func:`gemo.explain.explain` (heat maps, contributions)
``fuse``       :func:`gemo.fusion.fuse`
``evaluate``   :func:`gemo.evaluation.evaluate`
``demo``       :func:`gemo.demo.run_demo`
``run_recipe`` :func:`gemo.recipes.run` (a paper's recipe, ``gemo run``)
``inspect``    :func:`gemo.inspect.inspect_files`
``trained``    :func:`gemo.artifacts.describe` (models and fusions)
``remove``     :func:`gemo.artifacts.remove`
``fetch_weights`` / ``weights_path``  :func:`gemo.pretrained.fetch` / ``find``
=============  ====================================================
"""

import importlib

from gemo.workspace import Workspace

_STAGES = {
    "synth": ("gemo.data.synth", "make_dataset"),
    "synth_groups": ("gemo.data.groups", "make_groups"),
    "extract": ("gemo.extraction", "extract"),
    "train": ("gemo.training", "train"),
    "predict": ("gemo.training", "predict"),
    "apply": ("gemo.apply", "apply"),
    "export": ("gemo.bundle", "export"),
    "explain": ("gemo.explain", "explain"),
    "fuse": ("gemo.fusion", "fuse"),
    "evaluate": ("gemo.evaluation", "evaluate"),
    "demo": ("gemo.demo", "run_demo"),
    "run_recipe": ("gemo.recipes", "run"),
    "inspect": ("gemo.inspect", "inspect_files"),
    "trained": ("gemo.artifacts", "describe"),
    "remove": ("gemo.artifacts", "remove"),
    "fetch_weights": ("gemo.pretrained", "fetch"),
    "weights_path": ("gemo.pretrained", "find"),
}

__all__ = ["Workspace", "feature_sets", "info", "weight_files", *_STAGES]


def __getattr__(name):
    """The stage ``name``, imported on first use (PEP 562)."""
    if name not in _STAGES:
        raise AttributeError(f"module 'gemo.api' has no attribute {name!r}")
    module, function = _STAGES[name]
    return getattr(importlib.import_module(module), function)


def __dir__():
    return sorted(__all__)


def feature_sets():
    """Name, description, modality and default parameters of every registered feature set."""
    from gemo import extractors

    return [{"name": name, "description": extractors.get(name).description,
             "modality": extractors.get(name).modality,
             "params": extractors.get(name).Params.defaults()}
            for name in extractors.available()]


def info(*, workspace):
    """Workspace summary: the indexed dataset and each cache's contents.

    A workdir without a workspace is an error saying what to run (and is not created).
    """
    from gemo.extraction import cache_summary

    index = workspace.load_index()
    dataset = {"root": index.root, "layout": index.layout, "clips": len(index.clips)}
    return {"workspace": str(workspace.root), "dataset": dataset,
            "caches": cache_summary(workspace)}


def weight_files():
    """Every known weight file: name, file, licence, description, and the verified path or None."""
    from gemo import pretrained
    from gemo.errors import GemoError

    rows = []
    for name in pretrained.available():
        item = pretrained.get(name)
        try:
            path = str(pretrained.find(name))
        except GemoError:
            path = None
        rows.append({"name": name, "filename": item.filename, "licence": item.licence,
                     "description": item.description, "path": path})
    return rows
