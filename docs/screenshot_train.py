"""Screenshot of the Label & fine-tune widget after labelling frames of the tin-ball sample and a short
fine-tuning run. Run under a real X server:  xvfb-run -a python docs/screenshot_train.py [LABELS_DIR]
Writes docs/images/napari_train_widget.png.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_sem_focus._sample_data import tinball_series
from napari_sem_focus._widgets.train import TrainWidget

OUT = Path(__file__).resolve().parent / "images" / "napari_train_widget.png"


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    data, kwargs, _ = tinball_series()[0]
    layer = viewer.add_image(data, **kwargs)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Label & fine-tune", area="right")
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    widget.open_labels(folder / "tinball_focus_labels.csv")
    truth = layer.metadata["focus_series"].truth
    for frame in range(0, 21, 2):
        viewer.dims.set_current_step(0, frame)
        widget.label_current(round(truth[frame]["score"] * 2) / 2)
    widget.steps_box.setValue(30)
    widget.start_fine_tune(crop_size=(96, 128), batch_size=4)
    app = QApplication.instance()
    while not widget.train_button.isEnabled():
        app.processEvents()
        time.sleep(0.05)
    for _ in range(30):
        app.processEvents()
    viewer.dims.set_current_step(0, 10)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(widget.status.text(), OUT)
    viewer.close()


if __name__ == "__main__":
    main()
