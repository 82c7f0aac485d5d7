"""Every hub encoder's loader on a state dict with its PUBLISHED key names and shapes.

The published layouts are built here from the reference definitions, not from our own
modules: timm's models with the arguments TRIDENT passes to ``timm.create_model``
(trident/patch_encoder_models/load.py) for the timm hub files (UNI, UNI2-h, Virchow,
Virchow2, H-optimus-0/1, H0-mini, GigaPath, Lunit, kaiko's ViTs); Hugging Face
transformers' ViT and DINOv2 parameter names for Phikon, Phikon-v2 and Midnight-12k; the open_clip CoCa names of CONCH v1
(``visual.`` tower, caption pooler, text tower); CONCH v1.5's ``pytorch_model_vision.bin``
(a ViT-L/16 trunk at 224, 197-row position table; ``to_q``/``to_kv``/``to_out`` pooler,
model_zoo/conchv1_5/conchv1_5.py L595-650); CHIEF's CTransPath file (timm 0.5 Swin names
under ``model``: a stage's patch merging at its end, ``attn_mask`` buffers, no head).
Tensors live on torch's meta device (names and shapes only, no memory), so the ViT-g
files cost no time; the wrappers' prefixes (``module.``, ``model.``, ``vit.``) and a
``state_dict`` wrapper are tried too. Numerics (CONCH v1.5's pooler and position
interpolation) run on small networks.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from cmta_pipeline.errors import CMTAError
from cmta_pipeline.features.encoders import get_spec
from cmta_pipeline.features.encoders.build import build_architecture, load_weights

#: the timm hub files: (timm architecture, the arguments TRIDENT passes) per encoder
TIMM_REFERENCE = {
    "uni_v1": ("vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5,
                                             num_classes=0, dynamic_img_size=True)),
    "uni_v2": ("vit_giant_patch14_224", dict(
        img_size=224, patch_size=14, depth=24, num_heads=24, init_values=1e-5,
        embed_dim=1536, mlp_ratio=2.66667 * 2, num_classes=0, no_embed_class=True,
        reg_tokens=8, dynamic_img_size=True, swiglu=True)),
    "virchow": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0,
                                             mlp_ratio=5.3375, global_pool="", swiglu=True)),
    "virchow2": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0,
                                              reg_tokens=4, mlp_ratio=5.3375, global_pool="",
                                              swiglu=True)),
    "hoptimus0": ("vit_giant_patch14_reg4_dinov2", dict(num_classes=0, img_size=224,
                                                        global_pool="token",
                                                        init_values=1e-5)),
    "hoptimus1": ("vit_giant_patch14_reg4_dinov2", dict(num_classes=0, img_size=224,
                                                        global_pool="token",
                                                        init_values=1e-5)),
    "gigapath": ("vit_giant_patch14_dinov2", dict(img_size=224, in_chans=3, patch_size=16,
                                                  embed_dim=1536, depth=40, num_heads=24,
                                                  init_values=1e-5, mlp_ratio=5.33334,
                                                  num_classes=0)),
    "lunit-vits8": ("vit_small_patch8_224", dict(img_size=224, num_classes=0)),
    "h0-mini": ("vit_base_patch14_reg4_dinov2", dict(img_size=224, swiglu=True)),
    "kaiko-vits16": ("vit_small_patch16_224", dict(num_classes=0, img_size=224,
                                                   dynamic_img_size=True)),
    "kaiko-vits8": ("vit_small_patch8_224", dict(num_classes=0, img_size=224,
                                                 dynamic_img_size=True)),
    "kaiko-vitb16": ("vit_base_patch16_224", dict(num_classes=0, img_size=224,
                                                  dynamic_img_size=True)),
    "kaiko-vitb8": ("vit_base_patch8_224", dict(num_classes=0, img_size=224,
                                                dynamic_img_size=True)),
    "kaiko-vitl14": ("vit_large_patch14_reg4_dinov2", dict(num_classes=0, img_size=518,
                                                           dynamic_img_size=True)),
}


@functools.lru_cache(maxsize=None)
def timm_published(name: str) -> dict:
    import timm

    arch, kw = TIMM_REFERENCE[name]
    kw = dict(kw)
    if kw.pop("swiglu", False):
        kw.update(mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU)
    with torch.device("meta"):
        return dict(timm.create_model(arch, pretrained=False, **kw).state_dict())


@functools.lru_cache(maxsize=None)
def own(name: str):
    with torch.device("meta"):
        return build_architecture(get_spec(name))


def check_loads(name: str, state: dict) -> None:
    """``state`` loads into ``name``'s network (on meta: every name and shape checked)."""
    load_weights(get_spec(name), own(name), state, f"{name}.bin")


