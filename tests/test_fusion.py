import json

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from gemo import fusion
from gemo.data.index import Clip, DatasetIndex
from gemo.errors import GemoError
from gemo.folds import grouped_folds
from gemo.scores import ONE_ENCODER, ScoreTable, load_scores, save_scores
from gemo.workspace import Workspace

# A small grid keeps the SVM tests fast; the default grid is tested on its own.
SMALL_GRID = {"C": (0.1, 10.0), "kernel": ("linear", "rbf", "poly"), "degree": (2,)}


def make_clips(n_train_videos=30, n_val_videos=12, n_test_videos=6, per_video=3, seed=0):
    """Clips ``<video>_<segment>``: segments of one video share its label and group."""
    rng = np.random.default_rng(seed)
    clips, video = [], 0
    for split, videos in (("train", n_train_videos), ("val", n_val_videos), ("test", n_test_videos)):
        for _ in range(videos):
            video += 1
            label = None if split == "test" else int(rng.integers(3))
            for segment in range(1, per_video + 1):
                clip_id = f"{video}_{segment}"
                clips.append(Clip(clip_id, f"/data/{clip_id}.mp4", split, label, str(video)))
    return clips


def complementary_probs(clips, knows, seed, noise=2.0):
    """A model that only tells class ``knows`` from the two others (unsure which of them).

    Alone it confuses the two others; two models knowing different classes
    together separate all three.
    """
    rng = np.random.default_rng(seed)
    truth = np.array([-1 if c.label is None else c.label for c in clips])
    truth = np.where(truth < 0, rng.integers(3, size=len(clips)), truth)
    probs = np.full((len(clips), 3), 0.25)
    probs[truth == knows] = 0.1
    probs[truth == knows, knows] = 0.8
    probs[truth != knows, knows] = 0.1
    others = [c for c in range(3) if c != knows]
    probs[truth != knows, others[0]] += 0.05  # a fixed lean, so alone it picks others[0]
    probs[truth != knows, others[1]] -= 0.05
    probs = probs + noise * rng.dirichlet([1, 1, 1], size=len(clips)) * 0.3
    return probs / probs.sum(axis=1, keepdims=True)


def write_table(ws, name, clips, probs, *, oof=None, embeddings=None, order=None):
    order = np.arange(len(clips)) if order is None else np.asarray(order)
    oof = np.array([c.split == "train" for c in clips]) if oof is None else np.asarray(oof)
    table = ScoreTable(
        name,
        np.array([c.id for c in clips])[order],
        np.array([c.split for c in clips])[order],
        np.asarray(probs)[order],
        oof[order],
        None if embeddings is None else np.asarray(embeddings)[order],
        {"modality": name, "embeddings": ONE_ENCODER},
    )
    save_scores(ws.scores_path(name), table)


def make_workspace(tmp_path, *, clips=None, embeddings=False):
    clips = clips or make_clips()
    ws = Workspace(tmp_path / "work")
    ws.save_index(DatasetIndex(str(tmp_path / "data"), "vgaf", clips))
    for name, knows, seed in (("audio", 0, 1), ("scene", 2, 2)):
        probs = complementary_probs(clips, knows, seed)
        emb = None
        if embeddings:
            emb = np.hstack([probs, np.random.default_rng(seed).normal(size=(len(clips), 5))])
        write_table(ws, name, clips, probs, embeddings=emb)
    return ws, clips


def fused_by_id(ws, name):
    table = load_scores(ws.scores_path(name))
    return {i: (p, s, o) for i, p, s, o in zip(table.ids, table.probs, table.splits, table.oof)}


def accuracy_on(ws, name, clips, split):
    table = load_scores(ws.scores_path(name))
    labelled = [c for c in clips if c.split == split and c.label is not None]
    probs = table.select([c.id for c in labelled]).probs
    return float(np.mean(probs.argmax(axis=1) == [c.label for c in labelled]))


