import io
import json

import numpy as np
import pytest
from rich.console import Console

from gemo import fusion
from gemo.cache.store import FeatureCache
from gemo.data.index import Clip, DatasetIndex, read_label_file
from gemo.errors import GemoError
from gemo.evaluation import evaluate
from gemo.evaluation.metrics import confusion_matrix, summarize
from gemo.evaluation.plots import embedding_map
from gemo.scores import ScoreTable, save_scores
from gemo.workspace import Workspace

METRIC_KEYS = {"n", "accuracy", "uar", "per_class", "confusion", "precision", "recall", "f1"}


def make_clips(seed=0):
    """24 train videos, 10 val, 4 test (unlabelled), 3 clips per video."""
    rng = np.random.default_rng(seed)
    clips, video = [], 0
    for split, videos in (("train", 24), ("val", 10), ("test", 4)):
        for _ in range(videos):
            video += 1
            label = None if split == "test" else int(rng.integers(3))
            for segment in (1, 2, 3):
                clip_id = f"{video}_{segment}"
                clips.append(Clip(clip_id, f"/data/{clip_id}.mp4", split, label, str(video)))
    return clips


def noisy_probs(clips, accuracy, seed):
    """Probabilities whose argmax is the true label with about ``accuracy`` chance."""
    rng = np.random.default_rng(seed)
    truth = np.array([rng.integers(3) if c.label is None else c.label for c in clips])
    guess = np.where(rng.random(len(clips)) < accuracy, truth, rng.integers(3, size=len(clips)))
    probs = np.eye(3)[guess] * 0.5 + rng.dirichlet([1, 1, 1], size=len(clips)) * 0.4
    return probs / probs.sum(axis=1, keepdims=True)


def write_table(ws, name, clips, probs):
    table = ScoreTable(
        name,
        [c.id for c in clips],
        [c.split for c in clips],
        probs,
        [c.split == "train" for c in clips],
    )
    save_scores(ws.scores_path(name), table)


def make_workspace(tmp_path, models=(("audio", 0.6), ("faces", 0.5), ("scene", 0.7))):
    clips = make_clips()
    ws = Workspace(tmp_path / "work")
    ws.save_index(DatasetIndex(str(tmp_path / "data"), "vgaf", clips))
    for seed, (name, accuracy) in enumerate(models):
        write_table(ws, name, clips, noisy_probs(clips, accuracy, seed))
    return ws, clips


def quiet():
    return Console(file=io.StringIO(), width=200)


def test_confusion_and_metrics_by_hand():
    # true:      P  P  P  N  N  N  G  G   (P=Positive, N=Neutral, G=Negative)
    # predicted: P  P  N  N  N  P  N  N   -> Negative never predicted
    y_true = [0, 0, 0, 1, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 0, 1, 1]
    assert confusion_matrix(y_true, y_pred).tolist() == [[2, 1, 0], [1, 2, 0], [0, 2, 0]]
    m = summarize(y_true, y_pred)
    assert m["n"] == 8 and m["accuracy"] == pytest.approx(4 / 8)
    assert m["per_class"] == pytest.approx({"Positive": 2 / 3, "Neutral": 2 / 3, "Negative": 0.0})
    assert m["uar"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3) == m["recall"]["macro"]
    precision = {"Positive": 2 / 3, "Neutral": 2 / 5, "Negative": 0.0}
    assert m["precision"]["per_class"] == pytest.approx(precision)
    f1 = {c: 2 * precision[c] * r / (precision[c] + r) if precision[c] + r else 0.0
          for c, r in m["per_class"].items()}
    assert m["f1"]["per_class"] == pytest.approx(f1)
    assert m["f1"]["macro"] == pytest.approx(sum(f1.values()) / 3)


