"""Threshold explorer dock: slider, numbers, overlays, presets, keys, themes and bad input (headless)."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_case import (
    SPACING,
    Notifications,
    boundary,
    case_with_dock,
    counts,
    open_case,
    open_dock,
    real,
    wait_ready,
)

from napari_softseg._napari import overlay as overlay_module
from napari_softseg._napari.layer_roles import analysis_session, same_layer
from napari_softseg._qt.statistics_panel import format_volume
from napari_softseg.analysis.display import overlay_contrast_limits
from napari_softseg.analysis.operating_point import Reference
from napari_softseg.io.packed_masks import PackedMasks

DOCK = "Threshold explorer"


@pytest.fixture
def notes():
    n = Notifications()
    yield n
    n.close()


@pytest.fixture
def explorer(make_napari_viewer, qtbot):
    return case_with_dock(make_napari_viewer, qtbot, DOCK)


def wait_workers_done(qtbot):
    """Wait until no worker thread runs, then deliver what they posted (their queued signals)."""
    from qtpy.QtCore import QThreadPool
    from qtpy.QtWidgets import QApplication

    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=20000)
    QApplication.processEvents()


def fine(mask, f=4):
    """A 2D mask on the outline's finer grid (nearest neighbour, ``f`` × ``f`` per voxel)."""
    return np.repeat(np.repeat(mask, f, axis=0), f, axis=1)


def current_plane(viewer, layer):
    """Index of the displayed 2D slice in ``layer``'s data (same-shape layers: the dims' current step)."""
    step = viewer.dims.current_step
    return tuple(step[d] if d not in viewer.dims.displayed else slice(None) for d in range(layer.ndim))


def displayed_overlay(layer):
    """Which pixels of the displayed slice the filled overlay colours (its colormap applied on the CPU)."""
    layer = real(layer)
    lo, hi = layer.contrast_limits
    raw = np.asarray(layer._slice.image.raw, dtype=np.float64)
    rgba = layer.colormap.map(np.clip((raw - lo) / (hi - lo), 0, 1).ravel()).reshape(raw.shape + (4,))
    return rgba[..., 3] > 0


def test_picks_layers_and_consensus_by_default(explorer, qtbot):
    widget, viewer, soft_layer, soft, masks = explorer
    # opened from the Plugins menu: the clinician layout (raters hidden, the heat map's colour bar shown)
    assert not any(viewer.layers[f"rater {i}"].visible for i in range(1, 5))
    assert soft_layer.colorbar.visible
    # bottom right: the canvas legend line runs along the top (under a top-right bar in a narrow canvas)
    assert soft_layer.colorbar.position == "bottom_right"
    assert same_layer(widget.inputs.soft_layer(), soft_layer)
    assert [layer.name for layer in widget.inputs.rater_layers()] == ["rater 1", "rater 2", "rater 3", "rater 4"]
    assert widget.reference == Reference("consensus", k=2)
    assert widget.reference_combo.count() == 1 + 4 + 1 + 1   # consensus, 4 raters, soft label, expected
    assert widget.reference_combo.itemText(0) == "consensus: ≥ half of raters (2 of 4)"
    assert widget.overlay_mode == "outline"                 # the default: a crisp outline of p >= t
    assert widget.contour_layer is not None and widget.contour_layer.visible
    assert widget.overlay.contour_view.data is soft_layer.data     # shared, no copy
    # a new empty Labels layer (to draw in) is offered as a rater but not checked
    extra = viewer.add_labels(np.zeros(soft.shape, np.uint8), name="Labels")
    assert any(same_layer(extra, r) for r in widget.inputs._raters)
    assert not any(same_layer(extra, r) for r in widget.inputs.rater_layers())
    widget.inputs.set_rater_checked(extra, True)
    wait_ready(qtbot, widget)
    assert widget.session.n_raters == 5 and widget.reference == Reference("consensus", k=3)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.731, 0.95])
