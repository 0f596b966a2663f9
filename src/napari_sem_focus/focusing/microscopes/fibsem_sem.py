"""A fibsem-os microscope's electron beam as the autofocus search's microscope, and its live frames scored.

fibsem-os (``fibsem``, MIT; the optional extra ``microscope``) wraps Thermo Fisher AutoScript, TESCAN and a
``DemoMicroscope`` that runs without hardware. :class:`FibsemSEM` puts one of them behind
:class:`napari_sem_focus.focusing.autofocus.Acquire`:

- **units**: our working distances are mm, fibsem's metres; dwell times µs here, seconds (a float) there; field
  widths µm here, metres there. Converted in this module only.
- **probe frames**: each search frame is scanned with :class:`ProbeSettings` (resolution, dwell, field width,
  optional reduced area) and auto contrast/brightness *off*, so that every frame of a search is comparable
  (``autocontrast=True`` runs the microscope's own routine once, before the first frame).
- **working distance set and read back**: a working distance that did not reach the value asked for (within
  ``wd_tolerance_um``), or a frame whose metadata says it was taken at another working distance, is an error,
  never a score (fibsem-os users met sweeps that scored frames while the WD never moved, and stage moves that
  reset it).
- **the model's magnification** comes from each frame's pixel size (127 mm over 1024 px); 16-bit frames follow
  the reader's intensity rule (:func:`napari_sem_focus.io.intensity.white_level`), one white level for the whole search.
- **refusals**: the ion beam, and an electron beam whose working distance the instrument cannot set.
- **restore**: :func:`iter_microscope_autofocus` puts the starting working distance (and stigmators) back when the
  search is cancelled, fails, raises, times out or is abandoned; live acquisition is stopped for the search and
  resumed after it.

:func:`iter_live_microscope_scores` scores the frames of the microscope's live acquisition as they come (fibsem
emits them from its acquisition thread; the newest frame is scored, older ones waiting are skipped).

``fibsem`` is imported only when a microscope is used: without the extra, :func:`import_fibsem` raises one line
that names it.
"""

from __future__ import annotations

import contextlib
import io as _stdio
import logging
import math
import queue
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import SemFocusError
from ...io.metadata import magnification_from_pixel_size, plausible_magnification

log = logging.getLogger(__name__)

#: Manufacturers this adapter connects to (fibsem's names: "Thermo" is fibsem's ThermoFisher).
MANUFACTURERS = ("Demo", "Thermo", "Tescan")

#: What to install when fibsem is missing.
MICROSCOPE_EXTRA_HINT = (
    "driving a microscope needs fibsem-os, the 'microscope' extra: pip install 'napari-sem-focus[microscope]'"
)

#: A working distance read back further than this from the value asked for (µm) is an error.
WD_TOLERANCE_UM = 0.5

#: Seconds a restore waits for a frame still running on the microscope (one that timed out) to finish.
RESTORE_WAIT_S = 10.0

#: Statuses of a search after which the starting working distance is put back.
RESTORED_STATUSES = ("cancelled", "acquire failed")


