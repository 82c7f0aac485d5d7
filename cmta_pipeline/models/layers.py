"""Building blocks shared by CMTA and the baselines.

Shapes: B batch (always 1 patient here), N tokens, C = dim channels, h heads, d head dim,
m Nystrom landmarks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .nystrom import NystromAttention


class TransLayer(nn.Module):
    """Pre-LayerNorm self-attention with a residual connection (no feed-forward block)."""

    def __init__(self, dim: int = 256, attention: str = "nystrom", short_exact: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NystromAttention(
            dim=dim, heads=8, dim_head=dim // 8, num_landmarks=dim // 2,
            pinv_iterations=6, residual_kernel=33, dropout=0.1,
            mode=attention, short_exact=short_exact,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class PPEG(nn.Module):
    """Pyramid position encoding generator (TransMIL): identity + depthwise 7x7, 5x5, 3x3.

    The three convolutions are linear and share stride and centre, so they are applied
    as one 7 x 7 depthwise convolution whose kernel is their sum plus a centre 1 (the
    identity); the parameters (and gradients) are still the three published kernels.
    """

    def __init__(self, dim: int = 256):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.proj.weight + F.pad(self.proj1.weight, (1, 1, 1, 1)) + F.pad(
            self.proj2.weight, (2, 2, 2, 2)
        )
        identity = torch.zeros_like(w)
        identity[:, :, 3, 3] = 1.0
        return w + identity, self.proj.bias + self.proj1.bias + self.proj2.bias

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """x: (B, 1 + side*side, C), class token first -> same shape."""
        b, _, c = x.shape
        cls_token, feat = x[:, :1], x[:, 1:]
        grid = feat.transpose(1, 2).reshape(b, c, side, side)
        w, bias = self.merged_kernel()
        grid = F.conv2d(grid, w.to(grid.dtype), bias.to(grid.dtype), padding=3, groups=c)
        return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)


# --------------------------------------------------------------------------- embeddings


def snn_block(dim_in: int, dim_out: int, dropout: float = 0.25) -> nn.Sequential:
    """Self-normalising block: Linear, ELU, AlphaDropout."""
    return nn.Sequential(nn.Linear(dim_in, dim_out), nn.ELU(), nn.AlphaDropout(p=dropout))


def mlp_relu(dims: list[int], dropout: float = 0.25) -> nn.Sequential:
    """Linear, ReLU, Dropout for each consecutive pair of ``dims``."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class GenomicEmbedding(nn.Module):
    """One SNN per gene family; output (B, K, C) genomic tokens."""

    def __init__(self, omic_sizes: list[int], hidden: list[int]):
        super().__init__()
        nets = []
        for size in omic_sizes:
            blocks = [snn_block(size, hidden[0])]
            blocks += [snn_block(a, b) for a, b in zip(hidden[:-1], hidden[1:])]
            nets.append(nn.Sequential(*blocks))
        self.families = nn.ModuleList(nets)

    def forward(self, omics: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([net(x) for net, x in zip(self.families, omics)], dim=0).unsqueeze(0)


def init_weights(module: nn.Module) -> None:
    """Xavier-normal on every Linear with zero bias; LayerNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- encoders


class PathologyTransformer(nn.Module):
    """Class token, TransLayer, PPEG, TransLayer, LayerNorm over a square grid of tokens.

    The M tokens are padded to side*side (side = ceil(sqrt(M))) by repeating the first
    tokens. Returns (class token (B, C), patch tokens (B, side*side, C)).
    """

    def __init__(self, dim: int = 256, attention: str = "nystrom", ppeg: bool = True,
                 short_exact: bool = False):
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        self.layer1 = TransLayer(dim, attention, short_exact)
        self.pos_layer = PPEG(dim) if ppeg else None
        self.layer2 = TransLayer(dim, attention, short_exact)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, m, _ = tokens.shape
        side = math.ceil(math.sqrt(m))
        extra = side * side - m
        h = tokens
        while extra > 0:  # repeat the first tokens (more than once only for tiny bags)
            take = min(extra, h.shape[1])
            h = torch.cat([h, h[:, :take]], dim=1)
            extra -= take
        h = torch.cat([self.cls_token.expand(b, -1, -1).to(h.dtype), h], dim=1)
        h = self.layer1(h)
        if self.pos_layer is not None:
            h = self.pos_layer(h, side)
        h = self.layer2(h)
        h = self.norm(h)
        return h[:, 0], h[:, 1:]


class GenomicTransformer(nn.Module):
    """Class token + K tokens, TransLayer, TransLayer, LayerNorm -> (cls (B, C), tokens)."""

    def __init__(self, dim: int = 256, attention: str = "nystrom", short_exact: bool = False):
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        self.layer1 = TransLayer(dim, attention, short_exact)
        self.layer2 = TransLayer(dim, attention, short_exact)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = tokens.shape[0]
        h = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        h = self.norm(self.layer2(self.layer1(h)))
        return h[:, 0], h[:, 1:]


class CrossModalAttention(nn.Module):
    """Single-head scaled dot-product attention of one modality's tokens to the other's.

    In-projections for q, k, v and an output projection, all with bias, scale 1/sqrt(C)
    (the released code's ``nn.MultiheadAttention(C, 1)``; same parameter count).
    """

    def __init__(self, dim: int = 256):
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """query (B, Nq, C), context (B, Nk, C) -> (B, Nq, C)."""
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq)
        k = F.linear(context, wk, bk)
        v = F.linear(context, wv, bv)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        return self.out_proj(out.squeeze(1))


class SurvivalHead(nn.Module):
    """Linear -> sigmoid hazards; survival S = cumprod(1 - h); risk = -sum(S)."""

    def __init__(self, dim: int = 256, n_bins: int = 4):
        super().__init__()
        self.classifier = nn.Linear(dim, n_bins)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(z).float()
        hazards = torch.sigmoid(logits)
        survival = torch.cumprod(1 - hazards, dim=1)
        return {"logits": logits, "hazards": hazards, "survival": survival,
                "risk": -survival.sum(dim=1)}


def as_bag(x_path: torch.Tensor) -> torch.Tensor:
    """(M, D) or (1, M, D) -> (1, M, D)."""
    if x_path.dim() == 2:
        return x_path.unsqueeze(0)
    if x_path.dim() == 3 and x_path.shape[0] == 1:
        return x_path
    raise ValueError(f"bag must be (M, D) or (1, M, D), got {tuple(x_path.shape)}")
