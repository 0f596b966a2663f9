"""One image file: its frames (TIFF pages, decoded whole or band by band; PNG, JPEG, BMP), grey conversion, and
what its header says (shape, dtype, vendor metadata, the simulator's truth) — the machinery under
:class:`~napari_sem_focus.io.series.FocusSeries`.
"""

from __future__ import annotations

import atexit
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FrameTooLargeError, InvalidImageError, UnreadableImageError
from .metadata import SemMetadata, read_sidecar, read_tiff_metadata

TIFF_SUFFIXES = (".tif", ".tiff")


OTHER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


IMAGE_SUFFIXES = TIFF_SUFFIXES + OTHER_SUFFIXES


#: Frames with more pixels than this (64 Mpx, e.g. 8192x8192) are *large*: stitched maps and very high-resolution
#: scans. They are read, converted and scored band by band (:meth:`FocusSeries.frame_bands`,
#: :mod:`napari_sem_focus.scoring.large_frames`) and never held whole as float.
LARGE_FRAME_PIXELS = 64 * 2**20


#: Key of the JSON ImageDescription that our simulator writes into each TIFF page.
DESCRIPTION_KEY = "napari_sem_focus"


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders ``frame_2`` before ``frame_10`` and ``-5`` before ``+5`` in file names."""
    parts = re.split(r"([-+]?\d+(?:\.\d+)?)", path.name)
    key: list[Any] = []
    for part in parts:
        try:
            key.append((0, float(part), ""))
        except ValueError:
            key.append((1, 0.0, part.lower()))
    return key


def to_grey(image: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """A 2D grey image from 2D grey, (H, W, 3|4) colour, or (H, W, 1) data; notes what was done."""
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            _note(notes, "colour file(s) with identical R, G, B channels read as grey")
            return np.ascontiguousarray(rgb[..., 0])
        _note(notes, f"'{path.name}': RGB converted to grey (ITU-R BT.601 luma)")
        luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        if np.issubdtype(image.dtype, np.integer):
            return np.rint(luma).astype(image.dtype)
        return luma
    if image.ndim != 2:
        raise InvalidImageError(f"'{path}': expected a 2D grey or RGB image, got an array of shape {image.shape}")
    return image


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _palette_to_grey(index: np.ndarray, colormap: np.ndarray, path: Path, notes: list[str]) -> np.ndarray:
    """Apply a TIFF palette (3 x 2**bits, uint16) and return grey values."""
    cmap = np.asarray(colormap, dtype=np.float64)
    n = cmap.shape[1]
    ramp = np.arange(n) * (65535.0 / (n - 1))
    if np.allclose(cmap, ramp[None, :], atol=257):  # a plain grey ramp: the indices are the grey values
        return index
    _note(notes, f"'{path.name}': palette image with coloured entries converted to grey (BT.601 luma)")
    lut = np.array([0.299, 0.587, 0.114]) @ cmap / 65535.0 * (n - 1)
    return np.rint(lut[index]).astype(index.dtype)


def _open_tiff(path: Path) -> Any:
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError) as err:
        raise UnreadableImageError(path, f"not a readable TIFF ({err})") from err


def _tiff_pages(tif: Any) -> list[Any]:
    """Full-resolution pages of a TIFF (thumbnails and reduced images skipped)."""
    pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
    if not pages:
        raise UnreadableImageError(tif.filename, "corrupt TIFF: no readable image pages")
    first = pages[0].shape
    return [p for p in pages if p.shape == first]


def _page_truth(page: Any) -> dict[str, Any]:
    """Per-frame facts our simulator stores as JSON in the page's ImageDescription."""
    desc = page.description if hasattr(page, "description") else ""
    if not desc or DESCRIPTION_KEY not in desc:
        return {}
    try:
        data = json.loads(desc)
    except json.JSONDecodeError:
        return {}
    return data.get(DESCRIPTION_KEY, {}) if isinstance(data, dict) else {}


def _with_truth(meta: SemMetadata, truth: dict[str, Any]) -> SemMetadata:
    """Fill metadata fields that the simulator stated in the page description."""
    known = {k: truth[k] for k in ("magnification", "pixel_size_nm", "working_distance_mm") if k in truth}
    if not known:
        return meta
    return replace(meta, vendor=meta.vendor or "napari-sem-focus simulator", **known)


