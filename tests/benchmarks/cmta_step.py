"""CMTA training step (forward, NLL + L1 alignment, backward, SGD) on CPU: s/step, peak RSS.

Usage: python tests/benchmarks/cmta_step.py --patches 4096 [--attention nystrom|exact]
       [--threads 2] [--steps 3] [--published-short]
One bag size per process so that the peak RSS (ru_maxrss) belongs to that size alone.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cmta_pipeline.losses import cmta_loss  # noqa: E402
from cmta_pipeline.models import build_model  # noqa: E402

SIZES = [94, 334, 521, 468, 1496, 479]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patches", type=int, default=4096)
    ap.add_argument("--attention", default="nystrom", choices=["nystrom", "exact"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--published-short", action="store_true",
                    help="run the published 6-iteration pseudo-inverse on the 7-token genomic sequences too")
    ap.add_argument("--bf16", action="store_true", help="CPU bf16 autocast")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = build_model("cmta", SIZES, attention=a.attention, short_exact=not a.published_short)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-5)
    bag = torch.randn(a.patches, 1024)
    omics = [torch.randn(s) for s in SIZES]
    label, c = torch.tensor([2]), torch.tensor([0.0])
    times = []
    for i in range(a.steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            out = model(bag, omics)
        loss, _ = cmta_loss(out, label, c, alpha=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    times.sort()
    print(f"patches={a.patches} attention={a.attention} threads={a.threads} "
          f"published_short={a.published_short} bf16={a.bf16} "
          f"s_per_step_median={times[len(times) // 2]:.3f} min={times[0]:.3f} peak_rss_gb={rss_gb:.2f}")


if __name__ == "__main__":
    main()
