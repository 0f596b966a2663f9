"""Live scoring: watch a folder the microscope writes frames into, and score each new frame once it is complete.

A file counts as **complete** when its size and modification time have stayed the same for ``settle_s`` seconds
*and* it decodes. A file that does not decode yet (half written: a truncated TIFF, a PNG without its end) is
retried at every poll, never reported as corrupt while it may still be growing; only after ``give_up_s`` seconds
without change and still unreadable is it reported (:attr:`LiveFrame.error`) and skipped. Frames are taken in
natural filename order (``frame_2`` before ``frame_10``) and each is scored exactly once; a frame that is not
complete yet holds back the ones after it, so scores always arrive in order. Files already in the folder when
watching starts are scored first (``include_existing=True``) or ignored.

:func:`iter_live_scores` is a generator (what a napari worker runs, and ``sem-focus score --watch``):
``should_stop()`` ends it between polls; ``idle_exit_s`` ends it when no new file came for that long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SemFocusError


@dataclass
class LiveFrame:
    """One frame of a watched folder: its file, order index, and its score — or why it could not be read."""

    index: int
    path: Path
    score: Any = None  # infer.FrameScore
    magnification: float | None = None
    working_distance_mm: float | None = None
    error: str | None = None
    image: Any = None  # the frame, float [0, 1]

    def row(self) -> dict[str, Any]:
        """The result-table row of a scored frame (as :func:`.analysis.score_rows` makes them)."""
        from ..scoring.analysis import score_columns

        columns = {"frame": self.index, "file": self.path.name, "working_distance_mm": self.working_distance_mm}
        return columns | score_columns(self.score)


class GrowingStack:
    """Frames of one size gathered one at a time into a (n, rows, cols) array without copying them all at each
    new frame: the buffer doubles when full (amortised one copy per frame), :attr:`array` is a view of the filled
    part. A frame of another size is refused (``append`` returns False)."""

    def __init__(self) -> None:
        self._buffer: np.ndarray | None = None
        self.count = 0

    def append(self, frame: np.ndarray) -> bool:
        frame = np.asarray(frame)
        if self._buffer is not None and frame.shape != self._buffer.shape[1:]:
            return False
        if self._buffer is None or self.count == len(self._buffer):
            grown = np.empty((max(8, 2 * self.count), *frame.shape), dtype=frame.dtype)
            if self._buffer is not None:
                grown[: self.count] = self._buffer[: self.count]
            self._buffer = grown
        self._buffer[self.count] = frame
        self.count += 1
        return True

    @property
    def array(self) -> np.ndarray:
        if self._buffer is None:
            raise ValueError("no frames yet")
        return self._buffer[: self.count]


class _Pending:
    """A file seen in the folder but not scored yet: its last (size, mtime) and since when it is unchanged."""

    def __init__(self, stamp: tuple[int, float], now: float):
        self.stamp, self.since = stamp, now


def _stamp(path: Path) -> tuple[int, float] | None:
    try:
        st = path.stat()
    except OSError:  # removed or renamed meanwhile
        return None
    return st.st_size, st.st_mtime


def iter_complete_files(
    folder: str | Path,
    poll_s: float = 0.5,
    settle_s: float = 0.5,
    give_up_s: float = 30.0,
    include_existing: bool = True,
    should_stop: Callable[[], bool] | None = None,
    idle_exit_s: float | None = None,
    read: Callable[[Path], Any] | None = None,
) -> Generator[tuple[Path, Any, str | None], None, None]:
    """Yield ``(path, what read(path) returned, None)`` for each new, complete image file of ``folder``, in
    order; ``(path, None, message)`` for one that stayed unreadable for ``give_up_s``. ``read`` decodes a file
    and raises while it is incomplete (default :func:`read_frames`: the series and every frame decoded)."""
    from ..io.series import list_frame_files

    folder = Path(folder)
    if not folder.is_dir():
        raise SemFocusError(f"'{folder}' is not a folder to watch")
    read = read or read_frames
    done: set[Path] = set() if include_existing else set(list_frame_files(folder))
    pending: dict[Path, _Pending] = {}
    last_new = time.monotonic()
    while True:
        if should_stop is not None and should_stop():
            return
        now = time.monotonic()
        for path in list_frame_files(folder):
            if path in done:
                continue
            stamp = _stamp(path)
            if stamp is None:
                pending.pop(path, None)
                continue
            entry = pending.get(path)
            if entry is None or entry.stamp != stamp:
                pending[path] = _Pending(stamp, now)
        # in order: the first pending file must be complete before any later one is taken
        for path in sorted(pending, key=lambda p: _natural(p)):
            entry = pending[path]
            unchanged = now - entry.since
            if unchanged < settle_s or entry.stamp[0] == 0:
                break
            try:
                value = read(path)
            except Exception as err:  # still being written, or broken
                if unchanged < give_up_s:
                    break
                done.add(path)
                del pending[path]
                last_new = now
                yield path, None, f"'{path.name}' is unreadable after {give_up_s:g} s unchanged: {err}"
                continue
            done.add(path)
            del pending[path]
            last_new = now
            yield path, value, None
        if idle_exit_s is not None and time.monotonic() - last_new > idle_exit_s and not pending:
            return
        time.sleep(poll_s)


def read_frames(path: Path) -> tuple[Any, list[Any]]:
    """(series, every frame as float [0, 1]) of one file — decoding all pages, so a half-written file raises."""
    from ..io.series import read_series

    series = read_series(path)
    return series, [series.frame(i) for i in range(len(series))]


def _natural(path: Path) -> list[Any]:
    from ..io.image_files import natural_key

    return natural_key(path)


def iter_live_scores(
    folder: str | Path,
    magnification: float | None = None,
    weights: str | None = None,
    mode: str = "structure",
    device: str = "cpu",
    fallback_magnification: float | None = None,
    **watch: Any,
) -> Generator[LiveFrame, None, None]:
    """Score each new complete frame of ``folder`` (:func:`iter_complete_files`; ``watch`` takes its options) with
    the learned model, loaded once. The magnification is ``magnification``, else each file's metadata (pixel size
    or magnification), else ``fallback_magnification``; a frame with none is reported with an error, not scored."""
    from ..scoring.infer import model_magnification, score_frames
    from ..scoring.weights import load_model

    model = load_model(weights, device)
    index = 0
    for path, decoded, error in iter_complete_files(folder, **watch):
        if error is not None:
            yield LiveFrame(index, path, error=error)
            index += 1
            continue
        series, frames = decoded
        mag, _ = model_magnification(series, magnification)
        mag = mag or fallback_magnification
        if mag is None:
            yield LiveFrame(index, path, error=f"'{path.name}': no magnification in its metadata; give one (--mag)")
            index += 1
            continue
        wds = series.working_distance_mm
        for page, frame in enumerate(frames):
            (result,) = score_frames([frame], mag, model, mode, device=device)
            yield LiveFrame(index, path, result, mag, wds[page] if page < len(wds) else None, image=frame)
            index += 1