def test_metrics_with_a_class_absent_from_the_labels():
    # No Negative clip: its recall is undefined and it is left out of the macro averages.
    m = summarize([0, 0, 1, 1], [0, 2, 1, 1])
    assert m["confusion"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    assert m["per_class"]["Negative"] is None and m["f1"]["per_class"]["Negative"] is None
    assert m["precision"]["per_class"]["Negative"] == 0.0  # predicted once, wrongly
    assert m["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["precision"]["macro"] == pytest.approx((1.0 + 1.0) / 2)


def test_evaluate_val_writes_metrics_plots_and_table(tmp_path):
    ws, clips = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="mean", progress=False)
    console = quiet()
    json_path = tmp_path / "out" / "val.json"
    result = evaluate(workspace=ws, split="val", json_path=json_path, progress=False, console=console)
    reports = ws.reports_dir("val")
    saved = json.loads((reports / "metrics.json").read_text())
    assert saved == json.loads(json_path.read_text())
    assert list(saved["models"]) == ["audio", "faces", "scene", "fusion-mean"]
    val = [c for c in clips if c.split == "val"]
    for name, entry in saved["models"].items():
        assert METRIC_KEYS <= set(entry) and entry["n"] == len(val)
        assert set(entry["per_class"]) == {"Positive", "Neutral", "Negative"}
        png = reports / f"confusion-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    probs = noisy_probs(clips, 0.7, 2)[[i for i, c in enumerate(clips) if c.split == "val"]]
    expected = summarize([c.label for c in val], probs.argmax(axis=1))
    assert result["models"]["scene"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert result["models"]["scene"]["confusion"] == expected["confusion"]
    text = console.file.getvalue()
    assert "fusion-mean" in text and "UAR" in text and "Negative" in text


def test_unlabelled_split_writes_vgaf_predictions(tmp_path):
    ws, clips = make_workspace(tmp_path)
    console = quiet()
    result = evaluate(workspace=ws, split="test", progress=False, console=console)
    assert result["models"] == {} and result["n_labelled"] == 0
    path = ws.reports_dir("test") / "predictions-scene.txt"
    assert result["predictions"]["scene"] == str(path)
    lines = path.read_text().splitlines()
    test_ids = sorted(c.id for c in clips if c.split == "test")
    assert lines[0] == "Vid_name Label"
    assert [line.split()[0] for line in lines[1:]] == test_ids
    assert all(line.split()[1] in ("1", "2", "3") for line in lines[1:])
    assert len(read_label_file(path)) == len(test_ids)  # gemo's own reader accepts it
    assert str(path) in console.file.getvalue()
    assert not list(ws.reports_dir("test").glob("confusion-*.png"))


def test_prediction_codes_follow_vgaf(tmp_path):
    ws, clips = make_workspace(tmp_path, models=(("scene", 0.7),))
    probs = np.eye(3)[[i % 3 for i in range(len(clips))]]
    write_table(ws, "scene", clips, probs)
    evaluate(workspace=ws, split="test", progress=False, console=quiet())
    written = dict(line.split() for line in
                   (ws.reports_dir("test") / "predictions-scene.txt").read_text().splitlines()[1:])
    expected = {c.id: str(i % 3 + 1) for i, c in enumerate(clips) if c.split == "test"}
    assert written == expected


def test_a_clip_without_a_score_gets_no_label(tmp_path, capsys):
    ws, clips = make_workspace(tmp_path, models=(("scene", 0.7),))
    kept = [c for c in clips if c.id not in ("25_1", "35_2")]  # a val clip, a test clip
    write_table(ws, "scene", kept, noisy_probs(kept, 0.7, 0))
    console = quiet()
    result = evaluate(workspace=ws, split="val", progress=False, console=console)
    assert result["models"]["scene"]["n_unscored"] == 1
    assert result["models"]["scene"]["n"] == sum(c.split == "val" for c in clips) - 1
    assert result["unscored"]["scene"]["ids"] == ["25_1"]
    assert "25_1" in capsys.readouterr().err  # a warning: stderr
    predicted = (ws.reports_dir("val") / "predictions-scene.txt").read_text().split()
    assert "25_1" not in predicted and "25_2" in predicted
    # On the unlabelled test split it gets no label either: no line in the VGAF file.
    result = evaluate(workspace=ws, split="test", progress=False, console=quiet())
    lines = (ws.reports_dir("test") / "predictions-scene.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines[1:]] == sorted(
        c.id for c in kept if c.split == "test")
    assert result["unscored"]["scene"]["ids"] == ["35_2"]


def test_ablation_has_one_row_per_left_out_model(tmp_path):
    ws, _ = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="weighted", progress=False)
    console = quiet()
    result = evaluate(workspace=ws, split="val", ablate=True, progress=False, console=console)
    ablation = result["ablation"]["fusion-weighted"]
    assert ablation["method"] == "weighted" and ablation["stale_inputs"] == []
    assert [row["left_out"] for row in ablation["rows"]] == ["audio", "faces", "scene"]
    assert ablation["rows"][0]["models"] == ["faces", "scene"]
    reference = result["models"]["fusion-weighted"]["accuracy"]
    for row in ablation["rows"]:
        assert METRIC_KEYS <= set(row)
        assert row["delta_accuracy"] == pytest.approx(row["accuracy"] - reference)
    # Ablation writes nothing: the fusion outputs are those of the full fusion.
    written = sorted(p.stem for p in ws.scores_dir.glob("*.h5"))
    assert written == ["audio", "faces", "fusion-weighted", "scene"]
    assert "without faces" in console.file.getvalue()
    saved = json.loads((ws.reports_dir("val") / "metrics.json").read_text())
    assert len(saved["ablation"]["fusion-weighted"]["rows"]) == 3


def test_ablation_needs_a_fusion_and_labels(tmp_path):
    ws, _ = make_workspace(tmp_path)
    with pytest.raises(GemoError, match="run `gemo fuse` first"):
        evaluate(workspace=ws, split="val", ablate=True, progress=False, console=quiet())
    fusion.fuse(workspace=ws, method="mean", progress=False)
    with pytest.raises(GemoError, match="no labels"):
        evaluate(workspace=ws, split="test", ablate=True, progress=False, console=quiet())


def _write_counts(ws, feature_set, counts_of):
    provenance = {"feature_set": feature_set, "extractor_version": 1, "params": {}}
    with FeatureCache(ws.cache_path(feature_set), mode="a", provenance=provenance) as cache:
        for clip_id, counts in counts_of.items():
            cache.write(clip_id, {"counts": np.array(counts, np.int32)},
                        fingerprint={"sha256": clip_id})


def test_by_group_size_buckets(tmp_path):
    ws, clips = make_workspace(tmp_path)
    val = [c for c in clips if c.split == "val"]
    sizes = {c.id: (2.0 if i % 3 else 7.5) for i, c in enumerate(val[:-2])}  # last 2 unknown
    with pytest.raises(GemoError, match="faces feature set"):
        evaluate(workspace=ws, split="val", by="group-size", progress=False, console=quiet())
    # Frames of 2 or 7/8 faces: mean 2.0 or 7.5.
    _write_counts(ws, "faces", {i: [2, 2] if size < 5 else [7, 8] for i, size in sizes.items()})
    console = quiet()
    result = evaluate(workspace=ws, split="val", by="group-size", progress=False, console=console)
    by_size = result["by_group_size"]
    small = [c for c in val if sizes.get(c.id, 99) < 5]
    large = [c for c in val if 5 <= sizes.get(c.id, -1)]
    assert by_size["counts"] == {"small": len(small), "large": len(large), "unknown": 2}
    rows = {c.id: i for i, c in enumerate(clips)}
    probs = noisy_probs(clips, 0.6, 0)  # audio
    for bucket, members in (("small", small), ("large", large)):
        predicted = probs[[rows[c.id] for c in members]].argmax(axis=1)
        expected = summarize([c.label for c in members], predicted)
        assert by_size["buckets"][bucket]["audio"] == expected
        assert set(by_size["buckets"][bucket]) == {"audio", "faces", "scene"}
    assert "small (n=" in console.file.getvalue()
    assert by_size["counter"] == "faces" and "faces per frame, faces cache" in console.file.getvalue()
    # A mapping passed in wins over the cache.
    everyone_large = {c.id: 9 for c in val}
    result = evaluate(workspace=ws, split="val", by="group-size", group_sizes=everyone_large,
                      progress=False, console=quiet())
    assert result["by_group_size"]["counts"] == {"small": 0, "large": len(val), "unknown": 0}
    assert result["by_group_size"]["counter"] == "given"


def test_group_sizes_counted_from_the_pose_cache_on_request(tmp_path):
    ws, clips = make_workspace(tmp_path)
    val = [c.id for c in clips if c.split == "val"]
    # Crowds seen from behind: few faces, many persons.
    _write_counts(ws, "faces", {clip_id: [1, 2] for clip_id in val})
    with pytest.raises(GemoError, match=r"extract the pose feature set first.*--only pose.*persons"):
        evaluate(workspace=ws, split="val", by="group-size", group_size_from="pose",
                 progress=False, console=quiet())
    _write_counts(ws, "pose", {clip_id: [6, 9] for clip_id in val[:-1]})
    faces = evaluate(workspace=ws, split="val", by="group-size", progress=False, console=quiet())
    assert faces["by_group_size"]["counter"] == "faces"
    assert faces["by_group_size"]["counts"] == {"small": len(val), "large": 0, "unknown": 0}
    console = quiet()
    pose = evaluate(workspace=ws, split="val", by="group-size", group_size_from="pose",
                    progress=False, console=console)
    assert pose["by_group_size"]["counter"] == "pose"
    assert pose["by_group_size"]["counts"] == {"small": 0, "large": len(val) - 1, "unknown": 1}
    assert "persons per frame, pose cache" in console.file.getvalue()
    saved = json.loads((ws.reports_dir("val") / "metrics.json").read_text())
    assert saved["by_group_size"]["counter"] == "pose"
    with pytest.raises(GemoError, match="unknown group-size counter 'bodies'; use one of faces, pose"):
        evaluate(workspace=ws, split="val", by="group-size", group_size_from="bodies",
                 progress=False, console=quiet())


def test_bad_requests_are_clear_errors(tmp_path):
    ws, _ = make_workspace(tmp_path)
    with pytest.raises(GemoError, match="unknown split"):
        evaluate(workspace=ws, split="dev", console=quiet())
    with pytest.raises(GemoError, match="unknown breakdown"):
        evaluate(workspace=ws, split="val", by="age", console=quiet())
    with pytest.raises(GemoError, match="not a number"):
        evaluate(workspace=ws, split="val", by="group-size", group_sizes={"25_1": "many"},
                 console=quiet())
    empty = Workspace(tmp_path / "empty")
    empty.save_index(DatasetIndex(str(tmp_path), "vgaf", make_clips()))
    with pytest.raises(GemoError, match="run `gemo train` first"):
        evaluate(workspace=empty, split="val", console=quiet())


def test_same_inputs_same_report(tmp_path):
    ws, _ = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="fc", seed=1, progress=False)
    first = evaluate(workspace=ws, split="val", progress=False, console=quiet())
    fusion.fuse(workspace=ws, method="fc", seed=1, progress=False)
    second = evaluate(workspace=ws, split="val", progress=False, console=quiet())
    assert first["models"] == second["models"]


