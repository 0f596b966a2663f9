"""Sweeps users already have: fibsem-os TIFF metadata, and a fibsem-os autofocus result folder (written by fibsem's
own ``run_auto_focus`` on its demo microscope, its images drawn by the virtual SEM) read as a focus series with
fibsem's score beside ours, in ``read_series``, ``sem-focus score`` and the napari reader."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_sem_focus._reader import get_reader
from napari_sem_focus.cli import main
from napari_sem_focus.errors import SeriesError
from napari_sem_focus.focusing.microscopes.fibsem_demo import truth, virtual_demo_microscope
from napari_sem_focus.focusing.microscopes.fibsem_sem import connect, import_fibsem
from napari_sem_focus.io.series import read_series
from napari_sem_focus.simulate.frame import FrameParams

import_fibsem()
from fibsem.structures import BeamType, ImageSettings  # noqa: E402

HFW_5000X_UM = 127e3 / 5000 * 768 / 1024


@pytest.fixture(scope="module")
def autofocus_folder(tmp_path_factory):
    """fibsem's run_auto_focus (default settings) on the virtual demo, saved as fibsem saves it; and the truth."""
    from fibsem.autofunctions.autofocus import AutoFocusSettings, run_auto_focus

    microscope = virtual_demo_microscope(FrameParams(family="grid", seed=7), focus_offset_um=9.0)
    result = run_auto_focus(microscope, BeamType.ELECTRON, hfw=HFW_5000X_UM * 1e-6, settings=AutoFocusSettings())
    folder = result.save(str(tmp_path_factory.mktemp("fibsem")), "autofocus", save_plot=False)
    return folder, truth(microscope, (768, 512), HFW_5000X_UM, 0.5)


def test_fibsem_tiffs_carry_pixel_size_working_distance_and_beam(tmp_path):
    demo = connect("Demo")
    demo.set_working_distance(4.25e-3, BeamType.ELECTRON)
    settings = ImageSettings(resolution=(512, 384), dwell_time=1e-6, hfw=80e-6, beam_type=BeamType.ELECTRON)
    path = demo.acquire_image(image_settings=settings).save(str(tmp_path / "sem.tif"))
    series = read_series(path)
    meta = series.metadata[0]
    assert meta.vendor == "fibsem-os" and meta.instrument == "Demo DemoMicroscope"
    assert meta.pixel_size_nm == pytest.approx(80e3 / 512)
    assert meta.working_distance_mm == pytest.approx(4.25)
    assert meta.dwell_time_us == pytest.approx(1.0) and meta.high_voltage_kv == pytest.approx(2.0)
    assert "electron beam" in meta.detector
    assert series.reference_magnification == pytest.approx(127 / 0.080)

    ion = ImageSettings(resolution=(512, 384), dwell_time=1e-6, hfw=80e-6, beam_type=BeamType.ION)
    ion_meta = read_series(demo.acquire_image(image_settings=ion).save(str(tmp_path / "fib.tif"))).metadata[0]
    assert ion_meta.working_distance_mm == pytest.approx(demo.get_working_distance(BeamType.ION) * 1e3)
    assert "ion beam" in ion_meta.detector


def test_an_autofocus_folder_is_a_series_ordered_by_working_distance(autofocus_folder):
    folder, _ = autofocus_folder
    data = json.loads((folder / "data.json").read_text())
    series = read_series(folder)
    assert len(series) == len(data["iterations"]) == 22  # best.tif is not read again
    wds = series.working_distance_mm
    assert wds == sorted(wds)
    assert sorted(wds) == pytest.approx(sorted(it["working_distance"] * 1e3 for it in data["iterations"]))
    by_file = {it["image"]: it["focus_score"] for it in data["iterations"]}
    assert all(
        rec["fibsem_tenengrad"] == pytest.approx(by_file[path.name])
        for rec, path in zip(series.recorded, series.frame_paths, strict=True)
    )
    assert any("fibsem-os autofocus folder" in note for note in series.notes)


def test_sem_focus_scores_an_autofocus_folder_beside_fibsems_score(autofocus_folder, capsys):
    folder, sem_truth = autofocus_folder
    assert main(["score", str(folder), "--mag", "5000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"] if isinstance(out, dict) else out
    assert len(rows) == 22 and all("fibsem_tenengrad" in r and "score" in r for r in rows)
    best = max(rows, key=lambda r: r["score"])
    assert abs(sem_truth.defocus_um(best["working_distance_mm"])) <= sem_truth.depth_of_field_um()
    far = max(rows, key=lambda r: abs(sem_truth.defocus_um(r["working_distance_mm"])))
    assert far["score"] < best["score"] - 2


def test_napari_reader_opens_an_autofocus_folder(autofocus_folder):
    folder, _ = autofocus_folder
    reader = get_reader(str(folder))
    assert reader is not None
    ((data, meta, kind),) = reader(str(folder))
    assert kind == "image" and data.shape[0] == 22
    assert meta["metadata"]["focus_series"].recorded[0].keys() == {"fibsem_tenengrad"}


def test_a_broken_autofocus_folder_says_what_is_missing(autofocus_folder, tmp_path):
    folder, _ = autofocus_folder
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "iter_05.tif").unlink()
    with pytest.raises(SeriesError, match=r"lists 'iter_05\.tif', which is not in the folder"):
        read_series(broken)


def test_a_folder_with_some_other_data_json_is_read_as_frames(tmp_path):
    import tifffile

    for i in range(3):
        tifffile.imwrite(tmp_path / f"frame_{i}.tif", np.full((32, 32), 10 * i, np.uint8))
    (tmp_path / "data.json").write_text(json.dumps({"experiment": "not a sweep"}))
    series = read_series(tmp_path)
    assert [p.name for p in series.frame_paths] == ["frame_0.tif", "frame_1.tif", "frame_2.tif"]
    assert series.recorded == [{}, {}, {}]
