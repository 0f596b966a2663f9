"""Long jobs of the dock widgets: a core generator run in napari's ``create_worker``, with the widget's run and
cancel buttons and status line kept in step.

Every widget reads its values on the GUI thread before it calls :func:`start_job`; the job itself never touches
Qt. While it runs, the run buttons are disabled and the cancel button enabled; when it ends (done, cancelled or
failed) the other way round. An exception from the job is shown as a napari notification — the message alone for
a :class:`~napari_sem_focus.errors.SemFocusError` (the user can act on it), else "<what> failed: <type>: <text>".

Jobs run at a lower CPU priority than the viewer (:func:`napari_sem_focus.device.lower_thread_priority`):
PyTorch keeps every core busy, and without it a redraw of the viewer waits for a core (measured: the longest
event-loop pause while scoring fell from 267 to 207 ms, the 99th percentile from 78 to 34 ms, the scoring time
unchanged).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ..device import lower_thread_priority
from ..errors import SemFocusError


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


class DrawingGate:
    """Lets a widget's full drawing and its running job take turns on the CPU (thread-safe).

    A full matplotlib drawing of a plot takes ~80 ms of the GUI thread (layout, then text); made while the model
    runs on every core, it took 90-160 ms on a busy 2-core machine, a pause of the viewer. The plot asks for a
    turn (:meth:`request`) and draws once the job waits (:meth:`may_draw`, or after ``max_wait_s``); the job calls
    :meth:`pause_if_asked` between frames (its cancel check) and waits there until the drawing is done
    (:meth:`done`), at most ``max_wait_s`` per drawing asked for: a hidden plot that never draws costs a job one
    wait, not one per frame.
    """

    def __init__(self, max_wait_s: float = 1.0):
        self.max_wait_s = max_wait_s
        self.job_running = threading.Event()  # set by the job while it runs
        self._job_waiting = threading.Event()
        self._lock = threading.Lock()
        self._asked = 0  # the drawing asked for and not yet done (a serial number; 0: none)
        self._serial = 0
        self._answered = 0  # the last drawing the job waited for

    # GUI thread
    def request(self) -> None:
        with self._lock:
            self._serial += 1
            self._asked = self._serial

    def done(self) -> None:
        with self._lock:
            self._asked = 0

    def may_draw(self) -> bool:
        """True when no job runs or the job waits for the drawing."""
        return not self.job_running.is_set() or self._job_waiting.is_set()

    # job thread
    def pause_if_asked(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Wait while a drawing asked for is not done (at most ``max_wait_s`` for each; sooner when ``stop()``)."""
        with self._lock:
            asked = self._asked
        if not asked or asked == self._answered:
            return
        self._answered = asked
        self._job_waiting.set()
        try:
            deadline = time.monotonic() + self.max_wait_s
            while self._asked == asked and time.monotonic() < deadline and not stop():
                time.sleep(0.005)
        finally:
            self._job_waiting.clear()
