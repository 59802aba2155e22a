"""``gemo predict``: a workspace's (or a bundle's) fusions applied to videos never indexed.

For the given files it extracts only the feature sets the fused models need, with the
parameters their checkpoints record, into a cache of its own,
``<workdir>/predict/<key>/cache/<set>.h5`` (``key`` names those sets' versions and
parameters), resumable like any cache. A clip's id is its file name and the start of its
SHA-256 (``party-3fa9c2d01b7e``), so a file is extracted once whatever its path, and a
changed file is a new clip. Each model scores its cache through the code that wrote its
score table (:func:`gemo.training.run.score_cached`), and the fusions line the scores up as
``gemo fuse`` does (:func:`gemo.scores.align`): predictions on a workspace's own clips
equal ``gemo evaluate``'s.

A clip a model could not score (no audio stream for an audio model...) gets that model's
vote missing, with the reason its extraction recorded; the fusion then fills that model's
input as fitting and evaluation do, with uniform probabilities (1/3 each) or a zero
embedding, and says so. A file no model of the first fusion scored (unreadable, not a
video) gets its reason instead of a label, and the others go on.

>>> report = apply(files=["party.mp4"], workspace=Workspace("gemo-work"))   # doctest: +SKIP
>>> report["files"][0]["label"], report["files"][0]["votes"]                # doctest: +SKIP
"""

import csv
import io
import re
import time
from pathlib import Path

import numpy as np

from gemo.bundle import extractor_params, from_workspace, load_bundle
from gemo.cache.store import FeatureCache
from gemo.data.index import VIDEO_EXTENSIONS, Clip, DatasetIndex
from gemo.data.media import MediaError, duration
from gemo.device import resolve_device
from gemo.files import json_digest, sha256_file, write_json, write_text
from gemo.labels import CLASSES, N_CLASSES
from gemo.progress import status
from gemo.scores import ScoreTable, align
from gemo.workspace import Workspace

SPLIT = "test"  # new clips are unlabelled, as VGAF's test split


def apply(*, files, workspace, bundle=None, fusions=None, workers=None, device="auto",
          progress=True, json_path=None, csv_path=None):
    """Label ``files`` (videos, or folders searched for them) with trained fusions: a report.

    The fusions and models are ``workspace``'s, or ``bundle``'s (a folder or ``.zip`` from
    ``gemo export``; ``workspace`` then only holds the cache). ``fusions``: names, the first
    one's label is a file's label (default: every fusion, by name). ``workers`` and ``device``
    are extraction's (and ``device`` the models'). ``json_path``/``csv_path``: also write the
    report there (CSV: one row per file, the first fusion's label and probabilities).

    Returns ``{"source", "fusions", "models", "files": [...], "throughput": {...}, "cache"}``;
    each file is ``{"path", "error"}`` or ``{"path", "id", "label", "probs", "fusion",
    "imputed", "note", "fusions", "votes", "seconds_of_media"}``.
    """
    from gemo.extraction import extract

    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    pipeline = (load_bundle(bundle, fusions) if bundle is not None
                else from_workspace(workspace, fusions))
    device = resolve_device(device)
    started = time.perf_counter()
    entries, clips = _gather(files)
    ids = [clip.id for clip in clips]
    own = Workspace(workspace.root / "predict" / _key(pipeline.feature_sets))
    cached = _already_done(own, pipeline.feature_sets, ids)
    if clips:
        own.save_index(DatasetIndex("gemo predict", "files", clips))
        extract(workspace=own, sets=list(pipeline.feature_sets), device=device, progress=progress,
                params={name: extractor_params(spec)
                        for name, spec in pipeline.feature_sets.items()},
                **({} if workers is None else {"workers": workers}))
    extracted = time.perf_counter()
    with status(f"scoring {len(ids)} clip(s)", enabled=progress):
        tables, reasons = _score(pipeline, own, ids, device)
        fused = {name: _fuse(fusion, tables, ids) for name, fusion in pipeline.fusions.items()}
    finished = time.perf_counter()

    media_seconds = {clip.id: _seconds(clip.path) for clip in clips}
    row = {clip_id: i for i, clip_id in enumerate(ids)}
    for entry in entries:
        if "error" not in entry:
            _describe(entry, pipeline, tables, reasons, fused, row[entry["id"]])
            entry["seconds_of_media"] = media_seconds[entry["id"]]
    known = [s for s in media_seconds.values() if s is not None]
    seconds = finished - started
    report = {
        "source": pipeline.source,
        "manifest_sha256": pipeline.manifest_sha256,
        "fusions": list(pipeline.fusions),
        "models": list(pipeline.checkpoints),
        "files": entries,
        "cache": str(own.cache_dir),
        "throughput": {
            "clips": len(ids),
            "extracted_now": len(ids) - len(cached),
            "seconds": round(seconds, 3),
            "extract_seconds": round(extracted - started, 3),
            "score_seconds": round(finished - extracted, 3),
            "clips_per_second": round(len(ids) / seconds, 4) if ids else None,
            "media_seconds": round(sum(known), 3),
            # seconds of work per second of media: below 1 is faster than real time
            "real_time_factor": round(seconds / sum(known), 4) if known and sum(known) else None,
            "device": device,
            "workers": workers,
        },
    }
    if json_path is not None:
        write_json(json_path, report)
    if csv_path is not None:
        write_text(csv_path, to_csv(report))
    return report


