"""Scoring speed: a 100-frame 1024x768 stack on this machine's CPU, per mode, float32 vs bf16, with the
bundled weights (or WEIGHTS). Target (issue #4): < 5 s on 2 CPU cores for the paper's centre crop.
Run: python benchmarks/bench_inference.py [WEIGHTS]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from napari_sem_focus.device import mixed_precision_dtype
from napari_sem_focus.scoring.infer import MODES, score_frames
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.simulate.samples import sample_series


def main() -> None:
    weights = sys.argv[1] if len(sys.argv) > 1 else None
    model = load_model(weights)
    series = sample_series("tinball")
    frames = [series.frame(i % len(series)) for i in range(100)]
    precision = mixed_precision_dtype("cpu")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, reduced precision: {precision}")
    results = {}
    for mode in MODES:
        for bf16 in (False, True):
            list(score_frames(frames[:4], 5000.0, model, mode, bf16=bf16))  # warm-up
            t = time.perf_counter()
            scores = [r.score for r in score_frames(frames, 5000.0, model, mode, batch_size=32, bf16=bf16)]
            dt = time.perf_counter() - t
            results[(mode, bf16)] = np.array(scores)
            print(f"{mode:9s} {'bf16' if bf16 else 'fp32'}: 100 frames in {dt:6.2f} s ({dt * 10:.0f} ms/frame)")
        diff = np.abs(results[(mode, True)] - results[(mode, False)])
        print(f"{mode:9s} bf16 vs fp32 score difference: max {diff.max():.3f}, mean {diff.mean():.3f}")


if __name__ == "__main__":
    main()
