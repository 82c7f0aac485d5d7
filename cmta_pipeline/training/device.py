"""Where training runs and in which precision: the device, and mixed precision on CUDA
(bf16 where the GPU runs it natively, else fp16 with a GradScaler)."""

from __future__ import annotations

import torch

from .. import compute


def resolve_device(name: str, option: str = "training.device") -> torch.device:
    """The training / prediction device, checked and made current (see
    :func:`cmta_pipeline.compute.resolve_device`); ``option`` names it in errors."""
    return compute.resolve_device(name, option)


def cuda_bf16_native() -> bool:
    """True if the current GPU runs bf16 in hardware (compute capability 8.0 and later);
    older GPUs emulate it, slowly."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation
        return torch.cuda.get_device_capability()[0] >= 8


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype of training steps: bf16 on GPUs with native bf16, else fp16
    (which needs a GradScaler); None (fp32) on CPU or with ``amp`` off."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if cuda_bf16_native() else torch.float16


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
