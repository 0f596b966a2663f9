"""Torch datasets: labelled images from CSV files, and simulated frames made on the fly (no disk needed).

Labelled images come from labels CSV files, the one format of :mod:`napari_sem_focus.training.label_store` (written by
the napari labelling widget and the simulator): ``path``, ``frame``, ``magnification``, ``score``.

Augmentation as in the paper: a random crop and random horizontal/vertical flips when training, a centre crop
when evaluating. Frames smaller than the crop are padded by reflection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import SemFocusError
from ..io.series import load_frame
from ..scoring.infer import CROP_SIZE, crop_or_pad
from ..scoring.model import normalize_magnification
from .label_store import read_label_files


def augment(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator | None) -> torch.Tensor:
    """Crop (random or centre) and, when training (``rng`` given), random h/v flips; returns (1, H, W)."""
    out = crop_or_pad(image, size, rng)
    if rng is not None:
        if rng.random() < 0.5:
            out = out[:, ::-1]
        if rng.random() < 0.5:
            out = out[::-1, :]
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))[None]


#: Auxiliary physics targets (:func:`physics_targets`), learnt beside the score when training with
#: ``aux_weight`` > 0 (issue #14) and dropped at export: the network that scores is the paper's.
AUX_TARGETS = ("probe_px", "dose", "astigmatism")


def physics_targets(probe_u_px: float, probe_v_px: float, electrons_per_px: float) -> list[float]:
    """The auxiliary targets of one frame, each scaled to about [-1, 1]: ``log2`` of the probe's RMS diameter in
    pixels / 4 (the blur the score depends on), ``log10`` of the dose in electrons per pixel / 2 - 1 (how noisy the
    frame is), and ``log`` of the ratio of the probe's two axis diameters / 2 (astigmatism; 0 for a round probe).

    Args:
        probe_u_px, probe_v_px: probe FWHM along the two astigmatic axes, pixels.
        electrons_per_px: primary electrons per pixel (dose).
    """
    u, v = max(probe_u_px, 1e-3), max(probe_v_px, 1e-3)
    diameter = math.sqrt((u * u + v * v) / 2)
    return [math.log2(diameter) / 4, math.log10(max(electrons_per_px, 1e-3)) / 2 - 1, abs(math.log(u / v)) / 2]


def with_targets(score: float, aux: list[float] | None, want_aux: bool) -> torch.Tensor:
    """The label tensor of one frame: the score, or with ``want_aux`` (score, *auxiliary targets) where NaN marks
    a target the frame has not (labelled real frames, blank frames)."""
    if not want_aux:
        return torch.tensor(score, dtype=torch.float32)
    values = aux if aux is not None else [math.nan] * len(AUX_TARGETS)
    return torch.tensor([score, *values], dtype=torch.float32)


class LabelledImages(Dataset):
    """Labelled frames from one or more labels CSV files (see module docstring).

    Args:
        csv_paths: labels CSV file(s).
        crop_size: (rows, cols) of the crop fed to the network.
        train: random crops and flips (True) or centre crops (False).
        preload: decode every frame once into memory (fast epochs; 77 KB per 240x320 frame).
        seed: seed of the augmentation.
        aux: labels with the auxiliary targets (:func:`with_targets`; unknown for real frames: NaN).
    """

    def __init__(
        self,
        csv_paths: Sequence[str | Path] | str | Path,
        crop_size: tuple[int, int] = CROP_SIZE,
        train: bool = True,
        preload: bool = False,
        seed: int = 0,
        aux: bool = False,
    ):
        self.aux = aux
        paths = [csv_paths] if isinstance(csv_paths, str | Path) else list(csv_paths)
        self.rows = read_label_files(paths)
        if not self.rows:
            raise SemFocusError("no labelled frames in " + ", ".join(map(str, paths)))
        self.crop_size = crop_size
        self.train = train
        self.seed = seed
        self.epoch = 0
        self._cache: list[np.ndarray] | None = None
        if preload:
            self._cache = [(load_frame(Path(r.path), r.frame) * 255).round().astype(np.uint8) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, index: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[index].astype(np.float32) / 255.0
        row = self.rows[index]
        return load_frame(Path(row.path), row.frame)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        row = self.rows[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        image = augment(self.image(index), self.crop_size, rng)
        return image, normalize_magnification(row.magnification), with_targets(row.score, None, self.aux)


class SimulatedFrames(Dataset):
    """Simulated frames made on the fly from the fixed-seed splits of :func:`~.simulate.dataset_params`.

    Args:
        split: 'train', 'val', 'test' or 'heldout'.
        length: number of frames (indices 0 ... length-1 of the split).
        shape: (rows, cols) simulated per frame (the paper's 240 x 320 by default).
        crop_size: crop fed to the network (random + flips when ``train``, else centred).
        aux: labels with the auxiliary physics targets (:func:`physics_targets`; NaN for blank frames).
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        shape: tuple[int, int] = CROP_SIZE,
        crop_size: tuple[int, int] | None = None,
        train: bool | None = None,
        aux: bool = False,
    ):
        from ..allocator import reuse_freed_memory

        self.split, self.length, self.shape, self.aux = split, length, shape, aux
        self.crop_size = crop_size or shape
        self.train = (split == "train") if train is None else train
        reuse_freed_memory()  # frame after frame: keep freed buffers (data-loader workers inherit it)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from ..simulate import dataset_params, simulate_frame

        frame = simulate_frame(dataset_params(self.split, index), self.shape)
        rng = np.random.default_rng([index, 17]) if self.train else None
        image = augment(frame.image.astype(np.float32) / 255.0, self.crop_size, rng)
        params = frame.params
        aux = None
        if self.aux and params.blank is None:
            u, v = params.probe_diameters_nm()
            aux = physics_targets(u / params.pixel_nm, v / params.pixel_nm, params.electrons_per_px)
        return image, normalize_magnification(params.magnification), with_targets(frame.score, aux, self.aux)


