"""Closed-loop autofocus: search the working distance that gives the best-focused image.

The microscope is any callable ``acquire(working_distance_mm) -> image`` (:class:`Acquire`): the user's microscope
API goes behind it (no vendor SDK is a dependency); :class:`napari_sem_focus.simulate.virtual_sem.VirtualSEM` is
one, for tests and benchmarks. Each image is scored by a :data:`Scorer` — the learned score
(:func:`learned_scorer`) or a classic metric (:func:`metric_scorer`).

Strategies (``strategy=``):

- ``sweep``: the baseline — evenly spaced working distances over the whole range, the best one kept.
- ``bracket``: step from the start towards the rising score until it falls again (a bracket around the peak),
  then parabola fits through the best three points (Brent's parabolic step) to land between them.
- ``model`` (default): uses the shape of the learned score's fall-off with defocus — about linear in the log of
  the probe diameter, ``s(z) = a - b ln sqrt((z - z*)^2 + w^2)`` — fitted to the first three scans to jump close to
  the peak ``z*`` at once, then refitted after each scan (usually 4-6 scans in all).

With the learned score, whose scale is absolute (10 = perfect focus), ``model`` and ``bracket`` end on the first
scan scoring at least :data:`IN_FOCUS_SCORE` (9.5): the microscope is there already, in focus.

Guarantees, whatever the strategy: the search stays inside ``start ± range_um`` and within ``max_acquisitions``
scans; it is cancellable (``should_stop``) between scans; it ends with the microscope at the best working distance
seen, which is never worse than the start (the start is the first scan); it says so when no scan showed any
structure (``no structure``: focus left at the start) or when the best lies at the edge of the range (``no
peak``: the focus may lie outside); an ``acquire`` that raises or exceeds ``acquire_timeout_s`` stops the search
with a message and the best frame seen so far. :func:`iter_autofocus` yields each scan (for a live plot) and
returns the :class:`AutofocusResult`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import SemFocusError

STRATEGIES = ("model", "bracket", "sweep")
STRUCTURE_SCORE = 1.0  # below this learned score a frame shows no recognisable specimen (the scale's anchor)
#: A learned score this high means "in focus": the score is absolute (10 = perfect focus), so the search can stop
#: on the scan that reaches it. On 200 virtual-SEM searches 232 of the 233 scans scoring >= 9.5 lay within the
#: depth of field, the other at 1.01 depths of field (docs/autofocus.md); a classic metric has no such level.
IN_FOCUS_SCORE = 9.5


class Acquire(Protocol):
    """A microscope: set the working distance (mm), scan, return the image (2-D array)."""

    def __call__(self, working_distance_mm: float) -> np.ndarray: ...


Scorer = Callable[[np.ndarray], tuple[float, bool]]
"""image -> (score, has_structure): higher is better focused. A scorer on an absolute scale may carry an
``in_focus_score`` attribute: a scan reaching it ends the search (the learned score: :data:`IN_FOCUS_SCORE`)."""


def frame_as_float(image: np.ndarray) -> np.ndarray:
    """One scan as float [0, 1] by the reader's intensity rule (:mod:`.io`): 8/16-bit and float images alike."""
    from ..io.series import series_from_arrays

    return series_from_arrays([np.asarray(image)], name="scan", databar_rows=0).frame(0)


def learned_scorer(
    magnification: float | Callable[[], float],
    weights: str | None = None,
    mode: str = "structure",
    device: str = "cpu",
) -> Scorer:
    """The learned focus score (0-10) of one image at ``magnification`` (127 mm over a 1024-px frame), or at the
    magnification a callable returns for each image (a microscope adapter's, read from the image it just took)."""
    from ..scoring.infer import score_frames
    from ..scoring.weights import load_model

    model = load_model(weights, device)
    level = on_model_scale(model)

    def score(image: np.ndarray) -> tuple[float, bool]:
        mag = magnification() if callable(magnification) else magnification
        (result,) = score_frames([frame_as_float(image)], mag, model, mode, device=device)
        # the score itself says whether the specimen is recognisable (1 = just recognisable): a blurred frame
        # has no fine structure for the structure map, yet its score still points towards focus
        return float(result.score), bool(result.score >= level(STRUCTURE_SCORE))

    score.in_focus_score = level(IN_FOCUS_SCORE)  # type: ignore[attr-defined]
    score.on_model_scale = level  # type: ignore[attr-defined]
    return score


