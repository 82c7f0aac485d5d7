"""MCAT (Chen et al., ICCV 2021, mahmoodlab/MCAT ``models/model_coattn.py``) and its
genomic arm alone.

MCAT: patch features -> Linear 1024-256, ReLU, Dropout (``wsi_net``); one SNN per family
(256-256) -> 6 genomic tokens; genomic-guided co-attention (single-head attention, the
genomic tokens query the patches) -> 6 pathology tokens; a pathology and a genomic
transformer (2 post-norm ``nn.TransformerEncoderLayer``, 8 heads, feed-forward 512,
dropout .25, ReLU), each followed by gated attention pooling over its 6 tokens and a rho
layer (Linear 256-256, ReLU, Dropout); concat (Linear 512-256, ReLU, Linear 256-256,
ReLU) or gated bilinear fusion; Linear 256 -> hazards.
"""

from __future__ import annotations

import torch
from torch import nn

from .fusion import GatedBilinearFusion
from .layers import GenomicEmbedding, SurvivalHead, as_bag
from .mil import GatedAttention

DIM = 256


def _transformer(dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model=DIM, nhead=8, dim_feedforward=512, dropout=dropout,
                                       activation="relu")
    return nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


class _AttentionPool(nn.Module):
    """Transformer over the 6 tokens, gated attention pooling, rho: (6, 1, C) -> (1, C)."""

    def __init__(self, dropout: float):
        super().__init__()
        self.transformer = _transformer(dropout)
        self.attention = GatedAttention(DIM, DIM, dropout)
        self.rho = nn.Sequential(nn.Linear(DIM, DIM), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.transformer(tokens).squeeze(1)  # (6, C)
        a = self.attention(h).transpose(0, 1).softmax(dim=1)  # (1, 6)
        return self.rho(a @ h)


def _omics(x_omics, model):
    if x_omics is None:
        raise ValueError(f"{model} needs genomics, got None")
    return x_omics


class MCAT(nn.Module):
    """Multimodal co-attention transformer for survival (small model only)."""

    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", fusion="concat", n_bins=4,
                 dropout=0.25, **_):
        super().__init__()
        if size != "small":
            raise ValueError("mcat: only size 'small' exists (the transformers are 256-d)")
        if fusion not in ("concat", "bilinear"):
            raise ValueError(f"mcat: fusion must be 'concat' or 'bilinear', got {fusion!r}")
        self.pathology_embedding = nn.Sequential(nn.Linear(path_dim, DIM), nn.ReLU(), nn.Dropout(0.25))
        self.genomic_embedding = GenomicEmbedding(list(omic_sizes), [DIM, DIM])
        self.coattention = nn.MultiheadAttention(DIM, num_heads=1)
        self.pathology_arm = _AttentionPool(dropout)
        self.genomic_arm = _AttentionPool(dropout)
        if fusion == "concat":
            self.fusion = nn.Sequential(nn.Linear(2 * DIM, DIM), nn.ReLU(), nn.Linear(DIM, DIM), nn.ReLU())
        else:
            self.fusion = GatedBilinearFusion(DIM, DIM, 8, 8, mmhid=DIM)
        self.fusion_kind = fusion
        self.head = SurvivalHead(DIM, n_bins)

    def forward(self, x_path, x_omics):
        if x_path is None:
            raise ValueError("mcat needs a feature bag, got None")
        h_path = self.pathology_embedding(as_bag(x_path)).transpose(0, 1)  # (M, 1, C)
        g = self.genomic_embedding(_omics(x_omics, "mcat")).transpose(0, 1)  # (6, 1, C)
        coattn, _ = self.coattention(g, h_path, h_path, need_weights=False)  # (6, 1, C)
        p = self.pathology_arm(coattn)
        o = self.genomic_arm(g)
        if self.fusion_kind == "concat":
            z = self.fusion(torch.cat([p, o], dim=1))
        else:
            z = self.fusion(p, o)
        return self.head(z)


class MCATGenomic(nn.Module):
    """MCAT's genomic arm alone: family SNNs, genomic transformer, attention pooling, rho,
    Linear 256 -> hazards (a genomics-only model)."""

    modalities = ("omics",)

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4, dropout=0.25, **_):
        super().__init__()
        self.genomic_embedding = GenomicEmbedding(list(omic_sizes), [DIM, DIM])
        self.genomic_arm = _AttentionPool(dropout)
        self.head = SurvivalHead(DIM, n_bins)

    def forward(self, x_path, x_omics):
        g = self.genomic_embedding(_omics(x_omics, "mcat_omic")).transpose(0, 1)
        return self.head(self.genomic_arm(g))
