"""Training a 2D U-Net on soft labels: a generator that yields progress and returns the model folder.

The recipe (Silva & Oliveira, QUBIQ 2021): for each case, the raters' masks become one soft label
(:func:`napari_softseg.analysis.softlabels.make_soft_label`, the mean by default); the network learns it with a
binary cross-entropy against the soft target (soft Dice or both as options). ``softlabel="majority"``
trains on hard majority-vote labels instead, for comparison.

What the loop does, epoch by epoch:

- draws the training slices (every slice with any rater's foreground, plus a share of empty slices),
  crops/pads them to one patch size, augments them (:mod:`napari_softseg.model.augmentation`) and takes Adam
  steps (mixed precision on CUDA);
- predicts the validation cases whole and scores them with the QUBIQ score and ECE;
- writes ``training_state.safetensors`` (weights, optimiser, random states: everything ``resume`` needs)
  and, when validation improved, the model itself (``model.safetensors`` + ``config.json``) — all
  atomically, so an interruption or a full disk leaves the last good checkpoint.

The time budget (``max_minutes``) ends the run cleanly after the current batch: the partial epoch is
validated and checkpointed like a full one, and the best model is kept. With ``calibrate=True`` a
temperature is fitted on the validation cases at the end (:mod:`napari_softseg.model.calibration`).

Consumers stop early by closing the generator (the viewer's cancel button) or with Ctrl-C (the CLI);
both leave the last good checkpoint, and ``resume=True`` continues from it. On the CPU the run is
deterministic for a seed.

Example:
    >>> from napari_softseg.progress import drive
    >>> result = drive(train("QUBIQ/brain-growth", "models/bg", epochs=20, max_minutes=5))  # doctest: +SKIP
    >>> result.best_score  # doctest: +SKIP
    0.87
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from napari_softseg import __version__
from napari_softseg.errors import SoftsegError
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
from napari_softseg.model.normalization import DEFAULT_CT_WINDOW, Normalization
from napari_softseg.progress import Progress, drive

STATE_FILE = "training_state.safetensors"
LOSSES = ("bce", "dice", "bce+dice")
MAX_AUTO_PATCH = 256
#: Options that define what the model is; a resumed run must keep them.
IDENTITY_OPTIONS = (
    "task", "softlabel", "sigma_mm", "loss", "base_channels", "depth", "norm", "context_slices", "slice_axis",
    "normalization", "ct_window",
)


@dataclass
class TrainOptions:
    """Settings of a training run (every field is also a ``softseg train`` option).

    Attributes:
        task: QUBIQ task number whose rater masks are learned.
        softlabel: Soft-label method (see :data:`napari_softseg.analysis.softlabels.METHODS`); ``"majority"`` trains
            on hard labels.
        sigma_mm: Gaussian sigma for ``"smoothed"`` soft labels.
        loss: ``"bce"`` (default), ``"dice"`` (soft Dice) or ``"bce+dice"``.
        epochs: Number of epochs (passes over the drawn slices).
        max_minutes: Time budget; stops cleanly after the current batch when it runs out.
        batch_size: Slices per step.
        learning_rate: Adam learning rate (decays polynomially over ``epochs``).
        weight_decay: AdamW weight decay.
        patch_size: Training patch side; ``None``: the largest slice side, rounded up to a multiple of
            ``2 ** depth``, at most 256 (larger slices are cropped at random, half the time around
            foreground).
        base_channels: U-Net width at full resolution.
        depth: U-Net downsamplings.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        context_slices: 2.5D context (neighbouring slices on each side as channels).
        slice_axis: Spatial axis cut into 2D slices (2 = Z, the last one).
        normalization: ``"zscore"`` (MR) or ``"ct"``.
        ct_window: ``(low, high)`` for ``"ct"``.
        val_fraction: Share of the cases held out for validation when no validation dataset is given
            (at least one case when > 0; 0 trains without validation and keeps the last epoch).
        seed: Seed of every random choice (initialisation, split, sampling, augmentation).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
        calibrate: Fit a temperature on the validation cases after training.
        augment: Use data augmentation.
        empty_slice_fraction: Empty slices drawn per epoch, relative to the number of foreground slices.
        weights_dtype: Storage of the saved weights, ``"float16"`` (small) or ``"float32"``.
    """

    task: int = 1
    softlabel: str = "mean"
    sigma_mm: float = 1.0
    loss: str = "bce"
    epochs: int = 30
    max_minutes: float | None = None
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patch_size: int | None = None
    base_channels: int = 16
    depth: int = 4
    norm: str = "instance"
    context_slices: int = 0
    slice_axis: int = 2
    normalization: str = "zscore"
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    calibrate: bool = False
    augment: bool = True
    empty_slice_fraction: float = 0.25
    weights_dtype: str = "float16"

    def __post_init__(self):
        from napari_softseg.analysis.softlabels import ALIASES, METHODS

        self.softlabel = ALIASES.get(self.softlabel, self.softlabel)
        if self.softlabel not in METHODS:
            raise SoftsegError(f"unknown soft-label method {self.softlabel!r}; choose from {', '.join(METHODS)}")
        if self.loss not in LOSSES:
            raise SoftsegError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise SoftsegError("epochs and batch size must be at least 1")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise SoftsegError(f"--max-minutes must be positive, got {self.max_minutes}")
        if not 0 <= self.val_fraction < 1:
            raise SoftsegError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.patch_size is not None and self.patch_size < 2**self.depth:
            raise SoftsegError(f"--patch-size must be at least 2**depth = {2**self.depth}")
        self.ct_window = tuple(float(v) for v in self.ct_window)
        Normalization(self.normalization, self.ct_window)  # validates

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
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
        stopped: ``"completed"`` or ``"time budget"``.
        seconds: Wall time of this run.
        calibration: Temperature and ECE before/after, when calibrated.
        warnings: Notable facts (single rater, no validation, ...).
    """

    model_dir: Path
    epochs_done: int
    best_epoch: int
    best_score: float | None
    stopped: str
    seconds: float
    calibration: dict | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Case:
    name: str
    volume: np.ndarray  # normalised image, slicing axis moved to 1: (C, S, H, W)
    target: np.ndarray  # soft target (S, H, W)
    image: np.ndarray  # raw image (C, X, Y, Z), for validation
    masks: np.ndarray  # (R, X, Y, Z)