def on_model_scale(model: Any) -> Callable[[float], float]:
    """A level of our 0-10 scale (e.g. :data:`IN_FOCUS_SCORE`) on the scale of ``model``: the same for a trained
    model; for weights adapted to a user's own scale (:mod:`.adapt`: a lab whose best frame is 7.5) the level is
    remapped as the scores are (:func:`~napari_sem_focus.scoring.model.remap_scores`)."""
    return lambda level: float(model.remap(np.array([level]))[0])


def metric_scorer(name: str = "normalized_variance") -> Scorer:
    """A classic focus metric (:mod:`.metrics`) as a scorer, as peer autofocus tools use them."""
    from ..scoring.metrics import compute_metrics

    def score(image: np.ndarray) -> tuple[float, bool]:
        return float(compute_metrics(frame_as_float(image), [name])[name]), True

    return score


SCORERS = ("learned", "normalized_variance")


def make_scorer(
    name: str, magnification: float | Callable[[], float], weights: str | None = None, device: str = "cpu"
) -> Scorer:
    """The scorer called ``name``: 'learned' (:func:`learned_scorer`) or a classic metric (:func:`metric_scorer`)."""
    if name == "learned":
        return learned_scorer(magnification, weights, device=device)
    return metric_scorer(name)


@dataclass
class Acquisition:
    """One scan of the search."""

    index: int
    working_distance_mm: float
    score: float
    has_structure: bool
    image: np.ndarray | None = field(default=None, repr=False)
    elapsed_s: float = 0.0


@dataclass
class AutofocusResult:
    """The outcome: ``status`` is 'focused', 'no peak', 'no structure', 'cancelled' or 'acquire failed'.
    ``final_wd_mm`` is where the search left the microscope (mm): the best scan when it succeeded, the start
    after 'no structure', the last scan when it was cancelled or failed (a microscope adapter then restores the
    start: :mod:`napari_sem_focus.focusing.microscopes`)."""

    status: str
    message: str
    strategy: str
    start_wd_mm: float
    best_wd_mm: float
    best_score: float
    acquisitions: list[Acquisition]
    final_wd_mm: float | None = None
    restored: bool = False  # a microscope adapter put the start back (cancelled or failed)

    @property
    def n_acquisitions(self) -> int:
        return len(self.acquisitions)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain values (for JSON): every field, the scans without their images."""
        scans = [
            {"working_distance_mm": a.working_distance_mm, "score": a.score, "has_structure": a.has_structure}
            for a in self.acquisitions
        ]
        fields = {k: v for k, v in self.__dict__.items() if k != "acquisitions"}
        return fields | {"n_acquisitions": self.n_acquisitions, "scans": scans}

    def summary(self) -> str:
        return (
            f"{self.status}: working distance {self.best_wd_mm:.6f} mm, score {self.best_score:.2f} "
            f"({self.n_acquisitions} scans, {self.strategy}) — {self.message}"
        )


class _Stop(Exception):
    """Ends the search early with a status."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def scan_and_score(acquire: Callable[[], np.ndarray], scorer: Scorer, where: str) -> tuple[np.ndarray, float, bool]:
    """(image, score, has_structure) of one scan; any failure of the microscope or the scorer ends the search as
    'acquire failed', naming ``where`` the scan was (a cancel or timeout stop passes through)."""
    try:
        image = acquire()
        if image.ndim != 2:
            raise SemFocusError(f"the microscope returned an image of shape {image.shape}, not a 2-D image")
        score, structure = scorer(image)
    except _Stop:
        raise
    except Exception as err:
        raise _Stop("acquire failed", f"scan at {where} failed: {err}") from err
    return image, score, structure


