"""What a threshold preset reached, in words, with the warnings a clinician must not miss.

A preset ("sensitivity ≥ 0.95", "PPV ≥ 0.90") jumps to the threshold that meets its target on the PR
curve. :func:`preset_report` says where it landed and warns when the operating point is

* **degenerate** (:func:`is_degenerate`): at an end of the threshold range, an empty mask, or one that
  keeps less than :data:`DEGENERATE_SENSITIVITY` of the reference — the target is met only on paper;
* **oversized**: the mask's volume is more than :data:`VOLUME_WARNING_RATIO` times the reference volume
  (or, without annotations, the expected volume Σ p) — e.g. a high-sensitivity preset that paints far
  beyond the structure.

Example:
    >>> from napari_softseg.analysis.metrics import OperatingPoint
    >>> op = OperatingPoint(threshold=0.05, tp=90.0, fp=230.0, fn=10.0, tn=680.0, precision=0.281,
    ...                     recall=0.9, dice=0.43, specificity=0.75, n_positive=320, volume_ml=None)
    >>> report = preset_report("sensitivity ≥ 0.900", op)
    >>> report.oversized, round(report.volume_ratio, 1)
    (True, 3.2)
    >>> report.text.split(" — ")[1]
    '⚠ the mask is 3.2× the reference volume (320 voxels vs 100 voxels): check the outline before using it'
"""

from __future__ import annotations

from dataclasses import dataclass

from napari_softseg.analysis.metrics import OperatingPoint

#: A preset lands on a degenerate operating point when it keeps less than this share of the reference.
DEGENERATE_SENSITIVITY = 0.1
#: Warn when a preset's mask is more than this many times the reference (or expected) volume.
VOLUME_WARNING_RATIO = 2.0


def is_degenerate(op: OperatingPoint) -> bool:
    """An operating point no one should pick by accident: at an end of the threshold range (t ≤ 0.005 or
    t ≥ 0.995), an empty mask, or one that keeps less than :data:`DEGENERATE_SENSITIVITY` of the reference."""
    return (op.threshold >= 0.995 or op.threshold <= 0.005 or op.n_positive == 0
            or op.recall < DEGENERATE_SENSITIVITY)


def volume_ratio(op: OperatingPoint) -> float | None:
    """The mask's voxel count over the reference's (``tp + fn``; Σ p for the expected reference); None if empty."""
    reference = op.tp + op.fn
    return op.n_positive / reference if reference > 0 else None


@dataclass(frozen=True)
class PresetReport:
    """What a preset reached.

    Attributes:
        text: One line for the dock (starts with "⚠" when there is a warning).
        degenerate: See :func:`is_degenerate`.
        oversized: The mask is more than :data:`VOLUME_WARNING_RATIO` × the reference volume.
        volume_ratio: Mask volume / reference volume (None without a reference volume).
    """

    text: str
    degenerate: bool
    oversized: bool
    volume_ratio: float | None

    @property
    def warning(self) -> bool:
        """Whether the user must be warned."""
        return self.degenerate or self.oversized


def _volume(count: float, voxel_ml: float | None) -> str:
    if voxel_ml is None:
        return f"{count:,.0f} voxels"
    ml = count * voxel_ml
    return f"{ml:.3g} mL" if abs(ml) < 1000 else f"{ml:,.0f} mL"


def preset_report(goal: str, op: OperatingPoint, *, expected: bool = False, voxel_ml: float | None = None,
                  threshold_text: str | None = None) -> PresetReport:
    """Describe the operating point ``op`` a preset for ``goal`` jumped to, with its warnings.

    Args:
        goal: What the preset aimed at, e.g. ``"sensitivity ≥ 0.950"``.
        op: The operating point reached.
        expected: The numbers are expected values (no annotation: the calibrated map is its own truth).
        voxel_ml: Volume of one voxel in mL (volumes in mL; None: in voxels).
        threshold_text: How to write the threshold (default ``f"{op.threshold:g}"``).
    """
    prefix = "expected " if expected else ""
    t = threshold_text if threshold_text is not None else f"{op.threshold:g}"
    text = (f"{goal}: t = {t} → {prefix}sensitivity {op.recall:.3f}, "
            f"{prefix}PPV {op.precision:.3f}, {op.n_positive:,} voxels")
    degenerate = is_degenerate(op)
    ratio = volume_ratio(op)
    oversized = ratio is not None and ratio > VOLUME_WARNING_RATIO and op.n_positive > 0
    if degenerate:
        text += (" — ⚠ degenerate operating point: the target is met only at the end of the threshold range "
                 "or by keeping almost none of the structure; check the outline before using it")
    if oversized:
        reference = "expected" if expected else "reference"
        text += (f" — ⚠ the mask is {ratio:.1f}× the {reference} volume ({_volume(op.n_positive, voxel_ml)} vs "
                 f"{_volume(op.tp + op.fn, voxel_ml)}): check the outline before using it")
    return PresetReport(("⚠ " if degenerate or oversized else "") + text, degenerate, oversized, ratio)
