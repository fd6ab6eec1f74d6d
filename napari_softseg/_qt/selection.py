"""What the analysis docks (threshold explorer, rater comparison, calibration) work on.

* :class:`LayerInputs` — pick the soft map (an Image layer with values in [0, 1]) and the rater Labels
  layers; it follows the viewer's layer list and pre-selects layers by the kind the reader records in
  ``metadata["softseg"]`` (``prediction`` / ``soft_label``, ``rater``), else by type and shape.
  :meth:`LayerInputs.read` returns the arrays, checked, or raises :class:`SoftsegError` with the reason.
  Edits of the chosen layers (paint strokes in a rater layer, new data in any of them) are reported by
  its ``edited`` signal once the user pauses (:data:`EDIT_DEBOUNCE_MS`), so the docks recompute on their
  own instead of waiting for a Refresh.
* :func:`analysis_session` — one Qt-free :class:`~napari_softseg.analysis.session.AnalysisSession` per
  viewer that every dock is a view of: the chosen layers (one choice, shown by each dock's picker), the
  threshold, the reference and the PR-curve cache, so the rater comparison scores the model at the
  threshold the clinician chose in the explorer and a curve is built once for all docks.
* :func:`scroll_layout` — the docks' content scrolls instead of being squeezed in a short dock.
* Helper layers the docks add (threshold overlay, contour, disagreement map) are tagged with
  :data:`HELPER_KEY` in their metadata and never offered as inputs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QFrame,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

from napari_softseg._napari import layers as softseg_layers
from napari_softseg.analysis.consensus import RULE_DETAIL, describe
from napari_softseg.analysis.operating_point import Reference, default_k
from napari_softseg.analysis.session import AnalysisSession
from napari_softseg.errors import SoftsegError

#: Metadata key marking layers made by the analysis docks (value: what the layer is).
HELPER_KEY = "softseg_helper"

#: Quiet time (ms) after the last edit of a chosen layer (e.g. a paint stroke) before ``edited`` fires.
EDIT_DEBOUNCE_MS = 300

_SOFT_KINDS = ("prediction", "soft_label")
_NOT_RATERS = ("annotation", "mask")


def is_helper(layer) -> bool:
    """Whether ``layer`` was made by one of the analysis docks (an overlay, not an input)."""
    return isinstance(getattr(layer, "metadata", None), dict) and HELPER_KEY in layer.metadata


def soft_map_candidates(viewer) -> list[Image]:
    """Image layers that can be soft maps: predictions first, then soft labels, then other float images.

    Scans made by the reader (kind ``image``), RGB and multiscale layers are left out.
    """
    ranked = []
    for layer in viewer.layers:
        if not isinstance(layer, Image) or is_helper(layer) or layer.rgb or layer.multiscale:
            continue
        kind = softseg_layers.kind_of(layer)
        if kind in _SOFT_KINDS:
            ranked.append((_SOFT_KINDS.index(kind), layer))
        elif kind is None and np.issubdtype(layer.data.dtype, np.floating):
            ranked.append((2, layer))
    # within a rank: visible before hidden, the first task of a case with several, then the most
    # recently added (a new prediction wins over an older one)
    order = {id(layer): i for i, layer in enumerate(viewer.layers)}
    ranked.sort(key=lambda item: (
        item[0], not item[1].visible, softseg_layers.task_of(item[1]) or 0, -order[id(item[1])]
    ))
    return [layer for _, layer in ranked]


def rater_candidates(viewer, shape: tuple[int, ...] | None) -> tuple[list[Labels], list[Labels]]:
    """Labels layers usable as raters for a soft map of ``shape``.

    Returns:
        ``(matching, mismatched)``: Labels layers of that shape (reader-made raters first; annotations,
        thresholded masks and helper layers excluded), and rater layers whose shape differs.
    """
    matching, mismatched = [], []
    for layer in viewer.layers:
        if not isinstance(layer, Labels) or is_helper(layer):
            continue
        kind = softseg_layers.kind_of(layer)
        if kind in _NOT_RATERS:
            continue
        if shape is not None and tuple(layer.data.shape) != tuple(shape):
            if kind == "rater":
                mismatched.append(layer)
            continue
        matching.append(layer)
    matching.sort(key=lambda layer: softseg_layers.kind_of(layer) != "rater")
    return matching, mismatched


def layer_spacing(layer) -> tuple[float, float, float] | None:
    """Voxel size in mm of a spatial layer (from its softseg geometry or napari affine), else None."""
    try:
        return softseg_layers.geometry_of(layer).spacing
    except (SoftsegError, KeyError, ValueError, TypeError):
        return None


@dataclass
class Inputs:
    """Checked arrays of the chosen layers (all in the layers' own display order, not copied)."""

    soft_layer: Image
    prediction: np.ndarray
    rater_layers: list[Labels]
    masks: np.ndarray | None          # uint8 (R, *prediction.shape) or None
    rater_names: list[str]
    spacing: tuple[float, float, float] | None


def check_soft_map(layer) -> np.ndarray:
    """The data of a soft-map layer, checked: an Image layer, real numbers in [0, 1].

    Raises:
        SoftsegError: Wrong layer type, RGB/multiscale, or values outside [0, 1] / not finite.
    """
    if layer is None:
        raise SoftsegError("no soft map: open a prediction or soft label (an Image layer with values 0–1)")
    if not isinstance(layer, Image):
        raise SoftsegError(f"layer {layer.name!r} is a {softseg_layers.layer_type(layer).capitalize()} layer; pick an Image layer")
    if layer.rgb or layer.multiscale:
        raise SoftsegError(f"layer {layer.name!r} is RGB or multiscale; pick a single-channel soft map")
    data = np.asarray(layer.data)
    if not np.issubdtype(data.dtype, np.number):
        raise SoftsegError(f"layer {layer.name!r} does not hold numbers")
    lo, hi = float(np.min(data)), float(np.max(data))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise SoftsegError(
            f"layer {layer.name!r} is not a soft map: values range {lo:.3g}…{hi:.3g}, expected 0…1"
        )
    return data


def read_masks(rater_layers: list, shape: tuple[int, ...]) -> np.ndarray | None:
    """Stack rater Labels layers as ``uint8 (R, *shape)`` masks (any label > 0 is 1); None if no layers.

    Raises:
        SoftsegError: A layer is not a Labels layer or its shape differs from ``shape``.
    """
    if not rater_layers:
        return None
    for layer in rater_layers:
        if not isinstance(layer, Labels):
            raise SoftsegError(f"layer {layer.name!r} is a {softseg_layers.layer_type(layer).capitalize()} layer; raters must be Labels")
        if tuple(layer.data.shape) != tuple(shape):
            raise SoftsegError(
                f"rater layer {layer.name!r} has shape {tuple(layer.data.shape)}, the soft map {tuple(shape)}"
            )
    return np.stack([np.asarray(layer.data) > 0 for layer in rater_layers]).view(np.uint8)


class LayerInputs(QWidget):
    """Soft-map combo box and a checkable list of rater layers that follow the viewer's layers.

    Signals:
        changed: The soft map or the set of checked raters changed.
        edited: The data of the chosen soft map or of a checked rater layer changed (painted or
            replaced); debounced: fires once, :data:`EDIT_DEBOUNCE_MS` after the last edit.
    """

    changed = Signal()
    edited = Signal()

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        #: The viewer's shared analysis state: the layer choice made here is every dock's choice.
        self.session = analysis_session(viewer)
        self.soft_combo = QComboBox()
        self.soft_combo.setToolTip("Soft map to browse: a prediction or soft label (values 0–1)")
        self.rater_list = QListWidget()
        self.rater_list.setToolTip("Rater masks (Labels layers of the same shape) to compare with")
        self.rater_list.setMaximumHeight(90)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("soft map", self.soft_combo)
        form.addRow("raters", self.rater_list)
        self._layers: list = []        # soft map candidates shown in the combo
        self._raters: list = []        # rater candidates shown in the list
        # rater layer id -> checked, for layers the user (un)checked; shared by every dock of the viewer
        self._choice: dict[int, bool] = self.session.rater_choice
        self._updating = False
        self._watched: list = []       # layers whose edits are reported by ``edited``
        self._print: tuple = ()        # their data's identity and checksum when last reported
        self._edited_later = qdebounced(self._emit_edited, timeout=EDIT_DEBOUNCE_MS)
        self.soft_combo.currentIndexChanged.connect(self._on_soft_changed)
        self.rater_list.itemChanged.connect(self._on_rater_item)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.events.reordered.connect(self._on_layers_changed)
        connect_while_alive(self, self.session.selection_changed, self._follow_session)
        self.refresh()

    # -- public ------------------------------------------------------------------------------------
    def soft_layer(self):
        """The chosen soft-map layer, or None."""
        i = self.soft_combo.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_soft_layer(self, layer) -> None:
        """Choose ``layer`` as the soft map (must be a listed candidate)."""
        self.soft_combo.setCurrentIndex(self._index_of(layer))

    def rater_layers(self) -> list:
        """The checked rater layers, in list order."""
        return [
            layer for i, layer in enumerate(self._raters)
            if self.rater_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def set_rater_checked(self, layer, checked: bool) -> None:
        """Check or uncheck one rater layer."""
        index = next(i for i, cand in enumerate(self._raters) if same_layer(cand, layer))
        self.rater_list.item(index).setCheckState(
            Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
        )

    def read(self) -> Inputs:
        """The chosen layers' arrays, checked.

        Raises:
            SoftsegError: No soft map, not a soft map, or a rater layer of another shape.
        """
        layer = self.soft_layer()
        prediction = check_soft_map(layer)
        raters = self.rater_layers()
        masks = read_masks(raters, prediction.shape)
        return Inputs(
            soft_layer=layer, prediction=prediction, rater_layers=raters, masks=masks,
            rater_names=[r.name for r in raters], spacing=layer_spacing(layer),
        )

    def mismatched_raters(self) -> list:
        """Reader-made rater layers whose shape differs from the soft map (offered nowhere)."""
        layer = self.soft_layer()
        return rater_candidates(self.viewer, None if layer is None else layer.data.shape)[1]

    def refresh(self) -> None:
        """Re-list the viewer's layers, keeping the current choices where they still exist."""
        current = self.session.soft_layer if self.session.soft_layer is not None else self.soft_layer()
        before = self._selection_key()
        self._updating = True
        try:
            self._layers = soft_map_candidates(self.viewer)
            self.soft_combo.clear()
            self.soft_combo.addItems([layer.name for layer in self._layers])
            index = self._index_of(current)
            if index is not None:
                self.soft_combo.setCurrentIndex(index)
            self._fill_raters()
        finally:
            self._updating = False
        self._watch()
        self._publish()
        if self._selection_key() != before:
            self.changed.emit()

    def _index_of(self, layer) -> int | None:
        return next((i for i, cand in enumerate(self._layers) if same_layer(cand, layer)), None)

    def _selection_key(self) -> tuple:
        return (id(unwrapped(self.soft_layer())), tuple(id(unwrapped(r)) for r in self.rater_layers()))

    def _publish(self) -> None:
        """Make this dock's choice the viewer's choice (the other docks follow)."""
        self.session.select(self.soft_layer(), self.rater_layers())

    def _follow_session(self) -> None:
        """Another dock changed the choice: show the same soft map and raters here."""
        if self._updating:
            return
        before = self._selection_key()
        index = self._index_of(self.session.soft_layer)
        self._updating = True
        try:
            if index is not None and index != self.soft_combo.currentIndex():
                self.soft_combo.setCurrentIndex(index)
            self._fill_raters()
        finally:
            self._updating = False
        if self._selection_key() != before:
            self._watch()
            self.changed.emit()

    # -- internals ---------------------------------------------------------------------------------
    def _fill_raters(self) -> None:
        soft = self.soft_layer()
        self._raters = [] if soft is None else rater_candidates(self.viewer, soft.data.shape)[0]
        self.rater_list.clear()
        # when the reader's rater layers are there, other Labels layers (e.g. a new empty one to draw
        # in) are listed but not checked until the user checks them
        has_raters = any(softseg_layers.kind_of(layer) == "rater" for layer in self._raters)
        # a case with several tasks: by default only the raters of the soft map's task (or the first task)
        task = softseg_layers.task_of(soft) if soft is not None else None
        if task is None:
            task = softseg_layers.default_task(self._raters)
        for layer in self._raters:
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            layer_task = softseg_layers.task_of(layer)
            same_task = task is None or layer_task is None or layer_task == task
            default = (softseg_layers.kind_of(layer) == "rater" and same_task) or not has_raters
            checked = self._choice.get(id(unwrapped(layer)), default)
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.rater_list.addItem(item)

    def _on_layers_changed(self, event=None) -> None:
        self.refresh()

    def _on_soft_changed(self, index: int) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self._fill_raters()
        finally:
            self._updating = False
        self._watch()
        self._publish()
        self.changed.emit()

    def _on_rater_item(self, item) -> None:
        if self._updating:
            return
        layer = self._raters[self.rater_list.row(item)]
        self._choice[id(unwrapped(layer))] = item.checkState() == Qt.CheckState.Checked
        self._watch()
        self._publish()
        self.changed.emit()

    def _watch(self) -> None:
        """Follow edits of the chosen layers only: the soft map's data, the checked raters' paint and data."""
        self._unwatch()
        self._print = self._data_print()
        soft = self.soft_layer()
        # ``set_data`` also fires after an in-place edit + ``layer.refresh()`` (and on re-slicing: the docks
        # compare a checksum of the data before recomputing anything)
        if soft is not None:
            soft.events.data.connect(self._on_layer_edited)
            soft.events.set_data.connect(self._on_layer_edited)
            self._watched.append(soft)
        for layer in self.rater_layers():
            layer.events.data.connect(self._on_layer_edited)
            layer.events.set_data.connect(self._on_layer_edited)
            layer.events.paint.connect(self._on_layer_edited)
            self._watched.append(layer)

    def _unwatch(self) -> None:
        for layer in self._watched:
            layer.events.data.disconnect(self._on_layer_edited)
            layer.events.set_data.disconnect(self._on_layer_edited)
            if isinstance(layer, Labels):
                layer.events.paint.disconnect(self._on_layer_edited)
        self._watched = []

    def _on_layer_edited(self, event=None) -> None:
        self._edited_later()

    @property
    def data_print(self) -> tuple:
        """The chosen layers' data identity and checksums as of the last reported change."""
        return self._print

    def _data_print(self) -> tuple:
        """What the chosen layers hold: each array's identity and CRC-32 (an in-place edit changes it)."""
        import zlib

        out = []
        for layer in [self.soft_layer(), *self.rater_layers()]:
            if layer is None:
                continue
            data = layer.data
            try:
                a = np.ascontiguousarray(data)
                out.append((id(data), zlib.crc32(memoryview(a).cast("B")) if a.size else 0))
            except (TypeError, ValueError):   # not an in-memory array: identity only
                out.append((id(data), None))
        return tuple(out)

    def _emit_edited(self) -> None:
        try:
            new = self._data_print()
            if new == self._print:       # re-slicing, or an edit that changed nothing
                return
            self._print = new
            self.edited.emit()
        except RuntimeError:     # the widget was deleted while the timer ran
            pass

    def disconnect_viewer(self) -> None:
        """Stop following the viewer's layer list and the chosen layers' edits."""
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                        self.viewer.layers.events.reordered):
            emitter.disconnect(self._on_layers_changed)
        self._unwatch()


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unwrapped(obj):
    """The napari object behind the ``PublicOnlyProxy`` napari hands to plugin docks (else ``obj``)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same layer (proxies of it included); ``None`` is no layer."""
    return a is not None and b is not None and unwrapped(a) is unwrapped(b)


def analysis_session(viewer) -> AnalysisSession:
    """The :class:`~napari_softseg.analysis.session.AnalysisSession` of ``viewer`` (made on first use).

    Every dock of one viewer gets the same session, whether napari passed it the viewer or a proxy of it.
    """
    key = unwrapped(viewer)
    if key not in _SESSIONS:
        _SESSIONS[key] = AnalysisSession()
    return _SESSIONS[key]


def connect_while_alive(widget: QObject, signal, slot) -> None:
    """Connect a psygnal ``signal`` of the session to ``slot`` until ``widget`` is destroyed."""
    signal.connect(slot)
    widget.destroyed.connect(lambda *_: signal.disconnect(slot))


class _VerticalScrollArea(QScrollArea):
    """Scrolls vertically; as wide as its content wants (a dock never clips the content's right side)."""

    def _extra(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        inner = self.widget().minimumSizeHint() if self.widget() is not None else QSize(0, 0)
        return QSize(inner.width() + self._extra(), 120)

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint() if self.widget() is not None else QSize(0, 0)
        return QSize(inner.width() + self._extra(), inner.height())


def relax_combos(root: QWidget, min_chars: int = 10) -> None:
    """Let every combo box under ``root`` shrink below its longest entry (elided), so no dock is forced
    wider than its column; the full text stays in the drop-down list and the tooltip."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(min_chars)


def scroll_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a frameless vertical scroll area and return the layout to fill inside it."""
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _VerticalScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    content = QWidget()
    area.setWidget(content)
    outer.addWidget(area)
    return QVBoxLayout(content)


class ReferencePicker:
    """The reference box and its "k of n" spin box, shared by the Threshold explorer and Rater comparison.

    Entries: the consensus at k of n raters, each rater and the soft label (in an order the dock picks),
    and the expected precision/recall of the calibrated map, which needs no annotation.

    Args:
        on_changed: Called when the user picks another reference or k.
        soft_first: List the soft label before the raters (else after them).
    """

    def __init__(self, on_changed, *, soft_first: bool = False):
        from qtpy.QtWidgets import QComboBox, QSpinBox

        self.combo = QComboBox()
        self.combo.setToolTip("What the soft map is compared with")
        self.k_spin = QSpinBox()

        self.k_spin.setPrefix("k = ")
        self.k_spin.setToolTip(f"Consensus: voxels marked by at least k of the raters (default: {RULE_DETAIL})")
        self.k_spin.setSuffix(" of 10")
        # wide enough for "k = 10 of 10" plus the arrows, whatever the style (never "k = :")
        self.k_spin.setMinimumWidth(self.k_spin.fontMetrics().horizontalAdvance("k = 10 of 10") + 36)
        self.entries: list = []
        self.n_raters = 0
        self.soft_first = soft_first
        self.combo.currentIndexChanged.connect(on_changed)
        self.k_spin.valueChanged.connect(self._describe_consensus)
        self.k_spin.valueChanged.connect(on_changed)

    def _describe_consensus(self, *args) -> None:
        """The consensus entry names the rule and the current k (e.g. "consensus: at least half … (2 of 4)")."""

        for i, ref in enumerate(self.entries):
            if ref.kind == "consensus" and self.n_raters:
                self.combo.setItemText(i, describe(self.n_raters, self.k_spin.value()))

    def fill(self, session, previous=None, previous_n: int | None = None) -> None:
        """List the references of ``session``; keep ``previous`` if the number of raters is unchanged."""

        n = session.n_raters
        entries = []
        if n:
            raters = [Reference("rater", rater=i) for i in range(n)]
            soft = [Reference("soft")]
            entries = [Reference("consensus", k=default_k(n))] + (soft + raters if self.soft_first else raters + soft)
        entries.append(Reference("expected"))
        self.entries = entries
        self.n_raters = n
        with _signals_blocked(self.combo, self.k_spin):
            self.combo.clear()
            self.combo.addItems([session.describe_reference(r) for r in entries])
            self.k_spin.setRange(1, max(n, 1))
            self.k_spin.setSuffix(f" of {n}")
            self.k_spin.setValue(default_k(n) if n else 1)
            if previous is not None and previous_n == n:
                index = self.index_of(previous)
                if index is not None:
                    self.combo.setCurrentIndex(index)
                    if previous.kind == "consensus":
                        self.k_spin.setValue(previous.k)
        self._describe_consensus()

    def clear(self) -> None:
        """No references (no soft map)."""
        self.entries = []
        self.combo.clear()

    def index_of(self, reference) -> int | None:
        """Position of ``reference``'s kind (and rater) in the box, or None."""
        return next(
            (i for i, ref in enumerate(self.entries)
             if ref.kind == reference.kind and (ref.kind != "rater" or ref.rater == reference.rater)),
            None,
        )

    def current(self):
        """The chosen reference (with the spin box's k for a consensus), or None."""

        i = self.combo.currentIndex()
        if not 0 <= i < len(self.entries):
            return None
        ref = self.entries[i]
        return Reference("consensus", k=self.k_spin.value()) if ref.kind == "consensus" else ref

    def set_enabled(self, enabled: bool) -> None:
        """Enable the box (and the k spin box, which applies to a consensus only)."""
        ref = self.current()
        self.combo.setEnabled(enabled)
        self.k_spin.setEnabled(enabled and ref is not None and ref.kind == "consensus")

    def select(self, reference) -> bool:
        """Choose ``reference``; returns True if the box moved (its change signal then fired).

        Raises:
            SoftsegError: The reference is not among the entries.
        """

        index = self.index_of(reference)
        if index is None:
            raise SoftsegError(f"reference '{reference.describe()}' is not available for these layers")
        if reference.kind == "consensus":
            with _signals_blocked(self.k_spin):
                self.k_spin.setValue(reference.k)
            self._describe_consensus()
        if index == self.combo.currentIndex():
            return False
        self.combo.setCurrentIndex(index)
        return True


class _signals_blocked:
    """Block the Qt signals of some widgets inside a ``with`` block."""

    def __init__(self, *widgets):
        self.widgets = widgets

    def __enter__(self):
        for w in self.widgets:
            w.blockSignals(True)

    def __exit__(self, *exc):
        for w in self.widgets:
            w.blockSignals(False)
