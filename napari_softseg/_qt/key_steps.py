"""Viewer keys that step a dock's value (the Threshold explorer's ``[`` / ``]``), unbound with the dock."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

from qtpy.QtWidgets import QWidget


def bind_step_keys(widget: QWidget, viewer, keys: Sequence[str], steps: Sequence[float],
                   step: Callable[[QWidget, float], None]) -> None:
    """Bind each of ``keys`` in ``viewer`` to ``step(widget, delta)`` with its delta from ``steps``.

    The bindings hold the widget and the viewer weakly and are removed when the widget is destroyed
    (a key already unbound, e.g. by another dock of the same kind, is skipped).

    Args:
        widget: The dock widget the keys act on.
        viewer: The napari viewer (or the proxy napari hands to docks).
        keys: Key names, e.g. ``("[", "]")``.
        steps: The delta of each key, e.g. ``(-0.01, 0.01)``.
        step: Called as ``step(widget, delta)`` while the widget lives.
    """
    ref = weakref.ref(widget)

    def make(delta):
        def on_key(viewer):
            target = ref()
            if target is not None:
                step(target, delta)
        return on_key

    for key, delta in zip(keys, steps, strict=True):
        viewer.bind_key(key, make(delta), overwrite=True)
    viewer_ref = weakref.ref(viewer)

    def unbind(*args):
        target_viewer = viewer_ref()
        if target_viewer is None:
            return
        for key in keys:
            try:
                target_viewer.bind_key(key, None)
            except (KeyError, ValueError):   # already unbound (e.g. by another explorer)
                pass

    widget.destroyed.connect(unbind)
