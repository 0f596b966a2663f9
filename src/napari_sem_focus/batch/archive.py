"""Scoring whole archives: every SEM image below a folder, streamed, batched, resumable.

Facilities score serial-section and array-tomography runs of 10^5-10^6 frames for focus QC. :func:`iter_score_archive`
walks a folder tree (natural order, hidden files and folders skipped), reads and prepares each file's frames
(decoding, structure map, 320x240 crops) in DataLoader worker processes while the main process runs the model on
batches of crops from several files, and appends one row per frame to a CSV file as the results come (or to a
Parquet dataset folder, part by part, when the output ends in ``.parquet``: :class:`ParquetResults`). Memory stays
bounded: at most ``workers x prefetch`` files are in flight, nothing is kept after its rows are written.

Each file gets its own magnification (127 mm over a 1024-px frame, from its pixel size or vendor magnification; the
``magnification`` argument only for files that state none). A file that cannot be read, or has no magnification,
gets one row with the reason in ``note`` and no score; the run goes on.

**Resumable**: with ``resume`` (the default) the existing results are read first and every (file, frame) in them is
skipped, so a run stopped by Ctrl-C, a crash or a killed job continues where it ended; a last CSV line cut off by the
kill is dropped. The same archive scored in one run or in several gives the same rows.

Columns: ``file`` (path relative to the root, "/"-separated), ``frame``, ``model_magnification``,
``magnification_source``, ``working_distance_mm``, ``score``, ``spread``, ``structure``, ``note``.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CancelledError, SemFocusError
from ..scoring.infer import MODES

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
    from ..io.image_files import IMAGE_SUFFIXES, natural_key

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
        from ..io.metadata import plausible_magnification
        from ..io.series import read_series
        from ..scoring.infer import model_magnification, series_crops

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
                crops, _origins, facts = series_crops(series, i, self.mode)
                # copied out of the frame: a file's frames are all prepared before they are scored
                out.append(PreparedFrame(name, i, np.stack(crops), facts, mag, source, wd))
            return out
        except SemFocusError as err:
            return [] if (name, 0) in self.skip else [PreparedFrame(name, 0, None, {}, None, "", None, str(err))]


def _first(batch: list[Any]) -> Any:
    return batch[0]


def _rows(prepared: list[PreparedFrame], runner: Any, mode: str) -> list[dict[str, Any]]:
    """The result rows of prepared frames, their crops scored in one batch by ``runner`` (a ModelRunner)."""
    from ..scoring.analysis import score_columns
    from ..scoring.infer import FrameScore, frame_score
    from ..scoring.model import normalize_magnification

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
        score, spread, tiles = frame_score(tiles, mode, runner.model)
        rows.append(row | score_columns(FrameScore(p.frame, score, tiles, [], spread=spread, **p.facts)))
    return rows


#: One model per (weights, device) in each process that scores (this one, or a Dask worker).
_RUNNERS: dict[tuple[str | None, str], Any] = {}


def _runner(weights: str | None, device: str) -> Any:
    from ..scoring.infer import ModelRunner
    from ..scoring.weights import load_model

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
    from ..allocator import reuse_freed_memory

    reuse_freed_memory()  # a Dask worker's process is this package's (once per process)
    dataset = _ArchiveFiles(Path(root), [Path(root) / f for f in files], mode, fallback, skip)
    runner, rows, pending = _runner(weights, device), [], []
    for index in range(len(dataset)):
        pending += dataset[index]
        if sum(len(p.crops) for p in pending if p.crops is not None) >= batch_size:
            rows += _rows(pending, runner, mode)
            pending = []
    return rows + _rows(pending, runner, mode)


#: Parquet column types (pyarrow names), in :data:`COLUMNS` order.
_PARQUET_TYPES = ("string", "int64", "float64", "string", "float64", "float64", "float64", "float64", "string")


class CsvResults:
    """Result rows appended to one CSV file, flushed after every batch; a resumed run appends to it."""

    def __init__(self, path: Path):
        self.path = path

    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def scored(self) -> set[tuple[str, int]]:
        """The (file, frame) pairs already written; a last line cut off by a kill is removed from the file first."""
        if not self.exists():
            return set()
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):  # the run was killed while writing a line: drop it
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"file", "frame"} <= set(reader.fieldnames):
                raise SemFocusError(f"'{self.path}' is not a results file of this command (no file/frame columns)")
            return {(row["file"], int(row["frame"])) for row in reader if row.get("frame", "").isdigit()}

    @contextlib.contextmanager
    def writer(self, fresh: bool) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
        """A function that appends rows (a fresh file gets the header first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w" if fresh else "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\n")
            if fresh:
                writer.writeheader()

            def write(rows: list[dict[str, Any]]) -> None:
                writer.writerows(rows)
                handle.flush()

            yield write


class ParquetResults:
    """Result rows in a Parquet dataset: a folder of part files ``part-000000.parquet``, ``part-000001.parquet``...
    that pandas, pyarrow, polars and Dask read as one table (``pandas.read_parquet(folder)``), in path order.

    A part is written (atomically) once ``rows_per_part`` rows have come or ``seconds_per_part`` have passed, and when
    the run ends or stops; a kill loses only the rows not yet in a part, which a resumed run scores again.
    Needs pyarrow (``pip install pyarrow``)."""

    def __init__(self, path: Path, rows_per_part: int = 4096, seconds_per_part: float = 60.0):
        try:
            import pyarrow  # noqa: F401
        except ImportError as err:
            raise SemFocusError(
                f"'{path}': writing Parquet needs pyarrow: pip install pyarrow (or write a .csv file)"
            ) from err
        if path.exists() and not path.is_dir():
            raise SemFocusError(f"'{path}' is a file; a Parquet result is a folder of parts: choose a new name")
        self.path, self.rows_per_part, self.seconds_per_part = path, rows_per_part, seconds_per_part

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def exists(self) -> bool:
        return bool(self.parts())

    def scored(self) -> set[tuple[str, int]]:
        """The (file, frame) pairs in the parts already written."""
        import pyarrow.parquet as pq

        done: set[tuple[str, int]] = set()
        for part in self.parts():
            try:
                table = pq.read_table(part, columns=["file", "frame"])
            except Exception as err:  # pyarrow raises several types for files that are not Parquet
                raise SemFocusError(f"'{part}' is not a results part of this command: {err}") from err
            done.update(zip(table.column("file").to_pylist(), table.column("frame").to_pylist(), strict=True))
        return done

    def schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in zip(COLUMNS, _PARQUET_TYPES, strict=True)])

    @contextlib.contextmanager
    def writer(self, fresh: bool) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
        """A function that collects rows and writes a part whenever enough have come; the rest at the end."""
        import time

        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..atomic import atomic_path

        if fresh:
            for part in self.parts():
                part.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        parts = self.parts()
        index = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        buffer: list[dict[str, Any]] = []
        last = time.monotonic()

        def flush() -> None:
            nonlocal index, last
            if buffer:
                table = pa.Table.from_pylist(buffer, schema=self.schema())
                with atomic_path(self.path / f"part-{index:06d}.parquet") as tmp:
                    pq.write_table(table, tmp)
                index += 1
                buffer.clear()
            last = time.monotonic()

        def write(rows: list[dict[str, Any]]) -> None:
            buffer.extend(rows)
            if len(buffer) >= self.rows_per_part or time.monotonic() - last >= self.seconds_per_part:
                flush()

        try:
            yield write
        finally:
            flush()


