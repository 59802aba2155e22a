"""One registry pattern for feature sets, model families and fusion methods (as timm does).

>>> fusers = Registry("fusion method")
>>> @fusers.register
... class Mean:
...     name = "mean"
>>> fusers.available(), fusers.get("mean").__name__
(['mean'], 'Mean')
"""

from gemo.errors import GemoError


class Registry:
    """Classes registered by their ``name`` attribute; ``kind`` words the error messages."""

    def __init__(self, kind, *, check=None):
        self.kind = kind
        self._check = check  # optional callable(cls) raising ValueError for a bad class
        self._classes = {}

    def register(self, cls):
        """Class decorator adding ``cls`` under ``cls.name``."""
        if not cls.name or cls.name in self._classes:
            raise ValueError(f"{self.kind} name {cls.name!r} is empty or taken")
        if self._check is not None:
            self._check(cls)
        self._classes[cls.name] = cls
        return cls

    def available(self):
        """Registered names, sorted."""
        return sorted(self._classes)

    def get(self, name):
        """The class registered as ``name``; a clear error lists the others."""
        try:
            return self._classes[name]
        except KeyError:
            raise GemoError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}"
            ) from None

    def __contains__(self, name):
        return name in self._classes
