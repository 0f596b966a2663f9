"""How much more one frame is blurred than another, read from their power spectra (px², whatever the specimen).

Two scans of the same field differ only by the probe and the shot noise, so the ratio of their power spectra is the
ratio of the probe's transfer functions: the specimen cancels. For a Gaussian probe with covariance ``Σ`` (px²),
``|OTF(k)|² = exp(-4π² kᵀ Σ k)`` (``k`` in cycles per pixel), so ``ln(P_a / P_b)`` is a quadratic form in ``k``
whose coefficients are ``Σ_a - Σ_b``: three numbers (xx, yy, xy), fitted by weighted least squares over the
frequencies where both frames stand clearly above the shot noise. An astigmatic probe is an ellipse: the xx - yy and
xy parts say along which axes it is stretched. The same principle underlies MAPFoSt (Binding, Mikula, Denk 2013);
here it only measures blur differences, and the microscope's model is fitted elsewhere
(:mod:`napari_sem_focus.focusing.beam_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Frames are measured on their central square of this many pixels (after binning a large frame).
SPECTRUM_PX = 512
#: Smaller frames have too few frequencies to measure.
MIN_FRAME_PX = 64
#: A Gaussian of this width (px) is subtracted from each frame first: the specimen's slow shading would otherwise
#: leak through the window into every frequency (the same filter on every frame: it cancels in the ratio).
HIGH_PASS_PX = 40.0
#: Frequencies used: where the radial median of both frames' signal is at least this many times the noise.
MIN_SNR = 3.0
#: Frequencies below this many bins are left out (the window's own spread there).
INNER_BINS = 5.0
#: A frame whose spectrum stands above the noise only inside this radius (cycles/px) is too blurred to measure.
MIN_RADIUS = 0.02
#: Each power spectrum is averaged over this many bins square before the ratio is taken.
SMOOTH_BINS = 5
#: Fewer usable frequencies than this: no measurement.
MIN_BINS = 30


@dataclass(frozen=True)
class BlurDifference:
    """``Σ_a - Σ_b`` of two frames' probes (px², in the frame's pixels after :func:`frame_spectrum`'s binning):
    ``xx``, ``yy``, ``xy``; ``bins``: how many frequencies the fit used; ``covariance``: the fit's uncertainty
    (a frame sharp along one direction only says little about the other)."""

    xx: float
    yy: float
    xy: float
    bins: int
    covariance: np.ndarray | None = None  # of (xx, yy, xy), px⁴: large along what the frequencies used cannot say
    one_sided: float = 0.0  # 0: the frequencies used lie in every direction; 1: along one line only (a line focus)

    @property
    def isotropic(self) -> float:
        """The mean of the two axes' variance difference (px²)."""
        return (self.xx + self.yy) / 2

    @property
    def isotropic_error(self) -> float:
        """The standard error of :attr:`isotropic` (px²; 0 without a covariance)."""
        if self.covariance is None:
            return 0.0
        half = np.array([0.5, 0.5, 0.0])
        return float(np.sqrt(max(half @ self.covariance @ half, 0.0)))

    @property
    def stretch(self) -> tuple[float, float]:
        """The difference in stretching along the (cos 2θ, sin 2θ) axes: ((xx - yy) / 2, xy) (px²)."""
        return ((self.xx - self.yy) / 2, self.xy)


@lru_cache(maxsize=4)
def _window(size: int) -> np.ndarray:
    from scipy.signal.windows import blackmanharris

    w = blackmanharris(size)
    return np.outer(w, w)


