"""Right on real images? Every scoring mode and the classic metrics on real textures with a known focus order.

1. Semi-real focus series (benchmarks/semireal_catalogue.py: 14 in-focus real images x 3 probe/dose settings,
   11 frames each, the middle one in focus): for every mode (structure, center, tiles) and classic metric, the
   number of series whose pick is the in-focus frame, whose Spearman correlation with the true order is >= 0.9,
   whose fitted sub-step best focus (what the CLI and the widget report) lies within half a step of the truth,
   the mean and worst Spearman, and the in-focus frame's score. Series whose source image is in a weights file's
   training data (its ``data`` facts name the file) are counted apart: they are not a test of that model.
2. The two public real series of ../shared/data (DeepFocus WD -5/0/+5 µm at an assumed 5,000x and 20,000x;
   the optical smear through-focus series at 5,000x): pick and Spearman per mode.
3. The in-focus vendor and FEI images (looked at: every one is in focus; the Thermo Fisher example is very
   noisy): score, spread and structure fraction per mode.
4. Frames with nothing to focus on (benchmarks/pure_noise.py's noise, flat, black and white frames and unseen
   simulated blank frames): highest score per mode and how many are flagged "no structure".

Run: python benchmarks/real_textures.py [WEIGHTS ...] [--json FILE]   (no weights: the bundled default)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pure_noise import blank_split_frames, synthetic_frames
from semireal_catalogue import DATA, build, catalogue

from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.infer import MODES, model_magnification, score_frames
from napari_sem_focus.scoring.metrics import compute_metrics
from napari_sem_focus.scoring.report import to_json
from napari_sem_focus.scoring.weights import load_model, read_weights_info
from napari_sem_focus.simulate.optics import magnification_from_pixel_size
from napari_sem_focus.training.evaluate import real_series, spearman

CLASSIC = {
    "variance_of_laplacian": 0.0,
    "normalized_variance": 0.0,
    "absolute_variance": 0.0,
    "tenengrad (sigma 1 px)": 1.0,
}
VENDOR_IMAGES = [
    "fei_sem2surface/Indent_20230912_7kV_spot4.5_FOV100um_multiBSE_A_05.tif",
    "fei_sem2surface/P33_scale1_detectorA.tif",
    "fei_sem2surface/P33_scale2s3_detectorA.tif",
    "fei_sem2surface/P33_scale2s3_detectorC.tif",
    "vendor_metadata/thermofisher_fei/tfs_example.tif",
    "vendor_metadata/tescan/tescan_example_sem1.tif",
    "vendor_metadata/zeiss/zeiss_example_sem.tif",
    "vendor_metadata/zeiss/test_tiff_Zeiss_SEM_1k.tif",
    "vendor_metadata/zeiss/test_tiff_Zeiss_SEM_512pix.tif",
    "vendor_metadata/jeol/jeol_example_sem.tif",
]


def classic_scores(frames: list[np.ndarray]) -> dict[str, list[float]]:
    out = {}
    for name, sigma in CLASSIC.items():
        metric = name.split(" ")[0]
        out[name] = [compute_metrics(f, [metric], sigma)[metric] for f in frames]
    return out


def mode_scores(model, frames: list[np.ndarray], mag: float) -> dict[str, list]:
    return {mode: list(score_frames(frames, mag, model, mode, batch_size=32)) for mode in MODES}


def fitted_focus_error(values: np.ndarray, best: int) -> float:
    """|fitted best focus - true best focus| in focus steps: the sub-step position that the CLI and the widget
    report (``report.curve_peak``: a parabola through the peak and its neighbours)."""
    from napari_sem_focus.scoring.focus_curve import find_best_focus

    peak = find_best_focus([float(v) for v in values], [float(i) for i in range(len(values))])
    return round(abs(peak.position - best), 3)


def summarise(per_series: list[dict], methods: list[str], held_out: bool) -> list[dict]:
    chosen = [s for s in per_series if s["held_out"] == held_out]
    rows = []
    for method in methods:
        res = [s["methods"][method] for s in chosen]
        if not res:
            continue
        sp = np.array([r["spearman"] for r in res])
        rows.append(
            {
                "method": method,
                "series": len(res),
                "best frame exact": sum(r["exact"] for r in res),
                "spearman >= 0.9": int((sp >= 0.9).sum()),
                "fitted focus within 0.5 step": sum(r["fit_error_steps"] <= 0.5 for r in res),
                "mean spearman": round(float(np.mean(sp)), 3),
                "worst spearman": round(float(np.min(sp)), 3),
                "in-focus score min": round(min(r["in_focus"] for r in res), 2),
                "in-focus score median": round(float(np.median([r["in_focus"] for r in res])), 2),
            }
        )
    return rows


def print_rows(rows: list[dict]) -> None:
    from napari_sem_focus.scoring.report import format_table

    print(format_table(rows))


def semireal(model, trained_files: set[str]) -> dict:
    per_series = []
    started = time.time()
    for source, setting in catalogue():
        frames, pixel = build(source, setting)
        images = [f.image.astype(np.float32) / 255.0 for f in frames]
        mag = magnification_from_pixel_size(pixel)
        truth = -np.array([f.probe.effective_diameter_px for f in frames])  # higher = sharper
        best = int(np.argmax(truth))
        methods = {}
        for mode, results in mode_scores(model, images, mag).items():
            methods[mode] = [r.score for r in results]
            methods[f"{mode} flagged"] = [not r.has_structure for r in results]
        methods |= classic_scores(images)
        entry = {"series": f"{source.name}/{setting}", "held_out": Path(source.path).name not in trained_files}
        entry["methods"] = {}
        for name, values in methods.items():
            if name.endswith("flagged"):
                entry[name] = int(sum(values))
                continue
            values = np.asarray(values, float)
            pick = int(np.argmax(values))
            entry["methods"][name] = {
                "pick": pick,
                "exact": bool(truth[pick] == truth.max()),
                "spearman": round(spearman(values, truth), 3),
                "in_focus": float(values[best]),
                "fit_error_steps": fitted_focus_error(values, best),
                "scores": [round(float(v), 3) for v in values] if name in MODES else None,
            }
        per_series.append(entry)
        print(f"  {entry['series']:32s} ({time.time() - started:4.0f} s)", file=sys.stderr, flush=True)
    return {"series": per_series}


def public_series(model) -> list[dict]:
    rows = []
    for name, files, ranks, common in real_series(DATA):
        series = read_series(files, common_crop=common)
        images = list(series.frames())
        sharp = -np.asarray(ranks)
        for mag in (5000.0, 20000.0) if "deepfocus" in name else (5000.0,):
            for mode, results in mode_scores(model, images, mag).items():
                scores = [r.score for r in results]
                pick = int(np.argmax(scores))
                rows.append(
                    {
                        "series": name[:34],
                        "mag": mag,
                        "mode": mode,
                        "pick": pick,
                        "correct": bool(sharp[pick] == sharp.max()),
                        "spearman": round(spearman(scores, sharp), 3),
                        "best score": round(max(scores), 2),
                    }
                )
    return rows


def vendor_images(model) -> list[dict]:
    rows = []
    for relative in VENDOR_IMAGES:
        series = read_series(DATA / relative)
        mag, _ = model_magnification(series)
        frame = series.frame(0)
        row = {"image": Path(relative).name[:34], "model mag": round(mag)}
        for mode, results in mode_scores(model, [frame], mag).items():
            r = results[0]
            row[mode] = round(r.score, 2)
            if mode == MODES[0]:
                row["spread"] = round(float(r.spread), 2) if r.spread == r.spread else None
                row["structure fraction"] = round(r.structure_fraction, 2)
        rows.append(row)
    return rows


def blank_frames(model) -> list[dict]:
    frames = synthetic_frames(np.random.default_rng(0)) | blank_split_frames()
    rows = []
    for mode in MODES:
        results = list(score_frames(list(frames.values()), 5000.0, model, mode, batch_size=32))
        scores = np.array([r.score for r in results])
        rows.append(
            {
                "mode": mode,
                "frames": len(results),
                "highest score": round(float(scores.max()), 2),
                "mean score": round(float(scores.mean()), 2),
                "flagged no structure": int(sum(not r.has_structure for r in results)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="*", default=[None])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"needs the real SEM data in {DATA}")
    report = {}
    for weights in args.weights or [None]:
        label = "default" if weights is None else Path(weights).stem
        info = read_weights_info(weights)
        trained = {Path(str(d)).name for d in info.facts.get("data", []) if isinstance(d, str)}
        trained |= {n for d in info.facts.get("data", []) if isinstance(d, str) for n in _names_in(d)}
        model = load_model(weights)
        print(f"\n===== weights: {label} =====")
        result = semireal(model, trained)
        methods = list(result["series"][0]["methods"])
        print("\nSemi-real series from held-out source images (not in these weights' training data)")
        held = summarise(result["series"], methods, held_out=True)
        print_rows(held)
        trained_rows = summarise(result["series"], methods, held_out=False)
        if trained_rows:
            print("\nSemi-real series from source images these weights were trained on (not a test)")
            print_rows(trained_rows)
        print(f"\nPer series, mode '{MODES[0]}' (pick; Spearman; in-focus frame's score) and classic metrics' Spearman")
        per = []
        for s in result["series"]:
            m = s["methods"]
            per.append(
                {
                    "series": s["series"] + ("" if s["held_out"] else " (trained)"),
                    **{
                        mode: f"{m[mode]['pick']}; {m[mode]['spearman']:.2f}; {m[mode]['in_focus']:.1f}"
                        for mode in MODES
                    },
                    "no-structure frames": s[f"{MODES[0]} flagged"],
                    "lapvar": m["variance_of_laplacian"]["spearman"],
                    "normvar": m["normalized_variance"]["spearman"],
                }
            )
        print_rows(per)
        public = public_series(model)
        print("\nPublic real focus series")
        print_rows(public)
        vendor = vendor_images(model)
        print("\nIn-focus vendor and FEI images (score per mode; spread and structure fraction of the default)")
        print_rows(vendor)
        blanks = blank_frames(model)
        print("\nFrames with nothing to focus on (pure noise, flat, black, white, simulated blank)")
        print_rows(blanks)
        report[label] = {
            "semireal_held_out": held,
            "semireal_trained": trained_rows,
            "per_series": result["series"],
            "public": public,
            "vendor": vendor,
            "blank": blanks,
        }
    if args.json:
        args.json.write_text(to_json(report))


def _names_in(text: str) -> list[str]:
    """File names quoted inside a weights' data description, e.g. "semi-real ... from ['a.tif', 'b.tif']"."""
    import re

    return re.findall(r"'([^']+\.(?:tif|tiff|png))'", text)


if __name__ == "__main__":
    main()
