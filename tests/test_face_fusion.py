"""Face-level fusion (fea, feb, nvpf, tnvpf): the per-face input, the flow's algebra, and a
planted signal carried by the faces together (each face alone is a weak witness).

The fer caches are written directly with FeatureCache: per-face ``embeddings`` and
``frame_index`` as the fer set stores them.
"""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gemo import models
from gemo.cache.store import FeatureCache
from gemo.cli import cli
from gemo.data.index import Clip, DatasetIndex
from gemo.errors import GemoError
from gemo.models.face_fusion import AffineCoupling, FaceFlow, face_mask
from gemo.models.inputs import inputs_for
from gemo.scores import load_scores
from gemo.training import predict, train
from gemo.workspace import Workspace

DIM, FRAMES = 8, 3
QUICK = {"epochs": 25, "patience": 25, "lr": 1e-2, "folds": 0, "progress": False,
         "device": "cpu"}
# Small flows keep the test quick; the defaults (10 units of 32) learn it too.
SMALL = {"nvpf": {"units": 4, "hidden": 16}, "tnvpf": {"units": 4, "hidden": 16, "memory": 16}}


def _faces(shown, rng):
    """Face vectors showing the expressions ``shown`` clearly (as FER reads them), and noise."""
    faces = rng.normal(0, 1, (len(shown), DIM))
    faces[:, :3] *= 0.3
    faces[np.arange(len(shown)), shown] += 1.5
    return shown, faces


def most_faces(label, rng):
    """5 to 11 faces whose most shown expression (a strict plurality) is ``label``; each face
    shows ``label`` only a little more often than each other expression."""
    share = np.full(3, 0.31)
    share[label] = 0.38
    while True:
        shown = rng.choice(3, size=rng.integers(5, 12), p=share)
        counts = np.bincount(shown, minlength=3)
        if counts.argmax() == label and (counts == counts.max()).sum() == 1:
            return _faces(shown, rng)


def two_faces(label, rng):
    """Two faces whose expressions add up to ``label`` modulo 3: each face alone is uniform
    whatever the class, only the pair tells it (and the sum is the same either way round)."""
    first = rng.integers(3)
    return _faces(np.array([first, (label - first) % 3]), rng)


def _clip_arrays(label, rng, frame):
    shown, faces, frame_of = [], [], []
    for index in range(FRAMES):
        if rng.random() < 0.15:
            continue  # a frame without faces
        s, f = frame(label, rng)
        shown.append(s)
        faces.append(f)
        frame_of.append(np.full(len(s), index))
    if not faces:
        return _clip_arrays(label, rng, frame)
    return np.concatenate(shown), {
        "embeddings": np.concatenate(faces).astype(np.float32),
        "frame_index": np.concatenate(frame_of).astype(np.int32),
        "features": np.zeros((FRAMES, 22), np.float32)}


