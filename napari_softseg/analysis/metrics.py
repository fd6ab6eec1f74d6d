"""Metrics for soft predictions against several raters.

Threshold conventions (see docs/metrics.md):

- An **operating point** at threshold ``t`` is the mask ``p >= t`` (PR curve, threshold explorer,
  expected precision/recall, written masks).
- The **QUBIQ score** uses ``p > t`` on both the prediction and the mean of the raters at
  t = 0.1, 0.2, …, 0.9, as the challenge's evaluation code does; e.g. with 2 raters a voxel marked by one
  of them (mean 0.5) is outside the reference at t = 0.5.
- Comparisons are made in **float32**, the precision soft maps are stored in: a threshold ``t`` means
  the float32 value nearest to ``t``, and the mean of the raters is rounded to float32. So a soft label
  saved as float32 scores exactly like the float64 mean it came from (0.7 stored in float32 is
  0.69999999, and is still ``>= 0.7``).
- Dice of two empty masks is 1. Precision with no predicted positive is 1 (nothing wrongly marked);
  recall with no reference positive is 1 (nothing missed).

The precision–recall curve (:class:`PRCurve`) comes from one pass over the data: a histogram of the
prediction on a grid of ``n_bins + 1`` thresholds ``k / n_bins``, weighted by the reference, then
cumulative sums, so any grid threshold afterwards is an O(1) lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from napari_softseg.analysis.consensus import agreement_count, consensus_mask, describe, leave_one_out_k
from napari_softseg.analysis.softlabels import weighted_mean
from napari_softseg.errors import SoftsegError
from napari_softseg.io.packed_masks import as_masks

QUBIQ_THRESHOLDS: tuple[float, ...] = tuple(k / 10 for k in range(1, 10))
_CHUNK = 1 << 18  # voxels per chunk: keeps temporaries in cache


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks; two empty masks score 1."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise SoftsegError(f"cannot compare masks of shapes {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def _reference_mean(reference: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Mean of stacked rater masks ``(R, …)`` (float32, see :func:`softlabels.weighted_mean`) or a soft map."""
    reference = np.asarray(reference)
    if reference.shape == like.shape:
        return reference
    if reference.ndim == like.ndim + 1 and reference.shape[1:] == like.shape:
        if reference.shape[0] == 0:
            raise SoftsegError("no rater masks to compare with")

        return weighted_mean(reference)
    raise SoftsegError(f"prediction shape {like.shape} does not match reference shape {reference.shape}")


def qubiq_score(prediction: np.ndarray, reference: np.ndarray) -> tuple[float, list[float]]:
    """The QUBIQ challenge score: mean Dice over thresholds 0.1 … 0.9 (``p > t``).

    Args:
        prediction: Soft map in ``[0, 1]``.
        reference: Stacked rater masks ``(R, …)`` (their mean is used) or a soft map of the same shape.

    Returns:
        The score and the Dice at each of :data:`QUBIQ_THRESHOLDS`.
    """
    pred = np.asarray(prediction).astype(np.float32, copy=False)
    ref = _reference_mean(reference, pred).astype(np.float32, copy=False)
    per_t = [dice(pred > np.float32(t), ref > np.float32(t)) for t in QUBIQ_THRESHOLDS]
    return float(np.mean(per_t)), per_t


@dataclass
class OperatingPoint:
    """Statistics of the mask ``p >= threshold`` against a reference.

    Counts are voxel counts (soft references give fractional, expected counts).
    """

    threshold: float
    tp: float
    fp: float
    fn: float
    tn: float
    precision: float
    recall: float
    dice: float
    specificity: float
    n_positive: int
    volume_ml: float | None

    def as_dict(self) -> dict:
        """Plain-Python dictionary (for JSON)."""
        return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in asdict(self).items()}


