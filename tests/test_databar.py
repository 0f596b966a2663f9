"""Data-bar detection from pixels, checked against the heights the metadata states."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sem_focus.io.databar import detect_databar_rows
from napari_sem_focus.io.series import read_series

from .conftest import shared


@pytest.mark.parametrize(
    ("relative", "stated"),
    [
        ("fei_sem2surface/P33_scale1_detectorA.tif", 79),
        ("vendor_metadata/thermofisher_fei/tfs_example.tif", 68),
        ("vendor_metadata/tescan/tescan_example_sem1.tif", 120),
    ],
)
def test_pixel_detection_agrees_with_metadata(relative, stated):
    """Without its metadata, the detector finds the bar the vendor states (within 2 rows)."""
    frame = tifffile.imread(shared(relative))
    assert abs(detect_databar_rows(frame) - stated) <= 2


@pytest.mark.parametrize(
    "relative",
    ["deepfocus/series_0_def-13324_astx-466_asty219_base.png", "vendor_metadata/jeol/jeol_example_sem.tif"],
)
def test_no_bar_no_crop(relative):
    """DeepFocus has no bar; JEOL's text is burned into the image, not a bar."""
    assert read_series(shared(relative)).databar_rows == 0


def test_constant_and_float_frames_have_no_bar():
    assert detect_databar_rows(np.full((200, 300), 7, np.uint8)) == 0
    assert detect_databar_rows(np.random.default_rng(0).random((200, 300))) == 0


def test_synthetic_bar_with_text_and_border():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (400, 500), dtype=np.uint8)
    frame[360:] = 20  # 40-row bar
    frame[360] = 255  # border line
    frame[375:385, 50:120] = 240  # "text"
    assert detect_databar_rows(frame) == 40


def test_user_override(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (100, 120), dtype=np.uint8))
    series = read_series(path, databar_rows=10)
    assert series.databar_source == "user"
    assert series.frame(0).shape == (90, 120)
