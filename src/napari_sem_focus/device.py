"""Where the network runs and in which precision: one policy for scoring, adapting and training.

- :func:`select_device`: ``"auto"`` picks a CUDA GPU, then Apple's MPS, then the CPU; a named device is checked
  to exist.
- :func:`mixed_precision_dtype`: the autocast dtype of a device — bfloat16 on CUDA GPUs that support it (Ampere
  on) and on CPUs with native bf16 (AVX512-BF16/AMX), where it is about 2x faster than float32 and needs no
  gradient scaler; float16 on older CUDA GPUs (training adds a gradient scaler); None (float32) elsewhere, where
  reduced precision would be emulated and slower.
- :func:`autocast`: the autocast context for a device (disabled when its dtype is None or when asked).
- :func:`reuse_freed_memory`: the C allocator of a scoring process keeps freed memory for the next frame.

torch is imported inside the functions, so importing this module (from the score path) costs nothing.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from .errors import SemFocusError

#: glibc's mallopt parameters (malloc.h) and the values :func:`reuse_freed_memory` gives them, in MiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MB, TRIM_THRESHOLD_MB = 32, 256
_allocator_tuned = False


def reuse_freed_memory() -> bool:
    """Let this process's C allocator (glibc, Linux) keep freed memory for reuse instead of returning it to the
    operating system, which then has to fault it in again for the next frame or batch: blocks up to
    ``MMAP_THRESHOLD_MB`` come from the heap, and up to ``TRIM_THRESHOLD_MB`` of free heap is kept.

    Measured on 2 cores (100 1024x768 frames, centre crop): glibc trims the heap between the frames' preparation
    and the network's batches, and the forward pass inside the scoring loop took 2.6-3.0 s against 2.0-2.3 s for
    the same batches run alone; with this it takes the same as alone, and the whole run 20 % less. (PyTorch's
    CPU performance guide gets the same from jemalloc or tcmalloc.) For processes of this package (the CLI, Dask
    workers), not for a host such as napari. Returns whether it applied (once per process; no-op elsewhere)."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mib = 1 << 20
    _allocator_tuned = bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MB * mib) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_MB * mib)
    )
    return _allocator_tuned


def load_pytorch() -> None:
    """Import PyTorch and the network's module (:mod:`napari_sem_focus.model`, torchvision): about 2 s the first
    time in a process, ~0.35 s of it loading libtorch with Python's GIL held (no other Python thread runs then);
    nothing after that."""
    from . import model  # noqa: F401  (imports torch and torchvision)


def select_device(name: str = "auto") -> Any:
    """A ``torch.device``: 'auto' picks cuda, then mps, then cpu; otherwise the named device (checked to exist)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SemFocusError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SemFocusError("device 'cuda' was asked for but no CUDA GPU is available")
    return device


def mixed_precision_dtype(device: Any) -> Any:
    """The autocast dtype for ``device`` (a ``torch.device`` or its name), or None for float32 (module docstring)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def autocast(device: Any, enabled: bool = True) -> Any:
    """The autocast context the network runs in on ``device``: :func:`mixed_precision_dtype`, unless ``enabled``
    is False or the device has no fast reduced precision."""
    import torch

    kind = torch.device(device).type
    dtype = mixed_precision_dtype(device) if enabled else None
    if dtype is None or kind not in ("cpu", "cuda"):
        return torch.autocast("cpu" if kind not in ("cpu", "cuda") else kind, enabled=False)
    return torch.autocast(kind, dtype=dtype)
