"""Vendor metadata of SEM images: magnification, pixel size, working distance, beam settings.

Each vendor stores its acquisition settings differently. This module reads them with tifffile's parsers where
tifffile has one and with small parsers where it has none, and maps them onto one :class:`SemMetadata`.
A value the file does not state stays ``None``: nothing is invented. Values we *derive* (e.g. a JEOL pixel size
from its magnification) are listed in ``SemMetadata.derived``.

Sources
-------
- FEI / Thermo Fisher (Nova, Helios, Quanta, Scios...): TIFF tag 34682, ``TiffFile.fei_metadata`` (INI text).
  Magnification = ``[Image] MagCanvasRealWidth / [Scan] HorFieldsize``. Data-bar height from
  ``[PrivateFei] DatabarHeight`` or, when that is 0 although a bar is present, ``ImageLength - [Image] ResolutionY``.
- Zeiss (SmartSEM): TIFF tag 34118, ``TiffFile.sem_metadata`` (``ap_mag``, ``ap_pixel_size``, ``ap_wd``...).
- TESCAN: TIFF tag 50431, a JPEG-2000 thumbnail followed by ``Key=Value`` lines (``Magnification``,
  ``PixelSizeX`` in m, ``WD`` in m, ``HV`` in V, ``ImageStripSize`` = info-strip rows).
- Hitachi ``.txt`` sidecar (``[SemImageFile]``, ``Key=Value``): ``Magnification``, ``PixelSize`` (nm),
  ``WorkingDistance`` (µm), ``AcceleratingVoltage`` (V), ``SignalName``.
- fibsem-os (OpenFIBSEM: Thermo Fisher, TESCAN, demo): JSON in the ImageDescription (``FibsemImage.save``):
  ``pixel_size.x`` (m), ``microscope_state.electron_beam.working_distance`` (m) and ``voltage`` (V),
  ``image.dwell_time`` (s), ``image.beam_type``; the ion beam's fields for an ion image.
- JEOL ``.txt`` sidecar next to the image: ``$CM_MAG``, ``$$SM_WD`` (mm), ``$CM_ACCEL_VOLT``
  (kV), ``$CM_FULL_SIZE``. JEOL's pixel size is derived as 128 mm / (magnification x image width in pixels)
  (JEOL's 128 mm reference photo width for 1280 px; this gives the 2 µm that JEOL's own software reports for the
  example file).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

#: Reference display width (mm) that defines the vendor-independent magnification M = W_ref / HFW.
#: 127 mm is the classic 4x5" Polaroid width that FEI/Thermo use (``MagCanvasRealWidth = 0.127 m``).
REFERENCE_WIDTH_MM = 127.0
#: Frame width (pixels) that defines the pixel size of a magnification in the simulator and the model.
REFERENCE_FRAME_WIDTH_PX = 1024

#: The magnifications of the paper's training and test images (Yang et al.): the RMSE tables report these.
PAPER_MAGNIFICATIONS = (500.0, 1000.0, 2000.0, 5000.0, 10000.0)

#: Magnifications (127 mm reference) an SEM can have: a field of view between 127 mm and 25 nm. A value outside
#: this range — in a file's metadata or given by the user — is an error, not a magnification.
PLAUSIBLE_MAGNIFICATION = (1.0, 5.0e6)


def plausible_magnification(magnification: float) -> float:
    """``magnification`` (127 mm over 1024 px) as a float if an SEM can have it (:data:`PLAUSIBLE_MAGNIFICATION`),
    else a :class:`SemFocusError`: the one check for a magnification given by a user or taken from a file."""
    from ..errors import SemFocusError

    low, high = PLAUSIBLE_MAGNIFICATION
    if not (math.isfinite(magnification) and low <= magnification <= high):
        raise SemFocusError(
            f"magnification must be between {low:g}x and {high:g}x (127 mm over 1024 px), got {magnification:g}"
        )
    return float(magnification)


#: Physical ranges of the other numeric settings (pixel size nm, working distance mm, kV, dwell µs); a value
#: outside its range in a file is dropped with a note (a corrupt or placeholder field, e.g. WD -1 or pixel size 0).
PLAUSIBLE_RANGES = {
    "magnification": PLAUSIBLE_MAGNIFICATION,
    "pixel_size_nm": (1e-3, 1e8),
    "working_distance_mm": (1e-3, 1e3),
    "high_voltage_kv": (1e-3, 1e3),
    "dwell_time_us": (1e-6, 1e8),
}

#: JEOL's reference photo width (mm) at 1280 px, used to derive a pixel size from ``$CM_MAG``.
JEOL_REFERENCE_WIDTH_MM = 128.0


def pixel_size_nm(magnification: float, frame_width_px: int = REFERENCE_FRAME_WIDTH_PX) -> float:
    """Pixel size (nm) of a frame ``frame_width_px`` wide at magnification ``magnification`` (127 mm reference)."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    return REFERENCE_WIDTH_MM * 1e6 / (magnification * frame_width_px)


