"""Result tables of the dock widgets: read-only cells, one row optionally highlighted (the best frame)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem


def fill_table(table: Any, headers: Sequence[str], rows: Sequence[Sequence[str]], highlight: int | None = None) -> None:
    """Show ``rows`` of cell texts under ``headers`` in a ``QTableWidget``; the cells cannot be edited (they are
    results, not inputs); row ``highlight`` gets a dark green background."""
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setRowCount(len(rows))
    for i, cells in enumerate(rows):
        for j, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            if i == highlight:
                item.setBackground(Qt.GlobalColor.darkGreen)
            table.setItem(i, j, item)
