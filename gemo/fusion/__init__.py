"""Fusion of the per-model scores into one prediction per clip.

Every module here defining a ``@register``-ed :class:`Fuser` is a method:
``svm`` (Pinto 2020), ``fc`` and ``vae`` (Fusical), ``mean``, ``vote`` and ``weighted``.

>>> from gemo import fusion
>>> fusion.available()
['fc', 'mean', 'svm', 'vae', 'vote', 'weighted']
"""

import importlib
import pkgutil

from gemo.fusion.base import Fuser, available, create, get, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "api"):
        importlib.import_module(f"{__name__}.{_module.name}")

from gemo.fusion.api import FusionResult, fuse, fusion_name, run_fusion  # noqa: E402

__all__ = [
    "Fuser", "FusionResult", "available", "create", "fuse", "fusion_name", "get", "register", "run_fusion",
]