def field_width_um(magnification: float, frame_width_px: int) -> float:
    """Horizontal field width (µm) of a frame ``frame_width_px`` wide whose pixel size is that of ``magnification``
    (127 mm over 1024 px): what to set on a microscope for the model to see ``magnification``."""
    return pixel_size_nm(magnification) * frame_width_px * 1e-3


def magnification_from_pixel_size(pixel_nm: float, frame_width_px: int = REFERENCE_FRAME_WIDTH_PX) -> float:
    """Inverse of :func:`pixel_size_nm`: the magnification whose ``frame_width_px``-wide frame has this pixel size."""
    if pixel_nm <= 0:
        raise ValueError(f"pixel size must be positive, got {pixel_nm}")
    return REFERENCE_WIDTH_MM * 1e6 / (pixel_nm * frame_width_px)


@dataclass(frozen=True)
class SemMetadata:
    """Acquisition settings of one SEM frame, in fixed units. ``None`` means "not stated in the file".

    Attributes:
        vendor: "FEI/Thermo", "Zeiss", "TESCAN", "JEOL" or None.
        instrument: the microscope model as written by the vendor.
        magnification: the vendor's own magnification (definitions differ between vendors).
        pixel_size_nm: pixel width in nanometres.
        working_distance_mm: working distance in millimetres.
        high_voltage_kv: accelerating voltage in kilovolts.
        dwell_time_us: pixel dwell time in microseconds.
        detector: detector name/mode, e.g. "ETD SE", "InLens".
        databar_rows: data-bar height in rows as stated by the metadata (None when not stated).
        derived: names of fields computed from other fields rather than read.
    """

    vendor: str | None = None
    instrument: str | None = None
    magnification: float | None = None
    pixel_size_nm: float | None = None
    working_distance_mm: float | None = None
    high_voltage_kv: float | None = None
    dwell_time_us: float | None = None
    detector: str | None = None
    databar_rows: int | None = None
    derived: tuple[str, ...] = field(default_factory=tuple)

    def plausible(self) -> tuple[SemMetadata, list[str]]:
        """This metadata with every numeric setting outside its physical range (:data:`PLAUSIBLE_RANGES`, or not
        finite) set to None, and a note per dropped value."""
        kept, notes = {}, []
        for name, (low, high) in PLAUSIBLE_RANGES.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                kept[name] = None
                notes.append(f"metadata {name} = {value:g} is not physically possible and was ignored")
        return (replace(self, **kept) if kept else self), notes

    def reference_magnification(self, width_px: int) -> float | None:
        """Vendor-independent magnification ``REFERENCE_WIDTH_MM / HFW`` from the pixel size.

        Args:
            width_px: image width in pixels (HFW = pixel_size_nm x width_px).

        Returns None when the pixel size is unknown.
        """
        if self.pixel_size_nm is None or width_px <= 0:
            return None
        hfw_mm = self.pixel_size_nm * width_px * 1e-6
        return REFERENCE_WIDTH_MM / hfw_mm

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON, napari ``layer.metadata``)."""
        d = asdict(self)
        d["derived"] = list(self.derived)
        return d


def _num(value: Any) -> float | None:
    """Float of ``value`` or None when it is missing, empty, non-numeric or not finite."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _positive(value: Any, scale: float = 1.0) -> float | None:
    v = _num(value)
    return v * scale if v is not None and v > 0 else None


# --- FEI / Thermo Fisher -------------------------------------------------------------------------------------


