"""Face detection (MTCNN for real, RetinaFace with checkpoints written here) and the ``faces`` set.

The astronaut photo (scikit-image) holds one real face, about x 180-270, y 60-175.
"""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from gemo import extractors, pretrained
from gemo.data.media import read_frames
from gemo.data.synth import write_mp4
from gemo.device import resolve_device
from gemo.errors import GemoError
from gemo.faces import retinaface
from gemo.faces.align import TEMPLATE_112
from gemo.faces.detect import LANDMARKS, Faces, create_detector

FACE = np.array([180, 60, 270, 175], np.float32)  # x1, y1, x2, y2 of the astronaut's face


@pytest.fixture(scope="module")
def image():
    return astronaut()


@pytest.fixture(scope="module")
def mtcnn():
    return create_detector("mtcnn")


def _twice(image):
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)


def _check_well_formed(faces):
    n = len(faces)
    assert faces.boxes.shape == (n, 4) and faces.scores.shape == (n,)
    assert faces.landmarks.shape == (n, 5, 2)
    assert {a.dtype for a in (faces.boxes, faces.scores, faces.landmarks)} == {np.dtype(np.float32)}
    area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    assert np.all(np.diff(area) <= 0)  # largest first


def test_mtcnn_finds_the_astronaut_with_ordered_landmarks(mtcnn, image):
    [faces] = mtcnn.detect([image])
    _check_well_formed(faces)
    assert len(faces) == 1 and faces.scores[0] > 0.95
    box, points = faces.boxes[0], faces.landmarks[0]
    np.testing.assert_allclose(box, FACE, atol=15)
    assert np.all((points >= box[:2]) & (points <= box[2:]))
    eyes, nose, mouth = points[:2], points[2], points[3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # left, right as seen
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    assert LANDMARKS == ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def test_uniform_image_has_no_face(mtcnn):
    [faces] = mtcnn.detect([np.full((240, 320, 3), 128, np.uint8)])
    assert len(faces) == 0
    assert faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)
    assert [len(f) for f in mtcnn.detect([np.zeros((8, 30, 3), np.uint8)] * 2)] == [0, 0]


def test_downscaled_detection_reports_original_pixels(image):
    [one] = create_detector("mtcnn", max_side=0).detect([image])
    [two] = create_detector("mtcnn", max_side=512).detect([_twice(image)])  # detected at half size
    assert len(one) == len(two) == 1
    np.testing.assert_allclose(two.boxes / one.boxes, 2.0, rtol=0.05)
    np.testing.assert_allclose(two.landmarks / one.landmarks, 2.0, rtol=0.05)


def test_min_face_size_is_in_original_pixels(image):
    # The face is about 90 x 110 pixels here and 180 x 220 in the doubled image.
    assert len(create_detector("mtcnn", min_face_size=80).detect([image])[0]) == 1
    assert len(create_detector("mtcnn", min_face_size=150).detect([image])[0]) == 0
    # Detected at half size (max_side 512), where it measures 110 < 150, yet kept: 220 >= 150.
    big = create_detector("mtcnn", min_face_size=150, max_side=512)
    assert len(big.detect([_twice(image)])[0]) == 1


def test_mixed_sizes_keep_input_order(mtcnn, image):
    blank = np.zeros((100, 150, 3), np.uint8)
    results = mtcnn.detect([image, blank, _twice(image), image])
    assert [len(f) for f in results] == [1, 0, 1, 1]
    np.testing.assert_allclose(results[2].boxes, results[0].boxes * 2, rtol=0.05)
    np.testing.assert_array_equal(results[3].boxes, results[0].boxes)


def test_faces_subset_and_bad_inputs(mtcnn, image):
    [faces] = mtcnn.detect([image])
    assert isinstance(faces[:0], Faces) and len(faces[:0]) == 0
    with pytest.raises(GemoError, match="uint8"):
        mtcnn.detect([image.astype(np.float32)])
    with pytest.raises(GemoError, match="unknown face detector"):
        create_detector("haar")
    with pytest.raises(GemoError, match="device"):
        resolve_device("tpu")
    assert resolve_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(GemoError, match="no CUDA"):
            create_detector("mtcnn", device="cuda")


def test_mtcnn_weights_are_registered_and_checked(tmp_path, mtcnn, image):
    assert {"mtcnn.pnet", "mtcnn.rnet", "mtcnn.onet"} <= set(pretrained.available())
    assert [s["name"] for s in mtcnn.describe()["weights"]] == ["mtcnn.pnet", "mtcnn.rnet",
                                                                "mtcnn.onet"]
    shipped = Path(mtcnn.describe()["weights"][0]["file"]).parent
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        shutil.copy(shipped / name, tmp_path / name)
    assert len(create_detector("mtcnn", weights=tmp_path).detect([image])[0]) == 1
    with open(tmp_path / "pnet.pt", "r+b") as handle:  # same size, one byte changed
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(GemoError, match="SHA-256"):
        create_detector("mtcnn", weights=tmp_path).detect([image])


