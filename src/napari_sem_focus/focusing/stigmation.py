"""Focus and stigmation together: the working distance and both stigmators that give the best-focused image.

An astigmatic beam focuses in two lines at two working distances; a focus-only search settles between them and the
image stays blurred. This search sets the working distance and both stigmators. The microscope is any
``acquire(working_distance_mm, stig_x, stig_y) -> image`` (:class:`AcquireStig`; the virtual SEM and the fibsem
adapter are two); the stigmators are in the microscope's own units, their gain and axes unknown to the search.

Methods (``method=``):

- ``alternating`` — SBEMimage's scheme: three scans along one setting at a time (working distance, stig x, stig y),
  the setting moved to the vertex of the parabola through their scores; round after round, the steps halved, while
  the best score improves.
- ``model`` (default) — the working distance first: a line search with the focus search's fall-off model
  (:mod:`napari_sem_focus.focusing.autofocus`, ``model``) brings the beam near the circle of least confusion. Then
  the beam is read from the frames themselves (``beam_model``, :func:`_stigmate_from_spectra`): two frames of the
  same field differ only by the probe, so their power spectra say how much more one is blurred than the other and
  along which axes (:mod:`.blur_spectrum`); a model of the astigmatic Gaussian probe fitted to every pair
  (:mod:`.beam_model`) gives the best working distance, the astigmatism, and — after two probes with one stigmator
  moved each — the 2x2 map from stigmators to astigmatism (the gain and rotation the search is not told). The search
  jumps to the fitted focus and stigmators; while the learned score has not reached the stigmated level, a focus
  pair around the jump measures the astigmatism left, and it jumps again. Line searches along each setting with the
  score alone (the probe's diameter adds defocus and astigmatism in quadrature, ``d² = d0² + (2α)² (dz² + |a|²/4)``,
  so the score falls off along the stigmators as along the working distance), jumps to the peak of a joint model of
  every scan, and finer line searches polish the result or take over where the frames are too blurred or noisy to
  read the beam. Near focus the best scan is the sharpest by its spectrum among those scoring within
  :data:`SHARPEST_WITHIN` of the top (the learned score rates a frame sharp in one direction above its truth).

With the learned score (an absolute scale) a scan reaching :data:`~napari_sem_focus.focusing.autofocus.IN_FOCUS_SCORE`
that is the best so far ends the search: in focus and stigmated.

Guarantees, as for the focus search: the working distance stays within ``start ± range_um`` and each stigmator
within ``start ± stig_range``; at most ``max_acquisitions`` scans (the final move to the best setting included);
cancellable between scans; it ends on the best setting seen, never worse than the start; 'no structure' (nothing
recognisable: the start is kept), 'cancelled' and 'acquire failed' (with the best seen) say so.
:func:`iter_focus_and_stigmate` yields each scan; :func:`focus_and_stigmate` runs it to the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from ..errors import SemFocusError
from .autofocus import (
    Acquisition,
    Scorer,
    _fit_falloff,
    _model,
    _parabola_vertex,
    _Stop,
    call_with_timeout,
    scan_and_score,
)
from .beam_model import BeamFit, BeamFrame, fit_beam, stigmators_from_astigmatism
from .blur_spectrum import MIN_FRAME_PX, BlurDifference, blur_difference, frame_spectrum, noise_floor

METHODS = ("model", "alternating")
#: With an absolute score (the learned one), a scan reaching this ends the search: in focus and stigmated. Higher
#: than the focus search's 9.5: residual astigmatism leaves an image sharp along one direction, which the learned
#: score rates a little above its true score.
STIGMATED_SCORE = 9.7
#: With the beam model on, the best scan is the sharpest by its spectrum among those scoring within this of the top.
SHARPEST_WITHIN = 1.0
#: Axis names of a setting: working distance (mm), stigmator x, stigmator y (microscope units).
AXES = ("working distance", "stig x", "stig y")


class AcquireStig(Protocol):
    """A microscope with stigmators: set the working distance (mm) and both stigmators, scan, return the image."""

    def __call__(self, working_distance_mm: float, stig_x: float, stig_y: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Setting:
    """Where the beam is set: working distance (mm) and the two stigmators (microscope units)."""

    working_distance_mm: float
    stig_x: float
    stig_y: float

    def along(self, axis: int) -> float:
        """The value of one axis (0: working distance, 1: stig x, 2: stig y)."""
        return (self.working_distance_mm, self.stig_x, self.stig_y)[axis]

    def moved(self, axis: int, value: float) -> Setting:
        """This setting with one axis set to ``value``."""
        name = ("working_distance_mm", "stig_x", "stig_y")[axis]
        return replace(self, **{name: float(value)})


@dataclass
class StigScan:
    """One scan of the search: its setting, score and structure flag (and image)."""

    index: int
    setting: Setting
    score: float
    has_structure: bool
    image: np.ndarray | None = field(default=None, repr=False)
    elapsed_s: float = 0.0
    # :func:`.blur_spectrum.frame_spectrum` of the image, when the search reads the beam from the frames' spectra
    spectrum: np.ndarray | None = field(default=None, repr=False)

    @property
    def working_distance_mm(self) -> float:
        return self.setting.working_distance_mm


@dataclass
class FocusStigResult:
    """The outcome: ``status`` 'focused', 'no structure', 'cancelled' or 'acquire failed'; ``final`` is where the
    search left the beam."""

    status: str
    message: str
    method: str
    start: Setting
    best: Setting
    best_score: float
    scans: list[StigScan]
    final: Setting
    restored: bool = False  # a microscope adapter put the start back (cancelled or failed)

    @property
    def n_acquisitions(self) -> int:
        return len(self.scans)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: every field, the scans without their images."""

        def setting(s: Setting) -> dict[str, float]:
            return {"working_distance_mm": s.working_distance_mm, "stig_x": s.stig_x, "stig_y": s.stig_y}

        return {
            "status": self.status,
            "message": self.message,
            "method": self.method,
            "start": setting(self.start),
            "best": setting(self.best),
            "best_score": self.best_score,
            "final": setting(self.final),
            "restored": self.restored,
            "n_acquisitions": self.n_acquisitions,
            "scans": [setting(a.setting) | {"score": a.score, "has_structure": a.has_structure} for a in self.scans],
        }

    def summary(self) -> str:
        b = self.best
        return (
            f"{self.status}: working distance {b.working_distance_mm:.6f} mm, stigmators ({b.stig_x:+.4f}, "
            f"{b.stig_y:+.4f}), score {self.best_score:.2f} ({self.n_acquisitions} scans, {self.method}) — "
            f"{self.message}"
        )


