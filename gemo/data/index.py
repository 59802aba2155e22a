"""Dataset index: which clips exist, their split, label and source-video group.

Two layouts are read:

* VGAF: ``Train/ Val/ Test/`` folders of ``<id>.mp4`` and label files
  ``Train_labels.txt`` / ``train_label.txt`` (``Vid_name Label`` header, then
  ``<id> <label>`` lines with 1 = Positive, 2 = Neutral, 3 = Negative).
* a CSV manifest with a ``path,split,label`` header; relative paths are
  resolved against the CSV's folder, labels are names, 1/2/3 or empty.

>>> index = index_dataset("vgaf/")            # doctest: +SKIP
>>> index.clips[0].id, index.clips[0].split   # doctest: +SKIP
('1_1', 'train')
"""

import csv
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from gemo.errors import GemoError
from gemo.labels import CLASSES, parse_label

SPLITS = ("train", "val", "test")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
_SPLIT_DIRS = {"train": "Train", "val": "Val", "test": "Test"}
_LABEL_FILE = re.compile(r"^(train|val|test)_labels?\.txt$", re.IGNORECASE)


class DatasetError(GemoError, ValueError):
    """A dataset that cannot be indexed as given (bad label, duplicate id...); the CLI
    prints it as one line and exits 2."""


@dataclass(frozen=True)
class Clip:
    id: str
    path: str
    split: str
    label: int | None  # class index into gemo.labels.CLASSES, None = unlabelled
    group: str  # source video: clips sharing it must stay in one fold

    @property
    def label_name(self):
        return None if self.label is None else CLASSES[self.label]


def source_group(clip_id):
    """Source-video key of a VGAF id ``<video>_<segment>`` (the id itself otherwise).

    >>> source_group("12_3"), source_group("crowd")
    ('12', 'crowd')
    """
    head, sep, _ = clip_id.rpartition("_")
    return head if sep and head else clip_id


@dataclass
class DatasetIndex:
    root: str
    layout: str  # "vgaf" or "csv"
    clips: list

    def to_dict(self):
        return {"root": self.root, "layout": self.layout, "clips": [asdict(c) for c in self.clips]}

    @classmethod
    def from_dict(cls, data):
        return cls(data["root"], data["layout"], [Clip(**c) for c in data["clips"]])

    def by_id(self):
        return {clip.id: clip for clip in self.clips}

    def split(self, name):
        return [clip for clip in self.clips if clip.split == name]

    def labelled(self, split):
        """Clips of ``split`` that carry a label (the ones training can use)."""
        return [clip for clip in self.split(split) if clip.label is not None]


def index_dataset(path):
    """Index a VGAF-layout folder or a CSV manifest; see the module docstring."""
    path = Path(path).expanduser().resolve()
    if path.is_file() and path.suffix.lower() == ".csv":
        clips = _index_csv(path)
        layout = "csv"
        why = dict.fromkeys(SPLITS, f"empty label in {path.name}")
    elif path.is_dir():
        clips, label_files = _index_vgaf(path)
        layout = "vgaf"
        why = {split: _label_file_help(path, split, label_files) for split in SPLITS}
    else:
        raise DatasetError(f"{path}: not a dataset folder or a .csv manifest")
    if not clips:
        raise DatasetError(f"{path}: no clips found")
    _check_unique(clips)
    for split, use in (("train", "training"), ("val", "evaluation")):
        missing = [c.id for c in clips if c.split == split and c.label is None]
        if missing:
            warnings.warn(
                f"{len(missing)} {split} clip(s) have no label ({why[split]}) and are left "
                f"out of {use}: {_preview(missing)}",
                stacklevel=2,
            )
    return DatasetIndex(str(path), layout, clips)


def _label_file_help(root, split, label_files):
    """Why a VGAF clip of ``split`` has no label: which label file lacks it, or was not found."""
    if split in label_files:
        return f"not in {label_files[split].name}"
    return f"no {_SPLIT_DIRS[split]}_labels.txt or {split}_label.txt in {root}"


def read_label_file(path):
    """``{id: class index}`` from a VGAF label file.

    Tolerates a BOM, CRLF line ends, trailing spaces, and a missing header;
    an unknown label value is an error naming the file and line.
    """
    labels = {}
    text = Path(path).read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if number == 1 and fields[0].lower() == "vid_name":
            continue
        if len(fields) != 2:
            raise DatasetError(f"{path}:{number}: expected `<id> <label>`, got {line.strip()!r}")
        clip_id, value = fields
        clip_id = Path(clip_id).stem if clip_id.lower().endswith(VIDEO_EXTENSIONS) else clip_id
        try:
            label = parse_label(value)
        except ValueError as error:
            raise DatasetError(f"{path}:{number}: {error}") from None
        if clip_id in labels:
            raise DatasetError(f"{path}:{number}: duplicate id {clip_id!r}")
        labels[clip_id] = label
    return labels


def _index_vgaf(root):
    """``(clips, {split: label file found})``."""
    label_files = {}
    for entry in sorted(root.iterdir()):
        match = _LABEL_FILE.match(entry.name)
        if entry.is_file() and match:
            split = match.group(1).lower()
            if split in label_files:
                raise DatasetError(
                    f"{root}: two label files for {split}: {label_files[split].name}, {entry.name}"
                )
            label_files[split] = entry
    clips = []
    for split in SPLITS:
        folder = _find_dir(root, _SPLIT_DIRS[split])
        labels = read_label_file(label_files[split]) if split in label_files else {}
        videos = []
        if folder is not None:
            videos = sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
        found = set()
        for video in videos:
            found.add(video.stem)
            clips.append(
                Clip(video.stem, str(video), split, labels.get(video.stem), source_group(video.stem))
            )
        orphans = sorted(set(labels) - found)
        if orphans:
            warnings.warn(
                f"{label_files[split].name}: {len(orphans)} labelled clip(s) not found in "
                f"{_SPLIT_DIRS[split]}/: {_preview(orphans)}",
                stacklevel=3,
            )
    if not clips:
        raise DatasetError(f"{root}: no Train/, Val/ or Test/ folder with video files; for "
                           "other layouts, list the clips in a CSV manifest with a "
                           "path,split,label header")
    return clips, label_files


def _find_dir(root, name):
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def _index_csv(manifest):
    clips = []
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if "path" not in header or "split" not in header:
            raise DatasetError(f"{manifest}: header must be `path,split,label`, got {header}")
        reader.fieldnames = header
        for number, row in enumerate(reader, start=2):
            raw = (row.get("path") or "").strip()
            if not raw:
                raise DatasetError(f"{manifest}:{number}: empty path")
            video = Path(raw)
            if not video.is_absolute():
                video = manifest.parent / video
            split = (row.get("split") or "").strip().lower()
            if split not in SPLITS:
                raise DatasetError(
                    f"{manifest}:{number}: unknown split {split!r}: expected {', '.join(SPLITS)}"
                )
            try:
                label = parse_label(row.get("label"))
            except ValueError as error:
                raise DatasetError(f"{manifest}:{number}: {error}") from None
            clip_id = video.stem
            clips.append(Clip(clip_id, str(video.resolve()), split, label, source_group(clip_id)))
    return clips


def _check_unique(clips):
    seen = {}
    for clip in clips:
        if clip.id in seen:
            raise DatasetError(
                f"duplicate clip id {clip.id!r}: {seen[clip.id]} and {clip.path} "
                "(ids are file names without extension and must be unique across splits)"
            )
        seen[clip.id] = clip.path


def _preview(items, limit=5):
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
