"""The parameter forms of the dock widgets, built with magicgui: layer choosers that follow the viewer's layers,
the magnification box, and the region of interest drawn on a Shapes layer.

Each widget lays its parameters out as one magicgui ``Container`` (labels on the left, like a form); its values are
read with ``.value`` on the GUI thread before a job starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox
from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

#: The region chooser's entry for "score the whole image".
WHOLE_IMAGE = "whole image"


class VerticalScrollArea(QScrollArea):
    """Holds a dock widget's contents: as wide as they need, scrolled vertically when the dock is shorter than
    they are (instead of squeezing them: a plot pressed under its minimum height loses its legend)."""

    #: The shortest the area asks to be (pixels): below the contents' own minimum, it scrolls.
    MIN_HEIGHT = 200

    def __init__(self, contents: QWidget):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(contents)

    def _with_scroll_bar(self, hint: QSize, height: int) -> QSize:
        return QSize(hint.width() + self.verticalScrollBar().sizeHint().width(), height)

    def minimumSizeHint(self) -> QSize:
        hint = self.widget().minimumSizeHint()
        return self._with_scroll_bar(hint, min(hint.height(), self.MIN_HEIGHT))

    def sizeHint(self) -> QSize:
        hint = self.widget().sizeHint()
        return self._with_scroll_bar(hint, hint.height())


def scrolled_layout(widget: QWidget) -> QVBoxLayout:
    """The vertical layout of a dock widget's contents, held in a :class:`VerticalScrollArea` that fills
    ``widget``: what the widget adds to it scrolls in a short dock."""
    contents = QWidget()
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(VerticalScrollArea(contents))
    return QVBoxLayout(contents)


def form(owner: Any, fields: str) -> Container:
    """The form of a dock widget: a magicgui ``Container`` of ``owner``'s magicgui widgets named in ``fields``
    (attribute names separated by spaces), in that order, each with its label on the left."""
    return Container(widgets=[getattr(owner, name) for name in fields.split()])


def button_row(
    *buttons: tuple[str, Callable[[], Any]], disabled: tuple[str, ...] = ()
) -> tuple[QHBoxLayout, list[QPushButton]]:
    """A row of push buttons, each (text, what a click calls), those named in ``disabled`` disabled at first;
    returns (row, buttons)."""
    row, made = QHBoxLayout(), []
    for text, on_click in buttons:
        button = QPushButton(text)
        button.setEnabled(text not in disabled)
        button.clicked.connect(lambda _checked=False, call=on_click: call())
        row.addWidget(button)
        made.append(button)
    return row, made


def status_line(text: str = "") -> QLabel:
    """The word-wrapped status line under a widget's buttons."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def frame_on_screen(viewer: Any, layer: Any) -> int:
    """The frame of a stack layer that the viewer shows (its first axis is the focus axis); 0 for a 2-D image or
    no layer."""
    if layer is not None and layer.ndim - (1 if layer.rgb else 0) >= 3:
        return int(viewer.dims.current_step[0])
    return 0


def layer_choice(viewer: Any, layer_type: str, label: str, none_text: str | None = None, **options: Any) -> ComboBox:
    """A combo box of the viewer's layers of one type (``"Image"``, ``"Shapes"``), by name, whose ``value`` is the
    layer (None for the ``none_text`` entry); it follows layers being added and removed."""
    import napari

    kind = getattr(napari.layers, layer_type)

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        layers = [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]
        return ([(none_text, None)] if none_text is not None else []) + layers

    box = ComboBox(label=label, choices=choices, **options)
    viewer.layers.events.inserted.connect(box.reset_choices)
    viewer.layers.events.removed.connect(box.reset_choices)
    return box


def magnification_spin(
    value: float = 5000.0, label: str = "magnification", low: float = 10.0, high: float = 2_000_000.0
) -> FloatSpinBox:
    """The model's magnification (127 mm over a 1024-px frame), ``low`` to ``high``."""
    box = FloatSpinBox(label=label, value=value, min=low, max=high, step=100.0)
    box.native.setDecimals(0)
    box.native.setSuffix(" x")
    return box


def region_of_interest(shapes_layer: Any, image_layer: Any) -> tuple[float, float, float, float] | None:
    """(x, y, width, height) in pixels of ``image_layer`` of the bounding box of the first shape of
    ``shapes_layer`` (None when it holds no shape). Shapes are drawn in world coordinates: they are mapped into the
    image layer's pixel grid, so the layer's scale (nm per pixel) and any translation are honoured."""
    import numpy as np

    from ..io.roi import roi_from_vertices

    if shapes_layer is None or len(shapes_layer.data) == 0:
        return None
    vertices = np.asarray(shapes_layer.data[0], dtype=float)
    world = np.array([shapes_layer.data_to_world(v) for v in vertices])
    dims = image_layer.ndim  # without the colour axis of an RGB layer
    if world.shape[1] < dims:  # a 2D rectangle over a stack: any frame
        world = np.hstack([np.zeros((len(world), dims - world.shape[1])), world])
    pixels = np.array([image_layer.world_to_data(w[-dims:]) for w in world])
    return roi_from_vertices(pixels[:, -2:])
