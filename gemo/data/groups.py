"""Synthetic group images (Petrova et al. 2020, section 4.2): labelled faces on backgrounds.

Each image is a background with 1 to 9 faces pasted at random positions and scales, no
two boxes overlapping (Petrova prevented occlusions with a binary mask). Its label is
the most common valence among its faces; when two valences tie for most common, the
label is Neutral ("the emotion label is set as the most common class presented in the
image. If none, it is set to neutral").

Faces come from a folder of subfolders named by valence or by expression
(case-insensitive), each holding images (an alpha channel, as in a PNG cut-out, masks
the face; without one the whole image is pasted). Expressions map to valence as in
Petrova: happy -> Positive; neutral -> Neutral; angry, disgust, fear, sad -> Negative.
``surprise`` (and ``contempt``) are positive or negative by context, and Petrova's
mapping leaves them out: their folders are skipped, and said so; move their images to
``Positive`` or ``Negative`` to use them. Backgrounds: any images under a folder,
cropped at random to the output's aspect ratio and resized.

So that ``gemo extract`` and ``gemo train scene`` read them as they read videos, each
image is written as a short still clip (``frames_per_clip`` identical frames at 5 fps,
no sound) in the VGAF layout: ``Train/ Val/ Test/`` with ``<Split>_labels.txt``, ids
``<n>_1`` (each image its own source group). ``groups.json`` lists per clip its
background, label and every face's box ``[x1, y1, x2, y2]``, valence and source file.

>>> make_groups("groups/", faces="faces/", backgrounds="rooms/", count=300)  # doctest: +SKIP
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from gemo.data.synth import remove_previous, write_mp4
from gemo.errors import GemoError
from gemo.files import write_text
from gemo.labels import CLASSES, vgaf_code

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VALENCE = {
    "positive": "Positive", "neutral": "Neutral", "negative": "Negative",
    "happy": "Positive", "happiness": "Positive",
    "angry": "Negative", "anger": "Negative", "disgust": "Negative", "fear": "Negative",
    "sad": "Negative", "sadness": "Negative",
}
UNMAPPED = ("surprise", "surprised", "contempt")  # no valence in Petrova's mapping
SPLITS = (("Train", 0.7), ("Val", 0.15), ("Test", 0.15))
FPS = 5


def make_groups(out, *, faces, backgrounds, count=300, min_faces=1, max_faces=9,
                scale=(0.15, 0.35), width=320, height=180, frames_per_clip=10, seed=0):
    """Write ``count`` synthetic group images as a VGAF-layout dataset under ``out``.

    ``scale``: the range of a face's height as a fraction of the image height.
    Returns ``out`` as a Path.
    """
    if not 1 <= min_faces <= max_faces:
        raise GemoError(f"faces per image {min_faces}..{max_faces}: need 1 <= min <= max")
    if not 0 < scale[0] <= scale[1] < 1:
        raise GemoError(f"scale {scale[0]}..{scale[1]}: need 0 < min <= max < 1 (of the height)")
    if width % 2 or height % 2 or min(width, height) < 32:
        raise GemoError(f"size {width}x{height}: width and height must be even and >= 32")
    if count < len(SPLITS):
        raise GemoError(f"--count {count}: at least {len(SPLITS)} (one image per split)")
    pool = face_pool(faces)
    scenes = _images(backgrounds, "backgrounds")
    rng = np.random.default_rng(seed)
    out = Path(out)
    remove_previous(out, "groups.json")
    splits = _splits(count, rng)
    clips = []
    for n, split in enumerate(splits, start=1):
        background = scenes[rng.integers(len(scenes))]
        image, placed = compose(_background(background, width, height, rng), pool, rng,
                                faces=int(rng.integers(min_faces, max_faces + 1)), scale=scale)
        clip_id = f"{n}_1"
        write_mp4(out / split / f"{clip_id}.mp4", frames=np.repeat(image[None], frames_per_clip, 0),
                  fps=FPS)
        clips.append({"id": clip_id, "split": split, "label": group_label(
            [face["valence"] for face in placed]), "background": str(background), "faces": placed})
    for split, _ in SPLITS:
        lines = ["Vid_name Label"] + [f"{c['id']} {vgaf_code(CLASSES.index(c['label']))}"
                                      for c in clips if c["split"] == split]
        write_text(out / f"{split}_labels.txt", "\n".join(lines) + "\n")
    params = {"count": count, "min_faces": min_faces, "max_faces": max_faces,
              "scale": list(scale), "width": width, "height": height,
              "frames_per_clip": frames_per_clip, "seed": seed, "faces": str(faces),
              "backgrounds": str(backgrounds)}
    write_text(out / "groups.json", json.dumps({"params": params, "clips": clips}, indent=1) + "\n")
    return out


def group_label(valences):
    """The most common valence; Neutral when two or more tie for most common (Petrova)."""
    counts = Counter(valences).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "Neutral"
    return counts[0][0]


def face_pool(folder):
    """``{valence: [image paths]}`` from a folder of valence or expression subfolders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GemoError(f"{folder}: not a folder of face subfolders (Positive/, happy/, ...)")
    pool, skipped = {name: [] for name in CLASSES}, []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        key = sub.name.lower()
        if key in UNMAPPED:
            skipped.append(sub.name)
            continue
        if key not in VALENCE:
            raise GemoError(f"{sub}: unknown face folder name; use a valence ({', '.join(CLASSES)}) "
                            f"or an expression ({', '.join(sorted(set(VALENCE) - {'positive', 'neutral', 'negative'}))})")
        pool[VALENCE[key]] += _images(sub, "faces", required=False)
    if skipped:
        from gemo.progress import console

        console.print(f"[yellow]note:[/] face folder(s) {', '.join(skipped)} left out: no valence "
                      "in Petrova's mapping (move the images to Positive/ or Negative/ to use them)")
    pool = {valence: paths for valence, paths in pool.items() if paths}
    if not pool:
        raise GemoError(f"{folder}: no face images in valence or expression subfolders")
    return pool


