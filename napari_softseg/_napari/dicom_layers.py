"""DICOM in the viewer: layer data of a DICOM folder (image series, rater SEGs and model SEGs) for the reader,
and the body of the SEG writers (a soft map or mask layer back to a SEG of its source series).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from napari_softseg._napari import layers as L
from napari_softseg.analysis.softlabels import make_soft_label
from napari_softseg.errors import SoftsegError
from napari_softseg.io.dicom import choose_series, read_series, scan_folder
from napari_softseg.io.dicom_seg import case_segs, load_dicom_case, read_seg, series_for_layer, write_seg
from napari_softseg.io.sidecar import check_sidecar_writable, read_sidecar, write_sidecar


def dicom_layers(path: str | os.PathLike) -> list:
    """napari layer data of a DICOM folder: per image series the image, its raters (and their mean soft label),
    and the model outputs found as SEGs (FRACTIONAL -> soft map, BINARY AUTOMATIC -> mask).

    With several image series every layer name starts with the series description (or UID), and only
    the first series' layers are visible.

    Raises:
        SoftsegError: See :func:`load_dicom_case` and :func:`read_seg`.
    """

    logger = logging.getLogger(__name__)
    path = Path(path)
    listing = scan_folder(path)
    images = [s for s in listing if s.is_image]
    if not images and any(s.is_seg for s in listing):
        raise SoftsegError("DICOM SEG only, without the image series it segments: open the folder holding both", path)
    if not images:
        choose_series(listing, None, path)  # raises: no image series (what the folder holds instead)
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


def write_layer_seg(path: str, data, meta: dict, *, kind: str) -> list[str]:
    """napari writer body: a soft map (Image layer) or mask (Labels layer) as a DICOM SEG of its source series,
    plus the ``<name>.dcm.softseg.json`` sidecar with the layer's full provenance (the NIfTI writers' format).

    Returns:
        The SEG and sidecar paths.
    """

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
