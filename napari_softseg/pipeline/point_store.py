"""Named operating points stored with a model: ``MODEL_DIR/operating_points.json``, and masks made at them.

A point is chosen on a cohort by :mod:`napari_softseg.pipeline.operating_points` (``softseg operating-point``)
and stored here (:func:`store_point`) with the requirement, the cohort, the intervals, the date, the software
version and the SHA-256 of the model's weights and config it was chosen for. The file is added to the model's
``manifest.json`` checksums (created if the folder has none); the model loader checks only the weights and
config, so loading is unchanged. :func:`get_operating_point` reads a point back and refuses one chosen for
other weights or config (a retrained or recalibrated model) and a points file that differs from its manifest
checksum; :func:`write_point_mask` writes the mask ``p >= t`` of a new prediction next to its soft map
(``<out>_mask.nii.gz``) with a sidecar naming the point.

This module does not predict, so the prediction job (:mod:`napari_softseg.pipeline.predict`) can import it.

Example:
    >>> mask_path_for("out/case01/prediction_task01.nii.gz").name
    'prediction_task01_mask.nii.gz'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import folder_lock
from napari_softseg.io.jsonio import json_bytes, read_json_object
from napari_softseg.io.nifti import Volume, save_volume, strip_nifti_suffix
from napari_softseg.io.sidecar import write_sidecar
from napari_softseg.model.model_io import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE, atomic_write_bytes, sha256_file

POINTS_FILE = "operating_points.json"
POINTS_FORMAT = "napari-softseg-operating-points"
POINTS_VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}")


def check_name(name: str) -> str:
    """A point's name: 1–64 letters, digits, spaces or ``._+-``, starting with a letter or digit.

    Raises:
        SoftsegError: Any other name.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SoftsegError(f"operating point name {name!r} must be 1-64 letters, digits, spaces or . _ + - "
                           "(starting with a letter or digit)")
    return name


