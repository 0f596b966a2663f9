"""The core stays free of Qt/napari, and torch is not imported by the napari-facing modules at start-up."""

from __future__ import annotations

import subprocess
import sys

CORE = ["io", "metadata", "databar", "metrics", "structure", "focus_curve", "analysis", "report", "cli"]


def test_core_imports_neither_qt_nor_napari_nor_torch():
    code = (
        "import sys\n"
        + "".join(f"import napari_sem_focus.{m}\n" for m in CORE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'torch', 'magicgui'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


SCORE_PATH_NEVER = ("napari_sem_focus.simulate", "napari_sem_focus.data", "napari_sem_focus.train")


def test_scoring_a_file_never_imports_the_simulator_data_or_training(tmp_path):
    """Read a TIFF, score it in every mode with the bundled weights and compute the classic metrics: the score
    path (io, metadata, metrics, infer, structure, analysis, weights, model) loads no simulator, dataset or
    training module."""
    code = f"""
import sys
import numpy as np
import tifffile
rng = np.random.default_rng(0)
stack = (rng.random((2, 300, 400)) * 255).astype(np.uint8)
tifffile.imwrite({str(tmp_path / "stack.tif")!r}, stack)
from napari_sem_focus.analysis import score_rows
from napari_sem_focus.io import read_series
from napari_sem_focus.infer import MODES
series = read_series({str(tmp_path / "stack.tif")!r})
for mode in MODES:
    rows = list(score_rows(series, None, 5000.0, mode, "cpu", metrics=["absolute_variance"]))
    assert len(rows) == 2, rows
never = {SCORE_PATH_NEVER!r}
print(",".join(sorted(m for m in sys.modules if m in never or m.startswith(tuple(n + "." for n in never)))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
