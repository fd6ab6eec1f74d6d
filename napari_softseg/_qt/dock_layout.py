"""How a dock arranges its content so it fits any column: primary controls fixed on top, the rest scrolls.

* :func:`dock_sections` — a fixed top section (the dock's primary controls: always visible, never
  scrolled away) over a frameless vertical scroll area for everything else, so a short dock scrolls
  instead of forcing the window taller than the screen.
* :class:`CollapsibleSection` — a titled section that folds to one line (long lists such as raters).
* :func:`read_only_table` and :func:`fit_table` — the small result tables of the docks (rater
  comparison, calibration): read-only, no row numbers, the first column stretches, and the table is
  exactly as tall as its rows (the dock scrolls, not the table).
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtWidgets import (
    QFrame,
    QHeaderView,
    QScrollArea,
    QSizePolicy,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

#: The scroll area's own minimum height: a dock never asks for more than its top section plus this.
SCROLL_MIN_HEIGHT = 120


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically; as wide as its content wants (a dock never clips the content's right side)."""

    def _extra(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        inner = self.widget().minimumSizeHint() if self.widget() is not None else QSize(0, 0)
        return QSize(inner.width() + self._extra(), SCROLL_MIN_HEIGHT)

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint() if self.widget() is not None else QSize(0, 0)
        return QSize(inner.width() + self._extra(), inner.height())


def dock_sections(widget: QWidget) -> tuple[QVBoxLayout, QVBoxLayout]:
    """Give ``widget`` a fixed top section over a vertical scroll area; returns both layouts to fill.

    The top section keeps its natural height (put only the dock's primary controls there); the scroll
    area takes the rest of the dock's height. The scroll area is ``widget.scroll_area``.

    Returns:
        ``(top, body)``: the layout of the fixed section and the layout inside the scroll area.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.setSpacing(2)
    top_widget = QWidget()
    top_widget.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
    top = QVBoxLayout(top_widget)
    top.setContentsMargins(9, 6, 9, 2)
    area = _VerticalScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    content = QWidget()
    area.setWidget(content)
    outer.addWidget(top_widget)
    outer.addWidget(area, 1)
    widget.top_section = top_widget
    widget.scroll_area = area
    return top, QVBoxLayout(content)


class CollapsibleSection(QWidget):
    """A section with a clickable title line that shows or hides its content.

    Args:
        title: The title line (e.g. ``"raters: 4 of 4 ticked"``; change it with :meth:`set_title`).
        content: The widget shown when expanded.
        expanded: Whether it starts expanded.

    Signals:
        toggled(bool): The section was expanded (True) or collapsed (False).
    """

    toggled = Signal(bool)

    def __init__(self, title: str, content: QWidget, *, expanded: bool = True, parent: QWidget | None = None):
        super().__init__(parent)
        self.button = QToolButton()
        self.button.setCheckable(True)
        self.button.setAutoRaise(True)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.button.setStyleSheet("QToolButton { border: none; text-align: left; }")
        self.content = content
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.button)
        layout.addWidget(content)
        self.button.toggled.connect(self._on_toggled)
        self.set_title(title)
        self.button.setChecked(expanded)
        self._on_toggled(expanded)

    @property
    def expanded(self) -> bool:
        """Whether the content is shown."""
        return self.button.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        """Show (True) or hide (False) the content."""
        self.button.setChecked(expanded)

    def set_title(self, title: str) -> None:
        """Change the title line."""
        self.button.setText(title)
        self.button.setToolTip(f"{title} (click to show or hide)")

    def _on_toggled(self, expanded: bool) -> None:
        self.button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.content.setVisible(expanded)
        self.toggled.emit(expanded)


def read_only_table(headers: list[str], tooltips: dict[int, str] | None = None) -> QTableWidget:
    """A result table: the given column headers, the first column stretching, the others fitting their
    contents, no row numbers, no editing, no horizontal scroll bar.

    Args:
        headers: Column titles.
        tooltips: Header tooltips by column.
    """
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    header = table.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    for column in range(1, len(headers)):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    for column, tip in (tooltips or {}).items():
        table.horizontalHeaderItem(column).setToolTip(tip)
    table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return table


def fit_table(table: QTableWidget) -> None:
    """Size ``table`` to its content after filling it: wide enough for every column, as tall as its rows."""
    table.resizeRowsToContents()
    table.resizeColumnsToContents()
    header = table.horizontalHeader()
    frame = 2 * table.frameWidth()
    table.setMinimumWidth(sum(header.sectionSizeHint(c) for c in range(table.columnCount())) + frame + 8)
    table.setFixedHeight(header.height() + sum(table.rowHeight(r) for r in range(table.rowCount())) + frame + 2)
