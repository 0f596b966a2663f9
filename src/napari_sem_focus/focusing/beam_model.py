"""Where the beam is focused and stigmated, fitted to the blur differences of the frames a search has scanned.

The probe is a Gaussian ellipse (:mod:`napari_sem_focus.simulate.optics`): at a focus error ``dz`` (µm) with a
residual astigmatism ``r`` (the focal-line separation as a vector along (cos 2θ, sin 2θ), µm) its covariance is

    Σ = C + K [(dz² + |r|²/4) I + dz (r_c σ_z + r_s σ_x)]          (px²; σ_z, σ_x: the Pauli matrices)

with ``K = (2α)² / (8 ln 2 p²)`` (α the beam's convergence, p the pixel) and ``C`` the in-focus probe. The
stigmators act linearly on the astigmatism: ``r = G (s* - s)``, ``G`` a 2x2 map (µm per stigmator unit) and ``s*``
the setting that cancels it. :mod:`.blur_spectrum` measures ``Σ_i - Σ_j`` of each pair of frames (whatever the
specimen), and this module fits ``K``, the best working distance ``w*``, ``s*`` and ``G`` to them: a frame's
isotropic blur says how far it is from focus, its stretching along which axes and on which side. Frames along the
working distance alone give ``K``, ``w*`` and the astigmatism ``r`` at their stigmators; frames with the
stigmators moved (away from focus, where the stretching shows) give ``G``: a gain with a rotation (the stigmators'
axes turned against the astigmatism's) or with a reflection, fitted to every such probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .blur_spectrum import MIN_RADIUS, BlurDifference, blur_difference, noise_floor, usable_radius

#: A fit whose weighted residual is larger than this does not describe the frames: no fit.
MAX_RMS = 2.5
#: The error of a measured blur difference: this many px² plus a fraction of its size.
ERROR_PX2, ERROR_FRACTION = 2.0, 0.12


@dataclass(frozen=True)
class BeamFrame:
    """One scanned frame: working distance (µm, from any origin), stigmators (units) and power spectrum
    (:func:`.blur_spectrum.frame_spectrum`)."""

    wd_um: float
    stig: tuple[float, float]
    spectrum: np.ndarray


@dataclass(frozen=True)
class BeamFit:
    """The fitted beam: ``best_wd_um`` (same origin as the frames), ``best_stig`` (units) and ``stig_map`` (``G``,
    µm of astigmatism per stigmator unit; None when the frames did not move the stigmators), ``k_px2_per_um2``
    (``K``), the astigmatism left at the frames' first stigmators ``astig_um`` (µm vector), and ``rms`` (the
    weighted residual, about 1 for a good fit), from ``pairs`` blur differences; ``stig_map_kind``: the map's kind."""

    best_wd_um: float
    best_stig: tuple[float, float] | None
    stig_map: np.ndarray | None
    k_px2_per_um2: float
    astig_um: tuple[float, float]
    rms: float
    pairs: int
    stig_map_kind: str | None = None  # "rotation" or "reflection" (:data:`STIG_MAPS`) when there is a map


@dataclass(frozen=True)
class _Pair:
    i: int
    j: int
    diff: BlurDifference
    whiten: np.ndarray


def _pairs(frames: list[BeamFrame]) -> list[_Pair]:
    """The blur difference of every pair of frames that both stand above the noise."""
    noise = noise_floor([f.spectrum for f in frames])
    radius = [usable_radius(f.spectrum, noise) for f in frames]  # once a frame, not once a pair
    usable = [i for i in range(len(frames)) if radius[i] >= MIN_RADIUS]
    pairs = []
    for i, j in combinations(usable, 2):
        diff = blur_difference(frames[i].spectrum, frames[j].spectrum, noise, (radius[i], radius[j]))
        if diff is not None:
            pairs.append(_Pair(i, j, diff, _whitener(diff)))
    return pairs


def _blur(params: np.ndarray, wd_um: np.ndarray, stig: np.ndarray) -> np.ndarray:
    """The model's (isotropic, stretch c, stretch s) blur (px², less C) of frames at ``wd_um``, ``stig``; params:
    best WD (µm), best stigmators (2), ln K, G (4, row-major)."""
    k = np.exp(params[3])
    g = params[4:8].reshape(2, 2)
    dz = wd_um - params[0]
    r = (params[1:3] - stig) @ g.T
    iso = k * (dz**2 + np.sum(r**2, axis=1) / 4)
    return np.stack([iso, k * dz * r[:, 0], k * dz * r[:, 1]], axis=1)


#: (xx, yy, xy) -> (isotropic, stretch c, stretch s).
_TO_PARTS = np.array([[0.5, 0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.0, 1.0]])