@pytest.mark.parametrize("name", list(TIMM_REFERENCE))
def test_timm_hub_files_load(name):
    """Building a ViT-g twice on the meta device takes 2-7 s on two busy cores."""
    check_loads(name, timm_published(name))


@pytest.mark.parametrize("name", ["lunit-vits8", "h0-mini"])
def test_timm_files_load_with_wrapper_prefixes(name):
    state = timm_published(name)
    check_loads(name, {f"module.{k}": v for k, v in state.items()})  # DataParallel
    check_loads(name, {"state_dict": {f"model.{k}": v for k, v in state.items()}})


def test_a_file_of_another_vit_is_refused():
    state = dict(timm_published("uni_v1"))
    with pytest.raises(CMTAError, match=r"tensor trunk\.\S+ has shape .*lunit-vits8 needs"):
        check_loads("lunit-vits8", state)
    del state["blocks.23.mlp.fc2.bias"]
    with pytest.raises(CMTAError, match="not uni_v1 weights; 1 tensors missing"):
        check_loads("uni_v1", state)


def hf_vit_names(depth: int, width: int, mlp: int, grid: int, patch: int,
                 dinov2: bool, swiglu: bool = False) -> dict:
    """transformers' ``ViTModel`` (Phikon) or ``Dinov2Model`` (Phikon-v2; Midnight-12k
    with the SwiGLU FFN, ``mlp.weights_in`` packing gate and value) state dict names and
    shapes, as transformers 4 saved them (meta tensors)."""
    m = {"embeddings.cls_token": (1, 1, width),
         "embeddings.position_embeddings": (1, 1 + grid * grid, width),
         "embeddings.patch_embeddings.projection.weight": (width, 3, patch, patch),
         "embeddings.patch_embeddings.projection.bias": (width,),
         "layernorm.weight": (width,), "layernorm.bias": (width,)}
    if dinov2:
        m["embeddings.mask_token"] = (1, width)
    else:
        m.update({"pooler.dense.weight": (width, width), "pooler.dense.bias": (width,)})
    for i in range(depth):
        p = f"encoder.layer.{i}."
        for x in ("query", "key", "value"):
            m[p + f"attention.attention.{x}.weight"] = (width, width)
            m[p + f"attention.attention.{x}.bias"] = (width,)
        m[p + "attention.output.dense.weight"] = (width, width)
        m[p + "attention.output.dense.bias"] = (width,)
        if dinov2:
            up, down = ("mlp.weights_in", "mlp.weights_out") if swiglu else ("mlp.fc1",
                                                                            "mlp.fc2")
            names = {"norm1": (width,), "norm2": (width,), up: None, down: None}
            m[p + "layer_scale1.lambda1"] = (width,)
            m[p + "layer_scale2.lambda1"] = (width,)
        else:
            names = {"layernorm_before": (width,), "layernorm_after": (width,),
                     "intermediate.dense": None, "output.dense": None}
        for n, shape in names.items():
            if shape is None:  # the MLP
                if n == "mlp.weights_in":
                    m[p + f"{n}.weight"], m[p + f"{n}.bias"] = (2 * mlp, width), (2 * mlp,)
                    continue
                first = n in ("mlp.fc1", "intermediate.dense")
                m[p + f"{n}.weight"] = (mlp, width) if first else (width, mlp)
                m[p + f"{n}.bias"] = (mlp,) if first else (width,)
            else:
                m[p + f"{n}.weight"], m[p + f"{n}.bias"] = shape, shape
    return {k: torch.empty(v, device="meta") for k, v in m.items()}


