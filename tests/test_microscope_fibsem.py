"""The fibsem-os microscope adapter on fibsem's own DemoMicroscope: units and read-back, refusals, restoring the
start on cancel / fault / timeout / abandon, live acquisition, and convergence through fibsem's real code path (its
demo's images drawn by the virtual SEM), for our search and for fibsem's own ``run_auto_focus``."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from napari_sem_focus.cli import main
from napari_sem_focus.errors import SemFocusError
from napari_sem_focus.focusing.autofocus import learned_scorer
from napari_sem_focus.focusing.microscopes.fibsem_demo import DEMO_START_WD_MM, truth, virtual_demo_microscope
from napari_sem_focus.focusing.microscopes.fibsem_sem import (
    FibsemSEM,
    ProbeSettings,
    connect,
    frame_to_float,
    import_fibsem,
    iter_live_microscope_scores,
    iter_microscope_autofocus,
    microscope_autofocus,
    parse_resolution,
)
from napari_sem_focus.simulate.frame import FrameParams

import_fibsem()
from fibsem.structures import BeamType  # noqa: E402

ELECTRON = BeamType.ELECTRON
#: Field width (µm) of a 768-px probe frame at 5,000x (127 mm over 1024 px).
HFW_5000X_UM = 127e3 / 5000 * 768 / 1024
SMALL_PROBE = ProbeSettings(resolution=(384, 256), dwell_time_us=0.5, hfw_um=HFW_5000X_UM / 2)


@pytest.fixture(scope="module")
def demo():
    """fibsem's plain DemoMicroscope (noise images), connected as a user would: ``connect('Demo')``."""
    return connect("Demo")


@pytest.fixture
def virtual_demo():
    """fibsem's DemoMicroscope showing the virtual SEM: tin balls, best focus 12 µm below the start."""
    return virtual_demo_microscope(FrameParams(family="tinball", seed=1), focus_offset_um=12.0)


@pytest.fixture(scope="module")
def scorer():
    """The learned score, at the magnification of whatever microscope adapter is set in ``scorer.sem``."""
    holder = {}
    score = learned_scorer(lambda: holder["sem"].magnification())
    score.holder = holder
    return score


def test_units_and_read_back(demo):
    sem = FibsemSEM(demo, ProbeSettings(resolution=(384, 256), dwell_time_us=0.25))
    assert sem.set_working_distance_mm(4.0123) == pytest.approx(4.0123)
    assert demo.get_working_distance(ELECTRON) == pytest.approx(4.0123e-3)  # fibsem: metres
    settings = sem.image_settings()
    assert isinstance(settings.dwell_time, float) and settings.dwell_time == pytest.approx(0.25e-6)
    assert settings.autocontrast is False and tuple(settings.resolution) == (384, 256)
    frame = sem(4.01)
    assert frame.dtype == np.float32 and frame.shape == (256, 384) and 0.0 <= frame.min() <= frame.max() <= 1.0
    assert sem.working_distance_mm() == pytest.approx(4.01)
    hfw_um = demo.get_field_of_view(ELECTRON) * 1e6
    # the model's magnification from the frame's pixel size: 127 mm over 1024 px of hfw / 384
    assert sem.last_pixel_size_nm == pytest.approx(hfw_um * 1e3 / 384)
    assert sem.magnification() == pytest.approx(127e6 / (hfw_um * 1e3 / 384 * 1024))
    assert sem.set_stigmation(0.01, -0.02) == pytest.approx((0.01, -0.02))
    assert sem.stigmation() == pytest.approx((0.01, -0.02))
    sem.set_stigmation(0.0, 0.0)


def test_a_working_distance_that_does_not_move_is_an_error_not_a_score(demo, monkeypatch):
    sem = FibsemSEM(demo, SMALL_PROBE)
    sem.set_working_distance_mm(4.0)
    monkeypatch.setattr(demo, "set_working_distance", lambda wd, beam: demo.get_working_distance(beam))
    with pytest.raises(SemFocusError, match="did not move"):
        sem(4.01)
    scores = []
    result = microscope_autofocus(sem, lambda image: scores.append(1) or (5.0, True), range_um=20)
    assert result.status == "acquire failed" and "did not move" in result.message
    assert scores == [1]  # only the frame at the start, where nothing had to move
    assert sem.working_distance_mm() == pytest.approx(4.0)


