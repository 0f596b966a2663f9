"""napari-sem-focus: score how well focused SEM images are and pick the best frame of a focus series.

The core modules import neither Qt nor napari. torch is imported at module level only by the modules built on it
(``model``, ``train``, ``data``, ``distributed``); everything else imports it inside the functions that score or
train, so ``import napari_sem_focus`` and napari's start-up stay fast (tests/test_architecture.py checks every
module).
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# torch imports triton (its GPU kernel compiler) when available; triton's bundled LLVM clashes with the LLVM inside
# Mesa's OpenGL driver, and importing it after napari has opened its OpenGL canvas crashes the process
# (segmentation fault, seen under Xvfb/llvmpipe). We never use torch.compile, so triton is kept out of the
# process unless it is already loaded or NAPARI_SEM_FOCUS_ALLOW_TRITON=1 is set.
if "triton" not in _sys.modules and _os.environ.get("NAPARI_SEM_FOCUS_ALLOW_TRITON") != "1":
    _sys.modules["triton"] = None  # type: ignore[assignment]

from .errors import SemFocusError

__all__ = ["SemFocusError", "__version__"]
