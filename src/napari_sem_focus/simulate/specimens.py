"""Specimens in physical units, sampled at the pixel size of the magnification.

Each generator returns a :class:`Specimen`: a height map (in *pixels*, so its gradient is the surface slope),
a material map (relative secondary-electron yield of the material, ~0.05 for a deep hole, 0.25 carbon, 0.6 tin),
and the specimen's characteristic feature size ``feature_nm`` that anchors score 1 ("just recognisable").
The feature sizes are drawn relative to the field width of a 1024-px frame (``hfw_nm``), so every magnification
shows content: at 500x tin balls are microns wide, at 10,000x the field holds a few sub-micron balls.
A faint multi-scale roughness is added to every surface so that every magnification has fine texture.

Families: ``tinball`` (spheres of log-normal radii on carbon), ``grid`` (metal mesh of periodic bars),
``particles`` (faceted powder grains), ``lines`` (lithographic lines with edge roughness), ``rough``
(porous/rough fractal surface) and ``fibres`` (overlapping cylinders; held out of training).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .random_fields import standard_normal


@dataclass
class Specimen:
    """A specimen sampled on the pixel grid.

    Attributes:
        height_px: surface height in pixel units (float32, rows x cols).
        material: relative SE yield of the material at each pixel (float32).
        feature_nm: characteristic feature size in nm (score 1 when the probe blur reaches it).
        family: the generator's name.
    """

    height_px: np.ndarray
    material: np.ndarray
    feature_nm: float
    family: str


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], max_scale_px: float, beta: float = 1.0, min_scale_px: float = 1.0
) -> np.ndarray:
    """Zero-mean, unit-std multi-octave noise with features from ``min_scale_px`` to ``max_scale_px``.

    Octave k has features of size s_k = max_scale / 2^k and amplitude s_k^beta (beta=1: rough, 2: smooth).
    Built as a pyramid: start from the coarsest random grid, upsample by 2 and add the next octave's noise.
    """
    rows, cols = shape
    scale = max(max_scale_px, min_scale_px)
    acc = np.zeros((max(2, int(rows / scale) + 1), max(2, int(cols / scale) + 1)), np.float32)
    while True:
        octave = standard_normal(rng, acc.shape)
        octave *= np.float32(scale**beta)
        acc += octave
        if scale / 2 < min_scale_px:
            break
        scale /= 2
        size = (max(2, int(cols / scale) + 1), max(2, int(rows / scale) + 1))
        acc = cv2.resize(acc, size, interpolation=cv2.INTER_LINEAR)
    out = cv2.resize(acc, (cols, rows), interpolation=cv2.INTER_CUBIC)
    sample = out[::4, ::4]  # a 1/16 sample estimates the mean and std to well under 1 %
    mean, std = float(sample.mean()), float(sample.std())
    out -= np.float32(mean)
    if std > 0:
        out *= np.float32(1.0 / std)
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


_CACHED_GRID_RADIUS = 64


@functools.lru_cache(maxsize=_CACHED_GRID_RADIUS + 1)
def _cached_grid(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    r2 = x * x + y * y
    for a in (y, x, r2):
        a.setflags(write=False)
    return y, x, r2


def _centred_grid(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, x, x^2 + y^2)`` (float32, read-only) over the square [-r, r]^2; small ones are cached (many grains)."""
    if r <= _CACHED_GRID_RADIUS:
        return _cached_grid(r)
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    return y, x, x * x + y * y


def _sphere_patch(radius_px: float) -> tuple[np.ndarray, int]:
    r = math.ceil(radius_px)
    r2 = _centred_grid(r)[2]
    return np.sqrt(np.maximum(np.float32(radius_px**2) - r2, np.float32(0.0))), r


def _paste_max(
    target: np.ndarray, patch: np.ndarray, row: int, col: int, base: float = 0.0
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """target[row±, col±] = max(target, patch + base) where patch > 0; returns (region, mask) where pasted."""
    half_r, half_c = patch.shape[0] // 2, patch.shape[1] // 2
    r0, c0 = row - half_r, col - half_c
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + patch.shape[0], target.shape[0]), min(c0 + patch.shape[1], target.shape[1])
    if rr0 >= rr1 or cc0 >= cc1:
        return None
    sub = patch[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]
    mask = (sub > 0) & (sub + base > target[rr0:rr1, cc0:cc1])
    target[rr0:rr1, cc0:cc1][mask] = (sub + base)[mask]
    return (slice(rr0, rr1), slice(cc0, cc1)), mask