class _Search3:
    """The bookkeeping of a search over (working distance, stig x, stig y): limits, scans, the best so far."""

    def __init__(
        self,
        acquire: AcquireStig,
        scorer: Scorer,
        start: Setting,
        half_ranges: tuple[float, float, float],
        max_acquisitions: int,
        should_stop: Callable[[], bool] | None,
        acquire_timeout_s: float | None,
        keep_images: bool,
    ):
        self.acquire, self.scorer, self.start = acquire, scorer, start
        self.low = tuple(start.along(i) - half_ranges[i] for i in range(3))
        self.high = tuple(start.along(i) + half_ranges[i] for i in range(3))
        self.max_acquisitions, self.should_stop = max_acquisitions, should_stop
        self.timeout, self.keep_images = acquire_timeout_s, keep_images
        self.scans: list[StigScan] = []
        self.level: float | None = None
        self.beam_model = False  # whether the beam is read from the frames' spectra (each scan's spectrum kept)
        self.modelled = False  # whether the beam model jumped and improved the best score (then only polished)
        self._blur_cache: dict[tuple[int, int], float | None] = {}  # isotropic blur of scan i less scan j (px²)
        self.t0 = time.monotonic()

    def clamp(self, setting: Setting) -> Setting:
        values = [min(max(setting.along(i), self.low[i]), self.high[i]) for i in range(3)]
        return Setting(*values)

    def budget_left(self, reserve: int = 0) -> bool:
        return len(self.scans) < self.max_acquisitions - reserve

    def measure(self, setting: Setting) -> StigScan:
        """Set the beam to ``setting`` (clamped to the limits), scan and score."""
        if self.should_stop is not None and self.should_stop():
            raise _Stop("cancelled", "cancelled by the user")
        s = self.clamp(setting)
        where = f"{s.working_distance_mm:.6f} mm, stigmators ({s.stig_x:+.4f}, {s.stig_y:+.4f})"
        image, score, structure = scan_and_score(
            lambda: call_with_timeout(
                lambda: self.acquire(s.working_distance_mm, s.stig_x, s.stig_y), self.timeout, where
            ),
            self.scorer,
            where,
        )
        scan = StigScan(
            len(self.scans),
            s,
            score,
            structure,
            image if self.keep_images else None,
            time.monotonic() - self.t0,
            _spectrum(image) if self.beam_model else None,
        )
        self.scans.append(scan)
        return scan

    def best(self) -> StigScan:
        """The scan with the highest score; with the beam model on, the sharpest by its spectrum of those within
        :data:`SHARPEST_WITHIN` of it (near focus the learned score rates a frame sharp in one direction above
        its truth; the spectra compare the probes themselves, :func:`.blur_spectrum.blur_difference`)."""
        structured = [a for a in self.scans if a.has_structure]
        top = max(structured or self.scans, key=lambda a: a.score)
        if not self.beam_model or top.spectrum is None:
            return top
        candidates = [a for a in structured if a.spectrum is not None and a.score >= top.score - SHARPEST_WITHIN]
        gains = [(self.sharper_by(a, top) or 0.0, a) for a in candidates if a is not top]
        gain, sharpest = max(gains, key=lambda g: g[0], default=(0.0, top))
        return sharpest if gain > 0 else top

    def sharper_by(self, scan: StigScan, than: StigScan) -> float | None:
        """How much less ``scan``'s probe blurs than ``than``'s (px², isotropic, from their spectra), less the
        margin of :func:`_margin`: positive when clearly sharper; None when the spectra cannot say."""
        key = (scan.index, than.index)
        if key not in self._blur_cache:
            diff = None
            if scan.spectrum is not None and than.spectrum is not None:
                noise = noise_floor([scan.spectrum, than.spectrum])
                diff = blur_difference(than.spectrum, scan.spectrum, noise)
            self._blur_cache[key] = None if diff is None else diff.isotropic - _margin(diff)
        return self._blur_cache[key]

    def reached(self) -> bool:
        """Whether the last scan shows structure, reaches the in-focus level and is the best so far."""
        last = self.scans[-1] if self.scans else None
        if self.level is None or last is None or not last.has_structure or last.score < self.level:
            return False
        return last.score >= max(a.score for a in self.scans)


