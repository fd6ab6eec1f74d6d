"""Calibration: is the soft map's 0.7 really "70 % of raters would mark this"?

For the chosen soft map and raters, shows the reliability diagram (10 equal-width bins of the
prediction: mean prediction against the mean target in each bin) and the expected calibration error
(ECE), against the soft label (mean of the raters — what a calibrated soft-label model should match)
and against each rater's hard mask. Uses :func:`~napari_softseg.analysis.metrics.reliability` and
:func:`~napari_softseg.analysis.metrics.expected_calibration_error`.

The bins are computed off the GUI thread (:class:`~napari_softseg._qt.background.LatestJob`) when the
layers change or a rater's mask is painted (once the user pauses); the dock says "computing …" and
disables *Recompute* meanwhile, and shows only the latest request's results.
:attr:`CalibrationWidget.ready` is False while it computes.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTableWidgetItem, QWidget

from napari_softseg._qt.background import ComputeStatus, LatestJob
from napari_softseg._qt.dock_column import join_column_when_docked
from napari_softseg._qt.dock_layout import dock_sections, fit_table, read_only_table
from napari_softseg._qt.notifications import notify_exception
from napari_softseg._qt.plots import ReliabilityPlot
from napari_softseg._qt.qt_helpers import relax_combos
from napari_softseg._qt.selection import LayerInputs
from napari_softseg.analysis.metrics import expected_calibration_error, reliability
from napari_softseg.analysis.softlabels import weighted_mean
from napari_softseg.errors import SoftsegError
from napari_softseg.progress import Progress

TITLE = "Calibration"
N_BINS = 10
SOFT_LABEL = "soft label (mean of raters)"


def calibration_work(prediction, masks, rater_names: list[str], n_bins: int = N_BINS):
    """Reliability bins and ECE against the soft label and each rater: a Progress generator.

    Returns:
        ``[(target name, reliability dict, ECE), ...]``, the soft label first.
    """
    n = len(masks) + 1
    yield Progress("calibration", 0, n, SOFT_LABEL)
    names = [SOFT_LABEL, *rater_names]
    results = []
    for i, name in enumerate(names):
        if i:
            yield Progress("calibration", i, n, name)
        # one target at a time (packed raters are unpacked one by one, never as a stack)
        target = weighted_mean(masks) if i == 0 else masks[i - 1]
        results.append(
            (name, reliability(prediction, target, n_bins), expected_calibration_error(prediction, target, n_bins))
        )
        del target
    return results


class CalibrationWidget(QWidget):
    """Dock widget: reliability diagram and ECE of a soft map against the soft label and each rater.

    Args:
        napari_viewer: The viewer (napari passes it by this name).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.results: list[tuple[str, dict, float]] = []   # (target name, reliability bins, ECE)
        self.inputs = LayerInputs(napari_viewer)
        self.compute_button = QPushButton("Recompute")
        self.table = read_only_table(["target", f"ECE ({N_BINS} bins)"])
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.headline = QLabel("ECE: –")
        self.headline.setToolTip(
            "Expected calibration error against the soft label (mean of raters), 10 equal-width bins: the average "
            "gap between predicted probability and observed frequency, weighted by voxel count. 0 is perfect."
        )
        font = self.headline.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.headline.setFont(font)
        self.plot = ReliabilityPlot(napari_viewer)
        self.progress = ComputeStatus()
        self.job = LatestJob(self, TITLE, self.progress)
        top, layout = dock_sections(self)       # the headline number and Recompute never scroll away
        row = QHBoxLayout()
        row.addWidget(self.headline, 1)
        row.addWidget(self.compute_button)
        top.addLayout(row)
        top.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.table)
        layout.addWidget(self.status)
        layout.addWidget(self.inputs)
        layout.addStretch(1)
        relax_combos(self)
        join_column_when_docked(self, TITLE)
        self.inputs.changed.connect(self.compute)
        self.inputs.edited.connect(self.compute)
        self.compute_button.clicked.connect(self.compute)
        self.job.busy_changed.connect(lambda busy: self.compute_button.setEnabled(not busy))
        self.compute()

    @property
    def ready(self) -> bool:
        """False while the bins are computed in the background."""
        return not self.job.busy

    def ece(self, target: str) -> float:
        """ECE against ``target`` (``SOFT_LABEL`` or a rater layer's name) from the last computation."""
        return next(e for name, _, e in self.results if name == target)

    def compute(self) -> None:
        """Compute reliability bins and ECE for the chosen layers (in the background) and show them."""
        self.results = []
        layer = self.inputs.soft_layer()
        try:
            inputs = self.inputs.read()
            if inputs.masks is None:
                raise SoftsegError("calibration needs rater masks: open the case's rater layers (Labels)")
        except SoftsegError as exc:
            if layer is not None:
                notify_exception(exc, action="Calibration")
            self.job.cancel()
            self.status.setText(str(exc) if layer is not None else "Open a soft map and its raters.")
            self._show()
            return
        self.status.setText("")
        self.headline.setText("ECE: computing …")
        self._show()
        name = inputs.soft_layer.name
        self.job.start(
            calibration_work(inputs.prediction, inputs.masks, inputs.rater_names),
            lambda results: self._on_results(name, results), message="computing reliability bins …",
        )

    def _on_results(self, name: str, results: list) -> None:
        self.results = results
        self.headline.setText(f"ECE vs soft label: {results[0][2]:.4f}")
        self.status.setText(
            f"{name}: ECE {results[0][2]:.4f} against the soft label; lower is better "
            "(0 = predicted probabilities match the observed frequencies)."
        )
        self._show()

    def _show(self) -> None:
        self.plot.plot([(name, rel) for name, rel, _ in self.results])
        self.table.setRowCount(len(self.results))
        for r, (name, _, ece) in enumerate(self.results):
            value = QTableWidgetItem(f"{ece:.4f}")
            value.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(r, 0, QTableWidgetItem(name))
            self.table.setItem(r, 1, value)
        fit_table(self.table)
