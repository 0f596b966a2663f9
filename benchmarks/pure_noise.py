"""Scores of frames that show no specimen — the paper's 0 class: pure noise, constant grey, black, white.

Synthetic noise of several kinds and strengths at 1024x768 (Gaussian, Poisson counts, uniform, noise blurred
along the scan line as a detector bandwidth does) and 0-score frames of the simulator's `blank` split beyond
the indices used for training (100,000+). Each frame is scored by every weights file given (side by side, same
frames) in every scoring mode (structure, center, tiles) at 5,000x.
Run: python benchmarks/pure_noise.py [WEIGHTS ...]   (no argument: the bundled default)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from napari_sem_focus.scoring.infer import MODES, score_frames
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.simulate import dataset_params, simulate_frame

SHAPE = (768, 1024)
MAGNIFICATION = 5000.0


def synthetic_frames(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Named float [0, 1] frames with no specimen."""
    frames = {}
    for mean in (0.2, 0.5):
        for sigma in (0.05, 0.15, 0.3):
            frames[f"gaussian mean {mean} sd {sigma}"] = rng.normal(mean, sigma, SHAPE)
    for lam in (1, 3, 10, 100):
        frames[f"poisson {lam} e/px"] = rng.poisson(lam, SHAPE) / (3.0 * lam)
    frames["uniform 0-1"] = rng.random(SHAPE)
    line_blurred = rng.normal(0.4, 0.2, SHAPE).astype(np.float32)
    frames["gaussian, bandwidth blur 1 px"] = cv2.GaussianBlur(line_blurred, (0, 0), sigmaX=1.0, sigmaY=0.01)
    frames["constant grey 0.5"] = np.full(SHAPE, 0.5)
    frames["black"] = np.zeros(SHAPE)
    frames["white"] = np.ones(SHAPE)
    return {k: np.clip(v, 0, 1).astype(np.float32) for k, v in frames.items()}


def blank_split_frames(n: int = 24) -> dict[str, np.ndarray]:
    """0-score frames of the simulator's `blank` split, indices 100,000+ (not in the training data)."""
    frames = {}
    for i in range(100_000, 100_000 + n):
        params = dataset_params("blank", i)
        frames[f"simulated blank:{params.blank} #{i}"] = simulate_frame(params, SHAPE).image.astype(np.float32) / 255
    return frames


def main() -> None:
    weights = sys.argv[1:] or [None]
    frames = synthetic_frames(np.random.default_rng(0)) | blank_split_frames()
    columns = {}
    for w in weights:
        model = load_model(w)
        for mode in MODES:
            name = f"{'default' if w is None else Path(w).stem} [{mode}]"
            columns[name] = [r.score for r in score_frames(frames.values(), MAGNIFICATION, model, mode)]
    width = max(len(n) for n in columns) + 2
    print("frame".ljust(40) + "".join(n.rjust(width) for n in columns))
    for i, key in enumerate(frames):
        print(key.ljust(40) + "".join(f"{v[i]:.2f}".rjust(width) for v in columns.values()))
    for label, fn in (("mean", np.mean), ("max", np.max)):
        print(label.ljust(40) + "".join(f"{fn(v):.2f}".rjust(width) for v in columns.values()))


if __name__ == "__main__":
    main()