class _Search:
    """The bookkeeping every strategy shares: limits, scans, the best so far."""

    def __init__(
        self,
        acquire: Acquire,
        scorer: Scorer,
        start_mm: float,
        range_um: float,
        max_acquisitions: int,
        should_stop: Callable[[], bool] | None,
        acquire_timeout_s: float | None,
        keep_images: bool,
    ):
        self.acquire, self.scorer, self.start = acquire, scorer, start_mm
        self.low, self.high = start_mm - range_um * 1e-3, start_mm + range_um * 1e-3
        self.max_acquisitions, self.should_stop = max_acquisitions, should_stop
        self.timeout, self.keep_images = acquire_timeout_s, keep_images
        self.scans: list[Acquisition] = []
        self.t0 = time.monotonic()
        self.level: float | None = None  # the in-focus score, for a scorer on an absolute scale

    def clamp(self, wd: float) -> float:
        return min(max(wd, self.low), self.high)

    def seen(self, wd: float, tol_mm: float) -> Acquisition | None:
        return next((a for a in self.scans if abs(a.working_distance_mm - wd) <= tol_mm), None)

    def budget_left(self, reserve: int = 0) -> bool:
        return len(self.scans) < self.max_acquisitions - reserve

    def _call(self, wd: float) -> np.ndarray:
        return call_with_timeout(lambda: self.acquire(wd), self.timeout, f"{wd:.6f} mm")

    def measure(self, wd: float) -> Acquisition:
        """Scan at ``wd`` (clamped to the range) and score it."""
        if self.should_stop is not None and self.should_stop():
            raise _Stop("cancelled", "cancelled by the user")
        wd = self.clamp(wd)
        image, score, structure = scan_and_score(lambda: self._call(wd), self.scorer, f"{wd:.6f} mm")
        scan = Acquisition(
            len(self.scans), wd, score, structure, image if self.keep_images else None, time.monotonic() - self.t0
        )
        self.scans.append(scan)
        return scan

    def reached(self, level: float | None) -> bool:
        """Whether the last scan shows structure, scores at least ``level`` and is the best so far (in focus: the
        search ends there)."""
        last = self.scans[-1] if self.scans else None
        if level is None or last is None or not last.has_structure or last.score < level:
            return False
        return last.score >= max(a.score for a in self.scans)

    def best(self) -> Acquisition:
        structured = [a for a in self.scans if a.has_structure]
        return max(structured or self.scans, key=lambda a: a.score)


def call_with_timeout(call: Callable[[], Any], timeout_s: float | None, where: str) -> np.ndarray:
    """``call()`` (a microscope's scan) as an array; after ``timeout_s`` seconds without an answer the search stops
    'acquire failed' (the call goes on in a daemon thread: a microscope adapter waits for it before restoring)."""
    if timeout_s is None:
        return np.asarray(call())
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["image"] = call()
        except BaseException as err:  # re-raised below, in the searching thread
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _Stop("acquire failed", f"the microscope gave no image within {timeout_s:g} s at {where}")
    if "error" in box:
        raise box["error"]
    return np.asarray(box["image"])


def _parabola_vertex(points: list[tuple[float, float]]) -> float | None:
    """Working distance of the vertex of the parabola through three (wd, score) points, if it is a maximum."""
    (x0, y0), (x1, y1), (x2, y2) = points
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    if denom == 0:
        return None
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if a >= 0:
        return None
    return -b / (2 * a)


