"""Realism check: simulated vs real SEM frames, by four image statistics.

1. slope of the radially averaged power spectrum (log-log fit over 0.02-0.25 cycles/px): how fast detail fades
   with spatial frequency;
2. noise level: Immerkaer's fast noise estimate (sigma of the pixel noise, image scaled to [0, 1]) and the
   signal-to-noise ratio std(image)/sigma;
3. histogram shape: skewness and excess kurtosis of the grey values;
4. saturation: the fraction of pixels at the white level and at the black level (grey 1 and 0 after the
   reader's intensity rule).

Real frames: every image in ../shared/data/{fei_sem2surface,deepfocus,vendor_metadata} (scored region, data bar
excluded). Simulated: in-focus and defocused frames of every family at the paper's magnifications, at low
(5 e/px), medium (100 e/px) and high (5000 e/px) dose; every frame of the bundled sample series; and the first
120 non-blank frames of the training split at 1024x768 (the distribution the model learns from).
Run: python benchmarks/realism.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.structure import noise_sigma
from napari_sem_focus.simulate import SPECIMENS, FrameParams, dataset_params, simulate_frame
from napari_sem_focus.simulate.samples import SAMPLES, sample_series

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def spectrum_slope(img: np.ndarray) -> float:
    img = img - img.mean()
    rows, cols = img.shape
    window = np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2(img * window))) ** 2
    y, x = np.indices(power.shape)
    r = np.hypot((y - rows / 2) / rows, (x - cols / 2) / cols)
    bins = np.geomspace(0.02, 0.25, 15)
    idx = np.digitize(r.ravel(), bins)
    radial = np.array([power.ravel()[idx == i].mean() for i in range(1, len(bins))])
    centres = np.sqrt(bins[1:] * bins[:-1])
    return float(np.polyfit(np.log(centres), np.log(radial), 1)[0])


def stats(img: np.ndarray) -> dict[str, float]:
    x = img.astype(np.float64).ravel()
    z = (x - x.mean()) / (x.std() + 1e-12)
    sigma = noise_sigma(img)
    return {
        "slope": spectrum_slope(img),
        "noise": sigma,
        "snr": float(img.std() / max(sigma, 1e-6)),
        "skew": float((z**3).mean()),
        "kurt": float((z**4).mean() - 3),
        "white": float(np.mean(img >= 1.0)),  # saturated: at the white level
        "black": float(np.mean(img <= 0.0)),  # at the black level (clipped, or a true black hole)
    }


def real_frames() -> list[tuple[str, np.ndarray]]:
    out = []
    for folder in ("fei_sem2surface", "deepfocus", "vendor_metadata"):
        for path in sorted((DATA / folder).rglob("*")):
            if path.suffix.lower() in (".tif", ".png"):
                series = read_series(path)
                out.append((f"{folder}/{path.name}"[:44], series.frame(0)))
    return out


def simulated_frames() -> list[tuple[str, np.ndarray]]:
    out = []
    for family in SPECIMENS:
        for mag, dose, defocus in (
            (500.0, 100.0, 0.0),
            (5000.0, 5.0, 0.0),
            (5000.0, 5000.0, 0.0),
            (10000.0, 100.0, 3.0),
        ):
            p = FrameParams(family=family, magnification=mag, electrons_per_px=dose, defocus_um=defocus, seed=3)
            out.append((f"sim {family} {mag:g}x {dose:g}e df{defocus:g}", simulate_frame(p, (768, 1024)).image / 255.0))
    return out


def sample_frames() -> list[tuple[str, np.ndarray]]:
    """Every frame of the bundled sample series (what a new user sees first)."""
    out = []
    for name in SAMPLES:
        series = sample_series(name)
        out += [(f"sample {name} frame {i}", series.frame(i)) for i in range(len(series))]
    return out


def training_frames(n: int = 120) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` non-blank frames of the training split, at 1024x768: what the model learns from."""
    out, index = [], 0
    while len(out) < n:
        p = dataset_params("train", index)
        index += 1
        if p.blank is None:
            name = f"train {index - 1} {p.family} {p.magnification:.0f}x {p.electrons_per_px:.0f}e"
            out.append((name, simulate_frame(p, (768, 1024)).image / 255.0))
    return out


def main() -> None:
    header = (
        f"{'frame':46s} {'PSD slope':>9s} {'noise':>7s} {'SNR':>6s} {'skew':>6s} {'kurt':>6s} {'white%':>7s} "
        f"{'black%':>7s}"
    )
    groups = {}
    sources = (
        ("REAL", real_frames() if DATA.exists() else []),
        ("SIMULATED", simulated_frames()),
        ("SAMPLES", sample_frames()),
        ("TRAINING", training_frames()),
    )
    for title, frames in sources:
        print(f"\n{title}\n{header}")
        rows = []
        for name, img in frames:
            s = stats(img.astype(np.float32))
            rows.append(s)
            print(
                f"{name:46s} {s['slope']:9.2f} {s['noise']:7.4f} {s['snr']:6.1f} {s['skew']:6.2f} {s['kurt']:6.2f} "
                f"{100 * s['white']:7.2f} {100 * s['black']:7.2f}"
            )
        groups[title] = rows
    print("\nranges (min .. median .. max)")
    for key in ("slope", "noise", "snr", "skew", "kurt", "white", "black"):
        line = f"{key:6s}"
        for title, rows in groups.items():
            if rows:
                v = np.array([r[key] for r in rows])
                line += f"   {title.lower():9s} {v.min():7.3f} .. {np.median(v):7.3f} .. {v.max():7.3f}"
        print(line)


if __name__ == "__main__":
    main()
