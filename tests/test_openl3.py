"""The ``openl3`` feature set and its network (``gemo.audio.openl3``).

The real weights (torchopenl3's files) are never needed: the tests save a network of
random weights in the port's layout (a plain state dict in a ``.pth.tar``) under the
official file name in $GEMO_HOME, so shapes, loading and bookkeeping are checked, not
the embeddings' quality. The state-dict names and shapes below are those of
torchopenl3's ``PytorchOpenl3`` (its models.py), written out here as the contract.
"""

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_clip

from gemo import extractors, pretrained
from gemo.audio import openl3
from gemo.audio.mel import filterbank
from gemo.audio.openl3 import OpenL3, frame
from gemo.errors import GemoError
from gemo.extraction import extract
from gemo.workspace import Workspace


def _checkpoint(path, repr="mel128", size=512):
    """A random network saved as torchopenl3 saves its files: ``torch.save(state_dict)``."""
    torch.manual_seed(0)
    net = OpenL3(repr, size)
    for module in net.modules():  # running statistics other than 0 and 1, as trained ones
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("repr, freq, fft", [("linear", 257, 512), ("mel128", 128, 2048),
                                              ("mel256", 256, 2048)])
def test_state_dict_has_the_torchopenl3_names_and_shapes(repr, freq, fft):
    expected = {"speclayer.dft_real_kernels": (fft // 2 + 1, 1, fft),
                "speclayer.dft_imag_kernels": (fft // 2 + 1, 1, fft)}
    if repr != "linear":
        expected["speclayer.mel_basis"] = (freq, fft // 2 + 1)
    widths = [1, 64, 64, 128, 128, 256, 256, 512, 512]
    for i in range(1, 9):
        for name in ("weight", "bias", "running_mean", "running_var"):
            expected[f"batch_normalization_{i}.{name}"] = (widths[i - 1],)
        expected[f"batch_normalization_{i}.num_batches_tracked"] = ()
    for i in range(1, 8):
        expected[f"conv2d_{i}.weight"] = (widths[i], widths[i - 1], 3, 3)
        expected[f"conv2d_{i}.bias"] = (widths[i],)
    expected["audio_embedding_layer.weight"] = (512, 512, 3, 3)
    expected["audio_embedding_layer.bias"] = (512,)
    for size in (512, 6144):
        state = OpenL3(repr, size).state_dict()
        assert {key: tuple(value.shape) for key, value in state.items()} == expected


@pytest.mark.parametrize("repr", openl3.REPRS)
def test_spectrogram_frames_and_final_pools_give_512_and_6144(repr):
    spectrogram = OpenL3(repr, 512).speclayer(torch.zeros(1, openl3.WINDOW))
    freq, time = spectrogram.shape[2:]
    assert (freq, time) == {"linear": (257, 197), "mel128": (128, 199), "mel256": (256, 199)}[repr]
    cells = (freq // 8, time // 8)  # after three 2 x 2 max-pools
    assert openl3.POOLS[repr, 512] == cells  # one cell of 512 channels
    assert tuple(c // p for c, p in zip(cells, openl3.POOLS[repr, 6144])) == (4, 3)  # 12 x 512


def test_front_ends_match_torch_stft():
    """The DFT-kernel convolution is a periodic-Hann STFT; mel input is "same"-padded."""
    torch.manual_seed(1)
    audio = torch.randn(2, openl3.WINDOW) * 0.1

    def reference(x, n_fft, pad):
        x = F.pad(x, pad)
        spec = torch.stft(x.double(), n_fft, openl3.HOP, window=torch.hann_window(n_fft).double(),
                          center=False, return_complex=True)
        return spec.abs() ** 2

    def decibels(power):
        db = 10 * torch.log10(power.sqrt().clamp(min=1e-10))
        return (db - db.amax(dim=(1, 2), keepdim=True)).clamp(min=-80).float()

    linear = OpenL3("linear", 512).speclayer(audio)[:, 0]
    expected = decibels(reference(audio, 512, (0, 0)))
    torch.testing.assert_close(linear, expected, atol=1e-2, rtol=0)  # dB
    mel = OpenL3("mel128", 512).speclayer
    power = reference(audio, 2048, (982, 982))  # 199 frames: (199 - 1) * 242 + 2048 - 48000
    expected = decibels(torch.matmul(mel.mel_basis.double(), power))
    torch.testing.assert_close(mel(audio)[:, 0], expected, atol=1e-2, rtol=0)  # dB


def test_mel_filters_are_htk_triangles_of_unit_area():
    rate, n_fft = openl3.SAMPLE_RATE, 2048
    bank = filterbank(rate, n_fft, 128, 0.0, rate / 2, unit_area=True).astype(np.float64)
    hz = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 24000 / 700), 130) / 2595) - 1)
    wide = (edges[2:] - edges[:-2]) > 20 * (hz[1] - hz[0])  # well sampled by the FFT bins
    assert wide.sum() > 30
    np.testing.assert_allclose((bank.sum(1) * (hz[1] - hz[0]))[wide], 1.0, rtol=0.02)
    peaks = hz[bank.argmax(1)]
    assert np.all(np.abs(peaks - edges[1:-1])[wide] <= hz[1] - hz[0])
    assert bank.min() >= 0 and np.all(np.diff(peaks) >= 0)


def test_6144_embedding_flattens_frequency_time_channel():
    torch.manual_seed(2)
    net = OpenL3("mel128", 6144).eval()
    audio = torch.randn(1, openl3.WINDOW) * 0.1
    with torch.no_grad():
        pooled = F.max_pool2d(net.feature_map(audio), openl3.POOLS["mel128", 6144])[0]
        embedding = net(audio)[0]
    assert pooled.shape == (512, 4, 3) and embedding.shape == (6144,)
    for channel, row, column in [(0, 0, 0), (5, 0, 1), (511, 3, 2), (100, 2, 0)]:
        assert embedding[channel + 512 * (column + 3 * row)] == pooled[channel, row, column]


@pytest.mark.parametrize("samples, center, count", [
    (240_000, True, 10), (240_001, True, 11), (264_000, True, 11), (28_800, True, 2),
    (28_800, False, 1), (96_000, False, 3), (10, True, 1)])
def test_windows_are_cut_as_openl3_cuts_them(samples, center, count):
    signal = np.arange(1, samples + 1, dtype=np.float32)
    windows = frame(signal, hop=24_000, center=center)
    assert windows.shape == (count, openl3.WINDOW)
    start = -24_000 if center else 0  # centred: half a window of zeros first
    for i in range(count):
        first = start + i * 24_000
        expected = np.where((np.arange(first, first + 48_000) >= 0)
                            & (np.arange(first, first + 48_000) < samples),
                            np.arange(first, first + 48_000) + 1, 0)
        np.testing.assert_array_equal(windows[i], expected)


def test_weights_are_registered_per_combination_with_the_port_url():
    names = [name for name in pretrained.available() if name.startswith("openl3.")]
    assert len(names) == 12
    item = pretrained.get("openl3.mel256.music.6144")
    assert item.filename == "torchopenl3_mel256_music_6144.pth.tar"
    assert item.url == ("https://github.com/torchopenl3/torchopenl3-models/raw/master/"
                        "torchopenl3_mel256_music_6144.pth.tar")
    assert item.download and item.sha256 is None  # no published hash: checked by loading
    assert "MIT" in item.licence


def test_missing_weights_stop_the_set_before_any_clip(home):
    with pytest.raises(GemoError) as error:
        extractors.create("openl3", repr="linear", content="env", size=512)
    message = str(error.value)
    assert "torchopenl3_linear_env_512.pth.tar" in message and str(home) in message
    assert "torchopenl3-models/raw/master/torchopenl3_linear_env_512.pth.tar" in message


def test_a_file_that_does_not_fit_is_refused(home):
    torch.save({"conv2d_1.weight": torch.zeros(3)}, home / "torchopenl3_mel128_env_512.pth.tar")
    with pytest.raises(GemoError, match="does not fit the OpenL3 network"):
        extractors.create("openl3", repr="mel128", content="env", size=512).load()


def test_openl3_set_extracts_an_embedding_per_window_and_records_its_weights(home, tmp_path):
    """Through `gemo extract`: the checkpoint found in $GEMO_HOME under its official name,
    ~11 rows of 512 for a 5 s clip, provenance naming the file and its SHA-256, a clip
    without audio recorded as such."""
    weights = _checkpoint(home / "torchopenl3_mel128_env_512.pth.tar")
    make_clip(tmp_path / "voice.mp4", seconds=5.2, fps=5, size=(32, 24))
    make_clip(tmp_path / "silent.mp4", seconds=1.0, fps=5, size=(32, 24), audio=False)
    (tmp_path / "list.csv").write_text(
        "path,split,label\nvoice.mp4,train,Positive\nsilent.mp4,train,Negative\n")
    workspace = Workspace(tmp_path / "ws")
    [report] = extract(workspace=workspace, dataset=tmp_path / "list.csv", sets=["openl3"],
                       params={"openl3": {"repr": "mel128", "content": "env", "size": 512}},
                       workers=1, progress=False, device="cpu")
    assert report.extracted == 1 and report.failed["silent"]["kind"] == "no-audio"
    with h5py.File(workspace.cache_path("openl3")) as f:
        info = json.loads(f.attrs["info"])
        assert info["weights"] == "openl3.mel128.env.512"
        assert info["weights_file"] == str(weights)
        assert info["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert info["sample_rate"] == 48000
        assert json.loads(f.attrs["params"])["hop"] == 0.5
        clip = f["clips"]["voice"]
        features, timestamps = clip["features"][()], clip["timestamps"][()]
    assert features.shape == (11, 512) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std(axis=0).max() > 0
    np.testing.assert_allclose(timestamps, np.arange(11) * 0.5)