def _fit_falloff(scans: list[Acquisition], low: float, high: float, width_mm: float) -> float | None:
    """Peak ``z*`` of ``s = a - b ln sqrt((z - z*)^2 + w^2)`` (b > 0) fitted to the scans with structure."""
    pts = [(a.working_distance_mm, a.score) for a in scans if a.has_structure]
    if len(pts) < 3:
        return None
    z = np.array([p[0] for p in pts])
    s = np.array([p[1] for p in pts])
    best_z, best_err = None, math.inf
    for w in (width_mm * f for f in (0.0625, 0.125, 0.25, 0.5, 1.0)):
        for z_star in np.linspace(low, high, 801):
            x = np.log(np.sqrt((z - z_star) ** 2 + w * w))
            design = np.stack([np.ones_like(x), -x], axis=1)
            coef, *_ = np.linalg.lstsq(design, s, rcond=None)
            if coef[1] <= 0:
                continue
            err = float(np.sum((design @ coef - s) ** 2))
            if err < best_err:
                best_z, best_err = float(z_star), err
    return best_z


def _check_start(search: _Search, offset_mm: float) -> Generator[Acquisition, None, None]:
    """Scan ``offset_mm`` either side of the start (a start that already scores in focus). When one of them beats
    the start, the start lies on a flank: one more scan at the vertex of the parabola through the three (when it
    is a maximum between them). The search then ends on the best."""
    for wd in (search.start - offset_mm, search.start + offset_mm):
        if search.budget_left(reserve=1) and search.seen(search.clamp(wd), offset_mm * 1e-3) is None:
            yield search.measure(wd)
    if search.best() is search.scans[0] or len(search.scans) < 3 or not search.budget_left(reserve=1):
        return
    points = sorted((a.working_distance_mm, a.score) for a in search.scans[:3])
    vertex = _parabola_vertex(points)
    if vertex is not None and points[0][0] < vertex < points[2][0] and search.seen(vertex, offset_mm / 8) is None:
        yield search.measure(vertex)


def _find_structure(search: _Search, step_mm: float) -> Generator[Acquisition, None, None]:
    """From a start that shows nothing, scan outwards (alternating sides, growing steps) until a frame shows
    structure; raises 'no structure' when the range or the budget runs out."""
    offset = step_mm
    while not any(a.has_structure for a in search.scans):
        if not search.budget_left(reserve=1) or offset > (search.high - search.low):
            raise _Stop("no structure", "no scan showed any specimen structure; focus left at the start")
        for sign in (1, -1):
            wd = search.start + sign * offset
            if search.low <= wd <= search.high and search.budget_left(reserve=1):
                yield search.measure(wd)
                if search.scans[-1].has_structure:
                    return
        offset *= 2


def _sweep(search: _Search, step_mm: float) -> Generator[Acquisition, None, None]:
    n = max(search.max_acquisitions - 2, 2)
    for wd in np.linspace(search.low, search.high, n):
        if search.seen(float(wd), 1e-9) is None and search.budget_left(reserve=1):
            yield search.measure(float(wd))


def _bracket(search: _Search, step_mm: float) -> Generator[Acquisition, None, None]:
    yield from _find_structure(search, step_mm)
    centre = search.best()
    up = search.measure(centre.working_distance_mm + step_mm)
    yield up
    direction = 1.0
    if up.score <= centre.score:
        down = search.measure(centre.working_distance_mm - step_mm)
        yield down
        if down.score <= centre.score:
            direction = 0.0  # the peak lies between the two neighbours
        else:
            direction = -1.0
    while direction and search.budget_left(reserve=3):
        best = search.best()
        wd = search.clamp(best.working_distance_mm + direction * step_mm)
        if search.seen(wd, step_mm * 1e-3) is not None:
            break  # at the edge of the range
        scan = search.measure(wd)
        yield scan
        if scan.score <= best.score:
            break
    tol = step_mm / 16
    while search.budget_left(reserve=1):
        before = len(search.scans)
        yield from _refine_once(search, tol)
        if len(search.scans) == before:
            break


