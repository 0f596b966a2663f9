"""napari-sem-focus: score how well focused SEM images are and pick the best frame of a focus series.

The core modules (``io``, ``metadata``, ``databar``, ``metrics``, ``focus_curve``, ``simulate``, ``model``,
``weights``, ``infer``, ``train``) import neither Qt nor napari, and torch only inside the functions that need it,
so ``import napari_sem_focus`` stays fast for napari's start-up.
"""

__version__ = "0.1.0"

from .errors import SemFocusError

__all__ = ["SemFocusError", "__version__"]
