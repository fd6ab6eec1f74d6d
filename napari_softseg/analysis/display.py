"""How an operating point is drawn: display arrays and renderer settings for the mask ``p >= t``.

The threshold model (:mod:`napari_softseg.analysis.operating_point`) gives the numbers; this module gives
what a viewer shows for them, without touching a GUI:

* The **filled overlay** is never computed on the CPU: the viewer shows the soft map itself through a
  two-colour colormap whose switch point sits at ``t`` (:func:`overlay_contrast_limits`,
  :func:`threshold_colormap_controls`), so the renderer applies the threshold.
* The **contour overlay** is computed only for the slice being displayed: :class:`ContourView` is an
  array-like over the soft map whose ``view[index]`` is the boundary of ``p[index] >= t``
  (:func:`mask_boundary`), optionally on a finer grid (:func:`upsampled_affine` places it);
  :class:`BandsView` draws fixed iso-lines (confidence bands) the same way.

Example:
    >>> import numpy as np
    >>> p = np.zeros((5, 5), np.float32); p[1:4, 1:4] = 0.8
    >>> mask_boundary(p >= 0.5).astype(int)[2].tolist()
    [0, 1, 0, 1, 0]
    >>> lo, hi = overlay_contrast_limits(0.5)
    >>> hi == 0.5 and lo < hi
    True
"""

from __future__ import annotations

import numpy as np

#: Width (in probability units) of the colormap ramp that applies the threshold in the renderer: the
#: contrast limits are ``(t - OVERLAY_WIDTH, t)``. Narrower ramps make napari rescale the data on the CPU
#: (its float32 precision guard), which would cost a full re-slice per move.
OVERLAY_WIDTH = 1e-4

#: Where in the ramp the colour switches on. A value in ``[t - OVERLAY_WIDTH * (1 - OVERLAY_SWITCH), t)``
#: (1e-6 below t: a thousandth of a slider step) is drawn as "above"; ``p == t`` stays safely coloured
#: despite float32 rounding in the shader (it maps to 1.0 ± 6e-4).
OVERLAY_SWITCH = 0.99


def overlay_contrast_limits(threshold: float) -> tuple[float, float]:
    """Contrast limits that make a two-colour colormap draw exactly ``p >= threshold``.

    Used with :func:`threshold_colormap_controls`: transparent below the switch near the top of the ramp,
    coloured from it on; the ramp ends at ``threshold``, so ``p == threshold`` is coloured.
    """
    t = float(threshold)
    return (t - OVERLAY_WIDTH, t)


