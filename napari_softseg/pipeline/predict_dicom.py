"""Predict and record a DICOM series: the soft map as a FRACTIONAL (probability) DICOM SEG plus a BINARY SEG
of the chosen threshold, both referencing the source images, or as NIfTI with the series' RAS affine; each
output gets the sidecar of what ran (:mod:`~napari_softseg.pipeline.provenance`).

Example:
    >>> from napari_softseg.progress import drive
    >>> drive(predict_dicom("MODEL_DIR", "dicom_folder", "pred.dcm"))  # doctest: +SKIP
    [PosixPath('pred.dcm'), PosixPath('pred_mask.dcm')]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.dicom import read_series
from napari_softseg.io.dicom_seg import write_seg
from napari_softseg.io.files import check_writable
from napari_softseg.io.nifti import is_nifti_path, save_volume
from napari_softseg.io.sidecar import check_sidecar_writable, write_sidecar
from napari_softseg.model.device import resolve_device
from napari_softseg.model.domain import model_domain_notes, spacing_record
from napari_softseg.model.inference import predict_array
from napari_softseg.model.model_io import LoadedModel, load_model
from napari_softseg.pipeline.provenance import DeviceTracker, prediction_provenance
from napari_softseg.progress import Progress


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
        check_sidecar_writable(path)  # a sidecar we may not replace: refuse before any work
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
    notes = model_domain_notes(model.config, image, s.volume.spacing)
    for note in notes:
        yield Progress("domain", 0, None, str(note))
    ran = DeviceTracker(choice.device)
    soft = yield from ran.follow(predict_array(model, image, device=choice, tile_size=tile_size,
                                               batch_size=batch_size, source=input_path, spacing=s.volume.spacing))
    model_name = model.path.name if model.path is not None else "model"
    written: list[Path] = []
    sidecars: list[Path] = []
    try:  # all or nothing
        if fmt == "nifti":
            written.append(save_volume(output, soft, s.volume, overwrite=overwrite, dtype=np.float32,
                                       description=f"softseg p(task{model.config.task}) of DICOM {s.info.uid}"[:79]))
        else:
            written.append(write_seg(output, s, soft, kind="probability", model=model_name, overwrite=overwrite))
            written.append(write_seg(outputs[1], s, soft >= threshold, kind="binary", threshold=threshold,
                                     model=model_name, overwrite=overwrite))
        # the sidecar of NIfTI predictions (and of the viewer's SEG writers): a SEG's segment description
        # holds only a short line; the reader restores the full provenance from the sidecar
        provenance = prediction_provenance(model, input_path, ran.device,
                                           **spacing_record(model.config, s.volume.spacing, notes))
        sidecars.append(write_sidecar(written[0], "prediction", provenance))
        if fmt == "dicom-seg":
            sidecars.append(write_sidecar(written[1], "mask", {**provenance, "threshold": threshold}))
    except BaseException:
        for path in written + sidecars:
            path.unlink(missing_ok=True)
        raise
    yield Progress("case", 1, 1, f"wrote {output}")
    return written
