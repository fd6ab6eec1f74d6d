"""Screenshots of the plain-napari path with all four docks, at 1366x768 and 1920x1080 (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/img/make_plain_napari_screenshots.py docs/img

What a new user does, without ``softseg demo``: open the bundled demo case folder with napari's reader
(``viewer.open(path, plugin="napari-softseg")``), open the four docks from the Plugins menu in the order
the guides give (``add_plugin_dock_widget``: Soft segmentation, Threshold explorer, Rater comparison,
Calibration), press *Predict* in Soft segmentation (the bundled model, CPU), pick the prediction in the
explorer's "soft map" box and bring the Threshold explorer's tab to the front. Writes ``plain_napari_1366x768.png`` and ``plain_napari_1920x1080.png``
(the whole window). The user's napari settings are not touched (a temporary copy is used).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

PLUGIN = "napari-softseg"
DOCKS = ("Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration")
SIZES = ((1366, 768), (1920, 1080))


def wait_until(condition, timeout: float = 120.0) -> None:
    """Run the Qt event loop until ``condition()`` holds.

    Raises:
        TimeoutError: It did not hold within ``timeout`` seconds.
    """
    from qtpy.QtTest import QTest

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"gave up waiting after {timeout:.0f} s")
        QTest.qWait(20)


def drawn_twice_alike(viewer):
    """A condition that holds once two successive renders of the whole window are identical."""
    import numpy as np

    last = [None]

    def same() -> bool:
        image = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
        result = last[0] is not None and image.shape == last[0].shape and np.array_equal(image, last[0])
        last[0] = image
        return result

    return same


def shoot(size: tuple[int, int], out: Path) -> Path:
    import napari

    from napari_softseg.cli.demo_command import take_screenshot
    from napari_softseg.datasets.bundled import demo_case_path

    viewer = napari.Viewer(title="napari", show=True)
    window = viewer.window._qt_window
    window.resize(*size)
    viewer.open(str(demo_case_path()), plugin=PLUGIN)
    frames, docks = {}, {}
    for name in DOCKS:
        frames[name], docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    segmentation = docks["Soft segmentation"]
    segmentation.device_options.device.value = "cpu"
    segmentation.predict()
    wait_until(lambda: segmentation.task is None)
    explorer = docks["Threshold explorer"]
    frames["Threshold explorer"].raise_()
    wait_until(lambda: all(getattr(d, "ready", True) for d in docks.values()) and explorer.isVisible()
               and (window.width(), window.height()) == size)
    prediction = viewer.layers["soft prediction"]
    explorer.inputs.set_soft_layer(prediction)          # the user picks the prediction in the "soft map" box
    explorer.set_threshold(0.5)
    data = prediction.data
    viewer.dims.set_point(0, float(prediction.data_to_world(
        [int((data >= 0.5).reshape(data.shape[0], -1).sum(1).argmax()), 0, 0])[0]))
    viewer.reset_view()
    wait_until(lambda: explorer.ready and "p ≥ 0.5" in viewer.text_overlay.text)
    wait_until(drawn_twice_alike(viewer))
    path = take_screenshot(viewer, out / f"plain_napari_{size[0]}x{size[1]}.png", overwrite=True)
    print(path, "window", window.width(), "x", window.height())
    viewer.close()
    return path


def main(out: Path) -> int:
    from napari_softseg.cli.demo_command import isolate_settings

    isolate_settings()
    for size in SIZES:
        shoot(size, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")))
