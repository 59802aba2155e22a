"""The training loop, cross-fitting, scores, checkpoints and refusals, on tiny planted caches.

Each cache is written directly with FeatureCache: a few dozen clips whose class
is planted in the features (a shifted feature for audio, a colour for frames),
grouped in source videos of two clips, plus a per-video nuisance offset.
"""

import inspect
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from gemo.cache.store import FeatureCache
from gemo.data.index import Clip, DatasetIndex
from gemo.errors import GemoError
from gemo.files import sha256_file
from gemo.folds import grouped_folds
from gemo.models import load_model
from gemo.scores import load_scores
from gemo.training import Recipe, assign_folds, crossfit, holdout_split, predict, train
from gemo.workspace import Workspace

AUDIO_PARAMS = {"sample_rate": 16000, "step": 0.01, "window": 0.025}
FAST = {"epochs": 40, "patience": 8, "lr": 5e-3, "progress": False, "device": "cpu"}


def _clips(per_class=(12, 4, 4), unlabelled=1):
    """Train/val/test clips, two per source video, and unlabelled train clips."""
    clips, video = [], 0
    for split, count in zip(("train", "val", "test"), per_class, strict=True):
        for label in range(3):
            for i in range(count):
                if i % 2 == 0:
                    video += 1
                clip_id = f"{video}_{i % 2 + 1}"
                clips.append(Clip(clip_id, f"/data/{clip_id}.mp4", split, label, str(video)))
    for _ in range(unlabelled):
        video += 1
        clips.append(Clip(f"{video}_1", f"/data/{video}_1.mp4", "train", None, str(video)))
    return clips


def _features(clip, kind, rng):
    label = 1 if clip.label is None else clip.label
    style = np.random.default_rng(int(clip.group)).normal(0, 0.5)  # shared by a video's clips
    if kind == "pyaudio":
        x = rng.normal(0, 1, (32, 6)).astype(np.float32)
        x[:, 0] += 1.2 * (label - 1)
        x[:, 1] += style
        return {"features": x}
    if kind == "mel":  # 40 frames of 16 bands; the class raises or lowers bands 4-7
        x = rng.normal(0, 1, (40, 16)).astype(np.float32)
        x[:, 4:8] += 1.2 * (label - 1)
        x += style
        return {"features": x}
    if kind == "egemaps":
        x = rng.normal(0, 1, 12).astype(np.float32)
        x[:3] += 3.0 * (label - 1)
        x[1] += style
        return {"features": x}
    frames = rng.integers(0, 60, (4, 40, 40, 3)).astype(np.float32) + 60 * (style + 1)
    frames[:, 10:30, 10:30, label] += 120  # a coloured square: red, green or blue by class
    return {"frames": np.clip(frames, 0, 255).astype(np.uint8),
            "timestamps": np.arange(4, dtype=np.float64)}


def write_cache(workspace, kind, clips, *, params=None, nan_ids=(), seed=0):
    rng = np.random.default_rng(seed)
    info = {"feature_names": [f"f{i}" for i in range(6)]} if kind == "pyaudio" else {}
    provenance = {"feature_set": kind, "extractor_version": 1,
                  "params": params or (AUDIO_PARAMS if kind == "pyaudio" else {}), "info": info}
    with FeatureCache(workspace.cache_path(kind), mode="a", provenance=provenance) as cache:
        for clip in clips:
            arrays = _features(clip, kind, rng)
            if clip.id in nan_ids:
                arrays["features"][3:5, 2] = np.nan  # a few bad windows, as pyAudioAnalysis gives
            cache.write(clip.id, arrays, fingerprint={"sha256": clip.id})


def make_workspace(root, kinds=("pyaudio",), **kwargs):
    workspace = Workspace(root)
    clips = _clips()
    workspace.save_index(DatasetIndex(str(root), "vgaf", clips))
    for kind in kinds:
        write_cache(workspace, kind, clips, **kwargs)
    return workspace


def _labels(workspace):
    return {c.id: c.label for c in workspace.load_index().clips}


def _accuracy(table, labels, split):
    rows = [i for i, s in enumerate(table.splits)
            if s == split and labels[table.ids[i]] is not None]
    truth = np.array([labels[table.ids[i]] for i in rows])
    return float((table.probs[rows].argmax(1) == truth).mean())


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """One audio model trained with 3-fold cross-fitting, shared by the read-only tests."""
    workspace = make_workspace(tmp_path_factory.mktemp("audio"))
    summary = train(workspace=workspace, modality="audio", features="pyaudio", folds=3, **FAST)
    return workspace, summary


