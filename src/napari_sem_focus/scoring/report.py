"""Per-frame result tables (text, CSV, JSON) and the score-vs-focus plot, shared by the CLI and the widgets.

A result table is a list of row dicts with the same keys, e.g.
``{"frame": 0, "file": "a.tif", "working_distance_mm": 5.0, "score": 8.7, "tenengrad": 0.012}``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, atomic_write_text
from .focus_curve import SCORE_MIN_PROMINENCE, FocusPeak, find_best_focus


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table with aligned columns (numbers right-aligned); columns empty in every row are left out."""
    if not rows:
        return "(no rows)"
    cols = [c for c in (columns or rows[0].keys()) if any(r.get(c) is not None for r in rows)]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), int | float) or r.get(c) is None for r in rows) for c in cols]
    header = "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cols, widths, numeric, strict=True))
    lines = [header, "  ".join("-" * w for w in widths)]
    for row in cells:
        lines.append("  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric, strict=True)))
    return "\n".join(lines)


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text with a header row (``columns``, default the first row's keys; none for no rows and no columns);
    full float precision."""
    buffer = io.StringIO()
    if rows or columns:
        writer = csv.DictWriter(buffer, fieldnames=list(columns or rows[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as CSV atomically."""
    return atomic_write_text(path, to_csv(rows))


def to_json(payload: Any) -> str:
    """JSON text (NaN written as null)."""

    def clean(obj: Any) -> Any:
        if hasattr(obj, "item") and not isinstance(obj, list | tuple | dict):  # numpy scalars
            obj = obj.item()
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    return json.dumps(clean(payload), indent=2)


def focus_positions(rows: Sequence[dict[str, Any]]) -> tuple[list[float], str]:
    """x positions for a focus curve: working distance (mm) when every row has one, else the frame index."""
    wds = [r.get("working_distance_mm") for r in rows]
    if rows and all(w is not None for w in wds) and len(set(wds)) > 1:
        return [float(w) for w in wds], "working distance (mm)"  # type: ignore[arg-type]
    return [float(r["frame"]) for r in rows], "frame"


def curve_peak(rows: Sequence[dict[str, Any]], key: str) -> tuple[FocusPeak, str]:
    """Best frame and fitted best focus of the ``key`` column against :func:`focus_positions`, and the position
    unit ("mm" or "frame"). Dips of the learned ``score`` smaller than ``SCORE_MIN_PROMINENCE`` never count as
    separate peaks; classic metrics have arbitrary units, so only the relative threshold applies to them."""
    xs, xlabel = focus_positions(rows)
    min_prominence = SCORE_MIN_PROMINENCE if key == "score" else 0.0
    peak = find_best_focus([r[key] for r in rows], xs, min_prominence=min_prominence)
    return peak, "frame" if xlabel == "frame" else "mm"


def plot_focus_curve(
    ax: Any,
    rows: Sequence[dict[str, Any]],
    score_key: str,
    peak: FocusPeak | None = None,
    extra_keys: Sequence[str] = (),
    current_frame: int | None = None,
) -> None:
    """Draw ``score_key`` against focus position on a matplotlib Axes; other keys normalised to its range.

    The best frame is marked with a star and the fitted sub-step focus with a vertical line (+- 1 sigma band).
    Points are pickable (``picker=5``) so a GUI can jump to a clicked frame.
    """
    xs, xlabel = focus_positions(rows)
    ys = [float(r[score_key]) for r in rows]
    ax.plot(xs, ys, "o-", color="C0", label=score_key, picker=5, zorder=3)
    spreads = [r.get("spread") for r in rows] if score_key == "score" else []
    if spreads and all(s is not None for s in spreads):
        low = [y - s for y, s in zip(ys, spreads, strict=True)]
        high = [y + s for y, s in zip(ys, spreads, strict=True)]
        ax.fill_between(xs, low, high, color="C0", alpha=0.15, lw=0, label="spread over tiles (±1 sd)")
    finite = [y for y in ys if math.isfinite(y)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if score_key == "score":  # the learned score lives on the paper's fixed 0-10 scale
        lo, hi = 0.0, 10.0
        ax.set_ylim(-0.3, 10.5)
    for i, key in enumerate(extra_keys):
        vals = [float(r[key]) for r in rows]
        vmin, vmax = min(vals), max(vals)
        span = (vmax - vmin) or 1.0
        scaled = [lo + (v - vmin) / span * ((hi - lo) or 1.0) for v in vals]
        ax.plot(xs, scaled, ".--", color=f"C{i + 2}", alpha=0.7, label=f"{key} (scaled)")
    if peak is not None:
        ax.plot([xs[peak.index]], [ys[peak.index]], "*", ms=16, color="C3", label="best frame", zorder=4)
        if peak.method == "parabola":
            ax.axvline(peak.position, color="C3", lw=1, ls=":")
            ax.axvspan(
                peak.position - peak.position_sigma,
                peak.position + peak.position_sigma,
                color="C3",
                alpha=0.1,
            )
    if current_frame is not None and 0 <= current_frame < len(xs):
        ax.axvline(xs[current_frame], color="0.5", lw=1, label="current frame")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(score_key)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)


def save_focus_plot(path: str | Path, *curve: Any, title: str | None = None, **options: Any) -> Path:
    """Render :func:`plot_focus_curve` (``curve`` and ``options`` are its arguments after the Axes) to a PNG file
    (headless, Agg backend), atomically, with an optional ``title``."""

    def draw(ax: Any) -> None:
        plot_focus_curve(ax, *curve, **options)
        if title:
            ax.set_title(title, fontsize="medium")

    return _save_figure(path, draw)


def _save_figure(path: str | Path, draw: Any, panels: int = 1) -> Path:
    """A figure of ``panels`` axes side by side drawn by ``draw(ax)`` (``draw(*axes)``), written headless (Agg)
    and atomically; format from the suffix."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5 if panels == 1 else 12.0, 4.2), dpi=110)
    axes = [fig.add_subplot(1, panels, k + 1) for k in range(panels)]
    draw(*axes)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path


def plot_autofocus_path(
    ax: Any,
    scans: Sequence[Any],
    result: Any = None,
    curve: tuple[Sequence[float], Sequence[float]] | None = None,
) -> None:
    """Draw an autofocus search on a matplotlib Axes: each scan's score at its working distance, numbered in
    order and joined; the best marked once the search has ended (``result``); ``curve`` (working distances mm,
    scores) drawn beneath when known (the virtual SEM's true score). A search under way is drawn from its scans."""
    if curve is not None:
        ax.plot(curve[0], curve[1], color="0.7", lw=1.5, label="true score (virtual SEM)")
    wds = [a.working_distance_mm for a in scans]
    scores = [a.score for a in scans]
    ax.plot(wds, scores, "o-", color="tab:blue", lw=0.8, label="scans, in order")
    for a in scans:
        ax.annotate(str(a.index + 1), (a.working_distance_mm, a.score), textcoords="offset points", xytext=(4, 4))
    if result is not None:
        ax.axvline(result.best_wd_mm, color="tab:red", ls="--", label=f"best: {result.best_wd_mm:.4f} mm")
        ax.set_title(f"autofocus ({result.strategy}): {result.status}, {result.n_acquisitions} scans")
    ax.set_xlabel("working distance (mm)")
    ax.set_ylabel("focus score")
    ax.legend(loc="best", fontsize="small")


def plot_stigmator_path(ax: Any, scans: Sequence[Any], result: Any = None, best_stigmator: Any = None) -> None:
    """Draw the stigmators of a focus + stigmation search (:mod:`napari_sem_focus.focusing.stigmation`): each scan's
    (stig x, stig y), numbered in order, joined, coloured by its score (0-10); the best setting marked once the
    search has ended; ``best_stigmator`` (the virtual SEM's truth) as a star when known."""
    xs = [a.setting.stig_x for a in scans]
    ys = [a.setting.stig_y for a in scans]
    ax.plot(xs, ys, "-", color="0.6", lw=0.8)
    points = ax.scatter(xs, ys, c=[a.score for a in scans], cmap="viridis", vmin=0, vmax=10, zorder=3)
    for a in scans:
        ax.annotate(str(a.index + 1), (a.setting.stig_x, a.setting.stig_y), textcoords="offset points", xytext=(4, 4))
    if best_stigmator is not None:
        ax.plot(*best_stigmator, "*", color="tab:orange", ms=14, label="stigmated (virtual SEM)")
    if result is not None:
        ax.plot(result.best.stig_x, result.best.stig_y, "s", mfc="none", mec="tab:red", ms=12, label="best")
    ax.figure.colorbar(points, ax=ax, label="score")
    ax.set_xlabel("stigmator x")
    ax.set_ylabel("stigmator y")
    ax.set_aspect("equal", adjustable="datalim")
    if best_stigmator is not None or result is not None:  # above the axes: a search often ends on an edge point
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize="small", frameon=False)


def plot_focus_stig_path(
    ax_wd: Any,
    ax_stig: Any,
    scans: Sequence[Any],
    result: Any = None,
    curve: tuple[Sequence[float], Sequence[float]] | None = None,
    best_stigmator: Any = None,
) -> None:
    """A focus + stigmation search on two Axes: score against working distance (:func:`plot_autofocus_path`; the
    true curve is the one at the best stigmator) and the stigmator path (:func:`plot_stigmator_path`)."""
    plot_autofocus_path(ax_wd, scans, None, curve)
    if result is not None:
        best = result.best.working_distance_mm
        ax_wd.axvline(best, color="tab:red", ls="--", label=f"best: {best:.4f} mm")
        ax_wd.legend(loc="best", fontsize="small")
        ax_wd.set_title(f"focus + stigmation ({result.method}): {result.status}, {result.n_acquisitions} scans")
    plot_stigmator_path(ax_stig, scans, result, best_stigmator)


def save_focus_stig_plot(
    path: str | Path,
    result: Any,
    curve: tuple[Sequence[float], Sequence[float]] | None = None,
    best_stigmator: Any = None,
) -> Path:
    """Render :func:`plot_focus_stig_path` to a PNG file (headless), atomically."""
    return _save_figure(
        path, lambda a, b: plot_focus_stig_path(a, b, result.scans, result, curve, best_stigmator), panels=2
    )


def save_autofocus_plot(
    path: str | Path, result: Any, curve: tuple[Sequence[float], Sequence[float]] | None = None
) -> Path:
    """Render :func:`plot_autofocus_path` to a PNG file (headless), atomically."""
    return _save_figure(path, lambda ax: plot_autofocus_path(ax, result.acquisitions, result, curve))


def plot_adaptation(ax: Any, result: Any) -> None:
    """Draw a few-label adaptation (:class:`napari_sem_focus.training.adapt.AdaptResult`) on a matplotlib Axes: each
    labelled frame at (the starting model's score, your label); the adopted line or monotone curve over the whole
    scale (for ``head``, the line it was re-weighted after, dotted, and each frame's adapted score); the starting
    model as the diagonal. The title says what was adopted and the cross-validated RMSE before and after."""
    import numpy as np

    grid = np.linspace(0.0, 10.0, 201)
    ax.plot(grid, grid, "--", color="0.6", lw=1, label="current model (no change)")
    ax.plot(result.scores_before, result.labels, "o", color="tab:blue", ms=5, label="your labels")
    curve = result.remap_curve(grid)
    if curve is not None and result.regime in ("line", "monotone"):
        adopted = "adopted line" if result.regime == "line" else "adopted curve"
        ax.plot(grid, curve, "-", color="tab:red", lw=2, label=adopted)
    elif curve is not None:  # the head: its line, then each frame's own adapted score
        ax.plot(grid, curve, ":", color="tab:red", lw=1.5, label="its line (before the head)")
        ax.plot(result.scores_before, result.scores_after, "x", color="tab:red", ms=7, label="adapted (head)")
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10.2)
    ax.set_xlabel("current model's score")
    ax.set_ylabel("label / adapted score")
    if result.adopted and result.chosen_by == "bend":
        title = f"monotone: your labels keep our order (RMSE {result.cv_rmse_before:.2f} before)"
    elif result.adopted:
        title = f"{result.regime}: RMSE {result.cv_rmse_before:.2f} -> {result.cv_rmse_after:.2f} (cross-validated)"
    else:
        title = f"kept the current model (RMSE {result.cv_rmse_before:.2f}; no remap helped)"
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="x-small")


def save_adaptation_plot(path: str | Path, result: Any) -> Path:
    """Render :func:`plot_adaptation` to a PNG file (headless), atomically."""
    return _save_figure(path, lambda ax: plot_adaptation(ax, result))