class SemiRealFrames(Dataset):
    """Semi-real training frames made on the fly from in-focus real SEM images (:mod:`.simulate.semireal`).

    Each frame: a random source, shrunk by a random factor 0.5-1 (area average: a lower magnification of the same
    texture), a random 320x240 region degraded by a probe whose blur gives a target score uniform in [0, 10]
    (12 % perfectly focused; a quarter astigmatic), shot noise of 1.5-3,000 electrons/px (12 % frame-averaged,
    10^4), amplifier noise and scan artefacts; then a random crop and flips as in the paper. The label is the
    simulator's score (:func:`.simulate.semireal.semireal_score`) with the texture's feature size estimated from
    its autocorrelation. Sources must be textured everywhere (a featureless crop would get the label of the
    whole image) and must not be images a benchmark measures (split by source image).

    Args:
        sources: image files (their pixel size must be in the metadata, or give ``pixel_nm``).
        length: number of frames per epoch (index -> frame is deterministic for ``seed``).
        crop_size: (rows, cols) fed to the network.
        pixel_nm: pixel size (nm) for sources that state none.
        seed: seed of the draws.
        aux: labels with the auxiliary physics targets (:func:`physics_targets`).
    """

    def __init__(
        self,
        sources: Sequence[str | Path],
        length: int = 10_000,
        crop_size: tuple[int, int] = CROP_SIZE,
        pixel_nm: float | None = None,
        seed: int = 0,
        aux: bool = False,
    ):
        self.aux = aux
        if not sources:
            raise SemFocusError("no real-texture sources given")
        self.sources = [Path(s) for s in sources]
        self.length, self.crop_size, self.pixel_nm, self.seed = length, crop_size, pixel_nm, seed
        self._clean: dict[int, tuple[np.ndarray, float, float]] = {}

    def __len__(self) -> int:
        return self.length

    def source(self, k: int) -> tuple[np.ndarray, float, float]:
        """(clean image, pixel size nm, feature size px) of source ``k`` (computed once)."""
        if k not in self._clean:
            from ..io.series import read_series
            from ..simulate.semireal import clean_source, feature_size_px

            series = read_series(self.sources[k])
            pixel = series.pixel_size_nm or self.pixel_nm
            if not pixel:
                raise SemFocusError(f"'{self.sources[k]}': no pixel size in the metadata; give pixel_nm")
            clean = clean_source(series.frame(0))
            self._clean[k] = (clean, float(pixel), feature_size_px(clean))
        return self._clean[k]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import cv2

        from ..io.metadata import magnification_from_pixel_size
        from ..simulate import labels
        from ..simulate.semireal import SOURCE_RESOLUTION_PX, FocusStep, SemiRealSettings, degrade, semireal_score

        rng = np.random.default_rng([self.seed, index, 31])
        clean, pixel, feature = self.source(int(rng.integers(len(self.sources))))
        shrink = float(rng.uniform(0.5, 1.0))
        if shrink < 0.98:
            size = (max(1, round(clean.shape[1] * shrink)), max(1, round(clean.shape[0] * shrink)))
            clean = cv2.resize(clean, size, interpolation=cv2.INTER_AREA)
            pixel, feature = pixel / shrink, feature * shrink
        rows, cols = self.crop_size
        margin = 32
        region = crop_or_pad(clean, (rows + 2 * margin, cols + 2 * margin), rng)
        target = 10.0 if rng.random() < 0.12 else float(rng.uniform(0.02, 10.0))
        d0 = SOURCE_RESOLUTION_PX * pixel
        diameter = labels.diameter_for_blur_score(target, d0, pixel, feature * pixel)
        extra = math.sqrt(max(diameter**2 - d0**2, 0.0)) / pixel
        squash = float(rng.uniform(0.2, 0.9)) if rng.random() < 0.25 else 0.0
        probe = FocusStep(0.0, extra * math.sqrt(1 + squash), extra * math.sqrt(1 - squash), float(rng.uniform(0, 180)))
        dose = 1e4 if rng.random() < 0.12 else float(math.exp(rng.uniform(math.log(1.5), math.log(3000))))
        settings = SemiRealSettings(
            electrons_per_px=dose,
            excess_noise=float(rng.uniform(1.0, 2.5)),
            amplifier_sigma=float(rng.uniform(0.0, 0.03)),
            bandwidth_px=float(rng.uniform(0.0, 1.0)),
            line_gain=float(rng.uniform(0.0, 0.04)) if rng.random() < 0.6 else 0.0,
        )
        image = degrade(region, probe, settings, rng)[margin:-margin, margin:-margin]
        inner = region[margin:-margin, margin:-margin]
        contrast = float(inner.std() / max(float(inner.mean()), 1e-6))
        score = semireal_score(probe, pixel, feature, dose, contrast)
        tensor = augment(image.astype(np.float32) / 255.0, self.crop_size, rng)
        mag = magnification_from_pixel_size(pixel)
        aux = physics_targets(*probe.axis_diameters_px, dose) if self.aux else None
        return tensor, normalize_magnification(mag), with_targets(score, aux, self.aux)
