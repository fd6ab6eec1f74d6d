"""Reading and writing NIfTI volumes safely.

Reading turns every way a file can be bad (missing, not NIfTI, truncated, NaN) into a
:class:`~napari_softseg.errors.SoftsegError` that names the file. Writing is atomic (a temporary name in
the same folder, then :func:`os.replace`) and never overwrites an existing file unless asked, so an
interrupted write leaves nothing half-made and nothing the user made is lost.

Arrays keep nibabel's voxel order ``(X, Y, Z[, C])`` so the file's affine applies unchanged; a 2D file
stored as ``(X, Y)`` is given a trailing axis of length 1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import atomic_destination, check_writable, os_error
from napari_softseg.io.formats import (
    FORMATS_HINT,
    NIFTI_SUFFIXES,
    is_image_path,
    open_image,
    raw_nifti_header,
    repair_affine,
)
from napari_softseg.io.geometry import Geometry
from napari_softseg.io.memory import check_memory, count_where

logger = logging.getLogger(__name__)


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether a path's name ends like a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def peek_nifti_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The data shape in a NIfTI-1 or NIfTI-2 header, read from the file's first bytes; None if it is not one.

    For quick size estimates on the GUI thread (which file to read in the background): importing nibabel
    there costs ~0.2 s. Reading the data always goes through nibabel (:func:`load_volume`).

    Example:
        >>> import tempfile, nibabel as nib
        >>> f = Path(tempfile.mkdtemp()) / "x.nii.gz"
        >>> nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4)).to_filename(f)
        >>> peek_nifti_shape(f)
        (4, 5, 6)
    """
    import gzip

    try:
        opener = gzip.open if str(path).lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError):
        return None
    for size, fmt, offset in ((348, "h", 40), (540, "q", 16)):
        for order in "<>":
            if len(head) >= size and np.frombuffer(head[:4], f"{order}i4")[0] == size:
                dim = np.frombuffer(head[offset:offset + 8 * np.dtype(fmt).itemsize], f"{order}{fmt}")
                ndim = int(dim[0])
                if not 1 <= ndim <= 7 or (dim[1:ndim + 1] < 0).any():
                    return None
                return tuple(int(n) for n in dim[1:ndim + 1])
    return None


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
        warnings: Valid-but-notable facts found while reading (geometry repaired, axes dropped, ...).
    """

    data: np.ndarray
    affine: np.ndarray
    header: object
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

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
    """What an image header says, checked before any voxel is read (see :func:`read_header`).

    Attributes:
        path: The file.
        shape: Data shape as stored (trailing axes of length 1 beyond the fourth dropped).
        dtype: Stored voxel type.
        affine: 4×4 voxel-to-world matrix (finite, invertible).
        scaled: Whether ``scl_slope`` / ``scl_inter`` turn the stored values into floats.
        image: The lazy image (header parsed, data not read): ``dataobj`` and ``header``.
        warnings: Valid-but-notable facts (geometry repaired, trailing axes dropped); shown once read.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    affine: np.ndarray
    scaled: bool
    image: object
    warnings: list[str] = field(default_factory=list)

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
    """Read and check an image file's header only: no voxel data is read.

    Every format of :mod:`napari_softseg.io.formats` is accepted (NIfTI, Analyze, MGH/MGZ, MINC1, PAR/REC,
    AFNI, NRRD). Refused, with a :class:`SoftsegError` naming the file: a missing file (or the data file
    of a pair), a folder, a name of no supported format, an unparsable header, fewer than 2 or more than
    4 dimensions (trailing axes of length 1 are dropped first, with a note), a zero or absurd size,
    complex, RGB or other non-numeric voxels, an infinite ``scl_slope``/``scl_inter``, and an uncompressed
    file shorter than its header promises. A zero/NaN voxel size or a singular or non-finite affine is
    opened axis-aligned (1 mm where the size is unusable) with a warning in :attr:`HeaderInfo.warnings`.

    Example:
        >>> info = read_header("case01/image.nii.gz")  # doctest: +SKIP
        >>> info.shape, info.dtype  # doctest: +SKIP
        ((96, 96, 1), dtype('float32'))
    """
    import warnings

    path = Path(path)
    try:
        if not path.exists():
            raise SoftsegError("file not found", path)
        if path.is_dir():
            raise SoftsegError(f"is a folder, expected an image file ({FORMATS_HINT})", path)
    except OSError as exc:
        raise SoftsegError(f"cannot open: {exc.strerror or exc}", path) from None
    if not is_image_path(path):
        raise SoftsegError(f"not an image file name (expected {FORMATS_HINT})", path)
    from nibabel.imageglobals import LoggingOutputSuppressor

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), LoggingOutputSuppressor():
            warnings.simplefilter("ignore")
            if is_nifti_path(path):  # as stored, before nibabel parses (and repairs) it
                _check_scaling(raw_nifti_header(path), path)
            opened = open_image(path)
            raw = opened.raw_nifti
            if raw is not None:
                _check_scaling(raw, path)
                uses_pixdim = int(raw["qform_code"]) > 0 or int(raw["sform_code"]) <= 0
                pixdim = np.asarray(raw["pixdim"], dtype=np.float64)[1:4]
                if not uses_pixdim and not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
                    pixdim = np.linalg.norm(opened.affine[:3, :3], axis=0)  # the sform places the voxels
                slope, inter = float(raw["scl_slope"]), float(raw["scl_inter"])  # nibabel drops an inf quietly
                opened.scaled = bool(np.isfinite(slope) and slope != 0
                                     and (slope != 1 or (np.isfinite(inter) and inter != 0)))
                opened.zooms = pixdim
    except SoftsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for damaged headers
        reason = _first_line(exc)
        if isinstance(exc, EOFError) or "compressed file ended" in reason.lower():
            reason = "file is truncated (" + reason + ")"
        elif "cannot work out file type" in reason.lower():
            reason = "nibabel does not recognise it (damaged or truncated?)"
        raise SoftsegError(f"cannot read {_format_name(path)} header: {reason}", path) from None
    shape, notes = squeeze_shape(opened.shape, path)
    notes = opened.notes + notes
    if min(shape) < 1:
        raise SoftsegError(f"header declares an empty or negative size {shape}", path)
    n = 1
    for s in shape:
        n *= s
    if n > MAX_VOXELS:
        raise SoftsegError(f"header declares {n:,} voxels ({'x'.join(map(str, shape))}), more than this tool "
                           f"handles ({MAX_VOXELS:,})", path)
    dtype = opened.dtype
    if dtype.fields is not None:
        names = "".join(dtype.names or ())
        kind = "RGB" if names in ("RGB", "RGBA") else "structured"
        raise SoftsegError(f"{kind} voxels ({names or dtype}) are not supported; save one grey value per "
                           "voxel (or the colours as separate channels)", path)
    if dtype.kind == "c":
        raise SoftsegError(f"complex-valued voxels ({dtype}) are not supported; save the magnitude or real part", path)
    if dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise SoftsegError(f"unsupported voxel type {dtype}", path)
    affine, note = repair_affine(opened.affine, opened.zooms[: min(3, len(shape))])
    if note:
        notes.append(note)
    if not opened.compressed and opened.offset >= 0:
        try:
            size = opened.data_file.stat().st_size
            needed = opened.offset + n * dtype.itemsize
        except (OSError, AttributeError, TypeError, ValueError):
            size, needed = 0, 0
        if size < needed:
            where = "" if opened.data_file == path else f" (data file {opened.data_file.name})"
            raise SoftsegError(f"file is truncated{where}: {size:,} bytes but its header needs {needed:,}", path)
    return HeaderInfo(path=path, shape=shape, dtype=dtype, affine=affine, scaled=opened.scaled,
                      image=opened.image, warnings=notes)


