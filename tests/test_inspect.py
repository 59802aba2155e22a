import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage import data

from gemo.cli import cli
from gemo.data.cartoon import draw_face
from gemo.data.synth import write_mp4
from gemo.inspect import inspect_files


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
