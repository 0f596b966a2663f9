"""The shipped default weights on inputs whose answer is known: the paper's 0 class and a simulated series."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.scoring.infer import score_frames
from napari_sem_focus.scoring.weights import bundled_weights_path, load_model
from napari_sem_focus.simulate import simulate_series

pytestmark = pytest.mark.skipif(not bundled_weights_path().is_file(), reason="bundled weights not built")

SHAPE = (480, 640)
#: Below 1, "the specimen just becomes recognisable": pure noise must stay under it (the v2 weights gave 1.3-2.1).
NOISE_MAX = 1.0
FLAT_MAX = 0.3


def _scores(frames: list[np.ndarray], mode: str = "center", magnification: float = 5000.0) -> list[float]:
    frames = [np.clip(f, 0, 1).astype(np.float32) for f in frames]
    return [r.score for r in score_frames(frames, magnification, load_model(None), mode)]


@pytest.mark.parametrize("mode", ["structure", "center", "tiles"])
def test_pure_noise_scores_near_zero(mode):
    rng = np.random.default_rng(3)
    noise = [rng.normal(mean, sd, SHAPE) for mean in (0.2, 0.5) for sd in (0.05, 0.15, 0.3)]
    noise += [rng.poisson(lam, SHAPE) / (3.0 * lam) for lam in (1, 3, 10)] + [rng.random(SHAPE)]
    scores = _scores(noise, mode)
    assert max(scores) < NOISE_MAX, scores
    assert np.mean(scores) < 0.5, scores


@pytest.mark.parametrize("mode", ["structure", "center"])
def test_black_white_and_constant_frames_score_near_zero(mode):
    scores = _scores([np.zeros(SHAPE), np.ones(SHAPE), np.full(SHAPE, 0.5), np.full(SHAPE, 0.8)], mode)
    assert max(scores) < FLAT_MAX, scores


def test_sharpest_frame_of_a_noisy_simulated_series_wins():
    frames, _ = simulate_series("particles", 2000.0, steps=7, shape=SHAPE, seed=5, noisy_frame=2)
    truth = [f.score for f in frames]
    for mode in ("structure", "tiles"):
        scores = _scores([f.image.astype(np.float32) / 255 for f in frames], mode, 2000.0)
        assert int(np.argmax(scores)) == int(np.argmax(truth)), mode
        assert max(scores) > 7 and min(scores) < 4, mode


def test_real_texture_with_a_featureless_centre_is_scored_on_its_structure():
    """The FEI indent image cropped so that the flat surface fills the centre, turned into a semi-real focus
    series (real texture, simulator probe and shot noise): the default mode finds the in-focus frame."""
    from napari_sem_focus.io.series import read_series
    from napari_sem_focus.simulate.optics import magnification_from_pixel_size
    from napari_sem_focus.simulate.semireal import SemiRealSettings, clean_source, semireal_series

    from .conftest import shared

    series = read_series(shared("fei_sem2surface/Indent_20230912_7kV_spot4.5_FOV100um_multiBSE_A_05.tif"))
    clean = clean_source(series.frame(0)[:768, :1024])  # the indent lies right of the centre crop
    frames = semireal_series(clean, series.pixel_size_nm, SemiRealSettings(steps=7, step_px=3.0, seed=1))
    images = [f.image.astype(np.float32) / 255 for f in frames]
    mag = magnification_from_pixel_size(series.pixel_size_nm)
    results = list(score_frames(images, mag, load_model(None), "structure"))
    scores = [r.score for r in results]
    assert int(np.argmax(scores)) == 3, scores
    assert scores[3] - max(scores[0], scores[6]) > 0.8, scores
    assert all(r.has_structure and r.structure_fraction < 0.5 for r in results)  # the indent only


def test_the_background_preload_leaves_the_scoring_modules_and_the_bundled_network_ready():
    """What the napari widget loads in the background before the click on Score stack: the scoring modules
    (OpenCV among them) and the bundled network, cached, so the click's job finds the same model at once."""
    import sys

    from napari_sem_focus.scoring import weights
    from napari_sem_focus.scoring.preload import load_pytorch

    weights._CACHE.clear()
    load_pytorch()
    assert {"cv2", "napari_sem_focus.scoring.analysis", "torchvision.models"} <= set(sys.modules)
    (key,) = weights._CACHE  # the bundled network on the CPU, loaded by the preload
    assert key[0] == str(bundled_weights_path().resolve()) and key[2] == "cpu"
    assert weights.load_model(None) is weights._CACHE[key]


def test_the_background_preload_runs_once_per_process():
    from napari_sem_focus.scoring import preload

    preload._LOADED.clear()
    thread = preload.load_pytorch_in_background()
    assert thread is not None
    thread.join(timeout=120)
    assert preload._LOADED.is_set() and preload.load_pytorch_in_background() is None
