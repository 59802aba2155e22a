"""Variational-autoencoder fusion (Fusical, sections 7.2.3 and 8.3.1).

Fusical fed "the same concatenated hidden layers used by the fully-connected ensembling
approach" (the models' embeddings) into a VAE whose cost was "the sum of the reconstruction
loss and the KL-sampling loss", kept 20 latent dimensions, trained it for 200 epochs and
"fed these z encodings into a fully-connected classifier". It scored F1 .276 on VGAF val,
against .626 for the FC fusion (Table 2). The paper gives no layer sizes, reconstruction
loss, optimiser or classifier details; gemo's choices for them (docs/fusion-and-evaluation.md):

* inputs standardised per column; encoder ``D -> hidden (ReLU) -> 2 x latent`` (mean and log
  variance), decoder ``latent -> hidden (ReLU) -> D``; squared-error reconstruction summed
  over the inputs plus the KL divergence to N(0, I); Adam, learning rate 1e-3, batches of
  256, no labels;
* each clip's encoding is the encoder's mean (no sampling), and the classifier is the
  ``fc`` fuser (one ReLU layer) on the encodings.

A fusion table of this method carries the encodings as its embeddings, so
``gemo evaluate --embedding-maps`` draws Fusical's Figure 9 (t-SNE of the latent space).
"""

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from gemo.fusion.base import Fuser, register
from gemo.fusion.fc import FCFuser

BATCH = 256


@register
class VAEFuser(Fuser):
    """A VAE of ``latent`` dimensions (``hidden`` units each side) trained ``epochs`` epochs on
    the embeddings alone, then the fc fuser on the encodings.

    After ``fit``: ``scaler_``, ``encoder_`` (the encoder's weights, numpy), ``classifier_``
    and ``loss_`` (the last epoch's mean reconstruction and KL terms per clip).
    """

    name = "vae"
    description = "VAE encodings of the models' embeddings -> fc classifier (Fusical)"
    inputs = ("embeddings",)

    def __init__(self, latent=20, hidden=64, epochs=200, learning_rate=1e-3, seed=0):
        self.latent = latent
        self.hidden = hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed

    def _fit(self, X, y, groups):
        self.scaler_ = StandardScaler().fit(X)
        x = torch.tensor(self.scaler_.transform(X), dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):  # seeded here, the caller's stream untouched
            torch.manual_seed(self.seed)
            encoder, self.loss_ = _train_vae(x, int(self.latent), int(self.hidden),
                                             int(self.epochs), float(self.learning_rate))
        self.encoder_ = [(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy())
                         for layer in encoder if isinstance(layer, nn.Linear)]
        self.classifier_ = FCFuser(seed=self.seed).fit(self.transform(X), y)

    def transform(self, X):
        """Each row's encoding: the encoder's mean ``[N, latent]``."""
        h = self.scaler_.transform(np.asarray(X, dtype=np.float64))
        (w1, b1), (w2, b2) = self.encoder_
        h = np.maximum(h @ w1.T + b1, 0)
        return (h @ w2.T + b2)[:, : int(self.latent)]

    def _proba(self, X):
        return self.classifier_.predict_proba(self.transform(X))


def _train_vae(x, latent, hidden, epochs, learning_rate):
    """``(encoder, {"reconstruction", "kl"})`` of a VAE trained on the rows of ``x``."""
    width = x.shape[1]
    encoder = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
    decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, width))
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()],
                                 lr=learning_rate)
    for _ in range(epochs):
        totals = np.zeros(2)
        for rows in torch.randperm(len(x)).split(BATCH):
            batch = x[rows]
            mean, log_var = encoder(batch).chunk(2, dim=1)
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
            reconstruction = ((decoder(z) - batch) ** 2).sum(1).mean()
            kl = (-0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1)).mean()
            optimizer.zero_grad()
            (reconstruction + kl).backward()
            optimizer.step()
            totals += np.array([reconstruction.item(), kl.item()]) * len(rows)
    reconstruction, kl = totals / len(x)
    return encoder, {"reconstruction": round(reconstruction, 4), "kl": round(kl, 4)}
