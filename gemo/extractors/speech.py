"""``hubert`` and ``wav2vec2``: hidden states of a self-supervised speech transformer.

As Evtodienko et al. used HuBERT: the clip's mono audio at the model's sampling rate
(16 kHz), normalised as the model's feature extractor says (``do_normalize`` in its
``preprocessor_config.json``: zero mean, unit variance per clip), goes through the model in
one pass; the hidden state ``layer`` (0: the transformer's input, 1..L: each layer's output,
-1: the last) is kept, one row per frame (20 ms, about 50 per second). ``pooling=frames``
averages the frames over ``window`` seconds (0.5 s: 10 rows for a 5 s clip, a sequence the
Bi-LSTM reads; 0: every frame); ``pooling=mean`` averages all frames into one vector.

The model is read from a folder, ``weights`` (``-p hubert.weights=DIR``), or else from the
Hugging Face cache; it is never downloaded. transformers comes with the ``speech`` extra
(``pip install 'gemo[speech]'``): gemo's core does not need it. The cache compares the
weights by their SHA-256, not by the folder they were read from. docs/audio.md has more.
"""

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gemo.errors import GemoError
from gemo.extractors.audio import require_finite_rows
from gemo.extractors.base import Extractor, register
from gemo.files import sha256_file
from gemo.options import Options

_INSTALL = "pip install 'gemo[speech]'"
# The masked-prediction embedding is used only in pre-training (never in eval mode):
# a checkpoint without it loads the same network.
_TRAINING_ONLY = {"masked_spec_embed"}


def _installed():
    return importlib.util.find_spec("transformers") is not None


@dataclass(frozen=True)
class SpeechParams(Options):
    """Parameters of the speech transformer sets (each set gives ``model`` its default)."""

    model: str = ""  # Hugging Face model id: names the model and where the cache keeps it
    weights: str = ""  # a folder holding the model's files; "": the Hugging Face cache
    layer: int = -1  # hidden state: 0 the transformer's input, 1..L each layer's output, -1 last
    pooling: Literal["frames", "mean"] = "frames"
    window: float = 0.5  # seconds of frames averaged into one row (frames pooling); 0: none

    def check(self):
        if not self.model:
            return "model must name a Hugging Face model id, e.g. facebook/hubert-base-ls960"
        return "window must be >= 0 (0: every frame)" if self.window < 0 else None