def test_phikon_transformers_files_load_with_vit_prefix():
    phikon = hf_vit_names(12, 768, 3072, 14, 16, dinov2=False)
    check_loads("phikon", phikon)
    # saved from ViTForImageClassification / a wrapper: under `vit.`, a head beside it
    wrapped = {f"vit.{k}": v for k, v in phikon.items()}
    wrapped["classifier.weight"] = torch.empty(2, 768, device="meta")
    check_loads("phikon", wrapped)
    v2 = hf_vit_names(24, 1024, 4096, 14, 16, dinov2=True)
    check_loads("phikon_v2", v2)
    check_loads("phikon_v2", {f"module.{k}": v for k, v in v2.items()})
    with pytest.raises(CMTAError, match="phikon_v2"):  # Phikon's ViT-B is not Phikon-v2
        check_loads("phikon_v2", phikon)


def test_midnight_transformers_file_loads_at_its_table_size():
    """kaiko-ai/midnight: a transformers Dinov2Model, ViT-g/14 with SwiGLU (hidden 4096 =
    two thirds of 4 x 1536, rounded to 8). Its table is used as it is at 224 px (257
    rows); a table of another size (DINOv2-giant's 518 px: 1370 rows) is interpolated once
    at load as transformers does at each forward pass. (The conversion was checked against
    transformers 5.25's Dinov2Model on a small random configuration: identical features.)"""
    midnight = hf_vit_names(40, 1536, 4096, 16, 14, dinov2=True, swiglu=True)
    check_loads("midnight12k", midnight)
    at518 = dict(midnight)
    at518["embeddings.position_embeddings"] = torch.empty(1, 1370, 1536, device="meta")
    check_loads("midnight12k", at518)
    no_swiglu = hf_vit_names(40, 1536, 6144, 16, 14, dinov2=True)
    with pytest.raises(CMTAError, match="mlp.fc1.weight has shape"):
        check_loads("midnight12k", no_swiglu)


def test_transformers_position_table_is_interpolated_as_transformers():
    from cmta_pipeline.features.encoders.vit import hf_positions

    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = hf_positions(pos, 16)
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    assert out.shape == (1, 257, 8) and torch.equal(out[:, :1], pos[:, :1])
    assert torch.equal(out[:, 1:], want.permute(0, 2, 3, 1).reshape(1, 256, 8))
    assert hf_positions(out, 16) is out


def conch_v1_published() -> dict:
    """CONCH v1's ``pytorch_model.bin`` names (open_clip CoCa): the visual tower at 448
    with its contrastive and caption poolers (nn.MultiheadAttention, kdim 768 != 512),
    ``proj_contrast``, and a text tower."""
    import timm

    with torch.device("meta"):
        trunk = timm.create_model("vit_base_patch16_224", img_size=448, num_classes=0,
                                  global_pool="").state_dict()
        state = {f"visual.trunk.{k}": v for k, v in trunk.items()}
        for pool, q in (("attn_pool_contrast", 1), ("attn_pool_caption", 256)):
            mha = torch.nn.MultiheadAttention(512, 8, kdim=768, vdim=768)
            state.update({f"visual.{pool}.attn.{k}": v for k, v in mha.state_dict().items()})
            state[f"visual.{pool}.query"] = torch.empty(q, 512)
            for ln, d in (("ln_q", 512), ("ln_k", 768)):
                state[f"visual.{pool}.{ln}.weight"] = torch.empty(d)
                state[f"visual.{pool}.{ln}.bias"] = torch.empty(d)
        for ln in ("ln_contrast", "ln_caption"):
            state[f"visual.{ln}.weight"], state[f"visual.{ln}.bias"] = (torch.empty(512),
                                                                      torch.empty(512))
        state["visual.proj_contrast"] = torch.empty(512, 512)
        state["text.token_embedding.weight"] = torch.empty(32007, 768)
        state["logit_scale"] = torch.empty(())
    return state


