"""GPU check (issues 13 and 21): correctness and throughput of the CUDA paths, in one call.

    bash tests/benchmarks/gpu_check.sh            # on the GPU machine (installs carried wheels)
    python tests/benchmarks/gpu_check.py --device cpu --quick --json /tmp/gpu_check.json
                                                  # rehearsal on a CPU machine

Stages (each writes its part of one JSON file as soon as it ends, so a timeout keeps
what ran; each starts from the same torch backend state: threads, cuDNN plan timing,
fp32 precision flags are restored after every stage):

1. ``imports``: every module the check needs, listed at once if any is missing (exit 2).
2. ``machine``: GPU, torch / CUDA / cuDNN, the torch pinned by envs/torch-cuda.yaml (a
   warning when the check runs another), the job's CPUs as the CLI counts them
   (:mod:`cmta_pipeline.compute`), free ``/dev/shm``, and the reader plan the CLI uses.
3. ``features`` (correctness, can fail): tissue patches of a real slide
   (CMU-1-Small-Region.svs, carried in ``.gpu/data``), a ResNet-50 trunk with random weights
   whose BatchNorm statistics are calibrated on those patches (uncalibrated random weights
   map every patch to nearly the same vector, so no comparison could fail). CPU fp32 vs
   CUDA fp32 features; CUDA fp16 and bf16 vs CUDA fp32 per-patch cosine; ``cmta extract``'s
   own function on the slide (auto precision, per-slide check, default reader) vs the CPU
   features; PIL's resize run on the GPU (the default reader's) equal to PIL's bytes; the
   ``nvjpeg`` reader's pixels and features against OpenSlide's (reported). Every feature
   comparison is repeated on shuffled features, which must fail.
4. ``cmta_step`` (correctness, can fail): one CMTA training step (forward, NLL + alignment,
   backward, SGD with the published settings) on CPU and on CUDA from the same weights and
   inputs: the same loss before and after the step, and the same weight update; a step of
   a model with wrong weights (rounded to 3 bits) must fail that comparison. The AMP gate:
   the loop's mixed precision against fp32 on the GPU, loss within 1e-2 relative and
   gradient cosine >= 0.98; its negative control runs the same mixed-precision step with
   the weights rounded to 3 significant bits (a precision bug) and must fail the gate.
5. ``attention`` (correctness, can fail): every SDPA backend torch has here (flash,
   memory-efficient, cuDNN, math) in bf16 on the attention shapes of a CMTA forward, against
   true fp32 on the same inputs (per-row cosine >= 0.999, shuffled rows must fail), and the
   CMTA loss under bf16 autocast with each backend forced, against fp32 (within 1e-2).
6. ``train_fold``: the training loop on CUDA (mixed precision as the CLI chooses it, bags
   prefetched and pinned), 2 epochs on a synthetic cohort: finite held-out c-index, and the
   held-out risks equal an fp32 forward of the returned model (what ``cmta predict`` runs).
7. ``extraction``: ``extract_slide`` (what ``cmta extract`` runs, with the CLI's default
   sizing and reader) on a synthetic 40x pyramidal JPEG TIFF of 20,480 patches of 512 px
   read at level 0 and resized to 224.
8. ``reading``: the reading ceiling: one reader of each path in-process (patches/s), the
   default reader with the planned readers, and the GPU's side (PIL resize; nvJPEG decode).
9. ``model``: the encoder alone on pinned uint8 batches (fp16 as ``auto`` picks, and fp32),
   with the first call (cuDNN tuning) timed apart.
10. ``cmta_throughput``: one training step at 4,096, 16,384 and 50,000 patches (fp32 and
    the loop's mixed precision) with peak GPU memory, then a 100,000-patch bag without
    subsampling (one step and one evaluation forward).
11. ``compile``: the compiled fp16 encoder (compilation and CUDA graphs timed apart)
    against eager: the measurement ``--compile auto`` waits for on CUDA.

Exit status: 0 if every correctness check passed, 1 if one failed, 2 if imports failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))

#: module -> why the check needs it
REQUIRED = {
    "numpy": "arrays", "torch": "everything", "torchvision": "the ResNet-50 trunk",
    "h5py": "coords and feature files", "cv2": "patch resizing", "pandas": "tables",
    "PIL": "OpenSlide regions", "tqdm": "progress", "openslide": "reading slides "
    "(openslide-python + openslide-bin)", "tifffile": "writing the synthetic slide",
    "imagecodecs": "JPEG tiles of the synthetic slide",
    "simplejpeg": "the tiles reader (libjpeg-turbo)",
}
OPTIONAL = {"sksurv": "the c-index of the train_fold stage (scikit-survival)"}
#: fp32 on two devices: per-patch cosine and relative error (whole matrix) that must hold
FP32_MIN_COSINE, FP32_MAX_REL = 0.99999, 1e-3
#: the CMTA step on CPU vs CUDA in fp32: relative loss difference and update difference
STEP_LOSS_RTOL, STEP_UPDATE_RTOL = 1e-4, 1e-3
OMIC_SIZES = [94, 334, 521, 468, 1496, 479]  # TCGA-BLCA's six families
#: the AMP gate: mixed precision vs fp32 on the device, relative loss difference and
#: gradient cosine that must hold
AMP_LOSS_RTOL, AMP_GRAD_MIN_COSINE = 1e-2, 0.98
#: negative controls: a model whose weights are rounded to this many significant bits
#: (fp8 e4m3's mantissa), what a precision bug would do; it must fail the comparisons
CONTROL_BITS = 3
#: bf16 attention vs fp32: per-row cosine that must hold
ATTENTION_MIN_COSINE = 0.999


# ------------------------------------------------------------------ the comparisons


def compare_features(got, ref, min_cosine: float, max_rel_error: float | None = None) -> dict:
    """Per-patch agreement of two (N, D) feature matrices: passes if every row's cosine to
    its reference is >= ``min_cosine`` (NaN fails) and, if given, the relative error
    ||got - ref|| / ||ref|| is <= ``max_rel_error``."""
    import torch

    got = torch.as_tensor(got).double().cpu()
    ref = torch.as_tensor(ref).double().cpu()
    if got.shape != ref.shape:
        return {"ok": False, "error": f"shapes differ: {tuple(got.shape)} vs {tuple(ref.shape)}"}
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1)
    rel = float((got - ref).norm() / ref.norm())
    lo = float(cos.min())
    ok = bool(torch.isfinite(got).all()) and lo >= min_cosine  # NaN >= x is False
    if max_rel_error is not None:
        ok = ok and rel <= max_rel_error
    return {"ok": bool(ok), "n": int(len(cos)), "min_cosine": lo, "mean_cosine": float(cos.mean()),
            "rel_error": rel, "min_cosine_required": min_cosine, "max_rel_error": max_rel_error}


def shuffled(x):
    """Rows of ``x`` shifted by one: every patch gets another patch's features."""
    import torch

    return torch.as_tensor(x).roll(1, dims=0)


