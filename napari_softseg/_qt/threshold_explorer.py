"""Threshold explorer: drag one slider over a calibrated soft map and watch the operating point.

The dock (a view of the viewer's shared :class:`~napari_softseg.analysis.session.AnalysisSession`):

* on top, never scrolled away: the **threshold slider**, its exact value, and the clinical numbers at
  that threshold — **sensitivity**, **PPV**, Dice and the predicted volume;
* below, in a scroll area: the presets ("sensitivity ≥ 0.95", "PPV ≥ 0.90", with a warning when the
  operating point is degenerate or the mask more than twice the reference volume:
  :mod:`napari_softseg._qt.presets_panel`), the model's named
  cohort operating points (:mod:`napari_softseg._qt.named_points`), the layer choice (the
  rater list folds to one line), the reference, the overlay mode and layout, the remaining numbers and
  the PR curve.

What the canvas shows is drawn by :class:`~napari_softseg._napari.overlay.ThresholdOverlay` (Qt-free),
which the dock drives: the scan; the soft map as a translucent heat layer with a colour bar; ``p ≥ t``
as a crisp cyan outline (optionally a light fill, confidence bands); in 3D a smooth shaded surface of
``p = t`` built off the GUI thread when the slider rests (:mod:`napari_softseg._qt.surface_worker`), the
last mesh kept while it moves; raters hidden in the clinician layout, coloured outlines in the annotator
layout.

A slider move costs (see ``benchmarks/bench_slider.py`` and docs/benchmarks.md):

* **numbers**: an O(1) look-up in the precomputed PR curve of the chosen reference (shared by every dock
  through the viewer's :class:`~napari_softseg.analysis.session.AnalysisSession`);
* **outline** and **fill**: one displayed slice (:mod:`napari_softseg.analysis.display`);
* **PR-curve marker** (labelled with t): moved by blitting, throttled; the curve (with threshold ticks)
  is drawn only when the reference changes.

Building a PR curve (one pass over the volume, 0.2–0.5 s at 256³) happens off the GUI thread
(:class:`~napari_softseg._qt.background.LatestJob`) when the layers, the reference or a rater's mask
change; a curve another dock built for the same inputs is reused. A big soft map (4 M voxels or more) is
read and checked in the same worker first (range check, rater masks: seconds at 512 × 512 × 300), so the
dock never waits on it. Edits are picked up when the user
pauses — also in-place edits followed by ``layer.refresh()`` (the data's CRC changes) — and **Refresh**
re-reads the layers on demand. :attr:`ThresholdExplorer.ready` is False while a curve is being built.

Keyboard: with the slider focused, arrows step 0.001 and Page Up/Down 0.05; anywhere in the viewer,
``[`` / ``]`` step 0.01.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)
from superqt.utils import qdebounced

from napari_softseg._napari import gc_freeze
from napari_softseg._napari import layers as softseg_layers
from napari_softseg._napari.layer_roles import (
    check_soft_map,
    inputs_key,
    mark_as_soft_map,
    read_inputs_work,
    reads_in_background,
)
from napari_softseg._napari.layers import format_threshold, layer_type, mask_layer_from_soft
from napari_softseg._napari.overlay import OVERLAY_MODES, ThresholdOverlay, apply_role
from napari_softseg._napari.overlay_style import BAND_LEVELS
from napari_softseg._qt.background import ComputeStatus, LatestJob
from napari_softseg._qt.dock_column import join_column_when_docked
from napari_softseg._qt.dock_layout import dock_sections
from napari_softseg._qt.glyphs import warm_canvas_glyphs, when_glyphs_ready
from napari_softseg._qt.key_steps import bind_step_keys
from napari_softseg._qt.named_points import NamedPointsPanel
from napari_softseg._qt.notifications import notify_exception, show_warning
from napari_softseg._qt.plots import PRCurvePlot
from napari_softseg._qt.presets_panel import PresetsPanel
from napari_softseg._qt.qt_helpers import connect_while_alive, next_turn, relax_combos, signals_blocked
from napari_softseg._qt.selection import LayerInputs, ReferencePicker
from napari_softseg._qt.statistics_panel import EMPTY, PENDING, StatisticsPanel
from napari_softseg._qt.surface_worker import SurfaceBuilder
from napari_softseg._qt.workers import is_alive
from napari_softseg.analysis.operating_point import GRID, Reference, ThresholdSession, snap
from napari_softseg.analysis.session import ROLES
from napari_softseg.errors import SoftsegError

TITLE = "Threshold explorer"
KEY_STEP = 0.01
KEYS = ("[", "]")


class ThresholdExplorer(QWidget):
    """Dock widget: threshold slider, overlay, operating-point statistics and PR curve.

    A view of the viewer's :class:`~napari_softseg.analysis.session.AnalysisSession` (shared with the other
    docks): the chosen layers, the threshold, the reference and the curve cache live there. The canvas
    overlay is :attr:`overlay` (a :class:`~napari_softseg._napari.overlay.ThresholdOverlay`).

    Args:
        napari_viewer: The viewer (napari passes it by this name; a plugin proxy works the same).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ThresholdSession | None = None
        self._stats_ready = False          # the session's current reference is the one chosen, curve built
        self._reading = False              # a big soft map's layers are being read in the background
        self.overlay = ThresholdOverlay(napari_viewer)

        self.inputs = LayerInputs(napari_viewer, raters_expanded=False)
        self.analysis = self.inputs.session
        self._threshold = self.analysis.threshold
        self.overlay.threshold = self._threshold
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

        self.presets = PresetsPanel(lambda: self.session if self._stats_ready else None, lambda: self._threshold,
                                    self.set_threshold, self._voxel_ml)
        self.recall_target, self.precision_target = self.presets.recall_target, self.presets.precision_target
        self.recall_button, self.precision_button = self.presets.recall_button, self.presets.precision_button
        self.preset_label = self.presets.label
        self.mask_button = QPushButton("Make mask layer")
        self.mask_button.setToolTip(
            "Add a Labels layer of the voxels at or above the threshold (File ▸ Save writes it as NIfTI with "
            "the threshold and provenance)"
        )
        self.mask_button.clicked.connect(self.make_mask_layer)

        self.statistics = StatisticsPanel(self)
        self.stat_labels: dict[str, QLabel] = self.statistics.labels
        self.stat_names: dict[str, QLabel] = self.statistics.names
        self.plot = PRCurvePlot(napari_viewer)
        self.named_points = NamedPointsPanel(self)   # the model's cohort points: presets, marks
        self.status = ComputeStatus()
        self.job = LatestJob(self, TITLE, self.status)
        self._colorbar_due = False          # the colour bar follows the overlay on the next turn
        self._legend_due = False            # the canvas legend waits for its glyphs (glyphs.when_glyphs_ready)
        self._first_read_due = False        # a big map's first read waits for the dock's first frame
        self.surfaces = SurfaceBuilder(self, self.overlay, f"{TITLE}: 3D surface")
        self._build_layout()
        self._thumbnail_later = qdebounced(self.overlay.refresh_thumbnails, timeout=250)
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
        connect_while_alive(self, self.analysis.threshold_changed, self._on_shared_threshold)
        connect_while_alive(self, self.analysis.curve_added, self._on_curve_added)
        connect_while_alive(self, self.analysis.role_changed, self._on_role)
        # first among plugins (napari runs its own handlers, which slice the layers for the new view, before
        # any plugin's): the layers 3D hides are hidden before the next frame draws them
        napari_viewer.dims.events.ndisplay.connect(self._on_ndisplay, position="first")
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        napari_viewer.layers.events.inserted.connect(self._on_layer_inserted)
        relax_combos(self)
        self._bind_keys()
        self._sync_controls(self._threshold)
        self.role_combo.setCurrentIndex(ROLES.index(self.analysis.role))
        apply_role(napari_viewer, self.analysis.role)     # the clinician layout: raters hidden
        join_column_when_docked(self, TITLE)
        warm_canvas_glyphs(napari_viewer)          # the legend's first frame then renders no new glyph
        if gc_freeze.hold(napari_viewer, next_turn):   # short full collections while the dock is open
            self.destroyed.connect(gc_freeze.release)
        # a big map is read (and checksummed) from the turn after napari has laid the dock out and drawn it:
        # begun meanwhile, the read competed with that for the cores (0.21-0.24 s at 512 x 512 x 300)
        self._first_read_due = reads_in_background(self.inputs.soft_layer())
        if self._first_read_due:
            next_turn(self._first_read)
        else:
            self.rebuild()

    # -- layout ------------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        top, layout = dock_sections(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("threshold t"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        top.addLayout(row)
        top.addWidget(self.statistics.primary)

        layout.addWidget(self.presets)
        layout.addWidget(self.named_points)
        layout.addWidget(self.status)
        layout.addWidget(self.inputs)
        row = QHBoxLayout()
        row.addWidget(self.as_soft_button)
        row.addWidget(self.refresh_button)
        layout.addLayout(row)
        # the reference box gets the dock's whole width: its entries name the consensus rule in full
        reference = QFormLayout()
        reference.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        reference.addRow("reference (what the numbers are against)", self.reference_combo)
        layout.addLayout(reference)
        form = QFormLayout()
        k_row = QHBoxLayout()
        k_row.addWidget(self.k_spin)
        k_row.addStretch(1)
        form.addRow("", k_row)
        form.addRow("show", self.overlay_combo)
        form.addRow("layout", self.role_combo)
        layout.addLayout(form)
        layout.addWidget(self.bands_check)
        layout.addWidget(self.mask_button)
        layout.addWidget(self.statistics.more)
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
        """False while a PR curve is being built in the background (statistics read "…") or the colour bar or
        legend is still to come."""
        return not (self.job.busy or self._colorbar_due or self._legend_due or self._first_read_due)

    @property
    def overlay_mode(self) -> str:
        """The overlay mode chosen in the dock (one of :data:`OVERLAY_MODES`)."""
        return self.overlay_combo.currentText()

    @property
    def shown_overlay_mode(self) -> str:
        """The overlay drawn: the chosen mode in 2D; ``"surface"`` in 3D (``"none"`` stays none)."""
        return self.overlay.shown_mode

    @property
    def inputs_layer(self):
        """The soft-map layer the overlay and the statistics are of (None: none chosen)."""
        return self.overlay.source

    @property
    def fill_layer(self):
        """The helper layer filling ``p >= t`` (None until a fill mode is chosen)."""
        return self.overlay.fill_layer

    @property
    def contour_layer(self):
        """The helper layer outlining ``p >= t`` (None until an outline mode is shown)."""
        return self.overlay.contour_layer

    @property
    def bands_layer(self):
        """The confidence-bands helper layer (None until the bands are ticked)."""
        return self.overlay.bands_layer

    @property
    def surface_layer(self):
        """The 3D iso-volume helper layer (only for a soft map that cannot be meshed; else None)."""
        return self.overlay.surface_layer

    @property
    def mesh_layer(self):
        """The 3D shaded Surface layer of ``p = t`` (None until built; hidden in 2D)."""
        return self.overlay.mesh_layer

    def set_overlay_mode(self, mode: str) -> None:
        """One of :data:`OVERLAY_MODES`."""
        if mode not in OVERLAY_MODES:
            raise ValueError(f"overlay mode must be one of {OVERLAY_MODES}, got {mode!r}")
        self.overlay_combo.setCurrentText(mode)

    def set_threshold(self, threshold: float) -> None:
        """Move the operating point: numbers, overlay and PR-curve marker follow. Snapped to 0.001."""
        t = snap(threshold)
        self._threshold = t
        self.overlay.threshold = t
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
        return self.presets.apply_recall()

    def apply_precision_preset(self) -> str:
        """Jump to the lowest threshold whose PPV reaches the target; returns what it says."""
        return self.presets.apply_precision()

    def step(self, delta: float) -> None:
        """Move the threshold by ``delta`` (keyboard steps)."""
        self.set_threshold(self._threshold + delta)

    # -- building ----------------------------------------------------------------------------------
    def rebuild(self, force: bool = False) -> None:
        """Re-read the chosen layers, build (or reuse) the shared session, the reference list and overlays.

        A big soft map (:func:`~napari_softseg._napari.layer_roles.reads_in_background`) is read and checked
        in the background (:attr:`ready` is False meanwhile); the rest follows when it arrives.
        """
        layer = self.inputs.soft_layer()
        mismatched = self.inputs.mismatched_raters()
        if mismatched:
            show_warning(
                "Threshold explorer: rater layer(s) "
                + ", ".join(repr(m.name) for m in mismatched)
                + " do not match the soft map's shape and are left out"
            )
        printed = self.inputs.data_print_future()      # checksummed in a thread meanwhile
        if reads_in_background(layer):
            self._reading = True
            self.job.start(_read_and_print(read_inputs_work(layer, self.inputs.rater_layers()), printed),
                           lambda read: self._use_inputs(*read, force, split=True),
                           message=f"reading {layer.name!r} …", on_error=self._read_failed)
            return
        try:
            inputs = self.inputs.read()
        except SoftsegError as exc:
            self._read_failed(exc)
            return
        self._use_inputs(inputs, printed.result(), force)

    def _first_read(self) -> None:
        self._first_read_due = False
        if is_alive(self):               # not when the dock was closed before its turn
            self.rebuild()

    def _read_failed(self, exc: BaseException) -> None:
        layer = self.inputs.soft_layer()
        self._clear(str(exc) if layer is not None else "")
        if layer is not None:
            notify_exception(exc, action="Threshold explorer")

    def _use_inputs(self, inputs, data_print: tuple, force: bool = False, split: bool = False) -> None:
        """The chosen layers' arrays are read: the shared session, the references, the overlays, the curve.

        ``split`` (a big map, read in the background): the colour bar comes on the next turn of the event loop.
        """
        self._reading = False
        previous = (self._current_reference(), None if self.session is None else self.session.n_raters)
        self.session = self.analysis.set_inputs(
            inputs.prediction, inputs.masks, spacing=inputs.spacing, rater_names=inputs.rater_names,
            key=inputs_key(inputs, data_print),
        )
        self._stats_ready = False
        self.overlay.set_source(inputs.soft_layer, inputs.prediction, force=force)
        self._fill_references(*previous)
        self.overlay.ensure()            # the picture does not wait for the statistics
        self._on_reference_changed()
        if split:      # a new canvas overlay and its frame: on a turn of its own, with its glyphs ready
            self._colorbar_due = True
            next_turn(lambda: when_glyphs_ready(self.viewer, self._show_colorbar, owner=self))
        else:
            self._show_colorbar()

    def _show_colorbar(self) -> None:
        self._colorbar_due = False
        self.overlay.show_colorbar()

    def _fill_references(self, previous: Reference | None = None, previous_n: int | None = None) -> None:
        """List the references for the session; keep ``previous`` if the number of raters is unchanged."""
        self.references.fill(self.session, previous, previous_n)
        self._update_enabled()

    def _current_reference(self) -> Reference | None:
        return None if self.session is None else self.references.current()

    def _on_reference_changed(self, *args) -> None:
        """Show the statistics against the chosen reference; build its PR curve in the background."""
        ref = self._current_reference()
        if ref is None or self._reading:     # a read under way ends by choosing the reference itself
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
        gc_freeze.freeze_long_lived()    # what the build made: out of later full collections

    def _on_curve_added(self, ref) -> None:
        """Another dock built a curve for the shared inputs: use it if it is the one being waited for."""
        if self.session is not None and self.job.busy and not self._reading and ref == self._current_reference() \
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
        self.statistics.set_expected(expected)
        self.named_points.curve_shown()
        self.overlay.ensure()
        self.set_threshold(self._threshold)

    def _update_enabled(self, *args) -> None:
        """Reference and presets need a finished PR curve; the slider and overlay never wait."""
        idle = self.session is not None and not self.job.busy
        self.references.set_enabled(idle)
        self.presets.set_enabled(idle)

    def _clear(self, message: str) -> None:
        self.job.cancel()
        self._reading = False
        self.session = None
        self._stats_ready = False
        self.overlay.clear()
        self.references.clear()
        self.statistics.fill(EMPTY)
        self.plot.set_curve([], [], message)
        self._update_enabled()

    # -- per move ----------------------------------------------------------------------------------
    def _sync_controls(self, t: float) -> None:
        for w, v in ((self.slider, int(round(t * GRID))), (self.spin, t)):
            if w.value() != v:
                with signals_blocked(w):
                    w.setValue(v)

    def _apply(self, t: float) -> None:
        if self.session is None:
            return
        self.update_overlay(t)
        self._legend_later()             # the canvas' text legend is re-laid out once the slider rests
        if not self._stats_ready:
            self.statistics.fill(PENDING)
            self.plot.set_marker(float("nan"), float("nan"), "")
            return
        op = self.session.at(t)
        self.statistics.show(op, self._voxel_ml())
        self.plot.set_marker(op.recall, op.precision, f"t = {format_threshold(t)}")

    def _update_canvas_legend(self) -> None:
        """The canvas' one line of legend next to the colour bar: what the outline (or surface) shows (once
        the canvas has its glyphs: rendering ~45 of them in one frame stalled the GUI)."""
        if self._legend_due:
            return                       # already waiting: it shows the state of the moment it runs
        self._legend_due = True
        when_glyphs_ready(self.viewer, self._show_legend, owner=self)

    def _show_legend(self) -> None:
        self._legend_due = False
        self.overlay.update_legend()

    def _voxel_ml(self) -> float | None:
        spacing = self.session.spacing if self.session is not None else None
        return None if spacing is None else float(np.prod(spacing)) / 1000.0

    def update_overlay(self, t: float) -> None:
        """Show ``p >= t`` in the current overlay mode (no full-volume work); thumbnails once the slider rests."""
        if self.overlay.update(t):
            self._thumbnail_later()
        self.surfaces.threshold_moved()

    def operating_point(self):
        """Statistics at the current threshold (None without a soft map or while its curve is built)."""
        return self.session.at(self._threshold) if self.session is not None and self._stats_ready else None

    # -- overlay and canvas ------------------------------------------------------------------------
    def _on_overlay_mode(self, mode: str) -> None:
        self.overlay.mode = mode
        self.overlay.ensure()
        self.update_overlay(self._threshold)
        self._update_canvas_legend()

    def _on_bands(self, checked: bool) -> None:
        self.overlay.bands = checked
        self.overlay.ensure()
        self._update_canvas_legend()     # the legend names the bands while they are shown

    def _on_ndisplay(self, event=None) -> None:
        """2D ↔ 3D: in 3D p ≥ t is a shaded surface, the scan a faint volume, raters and heat map off."""
        # the new 3D helper layers are added on later turns of the event loop, one per turn
        self.overlay.on_ndisplay(later=next_turn)
        self.surfaces.on_ndisplay()

    def _on_role(self, role: str) -> None:
        with signals_blocked(self.role_combo):
            self.role_combo.setCurrentIndex(ROLES.index(role))
        apply_role(self.viewer, role)

    def _on_layer_removed(self, event) -> None:
        self.overlay.forget(event.value)

    def _on_layer_inserted(self, event) -> None:
        """A rater layer opened later follows the layout too (hidden for the clinician, outlined for the annotator)."""
        layer = event.value
        if layer_type(layer) == "labels" and softseg_layers.kind_of(layer) == "rater":
            apply_role(self.viewer, self.analysis.role)

    def _on_inputs_edited(self) -> None:
        """The soft map's data was replaced or edited in place (and refreshed), or a rater mask was painted
        (the picker only reports real changes): rebuild; new overlays only if the soft map's array changed."""
        self.analysis.invalidate()
        self.overlay.forget_mesh()       # the kept 3D mesh may show the old data
        self.rebuild()
        self.surfaces.on_ndisplay()      # in 3D: build it again

    def _on_shared_threshold(self, value: float) -> None:
        if value != self._threshold:
            self.set_threshold(value)

    # -- keyboard ----------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        bind_step_keys(self, self.viewer, KEYS, (-KEY_STEP, KEY_STEP), ThresholdExplorer.step)


def _read_and_print(work, printed):
    """``work`` (reading the chosen layers) and then the wait for their checksum, both in the worker: the GUI
    thread never waits for the checksum of a big soft map. Returns ``(inputs, data print)``."""
    inputs = yield from work
    return inputs, printed.result()
