"""Dataset review: a sortable table of a dataset's cases; a click opens a case in place of the previous one.

The dock is a view of :class:`~napari_softseg.pipeline.dataset_review.DatasetReview` (Qt-free):

* *Open dataset…* lists the cases (name, raters, shape, spacing from the headers) and scores those with a
  soft map in the predictions folder (``<dataset>_softseg_predictions`` beside the dataset): QUBIQ, Dice of
  ``p >= t`` against the consensus, predicted, uncertain (0.1 < p < 0.9) and disputed (some raters but not
  all) volume in mL. Click a column header to sort.
* *Predict all* runs the chosen model on every case in a worker, with progress and a cancel through
  napari's activity dock; the predictions folder keeps a run record, so a second run reuses them and an
  interrupted one resumes.
* A click on a row opens that case (image, raters, soft label and its prediction; the raters hidden while
  there is a prediction, so the scan and the map read at a glance) and removes the layers of the case
  opened before; *Next most uncertain* walks the cases from the largest uncertain volume down.
* *Most uncertain slice* / *Most disputed slice* move the viewer to the slice (along the sliced axis) with
  the most uncertain voxels of the prediction, or the most voxels the raters disagree on (showing the raters).

Background work runs in :class:`~napari_softseg._qt.background.LatestJob` channels; :attr:`DatasetReviewDock.ready`
is False meanwhile (tests wait on it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_softseg._napari import layers as L
from napari_softseg._napari.reader import read
from napari_softseg._qt.background import ComputeStatus, LatestJob
from napari_softseg._qt.dock_column import join_column_when_docked
from napari_softseg._qt.dock_layout import dock_sections
from napari_softseg._qt.notifications import notify_exception
from napari_softseg._qt.plot_preload import preload_plots
from napari_softseg.analysis.review import disputed_mask, uncertain_mask
from napari_softseg.errors import SoftsegError
from napari_softseg.pipeline.dataset_review import DatasetReview
from napari_softseg.progress import Progress

TITLE = "Dataset review"
#: Table columns: (header, row attribute or stats field, format).
COLUMNS = (
    ("case", "name", "{}"),
    ("QUBIQ", "qubiq", "{:.3f}"),
    ("Dice\n@t", "dice", "{:.3f}"),
    ("uncertain\nmL", "uncertain_ml", "{:.1f}"),
    ("disputed\nmL", "disputed_ml", "{:.1f}"),
    ("pred.\nmL", "predicted_ml", "{:.1f}"),
    ("raters", "n_raters", "{}"),
    ("shape", "shape", "{}"),
    ("spacing\nmm", "spacing", "{}"),
)
TOOLTIPS = {
    1: "QUBIQ score of the prediction against the raters (mean Dice at 0.1 ... 0.9)",
    2: "Dice of the mask p >= t against the consensus (at least half of the raters)",
    3: "volume where the prediction is uncertain: 0.1 < p < 0.9",
    4: "volume marked by some raters but not all",
    5: "volume of the mask p >= t",
}
#: Rows shown before the table scrolls.
VISIBLE_ROWS = 12


class _SortItem(QTableWidgetItem):
    """A cell that sorts by its value (numbers as numbers; missing values last)."""

    def __init__(self, text: str, value):
        super().__init__(text)
        self.setData(Qt.ItemDataRole.UserRole, value)

    def __lt__(self, other):  # noqa: D105
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if a is None or b is None:
            return a is not None  # known values before missing ones (ascending)
        return a < b


def _text(value, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, tuple):
        return "×".join(f"{v:g}" for v in value)
    return fmt.format(value)


def _open_work(path: Path, prediction: Path | None):
    """Read a case folder (and its soft map) into layer-data tuples: a Progress generator for a worker."""
    yield Progress("open", 0, 2, f"reading {path.name}")
    tuples = read(path)
    if prediction is not None:
        yield Progress("open", 1, 2, f"reading {prediction.name}")
        tuples += read(prediction)
    return tuples


def _predict_and_score(review: DatasetReview, model: str, threshold: float):
    yield from review.predict(model)
    return (yield from review.compute_stats(threshold))


class DatasetReviewDock(QWidget):
    """Dock widget: review a dataset case by case, sorted by what needs a look.

    Args:
        napari_viewer: The viewer (napari passes it by this name).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        preload_plots()  # matplotlib off the GUI thread, before a plot dock needs it
        self.review: DatasetReview | None = None
        self.current: str | None = None
        self.case_layers: list = []
        self.folder = QLineEdit()
        self.folder.setReadOnly(True)
        self.folder.setPlaceholderText("no dataset open")
        self.open_button = QPushButton("Open dataset…")
        self.model = QLineEdit()
        self.model.setPlaceholderText("model folder for Predict all")
        self.model_button = QPushButton("Model…")
        self.predict_button = QPushButton("Predict all")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setDecimals(3)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.5)
        self.threshold.setToolTip("t of the mask p >= t scored by Dice@t and pred. mL")
        self.next_button = QPushButton("Next most uncertain")
        self.uncertain_slice_button = QPushButton("Most uncertain slice")
        self.disputed_slice_button = QPushButton("Most disputed slice")
        self.status = QLabel("Open a dataset folder (QUBIQ layout or case folders).")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c[0] for c in COLUMNS])
        for column, tip in TOOLTIPS.items():
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setMinimumSectionSize(24)
        self.progress = ComputeStatus()
        self.job = LatestJob(self, TITLE, self.progress)          # predictions and scores
        self.open_job = LatestJob(self, f"{TITLE}: open case", self.progress)

        top, body = dock_sections(self)
        for widgets in ((self.folder, self.open_button), (self.model, self.model_button, self.predict_button),
                        (QLabel("t"), self.threshold, self.next_button),
                        (self.uncertain_slice_button, self.disputed_slice_button)):
            row = QHBoxLayout()
            for w in widgets:
                row.addWidget(w, 1 if isinstance(w, QLineEdit) else 0)
            top.addLayout(row)
        top.addWidget(self.progress)
        body.addWidget(self.table)
        body.addWidget(self.status)
        body.addStretch(1)
        join_column_when_docked(self, TITLE)

        self.open_button.clicked.connect(self._choose_dataset)
        self.model_button.clicked.connect(self._choose_model)
        self.predict_button.clicked.connect(self.predict)
        self.threshold.editingFinished.connect(self.score)
        self.table.cellClicked.connect(lambda row, _column: self.open_case(self._name_at(row)))
        self.next_button.clicked.connect(self.next_uncertain_case)
        self.uncertain_slice_button.clicked.connect(self.jump_to_uncertain_slice)
        self.disputed_slice_button.clicked.connect(self.jump_to_disputed_slice)
        self.job.busy_changed.connect(self._update_buttons)
        self.open_job.busy_changed.connect(self._update_buttons)
        self._update_buttons()

    # -- state ---------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """False while predictions, scores or a case are being read in the background."""
        return not self.job.busy and not self.open_job.busy

    def _update_buttons(self, *_):
        have = self.review is not None
        self.predict_button.setEnabled(have and not self.job.busy)
        self.next_button.setEnabled(have and any(r.stats.uncertain_ml is not None for r in self.review.rows))
        opened = self.current is not None and not self.open_job.busy
        self.uncertain_slice_button.setEnabled(opened)
        self.disputed_slice_button.setEnabled(opened)

    # -- dataset ---------------------------------------------------------------------------------------
    def _choose_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a dataset folder")
        if folder:
            self.open_dataset(folder)

    def _choose_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (model.safetensors + config.json)")
        if folder:
            self.model.setText(folder)

    def open_dataset(self, path, predictions=None) -> None:
        """List the cases of ``path`` and score those already predicted (in the background)."""
        try:
            self.review = DatasetReview(path, predictions)
        except SoftsegError as exc:
            notify_exception(exc, action=TITLE)
            self.status.setText(str(exc))
            return
        self.current = None
        self.folder.setText(str(path))
        self.folder.setToolTip(f"{path}\npredictions: {self.review.predictions}")
        have = sum(r.prediction is not None for r in self.review.rows)
        self.status.setText(f"{len(self.review.rows)} case(s); {have} with a prediction in {self.review.predictions}"
                            + ("" if have else " (Predict all to make them)"))
        self._fill()
        self.score()

    def score(self) -> None:
        """Recompute the rows' numbers at the current t (in the background)."""
        if self.review is None:
            return
        self.job.start(self.review.compute_stats(self.threshold.value()), self._on_rows, message="scoring cases …")

    def predict(self) -> None:
        """Predict every case with the chosen model (cached, resumable), then score them."""
        if self.review is None:
            return
        model = self.model.text().strip()
        if not model:
            self.status.setText("Choose a model folder first (Model…).")
            return
        self.job.start(_predict_and_score(self.review, model, self.threshold.value()), self._on_rows,
                       message="predicting the dataset …", on_error=self._on_error)

    def _on_error(self, exc: BaseException) -> None:
        notify_exception(exc, action=TITLE)
        self.status.setText(str(exc))
        self.review.refresh_predictions()
        self._fill()

    def _on_rows(self, rows) -> None:
        have = sum(r.prediction is not None for r in rows)
        problems = [f"{r.name}: {r.problem}" for r in rows if r.problem]
        self.status.setText(f"{len(rows)} case(s); {have} predicted in {self.review.predictions}"
                            + ("".join(f"\n{p}" for p in problems[:5])))
        self._fill()

    def _fill(self) -> None:
        rows = self.review.rows if self.review is not None else []
        header = self.table.horizontalHeader()
        column, order = header.sortIndicatorSection(), header.sortIndicatorOrder()
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):  # rows come in the dataset's natural order: case2 before case10
            for c, (_, key, fmt) in enumerate(COLUMNS):
                value = getattr(row, key) if key in ("name", "n_raters", "shape", "spacing") else row.value(key)
                sort_value = r if key == "name" else (float(np.prod(value)) if isinstance(value, tuple) else value)
                item = _SortItem(_text(value, fmt), sort_value)
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole + 1, row.name)
                    item.setToolTip(row.problem or str(row.path))
                else:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(column if 0 <= column < len(COLUMNS) else 0, order)
        self._fit_columns()
        shown = min(len(rows), VISIBLE_ROWS)
        height = (header.height() + sum(self.table.rowHeight(i) for i in range(shown))
                  + self.table.horizontalScrollBar().sizeHint().height() + 2 * self.table.frameWidth() + 2)
        self.table.setFixedHeight(max(height, 60))
        self._select(self.current)
        self._update_buttons()

    def _fit_columns(self) -> None:
        """Each column as wide as its cells or its longest header line (no room kept for the sort arrow, which
        Qt draws over the text's margin), so the main columns fit a narrow dock."""
        metrics = self.table.horizontalHeader().fontMetrics()
        for c, (title, _, _) in enumerate(COLUMNS):
            text = max(metrics.horizontalAdvance(line) for line in title.split("\n")) + 12
            self.table.setColumnWidth(c, max(text, self.table.sizeHintForColumn(c)))

    def _name_at(self, row: int) -> str:
        return self.table.item(row, 0).data(Qt.ItemDataRole.UserRole + 1)

    def _select(self, name: str | None) -> None:
        for r in range(self.table.rowCount()):
            if self._name_at(r) == name:
                self.table.selectRow(r)
                return

    # -- cases ----------------------------------------------------------------------------------------
    def open_case(self, name: str) -> None:
        """Open case ``name`` (and its prediction) in place of the case opened before (in the background)."""
        row = self.review.row(name)
        self.current = name
        self._select(name)
        self.open_job.start(_open_work(row.path, row.prediction), lambda tuples: self._show_case(name, tuples),
                            message=f"opening {name} …")

    def _show_case(self, name: str, tuples: list) -> None:
        for layer in self.case_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.case_layers = L.add_layer_tuples(self.viewer, tuples, rater_contours=True)
        if any(L.kind_of(layer) == "prediction" for layer in self.case_layers):
            for layer in self._layers("rater"):  # scan + prediction at a glance; the raters come back on demand
                layer.visible = False
        stats = self.review.row(name).stats
        extra = "" if stats.uncertain_ml is None else f": uncertain {stats.uncertain_ml:.1f} mL"
        self.status.setText(f"opened {name}{extra}")
        self._update_buttons()

    def next_uncertain_case(self) -> None:
        """Open the case after the current one in order of uncertain volume (largest first)."""
        if self.review is None:
            return
        row = self.review.next_most_uncertain(self.current)
        if row is None:
            self.status.setText("no further case with a prediction" if self.current else "predict the cases first")
            return
        self.open_case(row.name)

    # -- slices ---------------------------------------------------------------------------------------
    def _layers(self, kind: str) -> list:
        return [layer for layer in self.case_layers if layer in self.viewer.layers and L.kind_of(layer) == kind]

    def _jump(self, layer, volume: np.ndarray, what: str) -> int | None:
        """Move the viewer to the slice along the sliced axis where ``volume`` (layer data order) has most voxels."""
        axis = int(self.viewer.dims.order[0])
        if volume.ndim != self.viewer.dims.ndim:
            self.status.setText(f"{what}: the layer is {volume.ndim}D in a {self.viewer.dims.ndim}D view")
            return None
        others = tuple(i for i in range(volume.ndim) if i != axis)
        index = int(np.argmax(np.count_nonzero(volume, axis=others)))
        centre = [(s - 1) / 2 for s in volume.shape]
        centre[axis] = index
        world = layer.data_to_world(centre)
        self.viewer.dims.set_point(axis, float(world[axis]))
        self.status.setText(f"{self.current}: {what} is slice {index} of {volume.shape[axis]}")
        return index

    def jump_to_uncertain_slice(self) -> int | None:
        """Go to the slice with the most uncertain voxels (0.1 < p < 0.9) of the case's prediction."""
        layers = self._layers("prediction") or self._layers("soft_label")
        if not layers:
            self.status.setText("no prediction for this case: Predict all first")
            return None
        layer = layers[0]
        return self._jump(layer, uncertain_mask(np.asarray(layer.data)), "the most uncertain slice")

    def jump_to_disputed_slice(self) -> int | None:
        """Go to the slice where the case's raters disagree on the most voxels."""
        raters = self._layers("rater")
        if len(raters) < 2:
            self.status.setText("rater disagreement needs at least two raters")
            return None
        masks = np.stack([np.asarray(layer.data) for layer in raters])
        for layer in raters:  # the disagreement is what the user came to see
            layer.visible = True
        return self._jump(raters[0], disputed_mask(masks), "the most disputed slice")
