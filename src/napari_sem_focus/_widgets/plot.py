"""Docked matplotlib plots that follow napari's theme (napari-matplotlib's pattern): :class:`ThemedFigure`, the
base of both plots, and :class:`FocusPlot`, score vs focus step with one draw(); click a point to jump to that
frame; the current frame is marked as the dims slider moves. While a stack is being scored the focus curve is
redrawn by blitting (matplotlib's "faster rendering by using blitting"): axes, ticks and legend are drawn once and
only the curves are drawn again onto them, ~5 ms instead of ~60-100 ms of the viewer's event loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..scoring.focus_curve import FocusPeak
from ..scoring.report import focus_positions, plot_focus_curve
from .jobs import DrawingGate

#: Fraction of the x span left free on each side of a growing curve's axes (matplotlib's default margin).
X_MARGIN = 0.05

#: A full drawing of the focus plot waits this long (milliseconds) after its curves were built.
FULL_DRAW_DELAY_MS = 20


def theme_colours(theme_name: str | None) -> dict[str, str]:
    """Background and text colours (hex) of a napari theme; napari's dark theme when it is unknown."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_name or "dark")
        return {"background": theme.background.as_hex(), "text": theme.text.as_hex()}
    except (ImportError, KeyError, ValueError):
        return {"background": "#262930", "text": "#f0f1f2"}


