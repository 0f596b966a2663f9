"""Few-label adaptation: teach the focus model your microscope with 5-20 labelled frames.

With a handful of labels, fine-tuning the whole network over-fits (the README's old screenshot: RMSE on held-out
labelled frames 0.36 -> 0.58 after 30 steps on 8 frames). This module adapts only what a few labels can pin down,
chooses how far to go by cross-validation, and never returns a model that agrees with the labels worse than the
starting one.

How (figures in docs/benchmarks.md "Few-label adaptation", from ``benchmarks/few_labels.py``):

1. **Features once.** The trunk (ResNet18, BatchNorm statistics kept) is frozen, so each labelled frame's trunk features
   are computed once: the 320x240 tiles that the default ``structure`` mode scores (see
   :mod:`napari_sem_focus.scoring.structure`). A frame's score is the mean of its tiles' scores, as in scoring. No
   mirror images: a mirrored SEM frame is not the same frame to the model (the detector sees the other side of each
   edge; it scores up to 0.4 lower on real textures), so teaching the head that both carry the label biased it.
2. **Candidates**, simplest first:
   ``line`` - the user's score as a straight line of ours, ``lo + (hi - lo) s / 10`` clipped to 0-10, fitted by
   least squares in closed form (2 numbers; the ends at our 0 and 10 move anywhere in -10..20: a lab whose best
   frame is a 7.5, one offset by a point, one stricter at the bottom); stored in the weights' config
   (``score_remap``) and applied to each frame's pooled score (:func:`napari_sem_focus.scoring.model.remap_scores`);
   ``head`` - that line, then the three fully connected layers re-weighted, pulled towards the model's own
   ("L2-SP"; fixes what the features see but the head weighs differently: a new texture or detector), tried from
   :data:`MIN_FRAMES_HEAD` = 10 labelled frames on;
   ``monotone`` - the user's score as a monotone curve of ours: the isotonic regression of the labels on our score
   (:func:`monotone_curve`; ``score_curve`` in the weights' config), for a scale that bends (a user who judges
   "recognisable or not"), tried from :data:`MIN_FRAMES_MONOTONE` = 5 labelled frames on.
3. **Cross-validation** (k-fold, k = min(5, number of frames); leave-one-out for 5): every candidate is trained on
   k-1 folds and its RMSE on the held-out fold is recorded at a ladder of steps (early stopping). The simplest of
   the line and the head within one standard error of the best, or the monotone curve when it is clearly better
   than that (:func:`choose`), is trained on all labelled frames with its best step count.
4. **Never worse**: when it does not lower the cross-validated RMSE by at least :data:`MIN_GAIN` (2 %), with a
   mean per-frame gain above :data:`SIGNIFICANCE` standard errors, the result says so and carries the starting
   model unchanged (``adopted = False``).
5. **A scale that bends** (:func:`bends`): when the labels keep our order of the frames (the monotone curve through
   them misses them by less than :data:`CURVE_FIT`) but neither the model nor the least-squares line comes within
   :data:`LINE_MISFIT` of them, the curve is adopted where cross-validation chose the line or nothing: with 5 labels
   of a lab that says "blurred" or "sharp", leaving out the frame where a level starts leaves nothing to predict it
   from, so cross-validation cannot show what the labels plainly say (``chosen_by = "bend"``).

Measured (benchmarks/few_labels.py; docs/benchmarks.md "Few-label adaptation"): against the simple remaps a user
could fit themselves (least-squares line, isotonic regression of the label on our score) over six users' scales and
seven frame sets. Remaps of the logit with fixed ends (``10 sigmoid(a z + b)``) could not follow a compressed or
offset scale; four-number remaps (``lo + (hi - lo) sigmoid(a z + b)``) and the head started from the model's own
line over-fitted 5-10 labels more often than they helped; the head started on the fitted line is what beats the
simple remaps on real textures from 10 labels on, once it learns from the frames as they are scored (taught on
mirror images too it was biased and lost to isotonic regression on three real-texture rows).

The whole-network path (:func:`napari_sem_focus.training.train.iter_fine_tune`) stays for users with hundreds of labels.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import CancelledError, SemFocusError

#: Steps (full-batch Adam) at which the held-out error is recorded; the best one is kept.
STEP_LADDER = (10, 25, 50, 100, 200, 400)
#: Candidate: (learning rate, pull towards the starting weights), simplest first.
CANDIDATES = {"line": (0.0, 1e-4), "head": (1e-3, 1e-2), "monotone": (0.0, 0.0)}
#: The narrowest score range a remap may leave (score units): its ends stay at least this far apart.
MIN_SPAN = 0.5
#: The ``head`` candidate (about 150,000 numbers) is tried only from this many labelled frames on.
MIN_FRAMES_HEAD = 10
#: The ``monotone`` candidate is tried from this many labelled frames on...
MIN_FRAMES_MONOTONE = 5
#: ... and replaces the line or head only when its mean per-frame cross-validated gain over them exceeds this many
#: standard errors (measured in benchmarks/few_labels.py: adopted on the one-standard-error rule with the others,
#: the curve won cross-validation by chance and missed 9 of 51 rows instead of 4).
MONOTONE_SIGNIFICANCE = 2.0
#: Relative cross-validated gain a candidate needs before it replaces the starting model.
MIN_GAIN = 0.02
#: ... and its mean per-frame gain must exceed this many standard errors of the gains.
SIGNIFICANCE = 0.5
#: A scale that bends: when neither the model nor the least-squares line comes within this RMS (score units) of the
#: labelled frames...
LINE_MISFIT = 1.0
#: ... while the monotone curve through them comes within this RMS (the labels keep our order of the frames), the
#: curve is adopted although cross-validation cannot show it with few frames: a lab that says "blurred" or "sharp"
#: labels most frames 0.5 or 9.5, and leaving out the one frame that shows where a level starts leaves nothing to
#: predict it from (benchmarks/few_labels.py, the two-level user with 5 labels: 1.92 -> 1.75 over 10 draws, the
#: curve adopted in 6, where the model had been kept in all; 0.8-1.2 and 0.05-0.4 give the same rows).
CURVE_FIT = 0.2
MIN_FRAMES = 3

Sample = tuple[np.ndarray, float, float]  # (image float [0, 1], magnification, score)


@dataclass
class FrameFeatures:
    """Trunk features of one labelled frame's scored tiles and its label."""

    features: np.ndarray  # (tiles, n_features) float32
    mag_norm: float
    score: float


