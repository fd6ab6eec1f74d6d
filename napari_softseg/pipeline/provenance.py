"""Provenance of a prediction, taken from what actually ran.

:class:`DeviceTracker` follows a prediction generator's :class:`~napari_softseg.progress.Progress` and
keeps the device the work last ran on (the ``device`` metric: the chosen one, or the CPU after an
out-of-memory fallback), so sidecars never record a device that was asked for but not used.
:func:`prediction_provenance` is the one dictionary every prediction's sidecar carries (CLI, torchrun
shards, DICOM SEGs and the viewer's Predict).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_softseg.model.model_io import CONFIG_FILE, WEIGHTS_FILE, LoadedModel, sha256_file
from napari_softseg.progress import Progress


class DeviceTracker:
    """Run a prediction generator and remember the device its progress last reported.

    Args:
        device: The device chosen before the run (kept when the generator reports none).

    Example:
        >>> tracker = DeviceTracker("cuda")
        >>> def job():
        ...     yield Progress("slices", 1, 2, "out of memory: retrying on cpu", {"device": "cpu"})
        ...     return 42
        >>> from napari_softseg.progress import drive
        >>> drive(tracker.follow(job())), tracker.device
        (42, 'cpu')
    """

    def __init__(self, device: str) -> None:
        self.device = device

    def follow(self, gen: Generator[Progress, None, Any]) -> Generator[Progress, None, Any]:
        """Yield everything ``gen`` yields, noting each ``device`` metric; return what it returns."""
        result = None
        try:
            progress = next(gen)
            while True:
                metrics = getattr(progress, "metrics", None) or {}
                if metrics.get("device"):
                    self.device = str(metrics["device"])
                yield progress
                progress = next(gen)
        except StopIteration as stop:
            result = stop.value
        return result


def model_checksums(model: LoadedModel) -> dict[str, str] | None:
    """SHA-256 of the model folder's weights and config (``None`` for a model held only in memory)."""
    if model.path is None:
        return None
    try:
        return {name: sha256_file(Path(model.path) / name) for name in (WEIGHTS_FILE, CONFIG_FILE)}
    except OSError:
        return None


def prediction_provenance(model: LoadedModel, source: str | os.PathLike | None, device: str, *,
                          checksums: dict[str, str] | None = None, **extra: Any) -> dict:
    """What a prediction's sidecar records: model (folder, weights checksum, task, temperature, soft-label
    method), the input, the device that ran, and ``extra`` (e.g. the threshold of a mask, spacings).

    ``checksums`` are the model's :func:`model_checksums` when the caller already has them (a dataset run
    hashes the model once, not once per case). ``None`` values are left out.
    """
    config = model.config
    sums = checksums if checksums is not None else model_checksums(model)
    provenance = {
        "model": str(model.path) if model.path is not None else None,
        "model_sha256": sums.get(WEIGHTS_FILE) if sums else None,
        "device": device,
        "task": config.task,
        "temperature": config.temperature,
        "method": (config.softlabel or {}).get("method"),
        "input": os.fspath(source) if source is not None else None,
        **extra,
    }
    return {k: v for k, v in provenance.items() if v is not None}