def _model(search: _Search, step_mm: float) -> Generator[Acquisition, None, None]:
    yield from _find_structure(search, step_mm)
    centre = search.best()
    for wd in (centre.working_distance_mm - step_mm, centre.working_distance_mm + step_mm):
        if search.seen(search.clamp(wd), step_mm * 1e-3) is None and search.budget_left(reserve=1):
            yield search.measure(wd)
    tol = step_mm / 16
    converged = False
    while search.budget_left(reserve=1):
        z_star = _fit_falloff(search.scans, search.low, search.high, step_mm)
        if z_star is not None:
            z_star = _at_least_one_gap_uphill(search, z_star, tol)
        if z_star is not None and _back_inside_unbracketed(search, z_star, tol):
            z_star = None  # a noisy fit on a far flank would creep up it in small steps: go beyond the best first
        if z_star is not None and search.seen(z_star, tol) is None:
            yield search.measure(z_star)
            continue
        # no fit, or it points where it has already looked: done if the best scan has scans on both sides, else
        # the peak may lie beyond it — mirror the nearest scan across the best one (uphill) and fit again
        best = search.best()
        others = [a.working_distance_mm - best.working_distance_mm for a in search.scans if a is not best]
        if min(others) < -tol and max(others) > tol:
            converged = True
            # bracketed. If the fit puts the peak on the best scan itself, the search is done (the microscope is
            # there already when it was the last scan); else one parabolic step between it and its neighbours
            on_best = z_star is not None and abs(z_star - best.working_distance_mm) <= tol
            if not on_best and search.budget_left(reserve=1):
                yield from _refine_once(search, tol)
            yield from _polish(search, tol)
            break
        side = -1.0 if max(others) > tol else 1.0
        gap = max(min(abs(d) for d in others if abs(d) > tol), 2 * tol)
        mirror = search.clamp(best.working_distance_mm + side * gap)
        if search.seen(mirror, tol) is not None:
            break  # at the edge of the range
        yield search.measure(mirror)
    if not converged:  # no fit, or the budget ran out: two close neighbours and a parabola through them
        yield from _local_refine(search, step_mm / 4, tol)


#: A best scan scoring below this on an absolute scale (the learned score) is reported with a caution: an image
#: in focus scores far higher (1 = the specimen just recognisable); seen on noisy, far-flank starts.
LOW_BEST_SCORE = 4.0

#: At most this many scans :func:`_polish` adds.
POLISH_SCANS = 4

#: Brent's golden-section fraction: the step into the wider side when a parabolic step would not move.
GOLDEN_STEP = 0.381966


def _polish(search: _Search, tol: float) -> Generator[Acquisition, None, None]:
    """With a scorer on an absolute scale: while the best scan is still below the in-focus score, Brent's steps
    between it and its neighbours (a fit to few, noisy scans may stop on a flank; the absolute score says so):
    parabolic, or golden-section into the wider side where the parabola's vertex falls on the best scan (its
    neighbours too far away to show the peak), at most :data:`POLISH_SCANS`, until a step would land within a
    quarter of the search's tolerance of a scan."""
    for _ in range(POLISH_SCANS):
        if search.level is None or search.best().score >= search.level or not search.budget_left(reserve=1):
            return
        count = len(search.scans)
        yield from _refine_once(search, tol / 4, golden_within=tol)  # finer than the search's tolerance
        if len(search.scans) == count:
            return


def _back_inside_unbracketed(search: _Search, z_star: float, tol: float) -> bool:
    """Whether the fit points back among the scans while the best scan is the outermost one (the peak not yet
    bracketed: no scan beyond it). Scores on a far flank rise little against their noise, and such fits creep
    up it in small steps; a step beyond the best scan brackets the peak or finds more slope."""
    best = search.best().working_distance_mm
    offsets = [a.working_distance_mm - best for a in search.scans]
    below, above = any(d < -tol for d in offsets), any(d > tol for d in offsets)
    if below == above:  # bracketed, or the best scan is the only one
        return False
    inward = -1.0 if below else 1.0
    return (z_star - best) * inward > tol


