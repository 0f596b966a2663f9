"""Focus labels: the one labels CSV format, and the user's labels file (saved atomically on every change).

The labels CSV (written by the napari labelling widget and the simulator, read by ``sem-focus train`` and
:class:`~napari_sem_focus.training.data.LabelledImages`): ``path``, ``frame`` (page of a multi-page file, default 0),
``magnification`` (the model's magnification, 127 mm over a 1024-px frame; :mod:`napari_sem_focus.io.metadata`),
``score`` (0-10, the paper's scale) and ``time`` (ISO 8601, UTC; optional). Other columns are ignored. A
(path, frame) pair has at most one label; labelling it again replaces the score.

Paths: an image inside the labels file's folder (or below it) is written relative to that folder, so a folder of
frames and its labels can be moved or shared together; other images are written as absolute paths. A relative
path is read relative to the labels file's folder and may not climb out of it (``../../x.tif`` is refused: a
labels file from elsewhere cannot make the reader open files outside its folder by stealth). A ``path`` that is no
file (the name of a napari layer that was not opened from a file) stays a name.

Default location (:func:`default_labels_path`): next to the data — ``<stem>_focus_labels.csv`` beside a file,
``focus_labels.csv`` inside a folder of frames — or in a project folder the user chooses.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import SemFocusError
from ..scoring.report import to_csv

COLUMNS = ("path", "frame", "magnification", "score", "time")


@dataclass(frozen=True)
class Label:
    """One labelled frame."""

    path: str
    frame: int
    magnification: float
    score: float
    time: str = ""


def default_labels_path(source: str | Path, project_dir: str | Path | None = None) -> Path:
    """Where the labels of ``source`` (a file or a folder) live, unless the user picked a project folder."""
    source = Path(source)
    name = "focus_labels.csv" if source.is_dir() else f"{source.stem}_focus_labels.csv"
    if project_dir is not None:
        return Path(project_dir) / name
    return source / name if source.is_dir() else source.with_name(name)


def _check(score: float, magnification: float) -> None:
    if not 0.0 <= float(score) <= 10.0:
        raise SemFocusError(f"a focus score must be between 0 and 10, got {score}")
    if not float(magnification) > 0:
        raise SemFocusError(f"the magnification must be positive, got {magnification}")


def resolve_label_path(path: str, folder: str | Path) -> str:
    """The image a labels file's ``path`` names: absolute as written, relative under ``folder`` (the labels file's
    folder; a relative path that climbs out of it raises), or the name as is when no such file exists (a layer)."""
    if Path(path).is_absolute():
        return path
    folder = Path(folder).resolve()
    target = (folder / path).resolve()
    if not target.is_relative_to(folder):
        raise SemFocusError(
            f"label path '{path}' lies outside the labels file's folder {folder}; give it as an "
            "absolute path if it is meant"
        )
    return str(target) if target.exists() else path


def portable_label_path(path: str, folder: str | Path) -> str:
    """What a labels file in ``folder`` stores for ``path``: relative (POSIX) when the image lies in or below the
    folder, else the path unchanged (absolute file, or a layer name)."""
    if not Path(path).is_absolute():
        return path
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return path


def label_samples(
    labels: Iterable[Label], loader: Callable[[str, int], np.ndarray] | None = None
) -> list[tuple[np.ndarray, float, float]]:
    """(image float [0, 1], magnification, score) of each label, read by ``loader(path, frame)`` (default: the
    core reader on the file): the training sample of the fine-tuning and adaptation loops."""
    from ..io.series import load_frame

    read = loader or (lambda p, f: load_frame(Path(p), f))
    return [(read(lb.path, lb.frame), lb.magnification, lb.score) for lb in labels]


def read_label_files(csv_paths: Iterable[str | Path]) -> list[Label]:
    """The labels of one or more labels CSV files, each path resolved against its file's folder
    (:func:`resolve_label_path`)."""
    out = []
    for csv_path in csv_paths:
        folder = Path(csv_path).parent
        out += [replace(lb, path=resolve_label_path(lb.path, folder)) for lb in read_labels(csv_path)]
    return out


class LabelStore:
    """Labels kept in memory and mirrored to ``path`` (atomically) after every change.

    In memory a label's ``path`` is the image's own path (absolute) or a layer name; on disk it is portable
    (module docstring).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._labels: dict[tuple[str, int], Label] = {}
        if self.path.is_file():
            self._labels = {(lb.path, lb.frame): lb for lb in read_label_files([self.path])}

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> list[Label]:
        """All labels, sorted by path then frame."""
        return [self._labels[k] for k in sorted(self._labels)]

    def get(self, path: str | Path, frame: int) -> Label | None:
        return self._labels.get((str(path), int(frame)))

    def set(self, path: str | Path, frame: int, magnification: float, score: float) -> Label:
        """Label (or relabel) a frame and save."""
        _check(score, magnification)
        label = Label(
            str(path), int(frame), float(magnification), float(score), datetime.now(UTC).isoformat(timespec="seconds")
        )
        self._labels[(label.path, label.frame)] = label
        self.save()
        return label

    def remove(self, path: str | Path, frame: int) -> None:
        if self._labels.pop((str(path), int(frame)), None) is not None:
            self.save()

    def merge(self, labels: Iterable[Label]) -> int:
        """Add labels made elsewhere (replacing same path/frame); returns how many; saves."""
        count = 0
        for label in labels:
            _check(label.score, label.magnification)
            self._labels[(label.path, label.frame)] = label
            count += 1
        self.save()
        return count

    def import_csv(self, csv_path: str | Path) -> int:
        return self.merge(read_label_files([csv_path]))

    def export_csv(self, destination: str | Path) -> Path:
        return atomic_write_text(destination, labels_to_csv(self.labels(), Path(destination).parent))

    def save(self) -> None:
        atomic_write_text(self.path, labels_to_csv(self.labels(), self.path.parent))

    def training_samples(
        self, loader: Callable[[str, int], np.ndarray] | None = None
    ) -> list[tuple[np.ndarray, float, float]]:
        """:func:`label_samples` of every label."""
        return label_samples(self.labels(), loader)


def labels_to_csv(labels: Iterable[Label], folder: str | Path) -> str:
    """CSV text of labels for a labels file in ``folder`` (paths made portable: :func:`portable_label_path`)."""
    return to_csv([asdict(replace(lb, path=portable_label_path(lb.path, folder))) for lb in labels], COLUMNS)


def read_labels(csv_path: str | Path) -> list[Label]:
    """Labels from a CSV with at least path, magnification, score (frame and time optional); paths as written
    (:func:`read_label_files` resolves them)."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8")
    except OSError as err:
        raise SemFocusError(f"cannot read labels '{csv_path}': {err}") from err
    reader = csv.DictReader(io.StringIO(text))
    missing = {"path", "magnification", "score"} - set(reader.fieldnames or [])
    if missing:
        raise SemFocusError(f"'{csv_path}': labels CSV lacks column(s) {sorted(missing)}")
    out: list[Label] = []
    for line, rec in enumerate(reader, start=2):
        try:
            label = Label(
                rec["path"],
                int(rec.get("frame") or 0),
                float(rec["magnification"]),
                float(rec["score"]),
                rec.get("time") or "",
            )
            _check(label.score, label.magnification)
        except (TypeError, ValueError, SemFocusError) as err:
            raise SemFocusError(f"'{csv_path}' line {line}: {err}") from err
        out.append(label)
    return out
