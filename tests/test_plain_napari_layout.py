"""Issue 15 item 1: in plain napari, our docks share one tabbed column whatever order they are opened in.

The case folder is opened with napari's reader, the four docks through the Plugins path
(``viewer.window.add_plugin_dock_widget``), in two orders, on a shown window of 1366×768 and 1920×1080
(under Xvfb). The window stays the size of the screen, the docks are one column of tabs, the Threshold
explorer's slider and its sensitivity/PPV numbers are on screen without scrolling, and nothing in any
dock is cut (text, combo entries such as the reference box, tables, the PR plot).
"""

from __future__ import annotations

import pytest
from _analysis_case import PLUGIN, laid_out

from napari_softseg.datasets.bundled import demo_case_path

DOCKS = ("Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration")
ORDERS = [DOCKS, ("Calibration", "Rater comparison", "Threshold explorer", "Soft segmentation")]
SIZES = [(1366, 768), (1920, 1080)]


def on_screen_unscrolled(widget, window) -> bool:
    """Whether ``widget`` is shown whole inside the main window and, if it sits in a scroll area, inside
    that area's viewport with the area scrolled to the top (seen without scrolling)."""
    from qtpy.QtCore import QPoint, QRect
    from qtpy.QtWidgets import QScrollArea

    if not widget.isVisible() or widget.visibleRegion().isEmpty():
        return False
    if not window.rect().contains(QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())):
        return False
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is None:
        return True
    viewport = parent.viewport()
    inside = viewport.rect().contains(QRect(widget.mapTo(viewport, QPoint(0, 0)), widget.size()))
    return inside and parent.verticalScrollBar().value() == 0


@pytest.mark.parametrize("size", SIZES, ids=["1366x768", "1920x1080"])
@pytest.mark.parametrize("order", ORDERS, ids=["guide-order", "reverse-order"])
def test_docks_share_one_column_and_fit_the_screen(make_napari_viewer, qtbot, order, size):
    from conftest import init_napari_plugins

    from napari_softseg._qt.fit import clipped, combo_text_width

    init_napari_plugins()
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*size)
    viewer.open(str(demo_case_path()), plugin=PLUGIN)
    frames, widgets = {}, {}
    for name in order:
        frames[name], widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)

    # one tabbed column: each dock is tabbed with the three others; the last one opened is in front
    for name, frame in frames.items():
        assert {d.windowTitle() for d in window.tabifiedDockWidgets(frame)} == set(DOCKS) - {name}
        assert frame.windowTitle() == name
    last = frames[order[-1]]
    qtbot.waitUntil(lambda: laid_out(window, size, last), timeout=20000)
    # no dock forces the window past the screen
    assert window.width() <= size[0] and window.height() <= size[1]
    assert window.minimumSizeHint().height() <= size[1] and window.minimumHeight() <= size[1]
    qtbot.waitUntil(lambda: all(getattr(w, "ready", True) for w in widgets.values()), timeout=60000)

    # the explorer's slider, exact value and clinical numbers: on screen without scrolling
    explorer = widgets["Threshold explorer"]
    frames["Threshold explorer"].raise_()
    qtbot.waitUntil(lambda: laid_out(window, size, frames["Threshold explorer"]), timeout=20000)
    for w in (explorer.slider, explorer.spin, explorer.stat_labels["sensitivity"], explorer.stat_labels["PPV"],
              explorer.stat_names["sensitivity"], explorer.stat_names["PPV"]):
        assert on_screen_unscrolled(w, window), w
    assert explorer.stat_labels["sensitivity"].text() not in ("–", "…")      # the numbers are there
    assert explorer.slider.width() >= 100

    # nothing cut in any dock: texts, the reference boxes' full consensus rule, tables, plots
    problems = {}
    for name, frame in frames.items():
        frame.raise_()
        qtbot.waitUntil(lambda frame=frame: laid_out(window, size, frame), timeout=20000)
        found = clipped(frame.widget())
        if found:
            problems[name] = found
    assert not problems, "\n".join(f"{k}: {p}" for k, v in problems.items() for p in v)
    for dock in (explorer, widgets["Rater comparison"]):
        combo = dock.reference_combo
        assert combo.currentText().startswith("consensus: ≥ half of raters (3 of 5)")
        assert combo.fontMetrics().horizontalAdvance(combo.currentText()) <= combo_text_width(combo)
    # the canvas keeps most of the window
    assert viewer.window._qt_viewer.canvas.native.width() >= 0.45 * window.width()
