"""Heavy work of big volumes stays off the GUI thread (issue 15 §2): reading a soft map's layers, detecting
the compute devices (torch), volumes drawn in 3D, rater masks packed in the file's memory order.

The behaviour is asserted (the work runs in another thread, the result arrives, the 3D view draws a
strided copy); the timings are ``benchmarks/bench_scale.py``'s job.
"""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
from _analysis_case import counts, open_case, open_dock, wait_ready

from napari_softseg._napari import layer_roles, layout_3d
from napari_softseg.analysis.operating_point import Reference


@pytest.fixture
def busy_worker(qtbot):
    """One of Qt's pool threads kept busy (as Predict or a curve keeps it) until the test sets the event."""
    from qtpy.QtCore import QRunnable, QThreadPool

    release = threading.Event()

    class Busy(QRunnable):
        def run(self):
            release.wait(30)

    QThreadPool.globalInstance().start(Busy())
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() > 0)
    yield release
    release.set()


def test_a_big_soft_map_is_read_in_a_worker_and_the_numbers_arrive(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr(layer_roles, "BACKGROUND_READ_VOXELS", 1)      # every soft map counts as big
    threads = []
    real_read = layer_roles.read_inputs
    monkeypatch.setattr(layer_roles, "read_inputs",
                        lambda *a, **k: threads.append(threading.current_thread()) or real_read(*a, **k))
    viewer = make_napari_viewer()
    soft_layer, _, soft, masks = open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    assert not widget.ready                       # reading: the dock is up, the numbers say they are coming
    assert not widget.job.busy                    # ... from the turn after napari laid the dock out and drew it
    wait_ready(qtbot, widget)
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert widget.reference == Reference("consensus", k=2)
    # the overlay came with the read, its colour bar on the turn after (ready waits for both)
    assert widget.contour_layer is not None and soft_layer.colorbar.visible
    widget.set_threshold(0.5)
    consensus = (masks > 0).sum(0) >= 2
    tp, fp, fn, tn = counts(soft >= 0.5, consensus)
    op = widget.operating_point()
    assert (op.tp, op.fp, op.fn, op.tn) == (tp, fp, fn, tn)
    # an in-place edit + refresh is read in the worker too, and picked up
    n_reads = len(threads)
    soft_layer.data[:] = 0.9
    widget.refresh_button.click()
    wait_ready(qtbot, widget)
    assert len(threads) > n_reads and widget.operating_point().n_positive == soft.size


def test_a_failed_background_read_clears_the_numbers_and_says_why(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr(layer_roles, "BACKGROUND_READ_VOXELS", 1)
    viewer = make_napari_viewer()
    soft_layer, *_ = open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    soft_layer.data[0, 0, 0] = 7.0                # no longer a soft map
    widget.refresh_button.click()
    wait_ready(qtbot, widget)
    assert widget.session is None and widget.operating_point() is None


def test_devices_are_detected_in_a_worker_and_predict_need_not_wait(make_napari_viewer, qtbot, monkeypatch):
    from napari_softseg._napari.layers import add_layer_tuples
    from napari_softseg._napari.sample_data import synthetic_case
    from napari_softseg._qt import device_detection
    from napari_softseg.model.device import resolve_device

    threads = []
    real_detect = device_detection.available_devices
    monkeypatch.setattr(device_detection, "available_devices",
                        lambda: threads.append(threading.current_thread()) or real_detect())
    # as in a fresh viewer, where torch is not imported yet (it stays in sys.modules: importing it a second
    # time in one process breaks every later test)
    monkeypatch.setattr(device_detection, "torch_imported", lambda: False)
    viewer = make_napari_viewer()
    add_layer_tuples(viewer, synthetic_case())
    widget = open_dock(viewer, "Soft segmentation")
    assert widget.device_options.device.choices[:2] == ("auto", "cpu")     # offered before the answer
    # torch's import holds the GIL: it starts on a later turn, not while napari lays the dock out and draws it
    assert not widget.devices.job.busy and not threads
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=60_000)
    assert threads and threads[0] is not threading.main_thread()
    choice = resolve_device("auto")
    assert choice.device in widget.device_label.text() and choice.reason in widget.device_label.text()
    assert widget.device_options.device.value == "auto"


def test_big_volumes_are_drawn_in_3d_from_a_strided_copy(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    soft_layer, _, soft, _ = open_case(viewer)
    scan = viewer.add_image(np.random.default_rng(0).random(soft.shape).astype(np.float32) * 100, name="scan",
                            affine=soft_layer.affine, metadata={"softseg": {"kind": "image"}})
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    monkeypatch.setattr(layout_3d, "MAX_3D_VOXELS", soft.size // 20)    # this small case counts as big
    stride = layout_3d.display_stride(soft.shape)
    assert stride == 3
    viewer.dims.ndisplay = 3
    assert not scan.visible and not soft_layer.visible    # hidden at once; the stand-ins follow, one a turn
    qtbot.waitUntil(lambda: "scan (3D context)" in viewer.layers, timeout=5000)
    context = viewer.layers["scan (3D context)"]
    assert not scan.visible and context.visible and context.rendering == "mip" and context.opacity <= 0.25
    assert layer_roles.is_helper(context) and context.data.shape == soft[::3, ::3, ::3].shape
    np.testing.assert_allclose(context.scale, np.asarray(scan.scale) * 3)
    # the same world place: voxel (3, 3, 3) of the copy is voxel (9, 9, 9) of the scan
    np.testing.assert_allclose(context.data_to_world((1, 1, 1)), scan.data_to_world((3, 3, 3)))
    # the mesh is of the full-resolution soft map (built in the worker)
    qtbot.waitUntil(lambda: widget.overlay.shows_mesh, timeout=20_000)
    assert widget.surface_layer is None  # no iso volume to ray-cast while the mesh is built
    viewer.dims.ndisplay = 2             # the stand-ins are kept, hidden (no removal: napari collects garbage)
    assert not context.visible and not widget.mesh_layer.visible     # at once; the scan on a later turn
    qtbot.waitUntil(lambda: scan.visible, timeout=5000)
    assert scan.opacity == 1.0
    viewer.dims.ndisplay = 3             # 3D again: the same stand-in, shown again
    qtbot.waitUntil(lambda: context.visible and not scan.visible, timeout=5000)
    assert [layer.name for layer in viewer.layers].count("scan (3D context)") == 1
    viewer.layers.remove(scan)           # its scan removed: so is the stand-in
    assert "scan (3D context)" not in viewer.layers


def test_pieces_of_split_work_let_timers_and_input_run_between_them(qapp):
    """Work split into pieces (the 3D helpers, the glyph warm-up) hands the event loop back between pieces.

    A zero-delay single shot is a posted event and runs in the same pass as the piece that posted it, before
    the timers that are due: a 10 ms heartbeat missed every other piece. ``next_turn`` lets them run."""
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_softseg._qt.qt_helpers import next_turn

    log: list[str] = []
    beat = QTimer()
    beat.setInterval(2)
    beat.timeout.connect(lambda: log.append("beat"))
    loop = QEventLoop()
    left = [8]

    def piece() -> None:
        log.append("piece")
        stop = threading.Event()
        stop.wait(0.015)                 # longer than the heartbeat's interval: it is due when the piece ends
        left[0] -= 1
        if left[0]:
            next_turn(piece)
        else:
            QTimer.singleShot(20, loop.quit)

    beat.start()
    next_turn(piece)
    loop.exec()
    beat.stop()
    pieces = [i for i, entry in enumerate(log) if entry == "piece"]
    assert len(pieces) == 8
    assert all("beat" in log[a + 1:b] for a, b in zip(pieces, pieces[1:])), log


def test_choosing_a_soft_map_runs_no_layer_batch_when_there_is_nothing_to_remove(make_napari_viewer, qtbot):
    """napari collects all garbage at the end of every layer-list batch (0.2 s with torch loaded): the overlay
    batches only a removal of several layers."""
    viewer = make_napari_viewer()
    open_case(viewer)
    batches = []
    viewer.layers.events.end_batch.connect(lambda event: batches.append(1))
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    assert widget.contour_layer is not None and batches == []
    widget.set_overlay_mode("outline + light fill")
    qtbot.waitUntil(lambda: widget.overlay.fill_layer is not None)
    contour, fill = widget.contour_layer, widget.overlay.fill_layer
    widget.overlay.remove()                          # two layers: one batch, both gone
    assert batches == [1]
    assert all(layer not in viewer.layers for layer in (contour, fill))
    widget.overlay.remove()                          # nothing left: no batch
    assert batches == [1]


def test_the_legend_glyphs_are_rendered_before_the_legend_needs_them(make_napari_viewer, qtbot):
    """napari renders a canvas glyph the first time it is drawn (~5 ms each): the explorer has the legend's
    rendered a few per event-loop turn when it opens, so the frame that shows the legend renders none."""
    from napari_softseg._napari.overlay_style import legend_characters
    from napari_softseg._qt.glyphs import canvas_characters, canvas_font, missing_glyphs, warm_glyphs

    viewer = make_napari_viewer()                   # not shown: nothing draws text but the warm-up
    font = canvas_font(viewer)
    needed = canvas_characters()
    assert set(legend_characters()) <= set(needed)
    assert font is not None and len(missing_glyphs(font, needed)) > 20
    open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    qtbot.waitUntil(lambda: not missing_glyphs(font, needed), timeout=20000)
    wait_ready(qtbot, widget)
    assert set(viewer.text_overlay.text) <= set(needed) | {" "}     # the legend shown is made of them
    # the Soft segmentation dock (usually opened first, long before the legend) starts it too
    other = make_napari_viewer()
    other_font = canvas_font(other)
    assert missing_glyphs(other_font, needed)
    open_dock(other, "Soft segmentation")
    qtbot.waitUntil(lambda: not missing_glyphs(other_font, needed), timeout=20000)
    assert viewer.text_overlay.visible
    assert warm_glyphs(viewer, needed) == 0         # nothing left to render: nothing scheduled


def test_glyphs_wait_while_a_worker_thread_runs(make_napari_viewer, qtbot, busy_worker):
    """Rendering a glyph is a Python loop: against a busy worker for the GIL it took 0.15 s, so the warm-up
    waits for the thread pool to be idle."""

    from napari_softseg._qt.glyphs import canvas_font, missing_glyphs, warm_glyphs

    viewer = make_napari_viewer()
    font = canvas_font(viewer)
    assert warm_glyphs(viewer, "xyz") == 3
    qtbot.wait(300)                                   # several retries while the worker runs: nothing rendered
    assert missing_glyphs(font, "xyz") == "xyz"
    busy_worker.set()
    qtbot.waitUntil(lambda: not missing_glyphs(font, "xyz"), timeout=10000)


def test_the_first_frame_of_the_legend_renders_no_glyph(make_napari_viewer, qtbot, monkeypatch):
    """A big soft map's legend and colour bar: every glyph the shown canvas needs for them was rendered ahead
    by the warm-up, including the ones vispy measures every text with (ÅÉÑŐjgpqy and the space), which
    cost a 0.24 s frame at the head."""
    import sys

    from napari_softseg._qt import glyphs

    monkeypatch.setattr(layer_roles, "BACKGROUND_READ_VOXELS", 1)      # the path of a big soft map
    viewer = make_napari_viewer(show=True)
    font = glyphs.canvas_font(viewer)
    assert set(glyphs.LAYOUT_CHARACTERS) <= set(glyphs.canvas_characters())
    on_demand = []                                  # rendered by a frame, not by the warm-up
    real_load = font._load_char

    def load(char):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename != glyphs.__file__:
            frame = frame.f_back
        if frame is None:
            on_demand.append(char)
        return real_load(char)

    font._load_char = load
    frames = []
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda event: frames.append(1))
    open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    qtbot.waitUntil(lambda: viewer.text_overlay.visible and widget.ready, timeout=20000)
    seen = len(frames)
    viewer.window._qt_viewer.canvas._scene_canvas.update()
    qtbot.waitUntil(lambda: len(frames) > seen, timeout=20000)        # the legend and colour bar drawn
    assert on_demand == []


def test_the_canvas_legend_waits_for_its_glyphs_while_a_worker_runs(make_napari_viewer, qtbot, monkeypatch,
                                                                    busy_worker):
    """Opened straight after Predict, the explorer's PR-curve worker keeps the glyph warm-up waiting: the
    legend is held back (``ready`` stays False) and shown once its glyphs are there, not rendered in its
    first frame."""

    from napari_softseg._qt import glyphs

    viewer = make_napari_viewer()
    font = glyphs.canvas_font(viewer)
    needed = glyphs.canvas_characters()
    polls = []
    real_missing = glyphs.missing_glyphs
    monkeypatch.setattr(glyphs, "missing_glyphs", lambda f, text: polls.append(1) or real_missing(f, text))
    open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    qtbot.waitUntil(lambda: not widget.job.busy, timeout=20000)
    start = len(polls)
    qtbot.waitUntil(lambda: len(polls) > start + 5)         # it kept looking while the worker ran ...
    assert real_missing(font, needed)                       # ... the glyphs are not there ...
    assert not viewer.text_overlay.visible and not widget.ready    # ... and the legend is held back
    busy_worker.set()
    qtbot.waitUntil(lambda: widget.ready, timeout=20000)
    assert viewer.text_overlay.visible and viewer.text_overlay.text.startswith("cyan outline")
    assert not real_missing(font, viewer.text_overlay.text)


def test_texts_waiting_for_the_same_glyphs_are_shown_on_turns_of_their_own(make_napari_viewer, qtbot):
    """The colour bar and the legend wait for the same warm-up: shown in one pass, their new canvas overlays
    made one 0.25 s frame. Input waiting in between runs between them."""
    from qtpy.QtCore import QTimer

    from napari_softseg._qt import glyphs

    viewer = make_napari_viewer()
    calls = []

    def colour_bar():
        calls.append("colour bar")
        QTimer.singleShot(0, lambda: calls.append("input"))

    assert glyphs.when_glyphs_ready(viewer, colour_bar, text="ZQ") is False
    assert glyphs.when_glyphs_ready(viewer, lambda: calls.append("legend"), text="ZQ") is False
    qtbot.waitUntil(lambda: len(calls) == 3, timeout=10000)
    assert calls == ["colour bar", "input", "legend"]


def test_text_held_back_for_glyphs_is_drawn_after_the_longest_wait(make_napari_viewer, qtbot, monkeypatch,
                                                                  busy_worker):
    """A long job (training) would hold the legend back for ever: after ``MAX_WAIT_S`` it is drawn anyway,
    and never for a dock that was closed meanwhile."""
    from qtpy.QtWidgets import QWidget

    from napari_softseg._qt import glyphs
    from napari_softseg._qt.workers import is_alive

    monkeypatch.setattr(glyphs, "MAX_WAIT_S", 0.05)
    viewer = make_napari_viewer()
    font = glyphs.canvas_font(viewer)
    calls, gone_calls = [], []
    assert glyphs.when_glyphs_ready(viewer, lambda: calls.append(1), text="qz") is False
    owner = QWidget()
    assert glyphs.when_glyphs_ready(viewer, lambda: gone_calls.append(1), text="qz", owner=owner) is False
    owner.deleteLater()
    qtbot.waitUntil(lambda: calls == [1], timeout=5000)
    assert glyphs.missing_glyphs(font, "qz")                   # drawn without them: after the longest wait
    qtbot.waitUntil(lambda: not is_alive(owner))
    busy_worker.set()
    qtbot.waitUntil(lambda: not glyphs.missing_glyphs(font, "qz"), timeout=10000)   # the warm-up finished ...
    assert gone_calls == []                                 # ... and nothing ran for the closed dock
    assert glyphs.when_glyphs_ready(viewer, lambda: calls.append(2), text="qz") is True and calls == [1, 2]


def test_a_plot_draws_on_a_turn_of_its_own_not_in_a_paint(qapp, qtbot):
    """matplotlib draws a pending figure inside the next paint, or on a zero-delay timer that Qt runs in
    the same pass as the event that asked for it (a new dock's first draw, ~50-80 ms, landed on the turn
    that built the dock). Our canvases draw on a later turn: timers already due run first, a paint only
    shows the last drawing."""
    from qtpy.QtCore import QTimer

    from napari_softseg._qt.plots import PRCurvePlot

    plot = PRCurvePlot(None)
    order = []
    real_draw = plot.draw
    plot.draw = lambda: (order.append("draw"), real_draw())
    plot.show()
    qtbot.waitUntil(lambda: order == ["draw"])               # the first draw: on its own turn
    plot.set_curve([0.0, 0.5, 1.0], [1.0, 0.8, 0.5])
    QTimer.singleShot(0, lambda: order.append("input"))     # something the user did meanwhile
    plot.repaint()                                          # a paint while the draw is pending
    assert order == ["draw"]
    qtbot.waitUntil(lambda: len(order) == 3)
    assert order == ["draw", "input", "draw"]
    plot.close()


@pytest.mark.parametrize("order", ["F", "C"])
def test_rater_masks_are_packed_in_the_files_memory_order(tmp_path, monkeypatch, order):
    from napari_softseg.io.dataset import discover, load_case

    shape = (20, 18, 7)
    rng = np.random.default_rng(0)
    case = tmp_path / "data" / "Training" / "case01"
    case.mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.Nifti1Image(rng.random(shape, dtype=np.float32), affine).to_filename(str(case / "image.nii.gz"))
    masks = (rng.random((3, *shape)) > 0.6).astype(np.uint8)
    for r, mask in enumerate(masks, 1):
        nib.Nifti1Image(mask, affine).to_filename(str(case / f"task01_seg0{r}.nii.gz"))
    if order == "C":                              # a loader that hands C-ordered arrays works the same
        import napari_softseg.io.dataset as dataset

        real_load = dataset.load_volume

        def c_load(*args, **kwargs):
            volume = real_load(*args, **kwargs)
            volume.data = np.ascontiguousarray(volume.data)
            return volume

        monkeypatch.setattr(dataset, "load_volume", c_load)
    loaded = load_case(discover(tmp_path / "data").cases[0], packed=True)
    bits = loaded.masks.bits
    assert bits.flags.f_contiguous if order == "F" else bits.flags.c_contiguous
    np.testing.assert_array_equal(np.asarray(loaded.masks), masks)
