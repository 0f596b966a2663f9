"""A docked matplotlib plot of score vs focus step (napari-matplotlib style): one draw(), theme colours,
click a point to jump to that frame, the current frame marked as the dims slider moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..focus_curve import FocusPeak
from ..report import focus_positions, plot_focus_curve


class FocusPlot(QWidget):
    """Score-vs-focus plot. ``on_pick(frame)`` is called when the user clicks a point."""

    def __init__(self, on_pick: Callable[[int], None] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.figure = Figure(figsize=(5, 3.6), dpi=90, constrained_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(320)
        self.axes = self.figure.add_subplot()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.rows: list[dict[str, Any]] = []
        self.peak: FocusPeak | None = None
        self.extra_keys: list[str] = []
        self.current_frame: int | None = None
        self.on_pick = on_pick
        self.canvas.mpl_connect("button_press_event", self._clicked)

    def set_data(self, rows: list[dict[str, Any]], peak: FocusPeak | None, extra_keys: list[str]) -> None:
        self.rows, self.peak, self.extra_keys = rows, peak, extra_keys
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
        self.canvas.draw_idle()

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
