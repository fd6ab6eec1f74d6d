"""The canvas side of the threshold explorer: the layers that draw ``p >= t`` over the scan (Qt-free).

:class:`ThresholdOverlay` owns the helper layers the Threshold explorer dock adds to the viewer and keeps
them in step with the threshold, the overlay mode and the 2D/3D switch; the dock only drives it (its
widgets set :attr:`ThresholdOverlay.mode`, :attr:`~ThresholdOverlay.bands` and the threshold, and call
:meth:`~ThresholdOverlay.update` per slider move). What it draws:

* **p ≥ t as a crisp cyan outline** — an Image layer over a
  :class:`~napari_softseg.analysis.display.ContourView` on a grid up to 4× finer than the soft map
  (:func:`outline_factor`): napari asks it for the displayed slice only, so a move outlines one slice;
* optionally a **fill** — a second Image layer over the *same* soft-map array (no copy) through a
  two-colour colormap whose switch point is the threshold, so the renderer applies it;
* optional thin white **confidence bands** (iso-lines at :data:`BAND_LEVELS`,
  :class:`~napari_softseg.analysis.display.BandsView`);
* in **3D**, p ≥ t as a **smooth shaded surface** of ``p = t``: a napari ``Surface`` layer (``shading="smooth"``,
  napari's light follows the camera) of the sub-voxel marching-cubes mesh
  (:func:`~napari_softseg.analysis.surface.iso_surface`), built off the GUI thread by the dock
  (:meth:`ThresholdOverlay.mesh_source` → :func:`build_mesh` → :meth:`ThresholdOverlay.show_mesh`) once the
  slider rests. While the slider moves, the mesh of the last threshold stays and the canvas legend says so
  ("surface of p ≥ 0.4, updating to p ≥ 0.45"). Until the first mesh is in, nothing of p ≥ t is drawn and
  the legend says the surface is being built: an iso-surface volume (``rendering="iso"``) shown meanwhile
  was the slowest thing to draw under software OpenGL (a whole head's first 3D frame with it took ~2 s
  beside the mesh build, without it ~0.3 s) and made the first mesh arrive twice as late. The iso volume
  is kept only for a soft map that cannot be meshed (strided like a big scan, :func:`display_stride`). The
  first mesh's layer is added hidden and shown on the next turn; the mesh, always of the full-resolution
  soft map, is hidden in 2D, not removed (napari collects garbage after every removal: 0.2 s with a big
  case and torch loaded), and shown again at once in 3D at an unchanged threshold. What 3D does to the
  user's layers (raters and soft maps off, the scan as faint context or its strided stand-in) is
  :class:`~napari_softseg._napari.layout_3d.Layout3D`'s;
* one line of **canvas legend** (napari's text overlay) naming what the outline shows, and the chosen soft
  map's colour bar as the only colour bar.

:func:`apply_role` lays the canvas out for a clinician (raters hidden) or an annotator (raters as
coloured one-voxel outlines).
"""

from __future__ import annotations

import contextlib

import numpy as np
from napari.utils.transforms import Affine

from napari_softseg._napari import layers as softseg_layers
from napari_softseg._napari.layer_roles import HELPER_KEY, in_viewer, same_layer, soft_map_candidates
from napari_softseg._napari.layers import layer_type
from napari_softseg._napari.layout_3d import Layout3D, display_stride, strided
from napari_softseg._napari.mesh_source import MeshSource, mesh_source_of, surface_layer_data
from napari_softseg._napari.overlay_style import (
    BAND_COLOR,
    BAND_LEVELS,
    COLORBAR_POSITION,
    FILL_COLOR,
    FILL_OPACITY,
    LEGEND_PREFIX,
    OUTLINE_COLOR,
    SURFACE_COLOR,
    legend_text,
    mesh_colormap,
    solid_colormap,
    step_colormap,
)
from napari_softseg.analysis.display import (
    BandsView,
    ContourView,
    overlay_contrast_limits,
    upsampled_affine,
)
from napari_softseg.analysis.surface import Mesh

