"""Focus and stigmation on the virtual SEM: our search, the alternating series, and MAPFoSt, from the same starts.

Random starts (fixed seeds): a training specimen family but the parallel lines (blur along the lines does not show
in their image: one component of the astigmatism cannot be seen there; an operator stigmates on structure in every
direction), magnification log-uniform 500-20,000x, dose log-uniform 3-1,000 electrons/px (below 20: "low dose"),
512x512 frames. The start is defocused by 10-80 % of the range where the specimen stays recognisable (the true
score falls to 1 there), either side, as in the focus benchmark, and astigmatic: half the focal-line separation is
0.5-8 depths of field (log-uniform) at a random angle; the blur-equivalent defocus ``sqrt(dz² + a²/4)`` is kept
within 80 % of the recognisable range. ``--strong``: half the separation up to 80 % of that range instead (focal
lines far apart: at each of them a 2-D specimen is sharp in one direction). The stigmators (units) have a hidden
gain and rotation; the setting that cancels the astigmatism lies 0.1-0.8 units from the start's (0, 0).
Success: the final setting is in focus and stigmated, true score >= 9 (within the depth of field of a round probe:
``dz² + |residual|²/4 <= DoF²``).

Methods (searches within the recognisable range around the start and ±1 stigmator unit):

- ``model / learned``: ours, :func:`napari_sem_focus.focusing.stigmation.focus_and_stigmate` (default method: the
  beam read from the frames' spectra, then the learned score), 24 scans at most; ``model-lines / learned``: the
  same with line searches on the learned score only (``beam_model=False``);
- ``alternating / learned`` and ``alternating / normalized_variance``: SBEMimage's scheme (three scans per setting,
  parabola), 24 scans at most;
- ``MAPFoSt``: ``mapfost.mapfost.est_aberr`` (Binding, Mikula, Denk 2013) on image pairs at ± the test defocus
  (the depth of field: what a user would set for the magnification), iterated (two scans per iteration) until the
  correction is below 0.2 µm or after 8 iterations; calibrated per microscope as SBEMimage does, on a focused,
  stigmated beam and not counted: the aperture (and the defocus sign) from an induced defocus, the stigmators'
  scale and rotation from induced stigmator steps (the 2x2 map from stigmator units to MAPFoSt's astigmatism).

Per method: scans (median, 90th percentile), share ending in focus and stigmated, share ending worse than the start
(true score lower), the same on the low-dose starts, and seconds per search.

Run: python benchmarks/stigmation.py [--starts 200] [--out runs/stigmation.jsonl] [--methods ...] [--report]
     (resumable: the (seed, method) pairs already in --out are skipped). MAPFoSt needs the 'benchmarks' extra.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_sem_focus.focusing.autofocus import learned_scorer, metric_scorer
from napari_sem_focus.focusing.stigmation import focus_and_stigmate
from napari_sem_focus.simulate import TRAINING_FAMILIES
from napari_sem_focus.simulate.frame import FrameParams
from napari_sem_focus.simulate.virtual_sem import VirtualSEM

#: The training families but the parallel lines: blur along the lines does not show in their image, so one component
#: of the astigmatism cannot be seen there (an operator stigmates on structure in every direction).
STIGMATION_FAMILIES = tuple(f for f in TRAINING_FAMILIES if f != "lines")
METHODS = (
    "model/learned",
    "model-lines/learned",
    "alternating/learned",
    "alternating/normalized_variance",
    "mapfost",
)
SHAPE = (512, 512)
MAX_SCANS = 24
LOW_DOSE = 20.0


def start_case(seed: int, strong: bool = False) -> dict:
    """One random start. Defocus: 10-80 % of the recognisable range, either side (as the focus benchmark). Half the
    focal-line separation: 0.5-8 depths of field (log-uniform; ``strong``: up to the whole blur budget instead)."""
    rng = np.random.default_rng([seed, 2029, int(strong)])
    return {
        "seed": seed,
        "family": str(rng.choice(STIGMATION_FAMILIES)),
        "magnification": float(math.exp(rng.uniform(math.log(500), math.log(20_000)))),
        "electrons_per_px": float(math.exp(rng.uniform(math.log(3), math.log(1000)))),
        "defocus_fraction": float(rng.uniform(0.1, 0.8)) * (1 if rng.random() < 0.5 else -1),
        "astig_dof": float(math.exp(rng.uniform(math.log(0.5), math.log(8.0)))),
        "strong_astig_fraction": float(rng.uniform(0.0, 0.8)) if strong else 0.0,
        "astig_angle_deg": float(rng.uniform(0, 180)),
        "stig_rotation_deg": float(rng.uniform(0, 360)),
        "best_stig_units": float(rng.uniform(0.1, 0.8)),
    }


def make_sem(case: dict) -> tuple[VirtualSEM, float]:
    """The case's virtual SEM (astigmatism, hidden stigmator gain and rotation) and its starting WD (mm); the
    start's blur-equivalent defocus sqrt(dz² + a²/4) is kept within 80 % of the recognisable range."""
    frame = FrameParams(
        case["family"], case["magnification"], electrons_per_px=case["electrons_per_px"], seed=case["seed"]
    )
    plain = VirtualSEM(frame, shape=SHAPE)
    visible, dof = plain.visible_range_um(), plain.depth_of_field_um()
    dz = case["defocus_fraction"] * visible
    half = case["strong_astig_fraction"] * visible or case["astig_dof"] * dof
    blur = math.hypot(dz, half)
    if blur > 0.8 * visible:  # keep the specimen recognisable at the start
        dz, half = dz * 0.8 * visible / blur, half * 0.8 * visible / blur
    astig = 2 * half
    frame = replace(frame, astig_um=astig, astig_angle_deg=case["astig_angle_deg"])
    gain = astig / case["best_stig_units"] if astig > 1e-6 else 10.0
    sem = VirtualSEM(frame, true_wd_mm=5.0, shape=SHAPE, stig_gain_um=gain, stig_rotation_deg=case["stig_rotation_deg"])
    return sem, 5.0 + dz * 1e-3


