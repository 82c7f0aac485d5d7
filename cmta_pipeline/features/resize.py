"""PIL's resize of patches, batch-wise in torch on any device, to the same bytes.

The readers of the ``tiles`` path can hand over the patch as read (e.g. 512 x 512 px at
40x) and leave its resize to the encoder input (224 px) to the encoder's device, where a
batch of them costs a fraction of a millisecond on a GPU instead of about a millisecond
per patch in a reader. The pixels must stay those of the OpenSlide path, which resizes
each patch with PIL (:func:`cmta_pipeline.features.patches.resize_patch`: box filter when
shrinking, bilinear when growing or for CLAM's pixels). So this is PIL's algorithm
(``libImaging/Resample.c``, 8 bits per channel) in integer arithmetic:

* per output pixel, the source window and filter weights computed in double precision as
  PIL computes them, normalised to sum 1, then rounded to fixed point with 22 fraction
  bits (``PRECISION_BITS = 32 - 8 - 2``);
* a horizontal pass, then a vertical one (only the passes whose size changes), each a sum
  of (pixel x integer weight) started at half a unit, shifted right by 22 bits and clipped
  to 0-255, with the horizontal result stored as uint8 between the passes as PIL does.

The result equals ``Image.fromarray(patch).resize((n, n), BOX or BILINEAR)`` bit for bit
(tests/test_readers.py checks it on random and real patches). ``F.interpolate``'s
``area`` mode is not this filter for non-integer factors.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

PRECISION_BITS = 22
#: PIL's filters: name -> (function, support)
FILTERS = {
    "box": (lambda x: 1.0 if -0.5 < x <= 0.5 else 0.0, 0.5),
    "bilinear": (lambda x: 1.0 - abs(x) if abs(x) < 1.0 else 0.0, 1.0),
}
#: patches resized at a time: bounds the int32 temporaries (about 90 MB per 64 patches of
#: 512 px)
CHUNK = 64


def pil_filter(size: int, input_px: int, clam_pixels: bool) -> str | None:
    """The filter the OpenSlide path resizes a ``size`` px patch to ``input_px`` with
    (None: no resize): bilinear for CLAM's pixels or when growing, else box."""
    if size == input_px:
        return None
    return "bilinear" if clam_pixels or size < input_px else "box"


@lru_cache(maxsize=32)
def pil_coefficients(in_size: int, out_size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(first source index (out,), integer weights (out, k)) of PIL's ``precompute_coeffs``
    and ``normalize_coeffs_8bpc`` for resizing ``in_size`` to ``out_size`` pixels."""
    fn, support0 = FILTERS[name]
    scale = filterscale = float(np.float32(in_size) - np.float32(0.0)) / out_size
    filterscale = max(filterscale, 1.0)
    support = support0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)  # int(): C's truncation toward zero
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [fn((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = sum(k)  # summed in order, as PIL does
        if ww != 0.0:
            k = [w / ww for w in k]
        first[xx] = xmin
        for x, w in enumerate(k):
            weights[xx, x] = int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 \
                else int(0.5 + w * (1 << PRECISION_BITS))
    return first, weights


def _pass(x: torch.Tensor, axis: int, first: np.ndarray, weights: np.ndarray) -> torch.Tensor:
    """One PIL pass along ``axis`` (1 = rows, 2 = columns) of int32 (B, H, W, C) pixels."""
    n_out, k = weights.shape
    src = torch.from_numpy(first[:, None] + np.arange(k)[None, :]).clamp_(max=x.shape[axis] - 1)
    src = src.to(x.device)
    w = torch.from_numpy(weights.astype(np.int32)).to(x.device)
    shape = [1, 1, 1, 1]
    shape[axis] = n_out
    acc = torch.full([*x.shape[:axis], n_out, *x.shape[axis + 1:]], 1 << (PRECISION_BITS - 1),
                     dtype=torch.int32, device=x.device)
    for j in range(k):
        if not weights[:, j].any():
            continue
        acc += x.index_select(axis, src[:, j]) * w[:, j].view(shape)
    return (acc >> PRECISION_BITS).clamp_(0, 255)


def resize_batch(pixels: torch.Tensor, input_px: int, filter_name: str | None) -> torch.Tensor:
    """uint8 (B, S, S, 3) patches -> uint8 (B, input_px, input_px, 3), PIL's bytes, on the
    device the patches are on. ``filter_name`` from :func:`pil_filter` (None: unchanged)."""
    if filter_name is None or len(pixels) == 0:
        return pixels
    b, h, w, c = pixels.shape
    out = torch.empty((b, input_px, input_px, c), dtype=torch.uint8, device=pixels.device)
    cols = pil_coefficients(w, input_px, filter_name)
    rows = pil_coefficients(h, input_px, filter_name)
    for s in range(0, b, CHUNK):
        x = pixels[s:s + CHUNK].to(torch.int32)
        if w != input_px:
            x = _pass(x, 2, *cols)  # PIL stores this pass as 8-bit: values are 0-255 already
        if h != input_px:
            x = _pass(x, 1, *rows)
        out[s:s + CHUNK] = x.to(torch.uint8)
    return out
