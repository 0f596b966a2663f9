"""The user's focus labels: one CSV file, saved atomically on every change, reloaded when the data is reopened.

Columns (the labels format of :mod:`napari_sem_focus.data`): ``path`` (the image file, or the layer name for data
that has no file), ``frame``, ``magnification`` (the model's magnification), ``score`` (0-10, the paper's scale),
``time`` (ISO 8601, UTC). A (path, frame) pair has at most one label; labelling it again replaces the score.

Default location (:func:`default_labels_path`): next to the data — ``<stem>_focus_labels.csv`` beside a file,
``focus_labels.csv`` inside a folder of frames — or in a project folder the user chooses.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .errors import SemFocusError

COLUMNS = ("path", "frame", "magnification", "score", "time")


@dataclass(frozen=True)
class Label:
    """One labelled frame."""

    path: str
    frame: int
    magnification: float
    score: float
    time: str


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


class LabelStore:
    """Labels kept in memory and mirrored to ``path`` (atomically) after every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._labels: dict[tuple[str, int], Label] = {}
        if self.path.is_file():
            self._labels = {(lb.path, lb.frame): lb for lb in read_labels(self.path)}

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
        return self.merge(read_labels(csv_path))

    def export_csv(self, destination: str | Path) -> Path:
        return atomic_write_text(destination, labels_to_csv(self.labels()))

    def save(self) -> None:
        atomic_write_text(self.path, labels_to_csv(self.labels()))

    def training_samples(
        self, loader: Callable[[str, int], np.ndarray] | None = None
    ) -> list[tuple[np.ndarray, float, float]]:
        """(image float [0, 1], magnification, score) of every label; ``loader(path, frame)`` reads a frame
        (default: the core reader on the file)."""
        from .io import load_frame

        read = loader or (lambda p, f: load_frame(Path(p), f))
        return [(read(lb.path, lb.frame), lb.magnification, lb.score) for lb in self.labels()]


def labels_to_csv(labels: Iterable[Label]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for label in labels:
        writer.writerow(asdict(label))
    return buffer.getvalue()


def read_labels(csv_path: str | Path) -> list[Label]:
    """Labels from a CSV with at least path, magnification, score (frame and time optional)."""
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
