"""CMTA: Cross-Modal Translation and Alignment (Zhou & Chen, ICCV 2023), Figure 1.

pathology bag --embedding--> pathology encoder --p, tokens P--+
                                                              |  cross-modal attention
genomics (6 families) --SNNs--> genomic encoder --g, tokens G-+  (P attends to G, G to P)
        P<-G (M tokens) --> pathology decoder --> p_hat
        G<-P (K tokens) --> genomics decoder  --> g_hat
fusion of (p + p_hat)/2 and (g + g_hat)/2 --> hazard head (4 bins)
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import (
    CrossModalAttention,
    GenomicEmbedding,
    GenomicTransformer,
    PathologyTransformer,
    SurvivalHead,
    as_bag,
    init_weights,
    mlp_relu,
)

SIZES = {
    "pathology": {"small": [256, 256], "large": [512, 256]},
    "genomics": {"small": [1024, 256], "large": [1024, 1024, 1024, 256]},
}


class BilinearFusion(nn.Module):
    """Gated Kronecker-product fusion (Chen et al., Pathomic Fusion; MCAT/CMTA option)."""

    def __init__(self, dim: int = 256, scale: int = 8, hidden: int = 256, dropout: float = 0.25):
        super().__init__()
        small = dim // scale
        self.h1 = nn.Sequential(nn.Linear(dim, small), nn.ReLU())
        self.z1 = nn.Linear(2 * dim, small)
        self.o1 = nn.Sequential(nn.Linear(small, small), nn.ReLU(), nn.Dropout(dropout))
        self.h2 = nn.Sequential(nn.Linear(dim, small), nn.ReLU())
        self.z2 = nn.Linear(2 * dim, small)
        self.o2 = nn.Sequential(nn.Linear(small, small), nn.ReLU(), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)
        self.encoder1 = nn.Sequential(nn.Linear((small + 1) ** 2, 256), nn.ReLU(), nn.Dropout(dropout))
        self.encoder2 = nn.Sequential(nn.Linear(256, hidden), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ab = torch.cat([a, b], dim=1)
        o1 = self.o1(torch.sigmoid(self.z1(ab)) * self.h1(a))
        o2 = self.o2(torch.sigmoid(self.z2(ab)) * self.h2(b))
        one = torch.ones_like(o1[:, :1])
        o1, o2 = torch.cat([o1, one], 1), torch.cat([o2, one], 1)
        outer = torch.bmm(o1.unsqueeze(2), o2.unsqueeze(1)).flatten(1)
        return self.encoder2(self.encoder1(self.dropout(outer)))


class CMTA(nn.Module):
    """The CMTA survival model.

    Ablations (Table 2 of the paper), all on by default:

    * ``cross_attention=False``: no cross-modal attention; each decoder reads the other
      modality's encoder tokens directly (pathology decoder <- K genomic tokens, genomics
      decoder <- M pathology tokens), so translation still happens, without attention.
    * ``alignment=False``: the alignment loss is not used (``model.alignment``).
    * ``detach=False``: the alignment targets p and g are not detached
      (``model.detach_targets``), so L_sim also pulls the encoders towards the decoders.
    * ``ppeg=False``: the pathology encoder and decoder have no PPEG.

    ``attention`` is ``"nystrom"`` (published) or ``"exact"`` (SDPA, a departure);
    ``short_exact=True`` (a departure) takes the converged limit of the Nystrom formula on
    sequences shorter than the 128 landmarks. With the defaults the outputs are those of
    the authors' network (``convert_official_state_dict`` maps their weights).
    """

    def __init__(
        self,
        omic_sizes: list[int],
        path_dim: int = 1024,
        size: str = "small",
        fusion: str = "concat",
        n_bins: int = 4,
        attention: str = "nystrom",
        cross_attention: bool = True,
        alignment: bool = True,
        detach: bool = True,
        ppeg: bool = True,
        short_exact: bool = False,
        dropout: float = 0.25,
    ):
        super().__init__()
        if size not in ("small", "large"):
            raise ValueError(f"size must be 'small' or 'large', got {size!r}")
        if fusion not in ("concat", "bilinear"):
            raise ValueError(f"fusion must be 'concat' or 'bilinear', got {fusion!r}")
        self.alignment = alignment
        self.detach_targets = detach
        self.cross_attention = cross_attention
        self.fusion_kind = fusion
        dim = 256
        path_hidden = SIZES["pathology"][size]
        self.pathology_embedding = mlp_relu([path_dim] + path_hidden, dropout)
        self.genomic_embedding = GenomicEmbedding(omic_sizes, SIZES["genomics"][size])
        self.pathology_encoder = PathologyTransformer(dim, attention, ppeg, short_exact)
        self.genomic_encoder = GenomicTransformer(dim, attention, short_exact)
        if cross_attention:
            self.pathology_to_genomics = CrossModalAttention(dim)  # P queries, G keys
            self.genomics_to_pathology = CrossModalAttention(dim)  # G queries, P keys
        self.pathology_decoder = PathologyTransformer(dim, attention, ppeg, short_exact)
        self.genomics_decoder = GenomicTransformer(dim, attention, short_exact)
        if fusion == "concat":
            self.fusion = nn.Sequential(
                nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU()
            )
        else:
            self.fusion = BilinearFusion(dim, scale=8, hidden=dim)
        self.head = SurvivalHead(dim, n_bins)
        init_weights(self)

    def forward(self, x_path: torch.Tensor, x_omics: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """x_path (M, D) or (1, M, D); x_omics: one 1-D tensor per family.

        Returns hazards (1, T), survival (1, T), risk (1,), and p, p_hat, g, g_hat (1, 256).
        """
        bag = self.pathology_embedding(as_bag(x_path))  # (1, M, C)
        genomic = self.genomic_embedding(x_omics)  # (1, K, C)
        p, path_tokens = self.pathology_encoder(bag)
        g, gen_tokens = self.genomic_encoder(genomic)
        if self.cross_attention:
            path_from_gen = self.pathology_to_genomics(path_tokens, gen_tokens)  # (1, M', C)
            gen_from_path = self.genomics_to_pathology(gen_tokens, path_tokens)  # (1, K, C)
        else:
            path_from_gen, gen_from_path = gen_tokens, path_tokens
        p_hat, _ = self.pathology_decoder(path_from_gen)
        g_hat, _ = self.genomics_decoder(gen_from_path)
        fused_p, fused_g = (p + p_hat) / 2, (g + g_hat) / 2
        if self.fusion_kind == "concat":
            z = self.fusion(torch.cat([fused_p, fused_g], dim=1))
        else:
            z = self.fusion(fused_p, fused_g)
        out = self.head(z)
        out.update(p=p, p_hat=p_hat, g=g, g_hat=g_hat)
        return out
