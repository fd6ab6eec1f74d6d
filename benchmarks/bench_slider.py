"""Threshold-slider speed in a shown napari viewer (issue 4 §4).

Run headless with::

    xvfb-run -a python benchmarks/bench_slider.py [--size 256] [--moves 100]

On a ``size³`` soft map (default 256³ = 16.7 M voxels) with three raters, in a *shown* viewer with the
threshold explorer docked, it measures per move (p50 / p95 over ``--moves`` moves):

1. **bare repaint** — nothing changed: request a canvas update and process events (the floor);
2. **slider update (outline)** — the default encoding (issue 8): set the explorer's slider (statistics,
   the thin p ≥ t outline of the displayed slice on a 4× finer grid, the canvas legend line and the
   PR-curve marker with its t label) over the translucent heat map with its colour bar, then process
   events, which repaints the canvas, the dock labels and the plot marker;
3. **slider update (outline + light fill)**, **(filled)** — the other 2D encodings;
3c. **3D: bare repaint** and **3D: slider update (mesh)** — the 3D view: p ≥ t as the shaded mesh of
   ``p = t``, kept while the slider moves (the legend names its level; a new mesh is built once the slider
   rests, which these moves never let it do), the soft map and raters hidden, the scan faint;
   (for the record: the same call without the paint, "update call, no paint");
3b. **slider update during a curve build** — the same (filled) while a PR curve is being built in the
   background (a reference change, or a painted rater): a new build starts whenever the last one ended,
   so every move competes with one; the plot's full redraws when a build starts and ends fall into
   some of these moves;
4. **compute only** — statistics from the PR curve + the overlay's data (contrast limits for the filled
   overlay; the outline of the displayed slice for the contour), no napari, no drawing;
5. **naive update** — threshold the whole volume and count TP/FP/FN/TN with numpy (no drawing);
6. **naive update + display** — the naive mask put into a Labels layer, then process events.

Each timed step ends with ``QApplication.processEvents()``; a draw counter on the vispy canvas checks
that every timed repaint really drew a frame. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def make_case(size: int, n_raters: int = 3, seed: int = 0):
    """A smooth, calibrated-looking soft map and raters whose boundaries disagree (float32, uint8)."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    radius = np.sqrt((x / 0.55) ** 2 + (y / 0.45) ** 2 + (z / 0.5) ** 2)
    soft = 1.0 / (1.0 + np.exp((radius - 1.0) * 12.0))
    soft += rng.normal(0.0, 0.04, soft.shape).astype(np.float32)
    np.clip(soft, 0.0, 1.0, out=soft)
    soft = soft.astype(np.float32)
    masks = np.stack([(radius < 1.0 + 0.06 * (i - 1)) for i in range(n_raters)]).astype(np.uint8)
    return soft, masks


