"""Reading DICOM image series (pydicom) into the same arrays and affines as NIfTI.

A DICOM folder (as exported from a PACS, possibly nested, possibly holding several series and DICOM SEG
objects) is scanned header-only with :func:`scan_folder`; :func:`read_series` reads one image series:

- geometry from ImagePositionPatient, ImageOrientationPatient and PixelSpacing (per frame for enhanced
  multi-frame CT/MR, from the per-frame or shared functional groups);
- slice order and spacing from the positions projected on the slice normal, never from InstanceNumber;
  a gap in the positions (a missing slice), uneven spacing, slices sharing a position or differing
  orientations are refused with one line naming the folder;
- RescaleSlope and RescaleIntercept applied per slice (values are ``float32``);
- gantry tilt (slice positions not stepping along the normal) is **resampled** onto slices perpendicular to
  the image plane, by linear interpolation, with a warning (as dcm2niix does); such a series cannot be
  the source of a DICOM SEG (its slices are no longer the scanner's).

Conventions: arrays use nibabel's voxel order ``(X, Y, Z)`` with X = DICOM column index (along the first
ImageOrientationPatient vector), Y = row index, Z = slice index sorted along the normal
``row_dir x col_dir``. The affine returned is **RAS+ (NIfTI/nibabel convention)**: DICOM patient
coordinates are LPS+, so the first two rows of the LPS affine are negated (:data:`LPS_TO_RAS`). This is
what dcm2niix and nibabel produce, so the same scan read from DICOM or from its NIfTI conversion gives
the same world coordinates.

pydicom is imported lazily; without it a one-line error says ``pip install "napari-softseg[dicom]"``.

Example:
    >>> from napari_softseg.io.dicom import scan_folder, read_series  # doctest: +SKIP
    >>> [s.label for s in scan_folder("study/")]  # doctest: +SKIP
    ['1.2.826.0.1.3680043.8.498.1 "T1 axial" MR, 16 slices']
    >>> series = read_series("study/", series="T1 axial")  # doctest: +SKIP
    >>> series.data.shape, series.affine[:3, 3]  # doctest: +SKIP
    ((80, 96, 16), array([ -79., -113.,  -34.5]))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.dicom_frames import Frame, dicom_int, n_frames, series_frames
from napari_softseg.io.geometry import Geometry
from napari_softseg.io.nifti import Volume

INSTALL_HINT = 'pip install "napari-softseg[dicom]"'
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Tolerance of slice-spacing checks: the larger of this (mm) and SPACING_RTOL times the spacing.
SPACING_ATOL_MM = 0.02
SPACING_RTOL = 0.02
ORIENTATION_ATOL = 1e-4
#: Slice step this far (degrees) from the normal is gantry tilt.
TILT_TOLERANCE_DEG = 0.1
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Transfer syntax UID prefix -> what to install for its decoder (pydicom decodes the rest itself).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline / extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.8": "pyjpegls",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE
}


def require_pydicom():
    """Import pydicom, or raise one line saying how to install the ``dicom`` extra."""
    try:
        import pydicom
    except ImportError:
        raise SoftsegError(f"reading DICOM needs pydicom: {INSTALL_HINT}") from None
    return pydicom


def require_highdicom():
    """Import highdicom, or raise one line saying how to install the ``dicom`` extra."""
    try:
        import highdicom
    except ImportError:
        raise SoftsegError(f"DICOM SEG needs highdicom: {INSTALL_HINT}") from None
    return highdicom


# --------------------------------------------------------------------------------------------------
# Finding DICOM files
# --------------------------------------------------------------------------------------------------
def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file starts like a DICOM Part 10 file (``DICM`` after the 128-byte preamble). Never raises."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _walk_files(folder: Path):
    """Files under ``folder`` (recursively), hidden ones and DICOMDIR skipped, in a stable order."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.upper() != "DICOMDIR":
                yield Path(root) / name


