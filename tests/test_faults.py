"""The bad-input and fault matrix (docs/reliability.md): absurd metadata, N-D stacks, non-ASCII paths, folders that
cannot be written, and fuzzed metadata parsers — a clear SemFocusError or a documented result, never a crash."""

from __future__ import annotations

import errno
import math

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.io.metadata import (
    SemMetadata,
    parse_fei,
    parse_hitachi_sidecar,
    parse_jeol_sidecar,
    parse_tescan,
    parse_tescan_tag,
    parse_zeiss,
)
from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.infer import model_magnification
from napari_sem_focus.training.label_store import LabelStore


def _frame(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((240, 320)) * 255).astype(np.uint8)


def test_absurd_metadata_values_are_dropped_with_a_note(tmp_path):
    image = tmp_path / "jeol_0001.tif"
    tifffile.imwrite(image, _frame())
    image.with_suffix(".txt").write_text(
        "$CM_MAG 1000000000\n$$SM_WD -10.0\n$CM_ACCEL_VOLT 15.00\n$CM_FULL_SIZE 320 240\n", encoding="latin-1"
    )
    series = read_series(image)
    meta = series.metadata[0]
    assert meta.magnification is None and meta.pixel_size_nm is None and meta.working_distance_mm is None
    assert meta.high_voltage_kv == pytest.approx(15.0)  # the plausible values stay
    assert any("magnification = 1e+09 is not physically possible" in n for n in series.notes)
    assert model_magnification(series) == (None, "unknown")  # so the user is asked, not misled
    negative = SemMetadata(working_distance_mm=-4.0, pixel_size_nm=float("nan"), high_voltage_kv=5.0).plausible()
    assert negative[0] == SemMetadata(high_voltage_kv=5.0) and len(negative[1]) == 2


@pytest.mark.parametrize("value", [0.0, -5.0, math.nan, math.inf, 1e9])
def test_an_impossible_magnification_is_an_error_not_a_score(value):
    from napari_sem_focus.io.series import series_from_stack
    from napari_sem_focus.scoring.analysis import score_rows

    with pytest.raises(SemFocusError, match="magnification must be between"):
        model_magnification(None, value)
    series = series_from_stack(_frame()[None])
    with pytest.raises(SemFocusError, match="magnification must be between"):
        list(score_rows(series, None, value, "center", "cpu", metrics=()))


