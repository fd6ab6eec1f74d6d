"""The one sidecar format: ``<name>.softseg.json`` beside a NIfTI file or DICOM SEG this package wrote.

It holds the full provenance of a soft map or mask (kind, threshold, method, model, device, spacings,
source file, software version). ``softseg predict``, the viewer's writers and the DICOM SEG writer all
write it through :func:`write_sidecar`; readers restore a layer's kind and style from
:func:`read_sidecar`. A sidecar not written by napari-softseg is never replaced.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from napari_softseg import SOFTWARE
from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import atomic_write_bytes
from napari_softseg.io.jsonio import read_json_object
from napari_softseg.io.nifti import strip_nifti_suffix

SIDECAR_SUFFIX = ".softseg.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """``out.nii.gz`` -> ``out.softseg.json`` (never clobbers a BIDS ``out.json``); a DICOM SEG keeps its
    suffix, ``out.dcm`` -> ``out.dcm.softseg.json``, so a SEG and a NIfTI map of one name never share one."""
    path = Path(path)
    name = path.name if path.name.lower().endswith(".dcm") else strip_nifti_suffix(path.name)
    return path.with_name(name + SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar this package wrote next to ``path`` (a NIfTI file or a DICOM SEG), or ``{}``.

    A missing sidecar, one that cannot be read, or one not written by napari-softseg gives ``{}``
    (the file still opens; only its provenance is lost).
    """
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        info = read_json_object(side, "sidecar", max_bytes=2**20)  # depth- and size-checked before parsing
    except SoftsegError as exc:
        logging.getLogger(__name__).warning("%s; ignoring the sidecar", exc)
        return {}
    return info if str(info.get("software", "")).startswith("napari-softseg") else {}


def check_sidecar_writable(path: str | os.PathLike) -> Path:
    """Refuse (before any work) when the sidecar ``path`` would get exists and is not ours; returns its path.

    Raises:
        SoftsegError: The sidecar exists and was not written by napari-softseg.
    """
    side = sidecar_path(path)
    if side.exists():
        _check_sidecar_is_ours(side)
    return side


def _check_sidecar_is_ours(side: Path) -> None:
    try:
        old = read_json_object(side, "sidecar", max_bytes=2**20)
        ours = str(old.get("software", "")).startswith("napari-softseg")
    except SoftsegError:
        ours = False
    if not ours:
        raise SoftsegError("exists and was not written by napari-softseg; not replacing it", side)


def _write_sidecar(path: Path, info: dict) -> Path:
    side = sidecar_path(path)
    if side.exists():
        _check_sidecar_is_ours(side)
    atomic_write_bytes(side, (json.dumps(info, indent=2, default=str) + "\n").encode("utf-8"), overwrite=True)
    return side


def sidecar_info(kind: str, provenance: dict, *, layer: str | None = None, dtype: str = "float32") -> dict:
    """The sidecar's content: software, kind, layer name, time written, dtype and the provenance."""
    return {
        "software": SOFTWARE,
        "kind": kind,
        "layer": layer,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dtype": dtype,
        **{k: v for k, v in provenance.items() if k != "software"},
    }


def write_sidecar(nifti: str | os.PathLike, kind: str, provenance: dict, *, layer: str | None = None,
                  dtype: str = "float32") -> Path:
    """Write ``<name>.softseg.json`` next to a NIfTI file or DICOM SEG this package wrote; returns its path.

    The one sidecar format of the package: the viewer's writers and ``softseg predict`` both call this,
    and the reader styles a file by it (a ``prediction`` or ``soft_label`` opens as a soft map).

    Raises:
        SoftsegError: A sidecar of that name exists and was not written by napari-softseg.
    """
    return _write_sidecar(Path(nifti), sidecar_info(kind, provenance, layer=layer, dtype=dtype))
