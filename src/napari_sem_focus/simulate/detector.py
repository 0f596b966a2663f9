"""Secondary-electron signal, detector noise and scan artefacts.

1. SE yield from the surface (before the probe blur): ``Y = material * sec(theta)^0.8`` (yield grows with the
   local tilt theta; ``sec theta = sqrt(1 + |grad h|^2)``, capped at 6), plus the *edge effect* — extra SE
   escaping near steep edges, a halo ``edge_gain * blur(steep, edge_nm / p)`` of physical width ``edge_nm``
   (10-150 nm), so edges are wide in pixels at high magnification even in perfect focus — plus detector
   *shading* ``shade * (grad h . u) / sec theta`` from the Everhart-Thornley detector's side position ``u``.
   A BSE-like (compositional) frame scales the three topographic terms by ``topography`` = 0.5.
2. The probe blurs the yield map (:func:`~napari_sem_focus.simulate.optics.apply_probe`).
3. Shot noise: ``n_e`` electrons per pixel on average; counts ~ Poisson(n_e * Y / mean Y) (Gaussian
   approximation above 12 e/px), times an excess-noise factor (scintillator/PMT gain spread, 1-2.5).
4. Detector bandwidth smooths along the scan line (horizontal Gaussian, sigma 0-1 px); each line gets a gain
   error (sigma 0-4 %) and a horizontal jitter (sigma 0-0.7 px); slow drift shears the frame (0-2 px).
5. Brightness/contrast: ``out = brightness + contrast * (signal - 1)``, clipped to [0, 1] (so a high contrast
   saturates some pixels, as on a real SEM), quantised to 8 bits. Focus series set them once, as an operator's
   automatic contrast/brightness would at focus (:func:`auto_display`: ~0.2 % clipped at each end).
"""

from __future__ import annotations

import cv2
import numpy as np

from . import random_fields
from .optics import gauss_blur
from .specimens import Specimen


def se_yield(
    spec: Specimen,
    pixel_nm: float,
    edge_nm: float,
    edge_gain: float,
    shade: float,
    shade_angle: float,
    topography: float = 1.0,
) -> np.ndarray:
    """Secondary-electron yield map of a specimen (float32, mean ~ material).

    ``topography`` scales the tilt exponent, edge gain and shading (1: SE image; 0.5: BSE-like image, where
    material contrast dominates).
    """
    h = spec.height_px
    gx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    sec = cv2.magnitude(gx, gy)  # |grad h|; sec(theta) = sqrt(1 + |grad h|^2), capped at 6
    cv2.multiply(sec, sec, dst=sec)
    sec += np.float32(1.0)
    cv2.sqrt(sec, dst=sec)
    np.minimum(sec, np.float32(6.0), out=sec)
    y = cv2.pow(sec, 0.8 * topography)
    y *= spec.material
    edge_gain, shade = edge_gain * topography, shade * topography
    if edge_gain > 0:
        steep = (sec > 1.6).astype(np.float32)
        sigma = max(0.3, edge_nm / pixel_nm)
        halo = gauss_blur(steep, min(sigma, 0.2 * min(h.shape)))
        halo *= spec.material
        halo *= np.float32(edge_gain)
        y += halo
    if shade != 0:
        # detector shading: 1 + shade * clip((grad h . u) / sec, -1, 1)
        ux, uy = float(np.cos(shade_angle)), float(np.sin(shade_angle))
        tilt = cv2.addWeighted(gx, ux, gy, uy, 0.0)
        cv2.divide(tilt, sec, dst=tilt)
        np.clip(tilt, -1.0, 1.0, out=tilt)
        tilt *= np.float32(shade)
        tilt += np.float32(1.0)
        y *= tilt
    np.maximum(y, np.float32(0.005), out=y)
    return y


def shot_noise(
    rng: np.random.Generator, signal: np.ndarray, electrons_per_px: float, excess: float = 1.0
) -> np.ndarray:
    """Counts-like noisy signal normalised to mean ~1: Poisson(n_e * s / mean s) / n_e, noise std x sqrt(excess)."""
    mean = float(signal.mean()) or 1.0
    lam = signal * np.float32(electrons_per_px / mean)
    if electrons_per_px < 12:
        counts = random_fields.poisson(rng, lam)
        if excess > 1.0:
            counts -= lam
            counts *= np.float32(np.sqrt(excess))
            counts += lam
    else:
        counts = random_fields.standard_normal(rng, lam.shape)
        counts *= cv2.sqrt(lam * np.float32(excess))
        counts += lam
    counts *= np.float32(1.0 / electrons_per_px)
    return counts


