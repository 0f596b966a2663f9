"""Classic metrics vs the bare OpenCV/NumPy expression on a 1024x768 frame, timed side by side in one run.

Target (issue #2): every metric within 1.2x of its bare expression.
Run: python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import timeit

import cv2
import numpy as np

from napari_sem_focus.scoring import metrics
from napari_sem_focus.simulate.samples import sample_series


def bare_expressions(img: np.ndarray) -> dict[str, float]:
    return {
        "absolute_variance": lambda: float(np.abs(img - img.mean()).mean()),
        "normalized_variance": lambda: float(img.var() / img.mean()),
        "variance_of_laplacian": lambda: float(cv2.Laplacian(img, cv2.CV_32F, ksize=1).var()),
        "tenengrad": lambda: float(
            np.mean(cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3) ** 2)
        ),
        "brenner": lambda: float(np.mean((img[:, 2:] - img[:, :-2]) ** 2)),
    }


def main() -> None:
    img = sample_series("tinball").frame(10)
    assert img.shape == (768, 1024) and img.dtype == np.float32
    bare = bare_expressions(img)
    print(f"{'metric':24s} {'ours (ms)':>10s} {'bare (ms)':>10s} {'ratio':>6s}  agree")
    worst = 0.0
    for name, fn in metrics.METRICS.items():
        ours = min(timeit.repeat(lambda fn=fn: fn(img), number=20, repeat=7)) / 20 * 1e3
        ref = min(timeit.repeat(bare[name], number=20, repeat=7)) / 20 * 1e3
        agree = np.isclose(fn(img), bare[name](), rtol=1e-3)
        worst = max(worst, ours / ref)
        print(f"{name:24s} {ours:10.3f} {ref:10.3f} {ours / ref:6.2f}  {agree}")
    print(f"worst ratio {worst:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