def test_registry_lists_methods_and_rejects_unknown():
    assert fusion.available() == ["fc", "mean", "svm", "vae", "vote", "weighted"]
    with pytest.raises(GemoError, match="available: fc, mean, svm, vae, vote, weighted"):
        fusion.create("stacking")
    with pytest.raises(GemoError, match="unknown parameter"):
        fusion.create("mean", seed=1)


@pytest.mark.parametrize("method", ["svm", "fc", "mean", "vote", "weighted"])
def test_estimator_conventions(method):
    rng = np.random.default_rng(0)
    y = np.tile([0, 1, 2], 20)
    X = np.hstack([np.eye(3)[y] * 0.6 + rng.dirichlet([1, 1, 1], 60) * 0.4 for _ in range(2)])
    fuser = fusion.create(method, **(SMALL_GRID if method == "svm" else {}))
    with pytest.raises(NotFittedError):
        fuser.predict(X)
    copy = clone(fuser)
    assert copy.get_params() == fuser.get_params() and copy is not fuser
    assert fuser.fit(X, y) is fuser
    assert not any(key.endswith("_") for key in fuser.get_params())
    proba = fuser.predict_proba(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(axis=1), 1)
    assert list(fuser.classes_) == [0, 1, 2]
    assert np.array_equal(fuser.predict(X), proba.argmax(axis=1))
    with pytest.raises(NotFittedError):
        clone(fuser).predict_proba(X)  # a clone carries parameters, not the fit


def test_mean_averages_probabilities():
    X = np.array([[0.6, 0.3, 0.1, 0.0, 0.2, 0.8], [0.2, 0.5, 0.3, 0.4, 0.5, 0.1]])
    fuser = fusion.create("mean").fit(X, [0, 1])
    assert np.allclose(fuser.predict_proba(X), [[0.3, 0.25, 0.45], [0.3, 0.5, 0.2]])
    assert fuser.predict(X).tolist() == [2, 1]


def test_vote_majority_and_tie_break_by_summed_probability():
    X = np.array([
        # Positive, Positive, Negative: the majority wins despite Negative's confidence.
        [0.5, 0.3, 0.2, 0.5, 0.4, 0.1, 0.0, 0.0, 1.0],
        # Positive, Neutral, Negative: a three-way tie; Neutral has the largest sum (1.45).
        [0.5, 0.4, 0.1, 0.1, 0.8, 0.1, 0.2, 0.25, 0.55],
        # Neutral, Neutral, Positive.
        [0.1, 0.8, 0.1, 0.3, 0.4, 0.3, 0.9, 0.05, 0.05],
    ])
    fuser = fusion.create("vote").fit(X, [0, 1, 2])
    assert fuser.predict(X).tolist() == [0, 1, 1]
    proba = fuser.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1)
    assert proba[0, 0] > 0.5  # two of three votes


def test_weighted_learns_to_trust_the_accurate_model():
    y = np.tile([0, 1, 2], 10)
    good = np.eye(3)[y] * 0.5 + 0.5 / 3  # always right
    bad = np.eye(3)[(y + 1) % 3] * 0.9 + 0.1 / 3  # always wrong, confidently
    fuser = fusion.create("weighted").fit(np.hstack([bad, good]), y)
    assert fuser.weights_.sum() == pytest.approx(1)
    assert fuser.weights_[1] > fuser.weights_[0]
    assert fuser.predict(np.hstack([bad, good])).tolist() == y.tolist()
    # With both always right, the sharper one mixes in to lower the log-loss.
    sharp = np.eye(3)[y] * 0.9 + 0.1 / 3
    both = fusion.create("weighted").fit(np.hstack([good, sharp]), y)
    assert both.weights_.tolist() == [0.0, 1.0]


def test_weighted_simplex_is_coarsened_for_many_models():
    y = np.tile([0, 1, 2], 4)
    X = np.hstack([np.eye(3)[y]] * 9)
    fuser = fusion.create("weighted", max_points=500).fit(X, y)
    assert fuser.weights_.shape == (9,) and fuser.weights_.sum() == pytest.approx(1)


