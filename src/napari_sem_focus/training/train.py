"""Training: one config, data, model, optimiser, loop, evaluation, atomic checkpoints and resume.

Recipes (:func:`recipe`):

- ``paper``: exactly Yang et al. — SGD lr 2e-4, momentum 0.9, batch 1, 100 epochs, MSE loss, 320x240 random
  crops with horizontal/vertical flips, 320x240 centre crop for evaluation. Long (days on a CPU).
- ``fast``: what fits a 2-core CPU in about an hour — AdamW lr 1e-3 with warm-up and cosine decay, batch 32,
  192x144 random crops + flips, bf16 autocast and channels_last, the ``bce`` loss
  (:func:`score_loss`: no vanishing gradient at scores 0 and 10). Evaluation still uses the paper's 320x240
  centre crop.
- ``gpu``: one CUDA GPU fed by simulator workers on every other CPU core — AdamW lr 1e-3, batch 128, the paper's
  320x240 crops + flips, bf16 autocast, channels_last, ``bce``. With ``max_minutes`` the cosine decay runs over
  the time budget, so a run stopped by the clock still ends at the low learning rate.

Mixed precision: bfloat16 autocast wherever it is native (CPUs with AVX512-BF16/AMX, CUDA GPUs from Ampere on);
float16 with a gradient scaler on older CUDA GPUs.

Checkpoints (``torch.save`` of plain tensors and numbers only, so ``torch.load(weights_only=True)`` reads them):
``model``, ``optimizer``, ``step``, ``config``, ``model_config``, ``metrics`` (the learning rate is a function of
the step and the config, so no scheduler state is needed), with ``ema`` ``ema`` (the averaged weights) and with
``aux_weight`` ``aux_head`` (the training-only head of the auxiliary physics targets). They
are written atomically: a run stopped at any moment leaves the last good checkpoint intact. ``resume=True``
continues.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..atomic import atomic_path
from ..device import autocast, mixed_precision_dtype, select_device
from ..errors import CancelledError, SemFocusError
from ..scoring.model import FocusScoreNet, ModelConfig, normalize_magnification, score_from_logit
from ..scoring.tiles import CROP_SIZE


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    recipe: str = "fast"
    arch: str = "resnet18"
    use_magnification: bool = True
    optimizer: str = "adamw"  # "sgd" (paper) or "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 100
    max_steps: int | None = None
    max_minutes: float | None = None
    warmup_steps: int = 200
    schedule: str = "cosine"  # "cosine" or "constant" (paper)
    loss: str = "bce"  # "bce" or "mse" (paper); see score_loss
    freeze_batchnorm: bool = False  # keep BatchNorm statistics fixed (fine-tuning on a few frames, small batches)
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); see iter_train
    echo: int = 1  # optimiser steps per fresh batch (data echoing, see EchoBuffer; 1: off)
    aux_weight: float = 0.0  # weight of the auxiliary physics targets' loss (data.AUX_TARGETS; 0: off)
    progressive: bool = False  # progressive crops: PROGRESSIVE_CROPS of the training crop along the run
    crop: tuple[int, int] = (144, 192)
    eval_crop: tuple[int, int] = CROP_SIZE
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    num_workers: int = 0
    seed: int = 0
    eval_every: int = 500
    checkpoint_every: int = 200
    log_every: int = 20

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["crop"], d["eval_crop"] = list(self.crop), list(self.eval_crop)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("crop", "eval_crop"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


RECIPES = ("fast", "paper", "gpu")


def default_workers() -> int:
    """Data-loader workers for a GPU run: every CPU core but the one that drives the GPU."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """The named recipe (:data:`RECIPES`, see the module docstring), with field overrides."""
    if name == "paper":
        base = TrainConfig(
            recipe="paper",
            optimizer="sgd",
            lr=2e-4,
            momentum=0.9,
            weight_decay=0.0,
            batch_size=1,
            epochs=100,
            warmup_steps=0,
            schedule="constant",
            loss="mse",
            crop=CROP_SIZE,
            amp=False,
            channels_last=False,
            eval_every=5000,
            checkpoint_every=2000,
        )
    elif name == "fast":
        base = TrainConfig()
    elif name == "gpu":
        base = TrainConfig(
            recipe="gpu",
            lr=1e-3,
            batch_size=128,
            crop=CROP_SIZE,
            device="cuda",
            num_workers=default_workers(),
            warmup_steps=300,
            eval_every=1000,
            checkpoint_every=1000,
            log_every=100,
        )
    else:
        raise SemFocusError(f"unknown recipe '{name}'; choose from {list(RECIPES)}")
    return replace(base, **overrides)


def describe_setup(config: TrainConfig) -> str:
    """One line saying where a run trains: device (GPU name), precision, memory format, data-loader workers,
    processes (under torchrun)."""
    from .distributed import current

    device = select_device(config.device)
    group = current()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    dtype = mixed_precision_dtype(device) if config.amp else None
    precision = str(dtype).removeprefix("torch.") if dtype is not None else "float32"
    layout = "channels_last" if config.channels_last else "contiguous"
    return (
        f"recipe {config.recipe}: {name}, {precision}, {layout}, batch {config.batch_size}, "
        f"crop {config.crop[1]}x{config.crop[0]}, {config.num_workers} data workers"
        + (f" per process, {group.world_size} processes" if group.active else "")
        + (f", echo {config.echo} (steps per fresh batch)" if config.echo > 1 else "")
        + (f", auxiliary physics targets (weight {config.aux_weight:g})" if config.aux_weight > 0 else "")
        + (", progressive crops" if config.progressive else "")
        + f", torch {torch.__version__}"
    )


def score_loss(logit: torch.Tensor, score: torch.Tensor, kind: str) -> torch.Tensor:
    """Training loss of head outputs ``logit`` (the score is ``10 * sigmoid(logit)``) against scores in [0, 10].

    ``mse``: mean squared error of the scores (the paper). Its gradient carries the sigmoid's slope, which
    vanishes near 0 and 10, so outputs stuck near the wrong end (a black frame scored 9.99) or near the right
    one (a blank frame at 0.3 instead of 0) move slowly. ``bce``: binary cross-entropy of ``sigmoid(logit)`` against
    ``score / 10`` — minimised by the same prediction (the expected score), but its gradient
    ``sigmoid(logit) - score / 10`` does not vanish at the ends. The value returned for ``bce`` has the
    target's entropy subtracted, so it is 0 for a perfect fit.
    """
    if kind == "mse":
        return torch.nn.functional.mse_loss(score_from_logit(logit), score)
    if kind == "bce":
        target = (score / 10.0).clamp(0.0, 1.0)
        entropy = torch.nn.functional.binary_cross_entropy(target, target)
        return torch.nn.functional.binary_cross_entropy_with_logits(logit, target) - entropy
    raise SemFocusError(f"unknown loss '{kind}'; choose 'mse' or 'bce'")


def _train_mode(model: torch.nn.Module, freeze_batchnorm: bool) -> None:
    """Training mode; with ``freeze_batchnorm`` the BatchNorm layers keep their running statistics (eval mode):
    a few labelled frames in batches of 4-8 would otherwise overwrite the statistics learnt on 40,000 frames."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _progress(step: int, total: int, config: TrainConfig, elapsed_s: float = 0.0, start: int = 0) -> float:
    """How far a run is, 0 ... 1: the steps after ``start`` done of those planned, or the time budget
    (``max_minutes``) used when that runs out first."""
    progress = (step - start) / max(1, total - start)
    if config.max_minutes:
        progress = max(progress, elapsed_s / (60.0 * config.max_minutes))
    return min(1.0, progress)


