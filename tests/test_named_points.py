"""Named cohort operating points in the Threshold explorer: presets, marks on the PR curve, cohort mode, stale points.

The model and its points are built with the core API (a tiny untrained network; the cohort is the test
phantom at other seeds, reduced to histograms without predicting), the soft map names the model in its
provenance the way the viewer's Predict does, and the dock is opened the napari way.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _analysis_case import SPACING, counts, make_case, open_dock, wait_ready

from napari_softseg._napari.layers import add_layer_tuples, rater_layers, soft_map_layer
from napari_softseg.analysis.cohort import Cohort, case_histogram, choose_point, parse_requirement
from napari_softseg.analysis.cohort_curves import CohortCurve, curve_summary
from napari_softseg.model.model_io import CONFIG_FILE, ModelConfig, load_model, new_network, save_model
from napari_softseg.pipeline.named_points import model_points
from napari_softseg.pipeline.operating_points import CohortData, point_record
from napari_softseg.pipeline.point_store import POINTS_FILE, store_point

DOCK = "Threshold explorer"
POINTS = {"screening": "sensitivity>=0.9", "confirm": "ppv>=0.9"}


def _cohort() -> Cohort:
    cases = []
    for seed in range(10, 18):
        soft, masks, _ = make_case(seed)
        cases.append(case_histogram(soft, masks, name=f"case{seed}", spacing=SPACING))
    return Cohort(cases)


@pytest.fixture(scope="module")
def model_with_points(tmp_path_factory):
    """A tiny model folder with two named points chosen on an 8-case cohort (``operating_points.json``)."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("named")
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, weights_dtype="float32")
    model_dir = save_model(folder / "model", new_network(config), config)
    cohort = _cohort()
    data = CohortData(cohort=cohort, dataset=folder / "Validation", predictions=None, rater_counts=[4] * len(cohort))
    model = load_model(model_dir)
    for name, requirement in POINTS.items():
        point = choose_point(cohort, parse_requirement(requirement), n_boot=200)
        store_point(model_dir, point_record(point, data, model, name))
    return model_dir


def open_predicted_case(viewer, model_dir, **provenance):
    """The test case, its soft map recorded as predicted by ``model_dir``; returns ``(soft, masks)`` as displayed."""
    soft, masks, geometry = make_case(3)
    raters = add_layer_tuples(viewer, rater_layers(masks, [f"rater {i + 1}" for i in range(len(masks))], geometry))
    (layer,) = add_layer_tuples(viewer, [soft_map_layer(soft, geometry, name="soft prediction", kind="prediction",
                                                        model=str(model_dir), **provenance)])
    return np.asarray(layer.data), np.stack([np.asarray(r.data) for r in raters])


def explorer_for(make_napari_viewer, qtbot, model_dir, **provenance):
    viewer = make_napari_viewer()
    soft, masks = open_predicted_case(viewer, model_dir, **provenance)
    widget = open_dock(viewer, DOCK)
    wait_ready(qtbot, widget)
    return widget, soft, masks


def choose_in_box(panel, name):
    """Pick ``name`` in the box as a user does (select the entry; the box emits ``activated``)."""
    index = next(i for i in range(panel.combo.count()) if panel.combo.itemText(i).startswith(name + ":"))
    panel.combo.setCurrentIndex(index)
    panel.combo.activated.emit(index)


