"""Render the screenshots of the guides from ``softseg demo``'s viewer (run under Xvfb, 1920x1080 screen).

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/img/make_screenshots.py docs/img

Writes threshold-explorer-0.5/0.8.png (the Clinician tab), canvas-threshold-0.8.png (the canvas),
rater-comparison.png and demo-annotator.png (the annotator layout) and demo-3d.png (the 3D view).
``demo.png`` and ``demo-1366x768.png`` are made by ``softseg demo --screenshot`` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path


def dock_of(widget):
    """The QDockWidget (tab) holding ``widget``."""
    from qtpy.QtWidgets import QDockWidget

    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget


def grab(widget, path: Path) -> None:
    widget.grab().save(str(path))
    print(path)


def main(out: Path) -> int:
    from napari_softseg.cli.demo_command import isolate_settings, open_demo, settle, take_screenshot
    from napari_softseg.datasets.bundled import demo_case_path, demo_model_path

    isolate_settings()
    viewer, docks = open_demo(demo_case_path(), demo_model_path(), "cpu", threshold=0.5, show=True, quiet=True)
    settle(2.0)
    viewer.reset_view()
    explorer = docks["Threshold explorer"]
    for t in (0.5, 0.8):
        explorer.set_threshold(t)
        settle(1.0)
        grab(explorer, out / f"threshold-explorer-{t}.png")
    canvas = viewer.window._qt_viewer.canvas.native
    grab(canvas, out / "canvas-threshold-0.8.png")
    explorer.set_threshold(0.5)
    comparison = docks["Rater comparison"]
    dock_of(comparison).raise_()
    settle(0.5)
    comparison.role_check.setChecked(True)
    settle(2.5)
    grab(comparison, out / "rater-comparison.png")
    take_screenshot(viewer, out / "demo-annotator.png", overwrite=True)
    print(out / "demo-annotator.png")
    comparison.role_check.setChecked(False)
    dock_of(explorer).raise_()
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (-20, 30, 60)
    settle(3.0)
    take_screenshot(viewer, out / "demo-3d.png", overwrite=True)
    print(out / "demo-3d.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
