"""Simulator speed on one core. Target (issue #3): < 50 ms per 1024x768 frame, so training can simulate on the fly.

Per family: a frame of a focus series (specimen reused; best of 5) and a frame with a new specimen (median and
worst of 10 seeds, 5,000x, 100 e/px, 20 µm defocus); then the mean over the first 100 frames of the training
split drawn at 1024x768 (random magnification, dose, astigmatism, contrast) and at the 240x320 training size.
Run: python benchmarks/bench_simulator.py
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import cv2
import numpy as np

from napari_sem_focus.allocator import reuse_freed_memory
from napari_sem_focus.simulate import SPECIMENS, FrameParams, dataset_params, simulate_frame
from napari_sem_focus.simulate.frame import render
from napari_sem_focus.simulate.specimens import make_specimen

SHAPE = (768, 1024)


def elapsed_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    cv2.setNumThreads(1)
    tuned = reuse_freed_memory()  # as the training data loaders and `sem-focus simulate` do
    print(f"glibc allocator keeps freed frame buffers: {tuned}")
    simulate_frame(FrameParams(electrons_per_px=2.0), SHAPE)  # warm-up: builds the Poisson table once (~0.2 s)
    print(f"{'family':10s} {'series frame (ms)':>18s} {'new specimen: median (ms)':>26s} {'worst (ms)':>11s}")
    for family in SPECIMENS:
        params = FrameParams(family=family, magnification=5000.0, defocus_um=20.0, electrons_per_px=100.0, seed=1)
        spec = make_specimen(family, np.random.default_rng(1), SHAPE, params.pixel_nm, params.pixel_nm * 1024)
        series_ms = min(elapsed_ms(partial(render, spec, params, np.random.default_rng(0))) for _ in range(5))
        new_ms = [elapsed_ms(partial(simulate_frame, replace(params, seed=seed), SHAPE)) for seed in range(10)]
        print(f"{family:10s} {series_ms:18.1f} {np.median(new_ms):26.1f} {max(new_ms):11.1f}")
    for shape in (SHAPE, (240, 320)):
        times = [elapsed_ms(partial(simulate_frame, dataset_params("train", i), shape)) for i in range(100)]
        print(
            f"training split at {shape[1]}x{shape[0]}: mean {np.mean(times):.1f} ms, "
            f"95th percentile {np.percentile(times, 95):.1f} ms, worst {max(times):.1f} ms per frame"
        )


if __name__ == "__main__":
    main()
