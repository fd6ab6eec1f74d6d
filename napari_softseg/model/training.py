"""Training on soft labels: a planned, budgeted run as a small object with named steps.

The recipe (Silva & Oliveira, QUBIQ 2021): for each case, the raters' masks become one soft label
(:func:`napari_softseg.analysis.softlabels.make_soft_label`, the mean by default); one U-Net learns it with
a binary cross-entropy against the soft target (soft Dice or both as options); a temperature fitted on the
validation cases calibrates its output. ``softlabel="majority"`` trains on hard labels, for comparison.

A :class:`TrainingRun` goes through named steps, each a generator yielding
:class:`~napari_softseg.progress.Progress`:

1. :meth:`~TrainingRun.prepare` — the device, the cases (a dataset folder, or in-memory
   :class:`TrainingCase` objects from the viewer: no temporary files), the validation split (the
   ``--val`` folder, else a share of the training cases; a single in-memory volume is split into slabs),
   soft labels and normalised arrays;
2. :meth:`~TrainingRun.plan` — the dataset fingerprint and the plan made from it
   (:mod:`napari_softseg.model.planning`: 2D/3D, patch, batch, width, depth, normalisation, schedule),
   with the user's options overriding any part; printed and stored in ``config.json``;
3. :meth:`~TrainingRun.build` — network, AdamW optimiser, random generators (or the checkpoint to resume);
4. :meth:`~TrainingRun.fit` — epochs of a fixed number of optimizer steps on sampled patches (a third of
   them centred on a voxel some rater marked), augmented, mixed precision on CUDA. The learning rate
   decays (poly 0.9) to reach zero at the end of the schedule: the first steps are timed and the number of
   steps that fit the time budget is planned (and re-planned after every epoch, as a shared machine may
   slow down). After each epoch the validation cases are predicted whole (sliding window) and scored
   (QUBIQ, ECE, each at the temperature that fits them best); the best epoch is kept; everything
   ``resume`` needs is checkpointed atomically. It stops when the schedule or the budget is spent, or
   early on a plateau of the validation score, and says which;
5. :meth:`~TrainingRun.calibrate` — fit the temperature of the kept model on the validation cases
   (default whenever there are some), warn when it lands on a bound, store it in ``config.json``.

:func:`train` runs them all on a dataset folder. Consumers stop early by closing the generator (the
viewer's cancel button) or with Ctrl-C (the CLI); both leave the last good checkpoint, and
``resume=True`` continues from it. With a fixed number of epochs (no time budget) the run is
deterministic for a seed on the CPU.

Example:
    >>> from napari_softseg.progress import drive
    >>> result = drive(train("QUBIQ/brain-growth", "models/bg", max_minutes=8))  # doctest: +SKIP
    >>> result.best_score, result.stopped  # doctest: +SKIP
    (0.87, 'schedule complete')
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from napari_softseg import SOFTWARE
from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score
from napari_softseg.analysis.softlabels import ALIASES, METHODS, make_soft_label
from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import Dataset
from napari_softseg.io.dataset import discover, load_case
from napari_softseg.io.files import folder_lock
from napari_softseg.model.augmentation import AugmentationSettings, augment_batch, augment_batch_3d
from napari_softseg.model.calibration import T_MAX, T_MIN, calibration_report, fit_temperature, sigmoid
from napari_softseg.model.device import resolve_device
from napari_softseg.model.distributed import Distributed
from napari_softseg.model.inference import predict_logits, slice_stack
from napari_softseg.model.model_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    load_model,
    load_tensors,
    new_network,
    read_config,
    save_config,
    save_model,
    save_tensors,
)
from napari_softseg.model.normalization import Normalization
from napari_softseg.model.planning import Plan, choose_dim, fingerprint, make_plan
from napari_softseg.progress import Progress, drive

STATE_FILE = "training_state.safetensors"
LOSSES = ("bce", "dice", "bce+dice")
#: Options that define what the model is; a resumed run must keep them.
IDENTITY_OPTIONS = (
    "task", "softlabel", "sigma_mm", "loss", "base_channels", "depth", "norm", "context_slices", "slice_axis",
    "normalization", "ct_window", "dim", "patch_size",
)
#: Options a resumed run may change.
ADJUSTABLE_OPTIONS = ("epochs", "max_minutes", "device", "calibrate", "batch_size", "early_stop")
#: Planner-chosen options (``None`` in :class:`TrainOptions` means "let the plan decide").
PLANNED_OPTIONS = (
    "dim", "slice_axis", "context_slices", "patch_size", "batch_size", "base_channels", "depth", "norm",
    "normalization", "ct_window", "steps_per_epoch", "learning_rate", "max_minutes", "epochs",
)
WARMUP_STEPS = 20
T_BOUND_MARGIN = 1.02


@dataclass
class TrainOptions:
    """Settings of a training run (every field is also a ``softseg train`` option).

    Fields left at ``None`` are chosen by the plan (:mod:`napari_softseg.model.planning`) from the
    dataset's fingerprint; a value given overrides that part of the plan.

    Attributes:
        task: QUBIQ task number whose rater masks are learned.
        softlabel: Soft-label method (see :data:`napari_softseg.analysis.softlabels.METHODS`); ``"majority"``
            trains on hard labels.
        sigma_mm: Gaussian sigma for ``"smoothed"`` soft labels.
        loss: ``"bce"`` (default), ``"dice"`` (soft Dice) or ``"bce+dice"``.
        epochs: Fixed number of epochs; ``None``: as many as the time budget allows.
        max_minutes: Time budget for the whole run; ``None`` with ``epochs`` unset: the planned default.
        steps_per_epoch: Optimizer steps per epoch (planned: 50 on the CPU, 250 on a GPU).
        batch_size: Patches per step.
        learning_rate: Peak AdamW learning rate (poly decay to 0 over the schedule).
        weight_decay: AdamW weight decay.
        patch_size: Training patch side (one value for every axis, or one per axis).
        base_channels: U-Net width at full resolution.
        depth: U-Net downsamplings.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        dim: 2 (slices) or 3 (volume patches).
        context_slices: 2.5D context (neighbouring slices on each side as channels; 2D only).
        slice_axis: Spatial axis cut into 2D slices.
        normalization: ``"zscore"`` (MR) or ``"ct"``.
        ct_window: ``(low, high)`` for ``"ct"``.
        val_fraction: Share of the cases held out for validation when no validation dataset is given
            (at least one case when > 0; 0 trains without validation and keeps the last epoch).
        seed: Seed of every random choice (initialisation, split, sampling, augmentation).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
        calibrate: Fit a temperature on the validation cases after training; ``None``: whenever there
            are validation cases.
        augment: Use data augmentation.
        early_stop: Stop when the validation score has reached a plateau.
        weights_dtype: Storage of the saved weights, ``"float16"`` (small) or ``"float32"``.
    """

    task: int = 1
    softlabel: str = "mean"
    sigma_mm: float = 1.0
    loss: str = "bce"
    epochs: int | None = None
    max_minutes: float | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    patch_size: int | list[int] | None = None
    base_channels: int | None = None
    depth: int | None = None
    norm: str | None = None
    dim: int | None = None
    context_slices: int | None = None
    slice_axis: int | None = None
    normalization: str | None = None
    ct_window: tuple[float, float] | None = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    calibrate: bool | None = None
    augment: bool = True
    early_stop: bool = True
    weights_dtype: str = "float16"

    def __post_init__(self):

        self.softlabel = ALIASES.get(self.softlabel, self.softlabel)
        if self.softlabel not in METHODS:
            raise SoftsegError(f"unknown soft-label method {self.softlabel!r}; choose from {', '.join(METHODS)}")
        if self.loss not in LOSSES:
            raise SoftsegError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        for name in ("epochs", "batch_size", "steps_per_epoch", "base_channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SoftsegError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise SoftsegError(f"--max-minutes must be positive, got {self.max_minutes}")
        if not 0 <= self.val_fraction < 1:
            raise SoftsegError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.dim is not None and self.dim not in (2, 3):
            raise SoftsegError(f"--dim must be 2 or 3, got {self.dim}")
        if isinstance(self.patch_size, (list, tuple)):
            self.patch_size = [int(v) for v in self.patch_size]
            if len(self.patch_size) == 1:
                self.patch_size = self.patch_size[0]
        if self.patch_size is not None and self.depth is not None:
            sides = self.patch_size if isinstance(self.patch_size, list) else [self.patch_size]
            if min(sides) < 2**self.depth:
                raise SoftsegError(f"--patch-size must be at least 2**depth = {2**self.depth}")
        if self.ct_window is not None:
            self.ct_window = tuple(float(v) for v in self.ct_window)
            if self.normalization not in (None, "ct"):
                raise SoftsegError(f"--ct-window conflicts with --normalization {self.normalization} (it is for ct)")
        if self.normalization is not None:
            Normalization(self.normalization, self.ct_window or (-160.0, 240.0))  # validates

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        if self.ct_window is not None:
            data["ct_window"] = list(self.ct_window)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainOptions:
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """What a finished (or stopped) training run produced.

    Attributes:
        model_dir: Folder with ``model.safetensors`` + ``config.json`` (the best epoch).
        epochs_done: Epochs completed in total (including earlier runs when resumed).
        best_epoch: Epoch of the kept model.
        best_score: Its mean validation QUBIQ score (``None`` without validation).
        stopped: Why it stopped: ``"schedule complete"``, ``"epochs done"``, ``"time budget"`` or
            ``"plateau"``.
        seconds: Wall time of this run.
        calibration: Temperature and ECE before/after, when calibrated.
        warnings: Notable facts (single rater, no validation, a temperature on its bound, ...).
        plan: The plan the run followed.
        stop_reason: The sentence printed about why it stopped.
        steps: Optimizer steps taken in total.
    """

    model_dir: Path
    epochs_done: int
    best_epoch: int
    best_score: float | None
    stopped: str
    seconds: float
    calibration: dict | None = None
    warnings: list[str] = field(default_factory=list)
    plan: dict | None = None
    stop_reason: str = ""
    steps: int = 0


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
class _Case:
    name: str
    volume: np.ndarray  # normalised image: 2D plan (C, S, H, W) with the slicing axis at 1; 3D (C, X, Y, Z)
    target: np.ndarray  # soft target in the same layout, without the channel axis
    foreground: np.ndarray  # (N, 3) indices of voxels some rater marked (a sample of them), same layout
    image: np.ndarray  # raw image (C, X, Y, Z), for validation
    masks: np.ndarray  # (R, X, Y, Z)


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


def _warn(message: str, collected: list[str]) -> None:
    collected.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _split_cases(dataset, options: TrainOptions, val_dataset) -> tuple[list, list, list[str], object]:
    """Discover and split dataset cases into training and validation lists."""

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
        return usable, val, notes, ds
    if options.val_fraction == 0:
        return usable, [], notes, ds
    if len(usable) < 2:
        raise SoftsegError(
            f"no validation cases: only {len(usable)} case with task {options.task} masks, none left to validate on; "
            "give a validation dataset (--val DATASET2) or train without validation (--val-fraction 0)",
            ds.path,
        )
    train_idx, val_idx = _split_indices(len(usable), options.val_fraction, options.seed)
    return [usable[i] for i in train_idx], [usable[i] for i in val_idx], notes, ds


def _split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    n_val = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val = set(order[:n_val].tolist())
    return [i for i in range(n) if i not in val], [i for i in range(n) if i in val]


def _load_file_case(case, options: TrainOptions, collected: list[str]) -> TrainingCase:

    data = load_case(case, task=options.task)
    for message in data.warnings:
        if "one rater" not in message:
            _warn(f"{data.name}: {message}", collected)
    return TrainingCase(data.name, data.image, data.masks, tuple(data.spacing))


def _crop(image: np.ndarray, target: np.ndarray, patch: Sequence[int], centre, rng) -> tuple[np.ndarray, np.ndarray]:
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


def _loss(logits, target, kind: str):
    """BCE against the soft target, soft Dice (over the whole batch), or their sum."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    if "bce" in kind:
        total = total + F.binary_cross_entropy_with_logits(logits, target)
    if "dice" in kind:
        p = torch.sigmoid(logits)
        total = total + 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return total


