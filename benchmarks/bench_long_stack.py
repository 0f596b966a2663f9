"""Per-frame read time of long multi-page TIFF stacks: must stay flat as the stack grows (issue #16).

Writes stacks of N frames (512x384 uint8, our simulator's page descriptions) to a temporary folder and times reading
every frame through :func:`napari_sem_focus.io.series.read_series` (what ``sem-focus score`` and the widgets do), and a
bare ``tifffile`` loop over the pages of one open file for reference.
Run: python benchmarks/bench_long_stack.py [--sizes 100 1000 4000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_sem_focus.io.series import read_series, write_series_tiff


def time_reads(path: Path) -> tuple[float, float]:
    """(ms per frame through ``read_series``, ms per frame of a bare tifffile loop) over every frame of ``path``."""
    start = time.perf_counter()
    series = read_series(path)
    for i in range(len(series)):
        series.frame(i)
    ours = (time.perf_counter() - start) / len(series) * 1e3
    start = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            page.asarray()
    return ours, (time.perf_counter() - start) / len(series) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frame = (rng.random((384, 512)) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'frames':>7}  {'read_series ms/frame':>21}  {'bare tifffile ms/frame':>23}  ratio")
        for n in args.sizes:
            path = write_series_tiff(Path(tmp) / f"stack_{n}.tif", [frame] * n, [{"magnification": 5000}] * n)
            ours, bare = time_reads(path)
            print(f"{n:>7}  {ours:>21.3f}  {bare:>23.3f}  {ours / bare:5.1f}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
