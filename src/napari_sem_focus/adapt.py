"""Few-label adaptation: teach the focus model your microscope with 5-20 labelled frames.

With a handful of labels, fine-tuning the whole network over-fits (the README's old screenshot: RMSE on held-out
labelled frames 0.36 -> 0.58 after 30 steps on 8 frames). This module adapts only what a few labels can pin down,
chooses how far to go by cross-validation, and never returns a model that agrees with the labels worse than the
starting one.

How (figures in docs/benchmarks.md "Few-label adaptation", from ``benchmarks/few_labels.py``):

1. **Features once.** The trunk (ResNet18, BatchNorm statistics kept) is frozen, so each labelled frame's trunk
   features are computed once: the 320x240 tiles that the default ``structure`` mode scores (see
   :mod:`napari_sem_focus.structure`), plus their left-right mirror images as augmentation. A frame's score is the
   mean of its tiles' scores, as in scoring.
2. **Candidates** (both start from the model's own head and are pulled towards it, "L2-SP"):
   ``calibrate`` - a monotone remap of the score, ``10 sigmoid(a z + b)`` of the head's logit ``z`` (2 numbers,
   pulled firmly towards a = 1, b = 0; fixes a user whose scale is offset or stretched against ours);
   ``head`` - the three fully connected layers (fixes what the features already see but the head weighs
   differently, e.g. a new detector or texture), tried from ``MIN_FRAMES_HEAD`` = 10 labelled frames on.
3. **Cross-validation** (k-fold, k = min(5, number of frames); leave-one-out for 5): every candidate is trained on
   k-1 folds and its RMSE on the held-out fold is recorded at a ladder of steps (early stopping). The simplest
   candidate within one standard error of the best (:func:`choose`) is trained on all labelled frames with its
   best step count.
4. **Never worse**: when it does not lower the cross-validated RMSE by at least ``MIN_GAIN`` (2 %), the result
   says so and carries the starting model unchanged (``adopted = False``).

Measured (benchmarks/few_labels.py, held-out frames of shifts the default weights were not trained for; figures in
docs/benchmarks.md "Few-label adaptation"): the firm pull on ``calibrate`` and the 10-frame floor for ``head`` are
what keep 5 labels from making things worse; with a weak pull (1e-3), or ``head`` at 5 frames, 5 labels made the
slow-detector shift 7-15 % worse on average.

The whole-network path (:func:`napari_sem_focus.train.iter_fine_tune`) stays for users with hundreds of labels.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CancelledError, SemFocusError

#: Steps (full-batch Adam) at which the held-out error is recorded; the best one is kept.
STEP_LADDER = (10, 25, 50, 100, 200, 400)
#: Candidate: (learning rate, pull towards the starting weights).
CANDIDATES = {"calibrate": (0.05, 3e-2), "head": (1e-3, 1e-2)}
#: The ``head`` candidate (about 150,000 numbers) is tried only from this many labelled frames on.
MIN_FRAMES_HEAD = 10
#: Relative cross-validated gain a candidate needs before it replaces the starting model.
MIN_GAIN = 0.02
MIN_FRAMES = 3

Sample = tuple[np.ndarray, float, float]  # (image float [0, 1], magnification, score)


@dataclass
class FrameFeatures:
    """Trunk features of one labelled frame's scored tiles (mirrored views appended) and its label."""

    features: np.ndarray  # (views * tiles, n_features) float32
    views: int
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
        regime: the winning candidate ("calibrate" or "head"), or "none".
        steps: its optimiser steps.
        cv_rmse_before: cross-validated RMSE of the starting model on the labelled frames (score units; the
            starting model is not trained on them, so this is simply its RMSE).
        cv_rmse_after: cross-validated RMSE of the chosen regime (each frame predicted by a model that did not
            see it), or ``cv_rmse_before`` when nothing was adopted.
        folds: number of cross-validation folds.
        table: cross-validated RMSE of every candidate at every step of :data:`STEP_LADDER`.
        seconds: wall time.
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

    @property
    def metrics(self) -> dict[str, Any]:
        """JSON-ready facts (saved with the adapted weights)."""
        return {
            "adaptation": "few-label (trunk frozen, cross-validated)",
            "adopted": self.adopted,
            "regime": self.regime,
            "steps": self.steps,
            "n_frames": self.n_frames,
            "folds": self.folds,
            "cv_rmse_before": round(self.cv_rmse_before, 4),
            "cv_rmse_after": round(self.cv_rmse_after, 4),
            "seconds": round(self.seconds, 1),
            "table": {name: {str(k): round(v, 4) for k, v in row.items()} for name, row in self.table.items()},
        }

    def summary(self) -> str:
        """One sentence for the CLI and the widget."""
        gain = 1.0 - self.cv_rmse_after / self.cv_rmse_before if self.cv_rmse_before > 0 else 0.0
        if not self.adopted:
            best = min(_best_per_candidate(self.table).values(), default=self.cv_rmse_before)
            return (
                f"adaptation did not help: cross-validated RMSE on the {self.n_frames} labelled frames "
                f"{self.cv_rmse_before:.3f} before, at best {best:.3f} after; keeping the current model"
            )
        return (
            f"cross-validated RMSE on the {self.n_frames} labelled frames: {self.cv_rmse_before:.3f} before, "
            f"{self.cv_rmse_after:.3f} after ({gain:.0%} lower; {self.regime}, {self.steps} steps, "
            f"{self.folds}-fold)"
        )