def is_dicom_folder(path: str | os.PathLike, max_checked: int = 64, recursive: bool = True) -> bool:
    """Whether a folder holds DICOM files and no NIfTI image (cheap: stops at the first DICOM file). Never raises.

    Args:
        path: The folder.
        max_checked: Files looked at before giving up.
        recursive: Also look in subfolders (a PACS export nests them); False looks at its own files only.
    """
    try:
        path = Path(path)
        if not path.is_dir():
            return False
        files = _walk_files(path) if recursive else (p for p in sorted(path.iterdir())
                                                       if p.is_file() and not p.name.startswith("."))
        found = False
        for n, p in enumerate(files):
            if n >= max_checked:
                break
            if p.name.lower().endswith((".nii", ".nii.gz")):
                return False  # a NIfTI case folder (DICOM files beside it are not its image)
            found = found or is_dicom_file(p)
        return found
    except OSError:
        return False


def is_dicom_source(path: str | os.PathLike) -> bool:
    """A DICOM folder, or one DICOM file (e.g. an enhanced multi-frame image). Never raises."""
    try:
        p = Path(path)
        return is_dicom_folder(p) if p.is_dir() else (p.is_file() and is_dicom_file(p))
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Series listing
# --------------------------------------------------------------------------------------------------
@dataclass
class SeriesInfo:
    """One series found in a folder (headers only).

    Attributes:
        uid: SeriesInstanceUID.
        description: SeriesDescription (``""`` if absent).
        modality: Modality (``"CT"``, ``"MR"``, ``"SEG"``, ...).
        number: SeriesNumber (``None`` if absent).
        files: Its files, in scan order.
        n_frames: Slices (single-frame files) or frames (multi-frame files) in total.
        headers: The files' headers (no pixel data).
    """

    uid: str
    description: str
    modality: str
    number: int | None
    files: list[Path] = field(default_factory=list)
    n_frames: int = 0
    headers: list = field(default_factory=list)

    @property
    def is_seg(self) -> bool:
        """A DICOM Segmentation series."""
        return self.modality == "SEG" or any(str(h.get("SOPClassUID", "")) == SEG_SOP_CLASS for h in self.headers)

    @property
    def is_image(self) -> bool:
        """An image series: not a SEG, and its files have a size (Rows/Columns; SR, RT plans, ECGs have none)."""
        return not self.is_seg and any((dicom_int(h, "Rows", 0) or 0) > 0 for h in self.headers)

    @property
    def label(self) -> str:
        """``UID "description" MODALITY, N slices`` (what ``softseg inspect`` prints)."""
        what = "object(s)" if self.is_seg else ("frames" if len(self.files) < self.n_frames else "slices")
        count = len(self.files) if self.is_seg else self.n_frames
        return f'{self.uid} "{self.description}" {self.modality}, {count} {what}'

    def to_dict(self) -> dict:
        return {
            "series_instance_uid": self.uid, "description": self.description, "modality": self.modality,
            "series_number": self.number, "files": len(self.files), "frames": self.n_frames, "is_seg": self.is_seg,
        }


def scan_folder(path: str | os.PathLike) -> list[SeriesInfo]:
    """List the DICOM series under a folder (or of one file), reading headers only.

    Files that are not DICOM are skipped. Series are ordered by SeriesNumber, then description.

    Raises:
        SoftsegError: The path is missing, or holds no DICOM file, or pydicom is not installed.
    """
    pydicom = require_pydicom()
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.exists():
        raise SoftsegError("not found", path)
    files = [path] if path.is_file() else list(_walk_files(path))
    by_uid: dict[str, SeriesInfo] = {}
    no_uid: dict[tuple, str] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
            continue
        uid = _series_uid(ds, no_uid)
        info = by_uid.get(uid)
        if info is None:
            info = by_uid[uid] = SeriesInfo(
                uid=uid, description=str(ds.get("SeriesDescription", "") or ""),
                modality=str(ds.get("Modality", "") or ""), number=dicom_int(ds, "SeriesNumber"),
            )
        info.files.append(f)
        info.headers.append(ds)
        info.n_frames += n_frames(ds)
    if not by_uid:
        raise SoftsegError("no DICOM files found", path)
    return sorted(by_uid.values(), key=lambda s: (s.number is None, s.number or 0, s.description, s.uid))


