"""The Label & fine-tune widget under Xvfb: label ~20 frames, adapt or fine-tune, cancel, hot-swap; labelling
keeps napari responsive; the keys are given back on close; the labels file survives a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_sem_focus.scoring.model import build_focus_net
from napari_sem_focus.scoring.weights import save_weights
from napari_sem_focus.simulate import simulate_series, write_series

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


def _open_with_widgets(make_napari_viewer, tmp_path, steps, shape, seed, weights=None):
    """A tin-ball focus series opened in napari with the Score-stack and Label & fine-tune docks."""
    from napari_sem_focus._widgets.score import ScoreStackWidget
    from napari_sem_focus._widgets.train import TrainWidget

    frames, wds = simulate_series("tinball", 5000.0, steps=steps, shape=shape, seed=seed)
    path = write_series(tmp_path / "data", frames, wds)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-sem-focus")
    scorer = ScoreStackWidget(viewer)
    if weights is not None:
        scorer.set_weights(weights)
    trainer = TrainWidget(viewer)
    viewer.window.add_dock_widget(scorer)
    viewer.window.add_dock_widget(trainer)
    return viewer, scorer, trainer, frames, path


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    weights = save_weights(build_focus_net(), tmp_path / "start.safetensors")
    viewer, scorer, trainer, frames, path = _open_with_widgets(make_napari_viewer, tmp_path, 20, (160, 200), 3, weights)
    return viewer, scorer, trainer, frames, weights, path


def _label_all(viewer, trainer, frames):
    for i, f in enumerate(frames):
        viewer.dims.set_current_step(0, i)
        assert trainer.label_current(round(f.score * 2) / 2) is not None


def test_label_fine_tune_and_hot_swap(setup, qtbot, tmp_path):
    viewer, scorer, trainer, frames, weights, _path = setup
    assert trainer.labels_edit.text().endswith("series_focus_labels.csv")  # next to the data
    _label_all(viewer, trainer, frames)
    assert len(trainer.store) == 20
    # the model's scores are computed once per frame in a worker and fill the table in
    qtbot.waitUntil(lambda: all(trainer.table.item(i, 2).text() != "…" for i in range(20)), timeout=120_000)
    reopened = type(trainer.store)(trainer.store.path)
    assert len(reopened) == 20  # the labels file round-trips
    trainer.regime_box.value = "whole network"
    trainer.steps_box.value = 2
    worker = trainer.start_fine_tune(crop_size=(64, 64), batch_size=4)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert trainer.result is not None and trainer.result.step == 2
    assert "before" in trainer.status.text() and "after" in trainer.status.text()
    assert len(trainer.history) >= 2 and trainer.axes.lines
    scorer.mode_box.value = "center"
    scorer.metrics_check.value = False

    def score_now():
        w = scorer.start_scoring()
        with qtbot.waitSignal(w.finished, timeout=120_000):
            pass

    score_now()
    scores_before = [r["score"] for r in scorer.rows]
    new_path = trainer.use_model(tmp_path / "tuned.safetensors")
    assert new_path.with_suffix(".json").is_file()
    assert scorer.weights_edit.text() == str(new_path)
    from napari_sem_focus.scoring.weights import load_model

    old = load_model(weights).state_dict()["head.0.weight"]
    new = load_model(new_path).state_dict()["head.0.weight"]
    assert not np.allclose(old.numpy(), new.numpy())  # the weights changed
    score_now()
    assert len(scorer.rows) == 20
    scores_after = [r["score"] for r in scorer.rows]
    assert scores_after != scores_before  # the hot-swapped model gives the widget new scores


def test_cancel_leaves_weights_byte_identical(setup, qtbot):
    viewer, scorer, trainer, frames, weights, _path = setup
    _label_all(viewer, trainer, frames[:12])
    before = weights.read_bytes()
    trainer.regime_box.value = "whole network"
    trainer.steps_box.value = 500
    worker = trainer.start_fine_tune(crop_size=(64, 64), batch_size=4)
    qtbot.waitUntil(lambda: len(trainer.history) >= 1 or not worker.is_running, timeout=120_000)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        trainer.cancel()
    assert trainer.result is None and not trainer.use_button.isEnabled()  # nothing to adopt
    assert "unchanged" in trainer.status.text()
    assert scorer.weights_edit.text() == str(weights)  # the viewer still scores with the starting weights
    written = sorted(p.name for p in weights.parent.rglob("*.safetensors"))
    assert written == [weights.name] and weights.read_bytes() == before  # no new or half-written weights


def test_keyboard_shortcuts_label_the_current_frame(setup):
    viewer, _scorer, trainer, _frames, _weights, _path = setup

    def press(key):
        next(func for binding, func in viewer.keymap.items() if str(binding) == key)(viewer)

    viewer.dims.set_current_step(0, 4)
    press("7")
    viewer.dims.set_current_step(0, 5)
    press("=")
    labels = {lb.frame: lb.score for lb in trainer.store.labels()}
    assert labels == {4: 7.0, 5: 10.0}


@pytest.fixture
def default_setup(make_napari_viewer, tmp_path):
    """A viewer scoring with the bundled default weights (what a user has), a 12-frame 240x320 tin-ball series."""
    viewer, scorer, trainer, frames, _path = _open_with_widgets(make_napari_viewer, tmp_path, 12, (240, 320), 5)
    return viewer, scorer, trainer, frames


def _model_scores(qtbot, trainer, n):
    qtbot.waitUntil(lambda: all(trainer.table.item(i, 2).text() != "…" for i in range(n)), timeout=120_000)
    return [float(trainer.table.item(i, 2).text()) for i in range(n)]


def test_adapt_to_a_stricter_user_then_use_it(default_setup, qtbot, tmp_path):
    viewer, scorer, trainer, frames = default_setup
    for i in range(len(frames)):
        viewer.dims.set_current_step(0, i)
        trainer.label_current(5.0)  # placeholder labels, replaced below once the model's view is known
    ours = _model_scores(qtbot, trainer, len(frames))
    for i, s in enumerate(ours):  # a stricter user: our 7 is their 4.9
        viewer.dims.set_current_step(0, i)
        trainer.label_current(round(10.0 * (s / 10.0) ** 2, 1))
    assert trainer.regime_box.value.startswith("adapt")
    worker = trainer.start_fine_tune()
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        pass
    assert trainer.adaptation is not None and trainer.adaptation.adopted
    assert "cross-validated RMSE" in trainer.status.text() and "lower" in trainer.status.text()
    assert trainer.use_button.isEnabled()
    # the plot: the labelled frames at (model score, label) and the adopted remap over the whole scale
    result = trainer.adaptation
    assert f"adopted {result.regime}" in trainer.status.text()
    assert result.regime in trainer.axes.get_title()
    drawn = {line.get_label(): line for line in trainer.axes.lines}
    points = drawn["your labels"]
    assert np.allclose(points.get_xdata(), result.scores_before) and np.allclose(points.get_ydata(), result.labels)
    shown = {"line": "adopted line", "monotone": "adopted curve", "head": "its line (before the head)"}
    curve = drawn[shown[result.regime]]  # a curved user's scale may well adopt the monotone curve
    assert np.allclose(curve.get_ydata(), result.remap_curve(curve.get_xdata()))
    if result.regime == "head":  # no single curve: each labelled frame's adapted score is drawn too
        assert np.allclose(drawn["adapted (head)"].get_ydata(), result.scores_after)
    new_path = trainer.use_model(tmp_path / "adapted.safetensors")
    facts = __import__("json").loads(new_path.with_suffix(".json").read_text())
    assert facts["adopted"] and facts["cv_rmse_after"] < facts["cv_rmse_before"]
    assert scorer.weights_edit.text() == str(new_path)
    after = _model_scores(qtbot, trainer, len(frames))  # the table re-scores with the new weights
    assert np.mean(after) < np.mean(ours) - 0.5


def test_adaptation_that_does_not_help_keeps_the_model(default_setup, qtbot):
    viewer, scorer, trainer, _frames = default_setup
    for i in range(6):
        viewer.dims.set_current_step(0, i)
        trainer.label_current(5.0)
    ours = _model_scores(qtbot, trainer, 6)
    for i, s in enumerate(ours):  # the user agrees with the model
        viewer.dims.set_current_step(0, i)
        trainer.label_current(round(s, 2))
    worker = trainer.start_fine_tune()
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        pass
    assert "did not help" in trainer.status.text() and "keeping the current model" in trainer.status.text()
    assert trainer.result is None and not trainer.use_button.isEnabled()
    assert scorer.weights_edit.text() == ""  # still the default weights


def test_labelling_fifty_frames_in_a_row_keeps_every_label_and_scores_each_once(make_napari_viewer, qtbot, tmp_path):
    """50 frames labelled in a row, as fast as a user presses keys: every label is kept, each frame is scored once
    afterwards, in the worker. (The event loop's longest pause meanwhile is a row of the performance table:
    ``benchmarks/performance_table.py``, not a timed test.)"""
    from napari_sem_focus._widgets.train import TrainWidget

    frames, wds = simulate_series("grid", 2000.0, steps=50, shape=(240, 320), seed=1)
    path = write_series(tmp_path / "data", frames, wds)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-sem-focus")
    trainer = TrainWidget(viewer)
    viewer.window.add_dock_widget(trainer)
    for i in range(50):
        viewer.dims.set_current_step(0, i)
        trainer.label_current(float(i % 11))
        qtbot.wait(20)  # a fast user: 50 key presses a second
    assert len(trainer.store) == 50
    assert sorted((lb.frame, lb.score) for lb in trainer.store.labels()) == [(i, float(i % 11)) for i in range(50)]
    assert len(_model_scores(qtbot, trainer, 50)) == 50  # then every frame is scored once, in the worker


def test_keys_are_given_back_when_the_widget_closes(default_setup):
    viewer, _scorer, trainer, _frames = default_setup

    def bound(key):
        return [func for binding, func in viewer.keymap.items() if str(binding) == key]

    assert bound("7")
    viewer.window.remove_dock_widget(trainer)
    assert not bound("7") and not bound("=")
    n = len(trainer.store) if trainer.store is not None else 0
    for func in bound("7"):
        func(viewer)
    assert (len(trainer.store) if trainer.store is not None else 0) == n


def test_labels_file_stays_valid_when_napari_is_killed_while_labelling(tmp_path):
    """A process labelling as fast as it can (the widget's core call, one atomic save per label) is killed; the
    labels file it leaves is complete and readable."""
    from napari_sem_focus.training.label_store import LabelStore

    labels = tmp_path / "labels.csv"
    script = (
        "import sys\n"
        "from napari_sem_focus.training.label_store import LabelStore\n"
        f"store = LabelStore({str(labels)!r})\n"
        "i = 0\n"
        "while True:\n"
        "    store.set('/data/series.tif', i, 5000.0, float(i % 11))\n"
        "    i += 1\n"
        "    if i == 20: print('ready', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = LabelStore(labels)
    assert len(store) >= 20
    frames = sorted(lb.frame for lb in store.labels())
    assert frames == list(range(len(frames)))  # no label lost in the middle, no half-written row


def test_plots_follow_napari_theme(default_setup):
    from matplotlib.colors import to_hex

    from napari_sem_focus._widgets.plot import theme_colours

    viewer, scorer, trainer, _frames = default_setup
    for theme in ("dark", "light"):
        viewer.theme = theme
        expected = theme_colours(theme)
        for figure in (scorer.plot.figure, trainer.figure):
            assert to_hex(figure.get_facecolor()) == expected["background"]
        assert to_hex(scorer.plot.axes.xaxis.label.get_color()) == expected["text"] or not scorer.rows
    assert theme_colours("dark")["background"] != theme_colours("light")["background"]


def test_the_form_opens_a_chosen_labels_file_and_enables_what_the_regime_uses(make_napari_viewer, tmp_path):
    from napari_sem_focus.training.label_store import LabelStore

    _viewer, _scorer, trainer, _frames, path = _open_with_widgets(make_napari_viewer, tmp_path, 3, (240, 320), 0)
    assert trainer.store is not None and trainer.store.path == path.with_name(f"{path.stem}_focus_labels.csv")
    elsewhere = tmp_path / "project" / "mine.csv"
    elsewhere.parent.mkdir()
    LabelStore(elsewhere).set(str(path), 1, 5000.0, 6.0)
    trainer.labels_box.value = elsewhere  # as the field's "Choose file" button sets it
    assert trainer.store.path == elsewhere and [lb.score for lb in trainer.store.labels()] == [6.0]
    assert trainer.table.rowCount() == 1
    assert not trainer.steps_box.enabled and not trainer.lr_box.enabled  # adapt: no steps or learning rate
    trainer.regime_box.value = "whole network"
    assert trainer.steps_box.enabled and trainer.lr_box.enabled
