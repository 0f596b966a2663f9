"""Inference: tiles cover the field, pooling, focus maps, magnification sources, batching order."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.io.series import series_from_arrays
from napari_sem_focus.scoring.infer import (
    FrameScore,
    frame_crops,
    interpret_score,
    model_magnification,
    pool,
    score_frames,
    score_series,
    tile_origins,
)
from napari_sem_focus.scoring.model import build_focus_net

from .conftest import texture


def test_tiles_cover_the_whole_field():
    origins = tile_origins((768, 1024))
    assert len(origins) == 16
    covered = np.zeros((768, 1024), bool)
    for r, c in origins:
        covered[r : r + 240, c : c + 320] = True
    assert covered.all()
    for mode in ("tiles", "structure", "center"):
        crops, origins, facts = frame_crops(np.zeros((100, 120), np.float32), mode)  # smaller than a tile: padded
        assert np.shape(crops) == (1, 240, 320) and len(origins) == 1
        assert facts["has_structure"] is False and facts["structure_fraction"] == 0.0
    with pytest.raises(SemFocusError, match="unknown scoring mode"):
        frame_crops(np.zeros((300, 400), np.float32), "median")


def test_pool_per_mode_and_focus_map():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    assert pool(scores, "tiles")[0] == pytest.approx(3.0)  # upper quartile
    assert pool(scores, "structure") == pytest.approx((3.2, float(np.std(scores))))  # mean, spread
    score, spread = pool(np.array([7.0]), "center")
    assert score == 7.0 and np.isnan(spread)
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
    assert all(len(t.tile_scores) == 1 and np.isnan(t.spread) for t in centre)
    structure = list(score_frames(frames, 2000.0, net))  # the default mode
    assert all(1 <= len(t.tile_scores) <= 4 and t.spread >= 0 and t.has_structure for t in structure)


def test_batches_hold_exactly_batch_size_crops_and_frames_spanning_two_come_out_whole_in_order():
    """Frames of 4 crops in batches of 3: every batch but the last holds 3 crops, a frame's crops span two batches,
    and each frame's tile scores are those it gets when scored alone."""
    net = build_focus_net().eval()
    sizes = []

    def counting(x, mag):
        sizes.append(len(x))
        return net(x, mag)

    frames = [texture((300, 400), seed=i) for i in range(5)]  # 4 tiles each
    together = list(score_frames(frames, 2000.0, counting, "tiles", batch_size=3, bf16=False))
    assert sizes == [3] * 6 + [2] and [t.frame for t in together] == [0, 1, 2, 3, 4]
    for frame, result in zip(frames, together, strict=True):
        (alone,) = score_frames([frame], 2000.0, net, "tiles", batch_size=4, bf16=False)
        np.testing.assert_allclose(result.tile_scores, alone.tile_scores, atol=1e-4)
        assert result.score == pytest.approx(alone.score, abs=1e-4) and result.tile_origins == alone.tile_origins


def test_crops_are_views_of_the_frame_copied_once_into_a_reused_batch():
    """frame_crops cuts views (no copy); the batching copies them into one batch buffer, reused batch after batch,
    and the frames' crops are not kept once copied."""
    frame = texture((600, 800), seed=1)
    crops, _, _ = frame_crops(frame, "tiles")
    assert all(np.shares_memory(c, frame) for c in crops)
    net = build_focus_net().eval()
    buffers = []

    def recording(x, mag):
        buffers.append(x.data_ptr())
        return net(x, mag)

    results = list(score_frames([frame, frame * 0.5, frame], 2000.0, recording, "tiles", batch_size=3, bf16=False))
    assert len(set(buffers)) == 1 and len(buffers) == len(crops)  # 3 frames of n crops: n batches of 3, one buffer
    assert results[0].tile_scores == pytest.approx(results[2].tile_scores)


def test_the_batch_buffer_is_page_locked_for_a_cuda_device_only():
    import torch

    from napari_sem_focus.scoring.infer import batch_buffer

    cpu = batch_buffer((4, 240, 320), "cpu")
    assert cpu.shape == (4, 240, 320) and cpu.dtype == np.float32
    assert not torch.from_numpy(cpu).is_pinned()
    if torch.cuda.is_available():  # on a GPU machine: pinned, and the scores are those of the CPU
        pinned = batch_buffer((4, 240, 320), "cuda")
        assert torch.from_numpy(pinned).is_pinned()
        net = build_focus_net().eval()
        frames = [texture((300, 400), seed=i) for i in range(3)]
        on_cpu = [r.score for r in score_frames(frames, 2000.0, net, "tiles", batch_size=3, bf16=False)]
        on_gpu = [
            r.score for r in score_frames(frames, 2000.0, net.cuda(), "tiles", batch_size=3, device="cuda", bf16=False)
        ]
        np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3)


