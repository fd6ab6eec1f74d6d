"""Qt-free model of the threshold explorer: statistics, presets, overlay maths, contours."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_softseg.analysis.display import (
    OVERLAY_SWITCH,
    OVERLAY_WIDTH,
    ContourView,
    mask_boundary,
    overlay_contrast_limits,
    threshold_colormap_controls,
)
from napari_softseg.analysis.metrics import leave_one_rater_out
from napari_softseg.analysis.operating_point import (
    Reference,
    ThresholdSession,
    default_k,
    leave_one_out_curves,
    mask_operating_point,
    others_consensus,
    reference_array,
    snap,
)
from napari_softseg.datasets.synthetic import make_phantom


@pytest.fixture(scope="module")
def case():
    """A 3D phantom with 4 raters and a noisy soft map (values include exact grid values like 0.5)."""
    _, masks, _ = make_phantom((40, 36, 12), n_raters=4, seed=3)
    rng = np.random.default_rng(0)
    soft = masks.mean(0) + rng.normal(0.0, 0.15, masks.shape[1:]) * (rng.random(masks.shape[1:]) < 0.5)
    return np.clip(soft, 0, 1).astype(np.float32), masks


def counts(mask, ref):
    """TP, FP, FN, TN of a binary mask against a binary or soft reference, counted with numpy."""
    ref = ref.astype(np.float64)
    tp = ref[mask].sum()
    fp = mask.sum() - tp
    fn = ref.sum() - tp
    return tp, fp, fn, mask.size - mask.sum() - fn


REFERENCES = [Reference("consensus", k=1), Reference("consensus", k=3), Reference("rater", rater=1),
              Reference("soft"), Reference("expected")]


@pytest.mark.parametrize("reference", REFERENCES, ids=lambda r: f"{r.kind}-{r.k}-{r.rater}")
@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 0.731, 1.0])
def test_session_statistics_match_numpy(case, reference, t):
    soft, masks = case
    spacing = (0.8, 0.8, 2.5)
    session = ThresholdSession(soft, masks, spacing=spacing)
    session.reference = reference
    op = session.at(t)
    if reference.kind == "consensus":
        ref = masks.sum(0) >= reference.k
    elif reference.kind == "rater":
        ref = masks[reference.rater].astype(bool)
    elif reference.kind == "soft":
        ref = masks.mean(0)
    else:
        ref = soft
    mask = soft >= t
    tp, fp, fn, tn = counts(mask, ref)
    assert op.threshold == t
    assert op.tp == pytest.approx(tp, rel=1e-9, abs=1e-6)
    assert op.fp == pytest.approx(fp, rel=1e-9, abs=1e-6)
    assert op.fn == pytest.approx(fn, rel=1e-9, abs=1e-6)
    assert op.tn == pytest.approx(tn, rel=1e-9, abs=1e-6)
    if mask.any():
        assert op.precision == pytest.approx(tp / mask.sum())
    assert op.recall == pytest.approx(tp / ref.sum())
    assert op.specificity == pytest.approx(tn / (tn + fp))
    assert op.dice == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert op.volume_ml == pytest.approx(mask.sum() * 0.8 * 0.8 * 2.5 / 1000)


def test_session_snaps_to_grid_and_caches_curves(case):
    soft, masks = case
    session = ThresholdSession(soft, masks)
    assert session.reference == Reference("consensus", k=default_k(4)) == Reference("consensus", k=2)
    assert session.at(0.4996).threshold == 0.5
    assert snap(-3) == 0.0 and snap(7) == 1.0 and snap(0.12345) == 0.123
    curve = session.curve
    session.reference = Reference("soft")
    session.reference = Reference("consensus", k=2)
    assert session.curve is curve


def test_session_without_raters_is_expected_only(case):
    soft, masks = case
    session = ThresholdSession(soft, None)
    assert session.reference.kind == "expected" and session.n_raters == 0
    op = session.at(0.5)
    sel = soft >= 0.5
    assert op.precision == pytest.approx(soft[sel].mean())
    assert op.recall == pytest.approx(soft[sel].sum() / soft.sum())
    with pytest.raises(ValueError, match="needs rater masks"):
        session.reference = Reference("consensus", k=1)
    with pytest.raises(ValueError, match="does not match|shape"):
        ThresholdSession(soft, masks[:, :-1])


def test_reference_array_checks_range(case):
    _, masks = case
    with pytest.raises(ValueError, match="1 <= k <= 4"):
        reference_array(Reference("consensus", k=5), masks)
    with pytest.raises(ValueError, match="no rater 9"):
        reference_array(Reference("rater", rater=8), masks)
    with pytest.raises(ValueError, match="unknown reference"):
        Reference("nonsense")


def test_presets_pick_the_extreme_grid_thresholds(case):
    soft, masks = case
    session = ThresholdSession(soft, masks)
    ref = masks.sum(0) >= 2
    grid = np.arange(1001) / 1000
    recall = np.array([(ref & (soft >= t)).sum() / ref.sum() for t in grid])
    with np.errstate(invalid="ignore"):
        precision = np.array([(ref & (soft >= t)).sum() / max((soft >= t).sum(), 1) for t in grid])
    precision[[(soft >= t).sum() == 0 for t in grid]] = 1.0
    for target in (0.95, 0.8, 0.5):
        t = session.threshold_for_recall(target)
        k = round(t * 1000)
        assert recall[k] >= target and (k == 1000 or recall[k + 1] < target)
        assert t == grid[np.nonzero(recall >= target - 1e-12)[0][-1]]
    n_pos = np.array([(soft >= t).sum() for t in grid])
    precision[n_pos == 0] = 0.0            # an empty mask is no operating point
    for target in (0.9, 0.95):
        t = session.threshold_for_precision(target)
        k = round(t * 1000)
        assert precision[k] >= target and (k == 0 or precision[k - 1] < target)
        assert t == grid[np.nonzero(precision >= target - 1e-12)[0][0]]


def renderer_mask(values, t):
    """What a colormap with these controls draws as coloured at contrast limits for ``t`` (CPU emulation)."""
    lo, hi = overlay_contrast_limits(t)
    normalized = np.clip((values.astype(np.float64) - lo) / (hi - lo), 0, 1)
    return normalized >= threshold_colormap_controls()[1]


@pytest.mark.parametrize("t", [0.0, 0.001, 0.3, 0.5, 0.999, 1.0])
def test_overlay_limits_draw_exactly_the_mask(case, t):
    soft, _ = case
    # the soft map holds exact grid values (0, 0.25, 0.5, 0.75, 1) and noisy ones; only values in the tiny
    # ramp just below t (documented tolerance: 1e-6) may be drawn although p < t
    window = (soft < t) & (soft >= t - OVERLAY_WIDTH * (1 - OVERLAY_SWITCH))
    assert window.mean() < 1e-3
    drawn = renderer_mask(soft, t)
    np.testing.assert_array_equal(drawn[~window], (soft >= t)[~window])
    assert drawn[soft >= t].all()


def test_overlay_tolerance_is_a_thousandth_of_a_step():
    values = np.array([0.5 - 0.0006, 0.5 - 2e-6, 0.5 - 5e-7, 0.5, 0.5001], np.float64)
    assert renderer_mask(values, 0.5).tolist() == [False, False, True, True, True]
    assert OVERLAY_WIDTH * (1 - OVERLAY_SWITCH) == pytest.approx(1e-6)     # a thousandth of a 0.001 step


def reference_boundary(mask):
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


@pytest.mark.parametrize("shape", [(30, 25), (12, 10, 9), (2, 7)])
def test_mask_boundary_matches_scipy(shape):
    rng = np.random.default_rng(1)
    mask = ndimage.binary_opening(rng.random(shape) > 0.35) | (rng.random(shape) > 0.9)
    np.testing.assert_array_equal(mask_boundary(mask), reference_boundary(mask))
    assert not mask_boundary(np.zeros(shape, bool)).any()


def test_contour_view_outlines_only_the_requested_slice(case):
    soft, _ = case
    view = ContourView(soft, 0.5)
    assert view.shape == soft.shape and view.dtype == np.uint8 and view.ndim == 3
    plane = view[5]
    np.testing.assert_array_equal(plane.astype(bool), reference_boundary(soft[5] >= 0.5))
    view.threshold = 0.8
    np.testing.assert_array_equal(view[:, 3].astype(bool), reference_boundary(soft[:, 3] >= 0.8))
    stack = view[2:4]       # a 3D request is outlined plane by plane
    np.testing.assert_array_equal(stack[1].astype(bool), reference_boundary(soft[3] >= 0.8))
    np.testing.assert_array_equal(np.asarray(view)[7], view[7])
    # for a 3D view: volumes are not outlined (no work), planes still are, np.asarray outlines all
    flat = ContourView(soft, 0.8, outline_volumes=False)
    assert flat[2:4].shape == (2,) + soft.shape[1:] and not flat[2:4].any()
    np.testing.assert_array_equal(flat[3], view[3])
    np.testing.assert_array_equal(np.asarray(flat), np.asarray(view))


def test_contour_view_reuses_a_plane_only_while_the_threshold_alone_changes(case):
    soft, _ = case
    soft = np.array(soft)
    for upsample in (1, 2):
        data = soft.copy()
        view = ContourView(data, 0.5, upsample=upsample)
        at = (slice(None), 18 * upsample)                 # a plane across the memory order, gathered
        first = view[at]
        view.same_data = True                             # a slider step: only the threshold changes
        view.threshold = 0.8
        again = view[at]
        np.testing.assert_array_equal(again, ContourView(data, 0.8, upsample=upsample)[at])
        assert again.any() and not np.array_equal(first, again)
        # the kept plane is reused (an edit is not looked at while only the threshold changes) ...
        data[:, 18] = 0.0
        np.testing.assert_array_equal(view[at], again)
        # ... a request for another plane reads the data, and so does any request outside a threshold change
        np.testing.assert_array_equal(view[(slice(None), 19 * upsample)],
                                      ContourView(data, 0.8, upsample=upsample)[(slice(None), 19 * upsample)])
        view.same_data = False
        assert not view[at].any()
        # napari asks for a one-thick slab (``slice(z, z + 1)``): kept and reused the same way
        slab = (slice(None), slice(5 * upsample, 5 * upsample + 1))
        before = view[slab]
        assert before.shape == ContourView(data, 0.8, upsample=upsample)[slab].shape
        view.same_data = True
        view.threshold = 0.6
        data[:, 5] = 0.0
        np.testing.assert_array_equal(view[slab], ContourView(soft, 0.6, upsample=upsample)[slab])
        view.same_data = False
        assert not view[slab].any()


def test_mask_operating_point_binary_and_soft(case):
    soft, masks = case
    annotation = masks[0].astype(bool) | (soft > 0.9)
    ref = masks.sum(0) >= 2
    op = mask_operating_point(annotation, ref, (1.0, 2.0, 0.5))
    tp, fp, fn, tn = counts(annotation, ref)
    assert (op.tp, op.fp, op.fn, op.tn) == (tp, fp, fn, tn)
    assert op.precision == pytest.approx(tp / annotation.sum())
    assert op.recall == pytest.approx(tp / ref.sum())
    assert op.volume_ml == pytest.approx(annotation.sum() / 1000)
    assert math.isnan(op.threshold)
    soft_ref = masks.mean(0)
    op = mask_operating_point(annotation, soft_ref)
    assert op.recall == pytest.approx(soft_ref[annotation].sum() / soft_ref.sum())
    assert op.volume_ml is None
    # consistent with the PR curve: the mask p >= t scored this way equals the curve's point
    session = ThresholdSession(soft, masks)
    session.reference = Reference("soft")
    curve_op = session.at(0.6)
    mask_op = mask_operating_point(soft >= 0.6, soft_ref)
    assert mask_op.precision == pytest.approx(curve_op.precision)
    assert mask_op.recall == pytest.approx(curve_op.recall)
    with pytest.raises(ValueError, match="does not match"):
        mask_operating_point(annotation[:-1], ref)


def test_others_consensus_gives_leave_one_out_model_dice(case):
    soft, masks = case
    rows = leave_one_rater_out(masks, soft, threshold=0.4)
    session = ThresholdSession(soft, masks)
    for i, row in enumerate(rows):
        others = others_consensus(masks, i)
        expected = (np.delete(masks, i, 0).sum(0) >= 2)   # ceil(3 / 2) = 2 of the other 3
        np.testing.assert_array_equal(others, expected)
        from napari_softseg.analysis.metrics import PRCurve

        assert PRCurve(soft, others).at(0.4).dice == pytest.approx(row.model_dice_vs_same)
    assert session.n_raters == 4
    with pytest.raises(ValueError, match="at least 2"):
        others_consensus(masks[:1], 0)


def test_precision_preset_unreachable_is_none():
    # the most confident voxels are all wrong: no non-empty mask reaches precision 0.9
    soft = np.array([0.95, 0.9, 0.8, 0.3, 0.2], np.float32)
    ref = np.array([0, 0, 1, 1, 0], np.uint8)
    session = ThresholdSession(soft, ref[None])
    session.reference = Reference("rater", rater=0)
    assert session.threshold_for_precision(0.9) is None
    assert session.threshold_for_precision(0.5) == 0.201     # 0.2 < t <= 0.3: 2 right of 4 marked


def test_build_curve_runs_apart_from_the_session_and_is_cached_by_add_curve(case):
    soft, masks = case
    session = ThresholdSession(soft, masks)
    ref = Reference("rater", rater=1)
    assert not session.has_curve(ref)
    gen = session.build_curve(ref)
    events, curve = _events(gen)
    assert [e.stage for e in events] == ["PR curve"] and "rater 2" in events[0].message
    assert not session.has_curve(ref)            # building does not touch the session ...
    session.add_curve(ref, curve)                # ... the caller installs it
    assert session.has_curve(ref)
    session.reference = ref
    assert session.curve is curve
    mask = soft >= 0.3
    assert session.at(0.3).tp == (mask & (masks[1] > 0)).sum()
    with pytest.raises(ValueError, match="no rater 9"):
        session.build_curve(Reference("rater", rater=8))      # checked before any work
    with pytest.raises(ValueError, match="needs rater masks"):
        ThresholdSession(soft, None).build_curve(Reference("soft"))


def test_leave_one_out_curves_per_rater(case):
    soft, masks = case
    events, curves = _events(leave_one_out_curves(soft, masks))
    assert [(e.step, e.total) for e in events] == [(i, 4) for i in range(4)]
    rows = leave_one_rater_out(masks, soft, threshold=0.6)
    assert [c.at(0.6).dice for c in curves] == pytest.approx([r.model_dice_vs_same for r in rows])
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_curves(soft, masks[:1])


def _events(gen):
    """Drive a Progress generator: ``(events, result)``."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value