def run_ours(sem: VirtualSEM, start: float, method: str, scorer_name: str, scorers: dict) -> tuple:
    """Our search (method: 'model', 'model-lines' or 'alternating'); (final WD, final stigmators, scans)."""
    scorer = scorers.setdefault(
        (scorer_name, sem.frame.magnification),
        learned_scorer(sem.frame.magnification) if scorer_name == "learned" else metric_scorer(scorer_name),
    )
    result = focus_and_stigmate(
        sem,
        start,
        (0.0, 0.0),
        scorer,
        method=method.removesuffix("-lines"),
        beam_model=not method.endswith("-lines"),
        range_um=sem.visible_range_um(),
        stig_range=1.0,
        max_acquisitions=MAX_SCANS,
        keep_images=False,
    )
    final = result.final
    return final.working_distance_mm, (final.stig_x, final.stig_y), result.n_acquisitions


# --- MAPFoSt ------------------------------------------------------------------------------------------------


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _estimate(sem: VirtualSEM, wd: float, stig: tuple[float, float], test_um: float, na: float) -> np.ndarray | None:
    """MAPFoSt's estimate [defocus µm, ax µm, ay µm] from a pair at wd ± test_um (two scans), or None."""
    from mapfost.mapfost import est_aberr

    pair = [_u8(sem(wd + k * test_um * 1e-3, *stig)) for k in (-1, 1)]
    pixel_um = sem.frame.pixel_nm * 1e-3
    ok, _, res = est_aberr(
        pair, [-test_um, test_um], pix_size_um=pixel_um, num_aperture=na, crop_ref=[0, 0], crop_size=SHAPE
    )
    if ok is not True or res is None:
        return None
    return np.asarray(res.x, dtype=float)


def mapfost_calibrate(sem: VirtualSEM, test_um: float) -> dict:
    """SBEMimage's calibration on the focused, stigmated beam (not counted as search scans): the aperture and the
    defocus sign from an induced defocus of one test defocus, and the 2x2 map from stigmator units to MAPFoSt's
    (ax, ay) from induced stigmator steps of 0.2 units."""
    best_stig = sem.best_stigmator()
    induced = test_um
    candidates = np.geomspace(1e-3, 0.2, 18)
    errors = []
    for na in candidates:
        est = _estimate(sem, sem.true_wd_mm + induced * 1e-3, best_stig, test_um, na)
        errors.append(abs(abs(est[0]) - induced) if est is not None else np.inf)
    na = float(candidates[int(np.argmin(errors))])
    est = _estimate(sem, sem.true_wd_mm + induced * 1e-3, best_stig, test_um, na)
    sign = 1.0 if est is None or est[0] >= 0 else -1.0
    columns = []
    for step in ((0.2, 0.0), (0.0, 0.2)):
        stig = (best_stig[0] + step[0], best_stig[1] + step[1])
        est = _estimate(sem, sem.true_wd_mm, stig, test_um, na)
        columns.append((est[1:] / 0.2) if est is not None else np.array([np.nan, np.nan]))
    return {"na": na, "sign": sign, "map": np.column_stack(columns)}


