"""What the 3D view does to the user's layers, and undoes in 2D (Qt-free).

In 3D the Threshold explorer shows ``p >= t`` as a surface (:mod:`napari_softseg._napari.overlay`); around it
:class:`Layout3D` hides the raters and soft maps, turns each scan into faint context (a MIP drawn without
depth, dimmed through its contrast limits) and makes a mirrored camera right-handed. A scan bigger than
:data:`MAX_3D_VOXELS` is hidden and a strided copy of it (its *stand-in*, :func:`display_stride`) is drawn
instead: under software OpenGL uploading a 300 MB volume texture blocks the GUI thread for ~10 s, a 2 M-voxel
copy for a fraction of a second. The stand-ins are kept, hidden, in 2D (napari collects garbage after every
removal). Back in 2D everything is restored, one layer per turn of the event loop.
"""

from __future__ import annotations

import numpy as np

from napari_softseg._napari import layers as softseg_layers
from napari_softseg._napari.layer_roles import HELPER_KEY, in_viewer, is_helper, same_layer
from napari_softseg._napari.layers import layer_type
from napari_softseg._napari.overlay_style import SCAN_OPACITY_3D

#: Volumes shown in 3D as volume textures (the scan's context; the iso volume of a soft map that cannot be
#: meshed) are strided down to at most about this many voxels (:func:`display_stride`).
MAX_3D_VOXELS = 2_000_000


def display_stride(shape) -> int:
    """The step that keeps a 3D volume of ``shape`` under :data:`MAX_3D_VOXELS` voxels (1: shown as is)."""
    n = float(np.prod(shape)) if len(shape) == 3 else 0.0
    stride = 1
    while n / stride**3 > MAX_3D_VOXELS:
        stride += 1
    return stride


def strided(data, stride: int):
    """``data`` itself (stride 1) or a contiguous copy of every ``stride``-th voxel along each axis."""
    if stride == 1:
        return data
    return np.ascontiguousarray(np.asarray(data[(slice(None, None, stride),) * 3]))


