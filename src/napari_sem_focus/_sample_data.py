"""napari sample data: simulated SEM focus series (see :mod:`napari_sem_focus.simulate.samples`), made on the fly."""

from __future__ import annotations

from typing import Any


def _layer(name: str) -> list[tuple[Any, dict[str, Any], str]]:
    from ._reader import series_layer_data
    from .simulate.samples import sample_series

    return [series_layer_data(sample_series(name))]


def tinball_series() -> list[tuple[Any, dict[str, Any], str]]:
    """Tin balls on carbon, 5,000x, 21 focus steps."""
    return _layer("tinball")


def grid_series() -> list[tuple[Any, dict[str, Any], str]]:
    """Metal grid, 1,000x, 15 focus steps."""
    return _layer("grid")


def astigmatism_series() -> list[tuple[Any, dict[str, Any], str]]:
    """Tin balls, 5,000x, with astigmatism."""
    return _layer("astigmatism")


def noisy_frame_series() -> list[tuple[Any, dict[str, Any], str]]:
    """Tin balls, 10,000x, with one very noisy fast-scan frame."""
    return _layer("noisy_frame")
