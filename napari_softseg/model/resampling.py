"""Spacing-aware resampling: the plan's target voxel size, and images, masks and soft maps moved to it and back.

A network learns anatomy at the voxel size it was trained on. The plan therefore stores a **target
spacing** (:func:`target_spacing`, nnU-Net's rule); training cases and every input to prediction are
resampled to it (:func:`resample_image`, :func:`resample_soft_map`, :func:`resample_masks`), and the
network's probabilities are resampled back onto the input's own grid
(:func:`resample_probabilities_back`), so the soft map lines up voxel for voxel with the scan it came from.

**Grid.** Every function maps voxel centres the same way, with the edges of the field of view kept in place
(``scipy.ndimage.zoom(..., grid_mode=True)``): along an axis of ``n`` voxels resampled to ``m``, output
voxel ``o`` has its centre at input coordinate ``(o + 0.5) * n / m - 0.5``. The new shape is
``round(n * spacing / target)`` (:func:`resampled_shape`), so the new voxel size is ``spacing * n / m``:
the target up to that rounding (returned as ``zooms``). Outside the field of view the edge voxel is
repeated. A soft map resampled to the target and back is therefore in register with the input (a step edge
stays where it was, see the tests).

**Kernels.** Resampling is separable, done axis by axis in float32 (no coordinate grid of the volume is
ever built): along X and Y each output row is a weighted sum of a few gathered input rows, along Z each
slab is multiplied by a band of the weight matrix (BLAS). When X changes with another axis, the X pass is
fused with the others slab by slab, so the only large array is the output: back-resampling
205 × 205 × 120 → 512 × 512 × 300 allocates 1.07 × the output at its peak and takes ~0.4 s on one core,
~17 × faster than ``scipy.ndimage.zoom(order=1)`` (``benchmarks/bench_resampling.py``). The kernels:

- ``order=1`` — linear (the tent kernel): probabilities, soft labels and masks. It cannot leave
  ``[0, 1]`` and is linear, so resampling each rater and then averaging equals averaging and then
  resampling. Upsampling gives exactly ``scipy.ndimage.zoom(order=1, grid_mode=True, mode="nearest")``.
- ``order=3`` — cubic convolution (Keys, ``a = -0.5``): images. It is interpolating and needs no global
  spline prefilter (scipy's ``order=3`` builds a float64 copy of the whole volume first). Its small
  overshoot at sharp edges (at most ~7 % of the step) is clipped to each channel's input range, so no
  intensity appears that the scan did not contain (no HU below air, no negative MR).
- ``order=0`` — nearest voxel.

**Downsampling is anti-aliased** (default ``antialias=True``): when an axis shrinks by a factor ``f > 1``
the kernel is stretched by ``f`` (as PIL and ``torch.nn.functional.interpolate(antialias=True)`` do), so
each output voxel averages the input voxels it covers instead of point-sampling them. A 0.45 mm scan
brought to 1 mm then looks like a 1 mm acquisition (less noise, no aliasing), and a probability map brought
onto a coarser grid gives each voxel the mean probability of its volume (the partial-volume fraction).
Upsampling is unaffected.

**Masks.** :func:`resample_masks` resamples each rater linearly; ``binary=True`` then keeps ``>= 0.5``
(nnU-Net's approach for labels: smoother and better placed than nearest-neighbour), ``binary=False`` keeps
the fractions (float32). For a soft label, the correct order is the mean at the native grid then
:func:`resample_soft_map` (linear on the mean; identical to averaging the raters' fractions).

**NaN.** Inputs are expected finite (:func:`~napari_softseg.model.domain.check_domain` reports NaN and
prediction refuses it); a NaN voxel spreads to the output voxels whose weights touch it, and along Z to
its whole block of :data:`LAST_AXIS_BLOCK` voxels.

**No-op.** An axis whose spacing equals the target within :data:`SPACING_RTOL` (relative), or whose voxel
count would not change, is not touched; when no axis changes the input itself is returned (no copy).

Example:
    >>> import numpy as np
    >>> image = np.zeros((1, 64, 64, 10), np.float32)
    >>> out, zooms = resample_image(image, (0.5, 0.5, 3.0), (1.0, 1.0, 3.0), axes=(0, 1))
    >>> out.shape, zooms
    ((1, 32, 32, 10), (1.0, 1.0, 3.0))
    >>> resample_probabilities_back(out[0], (64, 64, 10), axes=(0, 1)).shape
    (64, 64, 10)
    >>> resample_image(image, (1.0, 1.0, 3.0), (1.0, 1.0, 3.0))[0] is image
    True
"""

