"""The paper's network: ResNet trunk + normalised magnification -> three FC layers with ReLU -> score in [0, 10].

``FocusScoreNet`` (Yang et al., Fig. 1):

- trunk: torchvision ``resnet18(weights=None)`` (or ``resnet50`` for the paper's baseline [2]); nothing is
  downloaded. SEM images are grey: the stem convolution takes **one channel** (``conv1`` is rebuilt with
  ``in_channels=1``; otherwise identical), which is what a 3-channel stem fed three copies of the grey image
  computes after summing its kernels over the channels, at a third of the cost.
- input scaling: pixels in [0, 1] (the :mod:`napari_sem_focus.io.series` rule) mapped by ``(x - 0.5) / 0.25``. No
  per-image normalisation: a black, white or flat frame must stay recognisable as such (score 0).
- global-average-pooled trunk features (512 for ResNet18) concatenated with the normalised magnification
  (:func:`normalize_magnification`), then ``Linear(513, 256) - ReLU - Linear(256, 64) - ReLU - Linear(64, 1)``,
  and ``10 * sigmoid`` maps the output to [0, 10]. A model adapted to a user's own scale
  (:mod:`napari_sem_focus.training.adapt`) also carries a remap of the frame score (:func:`remap_scores`): a line
  (``score_remap``) or a monotone curve (``score_curve``).
- ``use_magnification=False`` drops the magnification input (the paper's ablation / ResNet50 baseline).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

#: The paper's magnification range, mapped to [0, 1] on a log scale.
MAG_RANGE = (500.0, 10_000.0)
#: Normalised values are clamped to this interval (200x ... ~360,000x).
MAG_NORM_CLAMP = (-0.3, 3.0)
#: Magnifications the default weights were trained on (warn outside).
TRAINED_MAG_RANGE = (200.0, 100_000.0)


def normalize_magnification(magnification: float | torch.Tensor) -> torch.Tensor:
    """Map magnification to the network's input: ``log(M / 500) / log(10000 / 500)``, clamped.

    500x -> 0, 10,000x -> 1 (the paper's [0, 1] range), log-linear in between and beyond, clamped to
    :data:`MAG_NORM_CLAMP`. The magnification is the vendor-independent one (127 mm over a 1024-px frame) that
    :func:`napari_sem_focus.io.metadata.magnification_from_pixel_size` gives.
    """
    m = torch.as_tensor(magnification, dtype=torch.float32)
    lo, hi = MAG_RANGE
    norm = torch.log(m.clamp_min(1.0) / lo) / math.log(hi / lo)
    return norm.clamp(*MAG_NORM_CLAMP)


def check_magnification(magnification: float) -> str | None:
    """A warning text when ``magnification`` lies outside the trained range, else None."""
    lo, hi = TRAINED_MAG_RANGE
    if not lo <= magnification <= hi:
        text = f"magnification {magnification:.0f}x is outside the trained range {lo:.0f}-{hi:.0f}x"
        warnings.warn(text, stacklevel=2)
        return text
    return None


#: The remap of a trained model: none, (lo, hi) = (0, 10).
IDENTITY_REMAP = (0.0, 10.0)
#: Where the ends of an adapted model's remap may lie (score units); the remapped score stays within [0, 10].
REMAP_END_LIMITS = (-10.0, 20.0)


def remap_scores(
    scores: Any, remap: tuple[float, float] = IDENTITY_REMAP, curve: tuple[tuple[float, float], ...] = ()
) -> np.ndarray:
    """Scores on our 0-10 scale mapped to a user's scale, clipped to [0, 10]. By a straight line whose ends at our
    0 and 10 are ``remap = (lo, hi)``: ``lo + (hi - lo) s / 10``; or, when ``curve`` is given, by the monotone
    curve through its knots ``(our score, your score)`` (linear between knots, flat beyond the first and last).
    The identity (no curve, :data:`IDENTITY_REMAP`) returns the scores unchanged. Applied to a frame's pooled
    score and, for display, to each tile's."""
    s = np.asarray(scores, dtype=np.float64)
    if curve:
        ours, yours = np.asarray(curve, dtype=np.float64).T
        return np.clip(np.interp(s, ours, yours), 0.0, 10.0)
    if tuple(remap) == IDENTITY_REMAP:
        return s
    lo, hi = remap
    return np.clip(lo + (hi - lo) * s / 10.0, 0.0, 10.0)


def check_curve(curve: Any) -> tuple[tuple[float, float], ...]:
    """A monotone remap curve as knots ``((our score, your score), ...)``: at least two, our scores strictly
    increasing within [0, 10], the user's non-decreasing within [0, 10]; raises ValueError otherwise."""
    knots = tuple((float(x), float(y)) for x, y in curve)
    ours = np.array([k[0] for k in knots])
    yours = np.array([k[1] for k in knots])
    if (
        len(knots) < 2
        or not np.all(np.isfinite(ours) & np.isfinite(yours))
        or np.any(np.diff(ours) <= 0)
        or np.any(np.diff(yours) < 0)
        or ours.min() < 0
        or ours.max() > 10
        or yours.min() < 0
        or yours.max() > 10
    ):
        raise ValueError(f"score curve {knots} is not a monotone curve of knots within 0-10")
    return knots


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`FocusScoreNet` (stored with weights and checkpoints).

    ``score_remap`` (lo, hi): how a frame's score on our scale maps to the scale of the user the model was adapted
    to (:func:`remap_scores`; :mod:`napari_sem_focus.training.adapt`: a lab whose best frame is a 7.5 has hi = 7.5, a
    stricter lab lo < 0). :data:`IDENTITY_REMAP` for every trained model. ``score_curve``: instead of the line, a
    monotone curve through knots (our score, the user's score) (:func:`check_curve`): a user whose scale bends
    (stricter at the top than at the bottom); empty for a line.
    """

    arch: str = "resnet18"
    use_magnification: bool = True
    hidden: tuple[int, int] = (256, 64)
    score_remap: tuple[float, float] = IDENTITY_REMAP
    score_curve: tuple[tuple[float, float], ...] = ()

    @property
    def has_remap(self) -> bool:
        """Whether scores are mapped to a user's own scale (a line other than the identity, or a curve)."""
        return bool(self.score_curve) or tuple(self.score_remap) != IDENTITY_REMAP

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["score_remap"] = [float(v) for v in self.score_remap]
        d["score_curve"] = [[float(x), float(y)] for x, y in self.score_curve]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        remap = tuple(float(v) for v in d.get("score_remap", IDENTITY_REMAP))
        if len(remap) != 2 or not REMAP_END_LIMITS[0] <= remap[0] < remap[1] <= REMAP_END_LIMITS[1]:
            raise ValueError(f"score remap {remap} is not (lo, hi) with lo < hi within {REMAP_END_LIMITS}")
        return cls(
            arch=d.get("arch", "resnet18"),
            use_magnification=bool(d.get("use_magnification", True)),
            hidden=tuple(d.get("hidden", (256, 64))),
            score_remap=remap,
            score_curve=check_curve(d["score_curve"]) if d.get("score_curve") else (),
        )  # type: ignore[arg-type]


class FocusScoreNet(nn.Module):
    """ResNet trunk -> [features, normalised magnification] -> 3 FC layers with ReLU -> score in [0, 10]."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        import torchvision

        self.config = config or ModelConfig()
        builders = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}
        if self.config.arch not in builders:
            raise ValueError(f"unknown arch '{self.config.arch}'; choose from {list(builders)}")
        trunk = builders[self.config.arch](weights=None)
        trunk.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        n_features = trunk.fc.in_features
        trunk.fc = nn.Identity()
        self.trunk = trunk
        extra = 1 if self.config.use_magnification else 0
        h1, h2 = self.config.hidden
        self.head = nn.Sequential(
            nn.Linear(n_features + extra, h1),
            nn.ReLU(inplace=True),
            nn.Linear(h1, h2),
            nn.ReLU(inplace=True),
            nn.Linear(h2, 1),
        )

    def trunk_features(self, image: torch.Tensor) -> torch.Tensor:
        """The trunk's pooled features (N, 512 for ResNet18) of images (N, 1, H, W) in [0, 1]."""
        return self.trunk((image - 0.5) / 0.25)

    def logit(
        self, image: torch.Tensor, mag_norm: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The head's output before ``10 * sigmoid`` (N,), float32: what the ``bce`` training loss works on.
        ``features``: the images' :meth:`trunk_features` when already computed."""
        if features is None:
            features = self.trunk_features(image)
        if self.config.use_magnification:
            if mag_norm is None:
                raise ValueError("this model needs the normalised magnification of each image")
            features = torch.cat([features, mag_norm.reshape(-1, 1).to(features.dtype)], dim=1)
        return self.head(features).squeeze(1).float()

    def forward(self, image: torch.Tensor, mag_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Scores in [0, 10] on our scale for images (N, 1, H, W) in [0, 1] and normalised magnifications (N,);
        a frame's score on the user's scale is :meth:`remap` of its pooled crop scores."""
        return score_from_logit(self.logit(image, mag_norm))

    def remap(self, scores: Any) -> np.ndarray:
        """Frame (or tile) scores on our scale mapped by this model's ``score_remap`` or ``score_curve``
        (:func:`remap_scores`)."""
        return remap_scores(scores, self.config.score_remap, self.config.score_curve)


def score_from_logit(logit: torch.Tensor) -> torch.Tensor:
    """The head's output mapped to the focus score in [0, 10]: ``10 * sigmoid(logit)``."""
    return 10.0 * torch.sigmoid(logit)


def build_focus_net(arch: str = "resnet18", use_magnification: bool = True) -> FocusScoreNet:
    """Builder in torchvision's style: ``build_focus_net()`` is the paper's model, untrained."""
    return FocusScoreNet(ModelConfig(arch=arch, use_magnification=use_magnification))
