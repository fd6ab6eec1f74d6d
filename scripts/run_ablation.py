"""The soft-label ablation of docs/results.md: mean vs smoothed soft labels vs majority-vote hard labels.

For each dataset (the bundled real-MRI demo set and a synthetic phantom set) and each label method, one
model is trained with identical settings and seed (only ``--softlabel`` differs), a temperature is fitted
on its internal validation cases, and the model is scored on held-out cases it never saw (the datasets'
``Validation/`` folders):

- QUBIQ score of the model against the mean of all raters, and ECE (10 bins, vs the mean of the raters),
  with the raw (T = 1) and the temperature-scaled probabilities;
- the inter-rater baseline: each rater's mask scored (QUBIQ) against the mean of the *other* raters, next
  to the model scored against that same reference;
- the leave-one-rater-out Dice: each rater vs. the consensus of the others, and the model's mask
  (p >= 0.5) vs. the same consensus (``metrics.evaluate_case``);
- a reliability diagram per dataset (``docs/img/reliability_<dataset>.png``).

Usage (about 20-30 minutes on 2 CPU cores)::

    python scripts/run_ablation.py --work /tmp/softseg_ablation

The last printed line is JSON with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("mean", "smoothed", "majority")


def evaluate_model(model_dir: Path, cases) -> dict:
    """Held-out numbers of one model over a list of :class:`napari_softseg.io.dataset.Case`."""
    from napari_softseg.model.calibration import sigmoid
    from napari_softseg.io.dataset import load_case
    from napari_softseg.model.inference import predict_logits
    from napari_softseg.analysis.metrics import evaluate_case, expected_calibration_error, qubiq_score, reliability
    from napari_softseg.model.model_io import load_model
    from napari_softseg.progress import drive

    model = load_model(model_dir)
    temperature = model.config.temperature
    per_case, pooled_p, pooled_raw, pooled_t = [], [], [], []
    for case in cases:
        data = load_case(case, task=model.config.task)
        logits = drive(predict_logits(model.network, model.config, data.image, device="cpu"))
        raw, scaled = sigmoid(logits), sigmoid(logits, temperature)
        mean = data.masks.mean(axis=0, dtype=np.float32)
        report = evaluate_case(scaled, data.masks, data.rater_names, data.spacing)
        r = data.masks.shape[0]
        rater_qubiq, model_qubiq_same_ref = [], []
        for i in range(r):
            others = np.delete(data.masks, i, axis=0)
            rater_qubiq.append(qubiq_score(data.masks[i].astype(np.float32), others)[0])
            model_qubiq_same_ref.append(qubiq_score(scaled, others)[0])
        per_case.append({
            "case": data.name,
            "qubiq": report["qubiq_score"],
            "qubiq_raw": qubiq_score(raw, data.masks)[0],
            "ece_raw": expected_calibration_error(raw, mean),
            "ece": report["ece"],
            "rater_qubiq_vs_others": float(np.mean(rater_qubiq)),
            "model_qubiq_vs_others": float(np.mean(model_qubiq_same_ref)),
            "rater_loro_dice": float(np.mean([row["dice_vs_others"] for row in report["raters"]])),
            "model_loro_dice": float(np.mean([row["model_dice_vs_same"] for row in report["raters"]])),
            "model_beats_raters": report["model_beats_raters"],
            "n_raters": r,
        })
        pooled_p.append(scaled.ravel())
        pooled_raw.append(raw.ravel())
        pooled_t.append(mean.ravel())
    keys = [k for k in per_case[0] if k not in ("case", "model_beats_raters", "n_raters")]
    summary = {k: float(np.mean([c[k] for c in per_case])) for k in keys}
    summary["model_beats_raters"] = f"{sum(c['model_beats_raters'] for c in per_case)}/{sum(c['n_raters'] for c in per_case)}"
    summary["temperature"] = temperature
    summary["reliability"] = {k: np.asarray(v).tolist() for k, v in
                              reliability(np.concatenate(pooled_p), np.concatenate(pooled_t)).items()}
    summary["reliability_raw"] = {k: np.asarray(v).tolist() for k, v in
                                  reliability(np.concatenate(pooled_raw), np.concatenate(pooled_t)).items()}
    summary["per_case"] = per_case
    return summary


def plot_reliability(results: dict, title: str, path: Path) -> None:
    """One reliability diagram: a curve per method, solid = temperature-scaled, dashed = raw (T = 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="perfect calibration")
    for index, (method, res) in enumerate(results.items()):
        colour = f"C{index}"
        for key, style, label in (("reliability", "-", f"{method}, T={res['temperature']:.2f} (ECE {res['ece']:.4f})"),
                                  ("reliability_raw", "--", f"{method}, raw (ECE {res['ece_raw']:.4f})")):
            rel = res[key]
            keep = np.asarray(rel["count"], dtype=float) > 0
            ax.plot(np.asarray(rel["mean_pred"])[keep], np.asarray(rel["mean_target"])[keep], ls=style, color=colour,
                    marker="o", ms=3, lw=1.2, label=label)
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("mean of raters (bin mean)")
    ax.set_title(title, fontsize=9)
    fig.set_size_inches(5.2, 4.8)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run(dataset: Path, name: str, work: Path, train_args: dict, img_dir: Path) -> dict:
    from napari_softseg.io.dataset import discover
    from napari_softseg.progress import drive
    from napari_softseg.model.training import train

    held_out = discover(dataset).split("Validation")
    results = {}
    for method in METHODS:
        out = work / f"{name}_{method}"
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = drive(train(dataset, out, softlabel=method, calibrate=True, overwrite=True, **train_args))
        seconds = time.monotonic() - started
        res = evaluate_model(out, held_out)
        res.update(train_seconds=round(seconds, 1), epochs=result.epochs_done, best_epoch=result.best_epoch,
                   val_ece_before=result.calibration["ece_before"], val_ece_after=result.calibration["ece_after"])
        results[method] = res
        print(f"[{name}] {method:9s} train {seconds:5.0f} s  held-out QUBIQ {res['qubiq']:.4f}  "
              f"ECE raw {res['ece_raw']:.4f} -> T={res['temperature']:.2f} {res['ece']:.4f}  "
              f"raters vs others {res['rater_qubiq_vs_others']:.4f} / model vs same {res['model_qubiq_vs_others']:.4f}  "
              f"LORO Dice raters {res['rater_loro_dice']:.4f} model {res['model_loro_dice']:.4f} "
              f"(beats {res['model_beats_raters']})", flush=True)
    plot_reliability(results, f"{name}: held-out reliability vs mean of raters", img_dir / f"reliability_{name}.png")
    return results


