"""Model registry, the families, input pipelines and checkpoint round trips."""

import numpy as np
import pytest
import torch

from gemo import models
from gemo.errors import GemoError
from gemo.models.checkpoint import build_checkpoint, load_checkpoint, load_model, save_checkpoint
from gemo.models.classical import Classical
from gemo.models.inputs import IMAGENET_MEAN, inputs_for, is_finite


def _inputs(name):
    """A batch of model inputs for each family (small shapes)."""
    torch.manual_seed(0)
    return {
        "blstm-attention": (torch.randn(3, 20, 6), torch.tensor([20, 20, 20])),
        "cnn-blstm": (torch.randn(3, 23, 20), torch.tensor([23, 17, 23])),
        "face-lstm": (torch.randn(3, 10, 22), torch.tensor([10, 7, 10])),
        "mlp": (torch.randn(3, 12),),
        "svm": (torch.randn(3, 12),),
        "logreg": (torch.randn(3, 12),),
        "frame-cnn": (torch.randn(3, 4, 3, 32, 32),),
        "temporal-head": (torch.randn(3, 10, 16), torch.tensor([10, 6, 10])),
        "convlstm": (torch.randn(3, 5, 4, 3, 8), torch.tensor([5, 2, 5])),
        "frame-classifier": (torch.randn(3, 4, 3, 32, 32),),
        # faces: [clips, frames, faces, D] and the faces of each frame (a clip without any)
        **{family: (torch.randn(3, 2, 4, 8), torch.tensor([[4, 2], [0, 0], [1, 3]]))
           for family in ("fea", "feb", "nvpf", "tnvpf")},
        "cross-attention": (torch.randn(3, 10, 16), torch.tensor([10, 6, 10]),
                            torch.randn(3, 7, 5), torch.tensor([7, 7, 2])),
    }[name]


CONFIGS = {
    "blstm-attention": {"input_dim": 6},
    "cnn-blstm": {"input_dim": 20, "channels": 4, "wide_channels": 8, "hidden": 8},
    "mlp": {"input_dim": 12},
    "svm": {"input_dim": 12},
    "logreg": {"input_dim": 12},
    "face-lstm": {"input_dim": 22},
    "frame-cnn": {"input_dim": 3, "input_size": 32},
    "temporal-head": {"input_dim": 16, "pooling": "attention"},
    "convlstm": {"input_dim": 8},
    "frame-classifier": {"input_dim": 3, "input_size": 32},
    "fea": {"input_dim": 8},
    "feb": {"input_dim": 8},
    "nvpf": {"input_dim": 8, "units": 3},
    "tnvpf": {"input_dim": 8, "units": 3, "memory": 8},
    "cross-attention": {"input_dim": [16, 5], "width": 8, "heads": 2},
}


