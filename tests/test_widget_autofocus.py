"""The Autofocus widget under Xvfb: the search on the virtual SEM, scan by scan, into a layer and the plot."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-sem-focus", "Autofocus (virtual SEM)")
    return viewer, w


def test_autofocus_widget_finds_focus_and_shows_every_scan(widget, qtbot):
    viewer, w = widget
    assert w.layer is None and not viewer.layers
    w.specimen_box.value = "tinball"
    w.mag_box.value = 5000
    w.offset_box.value = 40
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    result = w.result
    assert result is not None and result.status == "focused"
    assert abs(w.sem.defocus_um(result.best_wd_mm)) <= w.sem.depth_of_field_um()
    assert w.layer.data.shape[0] == result.n_acquisitions == len(w.scans)
    assert "true defocus at the end" in w.status.text() and w.run_button.isEnabled()
    assert len(w.plot.axes.lines) >= 3  # true curve, scans, best marker


def test_autofocus_widget_cancel_keeps_the_best_seen(widget, qtbot):
    _, w = widget
    w.offset_box.value = 60
    worker = w.start()
    worker.yielded.connect(lambda _scan: w.cancel())
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    # the worker may finish the scan under way when Cancel arrives; it stops before the next one
    assert w.result.status == "cancelled" and w.result.n_acquisitions <= 3
    assert w.result.best_score == max(s.score for s in w.scans) and w.run_button.isEnabled()
