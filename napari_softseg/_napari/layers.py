"""Turn core arrays into napari layer data and back — the one place that knows how volumes are shown.

The core holds volumes in nibabel's voxel order ``(X, Y, Z)`` with the file's affine
(docs/architecture.md). napari shows the last two axes of a layer as the screen's rows and columns and
slices along the others, so for display a 3D volume is

1. reoriented to the closest canonical (RAS) voxel order with flips and axis swaps only (views, no copy;
   ``nibabel.orientations.io_orientation``), so axis 2 runs inferior → superior whatever the
   acquisition plane, then
2. transposed to ``(Z, Y, X)``: the slider steps through **axial** slices, rows are posterior → anterior,
   columns are left → right.

The layer's napari ``affine`` maps those display indices to world millimetres, in the order
``(z, y, x)`` (superior, anterior, right), so positions, distances and the scale bar are in mm and layers
from the same scanner space line up. (To see anterior at the top of the screen, the demo sets
``viewer.scene.camera.orientation2d = ("up", "right")``.) A 2D case ``(X, Y, 1)`` becomes a 2D layer
``(Y, X)`` without reorientation. A multi-channel image ``(C, X, Y, Z)`` becomes one layer with a
leading channel axis (its own slider).

:class:`Geometry` does the forward (:meth:`Geometry.to_display`) and inverse
(:meth:`Geometry.from_display`) transforms; writers use the inverse so a saved NIfTI has the source
affine and voxel order. Every layer made here carries ``metadata["softseg"]`` with its geometry and
provenance (source file, kind, method, threshold, model, device); :func:`geometry_of` reads it back (and
falls back to the layer's own affine for layers made elsewhere).

Layer-data tuples are ``(data, kwargs, layer_type)`` as napari readers return them; use
:func:`add_layer_tuples` to put them into a viewer. Nothing here imports Qt.

Example:
    >>> import numpy as np
    >>> geom = Geometry(np.diag([2.0, 1.0, 3.0, 1.0]), (4, 5, 6))
    >>> shown = geom.to_display(np.zeros((4, 5, 6), np.float32))
    >>> shown.shape
    (6, 5, 4)
    >>> np.diag(geom.napari_affine())[:3].tolist()  # (z, y, x) spacing in mm
    [3.0, 1.0, 2.0]
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_softseg import SOFTWARE
from napari_softseg.analysis.overlay_colors import LAYER_OPACITY, UNCERTAINTY_COLORMAP, uncertainty_colormap
from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import CaseData
from napari_softseg.io.geometry import Geometry, reverse_matrix
from napari_softseg.io.packed_masks import LazyArray, PackedMasks

KEY = "softseg"
"""Key of this package's entry in ``layer.metadata``."""

KINDS = ("image", "rater", "soft_label", "prediction", "mask", "annotation")
"""What a layer holds: ``metadata["softseg"]["kind"]``."""

RATER_COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#bcbd22")
"""Outline colour of rater 1, 2, ... (cycled)."""

SOFT_MAP_COLORMAP = UNCERTAINTY_COLORMAP
"""Name of the soft maps' colormap (soft labels and predictions): see :func:`soft_map_style`."""

SOFT_MAP_OPACITY = LAYER_OPACITY
"""Layer opacity of a soft map (on top of the colormap's own transparency ramp)."""

LayerData = tuple[np.ndarray, dict, str]


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------


def make_metadata(kind: str, geometry: Geometry, **provenance: Any) -> dict:
    """``layer.metadata`` for a layer made by this package.

    Args:
        kind: One of :data:`KINDS`.
        geometry: The volume's geometry.
        **provenance: Facts about how the data was made (``source``, ``method``, ``threshold``,
            ``model``, ``device``, ...); ``None`` values are dropped, paths become strings.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    prov = {"software": SOFTWARE}
    for key, value in provenance.items():
        if value is None:
            continue
        prov[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return {KEY: {"kind": kind, "geometry": geometry.to_dict(), "provenance": prov}}


def softseg_meta(layer_or_metadata: Any) -> dict:
    """This package's metadata entry of a layer (or metadata dict); ``{}`` if it has none."""
    metadata = getattr(layer_or_metadata, "metadata", layer_or_metadata)
    if not isinstance(metadata, dict):
        return {}
    entry = metadata.get(KEY)
    return entry if isinstance(entry, dict) else {}


