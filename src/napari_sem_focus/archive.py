"""Scoring whole archives: every SEM image below a folder, streamed, batched, resumable.

Facilities score serial-section and array-tomography runs of 10^5-10^6 frames for focus QC. :func:`iter_score_archive`
walks a folder tree (natural order, hidden files and folders skipped), reads and prepares each file's frames
(decoding, structure map, 320x240 crops) in DataLoader worker processes while the main process runs the model on
batches of crops from several files, and appends one row per frame to a CSV file as the results come. Memory stays
bounded: at most ``workers x prefetch`` files are in flight, nothing is kept after its rows are written.

Each file gets its own magnification (127 mm over a 1024-px frame, from its pixel size or vendor magnification; the
``magnification`` argument only for files that state none). A file that cannot be read, or has no magnification,
gets one row with the reason in ``note`` and no score; the run goes on.

**Resumable**: with ``resume`` (the default) an existing CSV is read first and every (file, frame) in it is skipped,
so a run stopped by Ctrl-C, a crash or a killed job continues where it ended; a last line cut off by the kill is
dropped. The same archive scored in one run or in several gives the same rows.

Columns: ``file`` (path relative to the root, "/"-separated), ``frame``, ``model_magnification``,
``magnification_source``, ``working_distance_mm``, ``score``, ``spread``, ``structure``, ``note``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CancelledError, SemFocusError
from .infer import MODES

COLUMNS = (
    "file",
    "frame",
    "model_magnification",
    "magnification_source",
    "working_distance_mm",
    "score",
    "spread",
    "structure",
    "note",
)


def archive_files(root: str | Path) -> list[Path]:
    """Every image file below ``root`` (recursive; hidden files and folders skipped), in natural path order."""
    from .io import IMAGE_SUFFIXES, natural_key

    root = Path(root)
    if not root.is_dir():
        raise SemFocusError(f"'{root}' is not a folder")
    files = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: [natural_key(Path(part)) for part in p.relative_to(root).parts])


@dataclass
class PreparedFrame:
    """One frame made ready for the model in a worker: its crops and everything its row needs."""

    file: str
    frame: int
    crops: np.ndarray | None
    facts: dict[str, Any]
    magnification: float | None
    magnification_source: str
    working_distance_mm: float | None
    error: str | None = None


class _ArchiveFiles:
    """A map-style dataset over files: item ``i`` is the list of :class:`PreparedFrame` of file ``i`` (the frames
    in ``skip`` left out). Runs in DataLoader workers."""

    def __init__(self, root: Path, files: list[Path], mode: str, fallback: float | None, skip: set[tuple[str, int]]):
        self.root, self.files, self.mode, self.fallback, self.skip = root, files, mode, fallback, skip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> list[PreparedFrame]:
        from .infer import frame_crops, model_magnification
        from .io import read_series
        from .metadata import plausible_magnification

        path = self.files[index]
        name = path.relative_to(self.root).as_posix()
        try:
            series = read_series(path)
            mag, source = model_magnification(series)
            if mag is None:
                mag, source = (self.fallback, "given") if self.fallback else (None, source)
            if mag is not None:
                plausible_magnification(mag)  # a magnification an SEM can have, or the file's error row
            out = []
            for i in range(len(series)):
                if (name, i) in self.skip:
                    continue
                wd = series.metadata[i].working_distance_mm
                if mag is None:
                    out.append(PreparedFrame(name, i, None, {}, None, source, wd, "no magnification: give one"))
                    continue
                crops, _origins, facts = frame_crops(series.frame(i), self.mode)
                out.append(PreparedFrame(name, i, crops, facts, mag, source, wd))
            return out
        except SemFocusError as err:
            return [] if (name, 0) in self.skip else [PreparedFrame(name, 0, None, {}, None, "", None, str(err))]


def _first(batch: list[Any]) -> Any:
    return batch[0]


def _rows(prepared: list[PreparedFrame], runner: Any, mode: str) -> list[dict[str, Any]]:
    """The result rows of prepared frames, their crops scored in one batch by ``runner`` (a ModelRunner)."""
    from .analysis import score_columns
    from .infer import FrameScore, pool
    from .model import normalize_magnification

    ready = [p for p in prepared if p.crops is not None]
    if ready:
        crops = np.concatenate([p.crops for p in ready])
        mags = np.concatenate([np.full(len(p.crops), p.magnification, np.float32) for p in ready])
        scores = runner(crops, normalize_magnification(mags))
    rows, start = [], 0
    for p in prepared:
        row = {
            "file": p.file,
            "frame": p.frame,
            "model_magnification": None if p.magnification is None else round(p.magnification, 1),
            "magnification_source": p.magnification_source,
            "working_distance_mm": p.working_distance_mm,
        }
        if p.crops is None:
            rows.append(row | {"score": None, "spread": None, "structure": None, "note": p.error})
            continue
        tiles = scores[start : start + len(p.crops)]
        start += len(p.crops)
        score, spread = pool(tiles, mode)
        rows.append(row | score_columns(FrameScore(p.frame, score, tiles, [], spread=spread, **p.facts)))
    return rows


#: One model per (weights, device) in each process that scores (this one, or a Dask worker).
_RUNNERS: dict[tuple[str | None, str], Any] = {}


def _runner(weights: str | None, device: str) -> Any:
    from .infer import ModelRunner
    from .weights import load_model

    key = (None if weights is None else str(weights), device)
    if key not in _RUNNERS:
        _RUNNERS[key] = ModelRunner(load_model(weights, device), device)
    return _RUNNERS[key]


def score_file_chunk(
    root: str,
    files: list[str],
    weights: str | None,
    mode: str,
    fallback: float | None,
    skip: set[tuple[str, int]],
    device: str = "cpu",
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """The rows of a chunk of files (paths relative to ``root``): what one Dask task does on a worker, which keeps
    its model loaded between tasks."""
    dataset = _ArchiveFiles(Path(root), [Path(root) / f for f in files], mode, fallback, skip)
    runner, rows, pending = _runner(weights, device), [], []
    for index in range(len(dataset)):
        pending += dataset[index]
        if sum(len(p.crops) for p in pending if p.crops is not None) >= batch_size:
            rows += _rows(pending, runner, mode)
            pending = []
    return rows + _rows(pending, runner, mode)


def scored_frames(out_csv: str | Path) -> set[tuple[str, int]]:
    """The (file, frame) pairs an earlier run wrote to ``out_csv``; a last line cut off by a kill is removed
    from the file first."""
    path = Path(out_csv)
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    data = path.read_bytes()
    if not data.endswith(b"\n"):  # the run was killed while writing a line: drop it
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file", "frame"} <= set(reader.fieldnames):
            raise SemFocusError(f"'{path}' is not a results file of this command (no file/frame columns)")
        return {(row["file"], int(row["frame"])) for row in reader if row.get("frame", "").isdigit()}


@dataclass
class ArchiveProgress:
    """Progress after each file: files done of the total, rows appended so far in this run."""

    files_done: int
    files_total: int
    rows_written: int
    skipped_frames: int


def iter_score_archive(
    root: str | Path,
    out_csv: str | Path,
    weights: str | None = None,
    mode: str = MODES[0],
    magnification: float | None = None,
    device: str = "cpu",
    workers: int = 0,
    batch_size: int = 32,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
    dask: Any = None,
    chunk_files: int = 16,
) -> Generator[ArchiveProgress, None, ArchiveProgress]:
    """Score every image below ``root`` into ``out_csv`` (module docstring); yields an :class:`ArchiveProgress`
    per file and returns the last one. ``workers``: reading processes (0: read in this process).
    ``should_stop()`` is checked between files: the rows of finished files are in the CSV, a resumed run
    continues after them (:class:`CancelledError`).

    ``dask``: a Dask distributed scheduler address (``tcp://host:8786``) or ``Client``: chunks of ``chunk_files``
    files are scored on the cluster's workers (:func:`score_file_chunk`; each worker loads the model once) and
    written in path order as they complete, a few chunks per worker in flight; the rows are the same as in one
    process."""
    from torch.utils.data import DataLoader

    from .metadata import plausible_magnification

    if magnification is not None:
        plausible_magnification(magnification)  # a clear error now, not one per file
    root, out = Path(root), Path(out_csv)
    files = archive_files(root)
    done = scored_frames(out) if resume else set()
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = not resume or not out.is_file() or out.stat().st_size == 0
    progress = ArchiveProgress(0, len(files), 0, len(done))
    if dask is not None:
        task = (weights, mode, magnification, done, device, batch_size)
        return (yield from _score_on_dask(dask, root, files, out, fresh, progress, should_stop, chunk_files, task))
    runner = _runner(weights, device)
    dataset = _ArchiveFiles(root, files, mode, magnification, done)
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=1,
        collate_fn=_first,
        num_workers=workers,
        multiprocessing_context="spawn" if workers else None,
        prefetch_factor=4 if workers else None,
    )
    pending: list[PreparedFrame] = []
    stopped = False
    with open(out, "w" if fresh else "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\n")
        if fresh:
            writer.writeheader()
        for prepared in loader:
            pending += prepared
            if sum(len(p.crops) for p in pending if p.crops is not None) >= batch_size:
                writer.writerows(_rows(pending, runner, mode))
                progress.rows_written += len(pending)
                handle.flush()
                pending = []
            progress.files_done += 1
            yield ArchiveProgress(**vars(progress))
            if should_stop is not None and should_stop():
                stopped = True
                break
        writer.writerows(_rows(pending, runner, mode))
        progress.rows_written += len(pending)
        handle.flush()
    if stopped and progress.files_done < len(files):
        raise CancelledError(f"stopped after {progress.files_done} of {len(files)} files; resume to continue")
    return progress


def _score_on_dask(
    dask: Any,
    root: Path,
    files: list[Path],
    out: Path,
    fresh: bool,
    progress: ArchiveProgress,
    should_stop: Callable[[], bool] | None,
    chunk_files: int,
    task: tuple[Any, ...],
) -> Generator[ArchiveProgress, None, ArchiveProgress]:
    """:func:`iter_score_archive` on a Dask cluster (its docstring)."""
    from distributed import Client, as_completed

    client = dask if isinstance(dask, Client) else Client(dask)
    weights, mode, fallback, skip, device, batch_size = task
    names = [p.relative_to(root).as_posix() for p in files]
    chunks = [names[i : i + chunk_files] for i in range(0, len(names), chunk_files)]
    in_flight = max(2, 2 * sum(client.nthreads().values()))
    futures: dict[Any, int] = {}
    finished: dict[int, list[dict[str, Any]]] = {}

    def submit(index: int) -> Any:
        chunk = chunks[index]
        chunk_skip = {key for key in skip if key[0] in set(chunk)}
        future = client.submit(
            score_file_chunk, str(root), chunk, weights, mode, fallback, chunk_skip, device, batch_size, pure=False
        )
        futures[future] = index
        return future

    queue = as_completed([submit(i) for i in range(min(in_flight, len(chunks)))])
    submitted, next_to_write, stopped = min(in_flight, len(chunks)), 0, False
    try:
        with open(out, "w" if fresh else "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\n")
            if fresh:
                writer.writeheader()
            for future in queue:
                finished[futures.pop(future)] = future.result()
                if submitted < len(chunks) and not stopped:
                    queue.add(submit(submitted))
                    submitted += 1
                while next_to_write in finished:  # in path order, whatever order the chunks finish in
                    rows = finished.pop(next_to_write)
                    writer.writerows(rows)
                    handle.flush()
                    progress.rows_written += len(rows)
                    progress.files_done += len(chunks[next_to_write])
                    next_to_write += 1
                    yield ArchiveProgress(**vars(progress))
                if should_stop is not None and should_stop():
                    stopped = True
                    break
    finally:
        for future in futures:
            future.cancel()
        if client is not dask:
            client.close()
    if stopped and progress.files_done < len(files):
        raise CancelledError(f"stopped after {progress.files_done} of {len(files)} files; resume to continue")
    return progress
