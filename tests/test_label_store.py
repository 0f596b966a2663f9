"""The labels file: atomic saves on every change, reload, import/export, validation."""

from __future__ import annotations

import pytest

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.label_store import LabelStore, default_labels_path, read_labels


def test_set_saves_and_reloads(tmp_path):
    path = tmp_path / "labels.csv"
    store = LabelStore(path)
    store.set("a.tif", 3, 5000.0, 7.5)
    store.set("a.tif", 3, 5000.0, 8.0)  # relabel replaces
    store.set("a.tif", 4, 5000.0, 2.0)
    again = LabelStore(path)
    assert [(lb.frame, lb.score) for lb in again.labels()] == [(3, 8.0), (4, 2.0)]
    again.remove("a.tif", 4)
    assert len(LabelStore(path)) == 1


def test_invalid_scores_refused_and_file_untouched(tmp_path):
    path = tmp_path / "labels.csv"
    store = LabelStore(path)
    store.set("a.tif", 0, 1000.0, 5.0)
    before = path.read_bytes()
    with pytest.raises(SemFocusError, match="between 0 and 10"):
        store.set("a.tif", 1, 1000.0, 11.0)
    with pytest.raises(SemFocusError, match="magnification"):
        store.set("a.tif", 1, -5.0, 3.0)
    assert path.read_bytes() == before


def test_import_export_round_trip(tmp_path):
    src = LabelStore(tmp_path / "a.csv")
    for i in range(5):
        src.set(f"/data/f{i}.tif", 0, 2000.0, float(i))
    exported = src.export_csv(tmp_path / "export.csv")
    dst = LabelStore(tmp_path / "b.csv")
    assert dst.import_csv(exported) == 5
    assert [lb.score for lb in dst.labels()] == [0.0, 1.0, 2.0, 3.0, 4.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,score\nx.tif,3\n")
    with pytest.raises(SemFocusError, match="magnification"):
        read_labels(bad)


def test_default_location_next_to_the_data(tmp_path):
    image = tmp_path / "stack.tif"
    image.write_bytes(b"")
    assert default_labels_path(image) == tmp_path / "stack_focus_labels.csv"
    assert default_labels_path(tmp_path) == tmp_path / "focus_labels.csv"
    assert default_labels_path(image, tmp_path / "proj") == tmp_path / "proj" / "stack_focus_labels.csv"
