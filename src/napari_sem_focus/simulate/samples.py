"""The bundled sample focus series, simulated on the fly (deterministic): used by the CLI (`--sample`), the
napari sample-data menu, the README's first command and the tests.

- ``tinball``: tin balls on carbon at 5,000x, 21 focus steps, best focus a third of a step off the middle frame;
- ``grid``: a metal mesh at 1,000x, 15 steps;
- ``astigmatism``: tin balls at 5,000x with 6 µm astigmatism (directional blur on both sides of focus);
- ``noisy_frame``: tin balls at 10,000x where frame 4 was taken as a very fast scan (3 e/px): high-frequency
  metrics rank it sharpest, but the best-focused frame is the middle one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..io.series import FocusSeries, series_from_arrays

SAMPLES: dict[str, dict[str, Any]] = {
    "tinball": {"family": "tinball", "magnification": 5000.0, "steps": 21, "focus_offset_steps": 0.33, "seed": 5},
    "grid": {"family": "grid", "magnification": 1000.0, "steps": 15, "seed": 3},
    "astigmatism": {
        "family": "tinball",
        "magnification": 5000.0,
        "steps": 15,
        "seed": 8,
        "astig_um": 6.0,
        "astig_angle_deg": 35.0,
    },
    "noisy_frame": {"family": "tinball", "magnification": 10000.0, "steps": 11, "seed": 11, "noisy_frame": 4},
}


def sample_series(
    name: str, shape: tuple[int, int] = (768, 1024), progress: Callable[[int, int], None] | None = None
) -> FocusSeries:
    """Simulate the sample series ``name`` (see module docstring) as an in-memory :class:`FocusSeries`."""
    from ..errors import SemFocusError
    from . import simulate_series

    if name not in SAMPLES:
        raise SemFocusError(f"unknown sample '{name}'; choose from {list(SAMPLES)}")
    frames, wds = simulate_series(shape=shape, **SAMPLES[name])
    facts = [f.facts(wd) for f, wd in zip(frames, wds, strict=True)]
    return series_from_arrays([f.image for f in frames], facts, name=f"sample:{name}")
