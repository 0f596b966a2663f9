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