def _whitener(diff: BlurDifference) -> np.ndarray:
    """The matrix that turns a pair's (isotropic, stretch) residual into units of its error: the fit's own
    uncertainty plus the model's (:data:`ERROR_PX2`, :data:`ERROR_FRACTION`), the latter larger when the
    frequencies used lie along few directions (a frame near a line focus: its blur along the other is a guess)."""
    measured = np.array([diff.isotropic, *diff.stretch])
    model_error = (ERROR_PX2 + ERROR_FRACTION * float(np.max(np.abs(measured)))) / max(1.0 - diff.one_sided, 0.05)
    covariance = model_error**2 * np.eye(3)
    if diff.covariance is not None:
        covariance = covariance + _TO_PARTS @ diff.covariance @ _TO_PARTS.T
    return np.linalg.inv(np.linalg.cholesky(covariance))


def _residuals(params: np.ndarray, frames_wd: np.ndarray, frames_stig: np.ndarray, pairs: list[_Pair]) -> np.ndarray:
    blur = _blur(params, frames_wd, frames_stig)
    out = []
    for p in pairs:
        measured = np.array([p.diff.isotropic, *p.diff.stretch])
        out.append(p.whiten @ (blur[p.i] - blur[p.j] - measured))
    return np.concatenate(out)


def _first_guess(wd: np.ndarray, stig: np.ndarray, pairs: list[_Pair]) -> tuple[float, float, np.ndarray] | None:
    """K, w* and the astigmatism r0 at the first frame's stigmators (µm) by linear least squares on the pairs of
    frames at those stigmators (isotropic: ``K (w_i² - w_j²) - 2 K w* (w_i - w_j)``; stretch: ``K r0 (w_i -
    w_j)``); None without three working distances there."""
    base = _at_first_stig(stig)
    same = [p for p in pairs if base[p.i] and base[p.j]]
    if len({round(float(wd[i]), 9) for p in same for i in (p.i, p.j)}) < 3:
        return None
    rows = [[wd[p.i] ** 2 - wd[p.j] ** 2, -2 * (wd[p.i] - wd[p.j])] for p in same]
    (k, k_w), *_ = np.linalg.lstsq(np.array(rows), np.array([p.diff.isotropic for p in same]), rcond=None)
    if not k > 0:
        return None
    span = np.array([wd[p.i] - wd[p.j] for p in same])
    stretch = np.array([p.diff.stretch for p in same])
    return float(k), float(k_w / k), (span @ stretch) / (span @ span) / k


def _at_first_stig(stig: np.ndarray) -> np.ndarray:
    return np.all(np.abs(stig - stig[0]) < 1e-12, axis=1)


#: A reflection is taken for the stigmators' map only when its fit's residual is below this fraction of a rotation's.
REFLECTION_BETTER = 0.8
#: The maps from stigmators to astigmatism the fit tries: a gain and a rotation, or a gain and a reflection (the
#: stigmators' x and y act on axes 45° apart, i.e. 90° apart in the astigmatism's (cos 2θ, sin 2θ) plane).
STIG_MAPS = ("rotation", "reflection")


def _map(a: float, b: float, kind: str) -> np.ndarray:
    return np.array([[a, -b], [b, a]]) if kind == "rotation" else np.array([[a, b], [b, -a]])


def _map_times(m: np.ndarray, kind: str) -> np.ndarray:
    """The 2x2 matrix ``A`` with ``A @ (a, b) == _map(a, b, kind) @ m``: a map's action on ``m``, linear in its
    gain-and-angle pair (a, b)."""
    return np.array([[m[0], -m[1]], [m[1], m[0]]]) if kind == "rotation" else np.array([[m[0], m[1]], [-m[1], m[0]]])


def _first_stig_map(
    wd: np.ndarray, stig: np.ndarray, pairs: list[_Pair], k: float, w_best: float, r0: np.ndarray, kind: str
) -> np.ndarray | None:
    """G (of ``kind``) from the frames with the stigmators moved, each against a frame at the first stigmators:
    its stretch gives the astigmatism there, ``r = r0 - G Δs``; least squares over them."""
    base = _at_first_stig(stig)
    rows, rhs = [], []
    for p in pairs:
        for probe, ref in ((p.i, p.j), (p.j, p.i)):
            dz = wd[probe] - w_best
            if base[probe] or not base[ref] or abs(dz) < 1e-9:
                continue
            sign = 1.0 if probe == p.i else -1.0
            stretch = sign * np.array(p.diff.stretch) + k * (wd[ref] - w_best) * r0
            change = r0 - stretch / (k * dz)  # = G (stigmators moved)
            rows += _map_times(stig[probe] - stig[0], kind).tolist()
            rhs += [change[0], change[1]]
    if not rows:
        return None
    (a, b), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return _map(a, b, kind) if np.hypot(a, b) > 0 else None