def test_slider_move_updates_numbers_overlay_and_marker(explorer, t):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_overlay_mode("filled")
    widget.slider.setValue(round(t * 1000))
    assert widget.threshold == t
    assert widget.spin.value() == pytest.approx(t)
    mask = soft >= t
    ref = masks.sum(0) >= 2
    tp, fp, fn, tn = counts(mask, ref)
    op = widget.operating_point()
    assert (op.tp, op.fp, op.fn, op.tn) == (tp, fp, fn, tn)
    assert widget.stat_labels["PPV"].text() == f"{tp / mask.sum():.3f}"
    assert widget.stat_labels["sensitivity"].text() == f"{tp / ref.sum():.3f}"
    assert widget.stat_labels["Dice"].text() == f"{2 * tp / (2 * tp + fp + fn):.3f}"
    assert widget.stat_labels["specificity"].text() == f"{tn / (tn + fp):.4f}"
    voxel = np.prod(SPACING) / 1000
    assert widget.stat_labels["predicted volume"].text() == format_volume(mask.sum() * voxel)
    assert widget.stat_labels["reference volume"].text() == format_volume(ref.sum() * voxel)
    assert widget.stat_labels["FP volume"].text() == format_volume(fp * voxel)
    assert widget.stat_labels["FN volume"].text() == format_volume(fn * voxel)
    # filled overlay: the renderer's threshold, and what it colours on the displayed slice is p >= t
    assert widget.fill_layer.contrast_limits == pytest.approx(list(overlay_contrast_limits(t)))
    plane = current_plane(viewer, soft_layer)
    np.testing.assert_array_equal(real(widget.fill_layer)._slice.image.raw, soft[plane])
    np.testing.assert_array_equal(displayed_overlay(widget.fill_layer), soft[plane] >= t)
    # curve marker at the operating point
    x, y = widget.plot.marker.get_data()
    assert (x[0], y[0]) == pytest.approx((tp / ref.sum(), tp / mask.sum()))
    assert widget.plot.marker_label.get_text() == f"t = {t:g}"


def test_spin_box_and_keys_move_the_slider(explorer, qtbot):
    widget, viewer, *_ = explorer
    widget.spin.setValue(0.25)
    assert widget.slider.value() == 250 and widget.threshold == 0.25
    widget.spin.setValue(0.2504)             # snapped to the 0.001 grid
    assert widget.threshold == 0.25
    keymap = {str(key): func for key, func in viewer.keymap.items()}
    keymap["]"](viewer)
    assert widget.threshold == pytest.approx(0.26) and widget.slider.value() == 260
    keymap["["](viewer)
    keymap["["](viewer)
    assert widget.threshold == pytest.approx(0.24)