def _spectrum(image: np.ndarray) -> np.ndarray | None:
    """The frame's power spectrum for the beam model (:func:`.blur_spectrum.frame_spectrum`); None for a frame too
    small (or not 2-D) to measure."""
    frame = np.asarray(image)
    return frame_spectrum(frame) if frame.ndim == 2 and min(frame.shape) >= MIN_FRAME_PX else None


def _margin(diff: BlurDifference) -> float:
    """How much sharper (px², isotropic) a frame must measure to count as sharper: two standard errors of the
    measurement and half a px² (the least of several noisy comparisons would otherwise win by chance)."""
    return 0.5 + 2.0 * diff.isotropic_error


class _Line:
    """One axis of a :class:`_Search3` through a setting, dressed as the focus search's 1-D bookkeeping so that its
    strategies (:func:`napari_sem_focus.focusing.autofocus._model`) search along stigmators as along the working
    distance: ``working_distance_mm`` of its scans is the axis' value. Scans of the 3-D search on this line seed it; at
    most ``budget`` new scans."""

    def __init__(self, search: _Search3, axis: int, through: Setting, budget: int):
        self.search, self.axis, self.through, self.budget = search, axis, through, budget
        self.start = through.along(axis)
        self.low, self.high = search.low[axis], search.high[axis]
        self.level = None  # no polishing along one axis: the 3-D search ends on the in-focus level itself
        self.scans: list[Acquisition] = [self._view(a) for a in search.scans if self._on_line(a.setting)]
        self.new = 0

    def _on_line(self, setting: Setting) -> bool:
        return all(abs(setting.along(i) - self.through.along(i)) <= 1e-12 for i in range(3) if i != self.axis)

    def _view(self, scan: StigScan) -> Acquisition:
        return Acquisition(scan.index, scan.setting.along(self.axis), scan.score, scan.has_structure)

    def clamp(self, x: float) -> float:
        return min(max(x, self.low), self.high)

    def seen(self, x: float, tol: float) -> Acquisition | None:
        return next((a for a in self.scans if abs(a.working_distance_mm - x) <= tol), None)

    def budget_left(self, reserve: int = 0) -> bool:
        return self.new < self.budget - reserve and self.search.budget_left(reserve)

    def measure(self, x: float) -> Acquisition:
        scan = self.search.measure(self.through.moved(self.axis, self.clamp(x)))
        self.new += 1
        view = self._view(scan)
        self.scans.append(view)
        return view

    def best(self) -> Acquisition:
        structured = [a for a in self.scans if a.has_structure]
        return max(structured or self.scans, key=lambda a: a.score)