def fit_beam(frames: list[BeamFrame]) -> BeamFit | None:
    """Fit the beam model (module docstring) to the frames' blur differences; None when the frames cannot say
    (fewer than three working distances with measurable frames at the first frame's stigmators, or no fit within
    :data:`MAX_RMS`). With the
    stigmators moved, G is a gain with a rotation, or with a reflection when that fits clearly better."""
    if len(frames) < 3:
        return None
    pairs = _pairs(frames)
    wd = np.array([f.wd_um for f in frames], np.float64)
    stig = np.array([f.stig for f in frames], np.float64)
    guess = _first_guess(wd, stig, pairs)
    if guess is None:
        return None
    k, w_best, r0 = guess
    moved = not np.all(_at_first_stig(stig)[sorted({i for p in pairs for i in (p.i, p.j)})])
    fits = []
    for kind in STIG_MAPS if moved else ("none",):
        g = _first_stig_map(wd, stig, pairs, k, w_best, r0, kind) if moved else None
        if moved and (g is None or abs(np.linalg.det(g)) < 1e-12):
            continue
        fits.append(_refine(wd, stig, pairs, k, w_best, r0, g, kind))
    if not fits:
        fits.append(_refine(wd, stig, pairs, k, w_best, r0, None, "none"))
    fit = fits[0]  # a rotation unless a reflection fits clearly better (few probes can hardly tell them apart)
    if len(fits) > 1 and fits[1].rms < REFLECTION_BETTER * fit.rms:
        fit = fits[1]
    return fit if fit.rms <= MAX_RMS else None


def _refine(
    wd: np.ndarray,
    stig: np.ndarray,
    pairs: list[_Pair],
    k: float,
    w_best: float,
    r0: np.ndarray,
    g: np.ndarray | None,
    kind: str,
) -> BeamFit:
    """Least squares (robust to a few bad pairs) from the first guess: w*, ln K, and r0 (no map) or s* and G's
    gain and angle. Without a map G stays the identity, so that s* - s0 stands for r0 (µm)."""
    from scipy.optimize import least_squares

    g0 = np.eye(2) if g is None else g
    s_best = stig[0] + np.linalg.solve(g0, r0)
    x0 = np.array([w_best, *s_best, np.log(k), *((g0[0, 0], g0[1, 0]) if g is not None else ())])

    def params(x: np.ndarray) -> np.ndarray:
        m = _map(x[4], x[5], kind) if g is not None else np.eye(2)
        return np.concatenate([x[:4], m.ravel()])

    span = max(float(np.ptp(wd)), 1e-6)
    low = np.array([wd.min() - span, -np.inf, -np.inf, np.log(k) - 4, *((-np.inf,) * (len(x0) - 4))])
    high = np.array([wd.max() + span, np.inf, np.inf, np.log(k) + 4, *((np.inf,) * (len(x0) - 4))])
    x0 = np.clip(x0, low + 1e-9 * span, high - 1e-9 * span)
    solution = least_squares(lambda x: _residuals(params(x), wd, stig, pairs), x0, bounds=(low, high), loss="soft_l1")
    p = params(solution.x)
    g_fit = p[4:8].reshape(2, 2)
    r_first = (p[1:3] - stig[0]) @ g_fit.T
    rms = float(np.sqrt(np.mean(solution.fun**2)))
    best = (float(p[1]), float(p[2])) if g is not None else None
    return BeamFit(
        float(p[0]),
        best,
        g_fit if g is not None else None,
        float(np.exp(p[3])),
        (float(r_first[0]), float(r_first[1])),
        rms,
        len(pairs),
        kind if g is not None else None,
    )


def stigmators_from_astigmatism(
    stigs: list[np.ndarray], astigs: list[np.ndarray], kind: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The stigmators that cancel the astigmatism, and the map ``G``, from the astigmatism measured at several
    stigmator settings (µm vectors, e.g. from focus pairs): ``r_i = c - G s_i`` is linear in ``c = G s*`` and
    ``G``'s gain-and-angle pair (``kind``: "rotation" or "reflection", :data:`STIG_MAPS`), solved by least squares;
    None with fewer than two settings or when they cannot say (the same setting twice)."""
    if len(stigs) < 2:
        return None
    rows, rhs = [], []
    for s, r in zip(stigs, astigs, strict=True):  # (c0, c1, a, b): r = c - G s
        rows += np.hstack([np.eye(2), -_map_times(s, kind)]).tolist()
        rhs += [r[0], r[1]]
    design = np.array(rows)
    if np.linalg.matrix_rank(design) < 4:
        return None
    (c0, c1, a, b), *_ = np.linalg.lstsq(design, np.array(rhs), rcond=None)
    g = _map(a, b, kind)
    if abs(np.linalg.det(g)) < 1e-12:
        return None
    return np.linalg.solve(g, np.array([c0, c1])), g
