"""PORPOISE's multimodal fusion network (Chen et al., Cancer Cell 2022,
mahmoodlab/PORPOISE ``models/model_porpoise.py``, ``PorpoiseMMF`` with its class defaults).

Pathology: input dropout .1, Linear 1024-512, ReLU, Dropout; gated attention pooling
(512 -> 256 -> 1); rho Linear 512-256, ReLU, Dropout. Genomics: one SNN (256-256) on the
flat genomic vector (here the six families concatenated). Gated Kronecker fusion (both
gates, each vector reduced 256 -> 32, skip connection, no dropout after the encoders),
Linear 256 -> hazards.
"""

from __future__ import annotations

from torch import nn

from .fusion import GatedBilinearFusion, flat_omics
from .layers import SurvivalHead, as_bag, snn_block
from .mil import GatedAttention


class PORPOISE(nn.Module):
    modalities = ("path", "omics")

    def __init__(self, omic_sizes, path_dim=1024, size="small", n_bins=4, dropout=0.25, **_):
        super().__init__()
        if size != "small":
            raise ValueError("porpoise: only size 'small' exists")
        self.pathology_embedding = nn.Sequential(nn.Dropout(0.10), nn.Linear(path_dim, 512), nn.ReLU(),
                                                 nn.Dropout(dropout))
        self.attention = GatedAttention(512, 256, dropout)
        self.rho = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Dropout(dropout))
        self.genomic_embedding = nn.Sequential(snn_block(sum(omic_sizes), 256), snn_block(256, 256))
        self.fusion = GatedBilinearFusion(256, 256, 8, 8, mmhid=256, skip=True, encoder_dropout=False)
        self.head = SurvivalHead(256, n_bins)

    def forward(self, x_path, x_omics):
        if x_path is None:
            raise ValueError("porpoise needs a feature bag, got None")
        h = self.pathology_embedding(as_bag(x_path)[0])  # (M, 512)
        a = self.attention(h).transpose(0, 1).softmax(dim=1)  # (1, M)
        p = self.rho(a @ h)
        g = self.genomic_embedding(flat_omics(x_omics, "porpoise"))
        out = self.head(self.fusion(p, g))
        out["attention"] = a
        return out
