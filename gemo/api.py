"""What the command line calls: one function per stage.

>>> from gemo import api
>>> ws = api.Workspace("gemo-work")                               # doctest: +SKIP
>>> api.synth("demo-data", clips_per_class=8)                     # doctest: +SKIP
>>> api.extract(workspace=ws, dataset="demo-data")                # doctest: +SKIP
"""

from gemo import extractors
from gemo.extraction import cache_summary, extract
from gemo.workspace import Workspace

__all__ = ["Workspace", "demo", "evaluate", "extract", "feature_sets", "fetch_weights", "fuse",
           "info", "inspect", "remove", "synth", "train", "trained", "weight_files", "weights_path"]


def inspect(paths, **options):
    """Faces and expressions of images and videos; see :func:`gemo.inspect.inspect_files`."""
    from gemo.inspect import inspect_files

    return inspect_files(paths, **options)


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


def weights_path(name):
    """The verified path of a known weight file (a clear error when absent)."""
    from gemo import pretrained

    return pretrained.find(name)


def fetch_weights(name):
    """Fetch a weight file that has a known source; see :func:`gemo.pretrained.fetch`."""
    from gemo import pretrained

    return pretrained.fetch(name)


def train(**options):
    """Train one modality's model; see :func:`gemo.training.train`."""
    from gemo.training import train as run

    return run(**options)


def fuse(**options):
    """Fuse trained models' scores; see :func:`gemo.fusion.fuse`."""
    from gemo.fusion import fuse as run

    return run(**options)


def evaluate(**options):
    """Metrics and reports for every model and fusion; see :func:`gemo.evaluation.evaluate`."""
    from gemo.evaluation import evaluate as run

    return run(**options)


def trained(*, workspace):
    """Every trained model and fusion of ``workspace``; see :func:`gemo.artifacts.describe`."""
    from gemo import artifacts

    return artifacts.describe(workspace)


def remove(*, workspace, names):
    """Delete trained models or fusions; returns the fusions left stale by it."""
    from gemo import artifacts

    return artifacts.remove(workspace, names)


def demo(directory, **options):
    """The whole pipeline on synthetic data; see :func:`gemo.demo.run_demo`."""
    from gemo.demo import run_demo

    return run_demo(directory, **options)


def synth(out, **options):
    """Write a synthetic VGAF-layout dataset; see :func:`gemo.data.synth.make_dataset`."""
    from gemo.data.synth import make_dataset

    return make_dataset(out, **options)


def feature_sets():
    """Name, description and default parameters of every registered feature set."""
    return [
        {"name": name, "description": extractors.get(name).description,
         "params": extractors.get(name).Params.defaults()}
        for name in extractors.available()
    ]


def info(*, workspace):
    """Workspace summary: the indexed dataset and each cache's contents.

    A workdir without a workspace is an error saying what to run (and is not created).
    """
    index = workspace.load_index()
    dataset = {"root": index.root, "layout": index.layout, "clips": len(index.clips)}
    return {"workspace": str(workspace.root), "dataset": dataset, "caches": cache_summary(workspace)}
