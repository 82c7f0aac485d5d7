"""The extraction loop: coords file + slide -> (N, 1024) features, written atomically."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__, compute
from ..compute import available_cpus
from ..errors import CMTAError
from ..fileio import atomic_output
from .encoder import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD, EncoderInfo, build_encoder
from .patches import READ_AT, PatchBatches, load_patch_grid, open_slide

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Reduced precision is kept only if every checked patch has at least this cosine
#: similarity to its fp32 feature; otherwise the slide is encoded in fp32.
MIN_COSINE = 0.999


@dataclass
class ExtractOptions:
    weights: str = "imagenet"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # None: 32 on CPU, 256 on CUDA
    workers: int | None = None  # None: 1 on CPU (the model is the bottleneck), cores - 2 on CUDA
    precision: str = "auto"
    input_px: int | None = None  # None: the coords file's encoder_input_px, else 224
    read_at: str = "coords"  # coords: the file's read level; level0: CLAM-identical pixels
    on_error: str = "fail"  # fail | skip (a patch that cannot be decoded)
    threads: int | None = None  # torch CPU threads; None: all available cores
    check_patches: int = 32  # patches checked against fp32 when precision is reduced
    progress: bool | None = None  # None: a progress bar only on a terminal


@dataclass
class ExtractResult:
    slide_id: str
    h5: Path
    pt: Path
    n_patches: int
    n_skipped: int
    seconds: float
    patches_per_s: float
    read_wait_s: float  # time the loop waited for pixels: high means reading-bound
    device: str
    precision: str
    min_cosine: float | None  # reduced precision vs fp32 on the checked patches
    stats: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    return compute.resolve_device(device, "--device")


def default_batching(device: torch.device, batch_size: int | None,
                     workers: int | None, input_px: int = 224) -> tuple[int, int]:
    """Batch size and reader processes: the given ones, else sized by
    :func:`cmta_pipeline.compute.plan_readers` from the job's CPUs, ``/dev/shm`` and GPU."""
    cuda = device.type == "cuda"
    gpu_memory = (torch.cuda.get_device_properties(device).total_memory
                  if cuda and torch.cuda.is_available() else None)
    plan = compute.plan_readers(cuda, batch_size, workers, threads=1, input_px=input_px,
                                cpus=available_cpus(), gpu_memory=gpu_memory)
    if batch_size is None or workers is None:
        log.info("extraction sizing: %s", plan.why)
    return plan.batch_size, plan.workers