def _series_uid(ds, no_uid: dict[tuple, str]) -> str:
    """SeriesInstanceUID, or for files without one a stand-in shared by files of the same study, number and size."""
    try:
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    except Exception:  # noqa: BLE001 - a malformed UI value
        uid = ""
    if uid:
        return uid
    key = tuple(str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
                                                  "Rows", "Columns"))
    return no_uid.setdefault(key, f"no-SeriesInstanceUID-{len(no_uid) + 1}")


def choose_series(series: list[SeriesInfo], choice: str | None, folder: str | os.PathLike) -> SeriesInfo:
    """Pick the image series: the only one, or the one whose SeriesInstanceUID or description is ``choice``.

    Raises:
        SoftsegError: No image series; several and no choice (the message lists them); no match; or a
            description shared by several series (choose by UID).
    """
    images = [s for s in series if s.is_image]
    if not images:
        others = sorted({s.modality or "?" for s in series if not s.is_seg})
        what = "only DICOM SEG objects" if not others else f"only non-image objects ({', '.join(others)})" + (
            " and SEG objects" if any(s.is_seg for s in series) else "")
        raise SoftsegError(f"no image series ({what})", folder)
    listing = "; ".join(s.label for s in images)
    if choice is None:
        if len(images) == 1:
            return images[0]
        raise SoftsegError(
            f"{len(images)} image series in this folder; choose one with --series UID_OR_DESCRIPTION: {listing}", folder
        )
    by_uid = [s for s in images if s.uid == choice]
    if by_uid:
        return by_uid[0]
    by_desc = [s for s in images if s.description.strip().lower() == choice.strip().lower()]
    if len(by_desc) == 1:
        return by_desc[0]
    if len(by_desc) > 1:
        raise SoftsegError(f"several series are described {choice!r}; choose by SeriesInstanceUID: "
                           + "; ".join(s.label for s in by_desc), folder)
    raise SoftsegError(f"no image series with UID or description {choice!r}; found: {listing}", folder)


# --------------------------------------------------------------------------------------------------
# Reading one series
# --------------------------------------------------------------------------------------------------
@dataclass
class DicomSeries:
    """One image series read into memory.

    Attributes:
        data: ``float32 (X, Y, Z)`` with rescale slope/intercept applied (``None`` when read headers-only).
        affine: Voxel-to-world matrix in **RAS+** mm (NIfTI convention; see the module docstring).
        info: The series listing entry.
        headers: Headers (no pixel data) of the series' files.
        slice_sources: For each slice ``k``: ``(file index in headers, frame number 1-based or None)``.
        folder: The folder (or file) it was read from.
        resampled: True when gantry tilt was resampled (slices no longer match the files).
        warnings: Valid-but-notable facts (tilt resampled, ...).
        shape: ``(X, Y, Z)``.
    """

    data: np.ndarray | None
    affine: np.ndarray
    info: SeriesInfo
    headers: list
    slice_sources: list[tuple[int, int | None]]
    folder: Path
    resampled: bool = False
    warnings: list[str] = field(default_factory=list)
    shape: tuple[int, int, int] = (0, 0, 0)

    @property
    def affine_lps(self) -> np.ndarray:
        """The same affine in DICOM's LPS+ patient coordinates."""
        return LPS_TO_RAS @ self.affine

    @property
    def is_multiframe(self) -> bool:
        return self.slice_sources[0][1] is not None

    @property
    def volume(self):
        """A :class:`~napari_softseg.io.nifti.Volume` with a fresh NIfTI header carrying the geometry."""

        header = Geometry(self.affine, self.shape).nifti_header()
        desc = f"DICOM {self.info.modality} {self.info.description}".strip()
        header["descrip"] = desc.encode("ascii", "replace")[:79]
        return Volume(data=self.data, affine=self.affine, header=header, path=self.folder)