def test_audio_model_learns_and_writes_every_output(audio):
    workspace, summary = audio
    out = workspace.model_dir("audio-pyaudio-blstm-attention")
    for name in ("model.pt", "config.json", "history.json", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert summary["model"] == "blstm-attention" and summary["device"] == "cpu"
    table = load_scores(workspace.scores_path("audio-pyaudio-blstm-attention"))
    labels = _labels(workspace)
    assert sorted(table.ids) == sorted(labels)  # every clip of every split
    assert table.embeddings.shape == (len(labels), 128)
    np.testing.assert_allclose(table.probs.sum(1), 1, rtol=1e-5)
    assert _accuracy(table, labels, "val") >= 0.75  # chance is 1/3
    assert _accuracy(table, labels, "test") >= 0.75
    assert _accuracy(table, labels, "train") >= 0.65  # out-of-fold: held-out data too
    assert table.attrs["features"] == "pyaudio" and table.attrs["folds"] == 3
    history = json.loads((out / "history.json").read_text())
    final = history["final"]
    assert len(final["train_loss"]) == len(final["holdout_acc"]) == final["epochs_run"]
    assert final["epochs_run"] <= FAST["epochs"] and 1 <= final["best_epoch"] <= final["epochs_run"]
    assert len(history["folds"]) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"]["batch_size"] == 128  # the family's default
    assert config["features"]["feature_names"] == [f"f{i}" for i in range(6)]


def test_train_rows_are_out_of_fold_and_the_rest_from_the_final_model(audio):
    workspace, _ = audio
    table = load_scores(workspace.scores_path("audio-pyaudio-blstm-attention"))
    clips = workspace.load_index().by_id()
    for clip_id, split, oof in zip(table.ids, table.splits, table.oof, strict=True):
        labelled_train = split == "train" and clips[clip_id].label is not None
        assert oof == labelled_train, clip_id


def test_folds_keep_source_videos_together(audio):
    workspace, _ = audio
    folds = json.loads((workspace.model_dir("audio-pyaudio-blstm-attention") / "config.json").read_text())["folds"]
    clips = workspace.load_index().by_id()
    by_group = {}
    for clip_id, fold in folds.items():
        by_group.setdefault(clips[clip_id].group, set()).add(fold)
    assert all(len(f) == 1 for f in by_group.values())
    assert sorted(set(folds.values())) == [0, 1, 2]
    labelled = {c.id for c in clips.values() if c.split == "train" and c.label is not None}
    assert set(folds) == labelled


def test_checkpoint_is_self_describing_and_predict_matches_training(audio):
    workspace, _ = audio
    path = workspace.model_dir("audio-pyaudio-blstm-attention") / "model.pt"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    with FeatureCache(workspace.cache_path("pyaudio")) as cache:
        assert raw["features"]["fingerprint"] == cache.fingerprint()
    assert raw["architecture"] == "blstm-attention" and raw["config"]["input_dim"] == 6
    assert raw["classes"] == ["Positive", "Neutral", "Negative"]
    assert raw["hyperparameters"]["epochs"] == 40 and raw["seed"] == 0
    assert set(raw["standardization"]) == {"mean", "std"}
    assert raw["features"]["params"] == AUDIO_PARAMS
    loaded = load_model(path)
    assert loaded.name == "audio-pyaudio-blstm-attention"

    trained = load_scores(workspace.scores_path("audio-pyaudio-blstm-attention"))
    again = predict(workspace=workspace, name="audio-pyaudio-blstm-attention", device="cpu")
    final_rows = ~trained.oof
    assert list(again.ids) == list(trained.ids)
    np.testing.assert_allclose(again.probs[final_rows], trained.probs[final_rows], atol=1e-6)
    np.testing.assert_allclose(again.embeddings[final_rows], trained.embeddings[final_rows],
                               atol=1e-5)
    some = predict(workspace=workspace, name="audio-pyaudio-blstm-attention", ids=["1_1", trained.ids[-1]])
    assert list(some.ids) == ["1_1", trained.ids[-1]]
    with pytest.raises(GemoError, match="not in the pyaudio cache"):
        predict(workspace=workspace, name="audio-pyaudio-blstm-attention", ids=["nope"])


def test_predict_refuses_a_cache_with_other_features(audio, tmp_path):
    source, _ = audio
    shutil.copytree(source.root, tmp_path / "ws")
    workspace = Workspace(tmp_path / "ws")
    workspace.cache_path("pyaudio").unlink()
    write_cache(workspace, "pyaudio", workspace.load_index().clips,
                params={**AUDIO_PARAMS, "window": 0.05})
    with pytest.raises(GemoError) as error:
        predict(workspace=workspace, name="audio-pyaudio-blstm-attention")
    message = str(error.value)
    assert "trained on other pyaudio features" in message
    assert "window: model 0.025, cache 0.05" in message


def test_same_seed_gives_identical_probabilities(tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        workspace = make_workspace(tmp_path / name)
        train(workspace=workspace, modality="audio", features="pyaudio", folds=2, seed=seed,
              epochs=6, patience=3, progress=False, device="cpu")
        runs.append(load_scores(workspace.scores_path("audio-pyaudio-blstm-attention")))
    assert np.array_equal(runs[0].probs, runs[1].probs)
    assert np.array_equal(runs[0].embeddings, runs[1].embeddings)
    assert not np.array_equal(runs[0].probs, runs[2].probs)


def test_fold_models_never_see_their_own_rows(tmp_path, monkeypatch):
    """Record what each model is trained on and what it scores (independent of the model)."""
    calls = []
    fit, score = crossfit.Runner.fit, crossfit.Runner.score

    def recording_fit(self, clips, **kwargs):
        calls.append(("fit", {c.id for c in clips}))
        return fit(self, clips, **kwargs)

    def recording_score(self, result, ids, *, oof):
        calls.append(("score", set(ids), oof))
        return score(self, result, ids, oof=oof)

    monkeypatch.setattr(crossfit.Runner, "fit", recording_fit)
    monkeypatch.setattr(crossfit.Runner, "score", recording_score)
    workspace = make_workspace(tmp_path, nan_ids={"2_1"})
    train(workspace=workspace, modality="audio", features="pyaudio", folds=3, epochs=3,
          patience=2, progress=False, device="cpu")
    assert [c[0] for c in calls] == ["fit", "score"] * 4
    clips = workspace.load_index().clips
    labelled = {c.id for c in clips if c.split == "train" and c.label is not None}
    group = {c.id: c.group for c in clips}
    held_out = set()
    for (_, seen), (_, scored, oof) in zip(calls[0:6:2], calls[1:6:2], strict=True):
        assert oof and not seen & scored
        assert not {group[i] for i in seen} & {group[i] for i in scored}  # no shared video
        held_out |= scored
    assert held_out == labelled  # every labelled train clip scored once, out of fold
    final_seen, (_, final_scored, final_oof) = calls[6][1], calls[7]
    assert final_seen == labelled - {"2_1"} and not final_oof
    # The final model scores every clip: its embeddings for all rows, its probabilities
    # for the rows no fold model held out.
    assert final_scored == {c.id for c in clips}
    assert all("2_1" not in seen for kind, seen, *_ in calls if kind == "fit")
    table = load_scores(workspace.scores_path("audio-pyaudio-blstm-attention"))
    assert {i for i, oof in zip(table.ids, table.oof) if oof} == labelled


def test_nonfinite_clips_are_left_out_of_training_and_zero_filled_when_scored(tmp_path):
    nan_ids = {"1_1", "3_2", "val_clip"}
    workspace = make_workspace(tmp_path, nan_ids=nan_ids | {"19_1"})  # 19_1 is a val clip
    summary = train(workspace=workspace, modality="audio", features="pyaudio", folds=2,
                    epochs=3, patience=2, progress=False, device="cpu")
    assert summary["n_dropped_nonfinite"] == 2
    config = json.loads((workspace.model_dir("audio-pyaudio-blstm-attention") / "config.json").read_text())
    assert config["training"]["dropped_nonfinite"] == ["1_1", "3_2"]
    assert config["training"]["n_used"] == config["training"]["n_train_clips"] - 2
    table = load_scores(workspace.scores_path("audio-pyaudio-blstm-attention"))
    rows = {clip_id: i for i, clip_id in enumerate(table.ids)}
    assert workspace.load_index().by_id()["19_1"].split == "val"
    for clip_id in ("1_1", "3_2", "19_1"):
        assert np.isfinite(table.probs[rows[clip_id]]).all()
        assert np.isfinite(table.embeddings[rows[clip_id]]).all()
    assert table.oof[rows["1_1"]] and not table.oof[rows["19_1"]]


def test_scene_frames_model_learns(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("frames",))
    summary = train(workspace=workspace, modality="scene", features="frames", folds=2,
                    input_size=32, epochs=15, patience=5, lr=3e-3, progress=False, device="cpu")
    assert summary["model"] == "frame-cnn"
    table = load_scores(workspace.scores_path("scene-frames-frame-cnn"))
    labels = _labels(workspace)
    assert _accuracy(table, labels, "val") >= 0.7
    assert table.embeddings.shape[1] == 256  # avg + max pooled, 128 channels each
    config = json.loads((workspace.model_dir("scene-frames-frame-cnn") / "config.json").read_text())
    assert config["config"]["input_size"] == 32 and config["hyperparameters"]["batch_size"] == 16


@pytest.mark.parametrize("model", [None, "blstm-attention"])
def test_audio_mel_trains_its_default_cnn_blstm_and_the_attention_blstm(tmp_path, model):
    workspace = make_workspace(tmp_path, kinds=("mel",))
    summary = train(workspace=workspace, modality="audio", features="mel", model=model, folds=0,
                    **FAST)
    family = model or "cnn-blstm"
    assert summary["model"] == family
    table = load_scores(workspace.scores_path(f"audio-mel-{family}"))
    assert table.embeddings.shape[1] == 128  # 64 LSTM units per direction, both families
    assert _accuracy(table, _labels(workspace), "val") >= 0.75


def test_egemaps_functionals_use_the_mlp(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("egemaps",))
    summary = train(workspace=workspace, modality="audio", features="egemaps", folds=0,
                    **FAST)
    assert summary["model"] == "mlp" and summary["oof_accuracy"] is None
    table = load_scores(workspace.scores_path("audio-egemaps-mlp"))
    assert not table.oof.any() and table.attrs["train_rows"] == "in-sample (final model)"
    assert _accuracy(table, _labels(workspace), "val") >= 0.75


def test_pretrained_backbone_source_is_recorded(tmp_path, monkeypatch, enter):
    from torchvision.models import resnet18

    from gemo import pretrained

    file = tmp_path / "home" / "weights" / "resnet18-f37072fd.pth"
    file.parent.mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), file)
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "home"))
    enter(pretrained.registered(pretrained.WeightFile(
        "resnet18.imagenet1k_v1", file.name, sha256_file(file), "", None, "test"),
        replace=True))
    workspace = make_workspace(tmp_path / "ws", kinds=("frames",))
    train(workspace=workspace, modality="scene", features="frames", backbone="resnet18",
          pretrained=True, freeze=True, input_size=32, folds=0, epochs=1, patience=1,
          progress=False, device="cpu")
    raw = torch.load(workspace.model_dir("scene-frames-frame-cnn") / "model.pt", weights_only=True)
    assert raw["hyperparameters"]["pretrained"] is True
    assert raw["training"]["pretrained_source"]["file"] == str(file)
    assert raw["config"]["backbone"] == "resnet18" and raw["config"]["freeze"] is True


