"""Choosing an operating point on a soft map: the Qt-free model behind the threshold explorer.

A clinician drags one threshold ``t`` over a calibrated soft map ``p``; the operating point is the mask
``p >= t``. Everything a slider move needs is prepared once, so that a move costs O(1) for the numbers:

* :class:`ThresholdSession` holds the soft map and the raters' masks and keeps one
  :class:`~napari_softseg.analysis.metrics.PRCurve` per :class:`Reference` (built on first use: one pass over the
  data, 0.2–0.5 s at 256³). Precision, recall, Dice, specificity and volume at any threshold are then
  array look-ups. A GUI builds curves off its main thread with :meth:`ThresholdSession.build_curve`
  (a :class:`~napari_softseg.progress.Progress` generator that only reads the session) and hands the
  result back with :meth:`ThresholdSession.add_curve`.
* :func:`mask_operating_point` scores one drawn mask (an annotator's) against the same references;
  :func:`leave_one_out_curves` gives the model's leave-one-rater-out Dice at any threshold.

How the mask is drawn (the renderer-side threshold and the per-slice outlines) is
:mod:`napari_softseg.analysis.display`.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> masks = (rng.random((3, 8, 8, 4)) > 0.5).astype(np.uint8)
    >>> session = ThresholdSession(masks.mean(0).astype(np.float32), masks, spacing=(1.0, 1.0, 2.0))
    >>> session.reference = Reference("consensus", k=2)
    >>> round(session.at(0.5).recall, 3)
    1.0
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_softseg.analysis.consensus import agreement_count, consensus_k, describe, leave_one_out_k
from napari_softseg.analysis.metrics import OperatingPoint, PRCurve, volume_ml
from napari_softseg.analysis.softlabels import consensus, weighted_mean
from napari_softseg.progress import Progress, drive

#: Thresholds live on this grid (the PR curve's bins): the slider steps by 1 / GRID.
GRID = 1000

REFERENCE_KINDS = ("consensus", "rater", "soft", "expected")


@dataclass(frozen=True)
class Reference:
    """What the soft map is compared with.

    Attributes:
        kind: ``"consensus"`` (voxels marked by at least ``k`` raters), ``"rater"`` (rater number
            ``rater``, 0-based), ``"soft"`` (the soft label: mean of the raters, counted softly) or
            ``"expected"`` (no annotations: the soft map is taken as its own calibrated truth).
        k: Raters needed for the consensus.
        rater: Index of the rater for ``kind == "rater"``.
    """

    kind: str = "consensus"
    k: int = 1
    rater: int = 0

    def __post_init__(self):
        if self.kind not in REFERENCE_KINDS:
            raise ValueError(f"unknown reference kind {self.kind!r}; choose from {REFERENCE_KINDS}")

    @property
    def needs_raters(self) -> bool:
        """Whether this reference is made from rater masks."""
        return self.kind != "expected"

    def describe(self, rater_names: list[str] | None = None, n_raters: int | None = None) -> str:
        """A short human label, e.g. ``"consensus (2 of 3 raters)"``.

        Args:
            rater_names: Names of the raters, for ``kind == "rater"``.
            n_raters: Number of raters, for ``kind == "consensus"``.
        """
        if self.kind == "consensus":
            if n_raters:

                return describe(n_raters, self.k)
            return f"consensus ({self.k} raters)"
        if self.kind == "rater":
            return rater_names[self.rater] if rater_names else f"rater {self.rater + 1}"
        if self.kind == "soft":
            return "soft label (mean of raters)"
        return "expected (no annotations)"


def default_k(n_raters: int) -> int:
    """Raters needed for the consensus: at least half of them (1 of 1 or 2, 2 of 3 or 4, ...).

    The package's one rule, :func:`napari_softseg.analysis.consensus.consensus_k`.
    """

    return consensus_k(n_raters)


def reference_array(reference: Reference, masks: np.ndarray | None) -> np.ndarray | None:
    """The reference as an array (``None`` for ``"expected"``).

    Args:
        reference: Which reference.
        masks: Rater masks ``(R, ...)`` in {0, 1} (any integer or bool dtype).

    Returns:
        A bool mask (consensus, one rater), a float32 soft label (``"soft"``) or ``None``.

    Raises:
        ValueError: The reference needs raters and there are none, or ``k`` / ``rater`` is out of range.
    """
    check_reference(reference, 0 if masks is None else len(masks))
    if reference.kind == "expected":
        return None
    if reference.kind == "consensus":
        return consensus(masks, reference.k)
    if reference.kind == "rater":
        return np.asarray(masks[reference.rater]) != 0
    return weighted_mean(masks)


def check_reference(reference: Reference, n_raters: int) -> None:
    """Check that ``reference`` can be made from ``n_raters`` rater masks (cheap: no data touched).

    Raises:
        ValueError: The reference needs raters and there are none, or ``k`` / ``rater`` is out of range.
    """
    if reference.kind == "expected":
        return
    if not n_raters:
        raise ValueError(f"the reference '{reference.describe()}' needs rater masks, and there are none")
    if reference.kind == "consensus" and not 1 <= reference.k <= n_raters:
        raise ValueError(f"consensus needs 1 <= k <= {n_raters} raters, got k={reference.k}")
    if reference.kind == "rater" and not 0 <= reference.rater < n_raters:
        raise ValueError(f"there is no rater {reference.rater + 1} (the case has {n_raters})")


def snap(threshold: float) -> float:
    """The grid threshold nearest to ``threshold``, clipped to [0, 1] (the slider's 0.001 steps)."""
    return round(min(max(float(threshold), 0.0), 1.0) * GRID) / GRID


def mask_operating_point(
    mask: np.ndarray, reference: np.ndarray, spacing=None, *, threshold: float = float("nan")
) -> OperatingPoint:
    """Precision, recall, Dice and specificity of one binary mask (e.g. an annotator's) against a reference.

    A float reference (soft label, or the soft map itself for "expected") is counted softly: a voxel with
    reference value ``r`` is ``r`` of a positive and ``1 - r`` of a negative, as in
    :class:`~napari_softseg.analysis.metrics.PRCurve`. Empty denominators give 1.0 for precision/recall/Dice
    (nothing to find and nothing found is perfect) like the PR curve's end points.

    Args:
        mask: The mask (nonzero = inside).
        reference: Bool/integer mask or float map in [0, 1] of the same shape.
        spacing: Voxel size in mm for the volume, or ``None``.
        threshold: Stored in the result (NaN: a drawn mask has no threshold).

    Raises:
        ValueError: Shapes differ.
    """
    mask = np.asarray(mask) != 0
    reference = np.asarray(reference)
    if mask.shape != reference.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the reference shape {reference.shape}")
    ref = reference.astype(np.float64) if reference.dtype.kind == "f" else (reference != 0).astype(np.float64)
    total = float(ref.sum())
    tp = float(ref[mask].sum())
    n_pos = int(mask.sum())
    fp = n_pos - tp
    fn = total - tp
    tn = mask.size - n_pos - fn
    precision = tp / n_pos if n_pos else 1.0
    recall = tp / total if total else 1.0
    dice = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    specificity = tn / (tn + fp) if (tn + fp) else 1.0
    return OperatingPoint(
        threshold=threshold, tp=tp, fp=fp, fn=fn, tn=tn, precision=precision, recall=recall, dice=dice,
        specificity=specificity, n_positive=n_pos,
        volume_ml=None if spacing is None else volume_ml(mask, spacing),
    )


class ThresholdSession:
    """One soft map, its raters, and a cached PR curve per reference: O(1) statistics at any threshold.

    Args:
        prediction: Soft map in [0, 1] (any shape; not copied).
        masks: Rater masks ``(R, *prediction.shape)`` in {0, 1}, or ``None``.
        spacing: Voxel size in mm (3 values, any order: only their product matters), or ``None``.
        rater_names: Names of the raters (default ``rater 1`` ...).
        n_bins: PR-curve bins (the threshold grid).

    Raises:
        ValueError: Mask shapes do not match the prediction.
    """

    def __init__(self, prediction, masks=None, *, spacing=None, rater_names=None, n_bins: int = GRID):
        self.prediction = prediction
        if masks is not None and len(masks) == 0:
            masks = None
        if masks is not None and tuple(masks.shape[1:]) != tuple(prediction.shape):
            raise ValueError(
                f"rater masks have shape {tuple(masks.shape[1:])}, the soft map {tuple(prediction.shape)}"
            )
        self.masks = masks
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        n = 0 if masks is None else len(masks)
        self.rater_names = list(rater_names) if rater_names else [f"rater {i + 1}" for i in range(n)]
        self.n_bins = n_bins
        self._curves: dict[Reference, PRCurve] = {}
        self._reference = Reference("consensus", k=default_k(n)) if n else Reference("expected")

    @property
    def n_raters(self) -> int:
        return 0 if self.masks is None else len(self.masks)

    @property
    def reference(self) -> Reference:
        """The current reference; setting it builds its PR curve if not cached (one pass over the data)."""
        return self._reference

    @reference.setter
    def reference(self, reference: Reference) -> None:
        self.curve_for(reference)
        self._reference = reference

    def describe_reference(self, reference: Reference | None = None) -> str:
        return (reference or self._reference).describe(self.rater_names, self.n_raters)

    def curve_for(self, reference: Reference) -> PRCurve:
        """The PR curve of the soft map against ``reference`` (cached; built here if missing).

        Raises:
            ValueError: The reference needs raters the session does not have.
        """
        if reference not in self._curves:
            self.add_curve(reference, drive(self.build_curve(reference)))
        return self._curves[reference]

    def has_curve(self, reference: Reference) -> bool:
        """Whether the PR curve against ``reference`` is cached (setting it as reference is then O(1))."""
        return reference in self._curves

    def build_curve(self, reference: Reference) -> Generator[Progress, None, PRCurve]:
        """Build the PR curve against ``reference`` without caching it: a Progress generator.

        It only reads the session, so it can run in a worker thread; give the result to
        :meth:`add_curve` on the thread that owns the session. The reference is checked here, before the
        generator starts.

        Raises:
            ValueError: The reference needs raters the session does not have.
        """
        check_reference(reference, self.n_raters)
        return self._build_curve(reference)

    def _build_curve(self, reference: Reference) -> Generator[Progress, None, PRCurve]:
        yield Progress("PR curve", 0, 1, f"PR curve vs {self.describe_reference(reference)}")
        target = reference_array(reference, self.masks)
        return PRCurve(self.prediction, target, n_bins=self.n_bins, spacing=self.spacing)

    def add_curve(self, reference: Reference, curve: PRCurve) -> None:
        """Cache a curve made by :meth:`build_curve` for ``reference``."""
        self._curves[reference] = curve

    @property
    def curve(self) -> PRCurve:
        """The PR curve against the current reference."""
        return self.curve_for(self._reference)

    def at(self, threshold: float) -> OperatingPoint:
        """The operating point at ``threshold`` (snapped to the grid) against the current reference. O(1)."""
        return self.curve.at(snap(threshold))

    def threshold_for_recall(self, min_recall: float) -> float:
        """Highest grid threshold whose recall is at least ``min_recall``."""
        return snap(self.curve.threshold_for_recall(min_recall))

    def threshold_for_precision(self, min_precision: float) -> float | None:
        """Lowest grid threshold whose (non-empty) mask has precision at least ``min_precision``; None if none."""
        t = self.curve.threshold_for_precision(min_precision)
        return None if t is None else snap(t)

    def reference_mask(self, reference: Reference | None = None) -> np.ndarray | None:
        """The reference as an array (see :func:`reference_array`); ``None`` for "expected"."""
        return reference_array(reference or self._reference, self.masks)


def others_consensus(masks: np.ndarray, rater: int) -> np.ndarray:
    """The consensus of all raters but ``rater``: at least half of the others (bool).

    The same rule as :func:`~napari_softseg.analysis.metrics.leave_one_rater_out` (``k = ceil((R - 1) / 2)``), so a
    PR curve against it gives the model's leave-one-out Dice at every threshold in O(1).

    Raises:
        ValueError: Fewer than 2 raters or ``rater`` out of range.
    """
    n = len(masks)
    if n < 2:
        raise ValueError("leave-one-rater-out needs at least 2 raters")
    if not 0 <= rater < n:
        raise ValueError(f"there is no rater {rater + 1} (the case has {n})")
    # the others' count is everyone's minus this rater's: no copy of the other R - 1 masks
    others = agreement_count(masks) - (np.asarray(masks[rater]) != 0).view(np.uint8)
    return others >= leave_one_out_k(n)


def leave_one_out_curves(
    prediction: np.ndarray, masks: np.ndarray, *, n_bins: int = GRID
) -> Generator[Progress, None, list[PRCurve]]:
    """PR curves of ``prediction`` against the consensus of all raters but one, for each rater.

    With them the model's leave-one-rater-out Dice at any threshold is an O(1) look-up (the rater
    comparison's "model vs same" column). A Progress generator (one step per rater, 0.2–0.5 s each at
    256³): run it in a worker thread from a GUI, or with :func:`~napari_softseg.progress.drive`.

    Args:
        prediction: Soft map in [0, 1].
        masks: Rater masks ``(R, *prediction.shape)``, R >= 2.
        n_bins: PR-curve bins.

    Returns:
        One :class:`~napari_softseg.analysis.metrics.PRCurve` per rater, in rater order.

    Raises:
        ValueError: Fewer than 2 raters (raised here, before the generator starts).
    """
    if len(masks) < 2:
        raise ValueError("leave-one-rater-out needs at least 2 raters")
    return _leave_one_out_curves(prediction, masks, n_bins)


def _leave_one_out_curves(prediction, masks, n_bins: int) -> Generator[Progress, None, list[PRCurve]]:
    n = len(masks)
    curves = []
    for i in range(n):
        yield Progress("leave-one-rater-out curves", i, n, f"model vs the raters other than rater {i + 1}")
        curves.append(PRCurve(prediction, others_consensus(masks, i), n_bins=n_bins))
    return curves