from __future__ import annotations

import math

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.geometry import check_spacing

#: Spacings equal within this relative difference are treated as equal (no resampling).
SPACING_RTOL = 1e-3
#: An axis is anisotropic when its (median) spacing is at least this many times the largest other spacing
#: (nnU-Net's ``ANISO_THRESHOLD``).
ANISOTROPY_THRESHOLD = 3.0
#: Percentile of the low-resolution axis's spacings taken as its target for anisotropic data (nnU-Net).
ANISOTROPIC_PERCENTILE = 10.0
#: Size of the slabs each axis pass is computed in (bounds the temporaries; the output is written in place).
CHUNK_BYTES = 4 * 2**20
#: Output bytes per slab of X rows when the X pass is fused with the others (see :func:`_resample_volume`).
FUSED_BYTES = 32 * 2**20
#: Output voxels per dense block of the last axis's weight matrix (see :func:`_pass`).
LAST_AXIS_BLOCK = 64
#: Keys cubic convolution parameter (-0.5: third-order accurate, the usual "bicubic").
CUBIC_A = -0.5

_RADIUS = {0: 0.5, 1: 1.0, 3: 2.0}


def _axes(axes) -> tuple[int, ...]:
    out = tuple(sorted({int(a) for a in axes}))
    if not set(out) <= {0, 1, 2}:
        raise SoftsegError(f"resampling axes must be among 0, 1, 2 (X, Y, Z), got {tuple(axes)!r}")
    return out


def resample_axes(dim: int, slice_axis: int | None = None) -> tuple[int, ...]:
    """The spatial axes a model resamples: all three for a 3D model, the two in-plane axes for a 2D one.

    Args:
        dim: 2 or 3 (the plan's or config's ``dim``).
        slice_axis: The 2D model's slicing axis (never resampled).

    Returns:
        ``(0, 1, 2)`` or the two axes other than ``slice_axis``.

    Example:
        >>> resample_axes(2, slice_axis=2), resample_axes(3)
        ((0, 1), (0, 1, 2))
    """
    if dim == 3:
        return (0, 1, 2)
    if dim != 2 or slice_axis not in (0, 1, 2):
        raise SoftsegError(f"a 2D model needs a slice axis 0, 1 or 2 (got dim={dim!r}, slice_axis={slice_axis!r})")
    return tuple(a for a in range(3) if a != slice_axis)


