"""Building blocks shared by CMTA and the baselines.

Shapes: B batch (always 1 patient here), N tokens, C = dim channels, h heads, d head dim,
m Nystrom landmarks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- attention


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
        res = self.res_conv(v)
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
