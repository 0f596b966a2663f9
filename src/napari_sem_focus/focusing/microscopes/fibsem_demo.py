"""fibsem's own demo microscope, its electron images drawn by the virtual SEM at its current working distance.

fibsem-os's ``DemoMicroscope`` runs every part of fibsem's microscope code path (settings, working-distance
read-back, image metadata, reduced areas, live acquisition) but its images are noise with a letter, the same at
every focus. :func:`virtual_demo_microscope` keeps all of that and replaces only the electron image's pixels with a
:class:`~.virtual_sem.VirtualSEM` frame of one specimen, scanned at the microscope's working distance with the
image's field width, resolution and dwell time. So our search (through :mod:`napari_sem_focus.focusing.microscopes`) and
fibsem's own ``run_auto_focus`` run unchanged against focus-dependent images, side by side.

- The focus is hidden: best focus lies at ``true_wd_mm`` (by default ``focus_offset_um`` from the demo's
  starting working distance, 4 mm); :meth:`truth` gives the virtual SEM (defocus, depth of field, true score).
- The model's magnification follows the image's pixel size (field width / width, 127 mm over 1024 px).
- Dose: detected electrons per pixel = beam current x dwell time / e (fibsem's demo: 100 pA; at 0.5 µs
  312 e/px); set the current (``set_beam_current``) for low-dose frames.
- ``bit_depth`` 16 writes uint16 frames (8-bit values x 257), as 16-bit detectors do.
- Astigmatism: the frame's ``astig_um`` at ``astig_angle_deg``; fibsem's ``set_stigmation`` moves the virtual SEM's
  stigmators (hidden gain ``stig_gain_um`` per unit, axes rotated by ``stig_rotation_deg``).

Needs the ``microscope`` extra (fibsem); for tests, benchmarks and ``sem-focus autofocus --microscope fibsem
--manufacturer Demo``.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import numpy as np

from ...io.metadata import magnification_from_pixel_size
from ...simulate.frame import FrameParams
from ...simulate.virtual_sem import VirtualSEM

ELEMENTARY_CHARGE_C = 1.602176634e-19

#: fibsem's demo microscope starts its electron beam at this working distance (mm).
DEMO_START_WD_MM = 4.0


@functools.cache
def _demo_class() -> type:
    """The DemoMicroscope subclass (built once: fibsem is imported only when a demo is made)."""
    from napari_sem_focus.focusing.microscopes.fibsem_sem import import_fibsem

    import_fibsem()
    from fibsem.microscopes.simulator import DemoMicroscope
    from fibsem.structures import BeamType

    class VirtualDemoMicroscope(DemoMicroscope):
        """fibsem's DemoMicroscope whose electron images come from the virtual SEM (module docstring)."""

        def __init__(
            self, system: Any, frame: FrameParams, true_wd_mm: float, bit_depth: int, stigmators: tuple[float, float]
        ):
            super().__init__(system)
            self.frame_template, self.true_wd_mm, self.bit_depth = frame, true_wd_mm, bit_depth
            self.stig_gain_um, self.stig_rotation_deg = stigmators
            self._sems: dict[tuple[Any, ...], VirtualSEM] = {}

        def virtual_sem(self, shape: tuple[int, int], hfw_m: float, dwell_s: float) -> VirtualSEM:
            """The virtual SEM scanning ``shape`` (rows, cols) over ``hfw_m`` at ``dwell_s`` (one per setting)."""
            pixel_nm = hfw_m * 1e9 / shape[1]
            current = float(self.electron_system.beam.beam_current)
            dose = current * dwell_s / ELEMENTARY_CHARGE_C
            key = (shape, round(pixel_nm, 9), round(dose, 6))
            if key not in self._sems:
                params = replace(
                    self.frame_template, magnification=magnification_from_pixel_size(pixel_nm), electrons_per_px=dose
                )
                self._sems[key] = VirtualSEM(
                    params,
                    true_wd_mm=self.true_wd_mm,
                    shape=shape,
                    stig_gain_um=self.stig_gain_um,
                    stig_rotation_deg=self.stig_rotation_deg,
                )
            sem = self._sems[key]
            stigmation = self.electron_system.beam.stigmation  # the demo's stigmators act on the virtual beam
            sem.stigmator = (float(stigmation.x), float(stigmation.y))
            return sem

        def acquire_image(self, image_settings: Any = None, beam_type: Any = None) -> Any:
            image = super().acquire_image(image_settings=image_settings, beam_type=beam_type)
            settings = image.metadata.image_settings
            if settings.beam_type is not BeamType.ELECTRON:
                return image
            width, height = (int(v) for v in settings.resolution)
            sem = self.virtual_sem((height, width), float(settings.hfw), float(settings.dwell_time))
            wd_mm = float(image.metadata.microscope_state.electron_beam.working_distance) * 1e3
            frame = np.rint(sem(wd_mm) * 255.0).astype(np.uint8)
            if self.bit_depth == 16:
                frame = frame.astype(np.uint16) * np.uint16(257)
            if settings.reduced_area is not None:  # as fibsem crops its own images
                area = settings.reduced_area
                x0, y0 = int(area.left * width), int(area.top * height)
                frame = frame[y0 : y0 + int(area.height * height), x0 : x0 + int(area.width * width)]
            image.data = frame
            return image

    return VirtualDemoMicroscope