def _line_search(
    search: _Search3, axis: int, through: Setting, step: float, budget: int
) -> Generator[StigScan, None, Setting]:
    """The focus search's fall-off model along one axis through ``through`` (scanned first when it is not yet), at
    most ``budget`` new scans, each yielded; returns ``through`` moved to the fitted peak along the axis (the
    best scan's value when no fit holds)."""
    line = _Line(search, axis, through, budget)
    near = line.seen(line.start, abs(step) / 8)  # a scan this close stands for the through point
    if near is not None:
        line.start = near.working_distance_mm
    elif line.budget_left(reserve=1):
        line.measure(line.start)
        line.new = 0  # the through point is not one of the line's own scans
        yield search.scans[-1]
        if search.reached():
            return through
    for _ in _model(line, step):  # type: ignore[arg-type]
        yield search.scans[-1]
        if search.reached():
            return through.moved(axis, search.scans[-1].setting.along(axis))
    return through.moved(axis, _fitted_peak(line, step))


def _fitted_peak(line: _Line, step: float) -> float:
    """Where the fall-off model fitted to the line's scans peaks — the circle of least confusion along the working
    distance, less swayed by one noisy scan than the best scan is — when it lies within a step of the scanned span;
    else the best scan's value."""
    values = [a.working_distance_mm for a in line.scans if a.has_structure]
    best = line.best().working_distance_mm
    if len(values) < 3:
        return best
    peak = _fit_falloff(line.scans, line.low, line.high, step)
    if peak is None or not min(values) - step <= peak <= max(values) + step:
        return best
    return peak


#: The ``model`` method's first round of line searches: (axis, new scans at most, first step as a fraction of the
#: axis' step). Each stigmator: a scan either side of the fitted focus, then the fall-off model's steps (up to
#: five: a peak beyond the first steps is followed).
MODEL_ROUND = ((0, 6, 1.0), (1, 5, 1.0), (2, 5, 1.0))
#: After the first round: jumps to the peak of the joint model fitted to every scan, at most this many.
JOINT_JUMPS = 4
#: Then rounds of line searches through the best setting: the first step per axis (working distance, stig x,
#: stig y) as a fraction of the axis' step.
POLISH_ROUNDS = ((0.25, 0.5, 0.5), (0.125, 0.25, 0.25))


def _model_method(search: _Search3, steps: tuple[float, float, float]) -> Generator[StigScan, None, None]:
    done = yield from _first_round(search, steps)
    if done:
        return
    for _ in range(JOINT_JUMPS):
        target = _fit_joint(search, steps)
        if target is None or not search.budget_left(reserve=1):
            break
        target = search.clamp(target)
        if _near_a_scan(search, target, tuple(step / 8 for step in steps)):
            break  # the model points where the search has looked: converged
        yield search.measure(target)
        if search.reached():
            return
    # polish while the budget lasts: a line search per axis through the best setting, with finer steps each
    # round (the working distance first: stigmated, its fall-off is narrower than the first round saw); a round
    # that leaves the best scan where it was ends the search (converged: a noisy, low-dose frame's learned score
    # may never reach the stigmated level)
    for fractions in POLISH_ROUNDS:
        best = search.best()
        for axis in range(3):
            if not search.budget_left(reserve=1):
                return
            yield from _line_search(search, axis, search.best().setting, steps[axis] * fractions[axis], 3)
            if search.reached():
                return
        if search.modelled and search.best() is best:
            return