class SpeechTransformer(Extractor):
    """One speech transformer family of transformers (``model_class``, ``model_type``)."""

    model_class = ""  # the transformers class, e.g. HubertModel
    model_type = ""  # what the folder's config.json must say, e.g. hubert
    libraries = ("transformers", "torch", "av")
    modality = "audio"
    uses_device = True  # one forward pass per clip: --batch-size does not apply
    DESCRIPTION = ("{} hidden states (transformers; pip install 'gemo[speech]'), mono 16 kHz: "
                   "mean over 0.5 s windows of 20 ms frames, or over the clip")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Pool workers' fork server imports the model's module once for all of them, when
        # transformers is installed (every listed module must import).
        cls.modules = ((f"transformers.models.{cls.model_type}.modeling_{cls.model_type}",)
                       if _installed() else ())

    def __init__(self, **params):
        super().__init__(**params)
        if not _installed():
            raise GemoError(f"the {self.name} feature set needs transformers: {_INSTALL}")
        # Found and checked now, so a missing model stops the run before any clip.
        self.folder = _model_folder(self.name, self.params.model, self.params.weights)
        self.config = _read_json(self.folder, "config.json", self.params.model)
        preprocessor = _read_json(self.folder, "preprocessor_config.json", self.params.model)
        self.sample_rate = int(preprocessor.get("sampling_rate", 16000))
        self.do_normalize = bool(preprocessor.get("do_normalize", True))
        if self.config.get("model_type") != self.model_type:
            raise GemoError(f"{self.folder} holds a {self.config.get('model_type')} model, not "
                            f"{self.model_type}: use the {self.config.get('model_type')} set "
                            f"or another {self.name}.weights folder")
        layers = int(self.config["num_hidden_layers"])
        if not -(layers + 1) <= self.params.layer <= layers:
            raise GemoError(f"{self.name}.layer={self.params.layer}: {self.params.model} has "
                            f"{layers} layers (0: the transformer's input, {layers} or -1: the "
                            "last)")
        self.weight_files = _weight_files(self.folder, self.params.model)
        self._digests = None
        self._model = None

    def __getstate__(self):
        return {**self.__dict__, "_model": None}  # each worker loads its own

    @property
    def frame_rate(self):
        """Model frames per second: the sampling rate over the convolutions' total stride."""
        return self.sample_rate / float(np.prod(self.config["conv_stride"]))

    def frames_per_row(self):
        """How many model frames one stored row averages (``pooling=frames``)."""
        return max(1, round(self.params.window * self.frame_rate))

    def provenance(self):
        provenance = super().provenance()
        # Where the files are is not what they are: the cache compares their SHA-256 instead.
        del provenance["params"]["weights"]
        provenance["params"]["weights_sha256"] = self.weights_sha256()
        return provenance

    def weights_sha256(self):
        """``{file name: SHA-256}`` of the weight files the model is loaded from."""
        if self._digests is None:
            self._digests = {path.name: sha256_file(path) for path in self.weight_files}
        return self._digests

    def info(self):
        rows_per_second = (self.frame_rate / self.frames_per_row()
                           if self.params.pooling == "frames" else None)
        return {"folder": str(self.folder), "hidden_size": int(self.config["hidden_size"]),
                "num_hidden_layers": int(self.config["num_hidden_layers"]),
                "sample_rate": self.sample_rate, "do_normalize": self.do_normalize,
                "frame_rate": self.frame_rate, "rows_per_second": rows_per_second}

    def load(self):
        if self._model is not None:
            return
        import transformers

        from gemo.device import resolve_device

        transformers.utils.logging.disable_progress_bar()  # gemo shows its own progress
        verbosity = transformers.logging.get_verbosity()
        # Its load report lists the pre-training heads a base model leaves out (wav2vec2-base):
        # expected; tensors the network needs and the file lacks are checked below instead.
        transformers.logging.set_verbosity_error()
        try:
            model, loading = getattr(transformers, self.model_class).from_pretrained(
                self.folder, local_files_only=True, output_loading_info=True)
        finally:
            transformers.logging.set_verbosity(verbosity)
        missing = sorted(set(loading["missing_keys"]) - _TRAINING_ONLY)
        if missing:
            raise GemoError(f"{self.folder}: the weights lack {len(missing)} tensor(s) of "
                            f"{self.model_class}, e.g. {', '.join(missing[:3])}: not "
                            f"{self.params.model}'s weights")
        self._model = model.eval().to(resolve_device(self.device))

    def compute(self, media):
        import torch

        self.load()
        signal = np.array(media.audio(sample_rate=self.sample_rate), np.float32)
        if self.do_normalize:  # as transformers' Wav2Vec2FeatureExtractor does
            signal = (signal - signal.mean()) / np.sqrt(signal.var() + 1e-7)
        device = next(self._model.parameters()).device
        with torch.inference_mode():
            output = self._model(torch.from_numpy(signal)[None].to(device),
                                 output_hidden_states=True)
        frames = output.hidden_states[self.params.layer][0].float().cpu().numpy()
        return {"features": require_finite_rows(self.pool(frames))}

    def pool(self, frames):
        """``[T, hidden]`` model frames -> the stored rows (see the module docstring)."""
        if self.params.pooling == "mean":
            return frames.mean(axis=0)
        size = self.frames_per_row()
        starts = np.arange(0, len(frames), size)
        counts = np.diff(np.append(starts, len(frames)))  # the last window may be shorter
        return (np.add.reduceat(frames, starts, axis=0) / counts[:, None]).astype(np.float32)


def _model_folder(name, model, weights):
    """The folder holding ``model``: ``weights`` if given, else its Hugging Face cache snapshot."""
    if weights:
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise GemoError(f"{name}.weights={weights} is not a folder: give the folder holding "
                            f"{model}'s files (hf download {model} --local-dir DIR)")
        return folder
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # local_files_only: looked up in the cache, never on the network
        return Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        raise GemoError(f"{name}: {model} is not in the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}) and gemo never downloads it: run "
                        f"`hf download {model}` on a machine with network and copy the cache, "
                        f"or pass -p {name}.weights=DIR (a folder holding its files)") from None
    except ValueError as error:  # not a valid model id
        raise GemoError(f"{name}.model={model}: {error}") from None


def _read_json(folder, filename, model):
    path = folder / filename
    if not path.is_file():
        raise GemoError(f"{folder} has no {filename}: the folder must hold {model}'s config.json, "
                        f"preprocessor_config.json and weights (hf download {model})")
    return json.loads(path.read_text())


def _weight_files(folder, model):
    """The files transformers loads the weights from (safetensors first, as it does)."""
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise GemoError(f"{folder} has no model.safetensors or pytorch_model.bin: download "
                        f"{model}'s weights into it (hf download {model})")
    return files


@register
class Hubert(SpeechTransformer):
    name = "hubert"
    description = SpeechTransformer.DESCRIPTION.format("HuBERT")
    model_class = "HubertModel"
    model_type = "hubert"

    @dataclass(frozen=True)
    class Params(SpeechParams):
        model: str = "facebook/hubert-base-ls960"


@register
class Wav2Vec2(SpeechTransformer):
    name = "wav2vec2"
    description = SpeechTransformer.DESCRIPTION.format("wav2vec 2.0")
    model_class = "Wav2Vec2Model"
    model_type = "wav2vec2"

    @dataclass(frozen=True)
    class Params(SpeechParams):
        model: str = "facebook/wav2vec2-base"