def read_training_state(out_dir: str | os.PathLike) -> dict:
    """The JSON part of ``OUT/training_state.safetensors`` (options, epoch, best, history, ...).

    Raises:
        SoftsegError: No state file (nothing to resume) or an unreadable one.
    """
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise SoftsegError(f"nothing to resume: no {STATE_FILE} (train without --resume first)", Path(out_dir))
    from safetensors import safe_open
    import json

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


def _training_cases(dataset, options: TrainOptions, val_dataset) -> tuple[list, list, list[str]]:
    """Split discovered cases into training and validation lists."""
    from napari_softseg.io.dataset import Dataset, discover

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
    n_val = min(len(usable) - 1, max(1, round(options.val_fraction * len(usable))))
    order = np.random.default_rng(options.seed).permutation(len(usable))
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(usable) if i not in val_idx], [c for i, c in enumerate(usable) if i in val_idx], notes


def _load(case, options: TrainOptions, norm: Normalization, collected: list[str]) -> _Case:
    from napari_softseg.io.dataset import load_case
    from napari_softseg.analysis.softlabels import make_soft_label

    data = load_case(case, task=options.task)
    for message in data.warnings:
        if "one rater" in message:
            message = f"{data.name}: only one rater, so its labels are hard (no soft information to learn)"
        else:
            message = f"{data.name}: {message}"
        _warn(message, collected)
    soft = make_soft_label(data.masks, options.softlabel, spacing=data.spacing, sigma_mm=options.sigma_mm).data
    axis = options.slice_axis
    return _Case(
        name=data.name,
        volume=np.moveaxis(norm.apply(data.image), 1 + axis, 1),
        target=np.ascontiguousarray(np.moveaxis(soft, axis, 0), dtype=np.float32),
        image=data.image,
        masks=data.masks,
    )