def test_pretrained_without_the_file_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    workspace = make_workspace(tmp_path / "ws", kinds=("frames",))
    with pytest.raises(GemoError, match="resnet18-f37072fd.pth"):
        train(workspace=workspace, modality="scene", features="frames", backbone="resnet18",
              pretrained=True, input_size=32, folds=0, epochs=1, progress=False, device="cpu")


def test_bad_requests_are_clear_errors(tmp_path):
    workspace = make_workspace(tmp_path)
    base = {"workspace": workspace, "features": "pyaudio", "progress": False, "device": "cpu"}
    with pytest.raises(GemoError, match="unknown modality 'video'"):
        train(modality="video", **base)
    with pytest.raises(GemoError, match="no backbone option"):
        train(modality="audio", backbone="resnet18", **base)
    with pytest.raises(GemoError, match="no pretrained weights"):
        train(modality="audio", pretrained=True, **base)
    with pytest.raises(GemoError, match="unknown option.*hiden"):
        train(modality="audio", hiden=3, **base)
    with pytest.raises(GemoError, match="needs at least 50 source videos"):
        train(modality="audio", folds=50, **base)
    with pytest.raises(GemoError, match="epochs must be positive"):
        train(modality="audio", epochs=0, **base)
    with pytest.raises(GemoError, match="lr must be positive, got 0$"):
        train(modality="audio", lr=0, **base)
    with pytest.raises(GemoError, match="batch_size must be positive, got -1"):
        train(modality="audio", batch_size=-1, **base)
    with pytest.raises(GemoError, match=r"egemaps feature set is not extracted.*--only egemaps"):
        train(modality="audio", **{**base, "features": "egemaps"})
    with pytest.raises(GemoError, match="unknown feature set 'pyaudo'; available: compare-lld"):
        train(modality="audio", **{**base, "features": "pyaudo"})
    with pytest.raises(GemoError, match="expects 1 dimensions"):
        train(modality="audio", model="mlp", **base)
    with pytest.raises(GemoError, match="pyaudio describes audio, not face"):
        train(modality="face", **base)
    if not torch.cuda.is_available():
        with pytest.raises(GemoError, match="no CUDA GPU"):
            train(modality="audio", **{**base, "device": "cuda"})


