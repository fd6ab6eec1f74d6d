"""DICOM glue for the ``softseg`` commands: ``inspect`` of a DICOM folder, ``--series``, ``predict --format dicom-seg``.

The commands' own modules call these only when their input is DICOM (or a DICOM option was given), so
the NIfTI paths are untouched. pydicom/highdicom are imported inside the functions.
"""

from __future__ import annotations

import argparse

from napari_softseg.errors import SoftsegError
from napari_softseg.io.dataset import load_case
from napari_softseg.io.dicom import describe_folder, is_dicom_source
from napari_softseg.io.dicom_seg import load_dicom_case
from napari_softseg.io.jsonio import write_json
from napari_softseg.io.sidecar import sidecar_path
from napari_softseg.pipeline.predict_dicom import predict_dicom as run
from napari_softseg.progress import run_with_progress_bar


def add_series_option(p: argparse.ArgumentParser) -> None:
    """``--series``: which image series of a DICOM folder (SeriesInstanceUID or SeriesDescription)."""
    p.add_argument("--series", metavar="UID_OR_DESCRIPTION",
                   help="for a DICOM folder holding several image series: the one to use (see softseg inspect)")


def is_dicom(path) -> bool:

    return path is not None and is_dicom_source(path)


def load_case_arg(args: argparse.Namespace):
    """``args.case`` as a CaseData: a DICOM folder (with ``--series``) or a NIfTI case (with the patterns)."""

    series = getattr(args, "series", None)
    if series is not None or is_dicom(args.case):

        return load_dicom_case(args.case, args.task, series=series)
    return load_case(args.case, args.task, image_pattern=args.image_pattern, mask_pattern=args.mask_pattern)


def inspect_dicom(args: argparse.Namespace) -> int:
    """``softseg inspect DICOM_FOLDER``: every series with its UID, description, modality and size; SEG references."""

    entries = describe_folder(args.path)
    images = [e for e in entries if not e["is_seg"]]
    segs = [e for e in entries if e["is_seg"]]
    print(f"{args.path}: DICOM, {len(images)} image series, {len(segs)} SEG series")
    for e in images:
        rows, cols = e["rows_columns"]
        sp = "x".join(f"{v:g}" for v in e["pixel_spacing_mm"] or []) or "?"
        print(f"  series {e['series_instance_uid']}  \"{e['description']}\"  {e['modality']}  "
              f"{e['frames']} slice(s) of {rows} rows x {cols} columns, pixel spacing {sp} mm")
    for e in segs:
        print(f"  SEG    {e['series_instance_uid']}  \"{e['description']}\"  {'/'.join(e['segmentation_types'])}, "
              f"segment(s): {', '.join(e['segment_labels'])}; references {', '.join(e['references'])}")
    if len(images) > 1:
        print("several image series: choose one with --series UID_OR_DESCRIPTION")
    if args.json:
        write_json(args.json, {"path": str(args.path), "dicom_series": entries}, args.overwrite)
        print(f"wrote {args.json}")
    return 0


def wants_dicom_output(args: argparse.Namespace) -> bool:
    """``predict`` needs the DICOM path: a SEG was asked for, or one series of a folder was chosen."""
    return args.format == "dicom-seg" or bool(args.series) or str(args.out).lower().endswith(".dcm")


def predict_dicom(args: argparse.Namespace) -> int:
    """``softseg predict MODEL DICOM_FOLDER -o OUT [--format dicom-seg] [--series ...] [--threshold T]``."""

    if not is_dicom(args.input):
        raise SoftsegError("--format dicom-seg and --series need a DICOM series folder as INPUT "
                           "(a SEG must reference the DICOM images it was made from)", args.input)
    fmt = args.format or ("dicom-seg" if str(args.out).lower().endswith(".dcm") else "nifti")
    written = run_with_progress_bar(
        run(args.model, args.input, args.out, series=args.series, fmt=fmt, threshold=args.threshold,
            device=args.device, tile_size=args.tile_size, batch_size=args.batch_size, overwrite=args.overwrite,
            task=args.task),
        disable=args.quiet, announce=("device", "domain"),
    )
    for path in written + [sidecar_path(path) for path in written]:
        print(path)
    return 0
