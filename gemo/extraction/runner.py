"""``extract``: which clips each set still needs, run them, store what comes back.

Workers compute; this process is the only writer of each cache file. A clip
counts as done once its ``complete`` mark is flushed, so an interrupted run
loses at most the clips in flight, and the next run redoes only those.
"""

from contextlib import ExitStack
from dataclasses import dataclass, field

from gemo import extractors, threads
from gemo.cache.store import CacheMismatch, FeatureCache, fingerprint_file, same_source
from gemo.device import resolve_device
from gemo.errors import GemoError
from gemo.extraction import executors
from gemo.extraction.clip import Task
from gemo.extraction.memory import release_memory
from gemo.progress import progress_bar

DEFAULT_SETS = ("frames", "pyaudio", "egemaps")


@dataclass
class SetReport:
    """What one feature set's run did."""

    feature_set: str
    extracted: int = 0
    skipped: int = 0  # done in an earlier run
    failed: dict = field(default_factory=dict)  # id -> {"kind", "message"}, all failures in the cache


def extract(*, workspace, dataset=None, sets=DEFAULT_SETS, params=None, workers=None, overwrite=False,
            progress=True, executor="local", scheduler=None, device="auto", batch_size=0):
    """Extract the feature ``sets`` for every clip of the dataset.

    ``dataset`` is indexed and remembered by the workspace; when None the
    remembered one is used. ``params`` maps a set name to its parameters,
    e.g. ``{"frames": {"count": 16}}``. Returns one :class:`SetReport` per set.

    Each clip is one task that computes every set it still lacks, decoding its
    video and audio once for all of them. ``device`` (auto, cpu, cuda) and
    ``batch_size`` (frames or faces per network call, 0: the set's default)
    apply to the sets that run networks (faces, fer).

    ``executor="dask"`` computes clips on a Dask distributed cluster: the one at
    ``scheduler`` (e.g. ``"tcp://10.0.0.5:8786"``), or a local cluster of
    ``workers`` processes started for this run. Results come back to this
    process, which stays the only writer of the caches (docs/distributed.md).
    """
    if batch_size < 0:
        raise GemoError(f"batch size must be >= 0 (0: each set's default), not {batch_size}")
    index = workspace.use_dataset(dataset)
    sets = list(sets)
    params = params or {}
    unknown = sorted(set(params) - set(sets))
    if unknown:
        raise GemoError(f"parameters given for set(s) not extracted: {', '.join(unknown)}")
    size = threads.processes(workers)
    if _work_likely(workspace, sets, index.clips, overwrite):
        # The workers' libraries take seconds to import: the pool's fork server starts on
        # them now, beside this process's own imports (extractors, provenance).
        executors.get(executor).warm_up(
            workers=size, modules=[m for name in sets for m in extractors.get(name).modules])
    chosen = _in_dependency_order([
        extractors.create(name, device=device, batch_size=batch_size, **params.get(name, {}))
        for name in sets])
    if any(e.uses_device for e in chosen):
        resolve_device(device)  # a wrong --device stops the run here, not once per clip
    pool = executors.get(executor)(workers=size, chosen=chosen, scheduler=scheduler)
    with ExitStack() as stack:
        stack.enter_context(pool)
        # Creating a cache computes its provenance (networks load, openSMILE names its
        # features): meanwhile the workers start and load theirs.
        caches = _open_caches(chosen, workspace, overwrite, stack,
                              before_creating=pool.start if index.clips else None)
        reports = {e.name: SetReport(e.name) for e in chosen}
        todo = {e.name: _todo(caches[e.name], index.clips, reports[e.name]) for e in chosen}
        tasks = [Task(clip, [e for e in chosen if clip.id in todo[e.name]]) for clip in index.clips]
        tasks = [task for task in tasks if task.extractors]
        label = ", ".join(e.name for e in chosen)
        with progress_bar(label, len(tasks), enabled=progress) as advance:
            failed = 0
            for clip, outcomes in pool.run(tasks, caches):
                failed += _store(clip, outcomes, caches, reports)
                del outcomes
                release_memory()
                advance(status=f"{failed} clip(s) with failures" if failed else "")
        for extractor in chosen:
            reports[extractor.name].failed = caches[extractor.name].failures()
    return [reports[e.name] for e in chosen]