def to_csv(report):
    """One row per file: path, id, label, the three probabilities, the fusion, the models it
    imputed, each model's vote, and the error of a file that got no label."""
    models = report["models"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "id", "label", *CLASSES, "fusion", "imputed", *models, "error"])
    for entry in report["files"]:
        probs = entry.get("probs") or {}
        votes = entry.get("votes", {})
        writer.writerow([entry["path"], entry.get("id", ""), entry.get("label") or "",
                         *(_number(probs.get(name)) for name in CLASSES), entry.get("fusion", ""),
                         ";".join(entry.get("imputed", [])),
                         *((votes.get(model) or {}).get("label") or "" for model in models),
                         entry.get("error", "")])
    return out.getvalue()


def _number(value):
    return "" if value is None else f"{value:.6f}"


def _gather(paths):
    """One entry per file (folders searched for videos), and the distinct clips to extract."""
    entries, clips = [], {}
    for given in map(Path, paths):
        found = [given]
        if given.is_dir():
            found = sorted(p for p in given.rglob("*")
                           if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                entries.append({"path": str(given), "error": "no video file "
                                f"({', '.join(VIDEO_EXTENSIONS)}) in this folder"})
        for path in found:
            try:
                digest = sha256_file(path)
            except OSError as error:
                entries.append({"path": str(path),
                                "error": f"cannot read: {error.strerror or error}"})
                continue
            clip_id = f"{_id_part(path.stem)}-{digest[:12]}"
            clips.setdefault(clip_id, Clip(clip_id, str(path.resolve()), SPLIT, None, clip_id))
            entries.append({"path": str(path), "id": clip_id})
    return entries, list(clips.values())


def _id_part(stem):
    """A file name as a clip id may hold it (an HDF5 group name, no '/')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")[:60] or "clip"


def _key(feature_sets):
    """The predict cache's folder: one per set of feature versions and parameters."""
    return json_digest({name: [spec["extractor_version"], spec["params"]]
                        for name, spec in feature_sets.items()}, length=12)


def _already_done(own, feature_sets, ids):
    """Ids every set's cache already holds (done or failed), for the throughput report."""
    done = set(ids)
    for name in feature_sets:
        path = own.cache_path(name)
        if not path.exists():
            return set()
        with FeatureCache(path) as cache:
            done = {clip_id for clip_id in done if cache.stored_fingerprint(clip_id) is not None}
    return done


def _score(pipeline, own, ids, device):
    """``{model: ScoreTable}`` of the clips each model's cache holds, and ``{model: {id:
    reason}}`` of those its extraction failed."""
    from gemo.models.checkpoint import model_from_checkpoint
    from gemo.training.features import check_features, open_cache
    from gemo.training.run import score_cached

    tables, reasons = {}, {}
    for name, checkpoint in pipeline.checkpoints.items():
        loaded = model_from_checkpoint(checkpoint, device=device)
        scored, probs = [], np.zeros((0, N_CLASSES))
        embeddings, reasons[name] = None, {}
        if ids:
            with open_cache(own, loaded.features["set"]) as cache:
                check_features(loaded.features, cache, name=name)
                scored = [clip_id for clip_id in ids if clip_id in cache]
                probs, embeddings = score_cached(loaded, cache, scored, device=device)
                failures = cache.failures()
            reasons[name] = {clip_id: f"{failures[clip_id]['kind']}: {failures[clip_id]['message']}"
                             for clip_id in ids if clip_id in failures}
        tables[name] = ScoreTable(name, scored, [SPLIT] * len(scored), probs,
                                  np.zeros(len(scored), bool), embeddings)
    return tables, reasons


def _fuse(fusion, tables, ids):
    """``(probs, missing)`` of ``fusion`` on ``ids``; :func:`align` fills missing inputs."""
    if not ids:
        return np.zeros((0, N_CLASSES)), np.zeros((0, len(fusion.models)), bool)
    X, missing = align({model: tables[model] for model in fusion.models}, ids, field=fusion.inputs)
    return fusion.fuser.predict_proba(X), missing


def _describe(entry, pipeline, tables, reasons, fused, row):
    """Fill a file's entry: each model's vote, each fusion's label, or why it has none."""
    clip_id = entry["id"]
    votes = {}
    for name, table in tables.items():
        where = np.flatnonzero(table.ids == clip_id)
        if len(where):
            votes[name] = _labelled(table.probs[where[0]])
        else:
            votes[name] = {"label": None, "probs": None,
                           "missing": reasons[name].get(clip_id, "not in its feature cache")}
    results = {}
    for name, fusion in pipeline.fusions.items():
        probs, missing = fused[name]
        lacking = [model for model, gone in zip(fusion.models, missing[row]) if gone]
        if len(lacking) == len(fusion.models):
            results[name] = {"label": None, "probs": None, "imputed": lacking,
                             "note": "none of its models scored this clip"}
            continue
        results[name] = {**_labelled(probs[row]), "imputed": lacking,
                         "note": _imputed_note(fusion, lacking) if lacking else None}
    first = results[next(iter(pipeline.fusions))]
    if first["label"] is None:
        why = dict.fromkeys(vote["missing"] for vote in votes.values() if vote["label"] is None)
        entry["error"] = "; ".join(why) or first["note"]
        entry["votes"] = votes
        return
    entry.update(label=first["label"], probs=first["probs"], fusion=next(iter(pipeline.fusions)),
                 imputed=first["imputed"], note=first["note"], fusions=results, votes=votes)


def _labelled(probs):
    probs = [float(p) for p in probs]
    return {"label": CLASSES[int(np.argmax(probs))], "probs": dict(zip(CLASSES, probs))}


def _imputed_note(fusion, lacking):
    filler = ("uniform probabilities (1/3 each)" if fusion.inputs == "probs"
              else "a zero embedding")
    seen = ", ".join(f"{fusion.seen_missing.get(model, 0)} without {model}" for model in lacking)
    return (f"{fusion.name} fused with {filler} in place of {', '.join(lacking)}, as `gemo fuse` "
            f"and `gemo evaluate` fill a missing score; among the clips it was fitted on: {seen}")


def _seconds(path):
    try:
        return duration(path)
    except MediaError:
        return None