def test_cli_refuses_an_impossible_magnification_in_one_line(tmp_path, capsys):
    from napari_sem_focus.cli import main

    tifffile.imwrite(tmp_path / "a.tif", _frame())
    assert main(["score", str(tmp_path / "a.tif"), "--mag", "1e9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "magnification must be between" in err[0]


def test_a_4d_hyperstack_is_read_plane_by_plane_and_says_so(tmp_path):
    data = (np.random.default_rng(0).random((2, 3, 64, 80)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "tz.tif", data, imagej=True, metadata={"axes": "TZYX"})
    series = read_series(tmp_path / "tz.tif")
    assert len(series) == 6
    assert any("4-D data (axes TZYX)" in n and "save the focus axis alone" in n for n in series.notes)
    np.testing.assert_allclose(series.frame(4), data[1, 1] / 255.0, atol=1e-6)


def test_non_ascii_paths_read_score_and_label(tmp_path):
    from napari_sem_focus.cli import main

    folder = tmp_path / "Probe ä 顕微鏡"
    folder.mkdir()
    tifffile.imwrite(folder / "Schärfe_ß.tif", np.stack([_frame(1), _frame(2)]))
    assert len(read_series(folder / "Schärfe_ß.tif")) == 2
    assert main(["score", str(folder / "Schärfe_ß.tif"), "--mag", "5000", "--out", str(folder / "Ergebnis.csv")]) == 0
    assert "Schärfe_ß.tif" in (folder / "Ergebnis.csv").read_text(encoding="utf-8")
    store = LabelStore(folder / "Etiketten.csv")
    store.set(str(folder / "Schärfe_ß.tif"), 1, 5000.0, 7.0)
    assert LabelStore(folder / "Etiketten.csv").labels()[0].path == str((folder / "Schärfe_ß.tif").resolve())


@pytest.mark.parametrize("failing", ["tempfile.mkstemp", "os.replace"])
def test_a_folder_that_cannot_be_written_gives_a_message_and_keeps_the_old_file(tmp_path, monkeypatch, failing):
    """Read-only folders and full disks (simulated: the tests may run as root, who may write anywhere)."""
    from napari_sem_focus.scoring.model import build_focus_net
    from napari_sem_focus.scoring.weights import save_weights

    labels = tmp_path / "labels.csv"
    store = LabelStore(labels)
    store.set("a.tif", 0, 1000.0, 5.0)
    weights = save_weights(build_focus_net(), tmp_path / "w.safetensors")
    before_labels, before_weights = labels.read_bytes(), weights.read_bytes()

    def refuse(*args, **kwargs):
        code = errno.EACCES if failing == "tempfile.mkstemp" else errno.ENOSPC
        raise OSError(code, "Permission denied" if code == errno.EACCES else "No space left on device")

    monkeypatch.setattr(failing, refuse)
    with pytest.raises(SemFocusError, match=r"cannot write '.*labels.csv'.*choose a folder you can write to"):
        store.set("a.tif", 1, 1000.0, 6.0)
    with pytest.raises(SemFocusError, match=r"cannot write '.*w.safetensors'"):
        save_weights(build_focus_net(), weights)
    monkeypatch.undo()
    assert labels.read_bytes() == before_labels and weights.read_bytes() == before_weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "w.safetensors"]  # no temporary files left


# --- fuzzed metadata parsers: any text or bytes gives metadata (perhaps empty) or a SemFocusError -----------------

_text = st.text(st.characters(codec="latin-1"), max_size=400)
_fields = st.dictionaries(st.text(max_size=20), st.one_of(st.text(max_size=20), st.floats(), st.integers()), max_size=8)


def _parses(parse, *args) -> None:
    try:
        meta = parse(*args)
    except SemFocusError:
        return
    if isinstance(meta, SemMetadata):
        cleaned, _notes = meta.plausible()
        assert isinstance(cleaned, SemMetadata)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_text, width=st.one_of(st.none(), st.integers(1, 10_000)))
def test_sidecar_parsers_never_crash(text, width):
    _parses(parse_jeol_sidecar, "$CM_MAG " + text, width)
    _parses(parse_hitachi_sidecar, "[SemImageFile]\n" + text)


@settings(max_examples=150, deadline=None)
@given(
    blob=st.binary(max_size=400),
    sections=st.dictionaries(
        st.sampled_from(["Image", "Scan", "Beam", "Stage", "EBeam", "PrivateFei", "System"]), _fields
    ),
)
def test_tag_parsers_never_crash(blob, sections):
    _parses(parse_tescan_tag, blob)
    _parses(parse_tescan, parse_tescan_tag(blob))
    _parses(parse_fei, sections, 1024)
    _parses(parse_zeiss, {k: v for fields_ in sections.values() for k, v in fields_.items()})


class _SmallGpu:
    """The bundled model behind a pretend GPU that runs out of memory above ``fits`` crops per batch, or always
    (``fits=0``) until it is moved to the CPU."""

    def __init__(self, fits: int):
        from napari_sem_focus.scoring.weights import load_model

        self.model, self.fits, self.on_gpu, self.batches = load_model(None), fits, True, []

    def __call__(self, x, mag):
        import torch

        if self.on_gpu and len(x) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (pretend)")
        self.batches.append(len(x))
        return self.model(x, mag)

    def to(self, device):
        self.on_gpu = device != "cpu"
        return self


def test_gpu_out_of_memory_splits_the_batch_then_falls_back_to_the_cpu():
    from napari_sem_focus.scoring.infer import score_frames
    from napari_sem_focus.scoring.weights import load_model

    frames = [_frame(i) for i in range(6)]
    reference = [r.score for r in score_frames(frames, 5000.0, load_model(None), "center", batch_size=6)]
    small = _SmallGpu(fits=2)
    split = [r.score for r in score_frames(frames, 5000.0, small, "center", batch_size=6)]
    assert split == pytest.approx(reference, abs=1e-4) and max(small.batches) <= 2
    none_fits = _SmallGpu(fits=0)
    with pytest.warns(UserWarning, match="out of memory: scoring goes on on the CPU"):
        moved = [r.score for r in score_frames(frames, 5000.0, none_fits, "center", batch_size=6, device="meta")]
    assert moved == pytest.approx(reference, abs=1e-4) and not none_fits.on_gpu
