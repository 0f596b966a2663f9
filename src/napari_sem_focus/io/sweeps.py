"""Focus sweeps other tools wrote: their frames as a focus series, with the score each tool gave each frame.

fibsem-os autofocus result folder (``AutoFocusResult.save`` in ``fibsem.autofunctions.autofocus``)::

    data.json      {"working_distance": m, "initial_working_distance": m, "focus_score": ..., "method": "tenengrad",
                    "settings": {...}, "iterations": [{"index", "pass_index", "working_distance" (m),
                    "focus_score", "image": "iter_00.tif"}, ...]}
    iter_00.tif …  one probe frame per iteration (raw pixels, no metadata)
    best.tif       a copy of the best iteration's frame (not read again)
    plot.png       fibsem's plot

:func:`fibsem_autofocus_sweep` reads ``data.json``; :func:`napari_sem_focus.io.series.read_series` then reads such a
folder as a series of the iteration frames, each with its working distance (mm) and fibsem's score as a column
``fibsem_<method>`` beside ours. The frames state no pixel size: give the magnification (the probe's field width: 127 mm
/ HFW x 768 / 1024 for fibsem's 768-px probe frames; CLI ``--mag``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import SeriesError

FIBSEM_DATA_FILE = "data.json"


@dataclass(frozen=True)
class SweepFrame:
    """One frame of a sweep: its file, working distance (mm) and the score the tool gave it."""

    path: Path
    working_distance_mm: float
    recorded: dict[str, float]


@dataclass(frozen=True)
class Sweep:
    """A focus sweep written by another tool: its frames and a note saying what it was."""

    frames: list[SweepFrame]
    note: str


def fibsem_autofocus_sweep(folder: Path) -> Sweep | None:
    """The frames of a fibsem-os autofocus result folder, or None when ``folder`` is not one (no ``data.json``
    with iterations). A listed frame file that is missing, or an iteration without a working distance, is a
    :class:`SeriesError`."""
    path = Path(folder) / FIBSEM_DATA_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    iterations = data.get("iterations") if isinstance(data, dict) else None
    if not isinstance(iterations, list) or not iterations or not all(isinstance(i, dict) for i in iterations):
        return None
    if not all("image" in i and "working_distance" in i for i in iterations):
        return None
    method = str(data.get("method") or (data.get("settings") or {}).get("method") or "score")
    column = f"fibsem_{method}"
    frames = []
    for it in iterations:
        wd_m = _finite(it.get("working_distance"))
        if wd_m is None or wd_m <= 0:
            raise SeriesError(f"'{path}': iteration {it.get('index')} has no valid working distance")
        file = Path(folder) / str(it["image"])
        if not file.is_file():
            raise SeriesError(f"'{path}' lists '{it['image']}', which is not in the folder")
        score = _finite(it.get("focus_score"))
        frames.append(SweepFrame(file, wd_m * 1e3, {column: score} if score is not None else {}))
    passes = len({it.get("pass_index", 0) for it in iterations})
    note = (
        f"fibsem-os autofocus folder: {len(frames)} iterations in {passes} pass(es), scored by fibsem with "
        f"'{method}' (column {column}); best.tif not repeated"
    )
    return Sweep(frames, note)


def _finite(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
