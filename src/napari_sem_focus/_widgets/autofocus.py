"""The Autofocus widget: the closed-loop search (:mod:`napari_sem_focus.autofocus`) on the virtual SEM, live.

Each scan is added to the layer 'autofocus scans' and drawn on the plot (score against working distance, over the
virtual SEM's true score curve) as it arrives; the result (status, best working distance, the true defocus the
search did not see) goes to the status line. All the logic is the core's: this widget reads its form, runs
``iter_autofocus`` in a worker and shows what it yields.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QWidget

from ..autofocus import SCORERS, STRATEGIES
from .forms import button_row, form, magnification_spin, scrolled_layout, status_line
from .jobs import start_job
from .plot import ThemedFigure

if TYPE_CHECKING:
    import napari


class AutofocusWidget(QWidget):
    """Run an autofocus search on the virtual SEM and watch it, scan by scan."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from ..simulate import TRAINING_FAMILIES

        self.viewer = viewer
        self.worker: Any = None
        self.sem: Any = None
        self.result: Any = None
        self.scans: list[Any] = []
        self.layer: Any = None
        self._curve: tuple[list[float], list[float]] | None = None  # the virtual SEM's true score, once per run
        self._stop = threading.Event()

        self.specimen_box = ComboBox(label="specimen", choices=list(TRAINING_FAMILIES))
        self.mag_box = magnification_spin(low=200, high=100_000)
        self.dose_box = FloatSpinBox(label="dose (e/px)", value=200, min=1, max=10_000)
        self.offset_box = FloatSpinBox(label="start from focus (µm)", value=40, min=-2000, max=2000)
        self.strategy_box = ComboBox(label="strategy", choices=list(STRATEGIES))
        self.scorer_box = ComboBox(label="score", choices=list(SCORERS))
        self.max_box = SpinBox(label="most scans", value=12, min=3, max=100)
        self.form = form(self, "specimen_box mag_box dose_box offset_box strategy_box scorer_box max_box")

        buttons, (self.run_button, self.cancel_button) = button_row(
            ("Run autofocus", self.start), ("Cancel", self.cancel), disabled=("Cancel",)
        )
        self.status = status_line("The virtual SEM hides its focus; the search finds it from the images alone.")
        self.plot = ThemedFigure(viewer)
        self.plot.redraw = self._draw

        layout = scrolled_layout(self)  # a short dock scrolls instead of squeezing the plot
        layout.addWidget(self.form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)

    def start(self) -> Any:
        """Start the search in a worker (the form is read here); returns the worker."""

        from ..autofocus import iter_autofocus, make_scorer
        from ..simulate.frame import FrameParams
        from ..simulate.virtual_sem import VirtualSEM

        mag = float(self.mag_box.value)
        beam = FrameParams(family=self.specimen_box.value, magnification=mag, electrons_per_px=self.dose_box.value)
        self.sem = VirtualSEM(beam, true_wd_mm=5.0)
        start, range_um = self.sem.search_setup(float(self.offset_box.value))
        self._curve = self.sem.true_curve(start - range_um * 1e-3, start + range_um * 1e-3)
        scorer_name, strategy, most = self.scorer_box.value, self.strategy_box.value, self.max_box.value
        self.scans, self.result, self.layer = [], None, None
        self._stop.clear()
        sem, stop = self.sem, self._stop

        def job() -> Any:  # runs in the worker: no Qt here
            scorer = make_scorer(scorer_name, mag)
            result = yield from iter_autofocus(
                sem, start, scorer, strategy, range_um, None, most, should_stop=stop.is_set
            )
            return result

        message = f"searching ±{range_um:.1f} µm around the start…"
        self.worker = start_job(job, "autofocus", message, self, [self.run_button], self._on_scan, self._on_result)
        return self.worker

    def cancel(self) -> None:
        self._stop.set()

    def _on_scan(self, scan: Any) -> None:
        self.scans.append(scan)
        stack = np.stack([s.image for s in self.scans])
        if self.layer is None or self.layer not in self.viewer.layers:
            self.layer = self.viewer.add_image(stack, name="autofocus scans")
        else:
            self.layer.data = stack
        self.viewer.dims.set_current_step(0, len(self.scans) - 1)
        self.status.setText(f"scan {len(self.scans)}: WD {scan.working_distance_mm:.5f} mm, score {scan.score:.2f}")
        self._draw()

    def _on_result(self, result: Any) -> None:
        self.result = result
        defocus = self.sem.defocus_um(result.best_wd_mm)
        self.status.setText(
            f"{result.summary()}\ntrue defocus at the end: {defocus:+.2f} µm "
            f"(depth of field ±{self.sem.depth_of_field_um():.2f} µm)"
        )
        self._draw()

    def _draw(self) -> None:
        from ..report import plot_autofocus_path

        self.plot.axes.clear()
        if self.scans:
            plot_autofocus_path(self.plot.axes, self.scans, self.result, self._curve)
        self.plot.show_drawing()
