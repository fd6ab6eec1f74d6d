"""``softseg inspect``, ``softseg softlabel`` and ``softseg evaluate``: data and metrics, no model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_softseg.analysis.consensus import agreement_count
from napari_softseg.analysis.metrics import evaluate_case
from napari_softseg.analysis.softlabels import make_soft_label
from napari_softseg.cli import SEED_MAX, SIGMA_MM_MAX, float_in, int_in
from napari_softseg.cli.dicom_cli import add_series_option, inspect_dicom, is_dicom, load_case_arg
from napari_softseg.datasets.synthetic import write_qubiq_dataset
from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import check_same_geometry
from napari_softseg.io.dataset import discover
from napari_softseg.io.files import OutputGroup, check_writable
from napari_softseg.io.formats import is_image_path
from napari_softseg.io.jsonio import json_bytes, write_json
from napari_softseg.io.memory import check_memory
from napari_softseg.io.nifti import (
    check_finite,
    is_nifti_path,
    load_volume,
    nifti_image,
    read_header,
    strip_nifti_suffix,
    write_image,
)
from napari_softseg.io.probability_maps import read_soft_map

#: Largest --weights value accepted (weights are relative; bigger ones only risk overflow).
WEIGHT_MAX = 1e6
#: Synthetic datasets: largest side and case/rater counts.
SYNTHETIC_SIDE_MAX = 4096


def _add_case_patterns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-pattern", help="glob of the image in a plain folder (default image.nii[.gz])")
    p.add_argument("--mask-pattern", help="glob of the rater masks in a plain folder (default task0T_seg0R names)")

    add_series_option(p)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data commands to the ``softseg`` parser."""
    p = sub.add_parser("inspect", help="list the cases, tasks, raters, shapes and problems found")
    p.add_argument("path", metavar="DATASET_OR_CASE")
    p.add_argument("--json", metavar="OUT.json", help="also write what was found as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    _add_case_patterns(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("softlabel", help="build a soft label from a case's rater masks")
    p.add_argument("case", metavar="CASE")
    p.add_argument("-o", "--out", required=True, metavar="OUT.nii.gz")
    p.add_argument("--task", type=int_in("--task", 1, 99), default=1)
    p.add_argument("--method", default="mean", help="mean (default), smoothed, majority, staple")
    p.add_argument("--sigma-mm", type=float_in("--sigma-mm", 0, SIGMA_MM_MAX), default=1.0,
                   help="Gaussian sigma in mm for 'smoothed'")
    p.add_argument("--weights", help="comma-separated per-rater weights, e.g. 1,1,0.5")
    p.add_argument("--agreement", metavar="OUT.nii.gz", help="also write how many raters marked each voxel")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_case_patterns(p)
    p.set_defaults(func=cmd_softlabel)

    p = sub.add_parser("evaluate", help="score a soft prediction against a case's raters (QUBIQ, ECE, raters)")
    p.add_argument("case", metavar="CASE")
    p.add_argument("--pred", required=True, metavar="PRED.nii.gz",
                   help="soft prediction in [0, 1]: NIfTI (3D, or 4D class probabilities) or nnU-Net .npz")
    p.add_argument("--task", type=int_in("--task", 1, 99), default=1)
    p.add_argument("--threshold", type=float_in("--threshold", 0, 1), default=0.5,
                   help="operating point for the rater comparison")
    p.add_argument("--json", metavar="OUT.json", help="write all numbers as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    _add_case_patterns(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("synthetic", help="write a synthetic multi-rater dataset (QUBIQ layout) for trying things out")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--cases", type=int_in("--cases", 1, 10000), default=8, help="training cases")
    p.add_argument("--validation", type=int_in("--validation", 0, 10000), default=2, help="validation cases")
    p.add_argument("--raters", type=int_in("--raters", 1, 100), default=4)
    p.add_argument("--shape", default="96,96,1", help="X,Y,Z (Z=1 for 2D), e.g. 64,64,24")
    p.add_argument("--channels", type=int_in("--channels", 1, 64), default=1)
    p.add_argument("--seed", type=int_in("--seed", 0, SEED_MAX), default=0)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_synthetic)


def _patterns(args: argparse.Namespace) -> dict:
    return {"image_pattern": args.image_pattern, "mask_pattern": args.mask_pattern}


