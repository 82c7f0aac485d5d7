"""CONCH's visual tower (v1: ViT-B/16, v1.5: ViT-L/16, both run at 448 px), written here
on a timm trunk: the trunk's normalised tokens, an attentional pooler with one learned
query, then a LayerNorm. That pooled vector (512-d for v1, 768-d for v1.5) is the feature
TRIDENT writes (v1: ``encode_image(proj_contrast=False)``, trident/patch_encoder_models/
load.py L389-390; v1.5: ``CONCHVisionTower.forward``, model_zoo/conchv1_5/conchv1_5.py
L646-650: pooler output, query 0, ``ln_contrast``, no projection). v1's ``proj_contrast``
matrix is kept so that its checkpoint loads, and used only with ``project=True``.

The layouts are the published files':

- v1 (open_clip's CoCa): the pooler is ``nn.MultiheadAttention`` (``attn.in_proj_*``,
  ``attn.out_proj.*``); the trunk is built at 448 px (785-row position table).
- v1.5 (``pytorch_model_vision.bin``): the pooler has ``to_q``, ``to_kv`` and ``to_out``
  without bias (conchv1_5.py L595-635); the trunk is built at 224 px (197-row position
  table, as in the file) and, like TRIDENT (conchv1_5.py L542-562), the table's patch rows
  are interpolated at run time to the input's grid: bicubic, with DINO's scale factor
  ``(grid + 0.1) / 14``.

Parameter names follow CONCH's (``trunk.``, ``attn_pool_contrast.``, ``ln_contrast.``,
``proj_contrast``), so its checkpoints load once v1's ``visual.`` prefix is removed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import EncoderSpec

#: (trunk architecture, trunk kwargs, pooled width, side the trunk is built at, pooler)
CONFIGS = {
    "conch_v1": ("vit_base_patch16_224", {}, 512, 448, "mha"),
    "conch_v15": ("vit_large_patch16_224", {"init_values": 1.0}, 768, 224, "published"),
}


class AttentionalPooler(nn.Module):
    """open_clip's pooler (CONCH v1): ``n_queries`` learned queries attend over the
    (LayerNorm-ed) tokens through ``nn.MultiheadAttention``."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim,
                                          batch_first=True)
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.ln_k(tokens)
        q = self.ln_q(self.query).unsqueeze(0).expand(len(tokens), -1, -1)
        return self.attn(q, kv, kv, need_weights=False)[0]


class PublishedPooler(nn.Module):
    """CONCH v1.5's pooler in its file's layout: q = to_q(ln_q(query)), k and v the halves
    of to_kv(ln_k(tokens)), softmax(q k^T / sqrt(d)) v per head, then to_out; no biases."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1):
        super().__init__()
        self.heads = n_head
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, h = len(tokens), tokens.shape[1], self.heads
        q = self.to_q(self.ln_q(self.query))  # (Q, D)
        k, v = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)  # (B, N, D) each
        d = q.shape[-1] // h
        q = q.view(1, -1, h, d).transpose(1, 2).expand(b, -1, -1, -1)
        k = k.reshape(b, n, h, d).transpose(1, 2)
        v = v.reshape(b, n, h, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # scale d ** -0.5
        return self.to_out(out.transpose(1, 2).reshape(b, -1, h * d))


def interpolated_positions(pos: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """A (1, 1 + S*S, C) position table (class row first) for a grid_h x grid_w patch grid,
    as DINO/iBOT and TRIDENT's CONCH v1.5 do it: bicubic with scale factors
    ``(grid + 0.1) / S``; the table itself when the grid is its own."""
    n = pos.shape[1] - 1
    side = int(math.sqrt(n))
    if grid_h * grid_w == n and grid_h == grid_w:
        return pos
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
                         mode="bicubic")
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
    return torch.cat([pos[:, :1], grid], dim=1)


class ConchVisual(nn.Module):
    """(B, 3, 448, 448) normalised -> (B, 512) (v1) or (B, 768) (v1.5)."""

    def __init__(self, name: str, project: bool = False):
        super().__init__()
        import timm

        arch, kw, width, built_px, pooler = CONFIGS[name]
        self.trunk = timm.create_model(arch, pretrained=False, num_classes=0,
                                       img_size=built_px, global_pool="", **kw)
        self.interpolate = pooler == "published"
        if self.interpolate:
            self.attn_pool_contrast = PublishedPooler(width, self.trunk.num_features)
        else:
            self.attn_pool_contrast = AttentionalPooler(width, self.trunk.num_features)
        self.ln_contrast = nn.LayerNorm(width)
        self.project = project
        if name == "conch_v1":
            self.proj_contrast = nn.Parameter(torch.randn(width, width) * width ** -0.5)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's normalised tokens; v1.5 with its position table interpolated."""
        t = self.trunk
        if not self.interpolate:
            return t.forward_features(x)
        step = t.patch_embed.patch_size[0]
        gh, gw = x.shape[-2] // step, x.shape[-1] // step
        x = t.patch_embed.norm(t.patch_embed.proj(x).flatten(2).transpose(1, 2))
        x = torch.cat([t.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = x + interpolated_positions(t.pos_embed, gh, gw)
        return t.norm(t.blocks(t.norm_pre(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.ln_contrast(self.attn_pool_contrast(self.tokens(x))[:, 0])
        if self.project:
            pooled = pooled @ self.proj_contrast
        return pooled


def build_conch(spec: EncoderSpec) -> ConchVisual:
    return ConchVisual(spec.name)


def conch_state(state: dict) -> dict:
    """A CONCH checkpoint (the whole CoCa model, or the visual tower) in this module's
    names: ``visual.`` dropped; text tower and caption pooler left out."""
    if any(k.startswith("visual.") for k in state):
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return {k: v for k, v in state.items() if not k.startswith(("attn_pool_caption.",
                                                                   "ln_caption."))}
