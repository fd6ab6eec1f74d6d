"""Test helper: write DICOM series (classic single-frame or enhanced multi-frame) from a NIfTI-style array.

Independent of the package's reader: the geometry is written straight from the RAS affine with the
textbook relations (LPS = diag(-1, -1, 1) RAS; pixel (column i, row j) of slice k sits at
IPP_k + i * PixelSpacing[1] * row_dir + j * PixelSpacing[0] * col_dir).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def rotation(axis, degrees: float) -> np.ndarray:
    """4x4 rotation about an axis through the origin."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    out = np.eye(4)
    out[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    return out


def _common(ds, *, modality, study_uid, frame_uid, series_uid, description, series_number, rows, cols):
    ds.PatientName = "Softseg^Demo"
    ds.PatientID = "SOFTSEG001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyID = "1"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "softseg-tests"
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0


def _meta(sop_class, sop_uid, transfer_syntax):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _geometry(affine_ras):
    lps = LPS @ np.asarray(affine_ras, float)
    col_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / col_step, lps[:3, 1] / row_step
    return lps, row_dir, col_dir, row_step, col_step


def write_series(
    folder, data, affine_ras, *, description="T1 axial", modality="MR", series_uid=None, study_uid=None,
    frame_uid=None, series_number=1, slope=1.0, intercept=0.0, slice_positions=None, seed=0,
    transfer_syntax=None, pixel_bytes=None,
) -> list[Path]:
    """Write ``data (X, Y, Z)`` as single-frame files, one per slice, InstanceNumbers shuffled.

    Stored values are ``(data - intercept) / slope`` (uint16), so the reader must apply the rescale.
    ``slice_positions`` overrides IPP per slice (to make gaps or tilt). ``transfer_syntax`` with
    ``pixel_bytes`` writes encapsulated (compressed) pixel data as given.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    lps, row_dir, col_dir, row_step, col_step = _geometry(affine_ras)
    nz = data.shape[2]
    numbers = np.random.default_rng(seed).permutation(nz) + 1
    paths = []
    for k in range(nz):
        stored = np.round((np.asarray(data[:, :, k], float) - intercept) / slope)
        assert stored.min() >= 0 and stored.max() < 65536
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = _meta(CT_STORAGE if modality == "CT" else MR_STORAGE, sop_uid,
                             transfer_syntax or ExplicitVRLittleEndian)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop_uid
        _common(ds, modality=modality, study_uid=study_uid, frame_uid=frame_uid, series_uid=series_uid,
                description=description, series_number=series_number, rows=data.shape[1], cols=data.shape[0])
        ds.InstanceNumber = int(numbers[k])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        pos = lps @ [0, 0, k, 1] if slice_positions is None else slice_positions[k]
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in pos[:3]]
        ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(row_step), float(col_step)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "NONE", "", "3D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 10.0, 4.0, 1, 3.0
        if modality == "CT":
            ds.KVP = 120
        ds.AcquisitionNumber = 1
        if pixel_bytes is not None:
            ds.PixelData = encapsulate([pixel_bytes])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = stored.T.astype("<u2").tobytes()  # rows = Y, columns = X
        path = folder / f"IM{k:04d}_{sop_uid[-6:]}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(path, data, affine_ras, *, description="T1 enhanced", slope=1.0, intercept=0.0, seed=0,
                   series_uid=None) -> Path:
    """Write ``data (X, Y, Z)`` as one Enhanced MR multi-frame file with frames in shuffled order."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lps, row_dir, col_dir, row_step, col_step = _geometry(affine_ras)
    nz = data.shape[2]
    order = np.random.default_rng(seed).permutation(nz)
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _meta(ENHANCED_MR_STORAGE, sop_uid, ExplicitVRLittleEndian)
    ds.SOPClassUID = ENHANCED_MR_STORAGE
    ds.SOPInstanceUID = sop_uid
    _common(ds, modality="MR", study_uid=generate_uid(), frame_uid=generate_uid(),
            series_uid=series_uid or generate_uid(), description=description, series_number=7,
            rows=data.shape[1], cols=data.shape[0])
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER", "NONE"]
    ds.NumberOfFrames = nz
    ds.ContentQualification = "RESEARCH"
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row_dir, *col_dir)]
    shared.PlaneOrientationSequence = Sequence([ori])
    meas = Dataset()
    meas.PixelSpacing = [float(row_step), float(col_step)]
    meas.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
    shared.PixelMeasuresSequence = Sequence([meas])
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = f"{slope:g}", f"{intercept:g}", "US"
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame, pixels = [], []
    for k in order:
        fg = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [float(f"{v:.6f}") for v in (lps @ [0, 0, k, 1])[:3]]
        fg.PlanePositionSequence = Sequence([pos])
        per_frame.append(fg)
        pixels.append(np.round((np.asarray(data[:, :, k], float) - intercept) / slope).T.astype("<u2"))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(pixels).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path



def write_rater_seg(path, source_paths, masks, labels=None, *, shift_mm=0.0) -> Path:
    """A BINARY SEG drawn by people (MANUAL segments), one segment per mask ``(X, Y, Z)`` in ``masks``.

    ``source_paths`` are the series files in slice order (as :func:`write_series` returns them).
    ``shift_mm`` moves the sources' positions before the SEG is made (same UIDs): frames that do not match.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(p) for p in source_paths]
    if shift_mm:
        for ds in sources:
            ds.ImagePositionPatient = [float(v) + shift_mm for v in ds.ImagePositionPatient]
    masks = np.asarray(masks)
    labels = labels or [f"rater {i}" for i in range(1, len(masks) + 1)]
    descs = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=label, segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, label in enumerate(labels, start=1)
    ]
    pixel = np.stack([m.transpose(2, 1, 0) for m in masks], axis=-1).astype(bool)  # (Z, rows, cols, S)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs, series_instance_uid=generate_uid(), series_number=50,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="tests", manufacturer_model_name="tests",
        software_versions="0", device_serial_number="0",
    )
    path = Path(path)
    seg.save_as(path)
    return path
