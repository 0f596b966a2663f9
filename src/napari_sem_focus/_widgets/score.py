"""The "Score stack" dock widget: choose an image layer, score every frame in a worker, plot and table the
focus curve, jump to the best frame, keep it, show the focus map, export CSV.

All computing is done by core functions (:func:`~napari_sem_focus.scoring.analysis.score_rows`,
:func:`~napari_sem_focus.scoring.report.curve_peak`, :func:`~napari_sem_focus.scoring.report.write_csv`...).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QTableWidget,
    QWidget,
)

from ..errors import CancelledError, SemFocusError
from ..focusing.live import GrowingStack
from ..scoring.focus_curve import FocusPeak
from ..scoring.infer import MODES, focus_map_step, magnification_note, model_magnification
from ..scoring.preload import load_pytorch_in_background
from ..scoring.report import curve_peak, write_csv
from .current_model import current_model
from .forms import (
    WHOLE_IMAGE,
    button_row,
    form,
    frame_on_screen,
    layer_choice,
    magnification_spin,
    region_of_interest,
    scrolled_layout,
    status_line,
)
from .jobs import start_job
from .plot import FocusPlot
from .table import fill_table

if TYPE_CHECKING:
    import napari


def series_for_layer(layer: Any) -> Any:
    """The :class:`FocusSeries` behind a napari layer: the reader's lazy series when the layer came from our
    reader or sample data, else a lazy series over ``layer.data`` (captured now)."""
    import napari

    from ..io.series import series_from_stack

    if not isinstance(layer, napari.layers.Image):
        raise SemFocusError(f"'{layer.name}' is a {type(layer).__name__} layer; choose an image layer")
    series = layer.metadata.get("focus_series")
    if series is not None:
        return series
    facts = layer.metadata.get("frame_facts")
    data = layer.data[0] if layer.multiscale else layer.data  # a pyramid: its full-resolution level
    return series_from_stack(data, rgb=bool(layer.rgb), frame_facts=facts, name=layer.name)


#: While scoring, the views are brought up to date at most this often (milliseconds); always when scoring ends.
VIEW_REFRESH_MS = 1000

#: Height of the focus plot (pixels): the axes and a three-row legend.
PLOT_HEIGHT_PX = 300

#: This long (milliseconds) after the widget is built, PyTorch starts loading in the background (once per napari
#: session, ~2 s): the first Score click then need not wait for it, and scoring's event loop never pauses while
#: libtorch loads (its ~0.35 s with Python's GIL held falls just after the widget opens).
PRELOAD_PYTORCH_MS = 1000


class ScoreStackWidget(QWidget):
    """Dock widget: score a focus series (or one image) with the learned model and classic metrics."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.model_state = current_model(viewer)
        self.rows: list[dict[str, Any]] = []
        self.results: dict[int, Any] = {}
        self.peak: FocusPeak | None = None
        self.series: Any = None
        self.layer: Any = None
        self.worker: Any = None
        self.live_layer: Any = None
        self._live_frames = GrowingStack()
        self._stop = threading.Event()
        # while a stack is scored, the plot, table and status catch up at most once per VIEW_REFRESH_MS: a redraw
        # of the focus curve costs ~60 ms of the event loop, more while the model takes every core
        self._views_timer = QTimer(self, singleShot=True, interval=VIEW_REFRESH_MS)
        self._views_timer.timeout.connect(lambda: self._update_views(growing=True))

        self.layer_box = layer_choice(viewer, "Image", "image")
        self.mag_box = magnification_spin()
        self.mag_info = Label(label="", value="")
        self.device_box = ComboBox(label="device", choices=["auto", "cpu", "cuda"])
        self.mode_box = ComboBox(
            label="mode",
            choices=list(MODES),
            tooltip="structure: mean over the tiles with specimen structure, at most 5 in 16 (default)\n"
            "center: the paper's 320x240 centre crop\ntiles: upper quartile over all tiles",
        )
        self.region_box = layer_choice(
            viewer,
            "Shapes",
            "region",
            none_text=WHOLE_IMAGE,
            tooltip="score only inside the first rectangle of a Shapes layer (every frame)",
        )
        self.weights_box = FileEdit(label="weights", mode="r", filter="*.safetensors", nullable=True)
        self.weights_edit = self.weights_box.line_edit.native  # the path as typed; empty: the bundled default
        self.weights_edit.setPlaceholderText("bundled default")
        self.weights_edit.setText(self.model_state.weights or "")
        self.weights_edit.editingFinished.connect(lambda: self.model_state.set(self.weights_edit.text()))
        self.weights_box.changed.connect(self._weights_field_changed)
        self.model_state.changed.connect(self._show_weights)
        self.metrics_check = CheckBox(label="", text="classic metrics too", value=True)
        self.form = form(self, "layer_box mag_box mag_info device_box mode_box region_box weights_box metrics_check")
        self.layer_box.changed.connect(lambda _layer: self._layer_changed())

        buttons, (self.score_button, self.live_button, self.live_microscope_button, self.cancel_button) = button_row(
            ("Score stack", self.start_scoring),
            ("Live folder…", self._choose_live_folder),
            ("Live microscope", self.start_live_microscope),
            ("Cancel", self.cancel),
            disabled=("Cancel",),
        )
        self.live_button.setToolTip(
            "watch a folder the microscope writes into: score each new frame once it is completely written"
        )
        self.live_microscope_button.setToolTip(
            "score the frames of the live acquisition of the microscope connected in the Autofocus widget"
        )
        after = ("Go to best", "Keep best", "Focus map", "Export CSV")  # enabled once there are results
        actions, (self.best_button, self.keep_button, self.map_button, self.export_button) = button_row(
            *zip(after, (self.go_to_best, self.keep_best, self.show_focus_map, self._export_dialog), strict=True),
            disabled=after,
        )
        self.status = status_line()
        self.plot = FocusPlot(on_pick=self.go_to_frame, viewer=viewer)
        self.table = QTableWidget(0, 0)
        self.table.setMinimumHeight(110)
        self.table.cellClicked.connect(lambda row, _col: self.go_to_frame(int(self.rows[row]["frame"])))

        layout = scrolled_layout(self)  # a short dock scrolls instead of squeezing the plot
        layout.addWidget(self.form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        # the plot keeps its height when the status line grows or shrinks (the table takes the difference): a new
        # size would be a full drawing of the figure, ~60-100 ms of the viewer's event loop while scoring
        self.plot.setFixedHeight(PLOT_HEIGHT_PX)
        layout.addWidget(self.plot)
        layout.addLayout(actions)
        layout.addWidget(self.table, stretch=1)

        viewer.dims.events.current_step.connect(self._dims_changed)
        self.form.reset_choices()
        self._layer_changed()
        QTimer.singleShot(PRELOAD_PYTORCH_MS, load_pytorch_in_background)

    # --- layer choice and magnification ------------------------------------------------------------------
    def selected_layer(self) -> Any:
        return self.layer_box.value

    def _layer_changed(self) -> None:
        layer = self.selected_layer()
        if layer is None:
            self.mag_info.value = ""
            return
        try:
            series = series_for_layer(layer)
        except SemFocusError as err:
            self.mag_info.value = str(err)
            return
        mag, source = model_magnification(series)
        if mag is not None:
            self.mag_box.value = mag
            self.mag_info.value = f"from {magnification_note(series, source)}"
        else:
            self.mag_info.value = "not in the metadata: set it"

    def set_weights(self, path: str | Path | None) -> None:
        """Use these weights for the next scoring (None = the bundled default), in every widget of this viewer."""
        self.model_state.set(path)
        self._show_weights(self.model_state.weights)

    def _weights(self) -> str | None:
        """The weights to score with: what the field says now (typed text counts without Enter), shared."""
        self.model_state.set(self.weights_edit.text())
        return self.model_state.weights

    def _weights_field_changed(self, value: Path | None) -> None:
        """A file chosen with the field's button (or a complete path typed) is shared at once; a half-typed path
        only when scoring starts or the field is left (:meth:`_weights`)."""
        if value is None or Path(value).is_file():
            self.model_state.set(value)

    def _show_weights(self, weights: str | None) -> None:
        if self.weights_edit.text().strip() != (weights or ""):
            self.weights_edit.setText(weights or "")

    # --- scoring ------------------------------------------------------------------------------------------
    def start_scoring(self) -> Any:
        """Score the chosen layer in a worker thread; returns the worker (None when the input is refused)."""
        from napari.utils.notifications import show_error, show_info

        from ..device import select_device
        from ..scoring.analysis import score_rows
        from ..scoring.tiles import CROP_SIZE

        layer = self.selected_layer()
        if layer is None:
            show_error("Open or choose an image layer first.")
            return None
        try:
            series = series_for_layer(layer)
            roi = region_of_interest(self.region_box.value, layer)
            if self.region_box.value is not None and roi is None:
                raise SemFocusError(f"the Shapes layer '{self.region_box.current_choice}' holds no rectangle")
            series = series.with_roi(roi, min_shape=CROP_SIZE)
        except SemFocusError as err:
            show_error(str(err))
            return None
        for note in series.notes:
            show_info(note)
        self.layer, self.series = layer, series
        self.rows, self.results, self.peak = [], {}, None
        self.table.setRowCount(0)  # a new run: its rows fill the table afresh
        weights = self._weights()
        magnification, mode = float(self.mag_box.value), self.mode_box.value
        metrics = None if self.metrics_check.value else ()
        device_name = self.device_box.value
        self._stop.clear()

        gate = self.plot.gate

        def between_frames() -> bool:  # the job's cancel check; it also waits there while the plot draws
            gate.pause_if_asked(self._stop.is_set)
            return self._stop.is_set()

        def job() -> Any:  # widget values were read above: the worker never touches Qt
            # the device is chosen here, in the worker: the first choice imports torch (1.5 s), which would freeze
            # the viewer if done on the click; an unusable device ends the job with its message
            device = str(select_device(device_name))
            gate.job_running.set()
            try:
                yield from score_rows(
                    series, weights, magnification, mode, device, metrics=metrics, should_stop=between_frames
                )
            except CancelledError:  # the user's Cancel: the frames scored so far stay, no error
                return
            finally:
                gate.job_running.clear()

        progress = {"total": len(series), "desc": "Scoring frames"}
        return self._start(job, "scoring", f"scoring {len(series)} frame(s)…", self._on_result, progress)

    def _start(self, job: Any, what: str, message: str, yielded: Any, progress: dict | None = None) -> Any:
        """Run a scoring or live job (:func:`.jobs.start_job`) with this widget's buttons and status line."""
        buttons = [self.score_button, self.live_button, self.live_microscope_button]
        self.worker = start_job(job, what, message, self, buttons, yielded, None, self._on_finished, progress)
        return self.worker

    def _choose_live_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder the microscope writes frames into")
        if folder:
            self.start_live(folder)

    def start_live(self, folder: str | Path, **watch: Any) -> Any:
        """Live mode: watch ``folder`` and score each new, completely written frame in a worker
        (:func:`napari_sem_focus.focusing.live.iter_live_scores`; ``watch`` takes its options); the frames grow a layer
        'live: <folder>', the plot and table the rows; *Cancel* stops watching. Returns the worker."""

        from ..device import select_device
        from ..focusing.live import iter_live_scores

        folder = Path(folder)
        self.layer, self.series, self.live_layer, self._live_frames = None, None, None, GrowingStack()
        self.rows, self.results, self.peak = [], {}, None
        self.table.setRowCount(0)  # a new run: its rows fill the table afresh
        weights = self._weights()
        fallback, mode, device_name = float(self.mag_box.value), self.mode_box.value, self.device_box.value
        self._stop.clear()

        def job() -> Any:  # widget values were read above: the worker never touches Qt
            device = str(select_device(device_name))  # in the worker (see start_scoring)
            yield from iter_live_scores(
                folder, None, weights, mode, device, fallback, should_stop=self._stop.is_set, **watch
            )

        message = f"watching {folder} for new frames… (Cancel stops)"
        return self._start(job, "live scoring", message, lambda live: self._on_live_frame(live, folder))

    def start_live_microscope(self, **live: Any) -> Any:
        """Live mode on the microscope connected in the Autofocus widget: its live acquisition (started if it is
        not running) scored frame by frame in a worker (:func:`napari_sem_focus.focusing.microscopes.fibsem_sem.
        iter_live_microscope_scores`; ``live`` takes its options), into a layer, the plot and the table; *Cancel*
        stops. Returns the worker, or None when no microscope is connected."""
        from napari.utils.notifications import show_warning

        from ..device import select_device
        from .current_microscope import current_microscope

        connected = current_microscope(self.viewer)
        if connected.microscope is None:
            show_warning("no microscope connected: connect one in Plugins ▸ SEM Focus ▸ Autofocus first")
            return None
        from ..focusing.microscopes.fibsem_sem import iter_live_microscope_scores

        microscope, name = connected.microscope, Path(connected.name or "microscope")
        self.layer, self.series, self.live_layer, self._live_frames = None, None, None, GrowingStack()
        self.rows, self.results, self.peak = [], {}, None
        self.table.setRowCount(0)
        weights = self._weights()
        fallback, mode, device_name = float(self.mag_box.value), self.mode_box.value, self.device_box.value
        self._stop.clear()

        def job() -> Any:  # widget values were read above: the worker never touches Qt
            device = str(select_device(device_name))
            yield from iter_live_microscope_scores(
                microscope, fallback, weights, mode, device, should_stop=self._stop.is_set, **live
            )

        message = f"scoring the live frames of {name}… (Cancel stops)"
        return self._start(job, "live scoring", message, lambda frame: self._on_live_frame(frame, name))

    def _on_live_frame(self, live: Any, folder: Path) -> None:
        from napari.utils.notifications import show_warning

        if live.error is not None:
            show_warning(live.error)
            return
        if not self._live_frames.append(live.image):
            show_warning(f"'{live.path.name}' has another size than the first frame: scored, not shown")
        elif self.live_layer is None or self.live_layer not in self.viewer.layers:
            self.live_layer = self.viewer.add_image(self._live_frames.array, name=f"live: {folder.name}")
        else:
            self.live_layer.data = self._live_frames.array
        row = live.row()
        self.rows.append(row)
        self.results[row["frame"]] = live.score
        self._update_views(growing=True)  # the views are drawn afresh when watching stops
        self.status.setText(self.status.text() + f"\nlive: {len(self.rows)} frame(s) from {folder}")

    def cancel(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.quit()

    def _on_result(self, item: tuple[dict[str, Any], Any]) -> None:
        row, result = item
        self.rows.append(row)
        self.results[row["frame"]] = result
        if not self._views_timer.isActive():
            self._views_timer.start()

    def _on_finished(self) -> None:
        self._views_timer.stop()
        done = len(self.rows)
        total = len(self.series) if self.series is not None else 0
        if done < total:
            self.status.setText(f"stopped after {done} of {total} frames")
        self._update_views()

    def _update_views(self, growing: bool = False) -> None:
        """Plot, status line and table from the rows so far (``growing``: more are coming)."""
        from ..scoring.analysis import metric_columns, score_summary

        if not self.rows:
            return
        self.peak, unit = curve_peak(self.rows, "score")
        metrics = metric_columns(self.rows)
        frames = len(self.series) if self.series is not None else None  # a watched folder: not known
        self.plot.set_data(self.rows, self.peak, metrics, growing, frames_expected=frames)
        best = self.rows[self.peak.index]
        region = self.series is not None and self.series.roi is not None
        if len(self.rows) == 1 and (self.series is None or len(self.series) == 1):
            text = score_summary(best, region)
        else:
            text = (
                f"best frame {best['frame']}: {score_summary(best, region)}\nfitted best focus "
                f"{self.peak.position:.5g} ± {self.peak.position_sigma:.2g} {unit}"
            )
            if warning := self.peak.warning():
                text += f"\nwarning: {warning}"
        blind = [r["frame"] for r in self.rows if r.get("note")]
        if blind and len(self.rows) > 1:
            text += f"\nno structure in the scored region of frame(s) {', '.join(map(str, blind[:10]))}"
            text += "…" if len(blind) > 10 else ""
        if self.series is not None and self.series.roi is not None:
            x, y, w, h = self.series.roi
            text += f"\nregion: x {x}, y {y}, {w}x{h} px"
        self.status.setText(text)
        self._fill_table(["spread", "structure", "note", *metrics])
        for b in (self.best_button, self.keep_button, self.map_button, self.export_button):
            b.setEnabled(True)

    def _fill_table(self, extra: list[str]) -> None:
        columns = ["frame", "working_distance_mm", "score", *extra]
        columns = [c for c in columns if any(r.get(c) is not None for r in self.rows) or c == "score"]
        headers = [{"working_distance_mm": "WD (mm)"}.get(c, c) for c in columns]

        def text(value: Any) -> str:
            return "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))

        shown = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        unchanged = self.table.rowCount() if shown == headers else 0  # within a run rows are only appended
        cells = [[text(row.get(key)) for key in columns] for row in self.rows]
        fill_table(self.table, headers, cells, self.peak.index if self.peak is not None else None, unchanged)

    # --- actions ------------------------------------------------------------------------------------------
    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's first (focus) axis to ``frame``."""
        if self.layer is not None and self.layer.ndim - (1 if self.layer.rgb else 0) >= 3:
            self.viewer.dims.set_current_step(0, int(frame))

    def go_to_best(self) -> None:
        if self.peak is not None:
            self.go_to_frame(int(self.rows[self.peak.index]["frame"]))

    def keep_best(self) -> Any:
        """Add the best frame as a new image layer."""
        if self.peak is None or self.series is None:
            return None
        frame = int(self.rows[self.peak.index]["frame"])
        scale = tuple(self.layer.scale[-2:]) if self.layer is not None else (1.0, 1.0)
        return self.viewer.add_image(
            self.series.raw_frame(frame), name=f"{self.layer.name} best (frame {frame})", scale=scale
        )

    def current_frame(self) -> int:
        return frame_on_screen(self.viewer, self.layer)

    def show_focus_map(self) -> Any:
        """Per-tile scores of the current frame as a semi-transparent layer over the image."""
        result = self.results.get(self.current_frame())
        if result is None or self.series is None:
            return None
        step = focus_map_step(self.series.scored_shape)  # a giant frame's map at a coarser grid
        fmap = result.focus_map(self.series.scored_shape, step)
        name = f"{self.layer.name} focus map"
        pixel = tuple(self.layer.scale[-2:])
        rows, cols = self.series.scored_region  # the map starts at the region's corner
        origin = (rows.start + (step - 1) / 2, cols.start + (step - 1) / 2)  # the first block's centre
        translate = tuple(float(t) + o * s for t, o, s in zip(self.layer.translate[-2:], origin, pixel, strict=True))
        scale = tuple(s * step for s in pixel)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = fmap
            self.viewer.layers[name].translate = translate
            return self.viewer.layers[name]
        return self.viewer.add_image(
            fmap,
            name=name,
            colormap="turbo",
            contrast_limits=(0, 10),
            opacity=0.35,
            scale=scale,
            translate=translate,
            units=tuple(self.layer.units[-2:]),  # the image's (nm from the reader): napari warns at a mismatch
            blending="additive",
        )

    def export_csv(self, path: str | Path) -> Path:
        return write_csv(path, self.rows)

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export scores", "focus_scores.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def _dims_changed(self, event: Any = None) -> None:
        if self.rows:
            self.plot.set_current_frame(self.current_frame())