def _first_round(search: _Search3, steps: tuple[float, float, float]) -> Generator[StigScan, None, bool]:
    """The working distance's line search, then the stigmators from the beam model (when it improves the best
    score, the line searches along the stigmators are skipped: ``search.modelled``) or line searches along each
    stigmator. Returns whether the search is over."""
    through = search.start
    for axis, budget, fraction in MODEL_ROUND:
        if not search.budget_left(reserve=1):
            return True
        through = yield from _line_search(search, axis, through, steps[axis] * fraction, budget)
        if search.reached():
            return True
        if axis == 0 and search.beam_model:
            before = search.best().score
            through = yield from _stigmate_from_spectra(search, through, steps)
            if search.reached() or not search.budget_left(reserve=1):
                return True
            search.modelled = search.modelled and search.best().score > before
            if search.modelled:
                return False
    return False


#: The probes' extra blur at their focus error (px², from the fitted K): enough stretching to read the stigmators.
PROBE_BLUR_PX2 = 10.0
#: Jumps to the fitted beam's focus and stigmators at most (each after the first follows a focus pair).
SPECTRAL_JUMPS = 3


def _beam_frames(search: _Search3) -> list[BeamFrame]:
    return [
        BeamFrame(_model_wd_um(search, a.setting), (a.setting.stig_x, a.setting.stig_y), a.spectrum)
        for a in search.scans
        if a.spectrum is not None
    ]


def _model_wd_um(search: _Search3, setting: Setting) -> float:
    """A setting's working distance as the beam model takes it: µm from the search's start."""
    return (setting.working_distance_mm - search.start.working_distance_mm) * 1e3


def _wd_mm(search: _Search3, model_wd_um: float) -> float:
    """The working distance (mm) of a beam model's one (µm from the search's start)."""
    return search.start.working_distance_mm + model_wd_um * 1e-3


def _stigmate_from_spectra(
    search: _Search3, through: Setting, steps: tuple[float, float, float]
) -> Generator[StigScan, None, Setting]:
    """Fit the beam (:func:`.beam_model.fit_beam`) to the working distance's scans, scan two probes with one
    stigmator moved each, fit again (the stigmators' map too) and jump to the fitted focus and stigmators; then,
    while the learned score has not reached the stigmated level, a focus pair around the jump (its stretching is
    the astigmatism left there; its blur the focus error) and the next jump, to the stigmators that the
    astigmatism measured at the start and at every jump point to (:func:`.beam_model.stigmators_from_astigmatism`)."""
    first = yield from _fit_along_focus(search, through, steps)
    if first is None or search.reached():
        return search.best().setting
    yield from _stigmator_probes(search, first, steps)
    fit = fit_beam(_beam_frames(search))
    if search.reached() or fit is None or fit.stig_map is None or fit.best_stig is None:
        return search.best().setting
    target = Setting(_wd_mm(search, fit.best_wd_um), *fit.best_stig)
    # the astigmatism measured at each stigmator setting: the start's (the working distance's scans), each jump's
    stigs, astigs = [np.array([search.start.stig_x, search.start.stig_y])], [np.array(first.astig_um)]
    for _ in range(SPECTRAL_JUMPS):
        target = _within_reach(search, target, steps)
        # a scan there already: within the defocus that blurs by 1 px², an eighth of a step of each stigmator
        scanned = (float(np.sqrt(1.0 / fit.k_px2_per_um2)) * 1e-3, steps[1] / 8, steps[2] / 8)
        if not search.budget_left(reserve=1) or _near_a_scan(search, target, scanned):
            break
        before = search.best()
        yield search.measure(target)
        search.modelled = True
        if (
            search.reached()
            or not search.budget_left(reserve=3)
            or (search.sharper_by(before, search.scans[-1]) or 0) > 0
        ):
            break  # in focus; out of scans; or the jump left the beam clearly blurrier: the model does not hold here
        pair = yield from _focus_pair(search, target, fit.k_px2_per_um2)
        if search.reached() or pair is None:
            break
        stigs.append(np.array([target.stig_x, target.stig_y]))
        astigs.append(np.array(pair.astig_um))
        solved = stigmators_from_astigmatism(stigs, astigs, fit.stig_map_kind)
        best = solved[0] if solved is not None else stigs[-1] + np.linalg.solve(fit.stig_map, astigs[-1])
        target = Setting(_wd_mm(search, pair.best_wd_um), float(best[0]), float(best[1]))
    return search.best().setting


