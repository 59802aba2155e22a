"""The extractor contract and the registry."""

from importlib import metadata

from dataclasses import dataclass

import numpy as np

from gemo.data.media import Media
from gemo.options import Options
from gemo.registry import Registry


class Extractor:
    """One feature set: turns a clip file into named arrays.

    Subclasses set ``name``, ``version`` (bump it whenever stored values
    change), ``description``, ``Params`` (a frozen :class:`gemo.options.Options`
    dataclass: every parameter with its type and default; the stored parameters
    are these, so two caches built alike compare equal),
    ``libraries`` (PyPI names whose versions are recorded), ``modules`` (the
    slow Python modules :meth:`compute` imports, which pool workers import once,
    before they fork) and implement :meth:`compute`. Media problems raise
    :class:`gemo.data.media.MediaError`. A set computed from another set's
    cache names it in ``requires``; ``modality`` says which models it feeds.

    ``device`` and ``batch_size`` say where and how many frames or faces a
    network takes at once; they change the speed, and the values only by float
    rounding, so they are not parameters and caches do not compare them.
    """

    name = ""
    version = 1
    description = ""
    libraries = ()
    modules = ()  # e.g. ("gemo.audio.smile",): imported once by the pool workers' fork server
    requires = ()  # feature sets whose cached arrays extract() reads, e.g. ("faces",)
    modality = ""  # the `gemo train` modality its features describe (audio, scene, ...); "" any
    uses_device = False  # True for sets that run networks: they honour device and batch_size

    @dataclass(frozen=True)
    class Params(Options):
        """No parameters (a set with some defines its own ``Params``)."""

    def __init__(self, *, device="auto", batch_size=0, **params):
        self.params = self.Params.parse(params, owner=self.name)
        self.device = device
        self.batch_size = int(batch_size)  # 0: the extractor's own choice

    def extract(self, clip, inputs=None):
        """Return ``{array_name: ndarray}`` for ``clip``, a file path or a :class:`Media`.

        ``inputs`` maps each set in ``requires`` to the clip's arrays from that set.
        Pass one :class:`Media` to several extractors to decode the clip once.

        >>> extractors.create("frames", count=4).extract("clip.mp4")["frames"].shape  # doctest: +SKIP
        (4, 224, 224, 3)
        """
        media = clip if isinstance(clip, Media) else Media(clip)
        if self.requires:
            missing = [name for name in self.requires if name not in (inputs or {})]
            if missing:
                raise ValueError(f"{self.name} needs the arrays of {', '.join(missing)}")
            return self.compute(media, inputs)
        return self.compute(media)

    def frame_counts(self):
        """The counts of evenly spaced video frames :meth:`compute` asks the media for, so that
        one decoding pass picks them for every set of a clip (none by default)."""
        return ()

    def load(self):
        """Import libraries and load networks now rather than on the first clip.

        Pool workers call it as they start, while the main process prepares the
        caches, so that start-up costs overlap.
        """

    def compute(self, media):
        """The arrays of one clip (``compute(media, inputs)`` for a set with ``requires``)."""
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
            "params": self.params.as_dict(),
            "libraries": {name: _version(name) for name in self.libraries},
            "info": self.info,
        }


class DetectorSet(Extractor):
    """A set that runs a detector on ``params.count`` frames of a clip; the detector is built
    by ``_create_detector()`` on first use in the process that uses it (never pickled: pool
    workers build their own)."""

    uses_device = True

    def __init__(self, **params):
        super().__init__(**params)
        self._detector = None

    def __getstate__(self):
        return {**self.__dict__, "_detector": None}

    def detector(self):
        """The detector, created on first use in this process."""
        if self._detector is None:
            self._detector = self._create_detector()
        return self._detector

    def load(self):
        self.detector().load()

    def frame_counts(self):
        return (self.params.count,)

    def _create_detector(self):
        raise NotImplementedError


def stack_frames(found, shapes):
    """Detections of K frames as flat arrays: ``counts`` [K], ``frame_index`` [n] and each
    attribute named in ``shapes`` (name -> shape of one detection) stacked over the frames,
    so a frame without detections adds no rows."""
    arrays = {
        "counts": np.array([len(frame) for frame in found], np.int32),
        "frame_index": np.concatenate(
            [np.full(len(frame), i, np.int32) for i, frame in enumerate(found)]),
    }
    for name, shape in shapes.items():
        arrays[name] = np.concatenate([getattr(frame, name) for frame in found]).reshape(-1, *shape)
    return arrays


def _version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


_REGISTRY = Registry("feature set")
register, available, get = _REGISTRY.register, _REGISTRY.available, _REGISTRY.get
registered = _REGISTRY.registered  # a set registered inside a with block (tests)


def create(name, **params):
    """An extractor instance: ``create("frames", count=16)``."""
    return get(name)(**params)
