"""Live scoring of a folder the microscope writes into: each frame once, in order; half-written files retried."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.focusing.live import iter_complete_files, iter_live_scores, read_frames
from napari_sem_focus.io.series import write_series_tiff
from napari_sem_focus.scoring.weights import load_model
from napari_sem_focus.simulate import simulate_series

FAST = {"poll_s": 0.05, "settle_s": 0.2, "give_up_s": 1.5}


@pytest.fixture(scope="module")
def frame_files(tmp_path_factory):
    """Five frames of a simulated focus series (best in the middle), each a finished single-page TIFF."""
    frames, wds = simulate_series("tinball", 5000.0, steps=5, shape=(240, 320), seed=2)
    folder = tmp_path_factory.mktemp("made")
    files = []
    for i, (frame, wd) in enumerate(zip(frames, wds, strict=True)):
        files.append(write_series_tiff(folder / f"frame_{i}.tif", [frame.image], [frame.facts(wd)]))
    return files, [f.score for f in frames]


def test_every_frame_once_in_order_and_half_written_files_wait(tmp_path, frame_files):
    files, truth = frame_files
    watched = tmp_path / "watched"
    watched.mkdir()
    failures = []

    def counting_read(path):
        try:
            return read_frames(path)
        except Exception:
            failures.append(path.name)
            raise

    def microscope():
        # written out of name order is impossible for a scan sequence; names are written 0, 1, ..., each in two
        # halves with a pause longer than the settle time between them
        for i, src in enumerate(files):
            data = src.read_bytes()
            target = watched / f"frame_{i}.tif"
            with open(target, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(0.5)
                handle.write(data[len(data) // 2 :])
            time.sleep(0.1)

    load_model()  # the model is loaded (cached) before the microscope starts writing
    writer = threading.Thread(target=microscope)
    writer.start()
    results = list(iter_live_scores(watched, read=counting_read, idle_exit_s=2.0, **FAST))
    writer.join()
    assert [r.path.name for r in results] == [f"frame_{i}.tif" for i in range(5)]
    assert all(r.error is None for r in results)
    assert failures, "the watcher never met a half-written file: the test did not test retrying"
    scores = [r.score.score for r in results]
    assert int(np.argmax(scores)) == int(np.argmax(truth)) == 2
    assert results[2].working_distance_mm == pytest.approx(5.0)


def test_a_file_that_never_becomes_readable_is_reported_then_skipped(tmp_path, frame_files):
    files, _ = frame_files
    (tmp_path / "frame_0.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # a broken TIFF that never grows
    (tmp_path / "frame_1.tif").write_bytes(files[1].read_bytes())
    out = list(iter_complete_files(tmp_path, idle_exit_s=0.5, **FAST))
    assert [p.name for p, _, _ in out] == ["frame_0.tif", "frame_1.tif"]
    assert out[0][1] is None and "unreadable after 1.5 s" in out[0][2]
    assert out[1][2] is None and out[1][1][1][0].shape == (240, 320)


def test_existing_files_ignored_on_request_stop_and_bad_folder(tmp_path, frame_files):
    files, _ = frame_files
    (tmp_path / "old.tif").write_bytes(files[0].read_bytes())
    stops = iter([False, False, True])
    out = list(iter_complete_files(tmp_path, include_existing=False, should_stop=lambda: next(stops), **FAST))
    assert out == []
    with pytest.raises(SemFocusError, match="not a folder"):
        next(iter_complete_files(tmp_path / "missing"))


def test_cli_watch_scores_what_is_there_and_stops_when_idle(tmp_path, frame_files, capsys):
    from napari_sem_focus.cli import main

    files, _ = frame_files
    for i in (0, 2):
        (tmp_path / f"frame_{i}.tif").write_bytes(files[i].read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    out = tmp_path / "live.csv"
    assert main(["watch", str(tmp_path), "--poll", "0.05", "--idle-exit", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "0  frame_0.tif: score" in lines[0] and "best so far: frame_2.tif" in lines[1]
    assert out.read_text().count("\n") == 3  # header + 2 rows


def test_growing_stack_keeps_frames_in_order_and_refuses_another_size():
    from napari_sem_focus.focusing.live import GrowingStack

    stack = GrowingStack()
    with pytest.raises(ValueError):
        _ = stack.array
    for i in range(20):  # past two doublings of the buffer
        assert stack.append(np.full((3, 4), i, np.float32))
    assert stack.array.shape == (20, 3, 4) and [float(f[0, 0]) for f in stack.array] == list(range(20))
    assert not stack.append(np.zeros((4, 4), np.float32)) and stack.count == 20


def test_cli_watch_mag_is_only_a_fallback_for_files_without_metadata(tmp_path, frame_files, capsys):
    """--mag serves files that state no magnification; a file's own metadata wins (the tin-ball TIFF: 5,000x)."""
    import cv2

    from napari_sem_focus.cli import main
    from napari_sem_focus.focusing.live import read_frames

    files, _ = frame_files
    (tmp_path / "a_with_metadata.tif").write_bytes(files[2].read_bytes())
    _, frames = read_frames(files[2])
    cv2.imwrite(str(tmp_path / "b_plain.png"), (frames[0] * 255).astype("uint8"))
    assert (
        main(
            [
                "watch",
                str(tmp_path),
                "--mag",
                "500",
                "--poll",
                "0.05",
                "--idle-exit",
                "1",
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 0
    )
    import csv

    with open(tmp_path / "o.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scores = {r["file"]: float(r["score"]) for r in rows}
    # the same image: scored at 5,000x from its metadata, at the 500x fallback as a bare PNG — so they differ
    from napari_sem_focus.scoring.infer import score_frames
    from napari_sem_focus.scoring.weights import load_model

    (at_5000,) = score_frames([frames[0]], 5000.0, load_model())
    assert scores["a_with_metadata.tif"] == pytest.approx(at_5000.score, abs=1e-3)
    assert abs(scores["b_plain.png"] - scores["a_with_metadata.tif"]) > 1e-3
