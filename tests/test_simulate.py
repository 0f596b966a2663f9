"""The simulator: determinism, physics (probe, magnification), labels, classic metrics on simulated series,
0-score frames, files written by the CLI."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest

from napari_sem_focus.cli import main
from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.metrics import METRICS
from napari_sem_focus.simulate import (
    SPECIMENS,
    FrameParams,
    dataset_params,
    labels,
    optics,
    pixel_size_nm,
    simulate_frame,
    simulate_series,
)

SMALL = (120, 160)


def test_deterministic_for_a_seed():
    p = dataset_params("train", 12)
    a, b = simulate_frame(p, SMALL), simulate_frame(p, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.score == b.score
    assert not np.array_equal(a.image, simulate_frame(dataset_params("train", 13), SMALL).image)


def test_magnification_pixel_size_and_probe_physics():
    assert pixel_size_nm(5000) == pytest.approx(127e6 / (5000 * 1024))
    assert optics.magnification_from_pixel_size(pixel_size_nm(1234.0)) == pytest.approx(1234.0)
    assert optics.probe_diameter_nm(0.0, 3.0, 5.0) == 3.0
    assert optics.probe_diameter_nm(10.0, 0.0, 5.0) == pytest.approx(100.0)  # 2 * 5 mrad * 10 µm
    assert optics.defocus_for_diameter_um(100.0, 0.0, 5.0) == pytest.approx(10.0)


def test_score_anchors_and_monotone():
    d0, pixel, feature = 3.0, 24.8, 1000.0
    r0 = labels.resolution_limit_nm(d0, pixel)
    assert labels.blur_score(r0, d0, pixel, feature) == pytest.approx(10.0)
    assert labels.blur_score(feature, d0, pixel, feature) == pytest.approx(1.0)
    assert labels.blur_score(3 * feature, d0, pixel, feature) == pytest.approx(0.0)
    scores = [labels.blur_score(d, d0, pixel, feature) for d in np.geomspace(1, 5000, 50)]
    assert all(a >= b for a, b in itertools.pairwise(scores))
    for s in (0.3, 1.0, 4.2, 9.5):
        d = labels.diameter_for_blur_score(s, d0, pixel, feature)
        assert labels.blur_score(d, d0, pixel, feature) == pytest.approx(s)


def test_same_pixel_blur_scores_higher_at_high_magnification():
    """A 4-pixel blur is the in-focus probe at 100,000x (tungsten) but a real defocus at 1,000x."""
    blur_px = 4.0
    scores = []
    for mag in (1000.0, 100_000.0):
        pixel = pixel_size_nm(mag)
        feature = 50 * pixel
        scores.append(labels.blur_score(blur_px * pixel, 5.0 if mag == 1000 else 4 * pixel, pixel, feature))
    assert scores[1] == pytest.approx(10.0) and scores[0] < 8.0


def test_noise_and_saturation_lower_the_score():
    base = labels.focus_score(10.0, 3.0, 24.8, 500.0)
    assert labels.focus_score(10.0, 3.0, 24.8, 500.0, electrons_per_px=0.001, contrast=0.2) < base
    assert labels.focus_score(10.0, 3.0, 24.8, 500.0, saturated_fraction=0.9) < base


@pytest.mark.parametrize("family", list(SPECIMENS))
@pytest.mark.parametrize("metric", ["normalized_variance", "tenengrad", "brenner", "absolute_variance"])
def test_classic_metrics_peak_at_defocus_zero_and_fall_both_ways(family, metric):
    frames, _ = simulate_series(
        family,
        2000.0,
        steps=9,
        shape=(240, 320),
        seed=4,
        electrons_per_px=float("inf"),
        line_gain=0.0,
        line_jitter_px=0.0,
    )
    values = [METRICS[metric](f.image.astype(np.float32) / 255) for f in frames]
    assert int(np.argmax(values)) == 4
    assert all(a < b for a, b in itertools.pairwise(values[:5]))
    assert all(a > b for a, b in itertools.pairwise(values[4:]))


def test_series_labels_peak_in_focus_and_noisy_frame_fools_laplacian():
    frames, wds = simulate_series("tinball", 10000.0, steps=11, shape=(240, 320), seed=11, noisy_frame=4)
    scores = [f.score for f in frames]
    assert int(np.argmax(scores)) == 5 and scores[5] == pytest.approx(10.0)
    assert wds[5] == pytest.approx(5.0) and wds == sorted(wds)
    lap = [METRICS["variance_of_laplacian"](f.image.astype(np.float32) / 255) for f in frames]
    assert int(np.argmax(lap)) == 4  # the noisy fast-scan frame looks "sharpest" to the Laplacian


@pytest.mark.parametrize("kind", ["noise", "white", "black", "flat"])
def test_blank_frames_score_zero(kind):
    frame = simulate_frame(FrameParams(blank=kind, seed=1), SMALL)
    assert frame.score == 0.0 and frame.image.shape == SMALL
    if kind == "white":
        assert frame.image.mean() > 230
    if kind == "black":
        assert frame.image.mean() < 20


def test_blank_split_has_only_zero_score_frames_with_varied_noise():
    params = [dataset_params("blank", i) for i in range(80)]
    assert all(p.blank is not None for p in params)
    assert {p.blank for p in params} == {"noise", "white", "black", "flat"}
    noise = [simulate_frame(p, SMALL) for p in params if p.blank == "noise"][:12]
    assert all(f.score == 0.0 for f in noise)
    spreads = [float(f.image.std()) for f in noise]
    assert min(spreads) < 8 and max(spreads) > 40  # faint grain to clipped salt-and-pepper


def test_astigmatism_gives_directional_blur():
    # one focal line sits at defocus +a/2: sharp along one axis, blurred along the other
    base = FrameParams(
        family="rough",
        magnification=20000.0,
        defocus_um=1.5,
        astig_um=3.0,
        astig_angle_deg=0.0,
        electrons_per_px=float("inf"),
        seed=2,
    )
    img = simulate_frame(base, (160, 160)).image.astype(np.float32)
    gx = np.abs(np.diff(img, axis=1)).mean()
    gy = np.abs(np.diff(img, axis=0)).mean()
    assert max(gx, gy) > 1.3 * min(gx, gy)


def test_split_distribution_and_heldout_family():
    mags = [dataset_params("test", i).magnification for i in range(60)]
    blanks = [p for p in mags if p == FrameParams().magnification]  # blank frames keep the default
    assert {m for m in mags if m not in blanks} <= {500.0, 1000.0, 2000.0, 5000.0, 10000.0}
    fams = {dataset_params("heldout", i).family for i in range(40) if dataset_params("heldout", i).blank is None}
    assert fams == {"fibres"}
    train_fams = {dataset_params("train", i).family for i in range(200)}
    assert "fibres" not in train_fams and len(train_fams) == 5


def test_cli_simulate_series_writes_tiff_with_wd_and_labels(tmp_path, capsys):
    out = tmp_path / "s"
    assert (
        main(
            [
                "simulate",
                "series",
                "--specimen",
                "grid",
                "--mag",
                "1000",
                "--steps",
                "5",
                "--size",
                "160",
                "120",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    series = read_series(out / "series.tif")
    assert len(series) == 5 and series.shape == (120, 160)
    assert series.working_distance_mm[2] == pytest.approx(5.0)
    assert series.magnification == 1000.0
    rows = list(csv.DictReader(open(out / "series_labels.csv")))
    assert [int(r["score_int"]) for r in rows][2] == 10
    assert "best" not in capsys.readouterr().err


def test_cli_simulate_dataset_and_torch_dataset(tmp_path):
    from napari_sem_focus.training.data import LabelledImages, SimulatedFrames

    assert (
        main(["simulate", "dataset", "--n", "6", "--split", "val", "--size", "96", "64", "--out", str(tmp_path)]) == 0
    )
    data = LabelledImages(tmp_path / "labels.csv", crop_size=(48, 64), train=True)
    image, _mag, score = data[0]
    assert image.shape == (1, 48, 64) and 0.0 <= float(score) <= 10.0
    sim = SimulatedFrames("train", length=3, shape=(64, 96), crop_size=(48, 64))
    image, _mag, score = sim[1]
    assert image.shape == (1, 48, 64) and image.dtype.is_floating_point


@pytest.mark.parametrize("mean", [0.3, 1.5, 5.0, 11.0, 40.0])
def test_table_poisson_matches_poisson_statistics(mean):
    from napari_sem_focus.simulate.random_fields import poisson

    counts = poisson(np.random.default_rng(0), np.full((400, 500), mean, np.float32))
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    assert counts.mean() == pytest.approx(mean, rel=0.02)  # lambda rounded within 1 %, plus sampling error
    assert counts.var() == pytest.approx(mean, rel=0.03)
    assert (counts == 0).mean() == pytest.approx(np.exp(-mean), abs=0.005)


def test_table_poisson_uses_exact_sampler_beyond_the_table():
    from napari_sem_focus.simulate.random_fields import POISSON_MAX_MEAN, poisson

    lam = np.full((200, 200), 3 * POISSON_MAX_MEAN, np.float32)
    counts = poisson(np.random.default_rng(1), lam)
    assert counts.mean() == pytest.approx(3 * POISSON_MAX_MEAN, rel=0.01)  # not capped at the table's 255


def test_fast_normal_field_is_reproducible_and_standard():
    from napari_sem_focus.simulate.random_fields import standard_normal

    a = standard_normal(np.random.default_rng(5), (300, 400))
    b = standard_normal(np.random.default_rng(5), (300, 400))
    c = standard_normal(np.random.default_rng(6), (300, 400))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a.mean()) < 0.01 and a.std() == pytest.approx(1.0, abs=0.01)
    assert ((a**4).mean()) == pytest.approx(3.0, abs=0.1)  # Gaussian kurtosis


def test_allocator_tuning_is_safe_to_call_twice():
    from napari_sem_focus.allocator import reuse_freed_memory

    first = reuse_freed_memory()
    assert reuse_freed_memory() is first
    frame = simulate_frame(FrameParams(family="tinball", seed=3), (120, 160))
    assert frame.image.shape == (120, 160)


def test_inverted_contrast_gives_dark_objects_on_a_bright_substrate(tmp_path):
    def skew(image: np.ndarray) -> float:
        z = (image - image.mean()) / image.std()
        return float((z**3).mean())

    plain = simulate_frame(FrameParams(family="tinball", electrons_per_px=1e4, seed=2), SMALL)
    inverted = simulate_frame(FrameParams(family="tinball", electrons_per_px=1e4, seed=2, inverted=True), SMALL)
    assert skew(plain.image.astype(float)) > 0 > skew(inverted.image.astype(float))
    assert inverted.score == pytest.approx(plain.score, abs=0.5)  # focus, not contrast polarity, sets the score
    fractions = [dataset_params("train", i).inverted for i in range(400)]
    assert 0.2 < np.mean(fractions) < 0.4
    assert (
        main(["simulate", "series", "--inverted", "--steps", "3", "--size", "160", "120", "--out", str(tmp_path)]) == 0
    )
    rows = list(csv.DictReader(open(tmp_path / "series_labels.csv", encoding="utf-8")))
    assert [r["inverted"] for r in rows] == ["1", "1", "1"]
