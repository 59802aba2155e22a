"""gemo explain: Grad-CAM / Score-CAM heat maps of a frame-cnn, and fusion contributions."""

import numpy as np
import pytest
import torch
from PIL import Image

from gemo.errors import GemoError
from gemo.explain import cam, heat_maps, leave_out
from gemo.labels import CLASSES

SIZE, SQUARE = 32, 10  # frames of SIZE pixels; the cue: a bright SQUARE x SQUARE top-left


def _frames(rng, n, square):
    """``[n, 2, SIZE, SIZE, 3]`` uint8 noise frames, with the bright top-left square or not."""
    frames = rng.integers(40, 120, size=(n, 2, SIZE, SIZE, 3)).astype(np.uint8)
    if square:
        frames[:, :, :SQUARE, :SQUARE] = 250
    return frames


@pytest.fixture(scope="module")
def trained():
    """A tiny frame-cnn that learnt: square -> Positive, none -> Negative (a few seconds)."""
    from gemo.models.base import create
    from gemo.models.inputs import inputs_for

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create("frame-cnn", input_dim=3, backbone="small", width=4, input_size=SIZE,
                   dropout=0.0)
    inputs = inputs_for(model).fit([])
    clips = np.concatenate([_frames(rng, 24, True), _frames(rng, 24, False)])
    labels = torch.tensor([0] * 24 + [2] * 24)
    (x,) = inputs.batch(inputs.tensors(list(clips)))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimiser.step()
    model.eval()
    assert (model(x).argmax(1) == labels).float().mean() == 1.0
    return model, inputs


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_heat_concentrates_on_the_planted_square(trained, method):
    model, inputs = trained
    (x,) = inputs.batch(inputs.tensors(list(_frames(np.random.default_rng(1), 1, True))))
    maps, probs = cam(model, x, method=method)
    assert CLASSES[int(probs.argmax())] == "Positive"
    assert maps.shape == (2, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    inside = np.zeros((SIZE, SIZE), bool)
    inside[:SQUARE, :SQUARE] = True
    for heat in maps:
        assert heat[inside].mean() > 1.5 * heat[~inside].mean()


def test_gradcam_of_a_frozen_backbone(trained):
    """--freeze-backbone leaves no parameter before the feature map needing a gradient."""
    model, inputs = trained
    (x,) = inputs.batch(inputs.tensors(list(_frames(np.random.default_rng(1), 1, True))))
    expected, _ = cam(model, x)
    model.backbone.requires_grad_(False)
    try:
        frozen, _ = cam(model, x)
    finally:
        model.backbone.requires_grad_(True)
    np.testing.assert_allclose(frozen, expected, atol=1e-6)


def test_heat_maps_write_overlays_beside_the_frames(trained, tmp_path):
    from gemo.data.synth import write_mp4
    from gemo.models.checkpoint import LoadedModel

    model, inputs = trained
    video = np.full((20, 48, 64, 3), 80, np.uint8)
    video[:, :15, :20] = 250  # the square, top-left, in a wider frame
    write_mp4(tmp_path / "clip.mp4", frames=video, fps=10)
    loaded = LoadedModel(model, inputs, {"name": "scene", "architecture": "frame-cnn",
                                         "features": {"params": {"count": 2, "size": 40}}})
    result = heat_maps(loaded, tmp_path / "clip.mp4", tmp_path / "out", method="gradcam")
    assert result["predicted"] == result["class"] == "Positive"
    assert len(result["frames"]) == 2
    for k in range(2):
        frame = np.asarray(Image.open(tmp_path / "out" / f"frame-{k:02d}.png"))
        drawn = np.asarray(Image.open(tmp_path / "out" / f"frame-{k:02d}-gradcam.png"))
        assert frame.shape == drawn.shape == (48, 64, 3)  # the clip's own aspect ratio
        assert np.abs(drawn.astype(int) - frame).mean() > 10
    other = heat_maps(loaded, tmp_path / "clip.mp4", tmp_path / "neg", target="negative")
    assert other["class"] == "Negative"
    with pytest.raises(GemoError, match="unknown class"):
        heat_maps(loaded, tmp_path / "clip.mp4", tmp_path / "x", target="happy")


class _MeanFuser:
    """The mean fusion's rule on a row of 3 models' probabilities."""

    def predict_proba(self, X):
        return X.reshape(len(X), -1, 3).mean(axis=1)


def test_the_informative_model_contributes_most():
    from gemo.fusion.base import create

    rng = np.random.default_rng(0)
    n = 120
    labels = rng.integers(0, 3, n)
    informative = np.full((n, 3), 0.1)
    informative[np.arange(n), labels] = 0.8
    informative = 0.7 * informative + 0.3 * rng.dirichlet(np.ones(3), n)
    random = rng.dirichlet(np.full(3, 5.0), n)  # uninformative, and unsure as a real one
    X = np.hstack([informative, random])
    columns = {"good": slice(0, 3), "noise": slice(3, 6)}
    modality = {"good": "scene", "noise": "audio"}
    for fuser in (_MeanFuser(), create("svm", seed=0).fit(X[:90], labels[:90],
                                                         groups=np.arange(90))):
        for row in X[90:95]:
            result = leave_out(fuser, row, columns, modality, fill=1 / 3)
            good, noise = (result["models"][name]["contribution"] for name in ("good", "noise"))
            assert good > noise
            assert result["modalities"]["scene"]["contribution"] == pytest.approx(good)
            assert result["prob"] == pytest.approx(max(result["probs"].values()))


@pytest.mark.parametrize("method", ["mean", "svm"])
def test_contributions_of_a_workspace_fusion(tmp_path, method):
    """Over a fitted fusion of the workspace: the informative model's drop is the larger, and
    a clip the random model did not score is marked missing."""
    from gemo.data.index import Clip, DatasetIndex
    from gemo.explain import contributions
    from gemo.fusion import fuse
    from gemo.scores import ONE_ENCODER, ScoreTable, save_scores
    from gemo.workspace import Workspace

    rng = np.random.default_rng(0)
    clips = [Clip(f"{v}_1", f"/data/{v}_1.mp4", split, int(rng.integers(3)), str(v))
             for v, split in enumerate(["train"] * 45 + ["val"] * 15)]
    ws = Workspace(tmp_path / "work")
    ws.save_index(DatasetIndex(str(tmp_path / "data"), "vgaf", clips))
    labels = np.array([clip.label for clip in clips])
    good = 0.3 * rng.dirichlet(np.ones(3), len(clips)) + 0.7 * np.eye(3)[labels]
    for name, probs, rows in (("scene-good", good, len(clips)),
                              ("audio-noise", rng.dirichlet(np.full(3, 5.0), len(clips)), -1)):
        kept = clips[:rows]
        save_scores(ws.scores_path(name), ScoreTable(
            name, np.array([c.id for c in kept]), np.array([c.split for c in kept]),
            probs[:rows], np.array([c.split == "train" for c in kept]), None,
            {"modality": name.split("-")[0], "embeddings": ONE_ENCODER}))
    fuse(workspace=ws, method=method, progress=False)
    for clip in clips[-5:]:
        result = contributions(workspace=ws, clip_id=clip.id, fusion=f"fusion-{method}")
        models = result["models"]
        assert models["scene-good"]["contribution"] > models["audio-noise"]["contribution"]
        assert result["modalities"]["scene"]["models"] == ["scene-good"]
        assert models["audio-noise"]["missing"] == (clip is clips[-1])


def test_cli_explains_a_video_file_with_a_saved_model(trained, tmp_path):
    from click.testing import CliRunner

    from gemo.cli import cli
    from gemo.data.synth import write_mp4
    from gemo.models.checkpoint import build_checkpoint, save_checkpoint
    from gemo.workspace import Workspace

    model, inputs = trained
    ws = Workspace(tmp_path / "work")
    save_checkpoint(ws.model_dir("scene-x", create=True) / "model.pt", build_checkpoint(
        model=model, inputs=inputs, name="scene-x", modality="scene", seed=0,
        features={"set": "frames", "params": {"count": 2, "size": 40}},
        hyperparameters={}, training={}))
    video = np.full((20, 48, 64, 3), 80, np.uint8)
    video[:, :15, :20] = 250
    write_mp4(tmp_path / "clip.mp4", frames=video, fps=10)
    runner = CliRunner()
    args = [str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "maps"), "--workdir", str(ws.root)]
    result = runner.invoke(cli, ["explain", *args, "--model", "scene-x", "--method", "scorecam"])
    assert result.exit_code == 0, result.output
    assert "predicts Positive" in result.output and "no fusion" in result.output
    assert (tmp_path / "maps" / "clip" / "frame-01-scorecam.png").is_file()
    result = runner.invoke(cli, ["explain", *args])  # no trained frame-cnn has scores here
    assert result.exit_code == 2 and "choose the scene model with --model" in result.output
