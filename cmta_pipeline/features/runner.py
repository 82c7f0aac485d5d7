"""The encoder as it runs on batches: BatchNorm folded, channels_last, normalisation on the
device, one precision, optionally compiled; the torch backend settings of the loop; and
the engine (compiled or eager, which precision) a slide is encoded with."""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import compute
from ..compute import available_cpus
from .encoders.registry import NORMALISATIONS
from .settings import DTYPES

log = logging.getLogger(__name__)


def prepared_copy(model: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The encoder as a runner holds it: ResNet-50 with BatchNorm folded (a copy); another
    encoder itself, or a copy where it changes dtype or device (the caller's model, e.g.
    the fp32 reference of the precision check, is left as it was)."""
    if all(hasattr(model, n) for n in ("bn1", "layer1", "layer2", "layer3")):
        m = fold_batchnorm(model)
    elif dtype != torch.float32 or device.type != "cpu":
        m = copy.deepcopy(model).eval()
    else:
        m = model
    return m.to(device=device, memory_format=torch.channels_last).to(dtype=dtype)


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


class Normalised(nn.Module):
    """uint8 NHWC pixels -> normalised input in ``dtype``, channels_last -> encoder.

    One module, so that compilation fuses the normalisation with the first convolution.
    ``normalisation``: the encoder's channel means and deviations (ImageNet's by default).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, device: torch.device,
                 normalisation: str = "imagenet", crop: int | None = None):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.crop = crop  # centre crop of this side (GigaPath: 256 -> 224), None: none
        mean_, std_ = NORMALISATIONS[normalisation]
        mean = torch.tensor(mean_, device=device).view(1, 3, 1, 1)
        std = torch.tensor(std_, device=device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.crop and pixels.shape[1] > self.crop:  # torchvision CenterCrop's offset
            a = int(round((pixels.shape[1] - self.crop) / 2.0))
            pixels = pixels[:, a:a + self.crop, a:a + self.crop]
        x = pixels.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last already
        x = torch.addcmul(self.shift, x.float(), self.scale).to(self.dtype)
        return self.model(x.contiguous(memory_format=torch.channels_last))


class EncoderRunner:
    """Runs the encoder on uint8 NHWC batches: (B, S, S, 3) uint8 -> (B, D) float32.

    The model runs channels_last (ResNet-50 with BatchNorm folded) and stays in fp32;
    ``precision`` bf16/fp16 runs it under ``torch.autocast`` (as TRIDENT does: LayerNorm,
    softmax and LayerScale keep fp32), never by casting the model; the encoder's
    ``normalisation`` (ImageNet's by default) happens on the device in fp32, after an
    optional centre ``crop``. ``compiled``:
    through ``torch.compile`` (inductor, ``freezing=True``: weights become constants and
    are pre-packed for oneDNN/cuDNN; CUDA graphs on CUDA) for one static batch shape,
    ``batch_size``: a shorter last batch is padded with zeros and the padding dropped, so
    that it is never compiled a second time. On CUDA a shorter batch is padded to
    ``pad_to`` rows too, so that cuDNN tunes one shape per process instead of two;
    ``tune=False`` uses cuDNN's heuristic plans (no timing; for the few check batches).
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str,
                 compiled: bool = False, batch_size: int | None = None,
                 pad_to: int | None = None, tune: bool = True,
                 normalisation: str = "imagenet", crop: int | None = None):
        self.device = device
        self.tune = tune
        self.pad_to = pad_to if device.type == "cuda" else None
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.compiled = bool(compiled)
        self.batch_size = batch_size
        m = prepared_copy(model, torch.float32, device)
        self.module = Normalised(m, torch.float32, device, normalisation, crop).eval()
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
                stack.enter_context(cudnn_ieee_fp32())  # fp32 means fp32 (the check's reference)
            if self.device.type == "cuda" and not self.tune:
                stack.enter_context(cudnn_benchmark(False))
            if self.precision != "fp32":
                stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
            out = self.fn(x)
        # a CUDA graph reuses its output buffer at the next call: copy it out
        out = out[:n].float()
        return out.clone() if self._cudagraphs else out


@contextlib.contextmanager
def backend_setting(obj, name: str, value):
    """``obj.name = value`` for the duration of the block (a torch backend flag)."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def cudnn_benchmark(on: bool):
    return backend_setting(torch.backends.cudnn, "benchmark", on)


def new_fp32_api() -> bool:
    """True where torch has the ``fp32_precision`` flags (>= 2.9): there only they are used,
    since mixing them with the legacy ``allow_tf32`` flags raises."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv is not None and hasattr(conv, "fp32_precision")


def cudnn_ieee_fp32():
    """cuDNN convolutions in true fp32 instead of the TF32 that torch allows by default."""
    if new_fp32_api():
        return backend_setting(torch.backends.cudnn.conv, "fp32_precision", "ieee")
    return backend_setting(torch.backends.cudnn, "allow_tf32", False)


def ieee_fp32():
    """Matrix products and cuDNN convolutions in true fp32 (no TF32) for the block, through
    one API: ``fp32_precision`` where torch has it, else the legacy ``allow_tf32`` flags."""
    stack = contextlib.ExitStack()
    if new_fp32_api():
        stack.enter_context(backend_setting(torch.backends.cuda.matmul, "fp32_precision", "ieee"))
        stack.enter_context(cudnn_ieee_fp32())
    else:
        stack.enter_context(backend_setting(torch.backends.cuda.matmul, "allow_tf32", False))
        stack.enter_context(cudnn_ieee_fp32())
    return stack


def fp32_flags() -> dict:
    """The fp32 precision flags, read through the API :func:`ieee_fp32` sets."""
    if new_fp32_api():
        return {"matmul": torch.backends.cuda.matmul.fp32_precision,
                "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}
    return {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


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


def cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


@dataclass
class Engine:
    """How the features of a slide are computed: compiled or eager, and in which precision."""

    compiled: bool
    precision: str

    def label(self) -> str:
        return f"{'compiled' if self.compiled else 'eager'} {self.precision}"


def build_runner(model, device, engine: Engine, batch_size: int, slide_path: Path,
                  runners: dict | None = None, normalisation: str = "imagenet",
                  crop: int | None = None):
    """The engine's runner; None (and one log line) if it cannot be built. ``runners``
    (from :func:`extract_slides`) keeps the runners built for earlier slides of the same
    process, which then share one folded, compiled (on CUDA graph-captured) encoder
    instead of compiling again for each slide."""
    runners = {} if runners is None else runners
    key = (str(device), engine.precision, engine.compiled, batch_size, normalisation, crop)
    if key in runners:
        return runners[key]
    try:
        runners[key] = EncoderRunner(model, device, engine.precision,
                                     compiled=engine.compiled, batch_size=batch_size,
                                     pad_to=batch_size, normalisation=normalisation,
                                     crop=crop)
        return runners[key]
    except Exception as exc:
        if not engine.compiled:
            raise
        log.warning("%s: cannot compile the encoder (%s: %s); eager fp32", slide_path.name,
                    type(exc).__name__, exc)
        return None
