"""Focus series (one specimen, stepped focus) and on-disk datasets made with the simulator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..scoring.report import write_csv
from ..scoring.tiles import CROP_SIZE
from . import detector, labels, optics
from .frame import FrameParams, SimulatedFrame, detector_signal, render, sample_params, simulate_frame
from .specimens import make_specimen

IN_FOCUS_WD_MM = 5.0  # working distance (mm) at which the simulated specimen is in focus


def defocus_span_um(params: FrameParams, feature_nm: float, end_score: float = 1.0) -> float:
    """Defocus (µm) at which a frame of ``params`` falls to ``end_score``: the half-range of a series."""
    diameter = labels.diameter_for_blur_score(end_score, params.d0_nm, params.pixel_nm, feature_nm)
    return optics.defocus_for_diameter_um(diameter, params.d0_nm, params.alpha_mrad)


def auto_contrast_params(spec: Any, params: FrameParams, seed: int) -> FrameParams:
    """``params`` with brightness and contrast set once from the in-focus image of ``spec``, as an SEM's
    automatic contrast/brightness does before a series or a focus search (:func:`.detector.auto_display`)."""
    signal, _ = detector_signal(spec, replace(params, defocus_um=0.0), np.random.default_rng([seed, 0]))
    brightness, contrast = detector.auto_display(signal)
    return replace(params, brightness=brightness, contrast=contrast)


def simulate_series(
    family: str = "tinball",
    magnification: float = 5000.0,
    steps: int = 21,
    shape: tuple[int, int] = (768, 1024),
    seed: int = 0,
    focus_offset_steps: float = 0.0,
    end_score: float = 1.0,
    noisy_frame: int | None = None,
    auto_contrast: bool = True,
    **overrides: Any,
) -> tuple[list[SimulatedFrame], list[float]]:
    """A through-focus series: the same specimen at ``steps`` evenly spaced focus settings.

    The focus steps span the range in which the score falls to ``end_score`` on both sides; the in-focus setting
    sits at the middle step, shifted by ``focus_offset_steps`` (so the true best focus can fall between frames).
    ``noisy_frame``: index of one frame re-taken as a very fast scan (3 e/px): it looks "sharp" to a
    high-frequency metric but is not the best-focused frame. ``auto_contrast``: brightness and contrast set once
    for the whole series from the in-focus frame, as an SEM's automatic contrast/brightness does
    (:func:`.detector.auto_display`, ~0.2 % of pixels clipped at each end; real frames clip <= 1.5 %); False keeps
    the ``brightness``/``contrast`` of the parameters. ``overrides`` set other :class:`FrameParams` fields.

    Returns the frames and the working distance (mm) of each.
    """
    if steps < 1:
        raise ValueError("a series needs at least one step")
    base = replace(FrameParams(family=family, magnification=magnification, seed=seed), **overrides)
    pixel = base.pixel_nm
    spec = make_specimen(family, np.random.default_rng(seed), shape, pixel, pixel * optics.REFERENCE_FRAME_WIDTH_PX)
    span = defocus_span_um(base, spec.feature_nm, end_score)
    offsets = np.linspace(-span, span, steps) if steps > 1 else np.zeros(1)
    step_um = float(offsets[1] - offsets[0]) if steps > 1 else 0.0
    if auto_contrast:
        base = auto_contrast_params(spec, base, seed)
    frames, wds = [], []
    for i, setting in enumerate(offsets):
        defocus = float(setting - focus_offset_steps * step_um)
        params = replace(base, defocus_um=defocus, noise_seed=i + 1)
        if noisy_frame is not None and i == noisy_frame:
            params = replace(params, electrons_per_px=3.0, excess_noise=2.0, bandwidth_px=0.0)
        frames.append(render(spec, params, np.random.default_rng([seed, i + 1])))
        wds.append(round(IN_FOCUS_WD_MM + float(setting) * 1e-3, 9))
    return frames, wds


def write_series(out_dir: str | Path, frames: list[SimulatedFrame], wds: list[float], name: str = "series") -> Path:
    """Write a series as ``<name>.tif`` (multi-page, facts in each page) and ``<name>_labels.csv``."""
    from ..io.series import write_series_tiff

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    facts = [f.facts(wd) for f, wd in zip(frames, wds, strict=True)]
    tif = write_series_tiff(out / f"{name}.tif", [f.image for f in frames], facts)
    rows = [{"frame": i, **fact} for i, fact in enumerate(facts)]
    write_csv(out / f"{name}_labels.csv", rows)
    return tif


SPLIT_SEEDS = {
    "train": 0,
    "val": 10_000_000,
    "test": 20_000_000,
    "heldout": 30_000_000,
    "highmag": 40_000_000,
    "blank": 50_000_000,
}


def dataset_params(split: str, index: int) -> FrameParams:
    """Parameters of frame ``index`` of a split, with fixed seeds per split.

    'train' and 'val' draw the full training distribution; 'test' uses only the paper's five magnifications
    (for the paper's Table 2); 'heldout' uses the held-out specimen family at the paper's magnifications;
    'highmag' uses 20,000x, 50,000x and 100,000x, where the in-focus probe spans pixels and the magnification
    input matters most; 'blank' only the paper's 0-score frames (noise, white, black, flat) — extra training
    frames that teach the model to give pure noise 0 (6 % of the other splits are blank too).
    """
    from .frame import HIGH_MAGNIFICATIONS, PAPER_MAGNIFICATIONS
    from .specimens import HELD_OUT_FAMILY

    if split not in SPLIT_SEEDS:
        raise KeyError(f"unknown split '{split}'; choose from {list(SPLIT_SEEDS)}")
    seed = SPLIT_SEEDS[split] + index
    if split == "heldout":
        return sample_params(seed, families=(HELD_OUT_FAMILY,), magnifications=PAPER_MAGNIFICATIONS)
    if split == "test":
        return sample_params(seed, magnifications=PAPER_MAGNIFICATIONS)
    if split == "highmag":
        return sample_params(seed, magnifications=HIGH_MAGNIFICATIONS)
    if split == "blank":
        return sample_params(seed, blank_fraction=1.0)
    return sample_params(seed)


def write_dataset(
    out_dir: str | Path,
    n: int,
    split: str = "train",
    shape: tuple[int, int] = CROP_SIZE,
    start: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write frames ``start`` ... ``start + n - 1`` of a split as PNG files plus ``labels.csv``.

    The CSV has the columns of the labels format (``path``, ``frame``, ``magnification``, ``score``...), paths
    relative to the CSV's folder. Frames are 240x320 px by default: the paper's 320x240 test crop.
    """
    import cv2

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + n):
        frame = simulate_frame(dataset_params(split, i), shape)
        rel = f"images/{split}_{i:06d}.png"
        cv2.imwrite(str(out / rel), frame.image)
        rows.append({"path": rel, "frame": 0, **frame.facts()})
        if progress is not None:
            progress(i + 1 - start, n)
    write_csv(out / "labels.csv", rows)
    return out / "labels.csv"