def compose(canvas, pool, rng, *, faces, scale, tries=200):
    """Paste up to ``faces`` faces from ``pool`` on ``canvas`` (uint8 RGB, changed in place)
    without overlapping boxes; returns ``(canvas, placed)``. A face that finds no free
    place in ``tries`` draws is left out, but at least one is always placed (the smallest
    scale fits any canvas alone)."""
    height, width = canvas.shape[:2]
    valences = sorted(pool)
    placed = []
    for number in range(faces):
        valence = valences[rng.integers(len(valences))]
        path = pool[valence][rng.integers(len(pool[valence]))]
        for _ in range(tries):
            side = min(width, int(round(height * rng.uniform(*scale))))
            box = _free_box(rng, side, width, height, [face["box"] for face in placed])
            if box is not None:
                break
        else:
            if placed:
                continue
            side = min(width, int(round(height * scale[0])))
            box = [0, 0, side, side]
        _paste(canvas, path, box, flip=bool(rng.integers(2)))
        placed.append({"box": box, "valence": valence, "file": str(path)})
    return canvas, placed


def boxes_overlap(a, b):
    """Whether boxes ``[x1, y1, x2, y2]`` (x2, y2 exclusive) share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _free_box(rng, side, width, height, taken):
    left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    box = [left, top, left + side, top + side]
    return None if any(boxes_overlap(box, other) for other in taken) else box


def _paste(canvas, path, box, *, flip):
    """The face at ``path`` scaled into ``box`` (square; the image is fitted, centred), its
    alpha channel (if any) as the mask."""
    x1, y1, x2, y2 = box
    face = _open(path).convert("RGBA")
    face.thumbnail((x2 - x1, y2 - y1), Image.Resampling.LANCZOS)
    if flip:
        face = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    left = x1 + (x2 - x1 - face.width) // 2
    top = y1 + (y2 - y1 - face.height) // 2
    rgba = np.asarray(face, np.float32)
    alpha = rgba[..., 3:] / 255.0
    region = canvas[top:top + face.height, left:left + face.width].astype(np.float32)
    canvas[top:top + face.height, left:left + face.width] = (
        rgba[..., :3] * alpha + region * (1 - alpha)).round().astype(np.uint8)


def _background(path, width, height, rng):
    """A random crop of ``path`` with the output's aspect ratio, resized: uint8 RGB."""
    image = _open(path).convert("RGB")
    aspect = width / height
    crop_w = min(image.width, int(image.height * aspect))
    crop_h = min(image.height, int(crop_w / aspect))
    crop_w = max(1, int(crop_h * aspect))
    left = int(rng.integers(0, image.width - crop_w + 1))
    top = int(rng.integers(0, image.height - crop_h + 1))
    image = image.crop((left, top, left + crop_w, top + crop_h))
    return np.array(image.resize((width, height), Image.Resampling.BILINEAR))


def _open(path):
    try:
        image = Image.open(path)
        image.load()
    except OSError as error:
        raise GemoError(f"{path}: not a readable image ({error}): remove it or convert it") from None
    return image


def _images(folder, what, required=True):
    folder = Path(folder)
    if not folder.is_dir():
        raise GemoError(f"{folder}: not a folder of {what} images")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if required and not found:
        raise GemoError(f"{folder}: no {what} images ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def _splits(count, rng):
    """A split per image: the SPLITS fractions (at least one each), in shuffled order."""
    sizes = [max(1, round(count * fraction)) for _, fraction in SPLITS[1:]]
    names = ([SPLITS[0][0]] * (count - sum(sizes))
             + [name for (name, _), size in zip(SPLITS[1:], sizes) for _ in range(size)])
    return [names[i] for i in rng.permutation(count)]