#: MAPFoSt's test defocus, in depths of field: one converges near focus in two iterations (three: slower).
MAPFOST_TEST_DOF = 1.0


def run_mapfost(sem: VirtualSEM, start: float) -> tuple:
    """MAPFoSt iterated from the start: (final WD, final stigmators, scans)."""
    test_um = MAPFOST_TEST_DOF * sem.depth_of_field_um()
    calibration = mapfost_calibrate(sem, test_um)
    sem.stigmator = (0.0, 0.0)
    wd, stig = start, np.zeros(2)
    visible = sem.visible_range_um()
    scans = 0
    inverse = np.linalg.pinv(calibration["map"]) if np.isfinite(calibration["map"]).all() else None
    for _ in range(8):
        est = _estimate(sem, wd, (float(stig[0]), float(stig[1])), test_um, calibration["na"])
        scans += 2
        if est is None:
            break
        wd -= calibration["sign"] * est[0] * 1e-3
        wd = min(max(wd, start - visible * 1e-3), start + visible * 1e-3)
        if inverse is not None:
            stig = np.clip(stig - inverse @ est[1:], -1.0, 1.0)
        if math.sqrt(float(np.sum(est**2))) < 0.2:
            break
    return wd, (float(stig[0]), float(stig[1])), scans


def run(case: dict, method: str, scorers: dict) -> dict:
    sem, start = make_sem(case)
    start_score = sem.true_score(start, (0.0, 0.0))
    t0 = time.perf_counter()
    if method == "mapfost":
        wd, stig, scans = run_mapfost(sem, start)
    else:
        search, scorer_name = method.split("/")
        wd, stig, scans = run_ours(sem, start, search, scorer_name, scorers)
    final = sem.true_score(wd, stig)
    return {
        "seed": case["seed"],
        "method": method,
        "scans": scans,
        "final_true_score": final,
        "start_true_score": start_score,
        "success": final >= 9.0,
        "worse": final < start_score - 1e-6,
        "low_dose": case["electrons_per_px"] < LOW_DOSE,
        "final_defocus_um": sem.defocus_um(wd),
        "residual_astig_um": sem.residual_astigmatism(stig)[0],
        "dof_um": sem.depth_of_field_um(),
        "seconds": time.perf_counter() - t0,
        **{k: case[k] for k in ("family", "magnification", "electrons_per_px")},
    }


def report(rows: list[dict], methods: list[str]) -> None:
    starts = sorted({r["seed"] for r in rows})
    low = {r["seed"] for r in rows if r["low_dose"]}
    print(f"{len(starts)} starts ({len(low)} below {LOW_DOSE:g} e/px)")
    head = (
        f"{'method':34s} {'n':>4s} {'scans med/p90':>14s} {'in focus+stig':>13s} {'worse':>6s} "
        f"{'low: in f+s':>11s} {'low: worse':>10s} {'s/search':>9s}"
    )
    print(head)
    print("-" * len(head))
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        scans = np.array([r["scans"] for r in sel])
        low_sel = [r for r in sel if r["low_dose"]]

        def pct(group: list[dict], key: str) -> float:
            return 100 * float(np.mean([r[key] for r in group])) if group else float("nan")

        print(
            f"{method:34s} {len(sel):4d} {np.median(scans):6.0f} / {np.percentile(scans, 90):5.1f} "
            f"{pct(sel, 'success'):12.1f}% {pct(sel, 'worse'):5.1f}% {pct(low_sel, 'success'):10.1f}% "
            f"{pct(low_sel, 'worse'):9.1f}% {np.median([r['seconds'] for r in sel]):9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("runs/stigmation.jsonl"))
    parser.add_argument("--report", action="store_true", help="only print the table of --out")
    parser.add_argument(
        "--strong", action="store_true", help="strong astigmatism: up to the whole blur budget (another --out)"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    done = {(r["seed"], r["method"]) for r in rows}
    seeds = range(args.first_seed, args.first_seed + args.starts)
    if not args.report:
        scorers: dict = {}
        for seed in seeds:
            case = start_case(seed, args.strong)
            for method in args.methods:
                if (seed, method) in done:
                    continue
                row = run(case, method, scorers)
                rows.append(row)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"seed {seed} {method}: {row['scans']} scans, true {row['start_true_score']:.2f} -> "
                    f"{row['final_true_score']:.2f} (dz {row['final_defocus_um']:+.2f} µm, residual "
                    f"{row['residual_astig_um']:.2f} µm, DoF {row['dof_um']:.2f}) {row['seconds']:.1f} s",
                    flush=True,
                )
    report([r for r in rows if r["seed"] in seeds], args.methods)


if __name__ == "__main__":
    main()