def test_grouped_folds_keep_each_video_in_one_fold():
    groups = np.repeat(np.arange(20), 3)
    y = np.repeat(np.arange(20) % 3, 3)
    for train, test in grouped_folds(y, groups, n_splits=5, seed=0):
        assert not set(groups[train]) & set(groups[test])


@pytest.mark.parametrize("per_class", [3, 4, 5])
def test_few_clips_per_class_still_give_folds_that_train_on_every_class(per_class):
    # StratifiedGroupKFold refuses more folds than clips of a class, and a grouped split can
    # leave a class out of a training part: the svm fusion crashed on 4 or 5 clips per class.
    rng = np.random.default_rng(0)
    for seed in range(20):
        y = np.repeat([0, 1, 2], per_class)
        groups = rng.permutation(np.arange(len(y)) // 2)
        for train, test in grouped_folds(y, groups, seed=seed, every_class=True):
            assert set(y[train]) == {0, 1, 2}
            assert not set(groups[train]) & set(groups[test])
        X = rng.normal(size=(len(y), 6)) + y[:, None]
        assert fusion.create("svm", seed=seed).fit(X, y, groups).predict_proba(X).shape == (len(y), 3)
    with pytest.raises(GemoError, match="leaves a class out of a training part"):
        grouped_folds([0, 1, 2, 2], [0, 1, 2, 3], every_class=True)


def test_svm_grid_search_picks_from_grid_and_beats_each_model(tmp_path):
    ws, clips = make_workspace(tmp_path)
    summary = fusion.fuse(workspace=ws, method="svm", progress=False)
    best = summary["best_params"]
    assert best["kernel"] in ("linear", "rbf", "poly") and best["C"] in (0.1, 1.0, 10.0, 100.0)
    if best["kernel"] == "poly":
        assert best["degree"] in (2, 3)
    assert 0 <= summary["search_cv_accuracy"] <= 1 and 0 <= summary["cv_accuracy"] <= 1
    assert summary["models"] == ["audio", "scene"]
    fused = accuracy_on(ws, "fusion-svm", clips, "val")
    alone = [accuracy_on(ws, name, clips, "val") for name in ("audio", "scene")]
    assert fused > max(alone) + 0.15, (fused, alone)


def test_fuse_writes_fuser_config_and_scores_for_every_clip(tmp_path):
    ws, clips = make_workspace(tmp_path)
    summary = fusion.fuse(workspace=ws, method="mean", progress=False)
    fused = fused_by_id(ws, "fusion-mean")
    assert set(fused) == {c.id for c in clips}
    # Train rows are cross-fitted (oof); val/test rows are held out.
    assert all(fused[c.id][2] == (c.split == "train") for c in clips)
    assert all(fused[c.id][1] == c.split for c in clips)
    config = json.loads((ws.model_dir("fusion-mean") / "config.json").read_text())
    assert config["method"] == "mean" and config["models"] == ["audio", "scene"]
    assert set(config["score_tables"]) == {"audio", "scene"}
    assert "sha256" in config["score_tables"]["audio"]["fingerprint"]
    assert config["gemo_version"] and summary["scores_path"].endswith("fusion-mean.h5")
    fuser = joblib.load(ws.model_dir("fusion-mean") / "fuser.joblib")
    assert fuser.predict_proba(np.full((1, 6), 1 / 3)).shape == (1, 3)


def test_models_default_excludes_fusion_outputs_and_unknown_model_is_an_error(tmp_path):
    ws, _ = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="mean", progress=False)
    summary = fusion.fuse(workspace=ws, method="vote", progress=False)
    assert summary["models"] == ["audio", "scene"]
    with pytest.raises(GemoError, match="available: audio, scene"):
        fusion.fuse(workspace=ws, method="mean", models=["audio", "faces"], progress=False)
    with pytest.raises(GemoError, match="cannot fuse fusion outputs"):
        fusion.fuse(workspace=ws, method="mean", models=["audio", "fusion-mean"], progress=False)


