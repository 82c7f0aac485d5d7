"""GPU check (issue 13): correctness and throughput of the CUDA paths, in one call.

    bash tests/benchmarks/gpu_check.sh            # on the GPU machine (installs carried wheels)
    python tests/benchmarks/gpu_check.py --device cpu --quick --json /tmp/gpu_check.json
                                                  # rehearsal on a CPU machine

Stages (each writes its part of one JSON file as soon as it ends, so a timeout keeps
what ran):

1. ``imports``: every module the check needs, listed at once if any is missing (exit 2).
2. ``machine``: GPU, torch / CUDA / cuDNN, the job's CPUs as the CLI counts them
   (:mod:`cmta_pipeline.compute`), free ``/dev/shm``, and the reader plan the CLI uses.
3. ``features`` (correctness, can fail): tissue patches of a real slide
   (CMU-1-Small-Region.svs, carried in ``.gpu/data``), a ResNet-50 trunk with random weights
   whose BatchNorm statistics are calibrated on those patches (uncalibrated random weights
   map every patch to nearly the same vector, so no comparison could fail). CPU fp32 vs
   CUDA fp32 features; CUDA fp16 and bf16 vs CUDA fp32 per-patch cosine; ``cmta extract``'s
   own function on the slide (auto precision, per-slide check) vs the CPU features. Every
   comparison is repeated on shuffled features, which must fail.
4. ``cmta_step`` (correctness, can fail): one CMTA training step (forward, NLL + alignment,
   backward, SGD with the published settings) on CPU and on CUDA from the same weights and
   inputs: the same loss before and after the step, and the same weight update.
5. ``train_fold``: the training loop on CUDA (mixed precision as the CLI chooses it, bags
   prefetched and pinned), 2 epochs on a synthetic cohort: finite held-out c-index, and the
   held-out risks equal an fp32 forward of the returned model (what ``cmta predict`` runs).
6. ``extraction``: ``extract_slide`` (what ``cmta extract`` runs, with the CLI's default
   sizing: readers, batch and threads from the job's CPUs and GPU) on a synthetic 40x
   pyramidal JPEG TIFF of 20,480 patches of 512 px read at level 0 and resized to 224.
7. ``reading``: the loader alone, per reader (in-process) and with the planned readers.
8. ``model``: the encoder alone on pinned uint8 batches (fp16 as ``auto`` picks, and fp32),
   with the first call (cuDNN tuning) timed apart.
9. ``cmta_throughput``: one training step at 4,096, 16,384 and 50,000 patches (fp32 and the
   loop's mixed precision) with peak GPU memory, then a 100,000-patch bag without
   subsampling (one step and one evaluation forward).

Exit status: 0 if every correctness check passed, 1 if one failed, 2 if imports failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import tempfile
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
}
OPTIONAL = {"sksurv": "the c-index of the train_fold stage (scikit-survival)"}
#: fp32 on two devices: per-patch cosine and relative error (whole matrix) that must hold
FP32_MIN_COSINE, FP32_MAX_REL = 0.99999, 1e-3
#: the CMTA step on CPU vs CUDA in fp32: relative loss difference and update difference
STEP_LOSS_RTOL, STEP_UPDATE_RTOL = 1e-4, 1e-3
OMIC_SIZES = [94, 334, 521, 468, 1496, 479]  # TCGA-BLCA's six families


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
    info = {"ok": True, "torch": torch.__version__, "cuda": torch.version.cuda,
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
                           "threads": plan.threads, "why": plan.why}
    return info


def _tissue_patches(slide_path: Path, tmp: Path, n_max: int):
    """Tissue patches (128 um = 256 px at CMU-1's 0.5 um/px, resized to 224) of a real
    slide: (N, 224, 224, 3) uint8, the coords file, and the grid size."""
    import cv2
    import numpy as np

    from _feature_helpers import write_grid_coords
    from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide

    import h5py

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
                          "workers": r.stats["workers"], "batch_size": r.stats["batch_size"]}
    checks = ["cpu_vs_device_fp32", "cli_extract"] + [f"{p}_vs_fp32" for p in reduced]
    # fp16 is what `auto` uses on CUDA and must pass; bf16 is reported (the CLI falls back)
    must = [c for c in checks if c != "bf16_vs_fp32"]
    out["ok"] = all(out[c]["ok"] for c in must)
    return out


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

    from cmta_pipeline.training.losses import cmta_loss
    from cmta_pipeline.models import build_model
    from cmta_pipeline.training import loop
    from cmta_pipeline.training.device import grad_scaler
    from cmta_pipeline.training.evaluate import fp32_forward, loss_options
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


def stage_cmta_step(ctx) -> dict:
    import torch

    from cmta_pipeline.models import build_model
    from cmta_pipeline.training.device import amp_dtype

    from cmta_pipeline.compute import available_cpus

    dev = ctx.device
    patches = 512 if ctx.quick else 4096
    torch.set_num_threads(available_cpus())  # the CPU side; extraction left 2 threads
    torch.manual_seed(0)
    model = build_model("cmta", OMIC_SIZES)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # true fp32
    try:
        cpu = cmta_step(torch.device("cpu"), patches, model=model)
        model.load_state_dict(state)
        gpu = cmta_step(dev, patches, model=model.to(dev))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    out = {"patches": patches,
           "loss_before": compare_losses(gpu["loss_before"], cpu["loss_before"], STEP_LOSS_RTOL),
           "loss_after": compare_losses(gpu["loss_after"], cpu["loss_after"], STEP_LOSS_RTOL)}
    du, ref = gpu["update"], cpu["update"]
    rel = float((du - ref).norm() / ref.norm())
    out["update"] = {"ok": rel <= STEP_UPDATE_RTOL, "rel_error": rel, "rtol": STEP_UPDATE_RTOL,
                     "norm": float(ref.norm())}
    # teeth: a step from other inputs gives another loss
    other = compare_losses(gpu["loss_before"] * (1 + 10 * STEP_LOSS_RTOL), cpu["loss_before"],
                           STEP_LOSS_RTOL)
    out["perturbed_loss_fails"] = not other["ok"]
    dtype = amp_dtype(dev, True)
    if dtype is not None:  # mixed precision as the loop runs it: reported, looser
        model.load_state_dict(state)
        amp = cmta_step(dev, patches, dtype=dtype, model=model.to(dev))
        out["amp"] = {**compare_losses(amp["loss_before"], cpu["loss_before"], 2e-2),
                      "dtype": str(dtype)}
    out["ok"] = all(out[k]["ok"] for k in ("loss_before", "loss_after", "update")) \
        and out["perturbed_loss_fails"]
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
            "batch_size": r.stats["batch_size"], "precision": r.precision,
            "precision_check_min_cosine": r.min_cosine}


def stage_reading(ctx) -> dict:
    import torch

    from cmta_pipeline import compute
    from cmta_pipeline.features.patches import PatchBatches, load_patch_grid, open_slide

    slide, coords, _, _ = _synthetic_slide(ctx)
    grid = load_patch_grid(coords, open_slide(slide))
    ds = PatchBatches(slide, grid, 224)
    k = 64 if ctx.quick else 1024
    t = time.perf_counter()
    for i in range(0, k, 32):
        ds[list(range(i, min(i + 32, k)))]
    one = k / (time.perf_counter() - t)
    plan = compute.plan_readers(ctx.device.type == "cuda", gpu_memory=ctx.gpu_memory)
    n = len(ds)
    batches = [list(range(i, min(i + plan.batch_size, n))) for i in range(0, n, plan.batch_size)]
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=batches,
                                         num_workers=plan.workers,
                                         prefetch_factor=compute.PREFETCH if plan.workers else None)
    t = time.perf_counter()
    got = sum(len(b["index"]) for b in loader)
    all_readers = got / (time.perf_counter() - t)
    return {"ok": True, "per_reader_patches_per_s": one, "readers": plan.workers,
            "all_readers_patches_per_s": all_readers, "patches": got,
            "scaling": all_readers / one / max(plan.workers, 1)}


def stage_model(ctx) -> dict:
    import torch

    from cmta_pipeline.features import build_encoder
    from cmta_pipeline.features.runner import EncoderRunner, prepare_backend
    from cmta_pipeline.features.settings import default_batching, resolve_precision

    dev = ctx.device
    prepare_backend(dev, None)  # as `cmta extract` does: cuDNN timing its plans on CUDA
    model, _ = build_encoder("random")
    bs, _ = default_batching(dev, None, None)
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


STAGES = [("machine", stage_machine, False), ("features", stage_features, True),
          ("cmta_step", stage_cmta_step, True), ("train_fold", stage_train_fold, True),
          ("extraction", stage_extraction, False), ("reading", stage_reading, False),
          ("model", stage_model, False), ("cmta_throughput", stage_cmta_throughput, False)]


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
            if time.perf_counter() - t0 > a.budget_s:
                results[name] = {"ok": None, "skipped": f"time budget {a.budget_s:.0f} s spent"}
                print(f"== {name}: skipped (time budget)", flush=True)
                continue
            print(f"== {name}", flush=True)
            t = time.perf_counter()
            try:
                r = fn(ctx)
            except Exception as exc:
                traceback.print_exc()
                r = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
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
