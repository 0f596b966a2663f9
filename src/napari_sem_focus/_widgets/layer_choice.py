"""A combo box of the viewer's image layers that follows layers being added and removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QComboBox


class ImageLayerChoice(QComboBox):
    """Lists the viewer's image layers by name; calls ``on_change()`` when the choice (or the list) changes."""

    def __init__(self, viewer: Any, on_change: Callable[[], None]):
        super().__init__()
        self.viewer = viewer
        self.on_change = on_change
        self.currentTextChanged.connect(lambda _text: self.on_change())
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)

    def refresh(self, event: Any = None) -> None:
        import napari

        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        self.on_change()

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None
