"""Where a volume lives in space and how it is shown: :class:`Geometry` (voxel-to-mm affine + shape).

The core holds volumes in nibabel's voxel order ``(X, Y, Z)`` with the file's affine
(docs/architecture.md). For display a 3D volume is reoriented to the closest canonical (RAS) voxel order
with flips and axis swaps only (views, no copy), then transposed to ``(Z, Y, X)`` so a viewer's slider
steps through axial slices; :meth:`Geometry.napari_affine` maps those display indices to world mm in
``(z, y, x)`` order. Pure numpy + nibabel: no napari, no Qt.

Example:
    >>> import numpy as np
    >>> geom = Geometry(np.diag([2.0, 1.0, 3.0, 1.0]), (4, 5, 6))
    >>> geom.to_display(np.zeros((4, 5, 6), np.float32)).shape
    (6, 5, 4)
    >>> np.diag(geom.napari_affine())[:3].tolist()  # (z, y, x) spacing in mm
    [3.0, 1.0, 2.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_softseg.errors import SoftsegError

_IDENTITY_ORNT = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])


def reverse_matrix(n: int) -> np.ndarray:
    """Homogeneous ``(n+1, n+1)`` matrix that reverses the order of ``n`` coordinates."""
    m = np.zeros((n + 1, n + 1))
    m[np.arange(n), np.arange(n)[::-1]] = 1.0
    m[n, n] = 1.0
    return m


@dataclass(frozen=True, eq=False)
class Geometry:
    """Where a core volume lives in space and how it is shown.

    Args:
        affine: The NIfTI voxel-to-world (mm) matrix of the core ``(X, Y, Z)`` array.
        shape: The core spatial shape ``(X, Y, Z)``.

    Attributes:
        is_2d: ``Z == 1``: shown as a 2D layer ``(Y, X)``.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise SoftsegError(f"invalid affine (expected a finite 4x4 matrix, got shape {affine.shape})")
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise SoftsegError(f"invalid volume shape {shape} (expected (X, Y, Z))")
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "shape", shape)

    # -- derived -----------------------------------------------------------------------------------
    @property
    def is_2d(self) -> bool:
        return self.shape[2] == 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along X, Y, Z (column norms of the affine)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def _ornt(self) -> np.ndarray:
        """nibabel orientation of the core axes relative to RAS (identity for 2D / degenerate affines)."""
        if self.is_2d:
            return _IDENTITY_ORNT
        import nibabel.orientations as nio

        ornt = nio.io_orientation(self.affine)
        return _IDENTITY_ORNT if np.isnan(ornt).any() else ornt

    @property
    def _canonical_affine(self) -> np.ndarray:
        """Affine of the reoriented (RAS-ordered) voxel grid."""
        import nibabel.orientations as nio

        return self.affine @ nio.inv_ornt_aff(self._ornt, self.shape)

    @property
    def display_shape(self) -> tuple[int, ...]:
        """Shape of a spatial layer: ``(Z', Y', X')`` in 3D, ``(Y, X)`` in 2D."""
        if self.is_2d:
            return (self.shape[1], self.shape[0])
        ornt = self._ornt
        canonical = [0, 0, 0]
        for axis, (target, _) in enumerate(ornt):
            canonical[int(target)] = self.shape[axis]
        return tuple(canonical[::-1])

    # -- transforms --------------------------------------------------------------------------------
    def to_display(self, array: np.ndarray) -> np.ndarray:
        """Core ``(..., X, Y, Z)`` -> display ``(..., Z', Y', X')`` (2D: ``(..., Y, X)``); a view.

        Leading axes (channels, raters) are kept in front.
        """
        array = np.asarray(array)
        self._check_core(array)
        lead = array.ndim - 3
        if self.is_2d:
            return np.swapaxes(array[..., 0], -1, -2)
        import nibabel.orientations as nio

        moved = np.moveaxis(array, list(range(lead)), list(range(3, 3 + lead))) if lead else array
        canonical = nio.apply_orientation(moved, self._ornt)  # (X', Y', Z', ...lead)
        order = [2, 1, 0] if not lead else [*range(3, 3 + lead), 2, 1, 0]
        return canonical.transpose(order)

    def from_display(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_display`: display ``(..., Z', Y', X')`` -> core ``(..., X, Y, Z)``; a view.

        Raises:
            SoftsegError: The array's trailing shape is not this geometry's display shape.
        """
        array = np.asarray(array)
        dshape = self.display_shape
        if array.shape[array.ndim - len(dshape):] != dshape or array.ndim < len(dshape):
            raise SoftsegError(
                f"layer shape {array.shape} does not match the image's {dshape} (display order)"
            )
        lead = array.ndim - len(dshape)
        if self.is_2d:
            return np.swapaxes(array, -1, -2)[..., np.newaxis]
        import nibabel.orientations as nio

        canonical = array.transpose([*range(lead), lead + 2, lead + 1, lead])  # (..., X', Y', Z')
        moved = np.moveaxis(canonical, list(range(lead)), list(range(3, 3 + lead))) if lead else canonical
        back = nio.ornt_transform(_IDENTITY_ORNT, self._ornt)
        core = nio.apply_orientation(moved, back)
        return np.moveaxis(core, list(range(3, 3 + lead)), list(range(lead))) if lead else core

    def napari_affine(self, n_leading: int = 0) -> np.ndarray:
        """napari affine of a display layer: display indices -> world mm ``(z, y, x)`` (2D: ``(y, x)``).

        Args:
            n_leading: Leading non-spatial axes (e.g. 1 for a channel axis); they get an identity block.
        """
        if self.is_2d:
            a = self.affine
            spatial = np.array([[a[1, 1], a[1, 0], a[1, 3]], [a[0, 1], a[0, 0], a[0, 3]], [0.0, 0.0, 1.0]])
        else:
            rev = reverse_matrix(3)
            spatial = rev @ self._canonical_affine @ rev
        if not n_leading:
            return spatial
        n = spatial.shape[0] - 1
        out = np.eye(n_leading + n + 1)
        out[n_leading:, n_leading:] = spatial
        return out

    def _check_core(self, array: np.ndarray) -> None:
        if array.ndim < 3 or tuple(array.shape[-3:]) != self.shape:
            raise SoftsegError(f"array shape {array.shape} does not end in the volume shape {self.shape}")

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-friendly form stored in ``layer.metadata``."""
        return {"affine": self.affine.tolist(), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(np.asarray(d["affine"], dtype=np.float64), tuple(d["shape"]))

    def same_as(self, other: Geometry, atol: float = 1e-3) -> bool:
        """Same grid: shape equal and affines within ``atol`` mm."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))

    def nifti_header(self):
        """A fresh ``Nifti1Header`` carrying this geometry (sform/qform = scanner, units mm)."""
        import nibabel as nib

        img = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), self.affine)
        header = img.header
        header.set_zooms(self.spacing)
        header.set_xyzt_units("mm")
        return header


def check_spacing(values, name: str = "spacing") -> tuple[float, float, float]:
    """``values`` as three finite, positive voxel sizes in mm (the one check of a spacing argument).

    Raises:
        SoftsegError: Not three numbers, or a size that is zero, negative, NaN or infinite.
    """
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise SoftsegError(f"{name} must be three numbers (mm), got {values!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) and v > 0 for v in out):
        raise SoftsegError(f"{name} must be three positive voxel sizes in mm, got {values!r}")
    return out