def _vectors(classes=(0, 1, 2), count=60, seed=0):
    """``(x float64 as float32 rounds it, y, groups)``: 12 features, the class in the first two."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, count)
    x = rng.normal(size=(count, 12))
    x[:, 0] += y
    x[:, 1] += y == 2
    return x.astype(np.float32).astype(np.float64), y, np.arange(count) // 2


def _create(name):
    """A model of family ``name``; a classical one fitted (it has no weights before)."""
    model = models.create(name, **CONFIGS[name])
    if isinstance(model, Classical):
        x, y, groups = _vectors()
        model.fit(x, y, groups=groups, sample_weight=None, seed=0)
    return model.eval()


def test_registry_lists_and_creates_every_family():
    assert models.available() == ["blstm-attention", "cnn-blstm", "convlstm", "cross-attention",
                                  "face-lstm", "fea", "feb", "frame-classifier", "frame-cnn",
                                  "logreg", "mlp", "nvpf", "svm", "temporal-head", "tnvpf"]
    for name in models.available():
        model = _create(name)
        x = _inputs(name)
        logits, embedding = model(*x), model.embed(*x)
        assert logits.shape == (3, 3)
        assert embedding.shape == (3, model.embedding_dim)
        assert model.config["input_dim"] == CONFIGS[name]["input_dim"]


def test_default_model_by_feature_set_and_by_shape():
    assert models.default_model("pyaudio") == "blstm-attention"
    assert models.default_model("compare-lld") == "blstm-attention"
    assert models.default_model("mel") == "cnn-blstm"
    assert models.default_model("egemaps") == "mlp"
    assert models.default_model("frames") == "frame-cnn"
    assert models.default_model("fer") == "face-lstm"
    assert models.default_model("embed-i3d") == "temporal-head"
    assert models.default_model("maps-resnet50") == "convlstm"
    assert models.default_model("new-set", ndim=2) == "blstm-attention"
    with pytest.raises(GemoError, match="--model NAME"):
        models.default_model("new-set", ndim=3)


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(GemoError, match="unknown model 'cnn'.*available"):
        models.create("cnn", input_dim=3)
    with pytest.raises(GemoError, match="unknown option.*hiden.*known: .*hidden"):
        models.create("mlp", input_dim=3, hiden=4)
    with pytest.raises(GemoError, match="backbone"):
        models.create("frame-cnn", input_dim=3, backbone="alexnet")
    with pytest.raises(GemoError, match="not a int"):
        models.create("mlp", input_dim=3, hidden="many")


def test_command_line_strings_are_coerced_to_the_defaults_types():
    model = models.create("frame-cnn", input_dim=3, input_size="48", freeze="true",
                          crop_scale="0.8", temporal="attention")
    assert model.options.input_size == 48
    assert model.options.freeze is True
    assert model.options.crop_scale == 0.8


def test_blstm_lengths_mask_padding():
    """A padded clip with its length gives what the unpadded clip gives."""
    model = models.create("blstm-attention", input_dim=6, pool=2).eval()
    torch.manual_seed(1)
    clip = torch.randn(1, 14, 6)
    padded = torch.cat([clip, torch.zeros(1, 6, 6)], dim=1)
    other = torch.randn(1, 20, 6)
    batch = torch.cat([padded, other])
    with torch.no_grad():
        alone = model.embed(clip)
        together = model.embed(batch, torch.tensor([14, 20]))
    torch.testing.assert_close(together[0:1], alone, rtol=1e-5, atol=1e-6)


def test_blstm_pool_shortens_the_sequence():
    model = models.create("blstm-attention", input_dim=6, pool=4).eval()
    seen = {}
    model.lstm.register_forward_hook(lambda module, args, out: seen.update(steps=out[0].shape[1]))
    model(torch.randn(2, 498, 6))
    assert seen["steps"] == 125  # ceil(498 / 4)


def test_cnn_blstm_keeps_time_and_halves_bands():
    """Three blocks halve the 63 bands (ceil) to 8 and the 498 frames twice, to 125 steps."""
    model = models.create("cnn-blstm", input_dim=63, channels=4, wide_channels=6, hidden=5).eval()
    seen = {}
    model.lstm.register_forward_hook(lambda module, args, out: seen.update(shape=out[0].shape))
    with torch.no_grad():
        logits, embedding = model(torch.randn(2, 498, 63)), model.embed(torch.randn(2, 498, 63))
    assert seen["shape"] == (2, 125, 2 * 5)
    assert model.lstm.input_size == 6 * 8
    assert logits.shape == (2, 3) and embedding.shape == (2, model.embedding_dim) == (2, 10)


def test_cnn_blstm_lengths_mask_padding():
    """A padded clip with its length gives what the unpadded clip gives, whatever the padding
    holds, including an odd length whose last pooling window crosses into the padding."""
    torch.manual_seed(2)
    model = models.create("cnn-blstm", input_dim=10, channels=4, wide_channels=6, hidden=8)
    for conv in model.modules():
        if isinstance(conv, torch.nn.Conv2d):  # convolved padding must not survive ReLU
            torch.nn.init.uniform_(conv.bias, 0.5, 1.0)
    model.eval()
    clip = torch.randn(1, 21, 10)
    padded = torch.cat([clip, torch.randn(1, 9, 10) + 3.0], dim=1)
    batch = torch.cat([padded, torch.randn(1, 30, 10)])
    with torch.no_grad():
        alone = model(clip)
        together = model(batch, torch.tensor([21, 30]))
    torch.testing.assert_close(together[0:1], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temporal", ["mean", "attention", "lstm"])
def test_frame_cnn_temporal_pooling(temporal):
    model = models.create("frame-cnn", input_dim=3, input_size=32, temporal=temporal).eval()
    x = torch.randn(2, 5, 3, 32, 32)
    assert model(x).shape == (2, 3)
    if temporal == "mean":  # mean pooling does not care about frame order
        torch.testing.assert_close(model.embed(x), model.embed(x.flip(1)), rtol=1e-5, atol=1e-5)


def test_frame_cnn_torchvision_backbone_and_freeze():
    model = models.create("frame-cnn", input_dim=3, backbone="resnet18", freeze=True, input_size=64)
    assert model.options.input_size == 64
    assert model.embedding_dim == 512
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not model.backbone.training  # frozen batch-norm statistics
    assert models.create("frame-cnn", input_dim=3, backbone="resnet18").options.input_size == 224


def test_small_backbone_has_no_pretrained_weights():
    with pytest.raises(GemoError, match="no pretrained weights"):
        models.create("frame-cnn", input_dim=3).load_pretrained()


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    for name in models.available():
        torch.manual_seed(3)
        model = _create(name)
        inputs = inputs_for(model)
        rng = np.random.default_rng(0)
        if name == "frame-cnn":
            inputs.fit([])
        elif name == "cross-attention":  # one sequence per set
            inputs.fit([tuple(rng.normal(size=(20, width)) for width in CONFIGS[name]["input_dim"])])
        else:
            width = CONFIGS[name]["input_dim"] + (model.input_kind == "faces")  # + frame index
            inputs.fit([rng.normal(size=(20, width))])
        checkpoint = build_checkpoint(
            model=model, inputs=inputs, name=f"test-{name}", modality="audio",
            features={"set": "x", "fingerprint": "abc", "feature_names": ["a"]},
            hyperparameters={"lr": 1e-3, "weights": None}, training={"best_epoch": 3}, seed=5)
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, checkpoint)
        raw = torch.load(path, map_location="cpu", weights_only=True)  # plain types + tensors only
        assert raw["architecture"] == name and raw["seed"] == 5
        assert raw["torch_version"] == torch.__version__
        loaded = load_model(path)
        assert not loaded.model.training
        x = _inputs(name)
        with torch.no_grad():
            assert torch.equal(model(*x), loaded.model(*x))
            assert torch.equal(model.embed(*x), loaded.model.embed(*x))
        torch.testing.assert_close(loaded.inputs.state(), inputs.state(), rtol=0, atol=0)


@pytest.mark.parametrize("classes", [(0, 1, 2), (0, 2)])
def test_classical_models_predict_what_scikit_learn_predicts(classes):
    """The torch arithmetic on the stored arrays is scikit-learn's predict_proba (a class
    absent from training gets probability 0), sample weights and all."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    from gemo.folds import grouped_folds

    x, y, groups = _vectors(classes, count=90, seed=1)
    weights = np.where(y == 0, 2.0, 1.0)
    for name in ("svm", "logreg"):
        model = models.create(name, input_dim=12)
        report = model.fit(x, y, groups=groups, sample_weight=weights, seed=0)
        params = dict(report["params"])
        if name == "svm":
            params["gamma"] = params.pop("gamma_value")
            reference = CalibratedClassifierCV(
                SVC(**params), method="sigmoid", ensemble=False,
                cv=grouped_folds(y, groups, n_splits=5, seed=0))
        else:
            reference = LogisticRegression(max_iter=model.max_iter, **params)
        reference.fit(x, y, sample_weight=weights)
        expected = np.zeros((len(y), 3))
        expected[:, reference.classes_] = reference.predict_proba(x)
        with torch.no_grad():
            probs = torch.softmax(model(torch.tensor(x, dtype=torch.float32)), dim=1)
        np.testing.assert_allclose(probs.numpy(), expected, atol=1e-9)
        assert report["scoring"] == "balanced_accuracy"
        assert len(report["candidates"]) == (12 if name == "svm" else 4)


