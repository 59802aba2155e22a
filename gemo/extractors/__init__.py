"""Feature extractors, registered by name.

Every module in this package that defines an :class:`Extractor` subclass with
``@register`` is imported here, so adding a feature set is one new module.

>>> from gemo import extractors
>>> "frames" in extractors.available()
True
>>> extractors.create("frames", count=16).params.count
16
"""

import importlib
import pkgutil

from gemo.extractors.base import Extractor, available, create, get, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Extractor", "available", "create", "get", "register"]