def check_decoder(ds, path) -> None:
    """Raise one line naming the package to install when the pixel data's compression cannot be decoded."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax is None or not tsyntax.is_compressed:
        return
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise SoftsegError(f"pixel data uses transfer syntax {tsyntax} ({tsyntax.name}), which pydicom cannot decode",
                           path) from None
    if not decoder.is_available:
        package = next((pkg for prefix, pkg in DECODER_PACKAGES.items() if str(tsyntax).startswith(prefix)),
                       "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
        raise SoftsegError(f"pixel data is compressed as {tsyntax.name} and no decoder for it is installed: "
                           f"pip install {package}", path)


def check_greyscale(ds, path) -> None:
    """Refuse colour (RGB, YBR, PALETTE COLOR) images with one line: checked from the header, before geometry."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if (dicom_int(ds, "SamplesPerPixel", 1) or 1) != 1 or photometric.startswith(("PALETTE", "RGB", "YBR")):
        raise SoftsegError(f"colour images ({photometric or 'SamplesPerPixel > 1'}) are not supported; "
                           "expected a greyscale image series", path)


def _pixels(path: Path):
    """Full dataset of ``path`` and its pixel array, with decoder problems as one line."""
    import pydicom

    ds = pydicom.dcmread(path)
    check_greyscale(ds, path)
    check_decoder(ds, path)
    if "NumberOfFrames" in ds and dicom_int(ds, "NumberOfFrames") is None:  # malformed IS ('1A'): one frame
        ds.NumberOfFrames = n_frames(ds)
    try:
        return ds, ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged pixel data
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SoftsegError(f"cannot decode pixel data: {reason}", path) from None


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _slice_geometry(frames: list[Frame], folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sort the slices along the normal; return (order, LPS affine, warnings). Refuses gaps and uneven spacing."""
    o0 = frames[0].orientation
    for f in frames:
        if not np.allclose(f.orientation, o0, atol=ORIENTATION_ATOL):
            raise SoftsegError("slices have different orientations (ImageOrientationPatient "
                               f"{np.round(o0, 4).tolist()} vs {np.round(f.orientation, 4).tolist()})", folder)
        if not np.allclose(f.spacing, frames[0].spacing, rtol=1e-4):
            raise SoftsegError(f"slices have different pixel spacings ({frames[0].spacing} vs {f.spacing})", folder)
    row_dir, col_dir = _unit(o0[:3]), _unit(o0[3:])
    normal = np.cross(row_dir, col_dir)
    positions = np.array([f.position for f in frames])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist, positions = dist[order], positions[order]
    d_row, d_col = frames[0].spacing  # PixelSpacing: (between rows, between columns)
    warnings: list[str] = []
    if len(frames) == 1:
        step_vec = normal * 1.0
    else:
        diffs = np.diff(dist)
        if diffs.min() < SPACING_ATOL_MM:
            dup = int(np.count_nonzero(diffs < SPACING_ATOL_MM))
            raise SoftsegError(f"{dup + 1} slices share a position ({dist[np.argmin(diffs)]:.2f} mm along the normal): "
                               "several acquisitions (echoes, time points) in one series are not supported", folder)
        step = float(np.median(diffs))
        tol = max(SPACING_ATOL_MM, SPACING_RTOL * step)
        bad = np.flatnonzero(np.abs(diffs - step) > tol)
        if bad.size:
            i = int(bad[0])
            ratio = diffs[i] / step
            if diffs[i] > step and abs(ratio - round(ratio)) * step <= tol:
                raise SoftsegError(
                    f"missing slice: a gap of {diffs[i]:.3g} mm between the slices at {dist[i]:.2f} and "
                    f"{dist[i + 1]:.2f} mm along the normal where the spacing is {step:.3g} mm "
                    f"(about {round(ratio) - 1} slice(s) missing)", folder)
            raise SoftsegError(
                f"inconsistent slice spacing: {diffs.min():.3g} to {diffs.max():.3g} mm between neighbouring "
                f"slices (expected one spacing, within {tol:.2g} mm)", folder)
        step_vec = (positions[-1] - positions[0]) / (len(frames) - 1)
        along = positions - positions[0]
        k = np.arange(len(frames))[:, None]
        if np.abs(along - k * step_vec).max() > tol:
            raise SoftsegError("slice positions do not lie on one line (inconsistent ImagePositionPatient)", folder)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * d_col
    affine[:3, 1] = col_dir * d_row
    affine[:3, 2] = step_vec
    affine[:3, 3] = positions[0]
    return order, affine, warnings


def _tilt_degrees(affine_lps: np.ndarray) -> float:
    """Angle between the slice step and the normal of the image plane (gantry tilt)."""
    step_vec = affine_lps[:3, 2]
    normal = _unit(np.cross(affine_lps[:3, 0], affine_lps[:3, 1]))
    cos = float(np.clip(abs(step_vec @ normal) / np.linalg.norm(step_vec), -1, 1))
    return float(np.degrees(np.arccos(cos)))


def _untilt(data: np.ndarray, affine_lps: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Resample a gantry-tilted (sheared) volume onto slices perpendicular to the image plane, or None."""
    angle = _tilt_degrees(affine_lps)
    step_vec = affine_lps[:3, 2]
    normal = _unit(np.cross(affine_lps[:3, 0], affine_lps[:3, 1]))
    if angle <= TILT_TOLERANCE_DEG:
        return None
    from scipy import ndimage

    target = affine_lps.copy()
    target[:3, 2] = normal * float(step_vec @ normal)
    matrix = np.linalg.inv(affine_lps) @ target  # target voxel -> source voxel
    out = ndimage.affine_transform(data, matrix[:3, :3], offset=matrix[:3, 3], order=1, mode="constant",
                                   cval=float(data.min()) if data.size else 0.0, output=np.float32)
    return out, target, (f"gantry tilt of {angle:.1f} deg: resampled onto slices perpendicular to the image plane "
                         "(linear interpolation, voxels shifted out of the field of view are filled with the minimum)")


def read_series(path: str | os.PathLike, series: str | None = None, *, with_pixels: bool = True) -> DicomSeries:
    """Read one image series from a folder (or one enhanced multi-frame file).

    Args:
        path: A DICOM folder (searched recursively) or file.
        series: SeriesInstanceUID or SeriesDescription; needed when the folder holds several image series.
        with_pixels: False reads headers only (``data`` is then ``None``; geometry, UIDs and slice order are
            all there, e.g. to write a SEG).

    Returns:
        The series with ``float32 (X, Y, Z)`` data and a RAS+ affine.

    Raises:
        SoftsegError: One line naming the folder: several series and no choice, a missing slice, uneven
            spacing, mixed orientations, compressed pixel data without its decoder (naming the package),
            colour images, missing geometry tags, or pydicom not installed.
    """
    path = Path(path)
    info = choose_series(scan_folder(path), series, path)
    for f, h in zip(info.files, info.headers):
        check_greyscale(h, f)
    frames, notes = series_frames(info.headers, info.files, path)
    rows = {(dicom_int(h, "Rows", 0), dicom_int(h, "Columns", 0)) for h in info.headers}
    if any(min(r) < 1 for r in rows):
        raise SoftsegError("no image size (Rows / Columns missing or zero): not an image", path)
    if len(rows) != 1:
        raise SoftsegError(f"slices have different sizes (rows x columns: {sorted(rows)})", path)
    order, affine_lps, warnings = _slice_geometry(frames, path)
    warnings = notes + warnings
    n_rows, n_cols = rows.pop()
    sources = [(frames[i].file_index, None if frames[i].frame_index is None else frames[i].frame_index + 1) for i in order]
    if not with_pixels:
        tilted = len(frames) > 1 and _tilt_degrees(affine_lps) > TILT_TOLERANCE_DEG
        return DicomSeries(data=None, affine=LPS_TO_RAS @ affine_lps, info=info, headers=info.headers,
                           slice_sources=sources, folder=path, resampled=tilted, warnings=warnings,
                           shape=(n_cols, n_rows, len(frames)))
    for note in notes:  # once, when the pixels are read
        logging.getLogger(__name__).warning("warning: %s: %s", path, note)
    data = np.empty((n_cols, n_rows, len(frames)), dtype=np.float32)  # (X = column, Y = row, Z)
    cache: dict[int, np.ndarray] = {}
    for k, idx in enumerate(order):
        fr = frames[idx]
        if fr.frame_index is None:
            _, pixels = _pixels(info.files[fr.file_index])
        else:
            if fr.file_index not in cache:
                cache = {fr.file_index: _pixels(info.files[fr.file_index])[1]}
            pixels = cache[fr.file_index]
            pixels = pixels[fr.frame_index] if pixels.ndim == 3 else pixels
        if pixels.shape != (n_rows, n_cols):
            raise SoftsegError(f"pixel data of shape {pixels.shape}, expected {(n_rows, n_cols)}",
                               info.files[fr.file_index])
        data[:, :, k] = pixels.T.astype(np.float32) * np.float32(fr.slope) + np.float32(fr.intercept)
    cache.clear()
    resampled = False
    untilted = _untilt(data, affine_lps, path) if len(frames) > 1 else None
    if untilted is not None:
        data, affine_lps, message = untilted
        warnings.append(message)
        logging.getLogger(__name__).warning("warning: %s: %s", path, message)  # seen by CLI users and napari's log
        resampled = True
    return DicomSeries(data=data, affine=LPS_TO_RAS @ affine_lps, info=info, headers=info.headers,
                       slice_sources=sources, folder=path, resampled=resampled, warnings=warnings, shape=data.shape)


def load_dicom_image(path: str | os.PathLike, series: str | None = None, n_channels: int | None = None):
    """Like :func:`napari_softseg.io.dataset.load_image` for a DICOM folder: ``(float32 (1, X, Y, Z), Volume)``.

    Raises:
        SoftsegError: See :func:`read_series`; also a model expecting several channels.
    """
    s = read_series(path, series)
    if n_channels and n_channels > 1:
        raise SoftsegError(f"a DICOM series is one channel; the model expects {n_channels}", path)
    return s.data[np.newaxis], s.volume


def describe_folder(path: str | os.PathLike) -> list[dict]:
    """What ``softseg inspect`` lists for a DICOM folder: each series, and what each SEG references."""
    out = []
    for s in scan_folder(path):
        entry = s.to_dict()
        if s.is_seg:
            refs = set()
            for h in s.headers:
                for item in h.get("ReferencedSeriesSequence", []):
                    refs.add(str(item.get("SeriesInstanceUID", "")))
            entry["segmentation_types"] = sorted({str(h.get("SegmentationType", "")) for h in s.headers})
            entry["references"] = sorted(refs)
            entry["segments"] = sum(len(h.get("SegmentSequence", [])) for h in s.headers)
            entry["segment_labels"] = [f"{seg.get('SegmentLabel', '')} ({seg.get('SegmentAlgorithmType', '?')})"
                                       for h in s.headers for seg in h.get("SegmentSequence", [])]
        else:
            h = s.headers[0]
            entry["rows_columns"] = [dicom_int(h, "Rows", 0), dicom_int(h, "Columns", 0)]
            sp = h.get("PixelSpacing")
            try:
                entry["pixel_spacing_mm"] = [float(v) for v in sp] if sp is not None else None
            except (TypeError, ValueError):  # malformed DS values: listed as unknown
                entry["pixel_spacing_mm"] = None
        out.append(entry)
    return out