def threshold_colormap_controls() -> tuple[float, float, float]:
    """Control points of the step colormap used with :func:`overlay_contrast_limits`."""
    return (0.0, OVERLAY_SWITCH, 1.0)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """The inner boundary of a binary mask: voxels of the mask with a 4-/6-neighbour outside it.

    Voxels on the array's edge count as boundary (the outside of the array is background). Works on
    any dimensionality; the threshold explorer calls it on one displayed 2D slice.

    Args:
        mask: Bool array.

    Returns:
        Bool array of the same shape.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 0 or not mask.any():
        return np.zeros_like(mask)
    interior = mask.copy()
    for axis in range(mask.ndim):
        if mask.shape[axis] < 3:
            interior[:] = False
            break
        lead = [slice(None)] * mask.ndim
        lag = [slice(None)] * mask.ndim
        lead[axis] = slice(1, None)
        lag[axis] = slice(None, -1)
        interior[tuple(lag)] &= mask[tuple(lead)]
        interior[tuple(lead)] &= mask[tuple(lag)]
        edge = [slice(None)] * mask.ndim
        edge[axis] = 0
        interior[tuple(edge)] = False
        edge[axis] = -1
        interior[tuple(edge)] = False
    return mask & ~interior


def _index_key(index) -> tuple | None:
    """A hashable, comparable form of a basic index (ints, slices, Ellipsis), None for anything else."""
    index = index if isinstance(index, tuple) else (index,)
    key = []
    for i in index:
        if isinstance(i, slice):
            key.append(("s", i.start, i.stop, i.step))
        elif i is Ellipsis:
            key.append(("e",))
        elif isinstance(i, (int, np.integer)):
            key.append(("i", int(i)))
        else:
            return None
    return tuple(key)


class ContourView:
    """Array-like over a soft map whose items are the boundary of ``p >= threshold``.

    Give it to a viewer layer as data: the viewer indexes it for the one slice it displays, so only that
    slice is thresholded. Change :attr:`threshold` and ask the layer to refresh.

    With ``upsample = f > 1`` the view is ``f`` times finer along the last two axes (nearest-neighbour
    upsampling of the soft map, then the boundary on that finer grid), so the outline is ``1/f`` of a
    voxel wide: a thin, crisp line on screen instead of a voxel-wide band. Its layer must then place
    the finer grid on the soft map (:func:`upsampled_affine`).

    Args:
        data: The soft map (not copied).
        threshold: Initial threshold.
        planes: Number of trailing axes that form one plane (2: a 3D index result is outlined plane by
            plane along its first axis, as the slices a user scrolls through).
        outline_volumes: If False, a request spanning more than one plane (what a 3D view asks for) gives an all-zero result without touching the data: a viewer that re-slices a 3D view
            on every threshold change would otherwise outline the whole volume each time.
            ``np.asarray(view)`` always outlines everything.
        upsample: Integer factor of the finer grid along the last two axes (1: the soft map's own grid).

    Example:
        >>> p = np.zeros((2, 5, 5), np.float32); p[:, 1:4, 1:4] = 0.8
        >>> ContourView(p, 0.5)[0].astype(int)[1:4, 1:4].tolist()
        [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
        >>> ContourView(p, 0.5, upsample=2)[0].astype(int)[2:8, 2].tolist()   # a half-voxel-wide line
        [1, 1, 1, 1, 1, 1]
        >>> ContourView(p, 0.5, upsample=2).shape
        (2, 10, 10)
    """

    def __init__(self, data: np.ndarray, threshold: float = 0.5, planes: int = 2, outline_volumes: bool = True,
                 upsample: int = 1):
        self.data = data
        self.threshold = float(threshold)
        self.planes = planes
        self.outline_volumes = outline_volumes
        self.upsample = max(1, int(upsample))
        #: While True, a plane asked for again is outlined from the copy kept the last time instead of
        #: being gathered from ``data`` anew (a display plane across the volume's memory order is a
        #: strided gather: ~2 ms of a slider step at 512 × 512). Set it only around a change of
        #: :attr:`threshold` (the data are unchanged); any other request gathers the plane again.
        self.same_data = False
        self._kept: tuple | None = None          # (index key, gathered plane)

    @property
    def shape(self) -> tuple[int, ...]:
        f = self.upsample
        shape = tuple(self.data.shape)
        return shape[:-2] + tuple(n * f for n in shape[-2:]) if f > 1 and len(shape) >= 2 else shape

    def _fine(self, index) -> np.ndarray:
        """``self.data`` upsampled by :attr:`upsample` along the last two axes, indexed by ``index``."""
        f = self.upsample
        if f == 1:
            return self.data[index]
        ndim = self.data.ndim
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1:]
        index = tuple(index) + (slice(None),) * (ndim - len(index))
        coarse, fine = [], []
        for axis, i in enumerate(index):
            if axis < ndim - 2:
                coarse.append(i)
                continue
            n = self.shape[axis]
            if isinstance(i, slice):
                positions = np.arange(n)[i]
                coarse.append(positions // f)           # fancy index on one axis at a time (below)
                fine.append(True)
            else:
                coarse.append(int(i) % n // f)
                fine.append(False)
        # apply the spatial picks one axis at a time (numpy would pair two fancy indices)
        part = self.data[tuple(coarse[: ndim - 2]) + (slice(None), slice(None))]
        last = [c for c in coarse[ndim - 2:]]
        kept_axes = np.ndim(part)
        for k, pick in enumerate(last):
            axis = kept_axes - 2 + k
            if isinstance(pick, np.ndarray):
                part = np.take(part, pick, axis=axis)
            else:
                part = np.take(part, [pick], axis=axis)
        squeeze = tuple(np.ndim(part) - 2 + k for k, keep in enumerate(fine) if not keep)
        return np.squeeze(part, axis=squeeze) if squeeze else part

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if not self.outline_volumes:
            # decide from the result's shape before touching the data
            # a zero-stride stand-in of the view's shape: indexing it costs nothing
            shape = np.broadcast_to(np.bool_(False), self.shape)[index].shape
            if sum(n > 1 for n in shape) > self.planes:
                return np.broadcast_to(np.uint8(0), shape)
        key = _index_key(index)
        if self.same_data and key is not None and self._kept is not None and self._kept[0] == key:
            return self._outline(self._kept[1])
        part = self._fine(index)
        # one plane, also when asked as a one-thick slab (what napari asks: ``slice(z, z + 1)``)
        if key is not None and sum(n > 1 for n in np.shape(part)) <= self.planes:
            part = np.ascontiguousarray(part)
            self._kept = (key, part)
        return self._outline(part)

    def _outline(self, part) -> np.ndarray:
        mask = np.asarray(part) >= self.threshold
        if mask.ndim <= self.planes:
            return mask_boundary(mask).view(np.uint8)
        flat = mask.reshape((-1,) + mask.shape[-self.planes :])
        out = np.stack([mask_boundary(m) for m in flat]).reshape(mask.shape)
        return out.view(np.uint8)

    def __array__(self, dtype=None, copy=None):
        out = self._outline(self._fine((slice(None),) * self.data.ndim))
        return out if dtype is None else out.astype(dtype)


def upsampled_affine(factor: int, ndim: int) -> np.ndarray:
    """Homogeneous matrix from the finer grid of a ``ContourView(upsample=factor)`` to the soft map's indices.

    Fine index ``u`` along each of the last two axes is the point ``(u + 0.5) / factor - 0.5`` of the
    coarse grid (pixel centres line up); other axes are unchanged.

    >>> upsampled_affine(2, 2)[:2, :].tolist()
    [[0.5, 0.0, -0.25], [0.0, 0.5, -0.25]]
    """
    m = np.eye(ndim + 1)
    for axis in range(max(0, ndim - 2), ndim):
        m[axis, axis] = 1.0 / factor
        m[axis, ndim] = 0.5 / factor - 0.5
    return m


class BandsView(ContourView):
    """Array-like whose items are the iso-lines of a soft map at several levels (confidence bands).

    ``view[index]`` is 1 on the boundary of ``p >= level`` for any of ``levels`` (one displayed slice at
    a time, like :class:`ContourView`). The levels do not move with the slider, so a viewer asks for a
    slice only when the user scrolls.

    Example:
        >>> p = np.tile(np.linspace(0, 1, 9, dtype=np.float32), (3, 1))
        >>> BandsView(p, (0.25, 0.75))[1].astype(int).tolist()
        [0, 0, 1, 0, 0, 0, 1, 0, 0]
    """

    def __init__(self, data: np.ndarray, levels=(0.1, 0.5, 0.9), planes: int = 2, outline_volumes: bool = True,
                 upsample: int = 1):
        super().__init__(data, float(levels[0]), planes=planes, outline_volumes=outline_volumes, upsample=upsample)
        self.levels = tuple(float(v) for v in levels)

    def _outline(self, part) -> np.ndarray:
        part = np.asarray(part)
        out = np.zeros(part.shape, dtype=np.uint8)
        for level in self.levels:
            self.threshold = level
            # the boundary of p >= level inside the region, without the array's own edge
            outline = super()._outline(part).astype(bool)
            if part.ndim >= 1:
                edge = np.zeros(part.shape, dtype=bool)
                for axis in range(part.ndim - min(self.planes, part.ndim), part.ndim):
                    index = [slice(None)] * part.ndim
                    index[axis] = 0
                    edge[tuple(index)] = True
                    index[axis] = -1
                    edge[tuple(index)] = True
                outline &= ~edge
            out |= outline
        return out
