"""The extraction loop: coords file + slide -> (N, 1024) features, written atomically."""

from __future__ import annotations

import contextlib
import copy
import logging
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
#: The compiled fp32 encoder is kept only if every checked patch has at least this cosine
#: similarity to eager fp32 (measured: 0.9999999); otherwise the slide runs eager.
COMPILED_MIN_COSINE = 0.9999
COMPILE_MODES = ("auto", "on", "off")
#: ``--compile auto`` compiles when a slide has at least this many patches to encode.
#: CPU: where compiling paid on 2 cores (docs/benchmarks.md, "Patch features"). CUDA: not
#: measured yet (no GPU here); a guess that keeps small slides eager while compilation and
#: CUDA-graph capture (tens of seconds cold) are unmeasured.
COMPILE_MIN_PATCHES = {"cpu": 512, "cuda": 4096}
ROW_BYTES = FEATURE_DIM * 4  # one float32 feature vector


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
    check_patches: int = 32  # patches of the first batch checked against eager fp32
    progress: bool | None = None  # None: a progress bar only on a terminal
    compile: str = "auto"  # auto | on | off (torch.compile; auto: enough patches to pay)
    compile_min_patches: int | None = None  # None: COMPILE_MIN_PATCHES of the device
    compile_cache: str | None = None  # inductor's cache folder; None: $TORCHINDUCTOR_CACHE_DIR
    resume: bool = True  # continue from the rows a killed run wrote


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
                     threads: int | None = None) -> tuple[int, int]:
    """Batch size and reader processes: the given ones, else sized by
    :func:`cmta_pipeline.compute.plan_readers` from the job's CPUs, ``/dev/shm`` and GPU."""
    cuda = device.type == "cuda"
    gpu_memory = (torch.cuda.get_device_properties(device).total_memory
                  if cuda and torch.cuda.is_available() else None)
    plan = compute.plan_readers(cuda, batch_size, workers, threads=threads,
                                input_px=input_px, cpus=available_cpus(),
                                gpu_memory=gpu_memory)
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


class _Normalised(nn.Module):
    """uint8 NHWC pixels -> ImageNet-normalised input in ``dtype``, channels_last -> encoder.

    One module, so that compilation fuses the normalisation with the first convolution.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.model = model
        self.dtype = dtype
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last already
        x = torch.addcmul(self.shift, x.float(), self.scale).to(self.dtype)
        return self.model(x.contiguous(memory_format=torch.channels_last))


class EncoderRunner:
    """Runs the encoder on uint8 NHWC batches: (B, S, S, 3) uint8 -> (B, 1024) float32.

    The model runs channels_last with BatchNorm folded, in ``precision``; ImageNet
    normalisation happens on the device in fp32, then the input is cast. ``compiled``:
    through ``torch.compile`` (inductor, ``freezing=True``: weights become constants and
    are pre-packed for oneDNN/cuDNN; CUDA graphs on CUDA) for one static batch shape,
    ``batch_size``: a shorter last batch is padded with zeros and the padding dropped, so
    that it is never compiled a second time. On CUDA a shorter batch is padded to
    ``pad_to`` rows too, so that cuDNN tunes one shape per process instead of two;
    ``tune=False`` uses cuDNN's heuristic plans (no timing; for the few check batches).
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 compiled: bool = False, batch_size: int | None = None,
                 pad_to: int | None = None, tune: bool = True):
        self.device = device
        self.tune = tune
        self.pad_to = pad_to if device.type == "cuda" else None
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.compiled = bool(compiled)
        self.batch_size = batch_size
        m = fold_batchnorm(model).to(device=device, memory_format=torch.channels_last)
        self.module = _Normalised(m.to(dtype=self.dtype), self.dtype, device).eval()
        self._cudagraphs = self.compiled and device.type == "cuda"
        if self.compiled:
            if batch_size is None:
                raise ValueError("a compiled encoder needs its static batch_size")
            self.fn = torch.compile(self.module, dynamic=False, options={
                "freezing": True, "triton.cudagraphs": self._cudagraphs})
        else:
            self.fn = self.module

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = len(pixels)
        x = pixels.to(self.device, non_blocking=True)
        rows = self.batch_size if self.compiled else self.pad_to
        if rows is not None and n < rows:
            x = torch.cat([x, x.new_zeros((rows - n, *x.shape[1:]))])
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with contextlib.ExitStack() as stack:
            if self.device.type == "cuda" and self.precision == "fp32":
                stack.enter_context(_cudnn_ieee_fp32())  # fp32 means fp32 (the check's reference)
            if self.device.type == "cuda" and not self.tune:
                stack.enter_context(_cudnn_benchmark(False))
            out = self.fn(x)
        # a CUDA graph reuses its output buffer at the next call: copy it out
        out = out[:n].float()
        return out.clone() if self._cudagraphs else out


