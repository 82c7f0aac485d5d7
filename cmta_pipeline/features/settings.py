"""What an extraction run is asked to do and what it resolves that to: the options and the
result of a slide, the device, batch size and readers, the precision and whether to compile."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import compute
from ..compute import available_cpus
from ..errors import CMTAError

log = logging.getLogger(__name__)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


#: Reduced precision is kept only if every checked patch has at least this cosine
#: similarity to its fp32 feature; otherwise the slide is encoded in fp32.
MIN_COSINE = 0.999


#: The compiled fp32 encoder is kept only if every checked patch has at least this cosine
#: similarity to eager fp32 (measured: 0.9999999); otherwise the slide runs eager.
COMPILED_MIN_COSINE = 0.9999


#: After a slide is encoded in reduced precision, patches spread over all of it are encoded
#: again in eager fp32: the largest relative error ||f - f32|| / ||f32|| allowed (the cosine
#: bar above as a distance: sqrt(2 (1 - 0.999)) = 0.045); beyond it the slide is refused
#: with a one-line error.
DRIFT_TOLERANCE = {"bf16": 0.05, "fp16": 0.05}


COMPILE_MODES = ("auto", "on", "off")


#: ``--compile auto`` compiles when a slide has at least this many patches to encode.
#: CPU: where compiling paid on 2 cores (docs/benchmarks.md, "Patch features"). CUDA: never
#: (None) until a measurement on a GPU says it pays (the GPU check times both); there
#: ``--compile on``, or ``auto`` with an explicit ``--compile-min-patches``, compiles.
COMPILE_MIN_PATCHES = {"cpu": 512, "cuda": None}


@dataclass
class ExtractOptions:
    weights: str | None = "imagenet"  # None: the encoder's own (ImageNet / hub file)
    encoder: str = "resnet50"  # a name of encoders.registry (cmta encoders)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int | None = None  # None: 32 on CPU, 256 on CUDA
    workers: int | None = None  # None: 1 on CPU (the model is the bottleneck), cores - 2 on CUDA
    reader: str = "auto"  # auto | openslide | tiles | tiles-half | nvjpeg (readers.py)
    precision: str = "auto"
    input_px: int | None = None  # None: the coords file's encoder_input_px, else 224
    read_at: str = "coords"  # coords: the file's read level; level0: CLAM-identical pixels
    on_error: str = "fail"  # fail | skip (a patch that cannot be decoded)
    threads: int | None = None  # torch CPU threads; None: all available cores
    check_patches: int = 32  # patches checked against eager fp32: of the first batch, and
    # spread over the whole slide after it (the drift check)
    progress: bool | None = None  # None: a progress bar only on a terminal
    compile: str = "auto"  # auto | on | off (torch.compile; auto: enough patches to pay)
    compile_min_patches: int | None = None  # None: COMPILE_MIN_PATCHES of the device
    compile_cache: str | None = None  # inductor's cache folder; None: $TORCHINDUCTOR_CACHE_DIR
    resume: bool = True  # continue from the rows a killed run wrote
    weights_sha256: str | None = None  # a local weights file must have this sha256


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
                     workers: int | None, input_px: int = 224,
                     threads: int | None = None, item_px: int | None = None) -> compute.ReaderPlan:
    """Batch size, items and reader processes: the given ones, else sized by
    :func:`cmta_pipeline.compute.plan_readers` from the job's CPUs, ``/dev/shm`` and GPU
    (items of ``item_px``-px patches; default ``input_px``)."""
    cuda = device.type == "cuda"
    gpu_memory = (torch.cuda.get_device_properties(device).total_memory
                  if cuda and torch.cuda.is_available() else None)
    return compute.plan_readers(cuda, batch_size, workers, threads=threads,
                                input_px=input_px, cpus=available_cpus(),
                                gpu_memory=gpu_memory, item_px=item_px)


def reading_plan(device: torch.device, opts: ExtractOptions, input_px: int, reader: str,
                 read_px: int) -> tuple[compute.ReaderPlan, bool]:
    """(the loop's sizes, whether the encoder's device resizes the patches). On CUDA the
    ``tiles`` readers hand over patches as read (``read_px``) and the GPU resizes them to
    the same bytes, unless ``/dev/shm`` then holds fewer readers than with resized ones;
    ``nvjpeg`` always resizes there. The plan is logged (a warning when ``/dev/shm``
    limits the readers)."""
    plan = default_batching(device, opts.batch_size, opts.workers, input_px, opts.threads)
    on_device = reader == "nvjpeg"
    if device.type == "cuda" and reader == "tiles" and read_px != input_px:
        raw = default_batching(device, opts.batch_size, opts.workers, input_px, opts.threads,
                               item_px=read_px)
        if raw.workers >= plan.workers:
            plan, on_device = raw, True
    if plan.warning:
        log.warning("extraction readers: %s", plan.warning)
    if opts.batch_size is None or opts.workers is None:
        log.info("extraction sizing: %s; patches resized %s", plan.why,
                 "on the device" if on_device else "in the readers")
    return plan, on_device


def cpu_bf16_supported() -> bool:
    """True if oneDNN has native bf16 kernels here (AVX512-BF16 / AMX); emulated bf16 is slow."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_precision(precision: str, device: torch.device,
                      encoder_precision: str | None = None) -> str:
    """``auto``: on CUDA the encoder's own precision (``encoder_precision``, TRIDENT's
    choice in the registry: fp32 for ResNet-50, CONCH v1, CTransPath, Phikon, Lunit; bf16
    for UNI2-h; fp16 for the rest; fp16 when not given), fp32 on CPU. Reduced precision
    runs under ``torch.autocast`` and is checked per slide against fp32.

    bf16 on CPU is not the default: with BatchNorm-calibrated random weights its per-patch
    cosine to fp32 was 0.9997 on tissue patches of CMU-1-Small-Region but 0.998 on
    background patches, below the 0.999 bar (docs/features.md), and CPUs without native
    bf16 (no AVX512-BF16 or AMX) run it about 12x slower than fp32. ``--precision bf16`` is
    still there, under the same per-slide check.
    """
    if precision not in PRECISIONS:
        raise CMTAError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return (encoder_precision or "fp16") if device.type == "cuda" else "fp32"
    if device.type == "cpu" and precision == "fp16":
        raise CMTAError("--precision fp16 is for CUDA; on CPU use bf16 or fp32")
    if device.type == "cpu" and precision == "bf16" and not cpu_bf16_supported():
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 will be slow")
    return precision