def describe_dataset(path: str, **patterns) -> dict:
    """What ``inspect`` reports: cases with split, shape, spacing and rater counts per task (headers only)."""
    from nibabel.affines import voxel_sizes

    ds = discover(path, **patterns)
    cases = []
    problems = list(ds.problems)
    for case in ds.cases:
        entry = {"name": case.name, "split": case.split, "path": str(case.path)}
        try:
            if not is_image_path(case.image_path):  # a DICOM series: listed without an image header
                raise LookupError
            info = read_header(case.image_path)
            entry["shape"] = [int(s) for s in info.shape]
            entry["spacing_mm"] = [round(float(z), 4) for z in voxel_sizes(info.affine)[:3]]
        except SoftsegError as exc:  # a damaged header is reported, not fatal for the listing
            problems.append(str(exc))
        except LookupError:
            pass
        entry["raters_per_task"] = {str(t): len(p) for t, p in case.tasks.items()}
        cases.append(entry)
    return {"path": str(ds.path), "n_cases": len(cases), "tasks": ds.task_numbers, "cases": cases, "problems": problems}


def cmd_inspect(args: argparse.Namespace) -> int:

    if args.json:
        check_writable(args.json, args.overwrite)

    if is_dicom(args.path):
        return inspect_dicom(args)
    if Path(args.path).is_file():
        return inspect_image(args)
    info = describe_dataset(args.path, **_patterns(args))
    splits: dict[str, int] = {}
    for c in info["cases"]:
        splits[c["split"] or "(no split)"] = splits.get(c["split"] or "(no split)", 0) + 1
    print(f"{info['path']}: {info['n_cases']} case(s) — " + ", ".join(f"{k}: {v}" for k, v in splits.items()))
    print(f"tasks: {', '.join(map(str, info['tasks'])) or 'none'}")
    name_w = max(len(c["name"]) for c in info["cases"])
    print(f"{'case':<{name_w}}  {'shape':<16} {'spacing (mm)':<20} raters per task")
    for c in info["cases"]:
        shape = "x".join(map(str, c.get("shape", []))) or "?"
        spacing = "x".join(f"{s:g}" for s in c.get("spacing_mm", [])) or "?"
        raters = ", ".join(f"task {t}: {n}" for t, n in c["raters_per_task"].items()) or "no masks"
        print(f"{c['name']:<{name_w}}  {shape:<16} {spacing:<20} {raters}")
    for problem in info["problems"]:
        print(f"problem: {problem}")
    if args.json:
        write_json(args.json, info, args.overwrite)
        print(f"wrote {args.json}")
    return 0


def describe_image(path: str) -> dict:
    """What ``inspect FILE`` reports for one image: format, shape, spacing, orientation, dtype, range, NaN count.

    Raises:
        SoftsegError: The file cannot be read as an image (the message names it and says why).
    """
    from nibabel.affines import voxel_sizes
    from nibabel.orientations import aff2axcodes

    info = read_header(path)
    check_memory(info.read_bytes, f"reading this {'x'.join(map(str, info.shape))} {info.dtype} file", info.path)
    data = np.asarray(load_volume(info.path, info, memory_check=False).data)
    finite = np.isfinite(data) if data.dtype.kind == "f" else None
    bad = int(data.size - np.count_nonzero(finite)) if finite is not None else 0
    values = data[finite] if bad else data
    fmt = type(info.image).__name__.removesuffix("Image").lstrip("_") or "?"
    return {
        "path": str(info.path), "format": "NRRD" if fmt == "Nrrd" else fmt, "shape": [int(s) for s in info.shape],
        "spacing_mm": [round(float(z), 4) for z in voxel_sizes(info.affine)[:3]],
        "orientation": "".join(aff2axcodes(info.affine)), "dtype": info.dtype.name,
        "min": float(values.min()) if values.size else None, "max": float(values.max()) if values.size else None,
        "non_finite_voxels": bad, "warnings": list(info.warnings),
    }


def inspect_image(args: argparse.Namespace) -> int:
    """``softseg inspect FILE``: one image's header and values (any format ``read_header`` accepts)."""
    info = describe_image(args.path)
    shape = "x".join(map(str, info["shape"]))
    spacing = "x".join(f"{s:g}" for s in info["spacing_mm"])
    shown = "empty" if info["min"] is None else f"{info['min']:g} … {info['max']:g}"
    print(f"{info['path']}: {info['format']} image {shape} {info['dtype']}, spacing {spacing} mm, "
          f"orientation {info['orientation']}, values {shown}")
    if info["non_finite_voxels"]:
        print(f"warning: {info['non_finite_voxels']} NaN or infinite voxel(s): treated as background by predict "
              "and train")
    if args.json:  # the header's own warnings were logged when it was read ("warning: FILE: ...")
        write_json(args.json, info, args.overwrite)
        print(f"wrote {args.json}")
    return 0


