"""The slices of a DICOM series: geometry and rescale per frame, parsed tolerantly.

:func:`series_frames` turns the headers of one series into :class:`Frame` records (position, orientation,
pixel spacing, rescale) for :func:`napari_softseg.io.dicom.read_series`:

- single-frame files: ImagePositionPatient, ImageOrientationPatient, PixelSpacing (or ImagerPixelSpacing);
- enhanced multi-frame CT/MR: the per-frame or shared functional groups;
- **no patient geometry at all** (CR, DX, NM and secondary captures, an enhanced file without functional
  groups): the frames are stacked in InstanceNumber order, axis-aligned at the stated pixel spacing (1 mm
  when none) and 1 mm between slices, with a warning — as nibabel opens a NIfTI without a usable voxel size.

Malformed integer strings (``NumberOfFrames`` ``'1A'``) are read by :func:`dicom_int` instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError

#: Orientation used for a series without ImageOrientationPatient (rows along x, columns along y).
DEFAULT_ORIENTATION = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


@dataclass
class Frame:
    """One 2D slice: a single-frame file, or one frame of a multi-frame file."""

    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns)
    slope: float
    intercept: float
    file_index: int
    frame_index: int | None  # 0-based frame of a multi-frame file, None for single-frame
    sop_uid: str


def dicom_int(ds, name: str, default: int | None = None) -> int | None:
    """An integer (IS) attribute, or ``default`` when absent, empty or malformed (never raises).

    Example:
        >>> dicom_int({"NumberOfFrames": "1A"}, "NumberOfFrames", 1)
        1
    """
    try:
        value = ds.get(name)
    except Exception:  # noqa: BLE001 - pydicom may raise converting a malformed value
        return default
    if value is None or str(value).strip() == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(str(value).strip())
        except ValueError:
            return default
        return int(number) if np.isfinite(number) and number == int(number) else default


def n_frames(ds) -> int:
    """Frames in a file (1 when NumberOfFrames is absent, malformed or below 1)."""
    return max(1, dicom_int(ds, "NumberOfFrames", 1) or 1)


def _floats(value, n: int, what: str, path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise SoftsegError(f"{what} missing or malformed ({value!r})", path)
    return arr


def _float(value, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _group_item(fg, shared, seq: str):
    for group in (fg, shared):
        if group is not None and seq in group and len(group[seq].value):
            return group[seq].value[0]
    return None


def has_geometry(ds) -> bool:
    """Whether a file places its pixels in patient space (position per slice or per-frame groups)."""
    return "ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds


def series_frames(headers: list, files: list[Path], folder: Path) -> tuple[list[Frame], list[str]]:
    """The frames of a series' files and the warnings to show (see the module docstring).

    Raises:
        SoftsegError: Malformed geometry in a file that has some (naming the file), or a series mixing
            files with and without patient geometry.
    """
    with_geometry = [has_geometry(ds) for ds in headers]
    if all(with_geometry):
        frames: list[Frame] = []
        for i, (f, ds) in enumerate(zip(files, headers)):
            frames.extend(_frames_of(ds, i, f))
        return frames, []
    if any(with_geometry):
        missing = files[with_geometry.index(False)]
        raise SoftsegError("some files of this series have no ImagePositionPatient (patient geometry) and some do",
                           missing)
    order = sorted(range(len(headers)), key=lambda i: (dicom_int(headers[i], "InstanceNumber", 0) or 0, i))
    frames = []
    spacing = (1.0, 1.0)
    for i in order:
        ds = headers[i]
        spacing = _pixel_spacing(ds)
        slope, intercept = _float(ds.get("RescaleSlope", 1), 1.0) or 1.0, _float(ds.get("RescaleIntercept", 0), 0.0)
        count = n_frames(ds)
        for k in range(count):
            position = np.array([0.0, 0.0, float(len(frames))])
            frames.append(Frame(position, DEFAULT_ORIENTATION.copy(), spacing, slope, intercept, i,
                                k if count > 1 else None, str(ds.get("SOPInstanceUID", ""))))
    shown = "x".join(f"{v:g}" for v in (spacing[1], spacing[0]))
    return frames, [f"no patient geometry (ImagePositionPatient / ImageOrientationPatient): opened axis-aligned at "
                    f"{shown} mm pixels and 1 mm between slices, in InstanceNumber order; positions are not the "
                    "patient's"]


def _pixel_spacing(ds) -> tuple[float, float]:
    for name in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        try:
            value = [float(v) for v in ds.get(name) or ()]
        except (TypeError, ValueError):
            continue
        if len(value) == 2 and all(np.isfinite(v) and v > 0 for v in value):
            return value[0], value[1]
    return 1.0, 1.0


def _frames_of(ds, file_index: int, path: Path) -> list[Frame]:
    """The slices one file contributes, with their geometry and rescale."""
    count = n_frames(ds)
    if "PerFrameFunctionalGroupsSequence" in ds:  # enhanced multi-frame
        shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if len(per_frame) != count:
            raise SoftsegError(f"{len(per_frame)} per-frame groups for {count} frames", path)
        frames = []
        for i, fg in enumerate(per_frame):
            pos = _group_item(fg, shared, "PlanePositionSequence")
            ori = _group_item(fg, shared, "PlaneOrientationSequence")
            meas = _group_item(fg, shared, "PixelMeasuresSequence")
            if pos is None or ori is None or meas is None:
                raise SoftsegError(f"frame {i + 1} has no plane position, orientation or pixel spacing", path)
            pvt = _group_item(fg, shared, "PixelValueTransformationSequence")
            source = pvt if pvt is not None else ds
            slope = _float(source.get("RescaleSlope", 1), 1.0) or 1.0
            intercept = _float(source.get("RescaleIntercept", 0), 0.0)
            frames.append(Frame(
                _floats(pos.get("ImagePositionPatient"), 3, f"frame {i + 1} ImagePositionPatient", path),
                _floats(ori.get("ImageOrientationPatient"), 6, f"frame {i + 1} ImageOrientationPatient", path),
                tuple(_floats(meas.get("PixelSpacing"), 2, f"frame {i + 1} PixelSpacing", path)),
                slope, intercept, file_index, i, str(ds.SOPInstanceUID),
            ))
        return frames
    if count > 1:
        raise SoftsegError(f"multi-frame file with {count} frames but no per-frame geometry "
                           "(PerFrameFunctionalGroupsSequence); only enhanced CT/MR multi-frame is supported", path)
    spacing = ds.get("PixelSpacing", ds.get("ImagerPixelSpacing"))
    return [Frame(
        _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
        _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
        tuple(_floats(spacing, 2, "PixelSpacing", path)),
        _float(ds.get("RescaleSlope", 1), 1.0) or 1.0, _float(ds.get("RescaleIntercept", 0), 0.0),
        file_index, None, str(ds.get("SOPInstanceUID", "")),
    )]