#: torch CPU capabilities on which the compiled fp32 encoder was measured no faster than
#: eager (AMD EPYC with AVX-512: 37.4 against 37.1 patches/s, docs/benchmarks.md): oneDNN's
#: AVX-512 kernels serve both. On AVX2 compiling gained 1.47x; in bf16 1.17x.
NO_FP32_COMPILE_GAIN = ("AVX512",)


def cpu_capability() -> str:
    """torch's CPU kernel capability here (``AVX2``, ``AVX512``, ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        return "unknown"


def resolve_compile(mode: str, device: torch.device, n_patches: int,
                    min_patches: int | None = None, precision: str = "fp32") -> bool:
    """Whether to compile the encoder: ``on``, ``off``, or ``auto`` = where compilation
    pays for itself: the slide has at least ``min_patches`` patches (default:
    :data:`COMPILE_MIN_PATCHES` of the device; never on CUDA) to encode, and it is not
    fp32 on a CPU of :data:`NO_FP32_COMPILE_GAIN`."""
    if mode not in COMPILE_MODES:
        raise CMTAError(f"--compile {mode}: use one of {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        if min_patches is None:
            min_patches = COMPILE_MIN_PATCHES[device.type]
        if min_patches is None:  # CUDA: not until measured
            return False
        if (device.type == "cpu" and precision == "fp32"
                and cpu_capability() in NO_FP32_COMPILE_GAIN):
            return False
        return n_patches >= min_patches
    return mode == "on"


def use_compile_cache(path: str | os.PathLike | None) -> str | None:
    """Point inductor's on-disk caches (FX graph, AOT autograd, kernels) at ``path``.

    Many ``extract`` jobs of a cohort then compile the encoder once between them; later
    jobs load the compiled code (measured in docs/benchmarks.md). ``None`` keeps
    ``$TORCHINDUCTOR_CACHE_DIR`` or torch's default folder.
    """
    if path:
        path = os.path.abspath(os.path.expanduser(str(path)))
        os.makedirs(path, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR")
