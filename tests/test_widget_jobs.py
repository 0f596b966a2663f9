"""Long widget jobs: buttons disabled while a job runs and restored after it ends, errors shown as notifications."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.gui
napari = pytest.importorskip("napari")


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (None, None),
        ("semfocus", "no structure anywhere in frame 3"),
        ("bug", "scoring failed: ZeroDivisionError: division by zero"),
    ],
)
def test_a_job_keeps_the_buttons_in_step_and_shows_its_error(qtbot, monkeypatch, error, shown):
    from qtpy.QtWidgets import QLabel, QPushButton

    from napari_sem_focus._widgets import jobs
    from napari_sem_focus.errors import SemFocusError

    messages, items, finished = [], [], []
    monkeypatch.setattr("napari.utils.notifications.show_error", messages.append)
    run, live, cancel, status = QPushButton("run"), QPushButton("live"), QPushButton("cancel"), QLabel()
    cancel.setEnabled(False)
    for widget in (run, live, cancel, status):
        qtbot.addWidget(widget)

    def job():
        yield 1
        assert not run.isEnabled() and not live.isEnabled()  # read only: the GUI thread set them before start
        yield 2
        if error == "semfocus":
            raise SemFocusError("no structure anywhere in frame 3")
        if error == "bug":
            return 1 / 0
        return "done"

    widget = SimpleNamespace(cancel_button=cancel, status=status)
    worker = jobs.start_job(
        job,
        "scoring",
        "scoring 3 frame(s)…",
        widget,
        [run, live],
        yielded=items.append,
        finished=lambda: finished.append(cancel.isEnabled()),
    )
    assert status.text() == "scoring 3 frame(s)…" and cancel.isEnabled() and not run.isEnabled()
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert items == [1, 2] and finished == [False]
    assert run.isEnabled() and live.isEnabled() and not cancel.isEnabled()
    assert messages == ([] if shown is None else [shown])
    assert worker is not None


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="thread priority is per thread on Linux")
def test_jobs_run_at_lower_priority_than_the_viewer(qtbot):
    """The job's thread runs JOB_NICENESS steps below the viewer's thread (which keeps its priority)."""
    import os
    import threading

    from qtpy.QtWidgets import QLabel, QPushButton

    from napari_sem_focus._widgets import jobs
    from napari_sem_focus.device import JOB_NICENESS

    seen, done = [], []

    def job():
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        yield 1
        return "value"

    cancel, status = QPushButton("cancel"), QLabel()
    for w in (cancel, status):
        qtbot.addWidget(w)
    widget = SimpleNamespace(cancel_button=cancel, status=status)
    jobs.start_job(job, "scoring", "…", widget, [], returned=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    assert seen == [JOB_NICENESS] and done == ["value"]  # the wrapped generator keeps its return value
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0


def test_a_job_waits_between_frames_while_the_plot_draws_and_never_twice_for_one_drawing():
    """DrawingGate: the plot may draw once the running job waits; the job waits until the drawing is done, at most
    max_wait_s for each drawing asked for (a hidden plot never draws), and not at all when none is asked for."""
    import threading
    import time

    from napari_sem_focus._widgets.jobs import DrawingGate

    gate = DrawingGate(max_wait_s=0.3)
    assert gate.may_draw()  # no job runs
    gate.job_running.set()
    assert not gate.may_draw()
    start = time.monotonic()
    gate.pause_if_asked()  # nothing asked for: no wait
    assert time.monotonic() - start < 0.05
    gate.request()
    waited = []
    job = threading.Thread(target=lambda: (gate.pause_if_asked(), waited.append(time.monotonic())))
    start = time.monotonic()
    job.start()
    deadline = time.monotonic() + 2
    while not gate.may_draw() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert gate.may_draw() and job.is_alive()  # the job waits: the plot draws now
    time.sleep(0.05)
    gate.done()
    job.join(2)
    assert 0.04 < waited[0] - start < 0.25  # it went on when the drawing was done, not at the time limit
    assert not gate.may_draw()
    gate.request()  # a drawing that never happens (hidden plot): one wait of max_wait_s, then none
    start = time.monotonic()
    gate.pause_if_asked()
    assert 0.25 < time.monotonic() - start < 1.0
    start = time.monotonic()
    gate.pause_if_asked()
    assert time.monotonic() - start < 0.05
    stopped = time.monotonic()
    gate.request()
    gate.pause_if_asked(stop=lambda: True)  # Cancel does not wait
    assert time.monotonic() - stopped < 0.05