def cpu_bf16_supported() -> bool:
    """True if oneDNN has native bf16 kernels here (AVX512-BF16 / AMX); emulated bf16 is slow."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: fp16 on CUDA (checked per slide against fp32), fp32 on CPU.

    bf16 on CPU is not the default: with BatchNorm-calibrated random weights its per-patch
    cosine to fp32 was 0.9997 on tissue patches of CMU-1-Small-Region but 0.998 on
    background patches, below the 0.999 bar (docs/features.md), and CPUs without native
    bf16 (no AVX512-BF16 or AMX) run it about 12x slower than fp32. ``--precision bf16`` is
    still there, under the same per-slide check.
    """
    if precision not in PRECISIONS:
        raise CMTAError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and precision == "fp16":
        raise CMTAError("--precision fp16 is for CUDA; on CPU use bf16 or fp32")
    if device.type == "cpu" and precision == "bf16" and not cpu_bf16_supported():
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 will be slow")
    return precision


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of the encoder with every eval-mode BatchNorm folded into its convolution.

    Same function (up to float rounding), fewer passes over memory: about 20% faster on CPU.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    m.conv1 = fuse_conv_bn_eval(m.conv1, m.bn1)
    m.bn1 = nn.Identity()
    for layer in (m.layer1, m.layer2, m.layer3):
        for block in layer:
            for i in (1, 2, 3):
                conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
                setattr(block, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(block, f"bn{i}", nn.Identity())
            if block.downsample is not None:
                block.downsample = nn.Sequential(
                    fuse_conv_bn_eval(block.downsample[0], block.downsample[1])
                )
    return m


class EncoderRunner:
    """Runs the encoder on uint8 NHWC batches: (B, S, S, 3) uint8 -> (B, 1024) float32.

    The model runs channels_last with BatchNorm folded, in ``precision``; ImageNet
    normalisation happens on the device in fp32, then the input is cast.
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 pad_to: int | None = None, tune: bool = True):
        self.device = device
        self.tune = tune  # False: cuDNN's heuristic plans (no timing; for a few batches)
        # CUDA: a shorter batch (the slide's last) is padded to ``pad_to`` rows, so that
        # cuDNN tunes one shape per process instead of two
        self.pad_to = pad_to if device.type == "cuda" else None
        self.precision = precision
        self.dtype = DTYPES[precision]
        m = fold_batchnorm(model).to(device=device, memory_format=torch.channels_last)
        self.model = m.to(dtype=self.dtype)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        # x / 255 - mean) / std as one multiply-add
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # NCHW, channels_last
        if self.pad_to is not None and n < self.pad_to:
            x = torch.cat([x, x.new_zeros((self.pad_to - n, *x.shape[1:]))])
        x = torch.addcmul(self.shift, x.float(), self.scale).to(self.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with contextlib.ExitStack() as stack:
            if self.device.type == "cuda" and self.precision == "fp32":
                stack.enter_context(_cudnn_ieee_fp32())  # fp32 means fp32 (the check's reference)
            if self.device.type == "cuda" and not self.tune:
                stack.enter_context(_cudnn_benchmark(False))
            return self.model(x).float()[:n]


@contextlib.contextmanager
def _cudnn_benchmark(on: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


@contextlib.contextmanager
def _cudnn_ieee_fp32():
    """cuDNN convolutions in true fp32 instead of the TF32 that torch allows by default."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


def prepare_backend(device: torch.device, threads: int | None) -> None:
    """Torch settings of the extraction loop (benchmarks call this too, to time the same
    plans): torch threads (default: :func:`cmta_pipeline.compute.plan_readers`'s, i.e. the
    job's CPUs on CPU, 2 on CUDA where readers use the rest); on CUDA, cuDNN plan timing."""
    cuda = device.type == "cuda"
    if threads is None:
        threads = compute.plan_readers(cuda, batch_size=1, workers=0, cpus=available_cpus()).threads
    torch.set_num_threads(int(threads))
    if cuda:
        # cuDNN picks its fastest plans by timing them once per input shape and process:
        # every batch is padded to one shape (EncoderRunner), and the short fp32 precision
        # check runs untimed (heuristic plans), so a slide pays for one tuning
        torch.backends.cudnn.benchmark = True


def _cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


def _lowest(a: float | None, b: float) -> float:
    """The lower of two cosines, NaN if either is NaN (``min`` keeps whichever NaN is second)."""
    if a is None:
        return b
    return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)


