"""Clinical scale in plain napari (issue 15 §2–3): GUI-thread stalls, slider cost and memory at full size.

Run headless (one process per size, so each peak RSS is its own)::

    OMP_NUM_THREADS=1 xvfb-run -a python benchmarks/bench_scale.py --json scale.json [--sizes head,ct]

Two cases are built once in ``--workdir`` (default: a temporary folder) from the bundled whole-head sample
(``napari_softseg/data/mni_head``, 131 × 155 × 126 at 1.5 mm, five raters), resampled linearly:

* ``head``: 197 × 233 × 189 at 1 mm (a whole-head T1 with skull and air);
* ``ct``: 512 × 512 × 300 (~300 MB float32; CT-sized), with a little noise so the ``.nii.gz``
  compresses like a real scan.

Each is a QUBIQ case folder (``image.nii.gz`` float32 + ``task01_seg01..05.nii.gz``). For each size, a
shown napari viewer goes the way a new user does: File ▸ Open of the case folder through the npe2
reader (``viewer.open(folder, plugin="napari-softseg")``, what the menu calls), *Soft segmentation* ▸
Predict with the bundled model, the *Threshold explorer* (its PR curve), slider moves in 2D, slice
scrolling, the switch to 3D and slider moves there. Measured:

* **open time** (call → image, raters and soft label added and drawn) against a plain
  ``nibabel`` load of the same image file (``get_fdata(dtype=float32)``, in a separate process);
* **longest GUI-thread stall** per step: a ``QTimer`` heartbeat every 10 ms on the GUI thread and the
  longest gap between beats (a step that blocks the GUI for 2 s shows a 2 s gap); every step runs
  from the real event loop (``QEventLoop``), not from a busy loop; with it the longest **full garbage
  collection** that began in the step (``longest_full_gc_s``): CPython runs one whenever enough objects
  were allocated, holding the GIL, and with napari, Qt and torch loaded each takes 0.13-0.26 s here;
* **slider p95 / bare-repaint p95** in 2D (repaints and moves taken in turns) and in 3D (in blocks) (the
  moves of ``bench_slider.py``), and slices
  scrolled with the outline's displayed plane checked against the soft map's after every step (and the
  longest stall while scrolling, including debounced work after the last step);
* the **baseline**, in its own process (``bare_napari``): napari with the scan alone (File ▸ Open of the image,
  no docks) switched to 3D and back, napari's own ``add_labels`` of one rater mask, and ``import torch`` in a
  worker thread; the floor under our stalls on this machine: under software OpenGL napari's own first 3D
  frame of a big scan blocks the GUI thread before any plugin code runs, and torch's C extension
  initialises holding the GIL;
* **peak RSS** of the process in multiples of the scan's float32 size, also above the RSS of the shown,
  empty viewer (Qt, napari: ~0.3 GB, which dwarfs a small scan); torch, imported by Predict, is counted.

Under software OpenGL (Mesa's llvmpipe, as on a headless machine) a GL program is compiled the first time
it is linked and then kept in Mesa's on-disk shader cache (``~/.cache/mesa_shader_cache`` or
``$MESA_SHADER_CACHE_DIR``): the first run on a fresh machine pays the compiles inside the PR-curve and 3D
steps (a cold cache measured 1.25 s and 3.85 s there, a warm one 0.62 s and 0.67 s). The JSON records the
cache's state before the run (``shader_cache``); ``--shader-cache cold`` gives the children an empty cache
of their own for each measured run and each bare-napari run (a first run on a fresh machine); a second run
as-is then finds a warm one.

The JSON (``--json``) holds one entry per size and the machine's load; the last line printed is the same
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_slider import percentiles  # noqa: E402  (the slider benchmark's p50/p95 in ms)

from napari_softseg.analysis.session import unwrapped  # noqa: E402

SIZES = {"head": (197, 233, 189), "ct": (512, 512, 300)}
N_RATERS = 5
STALL_BAR_S = 0.2


# --------------------------------------------------------------------------------------------------
# The cases (built in a child process, once per work folder)
# --------------------------------------------------------------------------------------------------
def build_case(name: str, out: Path) -> Path:
    """Resample the bundled whole head to ``SIZES[name]``; returns the case folder (reused if present)."""
    import nibabel as nib
    from scipy import ndimage

    from napari_softseg.datasets.bundled import DATA_DIR

    case = out / name / "case01"
    done = case / "done"
    if done.exists():
        return case
    case.mkdir(parents=True, exist_ok=True)
    src = Path(DATA_DIR) / "mni_head" / "Training" / "case01"
    shape = SIZES[name]
    image = nib.load(str(src / "image.nii.gz"))
    src_shape = np.array(image.shape[:3], dtype=np.float64)
    ratio = src_shape / np.array(shape)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] * ratio[np.newaxis, :]
    affine[:3, 3] = image.affine[:3, 3] + image.affine[:3, :3] @ (0.5 * ratio - 0.5)  # same field of view

    def resample(array: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(array.astype(np.float32), ratio, offset=0.5 * ratio - 0.5,
                                        output_shape=shape, order=1, mode="nearest")

    scan = resample(np.asarray(image.dataobj)) * (1000.0 / 220.0)
    scan += np.random.default_rng(0).normal(0.0, 12.0, scan.shape).astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    nib.Nifti1Image(scan.astype(np.float32), affine, header).to_filename(str(case / "image.nii.gz"))
    del scan
    for r in range(1, N_RATERS + 1):
        mask = nib.load(str(src / f"task01_seg0{r}.nii.gz"))
        out_mask = (resample(np.asarray(mask.dataobj)) >= 0.5).astype(np.uint8)
        mask_header = nib.Nifti1Header()
        mask_header.set_data_dtype(np.uint8)
        nib.Nifti1Image(out_mask, affine, mask_header).to_filename(str(case / f"task01_seg0{r}.nii.gz"))
    done.write_text("ok")
    return case


def nibabel_load_s(path: Path) -> float:
    """Seconds of a plain nibabel load of ``path`` to float32 (after a warm-up read of the file's bytes)."""
    import nibabel as nib

    path.read_bytes()
    t0 = time.perf_counter()
    data = nib.load(str(path)).get_fdata(dtype=np.float32)
    seconds = time.perf_counter() - t0
    assert data.size
    return seconds


# --------------------------------------------------------------------------------------------------
# GUI-thread heartbeat and event-loop helpers
# --------------------------------------------------------------------------------------------------
class Heartbeat:
    """A 10 ms ``QTimer`` on the GUI thread; :meth:`measure` gives the longest gap between beats."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.beats: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.beats.append(time.perf_counter()))
        self.timer.start()

    def longest_gap(self, t_start: float, t_end: float) -> float:
        """The longest interval without a beat between ``t_start`` and ``t_end`` (seconds)."""
        times = [t_start] + [b for b in self.beats if t_start < b < t_end] + [t_end]
        return float(np.max(np.diff(times))) if len(times) > 1 else t_end - t_start


def run_until(condition, timeout: float, poll_ms: int = 5) -> bool:
    """Run the Qt event loop until ``condition()`` is true (polled every ``poll_ms``) or ``timeout`` s."""
    from qtpy.QtCore import QEventLoop, QTimer

    if condition():
        return True
    loop = QEventLoop()
    deadline = time.perf_counter() + timeout
    poll = QTimer()
    poll.setInterval(poll_ms)
    poll.timeout.connect(lambda: (condition() or time.perf_counter() > deadline) and loop.quit())
    poll.start()
    loop.exec()
    poll.stop()
    return bool(condition())


#: Full (generation-2) garbage collections: (start, seconds). CPython runs them on its own whenever enough
#: objects were allocated, in whatever thread allocates, holding the GIL: with napari, Qt and torch loaded
#: each took 0.13-0.26 s on this machine, a stall of the GUI thread wherever it lands.
FULL_GCS: list[tuple[float, float]] = []
_GC_WATCHED = False


def _watch_gc() -> None:
    import gc

    started = {}

    def callback(phase, info):
        if info.get("generation") != 2:
            return
        if phase == "start":
            started["t"] = time.perf_counter()
        elif "t" in started:
            t0 = started.pop("t")
            FULL_GCS.append((t0, time.perf_counter() - t0))

    global _GC_WATCHED
    if not _GC_WATCHED:
        gc.callbacks.append(callback)
        _GC_WATCHED = True


def longest_gc(t_start: float, t_end: float) -> float:
    """The longest full garbage collection that began between ``t_start`` and ``t_end`` (seconds)."""
    return round(max((s for t, s in FULL_GCS if t_start <= t <= t_end), default=0.0), 3)


def step(heart: Heartbeat, action, done, timeout: float, draws: list[int] | None = None) -> dict:
    """Run ``action`` from the event loop, wait for ``done()`` and one more frame; time it, its longest stall
    and the longest full garbage collection inside it (part of the stall when it landed on the GUI thread's
    turn)."""
    from qtpy.QtCore import QTimer

    run_until(lambda: False, 0.05)       # settle: a few beats before
    d0 = draws[0] if draws is not None else 0
    t0 = time.perf_counter()
    QTimer.singleShot(0, action)
    ok = run_until(done, timeout)
    if draws is not None:                # the result on screen: a frame drawn since the action started
        run_until(lambda: draws[0] > d0, 30.0)
    t1 = time.perf_counter()
    run_until(lambda: False, 0.05)
    return {"seconds": round(t1 - t0, 3), "longest_stall_s": round(heart.longest_gap(t0 - 0.02, t1), 3),
            "longest_full_gc_s": longest_gc(t0 - 0.02, t1), "completed": bool(ok)}


def _reads_pending() -> bool:
    """Whether a background open (napari_softseg._napari.background_open) is still running."""
    try:
        from napari_softseg._napari.background_open import pending
    except ImportError:          # a version that reads synchronously
        return False
    return bool(pending())


def fully_loaded(viewer) -> bool:
    """Whether every layer's data is in memory (data that loads in the background says ``loaded``)."""
    return all(getattr(layer.data, "loaded", True) for layer in viewer.layers)


def shown_viewer():
    """A shown napari viewer, drawn once: ``(viewer, app, heartbeat, vispy canvas, [frames drawn])``."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    _watch_gc()
    heart = Heartbeat()
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    draws = [0]
    scene.events.draw.connect(lambda event: draws.__setitem__(0, draws[0] + 1))
    run_until(lambda: draws[0] > 0, 10.0)
    return viewer, QApplication.instance(), heart, scene, draws


# --------------------------------------------------------------------------------------------------
# One size, in its own process
# --------------------------------------------------------------------------------------------------
def measure(name: str, case: Path, moves: int, moves_3d: int, slices: int, open_only: bool = False) -> dict:
    import nibabel as nib

    shape = nib.load(str(case / "image.nii.gz")).shape
    scan_bytes = int(np.prod(shape)) * 4
    viewer, app, heart, scene, draws = shown_viewer()
    rss_base = _rss_now()
    out: dict = {"shape": list(shape), "scan_mb": round(scan_bytes / 2**20, 1),
                 "rss_baseline_mb": round(rss_base / 2**20, 1)}

    # 1. File ▸ Open of the case folder
    t_open = time.perf_counter()
    out["open"] = step(heart, lambda: viewer.open(str(case), plugin="napari-softseg"),
                       lambda: len(viewer.layers) >= 2 + N_RATERS and not _reads_pending(), 600.0, draws)
    run_until(lambda: fully_loaded(viewer), 600.0)
    out["open"]["until_loaded_s"] = round(time.perf_counter() - t_open, 3)
    out["open"]["longest_stall_until_loaded_s"] = round(heart.longest_gap(t_open, time.perf_counter()), 3)
    out["open"]["layers"] = [layer.name for layer in viewer.layers]
    out["rss_after_open_scans"] = round(_rss_now() / scan_bytes, 2)
    out["peak_rss_after_open_scans"] = _peak_scans(scan_bytes)

    if open_only:
        out["peak_rss_scans"] = _peak_scans(scan_bytes)
        out["longest_stall_s"] = out["open"]["longest_stall_until_loaded_s"]
        heart.timer.stop()
        viewer.close()
        return out

    # 2. Soft segmentation ▸ Predict (bundled model)
    holder: dict = {}
    out["open_segmentation_dock"] = step(
        heart, lambda: holder.update(seg=viewer.window.add_plugin_dock_widget("napari-softseg", "Soft segmentation")[1]),
        lambda: "seg" in holder, 120.0)
    seg = holder["seg"]
    started = []
    out["predict"] = step(heart, lambda: started.append(seg.predict()),
                          lambda: bool(started) and seg.task is None and "soft prediction" in viewer.layers,
                          3600.0, draws)
    out["predict"]["report"] = seg.status.text() if hasattr(seg, "status") else None
    out["rss_after_predict_scans"] = round(_rss_now() / scan_bytes, 2)
    out["peak_rss_after_predict_scans"] = _peak_scans(scan_bytes)

    # 3. Threshold explorer: its PR curve
    out["pr_curve"] = step(
        heart, lambda: holder.update(explorer=viewer.window.add_plugin_dock_widget("napari-softseg",
                                                                                   "Threshold explorer")[1]),
        lambda: "explorer" in holder and holder["explorer"].ready, 600.0, draws)
    explorer = holder["explorer"]
    out["pr_curve"]["soft_map"] = explorer.inputs_layer.name if explorer.inputs_layer is not None else None
    out["rss_after_pr_curve_scans"] = round(_rss_now() / scan_bytes, 2)
    out["peak_rss_after_pr_curve_scans"] = _peak_scans(scan_bytes)

    # 4. slider in 2D, slices scrolled with the outline
    ks = _walk(moves)
    bare, slider = _paired(app, draws, lambda k: scene.update(), lambda k: explorer.slider.setValue(k), ks)
    out["slider_2d"] = _ratio(bare, slider)
    t_scroll = time.perf_counter()
    out["scroll"] = _scroll(app, viewer, explorer, draws, slices)
    run_until(lambda: False, 1.5)        # debounced work after the last step (e.g. the docks' edit checks)
    out["scroll"]["longest_stall_s"] = round(heart.longest_gap(t_scroll, time.perf_counter()), 3)

    # 5. the switch to 3D, slider in 3D
    out["switch_3d"] = step(heart, lambda: setattr(viewer.dims, "ndisplay", 3),
                            lambda: explorer.overlay.shows_mesh and not explorer.job.busy, 600.0, draws)
    # in blocks, not in turns: a mesh rebuilt once the slider rests must not land in a bare repaint
    bare = _timed(app, draws, lambda k: scene.update(), ks[:moves_3d])
    slider = _timed(app, draws, lambda k: explorer.slider.setValue(k), ks[:moves_3d])
    out["slider_3d"] = _ratio(bare, slider)
    def back_in_2d() -> bool:   # the 2D look is all back (restored one layer per turn, the outline last)
        return explorer.contour_layer is not None and explorer.contour_layer.visible

    out["switch_2d"] = step(heart, lambda: setattr(viewer.dims, "ndisplay", 2), back_in_2d, 600.0, draws)
    # a second round: the 3D helpers (mesh, the scan's stand-in) were kept, hidden
    out["switch_3d_again"] = step(heart, lambda: setattr(viewer.dims, "ndisplay", 3),
                                  lambda: explorer.overlay.shows_mesh and not explorer.job.busy, 600.0, draws)
    out["switch_2d_again"] = step(heart, lambda: setattr(viewer.dims, "ndisplay", 2), back_in_2d, 600.0, draws)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["peak_rss_scans"] = round(peak / scan_bytes, 2)
    out["peak_rss_above_baseline_scans"] = round((peak - rss_base) / scan_bytes, 2)
    out["longest_stall_s"] = max(out[k]["longest_stall_s"] for k in ("open", "predict", "pr_curve", "scroll", "switch_3d"))
    out["longest_stall_s"] = max(out["longest_stall_s"], out["open"]["longest_stall_until_loaded_s"])
    heart.timer.stop()
    viewer.close()
    return out


def measure_bare(case: Path, moves_3d: int) -> dict:
    """The baseline: napari with the scan alone (no docks, no soft map), and what napari and torch cost by
    themselves in the steps we take (the floor under our stalls on this machine):

    * ``open``: File ▸ Open of the image alone (our reader, in the background): napari adding one image;
    * ``add_labels``: napari's own ``add_labels`` of one rater mask (read beforehand), as the open adds five;
    * ``import_torch``: ``import torch`` in a worker thread, as the Soft segmentation dock and Predict do:
      torch's C extension initialises holding the GIL, so the GUI thread waits for it whatever thread imports;
    * ``switch_3d`` / ``switch_2d``: under software OpenGL napari's own 3D switch of a big scan blocks the GUI
      thread (the volume texture is uploaded and ray-cast in the first 3D frame, before any plugin's handler).
    """
    import threading

    import nibabel as nib

    viewer, app, heart, scene, draws = shown_viewer()
    out = {}
    out["open"] = step(heart, lambda: viewer.open(str(case / "image.nii.gz"), plugin="napari-softseg"),
                       lambda: len(viewer.layers) >= 1 and not _reads_pending() and fully_loaded(viewer), 600.0, draws)
    run_until(lambda: False, 1.0)
    out["layers"] = [layer.name for layer in viewer.layers]
    mask = np.asarray(nib.load(str(case / "task01_seg01.nii.gz")).dataobj).astype(np.uint8)
    out["add_labels"] = step(heart, lambda: viewer.add_labels(mask, name="rater", opacity=0.0), lambda: True,
                             60.0, draws)
    viewer.layers.remove("rater")
    imported = threading.Event()
    if "torch" in sys.modules:
        raise RuntimeError("torch is imported already: the import_torch floor needs a fresh process")
    out["import_torch"] = step(
        heart, lambda: threading.Thread(target=lambda: (__import__("torch"), imported.set()), daemon=True).start(),
        imported.is_set, 120.0)
    run_until(lambda: False, 1.0)
    bare = _timed(app, draws, lambda k: scene.update(), range(10))
    out["repaint_2d"] = bare
    out["switch_3d"] = step(heart, lambda: setattr(viewer.dims, "ndisplay", 3), lambda: True, 600.0, draws)
    out["repaint_3d"] = _timed(app, draws, lambda k: scene.update(), range(moves_3d))
    out["switch_2d"] = step(heart, lambda: setattr(viewer.dims, "ndisplay", 2), lambda: True, 600.0, draws)
    heart.timer.stop()
    viewer.close()
    return out


def shader_cache_state(env=None) -> dict:
    """Mesa's on-disk shader cache as the children will find it: its folder, files and size."""
    env = os.environ if env is None else env
    folder = env.get("MESA_SHADER_CACHE_DIR") or str(
        Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mesa_shader_cache")
    files = [f for f in Path(folder).rglob("*") if f.is_file()] if Path(folder).is_dir() else []
    return {"dir": folder, "files": len(files), "mb": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "disabled": env.get("MESA_SHADER_CACHE_DISABLE", "") in ("1", "true")}


def _peak_scans(scan_bytes: int) -> float:
    """The process's peak RSS so far, in scans (it only grows: the phase that raised it shows)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scan_bytes, 2)


def _rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _walk(moves: int) -> np.ndarray:
    """The random walk of slider positions (in thousandths) that ``bench_slider.py`` uses."""
    rng = np.random.default_rng(1)
    steps = rng.integers(1, 21, size=moves) * rng.choice([-1, 1], size=moves)
    ks = np.clip(500 + np.cumsum(steps), 50, 950)
    ks[np.diff(np.concatenate([[500], ks])) == 0] += 1
    return ks


def _one(app, draws: list[int], action, k) -> tuple[float, bool]:
    """Seconds from ``action(k)`` to its events processed, and whether no frame was drawn."""
    run_until(lambda: False, 0.02)
    before = draws[0]
    t0 = time.perf_counter()
    action(int(k))
    app.processEvents()
    return time.perf_counter() - t0, draws[0] == before


def _summary(runs: list[tuple[float, bool]]) -> dict:
    """p50/p95 (ms) of :func:`_one`'s results, and how many drew no frame."""
    p50, p95 = percentiles([t for t, _ in runs])
    return {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "n": len(runs),
            "missing_draws": int(sum(missed for _, missed in runs))}


def _timed(app, draws: list[int], action, ks) -> dict:
    return _summary([_one(app, draws, action, k) for k in ks])


def _paired(app, draws: list[int], bare_action, slider_action, ks) -> tuple[dict, dict]:
    """Bare repaints and slider moves taken in turns (repaint, move, repaint, move, …), so a change in the
    machine's speed during the run weighs on both alike (two blocks one after the other gave ratios from
    0.99 to 1.36 for the same code on a machine whose repaint time drifted 2x within the hour)."""
    bare, slider = [], []
    for k in ks:
        bare.append(_one(app, draws, bare_action, k))
        slider.append(_one(app, draws, slider_action, k))
    return {**_summary(bare), "interleaved": True}, {**_summary(slider), "interleaved": True}


def _ratio(bare: dict, slider: dict) -> dict:
    return {"bare_repaint": bare, "slider": slider, "p95_ratio": round(slider["p95_ms"] / bare["p95_ms"], 3)}


def _scroll(app, viewer, explorer, draws: list[int], n: int) -> dict:
    """Step through ``n`` axial slices; after each, the outline's plane must be the scan's plane."""
    axis = 0
    extent = viewer.dims.nsteps[axis]
    start = viewer.dims.current_step[axis]
    in_step, times = 0, []
    for i in range(n):
        z = (start + i + 1) % extent
        run_until(lambda: False, 0.02)
        t0 = time.perf_counter()
        viewer.dims.set_current_step(axis, z)
        app.processEvents()
        times.append(time.perf_counter() - t0)
        in_step += _same_plane(viewer, explorer)
    p50, p95 = percentiles(times)
    return {"slices": n, "outline_in_step": in_step, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2)}


def _same_plane(viewer, explorer) -> bool:
    """Whether the outline layer shows the slice the soft map shows (its grid is finer in-plane only)."""
    contour, soft = explorer.contour_layer, explorer.inputs_layer
    if contour is None or soft is None:
        return False
    z_contour = unwrapped(contour)._data_slice.point[0]
    z_soft = unwrapped(soft)._data_slice.point[0]
    return round(float(z_contour)) == round(float(z_soft))


# --------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--sizes", default="head,ct", help="comma-separated: head (197x233x189), ct (512x512x300)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the built cases (kept; reused)")
    parser.add_argument("--moves", type=int, default=40, help="slider moves in 2D (default 40)")
    parser.add_argument("--moves-3d", type=int, default=6, help="slider moves in 3D (default 6: software GL)")
    parser.add_argument("--slices", type=int, default=20, help="slices scrolled (default 20)")
    parser.add_argument("--sync-open", action="store_true",
                        help="read synchronously, as before background opening (for a before/after comparison)")
    parser.add_argument("--open-only", action="store_true", help="measure File ▸ Open only (quick)")
    parser.add_argument("--shader-cache", choices=("as-is", "cold"), default="as-is",
                        help="Mesa's shader cache for the measured runs: as found (default) or empty (a first "
                             "run on a fresh machine)")
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:                         # a child process: build, nibabel, or measure one size
        what, arg = args.child
        if what == "build":
            name, folder = arg.split(":", 1)
            print(json.dumps({"case": str(build_case(name, Path(folder)))}))
        elif what == "nibabel":
            print(json.dumps({"seconds": nibabel_load_s(Path(arg))}))
        elif what == "bare":
            print(json.dumps(measure_bare(Path(arg), args.moves_3d)))
        else:
            if args.sync_open:
                from napari_softseg._napari import background_open

                background_open.BACKGROUND_MIN_BYTES = 2**62
            name, folder = arg.split(":", 1)
            print(json.dumps(measure(name, Path(folder), args.moves, args.moves_3d, args.slices, args.open_only)))
        return 0

    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    common = ["--moves", str(args.moves), "--moves-3d", str(args.moves_3d), "--slices", str(args.slices)]
    common += ["--sync-open"] if args.sync_open else []
    common += ["--open-only"] if args.open_only else []

    env = os.environ.copy()

    def child(what: str, arg: str) -> dict:
        run = subprocess.run([sys.executable, __file__, *common, "--child", what, arg],
                             capture_output=True, text=True, env=env)
        if run.returncode:
            sys.stderr.write(run.stderr)
            raise SystemExit(f"bench_scale: the {what} step for {arg} failed (exit {run.returncode})")
        return json.loads(run.stdout.strip().splitlines()[-1])

    import napari

    results: dict = {
        "python": platform.python_version(), "napari": napari.__version__, "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "stall_bar_s": STALL_BAR_S,
        "sync_open": args.sync_open, "open_only": args.open_only, "shader_cache_mode": args.shader_cache,
        "sizes": {},
    }
    for name in sizes:
        t0 = time.perf_counter()
        case = Path(child("build", f"{name}:{workdir}")["case"])
        print(f"{name}: case ready in {time.perf_counter() - t0:.1f} s ({case})", flush=True)
        nib_s = child("nibabel", str(case / "image.nii.gz"))["seconds"]
        def fresh_cache(tag: str, size: str = name) -> None:    # --shader-cache cold: each run an empty cache
            if args.shader_cache == "cold":
                env["MESA_SHADER_CACHE_DIR"] = str(workdir / f"mesa-cache-{size}-{tag}-{os.getpid()}-{time.time_ns()}")

        fresh_cache("measure")
        cache = shader_cache_state(env)
        load_before = os.getloadavg()[0]
        entry = child("measure", f"{name}:{case}")
        entry["shader_cache"] = cache
        if not args.open_only:
            fresh_cache("bare")
            entry["bare_napari"] = child("bare", str(case))
        entry["nibabel_load_s"] = round(nib_s, 3)
        entry["open_vs_nibabel"] = round(entry["open"]["seconds"] / nib_s, 2)
        entry["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        entry["meets_stall_bar"] = entry["longest_stall_s"] <= STALL_BAR_S
        results["sizes"][name] = entry
        if args.open_only:
            print(f"{name} {tuple(entry['shape'])}: open {entry['open']['seconds']:.2f} s (nibabel {nib_s:.2f} s), "
                  f"longest stall {entry['longest_stall_s']:.2f} s", flush=True)
            continue
        print(f"{name} {tuple(entry['shape'])}: open {entry['open']['seconds']:.2f} s "
              f"(nibabel {nib_s:.2f} s); stalls open {entry['open']['longest_stall_until_loaded_s']:.2f} / "
              f"dock {entry['open_segmentation_dock']['longest_stall_s']:.2f} / "
              f"predict {entry['predict']['longest_stall_s']:.2f} / PR curve {entry['pr_curve']['longest_stall_s']:.2f} "
              f"/ 3D {entry['switch_3d']['longest_stall_s']:.2f} s (again {entry['switch_3d_again']['longest_stall_s']:.2f}; "
              f"napari alone {entry['bare_napari']['switch_3d']['longest_stall_s']:.2f}) / 2D "
              f"{entry['switch_2d']['longest_stall_s']:.2f} s (napari alone: open "
              f"{entry['bare_napari']['open']['longest_stall_s']:.2f}, a Labels layer "
              f"{entry['bare_napari']['add_labels']['longest_stall_s']:.2f}, import torch "
              f"{entry['bare_napari']['import_torch']['longest_stall_s']:.2f}, 2D "
              f"{entry['bare_napari']['switch_2d']['longest_stall_s']:.2f}) / 2D again "
              f"{entry['switch_2d_again']['longest_stall_s']:.2f} s; slider p95 ratio 2D "
              f"{entry['slider_2d']['p95_ratio']:.2f}, 3D {entry['slider_3d']['p95_ratio']:.2f}; "
              f"peak RSS {entry['peak_rss_scans']:.2f} scans; shader cache before: {cache['files']} files",
              flush=True)
        steps = ("open", "open_segmentation_dock", "predict", "pr_curve", "switch_3d", "switch_2d")
        print(f"{name}: longest full garbage collection in the step (s): "
              + " / ".join(f"{s_} {entry[s_].get('longest_full_gc_s', 0):.2f}" for s_ in steps), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
