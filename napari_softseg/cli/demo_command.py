"""``softseg demo``: open napari with the demo case, its raters, the model's prediction and every dock.

Without a download: the case and the model ship with the package. The prediction is made before the
window opens (in the terminal, with a progress bar), then the viewer shows the scan, the raters as
coloured outlines, the soft label (hidden) and the calibrated soft prediction, with the four docks
(Soft segmentation, Threshold explorer, Rater comparison, Calibration) at threshold 0.5.

``--screenshot out.png`` renders the whole window to a PNG and exits — also on a machine without a
display, under Xvfb::

    xvfb-run -a softseg demo --screenshot demo.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from napari_softseg.errors import SoftsegError

#: Docks opened by the demo, by their manifest display names.
DOCKS = ("Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration")
PLUGIN = "napari-softseg"
WINDOW_SIZE = (1920, 1280)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``softseg demo`` to the ``softseg`` parser."""
    p = subparsers.add_parser(
        "demo",
        help="open napari with the demo case, the bundled model's prediction and all docks",
        description=(
            "Open napari with a case (default: the bundled MNI demo case), its raters, the model's soft "
            "prediction (default: the bundled demo model) and the four napari-softseg docks at threshold 0.5. "
            "With --screenshot, render the whole window to a PNG and exit (works under `xvfb-run -a`)."
        ),
    )
    p.add_argument("--screenshot", metavar="PATH", type=Path, help="write a PNG of the whole window and exit")
    p.add_argument("--case", metavar="PATH", type=Path, help="case folder to open (default: the bundled demo case)")
    p.add_argument("--model", metavar="DIR", type=Path, help="model folder (default: the bundled demo model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--threshold", type=float, default=0.5, help="initial threshold of the docks (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing screenshot file")
    p.set_defaults(func=run)


def check_display() -> None:
    """Fail with advice instead of letting Qt abort when there is no display to draw on.

    Raises:
        SoftsegError: On Linux without ``DISPLAY``/``WAYLAND_DISPLAY`` (and no offscreen platform chosen).
    """
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal", "vnc", "eglfs")):
        return
    raise SoftsegError(
        "no display found (DISPLAY is not set). On a machine without a screen run it under a virtual display: "
        "`xvfb-run -a softseg demo --screenshot demo.png` (install Xvfb with `apt-get install xvfb`)"
    )


def predict_case_layers(case_path: Path, model_dir: Path, device: str = "auto", *, quiet: bool = False) -> list:
    """Layer-data tuples of a case plus the model's soft prediction (computed here, headless).

    Returns:
        The case's layers (image, raters, soft label) followed by the ``soft prediction`` layer.
    """
    from .. import layers as L
    from napari_softseg._qt.segmentation_widget import PREDICTION_NAME
    from napari_softseg._reader import read_case_folder
    from napari_softseg.io.dataset import load_case
    from napari_softseg.model.device import resolve_device
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import load_model
    from napari_softseg.progress import run_with_progress_bar

    layers = read_case_folder(case_path)
    case = load_case(case_path, allow_no_masks=True)
    choice = resolve_device(device)
    if not quiet:
        print(f"device: {choice.device} ({choice.reason})")
    model = load_model(model_dir)
    soft = run_with_progress_bar(predict_array(model, case.image, device=choice, source=case.image_path), disable=quiet)
    layers.append(
        L.soft_map_layer(
            soft, L.geometry_of_case(case), name=PREDICTION_NAME, kind="prediction", source=case.image_path,
            case=case.name, model=str(model_dir), device=choice.device, device_reason=choice.reason,
            method=(model.config.softlabel or {}).get("method"), temperature=model.config.temperature,
            task=model.config.task,
        )
    )
    return layers


def best_slice(layer) -> int:
    """Index along the first display axis where the layer has the most signal (the structure's middle)."""
    import numpy as np

    data = np.asarray(layer.data)
    if data.ndim < 3:
        return 0
    return int(np.argmax(data.reshape(data.shape[0], -1).sum(axis=1)))