def _best_per_candidate(table: dict[str, dict[int, float]]) -> dict[str, float]:
    return {name: min(row.values()) for name, row in table.items() if row}


def frame_features(
    model: Any,
    samples: Sequence[Sample],
    mirror: bool = True,
    device: str = "cpu",
    should_stop: Callable[[], bool] | None = None,
) -> Generator[int, None, list[FrameFeatures]]:
    """Trunk features of each sample's structure-mode tiles (and their mirror images when ``mirror``); yields the
    number of frames done, returns the features."""
    import torch

    from .infer import frame_crops, inference_autocast
    from .model import normalize_magnification

    out = []
    model = model.to(device).eval()
    autocast = inference_autocast(device)
    for i, (image, magnification, score) in enumerate(samples):
        if should_stop is not None and should_stop():
            raise CancelledError("adaptation cancelled")
        crops, _origins, _facts = frame_crops(np.asarray(image, np.float32), "structure")
        views = [crops, crops[:, :, ::-1]] if mirror else [crops]
        batch = torch.from_numpy(np.ascontiguousarray(np.concatenate(views)))[:, None].to(device)
        with torch.inference_mode(), autocast:
            feats = model.trunk((batch - 0.5) / 0.25).float().cpu().numpy()
        mag = float(normalize_magnification(magnification))
        out.append(FrameFeatures(feats, len(views), mag, float(score)))
        yield i + 1
    return out