def test_rows_are_joined_by_id_not_order(tmp_path):
    ws, clips = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="fc", progress=False)
    before = fused_by_id(ws, "fusion-fc")
    table = load_scores(ws.scores_path("scene"))
    order = np.random.default_rng(7).permutation(len(table.ids))
    save_scores(ws.scores_path("scene"), table.select(table.ids[order].tolist()))
    assert load_scores(ws.scores_path("scene")).ids.tolist() != table.ids.tolist()
    fusion.fuse(workspace=ws, method="fc", progress=False)
    after = fused_by_id(ws, "fusion-fc")
    assert before.keys() == after.keys()
    for clip_id in before:
        assert np.allclose(before[clip_id][0], after[clip_id][0])


def test_refuses_in_sample_train_scores(tmp_path):
    ws, clips = make_workspace(tmp_path)
    oof = np.array([c.split == "train" for c in clips])
    oof[5] = False
    write_table(ws, "scene", clips, complementary_probs(clips, 2, 2), oof=oof)
    with pytest.raises(GemoError, match=r"in-sample.*1 train clip.*2_3"):
        fusion.fuse(workspace=ws, method="mean", progress=False)


def test_missing_clips_are_imputed_uniform_and_counted(tmp_path):
    ws, clips = make_workspace(tmp_path)
    probs = complementary_probs(clips, 2, 2)
    kept = [i for i, c in enumerate(clips) if c.id not in ("1_1", "40_2", "44_1")]
    write_table(ws, "scene", [clips[i] for i in kept], probs[kept])
    summary = fusion.fuse(workspace=ws, method="mean", progress=False)
    assert summary["n_imputed"] == 3
    assert summary["imputed"]["scene"] == {"train": 1, "val": 1, "test": 1}
    assert summary["imputed"]["audio"] == {"train": 0, "val": 0, "test": 0}
    audio = load_scores(ws.scores_path("audio")).select(["44_1"]).probs[0]
    fused = fused_by_id(ws, "fusion-mean")["44_1"][0]
    assert np.allclose(fused, (audio + 1 / 3) / 2, atol=1e-6)


def test_full_train_refits_on_train_and_val(tmp_path):
    ws, clips = make_workspace(tmp_path)
    summary = fusion.fuse(workspace=ws, method="svm", full_train=True, progress=False)
    n_fit = sum(c.split in ("train", "val") and c.label is not None for c in clips)
    assert summary["fitted_on"] == "train+val" and summary["n_fit"] == n_fit
    fused = fused_by_id(ws, "fusion-svm")
    assert all(fused[c.id][2] == (c.split != "test") for c in clips)
    config = json.loads((ws.model_dir("fusion-svm") / "config.json").read_text())
    assert config["full_train"] is True


def test_val_labels_needed_for_full_train(tmp_path):
    clips = [c if c.split != "val" else Clip(c.id, c.path, c.split, None, c.group) for c in make_clips()]
    ws, _ = make_workspace(tmp_path, clips=clips)
    with pytest.raises(GemoError, match="no labelled val clips"):
        fusion.fuse(workspace=ws, method="mean", full_train=True, progress=False)


def test_same_seed_same_result(tmp_path):
    ws, _ = make_workspace(tmp_path)
    runs = []
    for seed in (3, 3, 4):
        fusion.fuse(workspace=ws, method="fc", seed=seed, overwrite=True, progress=False)
        runs.append(load_scores(ws.scores_path("fusion-fc")).probs)
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_fc_on_embeddings(tmp_path):
    ws, clips = make_workspace(tmp_path, embeddings=True)
    summary = fusion.fuse(workspace=ws, method="fc", inputs="embeddings", progress=False)
    assert summary["name"] == "fusion-fc-embeddings"
    assert accuracy_on(ws, "fusion-fc-embeddings", clips, "val") > 0.6
    with pytest.raises(GemoError, match="works on probs"):
        fusion.fuse(workspace=ws, method="svm", inputs="embeddings", progress=False)


def test_embeddings_required_from_every_model(tmp_path):
    ws, _ = make_workspace(tmp_path)
    with pytest.raises(GemoError, match="has no embeddings"):
        fusion.fuse(workspace=ws, method="fc", inputs="embeddings", progress=False)


