"""What a reviewer sorts a dataset by, and where to look inside a case (Qt-free, arrays only).

* :func:`case_stats`: one case's row of the dataset review — QUBIQ score, Dice of ``p >= t`` against the
  raters' consensus, the predicted volume, the **uncertain volume** (``0.1 < p < 0.9``) and the
  **disputed volume** (voxels some but not all raters marked), in mL.
* :func:`most_uncertain_slice` / :func:`most_disputed_slice`: the slice along an axis with the most
  uncertain voxels of the soft map, or with the most voxels the raters disagree on.

Example:
    >>> import numpy as np
    >>> p = np.zeros((4, 4, 3), np.float32); p[:, :, 1] = 0.5
    >>> most_uncertain_slice(p, axis=2)
    1
    >>> masks = np.zeros((2, 4, 4, 3), np.uint8); masks[0, :2, :, 2] = 1
    >>> most_disputed_slice(masks, axis=2), int(disputed_mask(masks).sum())
    (2, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from napari_softseg.analysis.consensus import agreement_count, consensus_mask
from napari_softseg.analysis.metrics import dice, qubiq_score
from napari_softseg.errors import SoftsegError

#: A voxel is uncertain when the soft map is strictly between these (the issue's 0.1 < p < 0.9).
UNCERTAIN_RANGE = (0.1, 0.9)


@dataclass
class CaseStats:
    """One case's numbers in the dataset review (``None``: not available, e.g. no prediction or no raters).

    Attributes:
        qubiq: QUBIQ score of the soft map against the raters.
        dice: Dice of the mask ``p >= threshold`` against the consensus (at least half of the raters).
        threshold: The threshold used for ``dice`` and ``predicted_ml``.
        predicted_ml: Volume of ``p >= threshold``.
        uncertain_ml: Volume with ``0.1 < p < 0.9``.
        disputed_ml: Volume marked by some raters but not all.
    """

    qubiq: float | None = None
    dice: float | None = None
    threshold: float | None = None
    predicted_ml: float | None = None
    uncertain_ml: float | None = None
    disputed_ml: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


def uncertain_mask(prediction: np.ndarray, low: float = UNCERTAIN_RANGE[0], high: float = UNCERTAIN_RANGE[1]) -> np.ndarray:
    """Voxels with ``low < p < high`` (float32 comparisons, as every threshold of the package)."""
    p = np.asarray(prediction)
    return (p > np.float32(low)) & (p < np.float32(high))


def disputed_mask(masks: np.ndarray) -> np.ndarray:
    """Voxels marked by at least one rater but not by all of them."""
    masks = np.asarray(masks)
    count = agreement_count(masks)
    return (count > 0) & (count < masks.shape[0])


def _voxel_ml(spacing: Sequence[float] | None) -> float:
    return 0.001 if spacing is None else float(np.prod([float(s) for s in spacing])) / 1000.0


def case_stats(prediction: np.ndarray | None, masks: np.ndarray | None, *, spacing: Sequence[float] | None = None,
               threshold: float = 0.5) -> CaseStats:
    """The review row of one case: what can be computed from the soft map and/or the raters.

    Args:
        prediction: Soft map in [0, 1], or ``None``.
        masks: Rater masks ``(R, *shape)``, or ``None`` / empty.
        spacing: Voxel size in mm (``None``: volumes count 1 mm³ voxels).
        threshold: Operating point ``p >= t`` for Dice and the predicted volume.

    Raises:
        SoftsegError: The masks do not match the soft map's shape.
    """
    ml = _voxel_ml(spacing)
    stats = CaseStats()
    has_masks = masks is not None and len(masks) > 0
    if has_masks:
        masks = np.asarray(masks)
        stats.disputed_ml = int(np.count_nonzero(disputed_mask(masks))) * ml
    if prediction is None:
        return stats
    p = np.asarray(prediction).astype(np.float32, copy=False)
    mask = p >= np.float32(threshold)
    stats.threshold = float(threshold)
    stats.predicted_ml = int(np.count_nonzero(mask)) * ml
    stats.uncertain_ml = int(np.count_nonzero(uncertain_mask(p))) * ml
    if has_masks:
        if masks.shape[1:] != p.shape:
            raise SoftsegError(f"rater masks {masks.shape[1:]} do not match the soft map {p.shape}")
        stats.qubiq = qubiq_score(p, masks)[0]
        stats.dice = dice(mask, consensus_mask(masks))
    return stats


def _best_slice(volume: np.ndarray, axis: int) -> int:
    volume = np.asarray(volume)
    if not 0 <= axis < volume.ndim:
        raise SoftsegError(f"axis {axis} is not an axis of a {volume.ndim}D volume")
    others = tuple(i for i in range(volume.ndim) if i != axis)
    return int(np.argmax(np.count_nonzero(volume, axis=others)))


def most_uncertain_slice(prediction: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of the slice with the most uncertain voxels (``0.1 < p < 0.9``); the first on ties."""
    return _best_slice(uncertain_mask(prediction), axis)


def most_disputed_slice(masks: np.ndarray, axis: int) -> int:
    """Index along ``axis`` (of one mask, ``masks[0]``) of the slice where the raters disagree on most voxels."""
    return _best_slice(disputed_mask(masks), axis)
