"""Is this scan like the model's training data? One-line notes before prediction (warnings, never refusals).

:func:`check_domain` compares an input image with the dataset fingerprint stored in the model's
``config.json`` (``config.plan["fingerprint"]``, :meth:`~napari_softseg.model.planning.Fingerprint.to_dict`)
and returns :class:`DomainNote` s of four kinds:

- ``"spacing"`` — the voxel size differs from training by more than :data:`SPACING_NOTE_RATIO` on an axis
  the network sees (in-plane for a 2D model). With a ``target_spacing`` the engine resamples, and the
  note says so; without one (older models) the network sees anatomy at the wrong scale, and the note says
  how much. The threshold sits just above the training augmentation's ±15 % scaling: inside it the
  network has seen that scale.
- ``"field_of_view"`` — the physical extent (voxels × spacing) is more than :data:`FOV_LARGER_RATIO` times
  the largest training case's along an axis (anatomy the model never saw) or, for a 3D model, less than
  :data:`FOV_SMALLER_RATIO` times the smallest (the structure may be cut off). A 2D model's slice axis is
  only checked for "larger", and not at all when it was trained on single slices.
- ``"intensity"`` — a modality mismatch: CT-like input (air: 0.5th percentile at or below
  :data:`CT_AIR_LEVEL`, the planner's CT rule) for a model trained on MR-like intensities, or input with
  no negative values at all for a CT model (a CT without its rescale slope/intercept, or not a CT: real
  Hounsfield units always include fat or air below 0). For models whose normalisation is absolute
  (``"ct"``, ``"none"``) also a median far outside the training range (by more than
  :data:`INTENSITY_MARGIN` of its width). A z-score model is not warned about a change of scale or offset
  alone: per-image z-scoring removes it exactly.
- ``"nonfinite"`` — NaN or infinite voxels (prediction refuses them unless they are replaced).

Image statistics come from :data:`SAMPLE_SIZE` voxels drawn at random (fixed seed) and the NaN count from
slabs, so a 512 × 512 × 300 scan is checked in a fraction of a second without a copy.

**Fingerprint fields used** (all optional, so old model folders, whose ``config.json`` has no ``plan``,
work: the checks without their data are skipped): ``median_spacing``, ``median_shape``, ``min_shape``,
``max_shape`` and, per channel in ``intensity``, ``p00_5`` / ``p99_5`` (under the raters' foreground),
``p00_5_all`` and ``integer`` (whole image). Two additions would make the checks exact; they are used when
present: ``extent_mm_min`` / ``extent_mm_max`` / ``extent_mm_median`` (per-axis physical extent
``shape × spacing`` over the cases: today the extents are estimated as shape × median spacing) and, per
channel, ``p50_all`` / ``p99_5_all`` (whole-image median and 99.5th percentile: today the training range's
top is the foreground's ``p99_5``).

Example:
    >>> import numpy as np
    >>> fp = {"median_spacing": [1.0, 1.0, 1.0], "median_shape": [64, 64, 40]}
    >>> notes = check_domain(fp, np.zeros((1, 142, 142, 40), np.float32), (0.45, 0.45, 1.0),
    ...                      target_spacing=(1.0, 1.0, 1.0))
    >>> [(n.kind, n.message) for n in notes]
    [('spacing', '0.45 x 0.45 x 1 mm scan, model trained at 1 mm: resampled to 1 mm')]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Spacing ratio (either way) on an axis the network sees above which a note is given (the training
#: augmentation scales by up to ±15 %).
SPACING_NOTE_RATIO = 1.2
#: Extent along an axis above this multiple of the largest training case's: anatomy the model never saw.
FOV_LARGER_RATIO = 2.0
#: Extent below this multiple of the smallest training case's (3D models): the structure may be cut off.
FOV_SMALLER_RATIO = 0.5
#: 0.5th percentile at or below which an image looks like CT in Hounsfield units (air); the planner's rule.
CT_AIR_LEVEL = -500.0
#: A median further outside the training range than this fraction of the range's width is "far outside".
INTENSITY_MARGIN = 0.5
#: Voxels sampled per channel for the intensity statistics.
SAMPLE_SIZE = 100_000
#: Bytes of an image slab scanned at a time when counting NaN / infinite voxels.
SLAB_BYTES = 16 * 2**20

KINDS = ("spacing", "intensity", "field_of_view", "nonfinite")
_AXIS_NAMES = "XYZ"


@dataclass(frozen=True)
class DomainNote:
    """One difference between an input and the model's training data.

    Attributes:
        kind: ``"spacing"``, ``"intensity"``, ``"field_of_view"`` or ``"nonfinite"``.
        message: One line for the user (console, notification, provenance).
    """

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


def _num(v: float) -> str:
    """3 significant digits, whole numbers from 100 on (``0.45``, ``2``, ``-984``, ``1990``)."""
    v = float(v)
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _mm(values) -> str:
    """``0.45`` when all values agree within 1 %, else ``0.45 x 0.5 x 3``."""
    values = [float(v) for v in values]
    if max(values) <= 1.01 * min(values):
        return _num(values[0])
    return " x ".join(_num(v) for v in values)


def _extent(values) -> str:
    return " x ".join(f"{float(v):.0f}" for v in values)


def _vector(fp: dict, key: str) -> list[float] | None:
    """``fp[key]`` as three positive numbers, or ``None`` when absent or malformed."""
    return _spacing(fp.get(key))


def _spacing(values) -> list[float] | None:
    """Three positive finite numbers, or ``None``."""
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if len(out) == 3 and all(math.isfinite(v) and v > 0 for v in out) else None


def _sample(channel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Finite float64 values of ``SAMPLE_SIZE`` random voxels (all voxels of a small image); no copy of the volume."""
    if channel.size <= SAMPLE_SIZE:
        values = np.asarray(channel, dtype=np.float64).ravel()
    else:
        index = tuple(rng.integers(0, n, SAMPLE_SIZE) for n in channel.shape)
        values = channel[index].astype(np.float64)
    return values[np.isfinite(values)]


