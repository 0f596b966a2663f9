"""Result tables of the dock widgets: read-only cells, one row optionally highlighted (the best frame)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush
from qtpy.QtWidgets import QTableWidgetItem


def fill_table(
    table: Any,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    highlight: int | None = None,
    unchanged_rows: int = 0,
) -> None:
    """Show ``rows`` of cell texts under ``headers`` in a ``QTableWidget``; the cells cannot be edited (they are
    results, not inputs); row ``highlight`` gets a dark green background.

    ``unchanged_rows``: the first rows are the ones the table shows already (rows were appended since the last
    fill, under the same headers): only the new rows are made, and the highlight moved — so refreshing a growing
    table while frames are scored costs the new rows, not all of them."""
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    kept = min(unchanged_rows, table.rowCount(), len(rows))
    previous = table.property("highlighted_row")
    table.setRowCount(len(rows))
    for i in {previous, highlight} - {None}:  # the kept rows whose colour changes
        if i < kept and previous != highlight:
            for j in range(table.columnCount()):
                item = table.item(i, j)
                if item is not None:
                    item.setBackground(Qt.GlobalColor.darkGreen if i == highlight else QBrush())
    for i, cells in enumerate(rows[kept:], start=kept):
        for j, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            if i == highlight:
                item.setBackground(Qt.GlobalColor.darkGreen)
            table.setItem(i, j, item)
    table.setProperty("highlighted_row", highlight)
