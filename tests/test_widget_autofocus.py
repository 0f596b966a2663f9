"""The Autofocus widget under Xvfb: the search on the virtual SEM, scan by scan, into a layer and the plot."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-sem-focus", "Autofocus")
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


def _wait(qtbot, done, timeout_ms: int = 120_000) -> None:
    """Wait for what a job shows when it has ended (a quick job may end before a signal could be awaited)."""
    qtbot.waitUntil(done, timeout=timeout_ms)


def test_autofocus_widget_shows_the_fields_of_the_chosen_microscope(widget):
    _, w = widget

    def shown(*names):
        return [getattr(w, n).native.isVisibleTo(w) for n in names]

    assert shown("specimen_box", "ip_box", "probe_box") == [True, False, False]
    assert not w.connect_button.isVisibleTo(w) and w.run_button.isEnabled()
    w.microscope_box.value = "fibsem: Thermo"
    assert shown("specimen_box", "ip_box", "probe_box") == [False, True, True]
    assert w.connect_button.isVisibleTo(w) and not w.run_button.isEnabled()  # connect first
    w.microscope_box.value = "fibsem: Demo"
    assert shown("specimen_box", "ip_box", "probe_box") == [True, False, True]


def test_autofocus_widget_focuses_fibsems_demo_and_restores_the_start(widget, qtbot):
    _, w = widget
    w.microscope_box.value = "fibsem: Demo"
    w.specimen_box.value = "grid"
    w.offset_box.value = 12
    w.probe_box.value = "384x256"
    w.connect()
    _wait(qtbot, lambda: w.run_button.isEnabled())
    microscope = w.connected.microscope
    assert microscope is not None and "connected to fibsem Demo" in w.status.text()
    w.start()
    _wait(qtbot, lambda: w.result is not None and w.connect_button.isEnabled())
    result = w.result
    assert result.status == "focused" and w.layer.data.shape[0] == result.n_acquisitions
    assert abs(w.truth.defocus_um(result.final_wd_mm)) <= w.truth.depth_of_field_um()
    assert w.adapter.working_distance_mm() == pytest.approx(result.final_wd_mm)
    assert "the microscope is at" in w.status.text() and "true defocus" in w.status.text()
    assert w.restore_button.isEnabled()
    w.restore_start()
    _wait(qtbot, lambda: "restored to the start" in w.status.text() and w.connect_button.isEnabled())
    assert w.adapter.working_distance_mm() == pytest.approx(result.start_wd_mm)
    assert not w.restore_button.isEnabled()  # back at the start: nothing to restore


def test_score_stack_scores_the_live_frames_of_the_connected_microscope(widget, qtbot):
    viewer, w = widget
    _, score = viewer.window.add_plugin_dock_widget("napari-sem-focus", "Score stack")
    assert score.start_live_microscope() is None  # nothing connected yet: a warning, no job
    w.microscope_box.value = "fibsem: Demo"
    w.connect()
    _wait(qtbot, lambda: w.connected.microscope is not None)
    microscope = w.connected.microscope
    microscope.set_resolution((512, 384), microscope.electron_system.beam.beam_type)
    score.start_live_microscope(max_frames=2)
    _wait(qtbot, lambda: len(score.rows) == 2 and score.score_button.isEnabled())
    assert len(score.rows) == 2 and all(0.0 <= r["score"] <= 10.0 for r in score.rows)
    assert score.live_layer.name == "live: fibsem Demo" and score.live_layer.data.shape == (2, 384, 512)
    assert not microscope.is_acquiring


def test_autofocus_widget_stigmates_too(widget, qtbot):
    _, w = widget
    w.specimen_box.value = "tinball"
    w.mag_box.value = 10000
    w.offset_box.value = 15
    w.astig_box.value = 12
    w.stigmate_box.value = True
    assert w.max_box.value == 24 and w.stig_range_box.native.isVisibleTo(w)
    w.start()
    _wait(qtbot, lambda: w.result is not None and w.run_button.isEnabled())
    result = w.result
    final = result.final
    assert result.status == "focused" and w.truth.in_focus_and_stigmated(
        final.working_distance_mm, (final.stig_x, final.stig_y)
    )
    assert "astigmatism left" in w.status.text()
    assert len(w.plot.figure.axes) == 3  # score vs working distance, the stigmator path and its colour bar
