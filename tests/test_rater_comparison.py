"""Rater comparison dock and the Qt-free disagreement map (headless)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _analysis_case import Notifications, case_with_dock, counts, open_case, open_dock, wait_ready

from napari_softseg._napari.layer_roles import same_layer
from napari_softseg.analysis.disagreement import agreement_colors, disagreement_map, summarize
from napari_softseg.analysis.metrics import dice, leave_one_rater_out
from napari_softseg.analysis.operating_point import Reference


# -- Qt-free: disagreement map ---------------------------------------------------------------------
def brute_force_disagreement(annotation, masks, k):
    out = np.zeros(annotation.shape, np.uint8)
    for idx in np.ndindex(annotation.shape):
        votes = [int(m[idx]) for m in masks]
        cons = sum(votes) >= k
        mine = bool(annotation[idx])
        if mine != cons:
            out[idx] = 1 + sum(v == mine for v in votes)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_disagreement_map_counts_raters_agreeing_with_the_annotator(k):
    rng = np.random.default_rng(k)
    masks = (rng.random((5, 9, 8, 3)) > 0.5).astype(np.uint8)
    annotation = rng.random((9, 8, 3)) > 0.4
    got = disagreement_map(annotation, masks, k)
    np.testing.assert_array_equal(got, brute_force_disagreement(annotation, masks, k))
    s = summarize(annotation, got, 5)
    cons = masks.sum(0) >= k
    assert s.extra == int((annotation & ~cons).sum()) and s.missed == int((~annotation & cons).sum())
    assert sum(s.by_agreeing) == s.extra + s.missed
    assert s.by_agreeing[0] == int((got == 1).sum())


def test_disagreement_map_checks_input():
    masks = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        disagreement_map(np.zeros((4, 5)), masks, 2)
    with pytest.raises(ValueError, match="1 <= k <= 3"):
        disagreement_map(np.zeros((4, 4)), masks, 4)
    colors = agreement_colors(3)
    assert colors[0][3] == 0 and colors[1][0] > colors[1][1]         # transparent; alone = red
    assert colors[3][1] > colors[3][0]                               # 2 of 3 agree = green


# -- the dock ----------------------------------------------------------------------------------------
@pytest.fixture
def comparison(make_napari_viewer, qtbot):
    return case_with_dock(make_napari_viewer, qtbot, "Rater comparison")


def table(widget):
    return [[widget.table.item(r, c).text() for c in range(3)] for r in range(widget.table.rowCount())]


def test_table_is_leave_one_rater_out_with_model_at_threshold(comparison):
    widget, viewer, soft_layer, soft, masks = comparison
    for t in (0.5, 0.3):
        widget.set_threshold(t)
        assert widget.threshold_spin.value() == pytest.approx(t)
        expected = leave_one_rater_out(masks, soft, threshold=t, rater_names=[f"rater {i + 1}" for i in range(4)])
        rows = table(widget)
        assert len(rows) == 5 and rows[-1][0] == "mean"
        for r, row in enumerate(expected):
            # the model column is computed independently here: p >= t against the others' consensus
            others = np.delete(masks, r, 0).sum(0) >= math.ceil(3 / 2)
            model = dice(soft >= t, others)
            assert model == pytest.approx(row.model_dice_vs_same)
            assert rows[r] == [row.rater, f"{row.dice_vs_others:.3f}", f"{model:.3f}"]
            assert widget.best_column(r) == (1 if row.dice_vs_others > model else 2)
        mean_r = np.mean([row.dice_vs_others for row in expected])
        assert rows[-1][1] == f"{mean_r:.3f}"


def test_annotator_point_and_disagreement_map(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    widget.add_button.click()
    layer = viewer.layers["my annotation"]
    assert layer.data.shape == soft.shape and not layer.data.any()
    assert same_layer(widget.annotation_layer(), layer) and layer.mode == "paint"
    assert not any(same_layer(layer, r) for r in widget.inputs.rater_layers())   # not counted as a rater
    np.testing.assert_array_equal(layer.affine.affine_matrix, soft_layer.affine.affine_matrix)
    # the annotator draws: rater 2's mask plus a blob of their own
    drawn = masks[1].copy()
    drawn[:, :5, :5] = 1
    layer.data = drawn
    widget.refresh_annotation()                  # what the debounced paint/data handler runs
    wait_ready(qtbot, widget)
    ref = masks.sum(0) >= 2                      # default reference: consensus 2 of 4
    tp, fp, fn, tn = counts(drawn > 0, ref)
    op = widget.annotation_point
    assert op.precision == pytest.approx(tp / (drawn > 0).sum())
    assert op.recall == pytest.approx(tp / ref.sum())
    assert op.dice == pytest.approx(2 * tp / (2 * tp + fp + fn))
    x, y = widget.plot.points.get_data()
    assert (x[0], y[0]) == pytest.approx((op.recall, op.precision))
    # disagreement layer: where drawn differs from the consensus, 1 + raters agreeing with the annotator
    dis = widget.disagreement_layer
    assert dis is not None and any(same_layer(dis, other) for other in viewer.layers)
    np.testing.assert_array_equal(dis.data, brute_force_disagreement(drawn, masks, 2))
    np.testing.assert_array_equal(dis.affine.affine_matrix, soft_layer.affine.affine_matrix)
    assert "voxels only you marked" in widget.legend.text()
    # another reference: the soft label (soft counts), and the consensus at k = 1
    widget.set_reference(Reference("soft"))
    wait_ready(qtbot, widget)
    soft_label = masks.mean(0)
    assert widget.annotation_point.recall == pytest.approx(soft_label[drawn > 0].sum() / soft_label.sum())
    widget.set_reference(Reference("consensus", k=1))
    wait_ready(qtbot, widget)
    np.testing.assert_array_equal(widget.disagreement_layer.data, brute_force_disagreement(drawn, masks, 1))
    # the model's marker on the same curve follows the shared threshold
    widget.set_threshold(0.7)
    op_model = widget.session.at(0.7)
    x, y = widget.plot.marker.get_data()
    assert (x[0], y[0]) == pytest.approx((op_model.recall, op_model.precision))


def test_painting_updates_after_throttle(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    layer = widget.add_annotation_layer()
    wait_ready(qtbot, widget)
    assert widget.annotation_point.n_positive == 0
    layer.data = masks[0].copy()                 # emits the layer's data event
    qtbot.waitUntil(lambda: widget.annotation_point.n_positive == int(masks[0].sum()), timeout=3000)


def test_threshold_shared_with_explorer(comparison, qtbot):
    widget, viewer, soft_layer, *_ = comparison
    explorer = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, explorer)
    # one session for both docks: the same inputs, the consensus curve built once and shared
    assert explorer.session is widget.session
    # one layer choice: unchecking a rater in one dock unchecks it in the other
    explorer.inputs.set_rater_checked(viewer.layers["rater 4"], False)
    assert [r.name for r in widget.inputs.rater_layers()] == ["rater 1", "rater 2", "rater 3"]
    wait_ready(qtbot, explorer)
    wait_ready(qtbot, widget)
    assert explorer.session is widget.session and widget.session.n_raters == 3
    explorer.set_threshold(0.42)
    assert widget.threshold == 0.42 and widget.threshold_spin.value() == pytest.approx(0.42)
    widget.threshold_spin.setValue(0.61)
    assert explorer.threshold == 0.61


def test_too_few_raters_and_no_soft_map(make_napari_viewer, qtbot):
    notes = Notifications()
    try:
        viewer = make_napari_viewer()
        widget = open_dock(viewer, "Rater comparison")
        assert widget.table.rowCount() == 0
        assert widget.add_annotation_layer() is None                 # no soft map: refused with a reason
        assert any("open a soft map first" in m for m in notes.messages("warning"))
        assert len(viewer.layers) == 0
        soft_layer, raters, soft, masks = open_case(viewer)
        for layer in raters[1:]:
            widget.inputs.set_rater_checked(layer, False)
        assert widget.table.rowCount() == 0
        assert "at least 2 rater" in widget.summary.text()
        wait_ready(qtbot, widget)
        assert widget.table.rowCount() == 0 and "at least 2 rater" in widget.summary.text()
    finally:
        notes.close()


def test_table_is_computed_in_the_background(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    widget.refresh()                                      # the Refresh button
    assert not widget.ready and not widget.status.isHidden()
    assert widget.table.rowCount() == 0 and "Computing" in widget.summary.text()
    assert not widget.refresh_button.isEnabled() and not widget.reference_combo.isEnabled()
    assert widget.threshold_spin.isEnabled()
    widget.set_threshold(0.45)                            # the threshold never waits
    assert widget.threshold == 0.45
    wait_ready(qtbot, widget)
    assert widget.status.isHidden() and widget.refresh_button.isEnabled()
    expected = leave_one_rater_out(masks, soft, threshold=0.45, rater_names=[f"rater {i + 1}" for i in range(4)])
    assert [row[0] for row in table(widget)[:-1]] == [r.rater for r in expected]
    assert [float(row[2]) for row in table(widget)[:-1]] == pytest.approx(
        [r.model_dice_vs_same for r in expected], abs=5e-4
    )


def test_editing_a_rater_updates_the_table_on_its_own(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    edited = masks.copy()
    edited[0] = masks[1]                                  # rater 1 now agrees with rater 2
    viewer.layers["rater 1"].data = edited[0].copy()      # the layer's data event; no Refresh
    names = [f"rater {i + 1}" for i in range(4)]
    expected = leave_one_rater_out(edited, soft, threshold=widget.threshold, rater_names=names)
    want = [f"{r.dice_vs_others:.3f}" for r in expected]
    qtbot.waitUntil(lambda: widget.ready and [row[1] for row in table(widget)[:-1]] == want, timeout=20000)
    assert [float(row[2]) for row in table(widget)[:-1]] == pytest.approx(
        [r.model_dice_vs_same for r in expected], abs=5e-4
    )


def test_paint_strokes_update_the_annotator_view(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    layer = widget.add_annotation_layer()
    wait_ready(qtbot, widget)
    layer.brush_size = 7
    center = tuple(n // 2 for n in soft.shape)
    layer.paint(center, 1)                                # events.paint, as a stroke in the viewer
    painted = np.asarray(layer.data) > 0
    assert painted.any()
    qtbot.waitUntil(
        lambda: widget.ready and widget.annotation_point is not None
        and widget.annotation_point.n_positive == int(painted.sum()),
        timeout=20000,
    )
    ref = masks.sum(0) >= 2
    tp = (painted & ref).sum()
    assert widget.annotation_point.precision == pytest.approx(tp / painted.sum())
    np.testing.assert_array_equal(widget.disagreement_layer.data, brute_force_disagreement(painted, masks, 2))


def test_annotator_layout_outlines_raters_with_a_legend(comparison):
    widget, viewer, *_ = comparison
    widget.role_check.setChecked(True)
    raters = [viewer.layers[f"rater {i}"] for i in range(1, 5)]
    assert all(r.visible and r.contour == 1 for r in raters)
    legend = widget.rater_legend.text()
    assert widget.rater_legend.isVisibleTo(widget) and all(f"rater {i}" in legend for i in range(1, 5))
    assert len({part.split("color:")[1][:7] for part in legend.split("<span")[1:]}) == 4   # 4 colours
    widget.role_check.setChecked(False)
    assert not any(r.visible for r in raters) and not widget.rater_legend.isVisibleTo(widget)
    assert "at least half of the raters" in widget.rule_label.text()


# -- issue 15 item 6: the annotator's small defects ------------------------------------------------------------
def test_annotation_edited_in_place_and_refreshed_is_picked_up(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    layer = widget.add_annotation_layer()
    wait_ready(qtbot, widget)
    data = layer.data                                     # edit the layer's own array, then refresh() (no Refresh)
    data[masks[2] > 0] = 1
    layer.refresh()
    assert layer.data is data
    qtbot.waitUntil(lambda: widget.ready and widget.annotation_point is not None
                    and widget.annotation_point.n_positive == int((masks[2] > 0).sum()), timeout=20000)
    ref = masks.sum(0) >= 2
    tp = ((masks[2] > 0) & ref).sum()
    assert widget.annotation_point.recall == pytest.approx(tp / ref.sum())
    assert f"sensitivity {tp / ref.sum():.3f}" in widget.annotation_label.text()


def test_an_empty_annotation_has_no_perfect_ppv(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    widget.add_annotation_layer()
    wait_ready(qtbot, widget)
    text = widget.annotation_label.text()
    assert widget.annotation_point.n_positive == 0
    assert "PPV" not in text and "empty" in text and "'my annotation'" in text
    assert len(widget.plot.points.get_xdata()) == 0      # no star at (0, 1) on the PR plot


def test_the_prompt_goes_once_an_annotation_layer_is_added(comparison, qtbot):
    widget, viewer, soft_layer, soft, masks = comparison
    assert widget.annotation_label.text() == "Pick or add your annotation layer and draw."
    widget.add_button.click()                             # the dock's button
    assert "Pick or add" not in widget.annotation_label.text()
    wait_ready(qtbot, widget)
    assert "Pick or add" not in widget.annotation_label.text() and "my annotation" in widget.annotation_label.text()
    # a Labels layer added the napari way (layer list button) while none is picked becomes the one to draw in
    widget.set_annotation_layer(None)
    assert widget.annotation_label.text() == "Pick or add your annotation layer and draw."
    drawn = viewer.add_labels(np.zeros(soft.shape, np.uint8), name="Labels")
    assert same_layer(widget.annotation_layer(), drawn)
    wait_ready(qtbot, widget)
    assert "'Labels' is empty" in widget.annotation_label.text()
