"""Peak memory of scoring a giant image: a 40,000 x 40,000 px 8-bit Deflate-tiled TIFF (a stitched mosaic's size).

Writes the TIFF tile by tile (a simulated 1024x768 frame repeated, so the file stays small; 1.6 GB as pixels),
then runs ``sem-focus score FILE --mag 5000`` in a fresh process and prints its wall time and peak resident
memory (``ru_maxrss`` of the child), beside the size of the image in memory as uint8 and as float32.
Run: python benchmarks/giant_tiff.py [--side 40000] [--tile 512] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from napari_sem_focus.simulate import simulate_series


def write_giant_tiff(path: Path, side: int, tile: int) -> Path:
    """A ``side`` x ``side`` uint8 TIFF in ``tile`` x ``tile`` Deflate tiles, written one tile at a time."""
    frames, _ = simulate_series("particles", 5000.0, steps=1, shape=(768, 1024), seed=3)
    texture = frames[0].image.astype(np.uint8)
    tiles_per_side = -(-side // tile)

    def tiles() -> Iterator[np.ndarray]:
        for r in range(tiles_per_side):
            for c in range(tiles_per_side):
                y, x = (r * tile) % (768 - tile), (c * tile) % (1024 - tile)
                yield texture[y : y + tile, x : x + tile]

    tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint8, tile=(tile, tile), compression="zlib")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=40_000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--keep", type=Path, help="write the TIFF here and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"giant_{args.side}.tif"
    if not path.exists():
        started = time.time()
        write_giant_tiff(path, args.side, args.tile)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.time() - started:.0f} s", flush=True)
    command = [sys.executable, "-m", "napari_sem_focus", "score", str(path), "--mag", "5000"]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - started
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    pixels = args.side**2
    print(f"sem-focus score: exit {done.returncode}, {wall:.0f} s, peak resident memory {peak_gb:.2f} GiB")
    print(f"the image in memory: {pixels / 2**30:.2f} GiB as uint8, {4 * pixels / 2**30:.2f} GiB as float32")
    print("\n".join(done.stdout.splitlines()[-4:] + done.stderr.splitlines()[-4:]))


if __name__ == "__main__":
    main()
