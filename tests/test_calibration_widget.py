"""Calibration dock: reliability diagram and ECE against the soft label and each rater (headless)."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_case import Notifications, case_with_dock, open_dock, wait_ready


def numpy_ece(p, y, n_bins=10):
    """ECE written out independently: 10 equal-width bins, |mean p - mean y| weighted by bin size."""
    p = p.ravel().astype(np.float64)
    y = y.ravel().astype(np.float64)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = (p >= lo) & ((p < hi) if b < n_bins - 1 else (p <= hi))
        if sel.any():
            total += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return total / p.size


@pytest.fixture
def calibration(make_napari_viewer, qtbot):
    widget, viewer, _, soft, masks = case_with_dock(make_napari_viewer, qtbot, "Calibration")
    return widget, viewer, soft, masks


def test_ece_against_soft_label_and_each_rater(calibration, qtbot):
    from napari_softseg._qt.calibration_widget import SOFT_LABEL

    widget, viewer, soft, masks = calibration
    assert [name for name, _, _ in widget.results] == [SOFT_LABEL, "rater 1", "rater 2", "rater 3", "rater 4"]
    assert widget.ece(SOFT_LABEL) == pytest.approx(numpy_ece(soft, masks.mean(0)), abs=1e-9)
    for i in range(4):
        assert widget.ece(f"rater {i + 1}") == pytest.approx(numpy_ece(soft, masks[i]), abs=1e-9)
    assert widget.table.rowCount() == 5
    assert widget.table.item(0, 1).text() == f"{numpy_ece(soft, masks.mean(0)):.4f}"
    assert widget.headline.text() == f"ECE vs soft label: {numpy_ece(soft, masks.mean(0)):.4f}"
    widget.compute_button.click()
    wait_ready(qtbot, widget)
    assert widget.headline.text() == f"ECE vs soft label: {numpy_ece(soft, masks.mean(0)):.4f}"
    # reliability diagram: one line per target; the soft-label line is mean target vs mean prediction per bin
    assert len(widget.plot.series) == 5
    x, y = widget.plot.series[0].get_data()
    p = soft.ravel()
    target = masks.mean(0).ravel()
    bins = np.minimum((p * 10).astype(int), 9)
    occupied = np.unique(bins)
    np.testing.assert_allclose(x, [p[bins == b].mean() for b in occupied], rtol=1e-6)
    np.testing.assert_allclose(y, [target[bins == b].mean() for b in occupied], rtol=1e-6)


def test_follows_rater_choice_and_theme(calibration, qtbot):
    widget, viewer, soft, masks = calibration
    widget.inputs.set_rater_checked(widget.inputs.rater_layers()[0], False)
    assert not widget.ready and not widget.compute_button.isEnabled()
    wait_ready(qtbot, widget)
    assert widget.compute_button.isEnabled()
    assert [name for name, _, _ in widget.results][1:] == ["rater 2", "rater 3", "rater 4"]
    assert widget.ece(widget.results[0][0]) == pytest.approx(numpy_ece(soft, masks[1:].mean(0)), abs=1e-9)
    viewer.theme = "dark"
    dark = (widget.plot.figure.get_facecolor(), widget.plot.series[0].get_color())
    viewer.theme = "light"
    assert widget.plot.figure.get_facecolor() != dark[0]
    assert widget.plot.series[0].get_color() != dark[1]


def test_needs_raters(make_napari_viewer):
    notes = Notifications()
    try:
        viewer = make_napari_viewer()
        widget = open_dock(viewer, "Calibration")
        assert widget.results == []
        viewer.add_image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), name="p")
        assert widget.results == []
        assert any("calibration needs rater masks" in m for m in notes.messages("error"))
        assert len(viewer.layers) == 1
    finally:
        notes.close()


def test_painting_a_rater_recomputes_on_its_own(calibration, qtbot):
    widget, viewer, soft, masks = calibration
    rater = viewer.layers["rater 2"]
    rater.brush_size = 9
    rater.paint(tuple(n // 2 for n in soft.shape), 0)     # erase a blob (events.paint), no Recompute
    edited = masks.copy()
    edited[1] = np.asarray(rater.data) > 0
    assert (edited[1] != masks[1]).any()
    want = numpy_ece(soft, edited[1])
    qtbot.waitUntil(lambda: widget.ready and widget.ece("rater 2") == pytest.approx(want, abs=1e-9), timeout=20000)
    assert widget.ece(widget.results[0][0]) == pytest.approx(numpy_ece(soft, edited.mean(0)), abs=1e-9)