def test_holdout_and_folds_split_by_source_video():
    clips = [c for c in _clips(per_class=(14, 0, 0), unlabelled=0)]
    fit, held = holdout_split(clips, share=0.15, seed=0)
    assert not {c.group for c in fit} & {c.group for c in held}
    assert 0.08 <= len(held) / len(clips) <= 0.25
    assert len({c.label for c in held}) == 3  # stratified
    folds = assign_folds(clips, folds=5, seed=1)
    assert folds == assign_folds(clips, folds=5, seed=1)
    groups = {}
    for clip in clips:
        groups.setdefault(clip.group, set()).add(folds[clip.id])
    assert all(len(f) == 1 for f in groups.values())


def test_training_folds_are_the_shared_grouped_folds():
    """Training and fusion split by source video with one helper: the same folds for the same
    labels, groups and seed."""
    clips = _clips(per_class=(14, 0, 0), unlabelled=0)
    shared = grouped_folds([c.label for c in clips], [c.group for c in clips], n_splits=4, seed=3)
    expected = {clips[row].id: fold for fold, (_, held) in enumerate(shared) for row in held}
    assert assign_folds(clips, folds=4, seed=3) == expected


def test_recipe_states_the_defaults_and_loads_without_torch():
    """The command line can show train()'s defaults without loading torch."""
    code = "import sys, gemo.training.recipe; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True)
    assert loaded.stdout.strip() == "False"
    defaults = Recipe.defaults()
    assert defaults["epochs"] == 200 and defaults["batch_size"] is None
    parameters = inspect.signature(train).parameters
    given = {key: parameters[key].default for key in defaults if key in parameters}
    assert given == {key: value for key, value in defaults.items() if key != "holdout"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("pyaudio", "frames", "egemaps"))
    for name, options in (("audio-pyaudio-blstm-attention", {}), ("scene-frames-frame-cnn", {"input_size": 32}),
                          ("audio-egemaps-svm", {"model": "svm"})):
        modality, features = name.split("-")[:2]
        summary = train(workspace=workspace, modality=modality, features=features, folds=2,
                        **options, **{**FAST, "device": "auto"})
        assert summary["device"] == "cuda"
        trained = load_scores(workspace.scores_path(name))
        on_cpu = predict(workspace=workspace, name=name, device="cpu")
        np.testing.assert_allclose(on_cpu.probs[~trained.oof], trained.probs[~trained.oof],
                                   atol=1e-4)


