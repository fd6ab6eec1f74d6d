"""Threshold explorer: drag one slider over a calibrated soft map and watch the operating point.

What the canvas shows (the clinician's view):

* the **scan**, always visible;
* the **soft map** as its own translucent heat layer (transparent at p = 0, see
  :func:`napari_softseg._napari.layers.soft_map_style`) with a colour bar — the one legend on the canvas;
* **p ≥ t as a crisp cyan outline** (one voxel wide, nearest-neighbour, opaque), optionally with a light
  fill; optional thin white **confidence bands** (iso-lines at p = 0.1 / 0.5 / 0.9) around it;
* in **3D**, p ≥ t as an iso-surface (``rendering="iso"``, ``iso_threshold = t``: the slider moves a
  shader uniform, nothing is recomputed), the scan as a faint MIP volume, raters and heat map off;
* raters hidden in the clinician layout, coloured one-voxel outlines in the annotator layout.

A slider move costs (see ``benchmarks/bench_slider.py`` and docs/benchmarks.md):

* **numbers**: an O(1) look-up in the precomputed PR curve of the chosen reference (shared by every dock
  through the viewer's :class:`~napari_softseg.analysis.session.AnalysisSession`);
* **outline**: an Image layer over a :class:`~napari_softseg.analysis.operating_point.ContourView`; napari
  asks it for the displayed slice only, so a move outlines one slice;
* **fill**: a second Image layer shows the *same* soft-map array (no copy) through a two-colour colormap
  whose switch point is the threshold, so the renderer applies it;
* **PR-curve marker** (labelled with t): moved by blitting, throttled; the curve (with threshold ticks)
  is drawn only when the reference changes.

Building a PR curve (one pass over the volume, 0.2–0.5 s at 256³) happens off the GUI thread
(:class:`~napari_softseg._qt.background.LatestJob`) when the layers, the reference or a rater's mask
change; a curve another dock built for the same inputs is reused. Edits are picked up when the user
pauses — also in-place edits followed by ``layer.refresh()`` (the data's CRC changes) — and **Refresh**
re-reads the layers on demand. :attr:`ThresholdExplorer.ready` is False while a curve is being built.

Keyboard: with the slider focused, arrows step 0.001 and Page Up/Down 0.05; anywhere in the viewer,
``[`` / ``]`` step 0.01.
"""

from __future__ import annotations

import weakref

import numpy as np
from napari.utils.colormaps import Colormap
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)
from superqt.utils import qdebounced

from napari_softseg import SOFTWARE
from napari_softseg._napari import layers as softseg_layers
from napari_softseg._napari.layers import format_threshold, layer_type, mask_layer_from_soft
from napari_softseg._qt.background import ComputeStatus, LatestJob
from napari_softseg._qt.notifications import notify_exception, show_warning
from napari_softseg._qt.plots import PRCurvePlot
from napari_softseg._qt.selection import (
    HELPER_KEY,
    LayerInputs,
    ReferencePicker,
    check_soft_map,
    connect_while_alive,
    is_helper,
    relax_combos,
    same_layer,
    scroll_layout,
    soft_map_candidates,
    unwrapped,
)
from napari_softseg.analysis.operating_point import (
    GRID,
    BandsView,
    ContourView,
    Reference,
    ThresholdSession,
    overlay_contrast_limits,
    snap,
    threshold_colormap_controls,
    upsampled_affine,
)
from napari_softseg.analysis.session import ROLES
from napari_softseg.errors import SoftsegError

OVERLAY_MODES = ("outline", "outline + light fill", "filled", "none")
DEFAULT_OVERLAY = "outline"
OUTLINE_COLOR = (0.0, 1.0, 1.0)     # cyan: far from grey scans and from every colour of the heat map
FILL_COLOR = (0.0, 1.0, 1.0)
FILL_OPACITY = {"outline + light fill": 0.22, "filled": 0.5}
BAND_LEVELS = (0.1, 0.5, 0.9)       # optional iso-lines of the soft map (confidence bands)
BAND_COLOR = (1.0, 1.0, 1.0)
SURFACE_COLOR = (0.0, 0.9, 1.0)
SCAN_OPACITY_3D = 0.25              # the scan as a faint volume behind the 3D surface
#: The outline is drawn on a grid this many times finer than the soft map (in-plane), at most
#: :data:`OUTLINE_MAX_SIDE` pixels a side: a line of 1/f voxel, thin and crisp at any zoom.
OUTLINE_UPSAMPLE = 4
OUTLINE_MAX_SIDE = 800


