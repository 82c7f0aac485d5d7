"""Survival NLL against hand-computed values; alignment similarities; stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch

from cmta_pipeline.models import build_model
from cmta_pipeline.training.losses import alignment_loss, cmta_loss, nll_survival_loss, similarity_loss

H = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # S = 0.9, 0.72, 0.504, 0.3024


def test_nll_uncensored_and_censored_by_hand():
    y = torch.tensor([1])
    unc = nll_survival_loss(H, None, y, torch.tensor([0]))
    # -(log S_pad[1] + log h[1]) = -(log 0.9 + log 0.2)
    assert unc.item() == pytest.approx(-(math.log(0.9) + math.log(0.2)), rel=1e-6)
    cen = nll_survival_loss(H, None, y, torch.tensor([1]))
    # -log S_pad[2] = -log 0.72
    assert cen.item() == pytest.approx(-math.log(0.72), rel=1e-6)
    # first bin, uncensored: S_pad[0] = 1 so only -log h[0]
    first = nll_survival_loss(H, None, torch.tensor([0]), torch.tensor([0]))
    assert first.item() == pytest.approx(-math.log(0.1), rel=1e-6)
    # last bin, censored: -log S_4
    last = nll_survival_loss(H, None, torch.tensor([3]), torch.tensor([1]))
    assert last.item() == pytest.approx(-math.log(0.9 * 0.8 * 0.7 * 0.6), rel=1e-5)
    # a batch is the mean; the survival passed in is used as given
    both = nll_survival_loss(H.repeat(2, 1), torch.cumprod(1 - H, 1).repeat(2, 1),
                             torch.tensor([1, 1]), torch.tensor([0, 1]))
    assert both.item() == pytest.approx((unc.item() + cen.item()) / 2, rel=1e-6)


def test_nll_censor_weight_and_clamp():
    y, c = torch.tensor([1]), torch.tensor([1])
    cen = nll_survival_loss(H, None, y, c).item()
    # censored patient with censor weight 0.4: only (1 - 0.4) of the censored term
    assert nll_survival_loss(H, None, y, c, censor_weight=0.4).item() == pytest.approx(0.6 * cen)
    zero = torch.tensor([[0.0, 0.5, 0.5, 0.5]])
    v = nll_survival_loss(zero, None, torch.tensor([0]), torch.tensor([0])).item()
    assert v == pytest.approx(-math.log(1e-7), rel=1e-4)


def test_similarities():
    a, b = torch.randn(1, 256), torch.randn(1, 256)
    assert similarity_loss(a, b, "l1").item() == pytest.approx((a - b).abs().mean().item(), rel=1e-6)
    assert similarity_loss(a, b, "mse").item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)
    for kind in ("l1", "mse", "kl", "cosine"):
        assert similarity_loss(a, a.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)
        assert similarity_loss(a, b, kind).item() > 0
    assert similarity_loss(a, 3 * a, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="similarity"):
        similarity_loss(a, b, "l2")


def _forward(detach_model: bool = True):
    torch.manual_seed(0)
    sizes = [5, 7, 9, 4, 6, 8]
    m = build_model("cmta", sizes, path_dim=32, detach=detach_model)
    out = m(torch.randn(30, 32), [torch.randn(s) for s in sizes])
    for k in ("p", "p_hat", "g", "g_hat"):
        out[k].retain_grad()
    return m, out


def test_stop_gradient_alignment_reaches_decoders_not_targets():
    m, out = _forward()
    alignment_loss(out, "l1", detach=True).backward()
    assert out["p"].grad is None and out["g"].grad is None
    assert out["p_hat"].grad.abs().sum() > 0 and out["g_hat"].grad.abs().sum() > 0
    # dL1/dp_hat = sign(p_hat - p) / C
    expect = torch.sign(out["p_hat"] - out["p"]).detach() / 256
    assert torch.allclose(out["p_hat"].grad, expect)
    assert m.pathology_decoder.norm.weight.grad.abs().sum() > 0
    assert m.genomics_decoder.norm.weight.grad.abs().sum() > 0
    assert m.fusion[0].weight.grad is None  # fusion and head are untouched by L_sim


def test_no_detach_ablation_pulls_the_targets_too():
    m, out = _forward(detach_model=False)
    total, parts = cmta_loss(out, torch.tensor([1]), torch.tensor([0]), alpha=1.0,
                             detach=m.detach_targets)
    assert "sim" in parts
    alignment_loss(out, "l1", detach=False).backward()
    assert out["p"].grad is not None and out["g"].grad is not None
    # dL1/dp = -sign(p_hat - p) / C: the opposite of the decoder's gradient
    assert torch.allclose(out["p"].grad, -out["p_hat"].grad)
    assert torch.allclose(out["g"].grad, -out["g_hat"].grad)


def test_cmta_loss_total_is_nll_plus_alpha_sim():
    _, out = _forward()
    y, c = torch.tensor([2]), torch.tensor([0])
    total, parts = cmta_loss(out, y, c, alpha=0.5)
    sur = nll_survival_loss(out["hazards"], out["survival"], y, c).item()
    sim = alignment_loss(out).item()
    assert float(parts["sur"]) == pytest.approx(sur) and float(parts["sim"]) == pytest.approx(sim)
    assert total.item() == pytest.approx(sur + 0.5 * sim, rel=1e-6)
    total0, parts0 = cmta_loss(out, y, c, alpha=0.0)
    assert "sim" not in parts0 and total0.item() == pytest.approx(sur)
    # models without p_hat (baselines) get the NLL alone
    only = {k: out[k] for k in ("hazards", "survival", "risk")}
    assert cmta_loss(only, y, c, alpha=1.0)[0].item() == pytest.approx(sur)