def results_file(path: str | Path) -> CsvResults | ParquetResults:
    """Where the rows go: a Parquet dataset folder when ``path`` ends in ``.parquet``, else a CSV file."""
    path = Path(path)
    return ParquetResults(path) if path.suffix.lower() == ".parquet" else CsvResults(path)


def finished_files(names: Sequence[str], done: set[tuple[str, int]]) -> set[str]:
    """The files (relative names, in path order) whose rows an earlier run wrote completely: every file with rows
    before the last file with rows — results are written in path order, each file's rows in one write, so only the
    last file may have been cut off. A resumed run skips them without opening them again."""
    with_rows = {name for name, _ in done}
    last = max((i for i, name in enumerate(names) if name in with_rows), default=-1)
    return {name for name in names[:last] if name in with_rows}


def scored_frames(out: str | Path) -> set[tuple[str, int]]:
    """The (file, frame) pairs an earlier run wrote to ``out`` (CSV or Parquet); a CSV's last line cut off by a
    kill is removed from the file first."""
    return results_file(out).scored()


@dataclass
class ArchiveProgress:
    """Progress after each file: files done of the total, rows appended so far in this run."""

    files_done: int
    files_total: int
    rows_written: int
    skipped_frames: int


def iter_score_archive(
    root: str | Path,
    out: str | Path,
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
    """Score every image below ``root`` into ``out`` (a CSV file, or a Parquet dataset folder when it ends in
    ``.parquet``: :func:`results_file`; module docstring); yields an :class:`ArchiveProgress`
    per file and returns the last one. ``workers``: reading processes (0: read in this process).
    ``should_stop()`` is checked between files: the rows of finished files are in the CSV, a resumed run
    continues after them (:class:`CancelledError`).

    ``dask``: a Dask distributed scheduler address (``tcp://host:8786``) or ``Client``: chunks of ``chunk_files``
    files are scored on the cluster's workers (:func:`score_file_chunk`; each worker loads the model once) and
    written in path order as they complete, a few chunks per worker in flight; the rows are the same as in one
    process."""
    from torch.utils.data import DataLoader

    from ..io.metadata import plausible_magnification

    if magnification is not None:
        plausible_magnification(magnification)  # a clear error now, not one per file
    root, results = Path(root), results_file(out)
    all_files = archive_files(root)
    done = results.scored() if resume else set()
    fresh = not resume or not results.exists()
    finished = finished_files([p.relative_to(root).as_posix() for p in all_files], done)
    files = [p for p in all_files if p.relative_to(root).as_posix() not in finished]  # not even opened again
    progress = ArchiveProgress(len(all_files) - len(files), len(all_files), 0, len(done))
    done = {key for key in done if key[0] not in finished}
    if dask is not None:
        task = (weights, mode, magnification, done, device, batch_size)
        return (yield from _score_on_dask(dask, root, files, results, fresh, progress, should_stop, chunk_files, task))
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
    with results.writer(fresh) as write:
        for prepared in loader:
            pending += prepared
            if sum(len(p.crops) for p in pending if p.crops is not None) >= batch_size:
                write(_rows(pending, runner, mode))
                progress.rows_written += len(pending)
                pending = []
            progress.files_done += 1
            yield ArchiveProgress(**vars(progress))
            if should_stop is not None and should_stop():
                stopped = True
                break
        write(_rows(pending, runner, mode))
        progress.rows_written += len(pending)
    if stopped and progress.files_done < progress.files_total:
        raise CancelledError(f"stopped after {progress.files_done} of {progress.files_total} files; resume to continue")
    return progress


def _score_on_dask(
    dask: Any,
    root: Path,
    files: list[Path],
    results: CsvResults | ParquetResults,
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
    skip_by_file: dict[str, set[tuple[str, int]]] = {}
    for key in skip:
        skip_by_file.setdefault(key[0], set()).add(key)
    in_flight = max(2, 2 * sum(client.nthreads().values()))
    futures: dict[Any, int] = {}
    finished: dict[int, list[dict[str, Any]]] = {}

    def submit(index: int) -> Any:
        chunk = chunks[index]
        chunk_skip = set().union(*(skip_by_file.get(name, set()) for name in chunk))
        future = client.submit(
            score_file_chunk, str(root), chunk, weights, mode, fallback, chunk_skip, device, batch_size, pure=False
        )
        futures[future] = index
        return future

    queue = as_completed([submit(i) for i in range(min(in_flight, len(chunks)))])
    submitted, next_to_write, stopped = min(in_flight, len(chunks)), 0, False
    try:
        with results.writer(fresh) as write:
            for future in queue:
                finished[futures.pop(future)] = future.result()
                if submitted < len(chunks) and not stopped:
                    queue.add(submit(submitted))
                    submitted += 1
                while next_to_write in finished:  # in path order, whatever order the chunks finish in
                    rows = finished.pop(next_to_write)
                    write(rows)
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
    if stopped and progress.files_done < progress.files_total:
        raise CancelledError(f"stopped after {progress.files_done} of {progress.files_total} files; resume to continue")
    return progress