OVERLAY_MODES = ("outline", "outline + light fill", "filled", "none")
DEFAULT_OVERLAY = "outline"
#: The outline is drawn on a grid this many times finer than the soft map (in-plane), at most
#: :data:`OUTLINE_MAX_SIDE` pixels a side: a line of 1/f voxel, thin and crisp at any zoom.
OUTLINE_UPSAMPLE = 4
OUTLINE_MAX_SIDE = 800
def outline_factor(shape) -> int:
    """Upsampling factor of the outline grid for a soft map of ``shape`` (1 … :data:`OUTLINE_UPSAMPLE`)."""
    side = max(shape[-2:]) if len(shape) >= 2 else 1
    return int(max(1, min(OUTLINE_UPSAMPLE, OUTLINE_MAX_SIDE // max(side, 1))))


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


class ThresholdOverlay:
    """The helper layers that show ``p >= threshold`` of one soft-map layer on a viewer's canvas.

    Args:
        viewer: The napari viewer (or the ``PublicOnlyProxy`` napari hands to docks).

    Attributes:
        source: The soft-map layer drawn (None: nothing is drawn).
        mode: One of :data:`OVERLAY_MODES` (the 2D look; 3D always shows a surface unless ``"none"``).
        bands: Whether the confidence bands are shown (2D).
        threshold: The threshold drawn.
    """

    def __init__(self, viewer):
        self.viewer = viewer
        self.source = None
        self.mode = DEFAULT_OVERLAY
        self.bands = False
        self.threshold = 0.5
        self.fill_layer = None
        self.contour_layer = None
        self.bands_layer = None
        self.surface_layer = None
        self.mesh_layer = None             # the shaded Surface of p = mesh_level (3D)
        self.mesh_level: float | None = None
        self.contour_view: ContourView | None = None
        self.bands_view: BandsView | None = None
        self.layout_3d = Layout3D(viewer)  # what 3D does to the user's layers, and undoes in 2D
        self._mesh_empty = False           # the mesh of mesh_level has no faces (nothing at or above it)
        self._revealing = False            # the first mesh was added hidden; shown on a later turn

    # -- what is drawn -------------------------------------------------------------------------------
    @property
    def shown_mode(self) -> str:
        """The overlay drawn: :attr:`mode` in 2D; ``"surface"`` in 3D (``"none"`` stays none)."""
        return "surface" if self.viewer.dims.ndisplay == 3 and self.mode != "none" else self.mode

    def alive(self, layer) -> bool:
        """Whether ``layer`` is (still) one of the viewer's layers."""
        return in_viewer(self.viewer, layer)

    def shows(self, data) -> bool:
        """Whether the existing overlay layers show ``data`` (not an array the soft map had before)."""
        views = [v for v in (self.contour_view, self.bands_view) if v is not None]
        return (all(v.data is data for v in views)
                and (not self.alive(self.fill_layer) or self.fill_layer.data is data))

    def set_source(self, layer, data, *, force: bool = False) -> None:
        """Draw ``layer`` (whose array is ``data``); overlays of another layer or array are removed first."""
        if force or not same_layer(layer, self.source) or not self.shows(data):
            self.remove()
            self.source = layer

    def clear(self) -> None:
        """Draw nothing: remove the overlay layers (and the scans' 3D stand-ins) and forget the soft map."""
        self.remove()
        self.layout_3d.remove_stand_ins()
        self.source = None
        self.update_legend()

    # -- per move ------------------------------------------------------------------------------------
    def update(self, t: float) -> bool:
        """Show ``p >= t`` in the current mode (no full-volume work).

        Returns:
            Whether layer thumbnails are now stale (refresh them with :meth:`refresh_thumbnails` once
            the slider rests: the layer list repaints a thumbnail in several ms).
        """
        self.threshold = t
        mode = self.shown_mode
        if mode == "surface":
            if self.alive(self.surface_layer):
                self.surface_layer.iso_threshold = t
            self._swap_mesh()
            return False
        if mode in FILL_OPACITY and self.alive(self.fill_layer):
            with self.fill_layer.events.thumbnail.blocker():
                self.fill_layer.contrast_limits = overlay_contrast_limits(t)
        if mode.startswith("outline") and self.alive(self.contour_layer):
            self.contour_view.threshold = t
            self.contour_view.same_data = True           # only the threshold changed: reuse the plane
            try:
                # the refresh's set_data, re-emitted by the layer list, makes its Qt model repaint the row
                # (nothing shown there changed: the thumbnail waits for the slider to rest)
                with self.viewer.layers.events.blocker():
                    self.contour_layer.refresh(thumbnail=False, highlight=False, extent=False)
            finally:
                self.contour_view.same_data = False
        return mode != "none"

    def refresh_thumbnails(self) -> None:
        """Repaint the thumbnails of the visible fill and outline layers."""
        for layer in (self.fill_layer, self.contour_layer):
            if self.alive(layer) and layer.visible:
                layer.refresh(data_displayed=False, highlight=False, extent=False)

    def update_legend(self, t: float | None = None) -> None:
        """The canvas' one line of legend next to the colour bar: what the outline (or surface) shows."""
        overlay = self.viewer.text_overlay
        mode = self.shown_mode
        if self.source is None or mode == "none":
            if overlay.visible and overlay.text.startswith(LEGEND_PREFIX):
                overlay.visible = False
            return
        t = self.threshold if t is None else t
        stale_level = self.mesh_level if mode == "surface" and self.mesh_is_stale else None
        overlay.text = legend_text(mode, t, bands=self.bands, stale_level=stale_level,
                                   building=mode == "surface" and self.building_first_mesh)
        if not overlay.visible:
            overlay.position = "top_left"
            overlay.font_size = 11
            overlay.color = OUTLINE_COLOR
            overlay.visible = True

    # -- the layers ------------------------------------------------------------------------------------
    def _transform(self) -> dict:
        source = self.source
        return dict(affine=source.affine.affine_matrix, scale=source.scale, translate=source.translate,
                    rotate=source.rotate, shear=source.shear)

    def _fine_transform(self, factor: int) -> dict:
        """Placement of a ``factor``-times finer outline grid on the soft map (same world position)."""
        source = self.source
        data_to_physical = Affine(scale=source.scale, translate=source.translate, rotate=source.rotate,
                                  shear=source.shear).affine_matrix
        full = np.asarray(source.affine.affine_matrix) @ data_to_physical @ upsampled_affine(factor, source.ndim)
        return dict(affine=full)

    def ensure(self) -> None:
        """Add the layers the current mode needs (once) and show only those; keeps the user's selection."""
        mode = self.shown_mode
        source = self.source
        if source is None:
            self.set_visibility()
            return
        if self.viewer.dims.ndisplay == 3:
            for add in self._enter_3d():   # a soft map chosen (or read) while the view is 3D: the 3D layout too
                add()
        active = self.viewer.layers.selection.active
        transform = self._transform()
        factor = outline_factor(source.data.shape)
        if self.bands and not self.alive(self.bands_layer):
            self.bands_view = BandsView(source.data, BAND_LEVELS, outline_volumes=False, upsample=factor)
            self.bands_layer = self.viewer.add_image(
                self.bands_view, name=f"{source.name} bands " + "/".join(f"{b:g}" for b in BAND_LEVELS),
                colormap=solid_colormap("softseg bands", BAND_COLOR), contrast_limits=(0.0, 1.0),
                interpolation2d="nearest", opacity=0.6, blending="translucent",
                metadata={HELPER_KEY: "confidence bands"}, **self._fine_transform(factor),
            )
        if mode in FILL_OPACITY and not self.alive(self.fill_layer):
            lo, hi = overlay_contrast_limits(self.threshold)
            self.fill_layer = self.viewer.add_image(
                source.data, name=f"{source.name} p ≥ t fill", colormap=step_colormap("softseg threshold", FILL_COLOR),
                contrast_limits=(lo, hi), opacity=FILL_OPACITY[mode], blending="translucent",
                metadata={HELPER_KEY: "threshold fill"}, **transform,
            )
            self.fill_layer.contrast_limits_range = (-1.0, 2.0)
        if self.alive(self.fill_layer) and mode in FILL_OPACITY:
            self.fill_layer.opacity = FILL_OPACITY[mode]
        if mode.startswith("outline") and not self.alive(self.contour_layer):
            self.contour_view = ContourView(source.data, self.threshold, outline_volumes=False, upsample=factor)
            self.contour_layer = self.viewer.add_image(
                self.contour_view, name=f"{source.name} p ≥ t outline",
                colormap=solid_colormap("softseg outline", OUTLINE_COLOR), contrast_limits=(0.0, 1.0),
                interpolation2d="nearest", opacity=1.0, blending="translucent",
                metadata={HELPER_KEY: "threshold outline"}, **self._fine_transform(factor),
            )
        if mode == "surface" and not self.alive(self.surface_layer) and self.mesh_source() is None:
            stride = display_stride(source.data.shape)
            self.surface_layer = self.viewer.add_image(
                strided(source.data, stride), name=f"{source.name} p ≥ t surface", rendering="iso",
                iso_threshold=self.threshold,
                colormap=solid_colormap("softseg surface", SURFACE_COLOR), contrast_limits=(0.0, 1.0),
                # no depth: the iso volume must not hide a mesh it lies on
                blending="translucent_no_depth", metadata={HELPER_KEY: "threshold surface"},
                **{**transform, "scale": np.asarray(source.scale) * stride},
            )
        if active is not None and self.alive(active):
            self.viewer.layers.selection.active = active    # keep the user's selection
        self.set_visibility()

    # -- the shaded mesh (3D) ------------------------------------------------------------------------------
    @property
    def needs_mesh(self) -> bool:
        """Whether the 3D view waits for a mesh of the current threshold (build it with :func:`build_mesh`)."""
        return self.shown_mode == "surface" and self.source is not None and self.mesh_level != self.threshold

    @property
    def building_first_mesh(self) -> bool:
        """Whether the 3D view waits for its first mesh of this soft map (nothing of p ≥ t is drawn yet)."""
        return (self.shown_mode == "surface" and not self._mesh_empty and self.mesh_source() is not None
                and not (self.alive(self.mesh_layer) and self.mesh_layer.visible)
                and not (self.alive(self.surface_layer) and self.surface_layer.visible))

    @property
    def shows_mesh(self) -> bool:
        """Whether the shaded mesh of the current threshold is what the 3D view shows."""
        return (self.shown_mode == "surface" and self.alive(self.mesh_layer) and self.mesh_layer.visible
                and self.mesh_level == self.threshold and not self._mesh_empty)

    def mesh_source(self) -> MeshSource | None:
        """What to mesh for the current soft map (None: no soft map, not 3D data, or not in 3D)."""
        return mesh_source_of(self.source) if self.shown_mode == "surface" else None

    def show_mesh(self, mesh: Mesh, source: MeshSource, later=None) -> bool:
        """Swap in ``mesh`` (from :func:`build_mesh` of ``source``) if it is still wanted; returns whether it is.

        A mesh of another threshold or soft map, or one arriving after leaving 3D, is dropped. An empty mesh
        (nothing at or above ``t``) hides the surface.

        Args:
            later: Optional ``later(fn)`` that calls ``fn`` on a later turn of the event loop. The first mesh's
                Surface layer is then added hidden and shown on that turn: adding it (napari's layer, its
                controls, vispy's normals) and its first frame (uploading ~50 MB of vertex arrays) were one
                stall of a second under software OpenGL on a whole head.
        """
        if (self.shown_mode != "surface" or mesh.level != self.threshold or self.source is None
                or source.data is not self.source.data):
            return False
        self.mesh_level = mesh.level
        self._mesh_empty = mesh.is_empty
        if mesh.is_empty:
            self._swap_mesh()
            self.update_legend()
            return True
        data, affine = surface_layer_data(mesh, source)
        if self.alive(self.mesh_layer):
            self.mesh_layer.data = data
            self.mesh_layer.affine = affine
        else:
            active = self.viewer.layers.selection.active
            self.mesh_layer = self.viewer.add_surface(
                data, name=f"{self.source.name} p = t surface", affine=affine, shading="smooth",
                colormap=mesh_colormap(),
                contrast_limits=(0.0, 1.0), blending="translucent", metadata={HELPER_KEY: "threshold surface mesh"},
                visible=later is None,
            )
            if active is not None and self.alive(active):
                self.viewer.layers.selection.active = active
            if later is not None:
                self._revealing = True
                later(self._reveal_mesh)
        self._swap_mesh()
        self.update_legend()
        return True

    def _reveal_mesh(self) -> None:
        """Show the first mesh, added hidden on an earlier turn (:meth:`show_mesh`)."""
        self._revealing = False
        self._swap_mesh()
        self.update_legend()

    def _swap_mesh(self) -> None:
        """In 3D: the mesh — of the current threshold, or while the slider moves the last one built (the new
        one is swapped in when it rests); the iso volume (only made for a soft map that cannot be meshed)
        otherwise.

        Under software OpenGL the iso volume is not fast: ray-casting it takes 0.55 s of a 0.83 s frame of
        a 512 × 512 × 300 map, so dragging over it cost 2.5× a repaint of the mesh. It is hidden, not made
        transparent (a transparent volume is still ray-cast every frame), whenever a mesh is shown.
        """
        surface = self.shown_mode == "surface"
        mesh = (surface and self.mesh_level is not None and not self._mesh_empty and self.alive(self.mesh_layer)
                and not self._revealing)
        if self.alive(self.mesh_layer) and self.mesh_layer.visible != mesh:
            self.mesh_layer.visible = mesh
        if self.alive(self.surface_layer) and self.surface_layer.visible != (surface and not mesh):
            self.surface_layer.visible = surface and not mesh

    @property
    def mesh_is_stale(self) -> bool:
        """Whether the 3D view shows the mesh of an earlier threshold (the slider moved; a new one is built)."""
        return (self.shown_mode == "surface" and self.alive(self.mesh_layer) and self.mesh_layer.visible
                and self.mesh_level != self.threshold)

    def forget_mesh(self) -> None:
        """The soft map was edited in place: the mesh no longer shows it (rebuilt when :attr:`needs_mesh`)."""
        self.mesh_level = None
        self._swap_mesh()

    def remove_mesh(self) -> None:
        """Remove the shaded mesh (overlay mode "none", or a new soft map; leaving 3D only hides it)."""
        if self.alive(self.mesh_layer):
            self.viewer.layers.remove(self.mesh_layer)
        self.mesh_layer = None
        self.mesh_level = None
        self._mesh_empty = False
        self._revealing = False

    def set_visibility(self) -> None:
        """Show the overlay layers of the current mode, hide the others."""
        mode = self.shown_mode
        two_d = self.viewer.dims.ndisplay == 2
        for layer, shown in ((self.fill_layer, mode in FILL_OPACITY), (self.contour_layer, mode.startswith("outline")),
                             (self.bands_layer, two_d and self.bands),
                             (self.surface_layer, mode == "surface" and not self.shows_mesh)):
            if self.alive(layer) and layer.visible != shown:
                layer.visible = shown
        if mode == "none":
            self.remove_mesh()
        else:
            self._swap_mesh()                # 2D: the mesh is hidden (kept for the next 3D view)

    def remove(self) -> None:
        """Remove the overlay layers from the viewer (in one batch: napari collects garbage after each removal,
        and after every batch, so nothing to remove is no batch: a full collection took 0.2 s with torch loaded)."""
        others = [layer for layer in (self.fill_layer, self.contour_layer, self.bands_layer, self.surface_layer)
                  if self.alive(layer)]
        batched = getattr(self.viewer.layers, "batched_update", None)
        several = len(others) + self.alive(self.mesh_layer) > 1
        with batched() if batched is not None and several else contextlib.nullcontext():
            self.remove_mesh()
            for layer in others:
                self.viewer.layers.remove(layer)
        self.fill_layer = self.contour_layer = self.bands_layer = self.surface_layer = None
        self.contour_view = self.bands_view = None

    def forget(self, layer) -> None:
        """``layer`` was removed from the viewer (by the user or the dock): stop referring to it."""
        if same_layer(layer, self.fill_layer):
            self.fill_layer = None
        elif same_layer(layer, self.contour_layer):
            self.contour_layer = self.contour_view = None
        elif same_layer(layer, self.bands_layer):
            self.bands_layer = self.bands_view = None
        elif same_layer(layer, self.surface_layer):
            self.surface_layer = None
        elif same_layer(layer, self.mesh_layer):
            self.mesh_layer = self.mesh_level = None
        else:
            self.layout_3d.forget(layer)

    def show_colorbar(self) -> None:
        """One colour bar: the drawn soft map's (the legend of its heat colours), in 2D, in the canvas's
        bottom-right corner (at the top right, the legend line along the top ran under it in a narrow canvas,
        e.g. the demo's 1280 × 1024 window); a position the user picks later is kept."""
        for layer in soft_map_candidates(self.viewer):
            shown = same_layer(layer, self.source) and self.viewer.dims.ndisplay == 2 and layer.visible
            try:
                if layer.colorbar.visible != shown:
                    if shown:
                        layer.colorbar.position = COLORBAR_POSITION
                    layer.colorbar.visible = shown
            except AttributeError:       # napari without layer colour bars
                return

    # -- 2D / 3D ---------------------------------------------------------------------------------------
    def on_ndisplay(self, later=None) -> None:
        """2D ↔ 3D: in 3D p ≥ t is a shaded surface, the scan a faint volume, raters and heat map off.

        Args:
            later: Optional ``later(fn)`` that calls ``fn`` on a later turn of the event loop (the dock passes
                a zero-delay timer). The layers that leave the view are hidden at once, and the new helper
                layers (each ~0.2-0.3 s of napari's layer controls and canvas work) are added one per turn, so
                the GUI is never blocked for their sum; back in 2D the layers 3D changed are restored one per
                turn too. Without it, all happens now.
        """
        mode = self.viewer.dims.ndisplay
        # a mesh kept from an earlier 3D view is shown on a later turn too (its first frame uploads it again)
        reveal = (mode == 3 and later is not None and self.source is not None and self.alive(self.mesh_layer)
                  and self.mesh_level is not None and not self._mesh_empty)
        self._revealing = self._revealing or reveal
        adds = self._enter_3d() if mode == 3 else self._leave_3d()
        if reveal:
            adds.append(self._reveal_mesh)

        def finish() -> None:
            self._revealing = False          # shown now at the latest (its turn is skipped if 3D was left)
            self.layout_3d.flush()
            self.ensure()
            self.show_colorbar()
            self.update(self.threshold)
            self.update_legend()

        if later is None:
            for add in adds:
                add()
            finish()
            return
        pending = [*adds, finish]

        def run() -> None:
            step = pending.pop(0)
            try:
                if step is finish or self.viewer.dims.ndisplay == mode:   # a step of a view since left: skipped
                    step()
            finally:                             # a step that failed must not leave the rest (finish) undone
                if pending:
                    later(run)

        later(run)

    def _enter_3d(self) -> list:
        """Hide what 3D does not show (now) and return the additions still to make (the scans' stand-ins)."""
        adds = self.layout_3d.enter(self.source)
        self.set_visibility()                    # the 2D helpers (outline, fill, bands) off now, not later
        return adds

    def _leave_3d(self) -> list:
        """Hide the 3D helpers (kept for the next 3D view) now; return the restores of what 3D changed."""
        self._swap_mesh()
        return self.layout_3d.leave()
