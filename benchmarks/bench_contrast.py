"""How visibly the canvas changes between threshold 0.2 and 0.8 (issue 8's target: median RGB distance of
the changed pixels >= 120 of 441, with the scan still visible).

Two ways of opening the data, both on a shown window (run under Xvfb):

* ``demo`` — ``softseg demo``'s viewer (bundled MNI case13 and demo model);
* ``plain`` — the plain napari way: File ▸ Open of the case folder and of a ``softseg predict`` output, then
  the Threshold explorer from the Plugins menu (``add_plugin_dock_widget``), default settings.

Baseline in the same process: the old encoding (the v0.1 filled amber overlay at 45 % over an additive
inferno soft map) on the demo viewer, for the ratio. Prints one line per measurement; the last line is JSON.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_contrast.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def settle(seconds: float = 0.4) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def demo_measure() -> tuple[dict, dict]:
    from napari_softseg._qt.fit import threshold_contrast
    from napari_softseg.cli.demo_command import open_demo
    from napari_softseg.datasets.bundled import demo_case_path, demo_model_path

    viewer, docks = open_demo(demo_case_path(), demo_model_path(), "cpu", show=True, quiet=True)
    viewer.window._qt_window.resize(1920, 1080)
    settle(1.5)
    explorer = docks["Threshold explorer"]
    new = threshold_contrast(viewer, explorer.set_threshold, settle=settle)
    # the v0.1 look, for the ratio: additive inferno soft map at 0.6 and the filled amber overlay at 45 %
    prediction = viewer.layers["soft prediction"]
    prediction.colormap, prediction.blending, prediction.opacity = "inferno", "additive", 0.6
    explorer.set_overlay_mode("filled")
    explorer.fill_layer.colormap = _amber()
    explorer.fill_layer.opacity = 0.45
    settle(0.5)
    old = threshold_contrast(viewer, explorer.set_threshold, settle=settle)
    viewer.close()
    return new, old


def _amber():
    from napari_softseg._napari.overlay_style import step_colormap

    return step_colormap("v0.1 amber", (1.0, 0.85, 0.1))


def plain_measure() -> dict:
    import napari

    from napari_softseg._qt.fit import threshold_contrast
    from napari_softseg.cli import main
    from napari_softseg.datasets.bundled import demo_case_path, demo_model_path

    out = Path(tempfile.mkdtemp(prefix="softseg-contrast-")) / "case13_prediction.nii.gz"
    assert main(["predict", str(demo_model_path()), str(demo_case_path() / "image.nii.gz"), "-o", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1920, 1080)
    viewer.open(str(demo_case_path()), plugin="napari-softseg")
    viewer.open(str(out), plugin="napari-softseg")
    _, explorer = viewer.window.add_plugin_dock_widget("napari-softseg", "Threshold explorer")
    deadline = time.monotonic() + 60
    while not explorer.ready and time.monotonic() < deadline:
        settle(0.1)
    layer = viewer.layers[out.name.split(".")[0]]
    import numpy as np

    data = np.asarray(layer.data)
    viewer.dims.set_current_step(0, int(np.argmax((data >= 0.5).reshape(data.shape[0], -1).sum(1))))
    settle(1.0)
    result = threshold_contrast(viewer, explorer.set_threshold, settle=settle)
    viewer.close()
    return result


def main_() -> int:
    import os

    results = {}
    new, old = demo_measure()
    results["demo"] = new
    results["demo_v0.1_encoding"] = old
    print(f"demo: median RGB distance {new['median_rgb_distance']:.0f} over {new['changed_pixels']:,} changed "
          f"pixels (v0.1 encoding: {old['median_rgb_distance']:.0f} over {old['changed_pixels']:,}); "
          f"scan visibility r = {new['scan_visibility']:.2f}")
    plain = plain_measure()
    results["plain_napari"] = plain
    print(f"plain napari: median RGB distance {plain['median_rgb_distance']:.0f} over {plain['changed_pixels']:,} "
          f"changed pixels; scan visibility r = {plain['scan_visibility']:.2f}")
    results["ratio_demo_vs_v0.1"] = new["median_rgb_distance"] / max(old["median_rgb_distance"], 1e-9)
    results["load"] = os.getloadavg()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