@contextlib.contextmanager
def _setting(obj, name: str, value):
    """``obj.name = value`` for the duration of the block (a torch backend flag)."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _cudnn_benchmark(on: bool):
    return _setting(torch.backends.cudnn, "benchmark", on)


def _cudnn_ieee_fp32():
    """cuDNN convolutions in true fp32 instead of the TF32 that torch allows by default."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        return _setting(conv, "fp32_precision", "ieee")
    return _setting(torch.backends.cudnn, "allow_tf32", False)


def prepare_backend(device: torch.device, threads: int | None) -> int:
    """Torch settings of the extraction loop (benchmarks call this too, to time the same
    plans): torch threads (default: :func:`cmta_pipeline.compute.plan_readers`'s, i.e. the
    job's CPUs on CPU, 2 on CUDA where readers use the rest); on CUDA, cuDNN plan timing.
    Returns the number of torch threads."""
    cuda = device.type == "cuda"
    if threads is None:
        threads = compute.plan_readers(cuda, batch_size=1, workers=0, cpus=available_cpus()).threads
    torch.set_num_threads(int(threads))
    if cuda:
        # cuDNN picks its fastest plans by timing them once per input shape and process:
        # every batch is padded to one shape (EncoderRunner), and the short fp32 precision
        # check runs untimed (heuristic plans), so a slide pays for one tuning
        torch.backends.cudnn.benchmark = True
    return int(threads)


