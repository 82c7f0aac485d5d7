"""Gated Kronecker-product fusion of two vectors (Pathomic Fusion; MCAT's and PORPOISE's
``BilinearFusion``), and the flat inputs the fusion baselines read."""

from __future__ import annotations

import torch
from torch import nn


def flat_omics(x_omics, model: str) -> torch.Tensor:
    """The six families concatenated in family order: list of 1-D tensors -> (1, sum)."""
    if x_omics is None:
        raise ValueError(f"{model} needs genomics, got None")
    return torch.cat([x.reshape(-1) for x in x_omics]).unsqueeze(0)


class GatedBilinearFusion(nn.Module):
    """(1, d1), (1, d2) -> (1, mmhid).

    Each modality: ``o_i = Dropout(ReLU(Linear(sigmoid(z_i) * ReLU(Linear(v_i)))))`` with the
    gate ``z_i = Linear([v1, v2])`` (or no gate); widths d_i / scale_i. Then the outer
    product of ``[o1, 1]`` and ``[o2, 1]``, dropout, Linear -> 256, ReLU (+ dropout), and
    Linear(256 [+ d1 + d2 with ``skip``]) -> mmhid, ReLU (+ dropout).
    ``encoder_dropout``: MCAT's version has dropout after both encoders, PORPOISE's none.
    """

    def __init__(self, dim1: int = 256, dim2: int = 256, scale_dim1: int = 8, scale_dim2: int = 8,
                 mmhid: int = 256, gate1: bool = True, gate2: bool = True, skip: bool = False,
                 dropout: float = 0.25, encoder_dropout: bool = True):
        super().__init__()
        self.gate1, self.gate2, self.skip = gate1, gate2, skip
        h1, h2 = dim1 // scale_dim1, dim2 // scale_dim2
        self.linear_h1 = nn.Sequential(nn.Linear(dim1, h1), nn.ReLU())
        self.linear_z1 = nn.Linear(dim1 + dim2, h1)
        self.linear_o1 = nn.Sequential(nn.Linear(h1, h1), nn.ReLU(), nn.Dropout(dropout))
        self.linear_h2 = nn.Sequential(nn.Linear(dim2, h2), nn.ReLU())
        self.linear_z2 = nn.Linear(dim1 + dim2, h2)
        self.linear_o2 = nn.Sequential(nn.Linear(h2, h2), nn.ReLU(), nn.Dropout(dropout))
        self.post_fusion_dropout = nn.Dropout(dropout)
        tail = [nn.Dropout(dropout)] if encoder_dropout else []
        self.encoder1 = nn.Sequential(nn.Linear((h1 + 1) * (h2 + 1), 256), nn.ReLU(), *tail)
        self.encoder2 = nn.Sequential(nn.Linear(256 + (dim1 + dim2 if skip else 0), mmhid), nn.ReLU(), *tail)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        both = torch.cat([v1, v2], dim=1)
        h1, h2 = self.linear_h1(v1), self.linear_h2(v2)
        o1 = self.linear_o1(torch.sigmoid(self.linear_z1(both)) * h1 if self.gate1 else h1)
        o2 = self.linear_o2(torch.sigmoid(self.linear_z2(both)) * h2 if self.gate2 else h2)
        one = o1.new_ones(o1.shape[0], 1)
        o1, o2 = torch.cat([o1, one], dim=1), torch.cat([o2, one], dim=1)
        out = self.encoder1(self.post_fusion_dropout((o1.unsqueeze(2) * o2.unsqueeze(1)).flatten(1)))
        if self.skip:
            out = torch.cat([out, v1, v2], dim=1)
        return self.encoder2(out)
