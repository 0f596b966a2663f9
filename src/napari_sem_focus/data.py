"""Torch datasets: labelled images from CSV files, and simulated frames made on the fly (no disk needed).

Labels CSV format (shared by the simulator's datasets, the napari labelling widget and ``sem-focus train``):
``path`` (relative to the CSV's folder, or absolute), ``frame`` (page of a multi-page file, default 0),
``magnification`` (the model's magnification, 127 mm over a 1024-px frame; see :mod:`napari_sem_focus.model`)
and ``score`` (0-10). Other columns are kept but ignored.

Augmentation as in the paper: a random crop and random horizontal/vertical flips when training, a centre crop
when evaluating. Frames smaller than the crop are padded by reflection.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import SemFocusError
from .model import normalize_magnification


@dataclass(frozen=True)
class LabelRow:
    """One labelled frame: file, page, magnification, score (0-10)."""

    path: Path
    frame: int
    magnification: float
    score: float


def read_label_csv(csv_path: str | Path) -> list[LabelRow]:
    """Rows of a labels CSV; paths resolved relative to the CSV's folder."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SemFocusError(f"labels file '{csv_path}' does not exist")
    rows = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "magnification", "score"} - set(reader.fieldnames or [])
        if missing:
            raise SemFocusError(f"'{csv_path}': labels CSV lacks column(s) {sorted(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                path = Path(rec["path"])
                rows.append(
                    LabelRow(
                        path if path.is_absolute() else csv_path.parent / path,
                        int(rec.get("frame") or 0),
                        float(rec["magnification"]),
                        float(rec["score"]),
                    )
                )
            except (TypeError, ValueError) as err:
                raise SemFocusError(f"'{csv_path}' line {line}: {err}") from err
    return rows


@functools.lru_cache(maxsize=32)
def _series(path: Path) -> Any:
    from .io import read_series

    return read_series(path)


def load_frame(path: Path, frame: int = 0) -> np.ndarray:
    """Frame ``frame`` of ``path`` as float32 [0, 1] (8-bit PNG fast path; otherwise the core reader)."""
    if path.suffix.lower() == ".png":
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 2 and img.dtype == np.uint8:
            return img.astype(np.float32) / 255.0
    return _series(path).frame(frame)


def crop(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None) -> np.ndarray:
    """A ``size`` (rows, cols) crop: random when ``rng`` is given, else centred; reflect-pads small images."""
    rows, cols = size
    pad_r, pad_c = max(0, rows - image.shape[0]), max(0, cols - image.shape[1])
    if pad_r or pad_c:
        image = np.pad(image, ((pad_r // 2, pad_r - pad_r // 2), (pad_c // 2, pad_c - pad_c // 2)), mode="reflect")
    if rng is None:
        r0, c0 = (image.shape[0] - rows) // 2, (image.shape[1] - cols) // 2
    else:
        r0 = int(rng.integers(0, image.shape[0] - rows + 1))
        c0 = int(rng.integers(0, image.shape[1] - cols + 1))
    return image[r0 : r0 + rows, c0 : c0 + cols]


def augment(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None) -> torch.Tensor:
    """Crop (random or centre) and, when training (``rng`` given), random h/v flips; returns (1, H, W)."""
    out = crop(image, size, rng)
    if rng is not None:
        if rng.random() < 0.5:
            out = out[:, ::-1]
        if rng.random() < 0.5:
            out = out[::-1, :]
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None]


class LabelledImages(Dataset):
    """Labelled frames from one or more labels CSV files (see module docstring).

    Args:
        csv_paths: labels CSV file(s).
        crop_size: (rows, cols) of the crop fed to the network.
        train: random crops and flips (True) or centre crops (False).
        preload: decode every frame once into memory (fast epochs; 77 KB per 240x320 frame).
        seed: seed of the augmentation.
    """

    def __init__(
        self,
        csv_paths: Sequence[str | Path] | str | Path,
        crop_size: tuple[int, int] = (240, 320),
        train: bool = True,
        preload: bool = False,
        seed: int = 0,
    ):
        paths = [csv_paths] if isinstance(csv_paths, str | Path) else list(csv_paths)
        self.rows = [row for p in paths for row in read_label_csv(p)]
        if not self.rows:
            raise SemFocusError("no labelled frames in " + ", ".join(map(str, paths)))
        self.crop_size = crop_size
        self.train = train
        self.seed = seed
        self.epoch = 0
        self._cache: list[np.ndarray] | None = None
        if preload:
            self._cache = [(load_frame(r.path, r.frame) * 255).round().astype(np.uint8) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, index: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[index].astype(np.float32) / 255.0
        row = self.rows[index]
        return load_frame(row.path, row.frame)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = self.rows[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        image = augment(self.image(index), self.crop_size, rng)
        return image, normalize_magnification(row.magnification), torch.tensor(row.score, dtype=torch.float32)


class SimulatedFrames(Dataset):
    """Simulated frames made on the fly from the fixed-seed splits of :func:`~.simulate.dataset_params`.

    Args:
        split: 'train', 'val', 'test' or 'heldout'.
        length: number of frames (indices 0 ... length-1 of the split).
        shape: (rows, cols) simulated per frame (the paper's 240 x 320 by default).
        crop_size: crop fed to the network (random + flips when ``train``, else centred).
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        shape: tuple[int, int] = (240, 320),
        crop_size: tuple[int, int] | None = None,
        train: bool | None = None,
    ):
        from .allocator import reuse_freed_memory

        self.split, self.length, self.shape = split, length, shape
        self.crop_size = crop_size or shape
        self.train = (split == "train") if train is None else train
        reuse_freed_memory()  # frame after frame: keep freed buffers (data-loader workers inherit it)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from .simulate import dataset_params, simulate_frame

        frame = simulate_frame(dataset_params(self.split, index), self.shape)
        rng = np.random.default_rng([index, 17]) if self.train else None
        image = augment(frame.image.astype(np.float32) / 255.0, self.crop_size, rng)
        return (
            image,
            normalize_magnification(frame.params.magnification),
            torch.tensor(frame.score, dtype=torch.float32),
        )
