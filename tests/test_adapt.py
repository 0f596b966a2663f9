"""Few-label adaptation: it fixes a user whose scale differs from ours, keeps the model when it cannot help, and
the adapted weights score through the normal scoring path exactly as cross-validated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from napari_sem_focus.errors import CancelledError, SemFocusError
from napari_sem_focus.scoring.infer import score_frames
from napari_sem_focus.scoring.report import plot_adaptation
from napari_sem_focus.scoring.weights import load_model, save_weights
from napari_sem_focus.simulate import simulate_series
from napari_sem_focus.training.adapt import (
    MIN_FRAMES,
    adapt,
    adapt_on_features,
    frame_features,
    iter_adapt,
    predict_from_features,
)
from napari_sem_focus.training.train import drive, iter_fine_tune

MAG = 5000.0


@pytest.fixture(scope="module")
def model():
    return load_model(None)


@pytest.fixture(scope="module")
def frames():
    """24 frames of two small simulated focus series (240x320: one tile each)."""
    out = []
    for seed in (3, 4):
        series, _ = simulate_series("tinball", MAG, steps=12, shape=(240, 320), seed=seed)
        out += [f.image.astype(np.float32) / 255.0 for f in series]
    return out


@pytest.fixture(scope="module")
def features(model, frames):
    return drive(frame_features(model, [(f, MAG, 0.0) for f in frames]))


def _relabel(features, scores):
    for f, s in zip(features, scores, strict=True):
        f.score = float(s)
    return features


def test_features_predict_what_scoring_gives(model, frames, features):
    direct = np.array([r.score for r in score_frames(frames, MAG, model, "structure", bf16=False)])
    assert np.abs(predict_from_features(model, features) - direct).max() < 0.15


def test_a_stricter_users_scale_is_learned_from_ten_frames(model, features):
    ours = predict_from_features(model, features)
    user = 10.0 * (ours / 10.0) ** 2  # a stricter user: our 7 is their 4.9
    labelled, held_out = list(range(0, 24, 2))[:10], list(range(1, 24, 2))
    feats = _relabel(features, user)
    result = drive(adapt_on_features(model, [feats[i] for i in labelled]))
    assert result.adopted and result.cv_rmse_after < 0.7 * result.cv_rmse_before
    before = np.sqrt(np.mean((ours[held_out] - user[held_out]) ** 2))
    after_pred = predict_from_features(result.model, [feats[i] for i in held_out])
    after = np.sqrt(np.mean((after_pred - user[held_out]) ** 2))
    assert after < 0.6 * before  # frames it was not adapted on agree better with the user
    assert result.model is not model and "lower" in result.summary()
    assert "cannot always tell" not in result.summary()  # 10 labelled frames: no warning that they are too few


def test_a_compressed_users_scale_moves_the_ends_and_the_remap_is_what_scoring_gives(model, frames, features):
    """A lab whose best frame is 7.5 (0.75x our scale): the adopted line moves its top end down, halves the
    held-out error at least and says so."""
    ours = predict_from_features(model, features)
    user = 0.75 * ours
    labelled, held_out = list(range(0, 24, 2))[:10], list(range(1, 24, 2))
    feats = _relabel(features, user)
    result = drive(adapt_on_features(model, [feats[i] for i in labelled]))
    assert result.adopted and result.regime == "line"  # one shift of scale: the line, not the head
    lo, hi = result.model.config.score_remap
    assert -1.0 <= lo < 1.0 and 6.5 < hi < 8.5
    before = np.sqrt(np.mean((ours[held_out] - user[held_out]) ** 2))
    after_pred = predict_from_features(result.model, [feats[i] for i in held_out])
    assert np.sqrt(np.mean((after_pred - user[held_out]) ** 2)) < 0.5 * before
    # one tile per frame: the remap curve of the starting score is exactly the adapted model's score
    assert np.allclose(result.remap_curve(result.scores_before), result.scores_after, atol=1e-3)
    assert result.describe().startswith("line: your score = 0.7")
    assert result.describe() in result.summary()
    assert len(result.labels) == len(result.scores_before) == len(result.cv_scores) == 10
    # the adapted weights score through the normal path on the user's scale
    scores = np.array([r.score for r in score_frames(frames[1::2], MAG, result.model, "structure", bf16=False)])
    assert scores.max() <= hi + 1e-3 and np.abs(scores - after_pred).max() < 0.15


def test_the_score_range_survives_saving_and_levels_follow_it(model, features, tmp_path):
    from napari_sem_focus.focusing.autofocus import IN_FOCUS_SCORE, on_model_scale

    feats = _relabel(features, 0.75 * predict_from_features(model, features))
    result = drive(adapt_on_features(model, feats[:10]))
    path = save_weights(result.model, tmp_path / "compressed.safetensors", result.metrics)
    reloaded = load_model(path)
    assert reloaded.config.score_remap == pytest.approx(result.model.config.score_remap)
    assert on_model_scale(reloaded)(IN_FOCUS_SCORE) == pytest.approx(reloaded.remap([IN_FOCUS_SCORE])[0])
    assert on_model_scale(reloaded)(IN_FOCUS_SCORE) < 8.5  # the compressed user's "in focus" level
    assert on_model_scale(model)(IN_FOCUS_SCORE) == IN_FOCUS_SCORE
    # a model whose ends moved is not a starting point for training the whole network
    from napari_sem_focus.training.train import iter_fine_tune as fine_tune

    with pytest.raises(SemFocusError, match="adapted to a scale"):
        next(fine_tune(reloaded, [(np.zeros((64, 64), np.float32), MAG, 5.0)] * 4, steps=1, crop_size=(64, 64)))


def test_labels_the_model_already_agrees_with_keep_the_model(model, features):
    feats = _relabel(features, predict_from_features(model, features))
    result = drive(adapt_on_features(model, feats[:8]))
    assert not result.adopted and result.model is model and result.regime == "none"
    assert result.cv_rmse_after == result.cv_rmse_before
    assert "did not help" in result.summary() and "keeping the current model" in result.summary()
    assert "8 labelled frames cannot always tell whether to keep our scale" in result.summary()
    assert "label 10 or more" in result.summary()


def test_too_few_frames_and_cancel(model, frames):
    with pytest.raises(SemFocusError, match=f"at least {MIN_FRAMES}"):
        adapt(model, [(frames[0], MAG, 5.0)] * (MIN_FRAMES - 1))
    with pytest.raises(CancelledError):
        adapt(model, [(f, MAG, 5.0) for f in frames[:5]], should_stop=lambda: True)


def test_adapted_weights_round_trip_and_score_like_cross_validation(model, frames, features, tmp_path):
    ours = predict_from_features(model, features)
    samples = [(f, MAG, 10.0 * (s / 10.0) ** 2) for f, s in zip(frames[:6], ours[:6], strict=True)]
    events = []
    result = adapt(model, samples, progress=events.append)
    assert result.adopted and {e.stage for e in events} >= {"features", "cross-validation", "final"}
    path = save_weights(result.model, tmp_path / "adapted.safetensors", result.metrics)
    reloaded = load_model(path)
    scores = np.array([r.score for r in score_frames(frames[6:], MAG, reloaded, "structure", bf16=False)])
    expected = predict_from_features(result.model, features[6:])
    assert np.abs(scores - expected).max() < 0.15  # the saved fp16 weights score as the adaptation predicted
    assert (scores <= ours[6:] + 0.15).all() and scores.mean() < ours[6:].mean() - 0.3  # stricter on unseen frames
    assert json.loads(json.dumps(result.metrics))["cv_rmse_after"] < result.metrics["cv_rmse_before"]


def test_iter_adapt_is_a_generator_that_returns_the_result(model, frames):
    gen = iter_adapt(model, [(f, MAG, 9.0) for f in frames[:4]])
    stages = []
    while True:
        try:
            stages.append(next(gen).stage)
        except StopIteration as stop:
            result = stop.value
            break
    assert stages[0] == "features" and result.n_frames == 4 and result.folds == 4


def test_whole_network_fine_tune_reports_held_out_frames(frames):
    from napari_sem_focus.scoring.model import build_focus_net

    samples = [(f, MAG, float(i % 10)) for i, f in enumerate(frames[:10])]
    gen = iter_fine_tune(build_focus_net(), samples, steps=2, crop_size=(64, 64), batch_size=4, device="cpu")
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert events and events[-1].step == 2
    m = result.metrics
    assert m["n_val"] == 2 and m["val_rmse_before"] is not None and m["adopted"] in (True, False)


def test_a_user_whose_scale_bends_gets_a_monotone_curve_that_survives_saving(model, frames, features, tmp_path):
    """A user who labels every frame below our 3 a 1 and every frame above our 4 a 9, straight in between (they
    judge 'recognisable or not'): no line follows that, the monotone curve does (held-out RMSE 2.1 -> 0.07 when
    written); it is saved with the weights and scoring uses it."""
    ours = predict_from_features(model, features)
    user = np.interp(ours, [0.0, 3.0, 4.0, 10.0], [1.0, 1.0, 9.0, 9.0])
    labelled, held_out = list(range(0, 24, 2)), list(range(1, 24, 2))
    feats = _relabel(features, user)
    result = drive(adapt_on_features(model, [feats[i] for i in labelled]))
    assert result.adopted and result.regime == "monotone" and result.curve is not None
    assert result.table["monotone"][10] < result.table["line"][10]
    assert result.describe().startswith("monotone: your score follows ours through")
    before = np.sqrt(np.mean((ours[held_out] - user[held_out]) ** 2))
    after_pred = predict_from_features(result.model, [feats[i] for i in held_out])
    assert np.sqrt(np.mean((after_pred - user[held_out]) ** 2)) < 0.5 * before
    assert np.allclose(result.remap_curve(result.scores_before), result.scores_after, atol=1e-3)
    assert np.all(np.diff(result.remap_curve(np.linspace(0, 10, 101))) >= 0)  # monotone
    reloaded = load_model(save_weights(result.model, tmp_path / "bent.safetensors", result.metrics))
    assert np.allclose(reloaded.config.score_curve, result.model.config.score_curve, atol=1e-3)
    scores = np.array([r.score for r in score_frames(frames[1::2], MAG, reloaded, "structure", bf16=False)])
    assert np.abs(scores - after_pred).max() < 0.3
    assert json.loads(json.dumps(result.metrics))["curve"] is not None
    # re-adapting the adapted model to a plain compressed user replaces the curve with a line
    again = drive(adapt_on_features(result.model, _relabel(features, 0.75 * ours)[:12]))
    assert again.adopted and again.model.config.score_curve == () and again.regime in ("line", "head")


def test_five_labels_of_a_lab_that_says_blurred_or_sharp_adopt_the_curve_that_keeps_our_order(model, features):
    """A lab that labels 0.5 (blurred) or 9.5 (sharp) with a grey zone between our 4 and 6: with 5 labels,
    cross-validation cannot show the curve (leaving out the frame where a level starts leaves nothing to predict it
    from), but the labels keep our order and no line follows them: the monotone curve is adopted and the frames
    nobody labelled agree better; labels off our order by up to a point (a noisy labeller) keep the model."""
    ours = predict_from_features(model, features)
    user = np.interp(ours, [0.0, 4.0, 6.0, 10.0], [0.5, 0.5, 9.5, 9.5])
    labelled = [2, 7, 12, 17, 22]
    held_out = [i for i in range(24) if i not in labelled]
    feats = _relabel(features, user)
    result = drive(adapt_on_features(model, [feats[i] for i in labelled]))
    assert result.adopted and result.regime == "monotone" and result.chosen_by == "bend"
    assert "keep our order" in result.summary() and result.curve is not None
    assert result.summary().endswith("label 10 or more if you can (then the head can be re-weighted too)")
    figure = Figure()
    plot_adaptation(figure.add_subplot(), result)
    assert "keep our order" in figure.axes[0].get_title()
    before = np.sqrt(np.mean((ours[held_out] - user[held_out]) ** 2))
    after_pred = predict_from_features(result.model, [feats[i] for i in held_out])
    assert np.sqrt(np.mean((after_pred - user[held_out]) ** 2)) < 0.6 * before
    noisy = np.clip(ours + np.random.default_rng(0).uniform(-1.0, 1.0, len(ours)), 0.0, 10.0)
    kept = drive(adapt_on_features(model, _relabel(features, noisy)[:5]))
    assert kept.chosen_by == "cross-validation"