def parse_fei(fei: dict[str, dict[str, Any]], image_length: int | None = None) -> SemMetadata:
    """Map tifffile's ``fei_metadata`` dict onto :class:`SemMetadata`.

    Args:
        fei: sections -> key -> value, as returned by ``TiffFile.fei_metadata``.
        image_length: TIFF ImageLength (rows incl. data bar), used when ``DatabarHeight`` is 0.
    """
    scan = fei.get("Scan", {}) or fei.get("EScan", {})
    image = fei.get("Image", {})
    beam = fei.get("Beam", {})
    ebeam = fei.get("EBeam", {})
    system = fei.get("System", {})
    det = fei.get("Detectors", {})
    priv = fei.get("PrivateFei", {})

    hfw_m = _positive(scan.get("HorFieldsize")) or _positive(ebeam.get("HFW"))
    canvas_m = _positive(image.get("MagCanvasRealWidth"))
    mag = canvas_m / hfw_m if (canvas_m and hfw_m) else None
    wd_m = _positive(fei.get("Stage", {}).get("WorkingDistance")) or _positive(ebeam.get("WD"))
    hv_v = _positive(beam.get("HV")) or _positive(ebeam.get("HV"))
    detector = " ".join(str(det[k]) for k in ("Name", "Mode") if det.get(k)) or None

    bar = _num(priv.get("DatabarHeight"))
    databar = int(bar) if bar else None
    res_y = _num(image.get("ResolutionY"))
    if not databar and image_length and res_y and image_length > res_y:
        databar = int(image_length - res_y)
    instrument = system.get("SystemType") or system.get("Type")
    return SemMetadata(
        vendor="FEI/Thermo",
        instrument=str(instrument) if instrument else None,
        magnification=mag,
        pixel_size_nm=_positive(scan.get("PixelWidth"), 1e9),
        working_distance_mm=wd_m * 1e3 if wd_m else None,
        high_voltage_kv=hv_v / 1e3 if hv_v else None,
        dwell_time_us=_positive(scan.get("Dwelltime"), 1e6),
        detector=detector,
        databar_rows=databar,
        derived=("magnification",) if mag else (),
    )


# --- Zeiss --------------------------------------------------------------------------------------------------

_LENGTH_TO_NM = {"pm": 1e-3, "nm": 1.0, "µm": 1e3, "um": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}
_LENGTH_TO_MM = {k: v * 1e-6 for k, v in _LENGTH_TO_NM.items()}
_TIME_TO_US = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "μs": 1.0, "ms": 1e3, "s": 1e6}


def _zeiss_value(sem: dict[str, Any], key: str, units: dict[str, float] | None = None) -> float | None:
    entry = sem.get(key)
    if not isinstance(entry, tuple) or len(entry) < 2:
        return None
    value = _num(entry[1])
    if value is None or units is None:
        return value
    unit = str(entry[2]).strip() if len(entry) > 2 else ""
    return value * units[unit] if unit in units else None


def _zeiss_magnification(sem: dict[str, Any]) -> float | None:
    """``ap_mag`` is either (``'Mag'``, 188, ``'X'``) or text such as ``'50.00 K X'``."""
    entry = sem.get("ap_mag")
    if not isinstance(entry, tuple) or len(entry) < 2:
        return None
    if (value := _num(entry[1])) is not None:
        return value if value > 0 else None
    match = re.match(r"\s*([0-9.]+)\s*([KkMm]?)\s*X", str(entry[1]))
    if not match:
        return None
    return float(match.group(1)) * {"": 1.0, "k": 1e3, "m": 1e6}[match.group(2).lower()]


def parse_zeiss(sem: dict[str, Any]) -> SemMetadata:
    """Map tifffile's ``sem_metadata`` (Zeiss CZ_SEM tag 34118) onto :class:`SemMetadata`."""
    kv = _zeiss_value(sem, "ap_actualkv", {"kV": 1.0, "V": 1e-3})
    detector = None
    for key in ("dp_detector_type", "dp_detector_channel"):
        if isinstance(sem.get(key), tuple) and len(sem[key]) > 1:
            detector = str(sem[key][1])
            break
    serial = sem.get("sv_serial_number")
    return SemMetadata(
        vendor="Zeiss",
        instrument=str(serial[1]) if isinstance(serial, tuple) and len(serial) > 1 else None,
        magnification=_zeiss_magnification(sem),
        pixel_size_nm=_zeiss_value(sem, "ap_pixel_size", _LENGTH_TO_NM),
        working_distance_mm=_zeiss_value(sem, "ap_wd", _LENGTH_TO_MM),
        high_voltage_kv=kv,
        dwell_time_us=_zeiss_value(sem, "dp_dwell_time", _TIME_TO_US),
        detector=detector,
    )


