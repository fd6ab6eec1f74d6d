"""DICOM SEG (highdicom): rater annotations in, soft predictions and thresholded masks out.

**Reading.** A DICOM case folder holds one image series and DICOM SEG objects. Every segment of a BINARY
SEG drawn by a person (algorithm type MANUAL or SEMIAUTOMATIC) is one rater: one SEG per rater, or one
SEG with one segment per rater, both work. Each SEG is checked against the image series before use: it
must reference that series (a SEG referencing a series that is not in the folder is refused), have the
image's rows and columns, and each of its frames must lie on the slice it derives from (position within
0.01 mm), else one line says what does not match. AUTOMATIC segments and FRACTIONAL SEGs (a model's
output, e.g. ours) are not raters: the viewer shows them as predictions / masks.

**Writing.** :func:`write_seg` writes a soft map as a FRACTIONAL SEG of type PROBABILITY (values stored as
0..255) and a thresholded mask as a BINARY SEG, both referencing the source series' instances, with the
model, the threshold and the software in the segment's description and algorithm parameters. Writing is
atomic and never replaces an existing file unless asked.

Arrays are in the same ``(X, Y, Z)`` voxel order as :func:`napari_softseg.io.dicom.read_series`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from napari_softseg import SOFTWARE, __version__
from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import Case, CaseData, binarize_mask, natural_key
from napari_softseg.io.dicom import (
    DicomSeries,
    SeriesInfo,
    choose_series,
    is_dicom_source,
    read_series,
    require_highdicom,
    scan_folder,
)
from napari_softseg.io.files import atomic_destination, check_writable
from napari_softseg.io.nifti import replace_non_finite

POSITION_ATOL_MM = 0.01
RATER_ALGORITHMS = ("MANUAL", "SEMIAUTOMATIC")
SEG_SERIES_NUMBER = 900


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def _referenced_series(header) -> set[str]:
    return {str(item.get("SeriesInstanceUID", "")) for item in header.get("ReferencedSeriesSequence", [])}


def _source_sop(fg) -> tuple[str | None, int | None]:
    for der in fg.get("DerivationImageSequence", []):
        for src in der.get("SourceImageSequence", []):
            frame = src.get("ReferencedFrameNumber")
            return str(src.ReferencedSOPInstanceUID), (int(frame) if frame not in (None, "") else None)
    return None, None


def check_seg_matches(seg, series: DicomSeries, path) -> None:
    """Raise one line unless the SEG references ``series`` and its frames lie on the series' slices.

    Raises:
        SoftsegError: Another series referenced; other rows/columns, frame of reference, pixel spacing or
            orientation; a frame whose source instance is not in the series, or that sits elsewhere.
    """
    refs = _referenced_series(seg)
    if series.info.uid not in refs:
        raise SoftsegError(
            f"SEG references series {', '.join(sorted(refs)) or '(none)'}, not the image series "
            f"{series.info.uid} (\"{series.info.description}\")", path)
    if series.resampled:
        raise SoftsegError("the image series has gantry tilt and was resampled; its SEGs cannot be placed on it", path)
    nx, ny, _ = series.shape
    if (int(seg.Rows), int(seg.Columns)) != (ny, nx):
        raise SoftsegError(f"SEG frames do not match the image: frames are {seg.Rows}x{seg.Columns} "
                           f"(rows x columns), the image slices {ny}x{nx}", path)
    image_for = str(series.headers[0].get("FrameOfReferenceUID", ""))
    if image_for and str(seg.get("FrameOfReferenceUID", image_for)) != image_for:
        raise SoftsegError("SEG frames do not match the image: another FrameOfReferenceUID", path)
    lps = series.affine_lps
    slice_of = {}
    for k, (file_index, frame) in enumerate(series.slice_sources):
        slice_of[(str(series.headers[file_index].SOPInstanceUID), frame)] = k
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    for f, fg in enumerate(seg.get("PerFrameFunctionalGroupsSequence", []), start=1):
        uid, frame = _source_sop(fg)
        key = (uid, frame if series.is_multiframe else None)
        if uid is None or key not in slice_of:
            raise SoftsegError(f"SEG frames do not match the image: frame {f} derives from instance {uid} "
                               f"(frame {frame}), which is not a slice of the image series", path)
        k = slice_of[key]
        pos_item = (fg.get("PlanePositionSequence") or [None])[0]
        if pos_item is not None:
            seg_pos = np.array([float(v) for v in pos_item.ImagePositionPatient])
            expected = (lps @ [0, 0, k, 1])[:3]
            if np.abs(seg_pos - expected).max() > POSITION_ATOL_MM:
                raise SoftsegError(
                    f"SEG frames do not match the image: frame {f} lies at {np.round(seg_pos, 2).tolist()} mm but "
                    f"its source slice at {np.round(expected, 2).tolist()} mm", path)
    for group in (shared,):
        meas = (group.get("PixelMeasuresSequence") or [None])[0] if group is not None else None
        if meas is not None and "PixelSpacing" in meas:
            spacing = np.array([float(v) for v in meas.PixelSpacing])
            expected = np.array([np.linalg.norm(lps[:3, 1]), np.linalg.norm(lps[:3, 0])])
            if not np.allclose(spacing, expected, rtol=1e-4, atol=1e-4):
                raise SoftsegError(f"SEG frames do not match the image: pixel spacing {spacing.tolist()} vs "
                                   f"{np.round(expected, 4).tolist()}", path)


def read_seg(path: str | os.PathLike, series: DicomSeries, segment_numbers: list[int] | None = None) -> np.ndarray:
    """Read a SEG's segments on the image grid: ``(S, X, Y, Z)``, ``uint8`` (BINARY) or ``float32`` in [0, 1].

    Raises:
        SoftsegError: The SEG cannot be read, or does not match ``series`` (see :func:`check_seg_matches`).
    """
    hd = require_highdicom()
    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom/pydicom raise many types for bad files
        raise SoftsegError(f"cannot read DICOM SEG: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}",
                           path) from None
    check_seg_matches(seg, series, path)
    numbers = segment_numbers or [int(s.SegmentNumber) for s in seg.SegmentSequence]
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    dtype = np.float32 if fractional else np.uint8
    try:
        if series.is_multiframe:
            uid = str(series.headers[series.slice_sources[0][0]].SOPInstanceUID)
            pixels = seg.get_pixels_by_source_frame(
                uid, source_frame_numbers=[f for _, f in series.slice_sources], segment_numbers=numbers,
                assert_missing_frames_are_empty=True, dtype=dtype)
        else:
            uids = [str(series.headers[i].SOPInstanceUID) for i, _ in series.slice_sources]
            pixels = seg.get_pixels_by_source_instance(
                uids, segment_numbers=numbers, assert_missing_frames_are_empty=True, dtype=dtype)
    except (ValueError, KeyError, IndexError) as exc:
        raise SoftsegError(f"SEG frames do not match the image: {str(exc).strip().splitlines()[0]}", path) from None
    return np.ascontiguousarray(pixels.transpose(3, 2, 1, 0))  # (Z, rows, cols, S) -> (S, X, Y, Z)


def _segments(header) -> list[dict]:
    out = []
    for s in header.get("SegmentSequence", []):
        out.append({"number": int(s.SegmentNumber), "label": str(s.get("SegmentLabel", "")),
                    "algorithm": str(s.get("SegmentAlgorithmType", "")), "description": str(s.get("SegmentDescription", ""))})
    return out


def case_segs(series_list: list[SeriesInfo], image: SeriesInfo, folder) -> tuple[list, list, list[str]]:
    """Split a folder's SEG objects into raters and model outputs of ``image``.

    Returns:
        ``(raters, outputs, notes)``: raters are ``(path, segment)``; outputs ``(path, header, segments)``.

    Raises:
        SoftsegError: A SEG referencing a series that is not in the folder.
    """
    images = {s.uid for s in series_list if not s.is_seg}
    raters, outputs, notes = [], [], []
    segs = [(p, h) for s in series_list if s.is_seg for p, h in zip(s.files, s.headers)]
    for path, header in sorted(segs, key=lambda ph: natural_key(ph[0].name)):
        refs = _referenced_series(header)
        if image.uid not in refs:
            if refs & images:
                notes.append(f"{path.name} belongs to another series in the folder; not used")
                continue
            raise SoftsegError(f"SEG references series {', '.join(sorted(refs)) or '(none)'}, not the image series "
                               f"{image.uid} (\"{image.description}\")", path)
        segments = _segments(header)
        manual = [s for s in segments if s["algorithm"] in RATER_ALGORITHMS]
        if str(header.get("SegmentationType", "")) == "BINARY" and manual:
            raters += [(path, s) for s in manual]
        if len(manual) < len(segments):
            outputs.append((path, header, [s for s in segments if s["algorithm"] not in RATER_ALGORITHMS]))
    return raters, outputs, notes


def find_dicom_case(path: str | os.PathLike, series: str | None = None):
    """A :class:`~napari_softseg.io.case.Case` for a DICOM folder (headers only): image = the folder, raters = SEGs.

    Raises:
        SoftsegError: See :func:`~napari_softseg.io.dicom.choose_series` and :func:`case_segs`.
    """

    path = Path(path)
    listing = scan_folder(path)
    image = choose_series(listing, series, path)
    raters, _, _ = case_segs(listing, image, path)
    mask_paths = [p for p, _ in raters]
    return Case(name=path.name, path=path, split="", image_path=path, tasks={1: mask_paths} if mask_paths else {},
                rater_ids={1: list(range(1, len(mask_paths) + 1))} if mask_paths else {})


def load_dicom_case(path: str | os.PathLike, task: int = 1, *, series: str | None = None,
                    allow_no_masks: bool = False):
    """Read a DICOM case: the image series and its rater SEGs, as a :class:`~napari_softseg.io.case.CaseData`.

    Args:
        path: Folder holding the image series and rater SEG objects.
        task: Must be 1 (DICOM raters carry no task number).
        series: SeriesInstanceUID or description when the folder holds several image series.
        allow_no_masks: Return a case with zero raters instead of failing (prediction only).

    Raises:
        SoftsegError: See :func:`~napari_softseg.io.dicom.read_series`, :func:`case_segs`,
            :func:`check_seg_matches`; no rater SEG (unless allowed); a non-binary rater segment.
    """

    path = Path(path)
    listing = scan_folder(path)
    image_info = choose_series(listing, series, path)
    s = read_series(path, image_info.uid)  # the image's problems first
    s.data = replace_non_finite(s.data, path, "image")
    raters, _, notes = case_segs(listing, image_info, path)
    if task != 1 and raters:
        raise SoftsegError(f"DICOM SEG raters are task 1; there is no task {task}", path)
    if not raters and not allow_no_masks:
        raise SoftsegError("no rater SEG found (expected DICOM SEG objects with MANUAL or SEMIAUTOMATIC "
                           "segments referencing the image series)", path)
    masks = np.zeros((len(raters), *s.shape), dtype=np.uint8)
    for i, (seg_path, segment) in enumerate(raters):
        data = read_seg(seg_path, s, [segment["number"]])[0]
        binarize_mask(data, seg_path, out=masks[i])
    labels = [seg["label"] for _, seg in raters]
    names = labels if labels and all(labels) and len(set(labels)) == len(labels) else [
        f"rater {i}" for i in range(1, len(raters) + 1)]
    warnings = list(s.warnings) + notes
    if len(raters) == 1:
        warnings.append("only one rater: the soft label equals that rater's hard mask")
    if raters and not masks.any():
        warnings.append("all rater masks are empty")
    vol = s.volume
    return CaseData(name=path.name, image=s.data[np.newaxis], masks=masks, rater_names=names, affine=s.affine,
                    spacing=vol.spacing, header=vol.header, image_path=path, mask_paths=[p for p, _ in raters],
                    task=1, warnings=warnings)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _describe(kind: str, threshold: float | None, model: str | None) -> str:
    parts = ["softseg", "probability" if kind == "probability" else "mask"]
    if threshold is not None:
        parts.append(f"p>={threshold:.2f}")
    if model:
        parts.append(f"model={model}")
    return " ".join(parts)[:64]  # LO


#: Type 2 attributes of the Patient and General Study modules that a SEG copies from its source images.
#: Anonymised exports often drop them; the standard lets them be present but empty, so they are written empty.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _with_type2_filled(dataset):
    """``dataset``, or a shallow copy of it with each missing :data:`TYPE2_COPIED` attribute set empty."""
    missing = [name for name in TYPE2_COPIED if name not in dataset]
    if not missing:
        return dataset
    filled = copy.copy(dataset)
    for name in missing:
        setattr(filled, name, "")
    return filled


def write_seg(
    out: str | os.PathLike,
    series: DicomSeries,
    array: np.ndarray,
    *,
    kind: str = "probability",
    threshold: float | None = None,
    model: str | None = None,
    label: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a soft map (FRACTIONAL PROBABILITY) or a mask (BINARY) as a DICOM SEG of ``series``.

    Args:
        out: Output file (``.dcm``).
        series: The source image series (headers are enough: ``read_series(..., with_pixels=False)``).
        array: ``(X, Y, Z)`` on the series' grid: probabilities in [0, 1], or a mask (non-zero = inside).
        kind: ``"probability"`` or ``"binary"``.
        threshold: The operating point the mask was cut at (recorded in the segment description).
        model: Model name (recorded in the segment description and algorithm identification).
        label: Segment label (default "softseg probability" / "softseg mask").
        overwrite: Replace an existing file.

    Raises:
        SoftsegError: Shape not on the series' grid, values outside [0, 1] / NaN, a resampled (tilted)
            series, an existing output, or highdicom missing.
    """
    hd = require_highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    out = Path(out)
    if kind not in ("probability", "binary"):
        raise ValueError(f"kind must be 'probability' or 'binary', got {kind!r}")
    check_writable(out, overwrite)
    if series.resampled:
        raise SoftsegError("the series has gantry tilt and was resampled; a SEG must lie on the scanner's slices",
                           series.folder)
    array = np.asarray(array)
    if array.shape != tuple(series.shape):
        raise SoftsegError(f"array shape {array.shape} is not the series' {tuple(series.shape)}", out)
    if kind == "probability":
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all() or (array.size and (array.min() < 0 or array.max() > 1)):
            raise SoftsegError("a probability SEG needs finite values in [0, 1]", out)
    else:
        array = array != 0
    frames = array.transpose(2, 1, 0)  # (Z, rows = Y, columns = X), slice order
    if series.is_multiframe:
        sources = [series.headers[series.slice_sources[0][0]]]
        pixel = np.zeros_like(frames)
        for k, (_, frame) in enumerate(series.slice_sources):
            pixel[frame - 1] = frames[k]
    else:
        sources = [series.headers[i] for i, _ in series.slice_sources]
        pixel = frames
    algorithm = hd.AlgorithmIdentificationSequence(
        name=(model or "napari-softseg")[:64], version=__version__, family=codes.cid7162.ArtificialIntelligence,
        parameters={k: v for k, v in {"threshold": None if threshold is None else f"{threshold:g}",
                                      "model": model, "software": SOFTWARE}.items() if v},
    )
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=(label or ("softseg probability" if kind == "probability" else "softseg mask"))[:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    desc.SegmentDescription = _describe(kind, threshold, model)
    number = series.info.number
    sources = [_with_type2_filled(ds) for ds in sources]
    kwargs = dict(
        source_images=sources,
        pixel_array=pixel[..., np.newaxis] if pixel.ndim == 3 else pixel,
        segment_descriptions=[desc],
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER + (number or 0) % 100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="napari-softseg",
        manufacturer_model_name="napari-softseg",
        software_versions=__version__,
        device_serial_number="none",
        series_description=_describe(kind, threshold, model),
        content_label="SOFTSEG",
        content_description=_describe(kind, threshold, model),
    )
    if kind == "probability":
        kwargs.update(segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
                      fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY, max_fractional_value=255)
    else:
        kwargs.update(segmentation_type=hd.seg.SegmentationTypeValues.BINARY)
    try:
        seg = hd.seg.Segmentation(**kwargs)
    except (ValueError, TypeError, AttributeError) as exc:
        raise SoftsegError(f"cannot make a DICOM SEG from this series: {str(exc).strip().splitlines()[0]}",
                           series.folder) from None
    try:
        with atomic_destination(out, overwrite, suffix=".part.dcm") as tmp:
            seg.save_as(tmp, enforce_file_format=True)
    except OSError as exc:
        raise SoftsegError(f"could not write: {exc.strerror or exc}", out) from None
    return out


# --------------------------------------------------------------------------------------------------
# Viewer
# --------------------------------------------------------------------------------------------------
def series_for_layer(source: str | os.PathLike, geometry, series_uid: str | None = None) -> DicomSeries:
    """The DICOM series (headers only) a layer lies on: by UID if known, else the image series with its geometry.

    Raises:
        SoftsegError: ``source`` is not a DICOM folder, or no image series there has the layer's grid.
    """

    if not source or not is_dicom_source(source):
        raise SoftsegError("this layer does not come from a DICOM series (a SEG must reference the DICOM images it "
                           "was made from); save it as NIfTI instead", source)
    listing = scan_folder(source)
    candidates = [s for s in listing if not s.is_seg and (series_uid is None or s.uid == series_uid)]
    for info in candidates:
        try:
            s = read_series(source, info.uid, with_pixels=False)
        except SoftsegError:
            continue
        if tuple(s.shape) == tuple(geometry.shape) and np.allclose(s.affine, geometry.affine, atol=1e-3):
            return s
    raise SoftsegError("no image series in this folder has the layer's voxel grid; save it as NIfTI instead", source)