def _count_nonfinite(channel: np.ndarray) -> int:
    if not np.issubdtype(channel.dtype, np.floating):
        return 0
    step = max(1, SLAB_BYTES // max(1, channel[:1].nbytes))
    return sum(int(channel[a:a + step].size - np.count_nonzero(np.isfinite(channel[a:a + step])))
               for a in range(0, channel.shape[0], step))


def _spacing_note(fp, spacing, target, axes, two_d) -> DomainNote | None:
    median = _vector(fp, "median_spacing")
    trained = target or median  # the grid the network sees: the target spacing when the model has one
    if trained is None:
        return None
    ratios = [spacing[a] / trained[a] for a in axes]
    worst = max(ratios, key=lambda r: max(r, 1 / r))
    if max(worst, 1 / worst) <= SPACING_NOTE_RATIO:
        return None
    scan, model = _mm(spacing if not two_d else [spacing[a] for a in axes]), _mm([trained[a] for a in axes])
    where = " in-plane" if two_d else ""
    if target is not None:
        lo, hi = _vector(fp, "min_spacing"), _vector(fp, "max_spacing")
        if median is not None and lo is not None and hi is not None and lo != hi \
                and any(abs(median[a] - target[a]) > 1e-6 for a in axes):
            # trained on several voxel sizes, all resampled to the target: say so, not "trained at" the median
            span = f"{min(lo[a] for a in axes):.3g}-{max(hi[a] for a in axes):.3g}"
            return DomainNote("spacing", f"{scan} mm scan, model trained on {span} mm scans at {model} mm: "
                                         f"resampled to {model} mm{where}")
        return DomainNote("spacing", f"{scan} mm scan, model trained at {model} mm: resampled to {model} mm{where}")
    factor = max(worst, 1 / worst)
    size = "larger" if worst < 1 else "smaller"
    return DomainNote("spacing", f"{scan} mm scan, model trained at {model} mm{where} and not resampled: "
                                 f"structures look {factor:.3g}x {size} to the network than in training; "
                                 "expect a poorer map")


def _fov_note(fp, shape, spacing, slice_axis) -> DomainNote | None:
    median_spacing = _vector(fp, "median_spacing")
    typical = _vector(fp, "extent_mm_median")
    lo, hi = _vector(fp, "extent_mm_min"), _vector(fp, "extent_mm_max")
    if median_spacing is not None:
        shapes = {k: _vector(fp, k) for k in ("median_shape", "min_shape", "max_shape")}
        est = {k: None if v is None else [n * s for n, s in zip(v, median_spacing)] for k, v in shapes.items()}
        typical = typical or est["median_shape"]
        lo = lo or est["min_shape"] or typical
        hi = hi or est["max_shape"] or typical
    if typical is None or lo is None or hi is None:
        return None
    extent = [n * s for n, s in zip(shape, spacing)]
    larger, smaller = [], []
    for a in range(3):
        if a == slice_axis:
            max_slices = _vector(fp, "max_shape") or _vector(fp, "median_shape")
            if max_slices is not None and max_slices[a] <= 1:
                continue  # trained on single slices: the slice axis has no field of view to compare
        if extent[a] > FOV_LARGER_RATIO * hi[a]:
            larger.append(_AXIS_NAMES[a])
        elif slice_axis is None and extent[a] < FOV_SMALLER_RATIO * lo[a]:
            smaller.append(_AXIS_NAMES[a])
    if not larger and not smaller:
        return None
    parts = []
    if larger:
        parts.append(f"over {FOV_LARGER_RATIO:g}x the largest training case along {', '.join(larger)} "
                     "(anatomy the model never saw)")
    if smaller:
        parts.append(f"under {FOV_SMALLER_RATIO:g}x the smallest along {', '.join(smaller)} "
                     "(structures may be cut off)")
    return DomainNote("field_of_view", f"field of view {_extent(extent)} mm vs training {_extent(typical)} mm: "
                                       + "; ".join(parts))


def _intensity_note(info: dict, values: np.ndarray, mode: str | None, window, prefix: str) -> DomainNote | None:
    p_lo, p50, p_hi = (float(v) for v in np.percentile(values, [0.5, 50, 99.5]))
    seen = f"0.5..99.5%: {_num(p_lo)}..{_num(p_hi)}"
    train_lo = info.get("p00_5_all", info.get("p00_5"))
    train_hi = info.get("p99_5_all", info.get("p99_5"))
    known = isinstance(train_lo, (int, float)) and isinstance(train_hi, (int, float)) and train_hi > train_lo
    train_ct = mode == "ct" or (known and train_lo <= CT_AIR_LEVEL and bool(info.get("integer", False)))
    if train_ct and p_lo >= 0:
        expected = (f"window {_num(window[0])}..{_num(window[1])}" if mode == "ct" and window is not None
                    else f"0.5..99.5%: {_num(train_lo)}..{_num(train_hi)}")
        return DomainNote("intensity", f"{prefix}no negative intensities ({seen}) but the model expects CT in "
                                       f"Hounsfield units ({expected}): a CT without its rescale, or not a CT?")
    if not train_ct and p_lo <= CT_AIR_LEVEL and (known or mode == "zscore"):
        trained = f"0.5..99.5%: {_num(train_lo)}..{_num(train_hi)}" if known else "z-score normalised"
        return DomainNote("intensity", f"{prefix}CT-like input ({seen}: air in Hounsfield units) for a model "
                                       f"trained on MR-like intensities ({trained})")
    if known and mode in ("ct", "none"):
        margin = INTENSITY_MARGIN * (train_hi - train_lo)
        if not train_lo - margin <= p50 <= train_hi + margin:
            return DomainNote("intensity", f"{prefix}intensities far outside the training range (median "
                                           f"{_num(p50)} vs {_num(train_lo)}..{_num(train_hi)})")
    return None


def _normalization(normalization) -> tuple[str | None, tuple[float, float] | None]:
    if normalization is None:
        return None, None
    if not isinstance(normalization, dict):
        normalization = {"mode": getattr(normalization, "mode", None), "window": getattr(normalization, "window", None)}
    mode = normalization.get("mode")
    window = normalization.get("window")
    try:
        window = (float(window[0]), float(window[1]))
    except (TypeError, ValueError, IndexError):
        window = None
    return (mode if isinstance(mode, str) else None), window


def check_domain(fingerprint, image: np.ndarray, spacing, *, target_spacing=None, normalization=None,
                 slice_axis: int | None = None) -> list[DomainNote]:
    """Notes on how ``image`` differs from the model's training data (empty when it looks alike).

    Args:
        fingerprint: The model's training fingerprint, ``config.plan.get("fingerprint")`` (a dict, a
            :class:`~napari_softseg.model.planning.Fingerprint`, or ``None``/``{}`` for old models).
        image: ``(C, X, Y, Z)`` raw intensities (any dtype and strides; not copied).
        spacing: Its voxel size ``(sx, sy, sz)`` in mm.
        target_spacing: The spacing the engine resamples to (``None``: it predicts on the scan's grid).
        normalization: The model's normalisation (``config.normalization`` dict or a
            :class:`~napari_softseg.model.normalization.Normalization`); ``None``: unknown (the modality is
            then judged from the fingerprint alone).
        slice_axis: A 2D model's slicing axis (only in-plane spacing matters); ``None`` for a 3D model.

    Returns:
        The notes, in the order nonfinite, spacing, field of view, intensity. Never raises for odd
        fingerprints or spacings: a check that lacks its data is skipped.
    """
    if hasattr(fingerprint, "to_dict"):
        fingerprint = fingerprint.to_dict()
    fp = fingerprint if isinstance(fingerprint, dict) else {}
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"check_domain expects an image (C, X, Y, Z), got shape {image.shape}")
    mode, window = _normalization(normalization)
    notes: list[DomainNote] = []
    channels = image.shape[0]

    for c in range(channels):
        bad = _count_nonfinite(image[c])
        if bad:
            prefix = f"channel {c + 1}: " if channels > 1 else ""
            notes.append(DomainNote("nonfinite", f"{prefix}{bad:,} NaN or infinite voxel(s) "
                                                 f"({100 * bad / image[c].size:.2g}% of the image)"))

    spacing = _spacing(spacing)
    target = _spacing(target_spacing) if target_spacing is not None else None
    if slice_axis not in (0, 1, 2):
        slice_axis = None
    if spacing is not None:
        axes = tuple(a for a in range(3) if a != slice_axis)
        for note in (_spacing_note(fp, spacing, target, axes, slice_axis is not None),
                     _fov_note(fp, image.shape[1:], spacing, slice_axis)):
            if note is not None:
                notes.append(note)

    intensity = fp.get("intensity") if isinstance(fp.get("intensity"), list) else []
    rng = np.random.default_rng(0)
    for c in range(channels):
        values = _sample(image[c], rng)
        if values.size == 0:
            continue
        info = intensity[c] if c < len(intensity) and isinstance(intensity[c], dict) else {}
        note = _intensity_note(info, values, mode, window, f"channel {c + 1}: " if channels > 1 else "")
        if note is not None:
            notes.append(note)
    return notes


