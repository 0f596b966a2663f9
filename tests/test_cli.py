"""The ``sem-focus`` CLI as a user calls it: tables, CSV/JSON, plots, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_sem_focus.cli import main
from napari_sem_focus.io.series import write_series_tiff

from .conftest import shared, texture


@pytest.fixture
def blur_stack(tmp_path):
    """5 frames, blur 4, 2, 0, 2, 4 px, working distances 4.98 ... 5.02 mm: the sharpest is frame 2."""
    blurs = [4.0, 2.0, 0.0, 2.0, 4.0]
    frames = [(texture((80, 100), blur_px=b) * 255).astype(np.uint8) for b in blurs]
    facts = [{"working_distance_mm": 4.98 + 0.01 * i} for i in range(5)]
    return write_series_tiff(tmp_path / "stack.tif", frames, facts)


def test_metrics_table_best_frame_and_plot(blur_stack, tmp_path, capsys):
    plot = tmp_path / "curve.png"
    assert main(["metrics", str(blur_stack), "--rank-by", "tenengrad", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "tenengrad" in out and "working_distance_mm" in out
    assert "best frame by tenengrad: 2 (stack.tif)" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_metrics_json_and_csv_outputs(blur_stack, tmp_path, capsys):
    assert main(["metrics", str(blur_stack), "--json", "--metric", "brenner"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["best_frame"] == 2 and payload["position_unit"] == "mm"
    assert len(payload["rows"]) == 5 and set(payload["rows"][0]) >= {"frame", "brenner"}
    out_csv = tmp_path / "t.csv"
    assert main(["metrics", str(blur_stack), "--csv", "--out", str(out_csv)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("frame,file,working_distance_mm,absolute_variance")
    assert len(printed) == 6
    assert out_csv.read_text().splitlines()[0] == printed[0]


def test_info_on_real_fei_file(capsys):
    assert main(["info", str(shared("fei_sem2surface/P33_scale1_detectorA.tif"))]) == 0
    out = capsys.readouterr().out
    assert "data bar: 79 rows (metadata)" in out
    assert "pixel_size_nm: 325.521" in out
    assert main(["info", "--json", str(shared("vendor_metadata/zeiss/zeiss_example_sem.tif"))]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["metadata"]["vendor"] == "Zeiss" and facts["databar_source"] == "detected"
    # three magnifications, each with its meaning: the vendor's (of a 512-px frame), 127 mm / HFW, and the model's
    assert main(["info", str(shared("vendor_metadata/zeiss/test_tiff_Zeiss_SEM_512pix.tif"))]) == 0
    out = capsys.readouterr().out
    assert "magnification (vendor, as the microscope displays it): 50000x" in out
    assert "reference magnification (127 mm / HFW): 42583x" in out
    assert "model magnification (127 mm over a 1024-px frame, from the pixel size 5.825 nm): 21292x" in out


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.tif", "no such file"),
        (lambda d: (d / "bad.tif").write_bytes(b"II*\x00junk") and d / "bad.tif", "cannot read"),
        (lambda d: d, "no image files"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, setup, message):
    path = setup(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "napari_sem_focus.cli", "metrics", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sem-focus: error:") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_fine_tune_from_default_on_a_labels_csv(tmp_path, capsys):
    from napari_sem_focus.scoring.weights import bundled_weights_path, read_weights_info
    from napari_sem_focus.simulate import simulate_series, write_series
    from napari_sem_focus.training.label_store import LabelStore

    if not bundled_weights_path().is_file():
        pytest.skip("bundled weights not built")
    frames, wds = simulate_series("grid", 2000.0, steps=6, shape=(96, 128), seed=1)
    stack = write_series(tmp_path, frames, wds)
    store = LabelStore(tmp_path / "labels.csv")
    for i, f in enumerate(frames):
        store.set(stack, i, 2000.0, round(f.score))
    out = tmp_path / "my_model.safetensors"
    assert (
        main(
            [
                "train",
                "--labels",
                str(store.path),
                "--init",
                "default",
                "--regime",
                "full",
                "--steps",
                "2",
                "--echo",
                "2",
                "--batch-size",
                "3",
                "--crop",
                "64",
                "64",
                "--val",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    facts = read_weights_info(out).facts
    assert facts["steps"] == 2 and facts["init"] == "default" and facts["train_frames"] == 6
    assert facts["recipe"]["echo"] == 2  # two steps on one fresh batch (data echoing)


@pytest.mark.parametrize("user", ["stricter", "agrees"])
def test_cli_adapts_to_a_few_labels_only_when_it_helps(tmp_path, capsys, user):
    """`sem-focus train --labels CSV --init default`: few-label adaptation with cross-validated figures."""
    from napari_sem_focus.scoring.infer import score_frames
    from napari_sem_focus.scoring.weights import load_model, read_weights_info
    from napari_sem_focus.simulate import simulate_series, write_series
    from napari_sem_focus.training.label_store import LabelStore

    frames, wds = simulate_series("tinball", 5000.0, steps=8, shape=(240, 320), seed=2)
    stack = write_series(tmp_path, frames, wds)
    images = [f.image.astype(np.float32) / 255.0 for f in frames]
    ours = [r.score for r in score_frames(images, 5000.0, load_model(None), "structure")]
    store = LabelStore(tmp_path / "labels.csv")
    for i, s in enumerate(ours):
        store.set(stack, i, 5000.0, round(10 * (s / 10) ** 2, 2) if user == "stricter" else round(s, 2))
    out = tmp_path / "mine.safetensors"
    plot = tmp_path / "remap.png"
    argv = ["train", "--labels", str(store.path), "--init", "default", "--out", str(out), "--plot", str(plot)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    facts = json.loads(out.with_suffix(".json").read_text())
    assert facts["n_frames"] == 8 and facts["folds"] == 5 and "line" in facts["table"]
    assert plot.stat().st_size > 10_000 and f"drawn in {plot}" in text  # the remap over the labels, either way
    if user == "stricter":
        assert "cross-validated RMSE" in text and out.is_file()
        assert f"adopted {facts['regime']}" in text and facts["description"] in text
        assert facts["adopted"] and facts["cv_rmse_after"] < 0.7 * facts["cv_rmse_before"]
        assert read_weights_info(out).facts["cv_rmse_after"] == facts["cv_rmse_after"]
    else:
        assert "did not help" in text and "no weights written" in text and not out.exists()
        assert not facts["adopted"]


def test_eval_prints_the_paper_tables_heldout_and_high_magnifications(tmp_path, capsys):
    from napari_sem_focus.simulate import write_dataset

    csvs = {split: write_dataset(tmp_path / split, 8, split) for split in ("train", "test", "heldout", "highmag")}
    out_json = tmp_path / "eval.json"
    argv = ["eval", "--test", str(csvs["test"]), "--train", str(csvs["train"]), "--heldout", str(csvs["heldout"])]
    argv += ["--highmag", str(csvs["highmag"]), "--compare", "Same weights=default", "--json", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for heading in ("Table 1.", "Table 2.", "Held-out specimen family", "High magnifications"):
        assert heading in out
    assert "100,000" in out and "10,000" in out
    results = json.loads(out_json.read_text())
    table2 = results["table2"]
    assert set(table2) == {"Absolute Variance", "Same weights", "Proposed (ResNet18 + mag)"}
    # the same weights under two names give the same figures; every figure is a finite RMSE on the 0-10 scale
    assert table2["Same weights"] == table2["Proposed (ResNet18 + mag)"]
    assert results["highmag"]["Same weights"]["total"] == results["highmag"]["Proposed (ResNet18 + mag)"]["total"]
    totals = [col["total"] for part in ("table2", "heldout", "highmag") for col in results[part].values()]
    assert all(0 <= t <= 10 for t in totals)


def test_folder_out_of_focus_order_warns(tmp_path, capsys):
    """Defocus -3 ... +3 saved as m01..m03, p00..p03 without working distances: sorted by name it has two peaks."""
    import cv2

    for name, blur in [("m01", 1), ("m02", 2), ("m03", 3), ("p00", 0), ("p01", 1), ("p02", 2), ("p03", 3)]:
        frame = (texture((80, 100), blur_px=1.5 * blur) * 255).astype(np.uint8)
        assert cv2.imwrite(str(tmp_path / f"defocus_{name}.png"), frame)
    assert main(["metrics", str(tmp_path), "--rank-by", "tenengrad"]) == 0
    out = capsys.readouterr().out
    assert "best frame by tenengrad: 3 (defocus_p00.png)" in out
    assert "warning: the focus curve has 2 separate peaks (frames 3, 0)" in out
    assert main(["metrics", str(tmp_path), "--rank-by", "tenengrad", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["other_peaks"] == [0] and "not be in focus order" in payload["warning"]


def test_focus_ordered_stack_has_no_warning(blur_stack, capsys):
    assert main(["metrics", str(blur_stack), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["other_peaks"] == [] and payload["warning"] is None


@pytest.fixture
def corner_stack(tmp_path):
    """3 frames of 480x640 px, flat grey except a 240x320 corner of simulated tin balls (5,000x) out of focus,
    in focus and out of focus, plus a 4th, featureless frame: the sharpest is frame 1; frame 3 has no structure."""
    from napari_sem_focus.simulate import simulate_series

    corners, _ = simulate_series("tinball", 5000.0, steps=3, shape=(240, 320), seed=3, end_score=3.0)
    frames = []
    for corner in corners:
        frame = np.full((480, 640), int(np.median(corner.image)), np.uint8)
        frame[:240, :320] = corner.image
        frames.append(frame)
    frames.append(np.full((480, 640), 102, np.uint8))
    facts = [{"pixel_size_nm": 24.8046875} for _ in frames]
    return write_series_tiff(tmp_path / "corner.tif", frames, facts)


def test_score_structure_mode_confidence_and_no_structure_note(corner_stack, capsys):
    assert main(["score", str(corner_stack), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mode"] == "structure" and payload["best_frame"] == 1
    rows = payload["rows"]
    assert all({"score", "spread", "structure", "note"} <= set(r) for r in rows)
    assert 0.2 <= rows[1]["structure"] <= 0.6  # the textured corner's tiles, of a 480x640 frame
    assert rows[3]["note"] == "no structure in the scored region" and rows[3]["structure"] == 0
    assert payload["frames_without_structure"] == [3]
    assert main(["score", str(corner_stack)]) == 0
    out = capsys.readouterr().out
    assert "best frame score" in out and "structure in" in out
    assert "note: no structure in the scored region of frame(s) 3" in out


def test_score_region_of_interest(corner_stack, capsys):
    assert main(["score", str(corner_stack), "--roi", "0", "0", "320", "240", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["roi"] == [0, 0, 320, 240] and payload["best_frame"] == 1
    assert payload["rows"][1]["structure"] == 1.0  # the region is all texture
    assert main(["score", str(corner_stack), "--roi", "320", "240", "320", "240", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["frames_without_structure"] == [0, 1, 2, 3]  # the flat quarter: nothing to focus on


@pytest.mark.parametrize(
    ("roi", "message"),
    [(["700", "0", "100", "100"], "lies outside the 640x480 px image"), (["0", "0", "200", "100"], "smaller than")],
)
def test_score_bad_region_one_line_exit_2(corner_stack, roi, message):
    proc = subprocess.run(
        [sys.executable, "-m", "napari_sem_focus.cli", "score", str(corner_stack), "--roi", *roi],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_recipe_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "w.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_sem_focus", "train", "--recipe", "gpu", "--simulate", "8", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no CUDA GPU is available" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_metric_columns_are_what_is_neither_identity_nor_learned_score():
    from napari_sem_focus.scoring.analysis import metric_columns

    rows = [
        {
            "series": "a",
            "frame": 0,
            "file": "f.tif",
            "working_distance_mm": 5.0,
            "score": 7.0,
            "spread": 0.1,
            "structure": 1.0,
            "note": "",
            "tenengrad": 0.3,
            "normalized_variance": 0.02,
        }
    ]
    assert metric_columns(rows) == ["tenengrad", "normalized_variance"]
    assert metric_columns(rows, "tenengrad") == ["normalized_variance"]
    assert metric_columns([]) == []


def test_score_shows_the_model_and_the_microscope_magnification(capsys):
    path = shared("fei_sem2surface/Indent_20230912_7kV_spot4.5_FOV100um_multiBSE_A_05.tif")
    assert main(["score", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model magnification: 1905x (pixel size 65.1 nm; the microscope displays 1270x)" in out


def test_cli_trains_with_auxiliary_targets_and_progressive_crops(tmp_path):
    """`sem-focus train --aux-weight W --progressive` on simulated and blank frames: the levers reach the run and
    the weights written are the plain scoring network."""
    from napari_sem_focus.scoring.model import build_focus_net
    from napari_sem_focus.scoring.weights import load_model, read_weights_info

    out = tmp_path / "aux.safetensors"
    args = ["train", "--simulate", "8", "--blank", "4", "--steps", "2", "--batch-size", "4", "--crop", "64", "48"]
    args += ["--aux-weight", "0.3", "--progressive", "--val", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    facts = read_weights_info(out).facts
    assert facts["steps"] == 2 and facts["recipe"]["aux_weight"] == 0.3 and facts["recipe"]["progressive"] is True
    assert set(load_model(out).state_dict()) == set(build_focus_net().state_dict())
