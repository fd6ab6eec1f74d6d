"""Which image files can be read, and the formats other than NIfTI: Analyze, MGH/MGZ, MINC1, PAR/REC, AFNI, NRRD.

Everything nibabel reads as a spatial image is opened through nibabel (NIfTI-1/2 single files and
``.hdr/.img`` pairs, Analyze 7.5, FreeSurfer MGH/MGZ, MINC1, Philips PAR/REC, AFNI BRIK/HEAD); NRRD, the
3D Slicer format, through `pynrrd <https://github.com/mhe/pynrrd>`_ (``.nrrd``, or a ``.nhdr`` header with
a detached data file). :func:`napari_softseg.io.nifti.read_header` is the one entry point: it calls
:func:`open_image` here and applies the same checks to every format.

Geometry: NRRD's ``space directions`` / ``space origin`` are in the file's ``space`` (LPS for Slicer)
and are turned into RAS+ mm like nibabel's affines. Non-spatial NRRD axes (a vector or channel axis,
``space directions`` ``none``) become the last axis, as a 4D NIfTI stores channels.

Unusual but usable geometry is repaired with a warning by :func:`repair_affine` (as nibabel does): a
zero or NaN voxel size, or a singular or non-finite affine, places the grid axis-aligned at the header's
voxel size, or 1 mm where that is unusable.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Name endings read through nibabel besides NIfTI (``.img`` pairs with ``.hdr``; ``.rec`` with ``.par``).
NIBABEL_SUFFIXES = (".hdr", ".img", ".mgh", ".mgz", ".mnc", ".par", ".rec", ".head", ".brik", ".brik.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
#: Every name ending an image may have (longest first, so ``.nii.gz`` is stripped whole).
IMAGE_SUFFIXES = tuple(sorted(NIFTI_SUFFIXES + NIBABEL_SUFFIXES + NRRD_SUFFIXES, key=len, reverse=True))
#: Data files of a pair: listed with their header, never as images of their own in a folder.
DATA_FILE_SUFFIXES = (".img", ".rec", ".brik", ".brik.gz")
FORMATS_HINT = ("NIfTI .nii/.nii.gz, Analyze or NIfTI pair .hdr/.img, MGH .mgh/.mgz, MINC1 .mnc, PAR/REC, "
                "AFNI .HEAD/.BRIK, NRRD .nrrd/.nhdr")
#: RAS+ from a NRRD ``space``: the sign of each world axis.
_SPACE_SIGNS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1), "scanner-xyz": (1, 1, 1), "3d-right-handed": (1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
}


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a path's name ends like an image file this package reads (any case)."""
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def is_data_file(path: str | os.PathLike) -> bool:
    """The data half of a header/data pair (``.img``, ``.REC``, ``.BRIK``): its header names the image."""
    return str(path).lower().endswith(DATA_FILE_SUFFIXES)


def strip_image_suffix(name: str) -> str:
    """``"image.nii.gz"`` -> ``"image"``, ``"brain.mgz"`` -> ``"brain"`` (other names unchanged)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass
class OpenedImage:
    """What a header says, format by format, before the common checks of ``read_header``.

    Attributes:
        shape: Data shape as stored (spatial axes first).
        dtype: Stored voxel type.
        affine: 4x4 voxel-to-world (RAS+ mm) as the file gives it (checked later).
        zooms: Voxel sizes the header states for the spatial axes.
        image: An object with ``dataobj`` (the lazy data) and ``header``.
        data_file: The file holding the voxels (the header itself for one-file formats).
        compressed: Whether ``data_file`` is compressed (its size says nothing about the data).
        offset: Where the voxels start in ``data_file``.
        scaled: Whether stored values are scaled to floats on reading.
        raw_nifti: The NIfTI header as stored (``None`` for other formats).
        notes: Valid-but-notable facts found while opening.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    affine: np.ndarray
    zooms: np.ndarray
    image: object
    data_file: Path
    compressed: bool = False
    offset: int = 0
    scaled: bool = False
    raw_nifti: object = None
    notes: list[str] = field(default_factory=list)


