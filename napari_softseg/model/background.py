"""Background is not tissue: the soft map is 0 far from the body.

A 2D network sees one slice at a time; in a whole head it meets slices and slice borders of nothing but
air and scanner noise, and it can mark a few noise speckles there (the v0.3 bundled model: 0.7 % of its
p ≥ 0.4 volume on the whole-head sample, small islands at the field of view's edges that the 3D surface
makes obvious). nnU-Net answers the same problem for MR by cropping to the non-zero region and predicting
background outside it; MR with noise in the air has no zeros, so here the body is the scan above the
normalisation's body level (:func:`~napari_softseg.model.normalization.body_level`, the level the z-score
statistics already use), with the spaces it encloses filled (ventricles, bladder, sinuses: in 3D and slice by
slice), and a voxel farther than ``margin_mm`` from it cannot be foreground.

The distance is measured on a coarse grid (cells of about :data:`CELL_MM`; a cell is body when at least
half of its voxels are, so lone noise spikes above the level in the air are not body), so a 512 × 512 × 300 scan costs a fraction of a second and no volume-sized float temporary;
the margin is therefore exact to about one cell. Structures inside air-filled organs (lung parenchyma)
would be cut by this rule: it is applied only to models whose config sets ``background_margin_mm``, which
training sets for body-region z-scored MR (``normalization.region == "body"``) and nothing else.

Example:
    >>> import numpy as np
    >>> scan = np.zeros((40, 40, 10), np.float32); scan[10:20, 10:20] = 100.0
    >>> keep = near_body(scan, (1.0, 1.0, 1.0), level=50.0, margin_mm=5.0)
    >>> bool(keep[15, 15, 5]), bool(keep[22, 15, 5]), bool(keep[35, 35, 5])
    (True, True, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Default margin for body-region models: beyond the body and its enclosed spaces (filled), a boundary layer
#: of dark tissue (bone, skin, fat suppressed) is kept; the coarse grid adds about one cell on top.
DEFAULT_MARGIN_MM = 5.0
#: Target cell size of the coarse grid the distance is measured on.
CELL_MM = 3.0


#: Share of a coarse cell's voxels that must be above the body level for the cell to count as body (lone
#: noise spikes in the air above the level do not make body).
CELL_SHARE = 0.5


def _body_cells(image: np.ndarray, level: float, cells: Sequence[int]) -> np.ndarray:
    """Coarse cells (``cells`` voxels a side) in which at least :data:`CELL_SHARE` of the voxels are above ``level``.

    The first axis is reduced one cell-thick slab at a time: no scan-sized temporary (``image > level`` of a
    512 × 512 × 300 scan is 75 MB, and ``np.add.reduceat`` would cast it whole to the count type, 300 MB).
    """
    starts = np.arange(0, image.shape[0], cells[0])
    dtype = np.uint16 if int(np.prod(cells)) < 2**16 else np.uint32      # a cell's count fits
    counts = np.empty((len(starts), *image.shape[1:]), dtype)
    for i, start in enumerate(starts):
        np.add.reduce(image[start:start + cells[0]] > level, axis=0, dtype=dtype, out=counts[i])
    sizes = np.diff(np.append(starts, image.shape[0])).reshape(-1, 1, 1).astype(np.float64)
    for axis, size in enumerate(cells[1:], start=1):
        starts = np.arange(0, image.shape[axis], size)
        counts = np.add.reduceat(counts, starts, axis=axis, dtype=dtype)
        shape = [1, 1, 1]
        shape[axis] = len(starts)
        sizes = sizes * np.diff(np.append(starts, image.shape[axis])).reshape(shape)
    return counts >= CELL_SHARE * sizes


def _fill(body: np.ndarray) -> np.ndarray:
    """The body with its enclosed dark spaces (ventricles, bladder, sinuses) filled: in 3D, and slice by slice
    along each axis (a field of view that cuts the body, e.g. at the neck, opens its inside to the border in
    3D but not in most slices)."""
    from scipy import ndimage

    filled = ndimage.binary_fill_holes(body)
    for axis in range(3):
        for i in range(body.shape[axis]):
            index = [slice(None)] * 3
            index[axis] = i
            filled[tuple(index)] |= ndimage.binary_fill_holes(body[tuple(index)])
    return filled


def near_body(image: np.ndarray, spacing: Sequence[float], *, level: float, margin_mm: float) -> np.ndarray:
    """Boolean ``(X, Y, Z)``: voxels within about ``margin_mm`` of a voxel above ``level`` (the body).

    Args:
        image: One channel ``(X, Y, Z)`` of the scan (any real dtype; NaN counts as below the level).
        spacing: Voxel size in mm.
        level: Body level (intensities above it are body).
        margin_mm: Distance from the body still kept.

    Returns:
        The mask on the scan's grid; all ``True`` when no voxel is above the level (nothing to go by).
    """
    keep, cells = _near_body_cells(np.asarray(image), spacing, level=level, margin_mm=margin_mm)
    return _on_scan_grid(keep, cells, np.asarray(image).shape, slice(None))


def _near_body_cells(image: np.ndarray, spacing, *, level: float, margin_mm: float):
    """:func:`near_body` on the coarse grid: ``(keep, cells)``; ``keep`` is None when there is no body."""

    spacing = [float(s) for s in spacing]
    cells = [max(1, int(round(CELL_MM / s))) for s in spacing]
    coarse = _body_cells(image, level, cells)
    if not coarse.any():
        return None, cells
    coarse = _fill(coarse)
    cell_mm = [c * s for c, s in zip(cells, spacing)]
    return _within(coarse, cell_mm, margin_mm + math.sqrt(sum(c * c for c in cell_mm))), cells  # a cell's own extent


def _within(body: np.ndarray, cell_mm: Sequence[float], reach_mm: float, slab: int = 16) -> np.ndarray:
    """Cells within ``reach_mm`` of a ``body`` cell: the Euclidean distance transform slab by slab.

    Exact: a body cell within ``reach_mm`` of a cell lies at most ``reach_mm / cell_mm[0]`` cells away along the
    first axis, so each slab of :math:`slab` cells sees the body in a halo that wide around it; farther cells
    only lengthen distances already above the reach. scipy's transform of the whole grid holds its feature
    transform and a float64 copy per axis (~60 bytes a cell: 100 MB at 512 × 512 × 300 with 3 mm cells, the
    top of the prediction's memory peak); a slab holds a fraction of that.
    """
    from scipy import ndimage

    halo = int(math.ceil(reach_mm / cell_mm[0]))
    keep = np.zeros(body.shape, dtype=bool)
    for start in range(0, body.shape[0], slab):
        lo, hi = max(0, start - halo), min(body.shape[0], start + slab + halo)
        part = body[lo:hi]
        if not part.any():
            continue                          # no body within reach of this slab
        distance = ndimage.distance_transform_edt(~part, sampling=cell_mm)
        keep[start:start + slab] = distance[start - lo:start - lo + slab] <= reach_mm
    return keep


def _on_scan_grid(keep, cells, shape, rows: slice) -> np.ndarray:
    """Rows ``rows`` (first axis) of the coarse ``keep`` on the scan's grid (all True without a body)."""
    first = np.arange(shape[0])[rows]
    if keep is None:
        return np.ones((len(first), *shape[1:]), dtype=bool)
    index = np.ix_(first // cells[0], *(np.arange(n) // c for n, c in zip(shape[1:], cells[1:])))
    return keep[index]


def zero_far_from_body(prob: np.ndarray, image: np.ndarray, spacing, *, level: float, margin_mm: float) -> int:
    """Set ``prob`` to 0, in place, farther than ``margin_mm`` from the body of ``image``; the voxels changed.

    Args:
        prob: The soft map ``(X, Y, Z)`` on the scan's grid (written in place).
        image: The scan's first channel ``(X, Y, Z)``.
        spacing: Voxel size in mm.
        level: Body level of the scan.
        margin_mm: See :func:`near_body`.
    """
    image = np.asarray(image)
    keep, cells = _near_body_cells(image, spacing, level=level, margin_mm=margin_mm)
    if keep is None:
        return 0
    changed = 0
    rows = max(1, (4 * 2**20) // max(1, int(np.prod(image.shape[1:]))))    # slabs: no volume-sized temporaries
    for start in range(0, image.shape[0], rows):
        far = ~_on_scan_grid(keep, cells, image.shape, slice(start, start + rows))
        out = prob[start:start + rows]
        changed += int(np.count_nonzero(np.logical_and(out != 0, far, out=far)))
        out[far] = 0.0            # far now holds the voxels to clear (0 stays 0)
    return changed