def test_a_fusion_fitted_on_val_is_marked_in_table_json_and_plot(tmp_path, monkeypatch):
    ws, _ = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="svm", full_train=True, progress=False)
    titles = {}
    from gemo.evaluation import api as evaluation_api

    real = evaluation_api.save_confusion_png
    monkeypatch.setattr(evaluation_api, "save_confusion_png",
                        lambda path, confusion, *, title: titles.setdefault(path.name, title)
                        and real(path, confusion, title=title))
    console = quiet()
    result = evaluate(workspace=ws, split="val", progress=False, console=console)
    assert result["models"]["fusion-svm"]["fitted"] == "cross-fitted"
    assert all(result["models"][name]["fitted"] is None for name in ("audio", "faces", "scene"))
    saved = json.loads((ws.reports_dir("val") / "metrics.json").read_text())
    assert saved["models"]["fusion-svm"]["fitted"] == "cross-fitted"
    assert "fusion-svm (fitted)" in console.file.getvalue()
    assert "held-out measure" in console.file.getvalue()
    assert "fitted on val" in titles["confusion-fusion-svm.png"]
    assert "fitted" not in titles["confusion-audio.png"]
    # Without --full-train val is held out: no mark.
    fusion.fuse(workspace=ws, method="svm", overwrite=True, progress=False)
    result = evaluate(workspace=ws, split="val", progress=False, console=quiet())
    assert result["models"]["fusion-svm"]["fitted"] is None


