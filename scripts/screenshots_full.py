"""Screenshots of the full-size whole-head sample, the plain-napari way (issue 15; run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshots_full.py [OUT_DIR]

What a new user does without ``softseg demo``: *File ▸ Open* the bundled whole-head case folder
(``viewer.open(path, plugin="napari-softseg")``: 131 × 155 × 126 voxels at 1.5 mm, five raters), open the
four docks from the Plugins menu in the order the guides give (Soft segmentation, Threshold explorer, Rater
comparison, Calibration: they join one tabbed column), press *Predict* (the bundled model, CPU), and look
at the Threshold explorer. Writes to ``OUT_DIR`` (default ``docs/img``):

* ``full_plain_napari_1366x768.png``, ``full_plain_napari_1920x1080.png`` — the whole window, all four docks,
  the Threshold explorer's tab in front showing the bundled model's prediction (``--soft soft_label``: the
  raters' soft label) at t = 0.4 on the axial slice where p ≥ 0.4 is largest;
* ``full_3d_{front,side,top}.png`` — the canvas in 3D (1920 × 1080 window) from three directions: the smooth
  shaded surface of p = 0.4 of the same soft map, the scan as a faint volume.

The model's prediction is the default since v0.3's bundled model, trained on whole heads at 1 mm, segments
the whole head (skull, fat, air) without marking the air (docs/results.md §1b); v0.2's could not, and these
pictures then showed the raters' soft label.

Deterministic inputs (the bundled files, the bundled model); waits on conditions (docks ready, the mesh
swapped in, two identical renders), never on fixed sleeps. The user's napari settings are not touched (a
temporary copy is used).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PLUGIN = "napari-softseg"
DOCKS = ("Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration")
SIZES = ((1366, 768), (1920, 1080))
#: The threshold shown. With the raters' soft label 0.5 is exactly the consensus (≥ 3 of 5 raters), whose
#: numbers are all 1.000; 0.4 (≥ 2 of 5) shows a real trade-off against it.
THRESHOLD = 0.4
#: The three 3D views: napari ``camera.set_view_direction(view, up)`` in world ``(z, y, x)`` = (S, A, R) of
#: the RAS case: from the front (superior up), from the side (along +x, superior up), from above (anterior up).
VIEWS_3D = {
    "front": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
    "side": ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "top": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


def wait_until(condition, timeout: float = 300.0) -> None:
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


def drawn_twice_alike(viewer, canvas_only: bool = False):
    """A condition that holds once two successive renders are identical."""
    import numpy as np

    last = [None]

    def same() -> bool:
        image = np.asarray(viewer.screenshot(canvas_only=canvas_only, flash=False))
        result = last[0] is not None and image.shape == last[0].shape and np.array_equal(image, last[0])
        last[0] = image
        return result

    return same


def open_plain(size: tuple[int, int]):
    """A shown viewer of ``size`` with the whole head opened and the four docks from the Plugins menu, predicted."""
    import napari

    from napari_softseg.datasets.bundled import full_case_path

    viewer = napari.Viewer(title="napari", show=True)
    window = viewer.window._qt_window
    window.resize(*size)
    viewer.open(str(full_case_path()), plugin=PLUGIN)
    wait_until(lambda: len(viewer.layers) >= 7)       # image, 5 raters, soft label (the reader may read in a worker)
    frames, docks = {}, {}
    for name in DOCKS:
        frames[name], docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    segmentation = docks["Soft segmentation"]
    segmentation.device_options.device.value = "cpu"
    started = time.perf_counter()
    segmentation.predict()
    wait_until(lambda: segmentation.task is None, timeout=900)
    print(f"predict: {time.perf_counter() - started:.1f} s")
    frames["Threshold explorer"].raise_()
    explorer = docks["Threshold explorer"]
    wait_until(lambda: all(getattr(d, "ready", True) for d in docks.values()) and explorer.isVisible()
               and (window.width(), window.height()) == size)
    return viewer, docks


def middle_slice(viewer, layer) -> None:
    """Show the axial slice where ``p >= THRESHOLD`` is largest."""
    import numpy as np

    data = np.asarray(layer.data)            # the soft label is a lazy mean of the packed rater masks
    index = int((data >= THRESHOLD).reshape(data.shape[0], -1).sum(1).argmax())
    viewer.dims.set_point(0, float(layer.data_to_world([index, 0, 0])[0]))


def soft_map(viewer, soft: str):
    """The layer shown: the model's ``soft prediction`` or the raters' soft label."""
    from napari_softseg._napari import layers as L

    if soft == "prediction":
        return viewer.layers["soft prediction"]
    return next(layer for layer in viewer.layers if L.kind_of(layer) == "soft_label")


def shoot_plain(size: tuple[int, int], out: Path, soft: str, keep: bool = False):
    from napari_softseg.cli.demo_command import take_screenshot

    viewer, docks = open_plain(size)
    explorer = docks["Threshold explorer"]
    layer = soft_map(viewer, soft)
    layer.visible = True                                # the user ticks it in the layer list
    if soft != "prediction":
        viewer.layers["soft prediction"].visible = False  # one soft map on the canvas
    explorer.inputs.set_soft_layer(layer)               # and picks it in the explorer's "soft map" box
    explorer.set_threshold(THRESHOLD)
    viewer.scene.camera.orientation2d = ("up", "right")   # anterior at the top, as radiologists read axials
    middle_slice(viewer, layer)
    viewer.reset_view()
    wait_until(lambda: explorer.ready and f"p ≥ {THRESHOLD:g}" in viewer.text_overlay.text)
    wait_until(drawn_twice_alike(viewer))
    path = take_screenshot(viewer, out / f"full_plain_napari_{size[0]}x{size[1]}.png", overwrite=True)
    window = viewer.window._qt_window
    print(path, "window", window.width(), "x", window.height())
    if keep:
        return viewer, docks
    viewer.close()
    return None


def shoot_3d(viewer, docks, out: Path, soft: str) -> list[Path]:
    """The canvas in 3D from :data:`VIEWS_3D`, once the shaded mesh of p = THRESHOLD is in."""
    explorer = docks["Threshold explorer"]
    explorer.inputs.set_soft_layer(soft_map(viewer, soft))
    wait_until(lambda: explorer.ready)
    explorer.set_threshold(THRESHOLD)
    started = time.perf_counter()
    viewer.dims.ndisplay = 3
    wait_until(lambda: not explorer.surfaces.busy and explorer.mesh_layer is not None
               and explorer.overlay.mesh_level == THRESHOLD)
    mesh = explorer.mesh_layer
    print(f"3D: mesh of p = {THRESHOLD} in {time.perf_counter() - started:.2f} s, "
          f"{len(mesh.data[1]):,} faces, {len(mesh.data[0]):,} vertices")
    paths = []
    for name, (view, up) in VIEWS_3D.items():
        viewer.reset_view()
        viewer.camera.set_view_direction(view, up)
        wait_until(drawn_twice_alike(viewer, canvas_only=True))
        path = out / f"full_3d_{name}.png"
        viewer.screenshot(path=str(path), canvas_only=True, flash=False)
        print(path, "view direction", view, "up", up, "camera angles", viewer.camera.angles)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    from napari_softseg.cli.demo_command import isolate_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/img"), help="output folder")
    parser.add_argument("--soft", choices=("soft_label", "prediction"), default="prediction",
                        help="the soft map shown (default: the bundled model's prediction)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    isolate_settings()
    shoot_plain(SIZES[0], args.out, args.soft)
    viewer, docks = shoot_plain(SIZES[1], args.out, args.soft, keep=True)
    shoot_3d(viewer, docks, args.out, args.soft)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