def _decode_failure(page: Any, page_index: int, err: Exception) -> str:
    """Why a TIFF page could not be decoded: a missing codec package (with the command that installs it) or
    damaged data. tifffile decodes LZW, PackBits, JPEG and most other compressions SEMs write only with the
    ``imagecodecs`` package (a dependency of this plugin); an environment without it must not call a valid
    file corrupt."""
    if "imagecodecs" in str(err):
        compression = getattr(getattr(page, "compression", None), "name", "this")
        return (
            f"page {page_index} is {compression}-compressed and decoding it needs the 'imagecodecs' package, "
            "which is missing or broken here: pip install imagecodecs"
        )
    return f"page {page_index} is truncated or corrupt ({err})"


#: Compressed bytes read from the file in one pass when a page is decoded band by band (tifffile's default, 256 MB,
#: would be held beside the bands of a giant mosaic).
SEGMENT_BUFFER_BYTES = 16 * 2**20


class _OpenTiffs:
    """The last few TIFF files read, kept open with their page lists, so that reading frame after frame of a long
    stack does not re-open the file and walk every page each time (which made a frame of a 1,000-page stack cost
    175 ms instead of 0.1 ms: benchmarks/bench_long_stack.py). A file is known by its path, size and modification
    time, so one that changed (a frame still being written) is opened afresh. Reads of one file are serialised
    (tifffile shares one file handle per file); the least recently used file is closed beyond ``size``."""

    def __init__(self, size: int = 4):
        import threading
        from collections import OrderedDict

        self.size, self.lock = size, threading.Lock()
        self.entries: OrderedDict[tuple[str, int, int], tuple[Any, list[Any], Any]] = OrderedDict()

    def pages(self, path: Path) -> tuple[list[Any], Any]:
        """(full-resolution pages, the lock to hold while decoding them) of an open TIFF."""
        import threading

        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key][1], self.entries[key][2]
        tif = _open_tiff(path)
        try:
            pages = _tiff_pages(tif)
        except Exception:
            tif.close()
            raise
        entry = (tif, pages, threading.Lock())
        with self.lock:
            self.entries[key] = entry
            while len(self.entries) > self.size:
                _, (old, _, old_lock) = self.entries.popitem(last=False)
                with old_lock:
                    old.close()
        return pages, entry[2]

    def close_all(self) -> None:
        """Close every kept file (at exit, so none is left for the interpreter to complain about)."""
        with self.lock:
            while self.entries:
                _, (tif, _, lock) = self.entries.popitem()
                with lock:
                    tif.close()


_OPEN_TIFFS = _OpenTiffs()
atexit.register(_OPEN_TIFFS.close_all)


def _read_tiff_page(path: Path, page_index: int, notes: list[str]) -> np.ndarray:
    pages, lock = _OPEN_TIFFS.pages(path)
    page = pages[page_index]
    with lock:
        try:
            data = page.asarray()
        except Exception as err:  # tifffile raises many types for damaged data
            raise UnreadableImageError(path, _decode_failure(page, page_index, err)) from err
    if page.photometric == 3 and page.colormap is not None:  # PALETTE
        data = _palette_to_grey(data, page.colormap, path, notes)
    return to_grey(data, path, notes)


def _is_grey_page(page: Any) -> bool:
    """A page of one grey sample per pixel (no palette): what :func:`_tiff_page_bands` can decode band by band."""
    return page.samplesperpixel == 1 and page.photometric in (0, 1) and len(page.shape) == 2


