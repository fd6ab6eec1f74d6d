"""Other tools' probability maps as soft maps: nnU-Net ``.npz`` and MONAI / nnU-Net probability NIfTI.

- **nnU-Net** ``--save_probabilities`` writes ``CASE.npz`` (key ``probabilities`` in v2, ``softmax`` in v1,
  shape ``(C, Z, Y, X)``: classes first, then the image's voxel axes reversed) beside ``CASE.nii.gz``
  (the segmentation, which carries the geometry) and ``CASE.pkl``. The ``.npz`` is read with
  ``np.load(allow_pickle=False)``; the ``.pkl`` is never opened. The geometry comes from ``CASE.nii.gz``
  (or from a reference affine the caller gives, e.g. the case's image).
- **Probability NIfTI** (MONAI ``SaveImage`` after softmax/sigmoid, nnU-Net exports): a 3D float map in
  [0, 1], or a 4D/5D map whose last axis holds class probabilities; the foreground class (1 of 2) is
  taken, or the class the caller asks for.

:func:`read_soft_map` returns ``float32 (X, Y, Z)`` in [0, 1] and its RAS affine, ready for the Threshold
explorer or ``softseg evaluate --pred``.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.nifti import load_volume

NPZ_KEYS = ("probabilities", "softmax")
#: File names that say "this float map holds probabilities".
PROBABILITY_NAME_RE = re.compile(r"prob|softmax|sigmoid|pred|seg", re.I)
SUM_ATOL = 1e-3
RANGE_ATOL = 1e-5


def is_nnunet_npz(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.npz`` holding nnU-Net probabilities (reads the zip listing only). Never raises."""
    try:
        path = Path(path)
        if not (path.is_file() and path.name.lower().endswith(".npz")):
            return False
        with zipfile.ZipFile(path) as zf:
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        return bool(names & set(NPZ_KEYS))
    except (OSError, zipfile.BadZipFile):
        return False


def _pick_channel(probs: np.ndarray, channel: int | None, path) -> np.ndarray:
    """One class map from ``(C, ...)`` class probabilities: ``channel``, or the foreground of two classes."""
    n = probs.shape[0]
    if channel is None:
        if n == 1:
            return probs[0]
        if n == 2:
            return probs[1]
        raise SoftsegError(f"{n} classes; choose one (class 1 ... {n - 1}) — which class is the soft map?", path)
    if not 0 <= channel < n:
        raise SoftsegError(f"class {channel} does not exist (the map has classes 0 ... {n - 1})", path)
    return probs[channel]


def _check_range(data: np.ndarray, path) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise SoftsegError("probability map contains NaN or infinite values", path)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    if lo < -RANGE_ATOL or hi > 1 + RANGE_ATOL:
        raise SoftsegError(f"not probabilities: values {lo:g} … {hi:g} (expected [0, 1]; logits?)", path)
    return np.clip(data, 0.0, 1.0).astype(np.float32, copy=False)


def nnunet_reference(path: str | os.PathLike) -> Path | None:
    """nnU-Net's segmentation next to ``CASE.npz`` (``CASE.nii.gz`` / ``CASE.nii``), if present."""
    path = Path(path)
    stem = path.name[:-4]
    for suffix in (".nii.gz", ".nii"):
        candidate = path.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_nnunet_npz(path: str | os.PathLike, *, reference_affine: np.ndarray | None = None,
                    channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read nnU-Net ``--save_probabilities`` output without its pickle.

    Args:
        path: ``CASE.npz``.
        reference_affine: Geometry when ``CASE.nii.gz`` is not beside it (e.g. the input image's affine).
        channel: Class to return (default: class 1 of a two-class map).

    Returns:
        ``(float32 (X, Y, Z) in [0, 1], RAS affine)``.

    Raises:
        SoftsegError: Not an nnU-Net probability file (or one holding pickled objects), no geometry, shape
            mismatch with its segmentation, or values that are not probabilities.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in NPZ_KEYS if k in npz.files), None)
            if key is None:
                raise SoftsegError(f"no nnU-Net probabilities in this .npz (arrays: {', '.join(npz.files) or 'none'}; "
                                   f"expected {' or '.join(NPZ_KEYS)})", path)
            probs = np.asarray(npz[key])
    except SoftsegError:
        raise
    except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
        raise SoftsegError(f"refusing to read: {exc} (pickled objects are never loaded)", path) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise SoftsegError(f"cannot read .npz: {exc}", path) from None
    if probs.ndim == 3:  # 2D nnU-Net: (C, Y, X)
        probs = probs[:, np.newaxis]
    if probs.ndim != 4:
        raise SoftsegError(f"expected probabilities (C, Z, Y, X), got shape {probs.shape}", path)
    data = _check_range(_pick_channel(probs, channel, path), path).transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    ref = nnunet_reference(path)
    if ref is not None:

        vol = load_volume(ref)
        if vol.spatial_shape != data.shape:
            raise SoftsegError(f"probabilities of shape {data.shape} (X, Y, Z) do not match {ref.name}'s "
                               f"{vol.spatial_shape}", path)
        return np.ascontiguousarray(data), vol.affine
    if reference_affine is None:
        raise SoftsegError("an .npz holds no geometry: keep nnU-Net's segmentation (same name, .nii.gz) beside it",
                           path)
    return np.ascontiguousarray(data), np.asarray(reference_affine, dtype=np.float64)


