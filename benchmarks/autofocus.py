"""Closed-loop autofocus on the virtual SEM: every strategy, with the learned score and a classic metric.

Random starts (fixed seeds): a training specimen family, magnification log-uniform 500-20,000x, dose log-uniform
3-1,000 electrons/px, the start defocused by 10-80 % of the range in which the specimen is still recognisable
(true score 1), on either side; the search range is that whole range around the start, the first step a quarter of
it, 12 scans at most. Per strategy and scorer: scans used (median, 90th percentile), final defocus in units of the
depth of field (half-width where the true score stays >= 9), the share of starts that end within it, that end
blurrier than they started (true score lower than at the start), that report a failure, and on the low-dose starts
(< 20 e/px) the within-depth-of-field share, the median scans and the median final defocus.

Run: python benchmarks/autofocus.py [--starts 200] [--strategies model bracket sweep] [--json FILE]
     [--first-seed N] [--low-dose-only] [--no-check-start]
     (e.g. --first-seed 200 --starts 600 --low-dose-only: 207 more low-dose starts)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from napari_sem_focus.focusing.autofocus import STRATEGIES, autofocus, make_scorer
from napari_sem_focus.simulate import TRAINING_FAMILIES
from napari_sem_focus.simulate.frame import FrameParams
from napari_sem_focus.simulate.virtual_sem import VirtualSEM


def start_case(seed: int) -> dict:
    rng = np.random.default_rng([seed, 2026])
    return {
        "family": str(rng.choice(TRAINING_FAMILIES)),
        "magnification": float(math.exp(rng.uniform(math.log(500), math.log(20_000)))),
        "electrons_per_px": float(math.exp(rng.uniform(math.log(3), math.log(1000)))),
        "fraction": float(rng.uniform(0.1, 0.8)) * (1 if rng.random() < 0.5 else -1),
        "seed": seed,
    }


def run_case(case: dict, strategy: str, scorer_name: str, check_start: bool = True) -> dict:
    beam = FrameParams(
        case["family"], case["magnification"], electrons_per_px=case["electrons_per_px"], seed=case["seed"]
    )
    sem = VirtualSEM(beam, true_wd_mm=5.0)
    visible = sem.visible_range_um()
    start = 5.0 + case["fraction"] * visible * 1e-3
    start_score = sem.true_score(start)
    scorer = make_scorer(scorer_name, case["magnification"])
    result = autofocus(
        sem, start, scorer, strategy=strategy, range_um=visible, max_acquisitions=12, check_start=check_start
    )
    dof = sem.depth_of_field_um()
    final = abs(sem.defocus_um(result.best_wd_mm))
    return {
        "scans": result.n_acquisitions,
        "defocus_dof": final / dof,
        "within_dof": final <= dof,
        "blurrier": sem.true_score(result.best_wd_mm) < start_score - 1e-6,
        "failed": result.status != "focused",
        "low_dose": case["electrons_per_px"] < 20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first start (default 0)")
    parser.add_argument("--low-dose-only", action="store_true", help="keep only the starts below 20 e/px")
    parser.add_argument(
        "--no-check-start", action="store_true", help="end at once on a start that scores in focus (no check scans)"
    )
    args = parser.parse_args()
    cases = [start_case(i) for i in range(args.first_seed, args.first_seed + args.starts)]
    if args.low_dose_only:
        cases = [c for c in cases if c["electrons_per_px"] < 20]
    table = {}
    print(
        f"{len(cases)} random starts on the virtual SEM (seeds {args.first_seed}-{args.first_seed + args.starts - 1}"
        f"{', below 20 e/px' if args.low_dose_only else ''}; 500-20,000x, 3-1,000 e/px)"
    )
    head = (
        "strategy  scorer        scans med/p90  within DoF  blurrier  failed  low-dose within DoF"
        "  median |dz|/DoF  low-dose scans med, |dz|/DoF"
    )
    print(head)
    for strategy in args.strategies:
        for scorer in ("learned", "normalized_variance"):
            t = time.perf_counter()
            rows = [run_case(c, strategy, scorer, not args.no_check_start) for c in cases]
            scans = np.array([r["scans"] for r in rows])
            low = [r for r in rows if r["low_dose"]]
            low_scans = [r["scans"] for r in low] or [float("nan")]
            low_defocus = [r["defocus_dof"] for r in low] or [float("nan")]
            entry = {
                "scans_median": float(np.median(scans)),
                "scans_p90": float(np.percentile(scans, 90)),
                "within_dof": float(np.mean([r["within_dof"] for r in rows])),
                "blurrier": float(np.mean([r["blurrier"] for r in rows])),
                "failed": float(np.mean([r["failed"] for r in rows])),
                "low_dose_within_dof": float(np.mean([r["within_dof"] for r in low])) if low else float("nan"),
                "low_dose_starts": len(low),
                "low_dose_scans_median": float(np.median(low_scans)),
                "low_dose_median_defocus_dof": float(np.median(low_defocus)),
                "median_defocus_dof": float(np.median([r["defocus_dof"] for r in rows])),
                "seconds": round(time.perf_counter() - t, 1),
            }
            table[f"{strategy}/{scorer}"] = entry
            print(
                f"{strategy:8s}  {scorer[:12]:12s}  {entry['scans_median']:5.1f} / {entry['scans_p90']:4.1f}"
                f"  {entry['within_dof']:10.1%}  {entry['blurrier']:8.1%}  {entry['failed']:6.1%}"
                f"  {entry['low_dose_within_dof']:19.1%}  {entry['median_defocus_dof']:15.2f}"
                f"  {entry['low_dose_scans_median']:13.1f}, {entry['low_dose_median_defocus_dof']:.2f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps({"starts": args.starts, "results": table}, indent=1))


if __name__ == "__main__":
    main()