def tinball(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float) -> Specimen:
    """Tin balls on carbon: spheres with log-normal radii (sigma 0.55), 15-55 % coverage."""
    median_d_nm = hfw_nm * _log_uniform(rng, 1 / 60, 1 / 6)
    median_r_px = median_d_nm / 2 / pixel_nm
    sigma = 0.55
    area = shape[0] * shape[1]
    coverage = rng.uniform(0.15, 0.55)
    mean_ball_area = math.pi * median_r_px**2 * math.exp(2 * sigma**2)
    count = int(min(600, max(3, coverage * area / mean_ball_area)))
    height = np.zeros(shape, np.float32)
    material = np.full(shape, 0.22, np.float32)
    radii = np.sort(median_r_px * np.exp(sigma * rng.standard_normal(count)))[::-1]
    radii = np.clip(radii, 0.6, 0.45 * max(shape))
    for r in radii:
        patch, _ = _sphere_patch(float(r))
        row = int(rng.integers(-int(r), shape[0] + int(r)))
        col = int(rng.integers(-int(r), shape[1] + int(r)))
        _paste_max(height, patch, row, col)
    material[height > 0] = 0.6
    return Specimen(height, material, median_d_nm, "tinball")


def _rotated_coordinate(shape: tuple[int, int], angle: float, offset: float) -> np.ndarray:
    """``x cos(angle) + y sin(angle) + offset`` over the pixel grid (float32, pixels)."""
    rows, cols = shape
    x = np.arange(cols, dtype=np.float32) * np.float32(math.cos(angle))
    y = np.arange(rows, dtype=np.float32) * np.float32(math.sin(angle)) + np.float32(offset)
    return np.add.outer(y, x)


def _distance_to_centre_line(coord: np.ndarray, pitch_px: float) -> np.ndarray:
    """``|mod(coord, pitch) - pitch / 2|``: distance (px) to the nearest centre line of a periodic pattern.

    Overwrites and returns ``coord``.
    """
    coord *= np.float32(1.0 / pitch_px)
    coord -= np.floor(coord)
    coord -= np.float32(0.5)
    np.abs(coord, out=coord)
    coord *= np.float32(pitch_px)
    return coord


def grid(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float) -> Specimen:
    """A metal mesh: two sets of raised bars with rounded tops over dark holes, at a random angle."""
    pitch_px = hfw_nm * _log_uniform(rng, 1 / 14, 1 / 2.5) / pixel_nm
    bar_px = pitch_px * rng.uniform(0.15, 0.45)
    angle = rng.uniform(0, math.pi / 2)
    half = np.float32(bar_px / 2)

    def bars(angle: float, offset: float) -> np.ndarray:
        """Bar height half * sqrt(1 - (dist / half)^2): a rounded top of width ``bar_px``."""
        dist = _distance_to_centre_line(_rotated_coordinate(shape, angle, offset), pitch_px)
        dist *= np.float32(1.0 / half)
        np.square(dist, out=dist)
        np.subtract(np.float32(1.0), dist, out=dist)
        np.maximum(dist, np.float32(0.0), out=dist)
        np.sqrt(dist, out=dist)
        dist *= half
        return dist

    height = bars(angle, rng.uniform(0, pitch_px))
    np.maximum(height, bars(angle + math.pi / 2, rng.uniform(0, pitch_px)), out=height)
    material = np.where(height > 0, np.float32(0.5), np.float32(0.04)).astype(np.float32)
    return Specimen(height, material, bar_px * pixel_nm, "grid")


def particles(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float) -> Specimen:
    """Powder: irregular faceted grains (random polygons, each a tilted plane) on a substrate."""
    median_nm = hfw_nm * _log_uniform(rng, 1 / 40, 1 / 5)
    median_px = median_nm / pixel_nm
    count = int(min(300, max(3, rng.uniform(0.2, 0.6) * shape[0] * shape[1] / (0.6 * median_px**2))))
    height = np.zeros(shape, np.float32)
    material = np.full(shape, 0.2, np.float32)
    grain_material = rng.uniform(0.35, 0.7)
    for _ in range(count):
        size = median_px * math.exp(0.5 * rng.standard_normal())
        n_vertices = int(rng.integers(5, 10))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n_vertices))
        radii = size / 2 * rng.uniform(0.6, 1.0, n_vertices)
        r_int = math.ceil(size / 2) + 1
        pts = np.stack([r_int + radii * np.cos(angles), r_int + radii * np.sin(angles)], axis=1)
        mask = np.zeros((2 * r_int + 1, 2 * r_int + 1), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        yy, xx, _ = _centred_grid(r_int)
        gx, gy = rng.normal(0, 0.6, 2)
        plane = cv2.addWeighted(xx, float(gx), yy, float(gy), size * 0.4)  # a tilted facet
        patch = np.where(mask > 0, np.maximum(plane, 0.5), 0).astype(np.float32)
        row, col = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        pasted = _paste_max(height, patch, row, col, base=float(rng.uniform(0, size * 0.3)))
        if pasted is not None:
            region, mask = pasted
            material[region][mask] = grain_material * rng.uniform(0.8, 1.2)
    return Specimen(height, material, median_nm, "particles")


def lines(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float) -> Specimen:
    """Lithographic lines: parallel resist lines with trapezoid profile and line-edge roughness."""
    pitch_px = hfw_nm * _log_uniform(rng, 1 / 40, 1 / 5) / pixel_nm
    width_px = pitch_px * rng.uniform(0.3, 0.6)
    angle = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.03)
    roughness = fractal_noise(rng, shape, max(2.0, width_px), beta=1.0)
    roughness *= np.float32(0.06 * width_px)
    roughness += _rotated_coordinate(shape, angle, rng.uniform(0, pitch_px))
    dist = _distance_to_centre_line(roughness, pitch_px)
    edge_px = max(0.5, 0.1 * width_px)
    # trapezoid profile: 1 on the line top, a linear edge of edge_px, 0 between lines
    profile = cv2.addWeighted(dist, -1.0 / edge_px, dist, 0.0, width_px / 2 / edge_px)
    np.clip(profile, 0.0, 1.0, out=profile)
    material = np.where(profile > 0.5, np.float32(0.38), np.float32(0.26)).astype(np.float32)
    height = profile
    height *= np.float32(0.5 * width_px)
    return Specimen(height, material, width_px * pixel_nm, "lines")


