"""Which role each viewer layer plays for the analysis docks: scan, soft map, rater, annotation or helper.

Qt-free (napari layers only); the pickers in ``_qt/`` show what these functions find.

* :func:`soft_map_candidates`, :func:`rater_candidates`, :func:`annotation_candidates`,
  :func:`scan_candidates`, :func:`label_candidates` — the layers offered in each role, ranked by the kind
  the reader records in ``metadata["softseg"]`` (``prediction`` / ``soft_label``, ``rater``,
  ``annotation``, ``image``), else by layer type, dtype and shape; :func:`default_rater_checks` says which
  raters are ticked when the user has not chosen.
* :func:`read_inputs` — the chosen layers' arrays, checked (:func:`check_soft_map`, :func:`read_masks`),
  as :class:`Inputs` (:func:`read_inputs_work`: the same as a Progress generator, which the docks run in a
  worker for volumes of :data:`BACKGROUND_READ_VOXELS` or more, :func:`reads_in_background`); :func:`inputs_key` and :func:`data_print` identify them (an in-place edit changes
  the print), so a shared session is rebuilt only when the data really changed.
* :func:`analysis_session` — the one :class:`~napari_softseg.analysis.session.AnalysisSession` per viewer
  that every dock is a view of, whether napari handed the dock the viewer or its ``PublicOnlyProxy``
  (:func:`same_layer` sees through the proxies).
* Helper layers the docks add (threshold overlay, contour, disagreement map) are tagged with
  :data:`HELPER_KEY` in their metadata (:func:`is_helper`) and never offered as inputs.
* :func:`mark_as_soft_map` gives a float image the soft-map look and kind.
"""

from __future__ import annotations

import weakref
import zlib
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Labels

from napari_softseg import SOFTWARE
from napari_softseg._napari import layers as softseg_layers
from napari_softseg.analysis.session import AnalysisSession, unwrapped
from napari_softseg.errors import SoftsegError
from napari_softseg.io.packed_masks import MAX_PACKED_RATERS, LazyArray, PackedMasks
from napari_softseg.progress import Progress

#: Metadata key marking layers made by the analysis docks (value: what the layer is).
HELPER_KEY = "softseg_helper"
#: Soft maps of this many voxels or more are read and checked in a worker (a 512 × 512 × 300 volume with
#: five raters: ~1–3 s of range checks and mask stacking); smaller ones inline (a few ms).
BACKGROUND_READ_VOXELS = 4_000_000

_SOFT_KINDS = ("prediction", "soft_label")
_NOT_RATERS = ("annotation", "mask")

__all__ = [
    "HELPER_KEY", "Inputs", "analysis_session", "annotation_candidates", "arrays_print", "check_soft_map",
    "data_print", "default_rater_checks", "inputs_key", "is_helper", "label_candidates", "layer_spacing", "mark_as_soft_map",
    "other_open_cases", "rater_candidates", "read_inputs", "read_inputs_work", "read_masks", "reads_in_background", "same_layer", "scan_candidates", "soft_map_candidates",
    "unwrapped",
]


def is_helper(layer) -> bool:
    """Whether ``layer`` was made by one of the analysis docks (an overlay, not an input)."""
    return isinstance(getattr(layer, "metadata", None), dict) and HELPER_KEY in layer.metadata


