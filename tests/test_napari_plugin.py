"""The npe2 contributions as napari uses them: reader on real files, sample data, widgets from the menu."""

from __future__ import annotations

import pytest

from .conftest import shared

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


def test_reader_opens_real_fei_file_with_scale_and_metadata(make_napari_viewer):
    viewer = make_napari_viewer()
    path = shared("fei_sem2surface/P33_scale1_detectorA.tif")
    viewer.open(str(path), plugin="napari-sem-focus")
    layer = viewer.layers[0]
    assert layer.data.shape == (1103, 1536)
    assert tuple(layer.scale) == pytest.approx((325.521, 325.521))
    meta = layer.metadata["sem_focus"]
    assert meta["databar_rows"] == 79 and meta["metadata"]["working_distance_mm"] == pytest.approx(4.99405)


def test_reader_declines_other_files(tmp_path):
    from napari_sem_focus._reader import get_reader

    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path)) is None  # a folder without images


def test_sample_data_and_widgets_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sem-focus", "grid")
    layer = viewer.layers[0]
    assert layer.data.shape == (15, 768, 1024)
    truth = layer.metadata["focus_series"].truth
    assert max(range(15), key=lambda i: truth[i]["score"]) == 7
    _, score_widget = viewer.window.add_plugin_dock_widget("napari-sem-focus", "Score stack")
    _, train_widget = viewer.window.add_plugin_dock_widget("napari-sem-focus", "Label & fine-tune")
    assert score_widget.layer_box.current_choice == layer.name
    assert score_widget.mag_box.value == pytest.approx(1000.0)
    assert train_widget.layer_box.current_choice == layer.name