def _corner_texture_frame() -> np.ndarray:
    """A 768x1024 frame: flat grey with texture only in its top-left 300x400 px."""
    frame = np.full((768, 1024), 0.4, np.float32)
    frame[:300, :400] = texture((300, 400), seed=3)
    return frame


def test_structure_mode_scores_only_the_tiles_with_structure():
    frame = _corner_texture_frame()
    _, origins, facts = frame_crops(frame, "structure")
    assert origins and all(r < 300 and c < 400 for r, c in origins)  # only tiles reaching into the texture
    assert (0, 0) in origins and len(origins) < len(tile_origins(frame.shape))
    assert facts["has_structure"] and 0.1 < facts["structure_fraction"] < 0.3  # 300x400 of 768x1024 px = 15 %
    _, _, centre_facts = frame_crops(frame, "center")
    assert not centre_facts["has_structure"]  # the paper's centre crop sees only the flat part


def test_noise_and_blank_frames_have_no_structure():
    rng = np.random.default_rng(0)
    for frame in (rng.normal(0.5, 0.2, (480, 640)), np.zeros((480, 640)), rng.poisson(3, (480, 640)) / 9):
        _, origins, facts = frame_crops(np.clip(frame, 0, 1).astype(np.float32), "structure")
        assert not facts["has_structure"] and facts["structure_fraction"] < 0.05
        assert len(origins) == len(tile_origins((480, 640)))  # no structure: every tile is scored


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


def test_structure_fraction_is_the_area_of_the_structured_tiles():
    """The cell-grid count equals counting pixels, for any tile grid and any structured subset; the noise estimate
    is Immerkaer's mean absolute response."""
    import math

    import cv2

    from napari_sem_focus.scoring.structure import STRUCTURE_FLOOR, StructureMap, noise_sigma

    rng = np.random.default_rng(0)
    frame = rng.random((500, 700), dtype=np.float32)
    structure = StructureMap(frame)
    for size in ((240, 320), (100, 130), (600, 800)):
        origins = tile_origins(frame.shape, size)
        for _ in range(20):
            values = rng.random(len(origins)).astype(np.float32) * 2 * STRUCTURE_FLOOR
            covered = np.zeros(frame.shape, bool)
            for (r, c), value in zip(origins, values, strict=True):
                if value >= STRUCTURE_FLOOR:
                    covered[r : r + size[0], c : c + size[1]] = True
            assert structure.fraction(origins, size, values) == pytest.approx(covered.mean(), abs=1e-12)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(frame, -1, kernel)[1:-1, 1:-1]
    assert noise_sigma(frame) == pytest.approx(math.sqrt(math.pi / 2) * np.abs(response).mean() / 6, rel=1e-6)


@pytest.mark.parametrize(
    ("dtype", "white", "exact"), [(np.uint8, 255, True), (np.uint16, 65535, True), (np.uint16, 4095, False)]
)
def test_a_stored_frame_s_noise_is_measured_on_its_grey_levels_with_the_same_result(tmp_path, dtype, white, exact):
    """8-bit and full-range 16-bit frames: the pixel noise measured on the stored grey levels equals the float
    frame's (and a series' crops, tiles and structure facts equal those of its float frames); where the intensity
    rule could clip (12-bit data in uint16) the float frame is measured instead."""
    from napari_sem_focus.io.series import read_series, write_series_tiff
    from napari_sem_focus.scoring.infer import series_crops
    from napari_sem_focus.scoring.structure import noise_sigma, raw_noise_sigma

    rng = np.random.default_rng(3)
    frames = [
        np.clip((texture((500, 700), seed=i) * 0.8 + rng.normal(0, 0.05, (500, 700))) * white, 0, white).astype(dtype)
        for i in range(2)
    ]
    frames[0][0, 0] = white  # the white level is the type's (or 4095) whatever the texture reaches
    series = read_series(write_series_tiff(tmp_path / "s.tif", frames, [{"magnification": 2000.0}] * 2))
    assert series.intensity_map == (0.0, float(white))
    measured = raw_noise_sigma(frames[1], *series.intensity_map)
    if not exact:
        assert measured is None
        return
    assert measured == pytest.approx(noise_sigma(series.frame(1)), rel=1e-6)
    for mode in ("structure", "center", "tiles"):
        crops, origins, facts = series_crops(series, 1, mode)
        float_crops, float_origins, float_facts = frame_crops(series.frame(1), mode)
        assert np.array_equal(crops, float_crops) and origins == float_origins
        assert facts == pytest.approx(float_facts, rel=1e-6)