def _tiff_page_bands(path: Path, page_index: int, windows: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
    """Rows ``[a, b)`` of a grey TIFF page for each window (non-decreasing), decoded one strip (or one row of tiles)
    after another: rows are dropped once no later window needs them, so memory holds about one window plus one
    row of segments, whatever the page's size. Values as stored, as :func:`_read_tiff_page` reads them."""
    tif = _open_tiff(path)  # its own handle: a long pass must not hold the shared handle's lock
    with tif:
        page = _tiff_pages(tif)[page_index]
        height, width = page.shape
        pending = list(windows)
        kept = np.empty((0, width), page.dtype)  # rows [kept_start, kept_start + len(kept)) of the page
        kept_start = 0
        block: np.ndarray | None = None  # the row of segments being assembled
        block_row = 0

        def complete(rows: np.ndarray) -> Iterator[np.ndarray]:
            nonlocal kept, kept_start
            kept = np.concatenate([kept, rows]) if len(kept) else rows
            while pending and pending[0][1] <= kept_start + len(kept):
                a, b = pending.pop(0)
                band = kept[a - kept_start : b - kept_start]
                yield band.copy()
            drop = min((pending[0][0] if pending else height) - kept_start, len(kept))
            if drop > 0:
                kept, kept_start = kept[drop:], kept_start + drop

        try:
            for segment, (_, _, y, x, _), shape in page.segments(maxworkers=1, buffersize=SEGMENT_BUFFER_BYTES):
                if block is not None and y != block_row:
                    yield from complete(block)
                    block = None
                if block is None:
                    block_row = y
                    block = np.zeros((min(shape[1], height - y), width), page.dtype)
                if segment is not None:
                    data = np.asarray(segment).reshape(shape)[0, : block.shape[0], : width - x, 0]
                    block[: data.shape[0], x : x + data.shape[1]] = data
            if block is not None:
                yield from complete(block)
        except Exception as err:  # tifffile raises many types for damaged data
            if isinstance(err, UnreadableImageError):
                raise
            raise UnreadableImageError(path, _decode_failure(page, page_index, err)) from err
        if pending:
            raise UnreadableImageError(path, f"page {page_index} ended before rows {pending[0][0]}-{pending[0][1]}")


def _read_other(path: Path, notes: list[str]) -> np.ndarray:
    import cv2

    buffer = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise UnreadableImageError(path, "not a readable PNG/JPEG/BMP image (empty, truncated or corrupt)")
    if image.ndim == 3:
        order = [2, 1, 0, 3][: image.shape[-1]]
        image = image[..., order]  # OpenCV's BGR(A) -> RGB(A)
    return to_grey(image, path, notes)


@dataclass
class _FileFrames:
    """The frames of one file: (path, page index) pairs plus their metadata."""

    path: Path
    pages: int
    shape: tuple[int, int]
    dtype: np.dtype
    metadata: list[SemMetadata]
    truth: list[dict[str, Any]]
    recorded: list[dict[str, float]] = field(default_factory=list)


#: A frame above :data:`LARGE_FRAME_PIXELS` is read band by band; a piece of it that must be decoded whole (one strip
#: or tile of a grey TIFF page; the whole frame of a PNG, JPEG, BMP or colour/palette TIFF page) may hold at most
#: this many bytes, else the frame is refused before it is decoded (:func:`check_readable_in_parts`).
WHOLE_DECODE_LIMIT_BYTES = 256 * 2**20


def _largest_segment_bytes(page: Any) -> int:
    """Decoded bytes of the largest strip or tile of a TIFF page (what tifffile decodes at once)."""
    itemsize = np.dtype(page.dtype).itemsize * max(1, int(page.samplesperpixel))
    if page.is_tiled:
        return int(page.tilelength) * int(page.tilewidth) * max(1, int(page.tiledepth)) * itemsize
    rows = min(int(page.rowsperstrip or page.imagelength), int(page.imagelength))
    return rows * int(page.imagewidth) * itemsize


def _image_header(path: Path) -> tuple[int, int, int] | None:
    """(rows, cols, bytes per pixel decoded) of a PNG, BMP or JPEG file from its header alone; None if unknown."""
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        cols, rows = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(head[25], 4)
        return rows, cols, channels * (2 if head[24] == 16 else 1)
    if head[:2] == b"BM" and len(head) >= 30:
        cols = int.from_bytes(head[18:22], "little", signed=True)
        rows = abs(int.from_bytes(head[22:26], "little", signed=True))
        return rows, cols, max(1, int.from_bytes(head[28:30], "little") // 8)
    at = 2
    while head[:2] == b"\xff\xd8" and at + 9 < len(head) and head[at] == 0xFF:  # JPEG: walk to the frame header
        marker, length = head[at + 1], int.from_bytes(head[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            rows, cols = int.from_bytes(head[at + 5 : at + 7], "big"), int.from_bytes(head[at + 7 : at + 9], "big")
            return rows, cols, head[at + 9]
        at += 2 + length
    return None


def check_readable_in_parts(path: Path, shape: tuple[int, int], whole_bytes: int, what: str) -> None:
    """Refuse a frame of ``shape`` (rows, cols) above :data:`LARGE_FRAME_PIXELS` whose ``what`` (a strip, a tile,
    the whole frame) of ``whole_bytes`` must be decoded at once beyond :data:`WHOLE_DECODE_LIMIT_BYTES`."""
    rows, cols = shape
    if rows * cols <= LARGE_FRAME_PIXELS or whole_bytes <= WHOLE_DECODE_LIMIT_BYTES:
        return
    raise FrameTooLargeError(
        f"'{path.name}': the {cols}x{rows} px frame ({rows * cols / 1e6:.0f} Mpx) is read band by band, but {what} "
        f"must be decoded whole ({whole_bytes / 2**30:.1f} GiB, more than the "
        f"{WHOLE_DECODE_LIMIT_BYTES / 2**20:.0f} MiB limit): save it as a grey TIFF in strips or tiles (e.g. "
        "tifffile.imwrite(path, image, tile=(512, 512), compression='zlib'), or `tiffcp -t` / `vips tiffsave "
        "--tile`), or crop it to the part you need (below 64 Mpx)"
    )


def _check_tiff_page(path: Path, page: Any) -> None:
    """:func:`check_readable_in_parts` for a TIFF page, before anything of it is decoded."""
    shape = tuple(int(s) for s in page.shape[:2])
    if _is_grey_page(page):
        layout = "its largest tile" if page.is_tiled else "its largest strip"
        check_readable_in_parts(path, shape, _largest_segment_bytes(page), layout)
    else:
        whole = int(np.prod(page.shape)) * np.dtype(page.dtype).itemsize
        check_readable_in_parts(path, shape, whole * 4, "a colour or palette page (converted to grey whole)")


def _inspect_file(path: Path, notes: list[str]) -> _FileFrames:
    """Read a file's header and first frame: frame count, shape, dtype, metadata."""
    if not path.exists():
        raise UnreadableImageError(path, "no such file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        tif = _open_tiff(path)
        with tif:
            pages = _tiff_pages(tif)
            meta = read_tiff_metadata(tif)
            axes = tif.series[0].axes if tif.series else ""
            extra = [a for a in axes if a not in "YXS"]
            if len(extra) > 1:  # e.g. an ImageJ hyperstack TZYX: every plane becomes one frame, in file order
                notes.append(
                    f"'{path.name}' has {len(axes)}-D data (axes {axes}); its {len(pages)} planes are read as one "
                    f"series in file order ({', '.join(extra)} nested): save the focus axis alone for a focus series"
                )
            truths = [_page_truth(p) for p in pages]
            page = pages[0]
            _check_tiff_page(path, page)
            header_only = _is_grey_page(page) and page.shape[0] * page.shape[1] > LARGE_FRAME_PIXELS
        # a large grey page is not decoded here: its shape and type are in its header
        first = np.empty((0, 0), page.dtype) if header_only else _read_tiff_page(path, 0, notes)
        shape, dtype = (tuple(page.shape), page.dtype) if header_only else (first.shape, first.dtype)
        n = len(pages)
    elif path.suffix.lower() in OTHER_SUFFIXES:
        header = _image_header(path)
        if header is not None:
            rows, cols, pixel_bytes = header
            colour = 4 if pixel_bytes > 2 else 1  # colour is converted to grey in float32, whole
            check_readable_in_parts(path, (rows, cols), rows * cols * pixel_bytes * colour, "a PNG, JPEG or BMP image")
        first, meta, n = _read_other(path, notes), SemMetadata(), 1
        truths = [{}]
        shape, dtype = first.shape, first.dtype
    else:
        raise UnreadableImageError(path, f"unsupported file type '{path.suffix}' (use {', '.join(IMAGE_SUFFIXES)})")
    if meta == SemMetadata():
        meta = read_sidecar(path, shape[1]) or meta
    meta, dropped = meta.plausible()
    notes += [f"'{path.name}': {note}" for note in dropped]
    metas = [_with_truth(meta, t) for t in truths]
    return _FileFrames(path, n, shape, dtype, metas, truths)