def test_outline_overlay_follows_threshold_and_slice(explorer):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_overlay_mode("outline")
    assert widget.contour_layer is not None and widget.contour_layer.visible
    assert widget.fill_layer is None
    widget.set_threshold(0.62)
    for z in (soft.shape[0] // 2, soft.shape[0] // 2 + 1):
        viewer.dims.set_current_step(0, z)
        plane = current_plane(viewer, soft_layer)
        expected = boundary(fine(soft[plane] >= 0.62))
        assert expected.any()
        shown = np.asarray(real(widget.contour_layer)._slice.image.raw) > 0
        np.testing.assert_array_equal(shown, expected)
        np.testing.assert_array_equal(widget.contour_layer.data[plane] > 0, expected)
    # the finer grid sits exactly on the soft map: a voxel's centre is the centre of its 4 x 4 fine pixels
    for z, y, x in ((0, 0, 0), (5, 10, 20)):
        np.testing.assert_allclose(real(widget.contour_layer).data_to_world([z, 4 * y + 1.5, 4 * x + 1.5]),
                                   real(soft_layer).data_to_world([z, y, x]), atol=1e-9)
    widget.set_threshold(0.3)
    shown = np.asarray(real(widget.contour_layer)._slice.image.raw) > 0
    np.testing.assert_array_equal(shown, boundary(fine(soft[current_plane(viewer, soft_layer)] >= 0.3)))
    widget.set_overlay_mode("outline + light fill")
    assert widget.contour_layer.visible and widget.fill_layer.visible and widget.fill_layer.opacity <= 0.25
    widget.set_overlay_mode("none")
    assert not widget.contour_layer.visible and not widget.fill_layer.visible


def test_confidence_bands_outline_fixed_levels(explorer):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.bands_check.click()
    assert widget.bands_layer is not None and widget.bands_layer.visible
    plane = current_plane(viewer, soft_layer)
    shown = np.asarray(real(widget.bands_layer)._slice.image.raw) > 0
    inner = np.zeros_like(shown)
    inner[1:-1, 1:-1] = True
    expected = np.zeros_like(shown)
    for level in (0.1, 0.5, 0.9):
        expected |= boundary(fine(soft[plane] >= level))
    np.testing.assert_array_equal(shown, expected & inner)
    widget.set_threshold(0.77)                       # the bands stay; the outline moves
    np.testing.assert_array_equal(np.asarray(real(widget.bands_layer)._slice.image.raw) > 0, expected & inner)
    widget.bands_check.click()
    assert not widget.bands_layer.visible


def test_references_rater_soft_and_expected(explorer, qtbot):
    widget, viewer, soft_layer, soft, masks = explorer
    t = 0.4
    widget.set_threshold(t)
    mask = soft >= t
    widget.set_reference(Reference("rater", rater=2))
    wait_ready(qtbot, widget)
    tp, fp, fn, tn = counts(mask, masks[2] > 0)
    assert widget.operating_point().recall == pytest.approx(tp / (masks[2] > 0).sum())
    assert widget.stat_labels["sensitivity"].text() == f"{tp / (masks[2] > 0).sum():.3f}"
    widget.set_reference(Reference("soft"))
    wait_ready(qtbot, widget)
    soft_label = masks.mean(0)
    assert widget.operating_point().recall == pytest.approx(soft_label[mask].sum() / soft_label.sum())
    widget.set_reference(Reference("expected"))
    wait_ready(qtbot, widget)
    assert widget.operating_point().precision == pytest.approx(soft[mask].mean())
    assert widget.stat_labels["PPV"].text() == f"{soft[mask].mean():.3f}"
    assert widget.stat_names["PPV"].text() == "expected PPV (precision)"
    assert "no annotation is used" in widget.stat_names["PPV"].toolTip()
    assert widget.plot.axes.get_xlabel() == "expected sensitivity"
    widget.set_reference(Reference("consensus", k=4))
    wait_ready(qtbot, widget)
    ref = masks.sum(0) >= 4
    assert widget.k_spin.value() == 4
    assert widget.operating_point().recall == pytest.approx((mask & ref).sum() / ref.sum())
    # the curve shown is the one of the chosen reference
    np.testing.assert_array_equal(widget.plot.curve_line.get_xdata(), widget.session.curve.recall)


def test_presets_and_editable_targets(explorer):
    widget, viewer, soft_layer, soft, masks = explorer
    ref = masks.sum(0) >= 2
    grid = np.arange(1001) / 1000
    recall = np.array([(ref & (soft >= t)).sum() / ref.sum() for t in grid])
    precision = np.array([(ref & (soft >= t)).sum() / max((soft >= t).sum(), 1) for t in grid])
    widget.recall_button.click()
    assert widget.threshold == grid[np.nonzero(recall >= 0.95)[0][-1]]
    assert widget.operating_point().recall >= 0.95
    op = widget.operating_point()
    assert widget.preset_label.text().startswith(f"sensitivity ≥ 0.950: t = {widget.threshold:g} → sensitivity {op.recall:.3f}")
    widget.recall_target.setValue(0.8)
    widget.recall_button.click()
    assert widget.threshold == grid[np.nonzero(recall >= 0.8)[0][-1]]
    widget.precision_button.click()
    assert widget.threshold == grid[np.nonzero(precision >= 0.9)[0][0]]
    widget.precision_target.setValue(0.97)
    widget.precision_button.click()
    assert widget.threshold == grid[np.nonzero(precision >= 0.97)[0][0]]
    assert widget.slider.value() == round(widget.threshold * 1000)


def test_degenerate_preset_is_reported(explorer, notes):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.precision_target.setValue(0.999)
    widget.precision_button.click()
    op = widget.operating_point()
    if op.threshold >= 0.995 or op.recall < 0.1:
        assert widget.preset_label.text().startswith("⚠") and "degenerate" in widget.preset_label.text()
        assert any("degenerate" in m for m in notes.messages("warning"))
    widget.recall_target.setValue(0.8)
    widget.recall_button.click()                   # a healthy operating point: no warning sign
    assert not widget.preset_label.text().startswith("⚠")


def test_unreachable_precision_leaves_threshold_and_warns(make_napari_viewer, notes, qtbot):
    viewer = make_napari_viewer()
    soft = np.zeros((6, 6), np.float32)
    soft[0, :3] = 0.95                     # the most confident pixels are all wrong
    soft[3:, 3:] = 0.6
    rater = np.zeros((6, 6), np.uint8)
    rater[3:, 3:] = 1
    rater[5, 0] = 1
    viewer.add_image(soft, name="p")
    viewer.add_labels(rater, name="rater 1")
    widget = open_dock(viewer, DOCK)
    wait_ready(qtbot, widget)
    widget.set_threshold(0.4)
    widget.precision_target.setValue(1.0)
    widget.precision_button.click()
    assert widget.threshold == 0.4
    assert any("No threshold reaches PPV" in m for m in notes.messages("warning"))


def test_threshold_is_shared_with_a_second_dock(explorer):
    widget, viewer, *_ = explorer
    analysis_session(viewer).threshold = 0.66
    assert widget.threshold == 0.66 and widget.slider.value() == 660
    widget.set_threshold(0.2)
    assert analysis_session(viewer).threshold == 0.2
    assert analysis_session(widget.viewer) is analysis_session(viewer)    # the proxy's session is the viewer's


def test_plot_follows_theme(explorer):
    widget, viewer, *_ = explorer
    viewer.theme = "dark"
    dark_face = widget.plot.figure.get_facecolor()
    dark_text = widget.plot.axes.xaxis.label.get_color()
    dark_curve = widget.plot.curve_line.get_color()
    viewer.theme = "light"
    assert widget.plot.figure.get_facecolor() != dark_face
    assert widget.plot.axes.xaxis.label.get_color() != dark_text
    assert widget.plot.curve_line.get_color() != dark_curve
    assert sum(widget.plot.figure.get_facecolor()[:3]) > 2.4        # light background
    viewer.theme = "dark"
    assert widget.plot.figure.get_facecolor() == dark_face


def test_no_soft_map_and_wrong_layers(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, DOCK)
    assert widget.session is None and widget.operating_point() is None
    widget.set_threshold(0.3)                          # nothing to do, no crash
    widget.recall_button.click()
    scan = viewer.add_image(np.linspace(-50, 300, 8000, dtype=np.float32).reshape(20, 20, 20), name="ct")
    assert same_layer(widget.inputs.soft_layer(), scan)   # a plain float image is offered ...
    assert widget.session is None                      # ... but refused: values outside 0-1
    assert any("'ct' is not a soft map" in m for m in notes.messages("error"))
    assert widget.fill_layer is None and widget.contour_layer is None
    np.testing.assert_array_equal(scan.data, np.linspace(-50, 300, 8000, dtype=np.float32).reshape(20, 20, 20))
    assert [layer.name for layer in viewer.layers] == ["ct"]


def test_mismatched_rater_layer_is_reported_and_left_out(explorer, notes, qtbot):
    from napari_softseg._napari.layers import Geometry, add_layer_tuples, rater_layers

    widget, viewer, soft_layer, soft, masks = explorer
    other = Geometry(np.eye(4), (10, 10, 10))
    (bad,) = add_layer_tuples(viewer, rater_layers(np.ones((1, 10, 10, 10), np.uint8), ["rater 9"], other))
    widget.rebuild()
    wait_ready(qtbot, widget)
    assert "rater 9" not in [layer.name for layer in widget.inputs.rater_layers()]
    assert any("'rater 9'" in m and "shape" in m for m in notes.messages("warning"))
    assert widget.session.n_raters == 4
    assert np.asarray(bad.data).all()                  # untouched


def test_layer_checks_name_the_problem():
    from napari.layers import Image, Labels

    from napari_softseg._napari.layer_roles import check_soft_map, read_masks
    from napari_softseg.errors import SoftsegError

    with pytest.raises(SoftsegError, match="'seg' is a Labels layer; pick an Image layer"):
        check_soft_map(Labels(np.zeros((4, 4), np.uint8), name="seg"))
    with pytest.raises(SoftsegError, match="'rgb' is RGB"):
        check_soft_map(Image(np.zeros((4, 4, 3), np.float32), rgb=True, name="rgb"))
    with pytest.raises(SoftsegError, match="no soft map"):
        check_soft_map(None)
    nan = np.full((4, 4), np.nan, np.float32)
    with pytest.raises(SoftsegError, match="'nan' is not a soft map"):
        check_soft_map(Image(nan, name="nan", contrast_limits=(0, 1)))
    with pytest.raises(SoftsegError, match="raters must be Labels"):
        read_masks([Image(np.zeros((4, 4), np.float32), name="img")], (4, 4))
    with pytest.raises(SoftsegError, match=r"'r' has shape \(4, 5\), the soft map \(4, 4\)"):
        read_masks([Labels(np.zeros((4, 5), np.uint8), name="r")], (4, 4))
    masks = read_masks([Labels(np.array([[0, 2], [1, 0]], np.uint8), name="r")], (2, 2))
    assert isinstance(masks, PackedMasks) and masks.bits.nbytes == 4      # packed: one byte a voxel
    assert np.asarray(masks).dtype == np.uint8 and np.asarray(masks).tolist() == [[[0, 1], [1, 0]]]
    # above 16 raters they no longer fit the bits: a plain stack
    many = read_masks([Labels(np.array([[0, 2], [1, 0]], np.uint8), name=f"r{i}") for i in range(17)], (2, 2))
    assert isinstance(many, np.ndarray) and many.shape == (17, 2, 2) and many[16].tolist() == [[0, 1], [1, 0]]


def test_closing_the_dock_unbinds_its_keys(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, DOCK)
    assert "]" in {str(key) for key in viewer.keymap}
    with qtbot.waitSignal(widget.destroyed, timeout=2000):
        viewer.window.remove_dock_widget(widget)
        widget.deleteLater()
    assert "]" not in {str(key) for key in viewer.keymap}


def test_removing_the_soft_map_removes_only_the_overlays(explorer):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_overlay_mode("outline")
    widget.set_overlay_mode("filled")
    assert {"prediction p ≥ t fill", "prediction p ≥ t outline"} <= {layer.name for layer in viewer.layers}
    viewer.layers.remove(soft_layer)
    assert widget.session is None and widget.fill_layer is None and widget.contour_layer is None
    assert [layer.name for layer in viewer.layers] == ["rater 1", "rater 2", "rater 3", "rater 4"]
    widget.set_threshold(0.7)            # no soft map: nothing to do, no error
    assert widget.stat_labels["PPV"].text() == "–"


def test_curve_is_built_in_the_background_and_the_slider_never_waits(explorer, qtbot):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_threshold(0.4)
    widget.set_reference(Reference("rater", rater=1))
    # the PR curve is being built in a worker: no numbers yet, the dependent controls are disabled
    assert not widget.ready and not widget.status.isHidden() and "computing" in widget.status.label.text()
    assert widget.reference is None and widget.operating_point() is None
    assert widget.stat_labels["sensitivity"].text() == "…"
    assert not widget.reference_combo.isEnabled() and not widget.recall_button.isEnabled()
    assert not widget.k_spin.isEnabled()
    # ... while the slider still moves the overlay at once
    assert widget.slider.isEnabled()
    widget.slider.setValue(620)
    assert widget.overlay.contour_view.threshold == 0.62
    assert widget.stat_labels["PPV"].text() == "…"
    wait_ready(qtbot, widget)
    assert widget.status.isHidden() and widget.reference_combo.isEnabled() and widget.recall_button.isEnabled()
    assert widget.reference == Reference("rater", rater=1)
    tp, fp, fn, tn = counts(soft >= 0.62, masks[1] > 0)
    op = widget.operating_point()
    assert (op.tp, op.fp, op.fn, op.tn) == (tp, fp, fn, tn)
    assert widget.stat_labels["sensitivity"].text() == f"{tp / (masks[1] > 0).sum():.3f}"


def test_only_the_latest_request_is_used(explorer, qtbot):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_reference(Reference("rater", rater=0))
    first = widget.job.generation
    widget.set_reference(Reference("rater", rater=3))          # before the first curve arrives
    assert widget.job.generation == first + 1
    wait_ready(qtbot, widget)
    wait_workers_done(qtbot)                                    # any late signal of the first job is in
    assert widget.reference == Reference("rater", rater=3)
    assert not widget.session.has_curve(Reference("rater", rater=0))   # cancelled or dropped, never used
    ref = masks[3] > 0
    assert widget.operating_point().recall == pytest.approx((ref & (soft >= widget.threshold)).sum() / ref.sum())
    # back to a reference whose curve is cached: immediate, no background work
    widget.set_reference(Reference("consensus", k=2))
    assert widget.ready and widget.reference == Reference("consensus", k=2)


def test_painting_a_rater_layer_recomputes_on_its_own(explorer, qtbot):
    widget, viewer, soft_layer, soft, masks = explorer
    rater = viewer.layers["rater 1"]
    widget.set_reference(Reference("rater", rater=0))
    wait_ready(qtbot, widget)
    before = widget.session
    rater.brush_size = 9
    plane = soft.shape[0] // 2
    rater.paint((plane, soft.shape[1] // 2, soft.shape[2] // 2), 1)    # a paint stroke (events.paint)
    edited = np.asarray(rater.data) > 0
    assert edited.sum() > (masks[0] > 0).sum()
    qtbot.waitUntil(lambda: widget.session is not before and widget.ready, timeout=20000)
    np.testing.assert_array_equal(widget.session.masks[0], edited)
    assert widget.reference == Reference("rater", rater=0)      # the user's choice is kept
    tp, fp, fn, tn = counts(soft >= widget.threshold, edited)
    op = widget.operating_point()
    assert (op.tp, op.fp, op.fn, op.tn) == (tp, fp, fn, tn)


def test_3d_without_a_mesh_shows_an_iso_surface_that_follows_the_slider(explorer, monkeypatch, qtbot):
    """The fallback for a soft map that cannot be meshed (the mesh path: tests/test_threshold_surface_3d.py)."""
    import napari_softseg.analysis.display as display_module

    monkeypatch.setattr(overlay_module, "mesh_source_of", lambda layer: None)
    widget, viewer, soft_layer, soft, masks = explorer
    scan = viewer.add_image(np.random.default_rng(0).random(soft.shape).astype(np.float32) * 100, name="scan",
                            affine=soft_layer.affine, metadata={"softseg": {"kind": "image"}})
    widget.role_combo.setCurrentIndex(1)           # annotator layout: raters shown as outlines in 2D
    widget.set_threshold(0.5)
    outlined = []
    real_boundary = display_module.mask_boundary
    monkeypatch.setattr(display_module, "mask_boundary", lambda m: outlined.append(m.shape) or real_boundary(m))
    viewer.dims.ndisplay = 3
    assert widget.shown_overlay_mode == "surface"
    assert not widget.contour_layer.visible and not soft_layer.visible      # off at once
    qtbot.waitUntil(lambda: widget.surface_layer is not None, timeout=5000)  # added on a later turn
    surface = widget.surface_layer
    assert surface.rendering == "iso" and surface.data is soft_layer.data
    assert surface.visible and widget.mesh_layer is None and not widget.overlay.building_first_mesh
    assert not widget.contour_layer.visible
    for t in (0.3, 0.35, 0.4):
        widget.set_threshold(t)
        assert surface.iso_threshold == pytest.approx(t)
    assert outlined == []                          # no outline work at all in 3D
    # raters and heat map off, the scan a faint volume
    assert not any(viewer.layers[f"rater {i}"].visible for i in range(1, 5))
    assert not soft_layer.visible and scan.visible and scan.opacity <= 0.25
    viewer.dims.ndisplay = 2
    assert not surface.visible                     # at once; the 2D layers come back one per turn
    qtbot.waitUntil(lambda: widget.contour_layer.visible and soft_layer.visible and scan.opacity == 1.0, timeout=5000)
    assert all(viewer.layers[f"rater {i}"].visible for i in range(1, 5))
    plane = current_plane(viewer, soft_layer)
    shown = np.asarray(real(widget.contour_layer)._slice.image.raw) > 0
    np.testing.assert_array_equal(shown, boundary(fine(soft[plane] >= 0.4)))


def test_in_place_edit_and_refresh_are_picked_up(explorer, qtbot):
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_threshold(0.5)
    before = widget.operating_point().n_positive
    soft_layer.data[soft_layer.data >= 0.5] = 0.0         # in place: the array object stays the same
    soft_layer.refresh()
    qtbot.waitUntil(lambda: widget.ready and widget.operating_point() is not None
                    and widget.operating_point().n_positive == 0, timeout=20000)
    assert before > 0
    soft_layer.data[:] = 0.9
    widget.refresh_button.click()                          # no refresh(): the button re-reads it
    wait_ready(qtbot, widget)
    assert widget.operating_point().n_positive == soft.size


def test_scrolling_slices_does_not_checksum_the_data_again(explorer, qtbot, monkeypatch):
    """Re-slicing fires napari's ``set_data``; only an edit may cost a checksum of the whole map."""
    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_threshold(0.5)
    calls = []
    original = widget.inputs._data_print
    monkeypatch.setattr(widget.inputs, "_data_print", lambda: calls.append(1) or original())
    edited = []
    widget.inputs.edited.connect(lambda: edited.append(1))
    axis = viewer.dims.not_displayed[0]
    for step in range(soft.shape[axis]):
        viewer.dims.set_current_step(axis, step)
    qtbot.waitUntil(lambda: viewer.dims.current_step[axis] == soft.shape[axis] - 1, timeout=5000)
    qtbot.wait(400)                       # past the edit debounce: nothing may be pending
    assert calls == [] and edited == []
    # an in-place edit + refresh after the scroll is still an edit
    soft_layer.data[soft_layer.data >= 0.5] = 0.0
    soft_layer.refresh()
    qtbot.waitUntil(lambda: bool(edited) and widget.ready and widget.operating_point().n_positive == 0,
                    timeout=20000)
    assert calls


def test_roles_hide_or_outline_raters(explorer):
    widget, viewer, *_ = explorer
    raters = [viewer.layers[f"rater {i}"] for i in range(1, 5)]
    widget.role_combo.setCurrentIndex(1)
    assert all(r.visible and r.contour == 1 for r in raters)
    assert len({tuple(r.colormap.map(np.array([1]))[0]) for r in raters}) == 4      # distinct colours
    widget.role_combo.setCurrentIndex(0)
    assert not any(r.visible for r in raters)


def test_a_plain_float_image_can_be_marked_as_soft_map(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.linspace(0, 1, 600, dtype=np.float32).reshape(6, 10, 10), name="probabilities")
    widget = open_dock(viewer, DOCK)
    viewer.layers.selection.active = image
    widget.as_soft_button.click()
    wait_ready(qtbot, widget)
    assert image.metadata["softseg"]["kind"] == "prediction" and image.blending == "translucent"
    assert image.colormap.name == "softseg heat band" and image.colorbar.visible
    assert same_layer(widget.inputs.soft_layer(), image) and widget.operating_point() is not None


def test_synchronous_mode_needs_no_event_loop(make_napari_viewer, monkeypatch):
    from napari_softseg._qt.background import SYNC_ENV

    monkeypatch.setenv(SYNC_ENV, "1")
    viewer = make_napari_viewer()
    soft_layer, raters, soft, masks = open_case(viewer)
    widget = open_dock(viewer, DOCK)
    assert widget.ready and widget.reference == Reference("consensus", k=2)
    widget.set_reference(Reference("rater", rater=2))
    assert widget.ready and widget.operating_point() is not None
    ref = masks[2] > 0
    assert widget.operating_point().recall == pytest.approx((ref & (soft >= 0.5)).sum() / ref.sum())


def test_make_mask_layer_then_save_writes_the_thresholded_mask(explorer, tmp_path):
    import nibabel as nib

    from napari_softseg._napari.writer import write_mask

    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_threshold(0.731)
    widget.mask_button.click()
    layer = viewer.layers[-1]
    assert layer.name == "prediction mask p>=0.731" and layer.data.dtype == np.uint8
    np.testing.assert_array_equal(layer.data, (np.asarray(soft_layer.data) >= 0.731).astype(np.uint8))
    assert layer.metadata["softseg"]["provenance"]["threshold"] == pytest.approx(0.731)
    data, meta, _ = layer.as_layer_data_tuple()
    written = write_mask(str(tmp_path / "mask.nii.gz"), data, meta)
    img = nib.load(written[0])
    saved = np.asarray(img.dataobj)
    assert saved.dtype == np.uint8 and int(saved.sum()) == int(layer.data.sum())
    assert b"p>=0.731" in img.header["descrip"].tobytes()


# -- issue 15 item 6: the explorer's small defects --------------------------------------------------------------
def test_canvas_legend_follows_the_bands_checkbox(explorer, qtbot):
    widget, viewer, *_ = explorer
    widget.set_threshold(0.42)
    widget._update_canvas_legend()                 # the slider rested
    qtbot.waitUntil(lambda: widget.ready)          # (the legend waits for the canvas' glyphs, once)
    assert viewer.text_overlay.text.startswith("cyan outline: p ≥ 0.42") and "thin white" not in viewer.text_overlay.text
    widget.bands_check.click()                     # tick: the legend names the bands at once
    assert "thin white: p = 0.1 / 0.5 / 0.9" in viewer.text_overlay.text and viewer.text_overlay.visible
    widget.bands_check.click()                     # untick: gone again
    assert "thin white" not in viewer.text_overlay.text
    assert viewer.text_overlay.text.startswith("cyan outline: p ≥ 0.42")
    widget.set_overlay_mode("none")                # nothing drawn: no legend
    assert not viewer.text_overlay.visible


def test_preset_warns_when_the_mask_is_more_than_twice_the_reference(make_napari_viewer, notes, qtbot):
    viewer = make_napari_viewer()
    rater = np.zeros((4, 20, 20), np.uint8)
    rater[:, 5:15, 5:15] = 1                        # the structure: 400 voxels
    soft = np.zeros(rater.shape, np.float32)
    soft[rater > 0] = 0.9
    soft[:, 5:15, 5] = 0.1                          # a tenth of it the model is unsure about ...
    halo = np.zeros(rater.shape, bool)
    halo[:, 1:19, 1:19] = True
    halo[rater > 0] = False
    soft[halo] = 0.3                                # ... and a wide halo it half believes
    viewer.add_image(soft, name="p")
    viewer.add_labels(rater, name="rater 1")
    widget = open_dock(viewer, DOCK)
    wait_ready(qtbot, widget)
    widget.recall_target.setValue(0.95)
    widget.recall_button.click()                    # sensitivity ≥ 0.95 needs p ≥ 0.1: structure + halo
    t = widget.threshold
    ratio = (soft >= t).sum() / rater.sum()
    assert t == 0.1 and ratio > 2
    text = widget.preset_label.text()
    assert text.startswith("⚠") and f"the mask is {ratio:.1f}× the reference volume" in text
    assert any(f"{ratio:.1f}× the reference volume" in m for m in notes.messages("warning"))
    widget.precision_target.setValue(0.9)
    widget.precision_button.click()                 # PPV ≥ 0.9: the structure's core, well under 2×
    assert (soft >= widget.threshold).sum() <= 2 * rater.sum()
    assert not widget.preset_label.text().startswith("⚠") and "×" not in widget.preset_label.text()


def test_pr_marker_label_clears_the_threshold_tick_labels(explorer):
    widget, *_ = explorer
    plot = widget.plot
    assert len(plot.tick_labels) == 5
    for t in (0.1, 0.3, 0.5, 0.52, 0.7, 0.9, 0.31):
        widget.set_threshold(t)
        plot.draw()                                 # a full draw places the label (as a blit does)
        renderer = plot.get_renderer()
        label = plot.marker_label.get_window_extent(renderer)
        assert plot.marker_label.get_text() == f"t = {t:g}"
        for tick in plot.tick_labels:
            box = tick.get_window_extent(renderer)
            overlap_w = min(label.x1, box.x1) - max(label.x0, box.x0)
            overlap_h = min(label.y1, box.y1) - max(label.y0, box.y0)
            assert overlap_w <= 0 or overlap_h <= 0, (t, tick.get_text(), label, box)


def test_other_layers_coming_and_going_do_not_checksum_the_map_again(explorer, qtbot, monkeypatch):
    """A layer added or removed (the 3D switch's helpers, a user's image) keeps the chosen data's baseline;
    an edit made just before such a change is still reported."""
    from napari_softseg._qt import selection

    widget, viewer, soft_layer, soft, masks = explorer
    widget.set_threshold(0.5)
    calls = []
    original = selection.arrays_print
    monkeypatch.setattr(selection, "arrays_print", lambda arrays: calls.append(1) or original(arrays))
    other = viewer.add_image(np.full((6, 7), 200, np.uint8), name="not a soft map")
    viewer.layers.remove(other)
    assert calls == []
    edited = []
    widget.inputs.edited.connect(lambda: edited.append(1))
    soft_layer.data[soft_layer.data >= 0.5] = 0.0         # edited in place ...
    soft_layer.refresh()
    viewer.add_image(np.full((6, 7), 200, np.uint8), name="another")   # ... then the layer list changes
    qtbot.waitUntil(lambda: bool(edited) and widget.ready and widget.operating_point() is not None
                    and widget.operating_point().n_positive == 0, timeout=20000)


def test_the_marker_label_is_drawn_when_the_marker_rests(make_napari_viewer, qtbot):
    """A move blits the marker only (the label's text costs more than the marker); the label follows at rest."""
    from _analysis_case import open_case

    viewer = make_napari_viewer(show=True)               # blits happen on a shown plot only
    open_case(viewer, 3)
    widget = open_dock(viewer, DOCK)
    wait_ready(qtbot, widget)
    plot = widget.plot
    widget.set_threshold(0.3)
    qtbot.waitUntil(lambda: plot.isVisible() and plot.label_shown and plot.marker_label.get_text() == "t = 0.3",
                    timeout=5000)
    widget.set_threshold(0.42)
    plot.flush()                                          # the move's blit, then the resting label's
    assert plot.label_shown and plot.marker_label.get_text() == "t = 0.42"
    widget.set_threshold(0.47)
    qtbot.waitUntil(lambda: not plot.label_shown, timeout=5000)   # moving: the marker alone
    qtbot.waitUntil(lambda: plot.label_shown, timeout=5000)       # at rest: with its label


def test_the_marker_is_not_drawn_while_the_plot_is_scrolled_out_of_view(qtbot):
    """The PR curve sits low in the explorer's scroll area, out of view on most screens: a slider move then
    costs no marker drawing (~1 ms of Agg work each); the marker is put where it is when the plot comes back."""
    from qtpy.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

    from napari_softseg._qt.plots import PRCurvePlot

    area = QScrollArea()
    content = QWidget()
    layout = QVBoxLayout(content)
    spacer = QLabel("numbers")
    spacer.setMinimumHeight(2000)
    plot = PRCurvePlot(None)
    layout.addWidget(spacer)
    layout.addWidget(plot)
    area.setWidget(content)
    area.resize(400, 300)
    area.show()
    qtbot.waitExposed(area)
    plot.set_curve(np.linspace(0, 1, 101), np.linspace(1, 0.5, 101))
    plot.draw()
    drawn = []
    real = plot.restore_region
    plot.restore_region = lambda *a, **k: (drawn.append(1), real(*a, **k))
    assert plot.visibleRegion().isEmpty()
    for x in (0.2, 0.4, 0.6):
        plot.set_marker(x, 0.8, f"t = {x:g}")
        plot.flush()
    assert drawn == [] and plot.marker_label.get_text() == "t = 0.6"
    area.ensureWidgetVisible(plot)                       # scrolled into view: the next paint draws it
    qtbot.waitUntil(lambda: bool(drawn), timeout=5000)
    assert tuple(plot.marker.get_data()[0]) == (0.6,)
    plot.set_marker(0.7, 0.75, "t = 0.7")
    plot.flush()
    assert len(drawn) >= 2                               # in view: each move is drawn again
    area.close()
