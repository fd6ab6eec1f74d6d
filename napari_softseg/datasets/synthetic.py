"""Deterministic synthetic phantoms with several raters, written in the QUBIQ layout.

A phantom is a smooth random blob (plus two small satellite structures and an inner "core") inside a
textured body, imaged with a plausible contrast, partial-volume blur, a smooth multiplicative bias field
and Rician noise. Each rater's mask is the true shape with its boundary moved, the way real annotators
disagree:

* every rater's boundary is shifted by a smooth random displacement field (about one voxel) plus a
  small per-rater offset (a slight erosion or dilation);
* the second rater (``rater 2``, index 1) is **systematically generous**: its boundary sits about 1.5
  voxels outside the others';
* raters other than the generous one sometimes **miss the small satellite structures**; with three or
  more raters the last rater always misses the smallest one;
* in 3D, some raters leave out the top or bottom slice of the main structure.

Everything comes from one seeded :class:`numpy.random.Generator`, so the same arguments give identical
arrays on every run. Only numpy and scipy are used (no torch), and a 64×64×32 case takes a few tens of
milliseconds, so tests can make data freely.

Example:
    >>> image, masks, affine = make_phantom((96, 96, 1), n_raters=3, seed=0)
    >>> image.shape, image.dtype, masks.shape, masks.dtype
    ((1, 96, 96, 1), dtype('float32'), (3, 96, 96, 1), dtype('uint8'))
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import clean_stale_temporaries, os_error, temp_path_for
from napari_softseg.io.nifti import save_volume

#: Index of the rater whose boundary is systematically outside the others' (when there are 2+ raters).
GENEROUS_RATER = 1

LAYOUTS = ("2020", "pancreas")

_DEFAULT_SPACING_2D = (0.8, 0.8, 1.0)
_DEFAULT_SPACING_3D = (0.8, 0.8, 2.5)


def make_phantom(
    shape: Sequence[int] = (96, 96, 1),
    n_raters: int = 3,
    seed: int | Sequence[int] = 0,
    n_channels: int = 1,
    *,
    task: int = 1,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make one phantom image and its raters' masks.

    Args:
        shape: Spatial shape ``(X, Y, Z)``; ``Z == 1`` (or a 2-tuple ``(X, Y)``) gives a 2D phantom.
        n_raters: Number of rater masks (at least 1).
        seed: Seed (or seed sequence) of the random generator; equal seeds give equal arrays.
        n_channels: Image channels (like QUBIQ's 4-channel brain-tumor images); each channel has its
            own contrast and noise over the same anatomy.
        task: 1 = the whole structure (main blob and satellites); 2 = the inner core of the main blob.
            The image does not depend on ``task``.
        spacing: Voxel size in mm; default 0.8×0.8×2.5 mm in 3D and 0.8×0.8×1 mm in 2D.

    Returns:
        ``(image, masks, affine)``: image ``float32 (C, X, Y, Z)``, masks ``uint8 (R, X, Y, Z)`` in
        {0, 1}, and the 4×4 voxel-to-mm affine (float64).

    Raises:
        ValueError: Invalid shape, rater or channel count, or task.
    """
    image, tasks, affine = _phantom(shape, n_raters, seed, n_channels, spacing, n_tasks=max(task, 1))
    if task not in tasks:
        raise ValueError(f"task must be 1 or 2, got {task}")
    return image, tasks[task], affine


