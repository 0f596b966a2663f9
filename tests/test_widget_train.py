"""The Label & fine-tune widget under Xvfb: label ~20 frames, fine-tune a few steps, cancel, hot-swap."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sem_focus.model import build_focus_net
from napari_sem_focus.simulate import simulate_series, write_series
from napari_sem_focus.weights import save_weights

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    from napari_sem_focus._widgets.score import ScoreStackWidget
    from napari_sem_focus._widgets.train import TrainWidget

    frames, wds = simulate_series("tinball", 5000.0, steps=20, shape=(160, 200), seed=3)
    path = write_series(tmp_path / "data", frames, wds)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-sem-focus")
    scorer = ScoreStackWidget(viewer)
    weights = save_weights(build_focus_net(), tmp_path / "start.safetensors")
    scorer.set_weights(weights)
    trainer = TrainWidget(viewer)
    viewer.window.add_dock_widget(scorer)
    viewer.window.add_dock_widget(trainer)
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
    assert trainer.table.rowCount() == 20 and trainer.table.item(0, 2).text() != "-"  # model prediction shown
    reopened = type(trainer.store)(trainer.store.path)
    assert len(reopened) == 20  # the labels file round-trips
    trainer.steps_box.setValue(2)
    worker = trainer.start_fine_tune(crop_size=(64, 64), batch_size=4)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert trainer.result is not None and trainer.result.step == 2
    assert "before" in trainer.status.text() and "after" in trainer.status.text()
    assert len(trainer.history) >= 2 and trainer.axes.lines
    scorer.mode_box.setCurrentText("center")
    scorer.metrics_check.setChecked(False)

    def score_now():
        w = scorer.start_scoring()
        with qtbot.waitSignal(w.finished, timeout=120_000):
            pass

    score_now()
    scores_before = [r["score"] for r in scorer.rows]
    new_path = trainer.use_model(tmp_path / "tuned.safetensors")
    assert new_path.with_suffix(".json").is_file()
    assert scorer.weights_edit.text() == str(new_path)
    from napari_sem_focus.weights import load_model

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
    trainer.steps_box.setValue(500)
    worker = trainer.start_fine_tune(crop_size=(64, 64), batch_size=4)
    qtbot.waitUntil(lambda: len(trainer.history) >= 1 or not worker.is_running, timeout=120_000)
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        trainer.cancel()
    assert trainer.result is None
    assert "unchanged" in trainer.status.text()
    assert weights.read_bytes() == before
    assert scorer.weights_edit.text() == str(weights)


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