def percentiles(values_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(values_s) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic soft map (default 256)")
    parser.add_argument("--moves", type=int, default=100, help="slider moves per measurement (default 100)")
    parser.add_argument("--moves-3d", type=int, default=20,
                        help="moves in the 3D view (default 20: a software-GL 3D frame takes seconds)")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_softseg._napari import layers as L
    from napari_softseg._napari.overlay import outline_factor
    from napari_softseg.analysis.display import ContourView, overlay_contrast_limits
    from napari_softseg.analysis.operating_point import Reference

    size, moves = args.size, args.moves
    t_start = time.perf_counter()
    soft, masks = make_case(size)
    viewer = napari.Viewer(show=True)
    scan = (soft * 800 + np.random.default_rng(2).normal(0, 60, soft.shape)).astype(np.float32)
    viewer.add_image(scan, name="scan", colormap="gray", metadata={"softseg": {"kind": "image"}})
    viewer.add_image(soft, name="prediction", **L.soft_map_style(), metadata={"softseg": {"kind": "prediction"}})
    raters = [viewer.add_labels(m, name=f"rater {i + 1}", opacity=0.0) for i, m in enumerate(masks)]
    _, explorer = viewer.window.add_plugin_dock_widget("napari-softseg", "Threshold explorer")
    app = QApplication.instance()
    while not explorer.ready:          # the PR curve is built in a worker thread
        app.processEvents()
        time.sleep(0.01)
    setup_s = time.perf_counter() - t_start
    session = explorer.session
    ref = session.reference_mask()

    scene = viewer.window._qt_viewer.canvas._scene_canvas
    draws = [0]
    scene.events.draw.connect(lambda event: draws.__setitem__(0, draws[0] + 1))

    def settle(n: int = 5) -> None:
        for _ in range(n):
            app.processEvents()
            time.sleep(0.02)

    settle(20)
    rng = np.random.default_rng(1)
    # grid steps a hand would make: a random walk of 1–20 thousandths, kept inside 0.05 … 0.95
    steps = rng.integers(1, 21, size=moves) * rng.choice([-1, 1], size=moves)
    ks = np.clip(500 + np.cumsum(steps), 50, 950)
    ks[np.diff(np.concatenate([[500], ks])) == 0] += 1

    def timed(action, expect_draw: bool = True, ks=ks) -> tuple[list[float], int]:
        times, missing = [], 0
        for k in ks:
            settle(1)
            before = draws[0]
            t0 = time.perf_counter()
            action(int(k))
            app.processEvents()
            times.append(time.perf_counter() - t0)
            missing += expect_draw and draws[0] == before
        return times, missing

    results: dict[str, dict] = {}

    # 1. bare repaint
    times, missing = timed(lambda k: scene.update())
    results["bare repaint"] = {"times": times, "missing_draws": missing}

    # 2./3. slider update in the 2D encodings
    for mode in ("outline", "outline + light fill", "filled"):
        explorer.set_overlay_mode(mode)
        explorer.set_threshold(0.5)
        settle(10)
        times, missing = timed(lambda k: explorer.slider.setValue(k))
        results[f"slider update ({mode})"] = {"times": times, "missing_draws": missing}
        assert abs(explorer.threshold - ks[-1] / 1000) < 1e-9
    # 3c. 3D: the shaded mesh, kept while the slider moves
    viewer.dims.ndisplay = 3
    deadline = time.perf_counter() + 600.0
    while not (explorer.overlay.shows_mesh and not explorer.surfaces.busy) and time.perf_counter() < deadline:
        settle(1)
    if not explorer.overlay.shows_mesh:
        raise SystemExit("bench_slider: the 3D mesh was not built within 600 s")
    settle(20)
    ks_3d = ks[: args.moves_3d]
    times, missing = timed(lambda k: scene.update(), ks=ks_3d)
    results["3D: bare repaint"] = {"times": times, "missing_draws": missing}
    # the mesh stays and the legend line follows once the slider pauses: a move need not draw a frame
    times, missing = timed(lambda k: explorer.slider.setValue(k), expect_draw=False, ks=ks_3d)
    results["3D: slider update (mesh)"] = {"times": times, "missing_draws": missing}
    assert explorer.overlay.threshold == ks_3d[-1] / 1000
    viewer.dims.ndisplay = 2
    settle(20)
    explorer.set_overlay_mode("outline")
    settle(5)

    # 3b. slider moves while a PR curve is built in a worker thread
    first_reference = explorer.reference
    refs = [Reference("rater", rater=i) for i in range(len(raters))]
    builds, busy_moves, times, missing = 0, 0, [], 0
    for k in ks:
        settle(1)
        if explorer.ready:
            other = refs[builds % len(refs)]
            explorer.session._curves.pop(other, None)      # benchmark only: force a fresh build
            explorer.set_reference(other)
            builds += 1
        busy_moves += not explorer.ready
        before = draws[0]
        t0 = time.perf_counter()
        explorer.slider.setValue(int(k))
        app.processEvents()
        times.append(time.perf_counter() - t0)
        missing += draws[0] == before
    results["slider update, curve build"] = {"times": times, "missing_draws": missing}
    while not explorer.ready:
        settle(1)
    explorer.set_reference(first_reference)
    settle(5)

    # for the record: the explorer's Python side of a move (numbers, layer update, labels, marker
    # blit into the plot's buffer) without the paint that follows
    times = []
    for k in ks:
        settle(1)
        t0 = time.perf_counter()
        explorer.slider.setValue(int(k))
        times.append(time.perf_counter() - t0)
    app.processEvents()
    results["update call, no paint"] = {"times": times, "missing_draws": 0}

    # 4. compute only
    plane = tuple(viewer.dims.current_step[:-2]) + (slice(None), slice(None))
    view = ContourView(soft, 0.5, upsample=outline_factor(soft.shape))

    def compute_filled(k):
        t = k / 1000
        session.at(t)
        overlay_contrast_limits(t)

    def compute_contour(k):
        session.at(k / 1000)
        view.threshold = k / 1000
        view[plane]

    for name, fn in (("compute only (filled)", compute_filled), ("compute only (outline)", compute_contour)):
        times = []
        for k in ks:
            t0 = time.perf_counter()
            fn(int(k))
            times.append(time.perf_counter() - t0)
        results[name] = {"times": times, "missing_draws": 0}

    # 5. naive: threshold the whole volume, recount with numpy
    def naive(k):
        mask = soft >= k / 1000
        tp = np.count_nonzero(mask & ref)
        n_pos = np.count_nonzero(mask)
        fp = n_pos - tp
        fn = np.count_nonzero(ref) - tp
        tn = mask.size - n_pos - fn
        return tp, fp, fn, tn, mask

    naive_times = []
    for k in ks:
        t0 = time.perf_counter()
        naive(int(k))
        naive_times.append(time.perf_counter() - t0)
    results["naive update (compute)"] = {"times": naive_times, "missing_draws": 0}
    # sanity: the explorer's numbers are the naive ones
    tp, fp, fn, tn, _ = naive(int(ks[-1]))
    op = session.at(ks[-1] / 1000)
    assert (op.tp, op.fp, op.fn, op.tn) == (tp, fp, fn, tn), "explorer statistics differ from numpy"

    # 6. naive + display: replace a Labels layer's data
    explorer.set_overlay_mode("none")
    naive_layer = viewer.add_labels(np.zeros(soft.shape, np.uint8), name="naive mask", opacity=0.5)
    viewer.layers.selection.active = viewer.layers["prediction"]
    settle(10)
    naive_display = ks[: max(10, moves // 4)]

    def naive_show(k):
        naive_layer.data = naive(k)[4].view(np.uint8)

    times, missing = [], 0
    for k in naive_display:
        settle(1)
        before = draws[0]
        t0 = time.perf_counter()
        naive_show(int(k))
        app.processEvents()
        times.append(time.perf_counter() - t0)
        missing += draws[0] == before
    results["naive update + display"] = {"times": times, "missing_draws": missing}

    rows = {name: percentiles(r["times"]) for name, r in results.items()}
    print(f"napari-softseg threshold slider benchmark: {size}^3 soft map ({soft.size / 1e6:.1f} M voxels), "
          f"{len(raters)} raters, {moves} moves; setup {setup_s:.1f} s")
    print(f"python {platform.python_version()}, napari {napari.__version__}, {os.cpu_count()} CPUs, "
          f"QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM', '(default)')}, DISPLAY={os.environ.get('DISPLAY')}")
    print(f"canvas {scene.native.width()}x{scene.native.height()} px")
    print(f"{'measurement':<28}{'p50 ms':>10}{'p95 ms':>10}{'n':>6}{'no draw':>9}")
    for name, (p50, p95) in rows.items():
        r = results[name]
        print(f"{name:<28}{p50:>10.3f}{p95:>10.3f}{len(r['times']):>6}{r['missing_draws']:>9}")

    bare = rows["bare repaint"][1]
    outline = rows["slider update (outline)"][1]
    light = rows["slider update (outline + light fill)"][1]
    filled = rows["slider update (filled)"][1]
    bare_3d = rows["3D: bare repaint"][1]
    surface = rows["3D: slider update (mesh)"][1]
    compute = rows["compute only (filled)"][1]
    naive_p95 = rows["naive update (compute)"][1]
    summary = {
        "size": size,
        "moves": moves,
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "slider_update_p95_ms": round(outline, 3),
        "slider_update_light_fill_p95_ms": round(light, 3),
        "slider_update_filled_p95_ms": round(filled, 3),
        "bare_repaint_p95_ms": round(bare, 3),
        "bare_repaint_3d_p95_ms": round(bare_3d, 3),
        "slider_update_3d_p95_ms": round(surface, 3),
        "compute_only_p95_ms": round(compute, 4),
        "compute_only_outline_p95_ms": round(rows["compute only (outline)"][1], 4),
        "update_call_no_paint_p95_ms": round(rows["update call, no paint"][1], 3),
        "naive_update_p95_ms": round(naive_p95, 3),
        "naive_update_display_p95_ms": round(rows["naive update + display"][1], 3),
        "slider_vs_bare_ratio": round(outline / bare, 3),
        "slider_light_fill_vs_bare_ratio": round(light / bare, 3),
        "slider_filled_vs_bare_ratio": round(filled / bare, 3),
        "slider_3d_vs_bare_3d_ratio": round(surface / bare_3d, 3),
        "slider_update_during_curve_build_p95_ms": round(rows["slider update, curve build"][1], 3),
        "curve_builds_during_moves": builds,
        "moves_during_a_build": busy_moves,
        "naive_vs_compute_ratio": round(naive_p95 / compute, 1),
        "missing_draws": sum(r["missing_draws"] for r in results.values()),
        "meets_bar": bool(outline <= 2 * bare and surface <= 2 * bare_3d and compute < 1.0),
    }
    print(
        f"slider update (outline) p95 = {summary['slider_vs_bare_ratio']:.2f} x bare repaint p95 (bar: <= 2); "
        f"3D (mesh kept while dragging) p95 = {summary['slider_3d_vs_bare_3d_ratio']:.2f} x bare 3D repaint; "
        f"compute only p95 = {compute:.4f} ms (bar: < 1 ms); naive compute is {summary['naive_vs_compute_ratio']:.0f} x slower"
    )
    viewer.close()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
