"""GPU check of the CMTA model and training loop (run by hand on a CUDA machine).

    python tests/benchmarks/gpu_model_check.py [--steps 5] [--sizes 4096,16384]

Prints, one line each:
1. CPU vs CUDA forward agreement (fp32, eval mode) on a 1,000-patch bag.
2. A training step (forward, NLL + L1 alignment, backward, SGD) at each bag size, for
   Nystrom and exact (SDPA) attention, fp32 and autocast (bf16 where supported):
   seconds per step (median after a warm-up step) and peak GPU memory.
3. train_fold on a small synthetic cohort on CUDA with mixed precision (2 epochs):
   it must run and give a finite held-out c-index.
Takes about a minute on one recent GPU. Exits non-zero if CUDA is missing or a check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cmta_pipeline.losses import cmta_loss  # noqa: E402
from cmta_pipeline.models import build_model  # noqa: E402
from cmta_pipeline.training import TrainSettings, train_fold  # noqa: E402
from cmta_pipeline.training.synthetic import synthetic_cohort  # noqa: E402

SIZES = [94, 334, 521, 468, 1496, 479]


def agreement() -> bool:
    torch.manual_seed(0)
    model = build_model("cmta", SIZES).eval()
    bag = torch.randn(1000, 1024)
    omics = [torch.randn(s) for s in SIZES]
    # TF32 convolutions would differ from the CPU by ~1e-3 on their own: off for this check.
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        cpu = model(bag, omics)["hazards"]
        model.cuda()
        gpu = model(bag.cuda(), [o.cuda() for o in omics])["hazards"].cpu()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    diff = (cpu - gpu).abs().max().item()
    ok = diff < 1e-3
    print(f"cpu_vs_cuda_fp32 max_abs_diff_hazards={diff:.2e} ok={ok}", flush=True)
    return ok


def step_benchmark(patches: int, attention: str, amp: bool, steps: int) -> None:
    torch.manual_seed(1)
    dev = torch.device("cuda")
    model = build_model("cmta", SIZES, attention=attention).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-5)
    bag = torch.randn(patches, 1024, device=dev)
    omics = [torch.randn(s, device=dev) for s in SIZES]
    y, c = torch.tensor([2], device=dev), torch.tensor([0.0], device=dev)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
    torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for i in range(steps + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype, enabled=amp):
                out = model(bag, omics)
            loss, _ = cmta_loss(out, y, c, alpha=1.0)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        times.sort()
        peak = torch.cuda.max_memory_allocated() / 1024**3
        print(f"step patches={patches} attention={attention} amp={amp} "
              f"s_per_step={times[len(times) // 2]:.4f} peak_gpu_gb={peak:.2f} "
              f"loss_finite={math.isfinite(float(loss))}", flush=True)
    except torch.cuda.OutOfMemoryError:
        print(f"step patches={patches} attention={attention} amp={amp} OOM", flush=True)
    del model, opt, bag
    torch.cuda.empty_cache()


def loop_check() -> bool:
    sizes = (8, 12, 16, 10, 20, 14)
    pats = synthetic_cohort(160, sizes, 64, seed=0)
    torch.manual_seed(0)
    model = build_model("cmta", list(sizes), path_dim=64)
    t0 = time.perf_counter()
    res = train_fold(model, pats[:100], {"heldout": pats[100:]},
                     TrainSettings(epochs=2, device="cuda", amp=True))
    c = res.metrics["heldout_cindex"]
    ok = math.isfinite(c)
    print(f"train_fold cuda amp epochs=2 heldout_cindex={c:.3f} seconds={time.perf_counter() - t0:.1f} "
          f"ok={ok}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--sizes", default="4096,16384")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("CUDA not available", file=sys.stderr)
        return 1
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}", flush=True)
    ok = agreement()
    for patches in [int(s) for s in a.sizes.split(",")]:
        for attention in ("nystrom", "exact"):
            for amp in (False, True):
                step_benchmark(patches, attention, amp, a.steps)
    ok = loop_check() and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
