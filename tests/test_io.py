"""Reading files, stacks and folders; the intensity rule; every bad input gives a clear SemFocusError."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from napari_sem_focus.errors import (
    InvalidImageError,
    MixedFrameSizesError,
    SemFocusError,
    SeriesError,
    UnreadableImageError,
)
from napari_sem_focus.io.intensity import to_float
from napari_sem_focus.io.series import read_series, write_series_tiff

from .conftest import shared, texture


def _write(path, array):
    tifffile.imwrite(path, array)
    return path


def test_uint8_divides_by_255(tmp_path):
    """uint8 frames are converted in one pass: the same float32 values as the arithmetic, also for a region."""
    img = (texture() * 200).astype(np.uint8)
    series = read_series(_write(tmp_path / "a.tif", img))
    np.testing.assert_allclose(series.frame(0), img / 255.0, atol=1e-6)
    exact = img.astype(np.float32) * np.float32(1 / 255)
    assert series.frame(0).dtype == np.float32 and np.array_equal(series.frame(0), exact)
    part = series.with_roi((10, 5, 100, 80))
    assert np.array_equal(part.frame(0), exact[5:85, 10:110])


@pytest.mark.parametrize(
    ("dtype", "offset", "scale"),
    [
        (np.uint8, 0.0, 255.0),
        (np.uint8, 0.0, 1023.0),
        (np.uint16, 0.0, 65535.0),
        (np.uint16, 0.0, 4095.0),  # 12-bit data: the levels above 4095 clip to 1
        (np.int16, -32768.0, 65535.0),
        (np.uint16, 100.0, 60000.0),  # an offset the intensity rule never uses: NumPy's arithmetic
        (np.dtype(">u2"), 0.0, 65535.0),  # big-endian pixels as tifffile may return them
    ],
)
def test_every_8_and_16_bit_level_converts_to_the_float32_of_the_arithmetic(dtype, offset, scale):
    """The one-pass conversion gives bit for bit the float32 ``(raw - offset) / scale`` clipped to [0, 1]."""
    info = np.iinfo(dtype)
    levels = np.arange(info.min, info.max + 1).astype(dtype).reshape(-1, 256)
    expected = levels.astype(np.float32)
    expected -= np.float32(offset)
    expected *= np.float32(1.0 / scale)
    np.clip(expected, 0.0, 1.0, out=expected)
    for region in (np.s_[:, :], np.s_[1:, 3:200]):  # whole, and a region (a strided view)
        got = to_float(levels[region], offset, scale)
        assert got.dtype == np.float32 and np.array_equal(got, expected[region])


def test_uint16_full_range_not_squeezed_to_8_bit(tmp_path):
    img = (texture() * 65535).astype(np.uint16)
    frame = read_series(_write(tmp_path / "a.tif", img)).frame(0)
    np.testing.assert_allclose(frame, img / 65535.0, atol=1e-6)
    assert len(np.unique(frame)) > 256  # the 16-bit precision survives


def test_12_bit_data_in_uint16_uses_4095(tmp_path):
    img = (texture() * 4000).astype(np.uint16)
    series = read_series(_write(tmp_path / "a.tif", img))
    assert series.intensity_map == (0.0, 4095.0)
    assert series.frame(0).max() == pytest.approx(4000 / 4095, abs=1e-3)


def test_white_level_is_shared_by_the_whole_stack(tmp_path):
    stack = np.stack([(texture(seed=i) * (60 + 100 * i)).astype(np.uint8) for i in range(2)])
    series = read_series(_write(tmp_path / "s.tif", stack))
    assert series.frame(0).max() < series.frame(1).max()  # no per-frame stretch


def test_float_inside_unit_range_kept_and_outside_scaled(tmp_path):
    img = texture()
    np.testing.assert_allclose(read_series(_write(tmp_path / "a.tif", img)).frame(0), img, atol=1e-6)
    series = read_series(_write(tmp_path / "b.tif", img * 1000 - 50))
    frame = series.frame(0)
    assert frame.min() == 0.0 and frame.max() == pytest.approx(1.0)
    assert any("min-max" in n for n in series.notes)


def test_signed_integers(tmp_path):
    img = (texture() * 2000 - 1000).astype(np.int16)
    frame = read_series(_write(tmp_path / "a.tif", img)).frame(0)
    assert 0.0 <= frame.min() < frame.max() <= 1.0


def test_rgb_converted_to_grey_with_note(tmp_path):
    grey = (texture() * 255).astype(np.uint8)
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])
    series = read_series(tmp_path / "c.png")
    assert series.frame(0).ndim == 2
    assert any("RGB converted to grey" in n for n in series.notes)


def test_multipage_stack_with_frame_facts_round_trip(tmp_path):
    frames = [(texture(seed=i) * 255).astype(np.uint8) for i in range(3)]
    facts = [
        {
            "working_distance_mm": 5.0 + i * 0.01,
            "magnification": 5000.0,
            "pixel_size_nm": 25.4,
            "defocus_um": (i - 1) * 10.0,
        }
        for i in range(3)
    ]
    path = write_series_tiff(tmp_path / "s.tif", frames, facts)
    series = read_series(path)
    assert len(series) == 3
    assert series.working_distance_mm == pytest.approx([5.0, 5.01, 5.02])
    assert series.magnification == 5000.0
    assert [t["defocus_um"] for t in series.truth] == [-10.0, 0.0, 10.0]
    np.testing.assert_array_equal(series.raw_frame(2), frames[2])


def test_folder_natural_order_and_wd_order(tmp_path):
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), (texture(seed=i) * 255).astype(np.uint8))
    assert [p.name for p in read_series(tmp_path).frame_paths] == [
        "frame_1.png",
        "frame_2.png",
        "frame_10.png",
    ]
    wd_dir = tmp_path / "wd"
    wd_dir.mkdir()
    for name, wd in (("a.tif", 5.2), ("b.tif", 5.0), ("c.tif", 5.1)):
        write_series_tiff(wd_dir / name, [(texture() * 255).astype(np.uint8)], [{"working_distance_mm": wd}])
    series = read_series(wd_dir)
    assert [p.name for p in series.frame_paths] == ["b.tif", "c.tif", "a.tif"]
    assert "frames ordered by working distance" in series.notes


def test_real_palette_png_series_with_common_crop():
    folder = shared("optical_through_focus")
    with pytest.raises(MixedFrameSizesError, match="differ in size"):
        read_series(folder)
    series = read_series(folder, common_crop=True)
    assert len(series) == 19
    assert series.shape == (286, 330)


def test_deepfocus_png_reads_as_uint8_grey():
    series = read_series(shared("deepfocus"))
    assert len(series) == 3 and series.shape == (768, 1024) and series.dtype == np.uint8


# --- bad input -----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableImageError, match="no such file"):
        read_series(tmp_path / "nope.tif")


def test_corrupt_tiff(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(UnreadableImageError, match=r"bad\.tif"):
        read_series(path)


def test_truncated_tiff(tmp_path):
    good = _write(tmp_path / "good.tif", (texture((256, 256)) * 255).astype(np.uint8))
    data = good.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SemFocusError, match=r"truncated\.tif"):
        series = read_series(bad)
        series.frame(0)


def test_corrupt_png(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(UnreadableImageError, match=r"bad\.png"):
        read_series(path)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SeriesError, match="no image files"):
        read_series(tmp_path)


def test_mixed_sizes(tmp_path):
    _write(tmp_path / "a.tif", np.zeros((64, 64), np.uint8))
    _write(tmp_path / "b.tif", np.zeros((64, 80), np.uint8))
    with pytest.raises(SeriesError, match="differ in size"):
        read_series(tmp_path)


def test_nan_and_inf(tmp_path):
    img = texture()
    img[5, 5] = np.nan
    img[6, 6] = np.inf
    series = read_series(_write(tmp_path / "nan.tif", img))
    with pytest.raises(InvalidImageError, match="2 pixels are NaN or infinite"):
        series.frame(0)


def test_tiny_image(tmp_path):
    with pytest.raises(InvalidImageError, match="minimum"):
        read_series(_write(tmp_path / "tiny.tif", np.zeros((8, 8), np.uint8)))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "x.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(UnreadableImageError, match="unsupported file type"):
        read_series(path)


def test_json_description_of_foreign_tiff_is_ignored(tmp_path):
    path = tmp_path / "d.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8), description=json.dumps({"other": 1}), metadata=None)
    assert read_series(path).truth == [{}]


def test_series_from_stack_refuses_empty_and_converts_rgb():
    from napari_sem_focus.io.series import series_from_stack

    with pytest.raises(InvalidImageError, match="empty"):
        series_from_stack(np.zeros((0, 64), np.uint8))
    with pytest.raises(InvalidImageError, match="2D image or a 3D"):
        series_from_stack(np.zeros((2, 3, 64, 64), np.uint8))
    rgb = np.zeros((3, 40, 50, 3), np.uint8)
    rgb[..., 0] = 200
    series = series_from_stack(rgb, rgb=True)
    assert len(series) == 3 and series.frame(1).shape == (40, 50)
    assert series.frame(0).max() == pytest.approx(round(200 * 0.299) / 255, abs=1e-6)


# --- region of interest --------------------------------------------------------------------------------------


def test_roi_restricts_every_frame_and_reports_itself():
    from napari_sem_focus.io.series import series_from_arrays

    frames = [(texture((300, 400), seed=i) * 255).astype(np.uint8) for i in range(2)]
    series = series_from_arrays(frames).with_roi((50, 20, 200, 100))
    assert series.roi == (50, 20, 200, 100) and series.scored_shape == (100, 200)
    np.testing.assert_allclose(series.frame(1), frames[1][20:120, 50:250] / 255.0, atol=1e-6)
    assert series.describe()["roi"] == [50, 20, 200, 100]
    assert series.with_roi(None).scored_shape == (300, 400)


def test_roi_clipped_outside_and_too_small():
    from napari_sem_focus.io.series import series_from_arrays

    series = series_from_arrays([(texture((300, 400)) * 255).astype(np.uint8)])
    clipped = series.with_roi((300, 200, 500, 500))
    assert clipped.roi == (300, 200, 100, 100) and "clipped" in clipped.notes[-1]
    with pytest.raises(InvalidImageError, match="outside the 400x300 px image"):
        series.with_roi((500, 10, 50, 50))
    with pytest.raises(InvalidImageError, match=r"60x40 px, smaller than the 320x240 px"):
        series.with_roi((10, 10, 60, 40), min_shape=(240, 320))
    with pytest.raises(InvalidImageError, match="clipped to the image"):
        series.with_roi((300, 0, 400, 300), min_shape=(240, 320))
    with pytest.raises(InvalidImageError, match="positive size"):
        series.with_roi((10, 10, 0, 40))


def test_roi_stays_above_the_data_bar():
    from napari_sem_focus.io.series import series_from_arrays

    series = series_from_arrays([(texture((300, 400)) * 255).astype(np.uint8)], databar_rows=60)
    assert series.with_roi((0, 200, 400, 100)).roi == (0, 200, 400, 40)


def test_roi_from_napari_rectangle_vertices():
    from napari_sem_focus.io.roi import roi_from_vertices

    corners = [[-0.5, -0.5], [-0.5, 319.5], [239.5, 319.5], [239.5, -0.5]]  # rows, cols as napari draws them
    assert roi_from_vertices(corners) == (0.0, 0.0, 320.0, 240.0)
    assert roi_from_vertices([[10.5, 20.5], [50.5, 100.5]]) == (21.0, 11.0, 80.0, 40.0)


def test_a_long_stack_is_opened_once_not_once_per_frame(tmp_path, monkeypatch):
    """Frame after frame of a multi-page TIFF reuses the open file (re-opening and walking every page per frame
    made the time per frame grow with the stack: benchmarks/bench_long_stack.py); a rewritten file is re-read."""
    import napari_sem_focus.io.image_files as image_files
    import napari_sem_focus.io.series as io_module

    frames = [np.full((32, 48), i, np.uint8) for i in range(40)]
    path = io_module.write_series_tiff(tmp_path / "long.tif", frames, [{"magnification": 5000}] * 40)
    opened = []
    real_open = image_files._open_tiff
    monkeypatch.setattr(image_files, "_open_tiff", lambda p: opened.append(p) or real_open(p))
    series = io_module.read_series(path)
    values = [float(series.raw_frame(i)[0, 0]) for i in range(40)]
    assert values == [float(i) for i in range(40)]
    assert len(opened) <= 2  # the header inspection, then one open file for all frames
    io_module.write_series_tiff(path, frames[::-1] + frames[:1], [{"magnification": 5000}] * 41)
    assert float(io_module.read_series(path).raw_frame(0)[0, 0]) == 39.0  # the new content, not the cached file


def test_a_lazy_8_bit_stack_is_scored_frame_by_frame_without_reading_it_all_first():
    """A napari layer backed by a dask array (e.g. a 2,000-frame stack opened lazily): the first score comes after
    reading one batch of frames, not the whole stack (8-bit data needs no white-level pass over the series), and
    each frame is read a bounded number of times."""
    from collections import Counter

    import dask
    import dask.array as da

    from napari_sem_focus.io.series import series_from_stack
    from napari_sem_focus.scoring.analysis import score_rows
    from napari_sem_focus.scoring.infer import BATCH_SIZE

    reads: Counter = Counter()

    def block(i):
        reads[i] += 1
        return (np.random.default_rng(i).random((240, 320)) * 255).astype(np.uint8)

    stack = da.stack([da.from_delayed(dask.delayed(block)(i), (240, 320), np.uint8) for i in range(40)])
    series = series_from_stack(stack, name="lazy")
    rows = score_rows(series, None, 5000.0, "center", "cpu", metrics=())
    next(rows)
    assert len(reads) <= BATCH_SIZE + 1 < 40  # one model batch (32 centre crops) before the first result, not all 40
    list(rows)
    assert len(reads) == 40 and max(reads[i] for i in range(1, 40)) == 1  # frame 0 is also read when opened