def test_every_row_has_the_final_models_embedding(audio):
    """One encoder for every row, so a fusion on embeddings fits and predicts in one space."""
    workspace, _ = audio
    table = load_scores(workspace.scores_path("audio-pyaudio-blstm-attention"))
    final = predict(workspace=workspace, name="audio-pyaudio-blstm-attention", device="cpu")
    np.testing.assert_allclose(table.embeddings, final.select(table.ids).embeddings, atol=1e-5)
    assert table.oof.any() and not np.allclose(table.probs[table.oof],
                                               final.select(table.ids).probs[table.oof])


def test_a_model_is_not_replaced_by_one_trained_with_other_options_unless_asked(tmp_path):
    import shlex

    from click.testing import CliRunner

    from gemo.cli import cli

    workspace = make_workspace(tmp_path)
    quick = {**FAST, "epochs": 3, "folds": 0, "workspace": workspace, "modality": "audio",
             "features": "pyaudio"}
    first = train(**quick)
    assert first["name"] == "audio-pyaudio-blstm-attention"
    train(**quick)  # the same options again retrain in place
    with pytest.raises(GemoError, match=r"already exists.*recipe\.lr 0\.005 -> 0\.01.*--overwrite"):
        train(**{**quick, "lr": 0.01})
    kept = train(**{**quick, "lr": 0.01}, name="audio-pyaudio-fast")
    assert workspace.scores_path("audio-pyaudio-fast").exists()
    assert workspace.scores_path("audio-pyaudio-blstm-attention").exists()
    train(**{**quick, "lr": 0.01}, overwrite=True)
    config = json.loads((workspace.model_dir(first["name"]) / "config.json").read_text())
    assert config["hyperparameters"]["lr"] == 0.01
    # The recorded command makes the same model again, so it is accepted as is.
    words = shlex.split(json.loads((workspace.model_dir(kept["name"]) / "config.json")
                                   .read_text())["command"])
    result = CliRunner().invoke(cli, words[1:] + ["--workdir", str(workspace.root), "--quiet",
                                                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with pytest.raises(GemoError, match="kept for fusions"):
        train(**quick, name="fusion-mine")


def test_a_feature_set_of_another_modality_is_refused(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("frames",))
    with pytest.raises(GemoError, match="frames describes scene.*gemo train scene --features"):
        train(workspace=workspace, modality="audio", features="frames", progress=False)


def test_models_are_listed_and_removed_and_fusions_left_stale_say_so(tmp_path):
    from gemo import api, fusion

    workspace = make_workspace(tmp_path)
    quick = {**FAST, "epochs": 3, "folds": 3, "workspace": workspace, "modality": "audio",
             "features": "pyaudio"}
    train(**quick)
    train(**quick, name="audio-2", seed=1)
    fusion.fuse(workspace=workspace, method="mean", progress=False)
    rows = {row["name"]: row for row in api.trained(workspace=workspace)}
    assert set(rows) == {"audio-2", "audio-pyaudio-blstm-attention", "fusion-mean"}
    assert rows["fusion-mean"]["made_of"] == "mean of audio-2, audio-pyaudio-blstm-attention"
    assert rows["audio-2"]["command"].startswith("gemo train audio --features pyaudio")
    with pytest.raises(GemoError, match="no model or fusion named nope"):
        api.remove(workspace=workspace, names=["nope"])
    with pytest.raises(GemoError, match="not a usable name"):
        api.remove(workspace=workspace, names=["../cache"])
    assert api.remove(workspace=workspace, names=["audio-2"]) == ["fusion-mean"]
    assert not workspace.scores_path("audio-2").exists()
    assert not (workspace.root / "models" / "audio-2").exists()
    assert workspace.cache_path("pyaudio").exists()
    rows = {row["name"]: row for row in api.trained(workspace=workspace)}
    assert rows["fusion-mean"]["stale_inputs"] == ["audio-2"]


def test_balanced_class_weights_are_scikit_learns_on_the_training_labels():
    from sklearn.utils.class_weight import compute_class_weight

    from gemo.training.loop import class_weights

    labels = [0] * 6 + [1] * 3 + [2]
    weights = class_weights(labels, "balanced")
    np.testing.assert_allclose(weights, [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    np.testing.assert_allclose(weights, compute_class_weight("balanced", classes=np.arange(3),
                                                             y=labels))
    assert class_weights(labels, "none") is None
    np.testing.assert_allclose(class_weights([0, 0, 0, 2], "balanced"), [4 / 6, 0, 2])


def _imbalanced(counts, seed):
    """Four features, the minority classes shifted by one standard deviation on one each."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), counts)
    x = rng.normal(size=(len(y), 4)).astype(np.float32)
    x[:, 0] += y == 1
    x[:, 1] += y == 2
    return x, y


@pytest.mark.parametrize("family", ["mlp", "logreg", "svm"])
def test_balanced_class_weight_raises_minority_recall(family):
    """80% of one class: unweighted models predict it almost always; balanced ones do not."""
    from gemo import models
    from gemo.models.inputs import inputs_for
    from gemo.training.loop import class_weights, fit_model

    x, y = _imbalanced((120, 15, 15), seed=0)
    x_test, y_test = _imbalanced((100, 100, 100), seed=1)
    recall = {}
    for mode in ("none", "balanced"):
        torch.manual_seed(0)
        model = models.create(family, input_dim=4)
        inputs = inputs_for(model).fit(list(x))
        (fit,), (test,) = inputs.tensors(list(x)), inputs.tensors(list(x_test))
        if family == "mlp":
            recipe = Recipe(epochs=40, patience=40, lr=1e-2, batch_size=64, class_weight=mode)
            fit_model(model, inputs, (fit, torch.tensor(y)), (test, torch.tensor(y_test)),
                      recipe=recipe, seed=0)
        else:
            weights = class_weights(y, mode)
            model.fit(fit.double().numpy(), y, groups=np.arange(len(y)), seed=0,
                      sample_weight=None if weights is None else weights[y])
        with torch.no_grad():
            predicted = model.eval()(test).argmax(1).numpy()
        recall[mode] = np.mean([(predicted[y_test == k] == k).mean() for k in (1, 2)])
    assert recall["none"] < 0.2 and recall["balanced"] > recall["none"] + 0.3, recall


def test_class_weight_is_recorded_and_a_change_needs_overwrite(tmp_path):
    workspace = make_workspace(tmp_path, kinds=("egemaps",))
    quick = {**FAST, "epochs": 3, "folds": 0, "workspace": workspace, "modality": "audio",
             "features": "egemaps"}
    train(**quick, class_weight="balanced")
    out = workspace.model_dir("audio-egemaps-mlp")
    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"]["class_weight"] == "balanced"
    assert config["request"]["recipe"]["class_weight"] == "balanced"
    assert "--class-weight balanced" in config["command"]
    raw = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert raw["hyperparameters"]["class_weight"] == "balanced"
    with pytest.raises(GemoError, match=r"recipe\.class_weight 'balanced' -> 'none'.*--overwrite"):
        train(**quick)
    with pytest.raises(GemoError, match="class_weight must be one of none, balanced"):
        train(**quick, class_weight="inverse")


@pytest.mark.parametrize("family", ["svm", "logreg"])
def test_classical_models_score_like_every_model(tmp_path, family):
    """Out-of-fold train rows, the final model's val/test rows and embeddings, a checkpoint
    that predict() reloads to the same probabilities, and the grid search recorded."""
    workspace = make_workspace(tmp_path, kinds=("egemaps",))
    summary = train(workspace=workspace, modality="audio", features="egemaps", model=family,
                    folds=3, class_weight="balanced", progress=False, device="cpu")
    name = f"audio-egemaps-{family}"
    assert summary["name"] == name and summary["epochs_run"] == 0
    table = load_scores(workspace.scores_path(name))
    labels = _labels(workspace)
    clips = workspace.load_index().by_id()
    assert list(table.oof) == [s == "train" and clips[i].label is not None
                               for i, s in zip(table.ids, table.splits, strict=True)]
    np.testing.assert_allclose(table.probs.sum(1), 1, rtol=1e-5)
    assert table.embeddings.shape == (len(labels), 3)  # decision values, one per class
    assert _accuracy(table, labels, "val") >= 0.75 and _accuracy(table, labels, "train") >= 0.65
    again = predict(workspace=workspace, name=name, device="cpu")
    np.testing.assert_array_equal(again.probs[~table.oof], table.probs[~table.oof])
    np.testing.assert_array_equal(again.embeddings, table.embeddings)
    out = workspace.model_dir(name)
    assert not (out / "curves.png").exists()
    search = json.loads((out / "config.json").read_text())["training"]["search"]
    assert search["scoring"] == "balanced_accuracy" and search["params"] in [
        c["params"] for c in search["candidates"]]
    assert len(json.loads((out / "history.json").read_text())["folds"]) == 3


@pytest.mark.parametrize("features", ["pyaudio", "frames"])
def test_classical_models_refuse_sequences_and_frames_in_one_line(tmp_path, features):
    workspace = make_workspace(tmp_path, kinds=(features,))
    modality = "audio" if features == "pyaudio" else "scene"
    with pytest.raises(GemoError) as error:
        train(workspace=workspace, modality=modality, features=features, model="svm",
              progress=False, device="cpu")
    assert "\n" not in str(error.value)
    assert ("one feature vector per clip" in str(error.value) if features == "pyaudio"
            else "model svm needs a features array" in str(error.value))
