"""Focus and stigmation together: the virtual SEM's stigmators, the search's guarantees on an analytic microscope,
then end to end on the virtual SEM (learned score), the CLI, and through fibsem's demo microscope."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_sem_focus.cli import main
from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.focusing.autofocus import autofocus, learned_scorer
from napari_sem_focus.focusing.stigmation import (
    METHODS,
    STIGMATED_SCORE,
    Setting,
    focus_and_stigmate,
    iter_focus_and_stigmate,
)
from napari_sem_focus.simulate.frame import FrameParams
from napari_sem_focus.simulate.virtual_sem import VirtualSEM


def _astigmatic(**extra):
    frame = FrameParams("tinball", 10_000.0, electrons_per_px=200, astig_um=12.0, astig_angle_deg=40.0, seed=2)
    return VirtualSEM(frame, true_wd_mm=5.0, stig_gain_um=20.0, stig_rotation_deg=30.0, **extra)


def test_virtual_sem_stigmators_cancel_the_astigmatism_at_one_setting():
    sem = _astigmatic(shape=(96, 128))
    assert sem.residual_astigmatism((0.0, 0.0)) == pytest.approx((12.0, 40.0))
    best = sem.best_stigmator()
    assert sem.residual_astigmatism(best)[0] == pytest.approx(0.0, abs=1e-9)
    assert math.hypot(*best) == pytest.approx(12.0 / 20.0)  # the gain: 20 µm per unit
    assert sem.true_score(5.0, best) == pytest.approx(10.0)
    assert sem.true_score(5.0, (0.0, 0.0)) < 9.0  # astigmatic: not in focus at the best working distance
    # defocus and astigmatism add in quadrature: dz² + a²/4 is what the truth depends on
    dof = sem.depth_of_field_um()
    assert sem.in_focus_and_stigmated(5.0 + 0.99 * dof * 1e-3, best)
    assert not sem.in_focus_and_stigmated(5.0 + 0.8 * dof * 1e-3, (best[0] + 0.2, best[1]))
    clean = VirtualSEM(
        FrameParams("tinball", 10_000.0, electrons_per_px=math.inf, astig_um=12.0, astig_angle_deg=40.0, seed=2),
        stig_gain_um=20.0,
        stig_rotation_deg=30.0,
        shape=(96, 128),
    )
    blurred, sharp = clean(5.0, 0.0, 0.0), clean(5.0, *best)  # noise-free frames: the blur alone differs
    assert clean.stigmator == pytest.approx(best)
    assert np.abs(np.diff(sharp, axis=1)).mean() > 1.2 * np.abs(np.diff(blurred, axis=1)).mean()


class Astigmatic:
    """An analytic microscope with stigmators: the 'image' carries its setting; the score falls off as the
    learned score does, ``10 - 2 ln(1 + (dz / 2 µm)² + c |s - s*|²)``, to 0 far out."""

    def __init__(self, focus_mm=5.0, best=(0.3, -0.2), c=100.0, fail_at=None, noise=0.0):
        self.focus_mm, self.best, self.c, self.fail_at = focus_mm, np.array(best), c, fail_at
        self.calls, self.rng, self.noise = [], np.random.default_rng(0), noise

    def __call__(self, wd, sx, sy):
        self.calls.append((wd, sx, sy))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise OSError("stigmator controller did not answer")
        return np.full((4, 4), 0.0) + np.array([wd, sx, sy, 0.0])

    def truth(self, setting):
        dz = (setting.working_distance_mm - self.focus_mm) * 1e3
        ds = np.array([setting.stig_x, setting.stig_y]) - self.best
        return max(0.0, 10.0 - 2.0 * math.log(1.0 + (dz / 2) ** 2 + self.c * float(ds @ ds)))

    def score(self, image):
        wd, sx, sy = image[0, :3]
        s = self.truth(Setting(wd, sx, sy)) + self.noise * self.rng.normal()
        return s, s >= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_both_methods_find_focus_and_stigmation_within_their_limits(method):
    scope = Astigmatic()
    start = Setting(5.004, 0.0, 0.0)
    result = focus_and_stigmate(
        scope, 5.004, (0.0, 0.0), scope.score, method=method, range_um=20, stig_range=1.0, max_acquisitions=30
    )
    assert result.status == "focused" and len(scope.calls) == result.n_acquisitions <= 30
    assert all(abs(wd - 5.004) <= 0.020 + 1e-12 and abs(sx) <= 1 and abs(sy) <= 1 for wd, sx, sy in scope.calls)
    assert scope.truth(result.best) >= scope.truth(start)  # never worse than the start
    assert result.final == result.best  # the beam is left on the best setting seen
    assert scope.truth(result.best) > 9.0


def test_model_method_uses_fewer_scans_than_the_alternating_series_on_noisy_scores():
    scans = {}
    for method in METHODS:
        counts, good = [], 0
        for seed in range(4):
            scope = Astigmatic(best=(0.2 + 0.1 * seed, -0.3), noise=0.1)
            scope.rng = np.random.default_rng(seed)
            # ends at the level the learned score uses (without one, both methods spend the whole budget)
            r = focus_and_stigmate(
                scope, 5.006, (0.0, 0.0), scope.score, method=method, range_um=25, in_focus_score=STIGMATED_SCORE
            )
            counts.append(r.n_acquisitions)
            good += scope.truth(r.best) >= 9.0
        scans[method] = (np.median(counts), good)
    assert scans["model"][1] >= scans["alternating"][1]
    assert scans["model"][0] < scans["alternating"][0]


def test_a_learned_score_at_the_in_focus_level_ends_the_search():
    scope = Astigmatic()

    def score(image):
        s, structure = scope.score(image)
        return s, structure

    score.in_focus_score = 9.5
    result = focus_and_stigmate(scope, 5.0, tuple(scope.best), score)
    assert result.n_acquisitions == 1 and result.best_score >= 9.5


def test_cancel_and_a_failing_microscope_end_on_the_best_seen():
    scope = Astigmatic()
    calls = []
    result = focus_and_stigmate(
        scope, 5.01, (0.0, 0.0), scope.score, should_stop=lambda: calls.append(1) or len(calls) > 4
    )
    assert result.status == "cancelled" and result.n_acquisitions == 4
    assert result.best_score == max(s.score for s in result.scans)
    failing = Astigmatic(fail_at=3)
    result = focus_and_stigmate(failing, 5.01, (0.0, 0.0), failing.score)
    assert result.status == "acquire failed" and "did not answer" in result.message and result.n_acquisitions == 2


def test_no_structure_keeps_the_start_and_bad_options_are_clear():
    def blank(image):
        return 0.1, False

    result = focus_and_stigmate(Astigmatic(), 5.0, (0.1, 0.2), blank, max_acquisitions=8)
    assert result.status == "no structure" and result.best == Setting(5.0, 0.1, 0.2) == result.final
    with pytest.raises(SemFocusError, match="unknown focus"):
        focus_and_stigmate(Astigmatic(), 5.0, (0, 0), blank, method="simplex")
    with pytest.raises(SemFocusError, match="at least 4"):
        focus_and_stigmate(Astigmatic(), 5.0, (0, 0), blank, max_acquisitions=3)


@pytest.fixture(scope="module")
def scorer():
    return learned_scorer(10_000.0)


def test_virtual_sem_end_to_end_in_focus_and_stigmated(scorer):
    sem = _astigmatic(shape=(384, 512))
    start = 5.015
    search = iter_focus_and_stigmate(sem, start, (0.0, 0.0), scorer, range_um=sem.search_setup(15)[1])
    scans = []
    while True:
        try:
            scans.append(next(search))
        except StopIteration as stop:
            result = stop.value
            break
    final = result.final
    assert sem.true_score(start, (0.0, 0.0)) < 5.0
    assert sem.in_focus_and_stigmated(final.working_distance_mm, (final.stig_x, final.stig_y))
    assert result.n_acquisitions == len(scans) <= 24


def test_focus_search_checks_a_start_that_already_scores_in_focus():
    """A start on the edge of the depth of field can score >= 9.5: one scan either side (and a parabolic step when
    one of them is better) keeps the search from stopping beside the focus."""
    sem = VirtualSEM(FrameParams("tinball", 1000.0, electrons_per_px=200, seed=0), true_wd_mm=5.0)
    start, range_um = sem.search_setup(-25.0)
    result = autofocus(sem, start, learned_scorer(1000.0), range_um=range_um)
    assert result.n_acquisitions <= 4
    assert abs(sem.defocus_um(result.best_wd_mm)) < 0.5 * sem.depth_of_field_um()


def test_cli_stigmate_on_the_virtual_sem(capsys, tmp_path):
    plot = tmp_path / "stig.png"
    argv = ["autofocus", "--virtual", "--mag", "10000", "--start-offset-um", "15", "--astig-um", "12"]
    argv += ["--astig-angle-deg", "40", "--stig-gain-um", "20", "--stig-rotation-deg", "30", "--stigmate"]
    assert main([*argv, "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "focused" and out["n_acquisitions"] <= 24
    assert out["final_true_score"] >= 9.0 > out["start_true_score"]
    assert out["final_residual_astig_um"] < 12.0 and len(out["best_stigmator"]) == 2
    assert {"working_distance_mm", "stig_x", "stig_y", "score"} <= set(out["scans"][0])
    assert plot.stat().st_size > 20_000
    assert main([*argv, "--json", "--no-beam-model", "--max-scans", "6"]) == 0  # the score-only path
    lines = json.loads(capsys.readouterr().out)
    assert lines["n_acquisitions"] <= 6 and lines["final_true_score"] >= lines["start_true_score"]


def test_a_strongly_astigmatic_beam_is_stigmated_from_the_frames_spectra(scorer):
    """Focal lines 9 depths of field apart at 670x: the learned score prefers either line focus to the circle of
    least confusion, so line searches on the score alone stall there (this start ended at a true 7.3 with them when
    written). The beam model reads focus and astigmatism from the frames' spectra instead: the working distance's
    line search, two probes with one stigmator moved a step each, then a jump to the fitted focus and stigmators."""
    frame = FrameParams("rough", 666.0, electrons_per_px=360, astig_um=322.0, astig_angle_deg=105.0, seed=18)
    sem = VirtualSEM(frame, true_wd_mm=5.0, shape=(512, 512), stig_gain_um=440.0, stig_rotation_deg=163.0)
    start = 4.6413
    result = focus_and_stigmate(sem, start, (0.0, 0.0), learned_scorer(666.0), range_um=741.0, keep_images=False)
    stigs = [(scan.setting.stig_x, scan.setting.stig_y) for scan in result.scans]
    assert (0.25, 0.0) in stigs and (0.0, 0.25) in stigs  # the probes: one stigmator a step (a quarter range) each
    first_move = next(i for i, s in enumerate(stigs) if s != (0.0, 0.0))
    assert all(s == (0.0, 0.0) for s in stigs[:first_move])  # the working distance first
    final = result.final
    assert sem.true_score(start, (0.0, 0.0)) < 3.0
    assert sem.in_focus_and_stigmated(final.working_distance_mm, (final.stig_x, final.stig_y))
    assert result.n_acquisitions <= 12
    lines = focus_and_stigmate(
        sem, start, (0.0, 0.0), learned_scorer(666.0), range_um=741.0, keep_images=False, beam_model=False
    )
    assert all(s.spectrum is None for s in lines.scans)  # the score alone: no spectra taken
