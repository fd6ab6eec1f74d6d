"""The pickers of the analysis docks: which layers they work on and what the soft map is compared with.

* :class:`LayerInputs` — pick the soft map (an Image layer with values in [0, 1]) and the rater Labels
  layers; it follows the viewer's layer list and pre-selects layers by the kind the reader records in
  ``metadata["softseg"]`` (:mod:`napari_softseg._napari.layer_roles` finds and ranks them). The choice
  is the viewer's shared one (:func:`~napari_softseg._napari.layer_roles.analysis_session`), shown by
  every dock's picker. :meth:`LayerInputs.read` returns the arrays, checked, or raises
  :class:`SoftsegError` with the reason. Edits of the chosen layers (paint strokes in a rater layer, new
  data in any of them, an in-place edit followed by ``layer.refresh()``) are reported by its ``edited``
  signal once the user pauses (:data:`EDIT_DEBOUNCE_MS`), so the docks recompute on their own instead
  of waiting for a Refresh. The rater list folds to one line.
* :class:`ReferencePicker` — the reference box and its "k of n" spin box (consensus, each rater, the
  soft label, or the expected values that need no annotation).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from napari.layers import Labels
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QListWidget,
    QListWidgetItem,
    QSpinBox,
    QWidget,
)
from superqt.utils import qdebounced

from napari_softseg._napari.layer_roles import (
    Inputs,
    analysis_session,
    arrays_print,
    default_rater_checks,
    rater_candidates,
    read_inputs,
    same_layer,
    soft_map_candidates,
    unwrapped,
)
from napari_softseg._qt.dock_layout import CollapsibleSection
from napari_softseg._qt.qt_helpers import connect_while_alive, signals_blocked
from napari_softseg.analysis.consensus import RULE_DETAIL, describe
from napari_softseg.analysis.operating_point import Reference, default_k
from napari_softseg.errors import SoftsegError

#: Quiet time (ms) after the last edit of a chosen layer (e.g. a paint stroke) before ``edited`` fires.
EDIT_DEBOUNCE_MS = 300
#: Height of the rater list when shown (about four rows; it scrolls beyond).
RATER_LIST_HEIGHT = 90
#: Checksums of newly chosen layers are taken here, off the GUI thread (CRC-32 releases the GIL: a 300 MB
#: soft map is ~0.2 s, once per dock and per new choice).
_PRINTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="softseg-print")


class LayerInputs(QWidget):
    """Soft-map combo box and a checkable list of rater layers that follow the viewer's layers.

    Signals:
        changed: The soft map or the set of checked raters changed.
        edited: The data of the chosen soft map or of a checked rater layer changed (painted or
            replaced); debounced: fires once, :data:`EDIT_DEBOUNCE_MS` after the last edit.
    """

    changed = Signal()
    edited = Signal()

    def __init__(self, viewer, parent=None, *, raters_expanded: bool = True):
        super().__init__(parent)
        self.viewer = viewer
        #: The viewer's shared analysis state: the layer choice made here is every dock's choice.
        self.session = analysis_session(viewer)
        self.soft_combo = QComboBox()
        self.soft_combo.setToolTip("Soft map to browse: a prediction or soft label (values 0–1)")
        self.rater_list = QListWidget()
        self.rater_list.setToolTip("Rater masks (Labels layers of the same shape) to compare with")
        self.rater_list.setMaximumHeight(RATER_LIST_HEIGHT)
        #: The rater list folds to one line ("raters: 4 of 5 ticked") so it never pushes a dock's controls away.
        self.raters_section = CollapsibleSection("raters", self.rater_list, expanded=raters_expanded)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("soft map", self.soft_combo)
        form.addRow(self.raters_section)
        self._layers: list = []        # soft map candidates shown in the combo
        self._raters: list = []        # rater candidates shown in the list
        # rater layer id -> checked, for layers the user (un)checked; shared by every dock of the viewer
        self._choice: dict[int, bool] = self.session.rater_choice
        self._updating = False
        self._watched: list = []       # layers whose edits are reported by ``edited``
        self._watched_ids: tuple | None = None   # which layers and arrays those are
        self._print: Future | None = None   # their data's identity and checksum when last reported
        self._view: tuple = ()         # the view (slice, 2D/3D, axis order) when the layers last re-sliced
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
        return read_inputs(self.soft_layer(), self.rater_layers())

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
        for layer, default in zip(self._raters, default_rater_checks(soft, self._raters)):
            item = QListWidgetItem(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = self._choice.get(id(unwrapped(layer)), default)
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            self.rater_list.addItem(item)
        self._title_raters()

    def _title_raters(self) -> None:
        n = len(self._raters)
        ticked = sum(self.rater_list.item(i).checkState() == Qt.CheckState.Checked for i in range(n))
        self.raters_section.set_title(f"raters: {ticked} of {n} ticked" if n else "raters: none of this shape")

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
        self._title_raters()
        self._watch()
        self._publish()
        self.changed.emit()

    def _watch(self) -> None:
        """Follow edits of the chosen layers only: the soft map's data, the checked raters' paint and data."""
        self._unwatch()
        layers = [layer for layer in (self.soft_layer(), *self.rater_layers()) if layer is not None]
        ids = tuple((id(unwrapped(layer)), id(layer.data)) for layer in layers)
        if ids != self._watched_ids or self._print is None:
            # a new choice: its baseline checksum in a thread. The same layers and arrays as before (another
            # layer added or removed, the 3D switch's helpers): the baseline stands — an edit since it fired
            # an event, and ``_emit_edited`` compares with the baseline.
            self._watched_ids = ids
            self._print = _PRINTS.submit(arrays_print, [layer.data for layer in layers])
        self._view = self._view_key()
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
        # napari fires ``set_data`` both on re-slicing (a scroll, the 3D switch) and after an in-place edit +
        # ``refresh()``: a new view is re-slicing, so the data are not checksummed again (a 300 MB map takes
        # ~0.2 s per check, on every scroll step). ``data`` and ``paint`` are edits and always checked.
        if getattr(event, "type", None) == "set_data":
            view = self._view_key()
            if view != self._view:
                self._view = view
                return
        self._edited_later()

    def _view_key(self) -> tuple:
        try:
            dims = self.viewer.dims
            return tuple(dims.current_step), dims.ndisplay, tuple(dims.order)
        except (AttributeError, RuntimeError):
            return ()

    @property
    def data_print(self) -> tuple:
        """The chosen layers' data identity and checksums as of the last reported change."""
        return () if self._print is None else self._print.result()

    def data_print_future(self) -> Future:
        """:attr:`data_print` as a future (the checksum of a new choice is taken in a thread)."""
        if self._print is None:
            self._print = Future()
            self._print.set_result(())
        return self._print

    def _data_print(self) -> tuple:
        """What the chosen layers hold: each array's identity and CRC-32 (an in-place edit changes it)."""
        return arrays_print(layer.data for layer in (self.soft_layer(), *self.rater_layers()) if layer is not None)

    def _emit_edited(self) -> None:
        try:
            new = self._data_print()
            if new == self.data_print:   # re-slicing, or an edit that changed nothing
                return
            done: Future = Future()
            done.set_result(new)
            self._print = done
            self.edited.emit()
        except RuntimeError:     # the widget was deleted while the timer ran
            pass

    def disconnect_viewer(self) -> None:
        """Stop following the viewer's layer list and the chosen layers' edits."""
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                        self.viewer.layers.events.reordered):
            emitter.disconnect(self._on_layers_changed)
        self._unwatch()


class ReferencePicker:
    """The reference box and its "k of n" spin box, shared by the Threshold explorer and Rater comparison.

    Entries: the consensus at k of n raters, each rater and the soft label (in an order the dock picks),
    and the expected precision/recall of the calibrated map, which needs no annotation.

    Args:
        on_changed: Called when the user picks another reference or k.
        soft_first: List the soft label before the raters (else after them).
    """

    def __init__(self, on_changed, *, soft_first: bool = False):
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
        with signals_blocked(self.combo, self.k_spin):
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
            with signals_blocked(self.k_spin):
                self.k_spin.setValue(reference.k)
            self._describe_consensus()
        if index == self.combo.currentIndex():
            return False
        self.combo.setCurrentIndex(index)
        return True
