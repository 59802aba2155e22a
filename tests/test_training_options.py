"""The loop's options (optimizer, weight decay, label smoothing, schedule, backbone learning
rate, freezing, mixed precision) and the full-train protocol: each changes what it should, is
refused where it cannot apply, and is recorded so that a model is not silently replaced."""

import io
import json
import math
import shlex

import pytest
import torch
from rich.console import Console
from torch import nn

from gemo import fusion, models
from gemo.errors import GemoError
from gemo.evaluation import evaluate
from gemo.scores import load_scores
from gemo.training import Recipe, fit_model, train
from gemo.training import loop
from gemo.training.loop import _seed_everything, make_optimizer

from test_training import FAST, make_workspace

QUICK = {"progress": False, "device": "cpu", "folds": 0, "epochs": 3, "patience": 3}


class Raw:
    """An input pipeline that hands the tensors over as they are."""

    @staticmethod
    def batch(tensors, train=False, generator=None):
        return tensors


class WithBackbone(nn.Module):
    """A backbone (with batch norm) and a head, as frame-cnn has them."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def _step(recipe, weight, grad):
    """One optimizer step of ``recipe`` on a single weight with a given gradient."""
    parameter = nn.Parameter(weight.clone())
    holder = nn.Module()
    holder.w = parameter
    optimizer = make_optimizer(holder, recipe)
    parameter.grad = grad.clone()
    optimizer.step()
    return parameter.detach()


def test_sgd_moves_the_weights_otherwise_than_adam_in_one_step():
    weight, grad = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, -0.01, 2.0])
    lr = 0.1
    adam = _step(Recipe(lr=lr), weight, grad)
    sgd = _step(Recipe(lr=lr, optimizer="sgd"), weight, grad)
    nesterov = _step(Recipe(lr=lr, optimizer="sgd", nesterov=True, momentum=0.5), weight, grad)
    # Adam's first step is lr in the gradient's sign whatever its size; sgd's is lr x gradient
    # (the momentum buffer starts at the gradient); Nesterov adds momentum x buffer once more.
    torch.testing.assert_close(adam, weight - lr * grad.sign(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sgd, weight - lr * grad)
    torch.testing.assert_close(nesterov, weight - lr * 1.5 * grad)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_weight_decay_shrinks_weights_with_zero_gradient(optimizer):
    weight, zero = torch.tensor([1.0, -2.0, 3.0]), torch.zeros(3)
    kept = _step(Recipe(lr=0.1, optimizer=optimizer), weight, zero)
    shrunk = _step(Recipe(lr=0.1, optimizer=optimizer, weight_decay=0.5), weight, zero)
    torch.testing.assert_close(kept, weight)
    assert (shrunk.abs() < weight.abs()).all() and (shrunk.sign() == weight.sign()).all()
    if optimizer != "adam":  # decoupled (adamw) and sgd's L2 both give w (1 - lr wd) here
        torch.testing.assert_close(shrunk, weight * (1 - 0.1 * 0.5))


def test_label_smoothing_is_the_loss_of_training_and_hold_out():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0]])
    labels = torch.tensor([0, 2, 2, 1])
    eps = 0.2
    log_p = torch.log_softmax(logits, dim=1)
    by_hand = float((-(1 - eps) * log_p[range(4), labels] - eps / 3 * log_p.sum(1)).mean())
    plain = float(-log_p[range(4), labels].mean())
    model = nn.Linear(3, 3)
    with torch.no_grad():  # the identity: the model's logits are the batch
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    recipe = Recipe(epochs=1, lr=1e-12, batch_size=4, label_smoothing=eps)
    history, _ = fit_model(model, Raw(), (logits, labels), (logits, labels), recipe=recipe, seed=0)
    assert history["train_loss"][0] == pytest.approx(by_hand, abs=1e-6)
    assert history["holdout_loss"][0] == pytest.approx(by_hand, abs=1e-6)
    assert abs(by_hand - plain) > 0.1


@pytest.mark.parametrize("schedule, expected", [
    ("none", [1.0] * 6),
    ("cosine", [0.5 * (1 + math.cos(math.pi * e / 6)) for e in range(6)]),
    ("step", [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]),
])
def test_the_schedule_sets_the_learning_rate_of_every_epoch(schedule, expected):
    step = {"step_every": 2, "step_factor": 0.5} if schedule == "step" else {}
    recipe = Recipe(epochs=6, patience=100, lr=0.01, batch_size=8, schedule=schedule, **step)
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    history, _ = fit_model(nn.Linear(4, 3), Raw(), (x, y), (x, y), recipe=recipe, seed=0)
    assert history["lr"] == pytest.approx([0.01 * f for f in expected])
    if schedule == "cosine":  # the same learning rates as torch's own cosine schedule
        optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.01)
        torch_lr = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)
        rates = []
        for _ in range(6):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            torch_lr.step()
        assert history["lr"] == pytest.approx(rates)


def test_backbone_lr_scale_gives_the_backbone_a_param_group_of_its_own(monkeypatch):
    model = models.create("frame-cnn", input_dim=3, input_size=32)
    scaled = make_optimizer(model, Recipe(lr=0.01, backbone_lr_scale=0.1))
    assert [g["lr"] for g in scaled.param_groups] == pytest.approx([0.01, 0.001])
    assert {id(p) for p in scaled.param_groups[1]["params"]} == {
        id(p) for p in model.backbone.parameters()}
    assert len(scaled.param_groups[0]["params"]) + len(scaled.param_groups[1]["params"]) == len(
        list(model.parameters()))
    assert len(make_optimizer(model, Recipe(lr=0.01)).param_groups) == 1
    # The loop keeps the scale through the schedule.
    made = []
    monkeypatch.setattr(loop, "make_optimizer",
                        lambda *args: made.append(make_optimizer(*args)) or made[-1])
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    recipe = Recipe(epochs=2, patience=5, lr=0.01, batch_size=8, backbone_lr_scale=0.1,
                    schedule="cosine")
    history, _ = fit_model(WithBackbone(), Raw(), (x, y), (x, y), recipe=recipe, seed=0)
    assert [g["lr"] for g in made[0].param_groups] == pytest.approx([0.005, 0.0005])
    assert history["lr"] == pytest.approx([0.01, 0.005])


def test_backbone_options_are_refused_by_a_model_without_a_backbone(tmp_path):
    workspace = make_workspace(tmp_path)
    base = {"workspace": workspace, "modality": "audio", "features": "pyaudio", **QUICK}
    with pytest.raises(GemoError, match="no backbone whose learning rate to scale"):
        train(**base, backbone_lr_scale=0.1)
    with pytest.raises(GemoError, match="blstm-attention has no backbone to freeze"):
        train(**base, freeze_backbone=True)
    with pytest.raises(GemoError, match="momentum and nesterov are sgd's"):
        train(**base, nesterov=True)
    with pytest.raises(GemoError, match="step_every and step_factor are the step schedule's"):
        train(**base, step_every=5)
    assert not workspace.model_dir("audio-pyaudio-blstm-attention").exists()


def test_a_frozen_backbone_is_unchanged_by_training(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("frames",))
    summary = train(workspace=workspace, modality="scene", features="frames", input_size=32,
                    freeze_backbone=True, **{**QUICK, "lr": 0.05})
    loaded = models.load_model(workspace.model_dir(summary["name"]) / "model.pt")
    _seed_everything(0)  # the final model's seed: its initial weights
    initial = models.create("frame-cnn", **loaded.checkpoint["config"]).state_dict()
    trained = loaded.model.state_dict()
    backbone = [key for key in initial if key.startswith("backbone.")]
    assert any("running_mean" in key for key in backbone)  # batch-norm statistics kept too
    for key in backbone:
        torch.testing.assert_close(trained[key], initial[key], rtol=0, atol=0)
    assert not torch.equal(trained["head.1.weight"], initial["head.1.weight"])
    with pytest.raises(GemoError, match="frozen, so it has no learning rate to scale"):
        train(workspace=workspace, modality="scene", features="frames", input_size=32,
              freeze_backbone=True, backbone_lr_scale=0.1, overwrite=True, **QUICK)
    config = json.loads((workspace.model_dir(summary["name"]) / "config.json").read_text())
    assert config["request"]["options"]["freeze"] is True
    assert "--freeze-backbone" in config["command"] and "freeze=" not in config["command"]


def test_amp_is_refused_on_a_cpu_in_one_line(tmp_path):
    workspace = make_workspace(tmp_path)
    with pytest.raises(GemoError) as error:
        train(workspace=workspace, modality="audio", features="pyaudio", amp=True, **QUICK)
    assert "--amp is mixed precision on a CUDA GPU and this run is on cpu" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_mixed_precision_path_trains(monkeypatch, dtype):
    """The CUDA path (autocast, and a GradScaler for float16) run on the CPU's autocast."""
    monkeypatch.setattr(loop, "amp_dtype", lambda device: dtype)
    scalers = []
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler",
                        lambda *args, **kw: scalers.append(real(*args, **kw)) or scalers[-1])
    x, y = torch.randn(24, 4), torch.arange(24) % 3
    x[:, 0] += 3 * (y - 1)
    recipe = Recipe(epochs=30, patience=30, lr=0.05, batch_size=8, amp=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    computed = set()
    model[2].register_forward_hook(lambda module, args, out: computed.add(out.dtype))
    history, best = fit_model(model, Raw(), (x, y), (x, y), recipe=recipe, seed=0)
    assert computed == {dtype, torch.float32}  # training in dtype, the hold-out in float32
    assert scalers[0].is_enabled() == (dtype == torch.float16)
    assert history["train_loss"][-1] < history["train_loss"][0] and best["accuracy"] > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_amp_on_cuda_is_recorded(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("frames",))
    summary = train(workspace=workspace, modality="scene", features="frames", input_size=32,
                    amp=True, **{**QUICK, "device": "cuda"})
    config = json.loads((workspace.model_dir(summary["name"]) / "config.json").read_text())
    assert config["hyperparameters"]["amp"] is True
    assert config["hyperparameters"]["amp_dtype"] in ("bfloat16", "float16")
    assert "--amp" in config["command"]


def test_loop_options_are_recorded_and_a_change_needs_overwrite(tmp_path):
    from click.testing import CliRunner

    from gemo.cli import cli

    workspace = make_workspace(tmp_path)
    options = {"optimizer": "sgd", "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3,
               "label_smoothing": 0.1, "schedule": "step", "step_every": 2, "step_factor": 0.5}
    base = {"workspace": workspace, "modality": "audio", "features": "pyaudio", **QUICK}
    summary = train(**base, **options)
    out = workspace.model_dir(summary["name"])
    config = json.loads((out / "config.json").read_text())
    raw = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    for key, value in options.items():
        assert config["request"]["recipe"][key] == value
        assert raw["hyperparameters"][key] == value
    command = config["command"]
    assert ("--optimizer sgd --momentum 0.8 --nesterov --weight-decay 0.001 --label-smoothing 0.1 "
            "--schedule step --step-every 2 --step-factor 0.5") in command
    with pytest.raises(GemoError, match=r"recipe\.optimizer 'sgd' -> 'adam'.*--overwrite"):
        train(**base)
    # The recorded command makes the same model again, so it is accepted as is.
    result = CliRunner().invoke(cli, shlex.split(command)[1:] + [
        "--workdir", str(workspace.root), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # The defaults leave the command as it was.
    default = train(**base, name="plain")
    plain = json.loads((workspace.model_dir(default["name"]) / "config.json").read_text())
    assert plain["command"].endswith("--class-weight none")


def test_a_classical_model_refuses_loop_options(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("egemaps",))
    with pytest.raises(GemoError, match="svm is fitted by its own grid search.*optimizer, "
                                        "label_smoothing"):
        train(workspace=workspace, modality="audio", features="egemaps", model="svm",
              optimizer="sgd", label_smoothing=0.1, **QUICK)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A train-only audio model and its full-train counterpart."""
    workspace = make_workspace(tmp_path_factory.mktemp("full"))
    common = {"workspace": workspace, "modality": "audio", "features": "pyaudio", "folds": 3,
              "schedule": "cosine", **FAST}
    reference = train(**common)
    return workspace, common, reference, train(**common, full_train=True)


def test_full_train_trains_on_train_and_val_for_the_best_epoch_count(full):
    workspace, _, reference, summary = full
    clips = workspace.load_index().clips
    n_train = sum(c.split == "train" and c.label is not None for c in clips)
    n_val = sum(c.split == "val" and c.label is not None for c in clips)
    assert summary["name"] == "audio-pyaudio-blstm-attention-full"
    assert summary["epochs_from"] == "best epoch of audio-pyaudio-blstm-attention"
    epochs = reference["best_epoch"]
    assert summary["best_epoch"] == summary["epochs_run"] == epochs
    assert summary["val_accuracy"] is None and summary["holdout_loss"] is None
    out = workspace.model_dir(summary["name"])
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["n_fit"] == n_train + n_val and config["training"]["n_holdout"] == 0
    assert config["hyperparameters"]["fixed_epochs"] == epochs
    assert config["request"]["full_train"] is True
    assert config["command"].endswith("--schedule cosine --full-train")
    assert "--name audio-pyaudio-blstm-attention " in config["command"]
    history = json.loads((out / "history.json").read_text())
    assert history["final"]["holdout_loss"] == [] and len(history["final"]["train_loss"]) == epochs
    # The schedule is the train-only run's, cut at the epoch count.
    before = json.loads((workspace.model_dir(reference["name"]) / "history.json").read_text())
    assert history["final"]["lr"] == before["final"]["lr"][:epochs]
    for fold in history["folds"]:  # fold models: train clips only, the same fixed count
        assert fold["epochs_run"] == epochs and fold["n_holdout"] == 0
        assert fold["n_fit"] < n_train
    assert (out / "curves.png").stat().st_size > 0


def test_full_train_val_rows_are_in_sample_and_not_reported_as_held_out(full):
    workspace, _, _, summary = full
    table = load_scores(workspace.scores_path(summary["name"]))
    assert table.attrs["fitted_on"] == ["train", "val"]
    assert not table.oof[table.splits == "val"].any() and table.oof[table.splits == "train"].any()
    console = Console(file=io.StringIO(), width=200)
    result = evaluate(workspace=workspace, split="val", progress=False, console=console)
    assert result["models"][summary["name"]]["fitted"] == "in-sample"
    assert result["models"]["audio-pyaudio-blstm-attention"]["fitted"] is None
    assert f"{summary['name']} (fitted)" in console.file.getvalue()
    # A fusion over it saw val through it: marked too; refitting the fusion on val is refused.
    fusion.fuse(workspace=workspace, method="mean", models=[summary["name"]], progress=False)
    result = evaluate(workspace=workspace, split="val", progress=False, console=console)
    assert result["models"]["fusion-mean"]["fitted"] == "in-sample"
    with pytest.raises(GemoError, match=r"in-sample scores .* for 12 val clip\(s\).*fuse "
                                        "without --full-train"):
        fusion.fuse(workspace=workspace, method="mean", models=[summary["name"]],
                    full_train=True, name="fusion-mean-full", progress=False)


def test_full_train_takes_the_epochs_only_from_a_run_with_the_same_options(full):
    workspace, common, _, _ = full
    with pytest.raises(GemoError, match=r"train-only model audio-pyaudio-blstm-attention, which "
                                        r"was trained with other options \(recipe\.lr 0\.005 -> "
                                        r"0\.01\)"):
        train(**{**common, "lr": 0.01}, full_train=True, overwrite=True)
    # No train-only run of that name: --epochs is the count.
    summary = train(**{**common, "epochs": 4, "folds": 0}, name="alone", full_train=True)
    assert summary["name"] == "alone-full" and summary["epochs_run"] == 4
    assert summary["epochs_from"] == "epochs"


def test_full_train_needs_val_labels(tmp_path):
    from dataclasses import replace

    from gemo.data.index import DatasetIndex

    workspace = make_workspace(tmp_path)
    index = workspace.load_index()
    clips = [replace(c, label=None) if c.split == "val" else c for c in index.clips]
    workspace.save_index(DatasetIndex(index.root, index.layout, clips))
    with pytest.raises(GemoError, match="--full-train trains on train\\+val, but no val clip has "
                                        "a label"):
        train(workspace=workspace, modality="audio", features="pyaudio", full_train=True,
              **QUICK)
