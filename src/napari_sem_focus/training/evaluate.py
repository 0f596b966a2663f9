"""The paper's evaluation: RMSE per magnification (Tables 1 and 2), the absolute-variance baseline mapped to the
score scale, the held-out specimen family, and best-frame picks on real series with a known order.

Absolute-variance baseline (the paper's [3], Groen 1985): the metric of the 320x240 centre crop is mapped to the
0-10 scale by a monotone (isotonic, pool-adjacent-violators) least-squares fit on training frames, then scored
like a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SemFocusError
from ..io.metadata import PAPER_MAGNIFICATIONS


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of y on x (pool adjacent violators); returns (knots x, fitted y)."""
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    values, weights, ends = [], [], []
    for i, v in enumerate(ys):
        values.append(v)
        weights.append(1.0)
        ends.append(i)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            v2 = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:], weights[-2:], ends[-2:] = [v2], [w], [ends[-1]]
    fitted = np.repeat(values, np.diff([-1, *ends]))
    return xs, fitted


def isotonic_predict(knots: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.interp(x, knots[0], knots[1])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class RmseTable:
    """RMSE per magnification and in total for named methods (rows: magnifications, columns: methods)."""

    columns: dict[str, dict[str, float]]

    def format(self, magnifications: Sequence[float] = PAPER_MAGNIFICATIONS) -> str:
        names = list(self.columns)
        width = max(14, *(len(n) + 2 for n in names))
        lines = ["Magnification".ljust(14) + "".join(n.rjust(width) for n in names)]
        for key in [f"{m:g}" for m in magnifications] + ["total"]:
            label = f"{float(key):,.0f}" if key != "total" else "Total"
            cells = []
            for n in names:
                v = self.columns[n].get(key, float("nan"))
                cells.append(("-" if np.isnan(v) else f"{v:.4f}").rjust(width))
            lines.append(label.ljust(14) + "".join(cells))
        return "\n".join(lines)


def models_rmse(
    models: dict[str, str | Path | None],
    csv_paths: Sequence[str | Path],
    batch_size: int = 64,
    magnifications: Sequence[float] = PAPER_MAGNIFICATIONS,
) -> dict[str, dict[str, float]]:
    """RMSE per magnification of named weights files on the same labelled frames (centre 320x240 crop, the paper's
    test). Each frame is read once and scored by every model."""
    from ..scoring.tiles import CROP_SIZE
    from ..scoring.weights import load_model
    from .data import LabelledImages
    from .train import predict_models, rmse_by_magnification

    data = LabelledImages(list(csv_paths), crop_size=CROP_SIZE, train=False)
    nets = {name: load_model(weights) for name, weights in models.items()}
    preds, target, mag_norm = predict_models(nets, data, batch_size)
    return {name: rmse_by_magnification(p, target, mag_norm, magnifications) for name, p in preds.items()}


def absolute_variance_rmse(
    train_csv: Sequence[str | Path], test_csv: Sequence[str | Path], n_fit: int = 4000
) -> dict[str, float]:
    """The absolute-variance baseline's RMSE per magnification (isotonic map fitted on ``n_fit`` train frames)."""
    from ..scoring.metrics import absolute_variance
    from ..scoring.model import normalize_magnification
    from ..scoring.tiles import CROP_SIZE
    from .data import LabelledImages
    from .train import rmse_by_magnification

    def features(csvs: Sequence[str | Path], limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = LabelledImages(list(csvs), crop_size=CROP_SIZE, train=False)
        rows = data.rows[:limit] if limit else data.rows
        av = np.array([absolute_variance(data.image(i)) for i in range(len(rows))])
        scores = np.array([r.score for r in rows])
        mags = np.array([float(normalize_magnification(r.magnification)) for r in rows])
        return av, scores, mags

    av_train, s_train, _ = features(train_csv, n_fit)
    knots = isotonic_fit(av_train, s_train)
    av_test, s_test, m_test = features(test_csv, None)
    return rmse_by_magnification(isotonic_predict(knots, av_test), s_test, m_test, PAPER_MAGNIFICATIONS)


def real_series(data_dir: Path, manifest: str = "manifest.csv") -> list[tuple[str, list[Path], list[float], bool]]:
    """Real focus series with a known sharpness order, from the data folder's manifest CSV (``data_dir/manifest``;
    no file lists live in the package): one (name, files in focus-position order, known sharpness rank per file
    (1 = sharpest), common crop) per ``series`` value.

    Manifest columns used: ``path`` (relative to ``data_dir``), ``series`` (rows without one are not series),
    ``position`` (the focus position, any unit; orders the frames) and ``expected_rank_sharpest_first``. Frames
    are always read with a common crop (a series whose frame sizes differ, such as the optical through-focus one,
    is centre-cropped to the smallest; same-size frames are unchanged). No manifest: no series.
    """
    import csv

    path = Path(data_dir) / manifest
    if not path.is_file():
        return []
    groups: dict[str, list[tuple[float, Path, float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            if not (row.get("series") or "").strip():
                continue
            try:
                rank = float(row["expected_rank_sharpest_first"])
                entry = (float(row["position"]), Path(data_dir) / row["path"], rank)
            except (KeyError, TypeError, ValueError) as err:
                raise SemFocusError(f"'{path}' line {line}: a series row needs position and rank ({err})") from err
            groups.setdefault(row["series"].strip(), []).append(entry)
    out = []
    for name, rows in groups.items():
        rows.sort(key=lambda r: r[0])
        out.append((name, [r[1] for r in rows], [r[2] for r in rows], True))
    return out


def real_series_picks(
    weights: str | Path | None, data_dir: Path, magnifications: Sequence[float], mode: str = "center"
) -> list[dict[str, Any]]:
    """For each real series and assumed magnification: the picked frame, whether it is the sharpest, and the
    Spearman correlation of the scores with the known sharpness order (also for two classic metrics)."""
    from ..io.series import read_series
    from ..scoring.infer import score_series
    from ..scoring.metrics import METRICS

    rows = []
    for name, files, ranks, common in real_series(data_dir):
        series = read_series(files, common_crop=common)
        sharp = -np.asarray(ranks)  # higher = sharper
        truth_best = int(np.argmax(sharp))
        frames = list(series.frames())
        for metric in ("variance_of_laplacian", "normalized_variance"):
            values = [METRICS[metric](f) for f in frames]
            rows.append(
                {
                    "series": name,
                    "method": metric,
                    "magnification": None,
                    "picked": int(np.argmax(values)),
                    "correct": int(np.argmax(values)) == truth_best or sharp[int(np.argmax(values))] == sharp.max(),
                    "spearman": spearman(values, sharp),
                }
            )
        for mag in magnifications:
            scores = [r.score for r in score_series(series, weights, mag, mode)]
            pick = int(np.argmax(scores))
            rows.append(
                {
                    "series": name,
                    "method": f"learned ({mode})",
                    "magnification": mag,
                    "picked": pick,
                    "correct": bool(sharp[pick] == sharp.max()),
                    "spearman": spearman(scores, sharp),
                    "scores": [round(s, 2) for s in scores],
                }
            )
    return rows