@lru_cache(maxsize=4)
def _frequencies(size: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.fft.fftshift(np.fft.fftfreq(size))
    return np.broadcast_to(k[None, :], (size, size)), np.broadcast_to(k[:, None], (size, size))


def frame_spectrum(image: np.ndarray) -> np.ndarray:
    """The power spectrum (centred, ``SPECTRUM_PX`` square) of a frame's central square: a frame larger than twice
    that is first binned by an integer factor (the same factor for frames of the same shape, so their spectra
    compare); a smaller frame is measured on its central square as large as it allows (rounded down to even)."""
    import cv2

    frame = np.asarray(image, np.float32)
    if frame.ndim != 2 or min(frame.shape) < MIN_FRAME_PX:
        raise ValueError(f"a frame's spectrum needs a 2-D image of at least {MIN_FRAME_PX} px a side")
    factor = max(1, min(frame.shape) // (2 * SPECTRUM_PX))
    if factor > 1:
        rows, cols = (frame.shape[0] // factor) * factor, (frame.shape[1] // factor) * factor
        frame = frame[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))
    size = min(SPECTRUM_PX, min(frame.shape)) // 2 * 2
    top, left = (frame.shape[0] - size) // 2, (frame.shape[1] - size) // 2
    square = np.ascontiguousarray(frame[top : top + size, left : left + size])
    square = square - cv2.GaussianBlur(square, (0, 0), HIGH_PASS_PX)
    spectrum = np.fft.fft2(square.astype(np.float64) * _window(size))
    return np.fft.fftshift(spectrum.real**2 + spectrum.imag**2)


def noise_floor(spectra: list[np.ndarray]) -> np.ndarray:
    """The shot noise's power at each frequency, from the frames' high vertical frequencies (|ky| > 0.3 cycles/px,
    where a blurred frame holds noise only), per horizontal frequency (the detector's bandwidth filters along the
    scan line); the median over frames and rows."""
    stack = np.median(np.stack(spectra), axis=0) if len(spectra) > 1 else spectra[0]
    size = stack.shape[0]
    _, ky = _frequencies(size)
    column = np.median(stack[np.abs(ky[:, 0]) > 0.3], axis=0)
    return np.broadcast_to(np.maximum(column, 1e-12)[None, :], stack.shape)


def blur_difference(
    a: np.ndarray, b: np.ndarray, noise: np.ndarray, radii: tuple[float, float] | None = None
) -> BlurDifference | None:
    """``Σ_a - Σ_b`` from two spectra (:func:`frame_spectrum`) of the same field and their :func:`noise_floor`;
    None where too few frequencies stand above the noise in both (one of them too blurred or too noisy).
    ``radii``: the two spectra's :func:`usable_radius` when the caller has them (a fit over many pairs)."""
    import cv2

    size = a.shape[0]
    kx, ky = _frequencies(size)
    # spectra averaged over neighbouring frequencies: the specimen's power is the same in both, so the ratio holds,
    # and the choice of frequencies above the noise is no longer biased by each bin's own noise
    signal_a = cv2.blur(np.ascontiguousarray(a - noise), (SMOOTH_BINS, SMOOTH_BINS))
    signal_b = cv2.blur(np.ascontiguousarray(b - noise), (SMOOTH_BINS, SMOOTH_BINS))
    k_max = min(radii if radii is not None else (usable_radius(a, noise), usable_radius(b, noise)))
    if k_max < MIN_RADIUS:
        return None
    use = (_radius(size) > INNER_BINS / size) & (_radius(size) < k_max) & (ky > 0) & (np.abs(kx) > 1.5 / size)
    use &= (signal_a > MIN_SNR * noise) & (signal_b > MIN_SNR * noise)
    bins = int(use.sum())
    if bins < MIN_BINS:
        return None
    log_ratio = np.log(signal_a[use]) - np.log(signal_b[use])
    weight = np.sqrt(1.0 / (noise[use] / signal_a[use] + noise[use] / signal_b[use] + 0.1))
    fx, fy = kx[use], ky[use]
    four_pi2 = 4.0 * np.pi**2
    design = np.stack([np.ones(bins), -four_pi2 * fx**2, -four_pi2 * fy**2, -2 * four_pi2 * fx * fy], axis=1)
    weighted = design * weight[:, None]
    coef, *_ = np.linalg.lstsq(weighted, log_ratio * weight, rcond=None)
    misfit = float(np.sum((weighted @ coef - log_ratio * weight) ** 2)) / max(bins - 4, 1)
    # neighbouring bins are not independent (the window, the averaging): count SMOOTH_BINS² of them as one
    covariance = misfit * SMOOTH_BINS**2 * np.linalg.pinv(weighted.T @ weighted)[1:, 1:]
    one_sided = float(np.abs(np.mean(np.exp(2j * np.arctan2(fy, fx)))))
    return BlurDifference(float(coef[1]), float(coef[2]), float(coef[3]), bins, covariance, one_sided)


#: Width (cycles/px) of the rings over which :func:`usable_radius` takes the median signal-to-noise.
RING = 0.005


@lru_cache(maxsize=4)
def _radius(size: int) -> np.ndarray:
    kx, ky = _frequencies(size)
    return np.hypot(kx, ky)


@lru_cache(maxsize=4)
def _rings(size: int) -> list[np.ndarray]:
    """The flat indices of each ring from :data:`INNER_BINS` bins outwards (width :data:`RING` cycles/px)."""
    k = _radius(size).ravel()
    return [np.flatnonzero((k >= r) & (k < r + RING)) for r in np.arange(INNER_BINS / size, 0.5, RING)]


def usable_radius(spectrum: np.ndarray, noise: np.ndarray) -> float:
    """The radius (cycles/px) out to which every ring's median signal stays at least :data:`MIN_SNR` times the
    noise (beyond it, detector noise that the floor does not model would bias the fit)."""
    snr = ((spectrum - noise) / noise).ravel()
    radius = 0.0
    for i, ring in enumerate(_rings(spectrum.shape[0])):
        if np.median(snr[ring]) < MIN_SNR:
            break
        radius = INNER_BINS / spectrum.shape[0] + (i + 1) * RING
    return radius
