"""The ``hubert`` and ``wav2vec2`` sets, on tiny models the tests build and save."""

import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_clip

from gemo import extractors
from gemo.cache.store import CacheMismatch, FeatureCache
from gemo.data.media import read_audio
from gemo.errors import GemoError
from gemo.extraction import extract
from gemo.workspace import Workspace

HIDDEN = 32


@pytest.fixture(scope="session")
def transformers():
    return pytest.importorskip("transformers")


def save_tiny(transformers, folder, kind, seed=0):
    """A 2-layer model with a 32-wide hidden state and the base models' 320-sample stride
    (50 frames per second at 16 kHz), saved with its feature extractor's config."""
    import torch

    config_class, model_class = {"hubert": ("HubertConfig", "HubertModel"),
                                 "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model")}[kind]
    config = getattr(transformers, config_class)(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 16), conv_kernel=(10, 4, 16),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(seed)
    getattr(transformers, model_class)(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(transformers, tmp_path_factory):
    """``{"hubert": folder, "wav2vec2": folder}`` of tiny saved models."""
    root = tmp_path_factory.mktemp("speech")
    return {kind: save_tiny(transformers, root / kind, kind) for kind in ("hubert", "wav2vec2")}


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("speech-clip") / "tone.mp4", seconds=5.0)


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_frames_are_averaged_over_half_second_windows(tiny, clip, kind):
    every = extractors.create(kind, weights=str(tiny[kind]), window=0.0).extract(clip)["features"]
    assert every.shape[1] == HIDDEN and abs(len(every) - 5 * 50) <= 2  # 20 ms frames
    windows = extractors.create(kind, weights=str(tiny[kind])).extract(clip)["features"]
    assert windows.shape == (10, HIDDEN) and windows.dtype == np.float32  # 5 s in 0.5 s windows
    assert np.isfinite(windows).all()
    np.testing.assert_allclose(windows[0], every[:25].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(windows[-1], every[225:].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_mean_pooling_is_the_mean_of_the_frames(tiny, clip):
    every = extractors.create("hubert", weights=str(tiny["hubert"]), window=0.0).extract(clip)
    mean = extractors.create("hubert", weights=str(tiny["hubert"]), pooling="mean").extract(clip)
    assert mean["features"].shape == (HIDDEN,)
    np.testing.assert_allclose(mean["features"], every["features"].mean(axis=0), rtol=1e-5,
                               atol=1e-6)


def test_layer_picks_the_hidden_state(transformers, tiny, clip):
    """Layer -1 is the model's last hidden state, given normalised input as its feature
    extractor prepares it; another layer gives other values."""
    import torch

    def frames(layer):
        return extractors.create("hubert", weights=str(tiny["hubert"]), window=0.0,
                                 layer=layer).extract(clip)["features"]

    prepare = transformers.Wav2Vec2FeatureExtractor.from_pretrained(tiny["hubert"])
    inputs = prepare(read_audio(clip, sample_rate=16000), sampling_rate=16000,
                     return_tensors="pt").input_values
    with torch.inference_mode():
        expected = transformers.HubertModel.from_pretrained(tiny["hubert"])(inputs)
    np.testing.assert_allclose(frames(-1), expected.last_hidden_state[0].numpy(), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(frames(-1), frames(2))
    assert not np.allclose(frames(1), frames(-1), atol=1e-3)
    with pytest.raises(GemoError, match=r"hubert.layer=3: .* has 2 layers"):
        extractors.create("hubert", weights=str(tiny["hubert"]), layer=3)


def test_a_clip_without_audio_is_recorded_as_such(transformers, tiny, tmp_path):
    """Through the runner: provenance holds the weights' SHA-256, not their folder, so a copy
    elsewhere resumes the cache and other weights are refused."""
    media = tmp_path / "media"
    media.mkdir()
    make_clip(media / "tone.mp4", seconds=2.0)
    make_clip(media / "silent_film.mp4", seconds=2.0, audio=False)
    (tmp_path / "list.csv").write_text(
        "path,split,label\nmedia/tone.mp4,train,1\nmedia/silent_film.mp4,train,2\n")
    workspace = Workspace(tmp_path / "ws")

    def run(weights):
        [report] = extract(workspace=workspace, dataset=tmp_path / "list.csv", sets=["hubert"],
                           params={"hubert": {"weights": str(weights)}}, workers=1,
                           progress=False)
        return report

    report = run(tiny["hubert"])
    assert report.extracted == 1 and report.failed["silent_film"]["kind"] == "no-audio"
    with FeatureCache(workspace.cache_path("hubert")) as cache:
        params = cache.params
        assert cache.read("tone")["features"].shape == (4, HIDDEN)  # 2 s in 0.5 s windows
    assert "weights" not in params and params["model"] == "facebook/hubert-base-ls960"
    digest = params["weights_sha256"]["model.safetensors"]
    assert len(digest) == 64 and (params["layer"], params["pooling"]) == (-1, "frames")
    copy = shutil.copytree(tiny["hubert"], tmp_path / "copy")
    assert run(copy).skipped == 1
    other = save_tiny(transformers, tmp_path / "other", "hubert", seed=1)
    with pytest.raises(CacheMismatch, match="weights_sha256"):
        run(other)


def test_a_model_in_the_hugging_face_cache_is_found_offline(tiny, clip, monkeypatch, tmp_path):
    from huggingface_hub import constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--gemo--tiny-hubert"
    shutil.copytree(tiny["hubert"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    extractor = extractors.create("hubert", model="gemo/tiny-hubert", pooling="mean")
    assert extractor.folder == repo / "snapshots" / commit
    assert extractor.extract(clip)["features"].shape == (HIDDEN,)


def test_a_missing_model_is_one_line_naming_it_and_where_to_get_it(transformers, monkeypatch,
                                                                   tmp_path):
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(GemoError) as error:
        extractors.create("wav2vec2")
    message = str(error.value)
    assert "\n" not in message
    for part in ("facebook/wav2vec2-base", str(tmp_path / "hub"),
                 "hf download facebook/wav2vec2-base", "-p wav2vec2.weights=DIR"):
        assert part in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(GemoError, match=r"empty has no config.json"):
        extractors.create("hubert", weights=str(tmp_path / "empty"))


def test_a_folder_of_the_other_family_is_refused(tiny):
    with pytest.raises(GemoError, match="holds a wav2vec2 model, not hubert"):
        extractors.create("hubert", weights=str(tiny["wav2vec2"]))


def test_weights_that_do_not_fit_are_refused(tiny, tmp_path, clip):
    """A file with another network's tensors must not load as a randomly initialised model."""
    from safetensors.torch import save_file
    import torch

    folder = shutil.copytree(tiny["hubert"], tmp_path / "wrong")
    save_file({"unrelated.weight": torch.zeros(2)}, str(folder / "model.safetensors"))
    with pytest.raises(GemoError, match="the weights lack .* tensor"):
        extractors.create("hubert", weights=str(folder)).extract(clip)


def test_without_transformers_gemo_works_and_the_sets_say_what_to_install():
    """gemo's core never imports transformers; the sets stay listed and ask for the extra."""
    script = (
        "import sys\n"
        "sys.modules['transformers'] = None\n"  # as if not installed: its import fails
        "import gemo.cli, gemo.api\n"
        "from gemo import extractors\n"
        "assert {'hubert', 'wav2vec2'} <= set(extractors.available())\n"
        "try:\n"
        "    extractors.create('hubert')\n"
        "except Exception as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout == ("the hubert feature set needs transformers: "
                             "pip install 'gemo[speech]'\n")


def test_the_list_of_sets_shows_the_extra_to_install():
    from click.testing import CliRunner

    from gemo.cli import cli

    result = CliRunner().invoke(cli, ["extract", "--list-sets"], terminal_width=400)
    line = next(line for line in result.output.splitlines() if line.startswith("hubert (audio)"))
    assert "pip install 'gemo[speech]'" in line  # not taken for markup


def test_the_pooling_and_window_are_checked():
    with pytest.raises(GemoError, match="not one of frames, mean"):
        extractors.get("hubert").Params.parse({"pooling": "max"}, owner="hubert")
    with pytest.raises(GemoError, match="window must be >= 0"):
        extractors.get("hubert").Params.parse({"window": "-1"}, owner="hubert")
    assert extractors.get("wav2vec2").Params.defaults() == {
        "model": "facebook/wav2vec2-base", "weights": "", "layer": -1, "pooling": "frames",
        "window": 0.5}