def open_demo(case_path: Path, model_dir: Path, device: str = "auto", *, threshold: float = 0.5,
              show: bool = True, quiet: bool = False):
    """Build the demo viewer: layers, axial view with anterior up, docks. Returns the viewer."""
    import napari

    from .. import layers as L
    from napari_softseg._qt.segmentation_widget import PREDICTION_NAME

    tuples = predict_case_layers(case_path, model_dir, device, quiet=quiet)
    viewer = napari.Viewer(title=f"napari-softseg demo — {case_path.name}", show=show)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    L.add_layer_tuples(viewer, tuples, rater_contours=True)
    viewer.scene.camera.orientation2d = ("up", "right")  # anterior at the top of the screen
    prediction = viewer.layers[PREDICTION_NAME]
    guide = next((layer for layer in viewer.layers if L.kind_of(layer) == "soft_label"), prediction)
    if guide.ndim == 3:  # show the slice where the raters marked the most
        viewer.dims.set_point(0, _world_of_slice(guide, best_slice(guide)))
    viewer.layers.selection.active = prediction
    docks, dock_frames = {}, {}
    for name in DOCKS:
        try:
            frame, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=False)
        except Exception as exc:  # noqa: BLE001 - a dock that fails must not stop the demo
            print(f"softseg demo: the {name!r} dock could not be opened: {exc}", file=sys.stderr)
            continue
        docks[name], dock_frames[name] = widget, frame
    _arrange_docks(viewer, dock_frames)
    segmentation = docks.get("Soft segmentation")
    if segmentation is not None and hasattr(segmentation, "add_model"):
        segmentation.add_model(model_dir, label=f"{model_dir.name} (demo)")
    try:
        from napari_softseg._qt.selection import shared_threshold

        shared_threshold(viewer).set(threshold)
    except ImportError:
        pass
    viewer.reset_view()
    return viewer, docks


def _arrange_docks(viewer, frames: dict) -> None:
    """Two dock columns: Soft segmentation over Rater comparison, Threshold explorer over Calibration."""
    from qtpy.QtCore import Qt

    window = viewer.window._qt_window
    left, right = frames.get("Soft segmentation"), frames.get("Threshold explorer")
    if left is None or right is None:
        return
    window.splitDockWidget(left, right, Qt.Orientation.Horizontal)
    if "Rater comparison" in frames:
        window.splitDockWidget(left, frames["Rater comparison"], Qt.Orientation.Vertical)
    if "Calibration" in frames:
        window.splitDockWidget(right, frames["Calibration"], Qt.Orientation.Vertical)
    window.resizeDocks([left, right], [450, 450], Qt.Orientation.Horizontal)
    for top, bottom, heights in (("Soft segmentation", "Rater comparison", [470, 700]),
                                 ("Threshold explorer", "Calibration", [560, 610])):
        if top in frames and bottom in frames:
            window.resizeDocks([frames[top], frames[bottom]], heights, Qt.Orientation.Vertical)


def _world_of_slice(layer, index: int) -> float:
    """World coordinate (mm) of a slice index along the layer's first axis."""
    return float(layer.data_to_world([index] + [0] * (layer.ndim - 1))[0])


def settle(seconds: float = 1.5) -> None:
    """Let Qt draw and the docks finish their (throttled) updates."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def take_screenshot(viewer, path: Path, *, overwrite: bool = False) -> Path:
    """Render the whole window (canvas and docks) to ``path`` (PNG), atomically."""
    import tempfile

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise SoftsegError("screenshot must be a .png file", path)
    if path.exists() and not overwrite:
        raise SoftsegError("already exists; choose another name or pass --overwrite", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        viewer.window.screenshot(path=tmp, canvas_only=False, flash=False)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run(args: argparse.Namespace) -> int:
    """``softseg demo``; returns the exit code."""
    from napari_softseg.sample_data import demo_case_path, demo_model_path

    if args.screenshot is not None and args.screenshot.exists() and not args.overwrite:
        raise SoftsegError("already exists; choose another name or pass --overwrite", args.screenshot)
    if not 0.0 <= args.threshold <= 1.0:
        raise SoftsegError(f"--threshold must be between 0 and 1, got {args.threshold}")
    case_path = args.case if args.case is not None else demo_case_path()
    model_dir = args.model if args.model is not None else demo_model_path()
    check_display()
    import napari

    viewer, _ = open_demo(case_path, model_dir, args.device, threshold=args.threshold, show=True)
    settle(0.3)
    viewer.reset_view()  # fit the case to the canvas left between the docks
    if args.screenshot is None:
        napari.run()
        return 0
    try:
        settle()
        out = take_screenshot(viewer, args.screenshot, overwrite=args.overwrite)
    finally:
        viewer.close()
    print(f"screenshot written to {out}")
    return 0
