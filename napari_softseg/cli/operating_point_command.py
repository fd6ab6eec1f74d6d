"""``softseg operating-point`` (choose and store a named threshold on a cohort) and ``softseg operating-points`` (list).

The job is :func:`napari_softseg.pipeline.operating_points.choose_operating_point`; this module parses the
options, drives it with a progress bar and prints what a clinician needs to judge the point: the threshold,
the achieved value with its bootstrap interval, how stable the choice is, how many cases fall short, and
the warnings.
"""

from __future__ import annotations

import argparse
import sys

from napari_softseg.cli import BATCH_MAX, SEED_MAX, TILE_MAX, TILE_MIN, float_in, int_in
from napari_softseg.errors import SoftsegError
from napari_softseg.io.jsonio import write_json
from napari_softseg.pipeline.operating_points import choose_operating_point
from napari_softseg.pipeline.point_store import POINTS_FILE, get_operating_point, read_operating_points
from napari_softseg.progress import run_with_progress_bar

BOOTSTRAP_MAX = 100_000


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``operating-point`` and ``operating-points`` to the ``softseg`` parser."""
    p = sub.add_parser(
        "operating-point",
        help="choose a named threshold on a validation cohort (e.g. sensitivity>=0.90) and store it with the model",
        description=(
            "Predicts every case of DATASET (or reuses --predictions of this model), pools the cases with rater "
            "masks against their raters' consensus (at least half of the raters), picks the threshold t meeting "
            "--require on the pooled cohort, and reports a bootstrap confidence interval over cases and how many "
            "cases fall short at t. The point is stored under --name in MODEL_DIR/" + POINTS_FILE + " (listed in "
            "the model's manifest checksums) for `softseg predict --operating-point NAME`. Requirements: "
            "sensitivity>=X (highest t reaching X), ppv>=X (lowest t reaching X), dice=max, "
            "volume-error<=X (mean over cases of |V_mask - V_consensus| / V_consensus; X as 0.1 or 10%) or "
            "volume-error=min."
        ),
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder")
    p.add_argument("dataset", metavar="DATASET", help="cohort folder: a dataset, or one split such as Validation/")
    p.add_argument("--name", required=True, help="name of the point (e.g. screening)")
    p.add_argument("--require", required=True, metavar="REQUIREMENT",
                   help="e.g. \"sensitivity>=0.90\", \"ppv>=0.8\", \"dice=max\", \"volume-error<=10%%\"")
    p.add_argument("--predictions", metavar="DIR",
                   help="folder of this model's predictions of DATASET (as written by softseg predict): reused, "
                        "missing cases predicted into it (default: a temporary folder)")
    p.add_argument("--conservative", action="store_true",
                   help="choose t so that the lower end of the confidence interval meets the bound (the upper end "
                        "for volume-error), so that the point holds on most new cohorts; default: the pooled value "
                        "meets it, which holds on about half of them")
    p.add_argument("--replace", action="store_true", help="replace a stored point of the same name")
    p.add_argument("--dry-run", action="store_true", help="report the point without storing it")
    p.add_argument("--bootstrap", type=int_in("--bootstrap", 1, BOOTSTRAP_MAX), default=2000,
                   help="bootstrap resamples over cases (default 2000)")
    p.add_argument("--confidence", type=float_in("--confidence", 0.5, 0.999), default=0.95,
                   help="level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int_in("--seed", 0, SEED_MAX), default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", metavar="OUT.json", help="also write the full record as JSON")
    p.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--tile-size", type=int_in("--tile-size", TILE_MIN, TILE_MAX),
                   help="longest slice side predicted in one piece (default 1024)")
    p.add_argument("--batch-size", type=int_in("--batch-size", 1, BATCH_MAX), default=8,
                   help="slices per forward pass (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_operating_point)

    p = sub.add_parser("operating-points", help="list the named operating points stored with a model",
                       description="Lists MODEL_DIR/" + POINTS_FILE + " and says whether each point still belongs to "
                                   "the model's current weights and config.")
    p.add_argument("model", metavar="MODEL_DIR", help="model folder")
    p.set_defaults(func=cmd_list)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def describe(record: dict) -> list[str]:
    """The lines printed for a point: threshold, achieved value with interval, spread and warnings."""
    lo, hi = record["ci"]
    tlo, thi = record.get("threshold_ci") or (None, None)
    level = f"{record['confidence'] * 100:g}%"
    cohort = record["cohort"]
    how = f" (chosen so that the {level} CI meets it)" if record.get("conservative") else ""
    lines = [
        f"operating point {record['name']!r}: {record['requirement']}{how} -> t = {record['threshold']:.3f} "
        "(mask p >= t)",
        f"  cohort: {cohort['n_cases']} case(s) of {cohort['path']} vs {cohort['reference']}",
        f"  achieved (pooled): {record['achieved']:.3f}, {level} CI over cases {_pct(lo)}-{_pct(hi)}"
        + (f"; t stays in {_pct(tlo)}-{_pct(thi)} when the cohort is resampled" if tlo is not None else ""),
    ]
    if record.get("p_meets") is not None:
        lines.append(f"  t meets the requirement in {record['p_meets'] * 100:.0f}% of {record['n_bootstrap']} "
                     "bootstrap resamples")
    at = record["at_threshold"]
    lines.append(f"  at t: sensitivity {at['sensitivity']:.3f}, PPV {at['ppv']:.3f}, Dice {at['dice']:.3f}, "
                 f"volume error {at['volume-error']:.3f}")
    q = record.get("per_case_quantiles") or {}
    if q:
        lines.append(f"  per case: min {q['min']:.3f}, median {q['median']:.3f}, max {q['max']:.3f}")
    if record.get("n_failing") is not None:
        worst = f" (worst: {', '.join(record['failing'][:5])})" if record["failing"] else ""
        lines.append(f"  {record['n_failing']} of {cohort['n_cases']} case(s) fall short of the requirement at t{worst}")
    for name, reason in cohort.get("skipped") or []:
        lines.append(f"  left out: {name} ({reason})")
    lines += [f"  warning: {w}" for w in record.get("warnings") or []]
    return lines


def cmd_operating_point(args: argparse.Namespace) -> int:
    """Run ``softseg operating-point``."""
    if args.json and not args.json.lower().endswith(".json"):
        raise SoftsegError("--json must name a .json file", args.json)
    record = run_with_progress_bar(
        choose_operating_point(args.model, args.dataset, name=args.name, requirement=args.require,
                               predictions=args.predictions, replace=args.replace, n_boot=args.bootstrap,
                               seed=args.seed, confidence=args.confidence, conservative=args.conservative,
                               device=args.device,
                               tile_size=args.tile_size, batch_size=args.batch_size, store=not args.dry_run),
        disable=args.quiet, announce=("device",),
    )
    print("\n".join(describe(record)))
    if args.json:
        write_json(args.json, record, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    if args.dry_run:
        print("not stored (--dry-run)", file=sys.stderr)
    else:
        print(f"stored in {args.model}/{POINTS_FILE}; use it with: softseg predict {args.model} INPUT -o OUT "
              f"--operating-point {args.name!r}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Run ``softseg operating-points``."""
    points = read_operating_points(args.model)
    if not points:
        print(f"{args.model}: no operating points stored (choose one with softseg operating-point)")
        return 0
    for name, point in sorted(points.items()):
        try:
            get_operating_point(args.model, name)
            state = "current"
        except SoftsegError:
            state = "STALE: chosen for other weights or config"
        lo, hi = point.get("ci") or (None, None)
        cohort = point.get("cohort") or {}
        print(f"{name}: t = {point['threshold']:.3f}  {point.get('requirement')}  achieved {_pct(point.get('achieved'))} "
              f"(CI {_pct(lo)}-{_pct(hi)}) on {cohort.get('n_cases')} case(s) of {cohort.get('name')}, "
              f"{point.get('created')}  [{state}]")
    return 0