def _parse_weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    import math

    try:
        weights = [float(x) for x in text.split(",")]
    except ValueError:
        raise SoftsegError(f"--weights must be comma-separated numbers, got {text!r}") from None
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise SoftsegError(f"--weights must be finite numbers >= 0, got {bad[0]!r}")
    if not any(weights):
        raise SoftsegError("--weights are all zero; give at least one rater a positive weight")
    top = max(weights)
    return [w / top for w in weights]  # relative weights: scaled so that no sum can overflow


def cmd_softlabel(args: argparse.Namespace) -> int:

    out = Path(args.out)
    sidecar = out.with_name(strip_nifti_suffix(out.name) + ".json")
    agreement = Path(args.agreement) if args.agreement else None
    outputs = [out, sidecar] + ([agreement] if agreement else [])
    for path in [out] + ([agreement] if agreement else []):
        if not is_nifti_path(path):
            raise SoftsegError("output must end in .nii or .nii.gz", path)
    if len({p.absolute() for p in outputs}) != len(outputs):
        raise SoftsegError("the soft label, its .json sidecar and --agreement must be different files")
    for path in outputs:
        check_writable(path, args.overwrite)
    weights = _parse_weights(args.weights)
    case = load_case_arg(args)
    _refuse_input_as_output(outputs, [case.image_path, *case.mask_paths])
    for w in case.warnings:
        print(f"warning: {case.name}: {w}")
    soft = make_soft_label(
        case.masks,
        args.method,
        spacing=case.spacing,
        sigma_mm=args.sigma_mm,
        weights=weights,
        rater_names=case.rater_names,
    )
    provenance = dict(soft.provenance, source_case=str(case.image_path.parent), task=args.task)
    # all or nothing: every file is written to a temporary name, then the group is linked into place
    with OutputGroup(outputs, overwrite=args.overwrite) as group:
        write_image(nifti_image(soft.data, case.reference_volume, dtype=np.float32,
                                description=f"softseg soft label: {soft.provenance['method']}"), group.temp(out))
        group.temp(sidecar).write_bytes(json_bytes(provenance))
        if agreement:
            write_image(nifti_image(agreement_count(case.masks), case.reference_volume, dtype=np.uint8,
                                    description="softseg agreement: raters per voxel"), group.temp(agreement))
    print(f"wrote {out} ({soft.provenance['method']} of {case.masks.shape[0]} raters) and {sidecar.name}")
    if agreement:
        print(f"wrote {agreement}")
    return 0


def _refuse_input_as_output(outputs, inputs) -> None:
    """Refuse an output that is one of the input files (even with --overwrite)."""
    import os

    for out in outputs:
        for src in inputs:
            try:
                if Path(out).exists() and os.path.samefile(out, src):
                    raise SoftsegError(f"output would replace the input file {src}", out)
            except OSError:
                pass


def prediction_task(header) -> int | None:
    """The task a prediction written by ``softseg predict`` was made for (from its header description)."""
    import re

    try:
        text = bytes(header["descrip"]).split(b"\0")[0].decode("ascii", "replace")
    except Exception:  # noqa: BLE001 - a foreign header: no claim
        return None
    m = re.match(r"softseg p\(task(\d+)\)", text)
    return int(m.group(1)) if m else None


def _check_prediction_header(path: Path, spatial_shape: tuple[int, ...], task: int | None) -> None:
    """Header-only checks of a NIfTI prediction: its voxel grid and the task it was made for."""
    import warnings

    import nibabel as nib
    from nibabel.imageglobals import LoggingOutputSuppressor

    try:
        with warnings.catch_warnings(), LoggingOutputSuppressor():
            warnings.simplefilter("ignore")
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
    except Exception:  # noqa: BLE001 - the full reader words the error
        return
    grid = (shape + (1,))[:3] if len(shape) == 2 else shape[:3]
    if grid != tuple(spatial_shape):
        raise SoftsegError(f"prediction shape {shape} does not match the case's {tuple(spatial_shape)}", path)
    made_for = prediction_task(img.header)
    if task is not None and made_for is not None and made_for != task:
        raise SoftsegError(f"this prediction was made by a model for task {made_for}, not task {task}", path)


