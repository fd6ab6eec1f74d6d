"""Shared test data for the analysis docks (threshold explorer, rater comparison, calibration).

A synthetic 3D phantom with four raters, put into a viewer the way the reader does it (display order,
scanner affine, ``metadata["softseg"]`` kinds), plus a noisy soft map built from the raters.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_softseg._napari.layers import Geometry, add_layer_tuples, rater_layers, soft_map_layer
from napari_softseg.datasets.synthetic import make_phantom

SHAPE = (40, 36, 12)        # core (X, Y, Z)
SPACING = (0.8, 0.8, 2.5)


def make_case(seed: int = 3):
    """``(soft, masks, geometry)`` in core order: soft float32 (X, Y, Z), masks uint8 (R, X, Y, Z)."""
    _, masks, affine = make_phantom(SHAPE, n_raters=4, seed=seed, spacing=SPACING)
    rng = np.random.default_rng(seed)
    soft = masks.mean(0) + rng.normal(0.0, 0.15, SHAPE) * (rng.random(SHAPE) < 0.5)
    return np.clip(soft, 0, 1).astype(np.float32), masks, Geometry(affine, SHAPE)


def open_case(viewer, seed: int = 3):
    """Add the case to ``viewer`` like the reader; returns ``(soft_layer, rater_layers, soft, masks)``.

    ``soft`` and ``masks`` are the display-order arrays the layers hold.
    """
    soft, masks, geometry = make_case(seed)
    raters = add_layer_tuples(viewer, rater_layers(masks, [f"rater {i + 1}" for i in range(len(masks))], geometry))
    (soft_layer,) = add_layer_tuples(viewer, [soft_map_layer(soft, geometry, name="prediction")])
    shown_masks = np.stack([np.asarray(layer.data) for layer in raters])
    return soft_layer, raters, np.asarray(soft_layer.data), shown_masks


def boundary(mask):
    """Inner 4-connected boundary of a 2D mask (independent of the package's implementation)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def counts(mask, ref):
    """TP, FP, FN, TN of a mask against a binary or soft reference."""
    ref = np.asarray(ref, dtype=np.float64)
    tp = ref[mask].sum()
    fp = mask.sum() - tp
    fn = ref.sum() - tp
    return tp, fp, fn, mask.size - mask.sum() - fn


class Notifications:
    """Collects napari notifications (severity, message) while a test runs."""

    def __init__(self):
        from napari.utils.notifications import notification_manager

        self.manager = notification_manager
        self.items: list[tuple[str, str]] = []
        notification_manager.notification_ready.connect(self._on)

    def _on(self, notification):
        self.items.append((str(notification.severity), str(notification.message)))

    def close(self):
        self.manager.notification_ready.disconnect(self._on)

    def messages(self, severity: str | None = None) -> list[str]:
        return [m for s, m in self.items if severity is None or s == severity]


def wait_ready(qtbot, widget, timeout: int = 20000):
    """Wait until a dock's background computations (PR curves, tables, maps) have delivered their results."""
    qtbot.waitUntil(lambda: widget.ready, timeout=timeout)


PLUGIN = "napari-softseg"


def open_dock(viewer, name: str):
    """Open a dock the way napari does — through the manifest, handed a ``PublicOnlyProxy`` of the viewer.

    Returns the dock's widget (the real widget; the viewer and layers it sees are napari's proxies).
    """
    from conftest import init_napari_plugins

    init_napari_plugins()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    from napari.utils._proxies import PublicOnlyProxy

    assert isinstance(widget.viewer, PublicOnlyProxy), "napari did not hand the dock a proxy"
    return widget


def real(layer):
    """The layer behind a dock's proxy (tests may look at private slicing state; docks may not)."""
    return getattr(layer, "__wrapped__", layer)


def case_with_dock(make_napari_viewer, qtbot, name: str, seed: int = 3):
    """A new viewer with the test case and the dock ``name`` opened the napari way, its first results in.

    Returns ``(widget, viewer, soft_layer, soft, masks)``.
    """
    viewer = make_napari_viewer()
    soft_layer, _, soft, masks = open_case(viewer, seed)
    widget = open_dock(viewer, name)
    wait_ready(qtbot, widget)
    return widget, viewer, soft_layer, soft, masks


def laid_out(window, size, frame) -> bool:
    """The main window has ``size``, the dock column its width for it, and ``frame``'s dock is shown and laid
    out (its scroll area's content as wide as the viewport)."""
    from napari_softseg._qt.dock_column import column_width

    widget = frame.widget()
    area = getattr(widget, "scroll_area", None)
    return (
        (window.width(), window.height()) == tuple(size)
        and abs(frame.width() - max(column_width(size[0]), frame.minimumSizeHint().width())) <= 2
        and widget.isVisible() and not widget.visibleRegion().isEmpty()
        and (area is None or area.widget().width() == area.viewport().width())
    )
