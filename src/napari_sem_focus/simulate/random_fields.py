"""Fast random numbers for whole frames, reproducible from a NumPy generator.

A 1024x768 frame needs ~0.8 million random draws per noise field. NumPy's Gaussian sampler takes ~7 ms for
that and its Poisson sampler with per-pixel means ~40 ms, most of the simulator's 50 ms budget, so:

- :func:`standard_normal` draws with OpenCV's ``randn`` (~1.6 ms) from a seed taken from the NumPy generator.
  OpenCV's generator is per thread, so the result depends only on that seed, not on other threads.
- :func:`poisson` looks counts up in a precomputed inverse-CDF table indexed by ``sqrt(lambda)`` (1,024 bins up
  to lambda = 100: lambda is rounded to within 1 % for lambda >= 1) and a uniform draw (4,096 quantiles): ~5 ms,
  distributed as Poisson up to the 1/4096 tails. Means above the table's range use NumPy's exact sampler.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

POISSON_MAX_MEAN = 100.0
_SQRT_BINS = 1024
_U_BINS = 4096


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 field of independent N(0, 1) draws, determined by the next draw of ``rng``."""
    out = np.empty(shape, np.float32)
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    cv2.randn(out, 0.0, 1.0)
    return out


@functools.lru_cache(maxsize=1)
def _poisson_table() -> np.ndarray:
    """``table[i, j]``: the (j + 0.5) / U_BINS quantile of Poisson(lambda_i), lambda_i = (i * step)^2 (uint8)."""
    step = math.sqrt(POISSON_MAX_MEAN) / (_SQRT_BINS - 1)
    lams = (np.arange(_SQRT_BINS) * step) ** 2
    k_max = int(POISSON_MAX_MEAN + 12 * math.sqrt(POISSON_MAX_MEAN)) + 10  # far beyond the 1/4096 tail
    k = np.arange(k_max)
    # log pmf by the recurrence log p(k) = k log(lam) - lam - log(k!), cumulated to the CDF
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, k_max)))])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = k[None, :] * np.log(lams)[:, None] - lams[:, None] - log_fact[None, :]
    log_pmf[0] = np.where(k == 0, 0.0, -np.inf)  # lambda = 0: always 0 counts
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    quantiles = (np.arange(_U_BINS) + 0.5) / _U_BINS
    table = np.empty((_SQRT_BINS, _U_BINS), np.uint8)
    for i, row in enumerate(cdf):
        table[i] = np.minimum(np.searchsorted(row, quantiles), 255)
    return table


def poisson(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Poisson counts (float32) with per-pixel means ``lam`` (>= 0), by table lookup (module docstring)."""
    lam = np.asarray(lam, np.float32)
    table = _poisson_table()
    scale = np.float32((_SQRT_BINS - 1) / math.sqrt(POISSON_MAX_MEAN))
    row = np.sqrt(np.maximum(lam, 0.0)) * scale
    np.rint(row, out=row)
    np.minimum(row, np.float32(_SQRT_BINS - 1), out=row)
    u = rng.random(lam.shape, dtype=np.float32)
    u *= np.float32(_U_BINS)
    index = row.astype(np.int32)
    index *= _U_BINS
    index += np.minimum(u.astype(np.int32), _U_BINS - 1)
    counts = table.ravel().take(index).astype(np.float32)
    high = lam > POISSON_MAX_MEAN
    if high.any():
        counts[high] = rng.poisson(lam[high]).astype(np.float32)
    return counts
