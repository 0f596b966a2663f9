"""One simulated SEM frame from a full set of acquisition parameters, and how those parameters are drawn.

:func:`sample_params` draws the parameters of one training frame: a balanced mix of the paper's five
magnifications (500, 1k, 2k, 5k, 10k; 70 %) and log-uniform magnifications from 200x to 100,000x (30 %), a
target score uniform in [0, 10] (plus extra in-focus frames) turned into a defocus through the score function,
FEG or tungsten sources, astigmatism in a quarter of the frames, BSE-like inverted material contrast in 30 %
(dark objects on a bright substrate), and doses from frame-averaged (10^4 e/px) down to very noisy fast scans
(1.5 e/px). 6 % are the paper's 0-score blank frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..io.metadata import PAPER_MAGNIFICATIONS
from . import detector, labels, optics
from .specimens import TRAINING_FAMILIES, Specimen, make_specimen

#: High magnifications for the evaluation split 'highmag' (inside the training range, beyond the paper's).
HIGH_MAGNIFICATIONS = (20000.0, 50000.0, 100000.0)

#: Fraction of training frames with inverted material contrast (dark objects on a bright substrate). Real frames
#: in ../shared/data have a median grey-value skewness of -0.29; bright-object-only simulation gave +0.66.
INVERTED_FRACTION = 0.3
#: Topographic contrast left in an inverted (BSE-like) frame, relative to an SE frame.
BSE_TOPOGRAPHY = 0.5


@dataclass(frozen=True)
class FrameParams:
    """Everything that defines one simulated frame. Lengths in nm unless the name says otherwise.

    Attributes:
        family: specimen family (see :mod:`.specimens`).
        magnification: magnification (127 mm reference over a 1024-px frame).
        defocus_um: focus error (µm); the working distance is the in-focus WD plus this.
        d0_nm: in-focus probe diameter (FWHM, nm): 1.5-5 nm field emission, 5-25 nm tungsten/low kV.
        alpha_mrad: beam convergence semi-angle (mrad).
        astig_um: astigmatic focal-line separation (µm), 0 for a round probe.
        astig_angle_deg: orientation of the astigmatism.
        electrons_per_px: mean detected electrons per pixel (dose x SE yield); inf = noise-free.
        excess_noise: detector excess-noise factor (variance multiplier).
        bandwidth_px, line_gain, line_jitter_px, drift_px: scan artefacts (see :mod:`.detector`).
        edge_nm, edge_gain, shade, shade_angle: SE contrast (see :mod:`.detector`).
        tail_fraction: fraction of the probe current in a 3x wider tail.
        brightness, contrast: display settings.
        inverted: compositional, BSE-like contrast: the material contrast inverted (``min + max - material``,
            dark objects on a bright substrate, as low-Z particles on a metal) and the topographic contrast
            (tilt, edge effect, shading) scaled by ``BSE_TOPOGRAPHY``.
        blank: None, or one of ``detector.BLANK_KINDS`` for a 0-score frame.
        seed: seed of the specimen; noise uses ``seed + noise_seed``.
        noise_seed: offset for the noise draw (series frames share the specimen, not the noise).
    """

    family: str = "tinball"
    magnification: float = 5000.0
    defocus_um: float = 0.0
    d0_nm: float = 3.0
    alpha_mrad: float = 6.0
    astig_um: float = 0.0
    astig_angle_deg: float = 0.0
    electrons_per_px: float = 200.0
    excess_noise: float = 1.5
    bandwidth_px: float = 0.5
    line_gain: float = 0.01
    line_jitter_px: float = 0.1
    drift_px: float = 0.0
    edge_nm: float = 40.0
    edge_gain: float = 0.8
    shade: float = 0.2
    shade_angle: float = 0.5
    tail_fraction: float = 0.1
    brightness: float = 0.45
    contrast: float = 0.35
    inverted: bool = False
    blank: str | None = None
    seed: int = 0
    noise_seed: int = 0

    @property
    def pixel_nm(self) -> float:
        """Pixel size (nm) at this magnification."""
        return optics.pixel_size_nm(self.magnification)

    def probe_diameters_nm(self) -> tuple[float, float]:
        """Probe FWHM (nm) along the two astigmatic axes (equal without astigmatism)."""
        a = self.astig_um / 2
        return (
            optics.probe_diameter_nm(self.defocus_um + a, self.d0_nm, self.alpha_mrad),
            optics.probe_diameter_nm(self.defocus_um - a, self.d0_nm, self.alpha_mrad),
        )

    def effective_diameter_nm(self) -> float:
        """RMS of the two axis diameters: the blur the score function sees."""
        du, dv = self.probe_diameters_nm()
        return math.sqrt((du * du + dv * dv) / 2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SimulatedFrame:
    """A simulated frame (uint8) with its score and the facts behind it."""

    image: np.ndarray
    score: float
    params: FrameParams
    feature_nm: float
    saturated_fraction: float

    @property
    def score_int(self) -> int:
        return round(self.score)

    def facts(self, working_distance_mm: float | None = None) -> dict[str, Any]:
        """Per-frame facts stored in TIFF descriptions and label CSVs."""
        p = self.params
        facts: dict[str, Any] = {
            "magnification": p.magnification,
            "pixel_size_nm": p.pixel_nm,
            "defocus_um": p.defocus_um,
            "score": round(self.score, 4),
            "score_int": self.score_int,
            "family": p.family if p.blank is None else f"blank:{p.blank}",
            "feature_nm": round(self.feature_nm, 3),
            "electrons_per_px": p.electrons_per_px,
            "astig_um": p.astig_um,
            "inverted": int(p.inverted),
        }
        if working_distance_mm is not None:
            facts["working_distance_mm"] = working_distance_mm
        return facts


def render(spec: Specimen, params: FrameParams, rng: np.random.Generator) -> SimulatedFrame:
    """Image a specimen with the probe, detector and scan of ``params``; score it."""
    signal, contrast_c = detector_signal(spec, params, rng)
    image, saturated = detector.display(signal, params.brightness, params.contrast)
    score = labels.focus_score(
        params.effective_diameter_nm(),
        params.d0_nm,
        params.pixel_nm,
        spec.feature_nm,
        params.electrons_per_px,
        contrast_c,
        saturated,
    )
    return SimulatedFrame(image, score, params, spec.feature_nm, saturated)


def clean_yield(spec: Specimen, params: FrameParams) -> np.ndarray:
    """The noise-free, unblurred signal of a specimen under ``params`` (SE yield; BSE-like when inverted)."""
    topography = 1.0
    if params.inverted:
        lo, hi = float(spec.material.min()), float(spec.material.max())
        spec = replace(spec, material=np.float32(lo + hi) - spec.material)
        topography = BSE_TOPOGRAPHY
    return detector.se_yield(
        spec, params.pixel_nm, params.edge_nm, params.edge_gain, params.shade, params.shade_angle, topography
    )


def detector_signal(spec: Specimen, params: FrameParams, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The detector signal (mean ~1, before brightness/contrast) of a specimen imaged with ``params``, and the
    specimen's relative SE contrast (std/mean of the noise-free yield)."""
    pixel = params.pixel_nm
    clean = clean_yield(spec, params)
    contrast_c = float(clean.std() / max(clean.mean(), 1e-6))
    du, dv = params.probe_diameters_nm()
    blurred = optics.apply_probe(clean, du / pixel, dv / pixel, params.astig_angle_deg, params.tail_fraction)
    if math.isinf(params.electrons_per_px):
        signal = blurred / np.float32(max(float(blurred.mean()), 1e-6))
    else:
        signal = detector.shot_noise(rng, blurred, params.electrons_per_px, params.excess_noise)
    signal = detector.scan_artefacts(
        rng, signal, params.bandwidth_px, params.line_gain, params.line_jitter_px, params.drift_px
    )
    return signal, contrast_c