def probability_channels(data: np.ndarray) -> bool:
    """Whether a 4D array's last axis holds class probabilities (non-negative, summing to 1 per voxel)."""
    if data.ndim != 4 or data.shape[3] < 2 or not np.issubdtype(data.dtype, np.floating):
        return False
    if not np.isfinite(data).all() or data.min() < -RANGE_ATOL or data.max() > 1 + RANGE_ATOL:
        return False
    return bool(np.allclose(data.sum(axis=3), 1.0, atol=SUM_ATOL))


def looks_like_probability_nifti(path: str | os.PathLike, data: np.ndarray) -> bool:
    """A float NIfTI holding probabilities: 4D class probabilities, or a 3D map in [0, 1] named like one.

    A 3D map counts when its name says prob/softmax/sigmoid/pred/seg and it is not binary (a rater mask
    stored as float ``{0, 1}`` is not a probability map).
    """
    if not np.issubdtype(data.dtype, np.floating) or data.size == 0:
        return False
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0]
    if probability_channels(data):
        return True
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or not np.isfinite(data).all() or not PROBABILITY_NAME_RE.search(Path(path).name):
        return False
    if data.min() < 0 or data.max() > 1 or ((data == 0) | (data == 1)).all():
        return False  # outside [0, 1], or a binary mask stored as float (a rater's, a thresholded result)
    return True


def read_probability_nifti(path: str | os.PathLike, *, channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A probability NIfTI as ``(float32 (X, Y, Z) in [0, 1], affine)``; 4D/5D maps give one class.

    Raises:
        SoftsegError: Unreadable, values outside [0, 1], or several classes and no ``channel``.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj) if len(img.shape) == 5 else None
    except Exception:  # noqa: BLE001 - load_volume below words the error
        data = None
    if data is not None:  # MONAI's (X, Y, Z, 1, C)
        if data.shape[3] != 1:
            raise SoftsegError(f"unsupported 5D shape {data.shape} (expected X, Y, Z, 1, classes)", path)
        data, affine = data[:, :, :, 0], np.asarray(img.affine, dtype=np.float64)
    else:
        vol = load_volume(path)
        data, affine = np.asarray(vol.data), vol.affine
    if data.ndim == 4:
        data = _pick_channel(np.moveaxis(data, -1, 0), channel, path)
    return _check_range(np.asarray(data), path), affine


def read_soft_map(path: str | os.PathLike, *, reference_affine: np.ndarray | None = None,
                  channel: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Any supported soft map file: NIfTI (3D, or 4D/5D class probabilities) or nnU-Net ``.npz``.

    Returns:
        ``(float32 (X, Y, Z), RAS affine)``. Values of a 3D NIfTI are returned as stored (callers check the
        range and say what is wrong); class maps are checked to lie in [0, 1].
    """
    path = Path(path)
    if path.name.lower().endswith(".npz"):
        return read_nnunet_npz(path, reference_affine=reference_affine, channel=channel)
    import nibabel as nib

    try:
        five_d = len(nib.load(str(path)).shape) == 5
    except Exception:  # noqa: BLE001 - load_volume below words the error
        five_d = False
    if five_d:
        return read_probability_nifti(path, channel=channel)
    vol = load_volume(path)
    data = np.asarray(vol.data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        return read_probability_nifti(path, channel=channel)
    return data, vol.affine


def n_classes(path: Path) -> int:
    """Classes in a probability file (1 for a 3D map)."""
    if path.name.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            key = next(k for k in NPZ_KEYS if k in npz.files)
            return int(npz[key].shape[0])
    import nibabel as nib

    shape = nib.load(str(path)).shape
    return int(shape[-1]) if len(shape) >= 4 else 1
