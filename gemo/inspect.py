"""`gemo inspect`: faces and their expressions in images and videos, optionally the persons and
their poses, with optional drawings.

>>> report = inspect_files(["group.jpg", "clip.mp4"], pose=True)   # doctest: +SKIP
>>> report[0]["faces"][0]["box"], report[0]["faces"][0]["expression"]
>>> report[0]["persons"][0]["keypoints"]  # 17 x [x, y, confidence]
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from gemo import threads
from gemo.data.media import MediaError, read_frames
from gemo.labels import CLASSES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def inspect_files(paths, *, detector="mtcnn", min_face_size=20, max_side=0, frames=10,
                  draw=None, device="auto", detector_weights=None, fer_weights=None, pose=False,
                  pose_detector="yolo", pose_weights=None, progress=None):
    """Detect every face of each image (or ``frames`` evenly spaced frames of each video) and
    classify its expression; with ``pose``, detect the persons and their keypoints too.

    Returns one dict per file: ``path``, ``kind`` (image or video), ``frames``
    (count looked at), ``faces`` (frame, box [x1, y1, x2, y2] in pixels, score,
    landmarks, ``expressions`` {class: probability}, ``expression``, and the
    zero-shot ``valence`` over Positive/Neutral/Negative), or ``error`` for a
    file that could not be read. ``pose`` adds ``persons`` (frame, box, score,
    ``keypoints`` [17 x [x, y, confidence]] in :data:`gemo.pose.detect.KEYPOINTS` order)
    found by ``pose_detector`` (weights: ``pose_weights``, else the standard places).
    ``draw`` (a folder) gets each frame as a PNG with the boxes and labels drawn on it,
    and the skeletons with ``pose``. ``progress(done, total)`` is called per file.
    """
    from gemo.faces import fer
    from gemo.faces.detect import create_detector

    person_detector = None
    if pose:
        from gemo.pose.detect import create_detector as create_pose_detector

        person_detector = create_pose_detector(pose_detector, device=device, weights=pose_weights)
        person_detector.load()  # a missing extra or weight file stops here, before any work
    face_detector = create_detector(detector, min_face_size=min_face_size, max_side=max_side,
                                    device=device, weights=detector_weights)
    model = fer.load_fer(weights=fer_weights)
    if draw is not None:
        Path(draw).mkdir(parents=True, exist_ok=True)
    with threads.limited():  # gemo's thread count, as everywhere (gemo.threads)
        return _inspect_all(paths, face_detector, model, person_detector, frames=frames,
                            draw=draw, progress=progress)


def _inspect_all(paths, face_detector, model, person_detector, *, frames, draw, progress):
    from gemo.faces import fer

    report = []
    for done, path in enumerate(paths, start=1):
        path = Path(path)
        try:
            kind, images = _load(path, frames)
        except (MediaError, OSError, UnidentifiedImageError) as error:
            report.append({"path": str(path), "error": str(error)})
            continue
        entry = {"path": str(path), "kind": kind, "frames": len(images), "faces": []}
        detections = face_detector.detect(images)
        if kind == "image" and not len(detections[0]):
            detections = [_detect_padded(face_detector, images[0])]
        people = [None] * len(images)
        if person_detector is not None:
            people = person_detector.detect(images)
            entry["persons"] = [_person(frame, persons, i) for frame, persons in enumerate(people)
                                for i in range(len(persons))]
        for frame, (image, found, persons) in enumerate(zip(images, detections, people)):
            inputs = [fer.fer_input_from_box(image, box) for box in found.boxes]
            probs = fer.predict(model, inputs)
            valence = fer.valence(probs) if len(probs) else probs
            for i in range(len(found)):
                entry["faces"].append({
                    "frame": frame,
                    "box": [round(float(v), 1) for v in found.boxes[i]],
                    "score": round(float(found.scores[i]), 4),
                    "landmarks": np.round(found.landmarks[i], 1).tolist(),
                    "expressions": {c: round(float(p), 4) for c, p in zip(fer.FER_CLASSES, probs[i])},
                    "expression": fer.FER_CLASSES[int(probs[i].argmax())],
                    "valence": {c: round(float(p), 4) for c, p in zip(CLASSES, valence[i])},
                })
            if draw is not None:
                _draw(image, [f for f in entry["faces"] if f["frame"] == frame], persons,
                      Path(draw) / f"{path.stem}-{frame:03d}.png")
        report.append(entry)
        if progress is not None:
            progress(done, len(paths))
    return report


def _person(frame, persons, i):
    return {"frame": frame,
            "box": [round(float(v), 1) for v in persons.boxes[i]],
            "score": round(float(persons.scores[i]), 4),
            "keypoints": [[round(float(x), 1), round(float(y), 1), round(float(c), 4)]
                          for x, y, c in persons.keypoints[i]]}


def _detect_padded(detector, image):
    """Detect again on the image framed by a border: MTCNN misses faces that fill the whole
    picture, as in the tight face crops of expression datasets."""
    pad = int(0.3 * max(image.shape[:2]))
    found = detector.detect([np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")])[0]
    height, width = image.shape[:2]
    boxes = found.boxes - pad
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return type(found)(boxes, found.scores, found.landmarks - pad)


def _load(path, frames):
    """``("image", [rgb])`` or ``("video", [rgb, ...])`` at full resolution."""
    if not path.is_file():
        raise OSError("no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        with Image.open(path) as image:
            return "image", [np.asarray(image.convert("RGB"))]
    video, _ = read_frames(path, count=frames, max_side=0)
    return "video", list(video)


def _draw(image, faces, persons, out):
    """The frame with its faces and, when given, its persons (under the faces' labels)."""
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    width = max(2, round(max(image.shape[:2]) / 300))
    if persons is not None:
        from gemo.pose.draw import draw_persons

        draw_persons(pen, persons, width=width)
    font = ImageFont.load_default(size=8 * width)
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        pen.rectangle([x1, y1, x2, y2], outline=(255, 220, 0), width=width)
        label = f"{face['expression']} {face['expressions'][face['expression']]:.2f}"
        pen.text((x1, max(0, y1 - 9 * width)), label, fill=(255, 220, 0), font=font)
    canvas.save(out)