def _distributed_loss(logits, target, kind: str, dist: Distributed, global_rows: int):
    """:func:`_loss` of the whole global batch when this rank holds only its rows of it (under torchrun).

    The loss is built from sums over all ranks (BCE: the sum of the element losses over the global batch,
    divided by its size; soft Dice: intersection and volumes over the global batch), taken with a
    collective gradients flow back through. Every rank gets the same value, and the averaged gradient is
    that of one process on the whole batch, whatever the split (rows need not divide evenly).
    """
    import torch
    import torch.nn.functional as F

    parts = []
    if "bce" in kind:
        per_row = logits[0].numel()
        parts.append(F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / (global_rows * per_row))
    if "dice" in kind:
        p = torch.sigmoid(logits)
        parts += [(p * target).sum(), p.sum(), target.sum()]
    sums = dist.sum_with_grad(torch.stack(parts))
    total = 0.0
    if "bce" in kind:
        total = total + sums[0]
    if "dice" in kind:
        inter, p_sum, t_sum = sums[-3], sums[-2], sums[-1]
        total = total + 1 - (2 * inter + 1) / (p_sum + t_sum + 1)
    return total


def _scores(logits_per_case: list[np.ndarray], cases: list[_Case], temperature: float) -> tuple[list[float], float]:

    scores, eces = [], []
    for logits, case in zip(logits_per_case, cases):
        prob = sigmoid(logits, temperature)
        scores.append(qubiq_score(prob, case.masks)[0])
        eces.append(expected_calibration_error(prob, case.masks.mean(axis=0, dtype=np.float32)))
    return scores, float(np.mean(eces))


