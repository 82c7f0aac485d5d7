"""The Nystrom attention's residual convolution (depthwise, kernel (K, 1)) with an accurate
weight gradient on CPU.

torch's CPU backward of this convolution (oneDNN's depthwise kernel) returns a weight
gradient off by up to a few percent at some sequence lengths (901, 961, 4,096 rows, ...;
about 3e-6 at 900, 902, 1,024) against float64. :func:`residual_conv` computes the forward
with the same ``F.conv2d`` call as ``nn.Conv2d`` (bit-identical outputs) and, on CPU, the
weight gradient from blocked float32 matrix products of the output gradient with the
shifted, zero-padded input (:func:`column_conv_weight_grad`), within 1e-6 relative of
float64 at every length tested (``tests/test_models.py``). The input gradient is torch's own. On other devices the
convolution is torch's, unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: rows per block of the weight gradient's matrix products, and blocks per product (caps the
#: transient (blocks x rows x (rows + K - 1)) matrix at about 50 MB for 8 groups)
BLOCK_ROWS, BLOCKS_PER_PRODUCT = 64, 256


def column_conv_weight_grad(x: torch.Tensor, grad: torch.Tensor, kernel: int, pad: int) -> torch.Tensor:
    """Weight gradient of a depthwise (C groups) convolution with kernel (``kernel``, 1),
    stride 1, padding (``pad``, 0): ``dW[c, 0, k, 0] = sum_{b,n,d} grad[b,c,n,d] *
    x_pad[b,c,n+k,d]``. ``x``, ``grad``: (B, C, N, D) with N the output length.

    The rows are cut into blocks of :data:`BLOCK_ROWS`; per block one matrix product of the
    block's gradient rows with the input rows it meets (``BLOCK_ROWS + kernel - 1``) gives
    every row pair, and the ``kernel`` diagonals of it are the block's share of dW: products
    over D only (short float32 sums), then one sum over all rows."""
    b, c, n, d = grad.shape
    rows, width = BLOCK_ROWS, BLOCK_ROWS + kernel - 1
    nb = -(-n // rows)
    gp = F.pad(grad, (0, 0, 0, nb * rows - n)).reshape(b, c, nb, rows, d)
    xw = F.pad(x, (0, 0, pad, pad + nb * rows - n)).unfold(2, width, rows)  # (B, C, nb, D, width)
    out = grad.new_zeros(c, kernel)
    for s in range(0, nb, BLOCKS_PER_PRODUCT):
        p = torch.matmul(gp[:, :, s:s + BLOCKS_PER_PRODUCT], xw[:, :, s:s + BLOCKS_PER_PRODUCT])
        m = p.shape[2]
        diag = p.as_strided((b, c, m, rows, kernel), (c * m * rows * width, m * rows * width,
                                                      rows * width, width + 1, 1))
        out += diag.sum(dim=(0, 2, 3))
    return out.view(c, 1, kernel, 1)


class _ResidualConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, pad: int):
        ctx.save_for_backward(x, weight)
        ctx.pad = pad
        return F.conv2d(x, weight, None, 1, (pad, 0), 1, weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [ctx.pad, 0], [1, 1], False, [0, 0],
                weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = column_conv_weight_grad(x, grad, weight.shape[2], ctx.pad).to(weight.dtype)
        return grad_x, grad_w, None


def residual_conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise ``nn.Conv2d`` with kernel (K, 1), no bias, stride 1:
    the same output; on CPU with gradients, the accurate weight gradient above."""
    if x.device.type != "cpu" or not torch.is_grad_enabled() or not conv.weight.requires_grad:
        return conv(x)
    return _ResidualConv.apply(x, conv.weight, conv.padding[0])
