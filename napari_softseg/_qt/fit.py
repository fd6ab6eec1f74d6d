"""Does every piece of text in a dock fit the space it was given? (The layout checks behind the demo's
"nothing clipped at 1366×768 or 1920×1080" promise; Qt-only, used by tests and ``softseg demo``.)

:func:`clipped` walks a widget tree and reports, in words, each visible thing whose text is wider than
its box: labels (unless they wrap), buttons, check boxes, combo boxes (the current entry), group-box
titles, table cells and headers, spin boxes (prefix + value + suffix), and matplotlib figures whose tight bounding box (axis labels, tick
labels, titles, legends) reaches outside the canvas. It also reports widgets that stick out of the
dock's visible width (a dock narrower than its content).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractButton,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QLabel,
    QSpinBox,
    QStyle,
    QStyleOptionComboBox,
    QTableWidget,
    QWidget,
)


def _visible(widget: QWidget, root: QWidget) -> bool:
    return widget.isVisibleTo(root) and widget.width() > 0 and widget.height() > 0


def _text_width(widget: QWidget, text: str) -> int:
    return max((widget.fontMetrics().horizontalAdvance(line) for line in text.splitlines() or [""]), default=0)


def clipped(root: QWidget, slack: int = 1) -> list[str]:
    """Descriptions of everything under ``root`` whose text does not fit its box (empty: all fits)."""
    problems: list[str] = []
    root_width = root.width()
    for w in root.findChildren(QWidget):
        if not _visible(w, root):
            continue
        name = type(w).__name__
        right = w.mapTo(root, w.rect().topRight()).x()
        if not w.isWindow() and right > root_width + slack:
            problems.append(f"{name} {getattr(w, 'text', lambda: '')()!r} ends at x={right} beyond the dock's {root_width}")
        if isinstance(w, QLabel) and not w.wordWrap() and w.text() and not w.pixmap():
            if w.textFormat() == Qt.TextFormat.RichText:   # measured by Qt's own size hint
                need = w.sizeHint().width()
            else:
                need = _text_width(w, w.text()) + 2 * w.margin() + w.indent() * (w.indent() > 0)
            if need > w.contentsRect().width() + slack:
                problems.append(f"label {w.text()!r} needs {need} px, has {w.contentsRect().width()}")
        elif isinstance(w, QCheckBox) or (isinstance(w, QAbstractButton) and w.text()):
            need = w.sizeHint().width() if isinstance(w, QCheckBox) else _text_width(w, w.text()) + 8
            if need > w.width() + slack:
                problems.append(f"{name} {w.text()!r} needs {need} px, has {w.width()}")
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            text = w.prefix() + w.textFromValue(w.maximum()) + w.suffix()
            edit = w.lineEdit()
            if _text_width(w, text) > edit.width() + slack:
                problems.append(f"spin box {text!r} needs {_text_width(w, text)} px, has {edit.width()}")
        elif isinstance(w, QComboBox) and w.currentText():
            field = combo_text_width(w)
            if _text_width(w, w.currentText()) > field + slack:
                problems.append(f"combo box {w.currentText()!r} needs {_text_width(w, w.currentText())} px, "
                                f"shows {field}")
        elif isinstance(w, QGroupBox) and w.title():
            if _text_width(w, w.title()) + 16 > w.width() + slack:
                problems.append(f"group box title {w.title()!r} does not fit {w.width()} px")
        elif isinstance(w, QTableWidget):
            problems += _table_problems(w, slack)
        elif hasattr(w, "figure") and hasattr(w.figure, "get_tightbbox"):
            problems += _figure_problems(w)
    return problems


def combo_text_width(combo: QComboBox) -> int:
    """Width in pixels of the part of ``combo`` that shows its current text (without the arrow)."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(
        QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, combo
    )
    return field.width()


