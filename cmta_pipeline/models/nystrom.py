"""Nystrom self-attention (Xiong et al. 2021, as in TransMIL and CMTA): landmarks, the
iterative Moore-Penrose pseudo-inverse and the attention built from them.

Shapes: B batch (always 1 patient here), N tokens, C = dim channels, h heads, d head dim,
m Nystrom landmarks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import residual_conv


def moore_penrose_pinv(x: torch.Tensor, iters: int = 6, denom: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Iterative Moore-Penrose pseudo-inverse of the last two dims of ``x`` (..., m, m).

    The high-order iteration of Razavi et al. used by Nystromformer, started from
    x^T / (max row sum * max column sum of |x|) taken over the whole tensor (as published);
    ``denom`` overrides that start scale (see :func:`nystrom_pinv_apply`).
    Always computed in float32: half precision does not converge.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        if denom is None:
            abs_x = x.abs()
            denom = abs_x.sum(dim=-1).max() * abs_x.sum(dim=-2).max()
        z = x.transpose(-1, -2) / denom
        eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
        for _ in range(iters):
            xz = x @ z
            z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


def nystrom_pinv_apply(attn2: torch.Tensor, w: torch.Tensor, n_zero: int, iters: int = 6
                       ) -> torch.Tensor:
    """``moore_penrose_pinv(attn2, iters) @ w`` for Nystrom landmark matrices whose first
    ``n_zero`` landmarks are zero vectors, computed on an (m - n_zero + 1)-square matrix.

    attn2 (..., m, m) = softmax(q_land k_land^T); w (..., m, d) = softmax(q_land k^T) v.

    Why this is the same value: zero landmarks give attn2 rows of 1/m and columns that are
    constant within each row, so attn2 is unchanged by any permutation of the zero
    landmarks, and so is every matrix the iteration builds from it (it uses only products,
    transposes and the identity). Such a matrix acts on the vectors of the zero landmarks
    that sum to 0 as a scalar (0 here, since attn2's zero-zero block is a multiple of the
    all-ones matrix) and maps the other vectors within span(e, real landmarks), e the unit
    vector spread evenly over the zero landmarks. In that orthonormal basis the iteration
    runs on (r + 1) x (r + 1) matrices (r real landmarks) with the same start scale, and
    the rows of w for zero landmarks are identical (their queries are all zero). For the
    7 genomic tokens this is an 8 x 8 instead of a 128 x 128 iteration.
    """
    if n_zero < 2:
        return moore_penrose_pinv(attn2, iters).to(w.dtype) @ w
    with torch.autocast(device_type=attn2.device.type, enabled=False):
        a = attn2.float()
        abs_a = a.abs()
        # the published start scale, read off the full matrix (cheap: m x m sums)
        denom = abs_a.sum(dim=-1).max() * abs_a.sum(dim=-2).max()
        root = math.sqrt(n_zero)
        top = torch.cat([a[..., :1, :1] * n_zero, a[..., :1, n_zero:] * root], dim=-1)
        bottom = torch.cat([a[..., n_zero:, :1] * root, a[..., n_zero:, n_zero:]], dim=-1)
        small = torch.cat([top, bottom], dim=-2)  # (..., r + 1, r + 1)
        z = moore_penrose_pinv(small, iters, denom)
        wf = w.float()
        w_small = torch.cat([wf[..., :1, :] * root, wf[..., n_zero:, :]], dim=-2)
        y = z @ w_small  # (..., r + 1, d)
        zero_rows = (y[..., :1, :] / root).expand(*y.shape[:-2], n_zero, y.shape[-1])
        out = torch.cat([zero_rows, y[..., 1:, :]], dim=-2)
    return out.to(w.dtype)


class NystromAttention(nn.Module):
    """Multi-head self-attention with the Nystrom approximation (Xiong et al. 2021).

    Parameters match the published TransMIL/CMTA layer: qkv projection without bias,
    output projection with bias and dropout, and a depthwise residual convolution over
    the sequence (kernel ``residual_kernel`` along tokens, one filter per head).

    ``mode``:

    * ``"nystrom"``: as published. The sequence is zero-padded at the front to a multiple
      of ``num_landmarks``; landmarks are means of consecutive groups of tokens; 6
      iterations of the pseudo-inverse. Same value as the published layer; the
      pseudo-inverse is run on a reduced matrix where landmarks are zero pads
      (:func:`nystrom_pinv_apply`, :meth:`_short_published`), so the 7 genomic tokens pay
      an 8 x 8 instead of a 128 x 128 iteration per head.
      ``short_exact=True`` (a departure) gives sequences no longer than ``num_landmarks``
      the converged limit of the formula instead: softmax attention in which the pads are
      keys of logit 0 and value 0. The published 6 iterations are not converged there, so
      this is a different function.
    * ``"exact"``: exact softmax attention over the unpadded sequence through
      ``F.scaled_dot_product_attention`` (flash/memory-efficient kernels), same weights.
    """

    def __init__(
        self,
        dim: int = 256,
        heads: int = 8,
        dim_head: int | None = None,
        num_landmarks: int | None = None,
        pinv_iterations: int = 6,
        residual_kernel: int = 33,
        dropout: float = 0.1,
        mode: str = "nystrom",
        short_exact: bool = False,
    ):
        super().__init__()
        if mode not in ("nystrom", "exact"):
            raise ValueError(f"attention mode must be 'nystrom' or 'exact', got {mode!r}")
        dim_head = dim_head or dim // heads
        self.heads, self.dim_head = heads, dim_head
        self.num_landmarks = num_landmarks or dim // 2
        self.pinv_iterations = pinv_iterations
        self.scale = dim_head**-0.5
        self.mode = mode
        self.short_exact = short_exact
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.res_conv = nn.Conv2d(
            heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0),
            groups=heads, bias=False,
        )

    def _split(self, x: torch.Tensor):
        b, n, _ = x.shape
        qkv = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, d)
        return q, k, v

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        n = x.shape[1]
        m = self.num_landmarks
        q, k, v = self._split(x)
        # Zero pads have q = k = v = 0 (no qkv bias), so the residual convolution of the
        # padded sequence equals the zero-padded convolution of the real tokens.
        res = residual_conv(self.res_conv, v)  # accurate weight gradient on CPU
        if self.mode == "exact":
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        elif n <= m and self.short_exact:
            out = self._short(q, k, v, m - n)
        elif n < m:
            out = self._short_published(q, k, v, m - n)
        else:
            out = self._nystrom(q, k, v)
        return self._merge(out + res)

    def _short(self, q, k, v, n_null: int) -> torch.Tensor:
        # Softmax over the real keys plus n_null keys of logit 0 and value 0 (the pads),
        # written as one extra key of logit log(n_null).
        s = (q * self.scale) @ k.transpose(-1, -2)
        if n_null > 0:
            null = torch.full_like(s[..., :1], math.log(n_null))
            attn = torch.cat([s, null], dim=-1).softmax(dim=-1)[..., :-1]
        else:
            attn = s.softmax(dim=-1)
        return attn @ v

    def _short_published(self, q, k, v, n_pad: int) -> torch.Tensor:
        """The published arithmetic for n < m tokens (every landmark is a token or a zero
        pad, so attn1 = attn2 = attn3), on (n + 1)-square matrices: with X the reduced attn2
        of :func:`nystrom_pinv_apply` (pads folded into one coordinate), the published
        ``attn1 @ pinv(attn2) @ (attn3 @ v)`` is ``X[1:] @ pinv(X) @ X @ [0; v]``."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k, v = q.float(), k.float(), v.float()
            m = self.num_landmarks
            root = math.sqrt(n_pad)
            s = (q * self.scale) @ k.transpose(-1, -2)  # (B, h, n, n)
            # softmax over the n tokens and the n_pad zero keys (logit 0 each)
            probs = torch.cat([s, torch.full_like(s[..., :1], math.log(n_pad))], dim=-1).softmax(-1)
            real, pad_mass = probs[..., :-1], probs[..., -1:]  # pad_mass = n_pad * c
            top = torch.cat([torch.full_like(s[..., :1, :1], n_pad / m),
                             torch.full_like(s[..., :1, :], root / m)], dim=-1)
            x = torch.cat([top, torch.cat([pad_mass / root, real], dim=-1)], dim=-2)
            # the published start scale: max row sum (pad rows: exactly 1) times max column
            # sum (every column gets n_pad / m from the pad rows) of the full attn2
            row_max = torch.maximum(probs.sum(-1).max(), torch.ones((), device=q.device))
            col = torch.cat([pad_mass.sum(-2) / n_pad, real.sum(-2)], dim=-1) + n_pad / m
            z = moore_penrose_pinv(x, self.pinv_iterations, row_max * col.max())
            w = torch.cat([v.sum(-2, keepdim=True) * (root / m), real @ v], dim=-2)  # X @ [0; v]
            out = x[..., 1:, :] @ (z @ w)
        return out

    def _nystrom(self, q, k, v) -> torch.Tensor:
        b, h, n, d = q.shape
        m = self.num_landmarks
        pad = (-n) % m  # zero tokens the published code puts in front
        length = (n + pad) // m  # tokens per landmark
        if pad:
            k_pad, v_pad = F.pad(k, (0, 0, pad, 0)), F.pad(v, (0, 0, pad, 0))
            q_pad = F.pad(q, (0, 0, pad, 0))
        else:
            q_pad, k_pad, v_pad = q, k, v
        # Landmarks: means of `length` consecutive tokens of the front-padded sequence.
        q_land = q_pad.reshape(b, h, m, length, d).mean(dim=3)
        k_land = k_pad.reshape(b, h, m, length, d).mean(dim=3)
        attn2 = (q_land @ k_land.transpose(-1, -2) * self.scale).softmax(dim=-1)  # (B, h, m, m)
        # softmax(q_land k^T) v and softmax(q k_land^T) W are fused attention calls (the
        # n x m and m x n matrices are never stored). Published order:
        # (attn1 @ attn2_inv) @ (attn3 @ v); here attn1 @ (attn2_inv @ (attn3 @ v)), the
        # same value without the n x m x m product. Only the n real queries are computed.
        attn3_v = F.scaled_dot_product_attention(q_land, k_pad, v_pad, scale=self.scale)
        # the first pad // length landmarks are means of zero pads only
        inv_w = nystrom_pinv_apply(attn2, attn3_v, pad // length, self.pinv_iterations)
        return F.scaled_dot_product_attention(q, k_land, inv_w, scale=self.scale)