def open_image(path: Path) -> OpenedImage:
    """Parse the header of a NIfTI, nibabel or NRRD file (no voxel data is read).

    Raises:
        SoftsegError: Not a readable image of a supported format, or its data file is missing.
    """
    if path.name.lower().endswith(NRRD_SUFFIXES):
        return _open_nrrd(path)
    return _open_nibabel(path)


@contextmanager
def quiet_nibabel():
    """Silence nibabel's header-repair messages (``setting 0 dims to 1``): this package words its own."""
    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _open_nibabel(path: Path) -> OpenedImage:
    import nibabel as nib

    try:
        with quiet_nibabel():
            img = nib.load(str(path))
    except ModuleNotFoundError as exc:  # MINC2 needs h5py
        raise SoftsegError(f"reading this file needs the Python package {exc.name}: pip install {exc.name}",
                           path) from None
    except FileNotFoundError as exc:  # the .REC of a .PAR, the .BRIK of a .HEAD, ...
        missing = Path(exc.filename).name if exc.filename else "a file it refers to"
        raise SoftsegError(f"its data file {missing} is missing (it must sit beside the header)", path) from None
    if not isinstance(img, nib.spatialimages.SpatialImage) or type(img).__name__.startswith("Cifti"):
        raise SoftsegError(f"not a volume image (nibabel read it as {type(img).__name__})", path)
    header = img.header
    shape = tuple(int(s) for s in img.shape)
    files = getattr(img, "file_map", {})
    data_file = Path(files["image"].filename) if "image" in files and files["image"].filename else path
    if not data_file.exists():
        raise SoftsegError(f"its data file {data_file.name} is missing (it must sit beside the header)", path)
    raw = None
    if isinstance(img, nib.Nifti1Pair):
        header_file = Path(files["header"].filename) if "header" in files and files["header"].filename else path
        raw = raw_nifti_header(header_file)
    zooms = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    dataobj = img.dataobj
    slope, inter = getattr(dataobj, "slope", 1.0), getattr(dataobj, "inter", 0.0)
    try:
        scaled = bool(np.any(np.asarray(slope) != 1) or np.any(np.asarray(inter) != 0))
    except (TypeError, ValueError):
        scaled = True
    try:
        offset = int(header.get_data_offset())
    except (AttributeError, TypeError, ValueError, NotImplementedError):
        offset = 0
    return OpenedImage(
        shape=shape, dtype=np.dtype(img.get_data_dtype()), affine=np.asarray(img.affine, dtype=np.float64),
        zooms=zooms, image=img, data_file=data_file, offset=offset, scaled=scaled, raw_nifti=raw,
        compressed=data_file.name.lower().endswith((".gz", ".mgz", ".bz2", ".zst")) or type(img).__name__ in (
            "Minc1Image", "PARRECImage"),
    )


def raw_nifti_header(path: Path):
    """A NIfTI header exactly as stored (nibabel's loader silently repairs some fields)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fobj:
        block = fobj.read(540)
    if len(block) < 348:
        raise SoftsegError(f"file is truncated: {len(block)} bytes, shorter than a NIfTI header", path)
    size_le, size_be = int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")
    klass = nib.Nifti2Header if 540 in (size_le, size_be) else nib.Nifti1Header
    return klass(block[: klass.template_dtype.itemsize], check=False)


class _NrrdImage:
    """NRRD data read on demand (``dataobj``), channels moved last; ``header`` is pynrrd's dict."""

    def __init__(self, path: Path, header: dict, order: list[int]):
        self.path, self.header, self._order = path, header, order

    @property
    def dataobj(self) -> np.ndarray:
        import nrrd

        data, _ = nrrd.read(str(self.path), index_order="F")
        return np.transpose(data, self._order)


