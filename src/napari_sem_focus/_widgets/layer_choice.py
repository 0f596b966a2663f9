"""A combo box of the viewer's image layers that follows layers being added and removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLineEdit, QPushButton


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


def path_row(placeholder: str, on_browse: Callable[[], None]) -> tuple[QLineEdit, QHBoxLayout]:
    """A path line edit with a "…" browse button; returns (edit, row layout)."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    browse = QPushButton("…")
    browse.setMaximumWidth(30)
    browse.clicked.connect(on_browse)
    row = QHBoxLayout()
    row.addWidget(edit)
    row.addWidget(browse)
    return edit, row


def magnification_box(value: float = 5000.0) -> QDoubleSpinBox:
    """Spin box for the model's magnification (10x to 2,000,000x)."""
    box = QDoubleSpinBox()
    box.setRange(10, 2_000_000)
    box.setDecimals(0)
    box.setValue(value)
    box.setSuffix(" x")
    return box