def _store(clip, outcomes, caches, reports):
    """Write a clip's outcomes to their caches; True if any set failed on it."""
    any_failed = False
    for name, outcome in outcomes.items():
        if outcome.status == "ok":
            caches[name].write(clip.id, outcome.arrays, fingerprint=outcome.fingerprint,
                               path=clip.path)
            reports[name].extracted += 1
        else:
            caches[name].write_failure(clip.id, kind=outcome.kind, message=outcome.message,
                                       fingerprint=outcome.fingerprint)
            any_failed = True
    return any_failed


def _in_dependency_order(chosen):
    """Sets that others require come first (e.g. faces before fer)."""
    names = {extractor.name for extractor in chosen}
    ordered, placed = [], set()
    while len(ordered) < len(chosen):
        ready = [e for e in chosen if e.name not in placed
                 and all(r in placed or r not in names for r in e.requires)]
        if not ready:
            raise GemoError(f"circular requirements among {', '.join(sorted(names))}")
        ordered += ready
        placed.update(e.name for e in ready)
    return ordered


def _open_caches(chosen, workspace, overwrite, stack, before_creating=None):
    """Name -> open cache: a writer per chosen set, a reader per set they require besides.

    A set computed from another records the required cache's fingerprint among its
    parameters, so it is refused once that cache is rebuilt with other settings.
    ``before_creating`` is called before the first cache file is created.
    """
    caches = {}
    for extractor in chosen:
        for name in extractor.requires:
            if name in caches:
                continue
            path = workspace.cache_path(name)
            if not path.exists():
                raise GemoError(f"{extractor.name} needs the {name} feature set: extract it "
                                f"first (gemo extract --only {name},{extractor.name})")
            caches[name] = stack.enter_context(FeatureCache(path))
        path = workspace.cache_path(extractor.name)
        if overwrite and path.exists():
            path.unlink()
        if before_creating is not None and not path.exists():
            before_creating()
        provenance = extractor.provenance()
        provenance["params"].update(
            {f"upstream.{name}": caches[name].fingerprint() for name in extractor.requires})
        caches[extractor.name] = stack.enter_context(
            FeatureCache(path, mode="a", provenance=provenance))
    return caches


def _work_likely(workspace, sets, clips, overwrite):
    """Whether some set is likely to lack some of ``clips``: a cache is missing or rebuilt,
    or holds fewer clips (done or failed) than listed. A cheap look before the extractors
    exist; :func:`_todo` decides per clip."""
    if not clips:
        return False
    for name in sets:
        path = workspace.cache_path(name)
        if overwrite or not path.exists():
            return True
        try:
            with FeatureCache(path) as cache:
                if len(cache.ids()) + len(cache.failures()) < len(clips):
                    return True
        except (GemoError, OSError):  # unreadable: the run itself says why
            return True
    return False


def _todo(cache, clips, report):
    """The clips ``cache`` still needs; counts the ones done in ``report.skipped``.

    A clip whose file changed since it was stored stops the run (CacheMismatch):
    its old features would be mixed with new ones.
    """
    todo, changed = set(), []
    for clip in clips:
        previous = cache.stored_fingerprint(clip.id)
        if previous is None or "sha256" not in previous:
            todo.add(clip.id)
            continue
        try:
            current = fingerprint_file(clip.path, previous=previous)
        except OSError:
            current = None
        if same_source(previous, current):
            report.skipped += clip.id in cache
        elif clip.id in cache:
            changed.append(clip.id)
        else:
            todo.add(clip.id)  # a failed clip whose file changed: try again
    if changed:
        raise CacheMismatch(
            f"{cache.path}: {len(changed)} clip(s) changed on disk since they were extracted, "
            f"e.g. {', '.join(changed[:5])}; use --overwrite to redo the cache"
        )
    return todo
