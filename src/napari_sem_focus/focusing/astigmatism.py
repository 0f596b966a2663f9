"""Astigmatism seen in the image: the direction in which a frame is sharper, and how it turns through focus.

An astigmatic probe is an ellipse whose long axis turns by 90° through the circle of least confusion: a frame taken
under focus is blurred along one direction, a frame over focus along the perpendicular one. This is how an operator
stigmates ("wobble" the focus and remove the stretching that flips). :func:`image_anisotropy` measures a frame's
direction of blur from its gradients; the difference between a frame over and a frame under focus
(:func:`focus_pair_anisotropy`) points along the beam's residual astigmatism whatever the specimen looks like (the
specimen's own directions are in both frames and cancel), and vanishes when the beam is stigmated.
"""

from __future__ import annotations

import numpy as np

#: The Gaussian (px) that smooths a frame's shot noise before its gradients are taken.
NOISE_SMOOTHING_PX = 2.0


def image_anisotropy(image: np.ndarray, smoothing_px: float = NOISE_SMOOTHING_PX) -> tuple[float, float]:
    """The frame's gradients' direction, as the normalised structure tensor's ``((Jxx - Jyy), 2 Jxy) / (Jxx + Jyy)``
    (dimensionless, within the unit disc: the (cos 2θ, sin 2θ) components of the direction across which the frame
    changes most); (0, 0) for a frame with no gradients."""
    import cv2

    frame = cv2.GaussianBlur(np.asarray(image, np.float32), (0, 0), smoothing_px)
    gx = cv2.Sobel(frame, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(frame, cv2.CV_32F, 0, 1, ksize=3)
    jxx, jyy, jxy = float(np.mean(gx * gx)), float(np.mean(gy * gy)), float(np.mean(gx * gy))
    total = jxx + jyy
    if not np.isfinite(total) or total <= 0:
        return (0.0, 0.0)
    return ((jxx - jyy) / total, 2.0 * jxy / total)


def focus_pair_anisotropy(under: tuple[float, float], over: tuple[float, float]) -> np.ndarray:
    """The anisotropy of a frame over focus minus that of one under focus (same stigmators): along the residual
    astigmatism's axes, zero for a stigmated beam."""
    return np.asarray(over, np.float64) - np.asarray(under, np.float64)