@dataclass
class AdaptEvent:
    """Progress of :func:`iter_adapt`: ``stage`` is "features" or "cross-validation" or "final"."""

    stage: str
    done: int
    total: int
    elapsed_s: float
    message: str = ""


@dataclass
class AdaptResult:
    """What :func:`adapt` did.

    Attributes:
        model: the adapted model, or the starting model itself when ``adopted`` is False.
        adopted: whether adaptation lowered the cross-validated RMSE by at least :data:`MIN_GAIN`.
        regime: the winning candidate ("line", "monotone" or "head"), or "none".
        steps: its optimiser steps.
        cv_rmse_before: cross-validated RMSE of the starting model on the labelled frames (score units; the
            starting model is not trained on them, so this is simply its RMSE).
        cv_rmse_after: cross-validated RMSE of the chosen regime (each frame predicted by a model that did not
            see it), or ``cv_rmse_before`` when nothing was adopted.
        folds: number of cross-validation folds.
        table: cross-validated RMSE of every candidate at every step of :data:`STEP_LADDER`.
        seconds: wall time.
        chosen_by: "cross-validation", or "bend" when the monotone curve was adopted because the labels keep our
            order but no line follows them (:func:`bends`; its ``cv_rmse_after`` may then exceed the model's).
    """

    model: Any
    adopted: bool
    regime: str
    steps: int
    cv_rmse_before: float
    cv_rmse_after: float
    n_frames: int
    folds: int
    table: dict[str, dict[int, float]] = field(default_factory=dict)
    seconds: float = 0.0
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores_before: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores_after: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cv_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    start_remap: tuple[float, float] = (0.0, 10.0)
    start_curve: tuple[tuple[float, float], ...] = ()
    chosen_by: str = "cross-validation"

    @property
    def remap(self) -> tuple[float, float] | None:
        """The adopted model's line (``score_remap``), or None when nothing was adopted."""
        return tuple(self.model.config.score_remap) if self.adopted else None

    @property
    def curve(self) -> tuple[tuple[float, float], ...] | None:
        """The adopted model's monotone curve (``score_curve`` knots), or None (nothing adopted, or a line)."""
        if not self.adopted or not self.model.config.score_curve:
            return None
        return tuple(self.model.config.score_curve)

    def remap_curve(self, scores: Any) -> np.ndarray | None:
        """The adopted remap (line or curve) as a function of the starting model's frame score (score units in and
        out), or None when nothing was adopted. For ``head`` it is the line the head was re-weighted after, not the
        final scores (those depend on each frame's features: :attr:`scores_after`)."""
        from ..scoring.model import remap_scores

        if not self.adopted:
            return None
        ours = np.linspace(0.0, 10.0, 2001)  # our scale; the starting model shows its remap of it
        shown = remap_scores(ours, self.start_remap, self.start_curve)
        # where the starting model's remap is flat, the first of our scores that gives the shown value
        at = np.interp(np.asarray(scores, np.float64), *_increasing(shown, ours))
        return self.model.remap(at)

    def describe(self) -> str:
        """What was adopted, in words a user can check against their labels."""
        if not self.adopted:
            return "nothing: the current model is kept"
        if self.curve:
            knots = ", ".join(f"{x:.1f}->{y:.1f}" for x, y in _few(self.curve))
            return f"monotone: your score follows ours through {len(self.curve)} knots (ours->yours: {knots})"
        lo, hi = self.remap or self.start_remap
        line = f"your score = {(hi - lo) / 10.0:.3f} x our score {lo:+.2f}, clipped to 0-10"
        if self.regime == "head":
            return f"head: a line ({line}), then the three fully connected layers re-weighted (no single curve)"
        return f"line: {line}"

    @property
    def metrics(self) -> dict[str, Any]:
        """JSON-ready facts (saved with the adapted weights)."""
        return {
            "adaptation": "few-label (trunk frozen, cross-validated)",
            "adopted": self.adopted,
            "regime": self.regime,
            "chosen_by": self.chosen_by,
            "steps": self.steps,
            "n_frames": self.n_frames,
            "folds": self.folds,
            "cv_rmse_before": round(self.cv_rmse_before, 4),
            "cv_rmse_after": round(self.cv_rmse_after, 4),
            "seconds": round(self.seconds, 1),
            "table": {name: {str(k): round(v, 4) for k, v in row.items()} for name, row in self.table.items()},
            "remap": None if self.remap is None or self.curve else [round(v, 5) for v in self.remap],
            "curve": None if self.curve is None else [[round(x, 5), round(y, 5)] for x, y in self.curve],
            "description": self.describe(),
        }

    def summary(self) -> str:
        """One sentence for the CLI and the widget (two with fewer than :data:`MIN_FRAMES_HEAD` labelled frames)."""
        return self._outcome() + (self._too_few() if self.n_frames < MIN_FRAMES_HEAD else "")

    def _outcome(self) -> str:
        gain = 1.0 - self.cv_rmse_after / self.cv_rmse_before if self.cv_rmse_before > 0 else 0.0
        if not self.adopted:
            best = min(_best_per_candidate(self.table).values(), default=self.cv_rmse_before)
            return (
                f"adaptation did not help: cross-validated RMSE on the {self.n_frames} labelled frames "
                f"{self.cv_rmse_before:.3f} before, at best {best:.3f} after; keeping the current model"
            )
        if self.chosen_by == "bend":
            return (
                f"your {self.n_frames} labels keep our order of the frames but no straight line of our score follows "
                f"them (RMSE {self.cv_rmse_before:.3f} before); adopted "
                + self.describe()
                + f" ({self.n_frames} frames are too few to cross-validate a curve: {self.cv_rmse_after:.3f})"
            )
        return (
            f"cross-validated RMSE on the {self.n_frames} labelled frames: {self.cv_rmse_before:.3f} before, "
            f"{self.cv_rmse_after:.3f} after ({gain:.0%} lower; {self.steps} steps, {self.folds}-fold); adopted "
            + self.describe()
        )

    def _too_few(self) -> str:
        """Why fewer than 10 labels may decide wrongly: benchmarks/few_label_audit.py finds 5-label draws that must
        keep the model showing more evidence for a change than draws that must change it."""
        return (
            f". {self.n_frames} labelled frames cannot always tell whether to keep our scale or change it; "
            f"label {MIN_FRAMES_HEAD} or more if you can (then the head can be re-weighted too)"
        )