def target_spacing(spacings, shapes, *, dim: int, slice_axis: int | None = None) -> tuple[float, float, float]:
    """The voxel size a model is trained and predicts at (nnU-Net's ``determine_fullres_target_spacing`` rule).

    The rule, per axis over the training cases:

    1. The **median** spacing.
    2. Except on a low-resolution axis of anisotropic data: when the coarsest median spacing is at least
       :data:`ANISOTROPY_THRESHOLD` (3) times the largest other one **and** that axis has at most a third
       as many voxels (median) as the smallest other axis, it takes the :data:`ANISOTROPIC_PERCENTILE`
       (10th) percentile of its spacings instead, raised to the largest other axis's value if it falls
       below it. The median would make the thin-slice cases lose most of their slices to interpolation;
       the 10th percentile keeps the resolution most cases have, without ever making the coarse axis the
       finest.
    3. For a 2D plan the slice axis keeps its median (it is never resampled: a 2D network sees one slice
       at a time); the rule of step 2 applies among the two in-plane axes only.

    Args:
        spacings: Per case, ``(sx, sy, sz)`` in mm.
        shapes: Per case, the spatial shape ``(X, Y, Z)``.
        dim: 2 or 3 (the plan's).
        slice_axis: The 2D plan's slicing axis.

    Returns:
        The target spacing ``(sx, sy, sz)`` in mm.

    Raises:
        SoftsegError: No cases, mismatched lists, or spacings that are not positive numbers.

    Example:
        >>> target_spacing([(1.0, 1.0, 1.2), (0.8, 0.8, 1.0), (1.2, 1.2, 1.0)], [(160, 190, 150)] * 3, dim=3)
        (1.0, 1.0, 1.0)
        >>> target_spacing([(1.0, 1.0, 5.0), (0.8, 0.8, 5.0), (1.2, 1.2, 1.5)],  # 5 mm median, 10th pct. 2.2
        ...                [(256, 256, 30), (256, 256, 30), (256, 256, 100)], dim=3)
        (1.0, 1.0, 2.2)
        >>> target_spacing([(1.0, 1.0, 5.0), (0.8, 0.8, 5.0), (1.2, 1.2, 1.5)],  # 2D: the slice axis keeps 5
        ...                [(256, 256, 30), (256, 256, 30), (256, 256, 100)], dim=2, slice_axis=2)
        (1.0, 1.0, 5.0)
    """
    spacing_rows = [check_spacing(s, "spacing") for s in spacings]
    shape_rows = [tuple(int(v) for v in s) for s in shapes]
    if not spacing_rows:
        raise SoftsegError("no cases to take a target spacing from")
    if len(shape_rows) != len(spacing_rows) or any(len(s) != 3 for s in shape_rows):
        raise SoftsegError(f"need one (X, Y, Z) shape per case: {len(spacing_rows)} spacing(s), "
                           f"{len(shape_rows)} shape(s)")
    sp = np.asarray(spacing_rows, dtype=float)
    target = np.median(sp, axis=0)
    sizes = np.median(np.asarray(shape_rows, dtype=float), axis=0)
    considered = list(resample_axes(dim, slice_axis))
    worst = max(considered, key=lambda a: target[a])
    others = [a for a in considered if a != worst]
    largest_other = max(target[a] for a in others)
    anisotropic_spacing = target[worst] >= ANISOTROPY_THRESHOLD * largest_other
    anisotropic_voxels = sizes[worst] * ANISOTROPY_THRESHOLD <= min(sizes[a] for a in others)
    if anisotropic_spacing and anisotropic_voxels:
        target[worst] = max(float(np.percentile(sp[:, worst], ANISOTROPIC_PERCENTILE)), largest_other)
    return tuple(float(v) for v in target)


def _differs(spacing: float, target: float) -> bool:
    return abs(spacing - target) > SPACING_RTOL * target


