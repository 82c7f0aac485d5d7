"""CPU cost of the Nystrom attention's accurate residual-convolution weight gradient
(cmta_pipeline/models/depthwise.py) against torch's own backward: one NystromAttention(256,
8 heads) forward + backward, one thread, median of 5 (docs/benchmarks.md).

    PYTHONPATH=. python tests/benchmarks/residual_conv_grad.py
"""
import time

import torch

import cmta_pipeline.models.nystrom as ny
from cmta_pipeline.models.nystrom import NystromAttention

torch.set_num_threads(1); torch.manual_seed(0)
layer = NystromAttention(dim=256, heads=8)
def step(n, reps=5):
    x = torch.randn(1, n, 256)
    ts = []
    for _ in range(reps):
        layer.zero_grad(); t = time.perf_counter(); layer(x).sum().backward(); ts.append(time.perf_counter() - t)
    return sorted(ts)[reps // 2]
orig = ny.residual_conv
for n in (1024, 4096, 16384):
    ours = step(n)
    ny.residual_conv = lambda conv, v: conv(v)
    plain = step(n)
    ny.residual_conv = orig
    print(f"n={n}: accurate {ours*1e3:.1f} ms, torch {plain*1e3:.1f} ms, ratio {ours/plain:.2f}")