def planted_workspace(root, *, frame=most_faces, shuffled=False, seed=0, version=3):
    """90 train and 45 val clips (two per source video); returns the workspace and the share
    of faces that show their clip's class (what one face alone tells). ``version`` 2: the fer
    set as it was before per-face embeddings."""
    rng = np.random.default_rng(seed)
    clips, witnesses, arrays = [], [], {}
    for split, per_class in (("train", 30), ("val", 15)):
        for label in range(3):
            for i in range(per_class):
                clip_id = f"{split}{label}_{i // 2}_{i % 2 + 1}"
                clips.append(Clip(clip_id, f"/data/{clip_id}.mp4", split, label,
                                  f"{split}{label}_{i // 2}"))
                shown, arrays[clip_id] = _clip_arrays(label, rng, frame)
                witnesses.append(shown == label)
    if shuffled:
        # The control: within each split, each class's clips get every label equally often,
        # in random order, so labels say nothing about the faces, and a model that maps each
        # class's faces to one label gets exactly a third of val right.
        given = {(split, label): list(rng.permutation(np.repeat(range(3), count // 3)))
                 for split, count in (("train", 30), ("val", 15)) for label in range(3)}
        clips = [Clip(c.id, c.path, c.split, int(given[c.split, c.label].pop()), c.group)
                 for c in clips]
    workspace = Workspace(root)
    workspace.save_index(DatasetIndex(str(root), "vgaf", clips))
    provenance = {"feature_set": "fer", "extractor_version": version, "params": {}, "info": {}}
    with FeatureCache(workspace.cache_path("fer"), mode="a", provenance=provenance) as cache:
        for clip_id, clip_arrays in arrays.items():
            if version < 3:
                clip_arrays = {k: v for k, v in clip_arrays.items() if k != "embeddings"}
            cache.write(clip_id, clip_arrays, fingerprint={"sha256": clip_id})
    return workspace, float(np.concatenate(witnesses).mean())


def _val_accuracy(workspace, name):
    table = load_scores(workspace.scores_path(name))
    labels = {c.id: c.label for c in workspace.load_index().clips}
    rows = [i for i, split in enumerate(table.splits) if split == "val"]
    truth = np.array([labels[table.ids[i]] for i in rows])
    return float((table.probs[rows].argmax(1) == truth).mean())


@pytest.mark.parametrize("family", ["fea", "feb", "nvpf", "tnvpf"])
def test_face_models_learn_what_the_faces_say_together(tmp_path, family):
    """The class is the expression most faces of a frame show: one face alone shows it little
    more than half the time; together they tell it. Shuffled labels leave val at chance."""
    workspace, one_face = planted_workspace(tmp_path / "planted")
    summary = train(workspace=workspace, modality="face", features="fer", model=family,
                    **QUICK, **SMALL.get(family, {}))
    accuracy = _val_accuracy(workspace, summary["name"])
    assert one_face < 0.6 and accuracy >= 0.85, (one_face, accuracy)
    table = load_scores(workspace.scores_path(summary["name"]))
    assert table.embeddings.shape == (135, models.create(family, input_dim=DIM,
                                                         **SMALL.get(family, {})).embedding_dim)
    assert np.isfinite(table.probs).all() and np.allclose(table.probs.sum(1), 1, atol=1e-5)
    again = predict(workspace=workspace, name=summary["name"], device="cpu")  # the checkpoint
    np.testing.assert_allclose(again.probs, table.probs, rtol=1e-4, atol=1e-5)

    control, _ = planted_workspace(tmp_path / "shuffled", shuffled=True)
    summary = train(workspace=control, modality="face", features="fer", model=family,
                    **QUICK, **SMALL.get(family, {}))
    assert _val_accuracy(control, summary["name"]) < 0.5


@pytest.mark.slow
def test_pooled_and_flow_models_learn_a_class_only_pairs_of_faces_reveal(tmp_path):
    """Two faces per frame, the class their expressions' sum modulo 3: no face alone says
    anything, so fea, which scores faces one by one, stays at chance, while feb's pooling and
    the flows' coupling (each face's latent depends on its frame's other faces) learn it."""
    accuracy = {}
    for family in ("fea", "feb", "nvpf", "tnvpf"):
        workspace, one_face = planted_workspace(tmp_path / family, frame=two_faces)
        summary = train(workspace=workspace, modality="face", features="fer", model=family,
                        **{**QUICK, "epochs": 60, "patience": 60}, **SMALL.get(family, {}))
        accuracy[family] = _val_accuracy(workspace, summary["name"])
    assert one_face < 0.4 and accuracy["fea"] < 0.5, (one_face, accuracy)
    assert min(accuracy["feb"], accuracy["nvpf"], accuracy["tnvpf"]) >= 0.7, accuracy


def _random_units(units, dim, seed):
    torch.manual_seed(seed)
    flow = FaceFlow(dim, units, hidden=8).double()
    with torch.no_grad():  # away from the identity it starts as
        for p in flow.parameters():
            p.normal_(0, 0.4)
    return flow


@pytest.mark.parametrize("units", [1, 3])
def test_coupling_is_invertible_and_its_log_det_is_the_jacobians(units):
    flow = _random_units(units, dim=5, seed=units)  # odd width: unequal halves
    x = torch.randn(1, 1, 3, 5, dtype=torch.float64)  # one frame of three faces
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    y, logdet = flow(x, mask)
    torch.testing.assert_close(flow.inverse(y, mask), x)
    assert not torch.allclose(y, x)
    # Every face's output depends on the other faces (the frame's mean), so the Jacobian of
    # all 15 outputs on all 15 inputs is not block diagonal; its log |det| is still the sum.
    jacobian = torch.autograd.functional.jacobian(
        lambda flat: flow(flat.view(1, 1, 3, 5), mask)[0].reshape(-1), x.reshape(-1))
    assert jacobian[5:10, 0:5].abs().max() > 1e-3  # face 2 moves with face 1
    sign, expected = torch.linalg.slogdet(jacobian)
    assert sign != 0
    torch.testing.assert_close(logdet.sum(), expected)


def test_padded_faces_change_nothing():
    unit = AffineCoupling(4, 8, flip=False).double()
    with torch.no_grad():
        for p in unit.parameters():
            p.normal_(0, 0.4)
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    padded = torch.cat([x, 50 * torch.ones(1, 1, 2, 4, dtype=torch.float64)], 2)
    y, logdet = unit(x, face_mask(x, torch.tensor([[3]])))
    y_padded, logdet_padded = unit(padded, face_mask(padded, torch.tensor([[3]])))
    torch.testing.assert_close(y_padded[:, :, :3], y)
    torch.testing.assert_close(logdet_padded[:, :, :3], logdet)
    assert not y_padded[:, :, 3:].any() and not logdet_padded[:, :, 3:].any()


def test_face_input_lays_out_each_frames_faces_standardised():
    model = models.create("feb", input_dim=2)
    inputs = inputs_for(model)
    clip = {"embeddings": np.array([[1, 10], [3, 10], [5, 30]], np.float32),
            "frame_index": np.array([0, 0, 2], np.int32), "features": np.zeros((4, 22))}
    empty = {"embeddings": np.zeros((0, 2), np.float32), "frame_index": np.zeros(0, np.int32)}
    arrays = [inputs.check("a", clip, "fer"), inputs.check("b", empty, "fer")]
    inputs.fit(arrays)
    np.testing.assert_allclose(inputs.mean, [3, 50 / 3], rtol=1e-6)
    x, counts = inputs.tensors(arrays)
    assert x.shape == (2, 3, 2, 2) and counts.tolist() == [[2, 0, 1], [0, 0, 0]]
    np.testing.assert_allclose(x[0, 0, :, 0], [-2 / inputs.std[0], 0], rtol=1e-6)
    assert x[0, 2, 0, 0] > 0 and not x[0, 1].any() and not x[1].any()
    assert model(x, counts).shape == (2, 3)


def test_a_fer_cache_without_embeddings_is_refused_in_one_line(tmp_path):
    workspace, _ = planted_workspace(tmp_path, version=2)
    with pytest.raises(GemoError) as error:
        train(workspace=workspace, modality="face", features="fer", model="nvpf", **QUICK)
    assert "\n" not in str(error.value) and "--only fer --overwrite" in str(error.value)


def test_face_models_train_from_the_command_line(tmp_path):
    workspace, _ = planted_workspace(tmp_path)
    result = CliRunner().invoke(cli, [
        "train", "face", "--features", "fer", "--model", "tnvpf", "-o", "units=2",
        "-o", "memory=8", "--epochs", "2", "--folds", "0", "--device", "cpu", "--quiet",
        "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert workspace.scores_path("face-fer-tnvpf").exists()
