"""Series-level loops shared by the CLI and the napari widgets: one result row per frame, cancellable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import CancelledError
from .io import FocusSeries
from .metrics import compute_metrics


def frame_row(series: FocusSeries, index: int) -> dict[str, Any]:
    """The identifying columns of frame ``index``: frame, file, working distance (mm)."""
    return {
        "frame": index,
        "file": series.frame_paths[index].name,
        "working_distance_mm": series.metadata[index].working_distance_mm,
    }


def series_metrics(
    series: FocusSeries,
    names: Iterable[str] | None = None,
    smooth_sigma_px: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one row per frame: :func:`frame_row` plus each classic metric of the scored region.

    Raises :class:`CancelledError` between frames when ``should_stop()`` turns true.
    """
    chosen = list(names) if names is not None else None
    for i in range(len(series)):
        if should_stop is not None and should_stop():
            raise CancelledError(f"stopped after {i} of {len(series)} frames")
        yield frame_row(series, i) | compute_metrics(series.frame(i), chosen, smooth_sigma_px)