# --- RetinaFace: checkpoints written by the tests ------------------------------------------------

@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty $GEMO_HOME and $TORCH_HOME; returns the gemo weights folder."""
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "gemo" / "weights"
    folder.mkdir(parents=True)
    return folder


def _save_checkpoint(path, net, *, drop_counters=False):
    """As the public file is saved: a DataParallel state dict, keys prefixed with ``module.``."""
    state = {f"module.{k}": v for k, v in net.state_dict().items()
             if not (drop_counters and k.endswith("num_batches_tracked"))}
    torch.save(state, path)
    return path


def _anchor_net():
    """Offsets zero (boxes = anchors, landmarks at their centres) and every anchor a sure face."""
    torch.manual_seed(0)
    net = retinaface.RetinaFace()
    with torch.no_grad():
        for head in (*net.BboxHead, *net.LandmarkHead, *net.ClassHead):
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.zero_()
        for head in net.ClassHead:
            head.conv1x1.bias.copy_(torch.tensor([-8.0, 8.0]).repeat(2))
    return net


def test_retinaface_missing_weights_name_the_file_and_folders(homes, image):
    detector = create_detector("retinaface")
    with pytest.raises(GemoError) as error:
        detector.detect([image])
    message = str(error.value)
    assert "mobilenet0.25_Final.pth" in message and str(homes) in message
    assert "checkpoints" in message  # the torch hub folder is searched too


def test_retinaface_random_checkpoint_loads_and_detects(homes, image):
    torch.manual_seed(1)
    _save_checkpoint(homes / "mobilenet0.25_Final.pth", retinaface.RetinaFace())
    detector = create_detector("retinaface", threshold=0.0, min_face_size=0)
    [faces] = detector.detect([image])
    _check_well_formed(faces)
    assert len(faces) > 0
    source = detector.describe()["weights"][0]
    assert source["name"] == "retinaface.mobilenet0.25" and len(source["sha256"]) == 64


def test_retinaface_decodes_anchors_in_original_pixels(homes, tmp_path):
    path = _save_checkpoint(tmp_path / "mobilenet0.25_Final.pth", _anchor_net(), drop_counters=True)
    image = np.zeros((256, 384, 3), np.uint8)
    [faces] = create_detector("retinaface", weights=path, min_face_size=0, max_side=192).detect([image])
    _check_well_formed(faces)
    sides = np.stack([faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1]])
    # Detected at half size: anchors of 16 ... 512 pixels come back twice as large.
    assert set(np.round(sides.ravel()).astype(int)) <= {32, 64, 128, 256, 512, 1024}
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    np.testing.assert_allclose(faces.landmarks, np.repeat(centres[:, None], 5, axis=1), atol=1e-3)
    # Anchor centres sit at (cell + 0.5) * stride, here in doubled pixels: 8, 24, 40 ... for 16 px.
    smallest = sides[0] == 32
    assert smallest.any() and np.allclose((centres[smallest] - 8) % 16, 0, atol=1e-3)
    assert len(faces) == len(set(map(tuple, faces.boxes.tolist())))  # NMS left no duplicates


def test_retinaface_wrong_checkpoint_is_refused(homes):
    net = retinaface.RetinaFace(channels=32)  # another width: every FPN/SSH/head shape differs
    _save_checkpoint(homes / "mobilenet0.25_Final.pth", net)
    with pytest.raises(GemoError, match="does not fit the RetinaFace network") as error:
        retinaface.load_retinaface()
    assert "shape mismatch" in str(error.value)
    state = {f"module.{k}": v for k, v in retinaface.RetinaFace().state_dict().items()
             if not k.startswith("LandmarkHead")}
    torch.save(state, homes / "mobilenet0.25_Final.pth")
    with pytest.raises(GemoError, match="missing 6 key"):
        retinaface.load_retinaface()


# --- the ``faces`` feature set ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut_clip(tmp_path_factory, image):
    path = tmp_path_factory.mktemp("faces") / "astronaut.mp4"
    frames = np.stack([np.roll(image, shift, axis=1) for shift in range(0, 16, 2)])  # slow pan
    write_mp4(path, frames=frames, fps=4)
    return path


def test_read_frames_max_side_keeps_aspect(astronaut_clip, tmp_path):
    wide = tmp_path / "wide.mp4"
    write_mp4(wide, frames=np.zeros((6, 48, 64, 3), np.uint8), fps=4)
    assert read_frames(wide, count=2, max_side=0)[0].shape == (2, 48, 64, 3)
    assert read_frames(wide, count=2, max_side=32)[0].shape == (2, 24, 32, 3)
    assert read_frames(wide, count=2, max_side=640)[0].shape == (2, 48, 64, 3)  # never enlarged
    assert read_frames(wide, count=2, size=16)[0].shape == (2, 16, 16, 3)  # unchanged default


def test_faces_extractor_on_the_astronaut(astronaut_clip):
    extractor = extractors.create("faces", count=4)
    out = extractor.extract(astronaut_clip)
    n = int(out["counts"].sum())
    assert out["counts"].tolist() == [1, 1, 1, 1] and out["counts"].dtype == np.int32
    assert out["frame_index"].tolist() == [0, 1, 2, 3] and out["frame_index"].dtype == np.int32
    assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,)
    assert out["landmarks"].shape == (n, 5, 2) and out["crops"].shape == (n, 112, 112, 3)
    assert out["crops"].dtype == np.uint8 and out["timestamps"].shape == (4,)
    assert out["timestamps"].dtype == np.float64 and np.all(np.diff(out["timestamps"]) > 0)
    grey = out["crops"].astype(np.float32).mean(axis=3)
    for x, y in TEMPLATE_112[:2]:  # the eyes land on the template: darker than the cheeks
        x, y = int(round(x)), int(round(y))
        eye = grey[:, y - 3:y + 4, x - 3:x + 4].mean()
        cheek = grey[:, 75:82, x - 3:x + 4].mean()
        assert eye < cheek - 40, (eye, cheek)
    info = extractor.info()
    assert info["landmarks"] == list(LANDMARKS) and info["detector"]["name"] == "mtcnn"


def test_faces_extractor_without_faces_is_valid(tmp_path):
    clip = tmp_path / "plain.mp4"
    write_mp4(clip, frames=np.full((8, 64, 96, 3), (40, 160, 90), np.uint8), fps=4)
    out = extractors.create("faces", count=3).extract(clip)
    assert out["counts"].tolist() == [0, 0, 0]
    shapes = {k: v.shape for k, v in out.items()}
    assert shapes == {"counts": (3,), "frame_index": (0,), "boxes": (0, 4), "scores": (0,),
                      "landmarks": (0, 5, 2), "crops": (0, 112, 112, 3), "timestamps": (3,)}
    assert out["crops"].dtype == np.uint8 and out["boxes"].dtype == np.float32


def test_faces_extractor_keeps_the_largest_faces(tmp_path, image):
    small = np.asarray(Image.fromarray(image).resize((256, 256)))
    canvas = np.full((512, 768, 3), 200, np.uint8)
    canvas[:, :512], canvas[128:384, 512:] = image, small  # faces of ~100 and ~50 pixels
    clip = tmp_path / "two.mp4"
    write_mp4(clip, frames=np.stack([canvas] * 4), fps=4)
    both = extractors.create("faces", count=2, max_faces=0).extract(clip)
    assert both["counts"].tolist() == [2, 2]
    one = extractors.create("faces", count=2, max_faces=1, crop_size=64).extract(clip)
    assert one["counts"].tolist() == [1, 1] and one["crops"].shape == (2, 64, 64, 3)
    assert np.all(one["boxes"][:, 2] < 512)  # the larger face, on the left


def test_faces_extractor_is_picklable_without_its_detector(astronaut_clip):
    extractor = extractors.create("faces", count=2)
    extractor.detector()
    copy = pickle.loads(pickle.dumps(extractor))
    assert copy._detector is None and copy.params == extractor.params


def test_batch_size_changes_speed_not_values(tmp_path, image):
    frames = [np.roll(image, shift, axis=1) for shift in (0, 40, 80, 120)]
    clip = tmp_path / "moving.mp4"
    write_mp4(clip, frames=np.stack(frames), fps=4)
    whole = extractors.create("faces", count=4).extract(clip)
    single = extractors.create("faces", count=4, batch_size=1)
    assert single.params == extractors.create("faces", count=4).params  # not a stored parameter
    one_by_one = single.extract(clip)
    assert whole["counts"].tolist() == [1, 1, 1, 1]
    for key, array in whole.items():  # oneDNN rounds differently per batch shape: 1e-5 px
        np.testing.assert_allclose(one_by_one[key].astype(float), array, atol=1.0 if key == "crops"
                                   else 1e-3, err_msg=key)
    with pytest.raises(GemoError, match="batch_size"):
        create_detector("mtcnn", batch_size=-1)