def test_classical_options_are_checked():
    with pytest.raises(GemoError, match="C: '0.1,x' is not a comma-separated list"):
        models.create("svm", input_dim=3, C="0.1,x")
    with pytest.raises(GemoError, match="gamma: '-1' is not"):
        models.create("svm", input_dim=3, gamma="-1")
    with pytest.raises(GemoError, match="cv must be at least 2"):
        models.create("logreg", input_dim=3, cv=1)
    with pytest.raises(GemoError, match="model svm is not fitted"):
        models.create("svm", input_dim=3)(torch.zeros(1, 3))


def test_load_refuses_what_is_not_a_gemo_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(GemoError, match="not a gemo model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(GemoError, match="no model checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_sequence_inputs_standardise_and_zero_fill_nan():
    model = models.create("blstm-attention", input_dim=2)
    rng = np.random.default_rng(0)
    train = [rng.normal([5.0, -3.0], [2.0, 0.5], size=(50, 2)).astype(np.float32) for _ in range(8)]
    inputs = inputs_for(model).fit(train)
    torch.testing.assert_close(inputs.mean, torch.tensor([5.0, -3.0]), atol=0.3, rtol=0)
    clip = np.array([[5.0, np.nan], [np.inf, -3.0], [7.0, -2.5]], np.float32)
    x, lengths = inputs.tensors([clip, clip[:2]])
    assert x.shape == (2, 3, 2) and lengths.tolist() == [3, 2]
    assert torch.isfinite(x).all()
    assert x[0, 0, 1] == 0 and x[0, 1, 0] == 0  # non-finite -> the training mean
    assert x[1, 2].abs().sum() == 0  # padding
    assert not is_finite(clip) and is_finite(train[0])


def test_vector_inputs_constant_feature_does_not_divide_by_zero():
    model = models.create("mlp", input_dim=2)
    inputs = inputs_for(model).fit([np.array([1.0, 4.0]), np.array([3.0, 4.0])])
    (x,) = inputs.tensors([np.array([2.0, 4.0], np.float32)])
    assert torch.equal(x, torch.zeros(1, 2))


def test_frame_inputs_resize_normalise_and_augment_deterministically():
    model = models.create("frame-cnn", input_dim=3, input_size=32, train_frames=2)
    inputs = inputs_for(model).fit([])
    frames = [np.full((4, 48, 48, 3), value, np.uint8) for value in (0, 255)]
    (stored,) = inputs.tensors(frames, train=True)
    assert stored.dtype == torch.uint8 and stored.shape == (2, 4, 3, 37, 37)  # 8/7 of 32
    (evaluated,) = inputs.tensors(frames)
    assert evaluated.shape == (2, 4, 3, 32, 32)
    (x,) = inputs.batch((evaluated,))
    expected = (0 - IMAGENET_MEAN[0]) / 0.229
    assert x.shape == (2, 4, 3, 32, 32) and abs(float(x[0, 0, 0, 0, 0]) - expected) < 1e-5
    a = inputs.batch((stored,), train=True, generator=torch.Generator().manual_seed(1))[0]
    b = inputs.batch((stored,), train=True, generator=torch.Generator().manual_seed(1))[0]
    assert a.shape == (2, 2, 3, 32, 32)  # train_frames of the 4 frames, cropped to input_size
    assert torch.equal(a, b)


def test_inputs_refuse_a_feature_set_of_the_wrong_shape():
    inputs = inputs_for(models.create("mlp", input_dim=34))
    with pytest.raises(GemoError, match="expects 1 dimensions"):
        inputs.check("c1", {"features": np.zeros((498, 34))}, "pyaudio")
    with pytest.raises(GemoError, match="no 'features' array"):
        inputs.check("c1", {"frames": np.zeros((2, 8, 8, 3))}, "frames")


def test_a_registered_backbone_is_a_frame_cnn_choice(enter):
    from torch import nn

    from gemo.models import backbones

    class Tiny(backbones.Backbone):
        name = "tiny-test"
        input_size = 32

        def build(self, *, channels, width, spatial):
            return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4

    enter(backbones.BACKBONES.registered(Tiny))
    model = models.create("frame-cnn", input_dim=3, backbone="tiny-test").eval()
    assert model.config["input_size"] == 32  # the backbone's own size
    assert model(torch.zeros(2, 3, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(GemoError, match="tiny-test has no pretrained weights|'tiny-test' has no"):
        model.pretrained_state()


# --- the papers' scene recipes: Fusical's convlstm, Petrova's frame-classifier -----------------


def _reference_convlstm_state(model, x, head):
    """One head's last hidden state, step by step from its own slice of the weights, as a
    plain ConvLSTM (Keras' gate order i, f, c, o), for an unpadded clip ``[1, T, h, w, C]``."""
    from torch.nn import functional as F

    o = model.options
    gates = slice(head * 4 * o.filters, (head + 1) * 4 * o.filters)
    w_x, b_x = model.input_conv.weight[gates], model.input_conv.bias[gates]
    w_h = model.state_conv.weight[gates]  # the grouped conv: this head's filters only
    h = torch.zeros(1, o.filters, *x.shape[2:4])
    c = torch.zeros_like(h)
    for step in range(x.shape[1]):
        frame = x[:, step].permute(0, 3, 1, 2)
        z = F.conv2d(frame, w_x, b_x, padding=1) + F.conv2d(h, w_h, padding=1)
        i, f, g, out = z.split(o.filters, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(out) * torch.tanh(c)
    return h


def test_convlstm_heads_are_independent_convlstms_over_the_frames():
    torch.manual_seed(0)
    model = models.create("convlstm", input_dim=6, heads=3, filters=4).eval()
    assert model.input_conv.bias.view(3, 4, 4)[:, 1].eq(1).all()  # forget gate starts open
    x = torch.randn(1, 5, 3, 4, 6)
    with torch.no_grad():
        states = model.states(x)
        assert states.shape == (1, 3, 4, 3, 4)
        for head in range(3):
            expected = _reference_convlstm_state(model, x, head)[0]
            torch.testing.assert_close(states[0, head], expected)
        torch.testing.assert_close(model.embed(x), states.mean(dim=(3, 4)).flatten(1))
        # The order of the frames counts: a ConvLSTM is not a pooling over time.
        assert not torch.allclose(model.embed(x), model.embed(x.flip(1)))


def test_convlstm_ignores_padded_frames():
    torch.manual_seed(0)
    model = models.create("convlstm", input_dim=5, heads=2, filters=3).eval()
    clip = torch.randn(1, 3, 4, 4, 5)
    padded = torch.cat([clip, 50 * torch.randn(1, 4, 4, 4, 5)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 7, 4, 4, 5)])
    with torch.no_grad():
        out = model(batch, torch.tensor([3, 7]))
        torch.testing.assert_close(out[:1], model(clip))
    assert out.shape == (2, 3) and model.embedding_dim == 6
    with pytest.raises(GemoError, match="kernel 2 must be odd"):
        models.create("convlstm", input_dim=5, kernel=2)


def _fit(model, arrays, labels, *, epochs, lr, batch_size=8):
    """``model`` fitted by gemo's loop on ``arrays`` (its input kind's); the hold-out accuracy."""
    from gemo.training.loop import fit_model
    from gemo.training.recipe import Recipe

    inputs = inputs_for(model).fit(arrays)
    data = (*inputs.tensors(arrays, train=True), torch.tensor(labels))
    held = (*inputs.tensors(arrays), torch.tensor(labels))
    recipe = Recipe(epochs=epochs, lr=lr, patience=epochs, batch_size=batch_size)
    history, best = fit_model(model, inputs, data, held, recipe=recipe, seed=0)
    return history, best


def test_convlstm_learns_where_and_when_a_pattern_appears():
    """Class 0: a bright channel-0 spot at the top left in the first frame; class 1: the same
    spot in the last frame; class 2: at the bottom right. Neither the mean over time nor the
    mean over the map alone tells all three apart."""
    rng = np.random.default_rng(0)
    arrays, labels = [], []
    for index in range(36):
        label = index % 3
        maps = rng.normal(0, 0.3, (4, 3, 3, 6)).astype(np.float32)
        frame, row = (0, 0) if label == 0 else (3, 0) if label == 1 else (0, 2)
        maps[frame, row, row, 0] += 3.0
        arrays.append(maps)
        labels.append(label)
    torch.manual_seed(0)
    model = models.create("convlstm", input_dim=6, heads=2, filters=4)
    history, best = _fit(model, arrays, labels, epochs=20, lr=0.02)
    assert best["accuracy"] == 1.0 and best["loss"] < 0.05 * history["holdout_loss"][0]


def test_frame_classifier_averages_the_frames_softmax_and_votes():
    torch.manual_seed(0)
    model = models.create("frame-classifier", input_dim=3, input_size=32).eval()
    x = torch.randn(2, 5, 3, 32, 32)
    # A linear backbone: random frames then get scores as different as a trained model's.
    model.backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 256))
    with torch.no_grad():
        # Each frame scored alone: the softmax of its own logits.
        single = torch.stack([torch.softmax(model(x[:, k:k + 1]), 1) for k in range(5)], 1)
        logits = model(x)
        frames = model._frames
        torch.testing.assert_close(torch.softmax(frames, -1), single)
        torch.testing.assert_close(torch.softmax(logits, 1), single.mean(dim=1))
        embedding = model.embed(x)
        assert embedding.shape == (2, 512 + 3) and model.embedding_dim == 515
        torch.testing.assert_close(embedding[:, 512:], single.mean(dim=1))
        # The loss: every frame against its clip's label, not the clip's averaged score.
        labels = torch.tensor([0, 2])
        loss = model.loss(logits, labels)
        expected = torch.nn.functional.cross_entropy(frames.flatten(0, 1),
                                                     labels.repeat_interleave(5))
        torch.testing.assert_close(loss, expected)
        assert not torch.isclose(loss, torch.nn.functional.cross_entropy(logits, labels))
    # Votes: the share of frames whose top class each class is, ties broken by the softmax.
    voting = models.create("frame-classifier", input_dim=3, input_size=32, clip_score="vote")
    voting.backbone = model.backbone
    voting.load_state_dict(model.state_dict())
    with torch.no_grad():
        votes = torch.nn.functional.one_hot(single.argmax(-1), 3).sum(1).float()
        expected = (votes + single.mean(dim=1)) / 6
        torch.testing.assert_close(torch.softmax(voting.eval()(x), dim=1), expected)
        assert torch.equal(voting(x).argmax(1), (votes + 0.5 * single.mean(1)).argmax(1))
        assert votes.max() < 5  # the frames disagree: the vote is not trivially the mean's


def test_frame_classifier_options_are_checked():
    model = models.create("frame-classifier", input_dim=3)
    assert model.options.train_frames == 1 and model.options.rotate == 10.0
    assert model.options.input_size == 80
    assert len(model.hidden) == 6  # 2 x (Linear, ReLU, Dropout), then Linear -> 3
    assert models.create("frame-classifier", input_dim=3, layers=0).embedding_dim == 256 + 3
    with pytest.raises(GemoError, match="i3d reads whole clips"):
        models.create("frame-classifier", input_dim=3, backbone="i3d")
    with pytest.raises(GemoError, match="rotate 200.0"):
        models.create("frame-classifier", input_dim=3, rotate=200)
    with pytest.raises(GemoError, match="clip_score"):
        models.create("frame-classifier", input_dim=3, clip_score="sum")


def test_frame_classifier_learns_single_frames():
    """Each clip: frames of its class's colour (red, green, blue) plus noise; trained on one
    random frame per clip and step, scored on all frames."""
    rng = np.random.default_rng(0)
    arrays, labels = [], []
    for index in range(24):
        label = index % 3
        frames = rng.integers(0, 80, (4, 40, 40, 3)).astype(np.uint8)
        frames[..., label] += 150
        arrays.append(frames)
        labels.append(label)
    torch.manual_seed(0)
    model = models.create("frame-classifier", input_dim=3, input_size=32, hidden=16, width=4)
    history, best = _fit(model, arrays, labels, epochs=20, lr=0.01)
    assert history["holdout_acc"][0] < 0.5 and best["accuracy"] == 1.0
    assert best["loss"] < 0.25 * history["holdout_loss"][0]


def test_rotation_turns_frames_counter_clockwise_about_the_centre():
    from gemo.models.inputs import _rotate

    frames = torch.zeros(2, 3, 9, 9, dtype=torch.uint8)
    frames[:, :, 4, 7] = 200  # right of the centre
    turned = _rotate(frames, 90.0)
    assert turned.dtype == torch.uint8 and turned.shape == frames.shape
    assert turned[0, 0, 1, 4] == 200 and turned[1, 2, 1, 4] == 200  # above it
    assert int(turned.sum()) == int(frames.sum())
    assert torch.equal(_rotate(frames, 0.0), frames)
    # In training: one angle within +-rotate per clip, drawn before the crop, all frames alike.
    from gemo.models.inputs import _random_resized_crop

    model = models.create("frame-cnn", input_dim=3, input_size=32, rotate=30, crop_scale=0.8,
                          flip=False, train_frames=0)
    inputs = inputs_for(model).fit([])
    rng = np.random.default_rng(0)
    (stored,) = inputs.tensors([rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)])
    out = inputs._augment(stored, torch.Generator().manual_seed(1))
    draws = torch.Generator().manual_seed(1)
    angle = 30 * (2 * float(torch.rand((), generator=draws)) - 1)
    expected = _random_resized_crop(_rotate(stored[0], angle), 32, 0.8, draws)
    assert torch.equal(out[0], expected) and abs(angle) > 10