def scan_artefacts(
    rng: np.random.Generator,
    signal: np.ndarray,
    bandwidth_px: float,
    line_gain: float,
    line_jitter_px: float,
    drift_px: float,
) -> np.ndarray:
    """Detector bandwidth (horizontal blur), per-line gain, per-line jitter and drift."""
    out = signal
    if bandwidth_px > 0.1:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=bandwidth_px, sigmaY=0.01)
    rows, cols = out.shape
    if line_gain > 0:
        out = out * (1.0 + np.float32(line_gain) * rng.standard_normal((rows, 1), dtype=np.float32))
    if line_jitter_px > 0 or drift_px > 0:
        shift = rng.normal(0, line_jitter_px, rows).astype(np.float32) if line_jitter_px > 0 else 0
        shift = shift + np.linspace(0, drift_px, rows, dtype=np.float32)
        map_x = np.arange(cols, dtype=np.float32)[None, :] + np.asarray(shift, np.float32).reshape(-1, 1)
        map_y = np.repeat(np.arange(rows, dtype=np.float32)[:, None], cols, axis=1)
        out = cv2.remap(out, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def display(signal: np.ndarray, brightness: float, contrast: float) -> tuple[np.ndarray, float]:
    """Brightness/contrast to [0, 1], 8-bit quantised; returns (image, fraction of clipped pixels)."""
    out = np.float32(brightness) + np.float32(contrast) * (signal - np.float32(1.0))
    clipped = float(np.count_nonzero((out <= 0.0) | (out >= 1.0))) / out.size
    out = np.clip(out, 0.0, 1.0)
    return np.round(out * 255.0).astype(np.uint8), clipped


def auto_display(signal: np.ndarray, clip_fraction: float = 0.002, mean_grey: float = 0.45) -> tuple[float, float]:
    """(brightness, contrast) of an SEM's automatic contrast/brightness (ABC): the mean signal shows as
    ``mean_grey`` and the contrast is the largest that keeps the ``clip_fraction`` and ``1 - clip_fraction``
    quantiles inside grey 0.02-0.98, so that at most about ``clip_fraction`` of the pixels clip at each end — as
    on real instruments (the 13 real frames of ../shared/data clip <= 1.5 %)."""
    lo, hi = (float(v) for v in np.quantile(signal, [clip_fraction, 1.0 - clip_fraction]))
    mean = float(signal.mean())
    contrast = min((0.98 - mean_grey) / max(hi - mean, 1e-6), (mean_grey - 0.02) / max(mean - lo, 1e-6))
    return mean_grey - contrast * (mean - 1.0), contrast


def blank_frame(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """The paper's 0-score frames: 'noise', 'white', 'black' or 'flat' (near-constant grey), uint8.

    'noise' is what an SEM shows with nothing to image (beam blanked, or a featureless field): shot noise of
    0.3-300 electrons/px or, in 30 % of frames, Gaussian amplifier noise (relative std 0.02-0.5), with the
    detector's horizontal bandwidth blur and scan-line gain, at a random brightness and a display contrast of
    0.05-1 (so from faint grain to a clipped salt-and-pepper frame).
    """
    if kind == "noise":
        if rng.random() < 0.7:
            electrons = float(np.exp(rng.uniform(np.log(0.3), np.log(300))))
            sig = shot_noise(rng, np.ones(shape, np.float32), electrons, excess=rng.uniform(1, 2))
        else:
            sigma = float(np.exp(rng.uniform(np.log(0.02), np.log(0.5))))
            sig = 1.0 + np.float32(sigma) * random_fields.standard_normal(rng, shape)
        sig = scan_artefacts(rng, sig, rng.uniform(0, 1.5), rng.uniform(0, 0.05), 0.0, 0.0)
        img, _ = display(sig, rng.uniform(0.15, 0.8), float(np.exp(rng.uniform(np.log(0.05), np.log(1.0)))))
        return img
    level = {"white": rng.uniform(0.93, 1.0), "black": rng.uniform(0.0, 0.06), "flat": rng.uniform(0.1, 0.9)}[kind]
    noise = rng.normal(0, rng.uniform(0.0, 0.03), shape).astype(np.float32)
    return np.round(np.clip(level + noise, 0, 1) * 255).astype(np.uint8)


BLANK_KINDS = ("noise", "white", "black", "flat")
