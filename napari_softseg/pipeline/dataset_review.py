"""A dataset under review: its cases, their predictions (cached, resumable) and the numbers to sort them by.

The Qt-free state behind the *Dataset review* dock (and usable from scripts):

* :class:`DatasetReview` finds the cases of a dataset folder (:func:`~napari_softseg.io.dataset.discover`)
  and lists them as :class:`ReviewRow` s — name, raters, shape and spacing from the headers, nothing read.
* :meth:`DatasetReview.predict` runs :func:`~napari_softseg.pipeline.predict.predict_path` on the whole
  dataset into the predictions folder (default: ``<dataset>_softseg_predictions`` beside the dataset). That
  job keeps a run record, so predictions of the same model are reused and an interrupted run resumes.
* :meth:`DatasetReview.compute_stats` reads each case's masks and soft map and fills
  :class:`~napari_softseg.analysis.review.CaseStats` (QUBIQ, Dice at ``t`` vs the consensus, predicted,
  uncertain and disputed volume in mL). Both are :class:`~napari_softseg.progress.Progress` generators,
  run by the dock in a worker.
* :meth:`DatasetReview.sorted_rows` and :meth:`DatasetReview.next_most_uncertain` order the review.

Example:
    >>> from napari_softseg.datasets.bundled import demo_dataset_path
    >>> review = DatasetReview(demo_dataset_path() / "Validation")
    >>> [(row.name, row.n_raters, row.shape) for row in review.rows][:2]
    [('case13', 5, (80, 96, 16)), ('case14', 5, (80, 96, 16))]
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_softseg.analysis.review import CaseStats, case_stats
from napari_softseg.errors import PartialFailure, SoftsegError
from napari_softseg.io.dataset import discover, load_case
from napari_softseg.io.nifti import is_nifti_path, load_volume, read_header
from napari_softseg.model.model_io import LoadedModel
from napari_softseg.pipeline.predict import output_name, predict_path
from napari_softseg.progress import Progress

#: Columns a review can be sorted by (attribute of :class:`ReviewRow` or of its stats).
SORT_KEYS = ("name", "n_raters", "qubiq", "dice", "predicted_ml", "uncertain_ml", "disputed_ml")


@dataclass
class ReviewRow:
    """One case of the review.

    Attributes:
        name: Case name (relative to the dataset).
        path: Case folder.
        n_raters: Rater masks for the task.
        shape: ``(X, Y, Z)`` from the image header (``None`` if it could not be read).
        spacing: Voxel size in mm (``None`` likewise).
        prediction: The case's soft map in the predictions folder, if there is one.
        stats: Numbers from :meth:`DatasetReview.compute_stats`.
        problem: Why the case could not be read or scored (shown in the table).
    """

    name: str
    path: Path
    n_raters: int
    shape: tuple | None = None
    spacing: tuple | None = None
    prediction: Path | None = None
    stats: CaseStats = field(default_factory=CaseStats)
    problem: str | None = None

    def value(self, key: str):
        """The value sorted on for ``key`` (see :data:`SORT_KEYS`); ``None`` when not available."""
        if key in ("name", "n_raters"):
            return getattr(self, key)
        return getattr(self.stats, key)


def default_predictions_folder(dataset: str | os.PathLike) -> Path:
    """``<dataset>_softseg_predictions`` beside the dataset (predictions may not go inside it)."""
    dataset = Path(dataset).resolve()
    return dataset.with_name(dataset.name + "_softseg_predictions")


class DatasetReview:
    """The cases of one dataset folder and their review numbers.

    Args:
        dataset: Dataset folder (QUBIQ layout, one split, or plain case folders).
        predictions: Folder of the soft maps (as ``softseg predict`` writes for a dataset); default
            :func:`default_predictions_folder`.
        task: Task whose raters are shown and scored.

    Raises:
        SoftsegError: The folder holds no case.
    """

    def __init__(self, dataset: str | os.PathLike, predictions: str | os.PathLike | None = None, task: int = 1):
        self.dataset = Path(dataset)
        found = discover(self.dataset)
        if not found.cases:
            raise SoftsegError("no case found (expected case folders with image.nii.gz and task01_seg01.nii.gz ...)",
                               self.dataset)
        self.problems = list(found.problems)
        self.task = int(task)
        self.predictions = Path(predictions) if predictions is not None else default_predictions_folder(self.dataset)
        self.cases = {case.name: case for case in found.cases}
        self.rows = [self._row(case) for case in found.cases]
        self.refresh_predictions()

    def _row(self, case) -> ReviewRow:
        row = ReviewRow(name=case.name, path=case.path, n_raters=len(case.raters(self.task)))
        if case.image_path is not None and is_nifti_path(case.image_path):
            try:
                info = read_header(case.image_path)
                row.shape = tuple(int(s) for s in info.spatial_shape)
                row.spacing = tuple(round(float(s), 4) for s in np.linalg.norm(info.affine[:3, :3], axis=0))
            except SoftsegError as exc:
                row.problem = exc.message
        return row

    def row(self, name: str) -> ReviewRow:
        """The row of case ``name``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise SoftsegError(f"no case named {name!r} in this dataset", self.dataset)

    def prediction_path(self, name: str) -> Path:
        """Where the soft map of case ``name`` is (or would be) in the predictions folder."""
        return self.predictions / name / output_name(self.task)

    def refresh_predictions(self) -> None:
        """Note which cases have a soft map in the predictions folder."""
        for row in self.rows:
            path = self.prediction_path(row.name)
            row.prediction = path if path.is_file() else None

    def predict(self, model: LoadedModel | str | os.PathLike, *, device: str = "auto") -> Generator[Progress, None, int]:
        """Predict every case into the predictions folder (reusing and resuming a run of the same model).

        Returns:
            How many cases have a soft map afterwards.

        Raises:
            SoftsegError: The folder holds predictions of another model, or the model does not fit the data.
                A case that fails is reported by its row's ``problem``; the others are predicted.
        """
        try:
            yield from predict_path(model, self.dataset, self.predictions, device=device, task=self.task)
        except PartialFailure as exc:
            failed = {Path(item).resolve(): reason for item, reason in exc.failures}
            for row in self.rows:
                case = self.cases[row.name]
                if case.image_path is not None and case.image_path.resolve() in failed:
                    row.problem = f"prediction failed: {failed[case.image_path.resolve()]}"
        self.refresh_predictions()
        return sum(row.prediction is not None for row in self.rows)

    def compute_stats(self, threshold: float = 0.5) -> Generator[Progress, None, list[ReviewRow]]:
        """Fill every row's :class:`~napari_softseg.analysis.review.CaseStats` (a case that cannot be read gets a
        ``problem`` instead). Reads only: safe to run in a worker while the rows are shown."""
        n = len(self.rows)
        for i, row in enumerate(self.rows):
            yield Progress("review", i, n, f"scoring {row.name}")
            try:
                data = load_case(self.cases[row.name], self.task, allow_no_masks=True)
                prediction = load_volume(row.prediction).data if row.prediction is not None else None
                row.stats = case_stats(prediction, data.masks, spacing=data.spacing, threshold=threshold)
                row.problem = None
            except SoftsegError as exc:
                row.stats = CaseStats()
                row.problem = str(exc)
        yield Progress("review", n, n, "scored")
        return self.rows

    def sorted_rows(self, key: str = "name", descending: bool = False) -> list[ReviewRow]:
        """The rows ordered by ``key`` (see :data:`SORT_KEYS`); rows without that value always last."""
        if key not in SORT_KEYS:
            raise SoftsegError(f"cannot sort by {key!r}; choose from {', '.join(SORT_KEYS)}")
        known = [r for r in self.rows if r.value(key) is not None]
        missing = [r for r in self.rows if r.value(key) is None]
        return sorted(known, key=lambda r: r.value(key), reverse=descending) + missing

    def next_most_uncertain(self, current: str | None = None) -> ReviewRow | None:
        """The case after ``current`` in order of uncertain volume, largest first (the first without ``current``).

        Pressing "next" repeatedly walks through the cases from the most to the least uncertain. ``None`` when
        no case has a prediction (or ``current`` is the last one).
        """
        ranked = [r for r in self.sorted_rows("uncertain_ml", descending=True) if r.stats.uncertain_ml is not None]
        names = [r.name for r in ranked]
        if current not in names:
            return ranked[0] if ranked else None
        index = names.index(current) + 1
        return ranked[index] if index < len(ranked) else None
