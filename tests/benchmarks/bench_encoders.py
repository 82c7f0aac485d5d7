"""Patches per second of every registered encoder, model alone, through the runner that
`cmta extract` uses (``EncoderRunner``: channels-last input, normalisation on the device,
BatchNorm folded for ResNet-50), seeded random weights, on this CPU or a GPU.

Usage (repository root):
    python tests/benchmarks/bench_encoders.py [--device cpu|cuda] [--batch-size 8]
        [--batches 2] [--threads 2] [--encoders resnet50,uni_v1,...] [--precisions fp32,bf16]
        [--json out.json]

For each encoder and precision: a one-patch warm-up, then ``--batches`` timed batches of
random uint8 patches at the encoder's input size; reduced precision is compared with
fp32 on the same patches (minimum cosine over the batch, the per-slide check's measure).
bf16 is run on CPU only where oneDNN has native bf16 (AVX512-BF16/AMX).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from cmta_pipeline.features.encoders import REGISTRY, get_spec  # noqa: E402
from cmta_pipeline.features.encoders.build import build_named_encoder  # noqa: E402
from cmta_pipeline.features.runner import EncoderRunner, cosine_min  # noqa: E402
from cmta_pipeline.features.settings import cpu_bf16_supported  # noqa: E402


def measure(name: str, device: torch.device, precisions: list[str], batch: int, batches: int):
    spec = get_spec(name)
    model, info = build_named_encoder(name, "random")
    gen = torch.Generator().manual_seed(0)
    px = torch.randint(0, 256, (batch, spec.input_px, spec.input_px, 3), dtype=torch.uint8,
                       generator=gen)
    rows, ref = [], None
    for precision in precisions:
        runner = EncoderRunner(model, device, precision, normalisation=info.normalisation)
        runner(px[:1])  # warm-up: one patch (eager: no per-shape compilation to pay)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(batches):
            out = runner(px)
        if device.type == "cuda":
            torch.cuda.synchronize()
        s = time.perf_counter() - t0
        if precision == "fp32":
            ref = out
        cos = None if ref is None or precision == "fp32" else cosine_min(out, ref)
        rows.append({"encoder": name, "precision": precision, "dim": int(out.shape[1]),
                     "input_px": spec.input_px, "batch": batch,
                     "patches_per_s": round(batch * batches / s, 2), "min_cosine": cos})
        print(json.dumps(rows[-1]), flush=True)
        del runner
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encoders", default=",".join(REGISTRY))
    ap.add_argument("--precisions", default=None,
                    help="default: fp32,bf16 on a CPU with native bf16, fp32 on others; "
                    "fp32,fp16,bf16 on CUDA")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.precisions:
        precisions = a.precisions.split(",")
    elif device.type == "cuda":
        precisions = ["fp32", "fp16", "bf16"]
    else:
        precisions = ["fp32", "bf16"] if cpu_bf16_supported() else ["fp32"]
    rows = []
    for name in a.encoders.split(","):
        rows += measure(name, device, precisions, a.batch_size, a.batches)
    if a.json:
        Path(a.json).write_text(json.dumps({"torch": torch.__version__, "threads": a.threads,
                                            "device": str(device), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
