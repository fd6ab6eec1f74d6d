"""matplotlib is imported off the GUI thread once a plot-free dock opens (the first plot dock then opens
without the 0.4-0.7 s import on the GUI thread). Each check runs in a fresh interpreter: this test process
has imported matplotlib long ago."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_preload_imports_the_plot_modules_in_a_thread_once():
    out = _run("""
        import threading
        from napari_softseg._qt import plot_preload as pp
        before = pp.plots_imported()
        thread = pp.preload_plots()
        name = thread.name
        thread.join(120)
        print(before, name, pp.plots_imported(), pp.preload_plots() is None)
    """)
    assert out == "False softseg-preload-plots True True"


def test_opening_the_soft_segmentation_dock_preloads_matplotlib_and_the_plot_docks_modules():
    out = _run("""
        import sys, time
        import napari
        from qtpy.QtWidgets import QApplication
        assert "matplotlib.figure" not in sys.modules
        viewer = napari.Viewer(show=False)
        viewer.window.add_plugin_dock_widget("napari-softseg", "Soft segmentation")
        from napari_softseg._qt import plot_preload as pp
        deadline = time.monotonic() + 120
        docks = pp.DOCK_MODULES
        while not all(name in sys.modules for name in docks) and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        # imported by the device detection's worker: no second importing thread was needed
        print(pp.plots_imported(), all(name in sys.modules for name in docks), pp._thread is None)
        # the explorer still opens and works from the preloaded module
        explorer = viewer.window.add_plugin_dock_widget("napari-softseg", "Threshold explorer")[1]
        print(pp.plots_imported(), all(name in sys.modules for name in docks), pp._thread is None,
              type(explorer).__module__)
        viewer.close()
    """)
    assert out == "True True True napari_softseg._qt.threshold_explorer"
