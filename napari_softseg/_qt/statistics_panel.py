"""The Threshold explorer's numbers: sensitivity, PPV, Dice, specificity and volumes at the threshold.

:class:`StatisticsPanel` is two group boxes of name/value rows: the clinical numbers (sensitivity, PPV,
Dice, predicted volume) for the dock's fixed top section next to the slider, and the rest (specificity,
reference / false-positive / false-negative volumes) for its scroll area. Values are fixed-size labels,
so new text repaints one label, with no relayout of the dock per slider move. Against the "expected"
reference (no annotation) every name reads "expected …" and the tooltips say how it is counted.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGridLayout, QGroupBox, QLabel, QWidget

PENDING = "…"                       # a statistic whose PR curve is still being built
EMPTY = "–"                          # no soft map

#: The statistics shown, in order: (key, label, tooltip).
STATISTICS = (
    ("sensitivity", "sensitivity (recall)", "Share of the reference that lies inside p ≥ t: TP / (TP + FN)"),
    ("PPV", "PPV (precision)", "Share of p ≥ t that lies inside the reference: TP / (TP + FP)"),
    ("Dice", "Dice", "Overlap of p ≥ t and the reference: 2·TP / (2·TP + FP + FN)"),
    ("specificity", "specificity", "Share of the background left outside p ≥ t: TN / (TN + FP)"),
    ("predicted volume", "predicted volume", "Volume of p ≥ t (voxel count × voxel volume)"),
    ("reference volume", "reference volume", "Volume of the reference (expected: the sum of p)"),
    ("FP volume", "false-positive volume", "Volume inside p ≥ t but outside the reference"),
    ("FN volume", "false-negative volume", "Volume of the reference missed by p ≥ t"),
)
#: The numbers shown in the fixed top section, next to the slider (the others scroll).
PRIMARY_STATISTICS = ("sensitivity", "PPV", "Dice", "predicted volume")
EXPECTED_TOOLTIP = (
    "Expected values: no annotation is used. The calibrated map is taken as its own truth — a voxel with "
    "p = 0.7 counts as 0.7 of a true voxel — so expected TP = Σ p over p ≥ t, expected FN = Σ p over p < t, "
    "expected FP = Σ (1 − p) over p ≥ t."
)


def format_volume(ml: float | None) -> str:
    """A volume in mL with 3 significant digits (``"–"`` without a voxel size)."""
    if ml is None or not np.isfinite(ml):
        return EMPTY
    return f"{ml:.3g} mL" if abs(ml) < 1000 else f"{ml:,.0f} mL"


class StatisticsPanel:
    """The operating point's numbers in two group boxes (see the module docstring).

    Args:
        font_source: A widget whose font sizes the value column.

    Attributes:
        primary: Group box of :data:`PRIMARY_STATISTICS` (for the fixed top section).
        more: Group box of the other statistics.
        labels: Value label per statistic key.
        names: Name label per statistic key.
    """

    def __init__(self, font_source: QWidget):
        self.primary = QGroupBox("at this threshold")
        self.more = QGroupBox("more at this threshold")
        self.labels: dict[str, QLabel] = {}
        self.names: dict[str, QLabel] = {}
        grids = {id(box): QGridLayout(box) for box in (self.primary, self.more)}
        value_width = font_source.fontMetrics().horizontalAdvance("expected 0.000") + 12
        for key, text, tip in STATISTICS:
            grid = grids[id(self.primary if key in PRIMARY_STATISTICS else self.more)]
            name = QLabel(text)
            name.setToolTip(tip)
            label = QLabel(EMPTY)
            label.setToolTip(tip)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            label.setFixedSize(value_width, label.fontMetrics().height() + 4)
            self.labels[key] = label
            self.names[key] = name
            row = grid.rowCount() if grid.count() else 0
            grid.addWidget(name, row, 0)
            grid.addWidget(label, row, 1)
        for grid in grids.values():
            grid.setColumnStretch(0, 1)
            grid.setVerticalSpacing(1)

    def fill(self, text: str) -> None:
        """Every value reads ``text`` (:data:`PENDING` while a curve is built, :data:`EMPTY` without one)."""
        for label in self.labels.values():
            label.setText(text)

    def show(self, op, voxel_ml: float | None) -> None:
        """Show the operating point ``op`` (volumes need the voxel volume ``voxel_ml`` in mL)."""
        labels = self.labels
        labels["sensitivity"].setText(f"{op.recall:.3f}")
        labels["PPV"].setText(f"{op.precision:.3f}")
        labels["Dice"].setText(f"{op.dice:.3f}")
        labels["specificity"].setText(f"{op.specificity:.4f}")
        labels["predicted volume"].setText(format_volume(op.volume_ml))
        for key, count in (("reference volume", op.tp + op.fn), ("FP volume", op.fp), ("FN volume", op.fn)):
            labels[key].setText(format_volume(None if voxel_ml is None else count * voxel_ml))

    def set_expected(self, expected: bool) -> None:
        """Name the numbers "expected …" (and explain them) when no annotation is the reference."""
        for key, text, tip in STATISTICS:
            name = self.names[key]
            name.setText(f"expected {text}" if expected and key != "predicted volume" else text)
            name.setToolTip(tip + ("\n\n" + EXPECTED_TOOLTIP if expected else ""))
            self.labels[key].setToolTip(name.toolTip())