def test_train_rows_scored_in_sample_are_marked_in_sample(tmp_path):
    ws, clips = make_workspace(tmp_path, models=(("scene", 0.7),))
    table = ScoreTable("audio", [c.id for c in clips], [c.split for c in clips],
                       noisy_probs(clips, 0.9, 5), np.zeros(len(clips), bool))  # folds=0
    save_scores(ws.scores_path("audio"), table)
    result = evaluate(workspace=ws, split="train", progress=False, console=quiet())
    assert result["models"]["audio"]["fitted"] == "in-sample"
    assert result["models"]["scene"]["fitted"] == "cross-fitted"  # out-of-fold train rows


def test_a_fusion_whose_inputs_changed_is_refused_until_refitted(tmp_path, capsys):
    ws, clips = make_workspace(tmp_path)
    fusion.fuse(workspace=ws, method="mean", progress=False)
    write_table(ws, "audio", clips, noisy_probs(clips, 0.9, 7))  # audio retrained
    console = quiet()
    result = evaluate(workspace=ws, split="val", progress=False, console=console)
    assert "fusion-mean" not in result["models"] and "fusion-mean" in result["refused"]
    assert "audio" in result["refused"]["fusion-mean"]
    assert "gemo fuse --method mean" in result["refused"]["fusion-mean"]
    assert "refused: fusion-mean" in capsys.readouterr().err
    with pytest.raises(GemoError, match="run `gemo fuse` first"):
        evaluate(workspace=ws, split="val", ablate=True, progress=False, console=quiet())
    fusion.fuse(workspace=ws, method="mean", progress=False)  # same request: a refit
    result = evaluate(workspace=ws, split="val", progress=False, console=quiet())
    assert "fusion-mean" in result["models"] and result["refused"] == {}