def conch_v15_published() -> dict:
    """CONCH v1.5's ``pytorch_model_vision.bin``: conchv1_5.py L564-567 (ViT-L/16 at its
    default 224, qkv bias, LayerScale) and L595-615, L638-644 (pooler without biases)."""
    import timm

    with torch.device("meta"):
        trunk = timm.create_model("vit_large_patch16_224", num_classes=0, global_pool="",
                                  init_values=1.0).state_dict()
        state = {f"trunk.{k}": v for k, v in trunk.items()}
        p = "attn_pool_contrast."
        state.update({p + "query": torch.empty(1, 768),
                      p + "ln_k.weight": torch.empty(1024), p + "ln_k.bias": torch.empty(1024),
                      p + "ln_q.weight": torch.empty(768), p + "ln_q.bias": torch.empty(768),
                      p + "to_q.weight": torch.empty(768, 768),
                      p + "to_kv.weight": torch.empty(1536, 1024),
                      p + "to_out.weight": torch.empty(768, 768),
                      "ln_contrast.weight": torch.empty(768),
                      "ln_contrast.bias": torch.empty(768)})
    return state


def test_conch_files_load_in_their_published_layouts():
    v1 = conch_v1_published()
    check_loads("conch_v1", v1)
    v15 = conch_v15_published()
    assert tuple(v15["trunk.pos_embed"].shape) == (1, 197, 1024)
    check_loads("conch_v15", v15)
    check_loads("conch_v15", {f"module.{k}": v for k, v in v15.items()})
    with pytest.raises(CMTAError, match="conch_v15 weights.*missing"):  # v1's pooler layout
        check_loads("conch_v15", {k[len("visual."):]: v for k, v in v1.items()})
    bad = dict(v15)  # a position table of a trunk built at 448 (what was built before)
    bad["trunk.pos_embed"] = torch.empty(1, 785, 1024, device="meta")
    with pytest.raises(CMTAError, match=r"trunk.pos_embed has shape \(1, 785, 1024\)"):
        check_loads("conch_v15", bad)