def _at_least_one_gap_uphill(search: _Search, z_star: float, tol: float) -> float:
    """While the best scan is the outermost one on the side the fit points to, step at least as far as the
    spacing to its nearest scan: a fit to points all on one flank under-shoots, and small steps creep up it."""
    best = search.best().working_distance_mm
    side = math.copysign(1.0, z_star - best)
    beyond = [a for a in search.scans if (a.working_distance_mm - best) * side > tol]
    if beyond or abs(z_star - best) <= tol:
        return z_star
    gap = min(abs(a.working_distance_mm - best) for a in search.scans if abs(a.working_distance_mm - best) > tol)
    return search.clamp(best + side * max(abs(z_star - best), gap))


def _local_refine(search: _Search, half_width_mm: float, tol: float) -> Generator[Acquisition, None, None]:
    """Scan the best working distance's neighbours ``± half_width_mm`` (where not scanned yet), then one
    parabolic step through the best three."""
    for sign in (-1, 1):
        best = search.best()
        wd = search.clamp(best.working_distance_mm + sign * half_width_mm)
        if search.seen(wd, half_width_mm / 2) is None and search.budget_left(reserve=2):
            yield search.measure(wd)
    if search.budget_left(reserve=1):
        yield from _refine_once(search, tol)


def _refine_once(search: _Search, tol: float, golden_within: float = 0.0) -> Generator[Acquisition, None, None]:
    """One step between the best scan and its nearest neighbours: to the vertex of the parabola through the three
    (Brent's parabolic step), or, when that is no maximum inside, halfway into the wider side; or, when the vertex
    lies within ``golden_within`` of the best scan, a golden-section step into the wider side. Nothing when the
    best scan lacks a neighbour on either side, or the step would land within ``tol`` of a scan."""
    best = search.best()
    x = best.working_distance_mm
    left = [a for a in search.scans if a.working_distance_mm < x - tol]
    right = [a for a in search.scans if a.working_distance_mm > x + tol]
    if not left or not right:
        return
    lo = max(left, key=lambda a: a.working_distance_mm)
    hi = min(right, key=lambda a: a.working_distance_mm)
    vertex = _parabola_vertex([(a.working_distance_mm, a.score) for a in (lo, best, hi)])
    wider = lo if x - lo.working_distance_mm > hi.working_distance_mm - x else hi
    if vertex is None or not lo.working_distance_mm < vertex < hi.working_distance_mm:
        vertex = (x + wider.working_distance_mm) / 2
    elif abs(vertex - x) <= golden_within:
        vertex = x + GOLDEN_STEP * (wider.working_distance_mm - x)
    if search.seen(vertex, tol) is None:
        yield search.measure(vertex)


_STRATEGY_FUNCTIONS = {"model": _model, "bracket": _bracket, "sweep": _sweep}