def _open_nrrd(path: Path) -> OpenedImage:
    try:
        import nrrd
    except ImportError:
        raise SoftsegError("reading NRRD needs pynrrd: pip install pynrrd", path) from None
    # a damaged header raises pynrrd's own errors: read_header words them ("cannot read image header: ...")
    header = nrrd.read_header(str(path))
    sizes = [int(s) for s in header["sizes"]]
    dtype = np.dtype(nrrd.reader._determine_datatype(header))
    directions = header.get("space directions")
    spatial = list(range(len(sizes)))
    if directions is not None:
        rows = [None if d is None else np.asarray(d, dtype=np.float64) for d in directions]
        spatial = [i for i, d in enumerate(rows) if d is not None and np.all(np.isfinite(d))]
    others = [i for i in range(len(sizes)) if i not in spatial]
    order = spatial + others
    shape = tuple(sizes[i] for i in order)
    affine = np.eye(4)
    n = min(3, len(spatial))
    if directions is not None and n:
        for col, axis in enumerate(spatial[:n]):
            vec = np.asarray(directions[axis], dtype=np.float64)
            affine[: len(vec[:3]), col] = vec[:3]
    else:
        spacings = [float(s) for s in header.get("spacings", [1.0] * len(sizes))]
        for col, axis in enumerate(spatial[:3]):
            affine[col, col] = spacings[axis] if axis < len(spacings) else 1.0
    origin = header.get("space origin")
    if origin is not None:
        affine[: len(origin[:3]), 3] = np.asarray(origin[:3], dtype=np.float64)
    space = str(header.get("space", "")).lower()
    signs = _SPACE_SIGNS.get(space, (1, 1, 1))
    affine = np.diag([*signs, 1.0]) @ affine
    notes = []
    if space and space not in _SPACE_SIGNS:
        notes.append(f"NRRD space {space!r} is not anatomical; its axes are taken as RAS")
    data_file = path
    if "data file" in header or "datafile" in header:
        name = str(header.get("data file", header.get("datafile"))).split()[0]
        data_file = (path.parent / name) if not os.path.isabs(name) else Path(name)
        if not data_file.exists():
            raise SoftsegError(f"its data file {data_file.name} is missing (it must sit beside the header)", path)
    encoding = str(header.get("encoding", "raw")).lower()
    return OpenedImage(shape=shape, dtype=dtype, affine=affine, zooms=np.linalg.norm(affine[:3, :3], axis=0),
                       image=_NrrdImage(path, header, order), data_file=data_file,
                       compressed=encoding not in ("raw",), offset=-1, notes=notes)


def repair_affine(affine: np.ndarray, zooms: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A usable affine for a header whose voxel size or affine is zero, NaN, infinite or singular.

    Returns:
        ``(affine, None)`` when nothing is wrong; otherwise an axis-aligned affine at the header's voxel
        sizes (1 mm for each unusable one; the offset kept when finite) and the warning to show.
    """
    zooms = np.asarray(zooms, dtype=np.float64)
    zooms = np.concatenate([zooms, np.ones(max(0, 3 - zooms.size))])[:3]
    bad_zooms = ~np.isfinite(zooms) | (zooms == 0)
    finite = bool(np.all(np.isfinite(affine)))
    det = float(np.linalg.det(affine[:3, :3])) if finite else float("nan")
    singular = not np.isfinite(det) or abs(det) < 1e-12
    if not singular and not bad_zooms.any():
        return affine, None
    sizes = np.where(bad_zooms, 1.0, np.abs(zooms))
    fixed = np.diag([*sizes, 1.0])
    if finite:
        fixed[:3, 3] = affine[:3, 3]
    if bad_zooms.any():
        what = f"voxel size (pixdim) {zooms.tolist()} holds zero, NaN or infinite values"
    else:
        what = "affine is singular (a voxel size is zero)" if finite else "affine holds NaN or infinite values"
    shown = "x".join(f"{s:g}" for s in sizes)
    return fixed, f"header {what}: opened axis-aligned at {shown} mm (orientation and position may be wrong)"