def table(all_results: dict) -> str:
    lines = ["| dataset | labels | held-out QUBIQ | ECE raw | ECE (T) | T | rater vs others (QUBIQ) | model vs same | "
             "LORO Dice raters | LORO Dice model | model beats | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, results in all_results.items():
        for method, r in results.items():
            lines.append(
                f"| {name} | {method} | {r['qubiq']:.4f} | {r['ece_raw']:.4f} | {r['ece']:.4f} | {r['temperature']:.2f} | "
                f"{r['rater_qubiq_vs_others']:.4f} | {r['model_qubiq_vs_others']:.4f} | {r['rater_loro_dice']:.4f} | "
                f"{r['model_loro_dice']:.4f} | {r['model_beats_raters']} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/softseg_ablation"), help="models and data go here")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img", help="where the reliability PNGs go")
    parser.add_argument("--datasets", default="mni,synthetic")
    parser.add_argument("--mni-epochs", type=int, default=12)
    parser.add_argument("--synthetic-epochs", type=int, default=100)
    args = parser.parse_args(argv)

    from napari_softseg.synthetic import write_qubiq_dataset

    common = dict(task=1, loss="bce", base_channels=8, depth=4, seed=0, device="cpu")
    all_results = {}
    for name in args.datasets.split(","):
        if name == "mni":
            dataset = ROOT / "napari_softseg" / "data" / "mni_demo"
            all_results[name] = run(dataset, name, args.work, {**common, "epochs": args.mni_epochs}, args.img)
        elif name == "synthetic":
            dataset = args.work / "synthetic_data"
            if not dataset.exists():
                # 2D phantoms, 4 raters (one generous, some missing small structures), 96 x 96
                write_qubiq_dataset(dataset, n_cases=24, n_validation=8, shape=(96, 96, 1), n_raters=4, seed=7)
            all_results[name] = run(dataset, name, args.work, {**common, "epochs": args.synthetic_epochs}, args.img)
        else:
            parser.error(f"unknown dataset {name}")
    print()
    print(table(all_results))
    slim = {n: {m: {k: v for k, v in r.items() if k not in ("reliability", "reliability_raw", "per_case")} for m, r in res.items()}
            for n, res in all_results.items()}
    (args.work / "ablation.json").write_text(json.dumps(all_results, indent=1))
    print(json.dumps(slim))
    return 0


if __name__ == "__main__":
    sys.exit(main())
