"""Where the learned score errs: RMSE and bias (prediction - truth) of simulated test frames, grouped by the
simulator's parameters (specimen family, true score, dose, astigmatism, contrast inversion, blur, feature size).

Every frame of a split written by ``sem-focus simulate dataset`` is re-derived from its index
(:func:`napari_sem_focus.simulate.dataset_params`), so the groups use the exact parameters behind each label.
A model at a noise floor would err mostly on noisy, astigmatic or featureless frames; an under-trained one errs
everywhere, clean frames included. Frames are scored as ``sem-focus eval`` does (320x240 centre crop).

Run: python benchmarks/residuals.py LABELS_CSV [--split test] [--n 1500] [--weights W ...]
(e.g. ``runs/data3/test/labels.csv`` from ``sem-focus simulate dataset --split test --n 3000``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_sem_focus.scoring.tiles import CROP_SIZE
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.simulate import dataset_params, labels
from napari_sem_focus.training.data import LabelledImages
from napari_sem_focus.training.train import predict_models

CLEAN_DOSE = 1e4  # electrons per pixel of the simulator's frame-averaged (practically noise-free) frames


def frame_facts(split: str, path: str) -> dict[str, float | str | bool] | None:
    """The parameters behind one frame's label, or None for a 0-score blank frame."""
    index = int(re.search(r"(\d+)\.\w+$", path).group(1))  # type: ignore[union-attr]
    p = dataset_params(split, index)
    if p.blank is not None:
        return None
    pixel = p.pixel_nm
    r0 = labels.resolution_limit_nm(p.d0_nm, pixel)
    return {
        "family": p.family,
        "blur / r0": p.effective_diameter_nm() / r0,
        "dose (e/px)": p.electrons_per_px,
        "astigmatic": p.astig_um > 0,
        "inverted": p.inverted,
        "edge width (px)": p.edge_nm / pixel,
    }


def table(
    name: str, keys: list, err: np.ndarray, label: Callable[[object], tuple[int | str, str]] | None = None
) -> None:
    """Print n, RMSE and bias per group; ``label`` maps a key to (sort order, text)."""
    print(f"\nby {name}:")
    labelled = [label(k) if label else (str(k), str(k)) for k in keys]
    texts = np.array([text for _, text in labelled], dtype=object)
    for _, text in sorted(set(labelled)):
        e = err[texts == text]
        print(f"  {text:<22} n={e.size:5d}  rmse={np.sqrt(np.mean(e**2)):.3f}  bias={e.mean():+.3f}")


def binned(edges: list[float], unit: str = "") -> Callable[[object], tuple[int, str]]:
    """A ``label`` for :func:`table`: the half-open bin of ``edges`` a value falls in."""

    def label(v: object) -> tuple[int, str]:
        i = int(np.digitize(float(v), edges))  # type: ignore[arg-type]
        lo = "0" if i == 0 else f"{edges[i - 1]:g}"
        hi = "inf" if i == len(edges) else f"{edges[i]:g}"
        return i, f"[{lo}, {hi}){unit}"

    return label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", type=Path)
    ap.add_argument("--split", default="test", help="the split the CSV was written from")
    ap.add_argument("--n", type=int, default=1500, help="first N frames")
    ap.add_argument("--weights", nargs="*", default=["default"])
    args = ap.parse_args()

    data = LabelledImages([args.labels], crop_size=CROP_SIZE, train=False)
    data.rows = data.rows[: args.n]
    models = {w: load_model(None if w == "default" else w) for w in args.weights}
    preds, truth, _ = predict_models(models, data)
    facts = [frame_facts(args.split, str(r.path)) for r in data.rows]
    keep = np.array([f is not None for f in facts])
    rows = [f for f in facts if f is not None]
    for name, pred in preds.items():
        err_all = pred - truth
        err = err_all[keep]
        print(
            f"=== {name}: {len(truth)} frames, RMSE {np.sqrt(np.mean(err_all**2)):.3f} (blank frames: "
            f"{np.sqrt(np.mean(err_all[~keep] ** 2)) if (~keep).any() else float('nan'):.3f})"
        )
        t = truth[keep]
        table("true score", list(t), err, binned([1, 3, 5, 7, 9, 9.999]))
        table("family", [r["family"] for r in rows], err)
        table(
            "probe blur / sharpest visible blur r0", [r["blur / r0"] for r in rows], err, binned([1.01, 1.5, 3, 10, 30])
        )
        table("dose", [r["dose (e/px)"] for r in rows], err, binned([10, 100, 1000, CLEAN_DOSE - 1], " e/px"))
        table("astigmatism", [r["astigmatic"] for r in rows], err)
        table("inverted (BSE-like) contrast", [r["inverted"] for r in rows], err)
        clean = np.array([r["dose (e/px)"] >= CLEAN_DOSE and not r["astigmatic"] for r in rows])
        print(
            f"\nclean frames (frame-averaged, no astigmatism): n={clean.sum()}, "
            f"rmse={np.sqrt(np.mean(err[clean] ** 2)):.3f}"
        )
        sharp = t >= 9
        table(
            "SE edge width, frames scored >= 9",
            [r["edge width (px)"] for r in np.array(rows)[sharp]],
            err[sharp],
            binned([1, 2, 4, 8], " px"),
        )


if __name__ == "__main__":
    main()
