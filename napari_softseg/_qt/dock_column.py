"""One tabbed dock column for all napari-softseg docks, in whatever order they are opened.

napari adds each plugin dock under the previous ones in the right dock area, splitting its height; the
minimum heights of four docks add up and Qt grows the window past a 768 or 1080 px screen. Instead,
each of our docks calls :func:`join_column_when_docked` once: when napari puts it into the main window
(the Plugins menu, ``viewer.window.add_plugin_dock_widget`` or ``add_dock_widget``), it is tabbed with
the napari-softseg docks already in that area, brought to the front, and the column's width follows the
window (:func:`fit_column_width`). ``softseg demo`` orders the same column by role with
:func:`arrange_column`.
"""

from __future__ import annotations

import weakref

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

#: Qt property marking a widget as a napari-softseg dock (its value: the tab title).
DOCK_PROPERTY = "softseg_dock"
#: Widest the column gets (enough for every dock's content at 1366×768 and 1920×1080).
DOCK_WIDTH = 440
#: Narrowest the column is made, and the share of the window it may take.
MIN_DOCK_WIDTH = 320
WINDOW_SHARE = 0.28


def softseg_dock_of(dock: QDockWidget) -> QWidget | None:
    """The napari-softseg widget inside ``dock`` (None: another plugin's or napari's dock)."""
    inner = dock.widget()
    if inner is None:
        return None
    if inner.property(DOCK_PROPERTY):
        return inner
    return next((w for w in inner.findChildren(QWidget) if w.property(DOCK_PROPERTY)), None)


def column_docks(window: QMainWindow, area=None) -> list[QDockWidget]:
    """The napari-softseg docks of ``window`` (docked, not closed), optionally only those in ``area``."""
    out = []
    for dock in window.findChildren(QDockWidget):
        if softseg_dock_of(dock) is None or dock.isFloating() or dock.isHidden():
            continue
        if area is not None and window.dockWidgetArea(dock) != area:
            continue
        out.append(dock)
    return out


def join_column(dock: QDockWidget) -> bool:
    """Tab ``dock`` with the napari-softseg docks already in its dock area and bring it to the front.

    Returns:
        False if ``dock`` is not (yet) docked in a main window, True once it joined (or started) the column.
    """
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return False
    area = window.dockWidgetArea(dock)
    others = [d for d in column_docks(window, area) if d is not dock]
    title = softseg_dock_of(dock).property(DOCK_PROPERTY) if softseg_dock_of(dock) is not None else None
    if isinstance(title, str) and title:
        dock.setWindowTitle(title)       # the tab's text (napari's title bar keeps its own label)
    if others:
        window.tabifyDockWidget(others[0], dock)
    follow_window_width(window, dock)
    raise_dock(dock)
    return True


def join_column_when_docked(widget: QWidget, title: str) -> None:
    """Mark ``widget`` as a napari-softseg dock titled ``title``; join the column once napari docks it.

    napari wraps the widget in a ``QDockWidget`` (a parent change) and then adds that to the main window
    (which emits the dock's ``dockLocationChanged``); the widget joins the column right then, or at the
    next turn of the event loop, whichever comes first, and only once.
    """
    widget.setProperty(DOCK_PROPERTY, title)
    watcher = _DockWatcher(widget)
    widget.installEventFilter(watcher)
    widget._softseg_dock_watcher = watcher


class _DockWatcher(QObject):
    """Waits for the widget's dock to be put into a main window, then joins the column once."""

    def __init__(self, widget: QWidget):
        super().__init__(widget)
        self._widget = weakref.ref(widget)
        self._dock = None
        self.joined = False

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ParentChange and not self.joined:
            dock = _enclosing_dock(obj)
            if dock is not None and dock is not self._dock:
                self._dock = dock
                dock.dockLocationChanged.connect(self._try_join)
                QTimer.singleShot(0, self._try_join)
        return False

    def _try_join(self, *args) -> None:
        dock = self._dock
        if self.joined or dock is None:
            return
        self.joined = True               # tabifying moves the dock: its signal comes back here at once
        try:
            self.joined = join_column(dock)
        except RuntimeError:             # the dock was deleted before the event loop came back
            return
        if self.joined:
            try:
                dock.dockLocationChanged.disconnect(self._try_join)
            except (RuntimeError, TypeError):
                pass


def _enclosing_dock(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def raise_dock(dock: QDockWidget) -> None:
    """Bring ``dock``'s tab to the front (now, and again once Qt has laid the tabs out)."""
    dock.show()
    dock.raise_()
    ref = weakref.ref(dock)

    def again() -> None:
        d = ref()
        if d is not None:
            try:
                d.raise_()
            except RuntimeError:
                pass

    QTimer.singleShot(0, again)


def column_width(window_width: int) -> int:
    """Width of the dock column in a window ``window_width`` px wide: the canvas keeps most of it."""
    return min(DOCK_WIDTH, max(MIN_DOCK_WIDTH, int(window_width * WINDOW_SHARE)))


def fit_column_width(window: QMainWindow, dock: QDockWidget) -> None:
    """Give the column of ``dock`` its width for the window's current width."""
    window.resizeDocks([dock], [column_width(window.width())], Qt.Orientation.Horizontal)


class _FollowResize(QObject):
    """Re-fit the dock column when the window is resized (a smaller screen, a maximised window)."""

    def __init__(self, window: QMainWindow, dock: QDockWidget):
        super().__init__(window)
        # weak references: the filter lives as long as the window and must not keep it (or a dock) alive
        self._window, self._dock = weakref.ref(window), weakref.ref(dock)

    def set_dock(self, dock: QDockWidget) -> None:
        self._dock = weakref.ref(dock)

    def fit(self) -> None:
        window, dock = self._window(), self._dock()
        if window is None or dock is None:
            return
        try:
            if dock.isHidden() or dock.isFloating():
                others = column_docks(window)
                if not others:
                    return
                dock = others[0]
                self._dock = weakref.ref(dock)
            fit_column_width(window, dock)
        except RuntimeError:     # deleted meanwhile
            pass

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Resize:
            QTimer.singleShot(0, self.fit)
        return False


def follow_window_width(window: QMainWindow, dock: QDockWidget) -> None:
    """Fit the column of ``dock`` to the window's width now and whenever the window is resized."""
    follower = getattr(window, "_softseg_dock_fitter", None)
    if follower is None:
        follower = _FollowResize(window, dock)
        window._softseg_dock_fitter = follower
        window.installEventFilter(follower)
    else:
        follower.set_dock(dock)
    follower.fit()


def arrange_column(window: QMainWindow, docks: list[QDockWidget], front: QDockWidget | None = None) -> None:
    """Tab ``docks`` into one column in this order (the first keeps its place) and show ``front``."""
    if not docks:
        return
    first = docks[0]
    for dock in docks[1:]:
        window.tabifyDockWidget(first, dock)
    follow_window_width(window, first)
    raise_dock(front if front is not None else first)
