"""Finding and loading multi-rater cases: QUBIQ datasets and plain folders.

A **case** is one image with the masks of several raters for one or more tasks. On disk:

- QUBIQ 2020/2021: ``<dataset>/Training/caseNN/image.nii.gz`` with ``task0T_seg0R.nii.gz`` (task T, rater
  R), ``Validation/`` likewise; 2021's pancreas datasets put ``caseX-Y`` folders directly under the
  dataset. Some releases name masks ``caseNN_seg0R.nii.gz`` (task 1).
- A plain folder with one image and several masks, matched by user-given glob patterns.

:func:`discover` walks a folder and lists cases without reading voxel data; :func:`load_case` reads
one case and checks it (shapes, affines, binary masks, finite values).

Example:
    >>> ds = discover("QUBIQ/brain-growth")  # doctest: +SKIP
    >>> data = load_case(ds.cases[0], task=1)  # doctest: +SKIP
    >>> data.image.shape, data.masks.shape  # doctest: +SKIP
    ((1, 256, 256, 1), (7, 256, 256, 1))
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import Case, CaseData, Dataset, binarize_mask, check_same_geometry, natural_key
from napari_softseg.io.dicom import is_dicom_folder, is_dicom_source, load_dicom_image
from napari_softseg.io.dicom_seg import find_dicom_case, load_dicom_case
from napari_softseg.io.formats import is_data_file, is_image_path, strip_image_suffix
from napari_softseg.io.memory import check_memory
from napari_softseg.io.nifti import HeaderInfo, Volume, load_volume, read_header, replace_non_finite
from napari_softseg.io.packed_masks import MAX_PACKED_RATERS, PackedMasks

#: ``task01_seg03.nii.gz`` (task 1, rater 3) or ``case01_seg03.nii.gz`` / ``seg03.nrrd`` (task 1); any
#: image format of :mod:`napari_softseg.io.formats` (the data file of a pair is not listed).
MASK_RE = re.compile(r"^(?:.*?task0*(?P<task>\d+)_)?(?:.*?_)?seg0*(?P<rater>\d+)"
                     r"\.(?:nii|nii\.gz|hdr|mgh|mgz|mnc|par|head|nrrd|nhdr)$", re.I)
#: The image of a case folder: ``image`` with any supported ending (``image.mgz``, ``image.nrrd`` ...).
IMAGE_STEM = "image"
SPLIT_NAMES = {"training": "Training", "validation": "Validation", "test": "Test", "testing": "Test"}
MAX_DEPTH = 4


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # ELOOP, EACCES, ENAMETOOLONG
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _scan_folder(folder: Path, image_pattern: str | None, mask_pattern: str | None) -> Case | None:
    """Return a Case if ``folder`` directly holds an image and/or rater masks."""
    try:
        files = sorted((p for p in folder.iterdir() if _is_file(p)), key=lambda p: natural_key(p.name))
    except OSError:
        return None
    image_path = None
    tasks: dict[int, list[tuple[int, Path]]] = {}
    for p in files:
        if not is_image_path(p) or is_data_file(p) or p.name.startswith("."):  # skip macOS "._" files,
            continue  # hidden temporaries and the .img/.REC/.BRIK halves of pairs
        name = p.name
        if image_pattern is not None:
            if fnmatch.fnmatch(name, image_pattern):
                if image_path is not None:
                    raise SoftsegError(f"image pattern {image_pattern!r} matches several files", folder)
                image_path = p
                continue
        elif strip_image_suffix(name).lower() == IMAGE_STEM:
            if image_path is not None:
                raise SoftsegError(f"two images: {image_path.name} and {name}; keep one", folder)
            image_path = p
            continue
        if mask_pattern is not None:
            if fnmatch.fnmatch(name, mask_pattern):
                tasks.setdefault(1, []).append((len(tasks.get(1, [])) + 1, p))
            continue
        m = MASK_RE.match(name)
        if m:
            task = int(m.group("task") or 1)
            tasks.setdefault(task, []).append((int(m.group("rater")), p))
    if image_path is None and not tasks:
        return None
    ordered = {t: sorted(v) for t, v in sorted(tasks.items())}
    for t, raters in ordered.items():
        for (r1, p1), (r2, p2) in zip(raters, raters[1:]):
            if r1 == r2:
                raise SoftsegError(f"rater {r1} of task {t} appears twice: {p1.name} and {p2.name}; keep one", folder)
    return Case(
        name=folder.name,
        path=folder,
        split="",
        image_path=image_path,
        tasks={t: [p for _, p in v] for t, v in ordered.items()},
        rater_ids={t: [r for r, _ in v] for t, v in ordered.items()},
    )


def find_case(
    path: str | os.PathLike, *, image_pattern: str | None = None, mask_pattern: str | None = None
) -> Case:
    """Read one case folder's file list.

    Args:
        path: A QUBIQ case folder, or a plain folder with one image and several masks.
        image_pattern: Glob for the image file name in a plain folder (default ``image.nii[.gz]``).
        mask_pattern: Glob for the rater masks in a plain folder (default QUBIQ ``task0T_seg0R``
            names); matched masks are raters of task 1, in natural name order.

    Raises:
        SoftsegError: The path is missing, not a folder, or holds no image.
    """
    path = Path(path)
    if not path.exists():
        raise SoftsegError("folder not found", path)
    if not path.is_dir():
        raise SoftsegError("not a folder: expected a case folder holding image.nii.gz and rater masks", path)
    if _is_dicom(path):
        return _dicom_case(path)
    case = _scan_folder(path, image_pattern, mask_pattern)
    if case is None or case.image_path is None:
        want = image_pattern or "image.nii.gz"
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
        raise SoftsegError(f"not a case folder: no {want} found (it holds: {listing})", path)
    return case


def discover(
    path: str | os.PathLike, *, image_pattern: str | None = None, mask_pattern: str | None = None
) -> Dataset:
    """List the cases under a folder without reading voxel data.

    ``path`` may be a dataset root (with ``Training/``, ``Validation/`` or ``caseX-Y`` folders), one split
    folder, a folder of several datasets, or a single case folder.

    Raises:
        SoftsegError: The path is missing or is not a folder, or no case was found.
    """
    root = Path(path)
    if not root.exists():
        raise SoftsegError("folder not found", root)
    if not root.is_dir():
        raise SoftsegError("not a folder: expected a dataset or case folder", root)
    cases: list[Case] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}  # real path -> first path it was met under (symlinks and loops: each case once)

    def walk(folder: Path, depth: int, split: str) -> None:
        try:
            real = os.path.realpath(folder)
        except (OSError, RuntimeError):
            problems.append(f"{folder}: cannot resolve (symlink loop?); skipped")
            return
        if real in seen:
            if folder != root:
                problems.append(f"{folder}: same folder as {seen[real]} (symlink); listed once")
            return
        seen[real] = folder
        try:
            case = _scan_folder(folder, image_pattern, mask_pattern)
        except SoftsegError as exc:
            problems.append(f"{exc}; skipped")
            return
        if case is None and _is_dicom(folder, recursive=False):
            try:
                case = _dicom_case(folder)
            except SoftsegError as exc:
                problems.append(f"{exc}; skipped")
                return
        if case is not None:
            rel = folder.relative_to(root).as_posix()
            case.name = rel if rel != "." else folder.name
            case.split = split
            if case.image_path is None:
                problems.append(f"{folder}: rater masks but no image.nii.gz; skipped")
            else:
                cases.append(case)
            return
        if depth >= MAX_DEPTH:
            return
        try:
            # real folders before symlinks, so a case reached both ways is listed under its real name
            subfolders = sorted((p for p in folder.iterdir() if _is_dir(p)),
                                key=lambda p: (p.is_symlink(), natural_key(p.name)))
        except OSError as exc:
            problems.append(f"{folder}: cannot list ({exc.strerror})")
            return
        for sub in subfolders:
            if sub.name.startswith("."):
                continue
            walk(sub, depth + 1, SPLIT_NAMES.get(sub.name.lower(), split))

    walk(root, 0, SPLIT_NAMES.get(root.name.lower(), ""))
    if not cases and problems:
        raise SoftsegError("no usable case: " + "; ".join(problems), root)
    if not cases:
        raise SoftsegError(
            "no cases found: expected case folders holding image.nii.gz and task01_seg01.nii.gz ... "
            "(QUBIQ layout) or pass --image-pattern/--mask-pattern for a plain folder",
            root,
        )
    for case in cases:
        if not case.tasks:
            problems.append(f"{case.path}: image but no rater masks (usable for prediction only)")
    return Dataset(path=root, cases=cases, problems=problems)


def _is_dicom(path: str | os.PathLike, recursive: bool = True) -> bool:
    """A DICOM folder (or file): the hook that lets a case or an image come from DICOM (napari_softseg.io.dicom)."""

    return is_dicom_source(path) if recursive else is_dicom_folder(path, recursive=False)


def _dicom_case(path: Path) -> Case:
    """A DICOM folder as a :class:`Case` (image = the folder's one image series, raters = its SEG objects)."""

    return find_dicom_case(path)


def _to_channels_first(data: np.ndarray, mask_shape: tuple[int, ...] | None, n_channels: int | None) -> np.ndarray:
    """Arrange image data as ``(C, X, Y, Z)`` (see docs/architecture.md)."""
    if data.ndim == 4:
        return np.moveaxis(data, -1, 0)
    if mask_shape is not None:
        if data.shape == mask_shape:
            return data[np.newaxis]
        if mask_shape[2] == 1 and data.shape[:2] == mask_shape[:2]:
            return np.moveaxis(data, -1, 0)[..., np.newaxis]  # 2D multi-channel (X, Y, C)
        return data[np.newaxis]  # shape mismatch is reported by the caller
    if n_channels and n_channels > 1 and data.shape[2] == n_channels:
        return np.moveaxis(data, -1, 0)[..., np.newaxis]
    return data[np.newaxis]


def load_image(path: str | os.PathLike, n_channels: int | None = None) -> tuple[np.ndarray, Volume]:
    """Read an image alone (for prediction) as ``float32 (C, X, Y, Z)``.

    Args:
        path: An image file (any format of :func:`~napari_softseg.io.nifti.read_header`) or DICOM source.
        n_channels: Channels the consumer expects; a 3D file ``(X, Y, C)`` with ``C == n_channels > 1`` is
            read as a 2D multi-channel image.

    NaN and infinite voxels are set to background with a warning
    (:func:`~napari_softseg.io.nifti.replace_non_finite`).

    Raises:
        SoftsegError: Unreadable file.
    """
    if _is_dicom(path):

        return load_dicom_image(path, n_channels=n_channels)

    info = read_header(path)
    channels = _channels_first_shape(tuple(info.shape), None, n_channels)
    check_memory(info.read_bytes + 4 * _prod(channels), "reading this image", info.path)
    vol = load_volume(info.path, info, memory_check=False)
    vol.data = replace_non_finite(np.asarray(vol.data), vol.path, "image")
    image = _to_channels_first(np.asarray(vol.data), None, n_channels).astype(np.float32, copy=False)
    return image, vol


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _channels_first_shape(shape: tuple[int, ...], mask_shape: tuple[int, ...] | None,
                          n_channels: int | None) -> tuple[int, ...]:
    """The ``(C, X, Y, Z)`` shape :func:`_to_channels_first` gives for data of ``shape`` (2D padded)."""
    shape = tuple(shape) + ((1,) if len(shape) == 2 else ())
    if len(shape) == 4:
        return (shape[3], *shape[:3])
    if mask_shape is not None:
        if shape == tuple(mask_shape):
            return (1, *shape)
        if mask_shape[2] == 1 and shape[:2] == tuple(mask_shape[:2]):
            return (shape[2], shape[0], shape[1], 1)
        return (1, *shape)
    if n_channels and n_channels > 1 and shape[2] == n_channels:
        return (shape[2], shape[0], shape[1], 1)
    return (1, *shape)


def _mask_shape(info: HeaderInfo) -> tuple[int, int, int]:
    shape = tuple(info.shape)
    if len(shape) == 2:
        return (*shape, 1)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise SoftsegError(f"mask must be 2D or 3D, got shape {tuple(info.shape)}", info.path)
    return shape


def check_case_headers(image_info: HeaderInfo, mask_infos: list[HeaderInfo]) -> tuple[int, ...] | None:
    """Check a case from its headers alone: masks agree with each other and with the image.

    Returns:
        The common mask shape ``(X, Y, Z)`` (``None`` without masks).

    Raises:
        SoftsegError: A mask of another shape or affine, or an image that does not fit the masks,
            naming the file; nothing has been read yet.
    """
    mask_shape = None
    for info in mask_infos:
        shape = _mask_shape(info)
        if mask_shape is None:
            mask_shape = shape
        elif shape != mask_shape:
            raise SoftsegError(f"mask shape {shape} differs from {mask_infos[0].path.name}'s {mask_shape}", info.path)
        check_same_geometry(info.affine, image_info.affine, info.path, "mask")
    if mask_shape is not None:
        image_shape = _channels_first_shape(tuple(image_info.shape), mask_shape, None)
        if tuple(image_shape[1:]) != tuple(mask_shape):
            raise SoftsegError(
                f"image shape {tuple(image_info.shape)} does not match mask shape {mask_shape} "
                f"({mask_infos[0].path.name})",
                image_info.path,
            )
    return mask_shape


def load_case(
    case_or_path: Case | str | os.PathLike,
    task: int = 1,
    *,
    image_pattern: str | None = None,
    mask_pattern: str | None = None,
    allow_no_masks: bool = False,
    packed: bool = False,
) -> CaseData:
    """Read and check one case.

    Args:
        case_or_path: A :class:`Case` from :func:`discover`, or a case folder.
        task: Which task's masks to read (QUBIQ ``task0T``).
        image_pattern: See :func:`find_case`.
        mask_pattern: See :func:`find_case`.
        allow_no_masks: Return a case with zero raters instead of failing (prediction only).
        packed: Hold the masks as :class:`~napari_softseg.io.packed_masks.PackedMasks` (one bit per rater,
            read rater by rater, so the ``(R, X, Y, Z)`` stack never exists); the viewer's reader uses it.
            Ignored past :data:`~napari_softseg.io.packed_masks.MAX_PACKED_RATERS` raters and for DICOM.

    Raises:
        SoftsegError: Missing task or masks, unreadable files, shape or affine mismatch between image and
            a mask, or a mask that is not binary (NaN included). The message names the file. NaN/inf image
            voxels are set to background with a logged warning.
    """
    dicom_source = case_or_path.image_path if isinstance(case_or_path, Case) else case_or_path
    if dicom_source is not None and _is_dicom(dicom_source):

        return load_dicom_case(dicom_source, task, allow_no_masks=allow_no_masks)
    case = (
        case_or_path
        if isinstance(case_or_path, Case)
        else find_case(case_or_path, image_pattern=image_pattern, mask_pattern=mask_pattern)
    )
    if case.image_path is None:
        raise SoftsegError("case has rater masks but no image", case.path)
    mask_paths = case.raters(task)
    if not mask_paths and not allow_no_masks:
        if case.tasks:
            found = ", ".join(str(t) for t in case.tasks)
            raise SoftsegError(f"no rater masks for task {task} (tasks found: {found})", case.path)
        raise SoftsegError("case has no rater masks (expected task01_seg01.nii.gz, ...)", case.path)

    # headers first: shapes, affines, types and the memory needed are checked before any voxel is read
    image_info = read_header(case.image_path)
    mask_infos = [read_header(p) for p in mask_paths]
    mask_shape = check_case_headers(image_info, mask_infos)
    image_shape = _channels_first_shape(tuple(image_info.shape), mask_shape, None)
    biggest_mask = max((i.read_bytes for i in mask_infos), default=0)
    packed = packed and mask_shape is not None and 0 < len(mask_paths) <= MAX_PACKED_RATERS
    mask_bytes = (2 * _prod(mask_shape) if packed  # the bits and one rater being read
                  else len(mask_paths) * _prod(mask_shape or (0,)) * (1 + 4))  # masks + a float soft label
    needed = image_info.read_bytes + 4 * _prod(image_shape) + biggest_mask + mask_bytes
    check_memory(needed, f"loading this case ({len(mask_paths)} mask(s) of {mask_shape or image_info.shape})",
                 case.path)

    image_vol = load_volume(case.image_path, image_info, memory_check=False)
    image_vol.data = replace_non_finite(np.asarray(image_vol.data), case.image_path, "image")
    mask_array: np.ndarray | PackedMasks | None = None  # filled in place: no per-rater copies, no stacking
    empty_raters: list[int] = []
    if mask_shape is not None and not packed:
        mask_array = np.empty((len(mask_paths), *mask_shape), dtype=np.uint8)
    for i, (mpath, info) in enumerate(zip(mask_paths, mask_infos)):
        mvol = load_volume(mpath, info, memory_check=False)
        data = np.asarray(mvol.data).reshape(mask_shape)
        if packed and mask_array is None:
            # the bits and the per-rater buffer in the file's memory order (NIfTI: Fortran), so that
            # binarizing and packing stream through memory (~40× faster than across orders at 512² × 300)
            order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
            mask_array = PackedMasks(np.zeros(mask_shape, dtype=PackedMasks.empty(len(mask_paths), ()).bits.dtype,
                                              order=order), len(mask_paths))
            one = np.empty(mask_shape, dtype=np.uint8, order=order)
        target = one if packed else mask_array[i]
        binarize_mask(data, mpath, out=target)
        del data
        del mvol
        if not target.any():
            empty_raters.append(i)
        if packed:
            mask_array.set_rater(i, target)

    image = _to_channels_first(np.asarray(image_vol.data), mask_shape, None).astype(np.float32, copy=False)
    n_masks = len(mask_paths)
    if mask_array is None:
        mask_array = np.zeros((0, *image.shape[1:]), dtype=np.uint8)
    rater_ids = case.rater_ids.get(task, list(range(1, len(mask_paths) + 1)))
    rater_names = [f"rater {r}" for r in rater_ids]

    warnings: list[str] = list(image_vol.warnings)
    if image_vol.data.ndim == 3 and image.shape[0] > 1:
        warnings.append(f"image {tuple(image_vol.data.shape)} read as {image.shape[0]} channels of a 2D slice "
                        "(its last axis is longer than the masks')")
    if n_masks == 1:
        warnings.append("only one rater: the soft label equals that rater's hard mask")
    if n_masks:
        empty = [rater_names[i] for i in empty_raters]
        if len(empty) == n_masks:
            warnings.append("all rater masks are empty")
        elif empty:
            warnings.append("empty mask: " + ", ".join(empty))
    return CaseData(
        name=case.name,
        image=image,
        masks=mask_array,
        rater_names=rater_names,
        affine=image_vol.affine,
        spacing=image_vol.spacing,
        header=image_vol.header,
        image_path=case.image_path,
        mask_paths=list(mask_paths),
        task=task,
        warnings=warnings,
    )