def model_domain_notes(config, image: np.ndarray, spacing) -> list[DomainNote]:
    """:func:`check_domain` for a loaded model's ``config`` (a :class:`~napari_softseg.model.model_io.ModelConfig`):
    its fingerprint, target spacing, normalisation and (2D) slice axis."""
    plan = config.plan if isinstance(config.plan, dict) else {}
    return check_domain(plan.get("fingerprint"), image, spacing, target_spacing=config.target_spacing,
                        normalization=config.normalization, slice_axis=config.slice_axis if config.dim == 2 else None)


def spacing_record(config, spacing, notes=()) -> dict:
    """What a prediction's sidecar records about voxel sizes and the domain notes.

    Returns:
        ``input_spacing_mm`` (the scan's), ``model_spacing_mm`` (the network's grid: the model's target
        spacing on the axes it resamples, else the scan's; ``None`` without a spacing), ``resampled`` and,
        when there are any, ``domain_notes`` (their messages).
    """
    spacing = _spacing(spacing)
    record: dict = {"input_spacing_mm": None if spacing is None else [round(v, 6) for v in spacing]}
    target = _spacing(config.target_spacing) if config.target_spacing is not None else None
    if spacing is not None and target is not None:
        axes = (0, 1, 2) if config.dim == 3 else tuple(a for a in range(3) if a != config.slice_axis)
        grid = [target[a] if a in axes else spacing[a] for a in range(3)]
        record["model_spacing_mm"] = [round(v, 6) for v in grid]
        record["resampled"] = any(abs(spacing[a] - target[a]) > 1e-3 * target[a] for a in axes)
    else:
        record["model_spacing_mm"] = record["input_spacing_mm"]
        record["resampled"] = False
    if notes:
        record["domain_notes"] = [str(n) for n in notes]
    return record
