"""The table of docs/results.md §1: a model on the bundled demo slabs' held-out ``Validation/`` cases.

Usage (from the repository root)::

    python scripts/eval_demo_model.py [--model DIR] [--json OUT]

For each of the 4 held-out cases (5 white-matter raters each) the model predicts the scan as ``softseg
predict`` does (``inference.predict_array`` at the case's voxel size, calibrated) and the script prints:

- QUBIQ score of the model against the mean of the 5 raters;
- each rater's binary mask scored (QUBIQ) against the mean of the other four, averaged over raters, and the
  model scored against the same four-rater means;
- leave-one-rater-out Dice (``metrics.leave_one_rater_out``): each rater and the model's ``p >= 0.5``
  against the consensus of the other raters, and how many of those comparisons the model wins;
- ECE (10 bins, vs the mean of the raters) of the raw sigmoid (temperature 1) and of the calibrated map.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from napari_softseg.analysis.metrics import evaluate_case, expected_calibration_error, qubiq_score  # noqa: E402
from napari_softseg.analysis.softlabels import weighted_mean  # noqa: E402
from napari_softseg.datasets.bundled import demo_dataset_path, demo_model_path  # noqa: E402
from napari_softseg.io.dataset import discover, load_case  # noqa: E402
from napari_softseg.model.inference import predict_array  # noqa: E402
from napari_softseg.model.model_io import load_model  # noqa: E402


def _run(gen):
    """Drive a progress generator to its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def evaluate(model_dir: Path) -> dict:
    """Per-case rows and their mean for ``model_dir`` on the demo ``Validation/`` cases."""
    import torch

    torch.set_num_threads(1)
    model = load_model(model_dir)
    raw = dataclasses.replace(model, config=dataclasses.replace(model.config, temperature=1.0))
    rows = []
    for case in discover(demo_dataset_path()).split("Validation"):
        data = load_case(case, task=model.config.task)
        masks = data.masks != 0
        prob = _run(predict_array(model, data.image, device="cpu", spacing=data.spacing))
        prob_raw = _run(predict_array(raw, data.image, device="cpu", spacing=data.spacing))
        report = evaluate_case(prob, masks, data.rater_names, data.spacing)
        r = masks.shape[0]
        rater_q, model_q = [], []
        for i in range(r):
            others = np.delete(masks, i, axis=0)
            rater_q.append(qubiq_score(masks[i].astype(np.float32), others)[0])
            model_q.append(qubiq_score(prob, others)[0])
        rows.append({
            "case": Path(case.name).name,
            "qubiq": report["qubiq_score"],
            "rater_vs_others_qubiq": float(np.mean(rater_q)),
            "model_vs_same_qubiq": float(np.mean(model_q)),
            "loro_dice_raters": float(np.mean([row["dice_vs_others"] for row in report["raters"]])),
            "loro_dice_model": float(np.mean([row["model_dice_vs_same"] for row in report["raters"]])),
            "model_beats": int(report["model_beats_raters"]),
            "comparisons": r,
            "ece_raw": expected_calibration_error(prob_raw, weighted_mean(masks), 10),
            "ece": report["ece"],
        })
    keys = [k for k in rows[0] if k not in ("case", "model_beats", "comparisons")]
    mean = {k: float(np.mean([row[k] for row in rows])) for k in keys}
    mean["model_beats"] = sum(row["model_beats"] for row in rows)
    mean["comparisons"] = sum(row["comparisons"] for row in rows)
    return {"model": str(model_dir), "temperature": model.config.temperature, "cases": rows, "mean": mean}


def markdown(result: dict) -> str:
    """The §1 table."""
    lines = ["| case | QUBIQ (model vs mean of 5 raters) | rater vs mean of the other 4 (QUBIQ, mean over raters)"
             " | model vs the same means | LORO Dice: raters | LORO Dice: model | model beats"
             " | ECE raw → T-scaled |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def row(name, v, bold=False):
        cells = [f"{v['qubiq']:.4f}", f"{v['rater_vs_others_qubiq']:.4f}", f"{v['model_vs_same_qubiq']:.4f}",
                 f"{v['loro_dice_raters']:.4f}", f"{v['loro_dice_model']:.4f}",
                 f"{v['model_beats']}/{v['comparisons']}", f"{v['ece_raw']:.4f} → {v['ece']:.4f}"]
        if bold:
            cells = [f"**{c}**" for c in cells]
            name = f"**{name}**"
        return "| " + " | ".join([name, *cells]) + " |"

    lines += [row(r["case"], r) for r in result["cases"]]
    lines.append(row("mean", result["mean"], bold=True))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=demo_model_path(), help="model folder (default: the bundled one)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = evaluate(args.model)
    print(f"model {args.model} (temperature {result['temperature']:.3f})")
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
