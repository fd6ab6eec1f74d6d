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
from napari_softseg.io.files import atomic_destination, check_writable, os_error
from napari_softseg.io.memory import check_memory

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


#: More voxels than this in one file is refused outright (2**33 voxels = 32 GiB as float32).
MAX_VOXELS = 2**33
#: Largest finite float32: bigger values would become infinite when converted for the network.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class HeaderInfo:
    """What a NIfTI header says, checked before any voxel is read (see :func:`read_header`).

    Attributes:
        path: The file.
        shape: Data shape as stored (trailing axes of length 1 beyond the fourth dropped).
        dtype: Stored voxel type.
        affine: 4×4 voxel-to-world matrix (finite, invertible).
        scaled: Whether ``scl_slope`` / ``scl_inter`` turn the stored values into floats.
        image: The lazy nibabel image (header parsed, data not read).
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    affine: np.ndarray
    scaled: bool
    image: object

    @property
    def n_voxels(self) -> int:
        """Number of values in the file."""
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` (a 2D file has ``Z = 1``)."""
        return tuple(int(s) for s in (tuple(self.shape) + (1, 1))[:3])

    @property
    def read_bytes(self) -> int:
        """Memory needed to read the file: the stored values, plus float64 values when scaled."""
        return self.n_voxels * (self.dtype.itemsize + (8 if self.scaled else 0))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def read_header(path: str | os.PathLike) -> HeaderInfo:
    """Read and check a NIfTI file's header only: no voxel data is read.

    Refused, with a :class:`SoftsegError` naming the file: a missing file, a folder, a name that is
    not ``.nii``/``.nii.gz``, an unparsable header, a non-NIfTI image, fewer than 2 or more than 4
    dimensions, a zero or absurd size, complex, RGB or other non-numeric voxels, an infinite or NaN
    ``scl_slope``/``scl_inter``, a NaN/infinite or singular (zero pixdim) affine, and an uncompressed
    file shorter than its header promises.

    Example:
        >>> info = read_header("case01/image.nii.gz")  # doctest: +SKIP
        >>> info.shape, info.dtype  # doctest: +SKIP
        ((96, 96, 1), dtype('float32'))
    """
    import warnings

    import nibabel as nib

    path = Path(path)
    try:
        if not path.exists():
            raise SoftsegError("file not found", path)
        if path.is_dir():
            raise SoftsegError("is a folder, expected a NIfTI file (.nii or .nii.gz)", path)
    except OSError as exc:
        raise SoftsegError(f"cannot open: {exc.strerror or exc}", path) from None
    if not is_nifti_path(path):
        raise SoftsegError("not a NIfTI file name (expected .nii or .nii.gz)", path)
    from nibabel.imageglobals import LoggingOutputSuppressor

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), LoggingOutputSuppressor():
            warnings.simplefilter("ignore")
            raw = _raw_header(path)
            for name in ("scl_slope", "scl_inter"):
                if np.isinf(float(raw[name])):
                    raise SoftsegError(f"header {name} is {float(raw[name])}; the stored values cannot be scaled",
                                       path)
            img = nib.load(str(path))
            if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
                raise SoftsegError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
            header = img.header
            shape = tuple(int(s) for s in header.get_data_shape())
            dtype = np.dtype(header.get_data_dtype())
            slope, inter = raw["scl_slope"], raw["scl_inter"]  # as stored: nibabel would quietly drop an inf
            affine = np.asarray(img.affine, dtype=np.float64)
            uses_pixdim = int(raw["qform_code"]) > 0 or int(raw["sform_code"]) <= 0
            pixdim = np.asarray(raw["pixdim"], dtype=np.float64)[1 : 1 + min(3, len(shape))]
    except SoftsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged headers
        reason = _first_line(exc)
        if isinstance(exc, EOFError) or "compressed file ended" in reason.lower():
            reason = "file is truncated (" + reason + ")"
        elif "cannot work out file type" in reason.lower():
            reason = "nibabel does not recognise it as NIfTI (damaged or truncated?)"
        raise SoftsegError(f"cannot read NIfTI header: {reason}", path) from None
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 2 or len(shape) > 4:
        raise SoftsegError(f"unsupported number of dimensions {len(shape)} (shape {shape}); expected 2, 3 or 4", path)
    if min(shape) < 1:
        raise SoftsegError(f"header declares an empty or negative size {shape}", path)
    n = 1
    for s in shape:
        n *= s
    if n > MAX_VOXELS:
        raise SoftsegError(f"header declares {n:,} voxels ({'x'.join(map(str, shape))}), more than this tool "
                           f"handles ({MAX_VOXELS:,})", path)
    if dtype.fields is not None:
        names = "".join(dtype.names or ())
        kind = "RGB" if names in ("RGB", "RGBA") else "structured"
        raise SoftsegError(f"{kind} voxels ({names or dtype}) are not supported; save one grey value per "
                           "voxel (or the colours as separate channels)", path)
    if dtype.kind == "c":
        raise SoftsegError(f"complex-valued voxels ({dtype}) are not supported; save the magnitude or real part", path)
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise SoftsegError(f"unsupported voxel type {dtype}", path)
    slope, inter = float(slope), float(inter)
    for name, value in (("scl_slope", slope), ("scl_inter", inter)):
        if np.isinf(value):
            raise SoftsegError(f"header {name} is {value}; the stored values cannot be scaled", path)
    scaled = np.isfinite(slope) and slope != 0 and (slope != 1 or (np.isfinite(inter) and inter != 0))
    if uses_pixdim and (not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0)):
        raise SoftsegError(f"header voxel size (pixdim) {pixdim.tolist()} holds zero, NaN or infinite values; "
                           "the voxel grid cannot be placed in space", path)
    if not np.all(np.isfinite(affine)):
        raise SoftsegError("header affine (sform/qform/pixdim) holds NaN or infinite values", path)
    try:
        det = float(np.linalg.det(affine[:3, :3]))
    except np.linalg.LinAlgError:
        det = 0.0
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise SoftsegError("header affine is singular (a voxel size is zero); the voxel grid cannot be placed in "
                           "space", path)
    if not str(path).lower().endswith(".gz"):
        try:
            size = path.stat().st_size
            needed = int(header.get_data_offset()) + n * dtype.itemsize
        except (OSError, AttributeError, TypeError, ValueError):
            size, needed = 0, 0
        if size < needed:
            raise SoftsegError(f"file is truncated: {size:,} bytes but its header needs {needed:,}", path)
    return HeaderInfo(path=path, shape=shape, dtype=dtype, affine=affine, scaled=bool(scaled), image=img)