def compare_with_teeth(got, ref, min_cosine: float, max_rel_error: float | None = None) -> dict:
    """:func:`compare_features`, plus the same comparison on shuffled features, which must
    fail: a check that passes wrong features proves nothing (``ok`` is False then)."""
    r = compare_features(got, ref, min_cosine, max_rel_error)
    wrong = compare_features(shuffled(got), ref, min_cosine, max_rel_error)
    r["shuffled_min_cosine"] = wrong.get("min_cosine")
    r["shuffled_fails"] = not wrong["ok"]
    r["ok"] = r["ok"] and r["shuffled_fails"]
    return r


def compare_losses(a: float, b: float, rtol: float) -> dict:
    """Two losses agree if |a - b| <= rtol * |b| (NaN and inf fail)."""
    diff = abs(a - b)
    ok = math.isfinite(a) and math.isfinite(b) and diff <= rtol * abs(b)
    return {"ok": bool(ok), "a": a, "b": b, "rel_diff": diff / abs(b) if b else math.inf,
            "rtol": rtol}


def amp_verdict(amp: dict, ref: dict) -> dict:
    """The AMP gate on two :func:`loss_and_grad` results: the loss within
    ``AMP_LOSS_RTOL`` relative and the gradient's cosine >= ``AMP_GRAD_MIN_COSINE``."""
    import torch

    loss = compare_losses(amp["loss"], ref["loss"], AMP_LOSS_RTOL)
    cos = float(torch.nn.functional.cosine_similarity(amp["grad"], ref["grad"], dim=0))
    finite = bool(torch.isfinite(amp["grad"]).all())
    return {"ok": bool(loss["ok"] and finite and cos >= AMP_GRAD_MIN_COSINE),
            "loss_rel_diff": loss["rel_diff"], "grad_cosine": cos,
            "loss_rtol": AMP_LOSS_RTOL, "min_grad_cosine": AMP_GRAD_MIN_COSINE}


