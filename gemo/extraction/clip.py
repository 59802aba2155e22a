"""One clip's work: the extractors it still lacks, run on one decode, and what each gave.

A :class:`Task` is a clip and the extractors to run on it; an :class:`Outcome` is
what one extractor gave (arrays, or why it failed). :func:`run_clip` never raises
for a bad clip: every failure becomes an outcome, stored in the cache as such.
"""

from dataclasses import dataclass, field, replace

from gemo.cache.store import fingerprint_file
from gemo.data.media import Media, MediaError
from gemo.extraction.memory import release_memory


@dataclass(frozen=True)
class Outcome:
    """What one extractor gave for one clip: ``arrays``, or the ``kind`` and ``message`` of
    its failure. ``fingerprint`` is the clip file's, empty when the file was not read."""

    status: str  # "ok" or "failed"
    fingerprint: dict = field(default_factory=dict)
    arrays: dict | None = None
    kind: str | None = None
    message: str | None = None

    @classmethod
    def success(cls, fingerprint, arrays):
        return cls("ok", fingerprint, arrays=arrays)

    @classmethod
    def failure(cls, kind, message, fingerprint=None):
        return cls("failed", fingerprint or {}, kind=kind, message=message)


@dataclass(frozen=True)
class Task:
    """A clip and the extractors still to run on it.

    Once prepared (:meth:`prepare`), ``inputs`` holds the arrays they require from
    caches, and ``failed`` the outcomes of extractors whose required arrays are missing.
    """

    clip: object  # a gemo.data.index.Clip
    extractors: list
    inputs: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # set name -> Outcome

    def prepare(self, caches):
        """This task with the arrays its extractors need from ``caches`` (those not computed
        here); an extractor whose arrays are missing moves to ``failed``."""
        computed = {e.name for e in self.extractors}
        inputs, failed = dict(self.inputs), dict(self.failed)
        for extractor in self.extractors:
            from_cache = {name: caches[name] for name in extractor.requires
                          if name not in computed}
            try:
                inputs.update(upstream_inputs(from_cache, self.clip.id))
            except MediaError as error:
                failed[extractor.name] = Outcome.failure(error.kind, str(error))
        runnable = [e for e in self.extractors if e.name not in failed]
        return replace(self, extractors=runnable, inputs=inputs, failed=failed)

    def crashed(self, message):
        """The clip's outcomes when the process computing it died: ``crash`` for each set."""
        return {**self.failed,
                **{e.name: Outcome.failure("crash", message) for e in self.extractors}}


def upstream_inputs(upstream, clip_id):
    """The clip's arrays from each required cache, or a MediaError saying what is missing."""
    inputs = {}
    for name, cache in upstream.items():
        if clip_id not in cache:
            failure = cache.failures().get(clip_id)
            reason = f"{failure['kind']}: {failure['message']}" if failure else "not extracted"
            raise MediaError("upstream", f"{name} failed for this clip ({reason})")
        inputs[name] = cache.read(clip_id)
    return inputs


def run_task(task):
    """``{set: Outcome}`` of a prepared task, computed in this process."""
    computed = run_clip(task.extractors, task.clip.path, task.inputs) if task.extractors else {}
    return {**task.failed, **computed}


def run_clip(chosen, path, inputs=None):
    """Run ``chosen`` extractors (in dependency order) on one clip; never raises for a bad clip.

    The file is fingerprinted once and decoded once for all of them. ``inputs``
    holds arrays of required sets that are not among ``chosen``. Returns
    ``{set: Outcome}``.
    """
    try:
        fingerprint = fingerprint_file(path)
    except OSError as error:
        failed = Outcome.failure("unreadable", f"{type(error).__name__}: {error.strerror or error}")
        return {extractor.name: failed for extractor in chosen}
    media = Media(path, frame_counts=[count for e in chosen for count in e.frame_counts()])
    outcomes = _run_all(chosen, media, inputs or {}, fingerprint)
    release_memory()  # the clip's decoded media is gone by now
    return outcomes


def _run_all(chosen, media, inputs, fingerprint):
    outcomes = {}
    for extractor in chosen:
        given = dict(inputs)
        upstream_failed = None
        for name in extractor.requires:
            if name in outcomes:
                upstream = outcomes[name]
                if upstream.status != "ok":
                    upstream_failed = (f"{name} failed for this clip "
                                       f"({upstream.kind}: {upstream.message})")
                given[name] = upstream.arrays
        if upstream_failed:
            outcomes[extractor.name] = Outcome.failure("upstream", upstream_failed, fingerprint)
        else:
            outcomes[extractor.name] = _run_one(extractor, media, given, fingerprint)
    return outcomes


def _run_one(extractor, media, inputs, fingerprint):
    try:
        return Outcome.success(fingerprint, extractor.extract(media, inputs))
    except MediaError as error:
        return Outcome.failure(error.kind, str(error), fingerprint)
    except MemoryError:
        return Outcome.failure("error", "out of memory", fingerprint)
    except Exception as error:  # a library failing on odd input must not stop the run
        return Outcome.failure("error", f"{type(error).__name__}: {error}", fingerprint)