def chief_ctranspath_published() -> dict:
    """CHIEF_CTransPath.pth: ``{'model': ...}`` in timm 0.5 Swin names (TRIDENT
    load.py L431-442: it loads into timm_ctp's Swin with only ``attn_mask`` missing):
    stage i's patch merging under ``layers.i.downsample`` (timm now: stage i+1), the
    ``attn_mask`` and ``relative_position_index`` buffers, no classifier head."""
    import re

    own_state = own("ctranspath").state_dict()
    state = {}
    for k, v in own_state.items():
        k = k[len("trunk."):]
        if k.startswith("head."):
            continue
        k = re.sub(r"layers\.(\d+)\.downsample",
                   lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        state[k] = torch.empty(v.shape, device="meta")
    for layer, windows, blocks in ((0, 64, 2), (1, 16, 2), (2, 4, 6), (3, 1, 2)):
        for b in range(blocks):
            state[f"layers.{layer}.blocks.{b}.attn.relative_position_index"] = torch.empty(
                49, 49, dtype=torch.long, device="meta")
            if b % 2 and layer < 3:
                state[f"layers.{layer}.blocks.{b}.attn_mask"] = torch.empty(
                    windows, 49, 49, device="meta")
    return {"model": state}


def test_chief_ctranspath_file_loads():
    state = chief_ctranspath_published()
    assert "layers.0.downsample.reduction.weight" in state["model"]  # the old layout
    assert "patch_embed.proj.0.weight" in state["model"]  # the convolutional stem
    check_loads("ctranspath", state)
    del state["model"]["layers.2.downsample.norm.weight"]
    with pytest.raises(CMTAError, match="layers.3.downsample.norm.weight"):
        check_loads("ctranspath", state)


# ---- CONCH v1.5's numerics, on a small network of the same design --------------------


def test_published_pooler_is_the_published_formula():
    """q = to_q(ln_q(query)); k, v = halves of to_kv(ln_k(x)); softmax(q k^T / sqrt(d)) v
    per head (8), concatenated, to_out: written out with einsum here."""
    from cmta_pipeline.features.encoders.conch import PublishedPooler

    torch.manual_seed(0)
    pool = PublishedPooler(64, 96, n_head=8).eval()
    with torch.no_grad():
        for p in pool.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(3, 17, 96)
    h, d = 8, 8
    q = pool.to_q(pool.ln_q(pool.query)).view(1, h, d)
    k, v = pool.to_kv(pool.ln_k(x)).chunk(2, dim=-1)
    k, v = k.view(3, 17, h, d), v.view(3, 17, h, d)
    att = torch.einsum("qhd,bnhd->bhqn", q, k).mul(d ** -0.5).softmax(-1)
    expected = pool.to_out(torch.einsum("bhqn,bnhd->bqhd", att, v).reshape(3, 1, h * d))
    with torch.no_grad():
        got = pool(x)
        assert torch.allclose(got, expected, atol=1e-5)
        pool.to_out.weight.mul_(1.01)  # a negative control through the same comparison
        assert not torch.allclose(pool(x), expected, atol=1e-5)


def test_position_table_interpolated_as_trident():
    """The 14 x 14 patch rows of a trunk built at 224 taken to the 28 x 28 grid of 448 px:
    bicubic with scale factor (28 + 0.1) / 14 (conchv1_5.py L554-559), class row kept;
    not timm's size-based resampling (a different table)."""
    from timm.layers import resample_abs_pos_embed

    from cmta_pipeline.features.encoders.conch import interpolated_positions

    torch.manual_seed(0)
    pos = torch.randn(1, 197, 32)
    out = interpolated_positions(pos, 28, 28)
    assert out.shape == (1, 785, 32) and torch.equal(out[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    dino = F.interpolate(grid, scale_factor=28.1 / 14, mode="bicubic")
    assert torch.equal(out[:, 1:], dino.permute(0, 2, 3, 1).reshape(1, 784, 32))
    timm_way = resample_abs_pos_embed(pos, new_size=(28, 28), num_prefix_tokens=1)
    assert not torch.allclose(out, timm_way, atol=1e-4)
    assert interpolated_positions(pos, 14, 14) is pos  # at 224 the file's own table


def test_conch_v15_design_on_a_small_trunk(monkeypatch):
    """The whole tower (trunk built at 224, run larger, pooler, ln_contrast) on a 2-block
    ViT-Ti run at 288 px (an 18 x 18 grid; 448 px is the same code with 28): at 224 its
    tokens are timm's own forward; larger, they use the interpolated table."""
    from cmta_pipeline.features.encoders import conch

    monkeypatch.setitem(conch.CONFIGS, "tiny", ("vit_tiny_patch16_224",
                                                {"init_values": 1.0, "depth": 2},
                                                64, 224, "published"))
    torch.manual_seed(0)
    model = conch.ConchVisual("tiny").eval()
    assert tuple(model.trunk.pos_embed.shape) == (1, 197, 192)
    x224, x288 = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 288, 288)
    with torch.no_grad():
        assert torch.allclose(model.tokens(x224), model.trunk.forward_features(x224),
                              atol=1e-5)
        t = model.trunk
        x = t.patch_embed.proj(x288).flatten(2).transpose(1, 2)
        x = torch.cat([t.cls_token.expand(1, -1, -1), x], 1)
        x = x + conch.interpolated_positions(t.pos_embed, 18, 18)
        tokens = t.norm(t.blocks(x))
        expected = model.ln_contrast(model.attn_pool_contrast(tokens)[:, 0])
        got = model(x288)
        assert got.shape == (1, 64) and torch.allclose(got, expected, atol=1e-5)
