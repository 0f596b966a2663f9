"""The model a viewer's focus widgets score with: one shared state per viewer.

The Score-stack widget shows and edits it (its "weights" field); the Label & fine-tune widget starts from it and,
when the user adopts a fine-tuned model, sets it, so every widget of that viewer scores with the new weights. The
widgets never reach into one another: they share this state and listen to its ``changed`` signal.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from psygnal import Signal


class CurrentModel:
    """The weights file a viewer scores with (None: the bundled default)."""

    changed = Signal(object)  # the new weights path (str), or None for the bundled default

    def __init__(self) -> None:
        self._weights: str | None = None

    @property
    def weights(self) -> str | None:
        return self._weights

    def set(self, weights: str | Path | None) -> None:
        """Use these weights from now on (None or "" = the bundled default); ``changed`` is emitted on a change."""
        value = str(weights).strip() if weights else None
        if value != self._weights:
            self._weights = value or None
            self.changed.emit(self._weights)


_STATES: weakref.WeakKeyDictionary[Any, CurrentModel] = weakref.WeakKeyDictionary()


def current_model(viewer: Any) -> CurrentModel:
    """The shared model state of ``viewer`` (made on first use, gone with the viewer)."""
    if viewer not in _STATES:
        _STATES[viewer] = CurrentModel()
    return _STATES[viewer]
