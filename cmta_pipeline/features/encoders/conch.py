"""CONCH's visual tower (v1: ViT-B/16, v1.5: ViT-L/16, both at 448 px), written here on
a timm trunk: the trunk's normalised tokens, an attentional pooler with one learned query
(``nn.MultiheadAttention`` whose keys and values come from the trunk's width), then a
LayerNorm. That pooled vector (512-d for v1, 768-d for v1.5) is the feature TRIDENT
writes (``encode_image(proj_contrast=False)``); v1's ``proj_contrast`` matrix is kept so
that its checkpoint loads, and used only with ``project=True``.

Parameter names follow CONCH's (``trunk.``, ``attn_pool_contrast.``, ``ln_contrast.``,
``proj_contrast``), so its checkpoint loads once the ``visual.`` prefix is removed.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import EncoderSpec

#: (trunk architecture, trunk kwargs, pooled width, pooler heads) per version
CONFIGS = {
    "conch_v1": ("vit_base_patch16_224", {}, 512),
    "conch_v15": ("vit_large_patch16_224", {"init_values": 1.0}, 768),
}


class AttentionalPooler(nn.Module):
    """``n_queries`` learned queries attend over the (LayerNorm-ed) tokens."""

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


class ConchVisual(nn.Module):
    """(B, 3, 448, 448) normalised -> (B, 512) (v1) or (B, 768) (v1.5)."""

    def __init__(self, name: str, project: bool = False):
        super().__init__()
        import timm

        arch, kw, width = CONFIGS[name]
        self.trunk = timm.create_model(arch, pretrained=False, num_classes=0, img_size=448,
                                       global_pool="", **kw)
        self.attn_pool_contrast = AttentionalPooler(width, self.trunk.num_features)
        self.ln_contrast = nn.LayerNorm(width)
        self.project = project
        if name == "conch_v1":
            self.proj_contrast = nn.Parameter(torch.randn(width, width) * width ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.ln_contrast(self.attn_pool_contrast(self.trunk.forward_features(x))[:, 0])
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