def virtual_demo_microscope(
    frame: FrameParams | None = None,
    focus_offset_um: float = 0.0,
    true_wd_mm: float | None = None,
    bit_depth: int = 8,
    stig_gain_um: float = 20.0,
    stig_rotation_deg: float = 0.0,
) -> Any:
    """A connected fibsem demo microscope showing the virtual SEM (module docstring).

    Args:
        frame: the specimen (family, seed), probe (d0_nm, alpha_mrad, astigmatism: ``astig_um``,
            ``astig_angle_deg``) and detector; magnification and dose are set by each image's field width,
            resolution, dwell time and the beam current.
        focus_offset_um: the microscope starts this far (µm) from best focus (positive: working distance too long).
        true_wd_mm: best focus (mm), instead of ``focus_offset_um``.
        bit_depth: 8 or 16 (uint16 frames).
        stig_gain_um, stig_rotation_deg: the demo's stigmators (fibsem's ``set_stigmation``) correct this much
            astigmatism (µm per unit) along axes rotated this far (:class:`~.virtual_sem.VirtualSEM`).
    """
    from napari_sem_focus.focusing.microscopes.fibsem_sem import import_fibsem, quiet_fibsem

    if bit_depth not in (8, 16):
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth}")
    fibsem = import_fibsem()
    best = true_wd_mm if true_wd_mm is not None else DEMO_START_WD_MM - focus_offset_um * 1e-3
    with quiet_fibsem():
        settings = fibsem.utils.load_microscope_configuration()
        settings.system.info.manufacturer = "Demo"
        stigmators = (stig_gain_um, stig_rotation_deg)
        microscope = _demo_class()(settings.system, frame or FrameParams(), best, bit_depth, stigmators)
        microscope.connect_to_microscope("localhost", port=7520)
    microscope.set_working_distance(DEMO_START_WD_MM * 1e-3, _electron())
    return microscope


def set_dose(microscope: Any, electrons_per_px: float, dwell_time_us: float) -> None:
    """Set the demo's beam current so that a frame scanned at ``dwell_time_us`` detects ``electrons_per_px``."""
    current_a = electrons_per_px * ELEMENTARY_CHARGE_C / (dwell_time_us * 1e-6)
    microscope.set_beam_current(current_a, _electron())


def _electron() -> Any:
    from fibsem.structures import BeamType

    return BeamType.ELECTRON


def truth(microscope: Any, resolution: tuple[int, int], hfw_um: float, dwell_time_us: float) -> VirtualSEM:
    """The virtual SEM behind ``microscope``'s probe frames of ``resolution`` (width, height), ``hfw_um`` and
    ``dwell_time_us``: its ``defocus_um``, ``depth_of_field_um``, ``true_score`` and ``true_curve`` are the truth
    a benchmark or the CLI reports (the search never sees them)."""
    width, height = resolution
    return microscope.virtual_sem((height, width), hfw_um * 1e-6, dwell_time_us * 1e-6)