def _crop_or_pad(image: np.ndarray, target: np.ndarray, size: tuple[int, int], rng) -> tuple[np.ndarray, np.ndarray]:
    """Random crop (half the time around a foreground pixel) or edge-pad to ``size``."""
    h, w = target.shape
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if ph or pw:
        image = np.pad(image, [(0, 0), (0, ph), (0, pw)], mode="edge")
        target = np.pad(target, [(0, ph), (0, pw)])
        h, w = target.shape
    if (h, w) == size:
        return image, target
    if rng.random() < 0.5 and target.max() > 0:
        ys, xs = np.nonzero(target > 0)
        k = rng.integers(len(ys))
        y0, x0 = ys[k] - size[0] // 2, xs[k] - size[1] // 2
    else:
        y0, x0 = rng.integers(0, h - size[0] + 1), rng.integers(0, w - size[1] + 1)
    y0, x0 = int(np.clip(y0, 0, h - size[0])), int(np.clip(x0, 0, w - size[1]))
    return image[:, y0 : y0 + size[0], x0 : x0 + size[1]], target[y0 : y0 + size[0], x0 : x0 + size[1]]


def _draw_slices(cases: list[_Case], options: TrainOptions, rng) -> list[tuple[int, int]]:
    """This epoch's (case, slice) pairs: all foreground slices plus a share of empty ones, shuffled."""
    foreground, empty = [], []
    for ci, case in enumerate(cases):
        has = case.target.reshape(case.target.shape[0], -1).max(axis=1) > 0
        foreground += [(ci, s) for s in np.flatnonzero(has)]
        empty += [(ci, s) for s in np.flatnonzero(~has)]
    n_empty = min(len(empty), math.ceil(options.empty_slice_fraction * len(foreground)) if foreground else len(empty))
    chosen = foreground + [empty[i] for i in rng.choice(len(empty), size=n_empty, replace=False)] if empty else foreground
    return [chosen[i] for i in rng.permutation(len(chosen))]


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


def _validate(network, config: ModelConfig, cases: list[_Case], device: str) -> dict:
    """Mean QUBIQ score and ECE (vs the mean of the raters) over the validation cases."""
    from napari_softseg.model.calibration import sigmoid
    from napari_softseg.model.inference import predict_logits
    from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score

    scores, eces = [], []
    for case in cases:
        logits = drive(predict_logits(network, config, case.image, device=device))
        prob = sigmoid(logits)
        scores.append(qubiq_score(prob, case.masks)[0])
        eces.append(expected_calibration_error(prob, case.masks.mean(axis=0)))
    return {"qubiq_score": float(np.mean(scores)), "ece": float(np.mean(eces)),
            "per_case": {c.name: float(s) for c, s in zip(cases, scores)}}


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


