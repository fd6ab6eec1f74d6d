"""Threshold explorer: drag one slider over a calibrated soft map and watch the operating point.

The widget is a thin view of :class:`~napari_softseg.analysis.operating_point.ThresholdSession`. A slider move
costs (see ``benchmarks/bench_slider.py`` and docs/benchmarks.md):

* **numbers**: an O(1) look-up in the precomputed PR curve of the chosen reference;
* **filled overlay**: a second Image layer shows the *same* soft-map array (no copy) through a
  two-colour colormap; the threshold is its contrast limits, so the renderer applies it and nothing is
  thresholded on the CPU;
* **contour overlay**: an Image layer over a :class:`~napari_softseg.analysis.operating_point.ContourView`; napari
  asks it for the displayed slice only, so a move outlines one slice (and scrolling re-outlines the new
  slice);
* **PR-curve marker**: moved by blitting, throttled; the curve is drawn only when the reference changes.

Building a PR curve (one pass over the volume, 0.2–0.5 s at 256³) happens off the GUI thread
(:class:`~napari_softseg._qt.background.LatestJob`) when the layers, the reference or a rater's mask
change (painting in a rater layer is picked up once the user pauses). Meanwhile the dock says
"computing …", the reference and preset controls are disabled, the numbers read "…", and the slider
keeps moving the overlay; the numbers appear when the curve is ready. Only the latest request's curve
is used. :attr:`ThresholdExplorer.ready` is False while a curve is being built.

In 3D (``viewer.dims.ndisplay == 3``) the contour overlay would outline and upload the whole volume on
every move, so the filled overlay (drawn by the renderer) stands in for it until the view is 2D again
(the contour layer is hidden, and its view never outlines a volume), and the user is told once.

Keyboard: with the slider focused, arrows step 0.001 and Page Up/Down 0.05; anywhere in the viewer,
``[`` / ``]`` step 0.01.
"""

from __future__ import annotations

import weakref

from napari.utils.colormaps import Colormap
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)
from superqt.utils import qdebounced

from napari_softseg.errors import SoftsegError
from napari_softseg.analysis.operating_point import (
    GRID,
    ContourView,
    Reference,
    ThresholdSession,
    overlay_contrast_limits,
    snap,
    threshold_colormap_controls,
)

from napari_softseg._qt.background import ComputeStatus, LatestJob
from napari_softseg._qt.notifications import notify_exception, show_info, show_warning
from napari_softseg._qt.plots import PRCurvePlot
from napari_softseg._qt.selection import HELPER_KEY, LayerInputs, ReferencePicker, scroll_layout, shared_threshold

OVERLAY_MODES = ("filled", "contour", "none")
FILL_COLOR = (1.0, 0.85, 0.1)       # amber: visible over gray scans and the inferno soft map
CONTOUR_COLOR = (0.2, 1.0, 0.9)     # cyan
KEY_STEP = 0.01
KEYS = ("[", "]")
PENDING = "…"                       # a statistic whose PR curve is still being built


def _step_colormap(name: str, rgb: tuple[float, float, float]) -> Colormap:
    """Transparent below the middle of the range, ``rgb`` from it on (no interpolation)."""
    return Colormap(
        colors=[[0.0, 0.0, 0.0, 0.0], [*rgb, 1.0]],
        controls=list(threshold_colormap_controls()),
        interpolation="zero",
        name=name,
    )


