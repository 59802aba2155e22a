"""gemo synth-groups: Petrova's synthetic group images, as a dataset gemo reads."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from gemo.data.cartoon import draw_face
from gemo.data.groups import boxes_overlap, group_label, make_groups
from gemo.errors import GemoError

# expression folder -> the valence it maps to (surprise has none: left out)
FOLDERS = {"happy": "Positive", "Neutral": "Neutral", "sad": "Negative", "angry": "Negative"}


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """Cut-out cartoon faces (RGBA) in expression folders, and two background images."""
    root = tmp_path_factory.mktemp("collections")
    for folder in (*FOLDERS, "surprise"):
        (root / "faces" / folder).mkdir(parents=True)
        expression = "happy" if folder == "surprise" else folder.lower()
        for size in (40, 64):
            rgb, mask = draw_face(expression, size=size)
            rgba = np.dstack([rgb, np.where(mask, 255, 0).astype(np.uint8)])
            Image.fromarray(rgba).save(root / "faces" / folder / f"{size}.png")
    (root / "rooms" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(root / "rooms" / "a.jpg")
    Image.fromarray(np.full((300, 240, 3), 90, np.uint8)).save(root / "rooms" / "sub" / "b.png")
    return root


def test_group_label_is_the_majority_and_neutral_on_ties():
    assert group_label(["Positive"]) == "Positive"
    assert group_label(["Negative", "Positive", "Negative"]) == "Negative"
    assert group_label(["Negative", "Positive"]) == "Neutral"
    assert group_label(["Positive", "Positive", "Negative", "Negative", "Neutral"]) == "Neutral"


def test_groups_dataset(collections, tmp_path):
    from gemo.data.index import index_dataset

    out = make_groups(tmp_path / "groups", faces=collections / "faces",
                      backgrounds=collections / "rooms", count=20, width=160, height=96,
                      frames_per_clip=4, seed=1)
    meta = json.loads((out / "groups.json").read_text())
    counts = []
    for clip in meta["clips"]:
        boxes = [face["box"] for face in clip["faces"]]
        counts.append(len(boxes))
        assert 1 <= len(boxes) <= 9
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= 160 and 0 <= a[1] < a[3] <= 96
            assert not any(boxes_overlap(a, b) for b in boxes[i + 1:])
        valences = Counter(face["valence"] for face in clip["faces"])
        top = valences.most_common()
        expected = "Neutral" if len(top) > 1 and top[0][1] == top[1][1] else top[0][0]
        assert clip["label"] == expected
        for face in clip["faces"]:  # surprise is left out; others map as documented
            folder = face["file"].split("/")[-2]
            assert folder != "surprise" and FOLDERS[folder] == face["valence"]
    assert len(set(counts)) > 3  # counts vary
    index = index_dataset(out)
    assert len(index.clips) == 20 and {c.split for c in index.clips} == {"train", "val", "test"}
    labels = {clip["id"]: clip["label"] for clip in meta["clips"]}
    assert all(c.label_name == labels[c.id] for c in index.clips)


def test_faces_are_pasted_at_their_boxes(collections, tmp_path):
    from gemo.data.groups import compose, face_pool

    pool = face_pool(collections / "faces")
    canvas = np.zeros((96, 160, 3), np.uint8)
    _, placed = compose(canvas, pool, np.random.default_rng(0), faces=9, scale=(0.2, 0.3))
    drawn = canvas.any(axis=2)
    inside = np.zeros_like(drawn)
    for x1, y1, x2, y2 in (face["box"] for face in placed):
        inside[y1:y2, x1:x2] = True
        assert drawn[y1:y2, x1:x2].mean() > 0.3  # the face's pixels are in its box
    assert not drawn[~inside].any()  # and nowhere else (the alpha masks the corners)


def test_cli_then_extract_frames(collections, tmp_path):
    from click.testing import CliRunner

    from gemo.cache.store import FeatureCache
    from gemo.cli import cli

    runner = CliRunner()
    out = tmp_path / "groups"
    result = runner.invoke(cli, ["synth-groups", str(out), "--faces", str(collections / "faces"),
                                 "--backgrounds", str(collections / "rooms"), "--count", "6",
                                 "--width", "96", "--height", "64", "--max-faces", "3"])
    assert result.exit_code == 0, result.output
    assert "surprise" in result.output  # the skipped folder is said
    work = tmp_path / "work"
    result = runner.invoke(cli, ["extract", str(out), "--only", "frames", "-p", "frames.count=3",
                                 "-p", "frames.size=32", "--workers", "1", "--quiet",
                                 "--workdir", str(work)])
    assert result.exit_code == 0, result.output
    with FeatureCache(work / "cache" / "frames.h5") as cache:
        assert not cache.failures() and len(cache.ids()) == 6
    result = runner.invoke(cli, ["synth-groups", str(out), "--faces", str(collections / "rooms"),
                                 "--backgrounds", str(collections / "rooms")])
    assert result.exit_code == 2 and "unknown face folder name" in result.output


def test_bad_options_are_refused(collections, tmp_path):
    with pytest.raises(GemoError, match="min <= max"):
        make_groups(tmp_path, faces=collections / "faces", backgrounds=collections / "rooms",
                    min_faces=5, max_faces=2)
    with pytest.raises(GemoError, match="no face images"):
        (tmp_path / "empty" / "happy").mkdir(parents=True)
        make_groups(tmp_path / "o", faces=tmp_path / "empty", backgrounds=collections / "rooms")