def round_weights(model, bits: int) -> None:
    """Every parameter rounded to ``bits`` significant bits, in place (negative controls)."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            m, e = torch.frexp(p)
            p.copy_(torch.ldexp(torch.round(m * 2**bits) / 2**bits, e))


# ------------------------------------------------------------------ backend state


def backend_state() -> dict:
    """What a stage may change and the next one must not inherit: torch threads, cuDNN
    plan timing and determinism, the fp32 precision flags (one API), grad mode."""
    import torch

    from cmta_pipeline.features.runner import fp32_flags

    return {"threads": torch.get_num_threads(), "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "fp32": fp32_flags(), "grad": torch.is_grad_enabled()}


def restore_backend(state: dict) -> None:
    import torch

    from cmta_pipeline.features.runner import new_fp32_api

    torch.set_num_threads(state["threads"])
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    f = state["fp32"]
    if new_fp32_api():
        torch.backends.cuda.matmul.fp32_precision = f["matmul"]
        torch.backends.cudnn.conv.fp32_precision = f["cudnn_conv"]
    else:
        torch.backends.cuda.matmul.allow_tf32 = f["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = f["cudnn_allow_tf32"]
    torch.set_grad_enabled(state["grad"])


def pinned_torch(repo: Path = None) -> str | None:
    """The pytorch version envs/torch-cuda.yaml pins (workflow/envs/ too), or None."""
    import re

    repo = repo or REPO
    for env in (repo / "envs" / "torch-cuda.yaml", repo / "workflow" / "envs" / "torch-cuda.yaml"):
        if env.is_file():
            m = re.search(r"^\s*-\s*pytorch\s*=\s*([0-9][0-9.]*)", env.read_text(), re.M)
            if m:
                return m.group(1)
    return None


def torch_warning(running: str, pinned: str | None) -> str | None:
    """A warning when the torch this check runs is not the pinned one (local build tags
    such as +cu130 aside)."""
    base = running.split("+")[0]
    if pinned is None:
        return "no pytorch pin found in envs/torch-cuda.yaml"
    if base != pinned:
        return (f"this check runs torch {running}, the workflow's CUDA env pins {pinned}: "
                f"results hold for {base}; rerun with the pinned torch to confirm")
    return None


# ------------------------------------------------------------------ stages


def check_imports() -> dict:
    missing, optional, versions = {}, {}, {}
    for table, into in ((REQUIRED, missing), (OPTIONAL, optional)):
        for mod, why in table.items():
            try:
                m = importlib.import_module(mod)
                versions[mod] = str(getattr(m, "__version__", ""))
                if mod == "openslide":
                    versions["openslide_library"] = str(m.__library_version__)
            except Exception as exc:  # ImportError, or a shared library that fails to load
                into[mod] = f"{why}: {type(exc).__name__}: {exc}"
    if not missing:
        try:
            importlib.import_module("cmta_pipeline.features")
            importlib.import_module("cmta_pipeline.training")
        except Exception as exc:
            missing["cmta_pipeline"] = f"{type(exc).__name__}: {exc}"
    return {"ok": not missing, "missing": missing, "missing_optional": optional,
            "versions": versions, "python": sys.version.split()[0]}


def stage_machine(ctx) -> dict:
    import torch

    from cmta_pipeline import compute

    dev = ctx.device
    pinned = pinned_torch()
    warning = torch_warning(torch.__version__, pinned)
    if warning:
        print(f"WARNING: {warning}", flush=True)
    info = {"ok": True, "torch": torch.__version__, "torch_pinned": pinned,
            "torch_warning": warning, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(),
            "affinity_cpus": compute.affinity_cpus(), "cgroup_quota": compute.cgroup_cpu_quota(),
            "slurm_cpus": compute.slurm_cpus(), "available_cpus": compute.available_cpus(),
            "os_cpu_count": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "shm_free_gb": (compute.shm_free_bytes() or 0) / 1024**3}
    gpu_mem = None
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        gpu_mem = p.total_memory
        info.update(gpu=p.name, gpu_memory_gb=p.total_memory / 1024**3,
                    capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count)
        from cmta_pipeline.training.device import amp_dtype, cuda_bf16_native

        info["bf16_native"] = cuda_bf16_native()
        info["training_amp_dtype"] = str(amp_dtype(dev, True))
    plan = compute.plan_readers(dev.type == "cuda", gpu_memory=gpu_mem)
    info["reader_plan"] = {"batch_size": plan.batch_size, "workers": plan.workers,
                           "item_patches": plan.item_patches, "threads": plan.threads,
                           "why": plan.why, "warning": plan.warning}
    info["backend_state"] = backend_state()
    return info


def _tissue_patches(slide_path: Path, tmp: Path, n_max: int):
    """Tissue patches (128 um = 256 px at CMU-1's 0.5 um/px, resized to 224) of a real
    slide: (N, 224, 224, 3) uint8, the coords file, and the grid size."""
    import cv2
    import h5py
    import numpy as np
    from _feature_helpers import write_grid_coords

    from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide

    coords = write_grid_coords(slide_path, tmp / "real.coords.h5", size0=256)
    grid = load_patch_grid(coords, open_slide(slide_path))
    pixels = PatchBatches(slide_path, grid, 224)[list(range(len(grid.coords)))]["pixels"]
    # tissue: at least half the pixels coloured (HSV saturation > 25 of 255)
    sat = np.stack([cv2.cvtColor(p, cv2.COLOR_RGB2HSV)[..., 1] for p in pixels])
    tissue = np.flatnonzero((sat > 25).mean(axis=(1, 2)) >= 0.5)[:n_max]
    with h5py.File(coords, "r+") as f:  # keep only the tissue patches, same attributes
        attrs = dict(f["coords"].attrs)
        data = f["coords"][()][tissue]
        del f["coords"]
        d = f.create_dataset("coords", data=data)
        for k, v in attrs.items():
            d.attrs[k] = v
    return pixels[tissue], coords, len(grid.coords)


def stage_features(ctx) -> dict:
    import torch

    from cmta_pipeline.features import ExtractOptions, ResNet50Trunc, extract_slide
    from cmta_pipeline.features.encoder import IMAGENET_MEAN, IMAGENET_STD, calibrate_batchnorm
    from cmta_pipeline.features.runner import EncoderRunner
    from cmta_pipeline.features.settings import MIN_COSINE

    slide = ctx.real_slide
    if slide is None:
        return {"ok": False, "error": "no real slide: run scripts/prepare_gpu_wheels.sh (copies "
                "CMU-1-Small-Region.svs into .gpu/data) or give --data"}
    pixels, coords, n_grid = _tissue_patches(slide, ctx.tmp, 16 if ctx.quick else 64)
    px = torch.from_numpy(pixels)
    out = {"slide": slide.name, "grid_patches": n_grid, "tissue_patches": len(px)}
    if len(px) < 8:
        return {**out, "ok": False, "error": "fewer than 8 tissue patches found"}
    torch.manual_seed(0)
    model = ResNet50Trunc()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    calibrate_batchnorm(model, (px.permute(0, 3, 1, 2).float() / 255 - mean) / std)
    cpu = torch.device("cpu")
    ref = EncoderRunner(model, cpu, "fp32")(px)  # the CPU reference
    off = torch.nn.functional.cosine_similarity(ref[:, None].double(), ref[None].double(), dim=2)
    n = len(ref)
    out["distinct_patches_median_cosine"] = float(off[~torch.eye(n, dtype=bool)].median())
    dev = ctx.device
    bs = 16
    run = lambda r: torch.cat([r(px[i:i + bs]).cpu() for i in range(0, n, bs)])  # noqa: E731
    fp32 = run(EncoderRunner(model, dev, "fp32"))
    out["cpu_vs_device_fp32"] = compare_with_teeth(fp32, ref, FP32_MIN_COSINE, FP32_MAX_REL)
    reduced = ["fp16", "bf16"] if dev.type == "cuda" else ["bf16"]
    for p in reduced:
        out[f"{p}_vs_fp32"] = compare_with_teeth(run(EncoderRunner(model, dev, p)), fp32, MIN_COSINE)
    # the CLI's function on the slide: auto precision with its own per-slide check
    from cmta_pipeline.features import build_encoder

    info = build_encoder("random")[1]
    opts = ExtractOptions(weights="random", device=str(dev), progress=False)
    r = extract_slide(slide, coords, ctx.tmp / "real_out", opts, model=model, info=info)
    import h5py

    with h5py.File(r.h5) as f:
        cli = torch.from_numpy(f["features"][()])
    out["cli_extract"] = {**compare_with_teeth(cli, ref, MIN_COSINE), "precision": r.precision,
                          "precision_check_min_cosine": r.min_cosine,
                          "workers": r.stats["workers"], "batch_size": r.stats["batch_size"],
                          "reader": r.stats["reader"], "resize": r.stats["resize"],
                          "item_patches": r.stats["item_patches"]}
    out["resize_on_device"] = _resize_on_device(slide, coords, dev)
    checks = ["cpu_vs_device_fp32", "cli_extract", "resize_on_device"] + [
        f"{p}_vs_fp32" for p in reduced]
    if dev.type == "cuda":  # the nvjpeg reader (a departure): reported, not required
        out["nvjpeg"] = _nvjpeg_agreement(slide, coords, dev, model, fp32)
    # fp16 is what `auto` uses on CUDA and must pass; bf16 is reported (the CLI falls back)
    must = [c for c in checks if c != "bf16_vs_fp32"]
    out["ok"] = all(out[c]["ok"] for c in must)
    return out


def _resize_on_device(slide, coords, dev) -> dict:
    """The default reader on CUDA hands over patches as read and the GPU resizes them:
    that must give PIL's bytes (what the readers give on CPU); PIL's bilinear filter
    instead must not (the comparison can fail)."""
    import numpy as np
    import torch

    from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide
    from cmta_pipeline.features.resize import resize_batch

    grid = load_patch_grid(coords, open_slide(slide))
    idx = list(range(len(grid.coords)))
    want = PatchBatches(slide, grid, 224)[idx]["pixels"]
    raw = torch.from_numpy(PatchBatches(slide, grid, 224, resize=False)[idx]["pixels"])
    got = resize_batch(raw.to(dev), 224, "box").cpu().numpy()
    other = resize_batch(raw.to(dev), 224, "bilinear").cpu().numpy()
    return {"ok": bool(np.array_equal(got, want) and not np.array_equal(other, want)),
            "patches": len(idx), "max_abs_px": int(np.abs(got.astype(int) - want).max()),
            "bilinear_differs": not np.array_equal(other, want)}


def _nvjpeg_agreement(slide, coords, dev, model, fp32_ref) -> dict:
    """The nvjpeg reader's pixels (tiles decoded by nvJPEG) and fp32 features against
    OpenSlide's: max / mean pixel difference and per-patch cosine."""
    import numpy as np
    import torch

    from cmta_pipeline.features.batches import device_pixels
    from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide
    from cmta_pipeline.features.readers import TileStreams, choose_reader
    from cmta_pipeline.features.runner import EncoderRunner

    grid = load_patch_grid(coords, open_slide(slide))
    choice = choose_reader("tiles", slide, grid.patch_level, grid.patch_size, 224, cuda=False)
    if choice.layout is None:
        return {"ok": None, "skipped": choice.note}
    ds = TileStreams(slide, grid, 224, "coords", choice.layout)
    idx = list(range(len(grid.coords)))
    item = ds[idx]
    item = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in item.items()}
    t = time.perf_counter()
    px = device_pixels(item, ds, dev)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    want = PatchBatches(slide, grid, 224)[idx]["pixels"]
    diff = np.abs(px.cpu().numpy().astype(int) - want)
    feats = EncoderRunner(model, dev, "fp32")(px).cpu()
    cos = torch.nn.functional.cosine_similarity(feats.double(), fp32_ref.double(), dim=1)
    return {**compare_with_teeth(feats, fp32_ref, 0.999), "max_abs_px": int(diff.max()),
            "mean_abs_px": float(diff.mean()), "median_cosine": float(cos.median()),
            "decode_and_resize_s": seconds, "patches": len(idx)}