class ThresholdExplorer(QWidget):
    """Dock widget: threshold slider, overlay, operating-point statistics and PR curve.

    Args:
        napari_viewer: The viewer (napari passes it by this name).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: ThresholdSession | None = None
        self._stats_ready = False          # the session's current reference is the one chosen, curve built
        self._told_3d = False
        self.inputs_layer = None           # the soft-map layer the session was built from
        self.fill_layer = None
        self.contour_layer = None
        self._contour_view: ContourView | None = None
        self._threshold = 0.5
        self._shared = shared_threshold(napari_viewer)
        self._threshold = self._shared.value

        self.inputs = LayerInputs(napari_viewer)
        self.references = ReferencePicker(self._on_reference_changed)
        self.reference_combo = self.references.combo
        self.k_spin = self.references.k_spin
        self.overlay_combo = QComboBox()
        self.overlay_combo.addItems(OVERLAY_MODES)
        self.overlay_combo.setToolTip("How the mask p >= threshold is drawn")

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
        self.recall_button = QPushButton("recall ≥")
        self.recall_button.setToolTip("Highest threshold that keeps recall at or above the target")
        self.precision_button = QPushButton("precision ≥")
        self.precision_button.setToolTip("Lowest threshold that reaches the target precision")
        self.mask_button = QPushButton("Make mask layer")
        self.mask_button.setToolTip(
            "Add a Labels layer of the voxels at or above the threshold (File ▸ Save writes it as NIfTI with "
            "the threshold and provenance)"
        )
        self.mask_button.clicked.connect(self.make_mask_layer)

        self.stat_labels: dict[str, QLabel] = {}
        self.plot = PRCurvePlot(napari_viewer)
        self.status = ComputeStatus()
        self.job = LatestJob(self, "Threshold explorer", self.status)
        self._build_layout()
        self._thumbnail_later = qdebounced(self._refresh_thumbnails, timeout=250)

        self.inputs.changed.connect(self.rebuild)
        self.inputs.edited.connect(self._on_inputs_edited)
        self.job.busy_changed.connect(self._update_enabled)
        self.overlay_combo.currentTextChanged.connect(self._on_overlay_mode)
        self.slider.valueChanged.connect(lambda v: self.set_threshold(v / GRID))
        self.spin.valueChanged.connect(self.set_threshold)
        self.recall_button.clicked.connect(self.apply_recall_preset)
        self.precision_button.clicked.connect(self.apply_precision_preset)
        self._shared.changed.connect(self._on_shared_threshold)
        napari_viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self._bind_keys()
        self.rebuild()

    # -- layout ------------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        layout = scroll_layout(self)
        layout.addWidget(self.inputs)
        row = QHBoxLayout()
        row.addWidget(QLabel("reference"))
        row.addWidget(self.reference_combo, 1)
        row.addWidget(self.k_spin)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("overlay"))
        row.addWidget(self.overlay_combo, 1)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("threshold"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.recall_button)
        row.addWidget(self.recall_target)
        row.addWidget(self.precision_button)
        row.addWidget(self.precision_target)
        layout.addLayout(row)
        layout.addWidget(self.mask_button)
        layout.addWidget(self.status)
        box = QGroupBox("operating point")
        grid = QGridLayout(box)
        names = ("precision", "recall", "Dice", "specificity", "volume", "voxels")
        for i, name in enumerate(names):
            label = QLabel("–")
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            # a fixed size: new text then repaints the label only, with no relayout of the dock per move
            label.setFixedSize(label.fontMetrics().horizontalAdvance("E 0.0000 mL, 000") + 8,
                               label.fontMetrics().height() + 4)
            self.stat_labels[name] = label
            grid.addWidget(QLabel(name), i // 2, 2 * (i % 2))
            grid.addWidget(label, i // 2, 2 * (i % 2) + 1)
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
        """``"filled"``, ``"contour"`` or ``"none"``."""
        self.overlay_combo.setCurrentText(mode)

    def set_threshold(self, threshold: float) -> None:
        """Move the operating point: numbers, overlay and PR-curve marker follow. Snapped to 0.001."""
        t = snap(threshold)
        self._threshold = t
        self._sync_controls(t)
        self._apply(t)
        self._shared.set(t)

    def make_mask_layer(self):
        """Add the mask ``p >= threshold`` of the chosen soft map as a Labels layer; return the layer.

        The layer keeps the soft map's geometry and provenance and records the threshold, so the plugin's
        mask writer saves a uint8 NIfTI that says how it was made. Nothing happens (with a notification)
        when no soft map is chosen.
        """
        from napari_softseg.layers import mask_layer_from_soft

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

    def apply_recall_preset(self) -> None:
        """Jump to the highest threshold whose recall is at least the recall target."""
        if self.session is not None and self._stats_ready:
            self.set_threshold(self.session.threshold_for_recall(self.recall_target.value()))

    def apply_precision_preset(self) -> None:
        """Jump to the lowest threshold whose precision reaches the precision target."""
        if self.session is None or not self._stats_ready:
            return
        target = self.precision_target.value()
        t = self.session.threshold_for_precision(target)
        if t is None:
            show_warning(
                f"Threshold explorer: no threshold reaches precision ≥ {target:.3f} against "
                f"{self.session.describe_reference()}; the threshold is left at {self._threshold:.3f}"
            )
            return
        self.set_threshold(t)

    def step(self, delta: float) -> None:
        """Move the threshold by ``delta`` (keyboard steps)."""
        self.set_threshold(self._threshold + delta)

    # -- building ----------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Re-read the chosen layers, build the session, the reference list and the overlays."""
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
        self.session = ThresholdSession(
            inputs.prediction, inputs.masks, spacing=inputs.spacing, rater_names=inputs.rater_names
        )
        self._stats_ready = False
        if inputs.soft_layer is not self.inputs_layer or not self._overlays_show(inputs.prediction):
            self._remove_overlays()
            self.inputs_layer = inputs.soft_layer
        self._fill_references(*previous)
        self._ensure_overlays()          # the picture does not wait for the statistics
        self._on_reference_changed()

    def _overlays_show(self, data) -> bool:
        """Whether the existing overlay layers show ``data`` (not an array the soft map had before)."""
        return all(
            layer_data is data
            for layer_data in (
                self.fill_layer.data if self._alive(self.fill_layer) else data,
                self._contour_view.data if self._alive(self.contour_layer) else data,
            )
        )

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
        session.add_curve(ref, curve)
        self._show_reference(session, ref)

    def _show_reference(self, session: ThresholdSession, ref: Reference) -> None:
        session.reference = ref                         # cached: O(1)
        self._stats_ready = True
        curve = session.curve
        expected = "expected " if ref.kind == "expected" else ""
        self.plot.set_curve(curve.recall, curve.precision, f"{expected}PR vs {session.describe_reference()}")
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
        if not self._stats_ready:
            for label in self.stat_labels.values():
                label.setText(PENDING)
            self.plot.set_marker(float("nan"), float("nan"))
            return
        op = self.session.at(t)
        expected = self.session.reference.kind == "expected"
        prefix = "E " if expected else ""
        labels = self.stat_labels
        labels["precision"].setText(f"{prefix}{op.precision:.3f}")
        labels["recall"].setText(f"{prefix}{op.recall:.3f}")
        labels["Dice"].setText(f"{prefix}{op.dice:.3f}")
        labels["specificity"].setText(f"{prefix}{op.specificity:.4f}")
        labels["volume"].setText("–" if op.volume_ml is None else f"{op.volume_ml:.2f} mL")
        labels["voxels"].setText(f"{op.n_positive:,}")
        self.plot.set_marker(op.recall, op.precision)

    def update_overlay(self, t: float) -> None:
        """Show ``p >= t`` in the current overlay mode (no full-volume work)."""
        mode = self.shown_overlay_mode
        if mode == "filled" and self._alive(self.fill_layer):
            # the layer list repaints a thumbnail on every change (several ms): refresh it once the
            # slider rests instead
            with self.fill_layer.events.thumbnail.blocker():
                self.fill_layer.contrast_limits = overlay_contrast_limits(t)
            self._thumbnail_later()
        elif mode == "contour" and self._alive(self.contour_layer):
            self._contour_view.threshold = t
            self.contour_layer.refresh(thumbnail=False, highlight=False, extent=False)
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
        """The overlay drawn: the chosen mode, except that the contour is drawn filled in 3D views."""
        mode = self.overlay_mode
        return "filled" if mode == "contour" and self.viewer.dims.ndisplay == 3 else mode

    # -- overlay layers ----------------------------------------------------------------------------
    def _alive(self, layer) -> bool:
        return layer is not None and layer in self.viewer.layers

    def _ensure_overlays(self) -> None:
        mode = self.shown_overlay_mode
        source = self.inputs_layer
        if source is None or mode == "none":
            self._set_overlay_visibility()
            return
        active = self.viewer.layers.selection.active
        transform = dict(
            affine=source.affine.affine_matrix, scale=source.scale, translate=source.translate,
            rotate=source.rotate, shear=source.shear, blending="translucent",
        )
        if mode == "filled" and not self._alive(self.fill_layer):
            lo, hi = overlay_contrast_limits(self._threshold)
            self.fill_layer = self.viewer.add_image(
                source.data, name=f"{source.name} ≥ threshold", colormap=_step_colormap("softseg threshold", FILL_COLOR),
                contrast_limits=(lo, hi), opacity=0.45, metadata={HELPER_KEY: "threshold fill"}, **transform,
            )
            self.fill_layer.contrast_limits_range = (-1.0, 2.0)
        if mode == "contour" and not self._alive(self.contour_layer):
            self._contour_view = ContourView(source.data, self._threshold, outline_volumes=False)
            self.contour_layer = self.viewer.add_image(
                self._contour_view, name=f"{source.name} contour", colormap=_step_colormap("softseg contour", CONTOUR_COLOR),
                contrast_limits=(0.0, 1.0), interpolation2d="nearest", opacity=1.0,
                metadata={HELPER_KEY: "threshold contour"}, **transform,
            )
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active    # keep the user's selection
        self._set_overlay_visibility()

    def _set_overlay_visibility(self) -> None:
        mode = self.shown_overlay_mode
        if self._alive(self.fill_layer):
            self.fill_layer.visible = mode == "filled"
        if self._alive(self.contour_layer):
            self.contour_layer.visible = mode == "contour"

    def _remove_overlays(self) -> None:
        for layer in (self.fill_layer, self.contour_layer):
            if self._alive(layer):
                self.viewer.layers.remove(layer)
        self.fill_layer = self.contour_layer = self._contour_view = None

    def _on_overlay_mode(self, mode: str) -> None:
        self._ensure_overlays()
        self.update_overlay(self._threshold)
        self._tell_3d()

    def _on_ndisplay(self, event=None) -> None:
        # the viewer has re-sliced the layers already: a visible contour layer got an empty volume
        # (the view does not outline volumes) and is hidden now; the filled overlay stands in for it
        if self._alive(self.contour_layer):
            self._contour_view.threshold = self._threshold
        self._ensure_overlays()
        self.update_overlay(self._threshold)
        self._tell_3d()

    def _tell_3d(self) -> None:
        """Say once why a contour is drawn filled in 3D."""
        if self.overlay_mode == "contour" and self.viewer.dims.ndisplay == 3 and not self._told_3d:
            self._told_3d = True
            show_info(
                "Threshold explorer: the contour overlay outlines 2D slices; in the 3D view the mask "
                "p ≥ threshold is drawn filled (back to contours in 2D)"
            )

    def _on_layer_removed(self, event) -> None:
        if event.value is self.fill_layer:
            self.fill_layer = None
        elif event.value is self.contour_layer:
            self.contour_layer = self._contour_view = None

    def _on_inputs_edited(self) -> None:
        """The soft map's data was replaced (e.g. a new prediction) or a rater mask was painted: rebuild
        (new overlays only if the soft map's array changed)."""
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