def extract_features(
    slide_path: str | os.PathLike,
    coords_path: str | os.PathLike,
    opts: ExtractOptions,
    model: nn.Module | None = None,
    info: EncoderInfo | None = None,
):
    """Features of every patch of ``coords_path``: (features (N', 1024) float32,
    coords (N', 2) int64, metadata dict). N' < N only with ``on_error="skip"``.

    ``model``/``info`` let callers reuse one encoder over many slides.
    """
    if opts.on_error not in ("fail", "skip"):
        raise CMTAError(f"on_error must be fail or skip, got {opts.on_error!r}")
    if opts.read_at not in READ_AT:
        raise CMTAError(f"--read-at must be one of {', '.join(READ_AT)}, got {opts.read_at!r}")
    slide_path = Path(slide_path)
    slide = open_slide(slide_path)
    try:
        grid = load_patch_grid(coords_path, slide)
    finally:
        slide.close()
    input_px = int(opts.input_px or grid.encoder_input_px or 224)

    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    batch_size, workers = default_batching(device, opts.batch_size, opts.workers, input_px)
    prepare_backend(device, opts.threads)
    if model is None:
        model, info = build_encoder(opts.weights)
    runner = EncoderRunner(model, device, precision, pad_to=batch_size)
    reference = None  # fp32 runner for the precision check

    dataset = PatchBatches(slide_path, grid, input_px, opts.read_at)
    n = len(dataset)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # items are already batches
        sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,  # batches in flight per reader
        persistent_workers=False,
    )
    progress = sys.stderr.isatty() if opts.progress is None else opts.progress
    from tqdm import tqdm

    bar = tqdm(total=n, unit="patch", desc=slide_path.stem, disable=not progress,
               mininterval=2.0, file=sys.stderr)

    outputs: list[torch.Tensor] = []
    keep = np.ones(n, dtype=bool)
    skipped = 0
    min_cos = None
    read_wait = 0.0
    t0 = time.perf_counter()
    it = iter(loader)
    checked = 0
    while True:
        t_wait = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            break
        read_wait += time.perf_counter() - t_wait
        ok = batch["ok"].numpy()
        idx = batch["index"].numpy()
        if not ok.all():
            msg = f"{slide_path}: {batch['error']}"
            if opts.on_error == "fail":
                raise CMTAError(f"{msg}. The slide is damaged there; rerun with "
                                f"--on-error skip to leave such patches out (they are counted)")
            keep[idx[~ok]] = False
            skipped += int((~ok).sum())
            log.warning("%s (skipped; %d patch(es) in this batch)", msg, int((~ok).sum()))
        feats = runner(batch["pixels"])
        if precision != "fp32" and checked < opts.check_patches:
            if reference is None:
                reference = EncoderRunner(model, device, "fp32", tune=False)
            take = min(len(idx), opts.check_patches - checked)
            sel = torch.from_numpy(ok[:take])
            ref = reference(batch["pixels"][:take])
            if sel.any():
                c = _cosine_min(feats[:take][sel.to(feats.device)], ref[sel.to(ref.device)])
                min_cos = _lowest(min_cos, c)
            checked += take
            if min_cos is not None and not min_cos >= MIN_COSINE:  # NaN fails too
                log.warning("%s: %s features differ from fp32 (min cosine %.5f < %.3f); "
                            "encoding this slide in fp32", slide_path.name, precision,
                            min_cos, MIN_COSINE)
                bar.close()
                del it  # stops the reader processes
                return _restart_fp32(slide_path, coords_path, opts, model, info, min_cos)
        outputs.append(feats)
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - t0
    feats = torch.cat(outputs).cpu().numpy() if outputs else np.zeros((0, FEATURE_DIM), np.float32)
    feats = feats[keep]
    coords = grid.coords[keep]
    if len(feats) == 0:
        raise CMTAError(f"{slide_path}: every patch failed to decode; no features written")
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CMTAError(f"{slide_path}: {int(bad.sum())} feature vectors are not finite "
                        f"(first: patch at {tuple(coords[i])}) with precision {precision}; "
                        f"rerun with --precision fp32")
    meta = {
        "slide_id": "",
        "encoder": info.name,
        "weights": info.weights,
        "weights_sha256": info.weights_sha256,
        "feature_dim": FEATURE_DIM,
        "input_px": input_px,
        "read_at": opts.read_at,
        "read_level": dataset.level,
        "read_size_px": dataset.size,
        "patch_level": grid.patch_level,
        "patch_size": grid.patch_size,
        "patch_size_level0": grid.patch_size_level0,
        "normalisation": "imagenet",
        "precision": precision,
        "device": str(device),
        "batch_size": batch_size,
        "workers": workers,
        "precision_check_min_cosine": -1.0 if min_cos is None else min_cos,
        "n_patches": int(len(feats)),
        "n_skipped": skipped,
        "coords_file": str(Path(coords_path).name),
        "slide_file": slide_path.name,
        "cmta_version": __version__,
        "seconds": seconds,
        "read_wait_s": read_wait,
    }
    for k in ("mpp", "target_mpp", "level_dim"):
        if k in grid.attrs:
            meta[f"coords_{k}"] = grid.attrs[k]
    return feats.astype(np.float32, copy=False), coords, meta


