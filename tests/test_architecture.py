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
