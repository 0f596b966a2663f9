"""Focus and stigmation together: the working distance and both stigmators that give the best-focused image.

An astigmatic beam focuses in two lines at two working distances; a focus-only search settles between them and the
image stays blurred. This search sets the working distance and both stigmators. The microscope is any
``acquire(working_distance_mm, stig_x, stig_y) -> image`` (:class:`AcquireStig`; the virtual SEM and the fibsem
adapter are two); the stigmators are in the microscope's own units, their gain and axes unknown to the search.

Methods (``method=``):

- ``alternating`` — SBEMimage's scheme: three scans along one setting at a time (working distance, stig x, stig y),
  the setting moved to the vertex of the parabola through their scores; round after round, the steps halved, while
  the best score improves.
- ``model`` (default) — the probe's diameter adds defocus and residual astigmatism in quadrature (``d² = d0² + (2α)²
  (dz² + |a|²/4)``), so along each setting the score falls off as it does with defocus. One line search per setting with
  the focus search's fall-off model (:mod:`napari_sem_focus.focusing.autofocus`, ``model``): working distance, stig x,
  stig y; then jumps to the peak of a joint model of every scan and finer line searches. When the working distance's
  best frame stays blurred (learned score below :data:`WOBBLE_BELOW`: a strongly astigmatic beam, whose line foci the
  learned score rates above their truth, so that stigmator line searches through one of them stall), the stigmators
  are first set by wobbling the focus (:func:`_wobble`, :mod:`.astigmatism`): the anisotropy of a frame over focus
  minus one under focus points along the residual astigmatism whatever the specimen, and Newton steps drive it to
  zero; then the working distance is searched again.

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
from .astigmatism import focus_pair_anisotropy, image_anisotropy
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

METHODS = ("model", "alternating")
#: With an absolute score (the learned one), a scan reaching this ends the search: in focus and stigmated. Higher
#: than the focus search's 9.5: residual astigmatism leaves an image sharp along one direction, which the learned
#: score rates a little above its true score.
STIGMATED_SCORE = 9.7
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
    # :func:`.astigmatism.image_anisotropy` of the image, measured when the search may wobble the focus (else None)
    anisotropy: tuple[float, float] | None = None

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
        self.wobble = False  # whether the search may stigmate by wobbling the focus (each scan's anisotropy kept)
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
            image_anisotropy(image) if self.wobble else None,
        )
        self.scans.append(scan)
        return scan

    def best(self) -> StigScan:
        structured = [a for a in self.scans if a.has_structure]
        return max(structured or self.scans, key=lambda a: a.score)

    def reached(self) -> bool:
        """Whether the last scan shows structure, reaches the in-focus level and is the best so far."""
        last = self.scans[-1] if self.scans else None
        if self.level is None or last is None or not last.has_structure or last.score < self.level:
            return False
        return last.score >= max(a.score for a in self.scans)


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
    through = search.start
    for axis, budget, fraction in MODEL_ROUND:
        if not search.budget_left(reserve=1):
            return
        through = yield from _line_search(search, axis, through, steps[axis] * fraction, budget)
        if search.reached():
            return
        if axis == 0 and search.wobble and _strongly_astigmatic(search):
            through = yield from _wobble(search, through, steps)
            if search.reached() or not search.budget_left(reserve=1):
                return
            through = yield from _line_search(search, 0, through, steps[0] / 2, 4)
            if search.reached():
                return
    for _ in range(JOINT_JUMPS):
        target = _fit_joint(search, steps)
        if target is None or not search.budget_left(reserve=1):
            break
        target = search.clamp(target)
        if _near_a_scan(search, target, steps, 1 / 8):
            break  # the model points where the search has looked: converged
        yield search.measure(target)
        if search.reached():
            return
    # polish while the budget lasts: a line search per axis through the best setting, with finer steps each
    # round (the working distance first: stigmated, its fall-off is narrower than the first round saw)
    for fractions in POLISH_ROUNDS:
        for axis in range(3):
            if not search.budget_left(reserve=1):
                return
            yield from _line_search(search, axis, search.best().setting, steps[axis] * fractions[axis], 3)
            if search.reached():
                return


#: Stigmate from the image's anisotropy first (:func:`_wobble`) when the focus search's best score stays below this
#: (on our scale): a strongly astigmatic beam, whose line foci the learned score rates above their truth.
WOBBLE_BELOW = 8.0
#: Newton steps of :func:`_wobble` after its two probes (each step a pair of scans).
WOBBLE_STEPS = 2
#: The largest move of one Newton step, in stigmator steps.
WOBBLE_MAX_MOVE = 2.4
#: The probes' stigmator step, in stigmator steps.
WOBBLE_PROBE = 1.0
#: A Newton step whose pair scores this much below the first pair ends the wobble.
WOBBLE_SCORE_DROP = 1.0


def _strongly_astigmatic(search: _Search3) -> bool:
    level = getattr(search.scorer, "on_model_scale", None)
    if search.level is None or level is None:
        return False  # a score without an absolute scale cannot say how sharp the best frame is
    return search.best().score < level(WOBBLE_BELOW)


def _pair(
    search: _Search3, wds: tuple[float, float], stig: np.ndarray
) -> Generator[StigScan, None, tuple[np.ndarray, float]]:
    """The focus pair at the stigmators ``stig``: scans under and over focus (working distances ``wds``, mm), each
    reused when already scanned; returns their anisotropy difference
    (:func:`.astigmatism.focus_pair_anisotropy`) and their mean score."""
    scans = []
    for wd in wds:
        setting = search.clamp(Setting(wd, float(stig[0]), float(stig[1])))
        known = next((a for a in search.scans if a.setting == setting), None)
        if known is None:
            known = search.measure(setting)
            yield known
        scans.append(known)
    return focus_pair_anisotropy(scans[0].anisotropy, scans[1].anisotropy), (scans[0].score + scans[1].score) / 2


def _wobble(
    search: _Search3, through: Setting, steps: tuple[float, float, float]
) -> Generator[StigScan, None, Setting]:
    """Stigmate as an operator does, by wobbling the focus: the anisotropy of a frame over focus minus one under
    focus points along the residual astigmatism and vanishes at the right stigmators, whatever the specimen. Its
    response to a step of each stigmator (two probes) gives the 2x2 map from stigmators to astigmatism (their gain
    and rotation), then Newton steps (the map updated by Broyden's rule; a move at most :data:`WOBBLE_MAX_MOVE`
    stigmator steps) drive it to zero; a move whose pair scores :data:`WOBBLE_SCORE_DROP` below the first pair ends
    it. Returns ``through`` with the stigmators whose pair showed the least anisotropy."""
    delta = steps[0]
    wd = through.working_distance_mm
    line = [a for a in search.scans if (a.setting.stig_x, a.setting.stig_y) == (through.stig_x, through.stig_y)]

    def near(target: float) -> float:  # a scan of the focus search this close stands for the pair's frame
        return next((a.working_distance_mm for a in line if abs(a.working_distance_mm - target) <= delta / 4), target)

    wds = (max(near(wd - delta), search.low[0]), min(near(wd + delta), search.high[0]))
    if wds[1] - wds[0] < delta or not search.budget_left(reserve=7):
        return through
    s = np.array([through.stig_x, through.stig_y])
    d, score = yield from _pair(search, wds, s)
    best, best_norm = s, float(np.linalg.norm(d))
    columns = []
    for k in range(2):
        probe = s.copy()
        probe[k] += WOBBLE_PROBE * steps[1 + k]
        d_probe, _ = yield from _pair(search, wds, probe)
        columns.append((d_probe - d) / (WOBBLE_PROBE * steps[1 + k]))
    jac = np.column_stack(columns)
    for _ in range(WOBBLE_STEPS):
        if not search.budget_left(reserve=3) or np.linalg.cond(jac) > 1e3:
            break
        move = -np.linalg.solve(jac, d)
        limit = WOBBLE_MAX_MOVE * max(steps[1], steps[2])
        if np.linalg.norm(move) > limit:
            move *= limit / np.linalg.norm(move)
        target = np.clip(s + move, [search.low[1], search.low[2]], [search.high[1], search.high[2]])
        if np.linalg.norm(target - s) < 1e-9:
            break
        d_new, score_new = yield from _pair(search, wds, target)
        if score_new < score - WOBBLE_SCORE_DROP:
            break  # the beam got much blurrier: the linear map does not hold here
        jac = jac + np.outer(d_new - d - jac @ (target - s), target - s) / float((target - s) @ (target - s))
        s, d = target, d_new
        if np.linalg.norm(d) < best_norm:
            best, best_norm = s, float(np.linalg.norm(d))
    return replace(through, stig_x=float(best[0]), stig_y=float(best[1]))


def _near_a_scan(search: _Search3, target: Setting, steps: tuple[float, float, float], fraction: float) -> bool:
    """Whether a scan lies within ``fraction`` of a step of ``target`` on every axis."""
    return any(
        all(abs(a.setting.along(i) - target.along(i)) <= fraction * steps[i] for i in range(3)) for a in search.scans
    )


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
    wobble: bool = True,
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
        wobble: with the ``model`` method, stigmate a strongly astigmatic beam by wobbling the focus first
            (:func:`_wobble`; False: line searches only).
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
    search.wobble = wobble and method == "model"
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