def simulate_frame(
    params: FrameParams, shape: tuple[int, int] = (768, 1024), specimen: Specimen | None = None
) -> SimulatedFrame:
    """Simulate one frame of ``shape`` (rows, cols); deterministic for ``params.seed``/``noise_seed``."""
    rng = np.random.default_rng([params.seed, params.noise_seed])
    if params.blank is not None:
        return SimulatedFrame(detector.blank_frame(rng, shape, params.blank), 0.0, params, 0.0, 0.0)
    if specimen is None:
        pixel = params.pixel_nm
        hfw_nm = pixel * optics.REFERENCE_FRAME_WIDTH_PX
        specimen = make_specimen(params.family, np.random.default_rng(params.seed), shape, pixel, hfw_nm)
    return render(specimen, params, rng)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_params(
    seed: int,
    families: tuple[str, ...] = TRAINING_FAMILIES,
    magnifications: tuple[float, ...] | None = None,
    blank_fraction: float = 0.06,
) -> FrameParams:
    """Draw the parameters of one training/evaluation frame (see module docstring); deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 7919])
    if rng.random() < blank_fraction:
        return FrameParams(blank=str(rng.choice(detector.BLANK_KINDS)), seed=seed)
    family = str(rng.choice(families))
    if magnifications is not None:
        mag = float(rng.choice(magnifications))
    elif rng.random() < 0.7:
        mag = float(rng.choice(PAPER_MAGNIFICATIONS)) * math.exp(rng.normal(0, 0.05))
    else:
        mag = _log_uniform(rng, 200, 100_000)
    feg = rng.random() < 0.5
    d0 = _log_uniform(rng, 1.5, 5.0) if feg else _log_uniform(rng, 5.0, 25.0)
    alpha = _log_uniform(rng, 2.0, 15.0)
    dose = 1e4 if rng.random() < 0.12 else _log_uniform(rng, 1.5, 3000.0)
    params = FrameParams(
        family=family,
        magnification=mag,
        d0_nm=d0,
        alpha_mrad=alpha,
        electrons_per_px=dose,
        excess_noise=rng.uniform(1.0, 2.5),
        bandwidth_px=rng.uniform(0.0, 1.0),
        line_gain=rng.uniform(0.0, 0.04) if rng.random() < 0.6 else 0.0,
        line_jitter_px=rng.uniform(0.0, 0.7) if rng.random() < 0.4 else 0.0,
        drift_px=rng.uniform(0.0, 2.0) if rng.random() < 0.3 else 0.0,
        edge_nm=_log_uniform(rng, 10, 150),
        edge_gain=rng.uniform(0.2, 1.5),
        shade=rng.uniform(0.0, 0.5),
        shade_angle=rng.uniform(0, 2 * math.pi),
        tail_fraction=rng.uniform(0.0, 0.25),
        brightness=rng.uniform(0.25, 0.65),
        contrast=_log_uniform(rng, 0.12, 0.7),
        astig_angle_deg=rng.uniform(0, 180),
        seed=seed,
    )
    # target a uniform score: invert the blur score with the specimen's expected feature size
    pixel = params.pixel_nm
    spec_rng = np.random.default_rng(seed)
    feature = make_specimen(family, spec_rng, (16, 16), pixel, pixel * optics.REFERENCE_FRAME_WIDTH_PX).feature_nm
    target = 10.0 if rng.random() < 0.12 else rng.uniform(0.02, 10.0)
    diameter = labels.diameter_for_blur_score(target, d0, pixel, feature)
    defocus = optics.defocus_for_diameter_um(diameter, d0, alpha) * (1 if rng.random() < 0.5 else -1)
    if rng.random() < 0.25:
        astig = rng.uniform(0.2, 1.5) * max(abs(defocus), optics.defocus_for_diameter_um(4 * pixel, d0, alpha))
        params = replace(params, astig_um=astig)
    # drawn last, so that adding it left every earlier parameter of a seed unchanged
    return replace(params, defocus_um=defocus, inverted=bool(rng.random() < INVERTED_FRACTION))