def validation_logits(network, config: ModelConfig, cases: list[_Case], device: str) -> list[np.ndarray]:
    """Logits of the network on each validation case (whole volumes, as ``softseg predict`` does)."""

    return [drive(predict_logits(network, config, case.image, device=device)) for case in cases]


def _validate(network, config: ModelConfig, cases: list[_Case], device: str, calibrated: bool) -> dict:
    """Mean QUBIQ score and ECE over the validation cases, raw (T = 1) and at the temperature that fits them."""

    logits = validation_logits(network, config, cases, device)
    raw_scores, raw_ece = _scores(logits, cases, 1.0)
    metrics = {"qubiq_raw": float(np.mean(raw_scores)), "ece_raw": raw_ece}
    if calibrated:
        z = np.concatenate([lg.ravel() for lg in logits])
        y = np.concatenate([c.masks.mean(axis=0, dtype=np.float32).ravel() for c in cases])
        t = fit_temperature(z, y, max_samples=400_000)
        scores, ece = _scores(logits, cases, t)
        metrics.update(temperature=t)
    else:
        scores, ece = raw_scores, raw_ece
    metrics.update(qubiq_score=float(np.mean(scores)), ece=ece,
                   per_case={c.name: float(s) for c, s in zip(cases, scores)})
    return metrics


def read_training_state(out_dir: str | os.PathLike) -> dict:
    """The JSON part of ``OUT/training_state.safetensors`` (options, epoch, best, history, ...).

    Raises:
        SoftsegError: No state file (nothing to resume) or an unreadable one.
    """
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise SoftsegError(f"nothing to resume: no {STATE_FILE} (train without --resume first)", Path(out_dir))
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("json", "{}"))
    except Exception as exc:  # noqa: BLE001 - safetensors/JSON errors of a damaged file
        raise SoftsegError(f"cannot read the training state ({str(exc)[:200]})", path) from None
    expected = {"options": dict, "epoch": int, "best_epoch": int, "history": list, "numpy_rng": dict,
                "optimizer": dict}
    if not isinstance(meta, dict):
        raise SoftsegError("training state metadata is not a JSON object; train again without --resume", path)
    wrong = [k for k, kind in expected.items() if not isinstance(meta.get(k), kind) or isinstance(meta.get(k), bool)]
    if wrong:
        raise SoftsegError(f"training state is missing or has invalid {', '.join(wrong)}; it cannot be resumed "
                           "(train again without --resume, into a new folder)", path)
    return meta


def _warn(message: str, collected: list[str]) -> None:
    collected.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """Split an optimiser state into tensors (for safetensors) and JSON (no pickle anywhere)."""
    import torch

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SoftsegError("output exists and is not a folder", out_dir)
    ours = [n for n in (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE) if (out_dir / n).exists()]
    if resume:
        if not (out_dir / STATE_FILE).is_file():
            raise SoftsegError(f"nothing to resume: no {STATE_FILE} here", out_dir)
    elif ours and not overwrite:
        raise SoftsegError(
            f"already holds a model ({', '.join(ours)}); pass --resume to continue it or --overwrite to start over",
            out_dir,
        )


