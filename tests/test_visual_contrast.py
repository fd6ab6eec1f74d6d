"""Issue 8's visual target on a shown window: between t = 0.2 and 0.8 the canvas pixels that change do so by
a median RGB distance >= 120, with the scan still visible — opened the plain napari way (File ▸ Open of a
case folder and of a `softseg predict` output, Threshold explorer from the Plugins menu)."""

from __future__ import annotations

import numpy as np

from napari_softseg.cli import main
from napari_softseg.datasets.bundled import demo_case_path, demo_model_path


def wait_drawn(qtbot, viewer, explorer):
    """Wait until the canvas shows the explorer's current threshold: the curve is built, the canvas legend
    (updated once the slider rests) names the threshold, and two renders of the canvas agree."""
    from napari_softseg._napari.layers import format_threshold
    from napari_softseg._qt.fit import canvas_rgb

    legend = f"p ≥ {format_threshold(explorer.threshold)}"
    qtbot.waitUntil(lambda: explorer.ready and legend in viewer.text_overlay.text, timeout=20000)
    last = [None]

    def stable():
        image = canvas_rgb(viewer)
        same = last[0] is not None and np.array_equal(image, last[0])
        last[0] = image
        return same

    qtbot.waitUntil(stable, timeout=20000)


def test_threshold_change_is_unmistakable(make_napari_viewer, qtbot, tmp_path):
    from _analysis_case import open_dock, wait_ready

    from napari_softseg._qt.fit import threshold_contrast

    out = tmp_path / "case13_prediction.nii.gz"
    assert main(["predict", str(demo_model_path()), str(demo_case_path() / "image.nii.gz"), "-o", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.open(str(demo_case_path()), plugin="napari-softseg")
    viewer.open(str(out), plugin="napari-softseg")
    explorer = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, explorer)
    data = np.asarray(viewer.layers["case13_prediction"].data)
    viewer.dims.set_current_step(0, int(np.argmax((data >= 0.5).reshape(data.shape[0], -1).sum(1))))
    wait_drawn(qtbot, viewer, explorer)
    result = threshold_contrast(viewer, explorer.set_threshold, settle=lambda: wait_drawn(qtbot, viewer, explorer))
    assert result["changed_pixels"] > 500
    assert result["median_rgb_distance"] >= 120, result
    assert result["scan_visibility"] is not None and result["scan_visibility"] > 0.5, result