class Layout3D:
    """The 3D layout of one viewer's layers: entered with :meth:`enter`, left with :meth:`leave`.

    Args:
        viewer: The napari viewer (or the ``PublicOnlyProxy`` napari hands to docks).
    """

    def __init__(self, viewer):
        self.viewer = viewer
        self._saved: list = []             # (layer, attribute, value) to restore when leaving 3D
        self._restoring: list = []         # back in 2D: what is still to restore, a list of those per layer
        self._stand_ins: list = []         # (scan, its strided stand-in in 3D, the scan array's id); hidden in 2D
        self._saved_orientation = None     # the camera orientation before a mirrored 3D view was unmirrored

    def alive(self, layer) -> bool:
        """Whether ``layer`` is (still) one of the viewer's layers."""
        return in_viewer(self.viewer, layer)

    def enter(self, source) -> list:
        """Hide what 3D does not show (now): raters, soft maps (``source``, the one drawn, too), big scans
        (their stand-ins are drawn instead); dim the other scans to faint context; make the camera
        right-handed. Returns the additions still to make (the big scans' stand-ins), one per turn."""
        self.flush()                             # back to 3D before 2D was all restored: restore it first
        if self._saved or source is None:
            return []
        self._unmirror()
        adds = []
        for layer in list(self.viewer.layers):
            if is_helper(layer):
                continue
            kind = softseg_layers.kind_of(layer)
            if layer_type(layer) == "labels" or same_layer(layer, source) or kind in ("soft_label", "prediction"):
                self._saved.append((layer, "visible", layer.visible))
                layer.visible = False
            elif layer_type(layer) == "image" and layer.visible and self._needs_stand_in(layer):
                self._saved.append((layer, "visible", True))
                layer.visible = False            # its strided stand-in is drawn instead
                adds.append(lambda layer=layer: self.show_stand_in(layer))
            elif layer_type(layer) == "image" and layer.visible:
                for attribute in ("opacity", "rendering", "blending", "contrast_limits_range", "contrast_limits"):
                    self._saved.append((layer, attribute, getattr(layer, attribute)))
                layer.rendering = "mip"
                layer.opacity = min(layer.opacity, SCAN_OPACITY_3D)
                # context only: a MIP writes the depth of its brightest voxel (skin, fat) and would hide the
                # surface; without depth it is drawn behind it. Without depth napari draws a volume at full
                # strength whatever its opacity, so the scan is dimmed through its contrast limits too.
                layer.blending = "translucent_no_depth"
                lo, hi = (float(v) for v in layer.contrast_limits)
                layer.contrast_limits = (lo, lo + (hi - lo) / SCAN_OPACITY_3D)
        return adds

    @staticmethod
    def _needs_stand_in(layer) -> bool:
        """Whether ``layer`` (a scan) is big enough to be drawn in 3D from a strided stand-in."""
        return layer.ndim == 3 and not layer.rgb and not layer.multiscale and display_stride(layer.data.shape) > 1

    def show_stand_in(self, layer) -> None:
        """Show the strided stand-in of the big scan ``layer`` in 3D: the one from an earlier 3D view, or a new one."""
        if not self.alive(layer) or self.viewer.dims.ndisplay != 3:
            return
        lo, hi = (float(v) for v in layer.contrast_limits)
        limits = (lo, lo + (hi - lo) / SCAN_OPACITY_3D)
        for scan, context, data_id in self._stand_ins:
            if same_layer(scan, layer) and self.alive(context) and data_id == id(layer.data):
                context.contrast_limits = limits
                context.visible = True
                return
        stride = display_stride(layer.data.shape)
        context = self.viewer.add_image(
            strided(layer.data, stride), name=f"{layer.name} (3D context)", rendering="mip",
            colormap=layer.colormap, contrast_limits=limits,
            opacity=min(layer.opacity, SCAN_OPACITY_3D), blending="translucent_no_depth",
            metadata={HELPER_KEY: "3D context"}, affine=layer.affine.affine_matrix,
            scale=np.asarray(layer.scale) * stride, translate=layer.translate, rotate=layer.rotate, shear=layer.shear,
        )
        self.viewer.layers.move(len(self.viewer.layers) - 1, 0)      # drawn first, behind the rest
        self._stand_ins.append((layer, context, id(layer.data)))

    def _unmirror(self) -> None:
        """Make the 3D view right-handed (a radiologist's 3D is never mirrored).

        Flipping one 2D axis (e.g. ``orientation2d = ("up", "right")``, anterior up in axial slices) makes
        napari's 3D camera left-handed: the head is drawn mirrored and the surface's light comes from behind
        it. The depth axis is flipped to undo that; the 2D orientation is kept and all is restored in 2D.
        """
        camera = self.viewer.camera
        if getattr(camera, "handedness", "right") != "left":
            return
        self._saved_orientation = tuple(camera.orientation)
        depth, vertical, horizontal = (str(getattr(a, "value", a)) for a in camera.orientation)
        camera.orientation = ("away" if depth == "towards" else "towards", vertical, horizontal)

    def leave(self) -> list:
        """Hide the stand-ins (kept for the next 3D view) and restore the camera now; return the restores of
        what 3D changed, one step per layer (napari re-slices a layer shown again and draws it: together
        they were one stall)."""
        for _, context, _ in self._stand_ins:
            if self.alive(context) and context.visible:
                context.visible = False
        if self._saved_orientation is not None:
            self.viewer.camera.orientation = self._saved_orientation
            self._saved_orientation = None
        groups: dict[int, list] = {}
        for layer, attribute, value in reversed(self._saved):
            if self.alive(layer) and not _same(getattr(layer, attribute), value):   # e.g. a hidden rater: none
                groups.setdefault(id(layer), []).append((layer, attribute, value))
        self._restoring = list(groups.values())
        self._saved = []
        return [self._restore_next] * len(self._restoring)

    def _restore_next(self) -> None:
        """Restore one layer's 2D look (:meth:`leave`)."""
        if self._restoring:
            for layer, attribute, value in self._restoring.pop(0):
                if self.alive(layer):
                    setattr(layer, attribute, value)

    def flush(self) -> None:
        """Restore now whatever :meth:`leave` left for later turns."""
        while self._restoring:
            self._restore_next()

    def forget(self, layer) -> None:
        """``layer`` was removed from the viewer: nothing of it is kept to restore (holding it would keep its
        data alive); a stand-in is forgotten; a scan's stand-in is removed too."""
        self._saved = [entry for entry in self._saved if not same_layer(entry[0], layer)]
        self._restoring = [kept for kept in ([e for e in group if not same_layer(e[0], layer)]
                                             for group in self._restoring) if kept]
        for entry in list(self._stand_ins):
            scan, context, _ = entry
            if same_layer(layer, context):
                self._stand_ins.remove(entry)
            elif same_layer(layer, scan) and self.alive(context):   # its scan is gone: so is its stand-in
                self.viewer.layers.remove(context)

    def remove_stand_ins(self) -> None:
        """Remove the scans' stand-ins from the viewer."""
        for _, context, _ in list(self._stand_ins):    # each removal calls forget(), which edits the list
            if self.alive(context):
                self.viewer.layers.remove(context)
        self._stand_ins = []

def _same(a, b) -> bool:
    """Whether a layer attribute's value ``a`` equals the saved ``b`` (tuples and arrays element-wise)."""
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return False
