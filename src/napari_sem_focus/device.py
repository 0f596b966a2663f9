"""Where the network runs and in which precision: one policy for scoring, adapting and training.

- :func:`select_device`: ``"auto"`` picks a CUDA GPU, then Apple's MPS, then the CPU; a named device is checked
  to exist.
- :func:`mixed_precision_dtype`: the autocast dtype of a device — bfloat16 on CUDA GPUs that support it (Ampere
  on) and on CPUs with native bf16 (AVX512-BF16/AMX), where it is about 2x faster than float32 and needs no
  gradient scaler; float16 on older CUDA GPUs (training adds a gradient scaler); None (float32) elsewhere, where
  reduced precision would be emulated and slower.
- :func:`autocast`: the autocast context for a device (disabled when its dtype is None or when asked).
- :func:`lower_thread_priority`: for a host process (the napari widgets) that must stay responsive while the
  network runs (loading it in the background: :mod:`napari_sem_focus.scoring.preload`).

torch is imported inside the functions, so importing this module (from the score path) costs nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from .errors import SemFocusError

#: Linux nice steps a job's thread runs below the viewer's. The compute threads PyTorch starts from the job's
#: thread inherit it; the scheduler then gives the viewer's thread a core as soon as it needs one.
JOB_NICENESS = 10


def lower_thread_priority(steps: int = JOB_NICENESS) -> None:
    """Lower the CPU priority of the calling thread (Linux only, where priority is per thread; elsewhere a
    no-op). It cannot be raised again without privileges: meant for napari's worker threads, whose jobs are all
    background work."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, max(os.getpriority(os.PRIO_PROCESS, thread), steps))
    except OSError:  # a sandbox that forbids it: the job runs at normal priority
        pass


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
