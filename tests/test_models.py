"""CMTA and baselines: parameter counts, shapes, attention, PPEG, ablation flags."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmta_pipeline.models import MODELS, build_model, count_parameters
from cmta_pipeline.models.layers import PPEG
from cmta_pipeline.models.nystrom import NystromAttention, moore_penrose_pinv, nystrom_pinv_apply

BLCA = [94, 334, 521, 468, 1496, 479]
TINY = [5, 7, 9, 4, 6, 8]


def _omics(sizes):
    return [torch.randn(s) for s in sizes]


def test_cmta_parameter_counts_match_published():
    small = build_model("cmta", BLCA)
    assert count_parameters(small) == 8_259_140
    parts = {name: count_parameters(m) for name, m in small.named_children()}
    assert parts == {
        "pathology_embedding": 328_192,
        "genomic_embedding": 5_053_952,
        "pathology_encoder": 549_136,
        "genomic_encoder": 527_120,
        "pathology_to_genomics": 263_168,
        "genomics_to_pathology": 263_168,
        "pathology_decoder": 549_136,
        "genomics_decoder": 527_120,
        "fusion": 197_120,
        "head": 1_028,
    }
    assert count_parameters(build_model("cmta", BLCA, size="large")) == 21_182_276
    # exact attention is a drop-in: same weights
    assert count_parameters(build_model("cmta", BLCA, attention="exact")) == 8_259_140


def test_init_is_xavier_with_zero_bias():
    m = build_model("cmta", TINY, path_dim=32)
    lin = m.fusion[0]
    assert torch.all(lin.bias == 0)
    std = (2 / (lin.in_features + lin.out_features)) ** 0.5
    assert abs(lin.weight.std().item() - std) / std < 0.1
    assert m.pathology_encoder.cls_token.abs().max() < 1e-4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_outputs_and_risk_definition(name):
    torch.manual_seed(0)
    m = build_model(name, TINY, path_dim=32).eval()
    bag = torch.randn(50, 32)
    with torch.no_grad():
        out = m(bag, _omics(TINY))
    assert out["hazards"].shape == (1, 4) and out["survival"].shape == (1, 4)
    assert out["risk"].shape == (1,)
    h = out["hazards"]
    assert torch.all((h > 0) & (h < 1))
    assert torch.allclose(out["survival"], torch.cumprod(1 - h, dim=1))
    assert torch.allclose(out["risk"], -out["survival"].sum(dim=1))
    if name == "cmta":
        for k in ("p", "p_hat", "g", "g_hat"):
            assert out[k].shape == (1, 256)


def test_bag_layouts_agree_and_single_modality_models_ignore_the_other():
    torch.manual_seed(0)
    bag, om = torch.randn(40, 32), _omics(TINY)
    m = build_model("cmta", TINY, path_dim=32).eval()
    with torch.no_grad():
        assert torch.allclose(m(bag, om)["risk"], m(bag.unsqueeze(0), om)["risk"])
        snn = build_model("snn", TINY).eval()
        assert torch.allclose(snn(None, om)["risk"], snn(bag, om)["risk"])
        mil = build_model("attmil", None, path_dim=32).eval()
        assert torch.allclose(mil(bag, None)["risk"], mil(bag, om)["risk"])
    with pytest.raises(ValueError, match="genomics"):
        snn(bag, None)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("no_such_model", TINY)
    with pytest.raises(ValueError, match="unknown model option"):
        build_model("cmta", TINY, dropuot=0.1)


def test_mil_pooling_is_what_it_says():
    torch.manual_seed(0)
    bag = torch.randn(30, 32)
    mean = build_model("meanmil", None, path_dim=32).eval()
    mx = build_model("maxmil", None, path_dim=32).eval()
    with torch.no_grad():
        # mean pooling: duplicating the bag changes nothing; max pooling: adding a copy
        # of one patch changes nothing
        assert torch.allclose(mean(bag)["risk"], mean(torch.cat([bag, bag]))["risk"], atol=1e-6)
        assert torch.allclose(mx(bag)["risk"], mx(torch.cat([bag, bag[:1]]))["risk"], atol=1e-6)
        assert not torch.allclose(mean(bag)["risk"], mean(bag[:10])["risk"])


def test_pinv_iteration_converges_to_pseudo_inverse():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(3, 16, 16) + 4 * torch.eye(16), dim=-1)
    assert torch.allclose(moore_penrose_pinv(a, 6), torch.linalg.inv(a), atol=1e-4)


def test_nystrom_equals_exact_attention_when_landmarks_are_the_tokens():
    torch.manual_seed(0)
    ny = NystromAttention(64, heads=4, num_landmarks=32, pinv_iterations=30,
                          short_exact=False, dropout=0.0).eval()
    ex = NystromAttention(64, heads=4, num_landmarks=32, mode="exact", dropout=0.0).eval()
    ex.load_state_dict(ny.state_dict())
    x = torch.randn(1, 32, 64)
    with torch.no_grad():
        assert torch.allclose(ny(x), ex(x), atol=1e-4)
        # reference: softmax attention written out, plus the residual convolution
        q, k, v = ex._split(x)
        ref = torch.softmax(q @ k.transpose(-1, -2) / 16**0.5, -1) @ v + ex.res_conv(v)
        assert torch.allclose(ex(x), ex._merge(ref), atol=1e-5)


def test_nystrom_approximates_exact_attention_on_longer_sequences():
    torch.manual_seed(0)
    ny = NystromAttention(64, heads=4, num_landmarks=32, dropout=0.0).eval()
    ex = NystromAttention(64, heads=4, num_landmarks=32, mode="exact", dropout=0.0).eval()
    ex.load_state_dict(ny.state_dict())
    x = torch.randn(1, 250, 64)  # padded to 256: 32 landmarks of 8 tokens
    with torch.no_grad():
        y_ny, y_ex = ny(x), ex(x)
    rel = ((y_ny - y_ex).norm() / y_ex.norm()).item()
    assert rel < 0.3


def test_short_sequences_take_the_converged_limit_of_the_published_formula():
    # 7 tokens, 32 landmarks: the published code pads with 25 zero tokens and runs the
    # pseudo-inverse; the short path computes the limit directly.
    torch.manual_seed(0)
    pub = NystromAttention(64, heads=4, num_landmarks=32, pinv_iterations=40,
                           short_exact=False, dropout=0.0).eval()
    fast = NystromAttention(64, heads=4, num_landmarks=32, dropout=0.0, short_exact=True).eval()
    fast.load_state_dict(pub.state_dict())
    x = torch.randn(1, 7, 64)
    with torch.no_grad():
        assert torch.allclose(pub(x), fast(x), atol=1e-5)
        # and it is not plain attention over the 7 tokens: the pads take softmax mass
        ex = NystromAttention(64, heads=4, num_landmarks=32, mode="exact", dropout=0.0).eval()
        ex.load_state_dict(pub.state_dict())
        assert not torch.allclose(ex(x), fast(x), atol=1e-3)


def test_ppeg_merged_kernel_equals_three_convolutions_plus_identity():
    torch.manual_seed(0)
    ppeg = PPEG(16)
    for conv in (ppeg.proj, ppeg.proj1, ppeg.proj2):
        torch.nn.init.normal_(conv.bias)
    side = 5
    x = torch.randn(1, 1 + side * side, 16)
    grid = x[:, 1:].transpose(1, 2).reshape(1, 16, side, side)
    ref = grid + ppeg.proj(grid) + ppeg.proj1(grid) + ppeg.proj2(grid)
    out = ppeg(x, side)
    assert torch.equal(out[:, 0], x[:, 0])  # class token untouched
    assert torch.allclose(out[:, 1:], ref.flatten(2).transpose(1, 2), atol=1e-5)


def test_pathology_encoder_pads_to_a_square_by_repeating_first_tokens():
    m = build_model("cmta", TINY, path_dim=32).eval()
    tokens = torch.randn(1, 10, 256)
    seen = {}
    m.pathology_encoder.layer1.register_forward_hook(lambda mod, i, o: seen.update(x=i[0]))
    with torch.no_grad():
        p, toks = m.pathology_encoder(tokens)
    assert toks.shape == (1, 16, 256)  # 10 -> 4 x 4
    x = seen["x"]
    assert x.shape == (1, 17, 256)
    assert torch.equal(x[:, 11:17], tokens[:, :6])


def _decoder_inputs(model, bag, om):
    seen = {}
    model.pathology_decoder.register_forward_pre_hook(lambda mod, a: seen.update(pd=a[0].shape[1]))
    model.genomics_decoder.register_forward_pre_hook(lambda mod, a: seen.update(gd=a[0].shape[1]))
    with torch.no_grad():
        model.eval()(bag, om)
    return seen


def test_ablation_flags_change_the_model_as_described():
    torch.manual_seed(0)
    bag, om = torch.randn(20, 32), _omics(TINY)
    full = build_model("cmta", TINY, path_dim=32)
    n_full = count_parameters(full)
    # with cross-modal attention: pathology decoder sees the 25 (5 x 5) pathology-length
    # tokens, the genomics decoder the 6 genomic-length tokens
    assert _decoder_inputs(full, bag, om) == {"pd": 25, "gd": 6}
    no_cross = build_model("cmta", TINY, path_dim=32, cross_attention=False)
    assert count_parameters(no_cross) == n_full - 2 * 263_168
    assert not hasattr(no_cross, "pathology_to_genomics")
    # without attention each decoder reads the other modality's encoder tokens directly
    assert _decoder_inputs(no_cross, bag, om) == {"pd": 6, "gd": 25}
    no_ppeg = build_model("cmta", TINY, path_dim=32, ppeg=False)
    assert count_parameters(no_ppeg) == n_full - 2 * 22_016
    assert no_ppeg.pathology_encoder.pos_layer is None
    assert build_model("cmta", TINY, alignment=False).alignment is False
    assert build_model("cmta", TINY, detach=False).detach_targets is False
    assert full.alignment is True and full.detach_targets is True
    bil = build_model("cmta", TINY, path_dim=32, fusion="bilinear").eval()
    with torch.no_grad():
        assert bil(bag, om)["risk"].shape == (1,)


def test_cmta_backward_reaches_every_parameter():
    torch.manual_seed(0)
    m = build_model("cmta", TINY, path_dim=32)
    out = m(torch.randn(300, 32), _omics(TINY))  # 301 tokens: the Nystrom path
    (out["risk"].sum() + F.l1_loss(out["p_hat"], out["p"].detach())
     + F.l1_loss(out["g_hat"], out["g"].detach())).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []


def _published_nystrom(attn: NystromAttention, x: torch.Tensor) -> torch.Tensor:
    """The published arithmetic, written plainly: front zero-padding to a multiple of the
    landmarks, landmark means, three softmaxes, (attn1 @ pinv(attn2)) @ (attn3 @ v), the
    residual convolution on the padded v, output projection, last n tokens."""
    b, n, _ = x.shape
    m, h = attn.num_landmarks, attn.heads
    pad = (-n) % m
    xp = F.pad(x, (0, 0, pad, 0))
    q, k, v = attn.to_qkv(xp).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, -1, h, attn.dim_head).transpose(1, 2) for t in (q, k, v))
    q = q * attn.scale
    length = (n + pad) // m
    ql = q.reshape(b, h, m, length, -1).sum(3) / length
    kl = k.reshape(b, h, m, length, -1).sum(3) / length
    a1 = (q @ kl.transpose(-1, -2)).softmax(-1)
    a2 = (ql @ kl.transpose(-1, -2)).softmax(-1)
    a3 = (ql @ k.transpose(-1, -2)).softmax(-1)
    out = (a1 @ moore_penrose_pinv(a2, attn.pinv_iterations)) @ (a3 @ v)
    out = out + attn.res_conv(v)
    out = out.transpose(1, 2).reshape(b, -1, h * attn.dim_head)
    return attn.to_out(out)[:, -n:]


@pytest.mark.parametrize("n", [1, 7, 31, 32, 33, 250, 256, 300])
def test_nystrom_matches_the_published_arithmetic(n):
    torch.manual_seed(0)
    attn = NystromAttention(64, heads=4, num_landmarks=32, dropout=0.0).eval()
    x = torch.randn(1, n, 64)
    with torch.no_grad():
        assert torch.allclose(attn(x), _published_nystrom(attn, x), atol=1e-5)


def test_default_attention_is_the_published_arithmetic_on_short_sequences():
    # the 7 genomic tokens: the default runs the published 6-iteration pseudo-inverse (its
    # value, computed on a reduced matrix), not the converged limit (short_exact=True)
    torch.manual_seed(0)
    pub = NystromAttention(256, dropout=0.0).eval()
    lim = NystromAttention(256, dropout=0.0, short_exact=True).eval()
    lim.load_state_dict(pub.state_dict())
    x = torch.randn(1, 7, 256)
    with torch.no_grad():
        assert torch.allclose(pub(x), _published_nystrom(pub, x), atol=1e-5)
        assert not torch.allclose(pub(x), lim(x), atol=1e-3)
    assert build_model("cmta", TINY).genomic_encoder.layer1.attn.short_exact is False


@pytest.mark.parametrize("m,n_zero", [(128, 121), (128, 2), (16, 5), (16, 1)])
def test_reduced_pseudo_inverse_equals_the_full_iteration(m, n_zero):
    # landmarks: n_zero zero vectors in front, then real ones (as after front zero-padding)
    torch.manual_seed(0)
    ql = torch.cat([torch.zeros(2, 3, n_zero, 8), torch.randn(2, 3, m - n_zero, 8)], dim=2)
    kl = torch.cat([torch.zeros(2, 3, n_zero, 8), torch.randn(2, 3, m - n_zero, 8)], dim=2)
    attn2 = (ql @ kl.transpose(-1, -2)).softmax(-1)
    w = torch.randn(2, 3, m, 8)
    w[:, :, :n_zero] = w[:, :, :1]  # zero queries give identical rows
    full = moore_penrose_pinv(attn2, 6) @ w
    reduced = nystrom_pinv_apply(attn2, w, n_zero, 6)
    assert torch.allclose(reduced, full, atol=1e-5 * full.abs().max().item())
    # and the iteration is far from converged here, so the reduction is not a shortcut to pinv
    if n_zero > 2:
        assert not torch.allclose(full, torch.linalg.pinv(attn2) @ w, atol=1e-2)


def test_train_cli_defaults_are_whole_bags_and_the_published_attention():
    import argparse

    from cmta_pipeline.cli import load_command

    add_arguments, _ = load_command("train")
    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--cohort", "c", "--fold", "0", "--model", "cmta", "-o", "o"]
    a = p.parse_args(base)
    assert a.max_train_patches == 0 and a.short_exact_attention is False
    assert p.parse_args(base + ["--max-train-patches", "none"]).max_train_patches == 0
    assert p.parse_args(base + ["--max-train-patches", "4096"]).max_train_patches == 4096
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--max-train-patches", "-1"])


def _conv_weight_grad_error(grad_fn, n: int, d: int = 32, seed: int = 0) -> float:
    """max |dW - dW_fp64| / max |dW_fp64| of the attention's residual convolution (8 heads,
    kernel (33, 1), ``d`` channels per head) at sequence length ``n``."""
    gen = torch.Generator().manual_seed(seed + n)
    conv = torch.nn.Conv2d(8, 8, (33, 1), padding=(16, 0), groups=8, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
    v = torch.randn(1, 8, n, d, generator=gen)
    g = torch.randn(1, 8, n, d, generator=gen)
    grad_fn(conv, v).backward(g)
    w64 = conv.weight.detach().double().requires_grad_(True)
    F.conv2d(v.double(), w64, padding=(16, 0), groups=8).backward(g.double())
    return float((conv.weight.grad.double() - w64.grad).abs().max() / w64.grad.abs().max())


LENGTHS = list(range(890, 1031)) + [1, 33, 128, 1500, 2048, 3001, 4096, 5000]


def test_residual_conv_weight_gradient_matches_float64_on_cpu():
    """The attention's residual convolution: outputs bit-identical to nn.Conv2d, and on CPU a
    weight gradient within 1e-5 relative of float64 at every length (torch's own oneDNN
    backward is off by up to a few percent at 901, 961, 4,096, ...: the negative control)."""
    from cmta_pipeline.models.depthwise import residual_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, (33, 1), padding=(16, 0), groups=8, bias=False)
    x = torch.randn(1, 8, 961, 32, requires_grad=True)
    assert torch.equal(residual_conv(conv, x), conv(x))
    # every length from 890 to 1030 (8 channels per head, for speed), and a spread up to 5,000
    # at the model's 32 channels per head
    ours = {(n, 8): _conv_weight_grad_error(lambda c, v: residual_conv(c, v), n, 8) for n in LENGTHS}
    ours.update({(n, 32): _conv_weight_grad_error(lambda c, v: residual_conv(c, v), n)
                 for n in (901, 961, 4096)})
    bad = {n: e for n, e in ours.items() if e > 1e-5}
    assert not bad, f"weight gradient off float64 at lengths {bad}"
    # the same measure through torch's own convolution must fail somewhere (if this torch
    # build has the bug), or the check above could not fail
    plain = {n: _conv_weight_grad_error(lambda c, v: c(v), n) for n in (901, 961, 4096)}
    plain.update({(n, 8): _conv_weight_grad_error(lambda c, v: c(v), n, 8) for n in (901, 961)})
    if max(plain.values()) <= 1e-5:
        pytest.skip(f"torch {torch.__version__} has no CPU depthwise-conv weight-gradient error "
                    f"here ({plain}); negative control skipped, accurate gradient checked")
    assert max(plain.values()) > 1e-5


def test_nystrom_attention_uses_the_accurate_residual_conv():
    """Through the layer itself: the residual convolution's weight gradient at a length where
    torch's own is wrong agrees with float64 (same weights, same input)."""
    torch.manual_seed(0)
    layer = NystromAttention(dim=256, heads=8).eval()
    x = torch.randn(1, 901, 256)
    layer(x).square().sum().backward()
    ref = NystromAttention(dim=256, heads=8).double().eval()
    ref.load_state_dict(layer.state_dict())
    ref(x.double()).square().sum().backward()
    g, g64 = layer.res_conv.weight.grad.double(), ref.res_conv.weight.grad
    assert float((g - g64).abs().max() / g64.abs().max()) < 1e-4
