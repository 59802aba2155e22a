import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import needs_yolo
from PIL import Image
from skimage import data

from gemo.cli import cli
from gemo.data.cartoon import draw_face
from gemo.data.synth import write_mp4
from gemo.inspect import inspect_files
from gemo.pose.detect import KEYPOINTS
from gemo.pose.draw import LEFT


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_inspect_image_and_video_through_the_cli(astronaut, tmp_path, fer_weights):
    frames = np.stack([data.astronaut()[::2, ::2]] * 6)  # 256 x 256
    video = tmp_path / "astro.mp4"
    write_mp4(video, frames=frames, fps=6)
    result = CliRunner().invoke(cli, ["inspect", str(astronaut), str(video), "--frames", "3",
                                      "--json", "--draw", str(tmp_path / "drawn")])
    assert result.exit_code == 0, result.output
    image, clip = json.loads(result.output)
    [face] = image["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 160 < x1 < 200 and 40 < y1 < 80 and 250 < x2 < 290 and 150 < y2 < 190
    assert face["frame"] == 0 and face["score"] > 0.9
    assert face["expression"] == "happy" and face["expressions"]["happy"] > 0.9  # she smiles
    assert face["valence"]["Positive"] > 0.9
    assert sum(face["expressions"].values()) == pytest.approx(1.0, abs=1e-3)
    assert clip["kind"] == "video" and clip["frames"] == 3
    assert [f["frame"] for f in clip["faces"]] == [0, 1, 2]
    assert all(abs(f["box"][0] - x1 / 2) < 10 for f in clip["faces"])  # half-size video
    drawn = sorted(p.name for p in (tmp_path / "drawn").iterdir())
    assert drawn == ["astro-000.png", "astro-001.png", "astro-002.png", "astronaut-000.png"]


def test_cartoon_expressions_are_read(tmp_path, fer_weights):
    """The synthetic faces the demo plants: MTCNN finds them and FER tells the smile apart."""
    paths = []
    for expression in ("happy", "neutral", "sad"):
        rgb, mask = draw_face(expression, size=96)
        canvas = np.full((180, 320, 3), 118, np.uint8)
        canvas[40:136, 100:196][mask] = rgb[mask]
        Image.fromarray(canvas).save(tmp_path / f"{expression}.png")
        paths.append(tmp_path / f"{expression}.png")
    happy, neutral, sad = inspect_files(paths, fer_weights=fer_weights)
    assert [len(r["faces"]) for r in (happy, neutral, sad)] == [1, 1, 1]
    assert happy["faces"][0]["expression"] == "happy"
    assert neutral["faces"][0]["expressions"]["neutral"] > neutral["faces"][0]["expressions"]["happy"]
    assert sad["faces"][0]["valence"]["Negative"] > happy["faces"][0]["valence"]["Negative"]


def test_unreadable_file_is_reported_and_exit_status_3(astronaut, tmp_path, fer_weights):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    result = CliRunner().invoke(cli, ["inspect", str(broken), str(astronaut)])
    assert result.exit_code == 3
    assert "broken.jpg" in result.output and "1 face(s)" in result.output


def test_tight_face_crop_is_found(tmp_path, fer_weights):
    """A photo that is all face (as in expression datasets) is framed and detected again."""
    path = tmp_path / "tight.png"
    Image.fromarray(data.astronaut()[75:165, 190:260]).save(path)
    [entry] = inspect_files([path], fer_weights=fer_weights)
    [face] = entry["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 70 and 0 <= y1 < y2 <= 90 and (x2 - x1) * (y2 - y1) > 0.5 * 70 * 90
    assert face["expression"] == "happy"


@needs_yolo
def test_pose_adds_persons_and_draws_their_skeletons(astronaut, tmp_path, fer_weights):
    video = tmp_path / "astro.mp4"
    write_mp4(video, frames=np.stack([data.astronaut()[::2, ::2]] * 4), fps=4)
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((360, 640, 3), 128, np.uint8)).save(flat)  # nobody
    result = CliRunner().invoke(cli, ["inspect", str(astronaut), str(video), str(flat), "--pose",
                                      "--frames", "2", "--json", "--draw", str(tmp_path / "drawn")])
    assert result.exit_code == 0, result.output
    image, clip, empty = json.loads(result.output)
    [person] = image["persons"]
    assert person["frame"] == 0 and person["score"] > 0.5
    x1, y1, x2, y2 = person["box"]
    assert x1 < 180 and y1 < 60 and x2 > 270 and y2 > 400  # around her face and upper body
    points = np.array(person["keypoints"])
    assert points.shape == (17, 3) and np.all((points[:, 2] >= 0) & (points[:, 2] <= 1))
    shoulder, elbow = points[KEYPOINTS.index("left_shoulder")], points[KEYPOINTS.index("left_elbow")]
    assert shoulder[2] >= 0.5 and elbow[2] >= 0.5
    assert shoulder[0] > points[KEYPOINTS.index("right_shoulder"), 0]  # her left: image right
    assert [p["frame"] for p in clip["persons"]] == [0, 1]
    assert all(np.array(p["keypoints"]).shape == (17, 3) for p in clip["persons"])
    assert empty["persons"] == [] and empty["faces"] == []

    drawn = np.asarray(Image.open(tmp_path / "drawn" / "astronaut-000.png").convert("RGB"))
    original = data.astronaut()
    x, y = np.round((shoulder[:2] + elbow[:2]) / 2).astype(int)  # half way along her upper arm
    around = drawn[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3)
    assert any(tuple(p) == LEFT for p in around)
    assert not any(tuple(p) == LEFT for p in original[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3))
    np.testing.assert_array_equal(drawn[:40, 400:], original[:40, 400:])  # nothing drawn there


def test_pose_options_fail_in_one_line(astronaut, monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import fails as if absent
    result = CliRunner().invoke(cli, ["inspect", str(astronaut), "--pose"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert "pip install 'gemo[pose]'" in line and "--pose-detector keypointrcnn" in line
    result = CliRunner().invoke(cli, ["inspect", str(astronaut), "--pose", "--pose-detector", "x"])
    assert result.exit_code == 2 and "keypointrcnn" in result.output and "yolo" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(astronaut), "--pose-detector", "yolo"])
    assert result.exit_code == 2 and "add --pose" in result.output
