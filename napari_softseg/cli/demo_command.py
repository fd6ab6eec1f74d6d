"""``softseg demo``: open napari with the demo case, the model's prediction and every dock, laid out for a clinician.

Without a download: the case and the model ship with the package. The prediction is made before the
window opens (in the terminal, with a progress bar), then the viewer shows the scan, the calibrated soft
prediction as a translucent heat map with a colour bar, and ``p ≥ t`` as a crisp cyan outline (raters
hidden: the clinician layout; the Rater comparison tab's checkbox switches to the annotator layout). The
four docks are one tabbed column on the right, by role — *Clinician* (Threshold explorer), *Annotator*
(Rater comparison), *Model* (Soft segmentation, Calibration) — so the canvas keeps most of the window.

The window fits the screen it opens on (at most 1920×1080), and the demo changes none of the user's
napari settings: napari reads the user's settings file as usual but writes what it would save (window
geometry, recent files) to a throw-away copy (:func:`isolate_settings`).

``--sample full`` opens the bundled whole head at full size (131 × 155 × 126 voxels at 1.5 mm: the MNI
template's brain inside a simulated head, five simulated raters) instead of the 80 × 96 × 16 demo slab,
to show scale and the 3D view; ``--case`` opens any case folder.

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

from napari_softseg._napari import layers as L
from napari_softseg._napari.layer_roles import analysis_session
from napari_softseg._napari.reader import read_case_folder
from napari_softseg._qt.dock_column import arrange_column
from napari_softseg._qt.segmentation_widget import PREDICTION_NAME
from napari_softseg.datasets.bundled import demo_case_path, demo_model_path, full_case_path
from napari_softseg.errors import SoftsegError
from napari_softseg.io.dataset import load_case
from napari_softseg.model.device import resolve_device
from napari_softseg.model.inference import predict_array
from napari_softseg.model.model_io import load_model
from napari_softseg.progress import run_with_progress_bar

#: Docks opened by the demo, by their manifest display names.
DOCKS = ("Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration")
#: Tab titles of the docks, by role; the tab order is this order (the Clinician tab is shown).
ROLE_TITLES = {
    "Threshold explorer": "Clinician",
    "Rater comparison": "Annotator",
    "Soft segmentation": "Model",
    "Calibration": "Model: calibration",
}
PLUGIN = "napari-softseg"
#: ``--sample`` choices: the bundled case each opens.
SAMPLES = {"demo": demo_case_path, "full": full_case_path}
WINDOW_SIZE = (1920, 1080)


def isolate_settings() -> Path | None:
    """Let napari read the user's settings but write to a temporary copy; returns the copy's path.

    napari saves the window geometry (and other state) to its settings file when a window closes, and a
    dock's position when it is docked. The demo gives napari a copy of the user's file in a temporary
    folder: through ``NAPARI_CONFIG`` before napari's settings module is imported, or (when importing the
    plugin already imported it) as the path napari's settings are read from and saved to. Returns None
    when napari's settings object already exists (then it is too late: the caller must run first).
    """
    import shutil
    import tempfile

    loaded = "napari.settings._napari_settings" in sys.modules
    if loaded:
        import napari.settings as napari_settings

        if getattr(napari_settings, "_SETTINGS", None) is not None:
            return None
    source = os.environ.get("NAPARI_CONFIG")
    if not source:
        from napari.utils._base import _DEFAULT_CONFIG_PATH

        source = _DEFAULT_CONFIG_PATH
    folder = Path(tempfile.mkdtemp(prefix="softseg-demo-settings-"))
    copy = folder / "settings.yaml"
    if Path(source).is_file():
        shutil.copyfile(source, copy)
    os.environ["NAPARI_CONFIG"] = str(copy)
    if loaded:               # the module read NAPARI_CONFIG at import: name the copy explicitly
        napari_settings.get_settings(copy)
    import atexit

    atexit.register(shutil.rmtree, folder, True)
    return copy


def fit_window_size(available: tuple[int, int], wanted: tuple[int, int] = WINDOW_SIZE) -> tuple[int, int]:
    """The demo window's size on a screen whose free area is ``available`` (width, height)."""
    return min(wanted[0], available[0]), min(wanted[1], available[1])


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``softseg demo`` to the ``softseg`` parser."""
    p = subparsers.add_parser(
        "demo",
        help="open napari with the demo case, the bundled model's prediction and all docks",
        description=(
            "Open napari with a case (default: the bundled MNI demo slab; --sample full: the bundled whole head), "
            "its raters, the model's soft "
            "prediction (default: the bundled demo model) and the four napari-softseg docks at threshold 0.5. "
            "With --screenshot, render the whole window to a PNG and exit (works under `xvfb-run -a`)."
        ),
    )
    p.add_argument("--screenshot", metavar="PATH", type=Path, help="write a PNG of the whole window and exit")
    p.add_argument("--sample", choices=sorted(SAMPLES),
                   help="bundled case: demo (the default: 80x96x16 slab, 2 mm) or full (whole head, 131x155x126 "
                        "at 1.5 mm)")
    p.add_argument("--case", metavar="PATH", type=Path, help="case folder to open (instead of a bundled --sample)")
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

    layers = read_case_folder(case_path)
    case = load_case(case_path, allow_no_masks=True)
    choice = resolve_device(device)
    if not quiet:
        print(f"device: {choice.device} ({choice.reason})")
    model = load_model(model_dir)
    soft = run_with_progress_bar(predict_array(model, case.image, device=choice, source=case.image_path,
                                                     spacing=case.spacing), disable=quiet)
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

    tuples = predict_case_layers(case_path, model_dir, device, quiet=quiet)
    viewer = napari.Viewer(title=f"napari-softseg demo — {case_path.name}", show=show)
    window = viewer.window._qt_window
    screen = window.screen() if hasattr(window, "screen") else None
    free = screen.availableGeometry() if screen is not None else None
    size = fit_window_size((free.width(), free.height()) if free is not None else WINDOW_SIZE)
    if free is not None:
        # the frame (title bar) comes on top of the client size: keep the whole window on the screen
        frame = window.frameGeometry().height() - window.geometry().height()
        size = (size[0], max(480, size[1] - max(frame, 0)))
    window.resize(*size)
    if free is not None:
        window.move(free.x(), free.y())
    L.add_layer_tuples(viewer, tuples, rater_contours=True)
    for layer in viewer.layers:          # the clinician layout: raters hidden (the Annotator tab shows them)
        if L.kind_of(layer) == "rater":
            layer.visible = False
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

    analysis_session(viewer).threshold = threshold
    viewer.layers.selection.active = prediction
    viewer.reset_view()
    return viewer, docks


def _arrange_docks(viewer, frames: dict) -> None:
    """One tabbed dock column on the right, by role; the Clinician tab in front; the canvas gets the rest.

    Each dock already joined the column as napari added it (:mod:`napari_softseg._qt.dock_column`, the
    plain-napari behaviour); here the tabs get role titles and the role order.
    """
    order = [name for name in ROLE_TITLES if name in frames]
    if not order:
        return
    for name in order:
        frames[name].setWindowTitle(ROLE_TITLES[name])
    arrange_column(viewer.window._qt_window, [frames[name] for name in order],
                   front=frames.get("Threshold explorer"))


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

    if args.screenshot is not None and args.screenshot.exists() and not args.overwrite:
        raise SoftsegError("already exists; choose another name or pass --overwrite", args.screenshot)
    if not 0.0 <= args.threshold <= 1.0:
        raise SoftsegError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.case is not None and args.sample is not None:
        raise SoftsegError("--case and --sample are alternatives: give one of them")
    case_path = args.case if args.case is not None else SAMPLES[args.sample or "demo"]()
    model_dir = args.model if args.model is not None else demo_model_path()
    check_display()
    isolate_settings()
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