def _safe_ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(np.shape(num), empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def grid_thresholds(n_bins: int) -> np.ndarray:
    """The threshold grid as compared: ``float32(k / n_bins)`` for k = 0 … n_bins."""
    return (np.arange(n_bins + 1) / n_bins).astype(np.float32)


def threshold_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Grid index ``k`` of each value: the largest ``k`` with ``p >= float32(k / n_bins)`` (0 … ``n_bins``).

    Exact. Values below 0 (and NaN) fall in bin 0, above 1 in bin ``n_bins``. For float32 input
    ``p * n_bins`` is exact in float64, so its floor is the real-number answer ``p >= k / n_bins``; the
    only float32 values on the other side of a rounded threshold are the thresholds themselves, fixed
    by one comparison with the next grid value.
    """
    p = np.asarray(p)
    if p.dtype in (np.float16, np.uint8, np.int8, np.bool_):
        p = p.astype(np.float32)
    upper = np.append(grid_thresholds(n_bins), np.float32(np.inf))
    x = p.astype(np.float64)
    x *= n_bins
    np.clip(x, 0, n_bins, out=x)
    with np.errstate(invalid="ignore"):  # NaN -> bin 0 below
        idx = np.floor(x).astype(np.int32) if p.dtype != np.float32 else x.astype(np.int32)
    np.maximum(idx, 0, out=idx)
    if p.dtype != np.float32:  # float64 input: the rounded product may also be one too high
        idx -= (p < upper[idx]) & (idx > 0)
    idx += p >= upper[idx + 1]
    return idx


class PRCurve:
    """Precision, recall, Dice and specificity at every grid threshold, from one pass over the data.

    Args:
        prediction: Soft map in ``[0, 1]`` (any shape).
        reference: Binary mask (bool/uint8), soft map in ``[0, 1]`` (soft counts: a voxel with reference
            0.7 counts 0.7 true positive and 0.3 false positive), or ``None`` for the **expected**
            precision/recall of a calibrated map with no annotation (the reference is the map itself:
            E[precision] = mean of p over p >= t; E[recall] = sum of p over p >= t / sum of p).
        n_bins: Grid resolution; thresholds are ``k / n_bins`` for k = 0 … n_bins.
        spacing: Voxel size in mm, to report volumes in mL.

    Attributes:
        thresholds: ``(n_bins + 1,)`` float32 grid; the mask at ``thresholds[k]`` is ``p >= thresholds[k]``.
        tp, fp, fn, tn: Counts per threshold.
        precision, recall, dice, specificity: Per threshold.
        n_positive: Voxels in the mask per threshold.

    Example:
        >>> import numpy as np
        >>> curve = PRCurve(np.array([0.2, 0.6, 0.9]), np.array([0, 1, 1]), n_bins=10)
        >>> round(curve.at(0.5).recall, 3), round(curve.at(0.5).precision, 3)
        (1.0, 1.0)
    """

    def __init__(
        self,
        prediction: np.ndarray,
        reference: np.ndarray | None = None,
        *,
        n_bins: int = 1000,
        spacing: Sequence[float] | None = None,
    ):
        pred = np.asarray(prediction)
        if reference is not None:
            reference = np.asarray(reference)
            if reference.shape != pred.shape:
                raise SoftsegError(f"prediction shape {pred.shape} does not match reference shape {reference.shape}")
        if n_bins < 1:
            raise SoftsegError("n_bins must be >= 1")
        self.n_bins = int(n_bins)
        self.thresholds = grid_thresholds(self.n_bins)
        self.voxel_ml = None if spacing is None else float(np.prod([float(s) for s in spacing])) / 1000.0
        self.is_expected = reference is None
        nb = self.n_bins + 1
        count = np.zeros(nb, dtype=np.int64)
        positive = np.zeros(nb, dtype=np.float64)
        flat_p = pred.reshape(-1)
        flat_r = None if reference is None else reference.reshape(-1)
        binary_ref = flat_r is not None and (flat_r.dtype == np.bool_ or np.issubdtype(flat_r.dtype, np.integer))
        for start in range(0, flat_p.size, _CHUNK):
            p = flat_p[start : start + _CHUNK]
            idx = threshold_bins(p, self.n_bins)
            if flat_r is None:
                count += np.bincount(idx, minlength=nb)
                positive += np.bincount(idx, weights=p.astype(np.float64), minlength=nb)
            elif binary_ref:
                both = np.bincount(2 * idx + (flat_r[start : start + _CHUNK] != 0), minlength=2 * nb)
                count += both[0::2] + both[1::2]
                positive += both[1::2]
            else:
                count += np.bincount(idx, minlength=nb)
                positive += np.bincount(idx, weights=flat_r[start : start + _CHUNK].astype(np.float64), minlength=nb)
        # cumulative from the top: predicted positives at threshold k are the bins >= k
        self.n_positive = np.cumsum(count[::-1])[::-1]
        self.tp = np.cumsum(positive[::-1])[::-1]
        total_pos = float(positive.sum())
        total = float(count.sum())
        self.fp = self.n_positive - self.tp
        self.fn = total_pos - self.tp
        self.tn = total - self.n_positive - self.fn
        self.total_reference = total_pos
        self.precision = _safe_ratio(self.tp, self.n_positive.astype(np.float64), 1.0)
        self.recall = _safe_ratio(self.tp, np.full_like(self.tp, total_pos), 1.0)
        self.dice = _safe_ratio(2 * self.tp, self.n_positive + np.full_like(self.tp, total_pos), 1.0)
        self.specificity = _safe_ratio(self.tn, self.tn + self.fp, 1.0)

    def index(self, t: float) -> int:
        """Grid index of the threshold nearest to ``t`` (clipped to 0 … 1)."""
        return int(min(max(round(float(t) * self.n_bins), 0), self.n_bins))

    def at(self, t: float) -> OperatingPoint:
        """Statistics at the grid threshold nearest to ``t``; O(1)."""
        k = self.index(t)
        n_pos = int(self.n_positive[k])
        return OperatingPoint(
            threshold=k / self.n_bins,
            tp=float(self.tp[k]),
            fp=float(self.fp[k]),
            fn=float(self.fn[k]),
            tn=float(self.tn[k]),
            precision=float(self.precision[k]),
            recall=float(self.recall[k]),
            dice=float(self.dice[k]),
            specificity=float(self.specificity[k]),
            n_positive=n_pos,
            volume_ml=None if self.voxel_ml is None else n_pos * self.voxel_ml,
        )

    def threshold_for_recall(self, min_recall: float) -> float:
        """The highest threshold whose recall is still at least ``min_recall`` (0 if none is)."""
        ok = np.nonzero(self.recall >= min_recall - 1e-12)[0]
        return ok[-1] / self.n_bins if ok.size else 0.0

    def threshold_for_precision(self, min_precision: float) -> float | None:
        """The lowest threshold whose (non-empty) mask reaches ``min_precision``; ``None`` if none does.

        An empty mask has precision 1 by convention but is no operating point, so it does not count.
        """
        ok = np.nonzero((self.precision >= min_precision - 1e-12) & (self.n_positive > 0))[0]
        return ok[0] / self.n_bins if ok.size else None


def reliability(prediction: np.ndarray, target: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability-diagram bins: equal-width bins of the prediction on ``[0, 1]``.

    A value ``p`` falls in the bin ``k`` with ``float32(k / n) <= p < float32((k + 1) / n)``, as in
    :func:`threshold_bins`; the last bin includes 1.

    Args:
        prediction: Soft map.
        target: Binary mask or soft map of the same shape (e.g. the mean of the raters).
        n_bins: Number of bins.

    Returns:
        ``{"bin_edges", "mean_pred", "mean_target", "count"}``; empty bins have NaN means.
    """
    p = np.asarray(prediction).reshape(-1)
    y = np.asarray(target, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise SoftsegError(f"prediction shape {np.shape(prediction)} does not match target shape {np.shape(target)}")
    idx = np.minimum(threshold_bins(p, n_bins), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p.astype(np.float64), minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        mean_y = np.where(count > 0, sum_y / count, np.nan)
    return {
        "bin_edges": (np.arange(n_bins + 1) / n_bins).tolist(),
        "mean_pred": mean_p.tolist(),
        "mean_target": mean_y.tolist(),
        "count": count.tolist(),
    }


def expected_calibration_error(prediction: np.ndarray, target: np.ndarray, n_bins: int = 10) -> float:
    """ECE: sum over bins of (bin size / N) × |mean prediction − mean target| (see :func:`reliability`)."""
    rel = reliability(prediction, target, n_bins)
    count = np.asarray(rel["count"], dtype=np.float64)
    gap = np.abs(np.asarray(rel["mean_pred"]) - np.asarray(rel["mean_target"]))
    total = count.sum()
    return float(np.nansum(count * gap) / total) if total else 0.0


def pairwise_dice(masks: np.ndarray) -> np.ndarray:
    """``(R, R)`` matrix of Dice between every pair of raters (1 on the diagonal)."""
    masks = np.asarray(masks, dtype=bool)
    r = masks.shape[0]
    out = np.ones((r, r))
    for i in range(r):
        for j in range(i + 1, r):
            out[i, j] = out[j, i] = dice(masks[i], masks[j])
    return out


@dataclass
class RaterAgreement:
    """One row of the leave-one-rater-out comparison.

    Attributes:
        rater: Rater name.
        dice_vs_others: Dice of this rater against the consensus of the other raters.
        model_dice_vs_same: Dice of the model's mask against that same consensus (``None`` without a model).
    """

    rater: str
    dice_vs_others: float
    model_dice_vs_same: float | None


def leave_one_rater_out(
    masks: np.ndarray,
    prediction: np.ndarray | None = None,
    threshold: float = 0.5,
    rater_names: Sequence[str] | None = None,
) -> list[RaterAgreement]:
    """Each rater against the consensus of the others, and the model against the same consensus.

    The consensus of the other ``R − 1`` raters is the voxels marked by at least half of them
    (``k = ceil((R − 1) / 2)``, the one rule of :mod:`napari_softseg.analysis.consensus`); the model's mask is ``p >= threshold``. This makes the paper's claim —
    the model matches physicians better than other physicians do — checkable per case.

    Returns:
        One :class:`RaterAgreement` per rater; empty with fewer than 2 raters.
    """
    masks = as_masks(masks)
    r = masks.shape[0]
    names = list(rater_names) if rater_names is not None else [f"rater {i + 1}" for i in range(r)]
    if r < 2:
        return []
    model = None if prediction is None else np.asarray(prediction) >= threshold
    if model is not None and model.shape != tuple(masks.shape[1:]):
        raise SoftsegError(f"prediction shape {model.shape} does not match masks {masks.shape[1:]}")
    total = agreement_count(masks)

    k = leave_one_out_k(r)
    rows = []
    for i in range(r):
        mine = np.asarray(masks[i]) != 0
        others = (total - mine.view(np.uint8)) >= k
        rows.append(
            RaterAgreement(
                rater=names[i],
                dice_vs_others=dice(mine, others),
                model_dice_vs_same=None if model is None else dice(model, others),
            )
        )
    return rows


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in millilitres (voxel count × voxel volume in mm³ / 1000)."""
    return int(np.count_nonzero(mask)) * float(np.prod([float(s) for s in spacing])) / 1000.0


def evaluate_case(
    prediction: np.ndarray,
    masks: np.ndarray,
    rater_names: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
    threshold: float = 0.5,
) -> dict:
    """Everything ``softseg evaluate`` reports for one case, as JSON-ready values.

    Args:
        prediction: Soft map ``(X, Y, Z)``.
        masks: Rater masks ``(R, X, Y, Z)``.
        rater_names: Names for the rows.
        spacing: Voxel size in mm (volumes are reported when given).
        threshold: Operating point for the model's mask in the rater comparison and volumes; snapped to
            the 0.001 grid of :class:`PRCurve` and compared in float32, like every operating point.

    Returns:
        ``qubiq_score``, ``dice_per_threshold``, ``threshold_rule``, ``ece`` (10 bins vs the mean of
        raters), ``ece_per_rater``, ``raters`` (leave-one-out rows), ``pairwise_dice``, ``operating_point``
        (vs the consensus: at least half of the raters), ``consensus_rule`` and volumes.
    """
    pred = np.asarray(prediction).astype(np.float32, copy=False)
    masks = np.asarray(masks) != 0
    if masks.ndim != pred.ndim + 1 or masks.shape[1:] != pred.shape:
        raise SoftsegError(f"prediction shape {pred.shape} does not match the masks' {masks.shape[1:]}")
    r = masks.shape[0]
    names = list(rater_names) if rater_names is not None else [f"rater {i + 1}" for i in range(r)]

    mean = weighted_mean(masks)
    score, per_t = qubiq_score(pred, masks)

    curve = PRCurve(pred, consensus_mask(masks), spacing=spacing)
    op = curve.at(threshold)
    threshold = op.threshold  # one grid threshold for every number below
    t32 = curve.thresholds[curve.index(threshold)]
    rows = leave_one_rater_out(masks, pred, t32, names)
    result = {
        "qubiq_score": score,
        "dice_per_threshold": {f"{t:.1f}": d for t, d in zip(QUBIQ_THRESHOLDS, per_t)},
        "threshold_rule": "p > t on prediction and mean of raters (QUBIQ)",
        "ece": expected_calibration_error(pred, mean, 10),
        "ece_per_rater": {n: expected_calibration_error(pred, m, 10) for n, m in zip(names, masks)},
        "n_raters": r,
        "threshold": threshold,
        "raters": [asdict(row) for row in rows],
        "model_beats_raters": (
            sum(row.model_dice_vs_same > row.dice_vs_others for row in rows) if rows else None
        ),
        "pairwise_dice": pairwise_dice(masks).tolist(),
        "consensus_rule": describe(r),
        "operating_point_vs_consensus": op.as_dict(),
    }
    if spacing is not None:
        result["volume_ml"] = {
            "prediction": volume_ml(pred >= t32, spacing),
            "raters": {n: volume_ml(m, spacing) for n, m in zip(names, masks)},
        }
    return result
