"""The paper's single- and two-modality baselines, trained by the same loop as CMTA.

Genomics only: SNN (all families concatenated), SNNTrans (per-family SNN tokens +
transformer). Pathology only: MeanMIL, MaxMIL, AttMIL (gated attention), TransMIL.
Both: DualTrans (a pathology and a genomic transformer, class tokens concatenated).
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
    """Self-normalising network on the concatenated genomic families (Klambauer 2017)."""

    modalities = ("omics",)

    def __init__(self, omic_sizes: list[int], size: str = "small", n_bins: int = 4, **_):
        super().__init__()
        hidden = {"small": [256, 256], "large": [1024, 1024, 1024, 256]}[size]
        blocks = [snn_block(sum(omic_sizes), hidden[0])]
        blocks += [snn_block(a, b) for a, b in zip(hidden[:-1], hidden[1:])]
        self.net = nn.Sequential(*blocks)
        self.head = SurvivalHead(hidden[-1], n_bins)
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
                 short_exact=True, **_):
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


class AttMIL(_PathologyMIL):
    """Gated attention pooling (Ilse et al. 2018)."""

    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4, **_):
        super().__init__(path_dim, size, n_bins)
        dim = SIZES["pathology"][size][-1]
        self.attention_v = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(0.25))
        self.attention_u = nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid(), nn.Dropout(0.25))
        self.attention_w = nn.Linear(dim, 1)
        init_weights(self)

    def forward(self, x_path, x_omics=None):
        h = self.embed(x_path)  # (1, M, C)
        a = self.attention_w(self.attention_v(h) * self.attention_u(h)).softmax(dim=1)  # (1, M, 1)
        return self.head((a * h).sum(dim=1))


class TransMIL(_PathologyMIL):
    """TransMIL (Shao et al. 2021): class token, TransLayer, PPEG, TransLayer."""

    def __init__(self, omic_sizes=None, path_dim=1024, size="small", n_bins=4,
                 attention="nystrom", ppeg=True, short_exact=True, **_):
        super().__init__(path_dim, size, n_bins)
        self.pathology_encoder = PathologyTransformer(256, attention, ppeg, short_exact)
        init_weights(self)

    def forward(self, x_path, x_omics=None):
        p, _ = self.pathology_encoder(self.embed(x_path))
        return self.head(p)


class DualTrans(nn.Module):
    """Pathology and genomic transformers side by side; class tokens concatenated."""

    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4,
                 attention="nystrom", ppeg=True, short_exact=True, **_):
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