def test_curve_summary_is_the_pooled_curve_and_the_per_case_percentiles():
    cohort = _cohort()
    summary = curve_summary(cohort)
    curve = CohortCurve.from_dict(json.loads(json.dumps(summary)))    # as stored: plain JSON
    assert len(curve.thresholds) == 101 and curve.n_cases == 8 and curve.percentiles == (10, 50, 90)
    pooled = cohort.pooled()
    k = np.arange(0, 1001, 10)
    np.testing.assert_allclose(curve.sensitivity, pooled.recall[k], atol=1e-4)
    np.testing.assert_allclose(curve.ppv, pooled.precision[k], atol=1e-4)
    np.testing.assert_allclose(curve.sensitivity_band, np.percentile(cohort.per_case("sensitivity")[:, k],
                                                                     [10, 50, 90], axis=0), atol=1e-4)
    assert np.all(curve.ppv_band[0] <= curve.ppv_band[2])
    assert len(json.dumps(summary)) < 12_000
    # an older point (no summary) or a damaged one: no curve, nothing raised
    assert CohortCurve.from_dict(None) is None
    assert CohortCurve.from_dict({**summary, "per_case_ppv": summary["per_case_ppv"][:2]}) is None


def test_picking_a_named_point_sets_the_slider_and_says_what_it_is(make_napari_viewer, qtbot, model_with_points):
    widget, soft, masks = explorer_for(make_napari_viewer, qtbot, model_with_points)
    panel = widget.named_points
    assert panel.offered() == ["confirm", "screening"]
    assert "2 named point(s) of model model" in panel.status.text()
    stored = json.loads((model_with_points / POINTS_FILE).read_text())["points"]["screening"]
    t = stored["threshold"]
    choose_in_box(panel, "screening")
    qtbot.waitUntil(lambda: widget.slider.value() == round(t * 1000))
    assert widget.threshold == pytest.approx(t) and widget.spin.value() == pytest.approx(t)
    text = panel.details.text()
    assert panel.details.isVisibleTo(widget)
    assert "sensitivity>=0.9" in text and "8 case(s) of Validation" in text
    lo, hi = stored["ci"]
    assert f"CI over cases {lo:.3f}–{hi:.3f}" in text and f"chosen {stored['created'][:10]} " in text
    # the statistics are those of the open case at the point's t
    tp, fp, fn, _ = counts(soft >= t, masks.sum(0) >= 2)
    assert widget.stat_labels["sensitivity"].text() == f"{tp / (tp + fn):.3f}"


def test_named_points_are_marked_on_the_case_curve(make_napari_viewer, qtbot, model_with_points):
    widget, soft, masks = explorer_for(make_napari_viewer, qtbot, model_with_points)
    plot = widget.plot
    qtbot.waitUntil(lambda: len(plot.named_marks.get_xdata()) == 2)
    stored = json.loads((model_with_points / POINTS_FILE).read_text())["points"]
    ref = masks.sum(0) >= 2
    expected = []
    for name in ("confirm", "screening"):
        mask = soft >= stored[name]["threshold"]
        tp, fp, fn, _ = counts(mask, ref)
        expected.append((tp / (tp + fn), tp / mask.sum()))
    xs, ys = plot.named_marks.get_data()
    np.testing.assert_allclose(np.column_stack([xs, ys]), expected, atol=1e-9)
    # each label names its mark; the labels are stacked highest mark first, clear of each other
    labels = {text.get_text(): text for text in plot.named_labels}
    assert sorted(labels) == ["confirm", "screening"]
    for name, xy in zip(("confirm", "screening"), expected):
        np.testing.assert_allclose(labels[name].xy, xy, atol=1e-9)
    heights = [text.xyann[1] for text in plot.named_labels]
    assert [text.xy[1] for text in plot.named_labels] == sorted((y for _, y in expected), reverse=True)
    assert heights[0] - heights[1] > 0.05
    assert plot.named_marks in plot.legend_handles()
    # a slider move does not touch them; a reference change moves them onto the new curve
    widget.slider.setValue(200)
    assert len(plot.named_marks.get_xdata()) == 2
    widget.reference_combo.setCurrentIndex(1)            # rater 1 alone
    wait_ready(qtbot, widget)
    rater1 = masks[0] > 0
    mask = soft >= stored["screening"]["threshold"]
    tp, _, fn, _ = counts(mask, rater1)
    qtbot.waitUntil(lambda: plot.named_marks.get_xdata()[1] == pytest.approx(tp / (tp + fn)))


