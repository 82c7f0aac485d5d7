"""CPU time of `cmta heatmap`'s work for one slide: CMTA forward alone vs forward with the
attention captured (hooks + effective Nystrom row + cross-modal weights), interleaved, and
drawing 7 panels over a thumbnail. Random weights and features (the cost does not depend
on them). Run: PYTHONPATH=$PWD python tests/benchmarks/heatmap_cpu.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cmta_pipeline.heatmaps.maps import bag_attention, draw_heatmaps
from cmta_pipeline.models import build_model

SIZES = [94, 334, 521, 468, 1496, 479]  # BLCA family sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patches", type=int, nargs="+", default=[2000, 8000, 16000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slide", default=str(Path(__file__).resolve().parents[2].parent / "shared/data/slides/CMU-1-Small-Region.svs"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"uptime: {os.getloadavg()}, threads {a.threads}")
    torch.manual_seed(0)
    model = build_model("cmta", SIZES).eval()
    omics = [torch.randn(s) for s in SIZES]
    names = [f"family {i}" for i in range(6)]
    for n in a.patches:
        bag = torch.randn(n, 1024)
        plain, hooked = [], []
        for _ in range(a.repeats):  # interleaved, so that load affects both alike
            t0 = time.perf_counter()
            with torch.no_grad():
                model(bag, omics)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, values, _ = bag_attention(model, bag, omics, names)
            hooked.append(time.perf_counter() - t0)
        side = int(np.ceil(np.sqrt(n)))
        coords = np.stack(np.divmod(np.arange(n), side), 1)[:, ::-1] * 16
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            slide = a.slide if Path(a.slide).is_file() else None
            draw_heatmaps(slide, coords * (1 if slide is None else 2000 / (side * 16)), 16, values, names + ["pathology"],
                          Path(d) / "h", "benchmark")
        draw = time.perf_counter() - t0
        print(f"{n:6d} patches: forward {np.median(plain):.2f} s, forward + attention "
              f"{np.median(hooked):.2f} s (median of {a.repeats}), drawing 7 panels {draw:.2f} s")
    print(f"uptime after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
