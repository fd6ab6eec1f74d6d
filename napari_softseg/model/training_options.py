"""The settings of a training run (:class:`TrainOptions`) and which of them a resumed run may change.

Every field is also a ``softseg train`` option. Fields left at ``None`` are chosen by the plan
(:mod:`napari_softseg.model.planning`); a value given overrides that part of the plan. A resumed run keeps
the options that define the model (:data:`IDENTITY_OPTIONS`) and may change only
:data:`ADJUSTABLE_OPTIONS` (:func:`resumed_options`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from napari_softseg.analysis.softlabels import ALIASES, METHODS
from napari_softseg.errors import SoftsegError
from napari_softseg.model.losses import LOSSES
from napari_softseg.model.normalization import Normalization

#: Options that define what the model is; a resumed run must keep them.
IDENTITY_OPTIONS = (
    "task", "softlabel", "sigma_mm", "loss", "base_channels", "depth", "norm", "context_slices", "slice_axis",
    "normalization", "ct_window", "dim", "patch_size", "target_spacing",
)
#: Options a resumed run may change.
ADJUSTABLE_OPTIONS = ("epochs", "max_minutes", "device", "calibrate", "batch_size", "early_stop")
#: Planner-chosen options (``None`` in :class:`TrainOptions` means "let the plan decide").
PLANNED_OPTIONS = (
    "dim", "slice_axis", "context_slices", "patch_size", "batch_size", "base_channels", "depth", "norm",
    "normalization", "ct_window", "steps_per_epoch", "learning_rate", "max_minutes", "epochs", "target_spacing",
)


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
        target_spacing: Voxel size in mm to train and predict at (one value for every resampled axis, or
            three); ``"native"``: no resampling; ``None``: planned (nnU-Net's median rule).
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
    target_spacing: float | list[float] | str | None = None

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
        if isinstance(self.target_spacing, (list, tuple)):
            if len(self.target_spacing) == 1:
                self.target_spacing = self.target_spacing[0]
            else:
                try:
                    self.target_spacing = [float(v) for v in self.target_spacing]
                except (TypeError, ValueError):
                    raise SoftsegError(f"--target-spacing must be 'native' or 1 or 3 sizes in mm, got "
                                       f"{self.target_spacing!r}") from None
        if isinstance(self.target_spacing, str) and self.target_spacing.lower() != "native":
            try:
                self.target_spacing = float(self.target_spacing)
            except ValueError:
                raise SoftsegError(f"--target-spacing must be 'native' or a voxel size in mm, got "
                                   f"{self.target_spacing!r}") from None
        values = self.target_spacing if isinstance(self.target_spacing, list) else [self.target_spacing]
        if not isinstance(self.target_spacing, str) and self.target_spacing is not None and (
                len(values) not in (1, 3) or not all(v > 0 and v < float("inf") for v in values)):
            raise SoftsegError(f"--target-spacing must be 'native' or 1 or 3 positive sizes in mm, got "
                               f"{self.target_spacing!r}")

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


def resumed_options(stored: dict, requested: dict, out_dir: Path, state_file: Path) -> TrainOptions:
    """The options of a resumed run: the stored ones, with the adjustable ones the user gave.

    Args:
        stored: The options saved in the training state (``TrainOptions.to_dict()`` form).
        requested: The options the user gave this time (unset ones absent or ``None``).
        out_dir: The model folder (named in the error about changed settings).
        state_file: The training state file (named in the error about invalid stored options).

    Raises:
        SoftsegError: Stored options that are invalid, or a requested option of :data:`IDENTITY_OPTIONS`
            that differs from the stored one.
    """
    try:
        options = TrainOptions.from_dict(stored)
    except SoftsegError as exc:
        raise SoftsegError(f"stored training options are invalid ({exc.message})", state_file) from None
    except (TypeError, ValueError, KeyError) as exc:
        raise SoftsegError(f"stored training options are invalid ({exc})", state_file) from None
    changed = [k for k in IDENTITY_OPTIONS if requested.get(k) is not None and _differs(requested[k], getattr(options, k))]
    if changed:
        details = ", ".join(f"{k}: {getattr(options, k)!r} -> {requested[k]!r}" for k in changed)
        raise SoftsegError(f"cannot resume with different settings ({details}); use a new output folder", out_dir)
    return TrainOptions.from_dict(
        {**options.to_dict(), **{k: v for k, v in requested.items() if k in ADJUSTABLE_OPTIONS}})


def _differs(requested, stored) -> bool:
    if isinstance(requested, (list, tuple)) or isinstance(stored, (list, tuple)):
        return stored is None or list(np.atleast_1d(requested)) != list(np.atleast_1d(stored))
    return requested != stored