def test_structure_on_2x2_blocks_equals_the_full_resolution_low_pass():
    """The structure map low-passes the 2x2-binned frame: tile by tile it gives what the 2-px Gaussian of the full
    frame gives (noise removed the same way), and white noise alone measures no structure."""
    import math

    import cv2

    from napari_sem_focus.scoring.structure import STRUCTURE_FLOOR, STRUCTURE_SIGMA_PX, StructureMap, noise_sigma

    rng = np.random.default_rng(2)
    clean = cv2.resize(texture((120, 160), seed=2), (640, 480), interpolation=cv2.INTER_CUBIC) * 0.6 + 0.2
    noisy = (clean + rng.normal(0, 0.08, clean.shape)).astype(np.float32)
    origins, size = tile_origins(noisy.shape, (120, 160)), (120, 160)
    full = cv2.GaussianBlur(noisy, (0, 0), STRUCTURE_SIGMA_PX, borderType=cv2.BORDER_REFLECT)
    residue = noise_sigma(noisy) / (2 * math.sqrt(math.pi) * STRUCTURE_SIGMA_PX)
    expected = [math.sqrt(max(full[r : r + 120, c : c + 160].var() - residue**2, 0)) for r, c in origins]
    structure = StructureMap(noisy)
    assert structure.binning == 2 and structure.lowpass.shape == (240, 320)
    np.testing.assert_allclose(structure.regions(origins, size), expected, rtol=0.03)
    assert min(expected) > 0.05  # the texture is structured everywhere
    noise = (0.5 + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    raw_std = cv2.GaussianBlur(noise, (0, 0), STRUCTURE_SIGMA_PX).std()
    assert StructureMap(noise).regions(origins, size).max() < STRUCTURE_FLOOR / 5 < raw_std  # the residue removed
    tiny = StructureMap(noisy[:6, :6])  # too small to bin: measured as it is
    assert tiny.binning == 1 and tiny.lowpass.shape == (6, 6)


def test_frames_prepared_ahead_come_in_order_with_their_errors_and_stop_when_closed():
    import threading

    from napari_sem_focus.scoring.infer import prepared_ahead

    assert list(prepared_ahead(range(7))) == list(range(7))
    threads = set()

    def frames():
        for i in range(100):
            threads.add(threading.current_thread().name)
            if i == 3:
                raise ValueError("frame 3 is damaged")
            yield i

    got = []
    with pytest.raises(ValueError, match="frame 3"):
        for item in prepared_ahead(frames()):
            got.append(item)
    assert got == [0, 1, 2] and threads == {next(iter(threads))} != {threading.current_thread().name}
    produced = []

    def counted():
        for i in range(100):
            produced.append(i)
            yield i

    ahead = prepared_ahead(counted(), depth=2)
    assert next(ahead) == 0
    ahead.close()  # the consumer stops (Cancel): nothing more is read than what was already ahead
    assert len(produced) <= 3


def test_frames_prepared_in_parallel_come_in_order_with_their_errors_and_stop_when_closed():
    import threading
    import time

    from napari_sem_focus.scoring.infer import prepared_in_parallel

    threads = set()

    def prepare(i):
        threads.add(threading.current_thread().name)
        time.sleep(0.002 * (i % 3))  # later items may finish first
        if i == 7:
            raise ValueError("frame 7 is damaged")
        return i * i

    assert list(prepared_in_parallel(prepare, 7, workers=3)) == [i * i for i in range(7)]
    assert len(threads) > 1 and threading.current_thread().name not in threads
    got = []
    with pytest.raises(ValueError, match="frame 7"):
        for item in prepared_in_parallel(prepare, 20, workers=3):
            got.append(item)
    assert got == [i * i for i in range(7)]
    started = []

    def counted(i):
        started.append(i)
        return i

    ahead = prepared_in_parallel(counted, 100, workers=2, depth=4)
    assert next(ahead) == 0
    ahead.close()  # the consumer stops (Cancel): no more than what was already ahead was started
    assert len(started) <= 5


def test_series_prepared_in_parallel_give_the_crops_of_the_series_read_in_order(tmp_path):
    from napari_sem_focus.io.series import read_series, write_series_tiff
    from napari_sem_focus.scoring.infer import prepared_in_parallel, series_crops

    frames = [(texture((500, 700), seed=i) * 255).astype(np.uint8) for i in range(6)]
    series = read_series(write_series_tiff(tmp_path / "s.tif", frames, [{"magnification": 2000.0}] * 6))
    parallel = list(prepared_in_parallel(lambda i: series_crops(series, i, "structure"), len(series), workers=3))
    for i, (crops, origins, facts) in enumerate(parallel):
        alone = series_crops(series, i, "structure")
        assert np.array_equal(np.stack(crops), np.stack(alone[0])) and origins == alone[1] and facts == alone[2]


def test_structure_scratch_buffers_are_per_thread_and_change_no_value():
    """The low-pass and Immerkaer buffers a thread reuses give the same structure as fresh arrays; another thread
    gets its own buffer."""
    import threading

    from napari_sem_focus.scoring.structure import StructureMap, scratch_array

    rng = np.random.default_rng(4)
    frames = [rng.random((480, 640), dtype=np.float32) * (i + 1) / 3 for i in range(3)]
    origins, size = [(0, 0), (120, 160), (240, 320)], (240, 320)
    for frame in frames:
        fresh, reused = StructureMap(frame), StructureMap(frame, scratch=True)
        assert np.array_equal(fresh.regions(origins, size), reused.regions(origins, size))
        assert fresh.noise_residue == reused.noise_residue
    assert scratch_array("lowpass", (480, 640)) is scratch_array("lowpass", (480, 640))
    other = []
    thread = threading.Thread(target=lambda: other.append(scratch_array("lowpass", (480, 640))))
    thread.start()
    thread.join()
    assert other[0] is not scratch_array("lowpass", (480, 640))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_scoring_process_keeps_freed_memory_for_reuse():
    from napari_sem_focus.allocator import reuse_freed_memory

    assert reuse_freed_memory() and reuse_freed_memory()  # applied, and once is enough


def test_the_scoring_model_runs_in_channels_last_and_scores_as_the_plain_layout(tmp_path):
    """load_model puts the network in channels_last (faster on CPUs with bf16); its scores match the plain layout
    and its saved weights load again."""
    import copy

    import torch

    from napari_sem_focus.scoring.weights import load_model, save_weights

    model = load_model(None)
    assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    frames = [texture((240, 320), seed=i) for i in range(4)]
    fast = [r.score for r in score_frames(frames, 5000.0, model, "center")]
    slow = [r.score for r in score_frames(frames, 5000.0, plain, "center")]
    assert np.abs(np.array(fast) - np.array(slow)).max() < 0.02
    path = save_weights(model, tmp_path / "again.safetensors", {})
    again = [r.score for r in score_frames(frames, 5000.0, load_model(path), "center")]
    assert np.abs(np.array(again) - np.array(fast)).max() < 0.05  # fp16 weights on disk


def test_the_structure_mode_scores_at_most_5_of_16_tiles_evenly_spread():
    from napari_sem_focus.scoring.structure import most_structured_tiles, structured_tiles

    assert [most_structured_tiles(n) for n in (1, 4, 16, 20, 169)] == [4, 4, 5, 7, 53]
    everywhere = np.linspace(1.0, 0.5, 16)  # every tile structured (>= 0.4 of the highest)
    assert np.flatnonzero(structured_tiles(everywhere)).tolist() == [0, 4, 8, 11, 15]  # first to last, spread
    few = np.array([0.01] * 13 + [0.5, 0.3, 0.45])  # three structured tiles: all of them
    assert np.flatnonzero(structured_tiles(few)).tolist() == [13, 14, 15]
    assert structured_tiles(np.full(16, 0.01)).all()  # no structure: every tile, flagged by the caller
    frame = np.tile(np.linspace(0, 1, 1024, dtype=np.float32), (768, 1))  # a ramp: structure in every tile
    frame += np.random.default_rng(0).random(frame.shape, dtype=np.float32) * 0.2
    crops, _, facts = frame_crops(frame / frame.max(), "structure")
    assert len(crops) == 5 and len(frame_crops(frame / frame.max(), "tiles")[0]) == 16 and facts["has_structure"]
