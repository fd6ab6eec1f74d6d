"""What a training run learns from: cases in memory, the validation split, and the patches of each step.

* :class:`TrainingCase` is one case held in memory (the viewer's layers, or a dataset case loaded by
  :func:`load_dataset_cases`);
* the validation split: :func:`split_dataset` (a ``--val`` folder, else a seeded share of the training
  cases), :func:`split_memory_cases` (a single volume is cut into slabs by :func:`split_by_slices`);
  :func:`check_cases` refuses what cannot be trained on and warns about what is weak;
* :func:`prepare_case` turns a case into the arrays the run samples from (:class:`PreparedCase`: the
  normalised image and its soft label, laid out for the planned 2D or 3D network, with a sample of the
  voxels some rater marked);
* :func:`sample_batch` draws one step's batch of patches, a planned share of them centred on such a
  voxel (foreground oversampling), the rest anywhere (:func:`crop_patch`).
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_softseg.analysis.softlabels import make_soft_label
from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import Dataset
from napari_softseg.io.dataset import discover, load_case
from napari_softseg.model.inference import slice_stack
from napari_softseg.model.normalization import Normalization
from napari_softseg.model.planning import Plan, choose_dim, fingerprint
from napari_softseg.model.resampling import resample_axes, resample_image, resample_soft_map
from napari_softseg.model.training_options import TrainOptions
from napari_softseg.progress import Progress

#: Foreground voxels kept per case for oversampling (a seeded sample of them when there are more).
MAX_FOREGROUND_POINTS = 20000


@dataclass
class TrainingCase:
    """One case held in memory (what the viewer trains on; :func:`train` loads them from files).

    Attributes:
        name: Shown in messages and stored in the model's config.
        image: ``(C, X, Y, Z)`` raw intensities.
        masks: ``(R, X, Y, Z)`` rater masks in ``{0, 1}``.
        spacing: Voxel size in mm.
    """

    name: str
    image: np.ndarray
    masks: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        self.image = np.asarray(self.image, dtype=np.float32)
        self.masks = np.asarray(self.masks, dtype=np.uint8)
        if self.image.ndim != 4 or self.masks.ndim != 4 or self.image.shape[1:] != self.masks.shape[1:]:
            raise SoftsegError(f"{self.name}: image {self.image.shape} (C, X, Y, Z) and masks {self.masks.shape} "
                               "(R, X, Y, Z) do not fit together")
        if not np.all(np.isfinite(self.image)):
            raise SoftsegError(f"{self.name}: the image contains NaN or infinite values")
        self.spacing = tuple(float(v) for v in self.spacing)


@dataclass
class PreparedCase:
    """A case as the run uses it (made by :func:`prepare_case`).

    Attributes:
        name: The case's name.
        volume: Normalised image: 2D plan ``(C, S, H, W)`` with the slicing axis at 1; 3D ``(C, X, Y, Z)``.
        target: Soft target in the same layout, without the channel axis.
        foreground: ``(N, 3)`` indices of voxels some rater marked (a sample of them), same layout; empty
            for validation cases.
        image: Raw image ``(C, X, Y, Z)``, for validation (predicted whole, as ``softseg predict`` does).
        masks: ``(R, X, Y, Z)`` rater masks, for validation.
        spacing: The raw image's voxel size in mm (validation resamples it as ``softseg predict`` does).
    """

    name: str
    volume: np.ndarray
    target: np.ndarray
    foreground: np.ndarray
    image: np.ndarray
    masks: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


def record_warning(message: str, collected: list[str]) -> None:
    """Warn (``UserWarning``) and keep the message in ``collected`` (the run's result and config list them)."""
    collected.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def split_by_slices(case: TrainingCase, fraction: float, axis: int) -> tuple[TrainingCase, TrainingCase] | None:
    """Cut one volume into a training slab and a validation slab (the last ``fraction`` of ``axis``).

    Used when the viewer trains on a single volume: a contiguous slab is held out so that validation and
    calibration see slices the network did not train on. ``None`` when the volume has fewer than 5 slices.
    """
    n = case.image.shape[1 + axis]
    if n < 5 or fraction <= 0:
        return None
    n_val = min(n - 2, max(1, round(fraction * n)))
    cut = n - n_val

    def part(lo, hi, suffix):
        take = [slice(None)] * 4
        take[1 + axis] = slice(lo, hi)
        return TrainingCase(f"{case.name} [{suffix}]", case.image[tuple(take)], case.masks[tuple(take)], case.spacing)

    axis_name = "XYZ"[axis]
    return part(0, cut, f"{axis_name} 0-{cut - 1}"), part(cut, n, f"{axis_name} {cut}-{n - 1}")


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` items: ``(training indices, validation indices)``, at least one of each."""
    n_val = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val = set(order[:n_val].tolist())
    return [i for i in range(n) if i not in val], [i for i in range(n) if i in val]


def split_dataset(dataset, options: TrainOptions, val_dataset) -> tuple[list, list, list[str]]:
    """Discover a dataset's cases and split them into training and validation cases.

    Args:
        dataset: Dataset folder (its ``Training/`` cases when present) or a :class:`Dataset`.
        options: ``task``, ``val_fraction`` and ``seed`` are used.
        val_dataset: Folder or :class:`Dataset` of validation cases, or ``None`` to hold out a share.

    Returns:
        ``(training cases, validation cases, notes)``: :class:`~napari_softseg.io.case.Case` objects and
        the notes for the run's warnings (cases skipped).

    Raises:
        SoftsegError: No case has masks of the task, or no validation case can be had.
    """
    notes: list[str] = []
    ds = dataset if isinstance(dataset, Dataset) else discover(dataset)
    pool = ds.split("Training") or ds.cases
    usable = [c for c in pool if c.raters(options.task)]
    skipped = len(pool) - len(usable)
    if not usable:
        raise SoftsegError(
            f"empty training set: no case has rater masks for task {options.task} "
            f"({len(pool)} case(s) found, tasks present: {ds.task_numbers or 'none'})",
            ds.path,
        )
    if skipped:
        notes.append(f"{skipped} case(s) without task {options.task} masks skipped")
    if val_dataset is not None:
        vds = val_dataset if isinstance(val_dataset, Dataset) else discover(val_dataset)
        val = [c for c in vds.cases if c.raters(options.task)]
        if not val:
            raise SoftsegError(f"no validation cases: no case here has rater masks for task {options.task}", vds.path)
        return usable, val, notes
    if options.val_fraction == 0:
        return usable, [], notes
    if len(usable) < 2:
        raise SoftsegError(
            f"no validation cases: only {len(usable)} case with task {options.task} masks, none left to validate on; "
            "give a validation dataset (--val DATASET2) or train without validation (--val-fraction 0)",
            ds.path,
        )
    train_idx, val_idx = split_indices(len(usable), options.val_fraction, options.seed)
    return [usable[i] for i in train_idx], [usable[i] for i in val_idx], notes


def load_training_case(case, options: TrainOptions, collected: list[str]) -> TrainingCase:
    """Load one dataset case's image and task masks; its loading warnings go to ``collected``."""
    data = load_case(case, task=options.task)
    for message in data.warnings:
        if "one rater" not in message:
            record_warning(f"{data.name}: {message}", collected)
    return TrainingCase(data.name, data.image, data.masks, tuple(data.spacing))


def load_dataset_cases(dataset, options: TrainOptions, val_dataset, collected: list[str]
                       ) -> Generator[Progress, None, tuple[list[TrainingCase], list[TrainingCase]]]:
    """Split a dataset (:func:`split_dataset`) and load its cases, yielding ``"setup"`` progress per case.

    Returns:
        ``(training cases, validation cases)``; notes and loading warnings are added to ``collected``.
    """
    files, val_files, notes = split_dataset(dataset, options, val_dataset)
    collected += notes
    train_cases, val_cases = [], []
    all_files = files + val_files
    for number, case in enumerate(all_files, start=1):
        loaded = load_training_case(case, options, collected)
        (train_cases if number <= len(files) else val_cases).append(loaded)
        yield Progress("setup", number, len(all_files), f"loaded {case.name}")
    return train_cases, val_cases


def split_memory_cases(cases: Sequence[TrainingCase], val_cases: Sequence[TrainingCase] | None,
                       options: TrainOptions) -> tuple[list[TrainingCase], list[TrainingCase], str | None]:
    """Training and validation cases among in-memory ones: ``(train, val, note)``.

    Given ``val_cases`` are used as they are; otherwise ``options.val_fraction`` of the cases is held out,
    and a single volume is cut into a training slab and a validation slab along the axis the plan would
    slice (the longest for a 3D plan). ``note`` says which slab was held out (``None`` otherwise).

    Raises:
        SoftsegError: No cases.
    """
    if not cases:
        raise SoftsegError("empty training set: no cases")
    cases = list(cases)
    if val_cases is not None:
        return cases, list(val_cases), None
    if options.val_fraction == 0:
        return cases, [], None
    if len(cases) >= 2:
        train_idx, val_idx = split_indices(len(cases), options.val_fraction, options.seed)
        return [cases[i] for i in train_idx], [cases[i] for i in val_idx], None

    case = cases[0]
    fp = fingerprint([case.image], [case.masks], [case.spacing])
    dim, axis, _ = choose_dim(fp)
    if options.slice_axis is not None:
        axis = options.slice_axis
    if dim == 3 and options.dim != 2:
        axis = int(np.argmax(case.image.shape[1:]))
    parts = split_by_slices(case, max(options.val_fraction, 0.2), axis)
    if parts is None:
        return cases, [], None
    return [parts[0]], [parts[1]], f"one case: slices {parts[1].name} held out for validation and calibration"


def check_cases(train_cases: list[TrainingCase], val_cases: list[TrainingCase], options: TrainOptions,
                collected: list[str], dataset=None) -> None:
    """Refuse cases a run cannot train on; warn (into ``collected``) about single raters and no validation.

    Raises:
        SoftsegError: No training cases, ``--calibrate`` without validation cases, or cases with different
            channel counts.
    """
    for case in train_cases + val_cases:
        if case.masks.shape[0] == 1:
            record_warning(f"{case.name}: only one rater, so its labels are hard (no soft information to learn)",
                           collected)
    if not train_cases:
        raise SoftsegError("empty training set: no cases")
    if not val_cases:
        record_warning("no validation cases: the last epoch is kept, no validation score is reported and the "
                       "model is not calibrated", collected)
        if options.calibrate:
            raise SoftsegError("--calibrate needs validation cases (use --val-fraction > 0 or --val DATASET2)")
    channels = {c.image.shape[0] for c in train_cases + val_cases}
    if len(channels) > 1:
        raise SoftsegError(f"cases have different channel counts ({sorted(channels)}); a model needs one",
                           None if dataset is None else Path(str(getattr(dataset, "path", dataset))))


def prepare_case(case: TrainingCase, norm: Normalization, plan: Plan, options: TrainOptions,
                 foreground: bool) -> PreparedCase:
    """Soft label, normalised image and (for training cases) foreground voxels, laid out for the plan.

    The soft label is made on the case's own grid (where the raters drew); with a ``plan.target_spacing``
    the image (cubic) and the soft label (linear, so it stays a mean of the raters' fractions) are then
    resampled to it (a 2D plan only in-plane), and patches are cut from the resampled volumes. Validation
    cases (``foreground=False``) are not resampled here: they are predicted whole as ``softseg predict``
    does, resampling included, and scored on their own grid.

    Args:
        case: The case.
        norm: The planned normalisation.
        plan: ``dim``, ``slice_axis`` and ``target_spacing`` are used (a 2D plan moves the slicing axis first).
        options: ``softlabel`` and ``sigma_mm`` are used.
        foreground: Collect the voxels some rater marked (training cases; validation cases need none).
    """
    soft = make_soft_label(case.masks, options.softlabel, spacing=case.spacing, sigma_mm=options.sigma_mm).data
    image = case.image
    marked = case.masks.max(axis=0) if foreground else None
    if foreground and plan.target_spacing is not None:
        axes = resample_axes(plan.dim, plan.slice_axis)
        image, _ = resample_image(image, case.spacing, plan.target_spacing, axes=axes)
        soft, _ = resample_soft_map(soft, case.spacing, plan.target_spacing, axes=axes)
        marked = resample_soft_map(marked.astype(np.float32), case.spacing, plan.target_spacing, axes=axes)[0] > 0
    volume = norm.apply(image)
    if plan.dim == 2:
        volume = np.moveaxis(volume, 1 + plan.slice_axis, 1)
        soft = np.moveaxis(soft, plan.slice_axis, 0)
        marked = None if marked is None else np.moveaxis(marked, plan.slice_axis, 0)
    coords = np.argwhere(marked > 0) if foreground else np.zeros((0, 3), dtype=np.int64)
    if len(coords) > MAX_FOREGROUND_POINTS:
        coords = coords[np.random.default_rng(0).choice(len(coords), MAX_FOREGROUND_POINTS, replace=False)]
    return PreparedCase(case.name, np.ascontiguousarray(volume, dtype=np.float32),
                        np.ascontiguousarray(soft, dtype=np.float32), coords, case.image, case.masks,
                        tuple(case.spacing))


def crop_patch(image: np.ndarray, target: np.ndarray, patch: Sequence[int], centre, rng
               ) -> tuple[np.ndarray, np.ndarray]:
    """A ``patch`` of ``image`` (C, *spatial) and ``target`` (*spatial), around ``centre`` (jittered) or at random.

    Sides shorter than the patch are padded (image: edge values, target: 0) at a random split.
    """
    spatial = target.shape
    pads = [max(0, p - n) for p, n in zip(patch, spatial)]
    if any(pads):
        before = [int(rng.integers(0, d + 1)) for d in pads]
        image = np.pad(image, [(0, 0)] + [(b, d - b) for b, d in zip(before, pads)], mode="edge")
        target = np.pad(target, [(b, d - b) for b, d in zip(before, pads)])
        if centre is not None:
            centre = [c + b for c, b in zip(centre, before)]
        spatial = target.shape
    starts = []
    for axis, (p, n) in enumerate(zip(patch, spatial)):
        if n == p:
            starts.append(0)
            continue
        if centre is None:
            lo = int(rng.integers(0, n - p + 1))
        else:
            lo = int(centre[axis]) - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1))
        starts.append(int(np.clip(lo, 0, n - p)))
    window = tuple(slice(s, s + p) for s, p in zip(starts, patch))
    return image[(slice(None),) + window], target[window]


def sample_batch(cases: list[PreparedCase], plan: Plan, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One batch of patches ``(images (B, C, *patch), targets (B, 1, *patch))``, a share centred on foreground.

    Each patch is centred (with jitter) on a marked voxel with probability ``plan.foreground_oversampling``
    (of a case that has any), else taken anywhere in a random case; 2D plans take one slice with its
    ``plan.context_slices`` neighbours as channels.
    """
    images, targets = [], []
    with_fg = [i for i, c in enumerate(cases) if len(c.foreground)]
    for _ in range(plan.batch_size):
        fg = bool(with_fg) and rng.random() < plan.foreground_oversampling
        case = cases[with_fg[rng.integers(len(with_fg))] if fg else rng.integers(len(cases))]
        if fg:
            point = case.foreground[rng.integers(len(case.foreground))]
        if plan.dim == 2:
            s = int(point[0]) if fg else int(rng.integers(case.volume.shape[1]))
            image = slice_stack(case.volume, [s], plan.context_slices)[0]
            image, target = crop_patch(image, case.target[s], plan.patch_size, point[1:] if fg else None, rng)
        else:
            image, target = crop_patch(case.volume, case.target, plan.patch_size, point if fg else None, rng)
        images.append(image)
        targets.append(target)
    return np.stack(images), np.stack(targets)[:, None]