def iter_autofocus(
    acquire: Acquire,
    start_wd_mm: float,
    scorer: Scorer,
    strategy: str = "model",
    range_um: float = 100.0,
    step_um: float | None = None,
    max_acquisitions: int = 12,
    should_stop: Callable[[], bool] | None = None,
    acquire_timeout_s: float | None = None,
    keep_images: bool = True,
    in_focus_score: float | str | None = "auto",
    check_start: bool = True,
) -> Generator[Acquisition, None, AutofocusResult]:
    """The search as a generator of scans (module docstring); returns the :class:`AutofocusResult`.

    Args:
        acquire: the microscope (:class:`Acquire`).
        start_wd_mm: working distance (mm) to start from.
        scorer: image -> (score, has_structure) (:func:`learned_scorer`, :func:`metric_scorer`).
        strategy: 'model', 'bracket' or 'sweep'.
        range_um: the search stays within ``start ± range_um`` (µm).
        step_um: first step (µm); default a quarter of the range.
        max_acquisitions: most scans in all, the final move to the best working distance included (>= 3).
        should_stop: checked before each scan; when true the search ends 'cancelled' with the best seen.
        acquire_timeout_s: a scan that takes longer stops the search ('acquire failed').
        keep_images: keep each scan's image in its :class:`Acquisition`.
        in_focus_score: a score that ends the search on the scan reaching it ('auto': the scorer's
            ``in_focus_score``, 9.5 for the learned score, none for a classic metric; None: never). Not for 'sweep'.
        check_start: when the start already reaches ``in_focus_score``, scan once either side of it (a sixteenth
            of the range away) and end on the best of the three: a start on the edge of the depth of field can
            score "in focus" while the focus lies beside it.
    """
    if strategy not in STRATEGIES:
        raise SemFocusError(f"unknown autofocus strategy '{strategy}'; choose from {list(STRATEGIES)}")
    if max_acquisitions < 3:
        raise SemFocusError("an autofocus search needs at least 3 acquisitions")
    if not range_um > 0:
        raise SemFocusError("the search range must be positive (µm)")
    step_mm = (step_um if step_um else range_um / 4) * 1e-3
    search = _Search(
        acquire, scorer, start_wd_mm, range_um, max_acquisitions, should_stop, acquire_timeout_s, keep_images
    )
    scorer_level = getattr(scorer, "in_focus_score", None)  # set on a scorer on an absolute scale (the learned one)
    level = scorer_level if in_focus_score == "auto" else in_focus_score
    search.level = None if strategy == "sweep" else level  # the sweep, the baseline, always completes
    status, message = yield from _search_from(search, strategy, start_wd_mm, step_mm, check_start)
    if not search.scans:
        raise SemFocusError(f"autofocus could not make a single scan: {message}")
    final_wd = search.scans[-1].working_distance_mm
    best = search.best() if status != "no structure" else search.scans[0]
    if status == "focused":
        message = f"best focus found after {len(search.scans)} scans"
        if scorer_level is not None and best.score < LOW_BEST_SCORE:
            message += (
                f", but its score is only {best.score:.1f}/10: the search may have stopped on a flank far from focus "
                "(noisy images, or a start far out); start nearer focus or with a higher dose"
            )
    return AutofocusResult(
        status, message, strategy, start_wd_mm, best.working_distance_mm, best.score, search.scans, final_wd
    )


def _search_from(
    search: _Search, strategy: str, start_wd_mm: float, step_mm: float, check_start: bool
) -> Generator[Acquisition, None, tuple[str, str]]:
    """Scan the start, run ``strategy`` from it (first step ``step_mm``, mm) until a scan reaches the search's level,
    and leave the microscope at the best working distance seen (back at the start when nothing showed structure);
    returns (status, message): 'focused' or 'no peak', or why the search stopped."""
    level = search.level
    try:
        yield search.measure(start_wd_mm)
        if search.reached(level) and check_start:  # in focus already? one scan either side says whether it is
            yield from _check_start(search, step_mm / 4)  # the search ends on the best of the three
        elif not search.reached(level):
            for scan in _STRATEGY_FUNCTIONS[strategy](search, step_mm):
                yield scan
                if search.reached(level):
                    break
        best = search.best()
        if not best.has_structure:
            raise _Stop("no structure", "no scan showed any specimen structure; focus left at the start")
        status, message = "focused", ""
        edge = min(best.working_distance_mm - search.low, search.high - best.working_distance_mm)
        if edge < step_mm * 1e-3 and abs(best.working_distance_mm - start_wd_mm) > 0:
            status = "no peak"
            message = "the best scan lies at the edge of the search range: the focus may lie outside it"
        # leave the microscope at the best working distance seen (one more scan unless it was the last one)
        if search.scans[-1].working_distance_mm != best.working_distance_mm:
            yield search.measure(best.working_distance_mm)
        return status, message
    except _Stop as stop:
        if stop.status == "no structure" and search.scans and search.scans[-1].working_distance_mm != start_wd_mm:
            try:
                yield search.measure(start_wd_mm)
            except _Stop:
                pass
        return stop.status, stop.message


def autofocus(acquire: Acquire, start_wd_mm: float, scorer: Scorer, **options: Any) -> AutofocusResult:
    """:func:`iter_autofocus` run to the end."""
    search = iter_autofocus(acquire, start_wd_mm, scorer, **options)
    while True:
        try:
            next(search)
        except StopIteration as stop:
            return stop.value
