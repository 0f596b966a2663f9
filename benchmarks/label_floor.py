"""How low can the RMSE go? The part of the simulator's label that no scorer can read from a single frame.

The label (:mod:`napari_sem_focus.simulate.labels`) scores the probe diameter ``d`` against ``r0``, the sharpest
blur the microscope could give — and ``r0`` depends on the **in-focus probe diameter d0** (1.5-25 nm: field
emission or tungsten gun, kV), which one frame does not show: a frame shows the blur ``d`` only. The same ``d``
is "perfect, 10" for a microscope whose probe cannot get smaller, and "slightly out of focus, 8" for one whose
probe could. Any scorer that sees one frame errs on that difference.

This script computes, for each frame of the simulator's ``test`` split (the frames of Table 1/2), what an **ideal
observer that sees the blur exactly** and knows everything else (pixel size, specimen feature size, dose,
contrast, saturation) but not ``d0`` would answer: the posterior of ``d0`` given ``d`` under the simulator's own
priors (``d0``: half log-uniform 1.5-5 nm, half 5-25 nm; the label: uniform in 0.02-10 plus 12 % exactly in
focus), its best guess the posterior mean of the label, its error the posterior standard deviation. The root mean
square over the split is the **label floor**: no scorer that sees one frame can have a lower RMSE on average.

It is a lower bound on the true floor: a real scorer sees the blur through shot noise, a featureless crop or an
astigmatic probe, and does not know the specimen's feature size, the dose or the display settings.

Run: python benchmarks/label_floor.py [--split test|highmag|heldout] [--n 3000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from napari_sem_focus.scoring.tiles import CROP_SIZE
from napari_sem_focus.simulate import HIGH_MAGNIFICATIONS, PAPER_MAGNIFICATIONS, dataset_params, labels, optics
from napari_sem_focus.simulate.frame import simulate_frame
from napari_sem_focus.simulate.specimens import make_specimen

IN_FOCUS_SHARE = 0.12  # frames drawn exactly in focus (label 10, d = r0); the rest: label uniform in 0.02-10
D0_GRID = np.exp(np.linspace(math.log(1.5), math.log(25.0), 600))  # hypotheses for d0 (nm)


def d0_prior(d0: np.ndarray) -> np.ndarray:
    """The simulator's prior density of d0 (nm): half log-uniform on 1.5-5 nm (FEG), half on 5-25 nm."""
    feg = (d0 >= 1.5) & (d0 <= 5.0)
    thermionic = (d0 > 5.0) & (d0 <= 25.0)
    return 0.5 * feg / (d0 * math.log(5.0 / 1.5)) + 0.5 * thermionic / (d0 * math.log(25.0 / 5.0))


def posterior_label(diameter: float, pixel: float, feature: float, factor: float) -> tuple[float, float]:
    """(posterior mean, posterior variance) of the label of a frame whose blur is ``diameter`` (nm), ``d0`` unknown.

    ``factor``: the label's noise and saturation factors (known to the observer), multiplying the blur score.
    """
    blur = np.array([labels.blur_score(diameter, d0, pixel, feature) for d0 in D0_GRID])
    # density of the blur d given d0 when the label was drawn uniform: |d label / d d| / 9.98 inside the range
    eps = 1e-4
    up = np.array([labels.blur_score(diameter * (1 + eps), d0, pixel, feature) for d0 in D0_GRID])
    down = np.array([labels.blur_score(diameter * (1 - eps), d0, pixel, feature) for d0 in D0_GRID])
    slope = np.abs(up - down) / (2 * eps * diameter)
    inside = (blur >= 0.02) & (blur < 10.0)
    widths = np.gradient(D0_GRID)
    weights = (1 - IN_FOCUS_SHARE) * d0_prior(D0_GRID) * slope / 9.98 * inside * widths
    hypotheses = list(factor * blur)
    point = []
    # in focus: d = r0(d0) = hypot(d0, 1.5 p) exactly, for the one d0 that gives it
    sampling = labels.PIXEL_BLUR_LIMIT_PX * pixel
    if diameter > sampling:
        d0_star = math.sqrt(diameter**2 - sampling**2)
        density = float(d0_prior(np.array([d0_star]))[0]) * diameter / d0_star
        point = [IN_FOCUS_SHARE * density]
        hypotheses.append(factor * 10.0)
    w = np.concatenate([weights, point])
    if w.sum() <= 0:
        return factor * float(blur.mean()), 0.0
    w = w / w.sum()
    values = np.asarray(hypotheses)
    mean = float(np.sum(w * values))
    return mean, float(np.sum(w * (values - mean) ** 2))


def frame_floor(index: int, split: str = "test") -> tuple[float, float, float, float]:
    """(magnification, label, ideal observer's guess, its posterior variance) of frame ``index`` of ``split``."""
    params = dataset_params(split, index)
    if params.blank is not None:
        return params.magnification, 0.0, 0.0, 0.0
    pixel = params.pixel_nm
    spec_rng = np.random.default_rng(params.seed)
    feature = make_specimen(
        params.family, spec_rng, (16, 16), pixel, pixel * optics.REFERENCE_FRAME_WIDTH_PX
    ).feature_nm
    diameter = params.effective_diameter_nm()
    blur_true = labels.blur_score(diameter, params.d0_nm, pixel, feature)
    label = simulate_frame(params, CROP_SIZE).score  # the frame's label, noise and saturation factors included
    if blur_true > 1e-6:
        factor = label / blur_true
    else:  # blur score 0: the noise factor alone (saturation seldom matters)
        factor = labels.noise_factor(params.electrons_per_px, 1.0, feature / pixel)
    return params.magnification, label, *posterior_label(diameter, pixel, feature, factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="frames of the split (default: 3,000, all of 'test')")
    parser.add_argument("--split", default="test", choices=["test", "highmag", "heldout"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = np.array([frame_floor(i, args.split) for i in range(args.n)])
    mags, truth, guess, variance = rows.T
    floor, bayes = {}, {}
    print(f"label floor, split '{args.split}' ({args.n} frames): an ideal observer that sees the blur exactly, not d0")
    print(f"{'magnification':>14}  {'floor (posterior std, rms)':>27}  {'its RMSE against the labels':>28}  frames")
    for m in HIGH_MAGNIFICATIONS if args.split == "highmag" else PAPER_MAGNIFICATIONS:
        sel = np.abs(mags / m - 1) < 0.15
        floor[f"{m:g}"] = float(np.sqrt(variance[sel].mean()))
        bayes[f"{m:g}"] = float(np.sqrt(np.mean((guess[sel] - truth[sel]) ** 2)))
        print(f"{m:>13,.0f}x  {floor[f'{m:g}']:>27.3f}  {bayes[f'{m:g}']:>28.3f}  {sel.sum():>6}")
    floor["total"] = float(np.sqrt(variance.mean()))
    bayes["total"] = float(np.sqrt(np.mean((guess - truth) ** 2)))
    print(f"{'total':>14}  {floor['total']:>27.3f}  {bayes['total']:>28.3f}  {len(mags):>6}")
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        payload = {"split": args.split, "n": args.n, "floor": floor, "observer_rmse": bayes}
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
