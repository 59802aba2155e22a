"""The extractor contract and the registry."""

from importlib import metadata

from gemo.registry import Registry, resolve_options


class Extractor:
    """One feature set: turns a clip file into named arrays.

    Subclasses set ``name``, ``version`` (bump it whenever stored values
    change), ``description``, ``defaults`` (every parameter with its default;
    the stored parameters are these, so two caches built alike compare equal),
    ``libraries`` (PyPI names whose versions are recorded) and implement
    :meth:`extract`. Media problems raise :class:`gemo.data.media.MediaError`.
    A set computed from another set's cache names it in ``requires``.
    """

    name = ""
    version = 1
    description = ""
    defaults = {}
    libraries = ()
    requires = ()  # feature sets whose cached arrays extract() reads, e.g. ("faces",)

    def __init__(self, **params):
        self.params = resolve_options(self.name, self.defaults, params)

    def extract(self, path):
        """Return ``{array_name: ndarray}`` for the clip at ``path``.

        A set with ``requires`` implements ``extract(path, inputs)`` instead, where
        ``inputs`` maps each required set to the clip's arrays from its cache.
        """
        raise NotImplementedError

    def info(self):
        """Constants of the feature set stored once per cache (e.g. feature names)."""
        return {}

    def provenance(self):
        """What the cache records and compares before reusing stored clips.

        ``info`` is passed as a callable: it can be costly (opensmile builds its
        extractor to name features) and is needed only when a cache is created.
        """
        return {
            "feature_set": self.name,
            "extractor_version": self.version,
            "params": dict(self.params),
            "libraries": {name: _version(name) for name in self.libraries},
            "info": self.info,
        }


def _version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


_REGISTRY = Registry("feature set")
register, available, get = _REGISTRY.register, _REGISTRY.available, _REGISTRY.get


def create(name, **params):
    """An extractor instance: ``create("frames", count=16)``."""
    return get(name)(**params)
