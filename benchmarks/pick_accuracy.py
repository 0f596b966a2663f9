"""Which scoring mode and tile pooling picks the best frame of a focus series best?

Simulated series (every training family + the held-out fibres, the paper's magnifications, low and high dose,
with and without astigmatism, best focus between frames) whose best frame is known, and the real series with a
known order in ../shared/data. For each: the default structure-aware mode, the center crop (the paper), and
tiles pooled by median, mean, p75, p90, max. Series use the simulator's automatic contrast/brightness.
Reports the fraction of series whose pick is the true best frame (or within one step) and the mean Spearman
correlation of scores with the true scores.
Run: python benchmarks/pick_accuracy.py [WEIGHTS] [N_SERIES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.infer import score_frames
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.simulate import SPECIMENS, simulate_series
from napari_sem_focus.training.evaluate import real_series, spearman

POOLS = {
    "median": np.median,
    "mean": np.mean,
    "p75": lambda t: np.quantile(t, 0.75),
    "p90": lambda t: np.quantile(t, 0.9),
    "max": np.max,
}
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def evaluate_series(model, frames, mag):
    structure = [r.score for r in score_frames(frames, mag, model, "structure", batch_size=32)]
    centre = [r.score for r in score_frames(frames, mag, model, "center", batch_size=32)]
    tiles = [r.tile_scores for r in score_frames(frames, mag, model, "tiles", batch_size=32)]
    out = {"structure (default)": np.array(structure), "center": np.array(centre)}
    for name, fn in POOLS.items():
        out[f"tiles-{name}"] = np.array([fn(t) for t in tiles])
    return out


def main() -> None:
    weights = sys.argv[1] if len(sys.argv) > 1 else None
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    model = load_model(weights)
    rng = np.random.default_rng(0)
    stats: dict[str, list] = {}
    families = list(SPECIMENS)
    for k in range(n):
        family = families[k % len(families)]
        mag = float(rng.choice([500.0, 1000.0, 2000.0, 5000.0, 10000.0]))
        dose = float(rng.choice([4.0, 40.0, 1000.0]))
        astig = float(rng.choice([0.0, 0.0, 0.3])) * 40_000 / mag
        frames, _ = simulate_series(
            family,
            mag,
            steps=11,
            shape=(480, 640),
            seed=100 + k,
            focus_offset_steps=float(rng.uniform(-0.4, 0.4)),
            electrons_per_px=dose,
            astig_um=astig,
        )
        truth = np.array([f.score for f in frames])
        images = [f.image.astype(np.float32) / 255 for f in frames]
        for method, scores in evaluate_series(model, images, mag).items():
            pick = int(np.argmax(scores))
            s = stats.setdefault(method, [])
            s.append((pick == int(np.argmax(truth)), abs(pick - int(np.argmax(truth))) <= 1, spearman(scores, truth)))
    print(f"simulated series: {n} (11 frames each, 640x480, doses 4/40/1000 e/px, some astigmatic)")
    print(f"{'method':20s} {'exact':>6s} {'+-1':>6s} {'spearman':>9s}")
    for method, s in stats.items():
        a = np.array(s, dtype=float)
        print(f"{method:20s} {a[:, 0].mean():6.2f} {a[:, 1].mean():6.2f} {np.nanmean(a[:, 2]):9.3f}")
    if DATA.exists():
        print("\nreal series (assumed magnification 5,000x and 20,000x):")
        for name, files, ranks, common in real_series(DATA):
            series = read_series(files, common_crop=common)
            images = list(series.frames())
            sharp = -np.asarray(ranks)
            for mag in (5000.0, 20000.0):
                for method, scores in evaluate_series(model, images, mag).items():
                    pick = int(np.argmax(scores))
                    print(
                        f"  {name[:28]:28s} {mag:7.0f}x {method:13s} pick {pick:2d} "
                        f"{'OK ' if sharp[pick] == sharp.max() else 'bad'} spearman {spearman(scores, sharp):6.3f}"
                    )


if __name__ == "__main__":
    main()
