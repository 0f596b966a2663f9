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


def test_a_large_frame_opens_as_a_pyramid_without_being_decoded_whole(make_napari_viewer, tmp_path, monkeypatch):
    import numpy as np
    import tifffile

    from napari_sem_focus.io import image_files, lazy

    image = (np.random.default_rng(0).random((1200, 1600)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "map.tif", image, tile=(256, 256), compression="zlib")
    monkeypatch.setattr(image_files, "LARGE_FRAME_PIXELS", 1_000_000)  # 1.9 Mpx counts as large
    monkeypatch.setattr(lazy, "PYRAMID_TOP_PX", 512)

    def refuse(page, *args, **kwargs):
        raise AssertionError("the whole page was decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "map.tif"), plugin="napari-sem-focus")
    layer = viewer.layers[0]
    assert layer.multiscale and [lvl.shape for lvl in layer.data] == [(1200, 1600), (600, 800), (300, 400)]
    shot = viewer.screenshot(canvas_only=True, flash=False)  # draws the level napari chooses, read band by band
    assert shot.std() > 0