def resampled_shape(shape, spacing, target, axes=(0, 1, 2)) -> tuple[int, int, int]:
    """Spatial shape of a ``shape`` grid at ``spacing`` resampled to ``target`` along ``axes``.

    Each resampled axis gets ``round(n * spacing / target)`` voxels (at least 1; halves round up); an axis
    not in ``axes``, or whose spacing equals the target within :data:`SPACING_RTOL`, keeps ``n``.

    Example:
        >>> resampled_shape((101, 80, 7), (0.5, 0.5, 3.0), (1.0, 1.0, 1.0), axes=(0, 1))
        (51, 40, 7)
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise SoftsegError(f"expected a spatial shape (X, Y, Z), got {shape!r}")
    spacing, target = check_spacing(spacing, "spacing"), check_spacing(target, "target spacing")
    out = list(shape)
    for a in _axes(axes):
        if _differs(spacing[a], target[a]):
            out[a] = max(1, int(math.floor(shape[a] * spacing[a] / target[a] + 0.5)))
    return tuple(out)


def _kernel(order: int, t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    if order == 1:
        return np.clip(1.0 - t, 0.0, None)
    a = CUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def axis_weights(n_in: int, n_out: int, order: int = 1, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Taps of one axis: output voxel ``o`` is ``sum_k weights[o, k] * input[index[o, k]]``.

    Args:
        n_in: Input voxels along the axis.
        n_out: Output voxels.
        order: 0 (nearest), 1 (linear) or 3 (cubic convolution).
        antialias: Stretch the kernel by ``n_in / n_out`` when shrinking (ignored for ``order=0``).

    Returns:
        ``(index, weights)``: ``(n_out, K)`` integer indices (clamped to the axis: the edge voxel repeats)
        and float32 weights summing to 1 per row.
    """
    if order not in _RADIUS:
        raise SoftsegError(f"interpolation order must be 0 (nearest), 1 (linear) or 3 (cubic), got {order!r}")
    ratio = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * ratio - 0.5
    if order == 0:
        index = np.clip(np.floor((np.arange(n_out) + 0.5) * ratio), 0, n_in - 1).astype(np.intp)
        return index[:, None], np.ones((n_out, 1), np.float32)
    scale = max(1.0, ratio) if antialias else 1.0
    support = _RADIUS[order] * scale
    first = np.floor(centres - support).astype(np.intp) + 1
    taps = first[:, None] + np.arange(int(math.ceil(2 * support)) + 1)
    weights = _kernel(order, (taps - centres[:, None]) / scale)
    keep = np.any(weights != 0, axis=0)
    taps, weights = taps[:, keep], weights[:, keep]
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(taps, 0, n_in - 1), weights.astype(np.float32)


def _last_axis_blocks(index: np.ndarray, weights: np.ndarray) -> list[tuple[int, int, int, int, np.ndarray]]:
    """The last axis's taps as small dense matrices: ``(o0, o1, lo, hi, W)`` with output voxels ``o0:o1`` equal
    to ``input[..., lo:hi] @ W`` (a banded matrix cut into :data:`LAST_AXIS_BLOCK` columns)."""
    blocks = []
    for o0 in range(0, index.shape[0], LAST_AXIS_BLOCK):
        o1 = min(o0 + LAST_AXIS_BLOCK, index.shape[0])
        idx, w = index[o0:o1], weights[o0:o1]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        matrix = np.zeros((hi - lo, o1 - o0), np.float32)
        np.add.at(matrix, (idx - lo, np.broadcast_to(np.arange(o1 - o0)[:, None], idx.shape)), w)
        blocks.append((o0, o1, lo, hi, matrix))
    return blocks


