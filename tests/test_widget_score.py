"""The Score-stack widget under Xvfb: reader -> worker -> plot/table -> best frame, clicks, cancel, bad layers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.scoring.weights import bundled_weights_path
from napari_sem_focus.simulate import simulate_series, write_series

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


@pytest.fixture
def series_path(tmp_path):
    frames, wds = simulate_series("tinball", 5000.0, steps=7, shape=(240, 320), seed=2)
    return write_series(tmp_path, frames, wds)


@pytest.fixture
def widget(make_napari_viewer):
    from napari_sem_focus._widgets.score import ScoreStackWidget

    viewer = make_napari_viewer()
    w = ScoreStackWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def _run(qtbot, w, timeout=60_000):
    worker = w.start_scoring()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass
    return worker


@pytest.mark.skipif(not bundled_weights_path().is_file(), reason="bundled weights not built")
def test_reader_widget_best_frame_and_clicks(widget, qtbot, series_path):
    viewer, w = widget
    viewer.open(str(series_path), plugin="napari-sem-focus")
    layer = viewer.layers[0]
    assert layer.data.shape == (7, 240, 320)
    assert layer.metadata["sem_focus"]["working_distance_mm"][3] == pytest.approx(5.0)
    assert w.layer_box.current_choice == layer.name
    assert w.mag_box.value == pytest.approx(5000, rel=1e-3)  # from the pixel size in the file
    _run(qtbot, w)
    assert len(w.rows) == 7
    truth = [t["score"] for t in layer.metadata["focus_series"].truth]
    assert w.peak.index == int(np.argmax(truth)) == 3
    assert "best frame 3" in w.status.text() and "warning" not in w.status.text()
    assert len(w.plot.axes.lines[0].get_xdata()) == 7
    assert w.table.rowCount() == 7
    w.go_to_best()
    assert viewer.dims.current_step[0] == 3
    w.plot.on_pick(5)  # what a click on the 6th point does
    assert viewer.dims.current_step[0] == 5
    assert w.plot.current_frame == 5
    kept = w.keep_best()
    assert kept.data.shape == (240, 320)
    fmap = w.show_focus_map()
    assert fmap.data.shape == (240, 320)
    assert tuple(fmap.units) == tuple(layer.units[-2:])  # nm like the image: napari has no units to complain of


def test_cancel_stops_early_without_error(widget, qtbot, tmp_path, monkeypatch):
    from napari_sem_focus.scoring.model import build_focus_net
    from napari_sem_focus.scoring.weights import save_weights

    viewer, w = widget
    weights = save_weights(build_focus_net(), tmp_path / "w.safetensors")
    frames, _wds = simulate_series("grid", 1000.0, steps=40, shape=(240, 320), seed=1)
    viewer.add_image(np.stack([f.image for f in frames]), name="long")
    w.set_weights(weights)
    worker = w.start_scoring()
    errors = []
    worker.errored.connect(errors.append)
    qtbot.waitUntil(lambda: len(w.rows) >= 1, timeout=60_000)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        w.cancel()
    assert 1 <= len(w.rows) < 40
    assert not errors
    assert w.score_button.isEnabled()


def test_bad_layers_give_messages(widget, qtbot, monkeypatch):
    from napari_sem_focus._widgets import score

    viewer, w = widget
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: shown.append(msg))
    assert w.start_scoring() is None  # no layer at all
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="labels")
    with pytest.raises(score.SemFocusError, match="Labels layer"):
        score.series_for_layer(viewer.layers["labels"])
    viewer.add_image(np.zeros((4, 10, 10), np.uint8), name="tiny")  # napari refuses empty layers itself
    w.layer_box.value = viewer.layers["tiny"]
    assert w.start_scoring() is None
    assert any("smaller than 16x16" in m for m in shown)
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    viewer.add_image(rgb, name="rgb", rgb=True)
    series = score.series_for_layer(viewer.layers["rgb"])
    assert series.frame(0).shape == (64, 80)
    assert any("RGB" in n for n in series.notes)


def _click_point(w, frame):
    """A real matplotlib mouse press on the plotted point of ``frame``."""
    from matplotlib.backend_bases import MouseEvent

    w.plot.canvas.draw()
    line = w.plot.axes.lines[0]
    x, y = line.get_xdata()[frame], line.get_ydata()[frame]
    px, py = w.plot.axes.transData.transform((x, y))
    MouseEvent("button_press_event", w.plot.canvas, px, py, button=1)._process()


@pytest.mark.skipif(not bundled_weights_path().is_file(), reason="bundled weights not built")
def test_real_deepfocus_series_best_pick_and_click(widget, qtbot):
    from .conftest import shared

    viewer, w = widget
    viewer.open(str(shared("deepfocus")), plugin="napari-sem-focus")
    names = [p.name for p in viewer.layers[0].metadata["focus_series"].frame_paths]
    w.mag_box.value = 20000  # the files carry no metadata
    _run(qtbot, w)
    assert names[w.peak.index].endswith("pert5000.png")  # WD +5 µm: the known sharpest frame
    _click_point(w, 0)
    assert viewer.dims.current_step[0] == 0


@pytest.mark.skipif(not bundled_weights_path().is_file(), reason="bundled weights not built")
def test_real_optical_folder_opens_cropped_and_picks_defocus_zero(widget, qtbot):
    from .conftest import shared

    viewer, w = widget
    viewer.open(str(shared("optical_through_focus")), plugin="napari-sem-focus")
    series = viewer.layers[0].metadata["focus_series"]
    assert series.shape == (286, 330) and len(series) == 19
    w.mag_box.value = 5000
    _run(qtbot, w)
    assert series.frame_paths[w.peak.index].name == "smear_defocus_p00.png"
    # sorted by file name (m01 ... m09, p00 ... p09) the curve has two peaks: the status line says so
    assert "separate peaks (frames 9, 0)" in w.status.text()


@pytest.mark.skipif(not bundled_weights_path().is_file(), reason="bundled weights not built")
def test_region_from_a_shapes_rectangle(widget, qtbot, monkeypatch):
    """A rectangle drawn on a Shapes layer (world coordinates, scaled layer) restricts every frame's score."""
    viewer, w = widget
    frames, _wds = simulate_series("tinball", 5000.0, steps=5, shape=(480, 640), seed=4)
    layer = viewer.add_image(np.stack([f.image for f in frames]), name="stack", scale=(1.0, 24.8, 24.8))
    w.layer_box.value = viewer.layers["stack"]
    # 320x240 px at x 300, y 200, drawn in nm (world) as napari does with the scaled layer
    corners = np.array([[199.5, 299.5], [439.5, 619.5]]) * 24.8
    viewer.add_shapes([corners], shape_type="rectangle", name="roi")
    assert viewer.layers["roi"] in w.region_box.choices  # the open widget follows the new layer
    from napari_sem_focus._widgets.score import ScoreStackWidget

    assert viewer.layers["roi"] in ScoreStackWidget(viewer).region_box.choices  # and one opened after it
    w.region_box.value = viewer.layers["roi"]
    _run(qtbot, w)
    assert w.series.roi == (300, 200, 320, 240) and len(w.rows) == 5
    assert "region: x 300, y 200, 320x240 px" in w.status.text()
    assert all(r["structure"] == 1.0 or r["note"] for r in w.rows)
    fmap = w.show_focus_map()
    assert fmap.data.shape == (240, 320)
    assert tuple(fmap.translate) == pytest.approx((200 * 24.8, 300 * 24.8))  # over the region, in nm
    # too small a rectangle: a message, no crash, nothing scored
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda msg: shown.append(msg))
    viewer.layers["roi"].data = [np.array([[0.0, 0.0], [50.0, 80.0]]) * 24.8]
    assert w.start_scoring() is None
    assert any("smaller than the 320x240 px" in m for m in shown)
    assert layer.data.shape == (5, 480, 640)