def _increasing(shown: np.ndarray, ours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shown, ours) with repeated shown values dropped (a flat stretch of a remap: its first point kept), so that
    ours can be read back from shown by interpolation."""
    keep = np.concatenate([[True], np.diff(shown) > 0])
    return shown[keep], ours[keep]


def _few(curve: tuple[tuple[float, float], ...], most: int = 6) -> list[tuple[float, float]]:
    """At most ``most`` knots of a curve, evenly picked, its ends included (for a sentence)."""
    index = np.unique(np.linspace(0, len(curve) - 1, min(most, len(curve))).round().astype(int))
    return [curve[i] for i in index]


def monotone_curve(ours: np.ndarray, labels: np.ndarray) -> tuple[tuple[float, float], ...]:
    """The isotonic regression of the labels on our scores (non-decreasing, least squares; SciPy's
    pool-adjacent-violators) as the knots of a curve (:func:`~napari_sem_focus.scoring.model.remap_scores`): each
    pooled block of frames is flat from its lowest to its highest score, straight between blocks, flat beyond the
    labelled range. Frames with the same score are pooled first."""
    from scipy.optimize import isotonic_regression

    x, inverse = np.unique(np.round(np.asarray(ours, np.float64), 6), return_inverse=True)
    weight = np.bincount(inverse).astype(np.float64)
    mean = np.bincount(inverse, weights=np.asarray(labels, np.float64)) / weight
    fit = isotonic_regression(mean, weights=weight, increasing=True)
    fitted = np.clip(fit.x, 0.0, 10.0)
    if len(x) == 1:  # one distinct score: a constant
        return ((0.0, float(fitted[0])), (10.0, float(fitted[0])))
    knots: list[tuple[float, float]] = []
    for first, end in zip(fit.blocks[:-1], fit.blocks[1:], strict=True):  # blocks: their starts, then the end
        for i in sorted({int(first), int(end) - 1}):
            knots.append((float(x[i]), float(fitted[i])))
    return tuple(knots)


def _best_per_candidate(table: dict[str, dict[int, float]]) -> dict[str, float]:
    return {name: min(row.values()) for name, row in table.items() if row}


def frame_features(
    model: Any,
    samples: Sequence[Sample],
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[int, None, list[FrameFeatures]]:
    """Trunk features of each sample's structure-mode tiles; yields the number of frames done, returns the
    features."""
    import torch

    from ..scoring.infer import frame_crops, inference_autocast
    from ..scoring.model import normalize_magnification

    out = []
    model = model.to(device).eval()
    autocast = inference_autocast(device)
    for i, (image, magnification, score) in enumerate(samples):
        if should_stop is not None and should_stop():
            raise CancelledError("adaptation cancelled")
        crops = np.stack(frame_crops(np.asarray(image, np.float32), "structure")[0])
        batch = torch.from_numpy(np.ascontiguousarray(crops))[:, None].to(device)
        with torch.inference_mode(), autocast:
            feats = model.trunk((batch - 0.5) / 0.25).float().cpu().numpy()
        mag = float(normalize_magnification(magnification))
        out.append(FrameFeatures(feats, mag, float(score)))
        yield i + 1
    return out


class _Adapter:
    """One candidate, trainable: ``line`` (the two ends of the frame score's line,
    :func:`~napari_sem_focus.scoring.model.remap_scores`), ``monotone`` (a monotone curve of the frame score) or
    ``head`` (a copy of the three fully connected layers, the line kept)."""

    def __init__(self, model: Any, regime: str):
        import torch

        self.regime = regime
        self.head = copy.deepcopy(model.head).float().train()
        self.use_mag = bool(model.config.use_magnification)
        lo, hi = model.config.score_remap
        self.ends = torch.tensor([lo / 10.0, hi / 10.0])  # score units / 10
        self.curve: tuple[tuple[float, float], ...] = tuple(model.config.score_curve)  # replaces the line
        for p in self.head.parameters():
            p.requires_grad_(regime == "head")
        self.params = [self.ends] if regime == "line" else list(self.head.parameters())
        self.start = [p.detach().clone() for p in self.params]
        self._ours: Any = None
        self._ours_of: Any = None  # the stack whose frozen-head scores ``_ours`` holds

    @staticmethod
    def _stack(frames: Sequence[FrameFeatures]) -> tuple[Any, Any, Any]:
        """(every tile's features with its frame's magnification, the frame index of each tile, tiles per frame)."""
        import torch

        tiles = [len(f.features) for f in frames]
        x = torch.from_numpy(np.concatenate([f.features for f in frames]))
        mag = torch.from_numpy(np.repeat(np.float32([f.mag_norm for f in frames]), tiles))[:, None]
        index = torch.from_numpy(np.repeat(np.arange(len(frames)), tiles))
        return torch.cat([x, mag], dim=1), index, torch.tensor(tiles, dtype=torch.float32)

    def our_scores(self, stacked: tuple[Any, Any, Any]) -> Any:
        """Each frame's score on our scale: the mean of its tiles' ``10 sigmoid(head)``, as structure-mode scoring
        pools them (computed once per stack while the head is frozen)."""
        import torch

        x, index, count = stacked
        frozen = self.regime != "head"
        if frozen and self._ours_of is stacked:
            return self._ours
        with torch.no_grad() if frozen else contextlib.nullcontext():
            tiles = 10.0 * torch.sigmoid(self.head(x if self.use_mag else x[:, :-1]).squeeze(1))
            ours = torch.zeros(len(count)).index_add(0, index, tiles) / count
        if frozen:
            self._ours, self._ours_of = ours, stacked
        return ours

    def frame_scores(self, stacked: tuple[Any, Any, Any]) -> Any:
        """Score of each frame on the user's scale: our score through the line or the curve (clipped to [0, 10])."""
        import torch

        if self.curve:
            from ..scoring.model import remap_scores

            ours = self.our_scores(stacked).detach().numpy()
            return torch.from_numpy(remap_scores(ours, curve=self.curve).astype(np.float32))
        lo, hi = 10.0 * self.ends[0], 10.0 * self.ends[1]
        return (lo + (hi - lo) * self.our_scores(stacked) / 10.0).clamp(0.0, 10.0)

    def fit_line(self, stacked: tuple[Any, Any, Any], targets: Any, pull: float) -> None:
        """``line``: the ends by least squares in closed form (the clip to [0, 10] set aside, as for any fitted
        line): a frame's score is ``lo (1 - m) + hi m`` with ``m`` its score on our scale / 10, so (lo, hi) solve a
        2x2 system, ridge-pulled towards the start by ``pull``; then kept within
        :data:`~napari_sem_focus.scoring.model.REMAP_END_LIMITS`, at least :data:`MIN_SPAN` apart."""
        import torch

        from ..scoring.model import REMAP_END_LIMITS

        with torch.no_grad():
            m = self.our_scores(stacked).double() / 10.0
            design = torch.stack([1.0 - m, m], dim=1)
            n = len(m)
            gram = design.T @ design / n + pull * torch.eye(2, dtype=torch.float64)
            rhs = design.T @ (targets.double() / 10.0) / n + pull * self.start[0].double()
            lo, hi = (float(v) for v in torch.linalg.solve(gram, rhs))
        low, high = (v / 10.0 for v in REMAP_END_LIMITS)
        lo = min(max(lo, low), high - MIN_SPAN / 10.0)
        hi = min(max(hi, lo + MIN_SPAN / 10.0), high)
        self.ends, self.curve = torch.tensor([lo, hi]), ()

    def fit_curve(self, stacked: tuple[Any, Any, Any], targets: Any) -> None:
        """``monotone``: the isotonic regression of the labels on our scores (:func:`monotone_curve`)."""
        self.curve = monotone_curve(self.our_scores(stacked).detach().numpy(), targets.numpy())

    def loss(self, stacked: tuple[Any, Any, Any], targets: Any, pull: float) -> Any:
        err = (self.frame_scores(stacked) - targets) / 10.0
        penalty = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.start, strict=True))
        return (err**2).mean() + pull * penalty

    def predict(self, frames: Sequence[FrameFeatures]) -> np.ndarray:
        import torch

        if not frames:
            return np.zeros(0)
        with torch.no_grad():
            return self.frame_scores(self._stack(frames)).numpy().astype(np.float64)

    def export(self, model: Any) -> Any:
        """A copy of ``model`` with this candidate in it: its line or curve in the config (and the new head)."""
        from ..scoring.model import IDENTITY_REMAP

        new = copy.deepcopy(model)
        new.head = copy.deepcopy(self.head).to(next(model.parameters()).dtype)
        line = IDENTITY_REMAP if self.curve else tuple(10.0 * float(v) for v in self.ends)
        new.config = replace(model.config, score_remap=line, score_curve=self.curve)
        for p in new.parameters():
            p.requires_grad_(False)
        return new.eval()