def kind_of(layer: Any) -> str | None:
    """``"image"``, ``"rater"``, ``"prediction"``, ... for layers made here, else ``None``."""
    return softseg_meta(layer).get("kind")


def task_of(layer: Any) -> int | None:
    """The QUBIQ task a layer belongs to (from its provenance), or ``None`` when it does not say."""
    task = softseg_meta(layer).get("provenance", {}).get("task")
    return int(task) if isinstance(task, (int, np.integer)) and not isinstance(task, bool) else None


def default_task(layers: Any) -> int | None:
    """The task shown by default among ``layers``: the lowest task any of them names (``None`` if none)."""
    tasks = [t for t in (task_of(layer) for layer in layers) if t is not None]
    return min(tasks) if tasks else None


def provenance_of(layer_or_metadata: Any) -> dict:
    """Provenance dict of a layer (copy; empty for foreign layers)."""
    return copy.deepcopy(softseg_meta(layer_or_metadata).get("provenance", {}))


def geometry_of(layer_or_state: Any) -> Geometry:
    """The geometry of a layer, or of a layer-state dict as napari writers receive it.

    Layers made by this package carry it in their metadata. For other layers it is rebuilt from the
    layer's napari affine (``affine`` @ scale/translate), assuming the layer is in display order.

    Raises:
        SoftsegError: The layer has no usable geometry (e.g. a 4D layer made elsewhere).
    """
    state = layer_or_state if isinstance(layer_or_state, dict) else None
    metadata = state.get("metadata", {}) if state is not None else getattr(layer_or_state, "metadata", {})
    entry = softseg_meta(metadata)
    if "geometry" in entry:
        return Geometry.from_dict(entry["geometry"])
    if state is not None:
        data = state.get("data")
        shape = tuple(np.shape(data)) if data is not None else tuple(state.get("shape", ()))
        napari_affine = _state_affine(state, len(shape))
    else:
        shape = tuple(layer_or_state.data.shape)
        napari_affine = np.asarray(layer_or_state.affine.affine_matrix) @ _scale_translate(
            layer_or_state.scale, layer_or_state.translate
        )
    return _geometry_from_napari(shape, napari_affine)


def _scale_translate(scale: Sequence[float], translate: Sequence[float]) -> np.ndarray:
    n = len(scale)
    m = np.eye(n + 1)
    m[np.arange(n), np.arange(n)] = np.asarray(scale, dtype=np.float64)
    m[:n, n] = np.asarray(translate, dtype=np.float64)
    return m


def _state_affine(state: dict, ndim: int) -> np.ndarray:
    affine = state.get("affine")
    affine = np.eye(ndim + 1) if affine is None else np.asarray(getattr(affine, "affine_matrix", affine))
    scale = state.get("scale", [1.0] * ndim)
    translate = state.get("translate", [0.0] * ndim)
    return affine @ _scale_translate(scale, translate)


def _geometry_from_napari(shape: tuple[int, ...], napari_affine: np.ndarray) -> Geometry:
    """Geometry of a display-order array whose napari affine is given (no reorientation assumed)."""
    if len(shape) == 3:
        rev = reverse_matrix(3)
        return Geometry(rev @ napari_affine @ rev, shape[::-1])
    if len(shape) == 2:
        n = napari_affine
        affine = np.eye(4)
        affine[:2, :2] = [[n[1, 1], n[1, 0]], [n[0, 1], n[0, 0]]]
        affine[:2, 3] = [n[1, 2], n[0, 2]]
        return Geometry(affine, (shape[1], shape[0], 1))
    raise SoftsegError(f"cannot place a {len(shape)}D layer (shape {shape}) in a NIfTI volume")


