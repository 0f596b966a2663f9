"""A virtual SEM: the simulator behind the :class:`napari_sem_focus.focusing.autofocus.Acquire` protocol.

``VirtualSEM(...)(working_distance_mm)`` returns the frame (float [0, 1]) that a microscope would scan at that
working distance: one specimen (fixed by ``seed``), fixed magnification, dose and detector; the working distance
of best focus is hidden in the object (``true_wd_mm``) and only :meth:`defocus_um` (for benchmarks and tests)
reads it. Each scan draws fresh shot noise. Optional astigmatism and a focus drift per scan (the sample or the
stage creeping) make the search harder. Brightness and contrast are set once, from the in-focus image, as an SEM's
automatic contrast/brightness does before a focus search.

**Stigmators.** ``VirtualSEM(...)(working_distance_mm, stig_x, stig_y)`` also sets the two stigmators (arbitrary
units, as on an instrument; omitted: they stay where they are). The beam's own astigmatism (``frame.astig_um``,
the focal-line separation, at ``frame.astig_angle_deg``) is the vector ``A = a (cos 2θ, sin 2θ)`` (µm); the
stigmators add ``-g R(φ) (x, y)``, with a gain ``g`` (µm per unit, ``stig_gain_um``) and a rotation ``φ`` of their
axes (``stig_rotation_deg``) that the search is not told. The residual ``A - g R(φ) s`` is the astigmatism the
frame is scanned with. Since the probe's diameter adds defocus and astigmatism in quadrature
(``d² = d0² + (2α)² (dz² + |residual|²/4)``, :mod:`.optics`), the true score depends on ``dz² + |residual|²/4``:
within the depth of field *and* stigmated means ``dz² + |residual|²/4 <= DoF²`` (:meth:`in_focus_and_stigmated`).
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
        stig_gain_um: focal-line separation (µm) one stigmator unit corrects (hidden from the search).
        stig_rotation_deg: rotation of the stigmators' axes against the astigmatism's ``(cos 2θ, sin 2θ)`` axes
            (hidden from the search).
        stigmator: the stigmators' setting now (x, y; units).
    """

    frame: FrameParams = field(default_factory=FrameParams)
    true_wd_mm: float = 5.0
    drift_um_per_scan: float = 0.0
    shape: tuple[int, int] = (384, 512)
    stig_gain_um: float = 20.0
    stig_rotation_deg: float = 0.0
    stigmator: tuple[float, float] = (0.0, 0.0)
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
        """(working distances mm, true scores) across ``low_mm``-``high_mm`` at the stigmators' setting now: what
        a search plot draws beneath."""
        wds = [float(w) for w in np.linspace(low_mm, high_mm, n)]
        return wds, [self.true_score(w) for w in wds]

    # --- stigmators ------------------------------------------------------------------------------------------
    def _correction_um(self, stigmator: tuple[float, float]) -> tuple[float, float]:
        """The astigmatism vector (µm, in the (cos 2θ, sin 2θ) axes) the stigmators' setting corrects."""
        phi = math.radians(self.stig_rotation_deg)
        x, y = stigmator
        g = self.stig_gain_um
        return g * (math.cos(phi) * x - math.sin(phi) * y), g * (math.sin(phi) * x + math.cos(phi) * y)

    def residual_astigmatism(self, stigmator: tuple[float, float] | None = None) -> tuple[float, float]:
        """(focal-line separation µm, angle °) left at the stigmators' ``stigmator`` setting (default: now)."""
        a, theta = self.frame.astig_um, math.radians(self.frame.astig_angle_deg)
        cx, cy = self._correction_um(self.stigmator if stigmator is None else stigmator)
        rx, ry = a * math.cos(2 * theta) - cx, a * math.sin(2 * theta) - cy
        return math.hypot(rx, ry), math.degrees(math.atan2(ry, rx) / 2) % 180.0

    def best_stigmator(self) -> tuple[float, float]:
        """The stigmators' setting that cancels the astigmatism (the truth a stigmation search looks for)."""
        a, theta = self.frame.astig_um, math.radians(self.frame.astig_angle_deg)
        ax, ay = a * math.cos(2 * theta), a * math.sin(2 * theta)
        phi, g = math.radians(self.stig_rotation_deg), self.stig_gain_um
        return (math.cos(phi) * ax + math.sin(phi) * ay) / g, (-math.sin(phi) * ax + math.cos(phi) * ay) / g

    def in_focus_and_stigmated(self, working_distance_mm: float, stigmator: tuple[float, float]) -> bool:
        """Whether a scan there is within the depth of field and stigmated: true score >= 9 (module docstring)."""
        return self.true_score(working_distance_mm, stigmator) >= 9.0

    def _params_at(self, working_distance_mm: float, stigmator: tuple[float, float] | None) -> FrameParams:
        astig, angle = self.residual_astigmatism(stigmator)
        _, params = self._setup()
        return replace(params, defocus_um=self.defocus_um(working_distance_mm), astig_um=astig, astig_angle_deg=angle)

    def true_score(self, working_distance_mm: float, stigmator: tuple[float, float] | None = None) -> float:
        """The simulator's label of a scan at ``working_distance_mm`` with the stigmators at ``stigmator`` (default:
        their setting now): the noise-free part of the truth."""
        spec, _ = self._setup()
        p = self._params_at(working_distance_mm, stigmator)
        return labels.blur_score(p.effective_diameter_nm(), p.d0_nm, p.pixel_nm, spec.feature_nm)

    def __call__(
        self, working_distance_mm: float, stig_x: float | None = None, stig_y: float | None = None
    ) -> np.ndarray:
        """Scan one frame at ``working_distance_mm`` (and the stigmators at ``stig_x``, ``stig_y`` when given);
        float32 in [0, 1]."""
        if not math.isfinite(working_distance_mm):
            raise ValueError(f"working distance {working_distance_mm} mm is not a number")
        if stig_x is not None or stig_y is not None:
            x = self.stigmator[0] if stig_x is None else float(stig_x)
            y = self.stigmator[1] if stig_y is None else float(stig_y)
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"stigmator setting ({x}, {y}) is not a number")
            self.stigmator = (x, y)
        spec, _ = self._setup()
        self.scans += 1
        frame_params = replace(self._params_at(working_distance_mm, None), noise_seed=self.scans)
        frame = render(spec, frame_params, np.random.default_rng([self.frame.seed, self.scans]))
        self.true_wd_mm += self.drift_um_per_scan * 1e-3
        return frame.image.astype(np.float32) / 255.0
