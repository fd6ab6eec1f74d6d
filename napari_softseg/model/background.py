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


def _body_cells(body: np.ndarray, cells: Sequence[int]) -> np.ndarray:
    """Coarse cells (``cells`` voxels a side) in which at least :data:`CELL_SHARE` of the voxels are body."""
    counts = body
    sizes = np.ones((1, 1, 1))
    for axis, size in enumerate(cells):
        starts = np.arange(0, body.shape[axis], size)
        counts = np.add.reduceat(counts, starts, axis=axis, dtype=np.uint32)
        shape = [1, 1, 1]
        shape[axis] = len(starts)
        sizes = sizes * np.diff(np.append(starts, body.shape[axis])).reshape(shape)
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
    from scipy import ndimage

    image = np.asarray(image)
    spacing = [float(s) for s in spacing]
    cells = [max(1, int(round(CELL_MM / s))) for s in spacing]
    coarse = _body_cells(image > level, cells)   # one byte a voxel, then the coarse counts
    if not coarse.any():
        return np.ones(image.shape, dtype=bool)
    coarse = _fill(coarse)
    cell_mm = [c * s for c, s in zip(cells, spacing)]
    distance = ndimage.distance_transform_edt(~coarse, sampling=cell_mm)
    keep = distance <= margin_mm + math.sqrt(sum(c * c for c in cell_mm))   # a cell's own extent
    index = np.ix_(*(np.arange(n) // c for n, c in zip(image.shape, cells)))
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
    far = ~near_body(image, spacing, level=level, margin_mm=margin_mm)
    changed = 0
    rows = max(1, (16 * 2**20) // max(1, far[0].size))   # slabs: no volume-sized temporaries
    for start in range(0, far.shape[0], rows):
        sub, out = far[start:start + rows], prob[start:start + rows]
        changed += int(np.count_nonzero(out[sub]))
        out[sub] = 0.0
    return changed
