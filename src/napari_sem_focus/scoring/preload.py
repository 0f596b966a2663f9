"""Loading PyTorch and the network in the background while a viewer stays responsive (the napari widgets).

Importing this module imports no torch: only calling its functions does.
"""

from __future__ import annotations

import threading

from ..device import lower_thread_priority


def load_pytorch() -> None:
    """Import PyTorch, the network's module (:mod:`.model`) and torchvision's models: about 3 s the first time in a
    process, ~0.35 s of it loading libtorch with Python's GIL held (no other Python thread runs then); nothing
    after that. torchvision's models import ``torch._dynamo`` (1.2 s of Python imports): left to the
    first scoring, its pauses of the viewer reached 60-100 ms while the first frames were scored. Then the scoring
    modules (OpenCV among them) and the bundled network, so that the click on Score stack finds them loaded:
    importing OpenCV on the click held the viewer 58 ms, and the first job's imports and model 120-200 ms."""
    import importlib

    for name in ("analysis", "infer"):  # OpenCV; first, as a click meanwhile would wait on the import lock
        importlib.import_module(f"{__package__}.{name}")
    import torchvision.models  # noqa: F401  (what model.build_focus_net needs)

    from . import model  # noqa: F401  (imports torch)
    from .weights import load_model

    load_model(None)  # the bundled weights on the CPU, cached (weights.load_model): what Score stack uses first


#: Set once :func:`load_pytorch` has run to its end in this process (another plugin may have imported torchvision
#: already: the scoring modules and the network still need loading then).
_LOADED = threading.Event()


def load_pytorch_in_background() -> threading.Thread | None:
    """Run :func:`load_pytorch` in a thread of its own at lower priority unless it ran already; returns the thread.
    Not a daemon: a viewer closed meanwhile waits for the import to end rather than tearing down an interpreter in
    the middle of loading libtorch."""
    if _LOADED.is_set():
        return None

    def load() -> None:
        lower_thread_priority()
        try:
            load_pytorch()
            _LOADED.set()
        except Exception:  # a broken install: scoring will say so when it is asked for
            pass

    thread = threading.Thread(target=load, name="napari-sem-focus: load PyTorch")
    thread.start()
    return thread