class TrainingRun:
    """One training run, step by step (see the module docstring); :meth:`run` does them all.

    Args:
        out_dir: Model folder to write (created). Holds ``model.safetensors`` + ``config.json`` (best
            epoch) and ``training_state.safetensors`` (for ``resume``).
        options: Settings (default :class:`TrainOptions`).
        dataset: Dataset folder (QUBIQ layout: its ``Training/`` cases are used when present), a case-list
            folder, or a :class:`~napari_softseg.io.case.Dataset`.
        val_dataset: Validation cases from another folder instead of ``options.val_fraction`` of the
            training cases.
        cases: In-memory :class:`TrainingCase` objects instead of ``dataset`` (the viewer).
        val_cases: In-memory validation cases; without them ``options.val_fraction`` of ``cases`` is held
            out (of a single volume: its last slab along the planned slice axis).
        resume: Continue the run saved in ``out_dir``. Its options are used; those given may only change
            ``epochs``, ``max_minutes``, ``device``, ``calibrate``, ``batch_size`` and ``early_stop``.
        overwrite: Start over in an ``out_dir`` that already holds a model.
    """

    def __init__(self, out_dir, options: TrainOptions | None = None, *, dataset=None, val_dataset=None,
                 cases: Sequence[TrainingCase] | None = None, val_cases: Sequence[TrainingCase] | None = None,
                 resume: bool = False, overwrite: bool = False, requested: dict | None = None):
        self.out_dir = Path(out_dir)
        self.dataset, self.val_dataset = dataset, val_dataset
        self.memory_cases = list(cases) if cases is not None else None
        self.memory_val = list(val_cases) if val_cases is not None else None
        self.resume, self.overwrite = resume, overwrite
        self.options = options or TrainOptions()
        self.requested = requested if requested is not None else {}
        self.warnings: list[str] = []
        self.started = time.monotonic()
        self.state_meta: dict | None = None
        self.train_data: list[_Case] = []
        self.val_data: list[_Case] = []
        self.plan_: object = None
        self.fingerprint_: object = None
        self.history: list[dict] = []
        self.epoch = self.best_epoch = self.steps_done = 0
        self.best_score: float | None = None
        self.previous_seconds = 0.0
        self.stopped, self.stop_reason = "", ""
        self.calibration: dict | None = None
        # torchrun: a world of one outside it (see _distributed_loss and the fit loop's rank-0 decisions)
        self.dist = Distributed.from_environment() if self.memory_cases is None else Distributed()

    # -- step 1 ---------------------------------------------------------------------------------------
    def prepare(self) -> Generator[Progress, None, None]:
        """Device, cases, validation split, soft labels (yields ``"device"`` and ``"setup"`` progress)."""

        _check_out_dir(self.out_dir, self.resume, self.overwrite)
        if self.resume:
            self.state_meta = read_training_state(self.out_dir)
            try:
                stored = TrainOptions.from_dict(self.state_meta["options"])
            except SoftsegError as exc:
                raise SoftsegError(f"stored training options are invalid ({exc.message})",
                                   self.out_dir / STATE_FILE) from None
            except (TypeError, ValueError, KeyError) as exc:
                raise SoftsegError(f"stored training options are invalid ({exc})", self.out_dir / STATE_FILE) from None
            req = self.requested
            changed = [k for k in IDENTITY_OPTIONS if req.get(k) is not None and _differs(req[k], getattr(stored, k))]
            if changed:
                details = ", ".join(f"{k}: {getattr(stored, k)!r} -> {req[k]!r}" for k in changed)
                raise SoftsegError(f"cannot resume with different settings ({details}); use a new output folder",
                                   self.out_dir)
            self.options = TrainOptions.from_dict(
                {**stored.to_dict(), **{k: v for k, v in req.items() if k in ADJUSTABLE_OPTIONS}})
            if self.dataset is None and self.memory_cases is None:
                self.dataset = self.state_meta.get("dataset")
            if self.val_dataset is None and self.state_meta.get("val_dataset"):
                self.val_dataset = self.state_meta["val_dataset"]
        options = self.options
        self.device_choice = resolve_device(options.device)
        if self.dist.enabled:  # each CUDA process takes the GPU of its LOCAL_RANK; gloo on the CPU, nccl on CUDA
            from dataclasses import replace

            self.device_choice = replace(self.device_choice, device=self.dist.device_for(self.device_choice.device))
            self.dist.start(self.device_choice.device)
        device = self.device_choice.device
        yield Progress("device", 0, None, f"device: {device} ({self.device_choice.reason})", {"device": device})

        if self.memory_cases is not None:
            train_cases, val_cases = self._split_memory()
            self.dataset_label = "in-memory cases"
        else:
            if self.dataset is None:
                raise SoftsegError("no dataset to train on")
            files, val_files, notes, ds = _split_cases(self.dataset, options, self.val_dataset)
            self.warnings += notes
            self.dataset_label = str(getattr(self.dataset, "path", self.dataset))
            train_cases, val_cases = [], []
            all_files = files + val_files
            for number, case in enumerate(all_files, start=1):
                loaded = _load_file_case(case, options, self.warnings)
                (train_cases if number <= len(files) else val_cases).append(loaded)
                yield Progress("setup", number, len(all_files), f"loaded {case.name}")
        for case in train_cases + val_cases:
            if case.masks.shape[0] == 1:
                _warn(f"{case.name}: only one rater, so its labels are hard (no soft information to learn)",
                      self.warnings)
        if not train_cases:
            raise SoftsegError("empty training set: no cases")
        if not val_cases:
            _warn("no validation cases: the last epoch is kept, no validation score is reported and the model "
                  "is not calibrated", self.warnings)
            if options.calibrate:
                raise SoftsegError("--calibrate needs validation cases (use --val-fraction > 0 or --val DATASET2)")
        channels = {c.image.shape[0] for c in train_cases + val_cases}
        if len(channels) > 1:
            raise SoftsegError(f"cases have different channel counts ({sorted(channels)}); a model needs one",
                               None if self.dataset is None else Path(str(getattr(self.dataset, "path", self.dataset))))
        self.raw_train, self.raw_val = train_cases, val_cases

    def _split_memory(self) -> tuple[list[TrainingCase], list[TrainingCase]]:
        cases, options = self.memory_cases, self.options
        if not cases:
            raise SoftsegError("empty training set: no cases")
        if self.memory_val is not None:
            return cases, self.memory_val
        if options.val_fraction == 0:
            return cases, []
        if len(cases) >= 2:
            train_idx, val_idx = _split_indices(len(cases), options.val_fraction, options.seed)
            return [cases[i] for i in train_idx], [cases[i] for i in val_idx]

        case = cases[0]
        fp = fingerprint([case.image], [case.masks], [case.spacing])
        dim, axis, _ = choose_dim(fp)
        if self.options.slice_axis is not None:
            axis = self.options.slice_axis
        if dim == 3 and self.options.dim != 2:
            axis = int(np.argmax(case.image.shape[1:]))
        parts = split_by_slices(case, max(options.val_fraction, 0.2), axis)
        if parts is None:
            return cases, []
        self.warnings.append(f"one case: slices {parts[1].name} held out for validation and calibration")
        return [parts[0]], [parts[1]]

    # -- step 2 ---------------------------------------------------------------------------------------
    def plan(self) -> Generator[Progress, None, None]:
        """Fingerprint the training cases, plan the run (options override), print the plan."""

        o = self.options
        self.fingerprint_ = fingerprint([c.image for c in self.raw_train], [c.masks for c in self.raw_train],
                                        [c.spacing for c in self.raw_train])
        cuda = self.device_choice.is_cuda
        if self.resume and self.state_meta.get("plan"):
            plan = Plan.from_dict(self.state_meta["plan"])
            plan.max_minutes = o.max_minutes if o.max_minutes is not None else (
                None if o.epochs is not None else plan.max_minutes)
            plan.epochs = o.epochs
            if o.batch_size is not None:
                plan.batch_size = o.batch_size
        else:
            overrides = {k: getattr(o, k) for k in PLANNED_OPTIONS}
            plan = make_plan(self.fingerprint_, cuda=cuda, device=self.device_choice.device, **overrides)
        self.plan_ = plan
        yield Progress("plan", 0, None, self.fingerprint_.summary())
        for line in plan.lines():
            yield Progress("plan", 0, None, line)
        norm = Normalization(plan.normalization, tuple(plan.ct_window))
        self.norm = norm
        self.train_data = [self._arrays(c, norm, foreground=True) for c in self.raw_train]
        self.val_data = [self._arrays(c, norm, foreground=False) for c in self.raw_val]
        if self.val_data and o.calibrate is None:
            o.calibrate = True

    def _arrays(self, case: TrainingCase, norm: Normalization, foreground: bool) -> _Case:

        plan, o = self.plan_, self.options
        soft = make_soft_label(case.masks, o.softlabel, spacing=case.spacing, sigma_mm=o.sigma_mm).data
        volume = norm.apply(case.image)
        if plan.dim == 2:
            volume = np.moveaxis(volume, 1 + plan.slice_axis, 1)
            soft = np.moveaxis(soft, plan.slice_axis, 0)
        marked = np.moveaxis(case.masks.max(axis=0), plan.slice_axis, 0) if plan.dim == 2 else case.masks.max(axis=0)
        coords = np.argwhere(marked > 0) if foreground else np.zeros((0, 3), dtype=np.int64)
        if len(coords) > 20000:
            coords = coords[np.random.default_rng(0).choice(len(coords), 20000, replace=False)]
        return _Case(case.name, np.ascontiguousarray(volume, dtype=np.float32),
                     np.ascontiguousarray(soft, dtype=np.float32), coords, case.image, case.masks)

    # -- step 3 ---------------------------------------------------------------------------------------
    def build(self) -> Generator[Progress, None, None]:
        """Network, optimiser and random generators; restored from the checkpoint when resuming."""
        import torch

        plan, o = self.plan_, self.options
        if plan.batch_size < self.dist.world_size:
            raise SoftsegError(f"the global batch ({plan.batch_size} patches per step) is smaller than the "
                               f"{self.dist.world_size} processes; use --batch-size {self.dist.world_size} or more")
        arch = {"name": "unet3d" if plan.dim == 3 else "unet2d", "base_channels": plan.base_channels,
                "depth": plan.depth, "norm": plan.norm}
        self.config = ModelConfig(
            architecture=arch, task=o.task, image_channels=int(self.raw_train[0].image.shape[0]),
            context_slices=plan.context_slices, slice_axis=plan.slice_axis, normalization=self.norm.to_dict(),
            softlabel={"method": o.softlabel, "sigma_mm": o.sigma_mm if o.softlabel == "smoothed" else None},
            loss=o.loss, weights_dtype=o.weights_dtype, patch_size=list(plan.patch_size),
            plan={"fingerprint": self.fingerprint_.to_dict(), **plan.to_dict()},
        )
        torch.manual_seed(o.seed)
        device = self.device_choice.device
        self.network = new_network(self.config)
        self.network.to(device)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=plan.learning_rate,
                                           weight_decay=o.weight_decay)
        self.rng = np.random.default_rng(o.seed)
        self.aug_gen = torch.Generator().manual_seed(o.seed)
        self.scaler = torch.amp.GradScaler("cuda", enabled=plan.amp and self.device_choice.is_cuda)
        self.total_steps = (plan.epochs or 0) * plan.steps_per_epoch or None
        self.progress = 0.0
        if self.resume:
            tensors, meta = load_tensors(self.out_dir / STATE_FILE)
            try:
                self.network.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                                              if k.startswith("model.")})
                self.network.to(device)
                _restore_optimizer(self.optimizer, tensors, meta["optimizer"])
                self.aug_gen.set_state(tensors["rng.augment"])
                self.rng.bit_generator.state = meta["numpy_rng"]
                self.epoch, self.best_epoch = meta["epoch"], meta["best_epoch"]
                self.best_score = meta.get("best_score")
                self.history, self.previous_seconds = meta["history"], float(meta.get("seconds", 0.0))
                self.steps_done, self.progress = int(meta.get("steps_done", 0)), float(meta.get("progress", 0.0))
            except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as exc:
                raise SoftsegError(f"the checkpoint does not fit this run ({type(exc).__name__}: {str(exc)[:160]}); "
                                   "train again into a new folder", self.out_dir / STATE_FILE) from None
            if plan.max_minutes is None:
                self.total_steps = plan.epochs * plan.steps_per_epoch
            if self.progress >= 1.0 and (self.total_steps is None or self.steps_done < self.total_steps):
                # the stored schedule had ended and this resume asks for more (more epochs, a new budget): without
                # this the learning rate would stay at zero and the extra steps would change nothing. More epochs
                # continue the poly schedule as if it had been planned that long; a new budget restarts it.
                self.progress = self.steps_done / self.total_steps if self.total_steps else 0.0
                yield Progress("plan", 0, None, f"the stored schedule had ended after {self.steps_done} steps; "
                               f"extended ({100 * self.progress:.0f}% done)")
            yield Progress("device", 0, None, f"resuming after epoch {self.epoch} (best so far: epoch {self.best_epoch})")
        # the module the steps run (DistributedDataParallel under torchrun; it starts from rank 0's weights)
        self.trainer = self.dist.wrap(self.network)
        if self.dist.enabled:
            yield Progress("plan", 0, None, f"distributed: {self.dist.world_size} processes ({self.dist.backend}); "
                           f"each step's global batch of {plan.batch_size} patches is split between them, rank 0 "
                           "validates, checkpoints and calibrates")
        n_params = sum(p.numel() for p in self.network.parameters())
        yield Progress("plan", 0, None, f"network: {n_params / 1e6:.2f} M parameters")

    # -- step 4 ---------------------------------------------------------------------------------------
    def _batch(self):
        """One batch of patches (numpy), a share of them centred on foreground."""

        plan, rng = self.plan_, self.rng
        images, targets = [], []
        with_fg = [i for i, c in enumerate(self.train_data) if len(c.foreground)]
        for _ in range(plan.batch_size):
            fg = bool(with_fg) and rng.random() < plan.foreground_oversampling
            case = self.train_data[with_fg[rng.integers(len(with_fg))] if fg else rng.integers(len(self.train_data))]
            if fg:
                point = case.foreground[rng.integers(len(case.foreground))]
            if plan.dim == 2:
                s = int(point[0]) if fg else int(rng.integers(case.volume.shape[1]))
                image = slice_stack(case.volume, [s], plan.context_slices)[0]
                image, target = _crop(image, case.target[s], plan.patch_size, point[1:] if fg else None, rng)
            else:
                image, target = _crop(case.volume, case.target, plan.patch_size, point if fg else None, rng)
            images.append(image)
            targets.append(target)
        return np.stack(images), np.stack(targets)[:, None]

    def _learning_rate(self) -> float:
        plan = self.plan_
        warm = min(1.0, (self.steps_done + 1) / WARMUP_STEPS)
        return plan.learning_rate * max(0.0, 1.0 - self.progress) ** 0.9 * (0.1 + 0.9 * warm)

    def _step(self) -> float:
        import torch

        device = self.device_choice.device
        x, y = self._batch()
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        if self.options.augment:
            x, y = (augment_batch if self.plan_.dim == 2 else augment_batch_3d)(x, y, self.aug_gen)
        # every rank draws (and augments) the same global batch from the same generators and takes its rows
        rows = x.shape[0]
        x, y = self.dist.rows(x), self.dist.rows(y)
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.scaler.is_enabled()):
            logits = self.trainer(x)
        if self.dist.enabled:
            loss = _distributed_loss(logits.float(), y, self.options.loss, self.dist, rows)
        else:
            loss = _loss(logits.float(), y, self.options.loss)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    # -- torchrun: decisions are taken on rank 0 and shared, so every rank leaves the loop at the same step
    def _decided_on_main(self, *values: float) -> tuple:
        """Rank 0's ``values`` (times, planned steps) on every rank; the values themselves for one process."""
        if not self.dist.enabled:
            return values
        shared = self.dist.share(values)
        return tuple(int(v) if isinstance(old, int) else v for v, old in zip(shared, values))

    def _share_best(self) -> None:
        """Rank 0 validated: every rank learns the best epoch and score (for its result and stop messages)."""
        if not self.dist.enabled:
            return
        score = math.nan if self.best_score is None else self.best_score
        epoch, score = self.dist.share([self.best_epoch, score])
        self.best_epoch, self.best_score = int(epoch), None if math.isnan(score) else score

    def _checkpoint(self, improved: bool) -> None:
        seconds = self.previous_seconds + time.monotonic() - self.started
        self.config.training = {**self._summary(), "epochs_done": self.epoch, "best_epoch": self.best_epoch,
                                "stopped": "in progress", "seconds": round(seconds, 1), "warnings": self.warnings,
                                "history": self.history, "steps": self.steps_done}
        try:
            if improved or not self.val_data:
                save_model(self.out_dir, self.network, self.config)
            opt_tensors, opt_meta = _optimizer_tensors(self.optimizer)
            tensors = {f"model.{k}": v for k, v in self.network.state_dict().items()}
            tensors.update(opt_tensors)
            tensors["rng.augment"] = self.aug_gen.get_state()
            meta = {"options": self.options.to_dict(), "epoch": self.epoch, "best_epoch": self.best_epoch,
                    "best_score": self.best_score, "history": self.history,
                    "numpy_rng": self.rng.bit_generator.state, "seconds": seconds,
                    "dataset": None if self.memory_cases is not None else self.dataset_label,
                    "val_dataset": None if self.val_dataset is None else str(getattr(self.val_dataset, "path", self.val_dataset)),
                    "optimizer": opt_meta, "plan": self.plan_.to_dict(), "steps_done": self.steps_done,
                    "progress": self.progress}
            save_tensors(self.out_dir / STATE_FILE, tensors, meta)
        except (OSError, SoftsegError) as exc:
            reason = exc.message if isinstance(exc, SoftsegError) else (exc.strerror or str(exc))
            kept = f"the last good checkpoint (epoch {self.epoch - 1}) is kept" if self.epoch > 1 else "no checkpoint was kept"
            raise SoftsegError(
                f"could not write the checkpoint of epoch {self.epoch} ({reason}); {kept}; "
                "free some space and continue with --resume",
                self.out_dir,
            ) from None

    def _summary(self) -> dict:
        import torch

        return {
            "dataset": self.dataset_label,
            "val_dataset": None if self.val_dataset is None else str(getattr(self.val_dataset, "path", self.val_dataset)),
            "train_cases": [c.name for c in self.train_data],
            "val_cases": [c.name for c in self.val_data],
            "options": self.options.to_dict(),
            "patch_size": list(self.plan_.patch_size),
            "augmentation": AugmentationSettings().to_dict() if self.options.augment else None,
            "software": f"{SOFTWARE} / torch {torch.__version__}",
            "device": self.device_choice.device,
            "processes": self.dist.world_size,
        }

    def fit(self) -> Generator[Progress, None, None]:
        """The epochs: steps, validation, checkpoint; stops on schedule, budget or plateau (and says why)."""
        plan = self.plan_
        budget_s = None if plan.max_minutes is None else 60.0 * plan.max_minutes
        deadline = None if budget_s is None else self.started + budget_s
        step_times: list[float] = []
        epoch_times: list[float] = []
        val_seconds = 0.0
        fixed_cap = plan.epochs * plan.steps_per_epoch if plan.epochs else None
        stale = 0
        ema = None
        while True:
            self.epoch += 1
            self.network.train()
            epoch_start = time.monotonic()
            running, b = 0.0, 0
            for b in range(plan.steps_per_epoch):
                t0 = time.monotonic()
                loss = self._step()
                self.steps_done += 1
                step_times.append(time.monotonic() - t0)
                running += (loss - running) / (b + 1)
                remaining = None if fixed_cap is None else fixed_cap - self.steps_done
                out_of_time = False
                if deadline is not None:
                    # re-plan after every step from the measured speed (a shared machine slows down and speeds
                    # up): the steps that still fit before the deadline, keeping time for validations and the
                    # calibration, so the learning rate reaches zero where the budget ends
                    ema = step_times[-1] if ema is None or len(step_times) <= 2 else 0.9 * ema + 0.1 * step_times[-1]
                    per_step = ema + val_seconds / plan.steps_per_epoch
                    left = deadline - time.monotonic() - 2 * val_seconds
                    fit = max(0, int(left / per_step))
                    ema, fit = self._decided_on_main(ema, fit)  # torchrun: rank 0's clock plans every rank
                    out_of_time = fit < 1
                    remaining = fit if remaining is None else min(remaining, fit)
                    if len(step_times) == min(6, plan.steps_per_epoch) and not epoch_times:
                        yield Progress("plan", 0, None, f"timing: {ema:.2f} s per step -> about "
                                       f"{self.steps_done + fit} steps ({(self.steps_done + fit) / plan.steps_per_epoch:.1f}"
                                       " epochs) in the budget")
                progress_before = self.progress
                if remaining is not None:
                    self.progress = min(1.0, self.progress + (1.0 - self.progress) / (remaining + 1))
                yield Progress("batch", b + 1, plan.steps_per_epoch, f"epoch {self.epoch}", {"loss": running})
                if out_of_time or (remaining is not None and remaining <= 0):
                    if out_of_time and progress_before < 0.9:
                        self.stopped = "time budget"
                        self.stop_reason = (f"stopped: the {plan.max_minutes:g}-minute budget ran out during epoch "
                                            f"{self.epoch} (schedule {100 * progress_before:.0f}% done)")
                    else:
                        self.progress = 1.0
                        self.stopped = "epochs done" if fixed_cap is not None and self.steps_done >= fixed_cap \
                            else "schedule complete"
                        where = (f" at the end of the {plan.max_minutes:g}-minute budget" if plan.max_minutes
                                 else "")
                        self.stop_reason = (f"stopped: the learning-rate schedule is complete ({self.steps_done} "
                                            f"steps, {self.epoch} epochs){where}")
                    break
            record = {"epoch": self.epoch, "loss": running, "batches": b + 1, "steps": self.steps_done,
                      "lr": self._learning_rate()}
            improved = False
            if self.val_data and self.dist.is_main:  # the other ranks wait for rank 0's decisions below
                v0 = time.monotonic()
                metrics = _validate(self.network, self.config, self.val_data, self.device_choice.device,
                                    calibrated=bool(self.options.calibrate))
                val_seconds = time.monotonic() - v0
                record.update(val_qubiq=metrics["qubiq_score"], val_ece=metrics["ece"],
                              val_qubiq_raw=metrics["qubiq_raw"])
                if "temperature" in metrics:
                    record["val_temperature"] = metrics["temperature"]
                if self.best_score is None or metrics["qubiq_score"] > self.best_score + 1e-4:
                    self.best_epoch, self.best_score, improved = self.epoch, metrics["qubiq_score"], True
                    self.config.validation = {k: v for k, v in metrics.items() if k != "temperature"}
                    stale = 0
                else:
                    stale += 1
            else:
                self.best_epoch = self.epoch
            self.history.append(record)
            self._share_best()
            if self.dist.is_main:
                self._checkpoint(improved)
            epoch_times.append(time.monotonic() - epoch_start)
            shown = {k: v for k, v in record.items() if k in ("loss", "val_qubiq", "val_ece")}
            if self.best_score is not None:
                shown["best"] = self.best_score
            total_epochs = (self.epoch + math.ceil(remaining / plan.steps_per_epoch)) if remaining is not None else None
            yield Progress("epoch", self.epoch, total_epochs, f"epoch {self.epoch}: best epoch {self.best_epoch}", shown)
            if self.stopped:
                break
            patience = max(5, math.ceil(0.25 * (total_epochs or self.epoch)))
            if self.dist.agree(self.options.early_stop and self.val_data and stale >= patience and self.progress >= 0.5):
                self.stopped = "plateau"
                self.stop_reason = (f"stopped early: the validation QUBIQ score has not improved for {stale} epochs "
                                    f"(best {self.best_score:.4f} at epoch {self.best_epoch})")
                break
        yield Progress("plan", 0, None, self.stop_reason)
        if not self.dist.is_main:
            return
        final = read_config(self.out_dir)  # the best epoch's config; its summary now describes the whole run
        final.training.update(epochs_done=self.epoch, stopped=self.stopped, stop_reason=self.stop_reason,
                              history=self.history, steps=self.steps_done, processes=self.dist.world_size,
                              seconds=round(self.previous_seconds + time.monotonic() - self.started, 1))
        if not self.val_data:
            final.calibration = {"state": "not calibrated", "reason": "no validation cases"}
        elif not self.options.calibrate:
            final.calibration = {"state": "not calibrated", "reason": "calibration switched off"}
        save_config(self.out_dir, final)

    # -- step 5 ---------------------------------------------------------------------------------------
    def calibrate(self) -> Generator[Progress, None, None]:
        """Fit the temperature of the kept model on the validation cases and store it (when enabled)."""
        if not (self.options.calibrate and self.val_data):
            return

        yield Progress("calibration", 0, 1, "fitting the temperature on the validation cases")
        model = load_model(self.out_dir)
        logits = validation_logits(model.network, model.config, self.val_data, self.device_choice.device)
        z = np.concatenate([lg.ravel() for lg in logits])
        y = np.concatenate([c.masks.mean(axis=0, dtype=np.float32).ravel() for c in self.val_data])
        report = calibration_report(z, y, fit_temperature(z, y))
        t = report["temperature"]
        on_bound = t <= T_MIN * T_BOUND_MARGIN or t >= T_MAX / T_BOUND_MARGIN
        if on_bound:
            _warn(f"the fitted temperature {t:.3g} is at its bound [{T_MIN}, {T_MAX}]: the validation cases do not "
                  "constrain it (too few, or a model that has not learned them); probabilities may be "
                  "miscalibrated", self.warnings)
        model.config.temperature = t
        model.config.calibration = {**report, "state": "calibrated", "on_bound": on_bound,
                                    "fitted_on": [c.name for c in self.val_data]}
        model.config.training["warnings"] = self.warnings
        save_model(self.out_dir, model.network, model.config)
        self.calibration = report
        yield Progress("calibration", 1, 1, f"temperature {t:.3f}",
                       {"ece_before": report["ece_before"], "ece_after": report["ece_after"]})

    def run(self) -> Generator[Progress, None, TrainResult]:
        """All steps in order; returns the :class:`TrainResult`."""
        try:
            yield from self.prepare()
            yield from self.plan()
            yield from self.build()
            yield from self.fit()
        except BaseException:  # an error or a cancel: leave the group without waiting for the other ranks
            self.dist.stop(wait=False)
            raise
        self.dist.stop()  # the ranks part here; rank 0 alone calibrates and writes the final model
        if self.dist.is_main:
            yield from self.calibrate()
        return TrainResult(
            model_dir=self.out_dir, epochs_done=self.epoch, best_epoch=self.best_epoch, best_score=self.best_score,
            stopped=self.stopped, seconds=time.monotonic() - self.started, calibration=self.calibration,
            warnings=self.warnings, plan=self.plan_.to_dict(), stop_reason=self.stop_reason, steps=self.steps_done,
        )