def _fit_along_focus(
    search: _Search3, through: Setting, steps: tuple[float, float, float]
) -> Generator[StigScan, None, BeamFit | None]:
    """The beam fitted to the scans so far (the working distance's line search); two more scans near its best
    when they cannot say yet (too blurred far out); None when they still cannot."""
    frames = _beam_frames(search)
    fit = fit_beam(frames)
    if fit is not None or not frames:
        return fit
    for offset in (-steps[0] / SPECTRAL_CLOSER, steps[0] / SPECTRAL_CLOSER):
        if not search.budget_left(reserve=4):
            return None
        yield search.measure(through.moved(0, through.working_distance_mm + offset))
        if search.reached():
            return None
    return fit_beam(_beam_frames(search))


def _stigmator_probes(search: _Search3, fit: BeamFit, steps: tuple[float, float, float]) -> Generator[StigScan]:
    """Two scans with one stigmator moved a step each, on either side of the fitted focus, where the stretching
    shows: a quarter of the focal-line separation out (halfway to a focal line: still sharp in every direction),
    at least the defocus that blurs by :data:`PROBE_BLUR_PX2`, at most a step of the working distance."""
    dz = max(float(np.hypot(*fit.astig_um)) / 4, float(np.sqrt(PROBE_BLUR_PX2 / fit.k_px2_per_um2))) * 1e-3
    dz = min(dz, steps[0])
    w_best = _wd_mm(search, fit.best_wd_um)
    s0 = search.start
    for sign, axis in ((1, 1), (-1, 2)):
        if not search.budget_left(reserve=2):
            return
        probe = Setting(w_best + sign * dz, s0.stig_x, s0.stig_y).moved(axis, s0.along(axis) + steps[axis])
        yield search.measure(probe)
        if search.reached():
            return


def _focus_pair(search: _Search3, centre: Setting, k_px2_per_um2: float) -> Generator[StigScan, None, BeamFit | None]:
    """Scans either side of ``centre`` (same stigmators; the defocus that blurs by :data:`PROBE_BLUR_PX2`) and the
    beam fitted to the three: the astigmatism left at ``centre``'s stigmators and the best working distance."""
    dz = float(np.sqrt(PROBE_BLUR_PX2 / k_px2_per_um2)) * 1e-3
    for sign in (-1, 1):
        yield search.measure(centre.moved(0, centre.working_distance_mm + sign * dz))
        if search.reached():
            return None
    same = [f for f in _beam_frames(search) if f.stig == (centre.stig_x, centre.stig_y)]
    near = [f for f in same if abs(f.wd_um - _model_wd_um(search, centre)) <= 1.01 * dz * 1e3]
    return fit_beam(near)


#: Two more scans at the working distance's best ± this fraction of its step when its scans cannot fit the beam.
SPECTRAL_CLOSER = 6.0
#: A jump moves the stigmators at most this many stigmator steps from the best setting so far.
SPECTRAL_REACH = 3.0


def _within_reach(search: _Search3, target: Setting, steps: tuple[float, float, float]) -> Setting:
    """``target`` with its stigmators pulled to within :data:`SPECTRAL_REACH` steps of the best setting's, and
    clamped to the limits."""
    best = search.best().setting
    move = np.array([(target.along(i) - best.along(i)) / steps[i] for i in (1, 2)])
    length = float(np.hypot(*move))
    if length > SPECTRAL_REACH:
        move *= SPECTRAL_REACH / length
        target = Setting(target.working_distance_mm, *(best.along(i) + move[i - 1] * steps[i] for i in (1, 2)))
    return search.clamp(target)


def _near_a_scan(search: _Search3, target: Setting, tolerances: tuple[float, float, float]) -> bool:
    """Whether a scan lies within ``tolerances`` (mm, units, units) of ``target`` on every axis."""
    return any(all(abs(a.setting.along(i) - target.along(i)) <= tolerances[i] for i in range(3)) for a in search.scans)


