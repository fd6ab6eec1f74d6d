"""How the threshold overlay looks: its colours, colormaps and the canvas legend line (Qt-free).

:class:`~napari_softseg._napari.overlay.ThresholdOverlay` draws with these; the glyph warm-up
(:mod:`napari_softseg._qt.glyphs`) renders :func:`legend_characters` before a legend first shows them.
"""

from __future__ import annotations

from napari.utils.colormaps import Colormap

from napari_softseg._napari.layers import format_threshold
from napari_softseg.analysis.display import threshold_colormap_controls
from napari_softseg.analysis.overlay_colors import BAND as HEAT_BAND

OUTLINE_COLOR = (0.0, 1.0, 1.0)     # cyan: far from grey scans and from every colour of the heat map
FILL_COLOR = (0.0, 1.0, 1.0)
FILL_OPACITY = {"outline + light fill": 0.22, "filled": 0.5}
BAND_LEVELS = (0.1, 0.5, 0.9)       # optional iso-lines of the soft map (confidence bands)
BAND_COLOR = (1.0, 1.0, 1.0)
SURFACE_COLOR = (0.0, 0.9, 1.0)
MESH_COLOR = (0.25, 0.85, 1.0)      # the shaded mesh: a light cyan that keeps its shading readable
SCAN_OPACITY_3D = 0.25              # the scan as a faint volume behind the 3D surface
LEGEND_PREFIX = "cyan "            # the canvas legend line starts so (and is recognised by it)
COLORBAR_POSITION = "bottom_right"  # the soft map's colour bar: clear of the legend line along the top


def step_colormap(name: str, rgb: tuple[float, float, float]) -> Colormap:
    """Transparent below the middle of the range, ``rgb`` from it on (no interpolation)."""
    return Colormap(
        colors=[[0.0, 0.0, 0.0, 0.0], [*rgb, 1.0]],
        controls=list(threshold_colormap_controls()),
        interpolation="zero",
        name=name,
    )


def solid_colormap(name: str, rgb: tuple[float, float, float]) -> Colormap:
    """One colour from the middle of the range on, transparent below (0/1 outline layers, 3D surface)."""
    return Colormap(colors=[[0.0, 0.0, 0.0, 0.0], [*rgb, 1.0]], controls=[0.0, 0.5, 1.0], interpolation="zero",
                    name=name)


def legend_text(mode: str, t: float, *, bands: bool = False, stale_level: float | None = None,
                building: bool = False) -> str:
    """The canvas legend line for overlay ``mode`` at threshold ``t`` (``stale_level``: the level of a 3D
    mesh still shown while the one for ``t`` is computed; ``building``: no mesh is shown yet, the first is
    being built)."""
    shape = "surface" if mode == "surface" else "outline"
    if mode == "surface" and stale_level is not None:
        shape = f"surface of p ≥ {format_threshold(stale_level)}, updating to"
    band_text = "  ·  " + bands_legend() if bands and mode != "surface" else ""
    heat = "" if mode == "surface" else "  ·  heat: uncertain {:g} < p < {:g}".format(*HEAT_BAND)
    pending = " (building the surface…)" if mode == "surface" and building and stale_level is None else ""
    return f"{LEGEND_PREFIX}{shape}: p ≥ {format_threshold(t)}{pending}{band_text}{heat}"


def legend_characters() -> str:
    """Every character a legend line can show (its glyphs are drawn the first time they appear)."""
    lines = [legend_text(mode, 0.5, bands=bands, stale_level=stale, building=building)
             for mode in ("outline", "surface") for bands in (False, True) for stale in (None, 0.25)
             for building in (False, True)]
    return "".join(sorted(set("".join(lines)) | set("0123456789.-")))


def bands_legend() -> str:
    """How the confidence bands are named in the canvas legend."""
    return "thin white: p = " + " / ".join(f"{b:g}" for b in BAND_LEVELS)


def mesh_colormap() -> Colormap:
    """The shaded mesh's one colour (napari's Surface maps its vertex values through a colormap)."""
    return Colormap(colors=[[*MESH_COLOR, 1.0], [*MESH_COLOR, 1.0]], name="softseg mesh")