# --------------------------------------------------------------------------------------------------
# Core -> layer-data tuples
# --------------------------------------------------------------------------------------------------
def image_layer(
    image: np.ndarray, geometry: Geometry, *, name: str = "image", source: str | os.PathLike | None = None,
    **provenance: Any,
) -> LayerData:
    """Image layer of a ``float32 (C, X, Y, Z)`` image (or ``(X, Y, Z)``).

    One channel gives a spatial layer; several give one layer with a leading channel axis.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[np.newaxis]
    n_channels = image.shape[0]
    data = geometry.to_display(image[0] if n_channels == 1 else image)
    lead = 0 if n_channels == 1 else 1
    lo, hi = _robust_range(data)
    kwargs = {
        "name": name,
        "affine": geometry.napari_affine(lead),
        "colormap": "gray",
        "contrast_limits": (lo, hi),
        "metadata": make_metadata("image", geometry, source=source, n_channels=n_channels, **provenance),
    }
    return data, kwargs, "image"


def _robust_range(data: np.ndarray, max_samples: int = 2_000_000) -> tuple[float, float]:
    """0.5th–99.5th percentile contrast limits, from a strided sample (no full-volume copy)."""
    step = max(1, int(np.ceil((data.size / max_samples) ** (1.0 / data.ndim))))
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim], dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _label_colormap(color: str):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: color})


def labels_layer(
    mask: np.ndarray, geometry: Geometry, *, name: str, kind: str = "rater", color: str | None = None,
    contour: int = 0, opacity: float = 0.7, visible: bool = True, **provenance: Any,
) -> LayerData:
    """Labels layer of a ``uint8 (X, Y, Z)`` mask (a rater, a thresholded mask, an annotation).

    A :class:`~napari_softseg.io.packed_masks.LazyArray` ``mask`` is taken as it is, already in display
    order (see :meth:`~napari_softseg.io.packed_masks.PackedMasks.lazy_rater`).
    """
    lazy = isinstance(mask, LazyArray)
    if not lazy:
        mask = np.asarray(mask)
        if mask.dtype != np.uint8:
            mask = mask.astype(np.uint8)
    kwargs: dict[str, Any] = {
        "name": name,
        "affine": geometry.napari_affine(),
        "opacity": opacity,
        "visible": visible,
        "metadata": make_metadata(kind, geometry, **provenance),
    }
    if color is not None:
        kwargs["colormap"] = _label_colormap(color)
    return (mask if lazy else geometry.to_display(mask)), kwargs, "labels"


def rater_layers(
    masks: np.ndarray, rater_names: Sequence[str], geometry: Geometry, *,
    mask_paths: Sequence[str | os.PathLike] | None = None, case: str | None = None, task: int | None = None,
) -> list[LayerData]:
    """One Labels layer per rater (``"rater 1"``, ...), each in its own colour.

    ``masks`` packed as bits (:class:`~napari_softseg.io.packed_masks.PackedMasks`) give lazy layers that
    unpack only the slices napari shows.
    """
    out = []
    for i, rater in enumerate(rater_names):
        mask = masks.lazy_rater(i, geometry.to_display) if isinstance(masks, PackedMasks) else masks[i]
        out.append(
            labels_layer(
                mask, geometry, name=rater, kind="rater", color=RATER_COLORS[i % len(RATER_COLORS)],
                opacity=0.5, rater=rater, case=case, task=task,
                source=None if mask_paths is None else mask_paths[i],
            )
        )
    return out


def heat_colormap():
    """The soft maps' colormap: heat only in the uncertain band ``0.05 < p < 0.95``, nothing outside it.

    :func:`napari_softseg.analysis.overlay_colors.uncertainty_colormap` (inferno hues from dark red to pale
    yellow, an alpha that rises and falls inside the band): where the model is sure (``p >= 0.95`` or
    ``p <= 0.05``) the scan's texture is drawn untouched, and the region ``p >= t`` is shown by the Threshold
    explorer's cyan outline. A napari ``Colormap`` (made here, so this module stays importable without it).
    """
    from napari.utils.colormaps import Colormap

    return Colormap(**uncertainty_colormap())


def soft_map_style() -> dict:
    """Layer keyword arguments of a soft map: band heat colormap, contrast 0–1, translucent."""
    return {"colormap": heat_colormap(), "contrast_limits": (0.0, 1.0), "blending": "translucent",
            "opacity": SOFT_MAP_OPACITY}


def soft_map_layer(
    soft: np.ndarray, geometry: Geometry, *, name: str, kind: str = "prediction", opacity: float | None = None,
    visible: bool = True, **provenance: Any,
) -> LayerData:
    """Image layer of a soft map ``float32 (X, Y, Z)`` in ``[0, 1]``: translucent heat (:func:`soft_map_style`).

    A :class:`~napari_softseg.io.packed_masks.LazyArray` ``soft`` map is taken as it is, already in display
    order (see :meth:`~napari_softseg.io.packed_masks.PackedMasks.lazy_mean`).
    """
    if kind not in ("prediction", "soft_label"):
        raise ValueError("kind must be 'prediction' or 'soft_label'")
    lazy = isinstance(soft, LazyArray)
    if not lazy:
        soft = np.asarray(soft, dtype=np.float32)
    kwargs = {
        "name": name,
        "affine": geometry.napari_affine(),
        **soft_map_style(),
        "visible": visible,
        "metadata": make_metadata(kind, geometry, **provenance),
    }
    if opacity is not None:
        kwargs["opacity"] = opacity
    return (soft if lazy else geometry.to_display(soft)), kwargs, "image"


def mask_layer_from_soft(layer: Any, threshold: float) -> LayerData:
    """A Labels layer of ``p >= threshold`` from a soft-map Image layer, ready for the mask writer.

    The mask keeps the soft map's geometry and provenance and records ``threshold`` and the soft map's
    name, so File ▸ Save writes a uint8 NIfTI whose header and sidecar say how it was made.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise SoftsegError(f"threshold must be between 0 and 1, got {threshold}")
    geometry = geometry_of(layer)
    soft = volume_from_layer(layer, geometry)
    prov = {k: v for k, v in provenance_of(layer).items() if k not in ("software", "threshold")}
    return labels_layer(
        (soft >= float(threshold)).astype(np.uint8), geometry, name=f"{layer.name} mask p>={format_threshold(threshold)}",
        kind="mask", color="#00e5ff", opacity=0.6, threshold=float(threshold), soft_map=layer.name, **prov,
    )


