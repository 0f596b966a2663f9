"""Can any rule that reads the labelled frames meet the few-label done-criterion on every row?

The criterion of benchmarks/few_labels.py, per row (frame set x user x n labels, mean over the draws): the adapted
RMSE at most 1.05x the best simple remap (least-squares line, isotonic regression) and never above the model's.
With few labels, each draw's choice between keeping the model and changing the scale (the line, or the curve) is
made from the n labelled (score, label) pairs alone. This audit asks, per draw, whether that choice is forced:

- **must change**: keeping the model in this draw fails the row even if every other draw of the row takes the best
  of model, line and isotonic curve (an oracle);
- **must keep**: adopting the line or the curve in this draw (whichever is better there) fails the row even with the
  oracle's choices everywhere else.

A rule "change the scale when the evidence E of the labelled pairs is at least t" then meets every row only if
every must-change draw has a larger E than every must-keep draw. For each kind of evidence (below) the audit prints
the two draws that overlap most; if they overlap, no threshold on that evidence meets the criterion on these draws.
It also counts the **dominated pairs**: a must-change draw and a must-keep draw where the must-keep draw shows at
least as much evidence of every kind. No rule that changes the scale more readily as the evidence grows, whatever
it combines, meets both rows of such a pair; the frame sets of the pairs say what else a rule would have to know.

Evidence, from the labelled pairs only (x: the model's scores, y: the labels): ``misfit`` (RMS of y - x),
``line gain`` (the least-squares line's in-sample mean-square gain over the model), ``F`` (the F statistic of the
line against the model), ``cv gain`` (leave-one-out: the line's relative RMSE gain over the model), ``cv t`` (the
t statistic of the per-frame leave-one-out gains, what the shipped rule tests), ``order`` (minus the RMS misfit of
the monotone curve through the pairs: 0 when the labels keep our order of the frames, what the shipped rule's bend
reads).

Only draws with fewer labels than the head needs (10) are audited: from 10 labels the head is a third choice.

Run: python benchmarks/few_labels.py --repeats 10 --save runs/few_labels.json (it prints the audit at its end), or
     python benchmarks/few_label_audit.py runs/few_labels.json on a saved run.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_sem_focus.scoring.model import remap_scores
from napari_sem_focus.training.adapt import MIN_FRAMES_HEAD, monotone_curve

TOLERANCE = 1.05  # the done-criterion: adapted <= 1.05x the best simple remap


def least_squares_line(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """``α x + β`` fitted to (x, y) by least squares, evaluated at ``x_new`` and clipped to 0-10."""
    alpha, beta = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))
    return np.clip(alpha * x_new + beta, 0.0, 10.0)


def isotonic(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """Monotone (non-decreasing) regression of y on x, evaluated at ``x_new`` by linear interpolation between the
    fitted points (flat beyond them): the adaptation's own ``monotone`` curve, fitted on the model's frame scores as a
    user would."""
    return remap_scores(x_new, curve=monotone_curve(x, y))


def evidence(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How strongly n labelled pairs (our score x, the user's label y) say "change the scale", six ways."""
    n = len(x)
    sq_model = (y - x) ** 2
    sq_line = (y - least_squares_line(x, y, x)) ** 2
    loo = np.array([least_squares_line(np.delete(x, i), np.delete(y, i), x[i : i + 1])[0] for i in range(n)])
    gains = sq_model - (y - loo) ** 2
    spread = gains.std(ddof=1) / math.sqrt(n)
    return {
        "misfit": float(np.sqrt(sq_model.mean())),
        "line gain": float(sq_model.mean() - sq_line.mean()),
        "F": float((sq_model.sum() - sq_line.sum()) / 2 / max(sq_line.sum() / (n - 2), 1e-12)),
        "cv gain": float(1.0 - math.sqrt((y - loo).dot(y - loo) / max(sq_model.sum(), 1e-12))),
        "cv t": float(gains.mean() / spread) if spread > 0 else float("inf"),
        "order": -float(np.sqrt(np.mean((y - isotonic(x, y, x)) ** 2))),
    }


