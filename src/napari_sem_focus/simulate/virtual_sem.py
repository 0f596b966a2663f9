"""A virtual SEM: the simulator behind the :class:`napari_sem_focus.autofocus.Acquire` protocol.

``VirtualSEM(...)(working_distance_mm)`` returns the frame (float [0, 1]) that a microscope would scan at that
working distance: one specimen (fixed by ``seed``), fixed magnification, dose and detector; the working distance
of best focus is hidden in the object (``true_wd_mm``) and only :meth:`defocus_um` (for benchmarks and tests)
reads it. Each scan draws fresh shot noise. Optional astigmatism and a focus drift per scan (the sample or the
stage creeping) make the search harder. Brightness and contrast are set once, from the in-focus image, as an SEM's
automatic contrast/brightness does before a focus search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from . import labels, optics
from .frame import FrameParams, render
from .series import auto_contrast_params
from .specimens import Specimen, make_specimen


@dataclass
class VirtualSEM:
    """A simulated microscope whose focus is set by the working distance (mm).

    Args:
        frame: the specimen, beam and detector of every scan (:class:`.frame.FrameParams`: family, magnification
            (127 mm over a 1024-px frame), electrons_per_px, astig_um, d0_nm, seed...); each scan sets its defocus
            from the working distance. Its ``seed`` fixes the specimen and the noise sequence.
        true_wd_mm: working distance of best focus (mm), hidden from the search.
        drift_um_per_scan: the best focus moves by this much (µm) after every scan.
        shape: (rows, cols) of a scan.
    """

    frame: FrameParams = field(default_factory=FrameParams)
    true_wd_mm: float = 5.0
    drift_um_per_scan: float = 0.0
    shape: tuple[int, int] = (384, 512)
    scans: int = field(default=0, init=False)
    _spec: Specimen | None = field(default=None, init=False, repr=False)
    _params: FrameParams | None = field(default=None, init=False, repr=False)

    def _setup(self) -> tuple[Specimen, FrameParams]:
        if self._spec is None or self._params is None:
            base = replace(self.frame, drift_px=0.0)
            pixel = base.pixel_nm
            spec = make_specimen(
                base.family,
                np.random.default_rng(base.seed),
                self.shape,
                pixel,
                pixel * optics.REFERENCE_FRAME_WIDTH_PX,
            )
            self._spec, self._params = spec, auto_contrast_params(spec, base, base.seed)
        return self._spec, self._params

    @property
    def feature_nm(self) -> float:
        """The specimen's characteristic feature size (nm)."""
        return self._setup()[0].feature_nm

    def defocus_um(self, working_distance_mm: float) -> float:
        """Focus error (µm) at ``working_distance_mm`` now (the truth the search does not see)."""
        return (working_distance_mm - self.true_wd_mm) * 1e3

    def depth_of_field_um(self) -> float:
        """Half-width (µm) of the depth of field: the defocus at which the true score falls from 10 to 9."""
        spec, params = self._setup()
        diameter = labels.diameter_for_blur_score(9.0, params.d0_nm, params.pixel_nm, spec.feature_nm)
        return optics.defocus_for_diameter_um(diameter, params.d0_nm, params.alpha_mrad)

    def visible_range_um(self) -> float:
        """Defocus (µm) at which the specimen stops being recognisable (true score 1)."""
        spec, params = self._setup()
        diameter = labels.diameter_for_blur_score(1.0, params.d0_nm, params.pixel_nm, spec.feature_nm)
        return optics.defocus_for_diameter_um(diameter, params.d0_nm, params.alpha_mrad)

    def search_setup(self, start_offset_um: float) -> tuple[float, float]:
        """(start working distance mm, search half-range µm) for a search started ``start_offset_um`` from focus:
        the range covers where the specimen is recognisable, and the focus from the start."""
        start = self.true_wd_mm + start_offset_um * 1e-3
        return start, max(self.visible_range_um(), 1.5 * abs(start_offset_um))

    def true_curve(self, low_mm: float, high_mm: float, n: int = 201) -> tuple[list[float], list[float]]:
        """(working distances mm, true scores) across ``low_mm``-``high_mm``: what a search plot draws beneath."""
        wds = [float(w) for w in np.linspace(low_mm, high_mm, n)]
        return wds, [self.true_score(w) for w in wds]

    def true_score(self, working_distance_mm: float) -> float:
        """The simulator's label of a scan at ``working_distance_mm`` (noise-free part of the truth)."""
        spec, params = self._setup()
        p = replace(params, defocus_um=self.defocus_um(working_distance_mm))
        return labels.blur_score(p.effective_diameter_nm(), p.d0_nm, p.pixel_nm, spec.feature_nm)

    def __call__(self, working_distance_mm: float) -> np.ndarray:
        """Scan one frame at ``working_distance_mm``; float32 in [0, 1]."""
        if not math.isfinite(working_distance_mm):
            raise ValueError(f"working distance {working_distance_mm} mm is not a number")
        spec, params = self._setup()
        self.scans += 1
        frame_params = replace(params, defocus_um=self.defocus_um(working_distance_mm), noise_seed=self.scans)
        frame = render(spec, frame_params, np.random.default_rng([self.frame.seed, self.scans]))
        self.true_wd_mm += self.drift_um_per_scan * 1e-3
        return frame.image.astype(np.float32) / 255.0
