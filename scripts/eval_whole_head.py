"""Measure a model on whole-head T1 scans at one or more voxel sizes (nothing is written to the repository).

Usage (from the repository root; needs nilearn, whose wheel carries the MNI ICBM152 2009a template)::

    python scripts/eval_whole_head.py [--model DIR] [--spacing 1.0 0.5 2.0 ...] [--json OUT]

For each isotropic voxel size it builds, in memory, the whole head of ``scripts/make_full_sample.py``
(the real template brain with simulated CSF, skull, scalp, eyes, sinuses, face, neck and air) over the
template's full field of view, axial, unposed — 197 × 233 × 189 voxels at 1 mm — with a mild gamma, bias
field and Rician noise, stored as uint8 the way the bundled data are, and its five simulated white-matter
raters (the demo slabs' rater simulation). Seeds differ from the bundled sample's, so raters, bias and
noise are not the sample's. The model predicts the scan through the package's API
(``model_io.load_model`` and ``inference.predict_array``, one CPU thread unless ``--threads`` says
otherwise), and the script reports:

- Dice of ``p >= 0.5`` against the raters' consensus (at least half of the raters),
- the QUBIQ score against the raters (``p > t`` at t = 0.1 … 0.9, vs the mean of the raters),
- the share of the predicted volume (``p >= 0.5``) outside the brain (the template's brain mask:
  skull-stripped T1 > 0.2, filled — nilearn's rule; nilearn ships no separate mask or CSF map) and
  outside the head (the noise-free head image > 0.02, holes filled in 3D and per axial slice), and the
  share of ``p >= 0.1`` outside the head (noise marked faintly in the air),
- the predicted and the consensus volumes in mL,
- seconds to predict (and to build the scan).

Example::

    python scripts/eval_whole_head.py --spacing 1.0 2.0 --json /tmp/whole_head.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import make_full_sample as sample  # noqa: E402  (the bundled whole-head sample's anatomy, scan and raters)

from napari_softseg.analysis.consensus import consensus_mask, describe  # noqa: E402
from napari_softseg.analysis.metrics import dice, qubiq_score, volume_ml  # noqa: E402
from napari_softseg.errors import SoftsegError  # noqa: E402

DEFAULT_MODEL = REPO / "napari_softseg" / "data" / "models" / "mni_demo"
EVAL_SEED = 1_522_009  # not the sample's (make_full_sample.SEED)
THRESHOLD = 0.5
LOW_THRESHOLD = 0.1
COLUMNS = (
    ("spacing_mm", "mm", "{:.2f}"),
    ("shape", "shape", "{}"),
    ("dice_at_0_5", "Dice@0.5", "{:.3f}"),
    ("qubiq_score", "QUBIQ", "{:.3f}"),
    ("outside_brain_share", "out brain", "{:.1%}"),
    ("outside_head_share", "out head", "{:.1%}"),
    ("outside_head_share_low", "out head @0.1", "{:.2%}"),
    ("predicted_ml", "pred mL", "{:.0f}"),
    ("consensus_ml", "cons mL", "{:.0f}"),
    ("predict_seconds", "pred s", "{:.1f}"),
    ("build_seconds", "build s", "{:.1f}"),
)


def share(part: int, whole: int) -> float:
    """``part / whole``; 0 when nothing was predicted (nothing can lie outside)."""
    return float(part) / float(whole) if whole else 0.0


def evaluate_spacing(model, templates, head, spacing: float, *, seed: int = EVAL_SEED,
                     device: str = "cpu") -> dict:
    """Build the whole head at ``spacing`` mm, predict it with ``model`` and measure the prediction.

    Args:
        model: A :class:`~napari_softseg.model.model_io.LoadedModel`.
        templates: From ``make_full_sample.load_templates()``.
        head: From ``make_full_sample.build_head(templates)``.
        spacing: Isotropic voxel size in mm.
        seed: Seed of the raters, bias field and noise.
        device: Where to predict (``"cpu"``, ``"cuda"``, ``"auto"``, ...).

    Returns:
        One JSON-ready row (the keys of :data:`COLUMNS` and a few more).
    """
    from napari_softseg.model.inference import predict_array
    from napari_softseg.progress import drive

    start = time.perf_counter()
    case = sample.make_head_case(templates, head, spacing, np.random.default_rng(seed), pose=False)
    head_voxels = sample.head_mask(case.clean)
    consensus = consensus_mask(case.masks)
    build_seconds = time.perf_counter() - start

    image = case.image.astype(np.float32)[None]  # as load_case gives it: (C, X, Y, Z) float32
    start = time.perf_counter()
    prediction = drive(predict_array(model, image, device=device, source=f"whole head at {spacing} mm",
                                     spacing=(spacing,) * 3))
    predict_seconds = time.perf_counter() - start
    del image

    spacing3 = (spacing,) * 3
    predicted = prediction >= np.float32(THRESHOLD)
    n_predicted = int(np.count_nonzero(predicted))
    hits = int(np.count_nonzero(predicted & consensus))
    n_consensus = int(np.count_nonzero(consensus))
    return {
        "spacing_mm": spacing,
        "shape": "x".join(str(n) for n in case.image.shape),
        "dice_at_0_5": dice(predicted, consensus),
        "precision_at_0_5": share(hits, n_predicted) if n_predicted else 1.0,
        "recall_at_0_5": share(hits, n_consensus) if n_consensus else 1.0,
        "qubiq_score": qubiq_score(prediction, case.masks)[0],
        "outside_brain_share": share(np.count_nonzero(predicted & ~case.brain), n_predicted),
        "outside_head_share": share(np.count_nonzero(predicted & ~head_voxels), n_predicted),
        # the faint tail a low threshold (or the 3D surface at it) shows: noise marked in the air
        "outside_head_share_low": share(np.count_nonzero((prediction >= np.float32(LOW_THRESHOLD)) & ~head_voxels),
                                        np.count_nonzero(prediction >= np.float32(LOW_THRESHOLD))),
        "predicted_ml": volume_ml(predicted, spacing3),
        "consensus_ml": volume_ml(consensus, spacing3),
        "brain_ml": volume_ml(case.brain, spacing3),
        "head_ml": volume_ml(head_voxels, spacing3),
        "predict_seconds": predict_seconds,
        "build_seconds": build_seconds,
        "seed": seed,
        "scan": case.recipe["scan"],
        "raters": case.recipe["raters"],
    }


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (the columns of :data:`COLUMNS`)."""
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="model folder (default: the bundled demo model)")
    parser.add_argument("--spacing", type=float, nargs="+", default=[1.0], metavar="MM",
                        help="isotropic voxel sizes in mm (default 1.0: the template's 197 x 233 x 189 grid)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help=f"raters/bias/noise seed (default {EVAL_SEED})")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    bad = [s for s in args.spacing if not (math.isfinite(s) and 0.25 <= s <= 8.0)]
    if bad:
        print(f"--spacing {bad[0]}: expected 0.25 to 8 mm", file=sys.stderr)
        return 2
    if args.seed == sample.SEED:
        print(f"--seed {args.seed} is the bundled sample's seed; pick another", file=sys.stderr)
        return 2
    if args.json is not None and not args.json.parent.is_dir():
        print(f"{args.json}: its folder does not exist", file=sys.stderr)
        return 2

    import torch

    from napari_softseg.model.model_io import load_model

    torch.set_num_threads(max(1, args.threads))
    try:
        model = load_model(args.model)
    except SoftsegError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    templates = sample.load_templates()
    head = sample.build_head(templates)
    print(f"head built in {time.perf_counter() - start:.1f} s; model {args.model}", file=sys.stderr)
    rows = []
    for spacing in args.spacing:
        print(f"{spacing} mm: building, predicting, measuring ...", file=sys.stderr)
        rows.append(evaluate_spacing(model, templates, head, spacing, seed=args.seed, device=args.device))
    print(format_table(rows))
    print(f"{describe(len(rows[0]['raters']))}; outside shares are of the predicted volume (p >= 0.5)")
    if args.json is not None:
        report = {
            "model": str(args.model),
            "architecture": model.config.architecture,
            "temperature": model.config.temperature,
            "threads": torch.get_num_threads(),
            "device": args.device,
            "torch": torch.__version__,
            "threshold": THRESHOLD,
            "head": head.params,
            "results": rows,
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