def test_live_folder_scores_each_new_frame_in_order(widget, qtbot, tmp_path):
    """Live mode: a 'microscope' thread writes frames (each in two halves) into a folder while the widget
    watches; every frame is scored once, in order, shown in a growing layer; Cancel stops watching."""
    import threading
    import time

    from napari_sem_focus.io.series import write_series_tiff
    from napari_sem_focus.scoring.weights import load_model

    _viewer, w = widget
    frames, wds = simulate_series("tinball", 5000.0, steps=4, shape=(240, 320), seed=2)
    made = tmp_path / "made"
    made.mkdir()
    pairs = enumerate(zip(frames, wds, strict=True))
    sources = [write_series_tiff(made / f"f{i}.tif", [f.image], [f.facts(wd)]) for i, (f, wd) in pairs]
    watched = tmp_path / "incoming"
    watched.mkdir()
    load_model()

    def microscope():
        for i, src in enumerate(sources):
            data = src.read_bytes()
            with open(watched / f"frame_{i}.tif", "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(0.4)
                handle.write(data[len(data) // 2 :])

    worker = w.start_live(watched, poll_s=0.05, settle_s=0.15)
    writer = threading.Thread(target=microscope)
    writer.start()
    qtbot.waitUntil(lambda: len(w.rows) == 4, timeout=60_000)
    writer.join()
    assert [r["file"] for r in w.rows] == [f"frame_{i}.tif" for i in range(4)]
    assert w.live_layer is not None and w.live_layer.data.shape == (4, 240, 320)
    assert not w.live_button.isEnabled() and w.cancel_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        w.cancel()
    assert w.live_button.isEnabled() and len(w.rows) == 4
    assert w.peak is not None and w.rows[w.peak.index]["score"] == max(r["score"] for r in w.rows)


def test_the_widgets_of_one_viewer_share_their_model_and_other_viewers_keep_theirs(make_napari_viewer, qtbot):
    from napari_sem_focus._widgets.current_model import current_model
    from napari_sem_focus._widgets.score import ScoreStackWidget

    viewer, other_viewer = make_napari_viewer(), make_napari_viewer()
    first, second, other = ScoreStackWidget(viewer), ScoreStackWidget(viewer), ScoreStackWidget(other_viewer)
    first.weights_edit.setText("/models/tuned.safetensors")  # typed, without Enter: counts when scoring starts
    assert first._weights() == "/models/tuned.safetensors"
    assert second.weights_edit.text() == "/models/tuned.safetensors"
    assert current_model(viewer).weights == "/models/tuned.safetensors"
    assert other.weights_edit.text() == "" and current_model(other_viewer).weights is None
    second.set_weights(None)  # back to the bundled default, everywhere in this viewer
    assert first.weights_edit.text() == "" and current_model(viewer).weights is None


def test_a_growing_table_makes_only_its_new_rows_and_moves_the_highlight(qtbot):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTableWidget

    from napari_sem_focus._widgets.table import fill_table

    table = QTableWidget()
    qtbot.addWidget(table)
    rows = [[str(i), f"{i / 10:.1f}"] for i in range(5)]
    fill_table(table, ["frame", "score"], rows[:3], highlight=1)
    first = table.item(0, 0)
    fill_table(table, ["frame", "score"], rows, highlight=4, unchanged_rows=3)
    assert table.item(0, 0) is first  # kept, not made again
    assert [table.item(i, 1).text() for i in range(5)] == ["0.0", "0.1", "0.2", "0.3", "0.4"]
    green = Qt.GlobalColor.darkGreen
    assert [table.item(i, 0).background().color() == green for i in range(5)] == [False] * 4 + [True]
    assert not table.item(1, 0).flags() & Qt.ItemFlag.ItemIsEditable
    fill_table(table, ["frame", "score"], rows[:2], highlight=0)  # a new run: everything made again
    assert table.rowCount() == 2 and table.item(0, 0) is not first
    assert table.item(0, 0).background().color() == green


def test_a_growing_focus_curve_is_blitted_onto_axes_drawn_once(qtbot):
    """While rows come in, the axes, ticks and legend are drawn once (x-axis laid out for every expected frame)
    and only the curves are drawn onto them; a row beyond the axis widens it; the last call draws afresh."""

    from napari_sem_focus._widgets.plot import FocusPlot
    from napari_sem_focus.scoring.report import curve_peak

    plot = FocusPlot()
    qtbot.addWidget(plot)
    plot.show()
    qtbot.waitExposed(plot)
    full_drawings = []
    plot.canvas.mpl_connect("draw_event", lambda _event: full_drawings.append(len(plot.rows)))

    def rows(n):
        return [{"frame": i, "score": 9.0 - abs(i - 12) * 0.6, "spread": 0.2} for i in range(n)]

    def grow(n, expected=30):
        data = rows(n)
        plot.set_data(data, curve_peak(data, "score")[0], [], growing=True, frames_expected=expected)

    def score_curve():
        return next(a for a in plot.axes.get_lines() if a.get_label() == "score")

    grow(3)
    qtbot.waitUntil(lambda: 3 in full_drawings, timeout=5_000)  # the layout, in a turn of its own
    qtbot.wait(200)  # (and the drawing the widget's first showing asked for)
    full_drawings.clear()
    left, right = plot.axes.get_xlim()
    assert left < 0 < 29 < right < 31  # room for all 30 frames from the start
    for n in range(4, 21):
        grow(n)
        assert list(score_curve().get_xdata()) == list(range(n)) and score_curve().get_animated()
    qtbot.wait(100)
    assert full_drawings == []  # 17 refreshes, no full drawing: blitted onto the background
    assert len([a for a in plot.axes.get_lines() if a.get_label() == "score"]) == 1  # old curves removed
    before = plot.canvas.copy_from_bbox(plot.figure.bbox)
    grow(35)  # more frames than expected (a watched folder): the x-axis widens
    qtbot.waitUntil(lambda: full_drawings == [35], timeout=5_000)
    assert plot.axes.get_xlim()[1] > 34
    assert bytes(plot.canvas.copy_from_bbox(plot.figure.bbox)) != bytes(before)
    data = rows(35)
    plot.set_data(data, curve_peak(data, "score")[0], [])  # scoring ended
    qtbot.waitUntil(lambda: len(full_drawings) == 2, timeout=5_000)
    assert not score_curve().get_animated()


def test_a_short_dock_scrolls_instead_of_squeezing_the_plot(widget, qtbot):
    """Shorter than its contents, the widget scrolls vertically; the focus plot keeps its height (its legend)."""
    from qtpy.QtWidgets import QScrollArea

    _viewer, w = widget
    w.resize(w.width(), 400)
    qtbot.waitUntil(lambda: w.height() == 400, timeout=5_000)
    qtbot.wait(50)
    scroll = w.findChild(QScrollArea)
    assert scroll.verticalScrollBar().maximum() > 0
    assert w.plot.height() >= w.plot.canvas.minimumHeight() == 280
    assert scroll.horizontalScrollBar().maximum() == 0  # never sideways
