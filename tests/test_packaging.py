"""napari finds the manifest from an editable install and from a wheel; `npe2 validate` passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_found_through_entry_point_and_valid():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-sem-focus")
    assert manifest.name == "napari-sem-focus"
    assert any(r.command == "napari-sem-focus.get_reader" for r in manifest.contributions.readers)
    proc = subprocess.run(["npe2", "validate", "napari-sem-focus"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_top_level_manifest_is_the_packaged_one():
    packaged = ROOT / "src" / "napari_sem_focus" / "napari.yaml"
    assert (ROOT / "napari.yaml").read_text() == packaged.read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_wheel_contains_manifest_and_bundled_files(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 and "No matching distribution found for hatchling" in proc.stderr:
        pytest.skip("cannot fetch the build backend here")
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("napari_sem_focus-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_sem_focus/napari.yaml" in names
        assert "napari_sem_focus/weights/default.safetensors" in names
        assert "napari_sem_focus/weights/MODEL_CARD.md" in names
        text = zf.read("napari_sem_focus/napari.yaml").decode()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari_sem_focus:napari.yaml" in zf.read(entry).decode()
    assert "napari-sem-focus.get_reader" in text
