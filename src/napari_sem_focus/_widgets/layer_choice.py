"""A combo box of the viewer's image layers that follows layers being added and removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLineEdit, QPushButton


class LayerChoice(QComboBox):
    """Lists the viewer's layers of one type by name (after an optional "none" entry); calls ``on_change()``
    when the choice (or the list) changes."""

    def __init__(self, viewer: Any, on_change: Callable[[], None], layer_type: str, none_text: str | None = None):
        super().__init__()
        self.viewer = viewer
        self.on_change = on_change
        self.layer_type = layer_type
        self.none_text = none_text
        self.currentTextChanged.connect(lambda _text: self.on_change())
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)

    def refresh(self, event: Any = None) -> None:
        import napari

        kind = getattr(napari.layers, self.layer_type)
        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
        self.blockSignals(True)
        self.clear()
        if self.none_text is not None:
            self.addItem(self.none_text)
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        self.on_change()

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentText()
        if name == self.none_text:
            return None
        return self.viewer.layers[name] if name in self.viewer.layers else None


class ImageLayerChoice(LayerChoice):
    """Lists the viewer's image layers."""

    def __init__(self, viewer: Any, on_change: Callable[[], None]):
        super().__init__(viewer, on_change, "Image")


class RegionChoice(LayerChoice):
    """ "whole image" or a Shapes layer whose first shape's bounding box is the region to score."""

    WHOLE_IMAGE = "whole image"

    def __init__(self, viewer: Any, on_change: Callable[[], None] | None = None):
        super().__init__(viewer, on_change or (lambda: None), "Shapes", none_text=self.WHOLE_IMAGE)


def region_of_interest(shapes_layer: Any, image_layer: Any) -> tuple[float, float, float, float] | None:
    """(x, y, width, height) in pixels of ``image_layer`` of the bounding box of the first shape of
    ``shapes_layer`` (None when it holds no shape). Shapes are drawn in world coordinates: they are mapped into the
    image layer's pixel grid, so the layer's scale (nm per pixel) and any translation are honoured."""
    import numpy as np

    from ..io import roi_from_vertices

    if shapes_layer is None or len(shapes_layer.data) == 0:
        return None
    vertices = np.asarray(shapes_layer.data[0], dtype=float)
    world = np.array([shapes_layer.data_to_world(v) for v in vertices])
    dims = image_layer.ndim  # without the colour axis of an RGB layer
    if world.shape[1] < dims:  # a 2D rectangle over a stack: any frame
        world = np.hstack([np.zeros((len(world), dims - world.shape[1])), world])
    pixels = np.array([image_layer.world_to_data(w[-dims:]) for w in world])
    return roi_from_vertices(pixels[:, -2:])


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