def _format_name(path: Path) -> str:
    return "NIfTI" if is_nifti_path(path) else "image"


def _check_scaling(raw, path: Path) -> None:
    for name in ("scl_slope", "scl_inter"):
        if np.isinf(float(raw[name])):
            raise SoftsegError(f"header {name} is {float(raw[name])}; the stored values cannot be scaled", path)


def squeeze_shape(shape: tuple[int, ...], path) -> tuple[tuple[int, ...], list[str]]:
    """The shape the core works with: trailing axes of length 1 beyond the fourth dropped (with a note).

    Raises:
        SoftsegError: Fewer than 2 dimensions, or more than 4 left (real 5D data: the line says what
            the extra axes hold, and that MONAI's ``(X, Y, Z, 1, C)`` class probabilities open as soft maps).
    """
    shape = tuple(int(s) for s in shape)
    squeezed = shape
    while len(squeezed) > 4 and squeezed[-1] == 1:
        squeezed = squeezed[:-1]
    if len(squeezed) == 4 and len(shape) > 4 and squeezed[-1] == 1:
        squeezed = squeezed[:3]
    notes = []
    if len(squeezed) < len(shape):
        notes.append(f"stored as {len(shape)}D {shape}: the trailing axes of length 1 are dropped, read as "
                     f"{len(squeezed)}D {squeezed}")
    if len(squeezed) < 2:
        raise SoftsegError(f"unsupported number of dimensions {len(shape)} (shape {shape}); expected 2, 3 or 4",
                           path)
    if len(squeezed) > 4:
        extra = " x ".join(map(str, squeezed[3:]))
        hint = (" (MONAI class probabilities (X, Y, Z, 1, C) open in the viewer as soft maps)"
                if len(squeezed) == 5 and squeezed[3] == 1 else "")
        raise SoftsegError(f"{len(squeezed)}D data {squeezed} is not supported: {extra} values per voxel "
                           f"(time points, echoes or vectors?); save one 3D volume, or channels as a 4D file{hint}",
                           path)
    return squeezed, notes


