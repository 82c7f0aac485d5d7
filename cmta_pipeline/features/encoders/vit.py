"""Vision transformers built with timm (never ``trust_remote_code``): UNI, UNI2-h,
Virchow, Virchow2, H-optimus-0/1, H0-mini, Prov-GigaPath, Phikon, Phikon-v2, Lunit ViT-S/8,
Midnight-12k and kaiko.ai's ViTs.

Each is timm's ``VisionTransformer`` with the arguments its model card gives; the module
keeps timm's parameter names under ``trunk.``, so the hub's timm-format state dicts load
directly. :class:`ViTEncoder` reads the feature out of the token sequence: the class
token, or (Virchow) the class token concatenated with the mean of the patch tokens
(registers left out).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import EncoderSpec


def _swiglu() -> dict:
    import timm

    return {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": nn.SiLU}


def timm_config(name: str) -> tuple[str, dict]:
    """(timm architecture, its keyword arguments) of a registered ViT."""
    base = {"num_classes": 0, "img_size": 224, "global_pool": ""}
    ls = {"init_values": 1e-5}
    configs = {
        "uni_v1": ("vit_large_patch16_224", {**ls}),
        "uni_v2": ("vit_giant_patch14_224", {
            **ls, "patch_size": 14, "depth": 24, "num_heads": 24, "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2, "reg_tokens": 8, "no_embed_class": True, **_swiglu()}),
        "virchow": ("vit_huge_patch14_224", {**ls, "mlp_ratio": 5.3375, **_swiglu()}),
        "virchow2": ("vit_huge_patch14_224", {**ls, "mlp_ratio": 5.3375, "reg_tokens": 4,
                                              **_swiglu()}),
        "hoptimus0": ("vit_giant_patch14_reg4_dinov2", {**ls}),
        "hoptimus1": ("vit_giant_patch14_reg4_dinov2", {**ls}),
        "gigapath": ("vit_giant_patch14_dinov2", {
            **ls, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
            "mlp_ratio": 5.33334}),
        "phikon": ("vit_base_patch16_224", {}),
        "phikon_v2": ("vit_large_patch16_224", {**ls}),
        "lunit-vits8": ("vit_small_patch8_224", {}),
        # TRIDENT load.py L1416-1423: the hub's timm config with SwiGLUPacked and SiLU
        "h0-mini": ("vit_base_patch14_reg4_dinov2", {**ls, **_swiglu()}),
        # TRIDENT L1358: transformers Dinov2Model (DINOv2 giant: 40 blocks, SwiGLU FFN)
        "midnight12k": ("vit_giant_patch14_dinov2", {**ls}),
        # TRIDENT L567-572 / L583-589: timm with dynamic_img_size; L14 built at 518
        "kaiko-vits16": ("vit_small_patch16_224", {"dynamic_img_size": True}),
        "kaiko-vits8": ("vit_small_patch8_224", {"dynamic_img_size": True}),
        "kaiko-vitb16": ("vit_base_patch16_224", {"dynamic_img_size": True}),
        "kaiko-vitb8": ("vit_base_patch8_224", {"dynamic_img_size": True}),
        "kaiko-vitl14": ("vit_large_patch14_reg4_dinov2", {"dynamic_img_size": True,
                                                           "img_size": 518}),
    }
    if name not in configs:
        raise KeyError(name)
    arch, kw = configs[name]
    return arch, {**base, **kw}


class ViTEncoder(nn.Module):
    """A timm ViT trunk and its read-out: (B, 3, S, S) normalised -> (B, dim)."""

    def __init__(self, trunk: nn.Module, readout: str):
        super().__init__()
        self.trunk = trunk
        self.readout = readout  # "cls" | "cls_mean"
        self.prefix = int(getattr(trunk, "num_prefix_tokens", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        cls = tokens[:, 0]
        if self.readout == "cls":
            return cls
        return torch.cat([cls, tokens[:, self.prefix:].mean(1)], dim=-1)


def build_vit(spec: EncoderSpec) -> ViTEncoder:
    """The encoder of ``spec`` with timm's initial (random) weights."""
    import timm

    arch, kw = timm_config(spec.name)
    trunk = timm.create_model(arch, pretrained=False, **kw)
    readout = "cls_mean" if spec.output.startswith("class token ++") else "cls"
    return ViTEncoder(trunk, readout)


def _first(state: dict, *names: str) -> str:
    """The first of ``names`` that ``state`` has; else the one whose ``.weight`` it has
    (so that the KeyError names the tensor the file lacks), else the first."""
    found = next((n for n in names if n in state), None)
    if found is None:
        found = next((n for n in names if n.rsplit(".", 1)[0] + ".weight" in state), names[0])
    return found


def hf_vit_to_timm(state: dict) -> dict:
    """A Hugging Face transformers ``ViTModel``/``Dinov2Model`` state dict (Phikon,
    Phikon-v2, Midnight-12k; transformers 4 names, as their hub files hold them) in timm's
    names: query/key/value joined into ``qkv``; DINOv2's packed SwiGLU ``weights_in`` (gate
    half first, as timm's ``SwiGLUPacked``) and ``weights_out`` as ``fc1``/``fc2``."""
    if not any(k.startswith(("embeddings.", "encoder.layer.")) for k in state):
        return state
    out = {"cls_token": state["embeddings.cls_token"],
           "pos_embed": state["embeddings.position_embeddings"],
           "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
    n = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    for i in range(n):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        att = p + "attention.attention."
        for t in ("weight", "bias"):
            out[q + f"attn.qkv.{t}"] = torch.cat(
                [state[att + f"{x}.{t}"] for x in ("query", "key", "value")])
            out[q + f"attn.proj.{t}"] = state[p + f"attention.output.dense.{t}"]
            out[q + f"norm1.{t}"] = state[_first(state, p + f"layernorm_before.{t}",
                                                 p + f"norm1.{t}")]
            out[q + f"norm2.{t}"] = state[_first(state, p + f"layernorm_after.{t}",
                                                 p + f"norm2.{t}")]
            out[q + f"mlp.fc1.{t}"] = state[_first(state, p + f"intermediate.dense.{t}",
                                                   p + f"mlp.weights_in.{t}", p + f"mlp.fc1.{t}")]
            out[q + f"mlp.fc2.{t}"] = state[_first(state, p + f"output.dense.{t}",
                                                   p + f"mlp.weights_out.{t}", p + f"mlp.fc2.{t}")]
        for j in (1, 2):
            key = p + f"layer_scale{j}.lambda1"
            if key in state:
                out[q + f"ls{j}.gamma"] = state[key]
    return out


def hf_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """A transformers position table (class row first) for a ``grid`` x ``grid`` patch
    grid, as ``Dinov2Embeddings.interpolate_pos_encoding`` computes it at each forward
    pass (bicubic to the size, in fp32, align_corners False): done once at load, the same
    numbers for the one input size this pipeline runs."""
    n = pos.shape[1] - 1
    side = int(round(n ** 0.5))
    if side == grid:
        return pos
    patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    patch = torch.nn.functional.interpolate(patch, size=(grid, grid), mode="bicubic",
                                            align_corners=False).to(pos.dtype)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], 1)