# --- TESCAN -------------------------------------------------------------------------------------------------

_TESCAN_LINE = re.compile(rb"([A-Za-z][A-Za-z0-9_]*)=([ -~]*)\r\n")


def parse_tescan_tag(tag_bytes: bytes) -> dict[str, str]:
    """``Key=Value`` pairs of TESCAN tag 50431 (after its JPEG-2000 thumbnail)."""
    return {k.decode(): v.decode().strip() for k, v in _TESCAN_LINE.findall(tag_bytes)}


def parse_tescan(fields: dict[str, str], model: str | None = None) -> SemMetadata:
    """Map the TESCAN key/value text onto :class:`SemMetadata` (lengths in m, HV in V, dwell in s)."""
    strip = _num(fields.get("ImageStripSize"))
    detector = fields.get("Detector") or None
    return SemMetadata(
        vendor="TESCAN",
        instrument=fields.get("Device") or model,
        magnification=_positive(fields.get("Magnification")),
        pixel_size_nm=_positive(fields.get("PixelSizeX"), 1e9),
        working_distance_mm=_positive(fields.get("WD"), 1e3),
        high_voltage_kv=_positive(fields.get("HV"), 1e-3),
        dwell_time_us=_positive(fields.get("DwellTime"), 1e6),
        detector=detector,
        databar_rows=int(strip) if strip and strip > 0 else None,
    )


# --- JEOL sidecar -------------------------------------------------------------------------------------------


def parse_jeol_sidecar(text: str, width_px: int | None = None) -> SemMetadata:
    """Parse a JEOL ``$CM_FORMAT JEOL-SEM`` sidecar text file.

    Args:
        text: the sidecar's content.
        width_px: image width in pixels; with ``$CM_MAG`` it gives the derived pixel size.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("$"):
            key, _, value = line.lstrip("$").partition(" ")
            fields[key] = value.strip()
    mag = _positive(fields.get("CM_MAG"))
    if width_px is None and "CM_FULL_SIZE" in fields:
        width_px = int(_num(fields["CM_FULL_SIZE"].split()[0]) or 0) or None
    pixel = JEOL_REFERENCE_WIDTH_MM * 1e6 / (mag * width_px) if mag and width_px else None
    detector = fields.get("CM_DETECTOR_NAME") or fields.get("CM_SIGNAL_NAME") or None
    instrument = fields.get("CM_INSTRUMENT")
    return SemMetadata(
        vendor="JEOL",
        instrument=f"JEOL {instrument}" if instrument else None,
        magnification=mag,
        pixel_size_nm=pixel,
        working_distance_mm=_positive(fields.get("SM_WD")),
        high_voltage_kv=_positive(fields.get("CM_ACCEL_VOLT")),
        detector=detector,
        derived=("pixel_size_nm",) if pixel else (),
    )


_HITACHI_NUMBER = re.compile(r"^\s*([-+0-9.eE]+)\s*([A-Za-zµ]*)")
_HITACHI_LENGTH_TO_MM = {"": 1e-3, "um": 1e-3, "µm": 1e-3, "mm": 1.0, "nm": 1e-6}
_HITACHI_VOLT_TO_KV = {"": 1e-3, "volt": 1e-3, "v": 1e-3, "kv": 1.0}


def _hitachi_value(text: str | None, units: dict[str, float] | None = None) -> float | None:
    match = _HITACHI_NUMBER.match(text or "")
    if not match:
        return None
    value = _num(match.group(1))
    if value is None or units is None:
        return value
    unit = match.group(2).lower()
    return value * units[unit] if unit in units else None


def parse_hitachi_sidecar(text: str) -> SemMetadata:
    """Parse a Hitachi ``[SemImageFile]`` sidecar (``Key=Value`` lines).

    Used keys: ``InstructName``, ``Magnification``, ``PixelSize`` (nm), ``WorkingDistance`` (µm unless a unit
    follows), ``AcceleratingVoltage`` (V unless a unit follows), ``SignalName``.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return SemMetadata(
        vendor="Hitachi",
        instrument=fields.get("InstructName") or None,
        magnification=_positive(_hitachi_value(fields.get("Magnification"))),
        pixel_size_nm=_positive(_hitachi_value(fields.get("PixelSize"))),
        working_distance_mm=_positive(_hitachi_value(fields.get("WorkingDistance"), _HITACHI_LENGTH_TO_MM)),
        high_voltage_kv=_positive(_hitachi_value(fields.get("AcceleratingVoltage"), _HITACHI_VOLT_TO_KV)),
        detector=fields.get("SignalName") or None,
    )