def test_stale_table_split_is_an_error(tmp_path):
    ws, clips = make_workspace(tmp_path)
    moved = [Clip(c.id, c.path, "val" if c.id == "1_1" else c.split, c.label, c.group) for c in clips]
    write_table(ws, "scene", moved, complementary_probs(clips, 2, 2))
    with pytest.raises(GemoError, match="stale"):
        fusion.fuse(workspace=ws, method="mean", progress=False)


def test_a_clip_no_model_scored_gets_no_fused_score(tmp_path):
    ws, clips = make_workspace(tmp_path)
    audio = [c for c in clips if c.id not in ("40_1", "44_1")]  # a val and a test clip
    scene = [c for c in clips if c.id != "44_1"]
    write_table(ws, "audio", audio, complementary_probs(audio, 0, 1))
    write_table(ws, "scene", scene, complementary_probs(scene, 2, 2))
    summary = fusion.fuse(workspace=ws, method="svm", models=["audio", "scene"], progress=False)
    fused = fused_by_id(ws, "fusion-svm")
    assert "44_1" not in fused and "40_1" in fused  # scene alone scored 40_1
    assert summary["imputed"]["audio"]["val"] == 1


def test_a_fusion_is_not_replaced_by_one_of_other_models_unless_asked(tmp_path):
    ws, _ = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="mean", progress=False)
    with pytest.raises(GemoError, match="already exists.*--overwrite.*--name"):
        fusion.fuse(workspace=ws, method="mean", models=["audio"], progress=False)
    kept = fusion.fuse(workspace=ws, method="mean", models=["audio"], name="fusion-mean-audio",
                       progress=False)
    assert kept["name"] == "fusion-mean-audio" and ws.scores_path("fusion-mean").exists()
    replaced = fusion.fuse(workspace=ws, method="mean", models=["audio"], overwrite=True,
                           progress=False)
    config = json.loads((ws.model_dir("fusion-mean") / "config.json").read_text())
    assert replaced["models"] == config["models"] == ["audio"]
    assert config["command"].startswith("gemo fuse --method mean --models audio")
    with pytest.raises(GemoError, match="start with 'fusion-'"):
        fusion.fuse(workspace=ws, method="mean", name="mine", progress=False)
    with pytest.raises(GemoError, match="not a usable name"):
        fusion.fuse(workspace=ws, method="mean", name="fusion-../x", progress=False)


def test_embeddings_from_fold_models_are_refused(tmp_path):
    """Tables written before every row's embedding came from the final model cannot be fused."""
    ws, clips = make_workspace(tmp_path, embeddings=True)
    table = load_scores(ws.scores_path("audio"))
    table.attrs.pop("embeddings")
    save_scores(ws.scores_path("audio"), table)
    with pytest.raises(GemoError, match="audio: embeddings of train rows come from fold models"):
        fusion.fuse(workspace=ws, method="fc", inputs="embeddings", progress=False)


def test_vae_fusion_classifies_from_the_latent_codes_of_the_embeddings(tmp_path):
    ws, clips = make_workspace(tmp_path, embeddings=True)
    summary = fusion.fuse(workspace=ws, method="vae", inputs="embeddings", progress=False)
    assert summary["name"] == "fusion-vae-embeddings"
    assert set(summary["loss"]) == {"reconstruction", "kl"} and summary["loss"]["kl"] > 0
    assert accuracy_on(ws, "fusion-vae-embeddings", clips, "val") > 0.6  # each model alone < 0.5
    table = load_scores(ws.scores_path("fusion-vae-embeddings"))
    assert table.embeddings.shape == (len(clips), 20)  # each clip's latent code, from one encoder
    fuser = joblib.load(ws.model_dir("fusion-vae-embeddings") / "fuser.joblib")
    np.testing.assert_allclose(fuser.transform(np.zeros((1, 16))).shape, (1, 20))
    with pytest.raises(GemoError, match="works on embeddings, not probs: --inputs embeddings"):
        fusion.fuse(workspace=ws, method="vae", progress=False)