def test_a_frame_taken_at_another_working_distance_is_refused(demo, monkeypatch):
    sem = FibsemSEM(demo, SMALL_PROBE)
    original = demo.acquire_image

    def stage_reset_wd(*args, **kwargs):  # as a Thermo stage move that resets the working distance mid-scan
        image = original(*args, **kwargs)
        image.metadata.microscope_state.electron_beam.working_distance = 0.007
        return image

    monkeypatch.setattr(demo, "acquire_image", stage_reset_wd)
    with pytest.raises(SemFocusError, match=r"taken at 7\.000000 mm"):
        sem(4.0)


def test_refuses_the_ion_beam_and_a_beam_whose_working_distance_cannot_be_set(demo, monkeypatch):
    with pytest.raises(SemFocusError, match="ion beam is refused"):
        FibsemSEM(demo, beam="ion")
    with pytest.raises(SemFocusError, match="ion beam is refused"):
        FibsemSEM(demo, beam=BeamType.ION)
    monkeypatch.setattr(demo, "is_working_distance_settable", lambda beam: False)
    with pytest.raises(SemFocusError, match="cannot set the electron beam's working distance"):
        FibsemSEM(demo)


def test_bad_probe_settings_and_manufacturers_are_clear_errors():
    with pytest.raises(SemFocusError, match="too small"):
        ProbeSettings(resolution=(32, 32))
    with pytest.raises(SemFocusError, match="dwell time"):
        ProbeSettings(dwell_time_us=0.0)
    with pytest.raises(SemFocusError, match="reduced area"):
        ProbeSettings(reduced_area=(0.5, 0.5, 0.6, 0.1))
    assert parse_resolution("1536x1024") == (1536, 1024)
    with pytest.raises(SemFocusError, match="WIDTHxHEIGHT"):
        parse_resolution("1536 by 1024")
    with pytest.raises(SemFocusError, match="unknown manufacturer"):
        connect("Hitachi")
    with pytest.raises(SemFocusError, match=r"could not connect to the Thermo microscope at 127\.0\.0\.1"):
        connect("Thermo", "127.0.0.1")  # no AutoScript here: one clear line, no traceback


