"""The "Label & fine-tune" dock widget: give frames a 0-10 focus score, keep the labels file, adapt the model to
them in a worker, compare the cross-validated RMSE before/after, then use (hot-swap) and save the new model.

Two regimes: ``adapt (few labels)`` (:func:`~napari_sem_focus.training.adapt.iter_adapt`: trunk frozen, cross-validated,
never worse than the current model; the default) and ``whole network``
(:func:`~napari_sem_focus.training.train.iter_fine_tune`, for hundreds of labels). Both run as napari ``thread_worker``
generators whose yielded events update the status and the plot; widget values are read before the worker starts.

Labelling never runs the model on the GUI thread: the table's "model" column comes from a cache, and frames not
scored yet are scored once in a worker when labelling pauses. Keyboard: with the widget open, keys 0-9 label the
current frame with that score and ``=`` labels it 10; the keys are given back (napari's previous bindings
restored) when the widget closes.
Everything it computes is a core call: :class:`~napari_sem_focus.training.label_store.LabelStore`,
:mod:`~napari_sem_focus.training.adapt`, :func:`~napari_sem_focus.training.train.iter_fine_tune`,
:func:`~napari_sem_focus.scoring.weights.save_weights`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, PushButton, SpinBox
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import CancelledError, SemFocusError
from ..training.label_store import LabelStore, default_labels_path
from .current_model import current_model
from .forms import button_row, form, frame_on_screen, layer_choice, magnification_spin, status_line
from .jobs import at_lower_priority, start_job
from .plot import ThemedFigure
from .score import series_for_layer
from .table import fill_table

if TYPE_CHECKING:
    import napari


def layer_source(layer: Any) -> tuple[str, Path | None]:
    """(label path key, data file or folder) of a layer: its file when it was opened from one, else its name."""
    path = getattr(getattr(layer, "source", None), "path", None)
    if path:
        return str(Path(path).resolve()), Path(path)
    return layer.name, None


class TrainWidget(QWidget):
    """Dock widget: label frames and fine-tune the focus model on them."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        current_model(viewer).changed.connect(self._on_model_changed)
        self.store: LabelStore | None = None
        self.worker: Any = None
        self.result: Any = None
        self.adaptation: Any = None  # the last AdaptResult (drawn), adopted or not
        self.base_weights: str | None = None
        self._stop = threading.Event()
        self.history: list[Any] = []
        self._predictions: dict[tuple[str, int, str], float | None] = {}  # (path, frame, weights) -> score
        self.prediction_worker: Any = None
        self._model_cache: dict[str, Any] = {}
        self._prediction_timer = QTimer(self)
        self._prediction_timer.setSingleShot(True)
        self._prediction_timer.setInterval(PREDICTION_DELAY_MS)
        self._prediction_timer.timeout.connect(self.update_predictions)
        self._predictions_stale = False
        self._last_draw = 0.0
        self._previous_keys: dict[str, Any] = {}

        self.layer_box = layer_choice(viewer, "Image", "image")
        self.labels_box = FileEdit(label="labels file", mode="w", filter="*.csv", nullable=True)
        self.labels_edit = self.labels_box.line_edit.native  # empty: next to the data
        self.labels_edit.setPlaceholderText("next to the data")
        self.mag_box = magnification_spin()
        self.score_box = FloatSpinBox(label="score (keys 0-9, = for 10)", value=10, min=0, max=10, step=0.5)
        self.label_button = PushButton(text="Label current frame")
        self.regime_box = ComboBox(
            label="regime",
            choices=list(REGIMES),
            tooltip="adapt: 5-20 labels, trunk frozen, cross-validated, never worse than the current model; "
            "whole network: hundreds of labels",
        )
        self.steps_box = SpinBox(label="steps (whole network)", value=200, min=1, max=100_000)
        self.lr_box = FloatSpinBox(label="learning rate (whole network)", value=1e-4, min=1e-6, max=1e-1, step=1e-5)
        self.lr_box.native.setDecimals(6)
        self.form = form(self, "layer_box labels_box mag_box score_box label_button regime_box steps_box lr_box")

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(list(TABLE_HEADERS))
        self.table.setMinimumHeight(120)
        io_row, (self.import_button, self.export_button) = button_row(
            ("Import labels…", self._import_dialog), ("Export labels…", self._export_dialog)
        )
        run_row, (self.train_button, self.cancel_button, self.use_button) = button_row(
            ("Fine-tune", self.start_fine_tune),
            ("Cancel", self.cancel),
            ("Use this model…", self._use_dialog),
            disabled=("Cancel", "Use this model…"),
        )
        self.status = status_line()
        self.plot = ThemedFigure(viewer, figsize=(4, 2.4), min_height=200)
        self.plot.redraw = self._draw_history  # a theme change redraws the curves
        self.figure, self.canvas, self.axes = self.plot.figure, self.plot.canvas, self.plot.axes

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.table)
        layout.addLayout(io_row)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)

        self.label_button.changed.connect(lambda: self.label_current(self.score_box.value))
        self.regime_box.changed.connect(self._regime_changed)
        self.labels_box.changed.connect(self._labels_file_chosen)
        self.layer_box.changed.connect(lambda _layer: self._layer_changed())
        self._bind_keys()
        self._regime_changed(self.regime_box.value)
        self.form.reset_choices()
        self._layer_changed()
        self._draw_history()

    # --- key bindings: given back when the widget closes ---------------------------------------------------
    def _bind_keys(self) -> None:
        keys = {str(k): float(k) for k in range(10)} | {"=": 10.0}
        for key, score in keys.items():
            previous = self.viewer.bind_key(key, lambda v, s=score: self.label_current(s), overwrite=True)
            self._previous_keys[key] = previous

    def release_keys(self) -> None:
        """Unbind the labelling keys and restore what they were bound to before, and stop the pending scoring of
        labelled frames (called when the widget closes)."""
        self._prediction_timer.stop()
        for key, previous in self._previous_keys.items():
            self.viewer.bind_key(key, previous, overwrite=True)
        self._previous_keys = {}

    def event(self, event: QEvent) -> bool:
        # napari closes a dock widget by taking it out of its dock (setParent(None)); Qt closes it with close().
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.release_keys()
        return super().event(event)

    def closeEvent(self, event: Any) -> None:
        self.release_keys()
        super().closeEvent(event)

    def _regime_changed(self, text: str) -> None:
        whole = text == REGIMES[1]
        self.steps_box.enabled = whole
        self.lr_box.enabled = whole

    # --- layers and the labels file ----------------------------------------------------------------------
    def selected_layer(self) -> Any:
        return self.layer_box.value

    def _layer_changed(self) -> None:
        from ..scoring.infer import model_magnification

        layer = self.selected_layer()
        if layer is None:
            return
        try:
            mag, _ = model_magnification(series_for_layer(layer))
        except SemFocusError:
            mag = None
        if mag:
            self.mag_box.value = mag
        if not self.labels_edit.text().strip():
            _, data_path = layer_source(layer)
            if data_path is not None:
                self.open_labels(default_labels_path(data_path))

    def open_labels(self, path: str | Path) -> LabelStore:
        """Use (and load, if it exists) the labels file ``path``."""
        self.labels_edit.setText(str(path))
        self.store = LabelStore(path)
        self.refresh_table()
        return self.store

    def _ensure_store(self) -> LabelStore:
        text = self.labels_edit.text().strip()
        if self.store is None or (text and Path(text) != self.store.path):
            if not text:
                raise SemFocusError("choose a labels file first (the data has no file to put it next to)")
            self.open_labels(text)
        assert self.store is not None
        return self.store

    def _labels_file_chosen(self, value: Path | None) -> None:
        """A labels file chosen with the field's button (or a complete .csv path typed) is opened at once."""
        if value is not None and Path(value).suffix.lower() == ".csv" and Path(value).parent.is_dir():
            if self.store is None or Path(value) != self.store.path:
                self.open_labels(value)

    # --- labelling ----------------------------------------------------------------------------------------
    def current_frame(self, layer: Any) -> int:
        return frame_on_screen(self.viewer, layer)

    def label_current(self, score: float) -> Any:
        """Label the current frame of the chosen layer with ``score`` (saved at once)."""
        from napari.utils.notifications import show_error

        layer = self.selected_layer()
        if layer is None:
            show_error("choose an image layer to label")
            return None
        try:
            store = self._ensure_store()
            key, _ = layer_source(layer)
            label = store.set(key, self.current_frame(layer), self.mag_box.value, score)
        except SemFocusError as err:
            show_error(str(err))
            return None
        self.score_box.value = score
        self.refresh_table()
        self.status.setText(f"frame {label.frame} labelled {label.score:g} ({len(store)} labels)")
        return label

    def _frame_loader(self) -> Any:
        """Read labelled frames: from open layers when the label names one (each layer's series built once),
        else from files."""
        from ..io.series import load_frame

        series = {}
        for layer in self.viewer.layers:
            if isinstance(layer, napari_image_type()):
                try:
                    series[layer_source(layer)[0]] = series_for_layer(layer)
                except SemFocusError:
                    continue

        def load(path: str, frame: int) -> Any:
            return series[path].frame(frame) if path in series else load_frame(Path(path), frame)

        return load

    def _weights_key(self) -> str:
        return str(self._scoring_weights() or "default")

    def predictions(self) -> list[float | None]:
        """The scoring model's score of each labelled frame as far as known (None: not scored yet or unreadable);
        never runs the model (see :meth:`update_predictions`)."""
        if self.store is None:
            return []
        weights = self._weights_key()
        return [self._predictions.get((lb.path, lb.frame, weights)) for lb in self.store.labels()]

    def update_predictions(self) -> Any:
        """Score the labelled frames the cache lacks, once each, in a worker; the table fills in as they come."""
        from napari.qt.threading import create_worker

        from ..scoring.infer import score_frames
        from ..scoring.weights import load_model

        if self.store is None:
            return None
        if self.prediction_worker is not None and self.prediction_worker.is_running:
            self._predictions_stale = True  # run again when the current one ends
            return self.prediction_worker
        weights, weights_key = self._scoring_weights(), self._weights_key()
        missing = [lb for lb in self.store.labels() if (lb.path, lb.frame, weights_key) not in self._predictions]
        if not missing:
            return None
        loader = self._frame_loader()  # built here, on the GUI thread: it reads the layers

        cache = self._model_cache

        def job() -> Any:  # a plain dict shared with the GUI thread: the model is loaded once per weights
            if cache.get("key") != weights_key:
                cache.update(key=weights_key, model=load_model(weights))
            model = cache["model"]
            for label in missing:
                try:
                    frame = loader(label.path, label.frame)
                    score = next(score_frames([frame], label.magnification, model, "structure")).score
                except (SemFocusError, OSError, ValueError):
                    score = None
                yield (label.path, label.frame, weights_key), score

        self._predictions_stale = False
        self.prediction_worker = create_worker(at_lower_priority(job))
        self.prediction_worker.yielded.connect(self._on_prediction)
        self.prediction_worker.finished.connect(self._on_predictions_finished)
        self.prediction_worker.start()
        return self.prediction_worker

    def _on_prediction(self, item: tuple[tuple[str, int, str], float | None]) -> None:
        key, score = item
        self._predictions[key] = score
        self.refresh_table(with_predictions=False)

    def _on_predictions_finished(self) -> None:
        if self._predictions_stale:
            self.update_predictions()

    def _on_model_changed(self, weights: str | None) -> None:
        """Another widget (or this one) changed the viewer's model: show that model's scores of the labels."""
        if self.store is not None:
            self.refresh_table()

    def refresh_table(self, with_predictions: bool = True) -> None:
        """Show the labels and the cached model scores; ``with_predictions``: also score the frames not cached yet
        (in a worker)."""
        labels = self.store.labels() if self.store is not None else []
        weights = self._weights_key()
        rows = []
        for label in labels:
            key = (label.path, label.frame, weights)
            pred = self._predictions.get(key)
            model_cell = "…" if key not in self._predictions else "-" if pred is None else f"{pred:.2f}"
            rows.append([str(label.frame), f"{label.score:g}", model_cell, Path(label.path).name])
        fill_table(self.table, TABLE_HEADERS, rows)
        if with_predictions:
            self._prediction_timer.start()  # scores the new frames once labelling pauses (debounced)

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import labels", "", "CSV (*.csv)")
        if path:
            n = self._ensure_store().import_csv(path)
            self.refresh_table()
            self.status.setText(f"imported {n} labels")

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export labels", "focus_labels.csv", "CSV (*.csv)")
        if path:
            self._ensure_store().export_csv(path)

    # --- fine-tuning --------------------------------------------------------------------------------------
    def _scoring_weights(self) -> str | None:
        """The weights this viewer scores with (:mod:`.current_model`)."""
        return current_model(self.viewer).weights

    def start_fine_tune(self, crop_size: tuple[int, int] | None = None, batch_size: int = 8) -> Any:
        """Adapt (or fine-tune the whole network, by the regime box) from the scoring model's current weights on
        the labelled frames, in a ``thread_worker`` generator (``crop_size``: whole network only; None = the
        paper's 320x240)."""
        from napari.utils.notifications import show_error

        from ..scoring.weights import load_model
        from ..training.adapt import iter_adapt
        from ..training.train import iter_fine_tune

        try:
            store = self._ensure_store()
            samples = store.training_samples(self._frame_loader())
            if not samples:
                raise SemFocusError("label some frames first")
            self.base_weights = self._scoring_weights()
            model = load_model(self.base_weights)
        except (SemFocusError, OSError) as err:
            show_error(str(err))
            return None
        self._stop.clear()
        self.history = []
        self.result = None
        self.adaptation = None
        # every widget value is read here, on the GUI thread, before the worker starts
        whole = self.regime_box.value == REGIMES[1]
        steps, lr, stop = self.steps_box.value, self.lr_box.value, self._stop.is_set

        def job() -> Any:
            try:
                if whole:
                    gen = iter_fine_tune(model, samples, steps, crop_size, batch_size, lr, should_stop=stop)
                else:
                    gen = iter_adapt(model, samples, should_stop=stop)
                return (yield from gen)
            except CancelledError:
                return None  # a cancelled run is not an error: the previous model stays in place

        self.use_button.setEnabled(False)
        what = "fine-tuning the whole network" if whole else "adapting"
        message, progress = f"{what} on {len(samples)} labelled frames…", {"desc": "Fine-tuning"}
        buttons = [self.train_button]
        self.worker = start_job(
            job, "fine-tuning", message, self, buttons, self._on_event, self._on_done, None, progress
        )
        return self.worker

    def cancel(self) -> None:
        self._stop.set()

    def _on_event(self, event: Any) -> None:
        """A progress event from the worker: a training step (whole network) or an adaptation stage."""
        from ..training.adapt import AdaptEvent

        self.history.append(event)
        if isinstance(event, AdaptEvent):
            self.status.setText(f"adapting: {event.message} ({event.elapsed_s:.0f} s)")
            return
        now = time.monotonic()
        if now - self._last_draw > 0.25:  # redraw at most 4 times a second
            self._last_draw = now
            self._draw_history()

    def _draw_history(self) -> None:
        from ..training.adapt import AdaptResult

        ax = self.axes
        ax.clear()
        steps_history = [e for e in self.history if hasattr(e, "train_rmse")]
        if isinstance(self.adaptation, AdaptResult):
            self._draw_adaptation(ax, self.adaptation)
        elif steps_history:
            steps = [e.step for e in steps_history]
            ax.plot(steps, [e.train_rmse for e in steps_history], label="training RMSE (running)")
            val = [(e.step, e.val_rmse) for e in steps_history if e.val_rmse is not None]
            if val:
                ax.plot(*zip(*val, strict=True), "o-", label="validation RMSE")
            ax.set_xlabel("step")
            ax.set_ylabel("RMSE (score units)")
            ax.legend(fontsize="x-small")
            ax.grid(True, alpha=0.3)
        else:
            ax.text(0.5, 0.5, "loss curves appear here", ha="center", va="center", color="0.5", transform=ax.transAxes)
            ax.set_axis_off()
        self.plot.show_drawing()

    @staticmethod
    def _draw_adaptation(ax: Any, result: Any) -> None:
        """The adopted remap over the labelled frames (:func:`~napari_sem_focus.scoring.report.plot_adaptation`)."""
        from ..scoring.report import plot_adaptation

        plot_adaptation(ax, result)

    def _on_done(self, result: Any) -> None:
        from ..training.adapt import AdaptResult

        self.result = result
        if result is None:
            self.status.setText("cancelled; the previous model is unchanged")
            return
        if isinstance(result, AdaptResult):
            self.status.setText(result.summary())
            self.adaptation = result
            self.use_button.setEnabled(result.adopted)
            if not result.adopted:
                self.result = None  # nothing to use: the current model stays
            self._draw_history()
            return
        m = result.metrics
        if m.get("val_rmse_after") is not None:
            verdict = "lower: use it" if m["adopted"] else "not lower: keep the current model"
            text = (
                f"RMSE on {m['n_val']} held-out labelled frames: before {m['val_rmse_before']:.3f}, after "
                f"{m['val_rmse_after']:.3f} ({verdict}; {m['n_train']} training frames)"
            )
        else:
            text = (
                f"RMSE on the {m['n_train']} training frames: before {m['rmse_before']:.3f}, after "
                f"{m['rmse_after']:.3f} (fewer than 10 labels: not checked on held-out frames; the 'adapt' regime "
                "checks it)"
            )
        self.status.setText(text)
        self.use_button.setEnabled(m.get("adopted") is not False)
        self._draw_history()

    def use_model(self, path: str | Path) -> Path:
        """Save the fine-tuned model (safetensors + a JSON of its training facts) and hot-swap it into every
        Score-stack widget of this viewer."""
        from ..scoring.weights import save_weights_and_facts

        if self.result is None:
            raise SemFocusError("no fine-tuned model yet")
        path = Path(path)
        facts = {
            "fine_tuned_from": self.base_weights or "default",
            "labels": str(self.store.path if self.store else ""),
            "steps": getattr(self.result, "step", getattr(self.result, "steps", 0)),
            **self.result.metrics,
        }
        save_weights_and_facts(self.result.model, path, facts)
        current_model(self.viewer).set(path)
        self.refresh_table()
        self.status.setText(f"using {path.name}; re-score the stack to see the new curve")
        return path

    def _use_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save fine-tuned model", "fine_tuned.safetensors", "safetensors (*.safetensors)"
        )
        if path:
            self.use_model(path)


REGIMES = ("adapt (few labels)", "whole network")
#: The labels table: frame, the user's label, the current model's score, the image file.
TABLE_HEADERS = ("frame", "label", "model", "file")
#: The model scores newly labelled frames once labelling pauses this long (ms), so that a run of key presses never
#: competes with the model for the CPU.
PREDICTION_DELAY_MS = 400


def napari_image_type() -> type:
    import napari

    return napari.layers.Image
