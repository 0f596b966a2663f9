"""One device and precision policy for scoring, adapting and training."""

from __future__ import annotations

import pytest
import torch

from napari_sem_focus.device import autocast, mixed_precision_dtype, select_device
from napari_sem_focus.errors import SemFocusError


def test_devices_are_chosen_or_refused_with_a_message():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(SemFocusError, match="unknown device 'gpu0'"):
        select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(SemFocusError, match="no CUDA GPU"):
            select_device("cuda")


def test_reduced_precision_only_where_it_is_native_and_the_same_for_scoring_and_training():
    from napari_sem_focus.scoring.infer import inference_autocast

    native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert mixed_precision_dtype("cpu") == (torch.bfloat16 if native_bf16 else None)
    net = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    for context in (autocast("cpu"), inference_autocast("cpu")):
        with context:
            assert net(x).dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    for context in (autocast("cpu", enabled=False), inference_autocast("cpu", bf16=False)):
        with context:
            assert net(x).dtype == torch.float32
    assert mixed_precision_dtype("meta") is None  # neither CPU nor CUDA: float32
