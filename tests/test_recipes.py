"""gemo run: a paper recipe end to end, its rerun doing nothing, and its checks."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from gemo import recipes
from gemo.cli import cli
from gemo.errors import GemoError

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.toml"))

TINY = """
name = "tiny"
leaves_out = ["everything a paper would need"]

[extract]
sets = ["frames", "pyaudio"]
[extract.params.frames]
count = 3
size = 64

[[train]]
name = "scene-small"
modality = "scene"
features = "frames"
model = "frame-cnn"
epochs = EPOCHS
folds = 2
options = { backbone = "small", input_size = 32 }

[[train]]
name = "audio-pyaudio"
modality = "audio"
features = "pyaudio"
epochs = 2
folds = 2

[[fuse]]
name = "fusion-mean"
method = "mean"
models = ["scene-small", "audio-pyaudio"]

[evaluate]
split = "val"

[paper.val.accuracy]
audio-pyaudio = 47.19
fusion-mean = 61.83
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The conftest synth_data is too small to cross-fit and hold out every class: 8 a class, as test_predict."""
    from gemo.data.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("recipe-data"), clips_per_class=8, seed=5,
                        duration=2.0, width=64, height=48)


def _write(tmp_path, text):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def _mtimes(work):
    return {p: p.stat().st_mtime_ns for p in sorted((work / "models").rglob("*"))
            + sorted((work / "scores").glob("*.h5"))}


@pytest.mark.slow  # about 30 s: synthesis, extraction, two trainings, fusion, twice
def test_recipe_runs_then_rerun_redoes_nothing(tmp_path, data):
    recipe, work = _write(tmp_path, TINY.replace("EPOCHS", "1")), tmp_path / "work"
    run = CliRunner().invoke(cli, ["run", str(recipe), str(data), "--workdir", str(work),
                                   "--quiet"])
    assert run.exit_code == 0, run.output
    assert "train scene-small: made" in run.output and "fuse fusion-mean: made" in run.output
    assert "47.19" in run.output and "61.83" in run.output  # the paper's beside gemo's
    before = _mtimes(work)

    again = recipes.run(recipe, workspace=work, progress=False)
    notes = {(stage, name): note for stage, name, note in again["stages"]}
    assert notes[("extract", "frames, pyaudio")] == "nothing to do: every clip cached"
    for key in [("train", "scene-small"), ("train", "audio-pyaudio"), ("fuse", "fusion-mean")]:
        assert notes[key] == "nothing to do: made before from this entry"
    assert _mtimes(work) == before
    rows = {row["name"]: row for row in again["comparison"]}
    assert rows["audio-pyaudio"]["paper"] == 47.19
    assert rows["audio-pyaudio"]["gemo"] == round(
        100 * again["evaluation"]["models"]["audio-pyaudio"]["accuracy"], 2)

    # An edited entry replaces what the recipe made, and only that (and the fusion on it).
    edited = recipes.run(_write(tmp_path, TINY.replace("EPOCHS", "2")), workspace=work,
                         progress=False)
    notes = {(stage, name): note for stage, name, note in edited["stages"]}
    assert notes[("train", "scene-small")] == "made again"
    assert notes[("train", "audio-pyaudio")].startswith("nothing to do")
    assert notes[("fuse", "fusion-mean")] == "made again"  # its input was retrained


def test_unknown_key_is_refused_in_one_line(tmp_path):
    path = _write(tmp_path, TINY.replace("EPOCHS", "1").replace("folds = 2\noptions",
                                                               "folds = 2\nepoch = 3\noptions"))
    with pytest.raises(GemoError) as error:
        recipes.load(path)
    message = str(error.value)
    assert "\n" not in message
    assert "unknown key 'epoch' in [[train]]" in message and "epochs" in message


def test_unknown_model_option_is_refused(tmp_path):
    path = _write(tmp_path, TINY.replace("EPOCHS", "1").replace("input_size = 32",
                                                               "input_sise = 32"))
    with pytest.raises(GemoError, match="unknown key 'input_sise' in the options of scene-small"):
        recipes.load(path)


def test_missing_weights_stop_before_any_work(tmp_path, home):
    work = tmp_path / "work"
    run = CliRunner().invoke(cli, ["run", str(RECIPES[0].parent / "pinto2020.toml"),
                                   "--workdir", str(work)])
    assert run.exit_code == 2 and "pretrained weights not found" in run.output
    assert not work.exists()


def test_quick_overrides_merge_over_the_recipe(tmp_path):
    path = _write(tmp_path, TINY.replace("EPOCHS", "50") + """
[quick.extract.params.frames]
count = 2
[quick.train.scene-small]
epochs = 1
""")
    assert recipes.load(path)["train"][0]["epochs"] == 50
    quick = recipes.load(path, quick=True)
    assert quick["extract"]["params"]["frames"] == {"count": 2, "size": 64}
    assert quick["extract"]["sets"] == ["frames", "pyaudio"]
    assert [entry["epochs"] for entry in quick["train"]] == [1, 2]
    with pytest.raises(GemoError, match="has no \\[quick\\] table"):
        recipes.load(_write(tmp_path, TINY.replace("EPOCHS", "1")), quick=True)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_are_valid(path):
    recipe = recipes.load(path)
    assert recipe["name"] == path.stem and recipe["leaves_out"]
    if "quick" in recipe:
        recipes.load(path, quick=True)
