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

This module is the run loop; its parts live beside it: the options
(:mod:`~napari_softseg.model.training_options`), the cases, split and patch sampling
(:mod:`~napari_softseg.model.training_data`), the losses (:mod:`~napari_softseg.model.losses`), validation
and the temperature fit (:mod:`~napari_softseg.model.validation`), the learning rate, time budget and
stopping rules (:mod:`~napari_softseg.model.budget`), and what is kept on disk
(:mod:`~napari_softseg.model.checkpoint`).

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
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_softseg import SOFTWARE
from napari_softseg.errors import SoftsegError
from napari_softseg.model.augmentation import AugmentationSettings, augment_batch, augment_batch_3d
from napari_softseg.model.background import DEFAULT_MARGIN_MM
from napari_softseg.model.budget import StepBudget, advance, learning_rate, patience, plateau_reason
from napari_softseg.model.checkpoint import (
    STATE_FILE,
    check_out_dir,
    one_writer_per_folder,
    read_training_state,
    record_run_summary,
    restore_checkpoint,
    save_checkpoint,
)
from napari_softseg.model.device import resolve_device
from napari_softseg.model.distributed import Distributed
from napari_softseg.model.fine_tune import InitSource, check_new_folder
from napari_softseg.model.losses import distributed_soft_loss, soft_loss
from napari_softseg.model.model_io import ModelConfig, new_network, save_model
from napari_softseg.model.normalization import Normalization
from napari_softseg.model.planning import Plan, fingerprint, make_plan
from napari_softseg.model.training_data import (
    PreparedCase,
    TrainingCase,
    check_cases,
    load_dataset_cases,
    prepare_case,
    record_warning,
    sample_batch,
    split_by_slices,
    split_memory_cases,
)
from napari_softseg.model.training_options import PLANNED_OPTIONS, TrainOptions, resumed_options
from napari_softseg.model.validation import bound_warning, fit_model_temperature, on_bound, validate
from napari_softseg.progress import Progress

