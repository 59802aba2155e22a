"""One registry pattern for feature sets, model families and fusion methods (as timm does).

>>> fusers = Registry("fusion method")
>>> @fusers.register
... class Mean:
...     name = "mean"
>>> fusers.available(), fusers.get("mean").__name__
(['mean'], 'Mean')
>>> class Median:
...     name = "median"
>>> with fusers.registered(Median):   # for one test, say; unregistered on leaving
...     fusers.available()
['mean', 'median']
"""

import contextlib
import importlib

from gemo.errors import GemoError


class Registry:
    """Classes (or other objects) registered by their ``name`` attribute.

    ``kind`` words the error messages. ``modules`` are imported before the first
    lookup: modules that register entries beside the code using them, which an
    importer of the registry alone would not have imported yet.
    """

    def __init__(self, kind, *, check=None, modules=()):
        self.kind = kind
        self._check = check  # optional callable(cls) raising ValueError for a bad class
        self._modules = tuple(modules)
        self._classes = {}

    def register(self, cls):
        """Class decorator adding ``cls`` under ``cls.name``."""
        if not cls.name or cls.name in self._classes:
            raise ValueError(f"{self.kind} name {cls.name!r} is empty or taken")
        if self._check is not None:
            self._check(cls)
        self._classes[cls.name] = cls
        return cls

    def unregister(self, name):
        """Remove ``name`` (nothing happens when it is not registered)."""
        self._table().pop(name, None)

    @contextlib.contextmanager
    def registered(self, cls, *, replace=False):
        """``cls`` registered inside a ``with`` block only; ``replace`` stands in for a
        registered one of the same name, which is back afterwards."""
        table = self._table()
        previous = table.pop(cls.name, None) if replace else None
        try:
            self.register(cls)
            yield cls
        finally:
            if table.get(cls.name) is cls:  # not when register() refused it
                del table[cls.name]
            if previous is not None:
                table[cls.name] = previous

    def available(self):
        """Registered names, sorted."""
        return sorted(self._table())

    def get(self, name):
        """The class registered as ``name``; a clear error lists the others.

        A name registered already is returned without importing the other ``modules``
        (seconds of torch and scikit-learn for a weights entry of one network).
        """
        if name in self._classes:
            return self._classes[name]
        try:
            return self._table()[name]
        except KeyError:
            raise GemoError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}"
            ) from None

    def first(self, predicate):
        """The first registered class for which ``predicate(cls)`` is true, or None; the other
        ``modules`` are imported only when none registered so far matches."""
        found = next((cls for cls in self._classes.values() if predicate(cls)), None)
        if found is None:
            found = next((cls for cls in self._table().values() if predicate(cls)), None)
        return found

    def __contains__(self, name):
        return name in self._classes or name in self._table()

    def _table(self):
        """The registered classes, once every module in ``modules`` has registered its own."""
        while self._modules:
            module, self._modules = self._modules[0], self._modules[1:]  # first: no import loop
            importlib.import_module(module)
        return self._classes