def _raw_header(path: Path):
    """The header exactly as stored (nibabel's loader silently repairs some fields)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fobj:
        block = fobj.read(540)
    if len(block) < 348:
        raise SoftsegError(f"file is truncated: {len(block)} bytes, shorter than a NIfTI header", path)
    size_le, size_be = int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")
    klass = nib.Nifti2Header if 540 in (size_le, size_be) else nib.Nifti1Header
    return klass(block[: klass.template_dtype.itemsize], check=False)


def load_volume(path: str | os.PathLike, header: HeaderInfo | None = None, *, memory_check: bool = True) -> Volume:
    """Read a NIfTI file fully into memory, after checking its header (:func:`read_header`).

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        header: Its already-checked header (read here when not given).
        memory_check: Refuse a file whose data would not fit in memory (the caller may have checked a
            whole case at once).

    Returns:
        The volume, with 2D data given a trailing axis of length 1.

    Raises:
        SoftsegError: The file is missing, not NIfTI, unreadable, truncated, too large for the memory,
            or holds values that do not fit in float32.

    Example:
        >>> vol = load_volume("case01/image.nii.gz")  # doctest: +SKIP
        >>> vol.data.shape, vol.spacing  # doctest: +SKIP
        ((96, 96, 1), (1.0, 1.0, 1.0))
    """
    import warnings

    info = read_header(path) if header is None else header
    path = info.path
    if memory_check:
        check_memory(info.read_bytes, f"reading this {'x'.join(map(str, info.shape))} {info.dtype} file", path)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            data = np.asanyarray(info.image.dataobj)
    except MemoryError:
        raise SoftsegError(f"not enough memory to read {info.n_voxels:,} voxels", path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel/zlib raise many types for damaged files
        reason = _first_line(exc)
        if isinstance(exc, EOFError) or "compressed file ended" in reason.lower() or "truncat" in reason.lower():
            reason = "file is truncated (" + reason + ")"
        raise SoftsegError(f"cannot read NIfTI: {reason}", path) from None
    data = data.reshape(info.shape)
    check_value_range(data, path)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    img = info.image
    return Volume(data=data, affine=info.affine, header=img.header, path=path)


def check_value_range(array: np.ndarray, path: str | os.PathLike | None, what: str = "data") -> None:
    """Raise if values are too large for float32 (e.g. 1e300), where the network would see infinities.

    Raises:
        SoftsegError: Naming ``path`` and the largest magnitude found.
    """
    if array.size == 0 or array.dtype.itemsize < 8 or array.dtype.kind not in "fiu":
        return
    with np.errstate(all="ignore"):
        lo, hi = array.min(), array.max()
    if array.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        return  # NaN / inf are reported by check_finite, which counts them
    big = max(abs(float(lo)), abs(float(hi)))
    if big > FLOAT32_MAX:
        raise SoftsegError(f"{what} holds values up to {big:.3g}, beyond float32's range (±3.4e38)", path)


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
    path = Path(path)
    if not is_nifti_path(path):
        raise SoftsegError("output must end in .nii or .nii.gz", path)
    check_writable(path, overwrite)
    img = nifti_image(data, reference, affine=affine, description=description, dtype=dtype)
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    try:
        with atomic_destination(path, overwrite, suffix=suffix) as tmp:
            write_image(img, tmp)
    except OSError as exc:
        raise os_error(exc, path) from None
    return path


def write_image(img, path: str | os.PathLike) -> None:
    """Save a nibabel image to ``path`` (normally a temporary name) and flush it to disk."""
    import nibabel as nib

    nib.save(img, str(path))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def nifti_image(
    data: np.ndarray,
    reference: Volume | None = None,
    *,
    affine: np.ndarray | None = None,
    description: str = "",
    dtype: np.dtype | type | None = None,
):
    """The ``Nifti1Image`` :func:`save_volume` writes (geometry from ``reference`` or ``affine``)."""
    import nibabel as nib

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
    return img