def _one_writer_per_folder(train_fn):
    """Run the training generator holding the output folder's lock (two runs never interleave checkpoints)."""
    import functools

    from napari_softseg.io.files import folder_lock

    @functools.wraps(train_fn)
    def locked(dataset, out_dir, *args, **kwargs):
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
    """Train a model on a multi-rater dataset; a generator yielding progress, returning a :class:`TrainResult`.

    Args:
        dataset: Dataset folder (QUBIQ layout: its ``Training/`` cases are used when present), a case-list
            folder, or a :class:`~napari_softseg.io.dataset.Dataset`.
        out_dir: Model folder to write (created). Holds ``model.safetensors`` + ``config.json`` (best
            epoch) and ``training_state.safetensors`` (for ``resume``).
        options: Settings; or give them as keywords (``epochs=5``); default :class:`TrainOptions`.
        val_dataset: Validation cases from another folder (e.g. QUBIQ ``Validation/``) instead of
            ``options.val_fraction`` of the training cases.
        resume: Continue the run saved in ``out_dir``. Its options are used; those given here may only
            change ``epochs``, ``max_minutes``, ``device``, ``calibrate`` and ``batch_size``.
        overwrite: Start over in an ``out_dir`` that already holds a model.

    Yields:
        ``Progress("setup", ...)`` while loading, ``Progress("batch", ...)`` per step with the running
        ``loss``, ``Progress("epoch", ...)`` per epoch with ``loss``, ``val_qubiq``, ``val_ece``,
        ``best``; ``Progress("calibration", ...)`` when calibrating.

    Returns:
        The result; the model is in ``out_dir``.

    Raises:
        SoftsegError: Empty training set, no validation cases, an unknown option, a model already in
            ``out_dir``, nothing to resume, a device that is missing, or a write that failed (the last good
            checkpoint is kept and the message says how to resume).
    """
    import torch

    from napari_softseg.model.device import resolve_device

    started = time.monotonic()
    out_dir = Path(out_dir)
    if options is not None and option_values:
        raise TypeError("give either options or keyword options, not both")
    _check_out_dir(out_dir, resume, overwrite)
    state_meta: dict | None = None
    if resume:
        state_meta = read_training_state(out_dir)
        try:
            stored = TrainOptions.from_dict(state_meta["options"])
        except SoftsegError as exc:
            raise SoftsegError(f"stored training options are invalid ({exc.message})", out_dir / STATE_FILE) from None
        except (TypeError, ValueError, KeyError) as exc:
            raise SoftsegError(f"stored training options are invalid ({exc})", out_dir / STATE_FILE) from None
        requested = options.to_dict() if options is not None else option_values
        changed = [k for k in IDENTITY_OPTIONS if k in requested and requested[k] != getattr(stored, k)
                   and not (k == "ct_window" and list(requested[k]) == list(stored.ct_window))]
        if changed:
            details = ", ".join(f"{k}: {getattr(stored, k)!r} -> {requested[k]!r}" for k in changed)
            raise SoftsegError(f"cannot resume with different settings ({details}); use a new output folder", out_dir)
        adjustable = ("epochs", "max_minutes", "device", "calibrate", "batch_size")
        options = TrainOptions.from_dict({**stored.to_dict(), **{k: v for k, v in requested.items() if k in adjustable}})
        if dataset is None:
            dataset = state_meta.get("dataset")
        if val_dataset is None and state_meta.get("val_dataset"):
            val_dataset = state_meta["val_dataset"]
    elif options is None:
        options = TrainOptions(**option_values)

    choice = resolve_device(options.device)
    device = choice.device
    yield Progress("device", 0, None, f"device: {device} ({choice.reason})", {"device": device})
    collected: list[str] = []
    train_cases, val_cases, notes = _training_cases(dataset, options, val_dataset)
    collected += notes
    if not val_cases:
        _warn("no validation cases: the last epoch is kept and no validation score is reported", collected)
        if options.calibrate:
            raise SoftsegError("--calibrate needs validation cases (use --val-fraction > 0 or --val DATASET2)")
    norm = Normalization(options.normalization, options.ct_window)
    loaded: list[_Case] = []
    all_cases = train_cases + val_cases
    for number, case in enumerate(all_cases, start=1):
        loaded.append(_load(case, options, norm, collected))
        yield Progress("setup", number, len(all_cases), f"loaded {case.name}")
    train_data, val_data = loaded[: len(train_cases)], loaded[len(train_cases) :]
    channels = {c.volume.shape[0] for c in loaded}
    if len(channels) > 1:
        raise SoftsegError(f"cases have different channel counts ({sorted(channels)}); a model needs one", dataset)

    config = ModelConfig(
        architecture={"base_channels": options.base_channels, "depth": options.depth, "norm": options.norm},
        task=options.task,
        image_channels=channels.pop(),
        context_slices=options.context_slices,
        slice_axis=options.slice_axis,
        normalization=norm.to_dict(),
        softlabel={"method": options.softlabel, "sigma_mm": options.sigma_mm if options.softlabel == "smoothed" else None},
        loss=options.loss,
        weights_dtype=options.weights_dtype,
    )
    multiple = 2**options.depth
    if options.patch_size:
        patch = (options.patch_size, options.patch_size)
    else:
        longest = [max(c.volume.shape[2 + i] for c in train_data) for i in range(2)]
        patch = tuple(min(MAX_AUTO_PATCH, -(-n // multiple) * multiple) for n in longest)
    patch = tuple(max(multiple, (p // multiple) * multiple) for p in patch)

    torch.manual_seed(options.seed)
    network = new_network(config).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    rng = np.random.default_rng(options.seed)
    aug_gen = torch.Generator().manual_seed(options.seed)
    scaler = torch.amp.GradScaler("cuda", enabled=choice.is_cuda)

    history: list[dict] = []
    epoch, best_epoch, best_score = 0, 0, None
    previous_seconds = 0.0
    if resume:
        tensors, meta = load_tensors(out_dir / STATE_FILE)
        try:
            network.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
            network.to(device)
            _restore_optimizer(optimizer, tensors, meta["optimizer"])
            aug_gen.set_state(tensors["rng.augment"])
            rng.bit_generator.state = meta["numpy_rng"]
            epoch, best_epoch, best_score = meta["epoch"], meta["best_epoch"], meta.get("best_score")
            history, previous_seconds = meta["history"], float(meta.get("seconds", 0.0))
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise SoftsegError(f"the checkpoint does not fit this run ({type(exc).__name__}: {str(exc)[:160]}); "
                               "train again into a new folder", out_dir / STATE_FILE) from None
        yield Progress("device", 0, None, f"resuming after epoch {epoch} (best so far: epoch {best_epoch})")

    from napari_softseg.model.augmentation import AugmentationSettings, augment_batch
    from napari_softseg.model.inference import slice_stack

    settings = AugmentationSettings()
    deadline = started + 60 * options.max_minutes if options.max_minutes else None
    stopped = "completed"
    summary = {
        "dataset": str(getattr(dataset, "path", dataset)),
        "val_dataset": None if val_dataset is None else str(getattr(val_dataset, "path", val_dataset)),
        "train_cases": [c.name for c in train_data],
        "val_cases": [c.name for c in val_data],
        "options": options.to_dict(),
        "patch_size": list(patch),
        "augmentation": settings.to_dict() if options.augment else None,
        "software": f"napari-softseg {__version__} / torch {torch.__version__}",
    }

    def checkpoint(improved: bool) -> None:
        seconds = previous_seconds + time.monotonic() - started
        config.training = {**summary, "epochs_done": epoch, "best_epoch": best_epoch, "device": device,
                           "stopped": "in progress", "seconds": round(seconds, 1), "warnings": collected,
                           "history": history}
        try:
            if improved or not val_data:
                save_model(out_dir, network, config)
            opt_tensors, opt_meta = _optimizer_tensors(optimizer)
            tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
            tensors.update(opt_tensors)
            tensors["rng.augment"] = aug_gen.get_state()
            meta = {"options": options.to_dict(), "epoch": epoch, "best_epoch": best_epoch, "best_score": best_score,
                    "history": history, "numpy_rng": rng.bit_generator.state, "seconds": seconds,
                    "dataset": summary["dataset"], "val_dataset": summary["val_dataset"]}
            meta["optimizer"] = opt_meta
            save_tensors(out_dir / STATE_FILE, tensors, meta)
        except (OSError, SoftsegError) as exc:
            reason = exc.message if isinstance(exc, SoftsegError) else (exc.strerror or str(exc))
            kept = f"the last good checkpoint (epoch {epoch - 1}) is kept" if epoch > 1 else "no checkpoint was kept"
            raise SoftsegError(
                f"could not write the checkpoint of epoch {epoch} ({reason}); {kept}; "
                "free some space and continue with --resume",
                out_dir,
            ) from None

    while epoch < options.epochs and stopped == "completed":
        epoch += 1
        network.train()
        for group in optimizer.param_groups:
            group["lr"] = options.learning_rate * (1 - (epoch - 1) / options.epochs) ** 0.9
        order = _draw_slices(train_data, options, rng)
        n_batches = max(1, math.ceil(len(order) / options.batch_size))
        running = 0.0
        for b in range(n_batches):
            chunk = order[b * options.batch_size : (b + 1) * options.batch_size]
            images, targets = [], []
            for ci, s in chunk:
                case = train_data[ci]
                image, target = _crop_or_pad(slice_stack(case.volume, [s], options.context_slices)[0],
                                             case.target[s], patch, rng)
                images.append(image)
                targets.append(target)
            x = torch.from_numpy(np.stack(images)).to(device)
            y = torch.from_numpy(np.stack(targets)[:, None]).to(device)
            if options.augment:
                x, y = augment_batch(x, y, aug_gen, settings)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=choice.is_cuda):
                logits = network(x)
            loss = _loss(logits.float(), y, options.loss)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += (float(loss.detach()) - running) / (b + 1)
            yield Progress("batch", b + 1, n_batches, f"epoch {epoch}", {"loss": running})
            if deadline is not None and time.monotonic() > deadline:
                stopped = "time budget"
                break

        record = {"epoch": epoch, "loss": running, "batches": b + 1}
        improved = False
        if val_data:
            metrics = _validate(network, config, val_data, device)
            record.update(val_qubiq=metrics["qubiq_score"], val_ece=metrics["ece"])
            if best_score is None or metrics["qubiq_score"] > best_score:
                best_epoch, best_score, improved = epoch, metrics["qubiq_score"], True
                config.validation = metrics
        else:
            best_epoch = epoch
        history.append(record)
        checkpoint(improved)
        shown = {k: v for k, v in record.items() if k in ("loss", "val_qubiq", "val_ece")}
        if best_score is not None:
            shown["best"] = best_score
        yield Progress("epoch", epoch, options.epochs, f"epoch {epoch}: best epoch {best_epoch}", shown)

    final = read_config(out_dir)  # the best epoch's config; its summary now describes the whole run
    final.training.update(epochs_done=epoch, stopped=stopped, history=history,
                          seconds=round(previous_seconds + time.monotonic() - started, 1))
    save_config(out_dir, final)
    calibration = None
    if options.calibrate and val_data:
        yield Progress("calibration", 0, 1, "fitting the temperature on the validation cases")
        calibration = _calibrate(out_dir, val_data, device)
        yield Progress("calibration", 1, 1, f"temperature {calibration['temperature']:.3f}",
                       {"ece_before": calibration["ece_before"], "ece_after": calibration["ece_after"]})
    return TrainResult(
        model_dir=out_dir, epochs_done=epoch, best_epoch=best_epoch, best_score=best_score, stopped=stopped,
        seconds=time.monotonic() - started, calibration=calibration, warnings=collected,
    )


def _calibrate(out_dir: Path, val_data: list[_Case], device: str) -> dict:
    """Fit the temperature of the saved (best) model on the validation cases and store it in its config."""
    from napari_softseg.model.calibration import calibration_report, fit_temperature
    from napari_softseg.model.inference import predict_logits

    model = load_model(out_dir)
    logits, targets = [], []
    for case in val_data:
        logits.append(drive(predict_logits(model.network, model.config, case.image, device=device)).ravel())
        targets.append(case.masks.mean(axis=0, dtype=np.float32).ravel())
    z, y = np.concatenate(logits), np.concatenate(targets)
    report = calibration_report(z, y, fit_temperature(z, y))
    model.config.temperature = report["temperature"]
    model.config.calibration = {**report, "fitted_on": [c.name for c in val_data]}
    save_model(out_dir, model.network, model.config)
    return report
