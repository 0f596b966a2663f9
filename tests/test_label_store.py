"""The labels file: atomic saves on every change, reload, import/export, validation."""

from __future__ import annotations

import pytest

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.training.label_store import LabelStore, default_labels_path, read_labels


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


def _write_tiff(path, value=0.5):
    import numpy as np
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((32, 48), int(255 * value), np.uint8))
    return path


def test_images_in_the_labels_folder_are_stored_relative_so_the_folder_can_move(tmp_path):
    import shutil

    from napari_sem_focus.training.label_store import label_samples, read_label_files

    image = _write_tiff(tmp_path / "run" / "frames" / "f0.tif")
    outside = _write_tiff(tmp_path / "elsewhere" / "g.tif", 0.25)
    store = LabelStore(tmp_path / "run" / "focus_labels.csv")
    store.set(str(image), 0, 2000.0, 7.0)
    store.set(str(outside), 0, 2000.0, 3.0)
    store.set("Image layer", 2, 2000.0, 5.0)  # a layer without a file keeps its name
    text = store.path.read_text()
    assert "frames/f0.tif" in text and str(image) not in text
    assert str(outside) in text  # outside the folder: absolute, as labelled
    shutil.move(tmp_path / "run", tmp_path / "moved")
    moved = LabelStore(tmp_path / "moved" / "focus_labels.csv")
    assert {lb.path for lb in moved.labels()} == {
        str((tmp_path / "moved" / "frames" / "f0.tif").resolve()),
        str(outside),
        "Image layer",
    }
    labels = [lb for lb in read_label_files([moved.path]) if lb.path != "Image layer"]
    images = {score: image for image, _, score in label_samples(labels)}
    assert images[7.0].shape == (32, 48) and abs(float(images[3.0].mean()) - 63 / 255) < 1e-6


def test_a_relative_label_path_cannot_climb_out_of_its_folder(tmp_path):
    from napari_sem_focus.training.data import LabelledImages
    from napari_sem_focus.training.label_store import read_label_files

    _write_tiff(tmp_path / "secret.tif")
    folder = tmp_path / "shared_labels"
    folder.mkdir()
    csv_path = folder / "labels.csv"
    csv_path.write_text("path,frame,magnification,score\n../secret.tif,0,2000,5\n")
    with pytest.raises(SemFocusError, match="outside the labels file's folder"):
        read_label_files([csv_path])
    with pytest.raises(SemFocusError, match="outside the labels file's folder"):
        LabelledImages([csv_path])
    csv_path.write_text(f"path,frame,magnification,score\n{tmp_path / 'secret.tif'},0,2000,5\n")
    assert len(LabelledImages([csv_path])) == 1  # an absolute path is what the user wrote: honoured
