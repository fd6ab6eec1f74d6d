"""The soft map's colour encoding that leaves the anatomy readable where the model is sure (Qt-free).

The heat colormap of v0.2 (:func:`previous_heat_colormap`) was most opaque where ``p`` is highest, so its
pale-yellow wash covered the white-matter texture exactly inside the structure a clinician wants to read.
The encoding soft maps use now (``napari_softseg._napari.layers.soft_map_style``) colours only the
**uncertain band**: the alpha is 0 for ``p <= low`` and ``p >= high`` (defaults 0.05 and 0.95) and rises
smoothly to ``peak_alpha`` in between (``sin(pi u)``, ``u`` the position in the band), so

* inside the confident region the scan is drawn untouched (the chosen region is shown by the threshold
  explorer's cyan outline, not by a fill);
* the band where raters and model hesitate is tinted, warmer for higher ``p``, with the same inferno hues
  as before (dark red → orange → yellow), so the colour bar reads the same way and the cyan outline
  stands out on it.

``benchmarks/bench_overlay_readability.py`` measures both on the demo case: the correlation of the canvas
luminance with the scan alone inside ``p >= 0.9`` (target ≥ 0.8) and the fraction of the scan's contrast
kept there.

The colormaps are plain ``dict`` specs napari accepts anywhere a colormap goes (``layer.colormap = spec`` or
``add_image(..., colormap=spec)``; napari builds ``Colormap(**spec)``), so this module imports neither napari
nor Qt. :func:`uncertainty_style` has the keys of ``soft_map_style()``.

Example:
    >>> spec = uncertainty_colormap()
    >>> sorted(spec)
    ['colors', 'controls', 'interpolation', 'name']
    >>> [round(float(a), 2) for a in sample(spec, [0.0, 0.05, 0.5, 0.95, 1.0])[:, 3]]
    [0.0, 0.0, 0.6, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

UNCERTAINTY_COLORMAP = "softseg heat band"
"""Name of the band colormap (napari registers colormaps by name; short: it fits the layer controls)."""

BAND = (0.05, 0.95)
"""Default band: outside it the soft map adds no colour."""

PEAK_ALPHA = 0.6
"""Default colormap alpha in the middle of the band (times the layer's opacity)."""

LAYER_OPACITY = 0.7
"""Layer opacity of a soft map (:func:`uncertainty_style`, :func:`previous_heat_style`)."""

# matplotlib's inferno at 0.25, 0.325, ..., 1.0 (the soft maps' heat hues, from its dark red on so
# no black shadow darkens the scan); p = 0, 0.1, ..., 1 are mapped to these.
_INFERNO_TAIL = np.array([
    [0.342, 0.062, 0.429], [0.460, 0.106, 0.430], [0.578, 0.148, 0.404], [0.695, 0.195, 0.354],
    [0.802, 0.259, 0.283], [0.894, 0.353, 0.194], [0.955, 0.469, 0.100], [0.985, 0.601, 0.024],
    [0.983, 0.744, 0.138], [0.953, 0.889, 0.351], [0.988, 0.998, 0.645],
])


PREVIOUS_HEAT_COLORMAP = "softseg heat (v0.2)"
"""Name of :func:`previous_heat_colormap`."""


def previous_heat_colormap() -> dict:
    """The v0.2 soft-map colormap, kept to measure against: inferno hues with an alpha rising with ``p``.

    Transparent at ``p = 0``, alpha ``0.08 + 0.5 p`` above (0.58 at ``p = 1``, times the layer opacity): a
    pale-yellow wash over the most probable voxels. Same spec format as :func:`uncertainty_colormap`.
    """
    controls = np.linspace(0.0, 1.0, len(_INFERNO_TAIL))
    alpha = np.clip(0.08 + 0.5 * controls, 0.0, 1.0)
    alpha[0] = 0.0
    return {"name": PREVIOUS_HEAT_COLORMAP, "colors": np.column_stack([_INFERNO_TAIL, alpha]).astype(np.float32),
            "controls": controls.astype(np.float32), "interpolation": "linear"}


def previous_heat_style() -> dict:
    """Layer keyword arguments of a soft map as v0.2 drew it (:func:`previous_heat_colormap`)."""
    return {"colormap": previous_heat_colormap(), "contrast_limits": (0.0, 1.0), "blending": "translucent",
            "opacity": LAYER_OPACITY}


def heat_rgb(p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The heat hues at probabilities ``p``: ``float (..., 3)`` in ``[0, 1]`` (linear in the table)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    grid = np.linspace(0.0, 1.0, len(_INFERNO_TAIL))
    return np.stack([np.interp(p, grid, _INFERNO_TAIL[:, c]) for c in range(3)], axis=-1)


def uncertainty_colormap(low: float = BAND[0], high: float = BAND[1], peak_alpha: float = PEAK_ALPHA,
                         n: int = 37) -> dict:
    """The band colormap as a napari colormap spec (control points + RGBA), transparent outside the band.

    Args:
        low: Below or at this probability: no colour.
        high: At or above this probability: no colour (the scan's texture shows untouched).
        peak_alpha: Alpha in the middle of the band, in ``(0, 1]``.
        n: Control points across the band (ends included); more gives a smoother alpha ramp.

    Returns:
        ``{"name", "colors": float32 (K, 4), "controls": float32 (K,), "interpolation": "linear"}``, controls
        strictly increasing from 0 to 1 and including ``low`` and ``high`` exactly, so the renderer's linear
        interpolation gives alpha 0 on both sides of the band.

    Raises:
        ValueError: ``0 < low < high < 1`` or ``0 < peak_alpha <= 1`` does not hold, or ``n < 3``.
    """
    low, high, peak_alpha = float(low), float(high), float(peak_alpha)
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"the band must satisfy 0 < low < high < 1, got ({low}, {high})")
    if not 0.0 < peak_alpha <= 1.0:
        raise ValueError(f"peak_alpha must be in (0, 1], got {peak_alpha}")
    if int(n) < 3:
        raise ValueError(f"the band needs at least 3 control points, got {n}")
    inside = np.linspace(low, high, int(n))
    controls = np.concatenate([[0.0], inside, [1.0]])
    u = (controls - low) / (high - low)
    alpha = np.where((u > 0) & (u < 1), peak_alpha * np.sin(np.pi * np.clip(u, 0.0, 1.0)), 0.0)
    colors = np.column_stack([heat_rgb(controls), alpha])
    return {
        "name": UNCERTAINTY_COLORMAP,
        "colors": colors.astype(np.float32),
        "controls": controls.astype(np.float32),
        "interpolation": "linear",
    }


def uncertainty_style(**colormap_options: float) -> dict:
    """Layer keyword arguments of a soft map in the band encoding (what ``soft_map_style()`` gives, as a spec).

    Args:
        **colormap_options: Passed to :func:`uncertainty_colormap` (``low``, ``high``, ``peak_alpha``, ``n``).
    """
    return {"colormap": uncertainty_colormap(**colormap_options), "contrast_limits": (0.0, 1.0),
            "blending": "translucent", "opacity": LAYER_OPACITY}


def sample(spec: dict, p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """RGBA of a colormap spec at probabilities ``p`` (linear between control points, as napari draws it).

    Returns:
        ``float (..., 4)``.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    controls = np.asarray(spec["controls"], dtype=np.float64)
    colors = np.asarray(spec["colors"], dtype=np.float64)
    return np.stack([np.interp(p, controls, colors[:, c]) for c in range(colors.shape[1])], axis=-1)
