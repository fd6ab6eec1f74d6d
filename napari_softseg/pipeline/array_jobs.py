"""Predict and train on arrays in memory (the viewer's layers), as generators that yield progress.

The Soft segmentation dock runs these in a worker (``napari_softseg._qt.workers``); they read no files but
the model folder, so edits made in the viewer are what is predicted or learned.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_softseg.io.case import CaseData
from napari_softseg.model.domain import model_domain_notes, spacing_record
from napari_softseg.model.inference import predict_array
from napari_softseg.model.model_io import WEIGHTS_FILE, load_model
from napari_softseg.model.training import TrainingCase, train_cases
from napari_softseg.pipeline.provenance import model_checksums
from napari_softseg.progress import Progress


def predict_image(model_path: Path, image: np.ndarray, device: str, source: str | None, spacing=None
                  ) -> Generator[Progress, None, tuple[np.ndarray, dict]]:
    """Load the model and predict (at the model's voxel size); returns the soft map and facts for the
    provenance, including the voxel sizes and the domain notes (how the scan differs from training)."""

    yield Progress("load", 0, None, "loading model")
    model = load_model(model_path)
    notes = model_domain_notes(model.config, image, spacing) if spacing is not None else []
    for note in notes:
        yield Progress("domain", 0, None, str(note))
    soft = yield from predict_array(model, image, device=device, source=source, spacing=spacing)
    sums = model_checksums(model)   # in the worker: named points check the weights against it
    info = {
        "model": str(model_path),
        "model_sha256": sums.get(WEIGHTS_FILE) if sums else None,
        "method": (model.config.softlabel or {}).get("method"),
        "temperature": model.config.temperature,
        "task": model.config.task,
        **spacing_record(model.config, spacing, notes),
    }
    return soft, info


def train_on_cases(cases: Sequence[CaseData], out_dir: Path, **options: Any) -> Generator[Progress, None, Path]:
    """Train on cases in memory (no temporary files), with validation and calibration; returns the model
    folder.

    With several cases a share of them is held out for validation and calibration; a single volume is cut
    into a training slab and a validation slab (see :func:`napari_softseg.model.training.train_cases`); a
    single-slice case trains without validation.
    """
    training = [TrainingCase(c.name, c.image, np.asarray(c.masks), tuple(c.spacing)) for c in cases]
    result = yield from train_cases(training, out_dir, task=cases[0].task, **options)
    return Path(result.model_dir)
