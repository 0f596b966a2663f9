"""Does a few-label adaptation help on frames it was not trained on? Held-out RMSE before/after, and the time.

Three shifts the default model was not trained for, ~60 labelled frames each:

- ``stricter user``: simulated test-split frames (in the model's domain) labelled on a user's own, stricter scale,
  ``user = 10 (s / 10) ** 1.7`` (our 5 is their 3.1, our 8 their 6.8): a systematic scale offset.
- ``slow detector``: simulated frames with a detector bandwidth of 2.5 px and 50 % of the probe current in a wide
  tail, outside the training ranges (0-1 px, 0-25 %): softer frames at the same focus.
- ``real texture <name>``: semi-real frames (benchmarks/semireal_catalogue.py: 3 doses/probes x 11 focus steps) of
  one real in-focus image that no shipped weights were trained on (the GPL-licensed vendor examples).

For n = 5, 10 and 20 labelled frames (``--repeats`` random draws per domain), the model is adapted with
:func:`napari_sem_focus.adapt.adapt_on_features` on the drawn frames and scored on **all the other frames of the
domain** (never seen by the adaptation). Reported: held-out RMSE before and after (mean over draws), the relative
change, how often it got worse, how often the adaptation was adopted, and the wall time of one whole adaptation
from images (features included) on this machine.

Run: python benchmarks/few_labels.py [--repeats 5] [--weights default]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_sem_focus.adapt import adapt, adapt_on_features, frame_features, predict_from_features
from napari_sem_focus.simulate.frame import simulate_frame
from napari_sem_focus.simulate.series import dataset_params
from napari_sem_focus.train import drive
from napari_sem_focus.weights import load_model

N_LABELS = (5, 10, 20)
REAL_SOURCES = ("tescan", "zeiss-grid", "zeiss-1k", "jeol", "tfs")


def stricter_user(n: int = 60) -> list[tuple[np.ndarray, float, float]]:
    out = []
    for i in range(n):
        frame = simulate_frame(dataset_params("test", i), (240, 320))
        user = 10.0 * (frame.score / 10.0) ** 1.7
        out.append((frame.image.astype(np.float32) / 255.0, frame.params.magnification, user))
    return out


def slow_detector(n: int = 60) -> list[tuple[np.ndarray, float, float]]:
    out = []
    for i in range(n):
        params = replace(dataset_params("test", 1000 + i), bandwidth_px=2.5, tail_fraction=0.5)
        frame = simulate_frame(params, (240, 320))
        out.append((frame.image.astype(np.float32) / 255.0, params.magnification, frame.score))
    return out


def real_texture(name: str) -> list[tuple[np.ndarray, float, float]]:
    from semireal_catalogue import SETTINGS, SOURCES, build

    from napari_sem_focus.simulate.optics import magnification_from_pixel_size

    source = next(s for s in SOURCES if s.name == name)
    out = []
    for setting in SETTINGS:
        frames, pixel = build(source, setting)
        mag = magnification_from_pixel_size(pixel)
        out += [(f.image.astype(np.float32) / 255.0, mag, f.score) for f in frames]
    return out


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def run_domain(model, name: str, samples, repeats: int) -> list[dict]:
    started = time.time()
    feats = drive(frame_features(model, samples))
    print(f"  {name}: {len(samples)} frames, features {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    labels = np.array([s[2] for s in samples])
    before_all = predict_from_features(model, feats)
    rows = []
    for n in N_LABELS:
        before, after, worse, adopted = [], [], 0, 0
        for r in range(repeats):
            rng = np.random.default_rng([n, r, 7])
            chosen = rng.choice(len(samples), n, replace=False)
            rest = np.setdiff1d(np.arange(len(samples)), chosen)
            result = drive(adapt_on_features(model, [feats[i] for i in chosen]))
            pred = predict_from_features(result.model, [feats[i] for i in rest])
            b, a = rmse(before_all[rest], labels[rest]), rmse(pred, labels[rest])
            before.append(b)
            after.append(a)
            worse += a > b + 1e-6
            adopted += result.adopted
        rows.append(
            {
                "domain": name,
                "labels": n,
                "before": float(np.mean(before)),
                "after": float(np.mean(after)),
                "change": float(np.mean(after) / np.mean(before) - 1.0),
                "worse": f"{worse}/{repeats}",
                "adopted": f"{adopted}/{repeats}",
            }
        )
    return rows


def timing(model, samples, n: int) -> float:
    started = time.time()
    adapt(model, samples[:n])
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--domains", nargs="*", default=None, help="names to run (default: all)")
    args = parser.parse_args()
    model = load_model(args.weights)
    domains = {"stricter user": stricter_user, "slow detector": slow_detector}
    for name in REAL_SOURCES:
        domains[f"real texture {name}"] = lambda name=name: real_texture(name)
    rows, times = [], {}
    for name, make in domains.items():
        if args.domains and name not in args.domains:
            continue
        samples = make()
        rows += run_domain(model, name, samples, args.repeats)
        if name in ("stricter user", f"real texture {REAL_SOURCES[0]}"):
            times[name] = {n: timing(model, samples, n) for n in (10, 20)}
    print("\nHeld-out RMSE (score units) before/after adapting to n labelled frames (mean of the draws)")
    print(f"{'domain':26s} {'n':>3s} {'before':>7s} {'after':>7s} {'change':>7s} {'worse':>6s} {'adopted':>7s}")
    for row in rows:
        print(
            f"{row['domain']:26s} {row['labels']:3d} {row['before']:7.3f} {row['after']:7.3f} "
            f"{row['change']:+7.0%} {row['worse']:>6s} {row['adopted']:>7s}"
        )
    for n in N_LABELS:
        sel = [r for r in rows if r["labels"] == n]
        if sel:
            mean_change = np.mean([r["change"] for r in sel])
            print(f"all domains, n={n}: mean change {mean_change:+.0%}, worst {max(r['change'] for r in sel):+.0%}")
    print("\nWall time of one adaptation from images (features + cross-validation + final fit), this machine")
    for name, t in times.items():
        print(f"  {name}: " + ", ".join(f"{n} frames {s:.1f} s" for n, s in t.items()))


if __name__ == "__main__":
    main()