def _table_problems(table: QTableWidget, slack: int) -> list[str]:
    out = []
    header = table.horizontalHeader()
    total = sum(header.sectionSize(c) for c in range(table.columnCount()))
    if total > table.viewport().width() + slack:
        out.append(f"table columns need {total} px, the table shows {table.viewport().width()}")
    for c in range(table.columnCount()):
        item = table.horizontalHeaderItem(c)
        width = header.sectionSize(c)
        if item is not None and _text_width(header, item.text()) + 8 > width + slack:
            out.append(f"table header {item.text()!r} needs {_text_width(header, item.text()) + 8} px, has {width}")
        for r in range(table.rowCount()):
            cell = table.item(r, c)
            if cell is None:
                continue
            font_metrics = table.fontMetrics() if not cell.font().bold() else _bold_metrics(table)
            need = font_metrics.horizontalAdvance(cell.text()) + 8
            if need > width + slack:
                out.append(f"table cell {cell.text()!r} needs {need} px, has {width}")
    return out


def _bold_metrics(widget: QWidget):
    from qtpy.QtGui import QFont, QFontMetrics

    font = QFont(widget.font())
    font.setBold(True)
    return QFontMetrics(font)


def _figure_problems(canvas) -> list[str]:
    figure = canvas.figure
    try:
        # the figure's size as the canvas shows it now (a hidden tab's canvas may not have been resized yet)
        ratio = getattr(canvas, "device_pixel_ratio", 1.0) or 1.0
        figure.set_size_inches(canvas.width() * ratio / figure.dpi, canvas.height() * ratio / figure.dpi,
                               forward=False)
        canvas.draw()
        renderer = figure.canvas.get_renderer()
        tight = figure.get_tightbbox(renderer)
    except Exception as exc:  # noqa: BLE001 - report, do not crash the check
        return [f"figure could not be measured: {exc}"]
    # get_tightbbox is in inches (figure units): compare with the figure's size in inches
    w, h = figure.get_size_inches()
    if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > w + 0.01 or tight.y1 > h + 0.01:
        return [f"figure content {tight.bounds} reaches outside the figure ({w:.2f} x {h:.2f} in)"]
    return []


def canvas_rgb(viewer) -> np.ndarray:
    """The canvas as drawn now: ``uint8 (H, W, 3)`` (a shown window; call after the view settled)."""

    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]


def threshold_contrast(viewer, set_threshold, low: float = 0.2, high: float = 0.8, settle=None) -> dict:
    """How visibly the canvas changes between two thresholds.

    Renders the canvas at ``low`` and ``high`` (``set_threshold(t)`` moves the explorer) and returns the
    number of pixels that changed and the median, 25th percentile and mean RGB distance (0–441) of those
    pixels, plus how visible the scan stays: the correlation of the canvas' luminance with the luminance of
    the scan drawn alone (other layers hidden), over the pixels where the scan is not black.
    """
    import numpy as np

    settle = settle or (lambda: None)
    set_threshold(low)
    settle()
    a = canvas_rgb(viewer).astype(np.float64)
    set_threshold(high)
    settle()
    b = canvas_rgb(viewer).astype(np.float64)
    distance = np.sqrt(((a - b) ** 2).sum(-1))
    changed = distance > 0
    shown = [layer for layer in viewer.layers if layer.visible]
    scans = [layer for layer in shown if (layer.metadata.get("softseg") or {}).get("kind") == "image"]
    visibility = None
    if scans:
        for layer in shown:
            if layer not in scans:
                layer.visible = False
        settle()
        scan = canvas_rgb(viewer).astype(np.float64).mean(-1)
        for layer in shown:
            layer.visible = True
        settle()
        lum = b.mean(-1)
        head = scan > 20
        if head.sum() > 100:
            visibility = float(np.corrcoef(scan[head], lum[head])[0, 1])
    values = distance[changed]
    return {
        "low": low, "high": high, "changed_pixels": int(changed.sum()),
        "median_rgb_distance": float(np.median(values)) if values.size else 0.0,
        "p25_rgb_distance": float(np.percentile(values, 25)) if values.size else 0.0,
        "mean_rgb_distance": float(values.mean()) if values.size else 0.0,
        "scan_visibility": visibility,
    }