def test_cohort_mode_draws_the_pooled_curve_and_the_case_band(make_napari_viewer, qtbot, model_with_points):
    widget, _, _ = explorer_for(make_napari_viewer, qtbot, model_with_points)
    panel, plot = widget.named_points, widget.plot
    assert panel.cohort_check.isEnabled() and not panel.cohort_check.isChecked()
    assert plot.cohort_band is None and len(plot.cohort_line.get_xdata()) == 0
    panel.cohort_check.click()
    qtbot.waitUntil(lambda: plot.cohort_band is not None)
    curve = CohortCurve.from_dict(curve_summary(_cohort()))
    np.testing.assert_allclose(plot.cohort_line.get_xdata(), curve.sensitivity)
    np.testing.assert_allclose(plot.cohort_line.get_ydata(), curve.ppv)
    band = plot.cohort_band.get_xy()
    assert len(band) >= 2 * 100
    np.testing.assert_allclose(band[:101], np.column_stack([curve.sensitivity_band[0], curve.ppv_band[0]]))
    assert plot.cohort_band in plot.legend_handles() and "8 case(s)" in plot.cohort_band.get_label()
    panel.cohort_check.click()
    qtbot.waitUntil(lambda: plot.cohort_band is None)
    assert len(plot.cohort_line.get_xdata()) == 0


def test_stale_points_are_listed_but_not_offered(make_napari_viewer, qtbot, model_with_points, tmp_path):
    model_dir = shutil.copytree(model_with_points, tmp_path / "retrained")
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    config["temperature"] = 1.7                            # recalibrated since the points were chosen
    (model_dir / CONFIG_FILE).write_text(json.dumps(config))
    widget, _, _ = explorer_for(make_napari_viewer, qtbot, model_dir)
    panel = widget.named_points
    assert panel.offered() == [] and len(panel.points) == 2
    assert "0 named point(s)" in panel.status.text() and "2 stale, not offered" in panel.status.text()
    for i in range(1, panel.combo.count()):
        assert panel.combo.itemText(i).endswith("— stale")
        assert not panel.combo.model().item(i).isEnabled()
    before = widget.threshold
    choose_in_box(panel, "screening")
    assert widget.threshold == before and panel.pick("screening") is None
    assert len(widget.plot.named_marks.get_xdata()) == 0 and not panel.cohort_check.isEnabled()
    assert "config.json" in panel.points[0].stale


def test_points_of_other_weights_than_the_prediction_are_stale(model_with_points):
    found = model_points(model_with_points, prediction_sha256="0" * 64)
    assert found.current == [] and all("other weights" in p.stale for p in found.points)
    assert [p.name for p in model_points(model_with_points).current] == ["confirm", "screening"]


def test_an_older_points_file_without_curves_still_gives_presets(make_napari_viewer, qtbot, model_with_points, tmp_path):
    model_dir = shutil.copytree(model_with_points, tmp_path / "older")
    record = json.loads((model_dir / POINTS_FILE).read_text())["points"]["screening"]
    record.pop("cohort_curve")
    (model_dir / POINTS_FILE).unlink()
    store_point(model_dir, record)                        # a file written before curves were stored
    widget, _, _ = explorer_for(make_napari_viewer, qtbot, model_dir)
    panel = widget.named_points
    assert panel.offered() == ["screening"] and not panel.cohort_check.isEnabled()
    assert panel.pick("screening") is not None and widget.threshold == pytest.approx(record["threshold"])


def test_a_soft_map_without_a_model_has_no_named_points(make_napari_viewer, qtbot):
    from _analysis_case import case_with_dock

    widget, *_ = case_with_dock(make_napari_viewer, qtbot, DOCK)
    panel = widget.named_points
    assert not panel.combo.isEnabled() and panel.offered() == []
    assert "no model recorded" in panel.status.text() and not panel.cohort_check.isEnabled()
    assert len(widget.plot.named_marks.get_xdata()) == 0