def forced(draws: list[dict]) -> tuple[list[int], list[int]]:
    """Indices of a row's must-change and must-keep draws (see the module docstring)."""
    before = np.array([d["before"] for d in draws])
    change = np.minimum([d["line"] for d in draws], [d["isotonic"] for d in draws])
    bound = min(
        TOLERANCE * min(np.mean([d["line"] for d in draws]), np.mean([d["isotonic"] for d in draws])), before.mean()
    )
    oracle = np.minimum(before, change)
    total = oracle.sum()
    k = len(draws)
    must_change = [i for i in range(k) if (total - oracle[i] + before[i]) / k > bound + 1e-9]
    must_keep = [i for i in range(k) if (total - oracle[i] + change[i]) / k > bound + 1e-9]
    return must_change, must_keep


def audit(draws: list[dict]) -> list[str]:
    """Lines of text: per label count and kind of evidence, the most overlapping must-change / must-keep draws.

    Each draw: ``set``, ``user``, ``n``, ``draw``, the held-out RMSE of ``before``, ``line`` and ``isotonic``, and
    either its ``evidence`` or the labelled pairs it is read from (``scores``: the model's, ``labels``: the user's).
    """
    rows = defaultdict(list)
    for d in draws:
        if "evidence" not in d:  # as the benchmark saves them: the labelled pairs
            d = d | {"evidence": evidence(np.asarray(d["scores"]), np.asarray(d["labels"]))}
        rows[(d["set"], d["user"], d["n"])].append(d)
    lines = []
    for n in sorted({key[2] for key in rows}):
        change, keep = [], []
        for key, row in rows.items():
            if key[2] != n:
                continue
            c, k = forced(row)
            change += [(row[i], key) for i in c]
            keep += [(row[i], key) for i in k]
        lines.append(f"n={n}: {len(change)} draws must change the scale, {len(keep)} must keep the model")
        if not change or not keep:
            continue
        lines += _dominated(change, keep)
        for name in change[0][0]["evidence"]:
            low = min(change, key=lambda t: t[0]["evidence"][name])
            high = max(keep, key=lambda t: t[0]["evidence"][name])
            lo, hi = low[0]["evidence"][name], high[0]["evidence"][name]
            verdict = "no threshold works" if hi >= lo else f"separable (any t in ({hi:.2f}, {lo:.2f}])"
            lines.append(
                f"  {name:9s}: must change {_where(low)} at {lo:.2f}; must keep {_where(high)} at {hi:.2f}: {verdict}"
            )
    return lines


def _dominated(change: list[tuple[dict, tuple]], keep: list[tuple[dict, tuple]]) -> list[str]:
    """Lines on the pairs (must change, must keep) where the must-keep draw shows at least as much of every evidence."""
    pairs = [
        (a, b)
        for a in change
        for b in keep
        if all(b[0]["evidence"][name] >= value for name, value in a[0]["evidence"].items())
    ]
    kinds = sorted({f"{a[1][0]}/{a[1][1]} vs {b[1][0]}/{b[1][1]}" for a, b in pairs})
    lines = [f"  dominated pairs (the must-keep draw shows more of every evidence): {len(pairs)}"]
    if pairs:
        a, b = max(pairs, key=lambda p: p[1][0]["evidence"]["misfit"] - p[0][0]["evidence"]["misfit"])
        lines.append(f"    the widest: must change {_where(a)}, must keep {_where(b)}; rows: " + "; ".join(kinds))
    return lines


def _where(pair: tuple[dict, tuple]) -> str:
    draw, (set_name, user, _) = pair
    return f"{set_name}/{user} draw {draw['draw']}"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/few_labels.json")
    draws = [d for d in json.loads(path.read_text()) if d["n"] < MIN_FRAMES_HEAD]
    print("\n".join(audit(draws)))


if __name__ == "__main__":
    main()
