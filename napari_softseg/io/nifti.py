"""Reading and writing NIfTI volumes safely.

Reading turns every way a file can be bad (missing, not NIfTI, truncated, NaN) into a
:class:`~napari_softseg.errors.SoftsegError` that names the file. Writing is atomic (a temporary name in
the same folder, then :func:`os.replace`) and never overwrites an existing file unless asked, so an
interrupted write leaves nothing half-made and nothing the user made is lost.

Arrays keep nibabel's voxel order ``(X, Y, Z[, C])`` so the file's affine applies unchanged; a 2D file
stored as ``(X, Y)`` is given a trailing axis of length 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import atomic_destination, check_writable

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether a path's name ends like a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"image.nii.gz"`` -> ``"image"``."""
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class Volume:
    """A NIfTI volume: data in voxel order, its affine and header.

    Attributes:
        data: Array as stored, ``(X, Y, Z)`` or ``(X, Y, Z, C)``; 2D ``(X, Y)`` becomes ``(X, Y, 1)``.
        affine: 4×4 voxel-to-world (mm) matrix.
        header: The nibabel header, reused when writing results for this volume.
        path: Where it was read from (``None`` for in-memory volumes).
    """

    data: np.ndarray
    affine: np.ndarray
    header: object
    path: Path | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the first three axes, from the affine (what places the voxels)."""
        from nibabel.affines import voxel_sizes

        return tuple(float(z) for z in voxel_sizes(self.affine)[:3])

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The first three axes of :attr:`data`."""
        return tuple(int(s) for s in self.data.shape[:3])


def load_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI file fully into memory.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.

    Returns:
        The volume, with 2D data given a trailing axis of length 1.

    Raises:
        SoftsegError: The file is missing, not NIfTI, unreadable or truncated.

    Example:
        >>> vol = load_volume("case01/image.nii.gz")  # doctest: +SKIP
        >>> vol.data.shape, vol.spacing  # doctest: +SKIP
        ((96, 96, 1), (1.0, 1.0, 1.0))
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise SoftsegError("file not found", path)
    if path.is_dir():
        raise SoftsegError("is a folder, expected a NIfTI file (.nii or .nii.gz)", path)
    if not is_nifti_path(path):
        raise SoftsegError("not a NIfTI file name (expected .nii or .nii.gz)", path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, EOFError) or "compressed file ended" in reason.lower():
            reason = "file is truncated (" + reason + ")"
        raise SoftsegError(f"cannot read NIfTI: {reason}", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise SoftsegError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    elif data.ndim < 2 or data.ndim > 4:
        raise SoftsegError(f"unsupported number of dimensions {data.ndim} (shape {data.shape})", path)
    return Volume(data=data, affine=np.asarray(img.affine, dtype=np.float64), header=img.header, path=path)


def check_finite(array: np.ndarray, path: str | os.PathLike | None, what: str = "data") -> None:
    """Raise if ``array`` holds NaN or infinite values.

    Raises:
        SoftsegError: Naming ``path`` and how many voxels are not finite.
    """
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise SoftsegError(f"{what} contains {bad} NaN or infinite value(s)", path)


def save_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    reference: Volume | None = None,
    *,
    affine: np.ndarray | None = None,
    overwrite: bool = False,
    description: str = "",
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write ``data`` as NIfTI next to nothing half-made.

    The geometry comes from ``reference`` (its affine and header: qform/sform codes, units) or from
    ``affine``. The file is written to a temporary name in the same folder and renamed into place.

    Args:
        path: Output ``.nii`` / ``.nii.gz`` path; parent folders are created.
        data: Array in voxel order ``(X, Y, Z[, C])``.
        reference: Volume whose affine and header the output should carry.
        affine: Used when there is no reference (identity if both are missing).
        overwrite: Replace an existing file. Without it an existing file is an error.
        description: Stored in the header's ``descrip`` field (80 bytes; longer text is cut).
        dtype: Stored data type (default: ``data.dtype``).

    Returns:
        The written path.

    Raises:
        SoftsegError: The path exists and ``overwrite`` is false, or the name is not NIfTI, or writing
            failed (the message says why; no partial file is left).
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise SoftsegError("output must end in .nii or .nii.gz", path)
    check_writable(path, overwrite)
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if reference is not None:
        header = reference.header.copy()
        # keep geometry and units only: the source's display window / intent would mislead viewers
        header["cal_min"] = 0
        header["cal_max"] = 0
        header.set_intent("none")
        header["aux_file"] = b""
        out_affine = reference.affine if affine is None else affine
    else:
        header = None
        out_affine = np.eye(4) if affine is None else affine
    img = nib.Nifti1Image(data, np.asarray(out_affine, dtype=np.float64), header=header)
    img.set_data_dtype(data.dtype)
    img.header["scl_slope"] = np.nan  # store values as they are
    img.header["scl_inter"] = np.nan
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    try:
        with atomic_destination(path, overwrite, suffix=".part" + suffix) as tmp:
            nib.save(img, tmp)
    except OSError as exc:
        raise SoftsegError(f"could not write: {exc.strerror or exc}", path) from None
    return path
