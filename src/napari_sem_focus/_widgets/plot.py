"""Docked matplotlib plots that follow napari's theme (napari-matplotlib's pattern): :class:`ThemedFigure`, the
base of both plots, and :class:`FocusPlot`, score vs focus step with one draw(); click a point to jump to that
frame; the current frame is marked as the dims slider moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..focus_curve import FocusPeak
from ..report import focus_positions, plot_focus_curve


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
        """Colour the figure with the theme (background, axes, ticks, labels, grid, legends) and draw it."""
        bg, fg = self.colours["background"], self.colours["text"]
        self.figure.set_facecolor(bg)
        for ax in self.figure.axes:
            ax.set_facecolor(bg)
            ax.tick_params(colors=fg, which="both")
            for spine in ax.spines.values():
                spine.set_color(fg)
            for text in (ax.xaxis.label, ax.yaxis.label, ax.title):
                text.set_color(fg)
            for line in ax.get_xgridlines() + ax.get_ygridlines():
                line.set_color(fg)
        legends = [ax.get_legend() for ax in self.figure.axes] + list(self.figure.legends)
        for legend in filter(None, legends):
            legend.get_frame().set_facecolor(bg)
            legend.get_frame().set_edgecolor(fg)
            for text in legend.get_texts():
                text.set_color(fg)
        self.canvas.draw_idle()


class FocusPlot(ThemedFigure):
    """Score-vs-focus plot. ``on_pick(frame)`` is called when the user clicks a point."""

    def __init__(self, on_pick: Callable[[int], None] | None = None, viewer: Any = None, parent: QWidget | None = None):
        super().__init__(viewer, parent=parent)
        self.rows: list[dict[str, Any]] = []
        self.peak: FocusPeak | None = None
        self.extra_keys: list[str] = []
        self.current_frame: int | None = None
        self.on_pick = on_pick
        self.redraw = self.draw
        self.draw()
        self.canvas.mpl_connect("button_press_event", self._clicked)

    def set_data(
        self, rows: list[dict[str, Any]], peak: FocusPeak | None, extra_keys: list[str], growing: bool = False
    ) -> None:
        """Plot ``rows``. ``growing``: more rows are coming (a stack being scored): the layout is not solved again
        (a third of a redraw), the axes keep the margins of the last full drawing."""
        self.rows, self.peak, self.extra_keys = rows, peak, extra_keys
        self.figure.set_layout_engine("none" if growing and self.figure.legends else "constrained")
        self.draw()

    def set_current_frame(self, frame: int | None) -> None:
        if frame != self.current_frame:
            self.current_frame = frame
            self.draw()

    def draw(self) -> None:
        self.axes.clear()
        for legend in list(self.figure.legends):
            legend.remove()
        if self.rows:
            plot_focus_curve(self.axes, self.rows, "score", self.peak, self.extra_keys, self.current_frame)
            handles, labels = self.axes.get_legend_handles_labels()
            self.axes.get_legend().remove()
            labels = [label.replace(" (scaled)", "").replace("_", " ") for label in labels]
            self.figure.legend(handles, labels, loc="outside lower center", fontsize="xx-small", ncols=2, frameon=False)
        else:
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
        self.show_drawing()

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
