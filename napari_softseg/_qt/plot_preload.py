"""Import matplotlib off the GUI thread before a dock with a plot opens.

The Threshold explorer, Rater comparison and calibration docks draw with matplotlib, whose first import
(``matplotlib.figure`` and the Qt canvas) costs 0.4–0.7 s. napari imports a dock's module on the GUI thread
when the dock is opened, so that import froze the viewer each time the first plot dock opened.
:func:`preload_plots` starts the import in a daemon thread once one of our plot-free docks is up (the Soft
segmentation dock's device detection imports them in its worker, after torch's libraries and before torch,
and the Dataset review dock starts a thread), usually the first ones a user opens; by the time a plot dock
is asked for, the modules are in ``sys.modules`` and its import is cheap. The plot docks' own modules follow
(:data:`DOCK_MODULES`), so opening one spends no turn importing them. Python's per-module import locks make
a plot dock opened during the preload wait for it rather than import twice. Failures are left for the real
import to report.
"""

from __future__ import annotations

import sys
import threading

#: What the plot docks import (``napari_softseg._qt.plots``).
PLOT_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_qtagg")
#: The plot docks' own modules (class definitions only: no Qt object is made at import), imported after
#: matplotlib: opening the Threshold explorer then spends no turn importing them (~0.04 s).
DOCK_MODULES = ("napari_softseg._qt.threshold_explorer", "napari_softseg._qt.rater_comparison",
                "napari_softseg._qt.calibration_widget")

_lock = threading.Lock()
_thread: threading.Thread | None = None


def plots_imported() -> bool:
    """Whether every plot module is imported already."""
    return all(name in sys.modules for name in PLOT_MODULES)


def preloading() -> bool:
    """Whether the preload thread is importing now (other GUI-side Python work then competes with it for the
    GIL and waits)."""
    return _thread is not None and _thread.is_alive()


def preload_plots() -> threading.Thread | None:
    """Start importing the plot modules in a daemon thread (once per process); the thread, or ``None`` when
    there is nothing to do."""
    global _thread
    with _lock:
        if _thread is not None or plots_imported():
            return None
        _thread = threading.Thread(target=import_plots, name="softseg-preload-plots", daemon=True)
        _thread.start()
        return _thread


def import_plots() -> None:
    """Import the plot modules in the calling thread (a worker's: the Soft segmentation dock's background
    imports take them first, then torch, one thread at a time)."""
    import importlib

    for name in PLOT_MODULES + DOCK_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the dock's own import reports it, with its traceback
            return