def _cmta_batch(patches: int, path_dim: int = 1024, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    bag = torch.randn(patches, path_dim, generator=g)
    omics = [torch.randn(s, generator=g) for s in OMIC_SIZES]
    return bag, omics, torch.tensor([2]), torch.tensor([0.0])


def cmta_step(device, patches: int, dtype=None, model=None, steps: int = 1,
              attention: str = "nystrom") -> dict:
    """One training step of CMTA as ``train_fold`` runs it (its optimiser, loss options,
    autocast dtype and GradScaler), in eval mode (no dropout: CPU and CUDA would draw
    different masks). Returns the loss before, the fp32 loss after, the weights' update,
    seconds per step (median of ``steps`` after a warm-up when steps > 1) and peak memory."""
    import torch

    from cmta_pipeline.models import build_model
    from cmta_pipeline.training import loop
    from cmta_pipeline.training.device import grad_scaler
    from cmta_pipeline.training.evaluate import fp32_forward, loss_options
    from cmta_pipeline.training.losses import cmta_loss
    from cmta_pipeline.training.settings import TrainSettings

    s = TrainSettings()
    if model is None:
        torch.manual_seed(0)
        model = build_model("cmta", OMIC_SIZES, attention=attention)
    model = model.to(device).eval()
    before = [p.detach().clone() for p in model.parameters()]
    opt = loop._optimizer(model, s)
    scaler = grad_scaler(device, dtype)
    bag, omics, y, c = _cmta_batch(patches)
    bag, omics = bag.to(device), [o.to(device) for o in omics]
    y, c = y.to(device), c.to(device)
    opts = loss_options(model, s)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, loss0 = [], None
    for i in range(steps + (1 if steps > 1 else 0)):
        sync()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(bag, omics)
        loss, _ = cmta_loss(out, y, c, **opts)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync()
        times.append(time.perf_counter() - t)
        if loss0 is None:
            loss0 = float(loss.detach())
    after, _ = cmta_loss(fp32_forward(model, bag, omics), y, c, **opts)
    update = torch.cat([(p.detach() - b).flatten().cpu() for p, b in zip(model.parameters(), before)])
    timed = sorted(times[1:]) if steps > 1 else times
    res = {"loss_before": loss0, "loss_after": float(after), "update": update,
           "s_per_step": timed[len(timed) // 2]}
    if device.type == "cuda":
        res["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return res


def step_comparison(got: dict, ref: dict) -> dict:
    """Two :func:`cmta_step` results agree: loss before and after within
    ``STEP_LOSS_RTOL``, the weights' update within ``STEP_UPDATE_RTOL``."""
    out = {"loss_before": compare_losses(got["loss_before"], ref["loss_before"], STEP_LOSS_RTOL),
           "loss_after": compare_losses(got["loss_after"], ref["loss_after"], STEP_LOSS_RTOL)}
    rel = float((got["update"] - ref["update"]).norm() / ref["update"].norm())
    out["update"] = {"ok": rel <= STEP_UPDATE_RTOL, "rel_error": rel, "rtol": STEP_UPDATE_RTOL,
                     "norm": float(ref["update"].norm())}
    out["ok"] = all(out[k]["ok"] for k in ("loss_before", "loss_after", "update"))
    return out


def loss_and_grad(device, patches: int, dtype, model) -> dict:
    """The CMTA loss and its gradient (all parameters, flattened, float64 on the CPU) of one
    training forward/backward as the loop runs it: autocast ``dtype`` (None: fp32) and its
    GradScaler, eval mode (no dropout, so two runs see the same function)."""
    import torch

    from cmta_pipeline.training.device import grad_scaler
    from cmta_pipeline.training.evaluate import loss_options
    from cmta_pipeline.training.losses import cmta_loss
    from cmta_pipeline.training.settings import TrainSettings

    model = model.to(device).eval()
    model.zero_grad(set_to_none=True)
    bag, omics, y, c = _cmta_batch(patches)
    bag, omics, y, c = bag.to(device), [o.to(device) for o in omics], y.to(device), c.to(device)
    scaler = grad_scaler(device, dtype)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        out = model(bag, omics)
    loss, _ = cmta_loss(out, y, c, **loss_options(model, TrainSettings()))
    scaler.scale(loss).backward()
    scale = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).double().flatten()
                      .cpu() / scale for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return {"loss": float(loss.detach()), "grad": grad}


def amp_gate(device, dtype, patches: int, model) -> dict:
    """The mixed-precision training step against fp32 (true fp32) on ``device``:
    :func:`amp_verdict` must pass; its negative control, the same mixed-precision step
    with the weights rounded to ``CONTROL_BITS`` bits, must fail it."""

    from cmta_pipeline.features.runner import ieee_fp32

    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ieee_fp32():
        ref = loss_and_grad(device, patches, None, model)
    gate = amp_verdict(loss_and_grad(device, patches, dtype, model), ref)
    round_weights(model, CONTROL_BITS)
    control = amp_verdict(loss_and_grad(device, patches, dtype, model), ref)
    model.load_state_dict(state)
    return {**gate, "dtype": str(dtype).replace("torch.", ""), "control": control,
            "control_fails": not control["ok"], "ok": bool(gate["ok"] and not control["ok"]),
            "emulated_on_cpu": device.type == "cpu"}


def stage_cmta_step(ctx) -> dict:
    import torch

    from cmta_pipeline.compute import available_cpus
    from cmta_pipeline.features.runner import ieee_fp32
    from cmta_pipeline.models import build_model
    from cmta_pipeline.training.device import amp_dtype

    dev = ctx.device
    patches = 512 if ctx.quick else 4096
    torch.set_num_threads(available_cpus())  # the CPU side
    torch.manual_seed(0)
    model = build_model("cmta", OMIC_SIZES)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ieee_fp32():  # true fp32 on both devices
        cpu = cmta_step(torch.device("cpu"), patches, model=model)
        model.load_state_dict(state)
        gpu = cmta_step(dev, patches, model=model.to(dev))
        # negative control through the same step on the device: wrong weights must fail
        model.load_state_dict(state)
        round_weights(model, CONTROL_BITS)
        wrong = cmta_step(dev, patches, model=model.to(dev))
    model.load_state_dict(state)
    out = {"patches": patches, **step_comparison(gpu, cpu)}
    out["control_fails"] = not step_comparison(wrong, cpu)["ok"]
    # the loop's mixed precision (on a CPU rehearsal: CPU bf16 autocast, the same code)
    dtype = amp_dtype(dev, True) or torch.bfloat16
    out["amp"] = amp_gate(dev, dtype, patches, model)
    out["ok"] = bool(out["ok"] and out["control_fails"] and out["amp"]["ok"])
    return out


def attention_shapes(model, bag, omics) -> list[tuple]:
    """(q shape, k shape, scale) of every scaled-dot-product attention call of one forward."""
    import torch
    import torch.nn.functional as F

    seen, real = [], F.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), kw.get("scale")))
        return real(q, k, v, *a, **kw)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            model(bag, omics)
    finally:
        F.scaled_dot_product_attention = real
    return list(dict.fromkeys(seen))