def outline_factor(shape) -> int:
    """Upsampling factor of the outline grid for a soft map of ``shape`` (1 … :data:`OUTLINE_UPSAMPLE`)."""
    side = max(shape[-2:]) if len(shape) >= 2 else 1
    return int(max(1, min(OUTLINE_UPSAMPLE, OUTLINE_MAX_SIDE // max(side, 1))))
LEGEND_PREFIX = "cyan "            # the canvas legend line starts so (and is recognised by it)
KEY_STEP = 0.01
KEYS = ("[", "]")
PENDING = "…"                       # a statistic whose PR curve is still being built

#: The statistics shown, in the order of the dock's table: (key, label, tooltip).
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
EXPECTED_TOOLTIP = (
    "Expected values: no annotation is used. The calibrated map is taken as its own truth — a voxel with "
    "p = 0.7 counts as 0.7 of a true voxel — so expected TP = Σ p over p ≥ t, expected FN = Σ p over p < t, "
    "expected FP = Σ (1 − p) over p ≥ t."
)
#: A preset lands on a degenerate operating point when it keeps less than this share of the reference.
DEGENERATE_SENSITIVITY = 0.1


def is_degenerate(op) -> bool:
    """An operating point no one should pick by accident: at an end of the threshold range (t ≤ 0.005 or
    t ≥ 0.995), an empty mask, or one that keeps less than :data:`DEGENERATE_SENSITIVITY` of the reference."""
    return (op.threshold >= 0.995 or op.threshold <= 0.005 or op.n_positive == 0
            or op.recall < DEGENERATE_SENSITIVITY)


def _step_colormap(name: str, rgb: tuple[float, float, float]) -> Colormap:
    """Transparent below the middle of the range, ``rgb`` from it on (no interpolation)."""
    return Colormap(
        colors=[[0.0, 0.0, 0.0, 0.0], [*rgb, 1.0]],
        controls=list(threshold_colormap_controls()),
        interpolation="zero",
        name=name,
    )


def _solid_colormap(name: str, rgb: tuple[float, float, float]) -> Colormap:
    """One colour from the middle of the range on, transparent below (0/1 outline layers, 3D surface)."""
    return Colormap(colors=[[0.0, 0.0, 0.0, 0.0], [*rgb, 1.0]], controls=[0.0, 0.5, 1.0], interpolation="zero",
                    name=name)


def format_volume(ml: float | None) -> str:
    """A volume in mL with 3 significant digits (``"–"`` without a voxel size)."""
    if ml is None or not np.isfinite(ml):
        return "–"
    return f"{ml:.3g} mL" if abs(ml) < 1000 else f"{ml:,.0f} mL"


class ThresholdExplorer(QWidget):
    """Dock widget: threshold slider, overlay, operating-point statistics and PR curve.

    A view of the viewer's :class:`~napari_softseg.analysis.session.AnalysisSession` (shared with the other
    docks): the chosen layers, the threshold, the reference and the curve cache live there.

    Args:
        napari_viewer: The viewer (napari passes it by this name; a plugin proxy works the same).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ThresholdSession | None = None
        self._stats_ready = False          # the session's current reference is the one chosen, curve built
        self.inputs_layer = None           # the soft-map layer the session was built from
        self.fill_layer = None
        self.contour_layer = None
        self.bands_layer = None
        self.surface_layer = None
        self._contour_view: ContourView | None = None
        self._bands_view: BandsView | None = None
        self._saved_3d: list = []          # (layer, attribute, value) to restore when leaving 3D

        self.inputs = LayerInputs(napari_viewer)
        self.analysis = self.inputs.session
        self._threshold = self.analysis.threshold
        self.references = ReferencePicker(self._on_reference_changed)
        self.reference_combo = self.references.combo
        self.k_spin = self.references.k_spin
        self.overlay_combo = QComboBox()
        self.overlay_combo.addItems(OVERLAY_MODES)
        self.overlay_combo.setToolTip(
            "How the mask p ≥ threshold is drawn over the scan: a crisp outline (default), the outline with a "
            "light fill, a fill, or nothing. In 3D it is a surface."
        )
        self.bands_check = QCheckBox("confidence bands " + " / ".join(f"{b:g}" for b in BAND_LEVELS))
        self.bands_check.setToolTip(
            "Thin iso-lines of the soft map at p = " + ", ".join(f"{b:g}" for b in BAND_LEVELS)
            + "; the chosen threshold is the bold outline"
        )
        self.role_combo = QComboBox()
        self.role_combo.addItems(["clinician (raters hidden)", "annotator (raters outlined)"])
        self.role_combo.setToolTip("Clinician: scan, heat map and the outline only. Annotator: each rater as a "
                                   "coloured outline (legend in Rater comparison)")
        self.as_soft_button = QPushButton("Use layer as soft map…")
        self.as_soft_button.setToolTip(
            "Mark the selected float Image layer (values 0–1) as a soft map: translucent heat colours with a colour "
            "bar, offered by every dock, and saved with a soft-map sidecar"
        )
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Re-read the chosen layers (after editing their data in place)")

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, GRID)
        self.slider.setSingleStep(1)
        self.slider.setPageStep(50)
        self.slider.setToolTip("Threshold: arrows ±0.001, Page Up/Down ±0.05; [ and ] in the viewer ±0.01")
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(3)
        self.spin.setSingleStep(1.0 / GRID)
        self.spin.setKeyboardTracking(False)

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
        self.preset_label = QLabel("")
        self.preset_label.setWordWrap(True)
        self.mask_button = QPushButton("Make mask layer")
        self.mask_button.setToolTip(
            "Add a Labels layer of the voxels at or above the threshold (File ▸ Save writes it as NIfTI with "
            "the threshold and provenance)"
        )
        self.mask_button.clicked.connect(self.make_mask_layer)

        self.stat_labels: dict[str, QLabel] = {}
        self.stat_names: dict[str, QLabel] = {}
        self.plot = PRCurvePlot(napari_viewer)
        self.status = ComputeStatus()
        self.job = LatestJob(self, "Threshold explorer", self.status)
        self._build_layout()
        self._thumbnail_later = qdebounced(self._refresh_thumbnails, timeout=250)
        self._legend_later = qdebounced(self._update_canvas_legend, timeout=120)

        self.inputs.changed.connect(self.rebuild)
        self.inputs.edited.connect(self._on_inputs_edited)
        self.job.busy_changed.connect(self._update_enabled)
        self.overlay_combo.currentTextChanged.connect(self._on_overlay_mode)
        self.bands_check.toggled.connect(self._on_bands)
        self.role_combo.currentIndexChanged.connect(lambda i: setattr(self.analysis, "role", ROLES[i]))
        self.as_soft_button.clicked.connect(lambda *_: self.use_selected_as_soft_map())
        self.refresh_button.clicked.connect(lambda *_: self.refresh())
        self.slider.valueChanged.connect(lambda v: self.set_threshold(v / GRID))
        self.spin.valueChanged.connect(self.set_threshold)
        self.recall_button.clicked.connect(self.apply_recall_preset)
        self.precision_button.clicked.connect(self.apply_precision_preset)
        connect_while_alive(self, self.analysis.threshold_changed, self._on_shared_threshold)
        connect_while_alive(self, self.analysis.curve_added, self._on_curve_added)
        connect_while_alive(self, self.analysis.role_changed, self._on_role)
        napari_viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        relax_combos(self)
        self._bind_keys()
        self._sync_controls(self._threshold)
        self.role_combo.setCurrentIndex(ROLES.index(self.analysis.role))
        apply_role(napari_viewer, self.analysis.role)     # the clinician layout: raters hidden
        self.rebuild()

    # -- layout ------------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        layout = scroll_layout(self)
        layout.addWidget(self.inputs)
        row = QHBoxLayout()
        row.addWidget(self.as_soft_button)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        form = QFormLayout()
        form.addRow("reference", self.reference_combo)
        k_row = QHBoxLayout()
        k_row.addWidget(self.k_spin)
        k_row.addStretch(1)
        form.addRow("", k_row)
        form.addRow("show", self.overlay_combo)
        form.addRow("layout", self.role_combo)
        layout.addLayout(form)
        layout.addWidget(self.bands_check)
        row = QHBoxLayout()
        row.addWidget(QLabel("threshold t"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        layout.addLayout(row)
        presets = QGridLayout()
        presets.addWidget(self.recall_button, 0, 0)
        presets.addWidget(self.recall_target, 0, 1)
        presets.addWidget(self.precision_button, 1, 0)
        presets.addWidget(self.precision_target, 1, 1)
        layout.addLayout(presets)
        layout.addWidget(self.preset_label)
        layout.addWidget(self.mask_button)
        layout.addWidget(self.status)
        box = QGroupBox("at this threshold")
        grid = QGridLayout(box)
        value_width = self.fontMetrics().horizontalAdvance("expected 0.000") + 12
        for i, (key, text, tip) in enumerate(STATISTICS):
            name = QLabel(text)
            name.setToolTip(tip)
            label = QLabel("–")
            label.setToolTip(tip)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            # a fixed size: new text then repaints the label only, with no relayout of the dock per move
            label.setFixedSize(value_width, label.fontMetrics().height() + 4)
            self.stat_labels[key] = label
            self.stat_names[key] = name
            grid.addWidget(name, i, 0)
            grid.addWidget(label, i, 1)
        grid.setColumnStretch(0, 1)
        layout.addWidget(box)
        layout.addWidget(self.plot)
        layout.addStretch(1)

    # -- public API (also used by tests and the benchmark) ----------------------------------------
    @property
    def threshold(self) -> float:
        """The current threshold (on the 0.001 grid)."""
        return self._threshold

    @property
    def reference(self) -> Reference | None:
        """The reference the statistics are against (None without a soft map or while it is built)."""
        return self.session.reference if self.session is not None and self._stats_ready else None

    @property
    def ready(self) -> bool:
        """False while a PR curve is being built in the background (statistics read "…")."""
        return not self.job.busy

    @property
    def overlay_mode(self) -> str:
        return self.overlay_combo.currentText()

    def set_overlay_mode(self, mode: str) -> None:
        """One of :data:`OVERLAY_MODES`."""
        if mode not in OVERLAY_MODES:
            raise ValueError(f"overlay mode must be one of {OVERLAY_MODES}, got {mode!r}")
        self.overlay_combo.setCurrentText(mode)

    def set_threshold(self, threshold: float) -> None:
        """Move the operating point: numbers, overlay and PR-curve marker follow. Snapped to 0.001."""
        t = snap(threshold)
        self._threshold = t
        self._sync_controls(t)
        self._apply(t)
        self.analysis.threshold = t

    def refresh(self) -> None:
        """Re-read the chosen layers' data (e.g. after an in-place edit and ``layer.refresh()``)."""
        self.analysis.invalidate()
        self.inputs.refresh()
        self.rebuild(force=True)

    def use_selected_as_soft_map(self, layer=None):
        """Mark ``layer`` (default: the selected layer) as a soft map and choose it; returns it or None.

        The layer must be a float Image layer with values in [0, 1]; it gets the soft-map look (translucent
        heat colours, colour bar) and ``metadata["softseg"]["kind"] = "prediction"``, so every dock offers it
        and the writer saves it with a soft-map sidecar.
        """
        layer = layer if layer is not None else self.viewer.layers.selection.active
        if layer is None:
            show_warning("Threshold explorer: select a float Image layer (values 0–1) in the layer list first")
            return None
        try:
            check_soft_map(layer)
            mark_as_soft_map(layer)
        except SoftsegError as exc:
            notify_exception(exc, action="Threshold explorer")
            return None
        self.inputs.refresh()
        self.inputs.set_soft_layer(layer)
        return layer

    def make_mask_layer(self):
        """Add the mask ``p >= threshold`` of the chosen soft map as a Labels layer; return the layer.

        The layer keeps the soft map's geometry and provenance and records the threshold (its name carries
        the exact threshold), so the plugin's mask writer saves a uint8 NIfTI that says how it was made.
        Nothing happens (with a notification) when no soft map is chosen.
        """

        layer = self.inputs.soft_layer()
        if layer is None:
            show_warning("Threshold explorer: choose a soft map first (an Image layer with values in [0, 1])")
            return None
        try:
            data, kwargs, _ = mask_layer_from_soft(layer, self.threshold)
        except SoftsegError as exc:
            notify_exception(exc, action="Threshold explorer")
            return None
        return self.viewer.add_labels(data, **kwargs)

    def set_reference(self, reference: Reference) -> None:
        """Choose the reference (one of the entries of the reference box)."""
        if not self.references.select(reference):
            self._on_reference_changed()

    def apply_recall_preset(self) -> str:
        """Jump to the highest threshold whose sensitivity is at least the target; returns what it says."""
        if self.session is None or not self._stats_ready:
            return ""
        target = self.recall_target.value()
        t = self.session.threshold_for_recall(target)
        self.set_threshold(t)
        return self._report_preset(f"sensitivity ≥ {target:.3f}", self.session.at(t))

    def apply_precision_preset(self) -> str:
        """Jump to the lowest threshold whose PPV reaches the target; returns what it says."""
        if self.session is None or not self._stats_ready:
            return ""
        target = self.precision_target.value()
        t = self.session.threshold_for_precision(target)
        if t is None:
            text = (f"No threshold reaches PPV ≥ {target:.3f} against {self.session.describe_reference()}; "
                    f"t stays {format_threshold(self._threshold)}")
            self.preset_label.setText("⚠ " + text)
            show_warning("Threshold explorer: " + text)
            return text
        self.set_threshold(t)
        return self._report_preset(f"PPV ≥ {target:.3f}", self.session.at(t))

    def _report_preset(self, goal: str, op) -> str:
        """Say what a preset reached; warn when the operating point is degenerate."""
        expected = "expected " if self.session.reference.kind == "expected" else ""
        text = (f"{goal}: t = {format_threshold(op.threshold)} → {expected}sensitivity {op.recall:.3f}, "
                f"{expected}PPV {op.precision:.3f}, {op.n_positive:,} voxels")
        degenerate = is_degenerate(op)
        if degenerate:
            text += (" — ⚠ degenerate operating point: the target is met only at the end of the threshold range "
                     "or by keeping almost none of the structure; check the outline before using it")
            show_warning("Threshold explorer: " + text)
        self.preset_label.setText(("⚠ " if degenerate else "") + text)
        return text

    def step(self, delta: float) -> None:
        """Move the threshold by ``delta`` (keyboard steps)."""
        self.set_threshold(self._threshold + delta)

    # -- building ----------------------------------------------------------------------------------
    def rebuild(self, force: bool = False) -> None:
        """Re-read the chosen layers, build (or reuse) the shared session, the reference list and overlays."""
        layer = self.inputs.soft_layer()
        mismatched = self.inputs.mismatched_raters()
        if mismatched:
            show_warning(
                "Threshold explorer: rater layer(s) "
                + ", ".join(repr(m.name) for m in mismatched)
                + " do not match the soft map's shape and are left out"
            )
        try:
            inputs = self.inputs.read()
        except SoftsegError as exc:
            self._clear(str(exc) if layer is not None else "")
            if layer is not None:
                notify_exception(exc, action="Threshold explorer")
            return
        previous = (self._current_reference(), None if self.session is None else self.session.n_raters)
        self.session = self.analysis.set_inputs(
            inputs.prediction, inputs.masks, spacing=inputs.spacing, rater_names=inputs.rater_names,
            key=inputs_key(inputs, self.inputs.data_print),
        )
        self._stats_ready = False
        if force or not same_layer(inputs.soft_layer, self.inputs_layer) or not self._overlays_show(inputs.prediction):
            self._remove_overlays()
            self.inputs_layer = inputs.soft_layer
        self._show_colorbar()
        self._fill_references(*previous)
        self._ensure_overlays()          # the picture does not wait for the statistics
        self._on_reference_changed()

    def _overlays_show(self, data) -> bool:
        """Whether the existing overlay layers show ``data`` (not an array the soft map had before)."""
        views = [v for v in (self._contour_view, self._bands_view) if v is not None]
        return (all(v.data is data for v in views)
                and (not self._alive(self.fill_layer) or self.fill_layer.data is data))

    def _fill_references(self, previous: Reference | None = None, previous_n: int | None = None) -> None:
        """List the references for the session; keep ``previous`` if the number of raters is unchanged."""
        self.references.fill(self.session, previous, previous_n)
        self._update_enabled()

    def _current_reference(self) -> Reference | None:
        return None if self.session is None else self.references.current()

    def _on_reference_changed(self, *args) -> None:
        """Show the statistics against the chosen reference; build its PR curve in the background."""
        ref = self._current_reference()
        if ref is None:
            return
        session = self.session
        self._update_enabled()
        if session.has_curve(ref):
            self.job.cancel()
            self._show_reference(session, ref)
            return
        try:
            work = session.build_curve(ref)
        except ValueError as exc:
            notify_exception(SoftsegError(str(exc)), action="Threshold explorer")
            return
        self._stats_ready = False
        description = session.describe_reference(ref)
        self._apply(self._threshold)     # numbers "…", no marker; the old curve stays until the new one
        self.job.start(
            work, lambda curve: self._on_curve(session, ref, curve), message=f"computing PR curve vs {description} …"
        )

    def _on_curve(self, session: ThresholdSession, ref: Reference, curve) -> None:
        """A background build finished (only the latest request's result arrives here)."""
        if session is not self.session:
            return
        self.analysis.add_curve(session, ref, curve)
        self._show_reference(session, ref)

    def _on_curve_added(self, ref) -> None:
        """Another dock built a curve for the shared inputs: use it if it is the one being waited for."""
        if self.session is not None and self.job.busy and ref == self._current_reference() \
                and self.session is self.analysis.points:
            self.job.cancel()
            self._show_reference(self.session, ref)

    def _show_reference(self, session: ThresholdSession, ref: Reference) -> None:
        session.reference = ref                         # cached: O(1)
        self._stats_ready = True
        self.analysis.reference = ref
        curve = session.curve
        expected = ref.kind == "expected"
        self.plot.set_curve(curve.recall, curve.precision,
                            f"{'expected ' if expected else ''}PR vs {session.describe_reference()}")
        self.plot.set_axis_labels(*(("expected sensitivity", "expected PPV") if expected else ("sensitivity", "PPV")))
        for key, label in self.stat_names.items():
            base = dict((k, t) for k, t, _ in STATISTICS)[key]
            label.setText(f"expected {base}" if expected and key not in ("predicted volume",) else base)
            tip = dict((k, tp) for k, _, tp in STATISTICS)[key]
            label.setToolTip(tip + ("\n\n" + EXPECTED_TOOLTIP if expected else ""))
            self.stat_labels[key].setToolTip(label.toolTip())
        self._ensure_overlays()
        self.set_threshold(self._threshold)

    def _update_enabled(self, *args) -> None:
        """Reference and presets need a finished PR curve; the slider and overlay never wait."""
        idle = self.session is not None and not self.job.busy
        self.references.set_enabled(idle)
        for w in (self.recall_button, self.precision_button):
            w.setEnabled(idle)

    def _clear(self, message: str) -> None:
        self.job.cancel()
        self.session = None
        self._stats_ready = False
        self._remove_overlays()
        self.inputs_layer = None
        self.references.clear()
        for label in self.stat_labels.values():
            label.setText("–")
        self.plot.set_curve([], [], message)
        self._update_canvas_legend()
        self._update_enabled()

    # -- per move ----------------------------------------------------------------------------------
    def _sync_controls(self, t: float) -> None:
        for w, v in ((self.slider, int(round(t * GRID))), (self.spin, t)):
            if w.value() != v:
                w.blockSignals(True)
                w.setValue(v)
                w.blockSignals(False)

    def _apply(self, t: float) -> None:
        if self.session is None:
            return
        self.update_overlay(t)
        self._legend_later()             # the canvas' text legend is re-laid out once the slider rests
        if not self._stats_ready:
            for label in self.stat_labels.values():
                label.setText(PENDING)
            self.plot.set_marker(float("nan"), float("nan"), "")
            return
        op = self.session.at(t)
        labels = self.stat_labels
        labels["sensitivity"].setText(f"{op.recall:.3f}")
        labels["PPV"].setText(f"{op.precision:.3f}")
        labels["Dice"].setText(f"{op.dice:.3f}")
        labels["specificity"].setText(f"{op.specificity:.4f}")
        voxel_ml = self._voxel_ml()
        labels["predicted volume"].setText(format_volume(op.volume_ml))
        for key, count in (("reference volume", op.tp + op.fn), ("FP volume", op.fp), ("FN volume", op.fn)):
            labels[key].setText(format_volume(None if voxel_ml is None else count * voxel_ml))
        self.plot.set_marker(op.recall, op.precision, f"t = {format_threshold(t)}")

    def _update_canvas_legend(self, t: float | None = None) -> None:
        """The canvas' one line of legend next to the colour bar: what the outline (or surface) shows."""
        overlay = self.viewer.text_overlay
        mode = self.shown_overlay_mode
        if self.inputs_layer is None or mode == "none":
            if overlay.visible and overlay.text.startswith(LEGEND_PREFIX):
                overlay.visible = False
            return
        t = self._threshold if t is None else t
        shape = "surface" if mode == "surface" else "outline"
        bands = ("  ·  thin white: p = " + " / ".join(f"{b:g}" for b in BAND_LEVELS)
                 if self.bands_check.isChecked() and mode != "surface" else "")
        heat = "" if mode == "surface" else "  ·  heat: probability p"
        overlay.text = f"{LEGEND_PREFIX}{shape}: p ≥ {format_threshold(t)}{bands}{heat}"
        if not overlay.visible:
            overlay.position = "top_left"
            overlay.font_size = 11
            overlay.color = OUTLINE_COLOR
            overlay.visible = True

    def _voxel_ml(self) -> float | None:
        spacing = self.session.spacing if self.session is not None else None
        return None if spacing is None else float(np.prod(spacing)) / 1000.0

    def update_overlay(self, t: float) -> None:
        """Show ``p >= t`` in the current overlay mode (no full-volume work)."""
        mode = self.shown_overlay_mode
        if mode == "surface":
            if self._alive(self.surface_layer):
                self.surface_layer.iso_threshold = t
            return
        if mode in FILL_OPACITY and self._alive(self.fill_layer):
            # the layer list repaints a thumbnail on every change (several ms): refresh it once the
            # slider rests instead
            with self.fill_layer.events.thumbnail.blocker():
                self.fill_layer.contrast_limits = overlay_contrast_limits(t)
        if mode.startswith("outline") and self._alive(self.contour_layer):
            self._contour_view.threshold = t
            self.contour_layer.refresh(thumbnail=False, highlight=False, extent=False)
        if mode != "none":
            self._thumbnail_later()

    def _refresh_thumbnails(self) -> None:
        for layer in (self.fill_layer, self.contour_layer):
            if self._alive(layer) and layer.visible:
                layer.refresh(data_displayed=False, highlight=False, extent=False)

    def operating_point(self):
        """Statistics at the current threshold (None without a soft map or while its curve is built)."""
        return self.session.at(self._threshold) if self.session is not None and self._stats_ready else None

    @property
    def shown_overlay_mode(self) -> str:
        """The overlay drawn: the chosen mode in 2D; ``"surface"`` in 3D (``"none"`` stays none)."""
        mode = self.overlay_mode
        return "surface" if self.viewer.dims.ndisplay == 3 and mode != "none" else mode

    # -- overlay layers ----------------------------------------------------------------------------
    def _alive(self, layer) -> bool:
        return layer is not None and any(same_layer(layer, other) for other in self.viewer.layers)

    def _transform(self) -> dict:
        source = self.inputs_layer
        return dict(affine=source.affine.affine_matrix, scale=source.scale, translate=source.translate,
                    rotate=source.rotate, shear=source.shear)

    def _fine_transform(self, factor: int) -> dict:
        """Placement of a ``factor``-times finer outline grid on the soft map (same world position)."""
        from napari.utils.transforms import Affine

        source = self.inputs_layer
        data_to_physical = Affine(scale=source.scale, translate=source.translate, rotate=source.rotate,
                                  shear=source.shear).affine_matrix
        full = np.asarray(source.affine.affine_matrix) @ data_to_physical @ upsampled_affine(factor, source.ndim)
        return dict(affine=full)

    def _ensure_overlays(self) -> None:
        mode = self.shown_overlay_mode
        source = self.inputs_layer
        if source is None:
            self._set_overlay_visibility()
            return
        active = self.viewer.layers.selection.active
        transform = self._transform()
        factor = outline_factor(source.data.shape)
        if self.bands_check.isChecked() and not self._alive(self.bands_layer):
            self._bands_view = BandsView(source.data, BAND_LEVELS, outline_volumes=False, upsample=factor)
            self.bands_layer = self.viewer.add_image(
                self._bands_view, name=f"{source.name} bands " + "/".join(f"{b:g}" for b in BAND_LEVELS),
                colormap=_solid_colormap("softseg bands", BAND_COLOR), contrast_limits=(0.0, 1.0),
                interpolation2d="nearest", opacity=0.6, blending="translucent",
                metadata={HELPER_KEY: "confidence bands"}, **self._fine_transform(factor),
            )
        if mode in FILL_OPACITY and not self._alive(self.fill_layer):
            lo, hi = overlay_contrast_limits(self._threshold)
            self.fill_layer = self.viewer.add_image(
                source.data, name=f"{source.name} p ≥ t fill", colormap=_step_colormap("softseg threshold", FILL_COLOR),
                contrast_limits=(lo, hi), opacity=FILL_OPACITY[mode], blending="translucent",
                metadata={HELPER_KEY: "threshold fill"}, **transform,
            )
            self.fill_layer.contrast_limits_range = (-1.0, 2.0)
        if self._alive(self.fill_layer) and mode in FILL_OPACITY:
            self.fill_layer.opacity = FILL_OPACITY[mode]
        if mode.startswith("outline") and not self._alive(self.contour_layer):
            self._contour_view = ContourView(source.data, self._threshold, outline_volumes=False, upsample=factor)
            self.contour_layer = self.viewer.add_image(
                self._contour_view, name=f"{source.name} p ≥ t outline",
                colormap=_solid_colormap("softseg outline", OUTLINE_COLOR), contrast_limits=(0.0, 1.0),
                interpolation2d="nearest", opacity=1.0, blending="translucent",
                metadata={HELPER_KEY: "threshold outline"}, **self._fine_transform(factor),
            )
        if mode == "surface" and not self._alive(self.surface_layer):
            self.surface_layer = self.viewer.add_image(
                source.data, name=f"{source.name} p ≥ t surface", rendering="iso", iso_threshold=self._threshold,
                colormap=_solid_colormap("softseg surface", SURFACE_COLOR), contrast_limits=(0.0, 1.0),
                blending="translucent", metadata={HELPER_KEY: "threshold surface"}, **transform,
            )
        if active is not None and self._alive(active):
            self.viewer.layers.selection.active = active    # keep the user's selection
        self._set_overlay_visibility()

    def _set_overlay_visibility(self) -> None:
        mode = self.shown_overlay_mode
        two_d = self.viewer.dims.ndisplay == 2
        for layer, shown in ((self.fill_layer, mode in FILL_OPACITY), (self.contour_layer, mode.startswith("outline")),
                             (self.bands_layer, two_d and self.bands_check.isChecked()),
                             (self.surface_layer, mode == "surface")):
            if self._alive(layer) and layer.visible != shown:
                layer.visible = shown

    def _remove_overlays(self) -> None:
        for layer in (self.fill_layer, self.contour_layer, self.bands_layer, self.surface_layer):
            if self._alive(layer):
                self.viewer.layers.remove(layer)
        self.fill_layer = self.contour_layer = self.bands_layer = self.surface_layer = None
        self._contour_view = self._bands_view = None

    def _show_colorbar(self) -> None:
        """One colour bar: the chosen soft map's (the legend of its heat colours), in 2D."""
        for layer in soft_map_candidates(self.viewer):
            shown = same_layer(layer, self.inputs_layer) and self.viewer.dims.ndisplay == 2 and layer.visible
            try:
                if layer.colorbar.visible != shown:
                    layer.colorbar.visible = shown
            except AttributeError:       # napari without layer colour bars
                return

    def _on_overlay_mode(self, mode: str) -> None:
        self._ensure_overlays()
        self.update_overlay(self._threshold)

    def _on_bands(self, checked: bool) -> None:
        self._ensure_overlays()

    def _on_ndisplay(self, event=None) -> None:
        """2D ↔ 3D: in 3D p ≥ t is an iso-surface, the scan a faint volume, raters and heat map off."""
        if self.viewer.dims.ndisplay == 3:
            self._enter_3d()
        else:
            self._leave_3d()
        self._ensure_overlays()
        self._show_colorbar()
        self.update_overlay(self._threshold)
        self._update_canvas_legend()

    def _enter_3d(self) -> None:
        if self._saved_3d or self.inputs_layer is None:
            return
        for layer in list(self.viewer.layers):
            if is_helper(layer):
                continue
            kind = softseg_layers.kind_of(layer)
            if layer_type(layer) == "labels" or same_layer(layer, self.inputs_layer) or kind == "soft_label":
                self._saved_3d.append((layer, "visible", layer.visible))
                layer.visible = False
            elif layer_type(layer) == "image" and layer.visible:
                self._saved_3d.append((layer, "opacity", layer.opacity))
                self._saved_3d.append((layer, "rendering", layer.rendering))
                layer.rendering = "mip"
                layer.opacity = min(layer.opacity, SCAN_OPACITY_3D)

    def _leave_3d(self) -> None:
        for layer, attribute, value in reversed(self._saved_3d):
            if self._alive(layer):
                setattr(layer, attribute, value)
        self._saved_3d = []

    def _on_role(self, role: str) -> None:
        with _blocked(self.role_combo):
            self.role_combo.setCurrentIndex(ROLES.index(role))
        apply_role(self.viewer, role)

    def _on_layer_removed(self, event) -> None:
        removed = event.value
        if same_layer(removed, self.fill_layer):
            self.fill_layer = None
        elif same_layer(removed, self.contour_layer):
            self.contour_layer = self._contour_view = None
        elif same_layer(removed, self.bands_layer):
            self.bands_layer = self._bands_view = None
        elif same_layer(removed, self.surface_layer):
            self.surface_layer = None

    def _on_layer_inserted(self, event) -> None:
        """A rater layer opened later follows the layout too (hidden for the clinician, outlined for the annotator)."""
        layer = event.value
        if layer_type(layer) == "labels" and softseg_layers.kind_of(layer) == "rater":
            apply_role(self.viewer, self.analysis.role)

    def _on_inputs_edited(self) -> None:
        """The soft map's data was replaced or edited in place (and refreshed), or a rater mask was painted
        (the picker only reports real changes): rebuild; new overlays only if the soft map's array changed."""
        self.analysis.invalidate()
        self.rebuild()

    def _on_shared_threshold(self, value: float) -> None:
        if value != self._threshold:
            self.set_threshold(value)

    # -- keyboard ----------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        ref = weakref.ref(self)

        def make(delta):
            def step(viewer):
                widget = ref()
                if widget is not None:
                    widget.step(delta)
            return step

        self.viewer.bind_key(KEYS[0], make(-KEY_STEP), overwrite=True)
        self.viewer.bind_key(KEYS[1], make(KEY_STEP), overwrite=True)
        viewer_ref = weakref.ref(self.viewer)

        def unbind(*args):
            viewer = viewer_ref()
            if viewer is None:
                return
            for key in KEYS:
                try:
                    viewer.bind_key(key, None)
                except (KeyError, ValueError):   # already unbound (e.g. by another explorer)
                    pass

        self.destroyed.connect(unbind)


class _blocked:
    def __init__(self, widget):
        self.widget = widget

    def __enter__(self):
        self.widget.blockSignals(True)

    def __exit__(self, *exc):
        self.widget.blockSignals(False)


def inputs_key(inputs, print_: tuple) -> tuple:
    """What identifies a set of inputs for the shared session: the layers, their arrays and their contents."""
    return (
        id(unwrapped(inputs.soft_layer)), id(inputs.prediction),
        tuple(id(unwrapped(r)) for r in inputs.rater_layers), tuple(inputs.rater_names), inputs.spacing, print_,
    )


def mark_as_soft_map(layer) -> None:
    """Give a float Image layer in [0, 1] the soft-map look and kind (``prediction``) in place."""
    style = softseg_layers.soft_map_style()
    for key in ("colormap", "contrast_limits", "blending", "opacity"):
        setattr(layer, key, style[key])
    metadata = dict(layer.metadata)
    entry = dict(metadata.get(softseg_layers.KEY, {}))
    entry["kind"] = entry.get("kind") if entry.get("kind") in ("prediction", "soft_label") else "prediction"
    if "geometry" not in entry:
        try:
            entry["geometry"] = softseg_layers.geometry_of(layer).to_dict()
        except SoftsegError:
            pass
    entry.setdefault("provenance", {"software": SOFTWARE, "marked_in_viewer": True})
    metadata[softseg_layers.KEY] = entry
    layer.metadata = metadata


def apply_role(viewer, role: str) -> None:
    """Lay the canvas out for a role: clinician — raters hidden; annotator — raters as coloured one-voxel outlines."""
    for layer in viewer.layers:
        if layer_type(layer) != "labels" or softseg_layers.kind_of(layer) != "rater":
            continue
        if role == "annotator":
            layer.contour = 1
            layer.opacity = 1.0
            layer.visible = True
        else:
            layer.visible = False
