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


def score_rows(
    series: FocusSeries,
    weights: str | None = None,
    magnification: float | None = None,
    mode: str = "center",
    device: str = "cpu",
    metrics: Iterable[str] | None = (),
    smooth_sigma_px: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield ``(row, FrameScore)`` per frame: :func:`frame_row` + learned ``score`` (+ classic ``metrics``).

    ``metrics=None`` adds every classic metric, ``()`` none. Each frame is read once: the classic metrics are
    computed from the same array the model scores.
    """
    from .infer import score_series

    names = None if metrics is None else list(metrics)
    pending: dict[int, dict[str, float]] = {}

    def frames() -> Iterator[Any]:
        for i in range(len(series)):
            frame = series.frame(i)
            if names is None or names:
                pending[i] = compute_metrics(frame, names, smooth_sigma_px)
            yield frame

    for result in score_series(series, weights, magnification, mode, device, should_stop=should_stop, frames=frames()):
        row = frame_row(series, result.frame) | {"score": round(result.score, 4)} | pending.pop(result.frame, {})
        yield row, result
