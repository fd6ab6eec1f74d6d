"""The Threshold explorer's named operating points: a model's cohort points as presets, marks and a cohort mode.

A soft map predicted by a model folder records it in its provenance (``metadata["softseg"]``:
``model``, and ``model_sha256`` where the prediction hashed the weights). :class:`NamedPointsPanel` asks
:func:`~napari_softseg.pipeline.named_points.model_points` what that folder stores
(``softseg operating-point``, ``MODEL_DIR/operating_points.json``) and

* lists the points in a box: picking one moves the slider to its ``t`` and shows its requirement, cohort,
  interval, spread and date; a **stale** point (chosen for other weights or config, or for weights other
  than those that made this soft map) is listed greyed out with the reason and cannot be picked;
* marks every current point on the PR curve of the open case, at its ``t``, labelled with its name;
* in **cohort mode** (a check box) draws the pooled cohort curve the point was chosen on, and the band of
  the cases around it (10th–90th percentile of per-case sensitivity and PPV at each threshold), behind the
  case's curve.

The explorer creates the panel and calls :meth:`NamedPointsPanel.curve_shown` when it draws a new curve;
the panel follows the explorer's layer choice by itself.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QLabel, QVBoxLayout, QWidget

from napari_softseg._napari.layers import provenance_of
from napari_softseg.pipeline.named_points import ModelPoints, NamedPoint, model_points

PLACEHOLDER = "named operating point…"


class NamedPointsPanel(QWidget):
    """Named operating points of the soft map's model, for a :class:`~napari_softseg._qt.threshold_explorer.ThresholdExplorer`.

    Args:
        explorer: The dock (its ``inputs``, ``plot``, ``set_threshold``, ``session`` and ``reference`` are used).
    """

    def __init__(self, explorer):
        super().__init__()
        self.explorer = explorer
        self.found = ModelPoints(None)
        self.selected: NamedPoint | None = None
        self.combo = QComboBox()
        self.combo.setToolTip("Operating points chosen for this model on a validation cohort "
                              "(softseg operating-point): picking one moves the threshold to its t")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setVisible(False)
        self.cohort_check = QCheckBox("cohort mode: pooled curve and per-case band")
        self.cohort_check.setToolTip("Draw the pooled PR curve of the cohort the point was chosen on, and the band "
                                     "of its cases (10th–90th percentile of per-case sensitivity and PPV at each t)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.status)
        layout.addWidget(self.details)
        layout.addWidget(self.cohort_check)
        self.combo.activated.connect(self._on_activated)
        self.cohort_check.toggled.connect(lambda *_: self._draw_cohort())
        explorer.inputs.changed.connect(self.refresh)
        explorer.inputs.edited.connect(self.refresh)
        self.refresh()

    # -- public API (tests, scripts) ---------------------------------------------------------------
    @property
    def points(self) -> list[NamedPoint]:
        """Every stored point of the soft map's model, current and stale."""
        return list(self.found.points)

    def offered(self) -> list[str]:
        """Names of the points that can be picked (current ones)."""
        return [p.name for p in self.found.current]

    def pick(self, name: str) -> NamedPoint | None:
        """Pick the current point ``name`` as the box does: the slider moves to its t; returns it (None if not offered)."""
        for i in range(1, self.combo.count()):
            point = self.combo.itemData(i)
            if point is not None and point.name == name and point.stale is None:
                self.combo.setCurrentIndex(i)
                self._on_activated(i)
                return point
        return None

    def set_cohort_mode(self, on: bool) -> None:
        """Show (or hide) the pooled cohort curve with its per-case band."""
        self.cohort_check.setChecked(on)

    def refresh(self, *args) -> None:
        """Re-read the chosen soft map's model and its points (cheap: cached on the files' stat)."""
        layer = self.explorer.inputs.soft_layer()
        prov = provenance_of(layer) if layer is not None else {}
        sha = prov.get("model_sha256")
        self.found = model_points(prov.get("model") if layer is not None else None, sha if isinstance(sha, str) else None)
        keep = self.selected.name if self.selected is not None else None
        self.selected = None
        self.combo.clear()
        self.combo.addItem(PLACEHOLDER if self.found.points else "no named operating points", None)
        for point in self.found.points:
            self.combo.addItem(point.label, point)
            index = self.combo.count() - 1
            self.combo.setItemData(index, point.details(), Qt.ItemDataRole.ToolTipRole)
            if point.stale is not None:
                item = self.combo.model().item(index)
                if item is not None:
                    item.setEnabled(False)
            elif point.name == keep:
                self.selected = point
                self.combo.setCurrentIndex(index)
        self.combo.setEnabled(bool(self.found.points))
        self.status.setText(self.found.message)
        if self.selected is None:
            self.details.setVisible(False)
        curve = self._cohort_point()
        self.cohort_check.setEnabled(curve is not None)
        self.cohort_check.setToolTip(self._cohort_tip(curve))
        self.curve_shown()

    def curve_shown(self) -> None:
        """The explorer drew a (new) curve: mark the points on it and redraw the cohort curve."""
        self.explorer.plot.set_named_marks(self.marks())
        self._draw_cohort()

    def marks(self) -> list[tuple[str, float, float]]:
        """``(name, sensitivity, PPV)`` of each current point on the open case's curve (empty while it is built)."""
        session = self.explorer.session
        if session is None or self.explorer.reference is None:
            return []
        out = []
        for point in self.found.current:
            op = session.at(point.threshold)
            out.append((point.name, float(op.recall), float(op.precision)))
        return out

    # -- internals ---------------------------------------------------------------------------------
    def _on_activated(self, index: int) -> None:
        point = self.combo.itemData(index)
        if not isinstance(point, NamedPoint) or point.stale is not None:
            return
        self.selected = point
        self.explorer.preset_label.setVisible(False)      # the other presets' text is about another t
        self.details.setText(point.details())
        self.details.setVisible(True)
        self.explorer.set_threshold(point.threshold)
        if self.cohort_check.isChecked():
            self._draw_cohort()

    def _cohort_point(self) -> NamedPoint | None:
        """The point whose cohort curve is drawn: the picked one, else the first current one that has a curve."""
        if self.selected is not None and self.selected.curve is not None:
            return self.selected
        return next((p for p in self.found.current if p.curve is not None), None)

    @staticmethod
    def _cohort_tip(point: NamedPoint | None) -> str:
        if point is None:
            return ("No stored cohort curve: the model has no current named point, or its points were chosen "
                    "before curves were stored (choose them again with softseg operating-point --replace)")
        c = point.curve
        return (f"Pooled PR curve of the {c.n_cases} case(s) '{point.name}' was chosen on (dashed), and the band of "
                f"the cases ({c.band_text} of per-case sensitivity and PPV at each threshold)")

    def _draw_cohort(self) -> None:
        point = self._cohort_point() if self.cohort_check.isChecked() else None
        plot = self.explorer.plot
        if point is None:
            plot.set_cohort()
            return
        c = point.curve
        plot.set_cohort(c.sensitivity, c.ppv, c.band_polygon(),
                        f"cases' {c.band_text} ({c.n_cases} case(s))")
        self.cohort_check.setToolTip(self._cohort_tip(point))
