"""One analysis model per viewer: what the analysis docks are views of (Qt-free, napari-free).

The pattern is napari-animation's ``Animation``: a plain model holds the state and emits events; every
widget is a view that reads it and writes user actions back into it. Here the state is

* the **inputs**: the chosen soft map and rater layers (opaque objects to this module: the viewer's
  layers) and the :class:`~napari_softseg.analysis.operating_point.ThresholdSession` built from their
  arrays, which holds the **curve cache** (one PR curve per reference, built once and then shared by
  every dock);
* the **reference** the statistics are against;
* the **threshold** (snapped to the 0.001 grid of the curves);
* the **role** the canvas is laid out for (``"clinician"``: raters hidden; ``"annotator"``: raters as
  coloured outlines).

Events (psygnal signals, on the instance): ``selection_changed()``, ``inputs_changed()``,
``threshold_changed(float)``, ``reference_changed(object)``, ``curve_added(object)`` (a reference whose
curve was just cached) and ``role_changed(str)``.

Example:
    >>> import numpy as np
    >>> s = AnalysisSession()
    >>> seen = []
    >>> _ = s.threshold_changed.connect(seen.append)
    >>> s.threshold = 0.3474
    >>> s.threshold, seen
    (0.347, [0.347])
    >>> masks = np.zeros((2, 4, 4), np.uint8); masks[:, 1:3, 1:3] = 1
    >>> points = s.set_inputs(np.full((4, 4), 0.6, np.float32), masks, key=("p", "r1", "r2"))
    >>> s.set_inputs(np.full((4, 4), 0.6, np.float32), masks, key=("p", "r1", "r2")) is points   # reused
    True
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from psygnal import Signal

from napari_softseg.analysis.operating_point import Reference, ThresholdSession, snap

ROLES = ("clinician", "annotator")


class AnalysisSession:
    """Shared, Qt-free state of the analysis docks of one viewer (see the module docstring)."""

    selection_changed = Signal()
    inputs_changed = Signal()
    threshold_changed = Signal(float)
    reference_changed = Signal(object)
    curve_added = Signal(object)
    role_changed = Signal(str)

    def __init__(self, threshold: float = 0.5):
        self._threshold = snap(threshold)
        self._reference: Reference | None = None
        self._role = "clinician"
        self.soft_layer: Any = None
        self.rater_layers: list = []
        #: Raters the user (un)checked: ``id(layer) -> checked`` (other raters follow the docks' defaults).
        self.rater_choice: dict[int, bool] = {}
        self.points: ThresholdSession | None = None
        self._key: Hashable | None = None

    # -- selection (which layers) ------------------------------------------------------------------
    def select(self, soft_layer: Any, rater_layers: Sequence[Any]) -> None:
        """Choose the soft map and raters (the one layer choice every dock shows)."""
        rater_layers = list(rater_layers)
        if _same([soft_layer], [self.soft_layer]) and _same(rater_layers, self.rater_layers):
            return
        self.soft_layer = soft_layer
        self.rater_layers = rater_layers
        self.selection_changed.emit()

    # -- inputs (their arrays) and the curve cache -------------------------------------------------
    def set_inputs(
        self, prediction: np.ndarray, masks: np.ndarray | None, *, spacing=None,
        rater_names: Sequence[str] | None = None, key: Hashable | None = None,
    ) -> ThresholdSession:
        """The :class:`ThresholdSession` of these arrays: reused (with its curves) when ``key`` is unchanged.

        Args:
            prediction: The soft map.
            masks: Rater masks ``(R, ...)`` or ``None``.
            spacing: Voxel size in mm.
            rater_names: Names of the raters.
            key: What identifies these inputs (e.g. the layers and their data's identity); ``None``
                always builds a new session.
        """
        if key is not None and key == self._key and self.points is not None:
            return self.points
        self.points = ThresholdSession(prediction, masks, spacing=spacing, rater_names=rater_names)
        self._key = key
        self.inputs_changed.emit()
        return self.points

    def invalidate(self) -> None:
        """Forget the inputs (their data changed in place): the next :meth:`set_inputs` rebuilds."""
        self._key = None

    def clear(self) -> None:
        """No inputs (no soft map)."""
        changed = self.points is not None
        self.points = None
        self._key = None
        if changed:
            self.inputs_changed.emit()

    def curve(self, reference: Reference):
        """The cached PR curve against ``reference``, or ``None`` (not built yet, or no inputs)."""
        if self.points is None or not self.points.has_curve(reference):
            return None
        return self.points.curve_for(reference)

    def add_curve(self, points: ThresholdSession, reference: Reference, curve) -> bool:
        """Cache a curve built in the background for ``points``; False if the inputs changed meanwhile."""
        if points is not self.points:
            return False
        if not points.has_curve(reference):
            points.add_curve(reference, curve)
            self.curve_added.emit(reference)
        return True

    # -- threshold, reference, role ----------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The operating threshold on the 0.001 grid."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        t = snap(value)
        if t != self._threshold:
            self._threshold = t
            self.threshold_changed.emit(t)

    @property
    def reference(self) -> Reference | None:
        """The reference the clinician's numbers are against (``None``: the docks' default)."""
        return self._reference

    @reference.setter
    def reference(self, value: Reference | None) -> None:
        if value != self._reference:
            self._reference = value
            self.reference_changed.emit(value)

    @property
    def role(self) -> str:
        """``"clinician"`` or ``"annotator"``: how the canvas is laid out."""
        return self._role

    @role.setter
    def role(self, value: str) -> None:
        if value not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {value!r}")
        if value != self._role:
            self._role = value
            self.role_changed.emit(value)


def unwrapped(obj: Any) -> Any:
    """The object behind a transparent proxy (``__wrapped__``: the ``PublicOnlyProxy`` napari hands to
    plugin docks for the viewer and its layers), else ``obj``."""
    return getattr(obj, "__wrapped__", obj)


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    return len(a) == len(b) and all(unwrapped(x) is unwrapped(y) for x, y in zip(a, b))
