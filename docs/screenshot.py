"""Screenshot of napari with the Score-stack widget docked after scoring the tin-ball sample.

Run under a real X server (not QT_QPA_PLATFORM=offscreen):  xvfb-run -a python docs/screenshot.py [WEIGHTS]
Writes docs/images/napari_score_stack.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_sem_focus._sample_data import tinball_series
from napari_sem_focus._widgets.score import ScoreStackWidget

OUT = Path(__file__).resolve().parent / "images" / "napari_score_stack.png"


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    data, kwargs, _ = tinball_series()[0]
    viewer.add_image(data, **kwargs)
    widget = ScoreStackWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Score stack", area="right")
    if len(sys.argv) > 1:
        widget.set_weights(sys.argv[1])
    widget.start_scoring()
    app = QApplication.instance()
    while not widget.score_button.isEnabled():
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
    widget.go_to_best()
    widget.show_focus_map()
    viewer.layers.selection.active = viewer.layers[0]
    for _ in range(30):
        app.processEvents()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"best frame {widget.peak.index}; screenshot {OUT}")
    viewer.close()


if __name__ == "__main__":
    main()