def test_embedding_maps_are_written_beside_the_confusion_plots(tmp_path, monkeypatch):
    ws, clips = make_workspace(tmp_path, models=(("scene", 0.7),))
    rng = np.random.default_rng(3)
    labels = np.array([rng.integers(3) if c.label is None else c.label for c in clips])
    embeddings = rng.normal(0, 1, (len(clips), 16)) + 6 * np.eye(16)[labels]  # a cluster a class
    save_scores(ws.scores_path("audio"), ScoreTable(
        "audio", [c.id for c in clips], [c.split for c in clips], noisy_probs(clips, 0.6, 0),
        [c.split == "train" for c in clips], embeddings))
    fusion.fuse(workspace=ws, method="mean", progress=False)
    drawn = {}
    from gemo.evaluation import api as evaluation_api

    real = evaluation_api.save_embedding_png
    monkeypatch.setattr(evaluation_api, "save_embedding_png",
                        lambda path, x, truth, predicted, *, title: drawn.setdefault(
                            path.name, (x, title)) and real(path, x, truth, predicted,
                                                            title=title))
    result = evaluate(workspace=ws, split="val", progress=False, console=quiet(),
                      embedding_maps=True)
    reports = ws.reports_dir("val")
    for name in ("audio", "scene", "fusion-mean"):
        png = reports / f"embedding-{name}.png"
        assert result["models"][name]["embedding_png"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    val = np.array([c.split == "val" for c in clips])
    assert drawn["embedding-audio.png"][0].shape == (val.sum(), 16)
    assert "t-SNE of its embeddings" in drawn["embedding-audio.png"][1]
    assert "t-SNE of its probabilities" in drawn["embedding-fusion-mean.png"][1]  # none stored
    # the map keeps the planted clusters apart: each clip's nearest neighbour shares its class
    points = embedding_map(embeddings[val])
    distance = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(val.sum()) * 1e9
    assert (labels[val][distance.argmin(1)] == labels[val]).mean() >= 0.9


def test_too_few_clips_for_an_embedding_map_is_a_note(tmp_path, capsys):
    ws, clips = make_workspace(tmp_path, models=(("scene", 0.7),))
    few = [c for c in clips if c.split != "val" or c.group in ("25", "26")]  # 6 val clips
    ws.save_index(DatasetIndex(str(tmp_path / "data"), "vgaf", few))
    result = evaluate(workspace=ws, split="val", progress=False, console=quiet(),
                      embedding_maps=True)
    assert result["models"]["scene"]["embedding_png"] is None
    assert not list(ws.reports_dir("val").glob("embedding-*.png"))
    assert ("no embedding map of scene: 6 labelled val clip(s), fewer than 10"
            in capsys.readouterr().err)
    # not asked for: none drawn
    result = evaluate(workspace=ws, split="val", progress=False, console=quiet())
    assert "embedding_png" not in result["models"]["scene"]
