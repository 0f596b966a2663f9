"""Archive-scale scoring: a folder tree streamed into a CSV, resumable after a stop or a kill, the same rows with
reading in worker processes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_sem_focus.archive import archive_files, iter_score_archive, scored_frames
from napari_sem_focus.errors import CancelledError
from napari_sem_focus.simulate import simulate_series, write_series
from napari_sem_focus.train import drive


@pytest.fixture
def archive(tmp_path):
    """run/s1: four single-frame TIFFs without metadata; run/s10: a 4-frame stack with metadata and a broken
    file; run/.trash: hidden, never scored."""
    root = tmp_path / "run"
    frames, wds = simulate_series("grid", 2000.0, steps=4, shape=(240, 320), seed=1)
    (root / "s1").mkdir(parents=True)
    for i, frame in enumerate(frames):
        tifffile.imwrite(root / "s1" / f"f{i}.tif", (frame.image * 255).astype(np.uint8))
    write_series(root / "s10", frames, wds)
    (root / "s10" / "broken.tif").write_bytes(b"II*\x00not a tiff")
    (root / ".trash").mkdir()
    tifffile.imwrite(root / ".trash" / "old.tif", np.zeros((32, 32), np.uint8))
    return root


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_tree_is_scored_in_path_order_into_one_csv(archive, tmp_path):
    assert [p.relative_to(archive).as_posix() for p in archive_files(archive)] == [
        "s1/f0.tif",
        "s1/f1.tif",
        "s1/f2.tif",
        "s1/f3.tif",
        "s10/broken.tif",
        "s10/series.tif",
    ]
    result = drive(iter_score_archive(archive, tmp_path / "all.csv", magnification=2000.0, batch_size=4))
    rows = _rows(tmp_path / "all.csv")
    assert result.rows_written == len(rows) == 9 and result.files_done == 6
    assert [(r["file"], r["frame"]) for r in rows][-4:] == [("s10/series.tif", str(i)) for i in range(4)]
    assert rows[0]["magnification_source"] == "given" and rows[-1]["magnification_source"].startswith("pixel size")
    broken = next(r for r in rows if r["file"] == "s10/broken.tif")
    assert broken["score"] == "" and "cannot read" in broken["note"]
    scores = [float(r["score"]) for r in rows if r["file"] == "s10/series.tif"]
    assert int(np.argmax(scores)) in (1, 2)  # the in-focus frames of the simulated series


def test_a_stopped_or_killed_run_resumes_to_the_same_rows(archive, tmp_path):
    drive(iter_score_archive(archive, tmp_path / "once.csv", magnification=2000.0, batch_size=4))
    calls = {"n": 0}

    def stop_after_three_files() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    out = tmp_path / "resumed.csv"
    with pytest.raises(CancelledError, match="resume to continue"):
        drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=4, should_stop=stop_after_three_files))
    assert 0 < len(_rows(out)) < 9
    with open(out, "a", encoding="utf-8") as handle:  # a kill in the middle of writing a line
        handle.write("s10/series.tif,0,2000.0,pixel size")
    assert ("s10/series.tif", 0) not in scored_frames(out) and out.read_text().endswith("\n")
    result = drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=4))
    assert result.skipped_frames > 0
    assert _rows(out) == _rows(tmp_path / "once.csv")


def test_reading_in_worker_processes_gives_the_same_rows(archive, tmp_path):
    drive(iter_score_archive(archive, tmp_path / "w0.csv", magnification=2000.0, workers=0))
    drive(iter_score_archive(archive, tmp_path / "w2.csv", magnification=2000.0, workers=2))
    assert _rows(tmp_path / "w2.csv") == _rows(tmp_path / "w0.csv")


def test_cli_archive_resumes_by_default_and_restarts_on_request(archive, tmp_path, capsys):
    from napari_sem_focus.cli import main

    out = tmp_path / "qc.csv"
    assert main(["archive", str(archive), "--out", str(out), "--mag", "2000"]) == 0
    assert "9 frames of 6 files written" in capsys.readouterr().out
    assert main(["archive", str(archive), "--out", str(out), "--mag", "2000"]) == 0
    assert "0 frames of 6 files written" in capsys.readouterr().out and len(_rows(out)) == 9
    assert main(["archive", str(archive), "--out", str(out), "--mag", "2000", "--restart"]) == 0
    assert len(_rows(out)) == 9
    assert main(["archive", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_a_dask_cluster_of_two_workers_gives_the_same_rows(archive, tmp_path):
    distributed = pytest.importorskip("distributed")

    drive(iter_score_archive(archive, tmp_path / "local.csv", magnification=2000.0))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            result = drive(
                iter_score_archive(archive, tmp_path / "dask.csv", magnification=2000.0, dask=client, chunk_files=2)
            )
            assert len(client.nthreads()) == 2
    assert result.files_done == 6 and result.rows_written == 9
    assert _rows(tmp_path / "dask.csv") == _rows(tmp_path / "local.csv")
