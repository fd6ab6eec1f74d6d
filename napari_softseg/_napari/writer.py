"""napari writers: a soft map (Image layer) or a mask (Labels layer) to NIfTI.

Both undo the display transform of :mod:`napari_softseg._napari.layers`, so the file has the source scan's voxel
order and affine and opens aligned in any NIfTI viewer. Soft maps are stored as ``float32``, masks as
``uint8``. The header's description holds a short provenance line (e.g. ``softseg mask p>=0.50``) and a
sidecar ``<name>.softseg.json`` holds the full provenance (kind, threshold, method, model, device,
source file, software version); the reader uses it to restore the layer's style.

Overwriting: napari's save dialog asks before replacing an existing file, so these writers replace it
(atomically: a temporary name, then a rename — an interrupted save leaves the old file intact). A sidecar
that was not written by this plugin is never replaced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_softseg._napari import layers as L
from napari_softseg._napari.dicom_layers import write_layer_seg
from napari_softseg.errors import SoftsegError
from napari_softseg.io.nifti import Volume, check_finite, is_nifti_path, save_volume
from napari_softseg.io.sidecar import check_sidecar_writable, write_sidecar


def _nifti_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if is_nifti_path(path) else path.with_name(path.name + ".nii.gz")


def _reference(geometry: L.Geometry, provenance: dict):
    """A Volume carrying the geometry, with the source file's header when it matches (units, codes)."""

    header = None
    source = provenance.get("source")
    if source and is_nifti_path(source) and Path(source).is_file():
        try:
            import nibabel as nib

            src = nib.load(str(source))
            if np.allclose(src.affine, geometry.affine, atol=1e-3) and tuple(src.shape[:3]) == geometry.shape:
                header = src.header.copy()
        except Exception:  # noqa: BLE001 - fall back to a fresh header
            header = None
    if header is None:
        header = geometry.nifti_header()
    return Volume(data=np.zeros((1, 1, 1)), affine=geometry.affine, header=header, path=None)


def _description(kind: str, provenance: dict) -> str:
    parts = ["softseg", kind]
    if provenance.get("threshold") is not None:
        parts.append(f"p>={L.format_threshold(provenance['threshold'])}")
    if provenance.get("method"):
        parts.append(f"method={provenance['method']}")
    if provenance.get("model"):
        parts.append(f"model={Path(str(provenance['model'])).name}")
    if provenance.get("device"):
        parts.append(f"device={provenance['device']}")
    return " ".join(parts)


def _write(path: str, data: Any, meta: dict, *, kind_default: str, dtype: type) -> list[str]:

    out = _nifti_path(path)
    state = {**meta, "data": data}
    geometry = L.geometry_of(state)
    provenance = L.provenance_of(meta.get("metadata", {}))
    kind = L.softseg_meta(meta.get("metadata", {})).get("kind") or kind_default
    array = np.asarray(data)
    n_channels = int(provenance.get("n_channels", 1))
    core = geometry.from_display(array)
    if n_channels > 1:
        core = np.moveaxis(core, 0, -1)  # (C, X, Y, Z) -> NIfTI (X, Y, Z, C)
    if np.issubdtype(dtype, np.floating):
        check_finite(core, meta.get("name"), "layer data")
    else:
        if core.size and (core.min() < 0 or core.max() > np.iinfo(dtype).max):
            raise SoftsegError(
                f"label values range {core.min()}..{core.max()}; a mask file holds 0..{np.iinfo(dtype).max}", out
            )
    check_sidecar_writable(out)  # before writing the image, so a refusal leaves nothing changed
    save_volume(
        out, np.ascontiguousarray(core).astype(dtype, copy=False), _reference(geometry, provenance),
        overwrite=True, description=_description(kind, provenance), dtype=dtype,
    )
    side = write_sidecar(out, kind, provenance, layer=meta.get("name"), dtype=np.dtype(dtype).name)
    return [str(out), str(side)]


def write_soft_map(path: str, data: Any, meta: dict) -> list[str]:
    """napari writer for an Image layer (a soft map or a scan): NIfTI ``float32`` + provenance sidecar.

    Returns:
        The written paths (the NIfTI file and its sidecar).

    Raises:
        SoftsegError: NaN/inf values, or a layer that cannot be placed in a NIfTI volume.
    """
    return _write(path, data, meta, kind_default="prediction", dtype=np.float32)


def write_mask(path: str, data: Any, meta: dict) -> list[str]:
    """napari writer for a Labels layer (a thresholded mask, a rater, an annotation): NIfTI ``uint8``.

    The threshold (``metadata["softseg"]["provenance"]["threshold"]``) goes into the header description
    and the sidecar.

    Raises:
        SoftsegError: Label values outside 0..255, or a layer that cannot be placed in a NIfTI volume.
    """
    return _write(path, data, meta, kind_default="mask", dtype=np.uint8)


def write_soft_map_seg(path: str, data: Any, meta: dict) -> list[str]:
    """napari writer: a soft map of a DICOM series as a FRACTIONAL / PROBABILITY DICOM SEG referencing it.

    The SEG's segment description holds a short provenance line; the full provenance goes to the same
    sidecar as for NIfTI, named ``<name>.dcm.softseg.json`` (``softseg predict --format dicom-seg`` writes it too).

    Returns:
        The written paths (the SEG and its sidecar).

    Raises:
        SoftsegError: The layer does not lie on a DICOM series of its source folder, or values outside [0, 1].
    """

    return write_layer_seg(path, data, meta, kind="probability")


def write_mask_seg(path: str, data: Any, meta: dict) -> list[str]:
    """napari writer: a mask of a DICOM series as a BINARY DICOM SEG (threshold and model in the segment description,
    full provenance in the ``<name>.dcm.softseg.json`` sidecar).

    Raises:
        SoftsegError: The layer does not lie on a DICOM series of its source folder.
    """

    return write_layer_seg(path, data, meta, kind="binary")