def _restart_fp32(slide_path, coords_path, opts, model, info, min_cos):
    feats, coords, meta = extract_features(
        slide_path, coords_path,
        ExtractOptions(**{**asdict(opts), "precision": "fp32", "check_patches": 0}),
        model, info,
    )
    meta["precision_check_min_cosine"] = min_cos
    meta["precision_fallback"] = "reduced precision failed the cosine check"
    return feats, coords, meta


def write_feature_files(outdir, slide_id: str, feats: np.ndarray, coords: np.ndarray,
                        meta: dict) -> tuple[Path, Path]:
    """Write ``<slide_id>.pt`` then ``<slide_id>.features.h5`` under ``outdir``, atomically.

    The h5 is written last, so its presence means both files are complete. Layout:
    ``features`` (N, 1024) float32, ``coords`` (N, 2) int64 with CLAM's ``patch_level`` and
    ``patch_size`` attributes; everything in ``meta`` as file attributes.
    """
    import h5py

    outdir = Path(outdir)
    pt = outdir / f"{slide_id}.pt"
    h5 = outdir / f"{slide_id}.features.h5"
    with atomic_output(pt) as tmp:
        torch.save(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)), tmp)
    with atomic_output(h5) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=feats.astype(np.float32, copy=False))
            c = f.create_dataset("coords", data=coords.astype(np.int64, copy=False))
            c.attrs["patch_level"] = meta["patch_level"]
            c.attrs["patch_size"] = meta["patch_size"]
            c.attrs["patch_size_level0"] = meta["patch_size_level0"]
            for k, v in {**meta, "slide_id": slide_id}.items():
                f.attrs[k] = v
    return h5, pt


def extract_slide(slide_path, coords_path, outdir, opts: ExtractOptions,
                  slide_id: str | None = None, model=None, info=None) -> ExtractResult:
    """Encode one slide and write its feature files; returns what happened (and how fast)."""
    slide_path = Path(slide_path)
    if slide_id is None:
        slide_id = _coords_slide_id(coords_path) or slide_path.stem
    feats, coords, meta = extract_features(slide_path, coords_path, opts, model, info)
    meta["slide_id"] = slide_id
    h5, pt = write_feature_files(outdir, slide_id, feats, coords, meta)
    n = meta["n_patches"] + meta["n_skipped"]
    res = ExtractResult(
        slide_id=slide_id, h5=h5, pt=pt, n_patches=meta["n_patches"],
        n_skipped=meta["n_skipped"], seconds=meta["seconds"],
        patches_per_s=n / max(meta["seconds"], 1e-9), read_wait_s=meta["read_wait_s"],
        device=meta["device"], precision=meta["precision"],
        min_cosine=None if meta["precision_check_min_cosine"] < 0
        else meta["precision_check_min_cosine"],
        stats=meta,
    )
    log.info(
        "%s: %d patches -> %s in %.1f s (%.1f patches/s, waited %.1f s for reading; %s %s, "
        "weights %s%s)", slide_id, res.n_patches, h5, res.seconds, res.patches_per_s,
        res.read_wait_s, res.device, res.precision, meta["weights"],
        f"; {res.n_skipped} undecodable patches skipped" if res.n_skipped else "",
    )
    return res


def _coords_slide_id(coords_path) -> str | None:
    import h5py

    try:
        with h5py.File(coords_path, "r") as f:
            v = f.attrs.get("slide_id") or f["coords"].attrs.get("slide_id")
    except Exception:
        return None
    if isinstance(v, bytes):
        v = v.decode()
    return str(v) if v else None
