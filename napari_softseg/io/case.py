"""What a case is: :class:`Case` (files on disk, nothing read), :class:`Dataset` (cases found under a
folder), :class:`CaseData` (a loaded, checked case), and the checks every reader of rater masks shares
(:func:`binarize_mask`, :func:`check_same_geometry`).

Readers of each format (:mod:`~napari_softseg.io.dataset` for NIfTI folders,
:mod:`~napari_softseg.io.dicom_seg` for DICOM) build these; everything above ``io`` consumes them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.memory import count_where
from napari_softseg.io.nifti import Volume
from napari_softseg.io.packed_masks import PackedMasks

AFFINE_ATOL_MM = 1e-3
AFFINE_RTOL = 1e-4


def natural_key(text: str) -> list:
    """Sort key that orders ``case2`` before ``case10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", text)]


@dataclass
class Case:
    """One case on disk (nothing read yet).

    Attributes:
        name: Path relative to the dataset root (``"Training/case01"``), or the folder name.
        path: The case folder.
        split: ``"Training"``, ``"Validation"``, ``"Test"`` or ``""``.
        image_path: The image file (``None`` when the folder has masks but no image).
        tasks: Task number → rater mask paths, ordered by rater number.
        rater_ids: Task number → rater numbers as written in the file names.
    """

    name: str
    path: Path
    split: str
    image_path: Path | None
    tasks: dict[int, list[Path]] = field(default_factory=dict)
    rater_ids: dict[int, list[int]] = field(default_factory=dict)

    def raters(self, task: int = 1) -> list[Path]:
        """Mask paths of ``task`` (empty if the task is absent)."""
        return self.tasks.get(task, [])


@dataclass
class Dataset:
    """Cases found under a folder, and problems met while looking.

    Attributes:
        path: The folder that was searched.
        cases: Cases in natural order of their names.
        problems: One line per folder that looked like a case but cannot be used.
    """

    path: Path
    cases: list[Case]
    problems: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Case]:
        """Cases of one split (``"Training"``, ``"Validation"``, ...), compared case-insensitively."""
        return [c for c in self.cases if c.split.lower() == name.lower()]

    @property
    def task_numbers(self) -> list[int]:
        """All task numbers seen in any case."""
        return sorted({t for c in self.cases for t in c.tasks})


@dataclass
class CaseData:
    """A loaded, checked case.

    Attributes:
        name: Case name.
        image: ``float32 (C, X, Y, Z)``.
        masks: ``uint8 (R, X, Y, Z)`` in ``{0, 1}``, or the same as
            :class:`~napari_softseg.io.packed_masks.PackedMasks` (``load_case(..., packed=True)``).
        rater_names: ``["rater 1", ...]`` following the numbers in the file names.
        affine: The image's voxel-to-world matrix.
        spacing: Voxel size in mm.
        header: The image's NIfTI header (reused when writing results).
        image_path: Source image file.
        mask_paths: Source mask files, in rater order.
        task: Task number the masks belong to.
        warnings: Valid-but-notable facts (one rater, empty masks).
    """

    name: str
    image: np.ndarray
    masks: np.ndarray | PackedMasks
    rater_names: list[str]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    header: object
    image_path: Path
    mask_paths: list[Path]
    task: int
    warnings: list[str] = field(default_factory=list)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)``."""
        return tuple(int(s) for s in self.image.shape[1:])

    @property
    def reference_volume(self) -> Volume:
        """A :class:`Volume` carrying this case's geometry, for writing results."""
        return Volume(data=self.image[0], affine=self.affine, header=self.header, path=self.image_path)


def binarize_mask(data: np.ndarray, path: str | os.PathLike, out: np.ndarray | None = None) -> np.ndarray:
    """Check a rater mask is binary and return it as ``uint8`` in ``{0, 1}``.

    Accepted: bool, ``{0, 1}`` and ``{0, 255}`` (any numeric dtype holding exactly those values). The
    check makes no sorted copy of the volume (``np.unique`` runs only to word the error).

    Args:
        data: The mask as read.
        path: Named in the error.
        out: Optional preallocated ``uint8`` array to write into (saves a copy for large volumes).

    Raises:
        SoftsegError: Other values; the message lists (up to six of) the values found.
    """
    out = np.empty(data.shape, dtype=np.uint8) if out is None else out
    if data.dtype == np.bool_:
        out[...] = data
        return out
    if np.issubdtype(data.dtype, np.floating) and count_where(data, lambda a: ~np.isfinite(a)):
        raise SoftsegError("mask is not binary: it contains NaN or infinite values", path)
    top = data.max() if data.size else 0
    if top in (0, 1, 255) and (not data.size or data.min() >= 0):
        np.not_equal(data, 0, out=out, casting="unsafe")
        if top == 0 or np.count_nonzero(out) == count_where(data, lambda a: a == top):  # every non-zero is `top`
            return out
    values = np.unique(data)
    shown = ", ".join(f"{v:g}" for v in values[:6].astype(np.float64)) + (", ..." if values.size > 6 else "")
    raise SoftsegError(
        f"mask is not binary (values found: {shown}); expected {{0, 1}}, {{0, 255}} or bool", path
    )


def check_same_geometry(affine: np.ndarray, reference_affine: np.ndarray, path: str | os.PathLike, what: str) -> None:
    """Raise unless ``affine`` equals the image's ``reference_affine`` within 0.001 mm (and 1e-4 relative).

    Raises:
        SoftsegError: Naming ``path`` and both affines.
    """
    if not np.allclose(affine, reference_affine, rtol=AFFINE_RTOL, atol=AFFINE_ATOL_MM):
        raise SoftsegError(
            f"{what} affine differs from the image's: {np.round(affine, 3).tolist()} vs "
            f"{np.round(reference_affine, 3).tolist()}",
            path,
        )