def _pass(x: np.ndarray, axis: int, index: np.ndarray, weights: np.ndarray, out: np.ndarray,
          clip: tuple[float, float] | None) -> np.ndarray:
    """Apply one axis's taps (:func:`axis_weights`) to a 3D array, writing the C-contiguous float32 ``out`` in
    slabs of about :data:`CHUNK_BYTES` along axis 0 (each slab clipped to ``clip`` while it is in cache).

    Axes 0 and 1 gather whole contiguous rows per tap; the last axis, where a gather would pick single
    scattered values, multiplies each slab by the band of the weight matrix, block by block (BLAS).
    """
    if not out.flags.c_contiguous or out.dtype != np.float32:
        raise ValueError("resampling writes into a C-contiguous float32 array")
    shape = out.shape
    step = max(1, CHUNK_BYTES // max(4 * math.prod(shape[1:]), 1))
    if axis == 2:
        blocks = _last_axis_blocks(index, weights)
        for a in range(0, shape[0], step):
            b = min(a + step, shape[0])
            src = np.asarray(x[a:b], dtype=np.float32).reshape(-1, x.shape[2])
            dst = out[a:b].reshape(-1, shape[2])  # a view: ``out`` is C-contiguous
            for o0, o1, lo, hi, matrix in blocks:
                dst[:, o0:o1] = src[:, lo:hi] @ matrix
            if clip is not None:
                np.clip(dst, clip[0], clip[1], out=dst)
        return out
    bcast = [1, 1, 1]
    bcast[axis] = -1
    for a in range(0, shape[0], step):
        b = min(a + step, shape[0])
        dst = out[a:b]
        if axis == 0:  # chunk over output rows; each tap is a whole-row gather
            idx, w = index[a:b], weights[a:b]
            src = x
        else:  # chunk over input rows; gather along the axis inside the slab
            idx, w = index, weights
            src = x[a:b]
        np.multiply(np.take(src, idx[:, 0], axis=axis), w[:, 0].reshape(bcast), out=dst)
        for k in range(1, idx.shape[1]):
            dst += np.take(src, idx[:, k], axis=axis) * w[:, k].reshape(bcast)
        if clip is not None:
            np.clip(dst, clip[0], clip[1], out=dst)
    return out


def _resample_axis(x: np.ndarray, axis: int, n_out: int, order: int, antialias: bool,
                   out: np.ndarray | None = None, clip: tuple[float, float] | None = None) -> np.ndarray:
    """One separable pass over a 3D array: ``axis`` to ``n_out`` voxels, float32."""
    index, weights = axis_weights(x.shape[axis], n_out, order, antialias)
    if out is None:
        shape = list(x.shape)
        shape[axis] = n_out
        out = np.empty(shape, np.float32)
    return _pass(x, axis, index, weights, out, clip)


_RANGE = object()  # _resample_volume's default clip: the input's own range


def _resample_volume(x: np.ndarray, shape: tuple[int, int, int], order: int, antialias: bool,
                     out: np.ndarray | None = None, clip=_RANGE) -> np.ndarray:
    """A 3D array to ``shape`` (float32), axis by axis.

    The result is clipped to the input's range: exact for linear weights (a convex combination, up to the
    float32 rounding of the weights) and the ringing bound for cubic ones. When X and another axis change,
    X goes last and **fused**: the output is made in slabs of X rows (about :data:`FUSED_BYTES`), each from
    the few input rows it needs, resampled along Y and Z on the spot — so besides the output only one slab's
    intermediate exists (the rows shared by neighbouring slabs are resampled twice, a few percent more work).
    Otherwise the axes go one after the other, shrinking ones first, so intermediates stay small.
    ``clip``: ``(lo, hi)`` to clip to instead of the input's range (a part of a volume resampled with the
    whole volume's range), or ``None``.
    """
    todo = [a for a in range(3) if shape[a] != x.shape[a]]
    todo.sort(key=lambda a: shape[a] / x.shape[a])
    if out is None:
        out = np.empty(shape, np.float32)
    if not todo:
        out[...] = x
        return out
    if clip is _RANGE:
        clip = value_range(x) if order else None
    if 0 in todo and len(todo) > 1:
        rest = [a for a in todo if a != 0]
        index, weights = axis_weights(x.shape[0], shape[0], order, antialias)
        rows = max(1, FUSED_BYTES // (4 * shape[1] * shape[2]))
        for a in range(0, shape[0], rows):
            b = min(a + rows, shape[0])
            first, last = int(index[a:b].min()), int(index[a:b].max()) + 1
            sub = x[first:last]
            for axis in rest:
                sub = _resample_axis(sub, axis, shape[axis], order, antialias)
            _pass(sub, 0, index[a:b] - first, weights[a:b], out[a:b], clip)
        return out
    for i, axis in enumerate(todo):
        final = i == len(todo) - 1
        x = _resample_axis(x, axis, shape[axis], order, antialias, out=out if final else None,
                           clip=clip if final else None)
    return x


def value_range(x: np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of ``x``, the range a cubic resampling is clipped to; ``None`` with NaN (not clipped)."""
    lo, hi = x.min(), x.max()
    return None if np.isnan(lo) or np.isnan(hi) else (lo, hi)


def resample_planes(planes: np.ndarray, shape, *, order: int, antialias: bool = True, clip=None) -> np.ndarray:
    """``(N, H, W)`` planes resampled in-plane to ``(N, *shape)`` float32, plane by plane.

    The taps of a volume's in-plane resampling (:func:`resample_image` of a 2D model's two axes, and
    :func:`resample_probabilities_back`), for work done a few slices at a time: with ``clip`` set to the
    whole volume's range (:func:`value_range`) the planes equal the volume's, up to float32 rounding.

    Args:
        planes: ``(N, H, W)`` values (any real dtype and strides).
        shape: ``(H', W')``.
        order: 3 (cubic), 1 (linear) or 0 (nearest).
        antialias: Low-pass when shrinking (tent stretched when growing back, as in
            :func:`resample_probabilities_back`).
        clip: ``(lo, hi)`` to clip the result to, or ``None``.
    """
    planes = np.asarray(planes)
    if planes.ndim != 3:
        raise SoftsegError(f"expected planes (N, H, W), got shape {planes.shape}")
    n = planes.shape[0]
    h, w = (int(v) for v in shape)
    if planes.shape[1:] == (h, w):
        return np.asarray(planes, dtype=np.float32)
    out = _resample_volume(np.moveaxis(planes, 0, 2), (h, w, n), order, antialias, clip=clip)
    return np.ascontiguousarray(np.moveaxis(out, 2, 0))


def _check_volume(array: np.ndarray, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim or min(array.shape) < 1:
        layout = "(C, X, Y, Z)" if what == "image" else "(R, X, Y, Z)" if what == "masks" else "(X, Y, Z)"
        raise SoftsegError(f"expected {what} {layout}, got shape {array.shape}")
    return array


def _zooms(shape, new_shape, spacing) -> tuple[float, float, float]:
    return tuple(float(s) if n == m else float(s) * n / m for s, n, m in zip(spacing, shape, new_shape))


def _stack(array: np.ndarray, spacing, target, axes, order: int, antialias: bool):
    """Resample each ``(X, Y, Z)`` item of a ``(N, X, Y, Z)`` stack; ``(same object, spacing)`` when nothing changes."""
    spacing = check_spacing(spacing, "spacing")
    new_shape = resampled_shape(array.shape[1:], spacing, target, axes)
    if new_shape == tuple(array.shape[1:]):
        return array, spacing
    out = np.empty((array.shape[0], *new_shape), np.float32)
    for c in range(array.shape[0]):
        _resample_volume(array[c], new_shape, order, antialias, out=out[c])
    return out, _zooms(array.shape[1:], new_shape, spacing)


def resample_image(image: np.ndarray, spacing, target, *, axes=(0, 1, 2), order: int = 3,
                   antialias: bool = True) -> tuple[np.ndarray, tuple[float, float, float]]:
    """An image ``(C, X, Y, Z)`` resampled to the target spacing, each channel on its own.

    Args:
        image: ``(C, X, Y, Z)`` intensities (any real dtype; any strides).
        spacing: Its voxel size ``(sx, sy, sz)`` in mm.
        target: The model's target spacing.
        axes: Spatial axes to resample (a 2D model: the in-plane axes, see :func:`resample_axes`).
        order: 3 (cubic convolution, clipped to each channel's input range), 1 (linear) or 0 (nearest).
        antialias: Low-pass when shrinking an axis (see the module docstring).

    Returns:
        ``(resampled, zooms)``: float32 ``(C, X', Y', Z')`` with the shape of :func:`resampled_shape`, and
        its voxel size in mm. When no axis changes, ``image`` itself and ``spacing`` (no copy, dtype kept).

    Raises:
        SoftsegError: Not a 4D array, bad spacings, axes or order.
    """
    image = _check_volume(image, 4, "image")
    return _stack(image, spacing, target, axes, order, antialias)


def resample_soft_map(soft: np.ndarray, spacing, target, *, axes=(0, 1, 2), antialias: bool = True
                      ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A soft map ``(X, Y, Z)`` in ``[0, 1]`` (a soft label) resampled linearly to the target spacing.

    Returns:
        ``(float32 (X', Y', Z') in [0, 1], zooms)``; ``soft`` itself when no axis changes.
    """
    soft = _check_volume(soft, 3, "soft map")
    spacing = check_spacing(spacing, "spacing")
    new_shape = resampled_shape(soft.shape, spacing, target, axes)
    if new_shape == soft.shape:
        return soft, spacing
    return _resample_volume(soft, new_shape, 1, antialias), _zooms(soft.shape, new_shape, spacing)


def resample_masks(masks: np.ndarray, spacing, target, *, axes=(0, 1, 2), binary: bool = True,
                   antialias: bool = True) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Rater masks ``(R, X, Y, Z)`` resampled to the target spacing, rater by rater (linear).

    Args:
        masks: ``(R, X, Y, Z)`` binary masks (uint8 or bool).
        spacing: Their voxel size in mm.
        target: The target spacing.
        axes: Spatial axes to resample.
        binary: ``True``: keep ``>= 0.5`` of each rater's linear resampling, uint8 in ``{0, 1}`` (for
            methods that need binary raters: majority, STAPLE, per-rater metrics). ``False``: keep the
            fractions, float32 in ``[0, 1]``; their mean over raters equals :func:`resample_soft_map` of the
            mean.
        antialias: Low-pass when shrinking (a voxel then takes the share of its volume the rater marked).

    Returns:
        ``(masks, zooms)``; ``masks`` itself when no axis changes.
    """
    masks = _check_volume(masks, 4, "masks")
    spacing = check_spacing(spacing, "spacing")
    new_shape = resampled_shape(masks.shape[1:], spacing, target, axes)
    if new_shape == tuple(masks.shape[1:]):
        return masks, spacing
    out = np.empty((masks.shape[0], *new_shape), np.uint8 if binary else np.float32)
    for r in range(masks.shape[0]):
        fraction = _resample_volume(masks[r], new_shape, 1, antialias, out=None if binary else out[r])
        if binary:
            np.greater_equal(fraction, 0.5, out=out[r], casting="unsafe")
    return out, _zooms(masks.shape[1:], new_shape, spacing)


def resample_probabilities_back(prob: np.ndarray, shape, *, axes=(0, 1, 2), antialias: bool = True) -> np.ndarray:
    """The network's probabilities on the target grid, resampled linearly back onto the input's grid.

    The inverse grid mapping of :func:`resample_image` (edges of the field of view coincide), separable in
    float32 with the X pass fused slab by slab: besides the output, only one slab of about
    :data:`FUSED_BYTES` (divided by the X zoom) is allocated (1.07 × the output at 512 × 512 × 300).

    Args:
        prob: float ``(X', Y', Z')`` probabilities on the resampled grid.
        shape: The input image's spatial shape ``(X, Y, Z)``.
        axes: Axes that were resampled; the others must already have the input's size.
        antialias: Average (tent kernel stretched) where the input grid is coarser than the network's.

    Returns:
        float32 ``(X, Y, Z)`` in the range of ``prob`` (``[0, 1]`` for probabilities); ``prob`` itself when
        its shape is already ``shape`` and it is float32.

    Raises:
        SoftsegError: Not 3D, or an axis outside ``axes`` whose size differs.
    """
    prob = _check_volume(prob, 3, "probability map")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise SoftsegError(f"expected the input's spatial shape (X, Y, Z), got {shape!r}")
    axes = _axes(axes)
    fixed = [a for a in range(3) if a not in axes and prob.shape[a] != shape[a]]
    if fixed:
        raise SoftsegError(f"probability map {prob.shape} and input {shape} differ along axis {fixed[0]}, "
                           f"which was not resampled (axes {axes})")
    if prob.shape == shape:
        return prob if prob.dtype == np.float32 else prob.astype(np.float32)
    return _resample_volume(prob, shape, 1, antialias)
