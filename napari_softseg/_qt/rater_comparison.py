"""Rater comparison: each rater against the others, the model against the same consensus, and you.

* **Table** — for each rater, the Dice of that rater against the consensus of the other raters
  (leave-one-rater-out, :func:`~napari_softseg.analysis.metrics.leave_one_rater_out`) and the Dice of the model's
  mask ``p >= threshold`` against that same consensus. The better of the two is highlighted in each
  row. The threshold is the one shared with the threshold explorer; the model column comes from one PR
  curve per left-out rater, so it follows the slider without recounting voxels.
* **Annotator** — pick (or add) your own Labels layer and draw. Your mask becomes a point on the model's
  PR curve against the chosen reference, next to the model's current operating point, and a
  disagreement map layer shows where you differ from the raters' consensus, coloured by how many raters
  agree with you there (:func:`~napari_softseg.analysis.disagreement.disagreement_map`). Painting updates it
  once you pause (300 ms); *Refresh* recomputes on demand.

Both are computed off the GUI thread (:class:`~napari_softseg._qt.background.LatestJob` running the
Qt-free generators of :mod:`napari_softseg.analysis.rater_comparison`) in two channels; the dock says
"computing …", disables the reference and Refresh controls while the curves are built, and uses only the
latest request's results; the shared threshold keeps moving. :attr:`RaterComparison.ready` is False while
either channel works. The threshold and its status stay on top; the rest scrolls.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from napari_softseg._napari import layers as softseg_layers
from napari_softseg._napari.layer_roles import (
    HELPER_KEY,
    annotation_candidates,
    data_print,
    in_viewer,
    inputs_key,
    same_layer,
)
from napari_softseg._napari.layers import format_threshold
from napari_softseg._napari.overlay import apply_role
from napari_softseg._qt.background import ComputeStatus, LatestJob
from napari_softseg._qt.dock_column import join_column_when_docked
from napari_softseg._qt.dock_layout import dock_sections, fit_table, read_only_table
from napari_softseg._qt.notifications import notify_exception, show_warning
from napari_softseg._qt.plots import PRCurvePlot
from napari_softseg._qt.qt_helpers import connect_while_alive, relax_combos, signals_blocked
from napari_softseg._qt.selection import EDIT_DEBOUNCE_MS, LayerInputs, ReferencePicker
from napari_softseg.analysis.consensus import RULE, RULE_DETAIL
from napari_softseg.analysis.disagreement import agreement_colors, summarize
from napari_softseg.analysis.metrics import PRCurve
from napari_softseg.analysis.operating_point import GRID, Reference, ThresholdSession, check_reference, snap
from napari_softseg.analysis.rater_comparison import annotation_work, table_work
from napari_softseg.errors import SoftsegError

TITLE = "Rater comparison"
ANNOTATION_NAME = "my annotation"
HIGHLIGHT = QColor(60, 160, 90, 110)   # translucent green: readable on dark and light themes


class RaterComparison(QWidget):
    """Dock widget: leave-one-rater-out table, annotator's PR point and disagreement map.

    Args:
        napari_viewer: The viewer (napari passes it by this name).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ThresholdSession | None = None
        self.rows: list = []                    # RaterAgreement rows (rater column)
        self._loo_curves: list[PRCurve] = []    # model vs consensus of the others, per rater
        self._table_ready = True                # rows and curves are those of the current session
        self._curve_ready = False               # the session's reference is the chosen one, curve built
        self.annotation_point = None            # OperatingPoint of the annotator's mask
        self.disagreement_layer = None
        self._annotation_layer = None

        self.inputs = LayerInputs(napari_viewer)
        self.analysis = self.inputs.session        # the viewer's shared analysis state
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setDecimals(3)
        self.threshold_spin.setSingleStep(1.0 / GRID)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.setValue(self.analysis.threshold)
        self.threshold_spin.setToolTip("The model's threshold (shared with the Threshold explorer)")
        self.table = read_only_table(
            ["rater", "rater vs rest", "model vs rest"],
            {1: "Dice of the rater against the consensus of the other raters",
             2: "Dice of the model's mask p ≥ t against that same consensus"},
        )
        self.table.setToolTip(
            f"Dice against the consensus of the other raters ({RULE_DETAIL}); the better of rater "
            "and model is highlighted"
        )
        self.rule_label = QLabel(f"rest = consensus of the other raters: {RULE}")
        self.rule_label.setWordWrap(True)
        self.role_check = QCheckBox("annotator layout (raters outlined)")
        self.role_check.setToolTip("Show each rater as a one-voxel outline in its own colour (legend below); "
                                   "the clinician layout hides them")
        self.rater_legend = QLabel()
        self.rater_legend.setWordWrap(True)
        self.rater_legend.setTextFormat(Qt.TextFormat.RichText)
        self.summary = QLabel()
        self.summary.setWordWrap(True)

        self.annotation_combo = QComboBox()
        self.annotation_combo.setToolTip("Your own mask: a Labels layer of the same shape")
        self.add_button = QPushButton("Add my annotation layer")
        self.references = ReferencePicker(self._on_reference_changed, soft_first=True)
        self.reference_combo = self.references.combo
        self.k_spin = self.references.k_spin
        self.refresh_button = QPushButton("Refresh")
        self.annotation_label = QLabel("–")
        self.annotation_label.setWordWrap(True)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.plot = PRCurvePlot(napari_viewer)
        self.status = ComputeStatus()
        self.annotation_status = ComputeStatus()
        self.job = LatestJob(self, "Rater comparison", self.status)
        self.annotation_job = LatestJob(self, "Rater comparison", self.annotation_status)
        self._build_layout()
        relax_combos(self)

        self._schedule_annotation = qdebounced(self._on_annotation_paused, timeout=EDIT_DEBOUNCE_MS)
        self._annotation_print: tuple = ()      # the annotation's data as last compared
        self._none_chosen = False
        self.inputs.changed.connect(self.rebuild)
        self.inputs.edited.connect(self.rebuild)
        self.job.busy_changed.connect(self._update_enabled)
        self.threshold_spin.valueChanged.connect(lambda v: setattr(self.analysis, "threshold", v))
        connect_while_alive(self, self.analysis.threshold_changed, self._on_threshold)
        connect_while_alive(self, self.analysis.role_changed, self._on_role)
        self.role_check.toggled.connect(
            lambda on: setattr(self.analysis, "role", "annotator" if on else "clinician"))
        self.inputs.changed.connect(self._update_rater_legend)
        self.add_button.clicked.connect(self.add_annotation_layer)
        self.refresh_button.clicked.connect(lambda *_: self.refresh())
        self.annotation_combo.currentIndexChanged.connect(self._on_annotation_changed)
        napari_viewer.layers.events.inserted.connect(self._on_layer_inserted)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self._annotation_layers: list = []
        self._annotation_reference: Reference | None = None
        self.role_check.setChecked(self.analysis.role == "annotator")
        self._update_rater_legend()
        join_column_when_docked(self, TITLE)
        self.rebuild()

    def _build_layout(self) -> None:
        top, layout = dock_sections(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("model threshold t"))
        row.addWidget(self.threshold_spin)
        row.addStretch(1)
        top.addLayout(row)
        top.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(self.summary)
        layout.addWidget(self.rule_label)
        layout.addWidget(self.role_check)
        layout.addWidget(self.rater_legend)
        layout.addWidget(self.inputs)
        box = QGroupBox("you (annotator)")
        inner = QVBoxLayout(box)
        inner.addWidget(self.annotation_combo)
        inner.addWidget(self.add_button)
        inner.addWidget(QLabel("against"))
        inner.addWidget(self.reference_combo)    # the whole width: entries name the consensus rule in full
        row = QHBoxLayout()
        row.addWidget(self.k_spin)
        row.addStretch(1)
        row.addWidget(self.refresh_button)
        inner.addLayout(row)
        inner.addWidget(self.annotation_status)
        inner.addWidget(self.annotation_label)
        inner.addWidget(self.plot)
        inner.addWidget(self.legend)
        layout.addWidget(box)
        layout.addStretch(1)

    # -- public ------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return snap(self.analysis.threshold)

    @property
    def ready(self) -> bool:
        """False while the table, the curves or the annotator's view are computed in the background."""
        return not (self.job.busy or self.annotation_job.busy)

    def set_threshold(self, threshold: float) -> None:
        """Set the shared threshold (the explorer follows)."""
        self.analysis.threshold = snap(threshold)

    def annotation_layer(self):
        """The chosen annotation layer, or None."""
        i = self.annotation_combo.currentIndex()
        return self._annotation_layers[i] if 0 <= i < len(self._annotation_layers) else None

    def set_annotation_layer(self, layer) -> None:
        """Choose ``layer`` (a listed Labels layer) as the annotation; None: no annotation."""
        self.annotation_combo.setCurrentIndex(0 if layer is None else next(
            i for i, cand in enumerate(self._annotation_layers) if same_layer(cand, layer)))

    def set_reference(self, reference: Reference) -> None:
        """Reference for the annotator's point: a consensus (``k``), the soft label or a rater."""
        if not self.references.select(reference):
            self._on_reference_changed()

    def model_dice(self, rater: int, threshold: float | None = None) -> float:
        """The model's Dice against the consensus of all raters but ``rater``, at ``threshold``."""
        t = self.threshold if threshold is None else snap(threshold)
        return self._loo_curves[rater].at(t).dice

    def refresh(self) -> None:
        """Re-read the layers and recompute everything (the Refresh button)."""
        self.analysis.invalidate()
        self.rebuild()

    def _on_role(self, role: str) -> None:
        with signals_blocked(self.role_check):
            self.role_check.setChecked(role == "annotator")
        apply_role(self.viewer, role)
        self._update_rater_legend()

    def _update_rater_legend(self, *args) -> None:
        """One coloured swatch per chosen rater, in its outline colour (the annotator layout's legend)."""
        items = []
        for layer in self.inputs.rater_layers():
            try:
                rgba = np.asarray(layer.colormap.map(np.array([1])))[0]
                color = QColor.fromRgbF(*(float(c) for c in rgba[:3])).name()
            except Exception:  # noqa: BLE001 - a colormap without label 1: no swatch
                color = "#888888"
            items.append(f'<span style="color:{color}; font-size:14px">■</span>&nbsp;{layer.name}')
        self.rater_legend.setText("&nbsp;&nbsp; ".join(items))
        self.rater_legend.setVisible(bool(items) and self.analysis.role == "annotator")

    # -- building ----------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Read the chosen layers; compute the leave-one-out table and the annotator's view (background)."""
        previous = (self.current_reference(), None if self.session is None else self.session.n_raters)
        self.session = None
        self.rows, self._loo_curves = [], []
        self._curve_ready = False
        self._table_ready = True
        self._fill_annotations()
        layer = self.inputs.soft_layer()
        try:
            inputs = self.inputs.read()
        except SoftsegError as exc:
            self.job.cancel()
            self.annotation_job.cancel()
            if layer is not None:
                notify_exception(exc, action="Rater comparison")
            self._show_table()
            self.summary.setText(str(exc) if layer is not None else "Open a soft map and its raters.")
            self.references.clear()
            self._on_reference_changed()
            return

        self.session = self.analysis.set_inputs(
            inputs.prediction, inputs.masks, spacing=inputs.spacing, rater_names=inputs.rater_names,
            key=inputs_key(inputs, self.inputs.data_print),
        )
        self._table_ready = self.session.n_raters < 2
        self._fill_references(*previous)
        self._show_table()
        self._on_reference_changed()

    def _start_table_job(self, reference: Reference | None) -> None:
        """Build in the background what the table and the curve plot still lack."""
        session = self.session
        need_table = not self._table_ready
        if reference is not None:
            check_reference(reference, session.n_raters)
        message = "computing each rater against the others …" if need_table else "computing the model's PR curve …"
        self.job.start(
            table_work(session, reference, need_table),
            lambda out: self._on_table_result(session, reference, out), message=message,
        )

    def _on_table_result(self, session: ThresholdSession, reference: Reference | None, out: dict) -> None:
        if session is not self.session:
            return
        if "rows" in out:
            self.rows, self._loo_curves = out["rows"], out["loo"]
            self._table_ready = True
        if reference is not None:
            self.analysis.add_curve(session, reference, out["curve"])
            self._show_curve(reference)
        self._show_table()
        self._update_annotation_label()

    def _update_enabled(self, *args) -> None:
        """The reference and Refresh wait for the curves; the threshold and the annotation never do."""
        idle = not self.job.busy
        self.references.set_enabled(idle and self.session is not None)
        self.refresh_button.setEnabled(idle)

    def _fill_references(self, previous: Reference | None = None, previous_n: int | None = None) -> None:
        """List the references; keep ``previous`` if the number of raters is unchanged."""
        self.references.fill(self.session, previous, previous_n)

    def current_reference(self) -> Reference | None:
        return None if self.session is None else self.references.current()

    # -- table -------------------------------------------------------------------------------------
    def table_values(self) -> list[tuple[str, float, float]]:
        """``(rater, rater vs others, model vs same)`` per rater at the current threshold (empty while computed)."""
        if not self._table_ready:
            return []
        return [
            (row.rater, row.dice_vs_others, self.model_dice(i)) for i, row in enumerate(self.rows)
        ]

    def _show_table(self) -> None:
        values = self.table_values()
        self.table.setRowCount(len(values) + (1 if values else 0))
        bold = QFont()
        bold.setBold(True)
        model_wins = 0
        for r, (name, rater_dice, model_dice) in enumerate(values):
            self._set_row(r, name, rater_dice, model_dice, bold)
            model_wins += model_dice >= rater_dice
        if values:
            mean_r = float(np.mean([v[1] for v in values]))
            mean_m = float(np.mean([v[2] for v in values]))
            self._set_row(len(values), "mean", mean_r, mean_m, bold)
            self.summary.setText(
                f"At t = {format_threshold(self.threshold)} the model matches the other raters' consensus at least "
                f"as well as the left-out rater for {model_wins} of {len(values)} raters."
            )
        elif self.session is not None and not self._table_ready:
            self.summary.setText("Computing each rater against the consensus of the others …")
        elif self.session is not None:
            self.summary.setText("The table needs at least 2 rater layers.")
        fit_table(self.table)

    def _set_row(self, r: int, name: str, rater_dice: float, model_dice: float, bold: QFont) -> None:
        cells = [QTableWidgetItem(name), QTableWidgetItem(f"{rater_dice:.3f}"), QTableWidgetItem(f"{model_dice:.3f}")]
        best = 1 if rater_dice > model_dice else 2
        for c, item in enumerate(cells):
            if c:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if c == best:
                item.setFont(bold)
                item.setBackground(QBrush(HIGHLIGHT))
            self.table.setItem(r, c, item)

    def best_column(self, row: int) -> int:
        """Column (1 = rater, 2 = model) highlighted in table row ``row``."""
        return 1 if self.table.item(row, 1).font().bold() else 2

    # -- threshold ---------------------------------------------------------------------------------
    def _on_threshold(self, value: float) -> None:
        if self.threshold_spin.value() != value:
            with signals_blocked(self.threshold_spin):
                self.threshold_spin.setValue(value)
        if self.rows and self._table_ready:
            self._show_table()
        if self.session is not None and self._curve_ready:
            op = self.session.at(value)
            self.plot.set_marker(op.recall, op.precision, f"t = {format_threshold(value)}")
            self._update_annotation_label()

    # -- annotator ---------------------------------------------------------------------------------
    def _on_layer_inserted(self, event) -> None:
        """List the new layer; an empty Labels layer added while no annotation is chosen is the one to draw in."""
        layer = event.value
        fresh = (self.annotation_layer() is None and isinstance(layer, Labels)
                 and softseg_layers.kind_of(layer) in (None, "annotation") and not np.any(layer.data))
        self._fill_annotations(pick=layer if fresh else None)

    def _fill_annotations(self, event=None, *, pick=None) -> None:
        """List the annotation candidates; keep the chosen one, else choose ``pick`` or a drawn annotation."""
        soft = self.inputs.soft_layer()
        shape = None if soft is None else tuple(soft.data.shape)
        current = self.annotation_layer() or pick
        layers = annotation_candidates(self.viewer, shape)
        self._annotation_layers = [None, *layers]
        with signals_blocked(self.annotation_combo):
            self.annotation_combo.clear()
            self.annotation_combo.addItems(["(none)", *[layer.name for layer in layers]])
            index = next((i for i, cand in enumerate(self._annotation_layers) if same_layer(cand, current)), None)
            if index is not None:
                self.annotation_combo.setCurrentIndex(index)
            elif layers and softseg_layers.kind_of(layers[0]) == "annotation" and not self._none_chosen:
                self.annotation_combo.setCurrentIndex(1)
        if not same_layer(self.annotation_layer(), self._annotation_layer) and (
                self.annotation_layer() is not None or self._annotation_layer is not None):
            self._on_annotation_changed()

    def add_annotation_layer(self):
        """Add an empty Labels layer on the soft map's grid, in paint mode, for the annotator."""
        soft = self.inputs.soft_layer()
        if soft is None:
            show_warning("Rater comparison: open a soft map first; the annotation layer is made to match it")
            return None
        try:
            metadata = softseg_layers.make_metadata("annotation", softseg_layers.geometry_of(soft))
        except SoftsegError:
            metadata = {softseg_layers.KEY: {"kind": "annotation"}}
        names = {layer.name for layer in self.viewer.layers}
        name, n = ANNOTATION_NAME, 1
        while name in names:
            n += 1
            name = f"{ANNOTATION_NAME} {n}"
        layer = self.viewer.add_labels(
            np.zeros(soft.data.shape, np.uint8), name=name, metadata=metadata,
            affine=soft.affine.affine_matrix, scale=soft.scale, translate=soft.translate,
            rotate=soft.rotate, shear=soft.shear, opacity=0.6,
        )
        layer.mode = "paint"
        self._fill_annotations()
        self.set_annotation_layer(layer)
        return layer

    def _on_annotation_changed(self, *args) -> None:
        old, new = self._annotation_layer, self.annotation_layer()
        if same_layer(old, new) or (old is None and new is None):
            return
        if old is not None:
            for emitter in (old.events.paint, old.events.data, old.events.set_data):
                emitter.disconnect(self._on_annotation_edit)
        self._annotation_layer = new
        self._none_chosen = new is None          # "(none)" chosen: no annotation is picked for the user
        if new is not None:
            # ``set_data`` also fires after an in-place edit + ``layer.refresh()`` (and on re-slicing:
            # the mask's checksum decides, once the user pauses)
            for emitter in (new.events.paint, new.events.data, new.events.set_data):
                emitter.connect(self._on_annotation_edit)
        self.refresh_annotation()

    def _on_annotation_edit(self, event=None) -> None:
        self._schedule_annotation()

    def _on_annotation_paused(self) -> None:
        """The annotation's events went quiet: recompute if its data really changed."""
        layer = self.annotation_layer()
        if layer is not None and data_print([layer]) != self._annotation_print:
            self.refresh_annotation()

    def _on_reference_changed(self, *args) -> None:
        """Show the model's curve against the chosen reference (built in the background if new)."""
        ref = self.current_reference()
        self._update_enabled()
        if ref is None:
            self.plot.set_curve([], [], "")
            self.refresh_annotation()
            return
        session = self.session
        cached = session.has_curve(ref)
        self._curve_ready = False
        if cached and self._table_ready:
            self.job.cancel()
            self._show_curve(ref)
        else:
            try:
                self._start_table_job(None if cached else ref)
            except ValueError as exc:
                notify_exception(SoftsegError(str(exc)), action="Rater comparison")
                return
            if cached:
                self._show_curve(ref)
            else:
                self.plot.set_curve([], [], f"computing model vs {session.describe_reference(ref)} …")
                self.plot.set_marker(float("nan"), float("nan"))
        self.refresh_annotation()

    def _show_curve(self, ref: Reference) -> None:
        session = self.session
        session.reference = ref                     # cached: O(1)
        self._curve_ready = True
        curve = session.curve
        self.plot.set_curve(curve.recall, curve.precision, f"model vs {session.describe_reference()}")
        op = session.at(self.threshold)
        self.plot.set_marker(op.recall, op.precision, f"t = {format_threshold(self.threshold)}")

    def refresh_annotation(self) -> None:
        """Recompute the annotator's PR point and the disagreement map from the annotation layer.

        The mask is copied now; the point and the map are computed in the background and shown when
        ready (only the latest edit's); the previous ones stay until then.
        """
        layer = self.annotation_layer()
        ref = self.current_reference()
        if layer is None or self.session is None or ref is None:
            self.annotation_point = None
            self._annotation_print = ()
            self.annotation_job.cancel()
            self.annotation_label.setText(
                "Pick or add your annotation layer and draw." if layer is None
                else f"Open a soft map to compare {layer.name!r} with the model and the raters."
            )
            self.plot.set_points([], [])
            self._set_disagreement(None)
            return
        if not isinstance(layer, Labels) or tuple(layer.data.shape) != tuple(self.session.prediction.shape):
            show_warning(f"Rater comparison: layer {layer.name!r} does not match the soft map's shape")
            self.annotation_point = None
            self.annotation_job.cancel()
            return
        session = self.session
        self._annotation_print = data_print([layer])
        annotation = np.asarray(layer.data) != 0
        self.annotation_label.setText(f"Comparing {layer.name!r} …")
        self.annotation_job.start(
            annotation_work(session, ref, annotation),
            lambda out: self._on_annotation_result(session, ref, annotation, *out),
            message="comparing your mask …",
        )

    def _on_annotation_result(self, session, ref: Reference, annotation, point, disagreement, k: int) -> None:
        if session is not self.session:
            return
        self.annotation_point = point
        self._annotation_reference = ref
        if point.n_positive:
            self.plot.set_points([point.recall], [point.precision])
        else:                    # an empty mask has no place on the curve (its "PPV" would read 1)
            self.plot.set_points([], [])
        self._update_annotation_label()
        if disagreement is not None:
            self._set_disagreement(disagreement, annotation, k)
        else:
            self._set_disagreement(None)

    def _update_annotation_label(self) -> None:
        op = self.annotation_point
        if op is None or self.session is None:
            return
        if not op.n_positive:
            layer = self._annotation_layer
            name = repr(layer.name) if layer is not None else "Your annotation"
            self.annotation_label.setText(
                f"{name} is empty: paint the structure in it (paint mode, label 1) to compare it with the "
                f"model and the raters."
            )
            return
        volume = "" if op.volume_ml is None else f", volume {op.volume_ml:.2f} mL"
        text = (
            f"You vs {self.session.describe_reference(self._annotation_reference)}: PPV {op.precision:.3f}, "
            f"sensitivity {op.recall:.3f}, Dice {op.dice:.3f}{volume}."
        )
        if self._curve_ready and self.session.reference == self._annotation_reference:
            model = self.session.at(self.threshold)
            text += (
                f" Model at t = {format_threshold(self.threshold)}: PPV {model.precision:.3f}, "
                f"sensitivity {model.recall:.3f}, Dice {model.dice:.3f}."
            )
        self.annotation_label.setText(text)

    def _set_disagreement(self, data, annotation=None, k: int = 0) -> None:
        if data is None:
            if in_viewer(self.viewer, self.disagreement_layer):
                self.viewer.layers.remove(self.disagreement_layer)
            self.disagreement_layer = None
            self.legend.setText("")
            return
        n = self.session.n_raters
        if not in_viewer(self.viewer, self.disagreement_layer):
            soft = self.inputs.soft_layer()
            active = self.viewer.layers.selection.active
            colors = {None: (0, 0, 0, 0), **agreement_colors(n)}
            self.disagreement_layer = self.viewer.add_labels(
                data, name=f"{self._annotation_layer.name} vs consensus", opacity=0.8,
                colormap=DirectLabelColormap(color_dict=colors), metadata={HELPER_KEY: "disagreement"},
                affine=soft.affine.affine_matrix, scale=soft.scale, translate=soft.translate,
                rotate=soft.rotate, shear=soft.shear,
            )
            self.disagreement_layer.editable = False
            if in_viewer(self.viewer, active):
                self.viewer.layers.selection.active = active
        else:
            self.disagreement_layer.data = data
        s = summarize(annotation, data, n)
        per = ", ".join(f"{c:,} where {a} agree" for a, c in enumerate(s.by_agreeing) if c)
        self.legend.setText(
            f"Disagreement map vs the consensus ({k} of {n} raters): {s.extra:,} voxels only you marked, {s.missed:,} "
            f"you left out ({per or 'none'}). Red: no rater agrees with you → green: most raters do."
        )

    def _on_layer_removed(self, event) -> None:
        if same_layer(event.value, self.disagreement_layer):
            self.disagreement_layer = None
        if same_layer(event.value, self._annotation_layer):
            self._set_disagreement(None)
        self._fill_annotations()
