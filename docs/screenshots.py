"""Screenshots of napari with the plugin's widgets, for the README and docs (look at them after a change).

Run under a real X server (not QT_QPA_PLATFORM=offscreen):  xvfb-run -a python docs/screenshots.py [NAME ...]
(NAMEs from SCREENSHOTS; all by default). Writes docs/images/napari_score_stack.png (Score stack after scoring
the tin-ball sample),
docs/images/napari_live_folder.png (Live folder: the sample's frames written one by one into a watched folder),
docs/images/napari_autofocus.png (Autofocus on the virtual SEM), docs/images/napari_autofocus_fibsem.png
(Autofocus driving fibsem-os's demo microscope), docs/images/napari_autofocus_stigmate.png (focus + stigmation)
and docs/images/napari_train_widget.png
(Label & fine-tune: a lab whose scale is 0.75x ours, its best frame a 7.5, labels 11 frames of the tin-ball sample
in half points and adapts the model; the script prints the RMSE on the 10 frames nobody labelled, before and
after).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_sem_focus._sample_data import tinball_series
from napari_sem_focus._widgets.score import ScoreStackWidget
from napari_sem_focus._widgets.train import TrainWidget

IMAGES = Path(__file__).resolve().parent / "images"


def _viewer_with_sample(height: int) -> tuple[napari.Viewer, napari.layers.Image]:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, height)
    data, kwargs, _ = tinball_series()[0]
    return viewer, viewer.add_image(data, **kwargs)


def _wait(done: Callable[[], bool]) -> None:
    app = QApplication.instance()
    while not done():
        app.processEvents()
        time.sleep(0.02)
    for _ in range(30):
        app.processEvents()


def score_stack() -> Path:
    viewer, layer = _viewer_with_sample(900)
    widget = ScoreStackWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Score stack", area="right")
    widget.start_scoring()
    _wait(widget.score_button.isEnabled)
    widget.go_to_best()
    widget.show_focus_map()
    viewer.layers.selection.active = layer
    _wait(lambda: True)
    out = IMAGES / "napari_score_stack.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"best frame {widget.peak.index}: {out}")
    viewer.close()
    return out


def live_folder() -> Path:
    """Live mode: a folder receives the 21 frames of the tin-ball sample one by one while the widget watches."""
    import threading

    from napari_sem_focus.io.series import write_series_tiff
    from napari_sem_focus.simulate.samples import sample_series

    series = sample_series("tinball")
    folder = Path(tempfile.mkdtemp()) / "incoming"
    folder.mkdir()
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    widget = ScoreStackWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Score stack", area="right")
    widget.start_live(folder, poll_s=0.1, settle_s=0.2)

    def microscope() -> None:
        for i in range(len(series)):
            facts = {"magnification": series.magnification, "working_distance_mm": series.working_distance_mm[i]}
            facts["pixel_size_nm"] = series.pixel_size_nm
            write_series_tiff(folder / f"frame_{i:02d}.tif", [series.raw_frame(i)], [facts])
            time.sleep(0.3)

    writer = threading.Thread(target=microscope)
    writer.start()
    _wait(lambda: len(widget.rows) == len(series))
    writer.join()
    viewer.dims.set_current_step(0, widget.peak.index)
    _wait(lambda: True)
    out = IMAGES / "napari_live_folder.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"live: {len(widget.rows)} frames, best {widget.peak.index}: {out}")
    widget.cancel()
    _wait(widget.live_button.isEnabled)
    viewer.close()
    return out


def autofocus_widget() -> Path:
    """The Autofocus widget after a search on the virtual SEM (tin balls, 5,000x, 40 µm from focus)."""
    from napari_sem_focus._widgets.autofocus import AutofocusWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    widget = AutofocusWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Autofocus", area="right")
    widget.start()
    _wait(lambda: widget.result is not None and widget.run_button.isEnabled())
    out = IMAGES / "napari_autofocus.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"autofocus: {widget.result.summary()}: {out}")
    viewer.close()
    return out


def autofocus_microscope() -> Path:
    """The Autofocus widget driving fibsem-os's demo microscope (its images drawn by the virtual SEM: grid, 5,000x,
    best focus hidden 12 µm from the start): connected, searched, the microscope left at the best focus."""
    import os

    from napari_sem_focus._widgets.autofocus import AutofocusWidget

    os.environ.setdefault("FIBSEM_SIM_NO_DELAY", "1")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    widget = AutofocusWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Autofocus", area="right")
    widget.microscope_box.value = "fibsem: Demo"
    widget.specimen_box.value = "grid"
    widget.offset_box.value = 12
    widget.connect()
    _wait(lambda: widget.connected.microscope is not None and widget.run_button.isEnabled())
    widget.start()
    _wait(lambda: widget.result is not None and widget.connect_button.isEnabled())
    out = IMAGES / "napari_autofocus_fibsem.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"autofocus on fibsem's demo: {widget.result.summary()}: {out}")
    viewer.close()
    return out


def autofocus_stigmate() -> Path:
    """The Autofocus widget's focus + stigmation search on the virtual SEM (tin balls, 10,000x, 15 µm from focus,
    12 µm of astigmatism): score against working distance and the stigmator path."""
    from napari_sem_focus._widgets.autofocus import AutofocusWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1200)
    widget = AutofocusWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Autofocus", area="right")
    widget.mag_box.value = 10_000
    widget.offset_box.value = 15
    widget.astig_box.value = 12
    widget.stigmate_box.value = True
    widget.start()
    _wait(lambda: widget.result is not None and widget.run_button.isEnabled())
    out = IMAGES / "napari_autofocus_stigmate.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"focus + stigmation: {widget.result.summary()}: {out}")
    viewer.close()
    return out


def train_widget() -> Path:
    viewer, layer = _viewer_with_sample(950)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Label & fine-tune", area="right")
    widget.open_labels(Path(tempfile.mkdtemp()) / "tinball_focus_labels.csv")
    truth = layer.metadata["focus_series"].truth
    # a lab whose scale is 0.75x ours (it keeps 10 for a better microscope: the best frame is 7.5), in half steps
    user = [round(0.75 * row["score"] * 2) / 2 for row in truth]
    for frame in range(0, 21, 2):
        viewer.dims.set_current_step(0, frame)
        widget.label_current(user[frame])
    widget.start_fine_tune()  # the default regime: few-label adaptation
    _wait(widget.train_button.isEnabled)
    held_out = list(range(1, 21, 2))
    if widget.result is not None:
        rmse = {name: _held_out_rmse(model, layer, held_out, user) for name, model in _models(widget).items()}
        print("RMSE on the 10 unlabelled frames: " + ", ".join(f"{k} {v:.3f}" for k, v in rmse.items()))
    viewer.dims.set_current_step(0, 10)
    out = IMAGES / "napari_train_widget.png"
    viewer.screenshot(str(out), canvas_only=False)
    print(f"{widget.status.text()}: {out}")
    viewer.close()
    return out


def _models(widget: TrainWidget) -> dict:
    from napari_sem_focus.scoring.weights import load_model

    return {"before": load_model(widget.base_weights), "after": widget.result.model}


def _held_out_rmse(model, layer, frames: list[int], user: list[float]) -> float:
    import numpy as np

    from napari_sem_focus.scoring.infer import model_magnification, score_frames

    series = layer.metadata["focus_series"]
    mag, _ = model_magnification(series)
    scores = [r.score for r in score_frames([series.frame(i) for i in frames], mag, model)]
    return float(np.sqrt(np.mean((np.array(scores) - np.array([user[i] for i in frames])) ** 2)))


SCREENSHOTS = {
    "score_stack": score_stack,
    "live_folder": live_folder,
    "autofocus": autofocus_widget,
    "autofocus_microscope": autofocus_microscope,
    "autofocus_stigmate": autofocus_stigmate,
    "train": train_widget,
}

if __name__ == "__main__":
    import sys

    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or SCREENSHOTS:  # e.g. python docs/screenshots.py autofocus_microscope
        SCREENSHOTS[name]()
