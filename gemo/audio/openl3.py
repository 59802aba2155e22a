"""OpenL3 audio embeddings (Cramer et al., ICASSP 2019), rebuilt in PyTorch.

The network is the one of the ``openl3`` package (Keras), laid out so that the
weight files of its PyTorch port torchopenl3 load unchanged: same module names
(``speclayer``, ``batch_normalization_1..8``, ``conv2d_1..7``,
``audio_embedding_layer``), same tensor shapes, the spectrogram's DFT kernels
and mel filters stored as buffers in the state dict. One file per input
representation, content and embedding size: ``openl3.<repr>.<content>.<size>``
(``gemo weights fetch openl3.mel256.music.6144``).

Input: windows of 1 s of mono audio at 48 kHz, ``[batch, 48000]``. Output:
``[batch, 512]`` or ``[batch, 6144]``.

>>> net = load_openl3("mel256", "music", 6144)             # doctest: +SKIP
>>> embed(net, frame(signal_48k, hop=24000)).shape          # doctest: +SKIP
(11, 6144)
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gemo import pretrained
from gemo.audio import mel

SAMPLE_RATE = 48000
WINDOW = SAMPLE_RATE  # samples: the network reads 1 s
HOP = 242  # samples between spectrogram frames
REPRS = ("linear", "mel128", "mel256")
CONTENTS = ("env", "music")
SIZES = (512, 6144)
# The last max-pool of the 512-channel map, per input representation and embedding size:
# 1 x 1 (512) or 4 x 3 (6144) cells remain.
POOLS = {
    ("linear", 512): (32, 24), ("linear", 6144): (8, 8),
    ("mel128", 512): (16, 24), ("mel128", 6144): (4, 8),
    ("mel256", 512): (32, 24), ("mel256", 6144): (8, 8),
}
URL = "https://github.com/torchopenl3/torchopenl3-models/raw/master/"


def weights_name(repr, content, size):
    """The weight manager's name of one model, e.g. ``openl3.mel256.music.6144``."""
    return f"openl3.{repr}.{content}.{size}"


def _register_weights():
    # torchopenl3 publishes no checksum: the files are checked by loading them into the network.
    for repr in REPRS:
        for content in CONTENTS:
            for size in SIZES:
                filename = f"torchopenl3_{repr}_{content}_{size}.pth.tar"
                pretrained.register(pretrained.WeightFile(
                    weights_name(repr, content, size), filename, None, URL + filename,
                    description=f"OpenL3 audio, {repr} input, trained on {content} videos, "
                                f"{size}-d (torchopenl3 port of the openl3 Keras weights)",
                    licence="MIT (openl3); Apache-2.0 (torchopenl3-models port)", download=True))


_register_weights()


