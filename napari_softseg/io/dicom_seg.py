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

import os
import re
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.dicom import (
    DicomSeries,
    SeriesInfo,
    choose_series,
    read_series,
    require_highdicom,
    scan_folder,
)

POSITION_ATOL_MM = 0.01
RATER_ALGORITHMS = ("MANUAL", "SEMIAUTOMATIC")
SEG_SERIES_NUMBER = 900


def _natural_key(text: str) -> list:
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


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
    for path, header in sorted(segs, key=lambda ph: _natural_key(ph[0].name)):
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
    """A :class:`~napari_softseg.io.dataset.Case` for a DICOM folder (headers only): image = the folder, raters = SEGs.

    Raises:
        SoftsegError: See :func:`~napari_softseg.io.dicom.choose_series` and :func:`case_segs`.
    """
    from napari_softseg.io.dataset import Case

    path = Path(path)
    listing = scan_folder(path)
    image = choose_series(listing, series, path)
    raters, _, _ = case_segs(listing, image, path)
    mask_paths = [p for p, _ in raters]
    return Case(name=path.name, path=path, split="", image_path=path, tasks={1: mask_paths} if mask_paths else {},
                rater_ids={1: list(range(1, len(mask_paths) + 1))} if mask_paths else {})


def load_dicom_case(path: str | os.PathLike, task: int = 1, *, series: str | None = None,
                    allow_no_masks: bool = False):
    """Read a DICOM case: the image series and its rater SEGs, as a :class:`~napari_softseg.io.dataset.CaseData`.

    Args:
        path: Folder holding the image series and rater SEG objects.
        task: Must be 1 (DICOM raters carry no task number).
        series: SeriesInstanceUID or description when the folder holds several image series.
        allow_no_masks: Return a case with zero raters instead of failing (prediction only).

    Raises:
        SoftsegError: See :func:`~napari_softseg.io.dicom.read_series`, :func:`case_segs`,
            :func:`check_seg_matches`; no rater SEG (unless allowed); a non-binary rater segment.
    """
    from napari_softseg.io.dataset import CaseData, binarize_mask
    from napari_softseg.io.nifti import check_finite

    path = Path(path)
    listing = scan_folder(path)
    image_info = choose_series(listing, series, path)
    s = read_series(path, image_info.uid)  # the image's problems first
    check_finite(s.data, path, "image")
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

    from napari_softseg import __version__
    from napari_softseg.io.files import atomic_destination, check_writable

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
                                      "model": model, "software": f"napari-softseg {__version__}"}.items() if v},
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


def mask_path_for(out: str | os.PathLike) -> Path:
    """``pred.dcm`` -> ``pred_mask.dcm`` (where ``predict --format dicom-seg`` puts the BINARY SEG)."""
    out = Path(out)
    stem = out.name[:-4] if out.name.lower().endswith(".dcm") else out.name
    return out.with_name(stem + "_mask.dcm")


def predict_dicom(
    model,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    series: str | None = None,
    fmt: str = "dicom-seg",
    threshold: float = 0.5,
    device="auto",
    tile_size: int | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    task: int | None = None,
):
    """Predict one DICOM series and write the soft map as NIfTI, or as SEGs referencing the series.

    With ``fmt="dicom-seg"``, ``output`` (``.dcm``) receives the FRACTIONAL PROBABILITY SEG and
    :func:`mask_path_for` ``(output)`` the BINARY SEG of ``p >= threshold``. With ``fmt="nifti"``,
    ``output`` is a ``.nii.gz`` with the series' (RAS) affine. Outputs are checked before any work starts.

    Yields:
        :class:`~napari_softseg.progress.Progress` (``"device"``, ``"slices"``, ``"case"``).

    Returns:
        The written files.

    Raises:
        SoftsegError: Bad model, series, task, threshold, output name, or an existing output.
    """
    from napari_softseg.io.files import check_writable
    from napari_softseg.io.nifti import is_nifti_path, save_volume
    from napari_softseg.model.device import resolve_device
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import LoadedModel, load_model
    from napari_softseg.progress import Progress

    input_path, output = Path(input_path), Path(output)
    if fmt not in ("dicom-seg", "nifti"):
        raise SoftsegError(f"unknown output format {fmt!r} (expected nifti or dicom-seg)")
    if not 0.0 <= threshold <= 1.0:
        raise SoftsegError(f"--threshold must be in [0, 1], got {threshold}")
    outputs = [output, mask_path_for(output)] if fmt == "dicom-seg" else [output]
    if fmt == "dicom-seg" and not output.name.lower().endswith(".dcm"):
        raise SoftsegError("output of --format dicom-seg must be a .dcm file name (the mask goes beside it as "
                           f"{mask_path_for(output.name + '.dcm').name[:-4]}...)", output)
    if fmt == "nifti" and not is_nifti_path(output):
        raise SoftsegError("output must end in .nii or .nii.gz (or pass --format dicom-seg)", output)
    for path in outputs:
        check_writable(path, overwrite)
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    if task is not None and task != model.config.task:
        raise SoftsegError(f"the model was trained for task {model.config.task}, not task {task}", model.path)
    s = read_series(input_path, series)
    if fmt == "dicom-seg" and s.resampled:
        raise SoftsegError("the series has gantry tilt and was resampled; write --format nifti instead", input_path)
    choice = resolve_device(device)
    yield Progress("device", 0, None, f"device: {choice.device} ({choice.reason})", {"device": choice.device})
    image = s.data[np.newaxis]
    soft = yield from predict_array(model, image, device=choice, tile_size=tile_size, batch_size=batch_size,
                                    source=input_path)
    model_name = model.path.name if model.path is not None else "model"
    written: list[Path] = []
    try:  # all or nothing
        if fmt == "nifti":
            written.append(save_volume(output, soft, s.volume, overwrite=overwrite, dtype=np.float32,
                                       description=f"softseg p(task{model.config.task}) of DICOM {s.info.uid}"[:79]))
        else:
            written.append(write_seg(output, s, soft, kind="probability", model=model_name, overwrite=overwrite))
            written.append(write_seg(outputs[1], s, soft >= threshold, kind="binary", threshold=threshold,
                                     model=model_name, overwrite=overwrite))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    yield Progress("case", 1, 1, f"wrote {output}")
    return written


