"""``softseg train`` and ``softseg predict``: the model engine from the command line.

Both drive the same generators the viewer runs in a worker (:func:`napari_softseg.model.training.train`,
:func:`napari_softseg.pipeline.predict.predict_path`) with a progress bar, print the device chosen and why, and
turn Ctrl-C during training into a message saying where the last good checkpoint is and how to resume.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from napari_softseg.analysis.softlabels import ALIASES, METHODS
from napari_softseg.cli import (
    BASE_CHANNELS_MAX,
    BATCH_MAX,
    EXIT_USER_ERROR,
    PATCH_MAX,
    SEED_MAX,
    SIGMA_MM_MAX,
    TILE_MAX,
    TILE_MIN,
    float_in,
    int_in,
)
from napari_softseg.cli.dicom_cli import add_series_option, predict_dicom, wants_dicom_output
from napari_softseg.errors import PartialFailure, SoftsegError
from napari_softseg.io.memory import check_memory
from napari_softseg.io.sidecar import sidecar_path
from napari_softseg.model.distributed import Distributed
from napari_softseg.model.fine_tune import format_before_after
from napari_softseg.model.training import STATE_FILE, read_training_state, train
from napari_softseg.pipeline.point_store import get_operating_point
from napari_softseg.pipeline.predict import predict_path
from napari_softseg.progress import run_with_progress_bar

EXIT_INTERRUPTED = 130
#: Stages whose messages are printed as lines rather than shown as bars.
ANNOUNCED_STAGES = ("device", "plan", "domain")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``predict`` to the ``softseg`` parser."""

    p = sub.add_parser(
        "train",
        help="train a U-Net on the soft labels of a multi-rater dataset (self-configuring, within a time budget)",
        description=(
            "Train one network on soft labels (mean of the raters by default). The run plans itself from the "
            "dataset's fingerprint (2D or 3D, patch, batch, width, depth, normalisation), prints the plan and "
            "stores it in OUT/config.json; every option below overrides its part of the plan. An epoch is a "
            "fixed number of optimizer steps on sampled patches; the learning rate decays to reach zero at the "
            "end of --max-minutes (default budget printed) or of --epochs. With a QUBIQ dataset, its Training/ "
            "cases are used; validation cases are a fraction of them (--val-fraction) or another folder (--val) "
            "— Validation/ is left for your own held-out evaluation unless you pass it with --val. The best "
            "epoch by validation QUBIQ score is kept and calibrated (a temperature fitted on the validation "
            "cases); every epoch is checkpointed, so --resume continues an interrupted run. "
            "With --init MODEL_DIR the run fine-tunes that model instead (e.g. on cases an annotator corrected): "
            "it starts from its weights and keeps its architecture, normalisation, voxel size and patch, uses a "
            "tenth of its learning rate and a quarter of the default budget unless told otherwise, fits the "
            "temperature again, never writes MODEL_DIR, and prints the QUBIQ score and ECE of both models on the "
            "validation cases at the end (also stored in OUT/config.json)."
        ),
    )
    p.add_argument("dataset", metavar="DATASET", nargs="?", help="dataset folder (optional with --resume)")
    p.add_argument("-o", "--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument("--init", metavar="MODEL_DIR",
                   help="fine-tune this model (its weights, architecture, normalisation, voxel size and patch; lr "
                        "a tenth of its own, a quarter of the default budget); --out must be a new folder")
    p.add_argument("--task", type=int, help="task number (default 1)")
    p.add_argument("--softlabel", choices=sorted(set(METHODS) | set(ALIASES)), help="soft-label method (default mean)")
    p.add_argument("--sigma-mm", type=float_in("--sigma-mm", 0, SIGMA_MM_MAX), help="Gaussian sigma in mm for --softlabel smoothed (default 1)")
    p.add_argument("--loss", choices=("bce", "dice", "bce+dice"), help="loss against the soft target (default bce)")
    p.add_argument("--max-minutes", type=float,
                   help="time budget of the whole run; the schedule is planned to end there (default: 10 on the CPU, "
                        "20 on a GPU, unless --epochs is given)")
    p.add_argument("--epochs", type=int, help="fixed number of epochs (no time budget unless --max-minutes is given)")
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch (planned: 50 CPU, 250 GPU)")
    p.add_argument("--dim", type=int, choices=(2, 3), help="2D U-Net on slices or 3D U-Net on patches (planned)")
    p.add_argument("--batch-size", type=int, help="patches per step (planned)")
    p.add_argument("--learning-rate", "--lr", dest="learning_rate",
                   type=float_in("--learning-rate", 0, 10, low_open=True), help="peak AdamW learning rate (2e-3)")
    p.add_argument("--patch-size", type=int_in("--patch-size", 1, PATCH_MAX), nargs="+", metavar="N",
                   help="training patch: one side for every axis or one per axis (planned)")
    p.add_argument("--base-channels", type=int_in("--base-channels", 1, BASE_CHANNELS_MAX), help="U-Net width (planned: 16 CPU, 32 GPU)")
    p.add_argument("--depth", type=int, help="U-Net downsamplings (planned from the patch)")
    p.add_argument("--norm", choices=("instance", "batch", "none"), help="normalisation layers (default instance)")
    p.add_argument("--context-slices", type=int, help="2.5D: neighbouring slices on each side as channels (default 0)")
    p.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="axis cut into 2D slices (planned)")
    p.add_argument("--normalization", choices=("zscore", "ct"), help="intensity normalisation (planned)")
    p.add_argument("--ct-window", type=float, nargs=2, metavar=("LOW", "HIGH"), help="window for --normalization ct")
    p.add_argument("--target-spacing", nargs="+", metavar="MM",
                   help="voxel size the network trains and predicts at: one value (every resampled axis), three, or "
                        "'native' for no resampling (planned: the median spacing, nnU-Net's rule)")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-fraction", type=float, help="share of cases held out for validation (default 0.2)")
    val.add_argument("--val", metavar="DATASET2", help="validation cases from another folder (e.g. QUBIQ Validation/)")
    p.add_argument("--seed", type=int_in("--seed", 0, SEED_MAX), help="random seed (default 0)")
    p.add_argument("--device", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calibrate", action="store_true", default=None,
                     help="fit a temperature on the validation cases (the default whenever there are some)")
    cal.add_argument("--no-calibrate", dest="calibrate", action="store_false", help="keep the raw probabilities")
    p.add_argument("--no-early-stop", dest="early_stop", action="store_false", default=None,
                   help="do not stop early on a plateau of the validation score")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None, help="no data augmentation")
    p.add_argument("--weights-dtype", choices=("float16", "float32"), help="storage of the weights (default float16)")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in MODEL_DIR")
    p.add_argument("--overwrite", action="store_true", help="start over in a MODEL_DIR that holds a model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "predict",
        help="write the soft probability map of an image, a case or a whole dataset",
        description=(
            "INPUT is an image file or a case folder (OUT is then a .nii.gz file) or a dataset folder (OUT is "
            "then a folder mirroring the cases, each with prediction_taskNN.nii.gz). Maps are float32 in [0, 1] "
            "with the input's affine. INPUT may be a DICOM series folder: OUT is then .nii.gz, or with "
            "--format dicom-seg OUT.dcm (FRACTIONAL probability SEG) and OUT_mask.dcm (BINARY SEG at --threshold)."
        ),
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder (model.safetensors + config.json)")
    p.add_argument("input", metavar="INPUT", help="image file, case folder or dataset folder")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output file or folder")
    p.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--tile-size", type=int_in("--tile-size", TILE_MIN, TILE_MAX),
                   help="longest slice side predicted in one piece (default 1024)")
    p.add_argument("--batch-size", type=int_in("--batch-size", 1, BATCH_MAX), default=8,
                   help="slices per forward pass (default 8)")
    p.add_argument("--task", type=int_in("--task", 1, 99), help="check that the model was trained for this task")
    p.add_argument("--format", choices=("nifti", "dicom-seg"),
                   help="dicom-seg (DICOM input): OUT.dcm = probability SEG, OUT_mask.dcm = binary SEG at --threshold")
    p.add_argument("--threshold", type=float_in("--threshold", 0, 1), default=0.5,
                   help="operating point of the binary SEG (default 0.5)")
    p.add_argument("--operating-point", metavar="NAME",
                   help="also write the mask at this named point stored with the model (OUT_mask.nii.gz, or the "
                        "binary SEG's threshold); see softseg operating-points MODEL_DIR")

    add_series_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_predict)


