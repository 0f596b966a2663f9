"""The semi-real focus series of the real-texture benchmark: which in-focus real image, which region, which probe
and dose (see ``napari_sem_focus.simulate.semireal`` for how a series is made).

Every source is an in-focus SEM image of ../shared/data (looked at: sharp edges, no visible defocus; DeepFocus's
``pert5000`` is the sharpest frame of its series, not perfectly focused). ``licence`` says whether the image may
be used to train weights that ship (permissive: BSD-3/MIT) or only read at run time for measurement (GPL).
Series whose centre is featureless: the FEI indent cropped so that the indent lies off-centre, the TESCAN
aperture (a dark empty hole in the middle), and two composites with one large smooth sphere painted over the
centre of a real texture (the 10,000x tin-ball field where the centre falls on one ball's smooth face).

Run ``python benchmarks/real_textures.py`` for the figures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from napari_sem_focus.io.series import read_series
from napari_sem_focus.simulate.semireal import SemiRealFrame, SemiRealSettings, clean_source, semireal_series

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Source:
    """An in-focus real image used as a semi-real source.

    Attributes:
        name: short name.
        path: file relative to ../shared/data.
        licence: "permissive" (may train shipped weights) or "gpl" (measurement only).
        crop: (row, col, rows, cols) of the scored region to use, or None for all of it.
        pixel_nm: pixel size when the file states none (nm).
        ball: paint a smooth sphere of this radius (fraction of the frame height) over the centre.
    """

    name: str
    path: str
    licence: str
    crop: tuple[int, int, int, int] | None = None
    pixel_nm: float | None = None
    ball: float = 0.0


SOURCES = [
    Source("fei-indent", "fei_sem2surface/Indent_20230912_7kV_spot4.5_FOV100um_multiBSE_A_05.tif", "permissive"),
    Source(
        "fei-indent-offcentre",
        "fei_sem2surface/Indent_20230912_7kV_spot4.5_FOV100um_multiBSE_A_05.tif",
        "permissive",
        crop=(0, 0, 768, 1024),
    ),
    Source("fei-p33-254x", "fei_sem2surface/P33_scale1_detectorA.tif", "permissive"),
    Source("fei-p33-1270x-A", "fei_sem2surface/P33_scale2s3_detectorA.tif", "permissive"),
    Source("fei-p33-1270x-C", "fei_sem2surface/P33_scale2s3_detectorC.tif", "permissive"),
    Source("fei-p33-254x-ball", "fei_sem2surface/P33_scale1_detectorA.tif", "permissive", ball=0.33),
    Source("deepfocus", "deepfocus/series_0_def-13324_astx-466_asty219_pert5000.png", "permissive", pixel_nm=24.8),
    Source("tfs", "vendor_metadata/thermofisher_fei/tfs_example.tif", "gpl"),
    Source("tescan", "vendor_metadata/tescan/tescan_example_sem1.tif", "gpl"),
    Source("zeiss-grid", "vendor_metadata/zeiss/zeiss_example_sem.tif", "gpl"),
    Source("zeiss-1k", "vendor_metadata/zeiss/test_tiff_Zeiss_SEM_1k.tif", "gpl"),
    Source("zeiss-50kx", "vendor_metadata/zeiss/test_tiff_Zeiss_SEM_512pix.tif", "gpl"),
    Source("jeol", "vendor_metadata/jeol/jeol_example_sem.tif", "gpl"),
    Source("jeol-ball", "vendor_metadata/jeol/jeol_example_sem.tif", "gpl", ball=0.3),
]

#: Three settings per source: a moderate dose (30 electrons/px) with a round probe, a fast noisy scan (5 e/px),
#: and astigmatism (focal lines 1.5 steps apart, so frames +-1 are line foci and the middle frame is the circle of
#: least confusion).
SETTINGS = {
    "30e": SemiRealSettings(electrons_per_px=30.0, step_px=2.5),
    "5e": SemiRealSettings(electrons_per_px=5.0, step_px=2.5),
    "30e-astig": SemiRealSettings(electrons_per_px=30.0, step_px=2.0, astig_steps=1.5, astig_angle_deg=30.0),
}


def paint_ball(image: np.ndarray, radius_frac: float) -> np.ndarray:
    """A smooth sphere (SE contrast: yield ~ sec(tilt)^0.8, bright rim) over the centre of ``image``."""
    rows, cols = image.shape
    radius = radius_frac * rows
    y, x = np.indices(image.shape, dtype=np.float32)
    rho = np.hypot(y - rows / 2, x - cols / 2) / radius
    inside = rho < 1.0
    cos_tilt = np.sqrt(np.clip(1.0 - rho**2, 0.03, 1.0))
    ball = 0.35 * np.clip(cos_tilt ** (-0.8), 1.0, 5.0)
    ball = np.clip(ball, 0.0, 1.0).astype(np.float32)
    out = image.copy()
    out[inside] = ball[inside]
    return out


@functools.cache
def clean(source: Source) -> tuple[np.ndarray, float]:
    """(clean source image float32 [0, 1], pixel size nm)."""
    series = read_series(DATA / source.path)
    image = series.frame(0)
    if source.crop:
        r, c, h, w = source.crop
        image = image[r : r + h, c : c + w]
    pixel = source.pixel_nm or series.pixel_size_nm
    if pixel is None:
        raise ValueError(f"{source.name}: no pixel size")
    cleaned = clean_source(image)
    if source.ball:
        cleaned = paint_ball(cleaned, source.ball)
    return cleaned, float(pixel)


def build(source: Source, setting: str, seed: int = 0) -> tuple[list[SemiRealFrame], float]:
    """The frames of one semi-real series and the source's pixel size (nm)."""
    image, pixel = clean(source)
    settings = replace(SETTINGS[setting], seed=seed)
    return semireal_series(image, pixel, settings), pixel


def catalogue() -> list[tuple[Source, str]]:
    """Every (source, setting) pair of the benchmark."""
    return [(s, k) for s in SOURCES for k in SETTINGS]
