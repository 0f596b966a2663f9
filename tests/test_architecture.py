"""The layers of the package (docs/contributing.md): the core stays free of Qt/napari, torch is not imported by the
napari-facing modules at start-up, and nothing but the training side imports the simulator, datasets or training.
Checked on every module of the package, each imported alone in a fresh interpreter."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from functools import cache

import pytest

import napari_sem_focus

GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy"}
#: What may import the simulator, the datasets and the training loop when it is imported.
TRAINING_SIDE = (
    "napari_sem_focus.simulate",
    "napari_sem_focus.data",
    "napari_sem_focus.train",
    "napari_sem_focus.evaluate",
)
#: What napari loads at start-up (napari.yaml): no torch there.
NAPARI_FACING = ("napari_sem_focus._reader", "napari_sem_focus._sample_data", "napari_sem_focus._widgets")


def _all_modules() -> list[str]:
    walk = pkgutil.walk_packages(napari_sem_focus.__path__, "napari_sem_focus.")
    return ["napari_sem_focus", *sorted(m.name for m in walk if not m.name.endswith("__main__"))]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@cache
def _imported_by(module: str) -> tuple[set[str], set[str]]:
    """(top-level packages, napari_sem_focus modules) in sys.modules after importing ``module`` alone."""
    code = f"import sys, json, {module}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = json.loads(out.strip().splitlines()[-1])
    return {n.split(".")[0] for n in names}, {n for n in names if n.startswith("napari_sem_focus")}


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_keeps_to_its_layer(module):
    packages, own = _imported_by(module)
    if not _within(module, ("napari_sem_focus._widgets",)):
        assert not packages & GUI, f"{module} imports {sorted(packages & GUI)} (core and reader stay GUI-free)"
    if _within(module, NAPARI_FACING) and not _within(module, ("napari_sem_focus._widgets",)):
        assert "torch" not in packages, f"{module} imports torch at napari start-up"
    if _within(module, ("napari_sem_focus._widgets",)):
        assert "torch" not in packages, f"{module} imports torch when napari builds the widget"
    if not _within(module, TRAINING_SIDE):
        wrong = sorted(m for m in own if _within(m, TRAINING_SIDE))
        assert not wrong, f"{module} imports {wrong} (only the training side may)"


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
    training module, and no microscope library (fibsem)."""
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
never = {SCORE_PATH_NEVER!r} + ("fibsem",)  # nor a microscope library
print(",".join(sorted(m for m in sys.modules if m in never or m.startswith(tuple(n + "." for n in never)))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
