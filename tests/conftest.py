"""Shared fixtures: paths to the real SEM data in ../shared/data and small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

#: fibsem-os's demo microscope sleeps for each simulated frame and stage move unless this is set.
os.environ.setdefault("FIBSEM_SIM_NO_DELAY", "1")

ROOT = Path(__file__).resolve().parents[1]
#: Real SEM data: ``$SEM_FOCUS_DATA`` when set, else ../shared/data beside the project.
SHARED_DATA = Path(os.environ.get("SEM_FOCUS_DATA") or ROOT.parent / "shared" / "data")


def shared(relative: str) -> Path:
    """Path of a file in ../shared/data; skips the test politely when the data folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real SEM test data not available ({path})")
    return path


def texture(shape: tuple[int, int] = (96, 128), seed: int = 0, blur_px: float = 0.0) -> np.ndarray:
    """A float32 [0, 1] test texture (smoothed noise blobs), optionally Gaussian-blurred by ``blur_px``."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    if blur_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_px)
    return img.astype(np.float32)


@pytest.fixture
def sharp_image() -> np.ndarray:
    return texture()