__all__ = [
    "STATE_FILE", "TrainOptions", "TrainResult", "TrainingCase", "TrainingRun", "read_training_state",
    "split_by_slices", "train", "train_cases",
]


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
        before_after: Fine-tuning (``init``): the source and the new model on the validation cases
            (:func:`~napari_softseg.model.fine_tune.before_after`).
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
    before_after: dict | None = None


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
        requested: The options the user gave (checked against the stored ones when resuming).
        init: Fine-tune from this model folder (:mod:`~napari_softseg.model.fine_tune`).
    """

    def __init__(self, out_dir, options: TrainOptions | None = None, *, dataset=None, val_dataset=None,
                 cases: Sequence[TrainingCase] | None = None, val_cases: Sequence[TrainingCase] | None = None,
                 resume: bool = False, overwrite: bool = False, requested: dict | None = None, init=None):
        self.out_dir = Path(out_dir)
        self.init_dir, self.init = init, None
        self.dataset, self.val_dataset = dataset, val_dataset
        self.memory_cases = list(cases) if cases is not None else None
        self.memory_val = list(val_cases) if val_cases is not None else None
        self.resume, self.overwrite = resume, overwrite
        self.options = options or TrainOptions()
        self.requested = requested if requested is not None else {}
        self.warnings: list[str] = []
        self.started = time.monotonic()
        self.state_meta: dict | None = None
        self.train_data: list[PreparedCase] = []
        self.val_data: list[PreparedCase] = []
        self.plan_: Plan | None = None
        self.fingerprint_: object = None
        self.history: list[dict] = []
        self.epoch = self.best_epoch = self.steps_done = 0
        self.best_score: float | None = None
        self.previous_seconds = 0.0
        self.stopped, self.stop_reason = "", ""
        self.calibration: dict | None = None
        self.nothing_to_do = False  # set by fit() when a resumed run had already finished
        # torchrun: a world of one outside it (see distributed_soft_loss and the fit loop's rank-0 decisions)
        self.dist = Distributed.from_environment() if self.memory_cases is None else Distributed()

    # -- step 1 ---------------------------------------------------------------------------------------
    def prepare(self) -> Generator[Progress, None, None]:
        """Device, cases, validation split, soft labels (yields ``"device"`` and ``"setup"`` progress)."""
        check_new_folder(self.init_dir, self.out_dir)
        check_out_dir(self.out_dir, self.resume, self.overwrite)
        if self.resume:
            self.state_meta = read_training_state(self.out_dir)
            if self.state_meta.get("init"):  # a fine-tuning run: its weights are in the checkpoint
                self.init = InitSource.from_record(self.state_meta["init"], self.out_dir / STATE_FILE, self.init_dir)
            self.options = resumed_options(self.state_meta["options"], self.requested, self.out_dir,
                                           self.out_dir / STATE_FILE)
            if self.dataset is None and self.memory_cases is None:
                self.dataset = self.state_meta.get("dataset")
            if self.val_dataset is None and self.state_meta.get("val_dataset"):
                self.val_dataset = self.state_meta["val_dataset"]
        options = self.options
        self.device_choice = resolve_device(options.device)
        if self.dist.enabled:  # each CUDA process takes the GPU of its LOCAL_RANK; gloo on the CPU, nccl on CUDA
            self.device_choice = replace(self.device_choice, device=self.dist.device_for(self.device_choice.device))
            self.dist.start(self.device_choice.device)
        device = self.device_choice.device
        yield Progress("device", 0, None, f"device: {device} ({self.device_choice.reason})", {"device": device})
        if self.init_dir is not None and self.init is None:
            if self.resume:
                raise SoftsegError("this run was not fine-tuned from a model; resume it without --init", self.out_dir)
            self.init = InitSource.open(self.init_dir)
            self.options = options = self.init.resolve_options(options, self.requested, self.device_choice.is_cuda)

        if self.memory_cases is not None:
            train_cases, val_cases, note = split_memory_cases(self.memory_cases, self.memory_val, options)
            if note:
                self.warnings.append(note)
            self.dataset_label = "in-memory cases"
        else:
            if self.dataset is None:
                raise SoftsegError("no dataset to train on")
            self.dataset_label = str(getattr(self.dataset, "path", self.dataset))
            train_cases, val_cases = yield from load_dataset_cases(self.dataset, options, self.val_dataset,
                                                                   self.warnings)
        check_cases(train_cases, val_cases, options, self.warnings, self.dataset)
        if self.init is not None:
            self.init.check_channels(train_cases + val_cases)
        self.raw_train, self.raw_val = train_cases, val_cases

    # -- step 2 ---------------------------------------------------------------------------------------
    def plan(self) -> Generator[Progress, None, None]:
        """Fingerprint the training cases, plan the run (options override), print the plan."""
        o = self.options
        self.fingerprint_ = fingerprint([c.image for c in self.raw_train], [c.masks for c in self.raw_train],
                                        [c.spacing for c in self.raw_train])
        if self.resume and self.state_meta.get("plan"):
            plan = Plan.from_dict(self.state_meta["plan"])
            plan.max_minutes = o.max_minutes if o.max_minutes is not None else (
                None if o.epochs is not None else plan.max_minutes)
            plan.epochs = o.epochs
            if o.batch_size is not None:
                plan.batch_size = o.batch_size
        elif self.init is not None:
            plan, line = self.init.plan(self.fingerprint_, o, self.device_choice)
            yield Progress("plan", 0, None, line)
        else:
            overrides = {k: getattr(o, k) for k in PLANNED_OPTIONS}
            plan = make_plan(self.fingerprint_, cuda=self.device_choice.is_cuda, device=self.device_choice.device,
                             **overrides)
        self.plan_ = plan
        yield Progress("plan", 0, None, self.fingerprint_.summary())
        for line in plan.lines():
            yield Progress("plan", 0, None, line)
        self.norm = Normalization(plan.normalization, tuple(plan.ct_window), plan.normalization_region)
        self.train_data = [prepare_case(c, self.norm, plan, o, foreground=True) for c in self.raw_train]
        self.val_data = [prepare_case(c, self.norm, plan, o, foreground=False) for c in self.raw_val]
        if self.val_data and o.calibrate is None:
            o.calibrate = True

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
            plan={"fingerprint": self.fingerprint_.to_dict(), **plan.to_dict()}, target_spacing=plan.target_spacing,
            # body-region MR: p = 0 far from the body at prediction (model/background.py)
            background_margin_mm=DEFAULT_MARGIN_MM if self.norm.region == "body" else None,
        )
        torch.manual_seed(o.seed)
        device = self.device_choice.device
        self.network = new_network(self.config)
        if self.init is not None and not self.resume:
            self.init.load_weights(self.network, self.config)
        self.network.to(device)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=plan.learning_rate,
                                           weight_decay=o.weight_decay)
        self.rng = np.random.default_rng(o.seed)
        self.aug_gen = torch.Generator().manual_seed(o.seed)
        self.scaler = torch.amp.GradScaler("cuda", enabled=plan.amp and self.device_choice.is_cuda)
        self.total_steps = (plan.epochs or 0) * plan.steps_per_epoch or None
        self.progress = 0.0
        if self.resume:
            yield from self._resume()
        # the module the steps run (DistributedDataParallel under torchrun; it starts from rank 0's weights)
        self.trainer = self.dist.wrap(self.network)
        if self.dist.enabled:
            yield Progress("plan", 0, None, f"distributed: {self.dist.world_size} processes ({self.dist.backend}); "
                           f"each step's global batch of {plan.batch_size} patches is split between them, rank 0 "
                           "validates, checkpoints and calibrates")
        n_params = sum(p.numel() for p in self.network.parameters())
        yield Progress("plan", 0, None, f"network: {n_params / 1e6:.2f} M parameters")

    def _resume(self) -> Generator[Progress, None, None]:
        """Put the network, optimiser, generators and schedule back where the checkpoint left them."""
        plan = self.plan_
        point = restore_checkpoint(self.out_dir, network=self.network, optimizer=self.optimizer,
                                   aug_gen=self.aug_gen, rng=self.rng, device=self.device_choice.device)
        self.epoch, self.best_epoch, self.best_score = point.epoch, point.best_epoch, point.best_score
        self.history, self.previous_seconds = point.history, point.seconds
        self.steps_done, self.progress = point.steps_done, point.progress
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

    # -- step 4 ---------------------------------------------------------------------------------------
    def _learning_rate(self) -> float:
        return learning_rate(self.plan_.learning_rate, self.progress, self.steps_done)

    def _step(self) -> float:
        """One optimizer step on a sampled, augmented batch; returns its loss."""
        import torch

        device = self.device_choice.device
        x, y = sample_batch(self.train_data, self.plan_, self.rng)
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
            loss = distributed_soft_loss(logits.float(), y, self.options.loss, self.dist, rows)
        else:
            loss = soft_loss(logits.float(), y, self.options.loss)
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

    def _validate_epoch(self, record: dict) -> bool:
        """Score this epoch on the validation cases into ``record``; whether it is the best so far."""
        metrics = validate(self.network, self.config, self.val_data, self.device_choice.device,
                           calibrated=bool(self.options.calibrate))
        record.update(val_qubiq=metrics["qubiq_score"], val_ece=metrics["ece"], val_qubiq_raw=metrics["qubiq_raw"])
        if "temperature" in metrics:
            record["val_temperature"] = metrics["temperature"]
        if self.best_score is None or metrics["qubiq_score"] > self.best_score + 1e-4:
            self.best_epoch, self.best_score = self.epoch, metrics["qubiq_score"]
            self.config.validation = {k: v for k, v in metrics.items() if k != "temperature"}
            return True
        return False

    def _checkpoint(self, improved: bool) -> None:
        seconds = self.previous_seconds + time.monotonic() - self.started
        self.config.training = {**self._summary(), "epochs_done": self.epoch, "best_epoch": self.best_epoch,
                                "stopped": "in progress", "seconds": round(seconds, 1), "warnings": self.warnings,
                                "history": self.history, "steps": self.steps_done}
        meta = {"options": self.options.to_dict(), "epoch": self.epoch, "best_epoch": self.best_epoch,
                "best_score": self.best_score, "history": self.history,
                "numpy_rng": self.rng.bit_generator.state, "seconds": seconds,
                "dataset": None if self.memory_cases is not None else self.dataset_label,
                "val_dataset": self._val_dataset_label(), "plan": self.plan_.to_dict(),
                "steps_done": self.steps_done, "progress": self.progress,
                "init": self.init.record if self.init is not None else None}
        save_checkpoint(self.out_dir, self.epoch, network=self.network, optimizer=self.optimizer,
                        aug_gen=self.aug_gen, meta=meta,
                        best_config=self.config if improved or not self.val_data else None)

    def _val_dataset_label(self) -> str | None:
        return None if self.val_dataset is None else str(getattr(self.val_dataset, "path", self.val_dataset))

    def _summary(self) -> dict:
        import torch

        return {
            "dataset": self.dataset_label,
            "val_dataset": self._val_dataset_label(),
            "train_cases": [c.name for c in self.train_data],
            "val_cases": [c.name for c in self.val_data],
            "options": self.options.to_dict(),
            "patch_size": list(self.plan_.patch_size),
            "augmentation": AugmentationSettings().to_dict() if self.options.augment else None,
            "software": f"{SOFTWARE} / torch {torch.__version__}",
            "device": self.device_choice.device,
            "processes": self.dist.world_size,
            "init": self.init.record if self.init is not None else None,
        }

    def fit(self) -> Generator[Progress, None, None]:
        """The epochs: steps, validation, checkpoint; stops on schedule, budget or plateau (and says why)."""
        plan = self.plan_
        budget = StepBudget(plan, self.started)
        if budget.fixed_cap is not None and self.steps_done >= budget.fixed_cap:  # resumed a finished run
            self.nothing_to_do = True
            self.stopped = "epochs done"
            self.stop_reason = (f"this run is already complete ({self.epoch} of {plan.epochs} epochs); nothing to "
                                f"do: pass --epochs N (more than {plan.epochs}) with --resume to train longer")
            yield Progress("plan", 0, None, self.stop_reason)
            return
        stale = 0
        while True:
            self.epoch += 1
            self.network.train()
            running, b = 0.0, 0
            for b in range(plan.steps_per_epoch):
                t0 = time.monotonic()
                loss = self._step()
                self.steps_done += 1
                running += (loss - running) / (b + 1)
                remaining, out_of_time, timing = budget.after_step(time.monotonic() - t0, self.steps_done,
                                                                   self._decided_on_main)
                if timing:
                    yield Progress("plan", 0, None, timing)
                progress_before = self.progress
                self.progress = advance(self.progress, remaining)
                yield Progress("batch", b + 1, plan.steps_per_epoch, f"epoch {self.epoch}", {"loss": running})
                if out_of_time or (remaining is not None and remaining <= 0):
                    self.stopped, self.stop_reason, complete = budget.verdict(out_of_time, progress_before,
                                                                              self.epoch, self.steps_done)
                    if complete:
                        self.progress = 1.0
                    break
            record = {"epoch": self.epoch, "loss": running, "batches": b + 1, "steps": self.steps_done,
                      "lr": self._learning_rate()}
            improved = False
            if self.val_data and self.dist.is_main:  # the other ranks wait for rank 0's decisions below
                v0 = time.monotonic()
                improved = self._validate_epoch(record)
                budget.val_seconds = time.monotonic() - v0
                stale = 0 if improved else stale + 1
            else:
                self.best_epoch = self.epoch
            self.history.append(record)
            self._share_best()
            if self.dist.is_main:
                self._checkpoint(improved)
            budget.first_epoch = False
            shown = {k: v for k, v in record.items() if k in ("loss", "val_qubiq", "val_ece")}
            if self.best_score is not None:
                shown["best"] = self.best_score
            total_epochs = budget.total_epochs(self.epoch, remaining)
            yield Progress("epoch", self.epoch, total_epochs, f"epoch {self.epoch}: best epoch {self.best_epoch}", shown)
            if self.stopped:
                break
            if self.dist.agree(self.options.early_stop and self.val_data and stale >= patience(total_epochs, self.epoch)
                               and self.progress >= 0.5):
                self.stopped, self.stop_reason = "plateau", plateau_reason(stale, self.best_score, self.best_epoch)
                break
        yield Progress("plan", 0, None, self.stop_reason)
        if self.dist.is_main:
            self._record_summary()

    def _record_summary(self) -> None:
        """The kept model's config gets the whole run's summary (and why it is not calibrated, if so)."""
        calibration = None
        if not self.val_data:
            calibration = {"state": "not calibrated", "reason": "no validation cases"}
        elif not self.options.calibrate:
            calibration = {"state": "not calibrated", "reason": "calibration switched off"}
        record_run_summary(self.out_dir, {
            "epochs_done": self.epoch, "stopped": self.stopped, "stop_reason": self.stop_reason,
            "history": self.history, "steps": self.steps_done, "processes": self.dist.world_size,
            "seconds": round(self.previous_seconds + time.monotonic() - self.started, 1)}, calibration)

    # -- step 5 ---------------------------------------------------------------------------------------
    def calibrate(self) -> Generator[Progress, None, None]:
        """Fit the temperature of the kept model on the validation cases and store it (when enabled)."""
        if not (self.options.calibrate and self.val_data):
            return
        yield Progress("calibration", 0, 1, "fitting the temperature on the validation cases")
        model, report = fit_model_temperature(self.out_dir, self.val_data, self.device_choice.device)
        t = report["temperature"]
        bound = on_bound(t)
        if bound:
            record_warning(bound_warning(t), self.warnings)
        model.config.temperature = t
        model.config.calibration = {**report, "state": "calibrated", "on_bound": bound,
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
        before_after = None
        if self.dist.is_main and not self.nothing_to_do:
            yield from self.calibrate()
            if self.init is not None:
                before_after = yield from self.init.finish(self)
        return TrainResult(
            model_dir=self.out_dir, epochs_done=self.epoch, best_epoch=self.best_epoch, best_score=self.best_score,
            stopped=self.stopped, seconds=time.monotonic() - self.started, calibration=self.calibration,
            warnings=self.warnings, plan=self.plan_.to_dict(), stop_reason=self.stop_reason, steps=self.steps_done,
            before_after=before_after,
        )


@one_writer_per_folder
def train(
    dataset,
    out_dir: str | os.PathLike,
    options: TrainOptions | None = None,
    *,
    val_dataset=None,
    resume: bool = False,
    overwrite: bool = False,
    init: str | os.PathLike | None = None,
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
        init: Fine-tune from this model folder (its weights, architecture, normalisation, voxel size and
            patch; a lower learning rate and a shorter budget by default; see
            :mod:`~napari_softseg.model.fine_tune`). Never written: ``out_dir`` must be another folder.

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
                      overwrite=overwrite, requested=requested, init=init)
    return (yield from run.run())


@one_writer_per_folder
def train_cases(
    cases: Sequence[TrainingCase],
    out_dir: str | os.PathLike,
    options: TrainOptions | None = None,
    *,
    val_cases: Sequence[TrainingCase] | None = None,
    overwrite: bool = False,
    init: str | os.PathLike | None = None,
    **option_values,
) -> Generator[Progress, None, TrainResult]:
    """Train on in-memory cases (the viewer's layers): no files but the model folder are written.

    Without ``val_cases``, ``options.val_fraction`` of the cases is held out; a single volume is cut
    into a training slab and a validation slab (see :func:`split_by_slices`), so validation and
    calibration still happen. ``init``: fine-tune from that model folder, as :func:`train`.
    """
    if options is not None and option_values:
        raise TypeError("give either options or keyword options, not both")
    requested = options.to_dict() if options is not None else dict(option_values)
    options = options or TrainOptions(**option_values)
    run = TrainingRun(out_dir, options, cases=cases, val_cases=val_cases, overwrite=overwrite, requested=requested,
                      init=init)
    return (yield from run.run())