def format_threshold(threshold: float) -> str:
    """A threshold as written in names and headers: exact to the 0.001 slider grid, no float noise.

    >>> format_threshold(0.347), format_threshold(0.5), format_threshold(0.1 + 0.2)
    ('0.347', '0.5', '0.3')
    """
    text = f"{float(threshold):.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def geometry_of_case(case) -> Geometry:
    """Geometry of a :class:`~napari_softseg.io.case.CaseData`."""
    return Geometry(case.affine, case.spatial_shape)


def case_layers(case, soft_label=None) -> list[LayerData]:
    """Layers of a loaded case: the image, one Labels layer per rater, and the soft label if given.

    Args:
        case: A :class:`~napari_softseg.io.case.CaseData`.
        soft_label: A :class:`~napari_softseg.analysis.softlabels.SoftLabel` built from the case's masks.
    """
    geometry = geometry_of_case(case)
    common = {"case": case.name, "task": case.task}
    layers = [image_layer(case.image, geometry, name=f"{case.name} image", source=case.image_path, case=case.name)]
    layers += rater_layers(case.masks, case.rater_names, geometry, mask_paths=case.mask_paths, **common)
    if soft_label is not None:
        prov = dict(soft_label.provenance)
        layers.append(
            soft_map_layer(
                soft_label.data, geometry, name=f"soft label ({prov.get('method', 'mean')})", kind="soft_label",
                visible=False, source=case.image_path.parent, **common,
                **{k: v for k, v in prov.items() if k not in ("software",)},
            )
        )
    return layers


# --------------------------------------------------------------------------------------------------
# Layers -> core
# --------------------------------------------------------------------------------------------------
def image_from_layer(layer: Any) -> tuple[np.ndarray, Geometry]:
    """The ``float32 (C, X, Y, Z)`` image of an Image layer, and its geometry.

    A float32 layer comes back as a view of its data (no copy of the scan; not necessarily contiguous).

    Raises:
        SoftsegError: Not an image layer, RGB, or not placeable as a NIfTI volume.
    """
    if layer_type(layer) != "image":
        raise SoftsegError(f"layer {layer.name!r} is a {layer_type(layer)} layer; pick an Image layer")
    if getattr(layer, "rgb", False):
        raise SoftsegError(f"layer {layer.name!r} is an RGB picture, not a scan")
    if getattr(layer, "multiscale", False):
        raise SoftsegError(f"layer {layer.name!r} is multiscale; not supported")
    data = np.asarray(layer.data)
    entry = softseg_meta(layer)
    n_channels = int(entry.get("provenance", {}).get("n_channels", 1))
    if n_channels > 1:
        geometry = Geometry.from_dict(entry["geometry"])
        image = geometry.from_display(data)
    else:
        geometry = geometry_of(layer)
        image = geometry.from_display(data)[np.newaxis]
    if not np.issubdtype(image.dtype, np.number):
        raise SoftsegError(f"layer {layer.name!r} does not hold numbers")
    return np.asarray(image, dtype=np.float32), geometry