def same_layer(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same layer (proxies of it included); ``None`` is no layer."""
    return a is not None and b is not None and unwrapped(a) is unwrapped(b)


def in_viewer(viewer, layer) -> bool:
    """Whether ``layer`` is (still) one of ``viewer``'s layers (proxies included); ``None`` is not."""
    return layer is not None and any(same_layer(layer, other) for other in viewer.layers)


# -- candidates per role -----------------------------------------------------------------------------
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


def default_rater_checks(soft, raters: list) -> list[bool]:
    """Which of ``raters`` are ticked by default for the soft map ``soft``.

    The reader's rater layers of the soft map's task (or of the first task) are ticked; other Labels
    layers (e.g. a new empty one to draw in) are listed but not ticked — unless there are no reader-made
    raters at all, then every Labels layer of the right shape counts.
    """
    has_raters = any(softseg_layers.kind_of(layer) == "rater" for layer in raters)
    task = softseg_layers.task_of(soft) if soft is not None else None
    if task is None:
        task = softseg_layers.default_task(raters)
    checks = []
    for layer in raters:
        layer_task = softseg_layers.task_of(layer)
        same_task = task is None or layer_task is None or layer_task == task
        checks.append((softseg_layers.kind_of(layer) == "rater" and same_task) or not has_raters)
    return checks


def annotation_candidates(viewer, shape: tuple[int, ...] | None) -> list[Labels]:
    """Labels layers an annotator can compare with the model: same shape as the soft map, not helpers;
    layers the dock made for drawing (kind ``annotation``) first."""
    layers = [
        layer for layer in viewer.layers
        if isinstance(layer, Labels) and not is_helper(layer) and tuple(layer.data.shape) == shape
    ]
    layers.sort(key=lambda layer: softseg_layers.kind_of(layer) != "annotation")
    return layers


def scan_candidates(viewer) -> list[Image]:
    """Image layers that can be the scan to segment (not soft maps, RGB or helper layers)."""
    return [
        layer for layer in viewer.layers
        if isinstance(layer, Image) and softseg_layers.kind_of(layer) not in _SOFT_KINDS
        and not layer.rgb and not is_helper(layer)
    ]


def label_candidates(viewer) -> list[Labels]:
    """Labels layers that can be rater masks for building a soft label or training (not helper layers)."""
    return [layer for layer in viewer.layers if isinstance(layer, Labels) and not is_helper(layer)]


def other_open_cases(viewer, selected, ticked: list, first) -> tuple[list, list[str]]:
    """The cases open in ``viewer`` besides the selected image and its ticked raters (for training).

    Another open case is an Image layer opened by this plugin (kind ``image``) whose ``case`` provenance is
    shared by rater Labels layers of the same task as ``ticked`` (opening several case folders gives
    exactly that).

    Args:
        viewer: The viewer.
        selected: The selected image layer (left out: it is ``first``).
        ticked: The ticked rater layers of the selected image (their task is the one trained).
        first: The :class:`~napari_softseg.io.case.CaseData` of the selected image (channels must match).

    Returns:
        ``(cases, skipped)``: the other cases as ``CaseData`` and one line per open case left out, with
        the reason.
    """
    task = softseg_layers.task_of(ticked[0])
    cases, skipped = [], []
    for layer in list(viewer.layers):
        name = softseg_layers.provenance_of(layer).get("case")
        if softseg_layers.layer_type(layer) != "image" or softseg_layers.kind_of(layer) != "image" \
                or layer.name == selected.name or not name:
            continue
        raters = [r for r in viewer.layers if softseg_layers.layer_type(r) == "labels"
                  and softseg_layers.kind_of(r) == "rater" and softseg_layers.provenance_of(r).get("case") == name
                  and softseg_layers.task_of(r) == task]
        if not raters:
            continue
        try:
            case = softseg_layers.case_from_layers(layer, raters, task=task or 1)
        except SoftsegError as exc:
            skipped.append(f"{layer.name}: {exc}")
            continue
        if case.image.shape[0] != first.image.shape[0]:
            skipped.append(f"{layer.name}: {case.image.shape[0]} channel(s), the selected image has "
                           f"{first.image.shape[0]}")
            continue
        cases.append(case)
    return cases, skipped


def layer_spacing(layer) -> tuple[float, float, float] | None:
    """Voxel size in mm of a spatial layer (from its softseg geometry or napari affine), else None."""
    try:
        return softseg_layers.geometry_of(layer).spacing
    except (SoftsegError, KeyError, ValueError, TypeError):
        return None


# -- reading the chosen layers ------------------------------------------------------------------------
@dataclass
class Inputs:
    """Checked arrays of the chosen layers (all in the layers' own display order, not copied)."""

    soft_layer: Image
    prediction: np.ndarray
    rater_layers: list[Labels]
    masks: PackedMasks | np.ndarray | None   # packed raters (or a uint8 (R, ...) stack above 16), or None
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


def read_masks(rater_layers: list, shape: tuple[int, ...]) -> PackedMasks | np.ndarray | None:
    """Rater Labels layers as masks (any label > 0 is 1); None if no layers.

    Up to 16 raters are packed as bits (:class:`~napari_softseg.io.packed_masks.PackedMasks`: one byte a
    voxel for ≤ 8 raters, which every analysis function takes as it is); more are stacked as
    ``uint8 (R, *shape)``. Five raters of a 512 × 512 × 300 volume: 75 MB instead of 375 MB.

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
    if len(rater_layers) <= MAX_PACKED_RATERS:
        packed = PackedMasks.empty(len(rater_layers), shape)
        for r, layer in enumerate(rater_layers):      # one rater's temporary at a time
            packed.set_rater(r, np.asarray(layer.data) > 0)
        return packed
    out = np.empty((len(rater_layers), *shape), dtype=np.bool_)     # filled in place: no per-rater copies
    for mask, layer in zip(out, rater_layers):
        np.greater(np.asarray(layer.data), 0, out=mask)
    return out.view(np.uint8)


def read_inputs(soft_layer, rater_layers: list) -> Inputs:
    """The arrays of a chosen soft map and raters, checked.

    Raises:
        SoftsegError: No soft map, not a soft map, or a rater layer of another shape.
    """
    prediction = check_soft_map(soft_layer)
    masks = read_masks(rater_layers, prediction.shape)
    return Inputs(
        soft_layer=soft_layer, prediction=prediction, rater_layers=list(rater_layers), masks=masks,
        rater_names=[r.name for r in rater_layers], spacing=layer_spacing(soft_layer),
    )


def reads_in_background(layer) -> bool:
    """Whether the docks read ``layer`` (a soft-map candidate) in a worker: :data:`BACKGROUND_READ_VOXELS`."""
    shape = getattr(getattr(layer, "data", None), "shape", None)
    return shape is not None and int(np.prod(shape)) >= BACKGROUND_READ_VOXELS


def read_inputs_work(soft_layer, rater_layers: list) -> Generator[Progress, None, Inputs]:
    """:func:`read_inputs` as a Progress generator, for a worker thread (it only reads the layers' arrays)."""
    yield Progress("read", 0, 1, f"reading {getattr(soft_layer, 'name', 'the soft map')!r} and its raters")
    return read_inputs(soft_layer, list(rater_layers))


def _memory_of(data):
    """The bytes behind ``data`` without a copy: the array itself or, for a view (the display-order
    transpose/flips of a volume), the contiguous array it views; ``None`` when there is none."""
    if not isinstance(data, np.ndarray):
        return None
    a = data
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = a.base if isinstance(a.base, np.ndarray) else None
        if a is None or a.size != data.size or not (a.flags.c_contiguous or a.flags.f_contiguous):
            return None
    return memoryview(a.reshape(-1, order="A")).cast("B")


def data_print(layers) -> tuple:
    """What ``layers`` hold: each array's identity and CRC-32 (an in-place edit changes it; ``None`` skipped).

    Read-only lazy arrays (:class:`~napari_softseg.io.packed_masks.LazyArray`: raters and soft labels
    computed from the files; writing raises) count by identity; a numpy view is hashed through the
    contiguous array it views, with no copy (a 300 MB volume: ~0.2 s instead of a copy and ~1 s). Other
    array-likes are copied once.
    """
    return arrays_print(layer.data for layer in layers if layer is not None)


def arrays_print(arrays) -> tuple:
    """:func:`data_print` of the layers' arrays; safe in a worker thread (CRC-32 releases the GIL)."""
    out = []
    for data in arrays:
        if isinstance(data, LazyArray):
            out.append((id(data), None))
            continue
        buffer = _memory_of(data)
        if buffer is None:
            try:
                buffer = memoryview(np.ascontiguousarray(data)).cast("B")
            except (TypeError, ValueError):   # not an in-memory array: identity only
                out.append((id(data), None))
                continue
        out.append((id(data), zlib.crc32(buffer) if buffer.nbytes else 0))
    return tuple(out)


def inputs_key(inputs: Inputs, print_: tuple) -> tuple:
    """What identifies a set of inputs for the shared session: the layers, their arrays and their contents."""
    return (
        id(unwrapped(inputs.soft_layer)), id(inputs.prediction),
        tuple(id(unwrapped(r)) for r in inputs.rater_layers), tuple(inputs.rater_names), inputs.spacing, print_,
    )


# -- the shared session --------------------------------------------------------------------------------
_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def analysis_session(viewer) -> AnalysisSession:
    """The :class:`~napari_softseg.analysis.session.AnalysisSession` of ``viewer`` (made on first use).

    Every dock of one viewer gets the same session, whether napari passed it the viewer or a proxy of it.
    """
    key = unwrapped(viewer)
    if key not in _SESSIONS:
        _SESSIONS[key] = AnalysisSession()
    return _SESSIONS[key]


def mark_as_soft_map(layer) -> None:
    """Give a float Image layer in [0, 1] the soft-map look and kind (``prediction``) in place."""
    style = softseg_layers.soft_map_style()
    for key in ("colormap", "contrast_limits", "blending", "opacity"):
        setattr(layer, key, style[key])
    metadata = dict(layer.metadata)
    entry = dict(metadata.get(softseg_layers.KEY, {}))
    entry["kind"] = entry.get("kind") if entry.get("kind") in _SOFT_KINDS else "prediction"
    if "geometry" not in entry:
        try:
            entry["geometry"] = softseg_layers.geometry_of(layer).to_dict()
        except SoftsegError:
            pass
    entry.setdefault("provenance", {"software": SOFTWARE, "marked_in_viewer": True})
    metadata[softseg_layers.KEY] = entry
    layer.metadata = metadata
