"""Every image in ../shared/data opens, through the core reader and the napari reader hook, and every TIFF
compression that SEMs write decodes with the declared dependencies (a missing codec is named, not called
corruption). The file list comes from ../shared/data/manifest.csv, so a file added there is tested too."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from napari_sem_focus.io.series import IMAGE_SUFFIXES, read_series

from .conftest import SHARED_DATA, texture


def _manifest_images() -> list[str]:
    manifest = SHARED_DATA / "manifest.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [row["path"] for row in csv.DictReader(handle) if row["path"].lower().endswith(IMAGE_SUFFIXES)]


MANIFEST_IMAGES = _manifest_images()


def test_manifest_lists_every_image_on_disk():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real SEM test data not available ({SHARED_DATA})")
    on_disk = {str(p.relative_to(SHARED_DATA)) for p in SHARED_DATA.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    assert on_disk == set(MANIFEST_IMAGES)  # so the parametrised test below reads every file


@pytest.mark.skipif(not MANIFEST_IMAGES, reason=f"real SEM test data not available ({SHARED_DATA})")
@pytest.mark.parametrize("relative", MANIFEST_IMAGES)
def test_every_shared_image_reads(relative):
    from napari_sem_focus._reader import get_reader

    path = SHARED_DATA / relative
    series = read_series(path)
    frame = series.frame(0)
    rows, cols = series.scored_shape
    assert frame.shape == (rows, cols) and frame.dtype == np.float32
    assert np.isfinite(frame).all() and 0.0 <= frame.min() < frame.max() <= 1.0
    reader = get_reader(str(path))
    assert reader is not None
    data, _kwargs, kind = reader(str(path))[0]
    assert kind == "image" and tuple(data.shape) == series.shape
    np.testing.assert_array_equal(np.asarray(data), series.raw_frame(0))


@pytest.mark.parametrize("compression", ["lzw", "zlib", "packbits", "jpeg", "zstd"])
def test_tiff_compressions_decode(tmp_path, compression):
    image = (texture((96, 128)) * 255).astype(np.uint8)
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, image, compression=compression)
    frame = read_series(path).frame(0)
    atol = 8 / 255 if compression == "jpeg" else 1e-6  # JPEG is lossy
    np.testing.assert_allclose(frame, image / 255.0, atol=atol)


def test_missing_codec_is_named_not_called_corrupt(tmp_path):
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, (texture((64, 64)) * 255).astype(np.uint8), compression="lzw")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["imagecodecs"] = None  # as on a machine without the package
        from napari_sem_focus.cli import main
        sys.exit(main(["info", {str(path)!r}]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "LZW-compressed" in proc.stderr and "pip install imagecodecs" in proc.stderr
    assert "corrupt" not in proc.stderr
