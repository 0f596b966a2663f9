"""Archive-scale scoring: a folder tree streamed into a CSV, resumable after a stop or a kill, the same rows with
reading in worker processes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_sem_focus.batch.archive import archive_files, iter_score_archive, scored_frames
from napari_sem_focus.errors import CancelledError
from napari_sem_focus.simulate import simulate_series, write_series
from napari_sem_focus.training.train import drive


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


def _stop_after(files: int):
    """A should_stop that turns true at the ``files``-th look (one look per file)."""
    looks = iter(range(1, 10**6))
    return lambda: next(looks) >= files


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
    out = tmp_path / "resumed.csv"
    with pytest.raises(CancelledError, match="resume to continue"):
        drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=4, should_stop=_stop_after(3)))
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
    parquet = pytest.importorskip("pyarrow.parquet")
    assert main(["archive", str(archive), "--out", str(tmp_path / "qc.parquet"), "--mag", "2000"]) == 0
    assert parquet.read_table(tmp_path / "qc.parquet").column("file").to_pylist() == [r["file"] for r in _rows(out)]


def test_parquet_without_pyarrow_is_a_clear_error(archive, tmp_path, monkeypatch):
    import sys

    from napari_sem_focus.errors import SemFocusError

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(SemFocusError, match="pip install pyarrow"):
        drive(iter_score_archive(archive, tmp_path / "qc.parquet", magnification=2000.0))


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


def test_parquet_results_are_written_in_parts_and_resume_like_the_csv(archive, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from napari_sem_focus.batch.archive import ParquetResults

    drive(iter_score_archive(archive, tmp_path / "once.csv", magnification=2000.0, batch_size=4))
    out = tmp_path / "qc.parquet"
    with pytest.raises(CancelledError):
        drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=4, should_stop=_stop_after(3)))
    first = ParquetResults(out).parts()
    assert len(first) == 1 and 0 < pq.read_table(out).num_rows < 9  # the rows before the stop, in a part
    result = drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=4))
    assert result.skipped_frames == pq.read_table(first[0]).num_rows and len(ParquetResults(out).parts()) == 2
    table = pq.read_table(out).to_pylist()
    expected = _rows(tmp_path / "once.csv")
    assert [(r["file"], r["frame"]) for r in table] == [(r["file"], int(r["frame"])) for r in expected]
    assert [r["score"] for r in table] == [float(r["score"]) if r["score"] else None for r in expected]
    assert not list(out.glob(".*"))  # no temporary part left behind
    drive(iter_score_archive(archive, out, magnification=2000.0, resume=False))  # --restart: one fresh part
    assert len(ParquetResults(out).parts()) == 1 and pq.read_table(out).num_rows == 9


def test_parquet_parts_are_written_as_rows_come(archive, tmp_path):
    pytest.importorskip("pyarrow")
    from napari_sem_focus.batch.archive import ParquetResults

    results = ParquetResults(tmp_path / "qc.parquet", rows_per_part=2)
    rows = [{"file": f"f{i}.tif", "frame": 0, "score": float(i)} for i in range(4)]
    with results.writer(fresh=True) as write:
        write(rows[:1])
        assert results.parts() == []  # one row: kept until a part is full
        write(rows[1:3])
        assert len(results.parts()) == 1  # three rows written as they came
        write(rows[3:])
        assert len(results.parts()) == 1
    assert len(results.parts()) == 2  # the last row when the run ended
    assert results.scored() == {(f"f{i}.tif", 0) for i in range(4)}


def test_a_resumed_run_does_not_open_the_files_it_finished(archive, tmp_path, monkeypatch):
    from napari_sem_focus.batch.archive import finished_files
    from napari_sem_focus.io import series as io

    assert finished_files(["a", "b", "c", "d"], {("a", 0), ("b", 0), ("c", 1)}) == {"a", "b"}  # c may be cut off
    assert finished_files(["a", "b"], set()) == set()
    out = tmp_path / "qc.csv"
    with pytest.raises(CancelledError):
        drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=1, should_stop=_stop_after(5)))
    names = [p.relative_to(archive).as_posix() for p in archive_files(archive)]
    finished = finished_files(names, scored_frames(out))
    assert 4 <= len(finished) < 6
    opened, read_series = [], io.read_series

    def counting(path, *args, **kwargs):
        opened.append(path.relative_to(archive).as_posix())
        return read_series(path, *args, **kwargs)

    monkeypatch.setattr(io, "read_series", counting)
    result = drive(iter_score_archive(archive, out, magnification=2000.0, batch_size=1))
    assert result.files_done == 6 and len(_rows(out)) == 9
    assert opened == [name for name in names if name not in finished]  # only the last written and the rest