_OPTION_NAMES = (
    "task", "softlabel", "sigma_mm", "loss", "epochs", "max_minutes", "batch_size", "learning_rate", "patch_size",
    "base_channels", "depth", "norm", "context_slices", "slice_axis", "normalization", "ct_window", "val_fraction",
    "seed", "device", "calibrate", "augment", "weights_dtype", "dim", "steps_per_epoch", "early_stop", "target_spacing",
)


def _resume_command(args: argparse.Namespace, dataset, processes: int = 1) -> str:
    launcher = ["softseg"] if processes == 1 else ["torchrun", "--nproc-per-node", str(processes), "-m", "napari_softseg"]
    parts = launcher + ["train"] + ([str(dataset)] if dataset else []) + ["--out", str(args.out), "--resume"]
    return " ".join(shlex.quote(p) for p in parts)


def _rank_output(dist):
    """Under torchrun, rank 0 alone draws bars and prints; the other ranks stay quiet (warnings included)."""
    import contextlib
    import warnings

    if dist.is_main:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``softseg train``."""

    dist = Distributed.from_environment()
    values = {name: getattr(args, name) for name in _OPTION_NAMES if getattr(args, name, None) is not None}
    _check_training_memory(values)
    if args.dataset is None and not args.resume:
        raise SoftsegError("give the DATASET folder to train on (it may be left out only with --resume)")
    out = Path(args.out)
    try:
        with _rank_output(dist):
            result = run_with_progress_bar(
                train(args.dataset, out, val_dataset=args.val, resume=args.resume, overwrite=args.overwrite,
                      init=args.init, **values),
                disable=args.quiet or not dist.is_main,
                announce=ANNOUNCED_STAGES if dist.is_main else (),
            )
    except KeyboardInterrupt:
        if not dist.is_main:
            return EXIT_INTERRUPTED
        if (out / STATE_FILE).is_file():
            epoch = read_training_state(out).get("epoch")
            print(f"softseg: interrupted; the last good checkpoint (epoch {epoch}) is in {out}\n"
                  f"continue with: {_resume_command(args, args.dataset, dist.world_size)}", file=sys.stderr)
        else:
            print("softseg: interrupted before the first checkpoint; nothing was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not dist.is_main:
        return 0
    score = "n/a (no validation)" if result.best_score is None else f"{result.best_score:.4f}"
    print(f"model: {result.model_dir}  (best epoch {result.best_epoch} of {result.epochs_done}, {result.steps} steps, "
          f"validation QUBIQ score {score}; {result.stopped} after {result.seconds:.0f} s)")
    if result.calibration:
        c = result.calibration
        print(f"calibration: temperature {c['temperature']:.3f}, validation ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}")
    else:
        print("calibration: none (no validation cases or --no-calibrate); probabilities are the raw network output")
    for line in format_before_after(result.before_after):
        print(line)
    return 0


def _check_training_memory(values: dict) -> None:
    """Refuse a --patch-size / --base-channels / --batch-size whose activations cannot fit, before any work."""

    patch = values.get("patch_size") or 256
    sides = [int(v) for v in patch] if isinstance(patch, (list, tuple)) else [int(patch)]
    area = sides[0] ** 2 if len(sides) == 1 else math.prod(sides)  # one side: a square 2D patch
    width = values.get("base_channels") or 16
    batch = values.get("batch_size") or 8
    # activations and their gradients: ~24 float32 maps of `width` channels per pixel over the levels
    check_memory(batch * width * area * 4 * 24,
                 f"training with --patch-size {' '.join(map(str, sides))}, --base-channels {width} and "
                 f"--batch-size {batch}")


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``softseg predict``."""

    dist = Distributed.from_environment()
    if wants_dicom_output(args):  # DICOM folders with NIfTI output go through predict_path (io/dataset.py hook)
        if args.operating_point:
            args.threshold = get_operating_point(args.model, args.operating_point)["threshold"]
        # one series, one SEG pair: under torchrun rank 0 writes it, the other ranks have no share
        return predict_dicom(args) if dist.is_main else 0

    failed = None
    with _rank_output(dist):
        try:
            written = run_with_progress_bar(
                predict_path(args.model, args.input, args.out, device=args.device, tile_size=args.tile_size,
                             batch_size=args.batch_size, overwrite=args.overwrite, task=args.task, dist=dist,
                             operating_point=args.operating_point),
                disable=args.quiet or not dist.is_main,
                announce=ANNOUNCED_STAGES if dist.is_main else (),
            )
        except PartialFailure as exc:  # a dataset run: the good cases are written, the bad ones listed last
            written, failed = exc.done, exc
    if not dist.is_main:
        return 0 if failed is None else EXIT_USER_ERROR
    # under torchrun rank 0 lists every rank's maps (each rank wrote its maps' sidecars), all written by now
    for path in written:
        print(path)
    for path in written:
        print(sidecar_path(path))
    if dist.enabled:
        print(f"softseg: {len(written)} case(s) predicted by {dist.world_size} processes", file=sys.stderr)
    if failed is not None:
        print(f"softseg predict: error: {failed}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
