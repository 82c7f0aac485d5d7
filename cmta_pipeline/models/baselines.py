"""The paper's single- and two-modality baselines, trained by the same loop as CMTA.

Genomics only: SNN (all families concatenated), SNNTrans (per-family SNN tokens +
transformer). Pathology only: MeanMIL, MaxMIL (AttMIL, CLAM and TransMIL: ``mil.py``).
Both: DualTrans (a pathology and a genomic transformer, class tokens concatenated); MCAT,
PORPOISE, GPDBN, HFBSurv and M3IF have their own modules.
Every model maps (x_path, x_omics) to the dict of :class:`~.layers.SurvivalHead`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .cmta import SIZES
from .layers import (
    GenomicEmbedding,
    GenomicTransformer,
    PathologyTransformer,
    SurvivalHead,
    as_bag,
    init_weights,
    mlp_relu,
    snn_block,
)


def _need(x, what: str, model: str):
    if x is None:
        raise ValueError(f"{model} needs {what}, got None")
    return x


class SNN(nn.Module):
    """Self-normalising network on the concatenated genomic families (Klambauer 2017).

    As MCAT's reference ``SNN`` (``models/model_genomic.py``): small = 4 blocks of 256
    (Linear, ELU, AlphaDropout .25), large = 1024-1024-1024-256, then Linear -> hazards;
    weights N(0, 1/fan_in), zero biases. ``depth`` sets the number of 256-wide blocks of
    the small model (0 = a linear model on the inputs); ``dropout`` the AlphaDropout rate.
    """

    modalities = ("omics",)

    def __init__(self, omic_sizes: list[int], size: str = "small", n_bins: int = 4,
                 depth: int = 4, dropout: float = 0.25, **_):
        super().__init__()
        hidden = {"small": [256] * depth, "large": [1024, 1024, 1024, 256]}[size]
        dims = [sum(omic_sizes)] + hidden
        self.net = nn.Sequential(*[snn_block(a, b, dropout) for a, b in zip(dims[:-1], dims[1:])])
        self.head = SurvivalHead(dims[-1], n_bins)
        # SELU-style init (std 1/sqrt(fan_in)), as in the SNN paper and MCAT's baseline.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 1 / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)

    def forward(self, x_path, x_omics):
        x = torch.cat(list(_need(x_omics, "genomics", "snn")), dim=0).unsqueeze(0)
        return self.head(self.net(x))


class SNNTrans(nn.Module):
    """Per-family SNN tokens, genomic transformer, class token -> head."""

    modalities = ("omics",)

    def __init__(self, omic_sizes, size="small", n_bins=4, attention="nystrom",
                 short_exact=False, **_):
        super().__init__()
        self.genomic_embedding = GenomicEmbedding(omic_sizes, SIZES["genomics"][size])
        self.genomic_encoder = GenomicTransformer(256, attention, short_exact)
        self.head = SurvivalHead(256, n_bins)
        init_weights(self)

    def forward(self, x_path, x_omics):
        g, _ = self.genomic_encoder(self.genomic_embedding(_need(x_omics, "genomics", "snntrans")))
        return self.head(g)


class _PathologyMIL(nn.Module):
    modalities = ("path",)

    def __init__(self, path_dim=1024, size="small", n_bins=4, dropout=0.25):
        super().__init__()
        hidden = SIZES["pathology"][size]
        self.pathology_embedding = mlp_relu([path_dim] + hidden, dropout)
        self.head = SurvivalHead(hidden[-1], n_bins)

    def embed(self, x_path):
        return self.pathology_embedding(as_bag(_need(x_path, "a feature bag", type(self).__name__)))


class MeanMIL(_PathologyMIL):
    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4, **_):
        super().__init__(path_dim, size, n_bins)
        init_weights(self)

    def forward(self, x_path, x_omics=None):
        return self.head(self.embed(x_path).mean(dim=1))


class MaxMIL(_PathologyMIL):
    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4, **_):
        super().__init__(path_dim, size, n_bins)
        init_weights(self)

    def forward(self, x_path, x_omics=None):
        return self.head(self.embed(x_path).amax(dim=1))


class DualTrans(nn.Module):
    """Pathology and genomic transformers side by side; class tokens concatenated."""

    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4,
                 attention="nystrom", ppeg=True, short_exact=False, **_):
        super().__init__()
        self.pathology_embedding = mlp_relu([path_dim] + SIZES["pathology"][size], 0.25)
        self.genomic_embedding = GenomicEmbedding(omic_sizes, SIZES["genomics"][size])
        self.pathology_encoder = PathologyTransformer(256, attention, ppeg, short_exact)
        self.genomic_encoder = GenomicTransformer(256, attention, short_exact)
        self.fusion = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.head = SurvivalHead(256, n_bins)
        init_weights(self)

    def forward(self, x_path, x_omics):
        p, _ = self.pathology_encoder(self.pathology_embedding(as_bag(_need(x_path, "a feature bag", "dualtrans"))))
        g, _ = self.genomic_encoder(self.genomic_embedding(_need(x_omics, "genomics", "dualtrans")))
        return self.head(self.fusion(torch.cat([p, g], dim=1)))