def write_qubiq_dataset(
    root: str | os.PathLike,
    n_cases: int = 4,
    *,
    shape: Sequence[int] = (96, 96, 1),
    n_raters: int = 3,
    seed: int = 0,
    n_validation: int = 0,
    n_channels: int = 1,
    n_tasks: int = 1,
    layout: str = "2020",
    rater_counts: Sequence[int] | None = None,
    squeeze_2d: bool = False,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic multi-rater dataset in a QUBIQ layout.

    Layout ``"2020"`` (QUBIQ 2020 and 2021's 2D datasets)::

        root/Training/case01/image.nii.gz
        root/Training/case01/task01_seg01.nii.gz ... task01_segRR.nii.gz
        root/Validation/caseNN/...        (numbering continues after the training cases)

    Layout ``"pancreas"`` (QUBIQ 2021's 3D datasets: case folders directly under the dataset, named
    ``case<patient>-<scan>``)::

        root/case1-1/image.nii.gz, root/case1-1/task01_seg01.nii.gz, ...

    Images are float32 ``(X, Y, Z)``; a multi-channel image is stored ``(X, Y, Z, C)`` in 3D and
    ``(X, Y, C)`` in 2D (as QUBIQ's brain-tumor images). Masks are uint8. 2D cases are stored
    ``(X, Y, 1)``, or ``(X, Y)`` with ``squeeze_2d=True``. Case ``i`` (training cases first, counting
    from 0) holds exactly ``make_phantom(shape, R, seed=[seed, i], n_channels, task=t)``.

    Args:
        root: Dataset folder to create.
        n_cases: Number of training cases (all cases for the ``"pancreas"`` layout).
        shape: Spatial shape of every case.
        n_raters: Raters per case unless ``rater_counts`` says otherwise.
        seed: Dataset seed.
        n_validation: Cases written under ``Validation/`` (``"2020"`` layout only).
        n_channels: Image channels.
        n_tasks: 1 or 2 tasks per case (``task01`` = whole structure, ``task02`` = core).
        layout: ``"2020"`` or ``"pancreas"``.
        rater_counts: One rater count per case (training then validation), e.g. to have one case with
            5 raters like QUBIQ prostate.
        squeeze_2d: Store 2D masks (and single-channel 2D images) as ``(X, Y)`` instead of ``(X, Y, 1)``.
        spacing: Voxel size in mm (default as in :func:`make_phantom`).
        overwrite: Allow writing into a non-empty ``root``: files of the same name are replaced and
            stale ``taskNN_segMM`` files in the written case folders are removed.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        SoftsegError: ``root`` exists, is not empty, and ``overwrite`` is false.
        ValueError: Invalid arguments.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "pancreas" and n_validation:
        raise ValueError("the 'pancreas' layout has no Validation/ folder; use n_validation=0")
    if n_cases < 1 or n_validation < 0:
        raise ValueError("need n_cases >= 1 and n_validation >= 0")
    if n_tasks not in (1, 2):
        raise ValueError(f"n_tasks must be 1 or 2, got {n_tasks}")
    total = n_cases + n_validation
    counts = [n_raters] * total if rater_counts is None else [int(c) for c in rater_counts]
    if len(counts) != total:
        raise ValueError(f"rater_counts needs {total} entries (one per case), got {len(counts)}")
    if min(counts) < 1:
        raise ValueError(f"every case needs at least one rater, got rater_counts={counts}")
    if root.exists() and not root.is_dir():
        raise SoftsegError("exists and is not a folder", root)
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise SoftsegError("folder exists and is not empty; pass overwrite=True to write into it", root)

    def write_all(target: Path, replace: bool) -> None:
        for index in range(total):
            write_case(target / _case_folder(layout, index, n_cases), shape=shape, n_raters=counts[index],
                       seed=[seed, index], n_channels=n_channels, n_tasks=n_tasks, squeeze_2d=squeeze_2d,
                       spacing=spacing, overwrite=replace)

    if root.is_dir() and any(root.iterdir()):  # overwrite into a non-empty folder: file by file, each atomic
        write_all(root, True)
        return root
    # all or nothing: the dataset is built in a hidden temporary folder beside ``root`` and renamed into
    # place (rename replaces only an empty folder; a folder filled meanwhile by another run is kept)
    import shutil

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, root) from None
    clean_stale_temporaries(root.parent)
    tmp = temp_path_for(root)
    try:
        tmp.mkdir()
        write_all(tmp, False)
        try:
            os.rename(tmp, root)
        except OSError as exc:
            if root.exists():
                raise SoftsegError("folder exists and is not empty; pass overwrite=True to write into it", root) \
                    from None
            raise os_error(exc, root) from None
    except OSError as exc:
        raise os_error(exc, root) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def write_case(
    folder: str | os.PathLike,
    *,
    shape: Sequence[int] = (96, 96, 1),
    n_raters: int = 3,
    seed: int | Sequence[int] = 0,
    n_channels: int = 1,
    n_tasks: int = 1,
    squeeze_2d: bool = False,
    spacing: Sequence[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one phantom as a QUBIQ case folder: ``image.nii.gz`` + ``taskTT_segRR.nii.gz``.

    Arguments are those of :func:`make_phantom` and :func:`write_qubiq_dataset`; the files hold exactly
    the arrays :func:`make_phantom` returns for the same arguments, in the stored layouts described in
    :func:`write_qubiq_dataset`.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        SoftsegError: A file exists and ``overwrite`` is false.
    """

    folder = Path(folder)
    image, tasks, affine = _phantom(shape, n_raters, seed, n_channels, spacing, n_tasks)
    if overwrite and folder.is_dir():
        for stale in folder.iterdir():
            if re.fullmatch(r"task\d+_seg\d+\.nii(\.gz)?", stale.name):
                stale.unlink()
    description = f"napari-softseg synthetic phantom seed={seed}"
    save_volume(folder / "image.nii.gz", _image_for_file(image, squeeze_2d), affine=affine,
                overwrite=overwrite, description=description)
    for task, masks in tasks.items():
        for rater, mask in enumerate(masks, start=1):
            stored = mask[:, :, 0] if (squeeze_2d and mask.shape[2] == 1) else mask
            save_volume(folder / f"task{task:02d}_seg{rater:02d}.nii.gz", stored, affine=affine,
                        overwrite=overwrite, description=description)
    return folder


def _case_folder(layout: str, index: int, n_training: int) -> str:
    """Relative folder of case ``index`` (0-based, training cases first)."""
    if layout == "pancreas":
        return f"case{index // 2 + 1}-{index % 2 + 1}"
    split = "Training" if index < n_training else "Validation"
    return f"{split}/case{index + 1:02d}"


def _image_for_file(image: np.ndarray, squeeze_2d: bool) -> np.ndarray:
    """``(C, X, Y, Z)`` -> the stored layout: ``(X, Y, Z)``, ``(X, Y, Z, C)``, 2D ``(X, Y, C)``/``(X, Y)``."""
    n_channels, _, _, depth = image.shape
    if depth == 1:
        if n_channels > 1:
            return np.moveaxis(image[..., 0], 0, -1)  # (X, Y, C)
        return image[0, :, :, 0] if squeeze_2d else image[0]
    return image[0] if n_channels == 1 else np.moveaxis(image, 0, -1)


def _phantom(shape, n_raters, seed, n_channels, spacing, n_tasks):
    """Generate the image, ``{task: masks}`` for tasks 1..n_tasks, and the affine."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or min(shape[:2]) < 8 or shape[2] < 1:
        raise ValueError(f"shape must be (X, Y) or (X, Y, Z) with X, Y >= 8, got {shape}")
    if n_raters < 1 or n_channels < 1:
        raise ValueError("need at least one rater and one channel")
    if n_tasks not in (1, 2):
        raise ValueError(f"task must be 1 or 2, got {n_tasks}")
    is_3d = shape[2] > 1
    if spacing is None:
        spacing = _DEFAULT_SPACING_3D if is_3d else _DEFAULT_SPACING_2D
    spacing = tuple(float(s) for s in spacing)
    rng = np.random.default_rng(seed)
    coords = _centred_grid_mm(shape, spacing)
    fov = np.array(shape) * np.array(spacing)
    pixel = min(spacing[:2])

    # --- anatomy: a signed distance-like function (mm; negative inside) for each structure ---
    radius = float(min(fov[:2]) * rng.uniform(0.16, 0.22))
    radii = [radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.8, 1.2)]
    radii.append(min(radius * rng.uniform(0.8, 1.2), 0.36 * fov[2]) if is_3d else 1.0)
    centre = [rng.uniform(-0.08, 0.08) * fov[0], rng.uniform(-0.08, 0.08) * fov[1],
              rng.uniform(-0.05, 0.05) * fov[2] if is_3d else 0.0]
    angle = rng.uniform(0, np.pi)
    bumps = smooth_random_field(rng, shape, _vox(0.6 * radius, spacing))
    phi_main = _ellipsoid(coords, centre, radii, angle, is_3d) * radius + 0.12 * radius * bumps
    core_bumps = smooth_random_field(rng, shape, _vox(0.4 * radius, spacing))
    phi_core = phi_main + 0.45 * radius + 0.06 * radius * core_bumps

    # two small satellites beside the main blob, at directions where they fit inside the body
    distance = max(radii[:2]) * rng.uniform(1.3, 1.45) + 7 * pixel
    directions = rng.uniform(0, 2 * np.pi) + np.arange(12) * np.pi / 6
    fits = [a for a in directions
            if abs(centre[0] + distance * np.cos(a)) <= 0.4 * fov[0]
            and abs(centre[1] + distance * np.sin(a)) <= 0.4 * fov[1]]
    first = rng.choice(fits or directions)
    apart = [a for a in (fits or directions) if abs(np.angle(np.exp(1j * (a - first)))) >= np.pi / 2]
    satellites = []
    for direction in (first, rng.choice(apart or [first + np.pi])):
        sat_centre = [centre[0] + distance * np.cos(direction), centre[1] + distance * np.sin(direction),
                      centre[2] + (rng.uniform(-0.3, 0.3) * radii[2] if is_3d else 0.0)]
        sat_r = pixel * rng.uniform(2.0, 3.5)
        sat_radii = [sat_r, sat_r * rng.uniform(0.7, 1.0), max(sat_r, 1.6 * spacing[2]) if is_3d else 1.0]
        satellites.append((_ellipsoid(coords, sat_centre, sat_radii, 0.0, is_3d) * sat_r, sat_r))
    phi_all = np.minimum.reduce([phi_main] + [phi for phi, _ in satellites])

    # --- image: body, texture, partial volume, bias field, Rician noise ---
    width = 0.4 * pixel  # partial-volume blur of edges
    body_radius = 0.47 * min(fov[:2])
    body = _sigmoid(-_ellipsoid(coords, [0.0, 0.0, 0.0], [0.47 * fov[0], 0.47 * fov[1], 1e9], 0.0, is_3d)
                    * body_radius / width)
    inside = _sigmoid(-phi_all / width)
    core = _sigmoid(-phi_core / width)
    bias = np.exp(0.12 * smooth_random_field(rng, shape, _vox(0.5 * min(fov[:2]), spacing)))
    coarse_texture = smooth_random_field(rng, shape, _vox(0.25 * radius, spacing))
    image = np.empty((n_channels,) + shape, dtype=np.float32)
    for c in range(n_channels):
        contrast = 0.45 if c == 0 else rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.55)
        core_contrast = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3)
        fine_texture = smooth_random_field(rng, shape, _vox(1.5 * pixel, spacing))
        tissue = 1.0 + 0.06 * coarse_texture + 0.07 * fine_texture
        signal = 400.0 * bias * body * (tissue + contrast * inside + core_contrast * core)
        sigma = 400.0 * rng.uniform(0.035, 0.055)
        real = signal + sigma * rng.standard_normal(shape)
        imag = sigma * rng.standard_normal(shape)
        image[c] = np.sqrt(real * real + imag * imag)

    # --- raters: moved boundaries, one generous rater, missed satellites and end slices ---
    offsets = rng.normal(0.0, 0.3, n_raters) * pixel
    if n_raters >= 2:
        offsets[GENEROUS_RATER] = 1.5 * pixel
    smallest = int(np.argmin([r for _, r in satellites]))
    tasks = {t: np.zeros((n_raters,) + shape, dtype=np.uint8) for t in range(1, n_tasks + 1)}
    for r in range(n_raters):
        shift = offsets[r] + 0.8 * pixel * smooth_random_field(rng, shape, _vox(0.5 * radius, spacing))
        generous = n_raters >= 2 and r == GENEROUS_RATER
        main = phi_main < shift
        if is_3d and not generous and rng.random() < 0.4:
            _drop_end_slice(main, top=bool(rng.random() < 0.5))
        whole = main.copy()
        for k, (phi_sat, _) in enumerate(satellites):
            forced_miss = n_raters >= 3 and r == n_raters - 1 and k == smallest
            if forced_miss or (not generous and rng.random() < 0.3):
                continue
            whole |= phi_sat < shift
        tasks[1][r] = whole
        if n_tasks == 2:
            tasks[2][r] = phi_core < 0.8 * shift

    affine = np.diag(spacing + (1.0,))
    affine[:3, 3] = -(np.array(shape) - 1) / 2.0 * np.array(spacing)
    return image, tasks, affine


def _centred_grid_mm(shape, spacing):
    """Open (broadcastable) grids of voxel-centre coordinates in mm, centred on the volume."""
    return [((np.arange(n) - (n - 1) / 2.0) * s).reshape([-1 if i == a else 1 for i in range(3)])
            for a, (n, s) in enumerate(zip(shape, spacing))]


def _vox(length_mm, spacing):
    """A length in mm as a number of voxels along each axis."""
    return tuple(length_mm / s for s in spacing)


def _ellipsoid(coords, centre, radii, angle, is_3d):
    """Normalised ellipsoid radius minus one: negative inside, 0 on the surface (in-plane rotation)."""
    x, y, z = (c - m for c, m in zip(coords, centre))
    u = np.cos(angle) * x + np.sin(angle) * y
    v = -np.sin(angle) * x + np.cos(angle) * y
    rho2 = (u / radii[0]) ** 2 + (v / radii[1]) ** 2
    if is_3d:
        rho2 = rho2 + (z / radii[2]) ** 2
    return np.sqrt(rho2) - 1.0


def smooth_random_field(
    rng: np.random.Generator, shape: Sequence[int], correlation: Sequence[float]
) -> np.ndarray:
    """Smooth random field with zero mean and unit standard deviation.

    A sum of Gaussian bumps with random weights, centred on a coarse grid with one point every
    ``correlation`` voxels (per axis). The bumps are separable, so the field is three small matrix
    products: fast, and smooth on the scale of ``correlation``. Used for boundary shifts, bias fields,
    texture and deformations.

    Args:
        rng: The random generator (consumed).
        shape: Output shape ``(X, Y, Z)``; an axis of length 1 stays constant.
        correlation: Smoothness scale in voxels, one per axis.

    Returns:
        float64 array of ``shape``.
    """
    matrices, coarse = [], []
    for n, c in zip(shape, correlation):
        if n == 1:
            matrices.append(np.ones((1, 1)))
            coarse.append(1)
            continue
        step = max(float(c), 1.0)
        k = int(np.ceil(n / step)) + 3
        centres = (np.arange(k) - 1.5) * step
        matrices.append(np.exp(-0.5 * ((np.arange(n)[:, None] - centres[None, :]) / step) ** 2))
        coarse.append(k)
    field = rng.standard_normal(coarse)
    for axis, matrix in enumerate(matrices):
        field = np.moveaxis(np.tensordot(matrix, field, axes=(1, axis)), 0, axis)
    std = field.std()
    return (field - field.mean()) / std if std > 0 else field


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _drop_end_slice(mask, top):
    """Clear the first or last axial slice in which ``mask`` has any voxel (in place)."""
    occupied = np.flatnonzero(mask.any(axis=(0, 1)))
    if occupied.size > 1:
        mask[:, :, occupied[-1] if top else occupied[0]] = False