class _Adapter:
    """A trainable copy of a model's head (``head``) or a 2-number logit remap (``calibrate``)."""

    def __init__(self, model: Any, regime: str):
        import torch

        self.regime = regime
        self.head = copy.deepcopy(model.head).float().train()
        self.use_mag = bool(model.config.use_magnification)
        self.ab = torch.zeros(2, requires_grad=regime == "calibrate")  # log-scale a, offset b
        for p in self.head.parameters():
            p.requires_grad_(False)
        if regime == "calibrate":
            self.params = [self.ab]
        else:
            self.params = list((self.head if regime == "head" else self.head[-1]).parameters())
            for p in self.params:
                p.requires_grad_(True)
        self.start = [p.detach().clone() for p in self.params]

    @staticmethod
    def _stack(frames: Sequence[FrameFeatures], views: bool) -> tuple[Any, Any, Any, int]:
        """(features with magnification, group index of each tile, tiles per group, groups): a group is one view of
        one frame (only the first view of each frame when ``views`` is False)."""
        import torch

        rows, groups, mags, n_groups = [], [], [], 0
        for f in frames:
            tiles = len(f.features) // f.views
            keep = f.views if views else 1
            rows.append(f.features[: keep * tiles])
            groups.append(np.repeat(np.arange(n_groups, n_groups + keep), tiles))
            mags.append(np.full(keep * tiles, f.mag_norm, np.float32))
            n_groups += keep
        x = torch.from_numpy(np.concatenate(rows))
        mag = torch.from_numpy(np.concatenate(mags))[:, None]
        index = torch.from_numpy(np.concatenate(groups))
        count = torch.bincount(index, minlength=n_groups).float()
        return torch.cat([x, mag], dim=1), index, count, n_groups

    def group_scores(self, stacked: tuple[Any, Any, Any, int]) -> Any:
        """Score (score units) of each group: the mean of its tiles' scores."""
        import torch

        x, index, count, n_groups = stacked
        if not self.use_mag:
            x = x[:, :-1]
        logit = torch.exp(self.ab[0]) * self.head(x).squeeze(1) + self.ab[1]
        tile_scores = 10.0 * torch.sigmoid(logit)
        return torch.zeros(n_groups).index_add(0, index, tile_scores) / count

    def loss(self, stacked: tuple[Any, Any, Any, int], targets: Any, pull: float) -> Any:
        err = (self.group_scores(stacked) - targets) / 10.0
        penalty = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.start, strict=True))
        return (err**2).mean() + pull * penalty

    def predict(self, frames: Sequence[FrameFeatures]) -> np.ndarray:
        import torch

        if not frames:
            return np.zeros(0)
        with torch.no_grad():
            return self.group_scores(self._stack(frames, views=False)).numpy().astype(np.float64)

    def export(self, model: Any) -> Any:
        """A copy of ``model`` with this adapter folded in (the calibration folds into the last Linear layer)."""
        import torch

        new = copy.deepcopy(model)
        head = copy.deepcopy(self.head)
        with torch.no_grad():
            a, b = float(torch.exp(self.ab[0])), float(self.ab[1])
            last = head[-1]
            last.weight.mul_(a)
            last.bias.mul_(a).add_(b)
        new.head = head.to(next(model.parameters()).dtype)
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
    lr, pull = CANDIDATES[regime]
    adapter = _Adapter(model, regime)
    optimizer = torch.optim.Adam(adapter.params, lr=lr)
    stacked = adapter._stack(train, views=True)
    targets = torch.tensor([f.score for f in train for _ in range(f.views)], dtype=torch.float32)
    predictions = {}
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

    The one-standard-error rule: the simplest candidate (the order of :data:`CANDIDATES`) whose mean squared error
    lies within one standard error of the best, at its best step count. It is adopted only when it beats the
    starting model clearly: the mean per-frame gain exceeds ``SIGNIFICANCE`` standard errors of the gains (a gain
    carried by one or two frames of five is not trusted) and the RMSE falls by at least :data:`MIN_GAIN`.
    """
    n = len(sq_before)
    mse = {key: float(v.mean()) for key, v in sq_after.items()}
    best_key = min(mse, key=mse.get)
    limit = mse[best_key] + float(sq_after[best_key].std(ddof=1)) / math.sqrt(n)
    order = {c: i for i, c in enumerate(CANDIDATES)}
    simplest = min((k[0] for k in mse if mse[k] <= limit), key=order.get)
    key = min((k for k in mse if k[0] == simplest), key=mse.get)
    if math.sqrt(mse[key]) <= (1.0 - MIN_GAIN) * math.sqrt(float(sq_before.mean())):
        return key
    return "none", 0


def predict_from_features(model: Any, frames: Sequence[FrameFeatures]) -> np.ndarray:
    """A model's score (structure mode: mean of the frame's tiles) of each frame, from its trunk features."""
    return _Adapter(model, "calibrate").predict(frames)


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
    if len(frames) < MIN_FRAMES_HEAD:
        candidates = [c for c in candidates if c != "head"] or ["calibrate"]
    started = time.monotonic()
    n = len(frames)
    labels = np.array([f.score for f in frames])
    rmse_before = float(np.sqrt(np.mean((predict_from_features(model, frames) - labels) ** 2)))
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
    sq_before = (predict_from_features(model, frames) - labels) ** 2
    best_regime, best_steps = choose(
        sq_before, {(c, s): (held[c][s] - labels) ** 2 for c in candidates for s in STEP_LADDER}
    )
    adopted = best_regime != "none"
    best_rmse = table[best_regime][best_steps] if adopted else rmse_before
    result_model = model
    if adopted:
        adapter, _ = _fit(model, best_regime, frames, steps=best_steps)
        result_model = adapter.export(model)
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
