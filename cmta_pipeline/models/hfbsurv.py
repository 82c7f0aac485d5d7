"""HFBSurv, hierarchical factorized bilinear fusion (Li et al., Bioinformatics 2022,
Liruiqing-ustc/HFBSurv ``HFBSurv/model/HFB_fusion.py``), two-modality reading.

Published for three modalities (gene expression, pathology, copy number; 80 inputs each)
with hidden 50, intra/inter outputs 20, rank 20, factor dropout .1, survival dropout .3.
Per modality: encoder (Linear, Tanh, Linear, Tanh) -> f (50); intra-modal factorized
bilinear pooling MFB(W f, W f) -> 20 (product, dropout, sum over the rank, signed square
root, L2 normalisation); x = [f, intra] (70) weighted by a shared sigmoid attention score.
Unimodal = sum of the weighted x. Inter-modal MFB of every pair (weights from a softmax of
score-scaled similarities); fusion [unimodal, bimodal] (90) -> normalisation ->
Linear 90-256, Tanh, Dropout, Linear 256-64, Tanh, Dropout -> Linear 64 -> hazards.

Our reading for this pipeline: two modalities, genomics (the six families concatenated,
one flat vector) and pathology (the mean patch feature of the bag); with one pair the
pair weight is 1. Departures, each for a stated reason: LayerNorm instead of BatchNorm1d
(a batch of one patient cannot be batch-normalised; same parameter count); the pathology
vector uses its own inter-modal projection (the released code applies the gene one to all
modalities, leaving the others unused); 1e-12 inside the signed square root (its gradient
is infinite at 0); hazards instead of the Cox output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import flat_omics
from .layers import SurvivalHead, as_bag


def _encoder(dim_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Sequential(nn.Linear(dim_in, hidden), nn.Tanh()),
                         nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()))


class HFBSurv(nn.Module):
    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4, hidden: int = 50,
                 intra: int = 20, inter: int = 20, rank: int = 20, factor_dropout: float = 0.1,
                 dropout: float = 0.3, **_):
        super().__init__()
        self.intra, self.inter, self.rank = intra, inter, rank
        self.encoder_gene = _encoder(sum(omic_sizes), hidden)
        self.encoder_path = _encoder(path_dim, hidden)
        self.linear_gene = nn.Linear(hidden, rank * intra)
        self.linear_path = nn.Linear(hidden, rank * intra)
        self.linear_gene_a = nn.Linear(hidden + intra, rank * inter)
        self.linear_path_a = nn.Linear(hidden + intra, rank * inter)
        self.attention = nn.Sequential(nn.Linear(hidden + intra, 1), nn.Sigmoid())
        self.factor_dropout = nn.Dropout(factor_dropout)
        self.norm = nn.LayerNorm(hidden + intra + inter)
        self.encoder = nn.Sequential(
            nn.Sequential(nn.Linear(hidden + intra + inter, 256), nn.Tanh(), nn.Dropout(dropout)),
            nn.Sequential(nn.Linear(256, 64), nn.Tanh(), nn.Dropout(dropout)),
        )
        self.head = SurvivalHead(64, n_bins)

    def mfb(self, x1: torch.Tensor, x2: torch.Tensor, out_dim: int) -> torch.Tensor:
        """Factorized bilinear pooling: (B, out*rank) x2 -> (B, out)."""
        z = self.factor_dropout(x1 * x2).view(x1.shape[0], out_dim, self.rank).sum(dim=2)
        z = torch.sign(z) * torch.sqrt(z.abs() + 1e-12)
        return F.normalize(z, dim=1)

    def forward(self, x_path, x_omics):
        if x_path is None:
            raise ValueError("hfbsurv needs a feature bag, got None")
        fg = self.encoder_gene(flat_omics(x_omics, "hfbsurv"))  # (1, 50)
        fp = self.encoder_path(as_bag(x_path).mean(dim=1))  # (1, 50)
        hg, hp = self.linear_gene(fg), self.linear_path(fp)
        xg = torch.cat([fg, self.mfb(hg, hg, self.intra)], dim=1)  # (1, 70)
        xp = torch.cat([fp, self.mfb(hp, hp, self.intra)], dim=1)
        xg, xp = self.attention(xg) * xg, self.attention(xp) * xp
        unimodal = xg + xp
        bimodal = self.mfb(self.linear_gene_a(xg), self.linear_path_a(xp), self.inter)  # (1, 20)
        z = self.norm(torch.cat([unimodal, bimodal], dim=1))
        return self.head(self.encoder(z))
