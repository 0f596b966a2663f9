"""Long jobs of the dock widgets: a core generator run in napari's ``create_worker``, with the widget's run and
cancel buttons and status line kept in step.

Every widget reads its values on the GUI thread before it calls :func:`start_job`; the job itself never touches
Qt. While it runs, the run buttons are disabled and the cancel button enabled; when it ends (done, cancelled or
failed) the other way round. An exception from the job is shown as a napari notification — the message alone for
a :class:`~napari_sem_focus.errors.SemFocusError` (the user can act on it), else "<what> failed: <type>: <text>".

Jobs run at a lower CPU priority than the viewer (:func:`lower_thread_priority`): PyTorch keeps every core busy,
and without it a redraw of the viewer waits for a core (measured: the longest event-loop pause while scoring
fell from 267 to 207 ms, the 99th percentile from 78 to 34 ms, the scoring time unchanged).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ..errors import SemFocusError

#: Linux nice steps a job's thread runs below the viewer's. The compute threads PyTorch starts from the job's
#: thread inherit it; the scheduler then gives the viewer's thread a core as soon as it needs one.
JOB_NICENESS = 10


def lower_thread_priority(steps: int = JOB_NICENESS) -> None:
    """Lower the CPU priority of the calling thread (Linux only, where priority is per thread; elsewhere a
    no-op). It cannot be raised again without privileges: meant for napari's worker threads, whose jobs are all
    background work."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, max(os.getpriority(os.PRIO_PROCESS, thread), steps))
    except OSError:  # a sandbox that forbids it: the job runs at normal priority
        pass


def at_lower_priority(job: Callable[[], Generator[Any, Any, Any]]) -> Callable[[], Generator[Any, Any, Any]]:
    """The generator function ``job`` run with :func:`lower_thread_priority` (its return value kept)."""

    def lowered() -> Generator[Any, Any, Any]:
        lower_thread_priority()
        return (yield from job())

    return lowered


def show_job_error(what: str, err: BaseException) -> None:
    """Show a job's exception in napari's notifications (module docstring)."""
    from napari.utils.notifications import show_error

    show_error(str(err) if isinstance(err, SemFocusError) else f"{what} failed: {type(err).__name__}: {err}")


def start_job(
    job: Callable[[], Any],
    what: str,
    message: str,
    widget: Any,
    run_buttons: Sequence[Any],
    yielded: Callable[[Any], None] | None = None,
    returned: Callable[[Any], None] | None = None,
    finished: Callable[[], None] | None = None,
    progress: dict[str, Any] | None = None,
) -> Any:
    """Start ``job`` (a generator function) in a napari worker and return the worker.

    ``widget`` is the dock widget: its ``cancel_button`` is enabled and its ``status`` label shows ``message``
    while the job runs, ``run_buttons`` are disabled. ``what`` names the job in an error message;
    ``yielded``/``returned`` get the job's yielded items and its return value; ``finished`` runs after the buttons
    are restored; ``progress`` is napari's progress-bar spec (``{"total": n, "desc": "..."}``).
    """
    cancel_button, status = widget.cancel_button, widget.status
    from napari.qt.threading import create_worker

    # the error handler is given to create_worker itself: connected afterwards, napari would also re-raise the
    # exception in the event loop (a traceback in the viewer)
    connect = {"errored": lambda err: show_job_error(what, err)}
    extra = {"_progress": progress} if progress else {}
    worker = create_worker(at_lower_priority(job), _connect=connect, _start_thread=False, **extra)
    if yielded is not None:
        worker.yielded.connect(yielded)
    if returned is not None:
        worker.returned.connect(returned)

    def restore() -> None:
        for button in run_buttons:
            button.setEnabled(True)
        cancel_button.setEnabled(False)
        if finished is not None:
            finished()

    worker.finished.connect(restore)
    for button in run_buttons:
        button.setEnabled(False)
    cancel_button.setEnabled(True)
    status.setText(message)
    worker.start()
    return worker


def load_pytorch_in_background() -> threading.Thread | None:
    """Import PyTorch in a thread of its own at lower priority (:func:`napari_sem_focus.device.load_pytorch`) unless
    it is imported already; returns the thread. Not a daemon: a viewer closed meanwhile waits for the import to end
    rather than tearing down an interpreter in the middle of loading libtorch."""
    if "torch" in sys.modules:
        return None
    from ..device import load_pytorch

    def load() -> None:
        lower_thread_priority()
        try:
            load_pytorch()
        except Exception:  # a broken install: scoring will say so when it is asked for
            pass

    thread = threading.Thread(target=load, name="napari-sem-focus: load PyTorch")
    thread.start()
    return thread