@contextlib.contextmanager
def quiet_fibsem() -> Iterator[None]:
    """While fibsem imports, connects or builds a microscope: its prints (its configuration path) kept out of our
    output (e.g. ``--json``), and its set-up warnings on the root logger (e.g. no fluorescence module on the
    demo) not shown."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(_stdio.StringIO()):
            yield
    finally:
        logging.disable(previous)


def import_fibsem() -> Any:
    """Import ``fibsem`` quietly (:func:`quiet_fibsem`), or raise :class:`SemFocusError` naming the extra to
    install."""
    try:
        with quiet_fibsem():
            import fibsem
            import fibsem.structures
            import fibsem.utils
    except ImportError as err:
        raise SemFocusError(f"{MICROSCOPE_EXTRA_HINT} ({err})") from err
    return fibsem


def connect(
    manufacturer: str = "Demo",
    ip_address: str | None = None,
    config_path: str | Path | None = None,
) -> Any:
    """Connect to a microscope through fibsem's ``setup_session``; returns fibsem's microscope object.

    Args:
        manufacturer: 'Demo' (fibsem's simulator, no hardware), 'Thermo' (AutoScript) or 'Tescan'.
        ip_address: the microscope PC's address (default: the one in the configuration file).
        config_path: a fibsem microscope-configuration YAML (default: fibsem's own).

    fibsem's logging set-up is skipped (it would take over the process's logging); its session folder is a
    temporary one (nothing is saved there by this plugin).
    """
    if manufacturer not in MANUFACTURERS:
        raise SemFocusError(f"unknown manufacturer '{manufacturer}'; choose from {list(MANUFACTURERS)}")
    if config_path is not None and not Path(config_path).is_file():
        raise SemFocusError(f"'{config_path}': no such fibsem configuration file")
    fibsem = import_fibsem()
    session = Path(tempfile.gettempdir()) / "napari-sem-focus-fibsem"
    try:
        with quiet_fibsem():
            microscope, _ = fibsem.utils.setup_session(
                session_path=session,
                config_path=config_path,
                setup_logging=False,
                ip_address=ip_address,
                manufacturer=manufacturer,
            )
    except Exception as err:  # vendor SDK missing, no route to the microscope PC, bad configuration...
        where = f" at {ip_address}" if ip_address else ""
        raise SemFocusError(f"could not connect to the {manufacturer} microscope{where}: {err}") from err
    return microscope


@dataclass(frozen=True)
class ProbeSettings:
    """How each search frame is scanned.

    Attributes:
        resolution: (width, height) in pixels; fibsem's own autofocus probe is 768x512.
        dwell_time_us: pixel dwell time (µs).
        hfw_um: horizontal field width (µm); None keeps the microscope's current field width.
        reduced_area: (left, top, width, height) as fractions of the frame, or None for the full frame.
    """

    resolution: tuple[int, int] = (768, 512)
    dwell_time_us: float = 0.5
    hfw_um: float | None = None
    reduced_area: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        width, height = self.resolution
        if width < 64 or height < 64:
            raise SemFocusError(f"probe resolution {width}x{height} px is too small (at least 64x64)")
        if not (math.isfinite(self.dwell_time_us) and self.dwell_time_us > 0):
            raise SemFocusError(f"dwell time must be a positive number of µs, got {self.dwell_time_us}")
        if self.hfw_um is not None and not (math.isfinite(self.hfw_um) and self.hfw_um > 0):
            raise SemFocusError(f"field width must be a positive number of µm, got {self.hfw_um}")
        if self.reduced_area is not None:
            left, top, w, h = self.reduced_area
            if not (0 <= left < 1 and 0 <= top < 1 and 0 < w <= 1 - left and 0 < h <= 1 - top):
                raise SemFocusError(f"reduced area {self.reduced_area} must lie inside the frame (fractions 0-1)")

    def scan_time_s(self) -> float:
        """Seconds one probe frame takes to scan (dwell x pixels, full frame)."""
        width, height = self.resolution
        return self.dwell_time_us * 1e-6 * width * height


def parse_resolution(text: str) -> tuple[int, int]:
    """'768x512' -> (768, 512)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise SemFocusError(f"resolution must be WIDTHxHEIGHT in pixels, e.g. 768x512; got '{text}'") from err
    return width, height


class FibsemBeam:
    """A fibsem microscope's electron beam, its settings in our units: working distance (mm, read back and
    checked) and stigmators (the microscope's own units).

    Args:
        microscope: a connected fibsem microscope (:func:`connect`).
        beam: 'electron' (the ion beam is refused: the score is learned on SEM images, and FIB focus is
            preset-driven on some instruments).
        wd_tolerance_um: largest accepted difference (µm) between the working distance asked for and the one read
            back (and the one in the frame's metadata).
    """

    def __init__(self, microscope: Any, beam: str = "electron", wd_tolerance_um: float = WD_TOLERANCE_UM):
        import_fibsem()
        from fibsem.structures import BeamType

        if str(getattr(beam, "name", beam)).lower() != "electron":
            raise SemFocusError(
                "the ion beam is refused: the learned score is trained on SEM (electron) images; "
                "focus the electron beam"
            )
        self.beam = BeamType.ELECTRON
        if not microscope.is_working_distance_settable(self.beam):
            raise SemFocusError(
                f"{type(microscope).__name__} cannot set the electron beam's working distance: no search is possible"
            )
        self.microscope = microscope
        self.wd_tolerance_mm = wd_tolerance_um * 1e-3

    def working_distance_mm(self) -> float:
        """The electron beam's working distance now (mm)."""
        return float(self.microscope.get_working_distance(self.beam)) * 1e3

    def set_working_distance_mm(self, working_distance_mm: float) -> float:
        """Set the working distance (mm) and return the value read back (mm); an error if it did not get there."""
        if not math.isfinite(working_distance_mm) or working_distance_mm <= 0:
            raise SemFocusError(f"working distance {working_distance_mm} mm is not a possible setting")
        readback = self.microscope.set_working_distance(float(working_distance_mm) * 1e-3, self.beam)
        readback_mm = float(readback) * 1e3 if readback is not None else self.working_distance_mm()
        if abs(readback_mm - working_distance_mm) > self.wd_tolerance_mm:
            raise SemFocusError(
                f"the working distance did not move: asked for {working_distance_mm:.6f} mm, the microscope reports "
                f"{readback_mm:.6f} mm (tolerance {self.wd_tolerance_mm * 1e3:g} µm)"
            )
        return readback_mm

    def stigmation(self) -> tuple[float, float]:
        """The electron beam's stigmator setting (x, y), in the microscope's own units."""
        point = self.microscope.get_stigmation(self.beam)
        return float(point.x), float(point.y)

    def set_stigmation(self, x: float, y: float, tolerance: float = 1e-6) -> tuple[float, float]:
        """Set the stigmators (microscope units) and return the values read back; an error if they did not move."""
        from fibsem.structures import Point

        if not (math.isfinite(x) and math.isfinite(y)):
            raise SemFocusError(f"stigmator setting ({x}, {y}) is not a number")
        point = self.microscope.set_stigmation(Point(float(x), float(y)), self.beam)
        got = (float(point.x), float(point.y)) if point is not None else self.stigmation()
        if abs(got[0] - x) > tolerance + 1e-6 * abs(x) or abs(got[1] - y) > tolerance + 1e-6 * abs(y):
            raise SemFocusError(f"the stigmators did not move: asked for ({x:g}, {y:g}), read back {got}")
        return got


class FibsemSEM(FibsemBeam):
    """A fibsem microscope's electron beam as an ``acquire(working_distance_mm) -> image`` for the search.

    Args:
        microscope: a connected fibsem microscope (:func:`connect`).
        probe: how search frames are scanned.
        beam, wd_tolerance_um: as for :class:`FibsemBeam`.
        autocontrast: run the microscope's auto contrast/brightness once before a search (off by default: the
            detector settings stay the user's).
    """

    def __init__(
        self,
        microscope: Any,
        probe: ProbeSettings | None = None,
        beam: str = "electron",
        wd_tolerance_um: float = WD_TOLERANCE_UM,
        autocontrast: bool = False,
    ):
        super().__init__(microscope, beam, wd_tolerance_um)
        self.probe = probe or ProbeSettings()
        self.autocontrast = autocontrast
        self.last_magnification: float | None = None
        self.last_pixel_size_nm: float | None = None
        self._white: float | None = None  # the white level of 16-bit frames, one per search
        self._busy = threading.Lock()  # held while a frame is set up and scanned (a timed-out one may still run)

    def field_width_um(self) -> float:
        """Horizontal field width of a probe frame (µm)."""
        if self.probe.hfw_um is not None:
            return self.probe.hfw_um
        return float(self.microscope.get_field_of_view(self.beam)) * 1e6

    def magnification(self) -> float:
        """The model's magnification (127 mm over 1024 px) of the last frame, or of a probe frame before any."""
        if self.last_magnification is not None:
            return self.last_magnification
        pixel_nm = self.field_width_um() * 1e3 / self.probe.resolution[0]
        return plausible_magnification(magnification_from_pixel_size(pixel_nm))

    def image_settings(self) -> Any:
        """fibsem ``ImageSettings`` of one probe frame (units of fibsem: metres, seconds)."""
        from fibsem.structures import FibsemRectangle, ImageSettings

        area = FibsemRectangle(*self.probe.reduced_area) if self.probe.reduced_area else None
        return ImageSettings(
            resolution=tuple(int(v) for v in self.probe.resolution),
            dwell_time=float(self.probe.dwell_time_us) * 1e-6,  # fibsem needs a float
            hfw=float(self.field_width_um()) * 1e-6,
            beam_type=self.beam,
            autocontrast=False,
            save=False,
            reduced_area=area,
        )

    # --- the Acquire protocol --------------------------------------------------------------------------------
    def __call__(
        self, working_distance_mm: float, stig_x: float | None = None, stig_y: float | None = None
    ) -> np.ndarray:
        """Set the working distance (mm) — and the stigmators when given (microscope units; read back) —, scan a
        probe frame, return it as float32 [0, 1]."""
        with self._busy:
            readback_mm = self.set_working_distance_mm(working_distance_mm)
            if stig_x is not None or stig_y is not None:
                now = self.stigmation()
                self.set_stigmation(now[0] if stig_x is None else stig_x, now[1] if stig_y is None else stig_y)
            image = self.microscope.acquire_image(image_settings=self.image_settings())
        frame_wd = image_working_distance_mm(image)
        if frame_wd is not None and abs(frame_wd - readback_mm) > self.wd_tolerance_mm:
            raise SemFocusError(
                f"the frame was taken at {frame_wd:.6f} mm, not at the {readback_mm:.6f} mm just set: the working "
                "distance changed during the scan (on some instruments a stage move resets it)"
            )
        pixel_nm = image_pixel_size_nm(image)
        if pixel_nm is not None:
            self.last_pixel_size_nm = pixel_nm
            self.last_magnification = plausible_magnification(magnification_from_pixel_size(pixel_nm))
        frame, self._white = frame_to_float(image.data, self._white)
        return frame

    # --- a search's frame ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def search_session(self, resume_live: bool = True) -> Iterator[None]:
        """For the length of a search: live acquisition stopped (resumed after), one white level, and the
        microscope's auto contrast/brightness once at the start when asked for."""
        live = bool(self.microscope.is_acquiring)
        live_beam = _live_beam(self.microscope, self.beam) if live else None
        if live:
            self.microscope.stop_acquisition()
        self._white = None
        try:
            if self.autocontrast:
                self.microscope.autocontrast(self.beam)
            yield
        finally:
            if live and resume_live:
                self.microscope.start_acquisition(live_beam)

    def restore(
        self, working_distance_mm: float, stigmation: tuple[float, float] | None = None, wait_s: float | None = None
    ) -> str | None:
        """Put the working distance (and stigmators) back; None when done, else why it failed (for the user).

        A frame that timed out may still be running on the microscope: the restore waits up to ``wait_s`` for it,
        so that its working distance cannot land after the restored one (default :data:`RESTORE_WAIT_S`)."""
        idle = self._busy.acquire(timeout=RESTORE_WAIT_S if wait_s is None else wait_s)
        try:
            self.set_working_distance_mm(working_distance_mm)
            if stigmation is not None:
                self.set_stigmation(*stigmation)
        except Exception as err:
            log.error("could not restore the working distance %.6f mm: %s", working_distance_mm, err)
            return f"could not restore the working distance {working_distance_mm:.6f} mm ({err}): set it by hand"
        finally:
            if idle:
                self._busy.release()
        if not idle:
            return (
                f"{SET_BACK_WHILE_BUSY} {working_distance_mm:.6f} mm while a frame was still running on the "
                "microscope: check it when the microscope answers again"
            )
        return None


#: How :meth:`FibsemSEM.restore` begins its note when it set the working distance back beside a hung frame.
SET_BACK_WHILE_BUSY = "working distance set back to"


def is_restored(problem: str | None) -> bool:
    """Whether :meth:`FibsemSEM.restore`'s answer means the working distance was set back (perhaps beside a frame
    still hanging on the microscope) rather than failing."""
    return problem is None or problem.startswith(SET_BACK_WHILE_BUSY)


def _live_beam(microscope: Any, default: Any) -> Any:
    """The beam fibsem's live acquisition runs on (its acquisition thread's argument; ``default`` if unknown), so
    that live imaging resumes on the beam it ran on, the ion beam included."""
    args = getattr(getattr(microscope, "_acquisition_thread", None), "_args", ())
    return args[0] if args else default


def image_pixel_size_nm(image: Any) -> float | None:
    """Pixel size (nm) stated in a fibsem image's metadata, or None."""
    size = getattr(getattr(image, "metadata", None), "pixel_size", None)
    value = getattr(size, "x", None)
    return float(value) * 1e9 if value and math.isfinite(value) and value > 0 else None


def image_working_distance_mm(image: Any) -> float | None:
    """Electron-beam working distance (mm) in a fibsem image's microscope state, or None."""
    state = getattr(getattr(image, "metadata", None), "microscope_state", None)
    wd = getattr(getattr(state, "electron_beam", None), "working_distance", None)
    return float(wd) * 1e3 if wd is not None and math.isfinite(wd) and wd > 0 else None


def frame_to_float(data: Any, white: float | None = None) -> tuple[np.ndarray, float | None]:
    """A microscope frame (uint8/uint16, or float) as float32 [0, 1] and the white level used: unsigned integers
    are divided by the reader's white level (:func:`napari_sem_focus.io.intensity.white_level`), never lower than
    ``white`` (the level of earlier frames of the same search, so that all of them share one scale)."""
    from ...io.intensity import white_level

    raw = np.asarray(data)
    if raw.ndim != 2:
        raise SemFocusError(f"the microscope returned an image of shape {raw.shape}, not a 2-D image")
    if np.issubdtype(raw.dtype, np.unsignedinteger):
        level = max(white_level(raw.dtype, float(raw.max())), white or 0.0)
        return (raw.astype(np.float32) / np.float32(level)), level
    from ..autofocus import frame_as_float

    return frame_as_float(raw), white


def _restoring(sem: FibsemSEM, search: Generator[Any, None, Any], resume_live: bool) -> Generator[Any, None, Any]:
    """Run ``search`` (a search generator on ``sem``) in a search session; put the starting working distance and
    stigmators back when it ends 'cancelled' or 'acquire failed', raises, or is closed before its end. Returns
    its result with the restore noted in its message (and ``restored`` set)."""
    start_wd, start_stig = sem.working_distance_mm(), sem.stigmation()
    finished = False
    with sem.search_session(resume_live):
        try:
            result = yield from search
            finished = True
        finally:
            if not finished:
                problem = sem.restore(start_wd, start_stig)
                if problem:
                    log.error(problem)
        if result.status in RESTORED_STATUSES:
            problem = sem.restore(start_wd, start_stig)
            if is_restored(problem):
                result.restored = True
                result.message += f"; working distance (and stigmators) restored to the start, {start_wd:.6f} mm"
            if problem is not None:
                result.message += f"; {problem}"
    return result


def _default_timeout(sem: FibsemSEM, options: dict[str, Any]) -> dict[str, Any]:
    return {"acquire_timeout_s": 30.0 + 10 * sem.probe.scan_time_s()} | options


def iter_microscope_autofocus(
    sem: FibsemSEM, scorer: Any, resume_live: bool = True, **options: Any
) -> Generator[Any, None, Any]:
    """:func:`napari_sem_focus.focusing.autofocus.iter_autofocus` on a fibsem microscope, from its working distance now.

    Yields each scan; returns the ``AutofocusResult``. The starting working distance and stigmators are put back
    when the search ends 'cancelled' or 'acquire failed' (an acquisition that raised or exceeded
    ``acquire_timeout_s``; default 30 s plus ten probe frames' scan time), when it raises, and when the
    generator is closed before its end (e.g. a napari worker quit); ``final_wd_mm`` says where the microscope
    was left, the message that it was restored. ``options`` are ``iter_autofocus``'s.
    """
    from ..autofocus import iter_autofocus

    search = iter_autofocus(sem, sem.working_distance_mm(), scorer, **_default_timeout(sem, options))
    result = yield from _restoring(sem, search, resume_live)
    if result.restored:
        result.final_wd_mm = result.start_wd_mm
    return result


def iter_microscope_focus_and_stigmate(
    sem: FibsemSEM, scorer: Any, resume_live: bool = True, **options: Any
) -> Generator[Any, None, Any]:
    """:func:`napari_sem_focus.focusing.stigmation.iter_focus_and_stigmate` on a fibsem microscope, from its working
    distance and stigmators now, with the same restore guarantees as :func:`iter_microscope_autofocus` (``final`` says
    where the beam was left). ``options`` are ``iter_focus_and_stigmate``'s (e.g. ``stig_range`` in the microscope's
    stigmator units)."""
    from ..stigmation import iter_focus_and_stigmate

    start_wd, start_stig = sem.working_distance_mm(), sem.stigmation()
    search = iter_focus_and_stigmate(sem, start_wd, start_stig, scorer, **_default_timeout(sem, options))
    result = yield from _restoring(sem, search, resume_live)
    if result.restored:
        result.final = result.start
    return result


def _run(search: Generator[Any, None, Any]) -> Any:
    while True:
        try:
            next(search)
        except StopIteration as stop:
            return stop.value


def microscope_autofocus(sem: FibsemSEM, scorer: Any, **options: Any) -> Any:
    """:func:`iter_microscope_autofocus` run to the end; returns the ``AutofocusResult``."""
    return _run(iter_microscope_autofocus(sem, scorer, **options))


def microscope_focus_and_stigmate(sem: FibsemSEM, scorer: Any, **options: Any) -> Any:
    """:func:`iter_microscope_focus_and_stigmate` run to the end; returns the ``FocusStigResult``."""
    return _run(iter_microscope_focus_and_stigmate(sem, scorer, **options))


# --- live acquisition ---------------------------------------------------------------------------------------


def iter_live_images(
    microscope: Any,
    should_stop: Callable[[], bool] | None = None,
    start: bool = True,
    poll_s: float = 0.2,
    max_frames: int | None = None,
) -> Generator[Any, None, None]:
    """fibsem images of the electron beam's live acquisition, newest first when the consumer is slower than the
    scan (older waiting frames are skipped). Starts live acquisition when it is not running (and stops it at the
    end when it started it); ``should_stop`` is checked every ``poll_s`` seconds."""
    import_fibsem()
    from fibsem.structures import BeamType

    waiting: queue.Queue[Any] = queue.Queue(maxsize=1)

    def on_image(image: Any) -> None:  # fibsem's acquisition thread
        with contextlib.suppress(queue.Empty):
            waiting.get_nowait()  # keep only the newest
        with contextlib.suppress(queue.Full):
            waiting.put_nowait(image)

    signal = microscope.sem_acquisition_signal
    signal.connect(on_image)
    started = False
    count = 0
    try:
        if start and not microscope.is_acquiring:
            microscope.start_acquisition(BeamType.ELECTRON)
            started = True
        while max_frames is None or count < max_frames:
            if should_stop is not None and should_stop():
                return
            try:
                image = waiting.get(timeout=poll_s)
            except queue.Empty:
                continue
            count += 1
            yield image
    finally:
        signal.disconnect(on_image)
        if started:
            microscope.stop_acquisition()


def iter_live_microscope_scores(
    microscope: Any,
    magnification: float | None = None,
    weights: str | None = None,
    mode: str = "structure",
    device: str = "cpu",
    **live: Any,
) -> Generator[Any, None, None]:
    """Score each frame of the microscope's live acquisition (:func:`iter_live_images`; ``live`` takes its
    options) as a :class:`napari_sem_focus.focusing.live.LiveFrame` named ``live_0000``, ``live_0001``...: the model's
    magnification from the frame's pixel size, else ``magnification``; the working distance from its metadata."""
    from ...scoring.infer import score_frames
    from ...scoring.weights import load_model
    from ..live import LiveFrame

    model = load_model(weights, device)
    white: float | None = None
    for index, image in enumerate(iter_live_images(microscope, **live)):
        name = Path(f"live_{index:04d}")
        pixel_nm = image_pixel_size_nm(image)
        mag = magnification_from_pixel_size(pixel_nm) if pixel_nm else magnification
        if mag is None:
            yield LiveFrame(index, name, error="the frame states no pixel size; give a magnification")
            continue
        frame, white = frame_to_float(image.data, white)
        (result,) = score_frames([frame], mag, model, mode, device=device)
        yield LiveFrame(index, name, result, mag, image_working_distance_mm(image), image=frame)
