"""The demo's layout: nothing clipped at 1366x768 or 1920x1080, the canvas gets most of the window, docks
tabbed by role, and `softseg demo` leaves the user's napari settings alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _analysis_case import laid_out

from napari_softseg.datasets.bundled import demo_case_path, demo_model_path

SIZES = [(1366, 768), (1920, 1080)]


@pytest.fixture(scope="module")
def demo_viewer(qapp):
    from napari_softseg.cli.demo_command import open_demo

    viewer, docks = open_demo(demo_case_path(), demo_model_path(), "cpu", threshold=0.5, show=True, quiet=True)
    yield viewer, docks
    viewer.close()


def docks_ready(docks) -> bool:
    """Every dock's background work has delivered (curves, tables, bins; no Predict/Train running)."""
    return all(getattr(d, "ready", True) and getattr(d, "task", None) is None for d in docks.values())


def _frames(viewer):
    from napari_softseg.cli.demo_command import ROLE_TITLES

    window = viewer.window._qt_window
    from qtpy.QtWidgets import QDockWidget

    return {d.windowTitle(): d for d in window.findChildren(QDockWidget) if d.windowTitle() in ROLE_TITLES.values()}


@pytest.mark.parametrize("size", SIZES)
def test_nothing_is_clipped_and_the_canvas_comes_first(demo_viewer, size, qtbot):
    from napari_softseg._qt.fit import clipped

    viewer, docks = demo_viewer
    window = viewer.window._qt_window
    window.resize(*size)
    qtbot.waitUntil(lambda: docks_ready(docks), timeout=60000)
    frames = _frames(viewer)
    assert set(frames) == {"Clinician", "Annotator", "Model", "Model: calibration"}
    # one tabbed column: all four docks share one place
    tabbed = {d.windowTitle() for d in window.tabifiedDockWidgets(frames["Clinician"])}
    assert tabbed == {"Annotator", "Model", "Model: calibration"}
    problems = {}
    for title, frame in frames.items():
        frame.raise_()
        qtbot.waitUntil(lambda frame=frame: laid_out(window, size, frame), timeout=10000)
        widget = frame.widget()
        found = clipped(widget)
        if found:
            problems[title] = found
    frames["Clinician"].raise_()
    assert not problems, "\n".join(f"{k}: {p}" for k, v in problems.items() for p in v)
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 0.45 * window.width(), (canvas.width(), window.width())


def test_demo_opens_clinician_tab_with_raters_hidden(demo_viewer, qtbot):
    viewer, docks = demo_viewer
    explorer = docks["Threshold explorer"]
    qtbot.waitUntil(explorer.isVisible, timeout=10000)       # the Clinician tab is in front
    assert not any(layer.visible for layer in viewer.layers if layer.name.startswith("rater "))
    assert viewer.layers["case13 image"].visible
    assert viewer.layers["soft prediction"].colorbar.visible
    assert explorer.overlay_mode == "outline" and explorer.contour_layer.visible


def test_demo_changes_no_napari_settings(tmp_path):
    """Run `softseg demo --screenshot` against a temporary settings file and compare it byte for byte."""
    settings = tmp_path / "napari" / "settings.yaml"
    settings.parent.mkdir()
    settings.write_text("application:\n  save_window_geometry: true\n  window_size: [800, 600]\n", encoding="utf-8")
    before = settings.read_bytes()
    env = dict(os.environ, NAPARI_CONFIG=str(settings), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    shot = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, "-m", "napari_softseg", "demo", "--device", "cpu", "--screenshot", str(shot)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file()
    assert settings.read_bytes() == before
    assert sorted(p.name for p in settings.parent.iterdir()) == ["settings.yaml"]


def test_window_fits_the_screen():
    from napari_softseg.cli.demo_command import WINDOW_SIZE, fit_window_size

    assert WINDOW_SIZE == (1920, 1080)
    assert fit_window_size((1366, 740)) == (1366, 740)
    assert fit_window_size((2560, 1400)) == (1920, 1080)