class ThemedFigure(QWidget):
    """A matplotlib figure in a dock that takes the viewer's theme colours and follows theme changes.

    Subclasses (or owners) draw on ``axes`` and call :meth:`show_drawing`, which colours the figure, then draws;
    ``redraw`` (default :meth:`show_drawing`) is what a theme change calls.
    """

    def __init__(
        self,
        viewer: Any = None,
        figsize: tuple[float, float] = (5, 3.6),
        min_height: int = 320,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.viewer = viewer
        self.figure = Figure(figsize=figsize, dpi=90, constrained_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(min_height)
        self.axes = self.figure.add_subplot()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.colours = theme_colours(getattr(viewer, "theme", None))
        self.redraw: Callable[[], None] = self.show_drawing
        if viewer is not None:
            viewer.events.theme.connect(self._theme_changed)

    def _theme_changed(self, event: Any = None) -> None:
        self.colours = theme_colours(getattr(self.viewer, "theme", None))
        self.redraw()

    def show_drawing(self) -> None:
        """Colour the figure with the theme (:meth:`colour_figure`) and draw it."""
        self.colour_figure()
        self.canvas.draw_idle()

    def colour_figure(self) -> None:
        """Colour the figure with the theme: background, axes, ticks, labels, grid, legends."""
        bg, fg = self.colours["background"], self.colours["text"]
        self.figure.set_facecolor(bg)
        for ax in self.figure.axes:
            ax.set_facecolor(bg)
            # the grid's colour as a tick parameter: asking the axes for their grid lines would make every tick
            # (a third of a full drawing's time)
            ax.tick_params(colors=fg, grid_color=fg, which="both")
            for spine in ax.spines.values():
                spine.set_color(fg)
            for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
                text.set_color(fg)
        legends = [ax.get_legend() for ax in self.figure.axes] + list(self.figure.legends)
        for legend in filter(None, legends):
            legend.get_frame().set_facecolor(bg)
            legend.get_frame().set_edgecolor(fg)
            for text in legend.get_texts():
                text.set_color(fg)


class FocusPlot(ThemedFigure):
    """Score-vs-focus plot. ``on_pick(frame)`` is called when the user clicks a point."""

    def __init__(self, on_pick: Callable[[int], None] | None = None, viewer: Any = None, parent: QWidget | None = None):
        # 280 px: the axes and a three-row legend; small enough that the whole dock fits a 1080p screen's height
        super().__init__(viewer, min_height=280, parent=parent)
        self.rows: list[dict[str, Any]] = []
        self.peak: FocusPeak | None = None
        self.extra_keys: list[str] = []
        self.current_frame: int | None = None
        self.on_pick = on_pick
        # while growing: the curves' artists (drawn by blitting), the figure without them, the legend's labels and
        # the number of positions the x-axis is laid out for
        self.growing = False
        self.frames_expected: int | None = None
        self._curves: list[Any] = []
        self._laid_out = False  # the growing run's axes, ticks and legend are drawn (or about to be)
        self._background: Any = None
        self._legend_labels: list[str] = []
        self._solved_layout: tuple[Any, ...] | None = None  # (legend labels, canvas size) of the last layout solved
        self.gate = DrawingGate()  # full drawings take turns with a running job (its owner connects the job)
        self._deferred_since: float | None = None
        self.redraw = self._draw_afresh
        self.draw()
        self.canvas.mpl_connect("button_press_event", self._clicked)
        self.canvas.mpl_connect("draw_event", self._on_canvas_drawn)
        # a new size is laid out afresh (before the drawing the resize asks for)
        self.canvas.mpl_connect("resize_event", lambda _event: self.figure.set_layout_engine("constrained"))

    def set_data(
        self,
        rows: list[dict[str, Any]],
        peak: FocusPeak | None,
        extra_keys: list[str],
        growing: bool = False,
        frames_expected: int | None = None,
    ) -> None:
        """Plot ``rows``. ``growing``: more rows are coming (a stack being scored or a folder watched): the axes,
        ticks and legend stay as drawn and only the curves are redrawn onto them; the x-axis is laid out for
        ``frames_expected`` frames when the positions are frame numbers (else for the positions so far) and widened
        (drawn afresh) when a row falls outside it. The last call (``growing`` False) draws everything afresh."""
        self.rows, self.peak, self.extra_keys = rows, peak, extra_keys
        self.growing, self.frames_expected = growing, frames_expected
        self.draw()

    def set_current_frame(self, frame: int | None) -> None:
        if frame != self.current_frame:
            self.current_frame = frame
            self.draw()

    def _draw_afresh(self) -> None:
        """A theme change: everything is drawn again, also while growing."""
        self._laid_out = False
        self.draw()

    def draw(self) -> None:
        if self.growing and self.rows:
            self._draw_growing()
            return
        self._curves, self._background, self._laid_out = [], None, False
        self.axes.clear()
        for legend in list(self.figure.legends):
            legend.remove()
        if self.rows:
            self._plot_curves()
            self._choose_layout()
        else:
            self._legend_labels = []
            self.figure.set_layout_engine("constrained")
            self.axes.text(
                0.5,
                0.5,
                "Score a stack to see its focus curve",
                ha="center",
                va="center",
                transform=self.axes.transAxes,
                color="0.5",
            )
            self.axes.set_axis_off()
        self._draw_soon()

    def _draw_soon(self) -> None:
        """Draw the whole figure in turns of the event loop of their own, after the viewer's events that waited
        while the curves were built: the layout (when it has to be solved, ~35 ms), then the drawing (~45 ms)."""
        self.colour_figure()
        self.gate.request()
        QTimer.singleShot(FULL_DRAW_DELAY_MS, self._solve_layout_then_draw)

    def _solve_layout_then_draw(self) -> None:
        now = time.monotonic()
        if not self.gate.may_draw():  # the job is mid-batch: draw when it waits (at most gate.max_wait_s later)
            self._deferred_since = self._deferred_since or now
            if now - self._deferred_since < self.gate.max_wait_s:
                QTimer.singleShot(5, self._solve_layout_then_draw)
                return
        self._deferred_since = None
        engine = self.figure.get_layout_engine()
        if isinstance(engine, ConstrainedLayoutEngine):
            engine.execute(self.figure)
            self._solved_layout = self._layout_key()
            self.figure.set_layout_engine("none")
            QTimer.singleShot(FULL_DRAW_DELAY_MS, self.canvas.draw_idle)
        else:
            self.canvas.draw_idle()

    def _plot_curves(self) -> list[Any]:
        """Draw the rows' curves onto the axes and the legend below them; returns the artists it added."""
        before = set(self.axes.get_children())
        plot_focus_curve(self.axes, self.rows, "score", self.peak, self.extra_keys, self.current_frame)
        handles, labels = self.axes.get_legend_handles_labels()
        self.axes.get_legend().remove()
        labels = [label.replace(" (scaled)", "").replace("_", " ") for label in labels]
        if labels != self._legend_labels or not self.figure.legends:
            for legend in list(self.figure.legends):
                legend.remove()
            self.figure.legend(handles, labels, loc="outside lower center", fontsize="xx-small", ncols=2, frameon=False)
            self._legend_labels = labels
        return [a for a in self.axes.get_children() if a not in before]

    def _x_span(self) -> tuple[float, float]:
        """The x range a growing curve's axes are laid out for: all expected frames, or the positions so far."""
        xs, unit = focus_positions(self.rows)
        lo, hi = min(xs), max(xs)
        if unit == "frame" and self.frames_expected:
            lo, hi = min(lo, 0.0), max(hi, self.frames_expected - 1.0)
        return lo, hi

    def _draw_growing(self) -> None:
        """Redraw the curves onto the figure drawn without them (blitting); lay the figure out afresh first when
        there is none yet, the legend changed or a position fell outside the x-axis."""
        if not self._laid_out:  # the first drawing of a run: nothing of an earlier one stays
            self.axes.clear()
            self._curves, self._legend_labels = [], []
        for artist in self._curves:
            artist.remove()
        labels_before = list(self._legend_labels)
        self._curves = self._plot_curves()
        for artist in self._curves:
            artist.set_animated(True)  # left out of the figure's own drawing: they are blitted onto it
        lo, hi = self._x_span()
        left, right = self.axes.get_xlim()
        if not self._laid_out or self._legend_labels != labels_before or lo < left or hi > right:
            width = (hi - lo) or 1.0
            if self._laid_out:  # widening while the positions grow: room for as many again
                hi += width if hi > right else 0.0
                lo -= width if lo < left else 0.0
            self.axes.set_xlim(lo - X_MARGIN * width, hi + X_MARGIN * width)
            self._choose_layout()
            self._laid_out, self._background = True, None
            self._draw_soon()  # its draw event takes the background and draws the curves onto it
            return
        if self._background is None:  # the full drawing is still to come: it draws the latest curves
            return
        self.canvas.restore_region(self._background)
        self._draw_curves()
        self.canvas.blit(self.figure.bbox)

    def _draw_curves(self) -> None:
        for artist in sorted(self._curves, key=lambda a: a.get_zorder()):
            self.figure.draw_artist(artist)

    def _layout_key(self) -> tuple[Any, ...]:
        return (tuple(self._legend_labels), self.canvas.get_width_height())

    def _choose_layout(self) -> None:
        """Solve the constrained layout only when the legend or the canvas size changed since it was last solved
        and drawn (solving it is a third of a full drawing); else the axes stay where they are."""
        same = self._layout_key() == self._solved_layout
        self.figure.set_layout_engine("none" if same else "constrained")

    def _on_canvas_drawn(self, event: Any) -> None:
        """After every full drawing: remember the layout solved; for a growing plot (also after a resize) keep the
        drawing as the background and draw the curves onto it."""
        self.gate.done()
        if isinstance(self.figure.get_layout_engine(), ConstrainedLayoutEngine):
            self._solved_layout = self._layout_key()
        if self.growing and self._curves:
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
            self._draw_curves()

    def frame_at(self, x: float) -> int | None:
        """The frame whose focus position is closest to ``x`` (data coordinates)."""
        if not self.rows:
            return None
        xs, _ = focus_positions(self.rows)
        return min(range(len(xs)), key=lambda i: abs(xs[i] - x))

    def _clicked(self, event: Any) -> None:
        if event.inaxes is not self.axes or event.xdata is None:
            return
        frame = self.frame_at(event.xdata)
        if frame is not None and self.on_pick is not None:
            self.on_pick(self.rows[frame]["frame"])