def find_sidecar(image_path: Path) -> Path | None:
    """A JEOL/Hitachi ``.txt`` sidecar with the image's stem next to it, if any."""
    for suffix in (".txt", ".TXT"):
        candidate = image_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def read_sidecar(image_path: Path, width_px: int | None) -> SemMetadata | None:
    """Metadata from a JEOL or Hitachi ``.txt`` sidecar, or None if there is none or its format is unknown."""
    sidecar = find_sidecar(image_path)
    if sidecar is None:
        return None
    text = sidecar.read_text(encoding="latin-1", errors="replace")
    if "$CM_" in text or "$$SM_" in text:
        return parse_jeol_sidecar(text, width_px)
    if "[SemImageFile]" in text:
        return parse_hitachi_sidecar(text)
    return None


# --- fibsem-os -----------------------------------------------------------------------------------------------


def fibsem_description(description: str | None) -> dict[str, Any] | None:
    """The metadata dict fibsem-os writes as JSON into a TIFF's ImageDescription (``FibsemImage.save``), or None
    when the description is something else."""
    if not description or '"pixel_size"' not in description or '"microscope_state"' not in description:
        return None
    try:
        data = json.loads(description)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("image"), dict) else None


def parse_fibsem(data: dict[str, Any]) -> SemMetadata:
    """Map fibsem-os image metadata (lengths in m, voltage in V, dwell in s) onto :class:`SemMetadata`: the pixel
    size, and the working distance, voltage and detector of the beam that took the image (``image.beam_type``)."""
    image = data.get("image") or {}
    beam_name = str(image.get("beam_type") or "ELECTRON").upper()
    state = data.get("microscope_state") or {}
    prefix = "ion" if beam_name == "ION" else "electron"
    beam = state.get(f"{prefix}_beam") or {}
    detector = state.get(f"{prefix}_detector") or {}
    info = data.get("system_info") or {}
    pixel = data.get("pixel_size") or {}
    names = " ".join(str(detector[k]) for k in ("type", "mode") if detector.get(k))
    instrument = " ".join(str(info[k]) for k in ("manufacturer", "model") if info.get(k))
    return SemMetadata(
        vendor="fibsem-os",
        instrument=instrument or None,
        pixel_size_nm=_positive(pixel.get("x") if isinstance(pixel, dict) else None, 1e9),
        working_distance_mm=_positive(beam.get("working_distance"), 1e3),
        high_voltage_kv=_positive(beam.get("voltage"), 1e-3),
        dwell_time_us=_positive(image.get("dwell_time"), 1e6),
        detector=f"{names} ({prefix} beam)" if names else f"{prefix} beam",
    )


def read_tiff_metadata(tif: Any) -> SemMetadata:
    """Vendor metadata of an open ``tifffile.TiffFile`` (first page), or an empty :class:`SemMetadata`."""
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    if tif.is_fei and tif.fei_metadata:
        return parse_fei(tif.fei_metadata, image_length=page.shape[0])
    if tif.is_sem and tif.sem_metadata:
        return parse_zeiss(tif.sem_metadata)
    tag = page.tags.get(50431)
    if tag is not None and isinstance(tag.value, bytes):
        fields = parse_tescan_tag(tag.value)
        if fields:
            model = page.tags.get(272)
            return parse_tescan(fields, str(model.value).strip() if model is not None else None)
    fibsem = fibsem_description(getattr(page, "description", None))
    if fibsem is not None:
        return parse_fibsem(fibsem)
    return SemMetadata()
