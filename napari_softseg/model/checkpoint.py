"""What a training run keeps on disk: the checkpoint ``resume`` continues from, and one writer per folder.

A model folder being trained holds ``model.safetensors`` + ``config.json`` (the best epoch so far) and
``training_state.safetensors`` (:data:`STATE_FILE`): the last epoch's weights, the optimiser's state and the
random generators' states as tensors, and the options, plan, history and schedule position as JSON in its
metadata (no pickle anywhere). Both are written atomically after every epoch
(:func:`save_checkpoint`), so a run stopped at any point (Ctrl-C, a cancel, a crash, a full disk) leaves the
last good checkpoint, and :func:`restore_checkpoint` puts a new run back where it was.

:func:`check_out_dir` refuses to write over a model unless asked to; :func:`one_writer_per_folder` holds
the folder's lock for the whole run, so two runs never interleave their checkpoints.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from napari_softseg.errors import SoftsegError
from napari_softseg.io.files import folder_lock
from napari_softseg.model.distributed import Distributed
from napari_softseg.model.model_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    load_tensors,
    read_config,
    save_config,
    save_model,
    save_tensors,
)

STATE_FILE = "training_state.safetensors"


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


def check_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an output that is not a folder, a resume with nothing to resume, or a model in the way.

    Raises:
        SoftsegError: ``out_dir`` is a file; ``resume`` without a :data:`STATE_FILE`; a model already there
            without ``resume`` or ``overwrite``.
    """
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


def one_writer_per_folder(train_fn):
    """Run the training generator holding the output folder's lock (two runs never interleave checkpoints).

    Under ``torchrun`` rank 0 alone writes the folder, so it alone takes the lock (a second run into the
    same folder is refused on its rank 0, and ``torchrun`` stops its other ranks).
    """

    @functools.wraps(train_fn)
    def locked(dataset, out_dir, *args, **kwargs):
        if not Distributed.from_environment().is_main:
            return (yield from train_fn(dataset, out_dir, *args, **kwargs))
        with folder_lock(out_dir, "softseg train"):
            return (yield from train_fn(dataset, out_dir, *args, **kwargs))

    return locked


def save_checkpoint(out_dir: Path, epoch: int, *, network, optimizer, aug_gen, meta: dict,
                    best_config: ModelConfig | None = None) -> None:
    """Write the state ``resume`` needs after ``epoch`` (and the model, when this epoch is to be kept).

    Args:
        out_dir: The model folder.
        epoch: The epoch just finished (named in the error).
        network: The network (its weights go to the state, and to the model with ``best_config``).
        optimizer: The optimiser (its state is split into tensors and JSON).
        aug_gen: The augmentation's torch generator (its state is saved).
        meta: The JSON part: options, epoch, best epoch and score, history, numpy generator state, seconds,
            datasets, plan, steps done, schedule progress.
        best_config: The model's config when this epoch's weights become the model (``model.safetensors``
            + ``config.json``); ``None`` keeps the model written earlier.

    Raises:
        SoftsegError: A write failed (a full disk); the message says which checkpoint is kept and to resume.
    """
    try:
        if best_config is not None:
            save_model(out_dir, network, best_config)
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
        tensors.update(opt_tensors)
        tensors["rng.augment"] = aug_gen.get_state()
        save_tensors(out_dir / STATE_FILE, tensors, {**meta, "optimizer": opt_meta})
    except (OSError, SoftsegError) as exc:
        reason = exc.message if isinstance(exc, SoftsegError) else (exc.strerror or str(exc))
        kept = f"the last good checkpoint (epoch {epoch - 1}) is kept" if epoch > 1 else "no checkpoint was kept"
        raise SoftsegError(
            f"could not write the checkpoint of epoch {epoch} ({reason}); {kept}; "
            "free some space and continue with --resume",
            out_dir,
        ) from None


@dataclass
class ResumePoint:
    """Where a resumed run continues (from the checkpoint's metadata).

    Attributes:
        epoch: Epochs done.
        best_epoch: Epoch of the kept model.
        best_score: Its validation score (``None`` without validation).
        history: Per-epoch records.
        seconds: Training time of the earlier runs.
        steps_done: Optimizer steps done.
        progress: Position in the learning-rate schedule, 0 … 1.
    """

    epoch: int
    best_epoch: int
    best_score: float | None
    history: list
    seconds: float
    steps_done: int
    progress: float


def restore_checkpoint(out_dir: Path, *, network, optimizer, aug_gen, rng, device: str) -> ResumePoint:
    """Load the checkpoint into the network, optimiser and random generators; say where the run was.

    Raises:
        SoftsegError: The checkpoint is unreadable or does not fit this run (another network, missing
            entries).
    """
    tensors, meta = load_tensors(out_dir / STATE_FILE)
    try:
        network.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        network.to(device)
        _restore_optimizer(optimizer, tensors, meta["optimizer"])
        aug_gen.set_state(tensors["rng.augment"])
        rng.bit_generator.state = meta["numpy_rng"]
        return ResumePoint(epoch=meta["epoch"], best_epoch=meta["best_epoch"], best_score=meta.get("best_score"),
                           history=meta["history"], seconds=float(meta.get("seconds", 0.0)),
                           steps_done=int(meta.get("steps_done", 0)), progress=float(meta.get("progress", 0.0)))
    except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise SoftsegError(f"the checkpoint does not fit this run ({type(exc).__name__}: {str(exc)[:160]}); "
                           "train again into a new folder", out_dir / STATE_FILE) from None


def record_run_summary(out_dir: Path, training: dict, calibration: dict | None) -> None:
    """Add the whole run's summary to the kept model's ``config.json`` (and its calibration state, if given)."""
    final = read_config(out_dir)  # the best epoch's config; its summary now describes the whole run
    final.training.update(training)
    if calibration is not None:
        final.calibration = calibration
    save_config(out_dir, final)


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