def sdpa_backends() -> dict:
    from torch.nn.attention import SDPBackend

    names = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
    return {n.lower(): getattr(SDPBackend, n) for n in names if hasattr(SDPBackend, n)}


def compare_attention(device, shape, backend, seed: int = 0) -> dict:
    """One SDPA call in bf16 with ``backend`` against fp32 (math, true fp32), per output row
    (cosine, with shuffled rows that must fail); None if the backend does not take it."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from cmta_pipeline.features.runner import ieee_fp32

    qs, ks, vs, scale = shape
    g = torch.Generator().manual_seed(seed)
    # peaked attention (logits of sd ~4), so that different rows differ
    q, k = (torch.randn(s, generator=g) * 2 for s in (qs, ks))
    v = torch.randn(vs, generator=g)
    q, k, v = (t.to(device).bfloat16() for t in (q, k, v))
    try:
        with sdpa_kernel(backend):
            got = F.scaled_dot_product_attention(q, k, v, scale=scale)
    except RuntimeError as exc:  # this backend does not run this shape / dtype here
        return {"ok": None, "unsupported": " ".join(str(exc).split())[:200]}
    # the reference: true fp32 on the same (bf16) inputs, so that the kernel's arithmetic
    # is what is compared; the rounding of the inputs is the AMP gate's and the model's
    with ieee_fp32(), sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)
    rows = lambda t: t.float().reshape(-1, t.shape[-1]).cpu()  # noqa: E731
    return compare_with_teeth(rows(got), rows(ref), ATTENTION_MIN_COSINE)


def stage_attention(ctx) -> dict:
    """bf16 attention, backend by backend, against fp32: each SDPA call of a CMTA forward,
    and the CMTA loss under bf16 autocast with the backend forced."""
    import torch
    from torch.nn.attention import sdpa_kernel

    from cmta_pipeline.features.runner import ieee_fp32
    from cmta_pipeline.models import build_model
    from cmta_pipeline.training.evaluate import loss_options
    from cmta_pipeline.training.losses import cmta_loss
    from cmta_pipeline.training.settings import TrainSettings

    dev = ctx.device
    patches = 512 if ctx.quick else 4096
    torch.manual_seed(0)
    model = build_model("cmta", OMIC_SIZES).to(dev).eval()
    bag, omics, y, c = _cmta_batch(patches)
    bag, omics, y, c = bag.to(dev), [o.to(dev) for o in omics], y.to(dev), c.to(dev)
    shapes = attention_shapes(model, bag, omics)

    def loss(dtype, backend=None):
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            ctx_ = sdpa_kernel(backend) if backend is not None else ieee_fp32()
            with ctx_:
                return float(cmta_loss(model(bag, omics), y, c,
                                       **loss_options(model, TrainSettings()))[0])

    ref = loss(None)
    out, must = {"shapes": [list(map(str, s)) for s in shapes], "backends": {}}, []
    for name, backend in sdpa_backends().items():
        calls = [compare_attention(dev, s, backend, i) for i, s in enumerate(shapes)]
        row = {"calls": calls}
        if all(r["ok"] is None for r in calls):
            row["ok"] = None  # not available here
        else:
            try:
                row["cmta_loss"] = compare_losses(loss(torch.bfloat16, backend), ref, AMP_LOSS_RTOL)
            except RuntimeError as exc:  # some call of the model not taken by this backend
                row["cmta_loss"] = {"ok": None, "unsupported": str(exc)[:200]}
            row["ok"] = all(r["ok"] is not False for r in calls) and \
                row["cmta_loss"]["ok"] is not False
            must.append(row["ok"])
        out["backends"][name] = row
    out["ok"] = bool(must) and all(must)
    return out


def stage_train_fold(ctx) -> dict:
    import numpy as np
    import torch

    from cmta_pipeline.models import build_model
    from cmta_pipeline.training import TrainSettings, train_fold
    from cmta_pipeline.training.device import amp_dtype
    from cmta_pipeline.training.evaluate import fp32_forward
    from cmta_pipeline.training.synthetic import synthetic_cohort

    if ctx.imports["missing_optional"].get("sksurv"):
        return {"ok": None, "skipped": "scikit-survival missing: " + ctx.imports["missing_optional"]["sksurv"]}
    sizes = (8, 12, 16, 10, 20, 14)
    n, bag = (18, (16, 48)) if ctx.quick else (60, (2000, 6000))
    pats = synthetic_cohort(n, sizes, 256, bag_size=bag, seed=0)
    torch.manual_seed(0)
    model = build_model("cmta", list(sizes), path_dim=256)
    t = time.perf_counter()
    s = TrainSettings(epochs=2, device=str(ctx.device))
    res = train_fold(model, pats[:n * 2 // 3], {"heldout": pats[n * 2 // 3:]}, s)
    seconds = time.perf_counter() - t
    held = res.predictions.set_index("case_id")
    diffs = []
    for p in pats[n * 2 // 3:]:
        b = p.get_bag().to(ctx.device)
        om = [o.to(ctx.device) for o in p.omics]
        diffs.append(abs(float(fp32_forward(model, b, om)["risk"][0]) - held.loc[p.case_id, "risk"]))
    c = res.metrics["heldout_cindex"]
    # same device, same fp32 function: equal up to non-deterministic GPU reductions
    return {"ok": bool(math.isfinite(c) and max(diffs) <= 1e-5), "heldout_cindex": c,
            "max_risk_diff_vs_fp32_forward": float(np.max(diffs)), "seconds": seconds,
            "amp_dtype": str(amp_dtype(ctx.device, s.amp)),
            "train_patients_per_s": 2 * (n * 2 // 3) / sum(r["seconds"] for r in res.history)}


def _synthetic_slide(ctx):
    if ctx.synthetic is None:
        from bench_features import make_synthetic_slide, write_grid

        w, h = (4096, 4096) if ctx.quick else (81920, 65536)  # 160 x 128 patches of 512 px
        t = time.perf_counter()
        slide = make_synthetic_slide(ctx.tmp / "synthetic40x.tiff", w, h)
        coords = write_grid(slide, ctx.tmp / "synthetic40x.coords.h5", 512)
        ctx.synthetic = (slide, coords, f"{w}x{h}", time.perf_counter() - t)
    return ctx.synthetic


def stage_extraction(ctx) -> dict:
    import h5py

    from cmta_pipeline.features import ExtractOptions, build_encoder, extract_slide

    slide, coords, size, write_s = _synthetic_slide(ctx)
    with h5py.File(coords) as f:
        n = len(f["coords"])
    model, info = build_encoder("random")
    # exactly the CLI's defaults: sizing (readers, batch, threads) and precision are "auto"
    opts = ExtractOptions(weights="random", device=str(ctx.device), progress=False)
    t = time.perf_counter()
    r = extract_slide(slide, coords, ctx.tmp / "syn_out", opts, model=model, info=info)
    wall = time.perf_counter() - t
    (ctx.tmp / "syn_out" / f"{r.slide_id}.pt").unlink(missing_ok=True)
    return {"ok": True, "slide": f"synthetic {size} px @ 0.25 um/px, 512 px patches read at "
            "level 0 -> 224", "write_slide_s": write_s, "patches": n, "wall_s": wall,
            "loop_s": r.seconds, "patches_per_s": n / wall, "loop_patches_per_s": r.patches_per_s,
            "read_wait_s": r.read_wait_s, "workers": r.stats["workers"],
            "batch_size": r.stats["batch_size"], "item_patches": r.stats["item_patches"],
            "reader": r.stats["reader"], "resize": r.stats["resize"],
            "compiled": r.stats["compiled"], "precision": r.precision,
            "precision_check_min_cosine": r.min_cosine}


def stage_reading(ctx) -> dict:
    """The reading ceiling: one reader of each ``features.reader`` path in this process
    (bench_reading.py's side-by-side timing), the default reader with the planned readers
    through the loop's own loader, and the GPU's side of ``tiles`` (resize) and ``nvjpeg``
    (decode + paste + resize)."""
    import torch
    from bench_reading import readers, time_paths

    from cmta_pipeline.features import ExtractOptions
    from cmta_pipeline.features.batches import make_loader, model_batches
    from cmta_pipeline.features.patches import load_patch_grid, open_slide
    from cmta_pipeline.features.readers import choose_reader, make_dataset
    from cmta_pipeline.features.settings import reading_plan

    slide, coords, _, _ = _synthetic_slide(ctx)
    grid = load_patch_grid(coords, open_slide(slide))
    n = len(grid.coords)
    k = min(128 if ctx.quick else 1024, n - 1)
    paths = readers(slide, grid, 224)
    rates = time_paths(paths, k, 1, 32, n - 1)
    out = {"ok": True, "per_reader_patches_per_s": {p: r[0] for p, r in rates.items()}}
    dev = ctx.device
    choice = choose_reader("auto", slide, 0, grid.patch_size, 224, dev.type == "cuda")
    plan, on_device = reading_plan(dev, ExtractOptions(), 224, choice.name, grid.patch_size)
    ds = make_dataset(choice, slide, grid, 224, "coords", on_device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    m = min(n, 2048 if ctx.quick else n)
    t = time.perf_counter()
    got = 0
    for batch, _ in model_batches(make_loader(ds, 0, m, plan.batch_size, plan.item_patches,
                                              plan.workers, dev), ds, dev, plan.batch_size,
                                  str(slide)):
        got += len(batch["index"])
    sync()
    rate = got / (time.perf_counter() - t)
    out["default_reader"] = {"reader": choice.name, "resize": "device" if on_device
                             else "reader", "readers": plan.workers, "batch": plan.batch_size,
                             "item_patches": plan.item_patches, "patches": got,
                             "patches_per_s": rate,
                             "scaling": rate / out["per_reader_patches_per_s"].get(
                                 "tiles", rate) / max(plan.workers, 1)}
    out["gpu_side"] = _gpu_side(paths, dev, k)
    return out


def _gpu_side(paths: dict, dev, k: int) -> dict:
    """Patches/s of what the encoder's device does for the tile readers."""
    import numpy as np
    import torch

    from cmta_pipeline.features.batches import device_pixels
    from cmta_pipeline.features.resize import resize_batch

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    ds = paths["tiles"][0]()
    raw = torch.from_numpy(ds[list(range(min(k, 256)))]["pixels"]).to(dev)
    resize_batch(raw[:8], 224, ds.filter)  # warm-up
    sync()
    t = time.perf_counter()
    for _ in range(4):
        resize_batch(raw, 224, ds.filter)
    sync()
    out["resize_patches_per_s"] = 4 * len(raw) / (time.perf_counter() - t)
    if dev.type == "cuda" and "nvjpeg" in paths:
        nv = paths["nvjpeg"][0]()
        items = [nv[list(range(s, min(s + 32, k)))] for s in range(0, k, 32)]
        items = [{key: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                  for key, v in it.items()} for it in items]
        device_pixels(items[0], nv, dev)  # warm-up (nvJPEG handles)
        sync()
        t = time.perf_counter()
        for it in items:
            device_pixels(it, nv, dev)
        sync()
        out["nvjpeg_decode_resize_patches_per_s"] = k / (time.perf_counter() - t)
    return out


def stage_model(ctx) -> dict:
    import torch

    from cmta_pipeline.features import build_encoder
    from cmta_pipeline.features.runner import EncoderRunner, prepare_backend
    from cmta_pipeline.features.settings import default_batching, resolve_precision

    dev = ctx.device
    prepare_backend(dev, None)  # as `cmta extract` does: cuDNN timing its plans on CUDA
    model, _ = build_encoder("random")
    bs = default_batching(dev, None, None).batch_size
    nb = 2 if ctx.quick else 40
    out = {"ok": True, "batch_size": bs}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for precision in dict.fromkeys([resolve_precision("auto", dev), "fp32"]):
        runner = EncoderRunner(model, dev, precision, pad_to=bs)
        x = torch.randint(0, 256, (bs, 224, 224, 3), dtype=torch.uint8)
        if dev.type == "cuda":
            x = x.pin_memory()
        sync()
        t = time.perf_counter()
        runner(x)
        sync()
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(nb):
            runner(x)
        sync()
        out[precision] = {"patches_per_s": nb * bs / (time.perf_counter() - t),
                          "first_batch_s": first}
        # the slide's last, shorter batch: padded to the same shape, so no second tuning
        sync()
        t = time.perf_counter()
        runner(x[: bs // 3])
        sync()
        out[precision]["short_batch_s"] = time.perf_counter() - t
    return out


def stage_cmta_throughput(ctx) -> dict:
    import torch

    from cmta_pipeline.models import build_model
    from cmta_pipeline.training.device import amp_dtype
    from cmta_pipeline.training.evaluate import fp32_forward

    dev = ctx.device
    sizes = [128, 256] if ctx.quick else [4096, 16384, 50000]
    dtype = amp_dtype(dev, True)
    rows = []
    for patches in sizes:
        for dt in dict.fromkeys([None, dtype]):
            try:
                r = cmta_step(dev, patches, dtype=dt, steps=1 if ctx.quick else 3)
                r.pop("update")
                rows.append({"patches": patches, "dtype": str(dt or "fp32"), **r})
            except torch.cuda.OutOfMemoryError:
                rows.append({"patches": patches, "dtype": str(dt or "fp32"), "oom": True})
            print(f"    cmta step {rows[-1]}", flush=True)
    big = 512 if ctx.quick else 100_000
    torch.manual_seed(0)
    model = build_model("cmta", OMIC_SIZES)
    r = cmta_step(dev, big, dtype=dtype, model=model)
    r.pop("update")
    bag, omics, _, _ = _cmta_batch(big)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    risk = float(fp32_forward(model, bag.to(dev), [o.to(dev) for o in omics])["risk"][0])
    sync()
    return {"ok": True, "steps": rows, "whole_bag": {
        "patches": big, "subsampled": False, "dtype": str(dtype or "fp32"), **r,
        "eval_forward_s": time.perf_counter() - t, "risk_finite": math.isfinite(risk)}}


def stage_compile(ctx) -> dict:
    """The compiled encoder in the precision ``auto`` picks (inductor, frozen weights, CUDA
    graphs on CUDA) against eager on the same batches: compilation and first call timed
    apart, then patches/s of both; what ``--compile auto`` waits for before it compiles on
    CUDA (docs/features.md, "Compiled encoder")."""
    import torch

    from cmta_pipeline.features import build_encoder
    from cmta_pipeline.features.runner import EncoderRunner, cosine_min, prepare_backend
    from cmta_pipeline.features.settings import default_batching, resolve_precision

    dev = ctx.device
    prepare_backend(dev, None)
    model, _ = build_encoder("random")
    bs = 32 if ctx.quick else default_batching(dev, None, None).batch_size
    nb = 2 if ctx.quick else 40
    precision = resolve_precision("auto", dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randint(0, 256, (bs, 224, 224, 3), dtype=torch.uint8)
    x = x.pin_memory() if dev.type == "cuda" else x
    out = {"ok": True, "batch_size": bs, "precision": precision}
    feats = {}
    for compiled in (False, True):
        runner = EncoderRunner(model, dev, precision, compiled=compiled, batch_size=bs,
                               pad_to=bs)
        sync()
        t = time.perf_counter()
        feats[compiled] = runner(x).cpu()
        sync()
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(nb):
            runner(x)
        sync()
        out["compiled" if compiled else "eager"] = {
            "patches_per_s": nb * bs / (time.perf_counter() - t), "first_batch_s": first}
    out["min_cosine_compiled_vs_eager"] = cosine_min(feats[True], feats[False])
    out["gain"] = out["compiled"]["patches_per_s"] / out["eager"]["patches_per_s"]
    out["break_even_patches"] = (out["compiled"]["first_batch_s"] * out["compiled"][
        "patches_per_s"] / max(out["gain"] - 1, 1e-9)) if out["gain"] > 1 else None
    return out


STAGES = [("machine", stage_machine, False), ("features", stage_features, True),
          ("cmta_step", stage_cmta_step, True), ("attention", stage_attention, True),
          ("train_fold", stage_train_fold, True), ("extraction", stage_extraction, False),
          ("reading", stage_reading, False), ("model", stage_model, False),
          ("cmta_throughput", stage_cmta_throughput, False), ("compile", stage_compile, False)]


#: stages that take long: started only if the budget has this many seconds left
STAGE_NEEDS_S = {"compile": 100}


class StageTimeout(Exception):
    pass


@contextlib.contextmanager
def stage_alarm(seconds: float, name: str):
    """Stop a stage that runs past ``seconds`` (SIGALRM: a stalled compile, a stuck loader;
    the main thread only, where signals are delivered)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise StageTimeout(f"stage {name} ran past {seconds:.0f} s (--stage-timeout-s)")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Context:
    pass


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return x.item()
    return x


def _write(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=1, default=str) + "\n")
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (rehearsal)")
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU rehearsal)")
    ap.add_argument("--json", default="gpu_check.json", help="results file")
    ap.add_argument("--data", default=None, help="folder with CMU-1-Small-Region.svs "
                    "(default: .gpu/data, else ../shared/data/slides)")
    ap.add_argument("--budget-s", type=float, default=380,
                    help="stages not started by then are skipped (default 380; gpu_check.sh "
                    "kills the check at 470 s)")
    ap.add_argument("--stage-timeout-s", type=float, default=150,
                    help="a stage still running after this long is stopped (an error) so "
                    "that the next stages run (default 150)")
    ap.add_argument("--only", default=None, help="comma-separated stages to run")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "args": vars(a), "host": platform.node()}
    imports = check_imports()
    results["imports"] = imports
    results["imports"]["seconds"] = time.perf_counter() - t0
    _write(out, results)
    if not imports["ok"]:
        print("MISSING (install them, e.g. from carried wheels: scripts/prepare_gpu_wheels.sh):")
        for k, v in imports["missing"].items():
            print(f"  {k}: {v}")
        return 2
    for k, v in imports["missing_optional"].items():
        print(f"optional module missing, its stage is skipped: {k}: {v}")
    import torch

    from cmta_pipeline.compute import resolve_device

    ctx = Context()
    ctx.quick, ctx.imports, ctx.synthetic = a.quick, imports, None
    ctx.device = resolve_device(a.device, "--device")
    ctx.gpu_memory = (torch.cuda.get_device_properties(ctx.device).total_memory
                      if ctx.device.type == "cuda" else None)
    candidates = [Path(a.data)] if a.data else [REPO / ".gpu" / "data",
                                                REPO.parent / "shared" / "data" / "slides"]
    ctx.real_slide = next((d / "CMU-1-Small-Region.svs" for d in candidates
                           if (d / "CMU-1-Small-Region.svs").is_file()), None)
    only = set(a.only.split(",")) if a.only else None
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmpd:
        ctx.tmp = Path(tmpd)
        for name, fn, is_check in STAGES:
            if only and name not in only:
                continue
            spent = time.perf_counter() - t0
            if spent > a.budget_s - STAGE_NEEDS_S.get(name, 0):
                results[name] = {"ok": None, "skipped": f"time budget {a.budget_s:.0f} s: "
                                 f"{spent:.0f} s spent, the stage needs about "
                                 f"{STAGE_NEEDS_S.get(name, 0)} s"}
                print(f"== {name}: skipped (time budget)", flush=True)
                continue
            print(f"== {name}", flush=True)
            t = time.perf_counter()
            state = backend_state()
            try:
                with stage_alarm(a.stage_timeout_s, name):
                    r = fn(ctx)
            except Exception as exc:
                traceback.print_exc()
                r = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            finally:  # the next stage starts from the same backend state
                restore_backend(state)
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
            r["seconds"] = r.get("seconds", time.perf_counter() - t)
            results[name] = r
            if is_check and r.get("ok") is False or r.get("error"):
                failed.append(name)
            _write(out, results)
            print(json.dumps(_jsonable(r), default=str)[:1500], flush=True)
    results["failed"] = failed
    results["total_s"] = time.perf_counter() - t0
    _write(out, results)
    print(f"\n== summary ({results['total_s']:.0f} s; {out})")
    for name, _, is_check in STAGES:
        r = results.get(name)
        if r is None:
            continue
        status = "skipped" if r.get("ok") is None else ("ok" if r.get("ok") else "FAILED")
        print(f"{name:16s} {status:8s} {r.get('seconds', 0):7.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
