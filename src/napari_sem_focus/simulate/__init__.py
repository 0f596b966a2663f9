"""Physics-based SEM focus-series simulator: training data, sample data (:mod:`.samples`) and test fixtures.
May import ``io``, ``scoring`` and the shared helpers; never training, focusing, batch or the front ends.

See docs/simulator.md for every formula with its units. Entry points:

- :func:`simulate_frame` — one frame from :class:`FrameParams`;
- :func:`simulate_series` / :func:`write_series` — a through-focus series (multi-page TIFF + labels CSV);
- :func:`sample_params` / :func:`dataset_params` — the randomised training distribution, fixed seeds per split;
- :func:`write_dataset` — a labelled dataset on disk (the torch Dataset lives in ``napari_sem_focus.training.data``).
"""

from .frame import HIGH_MAGNIFICATIONS, PAPER_MAGNIFICATIONS, FrameParams, SimulatedFrame, sample_params, simulate_frame
from .labels import focus_score
from .optics import REFERENCE_FRAME_WIDTH_PX, magnification_from_pixel_size, pixel_size_nm
from .series import dataset_params, simulate_series, write_dataset, write_series
from .specimens import HELD_OUT_FAMILY, SPECIMENS, TRAINING_FAMILIES

__all__ = [
    "HELD_OUT_FAMILY",
    "HIGH_MAGNIFICATIONS",
    "PAPER_MAGNIFICATIONS",
    "REFERENCE_FRAME_WIDTH_PX",
    "SPECIMENS",
    "TRAINING_FAMILIES",
    "FrameParams",
    "SimulatedFrame",
    "dataset_params",
    "focus_score",
    "magnification_from_pixel_size",
    "pixel_size_nm",
    "sample_params",
    "simulate_frame",
    "simulate_series",
    "write_dataset",
    "write_series",
]
