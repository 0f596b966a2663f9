"""Vendor metadata from every real vendor file in ../shared/data (values from SOURCE.md / manifest.csv)."""

from __future__ import annotations

import pytest

from napari_sem_focus.io.metadata import SemMetadata, parse_jeol_sidecar, parse_tescan_tag, parse_zeiss
from napari_sem_focus.io.series import read_series

from .conftest import shared

# file, vendor, magnification, pixel size (nm), WD (mm), HV (kV), detector contains, data-bar rows, bar source
VENDOR_FILES = [
    (
        "fei_sem2surface/P33_scale1_detectorA.tif",
        "FEI/Thermo",
        254,
        325.521,
        4.99405,
        7.0,
        "ABS",
        79,
        "metadata",
    ),
    (
        "fei_sem2surface/P33_scale2s3_detectorA.tif",
        "FEI/Thermo",
        1270,
        65.1042,
        4.99997,
        7.0,
        "ABS A",
        79,
        "metadata",
    ),
    (
        "fei_sem2surface/P33_scale2s3_detectorC.tif",
        "FEI/Thermo",
        1270,
        65.1042,
        4.99997,
        7.0,
        "ABS C",
        79,
        "metadata",
    ),
    (
        "fei_sem2surface/Indent_20230912_7kV_spot4.5_FOV100um_multiBSE_A_05.tif",
        "FEI/Thermo",
        1270,
        65.1042,
        5.01145,
        7.0,
        "ABS",
        79,
        "metadata",
    ),
    (
        "vendor_metadata/thermofisher_fei/tfs_example.tif",
        "FEI/Thermo",
        333.3,
        269.792,
        6.81643,
        2.0,
        "ETD",
        68,
        "metadata",
    ),
    ("vendor_metadata/zeiss/zeiss_example_sem.tif", "Zeiss", 188, 593.3, 5.2, 5.0, "InLens", 60, "detected"),
    (
        "vendor_metadata/zeiss/test_tiff_Zeiss_SEM_1k.tif",
        "Zeiss",
        105,
        2615.0,
        14.808,
        25.0,
        "HE-SE2",
        77,
        "detected",
    ),
    (
        "vendor_metadata/zeiss/test_tiff_Zeiss_SEM_512pix.tif",
        "Zeiss",
        50000,
        5.825,
        3.9,
        5.0,
        "InLens",
        34,
        "detected",
    ),
    (
        "vendor_metadata/tescan/tescan_example_sem1.tif",
        "TESCAN",
        108.08,
        2501.2,
        13.25,
        10.0,
        "SE",
        120,
        "metadata",
    ),
    ("vendor_metadata/jeol/jeol_example_sem.tif", "JEOL", 50, 2000.0, 9.07, 5.0, "LED", 0, "none"),
]


@pytest.mark.parametrize(
    ("relative", "vendor", "mag", "pixel_nm", "wd_mm", "kv", "detector", "bar", "bar_source"), VENDOR_FILES
)
def test_vendor_file_metadata(relative, vendor, mag, pixel_nm, wd_mm, kv, detector, bar, bar_source):
    series = read_series(shared(relative))
    meta = series.metadata[0]
    assert meta.vendor == vendor
    assert meta.magnification == pytest.approx(mag, rel=1e-3)
    assert meta.pixel_size_nm == pytest.approx(pixel_nm, rel=1e-4)
    assert meta.working_distance_mm == pytest.approx(wd_mm, rel=1e-5)
    assert meta.high_voltage_kv == pytest.approx(kv)
    assert detector in meta.detector
    assert series.databar_source == bar_source
    assert abs(series.databar_rows - bar) <= (2 if bar_source == "detected" else 0)
    frame = series.frame(0)
    assert frame.shape == (series.shape[0] - series.databar_rows, series.shape[1])
    assert 0.0 <= frame.min() and frame.max() <= 1.0


def test_unknown_fields_stay_none():
    """DeepFocus PNGs have no metadata: nothing is invented."""
    series = read_series(shared("deepfocus/series_0_def-13324_astx-466_asty219_base.png"))
    assert series.metadata[0] == SemMetadata()
    assert series.reference_magnification is None


def test_reference_magnification_is_vendor_independent():
    """Zeiss' 188x and the 127 mm reference differ; the reference value follows from the pixel size."""
    series = read_series(shared("vendor_metadata/zeiss/zeiss_example_sem.tif"))
    expected = 127.0 / (593.3e-6 * 1024)
    assert series.reference_magnification == pytest.approx(expected, rel=1e-6)
    fei = read_series(shared("fei_sem2surface/P33_scale1_detectorA.tif"))
    assert fei.reference_magnification == pytest.approx(fei.magnification, rel=1e-3)  # FEI uses 127 mm


def test_zeiss_text_magnification_and_units():
    meta = parse_zeiss(
        {
            "ap_mag": ("Mag", "12.5 K X"),
            "ap_pixel_size": ("Pixel Size", 1.5, "µm"),
            "ap_wd": ("WD", 8.5, "mm"),
            "ap_actualkv": ("EHT", 3000.0, "V"),
            "dp_dwell_time": ("Dwell Time", 100, "ns"),
        }
    )
    assert meta.magnification == 12500
    assert meta.pixel_size_nm == 1500
    assert meta.working_distance_mm == 8.5
    assert meta.high_voltage_kv == 3.0
    assert meta.dwell_time_us == pytest.approx(0.1)


def test_jeol_sidecar_and_derived_pixel_size():
    meta = parse_jeol_sidecar("$CM_MAG 1000\n$$SM_WD 10.0\n$CM_ACCEL_VOLT 15.00\n$CM_FULL_SIZE 1280 960\n")
    assert meta.pixel_size_nm == pytest.approx(100.0)  # 128 mm / (1000 x 1280 px)
    assert "pixel_size_nm" in meta.derived
    assert meta.working_distance_mm == 10.0


def test_tescan_tag_ignores_binary_thumbnail():
    blob = b"\x00\xffjP  \r\n\x87garbage=\xff\xd9\x00Magnification=2000\r\nPixelSizeX=5e-8\r\nWD=7.5e-3\r\n"
    fields = parse_tescan_tag(blob)
    assert fields["Magnification"] == "2000"
    assert "garbage" not in fields


def test_hitachi_sidecar_next_to_a_tiff(tmp_path):
    import numpy as np
    import tifffile

    image = tmp_path / "S4800_0001.tif"
    tifffile.imwrite(image, np.zeros((64, 80), np.uint8))
    image.with_suffix(".txt").write_text(
        "[SemImageFile]\nInstructName=S-4800\nMagnification=30000\nPixelSize=4.134375\n"
        "WorkingDistance=8600 um\nAcceleratingVoltage=5000 Volt\nSignalName=SE(U)\n",
        encoding="latin-1",
    )
    meta = read_series(image).metadata[0]
    assert meta.vendor == "Hitachi" and meta.instrument == "S-4800"
    assert meta.magnification == 30000 and meta.pixel_size_nm == pytest.approx(4.134375)
    assert meta.working_distance_mm == pytest.approx(8.6) and meta.high_voltage_kv == pytest.approx(5.0)
    assert meta.detector == "SE(U)"
