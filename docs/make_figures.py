"""Make the figures in docs/images from the simulator (headless). Run: python docs/make_figures.py"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from napari_sem_focus.simulate import PAPER_MAGNIFICATIONS, SPECIMENS, FrameParams, labels, optics, simulate_frame

OUT = Path(__file__).resolve().parent / "images"


def score_vs_defocus() -> Path:
    """Label score vs defocus for the paper's magnifications (tin balls: feature = HFW/20, tungsten d0 = 10 nm,
    alpha = 6 mrad), in µm and in pixels of blur."""
    fig = Figure(figsize=(10, 4), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    defocus = np.linspace(-300, 300, 1201)
    for mag in (*PAPER_MAGNIFICATIONS, 50_000.0, 100_000.0):
        pixel = optics.pixel_size_nm(mag)
        feature = pixel * 1024 / 20
        d = np.array([optics.probe_diameter_nm(df, 10.0, 6.0) for df in defocus])
        s = [labels.blur_score(x, 10.0, pixel, feature) for x in d]
        ax1.plot(defocus, s, label=f"{mag:,.0f}x")
        ax2.semilogx(d / pixel, s, label=f"{mag:,.0f}x")
    ax1.set(xlabel="defocus (µm)", ylabel="score", title="score vs defocus", xlim=(-300, 300))
    ax2.set(xlabel="probe diameter (pixels)", ylabel="score", title="score vs blur in pixels")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = OUT / "score_vs_defocus.png"
    fig.savefig(path)
    return path


def families_montage() -> Path:
    """Each specimen family in focus and defocused, at a fast-scan dose, and with BSE-like inverted contrast."""
    rows = []
    for family in SPECIMENS:
        tiles = []
        for defocus, dose, inverted in (
            (0.0, 2000.0, False),
            (25.0, 2000.0, False),
            (0.0, 3.0, False),
            (0.0, 2000.0, True),
        ):
            p = FrameParams(
                family=family,
                magnification=2000.0,
                defocus_um=defocus,
                electrons_per_px=dose,
                seed=4,
                inverted=inverted,
            )
            f = simulate_frame(p, (240, 320))
            img = cv2.cvtColor(f.image, cv2.COLOR_GRAY2BGR)
            label = f"{family}{' BSE' if inverted else ''} df={defocus:g}um {dose:g}e/px s={f.score:.1f}"
            cv2.putText(img, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 255, 255), 1, cv2.LINE_AA)
            tiles.append(img)
        rows.append(np.hstack(tiles))
    path = OUT / "simulated_families.png"
    cv2.imwrite(str(path), np.vstack(rows))
    return path


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for p in (score_vs_defocus(), families_montage()):
        print(p)