def _differs(requested, stored) -> bool:
    if isinstance(requested, (list, tuple)) or isinstance(stored, (list, tuple)):
        return stored is None or list(np.atleast_1d(requested)) != list(np.atleast_1d(stored))
    return requested != stored


def _one_writer_per_folder(train_fn):
    """Run the training generator holding the output folder's lock (two runs never interleave checkpoints).

    Under ``torchrun`` rank 0 alone writes the folder, so it alone takes the lock (a second run into the
    same folder is refused on its rank 0, and ``torchrun`` stops its other ranks).
    """
    import functools

    @functools.wraps(train_fn)
    def locked(dataset, out_dir, *args, **kwargs):
        if not Distributed.from_environment().is_main:
            return (yield from train_fn(dataset, out_dir, *args, **kwargs))
        with folder_lock(out_dir, "softseg train"):
            return (yield from train_fn(dataset, out_dir, *args, **kwargs))

    return locked


@_one_writer_per_folder
def train(
    dataset,
    out_dir: str | os.PathLike,
    options: TrainOptions | None = None,
    *,
    val_dataset=None,
    resume: bool = False,
    overwrite: bool = False,
    **option_values,
) -> Generator[Progress, None, TrainResult]:
    """Train a model on a multi-rater dataset folder; a generator yielding progress, returning a :class:`TrainResult`.

    Args:
        dataset: Dataset folder (QUBIQ layout: its ``Training/`` cases are used when present; ``Validation/``
            is left alone for your held-out evaluation unless given as ``val_dataset``), a case-list folder,
            or a :class:`~napari_softseg.io.case.Dataset`. ``None`` with ``resume``: the stored one.
        out_dir: Model folder to write.
        options: Settings; or give them as keywords (``max_minutes=5``); default :class:`TrainOptions`.
        val_dataset: Validation cases from another folder instead of ``options.val_fraction`` of the
            training cases.
        resume: Continue the run saved in ``out_dir``.
        overwrite: Start over in an ``out_dir`` that already holds a model.

    Yields:
        ``Progress("device")``, ``("setup")`` while loading, ``("plan")`` lines (fingerprint, plan, timing,
        why it stopped), ``("batch")`` per step with the running ``loss``, ``("epoch")`` per epoch with
        ``loss``, ``val_qubiq``, ``val_ece``, ``best``; ``("calibration")`` when calibrating.

    Returns:
        The result; the model is in ``out_dir``.

    Raises:
        SoftsegError: Empty training set, no validation cases, options that conflict, a model already in
            ``out_dir``, nothing to resume, a device that is missing, or a write that failed (the last good
            checkpoint is kept and the message says how to resume).
    """
    if options is not None and option_values:
        raise TypeError("give either options or keyword options, not both")
    requested = options.to_dict() if options is not None else dict(option_values)
    if not resume:
        options = options or TrainOptions(**option_values)
    run = TrainingRun(out_dir, options, dataset=dataset, val_dataset=val_dataset, resume=resume,
                      overwrite=overwrite, requested=requested)
    return (yield from run.run())


@_one_writer_per_folder
def train_cases(
    cases: Sequence[TrainingCase],
    out_dir: str | os.PathLike,
    options: TrainOptions | None = None,
    *,
    val_cases: Sequence[TrainingCase] | None = None,
    overwrite: bool = False,
    **option_values,
) -> Generator[Progress, None, TrainResult]:
    """Train on in-memory cases (the viewer's layers): no files but the model folder are written.

    Without ``val_cases``, ``options.val_fraction`` of the cases is held out; a single volume is cut
    into a training slab and a validation slab (see :func:`split_by_slices`), so validation and
    calibration still happen.
    """
    if options is not None and option_values:
        raise TypeError("give either options or keyword options, not both")
    options = options or TrainOptions(**option_values)
    run = TrainingRun(out_dir, options, cases=cases, val_cases=val_cases, overwrite=overwrite)
    return (yield from run.run())