def load_prediction(path: str | Path, spatial_shape: tuple[int, ...], affine: np.ndarray,
                    task: int | None = None) -> np.ndarray:
    """Read a soft prediction and check it is finite, in ``[0, 1]`` and on the case's voxel grid.

    A NIfTI prediction's header is checked first (its grid and the task it was made for), before any voxel
    is read; then NIfTI (3D, or 4D class probabilities) and nnU-Net ``.npz`` files are read.
    """

    if is_nifti_path(path) and Path(path).is_file():
        _check_prediction_header(Path(path), spatial_shape, task)
    data, pred_affine = read_soft_map(path, reference_affine=affine)  # NIfTI, 4D probabilities or nnU-Net .npz
    if data.shape != tuple(spatial_shape):
        raise SoftsegError(f"prediction shape {data.shape} does not match the case's {tuple(spatial_shape)}", path)
    check_same_geometry(pred_affine, affine, path, "prediction")
    check_finite(data, path, "prediction")
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 1:
        raise SoftsegError(f"prediction must be probabilities in [0, 1], found values {lo:g} … {hi:g}", path)
    return data.astype(np.float32, copy=False)


def format_evaluation(name: str, result: dict) -> str:
    """A readable table of :func:`napari_softseg.analysis.metrics.evaluate_case`'s result."""
    lines = [f"case {name}: {result['n_raters']} rater(s)"]
    lines.append(f"  QUBIQ score  {result['qubiq_score']:.4f}   (mean Dice over t = 0.1 … 0.9, p > t)")
    lines.append("  Dice per t   " + "  ".join(f"{t}:{d:.3f}" for t, d in result["dice_per_threshold"].items()))
    lines.append(f"  ECE          {result['ece']:.4f}   (10 bins, vs mean of raters)")
    op = result["operating_point_vs_consensus"]
    lines.append(
        f"  at p >= {result['threshold']:g} vs {result['consensus_rule']}: precision {op['precision']:.3f}  recall {op['recall']:.3f}"
        f"  Dice {op['dice']:.3f}"
    )
    if result["raters"]:
        lines.append("  leave-one-rater-out (consensus of the other raters):")
        lines.append(f"    {'rater':<12} {'rater Dice':>10} {'model Dice':>10}")
        for row in result["raters"]:
            better = "  model better" if row["model_dice_vs_same"] > row["dice_vs_others"] else ""
            lines.append(
                f"    {row['rater']:<12} {row['dice_vs_others']:>10.4f} {row['model_dice_vs_same']:>10.4f}{better}"
            )
        lines.append(f"  model beats {result['model_beats_raters']} of {len(result['raters'])} raters")
    else:
        lines.append("  leave-one-rater-out needs at least 2 raters")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:

    if args.json:
        check_writable(args.json, args.overwrite)
    case = load_case_arg(args)
    for w in case.warnings:
        print(f"warning: {case.name}: {w}")
    pred = load_prediction(args.pred, case.spatial_shape, case.affine, args.task)
    result = evaluate_case(pred, case.masks, case.rater_names, case.spacing, args.threshold)
    result = {"case": case.name, "task": args.task, "prediction": str(args.pred), **result}
    print(format_evaluation(case.name, result))
    if args.json:
        write_json(args.json, result, args.overwrite)
        print(f"wrote {args.json}")
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:

    try:
        shape = tuple(int(x) for x in args.shape.split(","))
    except ValueError:
        raise SoftsegError(f"--shape must be X,Y,Z integers, got {args.shape!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1 or max(shape) > SYNTHETIC_SIDE_MAX:
        raise SoftsegError(f"--shape must be 2 or 3 sides from 1 to {SYNTHETIC_SIDE_MAX}, got {args.shape!r}")
    voxels = int(np.prod(shape, dtype=np.int64))
    # a phantom holds the image, masks and float64 fields of its size several times over while it is made
    check_memory(voxels * (8 * 8 + 4 * args.channels + 2 * args.raters * 2), f"a synthetic case of shape {shape}")
    try:
        root = write_qubiq_dataset(args.out, n_cases=args.cases, n_validation=args.validation, shape=shape,
                                   n_raters=args.raters, n_channels=args.channels, seed=args.seed,
                                   overwrite=args.overwrite)
    except ValueError as exc:
        raise SoftsegError(str(exc)) from None
    print(f"wrote {args.cases} training + {args.validation} validation case(s) to {root}")
    return 0
