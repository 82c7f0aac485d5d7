"""One CMTA training step on a small bag: forward + backward, then the optimizer, timed
apart, with torch's three Adam implementations. Not a test.

    PYTHONPATH=$PWD .venv/bin/python tests/benchmarks/cmta_small_bag_step.py [--patches 27]
"""

from __future__ import annotations

import argparse
import time

import torch

from cmta_pipeline.models import build_model
from cmta_pipeline.training.losses import cmta_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=27)
    ap.add_argument("--genes", type=int, default=48, help="per family (six families)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sizes = [a.genes] * 6
    x = torch.randn(a.patches, 1024)
    omics = [torch.randn(s) for s in sizes]
    y, c = torch.tensor([1]), torch.tensor([0.0])
    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        torch.manual_seed(0)
        model = build_model("cmta", sizes).train()
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5, **kw)
        t_fb = t_opt = 0.0
        for i in range(a.steps + 10):
            t0 = time.perf_counter()
            loss, _ = cmta_loss(model(x, omics), y, c, alpha=1.0)
            loss.backward()
            t1 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 10:  # warm-up steps are not counted
                t_fb += t1 - t0
                t_opt += time.perf_counter() - t1
        n = sum(p.numel() for p in model.parameters())
        print(f"Adam {name}: {n} parameters; forward + backward {1e3 * t_fb / a.steps:.1f} ms, "
              f"optimizer {1e3 * t_opt / a.steps:.1f} ms a step", flush=True)


if __name__ == "__main__":
    main()
