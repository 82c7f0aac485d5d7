"""CTransPath: a Swin-T/4 (window 7) whose patch embedding is a small convolutional stem
(two stride-2 3x3 convolutions with BatchNorm and ReLU, then a 1x1 to the embedding
width), written on timm's current ``SwinTransformer``; 768-d after average pooling.

Its published checkpoint was saved from timm 0.5 (the ``timm_ctp`` fork):
:func:`ctranspath_state` renames it with timm's own Swin checkpoint filter (a stage's
patch merging moved to the start of the next stage) and drops the buffers timm rebuilds.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import EncoderSpec


class ConvStem(nn.Module):
    """Patch embedding of CTransPath: (B, 3, H, W) -> (B, H/4, W/4, C), channels last as
    timm's Swin stages expect."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None,
                 **_):
        super().__init__()
        layers, cin, cout = [], in_chans, embed_dim // 8
        for _i in range(2):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        side = img_size[0] if isinstance(img_size, (tuple, list)) else int(img_size)
        step = patch_size[0] if isinstance(patch_size, (tuple, list)) else int(patch_size)
        self.img_size, self.patch_size = (side, side), (step, step)
        self.grid_size = (side // step, side // step)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class CTransPath(nn.Module):
    def __init__(self):
        super().__init__()
        import timm

        self.trunk = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False,
                                       num_classes=0, embed_layer=ConvStem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def build_swin(spec: EncoderSpec) -> CTransPath:
    return CTransPath()


def ctranspath_state(state: dict, model: CTransPath) -> dict:
    """CTransPath's checkpoint (``{'model': ...}``, timm 0.5 names) in this module's."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if any(k.startswith("trunk.") for k in state):
        return state
    state = {k: v for k, v in state.items()
             if "attn_mask" not in k and "relative_position_index" not in k
             and not k.startswith("head.")}
    state = checkpoint_filter_fn(state, model.trunk)
    return {f"trunk.{k}": v for k, v in state.items()}