def _lr_factor(step: int, total: int, config: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 2 % over the steps — or over the time budget
    (``max_minutes``) when that runs out first."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant" or total <= config.warmup_steps:
        return 1.0
    progress = _progress(step, total, config, elapsed_s, start=config.warmup_steps)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


#: Progressive crops (``TrainConfig.progressive``): (until this fraction of the run, side length relative to the
#: training crop). Early steps see smaller crops of the same frames — the same pixel size, so the same blur in
#: pixels and the same labels — at a quarter / a half of the cost per step.
PROGRESSIVE_CROPS = ((0.4, 0.5), (0.7, 0.75), (1.0, 1.0))


def progressive_crop(images: torch.Tensor, progress: float, generator: torch.Generator) -> torch.Tensor:
    """A random window of a batch (N, 1, H, W) whose side is :data:`PROGRESSIVE_CROPS`'s fraction at
    ``progress`` (0 ... 1 of the run); the whole batch at the end of the run."""
    scale = next(scale for until, scale in PROGRESSIVE_CROPS if progress < until or until >= 1.0)
    rows, cols = images.shape[-2:]
    h, w = max(32, round(rows * scale)), max(32, round(cols * scale))
    if (h, w) == (rows, cols):
        return images
    top = int(torch.randint(rows - h + 1, (1,), generator=generator))
    left = int(torch.randint(cols - w + 1, (1,), generator=generator))
    return images[..., top : top + h, left : left + w]


def _worker_init(worker_id: int) -> None:
    """Set up a data-loader worker: one thread (OpenCV and torch would each start one per core in every worker)
    and the allocator that keeps frame buffers (:mod:`.allocator`). Workers are spawned, not forked: a forked
    child that touches OpenCV's thread pool after the parent has used it hangs."""
    import cv2

    from ..allocator import reuse_freed_memory

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    reuse_freed_memory()


class _Logit(torch.nn.Module):
    """The network's logit as a module's ``forward``: what DistributedDataParallel wraps (it syncs gradients
    of what runs through ``forward``). With ``aux`` > 0, an auxiliary linear head on the trunk's pooled features
    predicts that many physics targets (:data:`~.data.AUX_TARGETS`) and ``forward`` returns (logit, targets); the
    head exists only during training (checkpoints keep it as ``aux_head``, exported weights do not)."""

    def __init__(self, model: FocusScoreNet, aux: int = 0):
        super().__init__()
        self.model = model
        n_features = model.head[0].in_features - (1 if model.config.use_magnification else 0)
        self.aux_head = torch.nn.Linear(n_features, aux) if aux else None

    def forward(self, image: torch.Tensor, mag_norm: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.aux_head is None:
            return self.model.logit(image, mag_norm)
        features = self.model.trunk_features(image)
        return self.model.logit(image, mag_norm, features=features), self.aux_head(features).float()


def score_column(labels: torch.Tensor) -> torch.Tensor:
    """The scores of a batch's labels: (N,), or the first column of labels with auxiliary targets (N, 1 + K)."""
    return labels[:, 0] if labels.dim() == 2 else labels


def training_loss(
    output: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor, kind: str, aux_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logit) of a batch: :func:`score_loss` of the logit against the score, plus, for labels with
    auxiliary targets (N, 1 + K; :func:`~.data.with_targets`), ``aux_weight`` times the mean squared error of the
    auxiliary head's K outputs over the targets that are known (not NaN)."""
    logit, aux = (output, None) if isinstance(output, torch.Tensor) else output
    loss = score_loss(logit.float(), score_column(labels), kind)
    if aux is not None and labels.dim() == 2 and aux_weight > 0:
        targets = labels[:, 1:]
        known = ~torch.isnan(targets)
        # masked, not indexed: no wait for the GPU to say how many targets are known
        squared = torch.where(known, aux - targets.nan_to_num(), 0.0).square()
        loss = loss + aux_weight * squared.sum() / known.sum().clamp_min(1)
    return loss, logit


class _OptimizerStep:
    """One optimiser step on a batch, in as many parts as the GPU's memory needs.

    CUDA out of memory: the step is retried with the batch split in 2, 4, 8... parts whose gradients add up to the
    whole batch's (the same step; only BatchNorm sees the smaller parts), and later steps keep the split; when not even
    one image per part fits, the model, the optimiser's state and the weight average move to the CPU, with a warning,
    and training goes on there (slower). In a multi-process run, where one process cannot leave its GPU, that is an
    error that says to lower the batch size."""

    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: torch.optim.swa_utils.AveragedModel | None,
        device: torch.device,
        amp: bool,
        loss: str,
        can_move: bool = True,
        aux_weight: float = 0.0,
    ):
        self.network, self.optimizer, self.ema, self.device = network, optimizer, ema, device
        self.amp, self.loss, self.can_move, self.parts = amp, loss, can_move, 1
        self.aux_weight = aux_weight
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and mixed_precision_dtype(device) == torch.float16)

    def __call__(self, images: torch.Tensor, mag: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Take the step; returns the batch's loss and logits (detached)."""
        while True:
            try:
                return self._step(images, mag, score)
            except torch.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                was_on = self.device
                self._make_room(len(images))
                if self.device != was_on:
                    images, mag, score = (t.to(self.device) for t in (images, mag, score))

    def _step(self, images: torch.Tensor, mag: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.optimizer.zero_grad(set_to_none=True)
        losses, logits = [], []
        for part in torch.arange(len(images), device=images.device).tensor_split(self.parts):
            with autocast(self.device, self.amp):
                output = self.network(images[part], mag[part])
            loss, logit = training_loss(output, score[part], self.loss, self.aux_weight)
            if self.parts > 1:  # each part's mean weighted by its share: the parts add up to the batch's mean
                loss = loss * (len(part) / len(images))
            self.scaler.scale(loss).backward()
            losses.append(loss.detach())
            logits.append(logit.detach())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return torch.stack(losses).sum(), torch.cat(logits)

    def _make_room(self, batch: int) -> None:
        import warnings

        if self.parts < batch:
            self.parts = min(2 * self.parts, batch)
            warnings.warn(
                f"{self.device} is out of memory at a batch of {batch}: each step now runs in {self.parts} parts "
                "(the same batch, more slowly)",
                stacklevel=3,
            )
            return
        if self.device.type == "cpu" or not self.can_move:
            raise SemFocusError(
                f"out of memory on {self.device} with one image per part: lower --batch-size or the crop size, "
                "or free memory on the device"
            )
        warnings.warn(f"{self.device} is out of memory even for one image: training goes on on the CPU", stacklevel=3)
        self.device = torch.device("cpu")
        self.network.to(self.device)
        if self.ema is not None:
            self.ema.to(self.device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    state[key] = value.to(self.device)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.parts = 1


class EchoBuffer:
    """Data echoing (Choi et al. 2019, "Faster neural network training with data echoing"): when the data loader
    cannot keep the accelerator busy (the simulator on 15 CPU cores feeds an H100 at about 30 % of its training
    speed), each fresh batch is used for ``echo`` optimiser steps instead of one.

    Fresh batches join a pool of the last ``depth`` batches on the device; each step draws a batch of the fresh
    batch's size from the pool at random, with new random horizontal/vertical flips per frame. A frame is thus seen
    about ``echo`` times, in different company and orientation, spread over ``depth`` fresh batches. With
    ``echo=1`` the fresh batch is passed through untouched (no pool, no flips): a plain run.

    Args:
        echo: optimiser steps per fresh batch (>= 1).
        depth: fresh batches kept in the pool.
        seed: seed of the draws and flips.
    """

    def __init__(self, echo: int, depth: int = 4, seed: int = 0):
        if echo < 1:
            raise SemFocusError(f"echo must be at least 1, not {echo}")
        self.echo, self.depth, self.seed = echo, depth, seed
        self._pool: list[tuple[torch.Tensor, ...]] = []
        self._rng: torch.Generator | None = None

    def batches(
        self, images: torch.Tensor, mag: torch.Tensor, score: torch.Tensor
    ) -> Generator[tuple[torch.Tensor, ...]]:
        """The ``echo`` batches to step on for this fresh batch (images (N, 1, H, W), magnification, score)."""
        if self.echo == 1:
            yield images, mag, score
            return
        device = images.device
        if self._rng is None or self._rng.device != device:
            # draws made where the pool is: no copy from the CPU, which would make the CPU wait for the GPU
            self._rng = torch.Generator(device=device).manual_seed(self.seed)
        kept = [batch for batch in self._pool[-(self.depth - 1) :] if batch[0].device == device]  # moved: start anew
        self._pool = [*kept, (images, mag, score)]
        pool = [torch.cat(parts) for parts in zip(*self._pool, strict=True)]
        n = len(images)
        for _ in range(self.echo):
            pick = torch.randperm(len(pool[0]), generator=self._rng, device=device)[:n]
            flip = torch.rand(2, n, 1, 1, 1, generator=self._rng, device=device) < 0.5
            chosen = pool[0].index_select(0, pick)
            chosen = torch.where(flip[0], chosen.flip(-1), chosen)
            chosen = torch.where(flip[1], chosen.flip(-2), chosen)
            yield chosen, pool[1].index_select(0, pick), pool[2].index_select(0, pick)


class _Materialised(Dataset):
    """A small dataset (validation frames) computed once and kept in memory, so evaluating during training does
    not simulate the same frames again each time."""

    def __init__(self, dataset: Dataset, batch_size: int = 64):
        batches = list(DataLoader(dataset, batch_size=batch_size, shuffle=False))
        self.tensors = [torch.cat(column) for column in zip(*batches, strict=True)]

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


# --- evaluation ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def predict_models(
    models: Mapping[str, FocusScoreNet],
    dataset: Dataset,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    amp: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """({name: predictions}, targets, normalised magnifications) over a dataset; each batch is read once and
    scored by every model. Every module's train/eval mode is restored afterwards."""
    device = torch.device(device)
    modes = [(m, m.training) for model in models.values() for m in model.modules()]
    for model in models.values():
        model.eval()
    preds: dict[str, list[np.ndarray]] = {name: [] for name in models}
    targets, mags = [], []
    for images, mag, score in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images, mag_d = images.to(device), mag.to(device)
        for name, model in models.items():
            with autocast(device, amp):
                scores = model(images, mag_d).float().cpu().numpy()
            preds[name].append(getattr(model, "remap", np.asarray)(scores).astype(np.float32))
        targets.append(score.numpy())
        mags.append(mag.numpy())
    for module, training in modes:
        module.train(training)
    return {name: np.concatenate(p) for name, p in preds.items()}, np.concatenate(targets), np.concatenate(mags)


def predict(
    model: FocusScoreNet, dataset: Dataset, batch_size: int = 64, device: str | torch.device = "cpu", amp: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions, targets, normalised magnifications) of one model over a dataset (:func:`predict_models`)."""
    preds, targets, mags = predict_models({"model": model}, dataset, batch_size, device, amp)
    return preds["model"], targets, mags


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(target)) ** 2))) if len(pred) else float("nan")


def rmse_by_magnification(
    pred: np.ndarray, target: np.ndarray, mag_norm: np.ndarray, magnifications: Sequence[float]
) -> dict[str, float]:
    """RMSE per magnification (frames within +-15 % of each) and in total."""
    out: dict[str, float] = {}
    mags = np.asarray(mag_norm)
    for m in magnifications:
        lo, hi = normalize_magnification(m * 0.85).item(), normalize_magnification(m * 1.15).item()
        sel = (mags >= lo) & (mags <= hi)
        out[f"{m:g}"] = rmse(pred[sel], target[sel])
    out["total"] = rmse(pred, target)
    return out


# --- checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: FocusScoreNet,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: TrainConfig,
    metrics: dict[str, Any],
    ema: torch.nn.Module | None = None,
    aux_head: torch.nn.Module | None = None,
) -> Path:
    """Atomic checkpoint: the previous file stays intact until the new one is complete."""
    state: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": config.to_dict(),
        "model_config": model.config.to_dict(),
        "metrics": metrics,
    }
    if ema is not None:
        state["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    if aux_head is not None:
        state["aux_head"] = {k: v.detach().cpu() for k, v in aux_head.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict, loaded with ``weights_only=True`` (no code execution)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise SemFocusError(f"checkpoint '{path}' does not exist") from err
    except Exception as err:
        raise SemFocusError(f"cannot load checkpoint '{path}': {err}") from err


def model_from_checkpoint(state: Mapping[str, Any], averaged: bool = False) -> FocusScoreNet:
    """The network a checkpoint dict (:func:`load_checkpoint`) holds: the trained weights, or with ``averaged`` the
    weight average (``ema``; an error when the run kept none)."""
    model = FocusScoreNet(ModelConfig.from_dict(state["model_config"]))
    if not averaged:
        model.load_state_dict(state["model"])
        return model
    if "ema" not in state:
        raise SemFocusError("this checkpoint holds no weight average (the run was trained without --ema)")
    prefix = "module."
    model.load_state_dict({k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)})
    return model


# --- the loop -----------------------------------------------------------------------------------------------


class RunningMean:
    """Exponential moving average (decay 0.95), bias-corrected so that the first steps do not dominate a short
    run (the first value is returned as is)."""

    def __init__(self, decay: float = 0.95):
        self.decay, self.total, self.weight = decay, 0.0, 1.0

    def add(self, value: Any) -> Any:
        """Add one value (a number, or a tensor kept on its device); return the current mean (same type)."""
        self.total = self.decay * self.total + (1.0 - self.decay) * value
        self.weight *= self.decay
        return self.total / (1.0 - self.weight)


@dataclass
class TrainEvent:
    """A progress record the loop emits (for a progress bar, a log file or a live loss plot)."""

    step: int
    total: int
    loss: float  # running mean of the training objective (config.loss)
    val_rmse: float | None = None
    lr: float = 0.0
    elapsed_s: float = 0.0
    train_rmse: float | None = None  # running RMSE of the training scores (score units), whatever the loss
    images_per_s: float | None = None  # training throughput since the previous event


@dataclass
class TrainResult:
    """``model``: the trained network (the weight average when ``config.ema`` is on); ``last_model``: the weights
    of the last step when an average was kept (else None)."""

    model: FocusScoreNet
    step: int
    history: list[TrainEvent] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    last_model: FocusScoreNet | None = None


def weight_average(model: FocusScoreNet, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics (``decay`` per step; 0.999
    averages about the last 1,000 steps), updated by ``update_parameters(model)`` after each optimiser step.

    Averaging the weights along the path of a long run gives a network that sits nearer the middle of the valley
    the optimiser wanders in (Polyak averaging; Izmailov et al. 2018, "Averaging weights leads to wider optima"),
    which is what a noisy objective such as randomly simulated frames needs. The averaged network is what
    validation sees and what is written out.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train(
    config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a :class:`FocusScoreNet` (new, or a copy of ``init_model``) on ``train_data``: :func:`iter_train` (whose
    keyword ``options`` — checkpoint, resume, init_model, should_stop — it takes) run to the end, ``progress``
    getting each :class:`TrainEvent`."""
    return drive(iter_train(config, train_data, val_data, **options), progress)


def drive(gen: Generator[Any, None, Any], progress: Callable[[Any], None] | None = None) -> Any:
    """Run a progress generator (``iter_train``, ``iter_fine_tune``, ``adapt.iter_adapt``) to the end; return its
    return value. ``progress`` gets every yielded event."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)


@dataclass
class _Run:
    """What one training run holds, built by :func:`_set_up_run`; ``step`` and ``device`` change as it runs
    (``device`` falls back to the CPU when the GPU runs out of memory)."""

    config: TrainConfig
    group: Any  # distributed.Group: this process's rank among the run's processes
    device: torch.device
    model: FocusScoreNet  # the trained weights
    logit_module: _Logit  # the model (+ auxiliary head) as the loss sees it
    optimizer: torch.optim.Optimizer
    ema: Any  # torch.optim.swa_utils.AveragedModel or None
    take_step: _OptimizerStep
    amp: bool
    sampler: DistributedSampler
    loader: DataLoader
    steps_per_epoch: int  # optimiser steps: every fresh batch gives config.echo of them (EchoBuffer)
    total: int  # optimiser steps of the whole run
    val_data: Dataset | None  # validated on process 0 only
    crops: torch.Generator  # windows of the progressive crops
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def scored(self) -> FocusScoreNet:
        """What validation sees and the run returns: the weight average, or the trained weights themselves."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.channels_last else torch.contiguous_format


def _start_model(
    config: TrainConfig, init_model: FocusScoreNet | None, state: Mapping[str, Any] | None
) -> FocusScoreNet:
    """The network training starts from: the checkpoint's (``state``, when resuming), a float copy of
    ``init_model`` (never changed itself), or a new one."""
    import copy

    if init_model is not None and init_model.config.has_remap:  # losses: our 0-10 scale
        raise SemFocusError(
            "this model was adapted to a scale of scores of its own (a remap); train the whole network from "
            "the model it was adapted from (or the default), then adapt again"
        )
    if state is not None:
        return model_from_checkpoint(state)
    if init_model is None:
        return FocusScoreNet(ModelConfig(arch=config.arch, use_magnification=config.use_magnification))
    return copy.deepcopy(init_model).float()


def _data_loader(config: TrainConfig, train_data: Dataset, group: Any, device: torch.device, step: int) -> tuple:
    """(sampler, loader): one permutation per epoch, each process taking every world_size-th frame of it, so N
    processes see the same frames per step as one process would (a plain run is the case N = 1)."""
    workers = config.num_workers
    sampler = DistributedSampler(
        train_data, num_replicas=group.world_size, rank=group.rank, shuffle=True, seed=config.seed + step
    )
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size // group.world_size,
        sampler=sampler,
        drop_last=len(train_data) > config.batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        multiprocessing_context="spawn" if workers else None,
    )
    return sampler, loader


def _set_up_run(
    config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset | None,
    checkpoint: str | Path | None,
    resume: bool,
    init_model: FocusScoreNet | None,
) -> _Run:
    """Join the process group, build (or resume) the model, its optimiser, weight average and data loader."""
    from . import distributed
    from .data import AUX_TARGETS

    torch.manual_seed(config.seed)
    group, device = distributed.setup(select_device(config.device))
    if config.batch_size % group.world_size:
        raise SemFocusError(f"batch size {config.batch_size} does not split between {group.world_size} processes")
    state = load_checkpoint(checkpoint) if resume and checkpoint is not None and Path(checkpoint).is_file() else None
    model = _start_model(config, init_model, state)
    model.to(device)  # before the optimizer's state is loaded, so that it lands on the same device
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    logit_module = _Logit(model, len(AUX_TARGETS) if config.aux_weight > 0 else 0).to(device)
    if logit_module.aux_head is not None and state is not None and "aux_head" in state:
        logit_module.aux_head.load_state_dict(state["aux_head"])
    optimizer = make_optimizer(logit_module, config)  # the model's parameters first, then the auxiliary head's
    ema = weight_average(model, config.ema) if config.ema else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
    network: torch.nn.Module = logit_module
    if group.active:
        network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp = config.amp and device.type in ("cpu", "cuda")
    take_step = _OptimizerStep(
        network, optimizer, ema, device, amp, config.loss, can_move=not group.active, aux_weight=config.aux_weight
    )
    if not group.is_main:
        val_data = None
    elif val_data is not None and len(val_data) <= 4096:
        val_data = _Materialised(val_data)
    step = int(state["step"]) if state is not None else 0
    steps_per_epoch = math.ceil(len(train_data) / config.batch_size) * config.echo
    sampler, loader = _data_loader(config, train_data, group, device, step)
    return _Run(
        config, group, device, model, logit_module, optimizer, ema,
        take_step, amp, sampler, loader, steps_per_epoch, config.max_steps or config.epochs * steps_per_epoch,
        val_data, torch.Generator().manual_seed(config.seed * 7919 + group.rank), step,
        dict(state.get("metrics", {})) if state is not None else {},
    )  # fmt: skip


def _batches(run: _Run, train_data: Dataset) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, magnification, score) on the run's device, epoch after epoch until ``run.total`` steps; each fresh
    batch given ``config.echo`` times (flipped echoes, :class:`EchoBuffer`)."""
    echoes = EchoBuffer(run.config.echo, seed=run.config.seed * 1009 + run.group.rank)
    first_step = run.step
    while run.step < run.total:
        run.sampler.set_epoch((run.step - first_step) // run.steps_per_epoch)
        if hasattr(train_data, "epoch"):
            train_data.epoch = run.step // run.steps_per_epoch  # type: ignore[attr-defined]
        for fresh in run.loader:
            fresh = tuple(t.to(run.device, non_blocking=True) for t in fresh)
            for images, mag, score in echoes.batches(*fresh):
                if images.device != run.device:  # echoes of a batch that came before training moved to the CPU
                    images, mag, score = images.to(run.device), mag.to(run.device), score.to(run.device)
                yield images.contiguous(memory_format=run.memory_format), mag, score  # flips may lose the layout


class _Tally:
    """The run's clock, running means of its loss and training MSE and the events emitted so far. The means stay
    on the device (tensors), read only when an event is emitted: reading a GPU value every step would make the
    CPU wait for the GPU."""

    def __init__(self, step: int):
        self.start = time.monotonic()
        self.last_time, self.last_step = self.start, step
        self.history: list[TrainEvent] = []
        self.loss: Any = None
        self.mse: Any = None
        self.lr = 0.0
        self.restart_means()

    def restart_means(self) -> None:
        self.running_loss, self.running_mse = RunningMean(), RunningMean()

    def add(self, loss: torch.Tensor, mse: torch.Tensor, lr: float) -> None:
        self.loss, self.mse, self.lr = self.running_loss.add(loss), self.running_mse.add(mse), lr

    def event(self, run: _Run, validate: bool) -> TrainEvent:
        """A :class:`TrainEvent` of this step (with the validation RMSE when ``validate``), kept in the history."""
        now = time.monotonic()
        event = TrainEvent(
            run.step, run.total, float(self.loss), None, self.lr, now - self.start, float(self.mse) ** 0.5
        )
        event.images_per_s = (run.step - self.last_step) * run.config.batch_size / max(now - self.last_time, 1e-9)
        if validate:
            pred_v, target_v, _ = predict(run.scored, run.val_data, device=run.device, amp=run.amp)
            event.val_rmse = rmse(pred_v, target_v)
            run.metrics["val_rmse"] = event.val_rmse
        self.history.append(event)
        return event

    def mark(self, step: int) -> None:
        """The consumer has had the event of ``step``: images/s of the next event count from now."""
        self.last_time, self.last_step = time.monotonic(), step


def _train_step(run: _Run, tally: _Tally, images: torch.Tensor, mag: torch.Tensor, score: torch.Tensor) -> bool:
    """One optimiser step at the scheduled learning rate; True when it is the run's last (steps or minutes)."""
    from . import distributed

    config = run.config
    elapsed = time.monotonic() - tally.start
    if config.max_minutes:  # the budget and the schedule follow process 0's clock in every process
        elapsed = distributed.from_main(elapsed, run.group, run.device)
    lr = config.lr * _lr_factor(run.step, run.total, config, elapsed)
    for param_group in run.optimizer.param_groups:
        param_group["lr"] = lr
    if config.progressive:
        images = progressive_crop(images, _progress(run.step, run.total, config, elapsed), run.crops)
    loss, logit = run.take_step(images, mag, score)
    if run.take_step.device != run.device:  # out of GPU memory: training moved to the CPU
        run.device = run.take_step.device
        score = score.to(run.device)
        tally.restart_means()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.step += 1
    tally.add(loss, score_loss(logit.float(), score_column(score), "mse"), lr)
    timed_out = config.max_minutes is not None and elapsed > 60 * config.max_minutes
    return run.step >= run.total or timed_out


def iter_train(
    config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    init_model: FocusScoreNet | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """The training loop as a generator of :class:`TrainEvent` (every ``log_every`` steps and at each
    validation) whose return value is the :class:`TrainResult` — what a napari ``thread_worker`` runs.

    ``should_stop()`` is checked every step: when it turns true the loop raises :class:`CancelledError` and the
    caller's model (``init_model``) is untouched, since training works on a copy.

    With ``config.ema`` > 0 an exponential moving average of the weights (:func:`weight_average`) is kept beside
    the trained weights: validation scores it, checkpoints hold it (``ema``), and it is the result's ``model``.
    """
    from . import distributed

    run = _set_up_run(config, train_data, val_data, checkpoint, resume, init_model)
    tally = _Tally(run.step)
    _train_mode(run.model, config.freeze_batchnorm)
    for images, mag, score in _batches(run, train_data):
        stop = should_stop is not None and should_stop()
        if distributed.any_process(stop, run.group, run.device):
            raise CancelledError(f"training cancelled at step {run.step}")
        last = _train_step(run, tally, images, mag, score)
        validate = run.val_data is not None and (run.step % config.eval_every == 0 or last)
        if run.group.is_main and (run.step % config.log_every == 0 or validate or last):
            yield tally.event(run, validate)
            tally.mark(run.step)
        if run.group.is_main and checkpoint is not None and (run.step % config.checkpoint_every == 0 or last):
            run.metrics["train_loss"] = float(tally.loss)
            save_checkpoint(
                checkpoint, run.model, run.optimizer, run.step, config, run.metrics, ema=run.ema,
                aux_head=run.logit_module.aux_head,
            )  # fmt: skip
        if last:
            break
    distributed.barrier(run.group)  # the last checkpoint is complete before any process moves on
    distributed.teardown(run.group)
    for net in (run.model, run.scored):  # the same object when no average was kept
        net.eval().to(memory_format=torch.contiguous_format).cpu()
    return TrainResult(
        run.scored, run.step, tally.history, run.metrics, last_model=run.model if run.ema is not None else None
    )


# --- fine-tuning entry point (used by the napari training widget and `sem-focus train --labels`) -----------


class _InMemoryLabels(Dataset):
    def __init__(
        self, samples: Sequence[tuple[np.ndarray, float, float]], crop_size: tuple[int, int], train: bool, seed: int = 0
    ):
        self.samples, self.crop_size, self.train, self.seed, self.epoch = list(samples), crop_size, train, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from .data import augment

        image, magnification, score = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        return (
            augment(np.asarray(image, np.float32), self.crop_size, rng),
            normalize_magnification(magnification),
            torch.tensor(float(score), dtype=torch.float32),
        )


def iter_fine_tune(
    model: FocusScoreNet,
    samples: Sequence[tuple[np.ndarray, float, float]],
    steps: int = 200,
    crop_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    lr: float = 1e-4,
    val_fraction: float = 0.2,
    device: str = "auto",
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
) -> Generator[TrainEvent, None, TrainResult]:
    """Fine-tune a copy of the **whole network** (run it with :func:`drive`) on ``(image float [0,1],
    magnification, score)`` samples — the path for users with many labels (with 5-20,
    :func:`napari_sem_focus.training.adapt.iter_adapt` is the one that helps).

    ``crop_size``: random training crops and centre crops for the RMSE (None: the paper's 320x240, what
    scoring uses). With at least 10 samples, ``val_fraction`` of them (every k-th) is held out: the metrics then
    hold the RMSE on those held-out frames before and after (``val_rmse_before``/``val_rmse_after``) and
    ``adopted`` says whether it fell; with fewer, nothing can be checked (``adopted`` None). ``rmse_before`` /
    ``rmse_after`` are on all samples, training frames included. Cancelling (``should_stop``) raises
    :class:`CancelledError`; ``model`` itself is never modified.
    """
    if not samples:
        raise SemFocusError("no labelled frames to fine-tune on")
    samples = list(samples)
    crop_size = crop_size or CROP_SIZE
    val_idx = set(range(0, len(samples), max(2, round(1 / val_fraction)))) if len(samples) >= 10 else set()
    train_set = [s for i, s in enumerate(samples) if i not in val_idx] or samples
    val_set = [s for i, s in enumerate(samples) if i in val_idx]
    eval_all = _InMemoryLabels(samples, crop_size, train=False)
    eval_val = _InMemoryLabels(val_set, crop_size, train=False) if val_set else None
    before = rmse(*predict(model, eval_all)[:2])
    val_before = rmse(*predict(model, eval_val)[:2]) if eval_val is not None else None
    config = recipe(
        "fast",
        lr=lr,
        batch_size=min(batch_size, len(train_set)),
        max_steps=steps,
        warmup_steps=0,
        crop=crop_size,
        device=device,
        eval_every=max(1, steps // 5),
        checkpoint_every=10**9,
        log_every=1,
        seed=seed,
        schedule="constant",
        amp=False,
        channels_last=False,
        freeze_batchnorm=True,
    )
    result = yield from iter_train(
        config,
        _InMemoryLabels(train_set, crop_size, True, seed),
        eval_val,
        init_model=model,
        should_stop=should_stop,
    )
    val_after = rmse(*predict(result.model, eval_val)[:2]) if eval_val is not None else None
    result.metrics.update(
        {
            "regime": "full network",
            "rmse_before": before,
            "rmse_after": rmse(*predict(result.model, eval_all)[:2]),
            "val_rmse_before": val_before,
            "val_rmse_after": val_after,
            "adopted": None if val_after is None else bool(val_after < val_before),
            "n_train": len(train_set),
            "n_val": len(val_set),
        }
    )
    return result