def load_volume(path: str | os.PathLike, header: HeaderInfo | None = None, *, memory_check: bool = True) -> Volume:
    """Read an image file fully into memory, after checking its header (:func:`read_header`).

    Its :attr:`HeaderInfo.warnings` are logged (``warning: FILE: ...``, shown by the CLI and napari) and
    kept in :attr:`Volume.warnings`. A file of another format than NIfTI gets a fresh NIfTI header carrying
    its geometry, so results written for it are NIfTI.

    Args:
        path: An image file (see :func:`read_header`).
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
    from nibabel.imageglobals import LoggingOutputSuppressor

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), LoggingOutputSuppressor():
            warnings.simplefilter("ignore")
            data = np.asanyarray(info.image.dataobj)
            header = info.image.header
    except MemoryError:
        raise SoftsegError(f"not enough memory to read {info.n_voxels:,} voxels", path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel/zlib raise many types for damaged files
        reason = _first_line(exc)
        if isinstance(exc, EOFError) or "compressed file ended" in reason.lower() or "truncat" in reason.lower():
            reason = "file is truncated (" + reason + ")"
        raise SoftsegError(f"cannot read {_format_name(path)}: {reason}", path) from None
    data = data.reshape(info.shape)
    check_value_range(data, path)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if not is_nifti_path(path) or info.warnings:  # geometry as repaired / other formats: a clean NIfTI header
        header = Geometry(info.affine, data.shape[:3]).nifti_header()
    for note in info.warnings:
        logger.warning("warning: %s: %s", path, note)
    return Volume(data=data, affine=info.affine, header=header, path=path, warnings=list(info.warnings))


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
        bad = count_where(array, lambda a: ~np.isfinite(a))
        if bad:
            raise SoftsegError(f"{what} contains {bad} NaN or infinite value(s)", path)


def replace_non_finite(array: np.ndarray, path: str | os.PathLike | None, what: str = "image") -> np.ndarray:
    """NaN and infinite voxels set to background (the smallest finite value, 0 if none), with a warning.

    Common in registration outputs (NaN outside the field of view); nnU-Net and MONAI treat such voxels
    the same way. The warning (``warning: FILE: image has N NaN or infinite voxel(s) ...``) is logged once
    per call. Arrays without non-finite values are returned unchanged (no copy).

    Example:
        >>> replace_non_finite(np.array([1.0, np.nan, 3.0], np.float32), None).tolist()
        [1.0, 1.0, 3.0]
    """
    if not np.issubdtype(array.dtype, np.floating):
        return array
    count = count_where(array, lambda a: ~np.isfinite(a))     # no volume-sized temporaries for a clean scan
    if not count:
        return array
    bad = ~np.isfinite(array)
    finite = array[~bad]
    fill = float(finite.min()) if finite.size else 0.0
    out = np.array(array, copy=True)
    out[bad] = fill
    logger.warning("warning: %s: %s has %d NaN or infinite voxel(s) of %d; treated as background (%g)",
                   path, what, count, array.size, fill)
    return out


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