def rough(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float) -> Specimen:
    """A porous/rough surface: fractal height with dark pores where it dips deepest."""
    scale_nm = hfw_nm * _log_uniform(rng, 1 / 50, 1 / 6)
    scale_px = scale_nm / pixel_nm
    surface = fractal_noise(rng, shape, scale_px, beta=rng.uniform(0.8, 1.6))
    height = (surface * np.float32(0.35 * scale_px)).astype(np.float32)
    pores = surface < rng.uniform(-2.5, -1.2)
    material = np.where(pores, np.float32(0.05), np.float32(rng.uniform(0.25, 0.5))).astype(np.float32)
    return Specimen(height, material, scale_nm, "rough")


def fibres(rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float) -> Specimen:
    """Overlapping fibres: curved cylinders (held out of training for the generalisation test)."""
    diameter_nm = hfw_nm * _log_uniform(rng, 1 / 60, 1 / 10)
    diameter_px = max(1.5, diameter_nm / pixel_nm)
    rows, cols = shape
    height = np.zeros(shape, np.float32)
    n_fibres = int(rng.integers(4, 16))
    for k in range(n_fibres):
        start = np.array([rng.uniform(0, cols), rng.uniform(0, rows)])
        heading = rng.uniform(0, 2 * math.pi)
        pts = [start]
        step = max(rows, cols) / 20
        for _ in range(40):
            heading += rng.normal(0, 0.15)
            pts.append(pts[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
        thickness = max(1, round(diameter_px * math.exp(0.2 * rng.standard_normal())))
        # draw in the fibre's bounding box (clipped to the frame), with a margin so the box edge never touches it
        xy = np.round(np.array(pts)).astype(np.int32)
        margin = thickness + 2
        c0, r0 = np.maximum(xy.min(axis=0) - margin, 0)
        c1, r1 = np.minimum(xy.max(axis=0) + margin + 1, (cols, rows))
        if c0 >= c1 or r0 >= r1:
            continue
        mask = np.zeros((r1 - r0, c1 - c0), np.uint8)
        cv2.polylines(mask, [xy - np.array([c0, r0], np.int32)], False, 1, thickness=thickness)
        radius = thickness / 2
        dist = np.minimum(cv2.distanceTransform(mask, cv2.DIST_L2, 3), np.float32(radius))  # depth into the fibre
        cyl = np.sqrt(np.maximum(radius**2 - (radius - dist) ** 2, 0.0)) + np.float32(k * 0.3 * radius)
        window = height[r0:r1, c0:c1]
        np.maximum(window, np.where(mask > 0, cyl, 0), out=window)
    material = np.where(height > 0, np.float32(0.45), np.float32(0.15)).astype(np.float32)
    return Specimen(height, material, diameter_px * pixel_nm, "fibres")


SPECIMENS: dict[str, Callable[[np.random.Generator, tuple[int, int], float, float], Specimen]] = {
    "tinball": tinball,
    "grid": grid,
    "particles": particles,
    "lines": lines,
    "rough": rough,
    "fibres": fibres,
}

#: The family kept out of training, for the generalisation test.
HELD_OUT_FAMILY = "fibres"
TRAINING_FAMILIES = tuple(f for f in SPECIMENS if f != HELD_OUT_FAMILY)


def make_specimen(
    family: str, rng: np.random.Generator, shape: tuple[int, int], pixel_nm: float, hfw_nm: float
) -> Specimen:
    """Generate a specimen of ``family`` and add faint multi-scale surface roughness to it."""
    if family not in SPECIMENS:
        raise KeyError(f"unknown specimen family '{family}'; choose from {list(SPECIMENS)}")
    spec = SPECIMENS[family](rng, shape, pixel_nm, hfw_nm)
    texture_px = max(2.0, 0.1 * spec.feature_nm / pixel_nm)
    spec.height_px += fractal_noise(rng, shape, texture_px, beta=1.0) * np.float32(0.15 * min(texture_px, 8.0))
    spec.material *= 1.0 + 0.08 * fractal_noise(rng, shape, texture_px * 4, beta=1.0)
    return spec
