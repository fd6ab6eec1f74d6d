"""Named operating points of a model, chosen on a cohort and stored in the model folder.

``softseg operating-point MODEL_DIR DATASET --name NAME --require "sensitivity>=0.90"`` runs
:func:`choose_operating_point`: every case of the dataset is predicted with
:func:`~napari_softseg.pipeline.predict.predict_path` (into ``--predictions DIR``, where an earlier run of the
same model is reused and an interrupted one resumes, or into a temporary folder), each case with rater masks
is reduced to a histogram against its raters' consensus (:func:`cohort_histograms`), and
:mod:`napari_softseg.analysis.cohort` picks ``t`` with its bootstrap intervals and per-case spread.

The point is stored in ``MODEL_DIR/operating_points.json`` with the requirement, the cohort, the intervals,
the date, the software version and the checksums of the model it was chosen for, by
:mod:`napari_softseg.pipeline.point_store`, which also reads points back and writes masks at them.

Example:
    >>> from napari_softseg.progress import drive
    >>> point = drive(choose_operating_point("MODEL_DIR", "cohort/", name="screening",
    ...                                      requirement="sensitivity>=0.9"))  # doctest: +SKIP
    >>> point["threshold"], point["ci"]  # doctest: +SKIP
    (0.507, [0.889, 0.916])
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from napari_softseg import SOFTWARE
from napari_softseg.analysis.cohort import (
    CaseHistogram,
    Cohort,
    CohortPoint,
    Requirement,
    case_histogram,
    choose_point,
    parse_requirement,
)
from napari_softseg.analysis.cohort_curves import curve_summary
from napari_softseg.analysis.consensus import RULE, consensus_k
from napari_softseg.analysis.operating_point import GRID
from napari_softseg.errors import PartialFailure, SoftsegError
from napari_softseg.io.case import binarize_mask, check_same_geometry
from napari_softseg.io.dataset import discover
from napari_softseg.io.nifti import Volume, load_volume
from napari_softseg.model.model_io import LoadedModel, load_model
from napari_softseg.pipeline.point_store import check_name, refuse_existing, store_point
from napari_softseg.pipeline.predict import output_name, predict_path
from napari_softseg.pipeline.provenance import model_checksums
from napari_softseg.progress import Progress


@dataclass
class CohortData:
    """The cases of a cohort, reduced to histograms, and what happened to the others.

    Attributes:
        cohort: The histograms of the cases with rater masks.
        dataset: The dataset folder.
        predictions: Where the soft maps are (``None`` when a temporary folder was used and removed).
        skipped: ``(case, reason)`` for cases left out (no raters for the task, failed prediction).
        training_overlap: Cases of the cohort the model was trained or calibrated on.
        rater_counts: Raters of each case, in cohort order.
    """

    cohort: Cohort
    dataset: Path
    predictions: Path | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    training_overlap: list[str] = field(default_factory=list)
    rater_counts: list[int] = field(default_factory=list)

def _consensus(case, task: int, prediction: Volume) -> tuple[np.ndarray, int]:
    """The consensus of a case's raters (at least half of them), checked against the prediction's grid."""
    paths = case.raters(task)
    count = None
    for path in paths:
        vol = load_volume(path)
        if tuple(vol.data.shape) != tuple(prediction.data.shape):
            raise SoftsegError(f"mask shape {tuple(vol.data.shape)} differs from the prediction's "
                               f"{tuple(prediction.data.shape)}", path)
        check_same_geometry(vol.affine, prediction.affine, path, "mask")
        mask = binarize_mask(np.asarray(vol.data), path)
        count = mask.astype(np.uint16) if count is None else count + mask
    return count >= consensus_k(len(paths)), len(paths)


def histogram_from_files(case, task: int, prediction_path: str | os.PathLike,
                         n_bins: int = GRID) -> tuple[CaseHistogram, int]:
    """One case's histogram from its soft map file and rater masks, and its number of raters.

    Raises:
        SoftsegError: A file cannot be read, or a mask's shape or geometry differs from the prediction's.
    """
    prediction = load_volume(prediction_path)
    reference, n_raters = _consensus(case, task, prediction)
    return case_histogram(prediction.data, reference, name=case.name, spacing=prediction.spacing,
                          n_bins=n_bins), n_raters


def _training_cases(model: LoadedModel) -> set[Path]:
    """Case folders the model was trained or calibrated on, where its config names them and they still exist."""
    training = model.config.training or {}
    root = training.get("dataset")
    if not isinstance(root, str):
        return set()
    names = [n for key in ("train_cases", "val_cases") for n in training.get(key) or [] if isinstance(n, str)]
    bases = [Path(root)] + ([Path(model.path) / root] if model.path is not None else [])
    found = set()
    for base in bases:
        for name in names:
            folder = base / name
            if folder.is_dir():
                found.add(folder.resolve())
    return found


def cohort_histograms(model: LoadedModel | str | os.PathLike, dataset: str | os.PathLike, *,
                      predictions: str | os.PathLike | None = None, device: str = "auto", tile_size: int | None = None,
                      batch_size: int = 8, n_bins: int = GRID) -> Generator[Progress, None, CohortData]:
    """Predict every case of ``dataset`` (or reuse the predictions) and reduce each case with raters to a histogram.

    Args:
        model: A loaded model or a model folder.
        dataset: A dataset folder (QUBIQ layout, one split such as ``Validation/``, or plain case folders).
        predictions: Folder for the soft maps (the layout and run record of ``softseg predict`` on a
            dataset): maps already there from the same model are reused, missing ones predicted. ``None``:
            a temporary folder, removed at the end.
        device, tile_size, batch_size: As for :func:`~napari_softseg.pipeline.predict.predict_path`.
        n_bins: Threshold grid.

    Yields:
        The prediction's progress, then ``Progress("cohort", i, n)`` per case.

    Raises:
        SoftsegError: No case with rater masks for the model's task, a folder that is one case, predictions
            of another model in ``predictions``, or a mask that does not fit its prediction.
    """
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    dataset = Path(dataset)
    found = discover(dataset)
    task = model.config.task
    if len(found.cases) == 1 and found.cases[0].path.resolve() == dataset.resolve():
        raise SoftsegError("is one case; a cohort is a folder of cases (e.g. a dataset's Validation/)", dataset)
    with_raters = [c for c in found.cases if c.raters(task)]
    skipped = [(c.name, f"no rater masks for task {task}") for c in found.cases if not c.raters(task)]
    if not with_raters:
        raise SoftsegError(f"no case has rater masks for task {task}, so there is nothing to choose a threshold on",
                           dataset)
    temporary = tempfile.TemporaryDirectory(prefix="softseg-cohort-") if predictions is None else None
    out = Path(temporary.name) / "predictions" if temporary is not None else Path(predictions)
    try:
        try:
            yield from predict_path(model, dataset, out, device=device, tile_size=tile_size, batch_size=batch_size)
        except PartialFailure as exc:  # the other cases were predicted: choose on them, and say which failed
            failed = {Path(item).resolve() for item, _ in exc.failures}
            for case in list(with_raters):
                if case.image_path is not None and case.image_path.resolve() in failed:
                    with_raters.remove(case)
                    skipped.append((case.name, "prediction failed"))
            if not with_raters:
                raise
        overlap = _training_cases(model)
        histograms, raters = [], []
        for i, case in enumerate(with_raters):
            yield Progress("cohort", i, len(with_raters), f"histogram of {case.name}")
            histogram, n_raters = histogram_from_files(case, task, out / case.name / output_name(task), n_bins)
            histograms.append(histogram)
            raters.append(n_raters)
        yield Progress("cohort", len(with_raters), len(with_raters), f"{len(with_raters)} case(s) pooled")
        return CohortData(cohort=Cohort(histograms), dataset=dataset, predictions=None if temporary else out,
                          skipped=skipped, rater_counts=raters,
                          training_overlap=[c.name for c in with_raters if c.path.resolve() in overlap])
    finally:
        if temporary is not None:
            temporary.cleanup()


def point_record(point: CohortPoint, data: CohortData, model: LoadedModel, name: str) -> dict:
    """What is stored for a named point: the choice, the intervals, the cohort (with its pooled curve and per-case
    band, :func:`~napari_softseg.analysis.cohort_curves.curve_summary`) and the model it was chosen for."""
    record = point.as_dict()
    warnings = list(record.pop("warnings"))
    if data.training_overlap:
        warnings.append(f"{len(data.training_overlap)} of the {len(data.cohort)} case(s) were used to train or "
                        "calibrate this model: the point looks better here than it will on new patients")
    return {
        "name": name,
        **record,
        "rule": "mask = p >= threshold",
        "cohort": {
            "path": str(data.dataset.resolve()),
            "name": data.dataset.resolve().name,
            "n_cases": len(data.cohort),
            "cases": data.cohort.names,
            "raters_per_case": sorted(set(data.rater_counts)),
            "reference": f"consensus of the raters ({RULE})",
            "pooling": "voxel counts weighted by voxel volume" if data.cohort.voxel_ml else "voxel counts",
            "skipped": [list(s) for s in data.skipped],
            "training_overlap": data.training_overlap,
        },
        # the pooled curve and the per-case band at 101 thresholds, for the viewer's cohort mode (~8 kB)
        "cohort_curve": curve_summary(data.cohort),
        "model_sha256": model_checksums(model),
        "task": model.config.task,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": SOFTWARE,
        "warnings": warnings,
    }


def choose_operating_point(model_dir: str | os.PathLike, dataset: str | os.PathLike, *, name: str,
                           requirement: str | Requirement, predictions: str | os.PathLike | None = None,
                           replace: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                           conservative: bool = False, device: str = "auto", tile_size: int | None = None,
                           batch_size: int = 8, store: bool = True) -> Generator[Progress, None, dict]:
    """Choose a named operating point on a cohort and store it in the model folder.

    Args:
        model_dir: The model folder.
        dataset: The cohort's folder.
        name: The point's name (see :func:`check_name`).
        requirement: E.g. ``"sensitivity>=0.90"`` (see :func:`~napari_softseg.analysis.cohort.parse_requirement`).
        predictions: See :func:`cohort_histograms`.
        replace: Replace a stored point of the same name (otherwise that is an error, raised before any work).
        n_boot, seed, confidence: The bootstrap over cases.
        conservative: Choose ``t`` so that the interval's far end meets the bound (see
            :func:`~napari_softseg.analysis.cohort.choose_point`).
        device, tile_size, batch_size: Prediction options.
        store: Write the point into the model folder (``False``: only return it).

    Returns:
        The stored record (see :func:`point_record`).

    Raises:
        SoftsegError: A bad name or requirement, an existing point without ``replace``, or anything
            :func:`cohort_histograms` or :func:`~napari_softseg.analysis.cohort.choose_point` refuses.
    """
    check_name(name)
    req = requirement if isinstance(requirement, Requirement) else parse_requirement(requirement)
    if conservative and req.value is None:
        raise SoftsegError(f"a conservative point needs a bound such as sensitivity>=0.9, not {req.text}")
    model = load_model(model_dir)
    if store:
        refuse_existing(model.path, name, replace)
    data = yield from cohort_histograms(model, dataset, predictions=predictions, device=device, tile_size=tile_size,
                                        batch_size=batch_size)
    yield Progress("bootstrap", 0, 1, f"choosing t for {req.text} on {len(data.cohort)} case(s), {n_boot} resamples")
    point = choose_point(data.cohort, req, n_boot=n_boot, seed=seed, confidence=confidence, conservative=conservative)
    record = point_record(point, data, model, name)
    if store:
        store_point(model.path, record, replace=replace)
    return record


