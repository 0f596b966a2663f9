"""The Autofocus widget: the closed-loop search (:mod:`napari_sem_focus.focusing.autofocus`) on the virtual SEM or on a
microscope through fibsem-os (:mod:`napari_sem_focus.focusing.microscopes.fibsem_sem`), live.

*microscope* chooses the virtual SEM, fibsem's demo (its images drawn by the virtual SEM) or a Thermo Fisher /
TESCAN instrument: *Connect* connects in the background, *Run autofocus* searches from the working distance the
microscope has now, *Cancel* stops and puts the start back, *Restore start* goes back after a search that ended.
Each scan is added to the layer 'autofocus scans' and drawn on the plot (score against working distance, over the
virtual SEM's true score when it is known) as it arrives. All the logic is the core's: this widget reads its form,
runs core generators in workers and shows what they yield.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtWidgets import QWidget

from ..focusing.autofocus import SCORERS, STRATEGIES
from .current_microscope import current_microscope
from .forms import button_row, form, magnification_spin, scrolled_layout, status_line
from .jobs import start_job
from .plot import ThemedFigure

if TYPE_CHECKING:
    import napari

VIRTUAL = "virtual SEM"
#: The microscope choices: the simulator's, then fibsem-os's manufacturers.
MICROSCOPES = (VIRTUAL, "fibsem: Demo", "fibsem: Thermo", "fibsem: Tescan")
#: Probe-frame sizes offered (fibsem's own autofocus uses 768x512).
PROBE_SIZES = ("384x256", "768x512", "1536x1024")

#: Orientation (°) of the simulated astigmatism (virtual SEM and the demo).
ASTIG_ANGLE_DEG = 30.0

#: The form's fields, by which microscope they serve.
VIRTUAL_FIELDS = ("specimen_box", "mag_box", "dose_box", "offset_box", "astig_box")
CONNECTION_FIELDS = ("ip_box", "config_box")
PROBE_FIELDS = ("probe_box", "dwell_box", "hfw_box", "range_box")


class AutofocusWidget(QWidget):
    """Run an autofocus search on the virtual SEM or a fibsem-os microscope and watch it, scan by scan."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        from ..simulate import TRAINING_FAMILIES

        self.viewer = viewer
        self.worker: Any = None
        self.sem: Any = None  # the virtual SEM of a simulated search
        self.truth: Any = None  # the virtual SEM behind the search's frames, when known (for the true defocus)
        self.adapter: Any = None  # the fibsem adapter of the last microscope search
        self.result: Any = None
        self.scans: list[Any] = []
        self.layer: Any = None
        self._curve: tuple[list[float], list[float]] | None = None  # the true score, once per run
        self._stop = threading.Event()
        self.connected = current_microscope(viewer)

        self.microscope_box = ComboBox(label="microscope", choices=list(MICROSCOPES))
        self.ip_box = LineEdit(label="IP address", tooltip="the microscope PC (empty: the configuration's)")
        self.config_box = FileEdit(label="fibsem config", mode="r", filter="*.yaml", nullable=True)
        self.specimen_box = ComboBox(label="specimen", choices=list(TRAINING_FAMILIES))
        self.mag_box = magnification_spin(low=200, high=100_000)
        self.dose_box = FloatSpinBox(label="dose (e/px)", value=200, min=1, max=10_000)
        self.offset_box = FloatSpinBox(label="start from focus (µm)", value=40, min=-2000, max=2000)
        self.astig_box = FloatSpinBox(
            label="astigmatism (µm)",
            value=0,
            min=0,
            max=2000,
            tooltip="focal-line separation of the simulated beam; the stigmators' gain and axes stay hidden",
        )
        self.probe_box = ComboBox(label="probe frame (px)", choices=list(PROBE_SIZES), value="768x512")
        self.dwell_box = FloatSpinBox(label="dwell (µs)", value=0.5, min=0.025, max=100, step=0.1)
        self.hfw_box = FloatSpinBox(
            label="field width (µm)",
            value=0,
            min=0,
            max=5000,
            tooltip="0: the microscope's own (the demo: the field width that gives the magnification above)",
        )
        self.hfw_box.native.setSpecialValueText("the microscope's own")  # shown at 0
        self.range_box = FloatSpinBox(label="search ± (µm)", value=25, min=1, max=2000)
        self.strategy_box = ComboBox(label="strategy", choices=list(STRATEGIES))
        self.scorer_box = ComboBox(label="score", choices=list(SCORERS))
        self.max_box = SpinBox(label="most scans", value=12, min=3, max=100)
        self.stigmate_box = CheckBox(text="stigmate too", tooltip="set both stigmators as well as the focus")
        self.stig_range_box = FloatSpinBox(label="stigmators ± (units)", value=1.0, min=0.001, max=1000, step=0.1)
        fields = ("microscope_box", *CONNECTION_FIELDS, *VIRTUAL_FIELDS, *PROBE_FIELDS)
        search_fields = ("strategy_box", "scorer_box", "max_box", "stigmate_box", "stig_range_box")
        self.form = form(self, " ".join((*fields, *search_fields)))
        self.microscope_box.changed.connect(lambda _value: self._show_fields())
        self.stigmate_box.changed.connect(self._stigmate_changed)
        self._best_stig: tuple[float, float] | None = None  # the virtual SEM's truth, for the plot

        buttons, (self.connect_button, self.run_button, self.cancel_button, self.restore_button) = button_row(
            ("Connect", self.connect),
            ("Run autofocus", self.start),
            ("Cancel", self.cancel),
            ("Restore start", self.restore_start),
            disabled=("Cancel", "Restore start"),
        )
        self.status = status_line("The virtual SEM hides its focus; the search finds it from the images alone.")
        self.plot = ThemedFigure(viewer)
        self.plot.redraw = self._draw

        layout = scrolled_layout(self)  # a short dock scrolls instead of squeezing the plot
        layout.addWidget(self.form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        self._show_fields()

    # --- the form --------------------------------------------------------------------------------------------
    @property
    def manufacturer(self) -> str | None:
        """The fibsem manufacturer chosen ('Demo', 'Thermo', 'Tescan'), None for the virtual SEM."""
        choice = self.microscope_box.value
        return None if choice == VIRTUAL else choice.split(": ", 1)[1]

    def _show_fields(self) -> None:
        manufacturer = self.manufacturer
        shown = {
            **dict.fromkeys(VIRTUAL_FIELDS, manufacturer in (None, "Demo")),
            **dict.fromkeys(CONNECTION_FIELDS, manufacturer in ("Thermo", "Tescan")),
            **dict.fromkeys(PROBE_FIELDS, manufacturer is not None),
        }
        for name, visible in shown.items():
            getattr(self, name).visible = visible
        self.offset_box.label = "start from focus (µm)" if manufacturer is None else "focus hidden at (µm)"
        self.stig_range_box.visible = bool(self.stigmate_box.value)
        self.strategy_box.visible = not self.stigmate_box.value
        self.connect_button.setVisible(manufacturer is not None)
        self._enable_run()

    def _enable_run(self) -> None:
        """The buttons' states from what is known: Run needs a connected microscope (not the virtual SEM), Restore
        start a microscope search that left the start."""
        idle = self.worker is None or not self.worker.is_running
        ready = self.manufacturer is None or self.connected.microscope is not None
        self.run_button.setEnabled(idle and ready)
        self.connect_button.setEnabled(idle)
        moved = self.adapter is not None and self.result is not None and _left_the_start(self.result)
        self.restore_button.setEnabled(idle and moved and self.manufacturer is not None)

    def _stigmate_changed(self, on: bool) -> None:
        self.max_box.value = 24 if on else 12  # a focus + stigmation search needs more scans
        self._show_fields()

    # --- connect ---------------------------------------------------------------------------------------------
    def connect(self) -> Any:
        """Connect to the chosen fibsem microscope in a worker (the demo: showing the virtual SEM); returns it."""
        manufacturer = self.manufacturer
        if manufacturer is None:
            return None
        ip, config = self.ip_box.value.strip() or None, self.config_box.value
        config = str(config) if config and str(config) not in ("", ".") else None
        family, offset, astig = self.specimen_box.value, float(self.offset_box.value), float(self.astig_box.value)

        def job() -> Any:  # in the worker: no Qt here
            yield from ()
            if manufacturer == "Demo":
                from ..focusing.microscopes.fibsem_demo import virtual_demo_microscope
                from ..simulate.frame import FrameParams

                frame = FrameParams(family=family, astig_um=astig, astig_angle_deg=ASTIG_ANGLE_DEG)
                microscope = virtual_demo_microscope(frame, focus_offset_um=offset)
            else:
                from ..focusing.microscopes.fibsem_sem import connect

                microscope = connect(manufacturer, ip, config)
            from ..focusing.microscopes.fibsem_sem import FibsemSEM

            return microscope, FibsemSEM(microscope).working_distance_mm()

        name = f"fibsem {manufacturer}" + (f" at {ip}" if ip else "")

        def connected(answer: tuple[Any, float]) -> None:
            microscope, wd = answer
            self.connected.set(microscope, name)
            self.status.setText(f"connected to {name}: electron beam at WD {wd:.6f} mm")

        self.worker = start_job(
            job, "connecting", f"connecting to {name}…", self, self._run_buttons(), None, connected, self._enable_run
        )
        return self.worker

    def _run_buttons(self) -> list[Any]:
        return [self.connect_button, self.run_button, self.restore_button]

    # --- the search ------------------------------------------------------------------------------------------
    def start(self) -> Any:
        """Start the search in a worker (the form is read here); returns the worker."""
        self.scans, self.result, self.layer, self.truth, self._curve = [], None, None, None, None
        self._best_stig, self._stigmating = None, bool(self.stigmate_box.value)
        self._stop.clear()
        if self.manufacturer is None:
            job, message = self._virtual_job()
        else:
            job, message = self._microscope_job()
        self.worker = start_job(
            job, "autofocus", message, self, self._run_buttons(), self._on_scan, self._on_result, self._enable_run
        )
        return self.worker

    def _virtual_job(self) -> tuple[Any, str]:
        from ..focusing.autofocus import iter_autofocus, make_scorer
        from ..simulate.frame import FrameParams
        from ..simulate.virtual_sem import VirtualSEM

        mag = float(self.mag_box.value)
        beam = FrameParams(
            family=self.specimen_box.value,
            magnification=mag,
            electrons_per_px=self.dose_box.value,
            astig_um=float(self.astig_box.value),
            astig_angle_deg=ASTIG_ANGLE_DEG,
        )
        self.sem = self.truth = VirtualSEM(beam, true_wd_mm=5.0)
        start, range_um = self.sem.search_setup(float(self.offset_box.value))
        scorer_name, strategy, most = self.scorer_box.value, self.strategy_box.value, self.max_box.value
        sem, stop, stig_range = self.sem, self._stop, float(self.stig_range_box.value)
        self._set_truth_curve(start, range_um)

        def job() -> Any:  # runs in the worker: no Qt here
            scorer = make_scorer(scorer_name, mag)
            if self._stigmating:
                from ..focusing.stigmation import iter_focus_and_stigmate

                return (
                    yield from iter_focus_and_stigmate(
                        sem,
                        start,
                        sem.stigmator,
                        scorer,
                        range_um=range_um,
                        stig_range=stig_range,
                        max_acquisitions=most,
                        should_stop=stop.is_set,
                    )
                )
            return (
                yield from iter_autofocus(sem, start, scorer, strategy, range_um, None, most, should_stop=stop.is_set)
            )

        return job, f"searching ±{range_um:.1f} µm around the start…"

    def _microscope_job(self) -> tuple[Any, str]:
        from ..focusing.autofocus import make_scorer
        from ..focusing.microscopes.fibsem_sem import (
            FibsemSEM,
            ProbeSettings,
            iter_microscope_autofocus,
            parse_resolution,
        )
        from ..io.metadata import field_width_um

        microscope, demo = self.connected.microscope, self.manufacturer == "Demo"
        resolution, dwell = parse_resolution(self.probe_box.value), float(self.dwell_box.value)
        hfw = float(self.hfw_box.value) or (field_width_um(float(self.mag_box.value), resolution[0]) if demo else None)
        self.adapter = sem = FibsemSEM(microscope, ProbeSettings(resolution, dwell, hfw))
        range_um, dose = float(self.range_box.value), float(self.dose_box.value)
        scorer_name, strategy, most = self.scorer_box.value, self.strategy_box.value, self.max_box.value
        if demo:  # the demo's truth (in this process, no instrument to wait for): the virtual SEM behind its frames
            from ..focusing.microscopes.fibsem_demo import set_dose, truth

            start = sem.working_distance_mm()
            set_dose(microscope, dose, dwell)
            self.truth = truth(microscope, resolution, sem.field_width_um(), dwell)
            self._set_truth_curve(start, range_um)
        stop, stig_range = self._stop, float(self.stig_range_box.value)

        def job() -> Any:  # runs in the worker: no Qt here, and every call to the instrument
            scorer = make_scorer(scorer_name, sem.magnification)
            if self._stigmating:
                from ..focusing.microscopes.fibsem_sem import iter_microscope_focus_and_stigmate

                return (
                    yield from iter_microscope_focus_and_stigmate(
                        sem,
                        scorer,
                        range_um=range_um,
                        stig_range=stig_range,
                        max_acquisitions=most,
                        should_stop=stop.is_set,
                    )
                )
            return (
                yield from iter_microscope_autofocus(
                    sem, scorer, strategy=strategy, range_um=range_um, max_acquisitions=most, should_stop=stop.is_set
                )
            )

        return job, f"{self.connected.name}: searching ±{range_um:g} µm around its working distance…"

    def _set_truth_curve(self, start: float, range_um: float) -> None:
        """The virtual SEM's true score along the working distance (at the stigmators that cancel its astigmatism
        when stigmating): what the plot draws beneath the scans."""
        span = (start - range_um * 1e-3, start + range_um * 1e-3)
        if self._stigmating:
            self._best_stig = self.truth.best_stigmator()
            wds = [float(w) for w in np.linspace(*span, 201)]
            self._curve = (wds, [self.truth.true_score(w, self._best_stig) for w in wds])
        else:
            self._curve = self.truth.true_curve(*span)

    def cancel(self) -> None:
        self._stop.set()

    def restore_start(self) -> Any:
        """Set the microscope back to the last search's starting working distance, in a worker."""
        if self.adapter is None or self.result is None:
            return None
        from ..focusing.microscopes.fibsem_sem import is_restored

        sem, result = self.adapter, self.result
        stigmating = hasattr(result, "final")  # a focus + stigmation result: the stigmators go back too
        start = result.start.working_distance_mm if stigmating else result.start_wd_mm
        start_stig = (result.start.stig_x, result.start.stig_y) if stigmating else None

        def job() -> Any:
            yield from ()
            return sem.restore(start, start_stig)

        def done(problem: str | None) -> None:
            if is_restored(problem):  # the microscope is back where the search began
                if stigmating:
                    result.final = result.start
                else:
                    result.final_wd_mm = start
            self.status.setText(problem or f"working distance restored to the start, {start:.6f} mm")

        self.worker = start_job(job, "restoring", "restoring…", self, self._run_buttons(), None, done, self._enable_run)
        return self.worker

    # --- showing it ------------------------------------------------------------------------------------------
    def _on_scan(self, scan: Any) -> None:
        self.scans.append(scan)
        images = [s.image for s in self.scans]
        if self.layer is None or self.layer not in self.viewer.layers:
            self.layer = self.viewer.add_image(np.stack(images), name="autofocus scans")
        elif len({i.shape for i in images}) == 1:
            self.layer.data = np.stack(images)
        self.viewer.dims.set_current_step(0, len(self.scans) - 1)
        self.status.setText(f"scan {len(self.scans)}: WD {scan.working_distance_mm:.5f} mm, score {scan.score:.2f}")
        self._draw()

    def _on_result(self, result: Any) -> None:
        self.result = result
        self.status.setText(self._result_text(result))
        self._draw()

    def _result_text(self, result: Any) -> str:
        """The status line of a finished search: its summary, where the microscope is, and the truth when known."""
        text = result.summary()
        stigmating = hasattr(result, "final")
        final_wd = result.final.working_distance_mm if stigmating else result.final_wd_mm
        if self.manufacturer is not None and final_wd is not None:
            start_wd = result.start.working_distance_mm if stigmating else result.start_wd_mm
            text += f"\nthe microscope is at {final_wd:.6f} mm (started at {start_wd:.6f} mm)"
        if self.truth is not None:
            final_wd = final_wd if final_wd is not None else result.best_wd_mm
            text += f"\ntrue defocus at the end: {self.truth.defocus_um(final_wd):+.2f} µm"
            if stigmating:
                residual = self.truth.residual_astigmatism((result.final.stig_x, result.final.stig_y))[0]
                text += f", astigmatism left {residual:.2f} µm"
            text += f" (depth of field ±{self.truth.depth_of_field_um():.2f} µm)"
        return text

    def _draw(self) -> None:
        from ..scoring.report import plot_autofocus_path, plot_focus_stig_path

        figure = self.plot.figure
        figure.clear()
        if getattr(self, "_stigmating", False):
            self.plot.canvas.setMinimumHeight(600)
            ax_wd, ax_stig = figure.subplots(2, 1)
            if self.scans:
                plot_focus_stig_path(ax_wd, ax_stig, self.scans, self.result, self._curve, self._best_stig)
        else:
            ax_wd = figure.add_subplot()
            if self.scans:
                plot_autofocus_path(ax_wd, self.scans, self.result, self._curve)
        self.plot.axes = ax_wd
        self.plot.show_drawing()


def _left_the_start(result: Any) -> bool:
    """Whether a search's result left the beam elsewhere than where it started (working distance or stigmators)."""
    if hasattr(result, "final"):  # focus + stigmation
        return result.final != result.start
    return result.final_wd_mm is not None and abs(result.final_wd_mm - result.start_wd_mm) > 1e-9