def _points_path(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / POINTS_FILE


def read_operating_points(model_dir: str | os.PathLike) -> dict[str, dict]:
    """The named points stored in a model folder (``{}`` when there are none).

    Raises:
        SoftsegError: The file is damaged, of another format, or differs from the manifest's checksum.
    """
    path = _points_path(model_dir)
    if not path.is_file():
        return {}
    data = read_json_object(path, "operating points", max_bytes=8 * 2**20)
    if data.get("format") != POINTS_FORMAT or not isinstance(data.get("points"), dict):
        raise SoftsegError(f"not a napari-softseg operating points file (no \"format\": \"{POINTS_FORMAT}\")", path)
    if not isinstance(data.get("format_version"), int) or data["format_version"] > POINTS_VERSION:
        raise SoftsegError(f"operating points format {data.get('format_version')!r} is newer than this napari-softseg "
                           f"reads ({POINTS_VERSION}); upgrade napari-softseg", path)
    want = _manifest_files(Path(model_dir)).get(POINTS_FILE)
    if want is not None and sha256_file(path) != want:
        raise SoftsegError(f"does not match the checksum in {MANIFEST_FILE} (changed by hand, or interrupted while "
                           "being written); choose the points again with softseg operating-point", path)
    points = data["points"]
    bad = [k for k, v in points.items() if not isinstance(v, dict) or not isinstance(v.get("threshold"), (int, float))]
    if bad:
        raise SoftsegError(f"operating point {bad[0]!r} has no threshold", path)
    return points


def get_operating_point(model_dir: str | os.PathLike, name: str, *, check_model: bool = True) -> dict:
    """The stored point ``name``, checked to belong to the model's current weights and config.

    Raises:
        SoftsegError: No such point (the message lists the stored ones), or it was chosen for other weights
            or another config (retrained or recalibrated since): its threshold would not mean the same.
    """
    points = read_operating_points(model_dir)
    if name not in points:
        have = ", ".join(sorted(points)) or "none"
        raise SoftsegError(f"no operating point named {name!r} (stored: {have}); choose one with softseg "
                           "operating-point", _points_path(model_dir))
    point = points[name]
    if check_model:
        changed = stale_files(point, current_checksums(model_dir))
        if changed:
            raise SoftsegError(f"operating point {name!r} was chosen on {point.get('created', '?')} for other "
                               f"{' and '.join(changed)} (the model was retrained or recalibrated since): its threshold "
                               "no longer means the same; choose it again with softseg operating-point --replace",
                               _points_path(model_dir))
    return point


def stale_files(point: dict, current: dict[str, str]) -> list[str]:
    """The model files (weights, config) whose ``current`` checksum differs from the one ``point`` was chosen for."""
    stored = point.get("model_sha256") or {}
    return [f for f in (WEIGHTS_FILE, CONFIG_FILE) if stored.get(f) != current.get(f)]


def current_checksums(model_dir: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of the model folder's weights and config now.

    Raises:
        SoftsegError: A file cannot be read.
    """
    return _current_sums(Path(model_dir))


def _current_sums(model_dir: Path) -> dict[str, str]:
    try:
        return {f: sha256_file(model_dir / f) for f in (WEIGHTS_FILE, CONFIG_FILE)}
    except OSError as exc:
        raise SoftsegError(f"cannot read the model files: {exc.strerror or exc}", model_dir) from None


def refuse_existing(model_dir: str | os.PathLike, name: str, replace: bool) -> None:
    """Refuse (before any work) a name already stored in the model folder, unless ``replace``.

    Raises:
        SoftsegError: The name is taken and ``replace`` is false.
    """
    existing = read_operating_points(model_dir).get(name)
    if existing is not None and not replace:
        raise SoftsegError(f"an operating point named {name!r} already exists (t = {existing.get('threshold')}, "
                           f"{existing.get('requirement')}, chosen {existing.get('created', '?')}); pass --replace to "
                           "replace it or choose another name", _points_path(model_dir))


def _manifest_files(model_dir: Path) -> dict:
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return {}
    files = read_json_object(path, "model manifest", max_bytes=2**20).get("files")
    return files if isinstance(files, dict) else {}


def store_point(model_dir: str | os.PathLike, record: dict, *, replace: bool = False) -> Path:
    """Add a named point to ``MODEL_DIR/operating_points.json`` and its checksum to the manifest.

    The file is replaced atomically, under the folder's writer lock (the one training holds). A point of
    the same name is kept unless ``replace``.

    Raises:
        SoftsegError: A point of that name exists and ``replace`` is false, or writing failed.
    """
    model_dir = Path(model_dir)
    name = check_name(record.get("name"))
    with folder_lock(model_dir, "operating-point writer"):
        refuse_existing(model_dir, name, replace)
        points = read_operating_points(model_dir)
        points[name] = record
        content = json_bytes({"format": POINTS_FORMAT, "format_version": POINTS_VERSION, "points": points})
        path = atomic_write_bytes(_points_path(model_dir), content)
        files = dict(_manifest_files(model_dir)) or _current_sums(model_dir)
        files[POINTS_FILE] = sha256_file(path)
        manifest_path = model_dir / MANIFEST_FILE
        manifest = read_json_object(manifest_path, "model manifest", max_bytes=2**20) if manifest_path.is_file() else \
            {"format": "napari-softseg-model"}
        manifest["files"] = files
        atomic_write_bytes(manifest_path, json_bytes(manifest))
    return path


def mask_path_for(soft_map: str | os.PathLike) -> Path:
    """Where the mask at an operating point goes: ``out.nii.gz`` -> ``out_mask.nii.gz``."""
    path = Path(soft_map)
    suffix = path.name[len(strip_nifti_suffix(path.name)):] or ".nii.gz"
    return path.with_name(strip_nifti_suffix(path.name) + "_mask" + suffix)


def point_summary(name: str, point: dict) -> dict:
    """What a prediction's sidecar says about the point its mask was made at."""
    cohort = point.get("cohort") or {}
    return {"name": name, "threshold": point.get("threshold"), "requirement": point.get("requirement"),
            "achieved": point.get("achieved"), "ci": point.get("ci"), "cohort": cohort.get("name"),
            "n_cases": cohort.get("n_cases"), "created": point.get("created")}


def write_point_mask(probabilities: np.ndarray, reference: Volume, soft_map: str | os.PathLike, name: str, point: dict,
                     *, provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write the mask ``p >= t`` at a named point next to its soft map (``<out>_mask.nii.gz``, uint8) with a sidecar.

    Args:
        probabilities: The soft map.
        reference: The volume whose affine and header the mask carries (the input image).
        soft_map: The soft map's path (the mask's name is derived from it: :func:`mask_path_for`).
        name: The point's name.
        point: The point (from :func:`get_operating_point`).
        provenance: The prediction's provenance (model, device, input), copied into the sidecar.
        overwrite: Replace an existing mask.

    Returns:
        The mask's path.
    """
    t = np.float32(point["threshold"])
    path = save_volume(mask_path_for(soft_map), (np.asarray(probabilities) >= t).astype(np.uint8), reference,
                       overwrite=overwrite, description=f"softseg mask p>={float(t):g} ({name})", dtype=np.uint8)
    write_sidecar(path, "mask", {**(provenance or {}), "threshold": float(t), "soft_map": str(soft_map),
                                 "operating_point": point_summary(name, point)}, dtype="uint8")
    return path

