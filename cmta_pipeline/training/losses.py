"""Losses: discrete-time survival NLL and CMTA's cross-modal alignment.

L = L_sur + alpha * L_sim, with L_sim = sim(p_hat, sg(p)) + sim(g_hat, sg(g)), where sg is
the stop-gradient (``detach``): the decoders learn to reproduce the encoders' class
tokens, the encoders are not pulled towards the decoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIMILARITIES = ("l1", "mse", "kl", "cosine")


def nll_survival_loss(
    hazards: torch.Tensor,
    survival: torch.Tensor | None,
    label: torch.Tensor,
    censorship: torch.Tensor,
    censor_weight: float = 0.0,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Discrete-time negative log-likelihood (Zadeh & Schmid 2020), mean over the batch.

    hazards, survival: (B, T); label: (B,) int bin y; censorship: (B,) 1 = censored.
    With S_pad = [1, S_1 .. S_T]: uncensored -(log S_pad[y] + log h[y]); censored
    -log S_pad[y + 1]. ``censor_weight`` (the published ``alpha``, default 0) mixes in
    the uncensored term alone: (1 - w) * nll + w * uncensored.
    """
    b = hazards.shape[0]
    y = label.view(b, 1).long()
    c = censorship.view(b, 1).to(hazards.dtype)
    if survival is None:
        survival = torch.cumprod(1 - hazards, dim=1)
    s_pad = torch.cat([torch.ones_like(c), survival], dim=1)
    uncensored = -(1 - c) * (
        torch.log(torch.gather(s_pad, 1, y).clamp(min=eps))
        + torch.log(torch.gather(hazards, 1, y).clamp(min=eps))
    )
    censored = -c * torch.log(torch.gather(s_pad, 1, y + 1).clamp(min=eps))
    loss = (1 - censor_weight) * (censored + uncensored) + censor_weight * uncensored
    return loss.mean()


def similarity_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Distance between a decoder's token ``pred`` and an encoder's ``target`` (B, C).

    l1: mean absolute error (published); mse: mean squared error; kl: KL(softmax(target)
    || softmax(pred)) over channels; cosine: 1 - cosine similarity.
    """
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "kl":
        return F.kl_div(F.log_softmax(pred, dim=-1), F.log_softmax(target, dim=-1),
                        reduction="batchmean", log_target=True)
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {kind!r}")


def alignment_loss(out: dict, kind: str = "l1", detach: bool = True) -> torch.Tensor:
    """L_sim = sim(p_hat, sg(p)) + sim(g_hat, sg(g)); sg = detach unless ``detach=False``."""
    p, g = out["p"], out["g"]
    if detach:
        p, g = p.detach(), g.detach()
    return similarity_loss(out["p_hat"].float(), p.float(), kind) + similarity_loss(
        out["g_hat"].float(), g.float(), kind
    )


def cmta_loss(
    out: dict,
    label: torch.Tensor,
    censorship: torch.Tensor,
    alpha: float = 1.0,
    similarity: str = "l1",
    detach: bool = True,
    censor_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of one forward pass and its parts {"sur": ..., "sim": ...} (detached
    0-d tensors on the loss's device: reading them is left to the caller, so that a
    training step does not wait for the GPU).

    The alignment term is added only when ``out`` has p/p_hat/g/g_hat (CMTA) and
    ``alpha`` > 0; for other models the loss is the NLL alone.
    """
    sur = nll_survival_loss(out["hazards"], out["survival"], label, censorship, censor_weight)
    parts = {"sur": sur.detach()}
    total = sur
    if alpha > 0 and "p_hat" in out:
        sim = alignment_loss(out, similarity, detach)
        parts["sim"] = sim.detach()
        total = total + alpha * sim
    return total, parts


def l1_penalty(model: torch.nn.Module, modules=()) -> torch.Tensor:
    """Sum of |w| over every parameter of ``model``, or of its submodules named in
    ``modules`` (PORPOISE's ``l1_reg_modules``: the genomic network and the fusion)."""
    parts = [getattr(model, m) for m in modules] if modules else [model]
    return sum(w.abs().sum() for part in parts for w in part.parameters())