def _fit_joint(search: _Search3, steps: tuple[float, float, float]) -> Setting | None:
    """The peak of ``s = a - b ln(w² + dz² + c |ds|²)`` (``dz``, ``ds``: working distance and stigmators from the
    peak, in steps; b, c, w > 0) fitted to every scan with structure by Gauss-Newton with damping from a few
    starts; None without enough scans, a valid fit, or a peak within two steps of the scanned settings."""
    scans = [a for a in search.scans if a.has_structure]
    if len(scans) < 7:
        return None
    origin = search.start
    x = np.array([[(a.setting.along(i) - origin.along(i)) / steps[i] for i in range(3)] for a in scans])
    y = np.array([a.score for a in scans])
    best = x[int(np.argmax(y))]
    fits = [_gauss_newton(x, y, np.array([*best, c, w])) for c in (-1.0, 0.0, 1.0) for w in (-1.0, 1.0)]
    fits = [f for f in fits if f is not None]
    if not fits:
        return None
    peak = min(fits, key=lambda f: f[1])[0][:3]
    if np.any(peak < x.min(axis=0) - 2) or np.any(peak > x.max(axis=0) + 2):
        return None
    return Setting(*(origin.along(i) + peak[i] * steps[i] for i in range(3)))


def _joint_residuals(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, bool]:
    """Residuals of the joint model with (a, b) solved by least squares; and whether b > 0 (a peak)."""
    log_c, log_w2 = np.clip(params[3:5], -10.0, 10.0)
    q = np.exp(log_w2) + (x[:, 0] - params[0]) ** 2 + np.exp(log_c) * np.sum((x[:, 1:] - params[1:3]) ** 2, 1)
    if not np.all(np.isfinite(q)):
        return np.full_like(y, 1e6), False
    design = np.stack([np.ones_like(q), -np.log(q)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return design @ coef - y, bool(coef[1] > 0)


def _gauss_newton(x: np.ndarray, y: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Damped Gauss-Newton (Levenberg-Marquardt) on the joint model's 5 shape parameters: (peak, sse) or None."""
    damping = 1e-2
    r, ok = _joint_residuals(params, x, y)
    sse = float(r @ r)
    for _ in range(60):
        jac = np.empty((len(y), 5))
        for k in range(5):
            bumped = params.copy()
            bumped[k] += 1e-5
            jac[:, k] = (_joint_residuals(bumped, x, y)[0] - r) / 1e-5
        normal = jac.T @ jac
        try:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-9), -jac.T @ r)
        except np.linalg.LinAlgError:
            return None
        trial = params + step
        trial[3:5] = np.clip(trial[3:5], -10.0, 10.0)
        r_trial, ok_trial = _joint_residuals(trial, x, y)
        if float(r_trial @ r_trial) < sse:
            params, r, ok, sse = trial, r_trial, ok_trial, float(r_trial @ r_trial)
            damping /= 3
            if np.max(np.abs(step)) < 1e-4:
                break
        else:
            damping *= 4
            if damping > 1e6:
                break
    return (params, sse) if ok and np.all(np.isfinite(params)) else None


def _parabola_along(search: _Search3, axis: int, step: float) -> Generator[StigScan, None, None]:
    """Three scans along ``axis`` around the best setting (centre reused when scanned), then one more at the vertex
    of the parabola through them when it is a maximum within two steps (SBEMimage's series)."""
    centre = search.best().setting
    points = []
    for offset in (-step, 0.0, step):
        target = search.clamp(centre.moved(axis, centre.along(axis) + offset))
        known = next((a for a in search.scans if a.setting == target), None)
        if known is None:
            if not search.budget_left(reserve=1):
                return
            known = search.measure(target)
            yield known
            if search.reached():
                return
        points.append((target.along(axis), known.score))
    vertex = _parabola_vertex(points)
    if vertex is None or abs(vertex - centre.along(axis)) > 2 * step or not search.budget_left(reserve=1):
        return
    target = search.clamp(centre.moved(axis, vertex))
    if all(a.setting != target for a in search.scans):
        yield search.measure(target)


def _alternating_method(search: _Search3, steps: tuple[float, float, float]) -> Generator[StigScan, None, None]:
    scale = 1.0
    previous = -np.inf
    while search.budget_left(reserve=1):
        for axis in range(3):
            yield from _parabola_along(search, axis, steps[axis] * scale)
            if search.reached() or not search.budget_left(reserve=1):
                return
        best = search.best().score
        if best <= previous:  # a round that did not improve: done
            return
        previous, scale = best, scale / 2


_METHODS = {"model": _model_method, "alternating": _alternating_method}


def _check_options(method: str, max_acquisitions: int, range_um: float, stig_range: float) -> None:
    if method not in METHODS:
        raise SemFocusError(f"unknown focus + stigmation method '{method}'; choose from {list(METHODS)}")
    if max_acquisitions < 4:
        raise SemFocusError("a focus + stigmation search needs at least 4 acquisitions")
    if not (range_um > 0 and stig_range > 0):
        raise SemFocusError("the search ranges (working distance µm, stigmator units) must be positive")


def iter_focus_and_stigmate(
    acquire: AcquireStig,
    start_wd_mm: float,
    start_stig: tuple[float, float],
    scorer: Scorer,
    method: str = "model",
    range_um: float = 100.0,
    stig_range: float = 1.0,
    step_um: float | None = None,
    stig_step: float | None = None,
    max_acquisitions: int = 24,
    should_stop: Callable[[], bool] | None = None,
    acquire_timeout_s: float | None = None,
    keep_images: bool = True,
    in_focus_score: float | str | None = "auto",
    beam_model: bool = True,
) -> Generator[StigScan, None, FocusStigResult]:
    """The focus + stigmation search as a generator of scans (module docstring); returns the :class:`FocusStigResult`.

    Args:
        acquire: the microscope (:class:`AcquireStig`).
        start_wd_mm, start_stig: where the beam is now (mm; stigmator units).
        scorer: image -> (score, has_structure) (:func:`napari_sem_focus.focusing.autofocus.learned_scorer`, ...).
        method: 'model' or 'alternating'.
        range_um: the working distance stays within ``start ± range_um`` (µm).
        stig_range: each stigmator stays within ``start ± stig_range`` (microscope units).
        step_um, stig_step: first steps (µm; units); default a quarter of each range.
        max_acquisitions: most scans in all, the final move to the best setting included (>= 4).
        should_stop: checked before each scan; when true the search ends 'cancelled' on the best seen.
        acquire_timeout_s: a scan that takes longer stops the search ('acquire failed').
        keep_images: keep each scan's image.
        in_focus_score: a score that ends the search ('auto': the scorer's ``in_focus_score``; None: never).
        beam_model: with the ``model`` method, read the beam's focus and astigmatism from the frames' spectra
            (:func:`_stigmate_from_spectra`; False: line searches on the score only).
    """
    _check_options(method, max_acquisitions, range_um, stig_range)
    steps = ((step_um or range_um / 4) * 1e-3, stig_step or stig_range / 4, stig_step or stig_range / 4)
    start = Setting(float(start_wd_mm), float(start_stig[0]), float(start_stig[1]))
    search = _Search3(
        acquire,
        scorer,
        start,
        (range_um * 1e-3, stig_range, stig_range),
        max_acquisitions,
        should_stop,
        acquire_timeout_s,
        keep_images,
    )
    level = getattr(scorer, "in_focus_score", None) if in_focus_score == "auto" else in_focus_score
    if in_focus_score == "auto" and level is not None:
        level = max(level, getattr(scorer, "on_model_scale", lambda v: v)(STIGMATED_SCORE))
    search.level = level
    search.beam_model = beam_model and method == "model"
    status, message = "focused", ""
    try:
        yield search.measure(start)
        if not search.reached():
            yield from _METHODS[method](search, steps)
        best = search.best()
        if not best.has_structure:
            raise _Stop("no structure", "no scan showed any specimen structure; the beam left at the start")
        if search.scans[-1].setting != best.setting:  # end on the best setting seen
            yield search.measure(best.setting)
    except _Stop as stop:
        status, message = stop.status, stop.message
        if stop.status == "no structure" and search.scans and search.scans[-1].setting != start:
            try:
                yield search.measure(start)
            except _Stop:
                pass
    if not search.scans:
        raise SemFocusError(f"the search could not make a single scan: {message}")
    best = search.best() if status != "no structure" else search.scans[0]
    if status == "focused":
        message = f"best focus and stigmation found after {len(search.scans)} scans"
    return FocusStigResult(
        status, message, method, start, best.setting, best.score, search.scans, search.scans[-1].setting
    )


def focus_and_stigmate(
    acquire: AcquireStig, start_wd_mm: float, start_stig: tuple[float, float], scorer: Scorer, **options: Any
) -> FocusStigResult:
    """:func:`iter_focus_and_stigmate` run to the end."""
    search = iter_focus_and_stigmate(acquire, start_wd_mm, start_stig, scorer, **options)
    while True:
        try:
            next(search)
        except StopIteration as stop:
            return stop.value
