"""Inference: tiles cover the field, pooling, focus maps, magnification sources, batching order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.infer import (
    FrameScore,
    frame_crops,
    interpret_score,
    model_magnification,
    pool,
    score_frames,
    score_series,
    tile_origins,
)
from napari_sem_focus.io import series_from_arrays
from napari_sem_focus.model import build_focus_net

from .conftest import texture


def test_tiles_cover_the_whole_field():
    origins = tile_origins((768, 1024))
    assert len(origins) == 16
    covered = np.zeros((768, 1024), bool)
    for r, c in origins:
        covered[r : r + 240, c : c + 320] = True
    assert covered.all()
    crops, _ = frame_crops(np.zeros((100, 120), np.float32), "tiles")  # smaller than a tile: padded
    assert crops.shape == (1, 240, 320)
    with pytest.raises(SemFocusError, match="unknown scoring mode"):
        frame_crops(np.zeros((300, 400), np.float32), "median")


def test_pool_is_upper_quartile_and_focus_map():
    assert pool(np.array([0.0, 1.0, 2.0, 3.0, 10.0])) == pytest.approx(3.0)
    fs = FrameScore(0, 5.0, np.array([2.0, 8.0]), [(0, 0), (0, 320)])
    fmap = fs.focus_map((240, 640))
    assert fmap[10, 10] == 2.0 and fmap[10, 600] == 8.0


def test_score_frames_order_and_modes():
    net = build_focus_net().eval()
    frames = [texture((300, 400), seed=i) for i in range(5)]
    tiles = list(score_frames(frames, 2000.0, net, "tiles", batch_size=3))
    assert [t.frame for t in tiles] == [0, 1, 2, 3, 4]
    assert all(len(t.tile_scores) == 4 and 0 <= t.score <= 10 for t in tiles)
    centre = list(score_frames(frames, 2000.0, net, "center"))
    assert all(len(t.tile_scores) == 1 for t in centre)


def test_model_magnification_sources():
    img = (texture((64, 64)) * 255).astype(np.uint8)
    by_pixel = series_from_arrays([img], [{"pixel_size_nm": 24.8046875}])
    assert model_magnification(by_pixel)[0] == pytest.approx(5000.0)
    vendor = series_from_arrays([img], [{"magnification": 1000.0}])
    mag, source = model_magnification(vendor)
    assert mag == pytest.approx(1000.0 * 64 / 1024) and "vendor" in source
    unknown = series_from_arrays([img])
    assert model_magnification(unknown) == (None, "unknown")
    assert model_magnification(unknown, 3000.0) == (3000.0, "given")
    with pytest.raises(SemFocusError, match=r"magnification .* is unknown"):
        next(score_series(unknown))


def test_interpretation_words():
    assert interpret_score(0.1).startswith("unusable")
    assert interpret_score(9.5) == "in focus"
