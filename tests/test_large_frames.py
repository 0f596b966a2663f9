"""Very large frames (stitched maps, 16k+ px scans) are read and scored band by band: the same structure, tiles and
crops as a normal frame, and the page is never decoded whole. "Large" is lowered to 0.1 Mpx here so that small
files take the large-frame path and can be compared with the normal one."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sem_focus.io import image_files
from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring import large_frames
from napari_sem_focus.scoring.infer import frame_crops, score_series, series_crops
from napari_sem_focus.simulate import simulate_series


@pytest.fixture
def map_tiff(tmp_path):
    """A 900x1300 16-bit grey TIFF (12-bit data) in LZW strips of 37 rows: a stitched map in miniature."""
    frames, _ = simulate_series("particles", 2000.0, steps=3, shape=(900, 1300), seed=2)
    frames = [f.image for f in frames]
    image = frames[1].astype(np.uint16) * 16  # 12-bit data
    path = tmp_path / "map.tif"
    tifffile.imwrite(path, image, rowsperstrip=37, compression="lzw")
    return path, image


def _large(monkeypatch, pixels=100_000):
    monkeypatch.setattr(image_files, "LARGE_FRAME_PIXELS", pixels)


@pytest.mark.parametrize("mode", ["structure", "center", "tiles"])
def test_a_large_frame_gives_the_tiles_crops_and_facts_of_a_normal_one(map_tiff, monkeypatch, mode):
    path, _ = map_tiff
    normal = read_series(path)
    assert not normal.is_large
    crops, origins, facts = frame_crops(normal.frame(0), mode)
    _large(monkeypatch)
    large = read_series(path)
    assert large.is_large
    assert large.intensity_map == normal.intensity_map == (0.0, 4095.0)  # the white level, read band by band
    big_crops, big_origins, big_facts = series_crops(large, 0, mode)
    assert big_origins == origins
    assert big_facts["has_structure"] == facts["has_structure"]
    assert big_facts["structure_fraction"] == pytest.approx(facts["structure_fraction"], abs=1e-12)
    np.testing.assert_array_equal(big_crops, crops)


def test_a_large_page_is_never_decoded_whole_and_its_tiles_are_capped(map_tiff, monkeypatch):
    path, _ = map_tiff
    _large(monkeypatch)
    expected = [r.score for r in score_series(read_series(path), magnification=2000.0, mode="tiles")]

    def refuse(page, *args, **kwargs):
        raise AssertionError("the whole page was decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    series = read_series(path)
    assert series.shape == (900, 1300)
    results = list(score_series(series, magnification=2000.0, mode="tiles"))
    assert [r.score for r in results] == pytest.approx(expected, abs=1e-5)
    monkeypatch.setattr(large_frames, "MAX_TILES", 5)
    (capped,) = score_series(series, magnification=2000.0, mode="tiles")
    assert len(capped.tile_origins) == 5 and capped.tile_origins[0] == (0, 0)
    assert capped.tile_origins[-1] == results[0].tile_origins[-1]  # evenly spread from the first to the last


def test_bands_of_strips_and_tiles_are_the_stored_rows(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65535, (700, 500), dtype=np.uint16)
    windows = [(0, 240), (100, 340), (300, 540), (600, 700), (690, 700)]
    for layout in ({"rowsperstrip": 37}, {"tile": (64, 128), "compression": "zlib"}, {}):
        tifffile.imwrite(tmp_path / "a.tif", image, **layout)
        bands = list(image_files._tiff_page_bands(tmp_path / "a.tif", 0, windows))
        assert [b.shape[0] for b in bands] == [b - a for a, b in windows]
        for band, (a, b) in zip(bands, windows, strict=True):
            np.testing.assert_array_equal(band, image[a:b])


def test_cli_scores_a_large_map_and_says_why_metrics_are_missing(map_tiff, monkeypatch, capsys):
    from napari_sem_focus.cli import main

    path, _ = map_tiff
    _large(monkeypatch)
    assert main(["score", str(path), "--mag", "2000", "--metrics"]) == 0
    out = capsys.readouterr()
    assert "classic metrics are not computed for frames above 64 Mpx" in out.out + out.err


def test_a_large_frame_that_cannot_be_read_in_parts_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    """One compressed strip of the whole page, or a colour page, or a PNG: each would be decoded whole. Above the
    limit they are refused with a message that says why and what to do; grey strips and tiles are read."""
    import cv2

    from napari_sem_focus.errors import FrameTooLargeError

    image = (np.random.default_rng(0).random((600, 800)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "one_strip.tif", image, rowsperstrip=600, compression="zlib")
    tifffile.imwrite(tmp_path / "strips.tif", image, rowsperstrip=16, compression="zlib")
    tifffile.imwrite(tmp_path / "tiles.tif", image, tile=(64, 64), compression="zlib")
    tifffile.imwrite(tmp_path / "rgb.tif", np.dstack([image] * 3), photometric="rgb")
    cv2.imwrite(str(tmp_path / "grey.png"), image)
    cv2.imwrite(str(tmp_path / "colour.jpg"), np.dstack([image] * 3))
    _large(monkeypatch, pixels=100_000)  # 480,000 px frames count as large
    monkeypatch.setattr(image_files, "WHOLE_DECODE_LIMIT_BYTES", 200_000)  # one strip of 480,000 bytes is over

    def refuse(page, *args, **kwargs):
        raise AssertionError("a page was decoded whole")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    for name, what in [
        ("one_strip.tif", "its largest strip"),
        ("rgb.tif", "a colour or palette page"),
        ("grey.png", "a PNG, JPEG or BMP image"),
        ("colour.jpg", "a PNG, JPEG or BMP image"),
    ]:
        with pytest.raises(FrameTooLargeError, match=f"800x600 px frame .* {what}.*save it as a grey TIFF in strips"):
            read_series(tmp_path / name)
    for name in ("strips.tif", "tiles.tif"):
        series = read_series(tmp_path / name)
        (result,) = score_series(series, magnification=2000.0, mode="center")
        assert series.is_large and 0.0 <= result.score <= 10.0


def test_a_large_frame_holds_about_one_band_at_a_time(tmp_path, monkeypatch):
    """Peak memory of cutting a large frame's crops: about one band (the frame's width x a tile's rows) plus the
    crops, not one band per row of tiles (a 40,000 px mosaic held 7 GB that way)."""
    import tracemalloc

    image = (np.random.default_rng(1).random((4000, 8000)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "wide.tif", image, rowsperstrip=16, compression="zlib")
    _large(monkeypatch, pixels=1_000_000)
    monkeypatch.setattr(large_frames, "MAX_TILES", 16)
    series = read_series(tmp_path / "wide.tif")
    band_bytes = 8000 * 260 * 4  # one float32 band with its margins
    tracemalloc.start()
    try:
        crops, origins, _ = series_crops(series, 0, "tiles")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(origins) == 16 and len({r for r, _ in origins}) >= 12  # crops from most of the 17 rows of tiles
    assert crops.shape == (16, 240, 320) and crops.flags.owndata
    assert peak < 9 * band_bytes, f"{peak / band_bytes:.1f} bands held at once"  # was 20: one per row of tiles


def test_napari_gets_a_pyramid_of_a_large_frame_read_band_by_band(map_tiff, monkeypatch):
    """The reader's layer data for a frame above 64 Mpx: a multiscale pyramid (full resolution, then halved by area
    averaging down to 2,048 px) whose bands are read from the TIFF's strips, never the whole page at once."""
    import cv2

    from napari_sem_focus._reader import series_layer_data
    from napari_sem_focus.io import lazy

    path, image = map_tiff
    _large(monkeypatch)
    monkeypatch.setattr(lazy, "PYRAMID_TOP_PX", 300)  # 1300 px wide: levels 1, 1/2, 1/4, 1/8
    monkeypatch.setattr(lazy, "BAND_BYTES", 100_000)  # bands of ~38 source rows: many chunks

    def refuse(page, *args, **kwargs):
        raise AssertionError("the whole page was decoded")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    levels, kwargs, kind = series_layer_data(read_series(path))
    assert kind == "image" and kwargs["multiscale"] is True
    assert [lvl.shape for lvl in levels] == [(900, 1300), (450, 650), (225, 325), (113, 163)]
    assert levels[0].numblocks[0] > 10  # read in bands, not as one chunk
    np.testing.assert_array_equal(levels[0][100:300, 50:400].compute(), image[100:300, 50:400])
    half = cv2.resize(image, (650, 450), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(levels[1].compute(), half)
    assert levels[3].compute().dtype == np.uint16


def test_a_giant_frame_s_focus_map_is_drawn_on_a_coarser_grid():
    from napari_sem_focus.scoring.infer import FrameScore, focus_map_step

    result = FrameScore(0, 5.0, np.array([2.0, 8.0]), [(0, 0), (0, 320)])
    full = result.focus_map((240, 640))
    assert full.shape == (240, 640) and full[0, 0] == 2.0 and full[0, 639] == 8.0
    assert focus_map_step((240, 640)) == 1 and focus_map_step((40_000, 40_000)) == 20
    coarse = result.focus_map((240, 640), step=20)
    assert coarse.shape == (12, 32)
    np.testing.assert_array_equal(coarse, full[::20, ::20])
