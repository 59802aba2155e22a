"""``fer``: facial-expression probabilities of the cached faces, and Fusical's 22 values per frame."""

import numpy as np

from gemo.extractors.base import Extractor, register
from gemo.files import sha256_file

# gemo.faces.fer imports torch: loaded on first use, so `gemo --help` and resumed runs stay quick.


def _fer():
    from gemo.faces import fer

    return fer


@register
class FER(Extractor):
    name = "fer"
    # 2: channels-last model, 64 faces per call (float rounding only); 3: per-face
    # `embeddings`, the last hidden layer from the same pass (face-level fusion models)
    version = 3
    description = ("FER2013 mini-XCEPTION on the faces set's aligned crops: 7 expression "
                   "probabilities and a 128-d embedding per face; per frame min/max/mean of "
                   "each probability over faces + count")
    libraries = ("torch", "h5py")
    modules = ("gemo.faces.fer",)
    requires = ("faces",)
    modality = "face"
    uses_device = True

    def __init__(self, **params):
        super().__init__(**params)
        # Found and verified now, so a missing file stops the run before any clip.
        self.weights_file = str(_fer().weights_path())

    def info(self):
        fer = _fer()
        return {"feature_names": fer.feature_names(), "classes": list(fer.FER_CLASSES),
                "weights_sha256": sha256_file(self.weights_file),
                "embedding_layer": "last hidden layer (128 x 4 x 4), averaged over space"}

    def load(self):
        if getattr(self, "_model", None) is None:  # built in the worker, not pickled
            self._model = _fer().load_fer(weights=self.weights_file, device=self.device)

    def compute(self, media, inputs):
        fer = _fer()
        faces = inputs["faces"]
        self.load()
        crops = faces["crops"]
        probs, embeddings = fer.predict(self._model, [fer.fer_input_from_crop(c) for c in crops],
                                        batch_size=self.batch_size, embeddings=True)
        features = fer.frame_features(probs, faces["frame_index"], len(faces["counts"]))
        return {"probs": probs.astype(np.float32), "frame_index": faces["frame_index"],
                "features": features, "embeddings": embeddings.astype(np.float32)}

    def __getstate__(self):
        return {key: value for key, value in self.__dict__.items() if key != "_model"}
