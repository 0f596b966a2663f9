"""The shipped default weights on inputs whose answer is known: the paper's 0 class and a simulated series."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.infer import score_frames
from napari_sem_focus.simulate import simulate_series
from napari_sem_focus.weights import bundled_weights_path, load_model

pytestmark = pytest.mark.skipif(not bundled_weights_path().is_file(), reason="bundled weights not built")

SHAPE = (480, 640)
#: Below 1, "the specimen just becomes recognisable": pure noise must stay under it (the v2 weights gave 1.3-2.1).
NOISE_MAX = 1.0
FLAT_MAX = 0.3


def _scores(frames: list[np.ndarray], mode: str = "center", magnification: float = 5000.0) -> list[float]:
    frames = [np.clip(f, 0, 1).astype(np.float32) for f in frames]
    return [r.score for r in score_frames(frames, magnification, load_model(None), mode)]


@pytest.mark.parametrize("mode", ["center", "tiles"])
def test_pure_noise_scores_near_zero(mode):
    rng = np.random.default_rng(3)
    noise = [rng.normal(mean, sd, SHAPE) for mean in (0.2, 0.5) for sd in (0.05, 0.15, 0.3)]
    noise += [rng.poisson(lam, SHAPE) / (3.0 * lam) for lam in (1, 3, 10)] + [rng.random(SHAPE)]
    scores = _scores(noise, mode)
    assert max(scores) < NOISE_MAX, scores
    assert np.mean(scores) < 0.5, scores


def test_black_white_and_constant_frames_score_near_zero():
    scores = _scores([np.zeros(SHAPE), np.ones(SHAPE), np.full(SHAPE, 0.5), np.full(SHAPE, 0.8)])
    assert max(scores) < FLAT_MAX, scores


def test_sharpest_frame_of_a_noisy_simulated_series_wins():
    frames, _ = simulate_series("particles", 2000.0, steps=7, shape=SHAPE, seed=5, noisy_frame=2)
    truth = [f.score for f in frames]
    scores = _scores([f.image.astype(np.float32) / 255 for f in frames], "tiles", 2000.0)
    assert int(np.argmax(scores)) == int(np.argmax(truth))
    assert max(scores) > 7 and min(scores) < 4