# --------------------------------------------------------------------------------------------------
# Viewer
# --------------------------------------------------------------------------------------------------
def dicom_layers(path: str | os.PathLike) -> list:
    """napari layer data of a DICOM folder: per image series the image, its raters (and their mean soft label),
    and the model outputs found as SEGs (FRACTIONAL -> soft map, BINARY AUTOMATIC -> mask).

    With several image series every layer name starts with the series description (or UID), and only
    the first series' layers are visible.

    Raises:
        SoftsegError: See :func:`load_dicom_case` and :func:`read_seg`.
    """
    import logging

    from napari_softseg import layers as L
    from napari_softseg._writer import read_sidecar
    from napari_softseg.analysis.softlabels import make_soft_label

    logger = logging.getLogger(__name__)
    path = Path(path)
    listing = scan_folder(path)
    images = [s for s in listing if not s.is_seg]
    out = []
    for n, info in enumerate(images):
        case = load_dicom_case(path, series=info.uid, allow_no_masks=True)
        for warning in case.warnings:
            logger.warning("%s: %s", path, warning)
        soft = make_soft_label(case.masks, "mean", spacing=case.spacing, rater_names=case.rater_names) \
            if case.masks.shape[0] else None
        layers = L.case_layers(case, soft)
        geometry = L.Geometry(case.affine, case.spatial_shape)
        _, outputs, _ = case_segs(listing, info, path)
        s = read_series(path, info.uid, with_pixels=False)
        for seg_path, header, segments in outputs:
            data = read_seg(seg_path, s, [seg["number"] for seg in segments])
            fractional = str(header.get("SegmentationType", "")) == "FRACTIONAL"
            # the sidecar both SEG writers leave beside the file: the full provenance (model, device, T, …)
            side = {k: v for k, v in read_sidecar(seg_path).items() if k not in ("software", "layer", "dtype")}
            side_kind = side.pop("kind", None)
            for seg, arr in zip(segments, data):
                prov = {**side, "source": str(path), "dicom_seg": str(seg_path), "description": seg["description"]}
                name = f"{seg_path.name}: {seg['label']}" if seg["label"] else seg_path.name  # unique in the viewer
                if fractional:
                    kind = side_kind if side_kind in ("prediction", "soft_label") else "prediction"
                    layers.append(L.soft_map_layer(arr, geometry, name=name, kind=kind, **prov))
                else:
                    layers.append(L.labels_layer(arr, geometry, name=name, kind="mask", color="#00e5ff", opacity=0.6,
                                                 **prov))
        meta = {"dicom_folder": str(path), "dicom_series_uid": info.uid, "dicom_series_description": info.description}
        for _, kwargs, _ in layers:
            kwargs["metadata"].setdefault(L.KEY, {}).setdefault("provenance", {}).update(meta)
            if len(images) > 1:
                kwargs["name"] = f"{info.description or info.uid} {kwargs['name']}"
                kwargs["visible"] = kwargs.get("visible", True) and n == 0
        out += layers
    return out


def series_for_layer(source: str | os.PathLike, geometry, series_uid: str | None = None) -> DicomSeries:
    """The DICOM series (headers only) a layer lies on: by UID if known, else the image series with its geometry.

    Raises:
        SoftsegError: ``source`` is not a DICOM folder, or no image series there has the layer's grid.
    """
    from napari_softseg.io.dicom import is_dicom_source

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


def write_layer_seg(path: str, data, meta: dict, *, kind: str) -> list[str]:
    """napari writer body: a soft map (Image layer) or mask (Labels layer) as a DICOM SEG of its source series,
    plus the ``<name>.dcm.softseg.json`` sidecar with the layer's full provenance (the NIfTI writers' format).

    Returns:
        The SEG and sidecar paths.
    """
    from napari_softseg import layers as L
    from napari_softseg._writer import check_sidecar_writable, write_sidecar

    out = Path(path)
    if not out.name.lower().endswith(".dcm"):
        out = out.with_name(out.name + ".dcm")
    geometry = L.geometry_of({**meta, "data": data})
    prov = L.provenance_of(meta.get("metadata", {}))
    array = geometry.from_display(np.asarray(data))
    series = series_for_layer(prov.get("dicom_folder") or prov.get("source"), geometry, prov.get("dicom_series_uid"))
    check_sidecar_writable(out)  # a refusal leaves nothing written
    model = prov.get("model")
    model = Path(str(model)).name if model else None
    threshold = prov.get("threshold")
    written = write_seg(out, series, array, kind=kind, model=model,
                        threshold=None if threshold is None else float(threshold),
                        label=str(meta.get("name") or "")[:64] or None, overwrite=True)
    layer_kind = L.softseg_meta(meta.get("metadata", {})).get("kind") or ("prediction" if kind == "probability"
                                                                          else "mask")
    side = write_sidecar(written, layer_kind, {**prov, "dicom_series_uid": series.info.uid},
                         layer=meta.get("name"), dtype="float32" if kind == "probability" else "uint8")
    return [str(written), str(side)]
