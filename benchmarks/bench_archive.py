"""Archive scoring throughput: frames/s of `sem-focus archive` with 0, 1 and 2 reading processes, side by side.

Makes a folder tree of N simulated 1024x768 8-bit TIFF frames (10 folders, no metadata; --mag 5000), then scores
it with each number of workers into a fresh CSV and prints frames/s and the ratio to 0 workers. On a 2-core machine
the model and the readers share the cores, so workers help little; on a GPU machine the readers keep it fed.

Run: python benchmarks/bench_archive.py [--frames 1000] [--workers 0 1 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_sem_focus.batch.archive import iter_score_archive
from napari_sem_focus.simulate import simulate_series
from napari_sem_focus.training.train import drive


def make_tree(root: Path, frames: int) -> None:
    series, _ = simulate_series("particles", 5000.0, steps=21, shape=(768, 1024), seed=3)
    images = [(f.image * 255).astype(np.uint8) for f in series]
    for i in range(frames):
        folder = root / f"section_{i % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / f"frame_{i:06d}.tif", images[i % len(images)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        make_tree(root, args.frames)
        print(f"{args.frames} frames of 1024x768 in 10 folders; device {args.device}")
        base = None
        for workers in args.workers:
            out = Path(tmp) / f"w{workers}.csv"
            start = time.perf_counter()
            result = drive(
                iter_score_archive(root, out, magnification=5000.0, device=args.device, workers=workers, resume=False)
            )
            rate = result.rows_written / (time.perf_counter() - start)
            base = base or rate
            print(f"workers {workers}: {rate:6.1f} frames/s ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
