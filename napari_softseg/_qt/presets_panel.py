"""The Threshold explorer's presets: jump to the threshold that reaches a sensitivity or a PPV target.

:class:`PresetsPanel` holds the two target boxes and their buttons ("sensitivity ≥", "PPV ≥") and a line
that says what the chosen operating point reached, with a warning when it is degenerate or its mask is more
than twice the reference volume (:func:`~napari_softseg.analysis.presets.preset_report`). The thresholds
come from the dock's :class:`~napari_softseg.analysis.operating_point.ThresholdSession` (its PR curve); the
dock moves the slider.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QDoubleSpinBox, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_softseg._napari.layers import format_threshold
from napari_softseg._qt.notifications import show_warning
from napari_softseg.analysis.operating_point import ThresholdSession
from napari_softseg.analysis.presets import preset_report

TITLE = "Threshold explorer"


class PresetsPanel(QWidget):
    """The sensitivity / PPV presets of one Threshold explorer.

    Args:
        session: Returns the dock's session while its PR curve is ready (else None: the presets do nothing).
        threshold: Returns the dock's current threshold.
        set_threshold: Moves the dock to a threshold.
        voxel_ml: Returns one voxel's volume in mL (None without a voxel size).
    """

    def __init__(self, session: Callable[[], ThresholdSession | None], threshold: Callable[[], float],
                 set_threshold: Callable[[float], None], voxel_ml: Callable[[], float | None]):
        super().__init__()
        self._session, self._threshold, self._set_threshold, self._voxel_ml = (
            session, threshold, set_threshold, voxel_ml)
        self.recall_target = QDoubleSpinBox()
        self.precision_target = QDoubleSpinBox()
        for box, value in ((self.recall_target, 0.95), (self.precision_target, 0.90)):
            box.setRange(0.0, 1.0)
            box.setDecimals(3)
            box.setSingleStep(0.01)
            box.setValue(value)
        self.recall_button = QPushButton("sensitivity ≥")
        self.recall_button.setToolTip("Highest threshold that keeps sensitivity (recall) at or above the target")
        self.precision_button = QPushButton("PPV ≥")
        self.precision_button.setToolTip("Lowest threshold that reaches the target PPV (precision)")
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setVisible(False)       # shown once a preset says what it reached

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        grid = QGridLayout()
        grid.addWidget(self.recall_button, 0, 0)
        grid.addWidget(self.recall_target, 0, 1)
        grid.addWidget(self.precision_button, 1, 0)
        grid.addWidget(self.precision_target, 1, 1)
        layout.addLayout(grid)
        layout.addWidget(self.label)
        self.recall_button.clicked.connect(lambda *_: self.apply_recall())
        self.precision_button.clicked.connect(lambda *_: self.apply_precision())

    def set_enabled(self, enabled: bool) -> None:
        """The presets need a finished PR curve."""
        for w in (self.recall_button, self.precision_button):
            w.setEnabled(enabled)

    def apply_recall(self) -> str:
        """Jump to the highest threshold whose sensitivity is at least the target; returns what it says."""
        session = self._session()
        if session is None:
            return ""
        target = self.recall_target.value()
        t = session.threshold_for_recall(target)
        self._set_threshold(t)
        return self._report(session, f"sensitivity ≥ {target:.3f}", session.at(t))

    def apply_precision(self) -> str:
        """Jump to the lowest threshold whose PPV reaches the target; returns what it says."""
        session = self._session()
        if session is None:
            return ""
        target = self.precision_target.value()
        t = session.threshold_for_precision(target)
        if t is None:
            text = (f"No threshold reaches PPV ≥ {target:.3f} against {session.describe_reference()}; "
                    f"t stays {format_threshold(self._threshold())}")
            self.show_text("⚠ " + text)
            show_warning(f"{TITLE}: " + text)
            return text
        self._set_threshold(t)
        return self._report(session, f"PPV ≥ {target:.3f}", session.at(t))

    def _report(self, session: ThresholdSession, goal: str, op) -> str:
        """Say what a preset reached; warn when the operating point is degenerate or the mask oversized."""
        report = preset_report(goal, op, expected=session.reference.kind == "expected",
                               voxel_ml=self._voxel_ml(), threshold_text=format_threshold(op.threshold))
        if report.warning:
            show_warning(f"{TITLE}: " + report.text.removeprefix("⚠ "))
        self.show_text(report.text)
        return report.text.removeprefix("⚠ ")

    def show_text(self, text: str) -> None:
        """Show (or with ``""`` hide) the line under the presets."""
        self.label.setText(text)
        self.label.setVisible(bool(text))
