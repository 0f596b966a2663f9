"""Simulator speed on one core: a 1024x768 frame of a series (specimen reused) and a frame with a new specimen,
per family; and a 240x320 training frame. Target (issue #3): < 50 ms per 1024x768 frame.
Run: python benchmarks/bench_simulator.py
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from napari_sem_focus.simulate import SPECIMENS, FrameParams, dataset_params, simulate_frame
from napari_sem_focus.simulate.frame import render
from napari_sem_focus.simulate.specimens import make_specimen


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main() -> None:
    cv2.setNumThreads(1)
    shape = (768, 1024)
    print(f"{'family':10s} {'series frame (ms)':>18s} {'new specimen + frame (ms)':>26s}")
    for family in SPECIMENS:
        params = FrameParams(family=family, magnification=5000.0, defocus_um=20.0, electrons_per_px=100.0, seed=1)
        spec = make_specimen(family, np.random.default_rng(1), shape, params.pixel_nm, params.pixel_nm * 1024)
        series_ms = best_of(lambda p=params, s=spec: render(s, p, np.random.default_rng(0)))
        full_ms = best_of(lambda p=params: simulate_frame(p, shape), repeat=3)
        print(f"{family:10s} {series_ms:18.1f} {full_ms:26.1f}")
    train_ms = best_of(lambda: [simulate_frame(dataset_params("train", i), (240, 320)) for i in range(50)], 1) / 50
    print(f"training frame 240x320 (random parameters): {train_ms:.1f} ms")


if __name__ == "__main__":
    main()
