"""Dataset review: the Qt-free state (pipeline/dataset_review.py, analysis/review.py) and the dock, opened the
way napari opens it."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_case import open_dock, wait_ready
from qtpy.QtCore import Qt

from napari_softseg.analysis.consensus import consensus_mask
from napari_softseg.analysis.metrics import dice, qubiq_score
from napari_softseg.analysis.review import case_stats, most_disputed_slice, most_uncertain_slice
from napari_softseg.datasets.bundled import demo_dataset_path, demo_model_path
from napari_softseg.io.dataset import load_case
from napari_softseg.io.nifti import load_volume
from napari_softseg.pipeline.dataset_review import DatasetReview, default_predictions_folder
from napari_softseg.progress import drive


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """The bundled Validation cases and the bundled model's predictions of them (in a temporary folder)."""
    preds = tmp_path_factory.mktemp("review") / "preds"
    review = DatasetReview(demo_dataset_path() / "Validation", preds)
    assert drive(review.predict(demo_model_path(), device="cpu")) == 4
    return review.dataset, preds


def test_case_stats_are_the_package_metrics():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 10, 12, 4)) > 0.5).astype(np.uint8)
    p = rng.random((10, 12, 4)).astype(np.float32)
    stats = case_stats(p, masks, spacing=(2.0, 1.0, 0.5), threshold=0.3)
    assert stats.qubiq == pytest.approx(qubiq_score(p, masks)[0])
    assert stats.dice == pytest.approx(dice(p >= np.float32(0.3), consensus_mask(masks)))
    assert stats.predicted_ml == pytest.approx(np.count_nonzero(p >= np.float32(0.3)) * 0.001)
    assert stats.uncertain_ml == pytest.approx(np.count_nonzero((p > 0.1) & (p < 0.9)) * 0.001)
    count = masks.sum(0)
    assert stats.disputed_ml == pytest.approx(np.count_nonzero((count > 0) & (count < 3)) * 0.001)
    only_raters = case_stats(None, masks)
    assert only_raters.qubiq is None and only_raters.disputed_ml == pytest.approx(stats.disputed_ml)
    p[:, :, 2] = 0.5
    assert most_uncertain_slice(p, axis=2) == 2
    masks[:, :, :, 3] = 0
    masks[0, :, :, 3] = 1
    assert most_disputed_slice(masks, axis=2) == 3


def test_review_rows_scores_order_and_reuse(predicted):
    dataset, preds = predicted
    review = DatasetReview(dataset, preds)
    assert [r.name for r in review.rows] == ["case13", "case14", "case15", "case16"]
    assert all(r.n_raters == 5 and r.shape == (80, 96, 16) and r.spacing == (2.0, 2.0, 2.5) for r in review.rows)
    assert all(r.prediction is not None for r in review.rows)
    drive(review.compute_stats(0.5))
    case = load_case(review.cases["case13"], 1)
    p = load_volume(preds / "case13" / "prediction_task01.nii.gz").data
    assert review.row("case13").stats.qubiq == pytest.approx(qubiq_score(p, case.masks)[0])
    ranked = [r.name for r in review.sorted_rows("uncertain_ml", descending=True)]
    values = [review.row(n).stats.uncertain_ml for n in ranked]
    assert values == sorted(values, reverse=True)
    walk, name = [], None
    while (row := review.next_most_uncertain(name)) is not None:
        walk.append(row.name)
        name = row.name
    assert walk == ranked
    stamps = {f: f.stat().st_mtime_ns for f in preds.rglob("*.nii.gz")}
    assert drive(review.predict(demo_model_path(), device="cpu")) == 4  # the run record says: same model, reuse
    assert {f: f.stat().st_mtime_ns for f in preds.rglob("*.nii.gz")} == stamps
    assert default_predictions_folder(dataset) == dataset.resolve().parent / "Validation_softseg_predictions"


def test_dock_sorts_opens_in_place_and_jumps_to_slices(make_napari_viewer, qtbot, predicted):
    dataset, preds = predicted
    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Dataset review")
    dock.open_dataset(dataset, preds)
    wait_ready(qtbot, dock, timeout=60000)
    assert dock.table.rowCount() == 4
    review = dock.review
    assert [dock._name_at(r) for r in range(4)] == ["case13", "case14", "case15", "case16"]
    shown = {dock._name_at(r): dock.table.item(r, 1).text() for r in range(4)}
    assert shown == {r.name: f"{r.stats.qubiq:.3f}" for r in review.rows}

    dock.table.sortItems(3, order=Qt.SortOrder.DescendingOrder)  # uncertain mL
    assert [dock._name_at(r) for r in range(4)] == [r.name for r in review.sorted_rows("uncertain_ml", True)]

    dock.table.cellClicked.emit(0, 0)  # the most uncertain case, as a click opens it
    first = dock._name_at(0)
    wait_ready(qtbot, dock)
    assert dock.current == first
    names = [layer.name for layer in viewer.layers]
    assert len(names) == len(dock.case_layers) >= 7  # image, 5 raters, soft label, prediction
    assert sum(layer.metadata.get("softseg", {}).get("kind") == "prediction" for layer in viewer.layers) == 1
    raters = [layer for layer in viewer.layers if layer.metadata.get("softseg", {}).get("kind") == "rater"]
    assert len(raters) == 5 and not any(layer.visible for layer in raters)  # scan + prediction at a glance

    dock.next_uncertain_case()  # the second in the ranking replaces the first
    wait_ready(qtbot, dock)
    second = review.sorted_rows("uncertain_ml", True)[1].name
    assert dock.current == second and len(viewer.layers) == len(names)
    assert all(layer in dock.case_layers for layer in viewer.layers)
    assert [layer.name for layer in viewer.layers if layer.metadata.get("softseg", {}).get("kind") == "image"] == \
        [f"{second} image"]

    axis = int(viewer.dims.order[0])
    pred = next(layer for layer in viewer.layers if layer.metadata.get("softseg", {}).get("kind") == "prediction")
    data = np.asarray(pred.data)
    others = tuple(i for i in range(data.ndim) if i != axis)
    expected = int(np.argmax(np.count_nonzero((data > 0.1) & (data < 0.9), axis=others)))
    assert dock.jump_to_uncertain_slice() == expected
    assert viewer.dims.current_step[axis] == expected

    raters = [np.asarray(layer.data) for layer in viewer.layers
              if layer.metadata.get("softseg", {}).get("kind") == "rater"]
    count = np.sum(raters, axis=0)
    expected = int(np.argmax(np.count_nonzero((count > 0) & (count < len(raters)), axis=others)))
    assert dock.jump_to_disputed_slice() == expected
    assert viewer.dims.current_step[axis] == expected
    assert all(layer.visible for layer in viewer.layers if layer.metadata.get("softseg", {}).get("kind") == "rater")


def test_dock_joins_the_tabbed_column_and_fits_it(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QDockWidget

    from napari_softseg._qt.dock_column import DOCK_WIDTH

    viewer = make_napari_viewer()
    open_dock(viewer, "Calibration")
    dock = open_dock(viewer, "Dataset review")
    window = viewer.window._qt_window
    frames = {d.windowTitle(): d for d in window.findChildren(QDockWidget)}
    qtbot.waitUntil(lambda: frames["Dataset review"] in window.tabifiedDockWidgets(frames["Calibration"]))
    assert dock.minimumSizeHint().width() <= DOCK_WIDTH
    assert not dock.predict_button.isEnabled() and not dock.uncertain_slice_button.isEnabled()