def test_without_the_extra_one_line_names_it(monkeypatch):
    for name in [m for m in sys.modules if m == "fibsem" or m.startswith("fibsem.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fibsem", None)  # import fibsem -> ImportError
    with pytest.raises(SemFocusError, match=r"pip install 'napari-sem-focus\[microscope\]'"):
        import_fibsem()


def test_sixteen_bit_frames_follow_the_intensity_rule():
    twelve_bit = np.array([[0, 4095], [2048, 1000]], dtype=np.uint16)
    frame, white = frame_to_float(twelve_bit)
    assert white == 4095 and frame[0, 1] == pytest.approx(1.0)
    dimmer, white = frame_to_float(np.array([[0, 300], [20, 10]], dtype=np.uint16), white)
    assert white == 4095 and dimmer[0, 1] == pytest.approx(300 / 4095)  # one scale for the whole search
    eight, _ = frame_to_float(np.array([[0, 255], [51, 0]], dtype=np.uint8))
    assert eight[1, 0] == pytest.approx(0.2)
    with pytest.raises(SemFocusError, match="not a 2-D image"):
        frame_to_float(np.zeros((2, 3, 3), np.uint8))


def test_sixteen_bit_demo_frames_score_as_their_eight_bit_twins():
    frames = []
    for depth in (8, 16):
        microscope = virtual_demo_microscope(FrameParams(family="grid", seed=4), focus_offset_um=3.0, bit_depth=depth)
        sem = FibsemSEM(microscope, SMALL_PROBE)
        frames.append(sem(DEMO_START_WD_MM))
        assert microscope.last_image(ELECTRON).data.dtype == (np.uint8 if depth == 8 else np.uint16)
    np.testing.assert_allclose(frames[0], frames[1], atol=1e-6)


def test_our_search_converges_through_fibsems_code_path(virtual_demo, scorer):
    probe = ProbeSettings(hfw_um=HFW_5000X_UM)
    sem = FibsemSEM(virtual_demo, probe)
    scorer.holder["sem"] = sem
    sem_truth = truth(virtual_demo, probe.resolution, HFW_5000X_UM, probe.dwell_time_us)
    result = microscope_autofocus(sem, scorer, range_um=25)
    assert sem.magnification() == pytest.approx(5000, rel=1e-6)  # from the frames' pixel size
    assert result.status == "focused" and result.n_acquisitions <= 8
    final = sem.working_distance_mm()
    assert final == pytest.approx(result.best_wd_mm) == pytest.approx(result.final_wd_mm)
    assert abs(sem_truth.defocus_um(final)) <= sem_truth.depth_of_field_um()
    assert abs(sem_truth.defocus_um(DEMO_START_WD_MM)) > sem_truth.depth_of_field_um()  # it had to move


def test_fibsems_own_autofocus_runs_unchanged_on_the_same_demo(virtual_demo):
    from fibsem.autofunctions.autofocus import AutoFocusSettings, run_auto_focus

    sem_truth = truth(virtual_demo, (768, 512), HFW_5000X_UM, 0.5)
    result = run_auto_focus(virtual_demo, ELECTRON, hfw=HFW_5000X_UM * 1e-6, settings=AutoFocusSettings())
    assert result.n_iterations == 22  # its two passes: 11 + 11 probe frames
    final = virtual_demo.get_working_distance(ELECTRON) * 1e3
    assert abs(sem_truth.defocus_um(final)) <= sem_truth.depth_of_field_um()


def _search_until(sem, scorer, stop_after: int, **options):
    """A search on ``sem`` whose ``should_stop`` turns true after ``stop_after`` scans."""
    scans = []
    search = iter_microscope_autofocus(sem, scorer, should_stop=lambda: len(scans) >= stop_after, **options)
    while True:
        try:
            scans.append(next(search))
        except StopIteration as stop:
            return stop.value, scans


def test_cancel_restores_the_starting_working_distance_and_stigmators(virtual_demo):
    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    sem.set_working_distance_mm(4.002)
    sem.set_stigmation(0.003, -0.001)
    calls = []

    def scorer(image):  # a search that also touched the stigmators (as the stigmation search will)
        calls.append(1)
        sem.set_stigmation(0.05, 0.05)
        return 5.0 + len(calls), True

    result, scans = _search_until(sem, scorer, stop_after=2, range_um=25)
    assert result.status == "cancelled" and len(scans) == 2
    assert sem.working_distance_mm() == pytest.approx(4.002) and result.final_wd_mm == pytest.approx(4.002)
    assert sem.stigmation() == pytest.approx((0.003, -0.001))
    assert "restored to the start" in result.message


def test_a_failing_scan_restores_the_start(virtual_demo):
    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    calls = []

    def scorer(image):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("detector saturated")
        return 4.0 + len(calls), True

    result = microscope_autofocus(sem, scorer, range_um=25)
    assert result.status == "acquire failed" and "detector saturated" in result.message
    assert sem.working_distance_mm() == pytest.approx(DEMO_START_WD_MM)


def test_an_exception_that_escapes_the_search_restores_the_start(virtual_demo):
    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    calls = []

    def scorer(image):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # not an Exception: it leaves the search
        return 5.0, True

    with pytest.raises(KeyboardInterrupt):
        microscope_autofocus(sem, scorer, range_um=25)
    assert len(calls) == 2 and sem.working_distance_mm() == pytest.approx(DEMO_START_WD_MM)


def test_an_abandoned_search_restores_the_start(virtual_demo):
    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    search = iter_microscope_autofocus(sem, lambda image: (5.0, True), range_um=25)
    next(search)
    next(search)
    assert sem.working_distance_mm() != pytest.approx(DEMO_START_WD_MM)
    search.close()  # e.g. a napari worker quit between scans
    assert sem.working_distance_mm() == pytest.approx(DEMO_START_WD_MM)


def test_a_scan_that_times_out_restores_the_start(virtual_demo, monkeypatch):
    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    sem(DEMO_START_WD_MM)  # the specimen is drawn once: later frames take milliseconds
    original, count = virtual_demo.acquire_image, []

    def slow(*args, **kwargs):
        count.append(1)
        if len(count) == 2:
            time.sleep(3.0)  # the microscope hangs on the second frame
        return original(*args, **kwargs)

    monkeypatch.setattr(virtual_demo, "acquire_image", slow)
    t0 = time.monotonic()
    result = microscope_autofocus(sem, lambda image: (5.0, True), range_um=25, acquire_timeout_s=1.0)
    assert result.status == "acquire failed" and "within 1 s" in result.message
    assert time.monotonic() - t0 >= 3.0  # the restore waited for the hung frame: its WD cannot land after ours
    assert sem.working_distance_mm() == pytest.approx(DEMO_START_WD_MM)
    assert "still running" not in result.message


def test_a_restore_does_not_wait_forever_for_a_hung_microscope(virtual_demo, monkeypatch):
    from napari_sem_focus.focusing.microscopes import fibsem_sem

    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    sem(DEMO_START_WD_MM)
    original, count = virtual_demo.acquire_image, []

    def hang(*args, **kwargs):
        count.append(1)
        if len(count) == 2:
            time.sleep(2.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(virtual_demo, "acquire_image", hang)
    monkeypatch.setattr(fibsem_sem, "RESTORE_WAIT_S", 0.2)
    result = microscope_autofocus(sem, lambda image: (5.0, True), range_um=25, acquire_timeout_s=0.5)
    assert result.status == "acquire failed" and "still running on the microscope" in result.message
    assert sem.working_distance_mm() == pytest.approx(DEMO_START_WD_MM) == pytest.approx(result.final_wd_mm)
    time.sleep(2.5)  # the hung frame ends before the microscope goes


def test_live_acquisition_is_stopped_for_a_search_and_resumed_after(virtual_demo):
    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    virtual_demo.start_acquisition(ELECTRON)
    try:
        seen = []

        def scorer(image):
            seen.append(bool(virtual_demo.is_acquiring))
            return 5.0 + len(seen), True

        microscope_autofocus(sem, scorer, range_um=25, max_acquisitions=4)
        assert seen and not any(seen)
        assert virtual_demo.is_acquiring
    finally:
        virtual_demo.stop_acquisition()


def test_live_imaging_on_the_ion_beam_resumes_on_the_ion_beam(virtual_demo):
    from napari_sem_focus.focusing.microscopes.fibsem_sem import _live_beam

    sem = FibsemSEM(virtual_demo, SMALL_PROBE)
    virtual_demo.start_acquisition(BeamType.ION)
    try:
        microscope_autofocus(sem, lambda image: (5.0, True), range_um=25, max_acquisitions=3)
        assert virtual_demo.is_acquiring and _live_beam(virtual_demo, ELECTRON) is BeamType.ION
    finally:
        virtual_demo.stop_acquisition()


def test_live_frames_of_the_microscope_are_scored():
    microscope = virtual_demo_microscope(FrameParams(family="particles", seed=2), focus_offset_um=0.0)
    microscope.set_resolution((512, 384), ELECTRON)
    microscope.set_field_of_view(HFW_5000X_UM * 512 / 768 * 1e-6, ELECTRON)
    frames = list(iter_live_microscope_scores(microscope, max_frames=2))
    assert [f.index for f in frames] == [0, 1] and all(f.error is None for f in frames)
    assert frames[0].magnification == pytest.approx(5000, rel=1e-6)
    assert frames[0].working_distance_mm == pytest.approx(DEMO_START_WD_MM)
    assert all(f.score.score > 7.0 for f in frames)  # in focus
    assert frames[1].row()["file"] == "live_0001"
    assert not microscope.is_acquiring  # it started live acquisition, so it stopped it


def test_cli_autofocus_on_fibsems_demo(capsys, tmp_path):
    plot = tmp_path / "search.png"
    argv = ["autofocus", "--microscope", "fibsem", "--manufacturer", "Demo", "--start-offset-um", "-10"]
    assert main([*argv, "--specimen", "grid", "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "focused" and out["n_acquisitions"] <= 12
    assert abs(out["final_defocus_um"]) <= out["depth_of_field_um"]
    assert out["final_true_score"] >= 9.0 > out["start_true_score"]
    assert plot.stat().st_size > 10_000


def test_cli_autofocus_needs_a_microscope(capsys):
    assert main(["autofocus"]) == 2
    assert "--microscope fibsem" in capsys.readouterr().err
    assert main(["autofocus", "--microscope", "fibsem", "--manufacturer", "Tescan", "--ip", "127.0.0.1"]) == 2
    assert "could not connect to the Tescan microscope" in capsys.readouterr().err


def test_cli_watch_scores_a_microscopes_live_frames(capsys, tmp_path):
    out = tmp_path / "live.csv"
    assert main(["watch", "--microscope", "fibsem", "--frames", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "live_0001: score" in lines[1]
    rows = out.read_text().strip().splitlines()
    assert rows[0].startswith("frame,file,working_distance_mm,score") and len(rows) == 3
    assert main(["watch"]) == 2  # neither a folder nor a microscope


def test_focus_and_stigmation_through_fibsem_sets_the_stigmators_and_restores_them_on_cancel():
    from napari_sem_focus.focusing.microscopes.fibsem_sem import (
        iter_microscope_focus_and_stigmate,
        microscope_focus_and_stigmate,
    )

    frame = FrameParams(family="tinball", seed=2, astig_um=12.0, astig_angle_deg=40.0)
    microscope = virtual_demo_microscope(frame, focus_offset_um=8.0, stig_gain_um=20.0, stig_rotation_deg=30.0)
    probe = ProbeSettings(hfw_um=HFW_5000X_UM)
    sem = FibsemSEM(microscope, probe)
    sem_truth = truth(microscope, probe.resolution, HFW_5000X_UM, probe.dwell_time_us)
    frame_now = sem(DEMO_START_WD_MM, 0.05, -0.05)  # the adapter sets (and reads back) the stigmators too
    assert frame_now.shape == (512, 768) and sem.stigmation() == pytest.approx((0.05, -0.05))
    sem.set_stigmation(0.0, 0.0)

    scans = []
    search = iter_microscope_focus_and_stigmate(sem, lambda image: (5.0 + len(scans), True), range_um=25)
    for _ in range(10):  # a search abandoned part way through (scores made up: it wanders)
        scans.append(next(search))
    assert any(s.setting.stig_x != 0.0 or s.setting.stig_y != 0.0 for s in scans)
    search.close()
    assert sem.stigmation() == pytest.approx((0.0, 0.0)) and sem.working_distance_mm() == pytest.approx(4.0)

    holder = {"sem": sem}
    result = microscope_focus_and_stigmate(sem, learned_scorer(lambda: holder["sem"].magnification()), range_um=25)
    final = result.final
    assert result.status == "focused" and sem.stigmation() == pytest.approx((final.stig_x, final.stig_y))
    assert sem_truth.true_score(final.working_distance_mm, (final.stig_x, final.stig_y)) >= 9.0
    assert sem_truth.true_score(DEMO_START_WD_MM, (0.0, 0.0)) < 9.0


def test_cli_stigmate_on_fibsems_demo(capsys):
    argv = ["autofocus", "--microscope", "fibsem", "--manufacturer", "Demo", "--start-offset-um", "8"]
    argv += ["--astig-um", "12", "--astig-angle-deg", "40", "--stig-gain-um", "20", "--stigmate", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "focused" and out["final_true_score"] >= 9.0 > out["start_true_score"]
    assert out["final"]["stig_x"] != 0.0