def _cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


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
    :data:`COMPILE_MIN_PATCHES` of the device) to encode, and it is not fp32 on a CPU of
    :data:`NO_FP32_COMPILE_GAIN`."""
    if mode not in COMPILE_MODES:
        raise CMTAError(f"--compile {mode}: use one of {', '.join(COMPILE_MODES)}")
    if mode == "auto":
        if min_patches is None:
            min_patches = COMPILE_MIN_PATCHES[device.type]
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


@dataclass
class _Engine:
    """How the features of a slide are computed: compiled or eager, and in which precision."""

    compiled: bool
    precision: str

    def label(self) -> str:
        return f"{'compiled' if self.compiled else 'eager'} {self.precision}"


class _Fallback(Exception):
    """The checked engine disagrees with eager fp32 on a resumed slide: start it again."""


class _MemorySink:
    """Features of every patch, row by row, in one preallocated (N, 1024) float32 array."""

    def __init__(self, n: int):
        self.features = np.zeros((n, FEATURE_DIM), np.float32)
        self.rows = 0
        self.failed: list[int] = []
        self.state: dict = {}

    def resume(self, settings: dict) -> dict | None:
        return None

    def begin(self, settings: dict, state: dict) -> None:
        self.rows, self.failed, self.state = 0, [], dict(state)

    def append(self, feats: np.ndarray, failed: list[int]) -> None:
        self.features[self.rows:self.rows + len(feats)] = feats
        self.rows += len(feats)
        self.failed += failed

    def result(self) -> np.ndarray:
        return self.features

    def discard(self) -> None:
        pass


class PartialFeatures:
    """A slide's features so far, on disk, so that a killed extraction resumes.

    Two hidden files beside the outputs: ``.<id>.features.partial`` (float32 rows, 4 KiB
    each, in patch order) and ``.<id>.features.partial.json`` (how many rows are complete,
    the failed patch indices, the check's outcome, and the settings that produced them).
    Each batch is appended to the data, then the JSON is replaced atomically, so the JSON
    never counts a row that is not on disk; rows beyond its count are cut on resume. A
    rerun with other settings (weights, coords, batch size, threads, precision, compiled
    or not, package versions ...) starts again from row 0.
    """

    def __init__(self, outdir, slide_id: str, n: int):
        outdir = Path(outdir)
        self.data = outdir / f".{slide_id}.features.partial"
        self.json = outdir / f".{slide_id}.features.partial.json"
        self.n = n
        self.rows = 0
        self.failed: list[int] = []
        self.state: dict = {}
        self._settings: dict = {}
        self._f = None

    def resume(self, settings: dict) -> dict | None:
        """The saved state if it was made with ``settings`` and its rows are on disk."""
        import json

        try:
            state = json.loads(self.json.read_text())
            rows = int(state["rows"])
            ok = (state.get("settings") == settings and 0 < rows <= self.n
                  and self.data.stat().st_size >= rows * ROW_BYTES)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return state if ok else None

    def begin(self, settings: dict, state: dict) -> None:
        """Open for appending after ``state["rows"]`` rows (0: start afresh)."""
        self.close()
        self._settings = settings
        self.state = {k: v for k, v in state.items() if k not in ("rows", "failed", "settings")}
        self.rows = int(state.get("rows", 0))
        self.failed = list(state.get("failed", []))
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self.rows == 0:
            self.json.unlink(missing_ok=True)
            self._f = open(self.data, "wb")
        else:
            self._f = open(self.data, "r+b")
            self._f.truncate(self.rows * ROW_BYTES)
            self._f.seek(self.rows * ROW_BYTES)

    def append(self, feats: np.ndarray, failed: list[int]) -> None:
        import json

        from ..fileio import write_text_atomic

        self._f.write(np.ascontiguousarray(feats, dtype=np.float32).tobytes())
        self._f.flush()  # in the page cache: survives the process being killed
        self.rows += len(feats)
        self.failed += failed
        write_text_atomic(self.json, json.dumps({
            "rows": self.rows, "failed": self.failed, **self.state,
            "settings": self._settings}))

    def result(self) -> np.ndarray:
        """All N rows, (N, 1024) float32 (the output itself: the one full copy in memory)."""
        self.close()
        feats = np.fromfile(self.data, dtype=np.float32, count=self.n * FEATURE_DIM)
        return feats.reshape(self.n, FEATURE_DIM)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def discard(self) -> None:
        self.close()
        self.data.unlink(missing_ok=True)
        self.json.unlink(missing_ok=True)


def _settings(slide_path: Path, grid, info: EncoderInfo, input_px: int, opts: ExtractOptions,
              batch_size: int, device: torch.device, threads: int) -> dict:
    """Everything the bytes of the features depend on, for deciding whether to resume."""
    import hashlib

    coords = hashlib.sha256(np.ascontiguousarray(grid.coords).tobytes()).hexdigest()
    return {
        "slide": slide_path.name, "slide_bytes": slide_path.stat().st_size,
        "coords_sha256": coords, "patch_level": grid.patch_level,
        "patch_size": grid.patch_size, "weights": info.weights,
        "weights_sha256": info.weights_sha256, "input_px": input_px, "read_at": opts.read_at,
        "batch_size": batch_size, "device": str(device), "compile": opts.compile,
        "precision": opts.precision,
        "threads": threads if device.type == "cpu" else None,
        "cmta_version": __version__, "torch": torch.__version__,
    }


def _encode(slide_path: Path, grid, opts: ExtractOptions, model: nn.Module, info: EncoderInfo,
            sink, runners: dict | None = None) -> dict:
    """Encode every patch of ``grid`` into ``sink`` (resuming what it holds); the run's facts.

    Engine: eager fp32 is the reference. Any other (compiled, or reduced precision) is
    checked on the first batch this run encodes: every patch's cosine to eager fp32 must be
    at least ``COMPILED_MIN_COSINE`` (fp32) or ``MIN_COSINE`` (bf16/fp16), else the slide
    is encoded in eager fp32 (one log line). A failure to compile falls back the same way.
    """
    input_px = int(opts.input_px or grid.encoder_input_px or 224)
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    batch_size, workers = default_batching(device, opts.batch_size, opts.workers, input_px,
                                           opts.threads)
    threads = prepare_backend(device, opts.threads)
    n = len(grid.coords)
    settings = _settings(slide_path, grid, info, input_px, opts, batch_size, device, threads)
    dataset = PatchBatches(slide_path, grid, input_px, opts.read_at)

    state = sink.resume(settings)
    if state is not None:
        engine = _Engine(**state["engine"])
        log.info("%s: resuming after %d of %d patches already encoded (%s)",
                 slide_path.name, state["rows"], n, engine.label())
    else:
        state = {"rows": 0}
        engine = _Engine(resolve_compile(opts.compile, device, n, opts.compile_min_patches,
                                         precision), precision)
    if engine.compiled:
        use_compile_cache(opts.compile_cache)
    resumed = int(state["rows"])
    stats = {"input_px": input_px, "device": device, "batch_size": batch_size,
             "workers": workers, "read_level": dataset.level, "read_size_px": dataset.size,
             "resumed_rows": resumed}
    while True:
        try:
            return {**stats, **_encode_rows(slide_path, dataset, opts, model, engine, sink,
                                            settings, state, batch_size, workers, device,
                                            runners)}
        except _Fallback as fb:
            # the saved rows came from an engine that no longer passes its check here
            engine, state, stats["resumed_rows"] = fb.args[0], {"rows": 0}, 0


def _encode_rows(slide_path, dataset, opts, model, engine, sink, settings, state, batch_size,
                 workers, device, runners=None) -> dict:
    n = len(dataset)
    start = int(state["rows"])
    sink.begin(settings, {**state, "engine": asdict(engine)})
    check = state.get("check")  # the first run's outcome, kept so resumed files are equal
    runner = _build_runner(model, device, engine, batch_size, slide_path, runners)
    if runner is None:  # compilation failed (logged): eager fp32
        engine = _Engine(False, "fp32")
        if start:
            raise _Fallback(engine)
        sink.begin(settings, {"rows": 0, "engine": asdict(engine)})
        runner = EncoderRunner(model, device, "fp32", pad_to=batch_size)
        check = {"min_cosine": None, "fallback": "compilation failed"}
    checking = engine != _Engine(False, "fp32")
    batches = [list(range(i, min(i + batch_size, n))) for i in range(start, n, batch_size)]
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

    bar = tqdm(total=n, initial=start, unit="patch", desc=slide_path.stem,
               disable=not progress, mininterval=2.0, file=sys.stderr)
    read_wait = 0.0
    t0 = time.perf_counter()
    it = iter(loader)
    try:
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
                                    f"--on-error skip to leave such patches out (they are "
                                    f"counted)")
                log.warning("%s (skipped; %d patch(es) in this batch)", msg, int((~ok).sum()))
            why = ""
            try:
                feats = runner(batch["pixels"])
            except Exception as exc:
                if not (checking and runner.compiled):
                    raise
                feats, why = None, f"compiled encoder failed ({type(exc).__name__}: {exc})"
            if checking and (feats is None or ok.any()):
                reference = EncoderRunner(model, device, "fp32", tune=False)
                take = min(len(idx), max(1, opts.check_patches))
                sel = torch.from_numpy(ok[:take])
                ref = reference(batch["pixels"][:take])
                cos, why = None, why if feats is None else "no decodable patch checked"
                if feats is not None and sel.any():
                    cos = _cosine_min(feats[:take][sel.to(feats.device)], ref[sel.to(ref.device)])
                    why = f"min cosine {cos:.7f} to eager fp32"
                threshold = COMPILED_MIN_COSINE if engine.precision == "fp32" else MIN_COSINE
                if check is None:
                    check = {"min_cosine": cos, "fallback": ""}
                if not (cos is not None and cos >= threshold):  # NaN fails too
                    log.warning("%s: %s features rejected (%s; need >= %s): encoding this "
                                "slide in eager fp32", slide_path.name, engine.label(), why,
                                threshold)
                    rejected = engine.label()
                    engine = _Engine(False, "fp32")
                    if start:
                        raise _Fallback(engine)
                    check = {"min_cosine": cos, "fallback": f"{rejected}: {why}"}
                    sink.begin(settings, {"rows": 0, "engine": asdict(engine)})
                    runner = reference
                    feats = ref if take == len(idx) else runner(batch["pixels"])
                checking = False
            if check is not None and "check" not in sink.state:
                sink.state["check"] = check
            sink.append(feats.cpu().numpy(), [int(i) for i in idx[~ok]])
            bar.update(len(idx))
    finally:
        bar.close()
        del it  # stops the reader processes
    return {"engine": engine, "check": check or {"min_cosine": None, "fallback": ""},
            "seconds": time.perf_counter() - t0, "read_wait_s": read_wait}


def _build_runner(model, device, engine: _Engine, batch_size: int, slide_path: Path,
                  runners: dict | None = None):
    """The engine's runner; None (and one log line) if it cannot be built. ``runners``
    (from :func:`extract_slides`) keeps the runners built for earlier slides of the same
    process, which then share one folded, compiled (on CUDA graph-captured) encoder
    instead of compiling again for each slide."""
    runners = {} if runners is None else runners
    key = (str(device), engine.precision, engine.compiled, batch_size)
    if key in runners:
        return runners[key]
    try:
        runners[key] = EncoderRunner(model, device, engine.precision,
                                     compiled=engine.compiled, batch_size=batch_size,
                                     pad_to=batch_size)
        return runners[key]
    except Exception as exc:
        if not engine.compiled:
            raise
        log.warning("%s: cannot compile the encoder (%s: %s); eager fp32", slide_path.name,
                    type(exc).__name__, exc)
        return None


def _finish(slide_path: Path, grid, info: EncoderInfo, opts: ExtractOptions, facts: dict,
            feats: np.ndarray, failed: list[int]):
    """Checked features of the kept patches, their coords, and the file's metadata."""
    keep = np.ones(len(grid.coords), dtype=bool)
    keep[np.asarray(failed, dtype=np.int64)] = False
    if not keep.all():
        feats = feats[keep]
    coords = grid.coords[keep]
    if len(feats) == 0:
        raise CMTAError(f"{slide_path}: every patch failed to decode; no features written")
    engine = facts["engine"]
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CMTAError(f"{slide_path}: {int(bad.sum())} feature vectors are not finite "
                        f"(first: patch at {tuple(coords[i])}) with {engine.label()}; "
                        f"rerun with --precision fp32 --compile off")
    check = facts["check"]
    meta = {
        "slide_id": "",
        "encoder": info.name,
        "weights": info.weights,
        "weights_sha256": info.weights_sha256,
        "feature_dim": FEATURE_DIM,
        "input_px": facts["input_px"],
        "read_at": opts.read_at,
        "read_level": facts["read_level"],
        "read_size_px": facts["read_size_px"],
        "patch_level": grid.patch_level,
        "patch_size": grid.patch_size,
        "patch_size_level0": grid.patch_size_level0,
        "normalisation": "imagenet",
        "precision": engine.precision,
        "compiled": engine.compiled,
        "device": str(facts["device"]),
        "batch_size": facts["batch_size"],
        "workers": facts["workers"],
        "precision_check_min_cosine": -1.0 if check["min_cosine"] is None
        else check["min_cosine"],
        "n_patches": int(len(feats)),
        "n_skipped": int((~keep).sum()),
        "coords_file": str(Path(grid.path).name),
        "slide_file": slide_path.name,
        "cmta_version": __version__,
    }
    if check["fallback"]:
        meta["precision_fallback"] = check["fallback"]
    for k in ("mpp", "target_mpp", "level_dim"):
        if k in grid.attrs:
            meta[f"coords_{k}"] = grid.attrs[k]
    return np.ascontiguousarray(feats, dtype=np.float32), coords, meta


def _prepare(slide_path, coords_path, opts: ExtractOptions, model, info):
    if opts.on_error not in ("fail", "skip"):
        raise CMTAError(f"on_error must be fail or skip, got {opts.on_error!r}")
    if opts.read_at not in READ_AT:
        raise CMTAError(f"--read-at must be one of {', '.join(READ_AT)}, got {opts.read_at!r}")
    if opts.compile not in COMPILE_MODES:
        raise CMTAError(f"--compile {opts.compile}: use one of {', '.join(COMPILE_MODES)}")
    slide_path = Path(slide_path)
    slide = open_slide(slide_path)
    try:
        grid = load_patch_grid(coords_path, slide)
    finally:
        slide.close()
    if model is None:
        model, info = build_encoder(opts.weights)
    return slide_path, grid, model, info


def extract_features(
    slide_path: str | os.PathLike,
    coords_path: str | os.PathLike,
    opts: ExtractOptions,
    model: nn.Module | None = None,
    info: EncoderInfo | None = None,
):
    """Features of every patch of ``coords_path``, in memory: (features (N', 1024) float32,
    coords (N', 2) int64, metadata dict). N' < N only with ``on_error="skip"``.

    ``model``/``info`` let callers reuse one encoder over many slides. :func:`extract_slide`
    is the same computation written to files (and resumable).
    """
    slide_path, grid, model, info = _prepare(slide_path, coords_path, opts, model, info)
    sink = _MemorySink(len(grid.coords))
    facts = _encode(slide_path, grid, opts, model, info, sink)
    feats, coords, meta = _finish(slide_path, grid, info, opts, facts, sink.result(),
                                  sink.failed)
    meta.update(seconds=facts["seconds"], read_wait_s=facts["read_wait_s"])
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
    with atomic_output(pt) as tmp, open(tmp, "wb") as fh:
        # to a file object: torch.save would otherwise name the archive's folder after the
        # random temporary name, and two runs would not give the same bytes
        torch.save(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)), fh)
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
                  slide_id: str | None = None, model=None, info=None,
                  runners: dict | None = None) -> ExtractResult:
    """Encode one slide and write its feature files; returns what happened (and how fast).

    Rows are written batch by batch to a partial file beside the outputs
    (:class:`PartialFeatures`); a killed run resumes from them (``opts.resume``), and the
    outputs are then byte-identical to an uninterrupted run's. Bad input (a
    :class:`CMTAError`) removes the partial file. ``model``/``info``/``runners`` let
    :func:`extract_slides` share one encoder between slides.
    """
    slide_path = Path(slide_path)
    slide_id = slide_id or default_slide_id(slide_path, coords_path)
    slide_path, grid, model, info = _prepare(slide_path, coords_path, opts, model, info)
    sink = PartialFeatures(outdir, slide_id, len(grid.coords))
    if not opts.resume:
        sink.discard()
    try:
        facts = _encode(slide_path, grid, opts, model, info, sink, runners)
        feats, coords, meta = _finish(slide_path, grid, info, opts, facts, sink.result(),
                                      sink.failed)
    except CMTAError:
        sink.discard()  # bad input: it would fail the same way again
        raise
    finally:
        sink.close()
    meta["slide_id"] = slide_id
    h5, pt = write_feature_files(outdir, slide_id, feats, coords, meta)
    sink.discard()
    n = meta["n_patches"] + meta["n_skipped"]
    done = n - facts["resumed_rows"]
    res = ExtractResult(
        slide_id=slide_id, h5=h5, pt=pt, n_patches=meta["n_patches"],
        n_skipped=meta["n_skipped"], seconds=facts["seconds"],
        patches_per_s=done / max(facts["seconds"], 1e-9), read_wait_s=facts["read_wait_s"],
        device=meta["device"], precision=meta["precision"],
        min_cosine=None if meta["precision_check_min_cosine"] < 0
        else meta["precision_check_min_cosine"],
        stats={**meta, "seconds": facts["seconds"], "read_wait_s": facts["read_wait_s"],
               "resumed_rows": facts["resumed_rows"]},
    )
    log.info(
        "%s: %d patches -> %s in %.1f s (%.1f patches/s, waited %.1f s for reading; %s %s, "
        "%s, weights %s%s%s)", slide_id, res.n_patches, h5, res.seconds, res.patches_per_s,
        res.read_wait_s, res.device, facts["engine"].label(), meta["precision"],
        meta["weights"],
        f"; resumed after {facts['resumed_rows']}" if facts["resumed_rows"] else "",
        f"; {res.n_skipped} undecodable patches skipped" if res.n_skipped else "",
    )
    return res