def volume_from_layer(layer: Any, geometry: Geometry | None = None) -> np.ndarray:
    """A spatial layer's data in core order ``(X, Y, Z)`` (a view), checked against ``geometry``.

    Args:
        layer: A Labels or Image layer in display order.
        geometry: The grid it must be on (the image's); default: the layer's own.

    Raises:
        SoftsegError: Its shape or placement differs from ``geometry``.
    """
    own = geometry_of(layer) if geometry is None or softseg_meta(layer).get("geometry") else None
    target = geometry or own
    if own is not None and geometry is not None and not own.same_as(geometry):
        raise SoftsegError(
            f"layer {layer.name!r} lies on another grid (shape {own.shape}) than the image (shape {geometry.shape})"
        )
    data = np.asarray(layer.data)
    if data.shape != target.display_shape:
        raise SoftsegError(
            f"layer {layer.name!r} has shape {data.shape}, the image has {target.display_shape}"
        )
    return target.from_display(data)


def masks_from_layers(layers: Iterable[Any], geometry: Geometry) -> np.ndarray:
    """Stack Labels layers as binary rater masks ``uint8 (R, X, Y, Z)`` (any label > 0 counts as 1).

    Raises:
        SoftsegError: A layer is not a Labels layer or does not match ``geometry``.
    """
    masks = []
    for layer in layers:
        if layer_type(layer) != "labels":
            raise SoftsegError(f"layer {layer.name!r} is a {layer_type(layer)} layer; raters must be Labels layers")
        masks.append((volume_from_layer(layer, geometry) > 0).astype(np.uint8))
    if not masks:
        return np.zeros((0, *geometry.shape), dtype=np.uint8)
    return np.stack(masks)


def case_from_layers(image_layer_: Any, rater_layers_: Sequence[Any], *, name: str | None = None, task: int = 1):
    """Rebuild a :class:`~napari_softseg.io.case.CaseData` from an Image layer and rater Labels layers.

    Args:
        image_layer_: The scan.
        rater_layers_: One Labels layer per rater (possibly none).
        name: Case name (default: the image's provenance ``case`` or the layer name).
        task: Task number recorded in the case.

    Raises:
        SoftsegError: Wrong layer types or a rater layer whose grid differs from the image's.
    """

    image, geometry = image_from_layer(image_layer_)
    image = np.ascontiguousarray(image)  # the case is trained on: its own compact copy
    masks = masks_from_layers(rater_layers_, geometry)
    prov = provenance_of(image_layer_)
    source = prov.get("source")
    warnings = []
    if len(rater_layers_) == 1:
        warnings.append("only one rater: the soft label equals that rater's hard mask")
    mask_paths = [Path(provenance_of(layer).get("source", layer.name)) for layer in rater_layers_]
    return CaseData(
        name=name or prov.get("case") or image_layer_.name,
        image=image,
        masks=masks,
        rater_names=[layer.name for layer in rater_layers_],
        affine=geometry.affine,
        spacing=geometry.spacing,
        header=geometry.nifti_header(),
        image_path=Path(source) if source else Path(image_layer_.name),
        mask_paths=mask_paths,
        task=task,
        warnings=warnings,
    )


def layer_type(layer: Any) -> str:
    """``"image"``, ``"labels"``, ... of a napari layer — also of the proxy napari hands to plugin docks.

    napari gives dock widgets a ``PublicOnlyProxy`` of the viewer and its layers; ``type(proxy).__name__``
    is the proxy's class, but ``isinstance`` sees through it (the proxy forwards ``__class__``). Objects
    that are not napari layers give their lower-cased class name.
    """
    import napari.layers as nl

    for name in ("Image", "Labels", "Points", "Shapes", "Surface", "Tracks", "Vectors"):
        cls = getattr(nl, name, None)
        if cls is not None and isinstance(layer, cls):
            return name.lower()
    return type(layer).__name__.lower()




# --------------------------------------------------------------------------------------------------
# Viewer helper
# --------------------------------------------------------------------------------------------------
def add_layer_tuples(viewer: Any, tuples: Iterable[LayerData], *, rater_contours: bool = False) -> list:
    """Add layer-data tuples to a napari viewer; returns the layers.

    Args:
        viewer: The napari viewer.
        tuples: ``(data, kwargs, layer_type)`` tuples, e.g. from :func:`case_layers`.
        rater_contours: Draw rater layers as outlines (2 px) instead of filled areas.
    """
    added = []
    for data, kwargs, kind in tuples:
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if rater_contours and kind_of(layer) == "rater":
            layer.contour = 2
            layer.opacity = 1.0
        added.append(layer)
    return added