def dft_kernels(n_fft):
    """Real and imaginary DFT filters ``[n_fft // 2 + 1, 1, n_fft]``, periodic-Hann windowed
    (kapre 0.1.4's STFT as a 1-D convolution)."""
    n = np.arange(n_fft)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)).astype(np.float32)
    phase = 2 * np.pi * np.outer(np.arange(n_fft // 2 + 1), n) / n_fft
    real, imag = np.cos(phase) * window, -np.sin(phase) * window
    return (torch.from_numpy(real.astype(np.float32)).unsqueeze(1),
            torch.from_numpy(imag.astype(np.float32)).unsqueeze(1))


class Spectrogram(nn.Module):
    """1 s of audio -> ``[batch, 1, freq, time]`` log magnitudes, as OpenL3's kapre front end.

    linear: 257 bins of a 512-point STFT, 197 frames (no padding). mel128 / mel256: a
    2048-point STFT "same"-padded to 199 frames, then mel filters on the power, square
    root. Then 10 log10 of the magnitude, minus each window's maximum, floored at -80 dB.
    """

    def __init__(self, repr):
        super().__init__()
        n_fft = 512 if repr == "linear" else 2048
        real, imag = dft_kernels(n_fft)
        self.register_buffer("dft_real_kernels", real)
        self.register_buffer("dft_imag_kernels", imag)
        bank = None if repr == "linear" else mel.filterbank(
            SAMPLE_RATE, n_fft, int(repr[3:]), 0.0, SAMPLE_RATE / 2, unit_area=True)
        self.register_buffer("mel_basis", None if bank is None else torch.from_numpy(bank.copy()))

    def forward(self, audio):
        x = audio.unsqueeze(1)  # [batch, 1, samples]
        n_fft = self.dft_real_kernels.shape[-1]
        if self.mel_basis is not None:  # Keras "same" padding: ceil(samples / hop) frames
            frames = math.ceil(x.shape[-1] / HOP)
            pad = max((frames - 1) * HOP + n_fft - x.shape[-1], 0)
            x = F.pad(x, (pad // 2, pad - pad // 2))
        real = F.conv1d(x, self.dft_real_kernels, stride=HOP)
        imag = F.conv1d(x, self.dft_imag_kernels, stride=HOP)
        power = real ** 2 + imag ** 2  # [batch, freq, time]
        if self.mel_basis is not None:
            power = torch.matmul(self.mel_basis, power)
        decibels = 10.0 * torch.log10(torch.sqrt(power).clamp(min=1e-10))
        decibels = decibels - decibels.amax(dim=(1, 2), keepdim=True)
        return decibels.clamp(min=-80.0).unsqueeze(1)


class OpenL3(nn.Module):
    """The OpenL3 audio network: batch-normalised spectrogram, four blocks of two 3 x 3
    convolutions (64, 128, 256, 512 channels; batch norm and ReLU after each but the last),
    2 x 2 max-pools between blocks, a final max-pool and a channels-last flatten."""

    def __init__(self, repr="mel256", size=6144):
        super().__init__()
        if repr not in REPRS or size not in SIZES:
            raise ValueError(f"OpenL3 takes repr in {REPRS} and size in {SIZES}")
        self.pool = POOLS[repr, size]
        self.speclayer = Spectrogram(repr)
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=1e-3)  # Keras' epsilon
        widths = [1, 64, 64, 128, 128, 256, 256, 512]
        for i in range(1, 8):
            setattr(self, f"conv2d_{i}", nn.Conv2d(widths[i - 1], widths[i], 3, padding=1))
            setattr(self, f"batch_normalization_{i + 1}", nn.BatchNorm2d(widths[i], eps=1e-3))
        self.audio_embedding_layer = nn.Conv2d(512, 512, 3, padding=1)

    def feature_map(self, audio):
        """``[batch, 512, freq / 8, time / 8]``: the map the embedding is pooled from."""
        x = self.batch_normalization_1(self.speclayer(audio))
        for i in range(1, 8):
            conv, norm = getattr(self, f"conv2d_{i}"), getattr(self, f"batch_normalization_{i + 1}")
            x = F.relu(norm(conv(x)))
            if i in (2, 4, 6):
                x = F.max_pool2d(x, 2)
        return self.audio_embedding_layer(x)

    def forward(self, audio):
        pooled = F.max_pool2d(self.feature_map(audio), self.pool)
        return pooled.permute(0, 2, 3, 1).flatten(1)  # Keras' Flatten of (freq, time, channel)


def load_openl3(repr, content, size, *, weights=None, device="cpu"):
    """The network with its weights, in eval mode on ``device`` (may be ``auto``); ``weights``
    is a file, a folder holding it, or None for the search order of :mod:`gemo.pretrained`."""
    from gemo.device import resolve_device

    state, source = pretrained.resolve([weights_name(repr, content, size)], weights=weights)
    net = OpenL3(repr, size)
    pretrained.check_state_dict(state, net, source=source["file"])
    net.load_state_dict(state)
    return net.eval().to(resolve_device(device))


def frame(signal, *, hop, center=True):
    """``[windows, 48000]`` windows of 1 s every ``hop`` samples, as OpenL3 frames a clip.

    ``center`` puts half a window of zeros first, so window ``i`` is centred on
    ``i * hop``; the end is padded with zeros to fill the last window.
    """
    signal = np.asarray(signal, np.float32)
    if center:
        signal = np.concatenate([np.zeros(WINDOW // 2, np.float32), signal])
    count = 1 + max(0, math.ceil((len(signal) - WINDOW) / hop))
    signal = np.pad(signal, (0, max(0, (count - 1) * hop + WINDOW - len(signal))))
    return np.lib.stride_tricks.sliding_window_view(signal, WINDOW)[::hop][:count]


@torch.no_grad()
def embed(net, windows, *, batch_size=0):
    """``[windows, size]`` float32 embeddings, ``batch_size`` windows per call (0: 8 on CPU,
    where a mel256 window's activations take 50 MB, and 256 on a GPU)."""
    device = next(net.buffers()).device
    batch_size = batch_size or (256 if device.type == "cuda" else 8)
    out = [net(torch.from_numpy(np.ascontiguousarray(windows[i:i + batch_size])).to(device)).cpu()
           for i in range(0, len(windows), batch_size)]
    return torch.cat(out).numpy().astype(np.float32, copy=False)
