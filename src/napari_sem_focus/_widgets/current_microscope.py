"""The microscope a viewer's focus widgets drive: one shared state per viewer.

The Autofocus widget connects it (fibsem-os: Thermo Fisher, TESCAN, demo); the Score-stack widget scores its
live frames. The widgets never reach into one another: they share this state and listen to its ``changed`` signal.
"""

from __future__ import annotations

import weakref
from typing import Any

from psygnal import Signal


class CurrentMicroscope:
    """The connected microscope (fibsem's object) and its name for the user; None when none is connected."""

    changed = Signal(object)  # the new microscope, or None

    def __init__(self) -> None:
        self.microscope: Any = None
        self.name = ""

    def set(self, microscope: Any, name: str = "") -> None:
        """Use ``microscope`` (None: disconnected) from now on; ``changed`` is emitted."""
        self.microscope, self.name = microscope, name if microscope is not None else ""
        self.changed.emit(microscope)


_STATES: weakref.WeakKeyDictionary[Any, CurrentMicroscope] = weakref.WeakKeyDictionary()


def current_microscope(viewer: Any) -> CurrentMicroscope:
    """The shared microscope state of ``viewer`` (made on first use, gone with the viewer)."""
    if viewer not in _STATES:
        _STATES[viewer] = CurrentMicroscope()
    return _STATES[viewer]