def default_slide_id(slide_path, coords_path) -> str:
    """The coords file's slide_id attribute, else the slide file name without extension."""
    import h5py

    try:
        with h5py.File(coords_path, "r") as f:
            v = f.attrs.get("slide_id") or f["coords"].attrs.get("slide_id")
    except Exception:
        v = None
    if isinstance(v, bytes):
        v = v.decode()
    return str(v) if v else Path(slide_path).stem


@dataclass
class SlideJob:
    """One slide of a multi-slide :func:`extract_slides` run."""

    slide: str | os.PathLike
    coords: str | os.PathLike
    slide_id: str | None = None
    tile_status: str | os.PathLike | None = None  # `cmta tile --status`: failed -> no features


def tiling_failed(status_path) -> str | None:
    """The reason in a `cmta tile` status file whose status is not ok, else None."""
    import json

    try:
        status = json.loads(Path(status_path).read_text())
    except (OSError, ValueError) as exc:
        raise CMTAError(f"{status_path}: unreadable tile status file ({exc})") from exc
    if status.get("status") == "ok":
        return None
    return str(status.get("reason") or f"status {status.get('status')!r}")


def write_failed_feature_files(outdir, slide_id: str, reason: str) -> tuple[Path, Path]:
    """Empty feature files (zero patches, ``status = "failed"``) for a slide whose tiling
    failed, so that a job encoding several slides has every output it declares. Nothing
    reads them as features: :func:`cmta_pipeline.feature_files.load_features` rejects a
    file with no patches, and the cohort keeps only the slides tiled successfully."""
    meta = {"status": "failed", "reason": reason, "n_patches": 0, "patch_level": 0,
            "patch_size": 0, "patch_size_level0": 0, "feature_dim": FEATURE_DIM,
            "cmta_version": __version__}
    return write_feature_files(outdir, slide_id, np.zeros((0, FEATURE_DIM), np.float32),
                               np.zeros((0, 2), np.int64), meta)


def extract_slides(jobs: list[SlideJob], outdir, opts: ExtractOptions) -> list[ExtractResult]:
    """Encode several slides in one process: the encoder is built (and, where it pays,
    compiled) once for all of them. Each slide is written as by :func:`extract_slide`;
    a slide whose ``tile_status`` says its tiling failed gets
    :func:`write_failed_feature_files`. The first slide that fails stops the run."""
    model = info = None
    runners: dict = {}  # the encoder runners built for the first slide, reused by the next
    results = []
    t0 = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        reason = tiling_failed(job.tile_status) if job.tile_status else None
        if reason is not None:
            slide_id = job.slide_id or default_slide_id(job.slide, job.coords)
            write_failed_feature_files(outdir, slide_id, reason)
            log.info("%s: tiling failed (%s); empty feature files marked failed", slide_id,
                     reason)
        else:
            if model is None:
                model, info = build_encoder(opts.weights)
            results.append(extract_slide(job.slide, job.coords, outdir, opts,
                                         slide_id=job.slide_id, model=model, info=info,
                                         runners=runners))
        if len(jobs) > 1:
            log.info("slide %d of %d done, %.1f s in all", i, len(jobs),
                     time.perf_counter() - t0)
    return results