def _fit(
    model: Any,
    regime: str,
    train: Sequence[FrameFeatures],
    held_out: Sequence[FrameFeatures] = (),
    steps: int = STEP_LADDER[-1],
) -> tuple[_Adapter, dict[int, np.ndarray]]:
    """Train one candidate full-batch; predictions on ``held_out`` at each ladder step up to ``steps``."""
    import torch

    torch.manual_seed(0)
    with _one_thread():
        return _fit_steps(model, regime, train, held_out, steps)


@contextlib.contextmanager
def _one_thread() -> Generator[None, None, None]:
    """Run torch on one thread: the candidates are tiny (at most 20 x 2 x tiles rows of 513 numbers), where
    threads cost more than they give (measured: 400 head steps 1.6 s on one thread, 19 s on two threads of a
    busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_steps(
    model: Any, regime: str, train: Sequence[FrameFeatures], held_out: Sequence[FrameFeatures], steps: int
) -> tuple[_Adapter, dict[int, np.ndarray]]:
    import torch

    lr, pull = CANDIDATES[regime]
    adapter = _Adapter(model, regime)
    if regime == "head":  # the head learns what a line of the score cannot: it starts on the fitted line
        adapter.ends, adapter.curve = _fit_steps(model, "line", train, (), 0)[0].ends, ()
    stacked = adapter._stack(train)
    targets = torch.tensor([f.score for f in train], dtype=torch.float32)
    predictions = {}
    if regime in ("line", "monotone"):  # closed form: the same at every step count
        if regime == "line":
            adapter.fit_line(stacked, targets, pull)
        else:
            adapter.fit_curve(stacked, targets)
        held = adapter.predict(held_out) if held_out else None
        return adapter, {s: held for s in STEP_LADDER if s <= steps} if held_out else {}
    optimizer = torch.optim.Adam(adapter.params, lr=lr)
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        adapter.loss(stacked, targets, pull).backward()
        optimizer.step()
        if held_out and step in STEP_LADDER:
            predictions[step] = adapter.predict(held_out)
    return adapter, predictions


def fold_of(n: int, folds: int) -> np.ndarray:
    """Fold index of each of ``n`` frames (interleaved, so a focus series' frames spread over the folds)."""
    return np.arange(n) % folds


def choose(sq_before: np.ndarray, sq_after: dict[tuple[str, int], np.ndarray]) -> tuple[str, int]:
    """(candidate, steps) to adopt from per-frame cross-validated squared errors, or ("none", 0).

    The one-standard-error rule among the line and the head: the simplest (the order of :data:`CANDIDATES`) whose
    mean squared error lies within one standard error of the best, at its best step count. The monotone curve,
    when it was tried, replaces it only when it is clearly better: its mean per-frame gain over that choice (over
    the starting model when nothing was chosen) exceeds :data:`MONOTONE_SIGNIFICANCE` standard errors (a curve
    through every label wins cross-validation by chance too often otherwise). The choice is adopted only when it
    beats the starting model: the RMSE falls by at least :data:`MIN_GAIN` and the mean per-frame gain exceeds
    :data:`SIGNIFICANCE` standard errors of the gains (a gain carried by one frame of five is not trusted).
    """
    n = len(sq_before)
    mse = {key: float(v.mean()) for key, v in sq_after.items()}
    key = _one_standard_error(sq_after, {k: v for k, v in mse.items() if k[0] != "monotone"})
    curves = [k for k in mse if k[0] == "monotone"]
    if curves:
        curve = min(curves, key=mse.get)
        gains = (sq_before if key is None else sq_after[key]) - sq_after[curve]
        if gains.mean() > MONOTONE_SIGNIFICANCE * gains.std(ddof=1) / math.sqrt(n):
            key = curve
    if key is None:
        return "none", 0
    gains = sq_before - sq_after[key]
    clear = gains.mean() > SIGNIFICANCE * gains.std(ddof=1) / math.sqrt(n)
    if clear and math.sqrt(mse[key]) <= (1.0 - MIN_GAIN) * math.sqrt(float(sq_before.mean())):
        return key
    return "none", 0


def bends(model: Any, frames: Sequence[FrameFeatures], scores_before: np.ndarray) -> bool:
    """Whether the labels keep our order of the frames while no straight line of our score follows them: the
    model and the least-squares line both miss the labels by more than :data:`LINE_MISFIT` (RMS), the monotone
    curve through them by less than :data:`CURVE_FIT`."""
    labels = np.array([f.score for f in frames])

    def rms(scores: np.ndarray) -> float:
        return float(np.sqrt(np.mean((scores - labels) ** 2)))

    first = STEP_LADDER[0]  # both are closed-form fits: the same at every step
    line, curve = (_fit(model, regime, frames, frames, first)[1][first] for regime in ("line", "monotone"))
    return min(rms(scores_before), rms(line)) > LINE_MISFIT and rms(curve) < CURVE_FIT


def _one_standard_error(sq_after: dict[tuple[str, int], np.ndarray], mse: dict[tuple[str, int], float]) -> Any:
    """The simplest candidate's best (candidate, steps) within one standard error of the best of ``mse``; None
    when ``mse`` is empty."""
    if not mse:
        return None
    n = len(next(iter(sq_after.values())))
    best_key = min(mse, key=mse.get)
    limit = mse[best_key] + float(sq_after[best_key].std(ddof=1)) / math.sqrt(n)
    order = {c: i for i, c in enumerate(CANDIDATES)}
    simplest = min((k[0] for k in mse if mse[k] <= limit), key=order.get)
    return min((k for k in mse if k[0] == simplest), key=mse.get)


def predict_from_features(model: Any, frames: Sequence[FrameFeatures]) -> np.ndarray:
    """A model's score (structure mode: the mean of the frame's tiles, remapped) of each frame, from its trunk
    features."""
    return _Adapter(model, "line").predict(frames)


def iter_adapt(
    model: Any,
    samples: Sequence[Sample],
    candidates: Sequence[str] = tuple(CANDIDATES),
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[AdaptEvent, None, AdaptResult]:
    """Adapt ``model`` to labelled frames (see the module docstring); a generator of :class:`AdaptEvent` whose
    return value is the :class:`AdaptResult`. ``model`` itself is never modified. Raises :class:`CancelledError`
    when ``should_stop()`` turns true."""
    samples = list(samples)
    _check(len(samples), candidates)
    started = time.monotonic()
    n = len(samples)
    gen = frame_features(model, samples, device=device, should_stop=should_stop)
    while True:
        try:
            done = next(gen)
        except StopIteration as stop:
            frames: list[FrameFeatures] = stop.value
            break
        yield AdaptEvent("features", done, n, time.monotonic() - started, f"features of frame {done}/{n}")
    result = yield from adapt_on_features(model, frames, candidates, should_stop)
    result.seconds = time.monotonic() - started
    return result


def _check(n: int, candidates: Sequence[str]) -> None:
    if n < MIN_FRAMES:
        raise SemFocusError(f"label at least {MIN_FRAMES} frames to adapt the model (have {n})")
    unknown = set(candidates) - set(CANDIDATES)
    if unknown:
        raise SemFocusError(f"unknown adaptation regime(s) {sorted(unknown)}; choose from {list(CANDIDATES)}")


def adapt_on_features(
    model: Any,
    frames: Sequence[FrameFeatures],
    candidates: Sequence[str] = tuple(CANDIDATES),
    should_stop: Callable[[], bool] | None = None,
) -> Generator[AdaptEvent, None, AdaptResult]:
    """Steps 2-4 of the module docstring on frames whose features are known (:func:`frame_features`)."""
    frames = list(frames)
    _check(len(frames), candidates)
    too_few = {"head"} if len(frames) < MIN_FRAMES_HEAD else set()
    too_few |= {"monotone"} if len(frames) < MIN_FRAMES_MONOTONE else set()
    candidates = [c for c in candidates if c not in too_few] or ["line"]
    started = time.monotonic()
    n = len(frames)
    labels = np.array([f.score for f in frames])
    scores_before = predict_from_features(model, frames)
    rmse_before = float(np.sqrt(np.mean((scores_before - labels) ** 2)))
    folds = min(5, n)
    fold = fold_of(n, folds)
    jobs = [(c, k) for c in candidates for k in range(folds)]
    held: dict[str, dict[int, np.ndarray]] = {c: {s: np.zeros(n) for s in STEP_LADDER} for c in candidates}
    for j, (candidate, k) in enumerate(jobs):
        if should_stop is not None and should_stop():
            raise CancelledError("adaptation cancelled")
        train_frames = [f for f, g in zip(frames, fold, strict=True) if g != k]
        test_idx = np.flatnonzero(fold == k)
        _, preds = _fit(model, candidate, train_frames, [frames[i] for i in test_idx])
        for step, p in preds.items():
            held[candidate][step][test_idx] = p
        yield AdaptEvent(
            "cross-validation", j + 1, len(jobs), time.monotonic() - started, f"{candidate}, fold {k + 1}/{folds}"
        )
    table = {c: {s: float(np.sqrt(np.mean((held[c][s] - labels) ** 2))) for s in STEP_LADDER} for c in candidates}
    sq_before = (scores_before - labels) ** 2
    best_regime, best_steps = choose(
        sq_before, {(c, s): (held[c][s] - labels) ** 2 for c in candidates for s in STEP_LADDER}
    )
    chosen_by = "cross-validation"
    if best_regime in ("none", "line") and "monotone" in candidates and bends(model, frames, scores_before):
        best_regime, best_steps, chosen_by = "monotone", STEP_LADDER[0], "bend"
    adopted = best_regime != "none"
    best_rmse = table[best_regime][best_steps] if adopted else rmse_before
    result_model, scores_after, cv_scores = model, scores_before, scores_before
    if adopted:
        adapter, _ = _fit(model, best_regime, frames, steps=best_steps)
        result_model = adapter.export(model)
        scores_after, cv_scores = predict_from_features(result_model, frames), held[best_regime][best_steps]
        yield AdaptEvent("final", 1, 1, time.monotonic() - started, f"{best_regime}, {best_steps} steps on all frames")
    return AdaptResult(
        model=result_model,
        adopted=adopted,
        regime=best_regime if adopted else "none",
        steps=best_steps if adopted else 0,
        cv_rmse_before=rmse_before,
        cv_rmse_after=best_rmse if adopted else rmse_before,
        n_frames=n,
        folds=folds,
        table=table,
        seconds=time.monotonic() - started,
        labels=labels,
        scores_before=scores_before,
        scores_after=scores_after,
        cv_scores=cv_scores,
        start_remap=tuple(model.config.score_remap),
        start_curve=tuple(model.config.score_curve),
        chosen_by=chosen_by,
    )


def adapt(
    model: Any,
    samples: Sequence[Sample],
    candidates: Sequence[str] = tuple(CANDIDATES),
    device: str = "cpu",
    progress: Callable[[AdaptEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AdaptResult:
    """Run :func:`iter_adapt` to the end (``progress`` gets each event)."""
    from .train import drive

    return drive(iter_adapt(model, samples, candidates, device, should_stop), progress)
