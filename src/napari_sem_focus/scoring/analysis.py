"""Series-level loops shared by the CLI and the napari widgets: one result row per frame, cancellable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import CancelledError
from ..io.series import FocusSeries
from .metrics import compute_metrics


def frame_row(series: FocusSeries, index: int) -> dict[str, Any]:
    """The identifying columns of frame ``index``: frame, file, working distance (mm); then any score another tool
    recorded for the frame (``series.recorded``, e.g. fibsem-os's ``fibsem_tenengrad``)."""
    row = {
        "frame": index,
        "file": series.frame_paths[index].name,
        "working_distance_mm": series.metadata[index].working_distance_mm,
    }
    return row | (series.recorded[index] if index < len(series.recorded) else {})


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
    mode: str | None = None,
    device: str = "cpu",
    metrics: Iterable[str] | None = (),
    smooth_sigma_px: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield ``(row, FrameScore)`` per frame: :func:`frame_row` + learned ``score`` with its confidence
    (:func:`score_columns`) (+ classic ``metrics``).

    ``mode``: a scoring mode of :mod:`napari_sem_focus.scoring.infer` (None: the default). ``metrics=None`` adds every
    classic metric, ``()`` none. Each frame is read once: the classic metrics are computed from the same array
    the model scores.
    """
    from .infer import MODES, score_series

    mode = mode or MODES[0]

    names = None if metrics is None else list(metrics)
    pending: dict[int, dict[str, float]] = {}

    if series.is_large and (names is None or names):  # band by band there is no whole frame to measure
        note = "classic metrics are not computed for frames above 64 Mpx: score a region (--roi) for them"
        if note not in series.notes:  # once, however often the series is scored
            series.notes.append(note)
        names = []

    def measure(index: int, frame: Any) -> None:  # the scorer's own read of the frame (one dict entry per frame)
        pending[index] = compute_metrics(frame, names, smooth_sigma_px)

    on_frame = measure if names is None or names else None
    for result in score_series(
        series, weights, magnification, mode, device, should_stop=should_stop, on_frame=on_frame
    ):
        row = frame_row(series, result.frame) | score_columns(result) | pending.pop(result.frame, {})
        yield row, result


#: The columns :func:`score_columns` adds to a result row.
SCORE_COLUMNS = ("score", "spread", "structure", "note")
#: Columns of a result row that say which frame it is, not how focused it is.
IDENTITY_COLUMNS = ("series", "frame", "file", "working_distance_mm")


def metric_columns(rows: list[dict[str, Any]], plotted: str = "score") -> list[str]:
    """The classic-metric columns of result rows (what a focus plot draws beside ``plotted``): every column but
    the frame's identity, the learned score's columns and ``plotted`` itself."""
    skip = {*IDENTITY_COLUMNS, *SCORE_COLUMNS, plotted}
    return [key for key in rows[0] if key not in skip] if rows else []


#: The note of a frame whose scored region shows no specimen structure.
NO_STRUCTURE = "no structure in the scored region"


def score_columns(result: Any) -> dict[str, Any]:
    """The result-table columns of a :class:`~napari_sem_focus.scoring.infer.FrameScore`: ``score`` (0-10), ``spread``
    (std of the pooled tile scores, score units; None for one crop), ``structure`` (fraction of the image with
    specimen structure) and ``note`` (:data:`NO_STRUCTURE` when the scored region has none, else None)."""
    spread = None if result.spread != result.spread else round(float(result.spread), 3)  # NaN -> None
    return {
        "score": round(float(result.score), 4),
        "spread": spread,
        "structure": round(float(result.structure_fraction), 3),
        "note": None if result.has_structure else NO_STRUCTURE,
    }


def score_summary(row: dict[str, Any], region: bool = False) -> str:
    """One line for a result row: score, spread, structure fraction and what the score means, e.g.
    ``score 8.62/10 ± 0.41 (structure in 63 % of the image): nearly in focus`` ("of the region" when
    ``region``: a region of interest was scored)."""
    from .infer import interpret_score

    spread = f" ± {row['spread']:.2f}" if row.get("spread") is not None else ""
    structure = row.get("structure")
    part = "region" if region else "image"
    where = f" (structure in {100 * structure:.0f} % of the {part})" if structure is not None else ""
    meaning = row["note"] if row.get("note") else interpret_score(row["score"])
    return f"score {row['score']:.2f}/10{spread}{where}: {meaning}"
