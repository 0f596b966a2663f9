"""The "Label & fine-tune" dock widget: give frames a 0-10 focus score, keep the labels file, fine-tune the model
on them in a worker with a live loss plot, compare RMSE before/after, then use (hot-swap) and save the new model.

Keyboard: with the widget open, keys 0-9 label the current frame with that score and ``=`` labels it 10.
Everything it computes is a core call: :class:`~napari_sem_focus.label_store.LabelStore`,
:func:`~napari_sem_focus.train.fine_tune`, :func:`~napari_sem_focus.weights.save_weights`.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import CancelledError, SemFocusError
from ..label_store import LabelStore, default_labels_path
from .layer_choice import ImageLayerChoice, magnification_box, path_row
from .score import series_for_layer

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
        self.store: LabelStore | None = None
        self.worker: Any = None
        self.result: Any = None
        self.base_weights: str | None = None
        self._stop = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self.history: list[Any] = []

        self.layer_box = ImageLayerChoice(viewer, self._layer_changed)
        self.labels_edit, labels_row = path_row("next to the data", self._choose_labels_file)
        self.mag_box = magnification_box()
        self.score_box = QDoubleSpinBox()
        self.score_box.setRange(0, 10)
        self.score_box.setSingleStep(0.5)
        self.score_box.setValue(10)
        self.label_button = QPushButton("Label current frame")
        self.steps_box = QSpinBox()
        self.steps_box.setRange(1, 100_000)
        self.steps_box.setValue(200)
        self.lr_box = QDoubleSpinBox()
        self.lr_box.setDecimals(6)
        self.lr_box.setRange(1e-6, 1e-1)
        self.lr_box.setValue(1e-4)

        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("labels file", labels_row)
        form.addRow("magnification", self.mag_box)
        form.addRow("score (keys 0-9, = for 10)", self.score_box)
        form.addRow("", self.label_button)
        form.addRow("fine-tune steps", self.steps_box)
        form.addRow("learning rate", self.lr_box)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["frame", "label", "model", "file"])
        self.table.setMinimumHeight(120)
        io_row = QHBoxLayout()
        self.import_button = QPushButton("Import labels…")
        self.export_button = QPushButton("Export labels…")
        io_row.addWidget(self.import_button)
        io_row.addWidget(self.export_button)

        self.train_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.use_button = QPushButton("Use this model…")
        self.use_button.setEnabled(False)
        run_row = QHBoxLayout()
        for b in (self.train_button, self.cancel_button, self.use_button):
            run_row.addWidget(b)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.figure = Figure(figsize=(4, 2.4), dpi=90, constrained_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(200)
        self.axes = self.figure.add_subplot()

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addLayout(io_row)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.canvas)

        self.label_button.clicked.connect(lambda: self.label_current(self.score_box.value()))
        self.import_button.clicked.connect(self._import_dialog)
        self.export_button.clicked.connect(self._export_dialog)
        self.train_button.clicked.connect(self.start_fine_tune)
        self.cancel_button.clicked.connect(self.cancel)
        self.use_button.clicked.connect(self._use_dialog)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._drain_events)
        for key in range(10):
            viewer.bind_key(str(key), lambda v, s=key: self.label_current(float(s)), overwrite=True)
        viewer.bind_key("=", lambda v: self.label_current(10.0), overwrite=True)
        self.layer_box.refresh()
        self._draw_history()

    # --- layers and the labels file ----------------------------------------------------------------------
    def selected_layer(self) -> Any:
        return self.layer_box.layer()

    def _layer_changed(self) -> None:
        from ..infer import model_magnification

        layer = self.selected_layer()
        if layer is None:
            return
        try:
            mag, _ = model_magnification(series_for_layer(layer))
        except SemFocusError:
            mag = None
        if mag:
            self.mag_box.setValue(mag)
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

    def _choose_labels_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Labels file", "focus_labels.csv", "CSV (*.csv)")
        if path:
            self.open_labels(path)

    # --- labelling ----------------------------------------------------------------------------------------
    def current_frame(self, layer: Any) -> int:
        return int(self.viewer.dims.current_step[0]) if layer.ndim - (1 if layer.rgb else 0) >= 3 else 0

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
            label = store.set(key, self.current_frame(layer), self.mag_box.value(), score)
        except SemFocusError as err:
            show_error(str(err))
            return None
        self.score_box.setValue(score)
        self.refresh_table()
        self.status.setText(f"frame {label.frame} labelled {label.score:g} ({len(store)} labels)")
        return label

    def _frame_loader(self) -> Any:
        """Read labelled frames: from open layers when the label names one (each layer's series built once),
        else from files."""
        from ..data import load_frame

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

    def predictions(self) -> list[float | None]:
        """The current scoring model's score of each labelled frame (None when it cannot be read)."""
        from ..weights import load_model

        if self.store is None or not len(self.store):
            return []
        try:
            model = load_model(self._scoring_weights())
        except SemFocusError:
            return [None] * len(self.store)
        return self.store.predict_scores(model, self._frame_loader())

    def refresh_table(self, with_predictions: bool = True) -> None:
        labels = self.store.labels() if self.store is not None else []
        preds = self.predictions() if with_predictions else [None] * len(labels)
        self.table.setRowCount(len(labels))
        for i, (label, pred) in enumerate(zip(labels, preds, strict=True)):
            cells = [
                str(label.frame),
                f"{label.score:g}",
                "-" if pred is None else f"{pred:.2f}",
                Path(label.path).name,
            ]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))

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
        for widget in _score_widgets(self.viewer):
            return widget.weights_edit.text().strip() or None
        return self.base_weights

    def start_fine_tune(self, crop_size: tuple[int, int] | None = None, batch_size: int = 8) -> Any:
        """Fine-tune from the scoring model's current weights on the labelled frames, in a worker (``crop_size``:
        None = :func:`~napari_sem_focus.train.fine_tune`'s default, the paper's 320x240)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        from ..train import fine_tune
        from ..weights import load_model

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
        steps, lr = self.steps_box.value(), self.lr_box.value()

        def job() -> Any:
            try:
                return fine_tune(
                    model,
                    samples,
                    steps=steps,
                    crop_size=crop_size,
                    batch_size=batch_size,
                    lr=lr,
                    device="auto",
                    progress=self._events.put,
                    should_stop=self._stop.is_set,
                )
            except CancelledError:
                return None  # a cancelled run is not an error: the previous model stays in place

        self.worker = create_worker(job, _progress={"desc": "Fine-tuning"})
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.use_button.setEnabled(False)
        self.status.setText(f"fine-tuning on {len(samples)} labelled frames…")
        self._timer.start(200)
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        self._stop.set()

    def _drain_events(self) -> None:
        changed = False
        while True:
            try:
                self.history.append(self._events.get_nowait())
                changed = True
            except queue.Empty:
                break
        if changed:
            self._draw_history()

    def _draw_history(self) -> None:
        ax = self.axes
        ax.clear()
        if self.history:
            steps = [e.step for e in self.history]
            ax.plot(steps, [e.train_rmse for e in self.history], label="training RMSE (running)")
            val = [(e.step, e.val_rmse) for e in self.history if e.val_rmse is not None]
            if val:
                ax.plot(*zip(*val, strict=True), "o-", label="validation RMSE")
            ax.set_xlabel("step")
            ax.set_ylabel("RMSE (score units)")
            ax.legend(fontsize="x-small")
            ax.grid(True, alpha=0.3)
        else:
            ax.text(0.5, 0.5, "loss curves appear here", ha="center", va="center", color="0.5", transform=ax.transAxes)
            ax.set_axis_off()
        self.canvas.draw_idle()

    def _on_done(self, result: Any) -> None:
        self.result = result
        if result is None:
            self.status.setText("cancelled; the previous model is unchanged")
            return
        m = result.metrics
        self.status.setText(
            f"RMSE on the labelled frames: before {m['rmse_before']:.3f}, after {m['rmse_after']:.3f} "
            f"({m['n_train']} train / {m['n_val']} validation frames)"
        )
        self.use_button.setEnabled(True)

    def _on_error(self, err: Exception) -> None:
        from napari.utils.notifications import show_error

        show_error(f"fine-tuning failed: {err}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._drain_events()
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def use_model(self, path: str | Path) -> Path:
        """Save the fine-tuned model (safetensors + a JSON of its training facts) and hot-swap it into every
        Score-stack widget of this viewer."""
        from ..atomic import atomic_write_text
        from ..weights import save_weights

        if self.result is None:
            raise SemFocusError("no fine-tuned model yet")
        path = Path(path)
        facts = {
            "fine_tuned_from": self.base_weights or "default",
            "labels": str(self.store.path if self.store else ""),
            "steps": self.result.step,
            **self.result.metrics,
        }
        save_weights(self.result.model, path, facts)
        atomic_write_text(path.with_suffix(".json"), json.dumps(facts, indent=2))
        for widget in _score_widgets(self.viewer):
            widget.set_weights(path)
        self.refresh_table()
        self.status.setText(f"using {path.name}; re-score the stack to see the new curve")
        return path

    def _use_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save fine-tuned model", "fine_tuned.safetensors", "safetensors (*.safetensors)"
        )
        if path:
            self.use_model(path)


def napari_image_type() -> type:
    import napari

    return napari.layers.Image


def _score_widgets(viewer: Any) -> list[Any]:
    from .score import ScoreStackWidget

    return [w for w in ScoreStackWidget.instances() if w.viewer is viewer]
