"""Table 1 of docs/results.md: mean vs smoothed soft labels vs majority-vote hard labels, >= 3 seeds per row.

For each dataset and each label method, models are trained with the **default recipe** (the planned
network, step-based epochs, poly learning rate ending at the time budget, best epoch on the internal
validation split, temperature scaling on it) — only ``--softlabel`` and the seed differ — and scored on
held-out cases none of them saw (the datasets' ``Validation/`` folders):

- QUBIQ score of the model against all raters, and ECE (10 bins, vs the mean of the raters), with the raw
  (T = 1) and the temperature-scaled probabilities;
- the inter-rater baseline: each rater's mask scored (QUBIQ) against the mean of the *other* raters, next
  to the model scored against that same reference;
- the leave-one-rater-out Dice: each rater vs the consensus of the others, and the model's mask
  (p >= 0.5) vs the same consensus (``metrics.evaluate_case``);
- a reliability diagram per dataset (``docs/img/reliability_<dataset>.png``, seed 0).

Datasets: ``mni`` (the bundled real-MRI demo set: 12 training cases of 16 slices, 4 held out),
``synthetic`` (phantoms with 8 slices of 2.5 mm per case, 4 raters: 16 training, 6 held out) and
``synthetic1`` (phantoms with ONE slice per case, 4 raters: 24 training, 8 held out).

Each row is the mean ± sd over the seeds. Every model gets the same short budget (``--minutes``, default
1.5) so the 27 runs fit in under an hour on 2 CPU cores: the numbers are those of short trainings, not of
the shipped model. ``--write-docs`` replaces Table 1 in docs/results.md (between its markers) with the
table printed here.

Usage::

    python scripts/run_ablation.py --work /tmp/softseg_ablation [--minutes 1.5 | --steps 150] [--seeds 0 1 2] [--write-docs]
    python scripts/run_ablation.py --from-json /tmp/softseg_ablation/ablation.json --write-docs   # re-render only

The last printed line is JSON with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("mean", "smoothed", "majority")


def evaluate_model(model_dir: Path, cases) -> dict:
    """Held-out numbers of one model over a list of :class:`napari_softseg.io.dataset.Case`."""
    from napari_softseg.analysis.metrics import evaluate_case, expected_calibration_error, qubiq_score, reliability
    from napari_softseg.io.dataset import load_case
    from napari_softseg.model.calibration import sigmoid
    from napari_softseg.model.inference import predict_logits
    from napari_softseg.model.model_io import load_model
    from napari_softseg.progress import drive

    model = load_model(model_dir)
    temperature = model.config.temperature
    per_case, pooled_p, pooled_raw, pooled_t = [], [], [], []
    for case in cases:
        data = load_case(case, task=model.config.task)
        logits = drive(predict_logits(model.network, model.config, data.image, device="cpu", spacing=data.spacing))
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


DATASETS = {
    "synthetic": dict(n_cases=16, n_validation=6, shape=(96, 96, 8), n_raters=4, seed=7),
    "synthetic1": dict(n_cases=24, n_validation=8, shape=(96, 96, 1), n_raters=4, seed=7),
}
ROW_KEYS = ("qubiq", "ece_raw", "ece", "temperature", "rater_qubiq_vs_others", "model_qubiq_vs_others",
            "rater_loro_dice", "model_loro_dice", "steps")
START, END = "<!-- table1:start -->", "<!-- table1:end -->"


def run(dataset: Path, name: str, work: Path, minutes: float, seeds, img_dir: Path, steps: int | None = None) -> dict:
    """Every method x seed on one dataset: ``{method: [result per seed]}``."""
    from napari_softseg.io.dataset import discover
    from napari_softseg.model.training import train
    from napari_softseg.progress import drive

    held_out = discover(dataset).split("Validation")
    results: dict = {m: [] for m in METHODS}
    for seed in seeds:
        for method in METHODS:
            out = work / f"{name}_{method}_s{seed}"
            started = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                budget = dict(max_minutes=minutes) if steps is None else dict(epochs=1, steps_per_epoch=steps)
                result = drive(train(dataset, out, softlabel=method, seed=seed, device="cpu", overwrite=True, **budget))
            seconds = time.monotonic() - started
            res = evaluate_model(out, held_out)
            res.update(train_seconds=round(seconds, 1), epochs=result.epochs_done, best_epoch=result.best_epoch,
                       steps=result.steps, stopped=result.stopped, seed=seed)
            results[method].append(res)
            print(f"[{name}] {method:9s} seed {seed} train {seconds:4.0f} s ({result.steps} steps)  held-out QUBIQ "
                  f"{res['qubiq']:.4f}  ECE raw {res['ece_raw']:.4f} -> T={res['temperature']:.2f} {res['ece']:.4f}  "
                  f"LORO Dice raters {res['rater_loro_dice']:.4f} model {res['model_loro_dice']:.4f} "
                  f"(beats {res['model_beats_raters']})  load {os.getloadavg()[0]:.1f}", flush=True)
    plot_reliability({m: r[0] for m, r in results.items()}, f"{name}: held-out reliability vs mean of raters (seed 0)",
                     img_dir / f"reliability_{name}.png")
    return results


def _ms(values, digits=4) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}"


def table(all_results: dict) -> str:
    """Table 1 (markdown): one row per dataset x method, mean ± sd over the seeds."""
    lines = ["| dataset | labels | seeds | held-out QUBIQ | ECE raw (T = 1) | ECE (T) | T | rater vs others (QUBIQ) | "
             "model vs same | LORO Dice raters | LORO Dice model | model beats | steps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, results in all_results.items():
        for method, runs in results.items():
            col = {k: [r[k] for r in runs] for k in ROW_KEYS}
            beats = [tuple(int(x) for x in r["model_beats_raters"].split("/")) for r in runs]
            lines.append(
                f"| {name} | {method} | {len(runs)} | {_ms(col['qubiq'])} | {_ms(col['ece_raw'])} | {_ms(col['ece'])} | "
                f"{_ms(col['temperature'], 2)} | {np.mean(col['rater_qubiq_vs_others']):.4f} | "
                f"{_ms(col['model_qubiq_vs_others'])} | {np.mean(col['rater_loro_dice']):.4f} | "
                f"{_ms(col['model_loro_dice'])} | {sum(b[0] for b in beats)}/{sum(b[1] for b in beats)} | "
                f"{np.mean(col['steps']):.0f} |")
    return "\n".join(lines)


def write_docs(text: str, path: Path) -> None:
    """Replace the text between the Table 1 markers of docs/results.md."""
    doc = path.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/softseg_ablation"), help="models and data go here")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img", help="where the reliability PNGs go")
    parser.add_argument("--datasets", default="mni,synthetic,synthetic1")
    parser.add_argument("--minutes", type=float, default=1.5, help="time budget of each training run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None,
                        help="train a fixed number of optimizer steps instead of --minutes (load-independent quality)")
    parser.add_argument("--write-docs", action="store_true", help="put Table 1 into docs/results.md")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="render Table 1 from a finished run's ablation.json instead of training")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        all_results = json.loads(args.from_json.read_text())
        runs = sum(len(r) for res in all_results.values() for r in res.values())
        steps = sorted({r["steps"] for res in all_results.values() for rs in res.values() for r in rs})
        text = table(all_results) + (
            f"\n\n_{runs} runs of {'/'.join(map(str, steps))} steps each, rendered from that run's "
            f"`ablation.json` by `python scripts/run_ablation.py {' '.join(sys.argv[1:])}`._")
        print(text)
        if args.write_docs:
            write_docs(text, ROOT / "docs" / "results.md")
        return 0

    from napari_softseg.datasets.synthetic import write_qubiq_dataset

    all_results = {}
    started = time.monotonic()
    load = os.getloadavg()
    for name in args.datasets.split(","):
        if name == "mni":
            dataset = ROOT / "napari_softseg" / "data" / "mni_demo"
        elif name in DATASETS:
            dataset = args.work / f"{name}_data"
            if not dataset.exists():
                write_qubiq_dataset(dataset, **DATASETS[name])
        else:
            parser.error(f"unknown dataset {name}")
        all_results[name] = run(dataset, name, args.work, args.minutes, args.seeds, args.img, args.steps)
        # the table so far, after each dataset (a long run interrupted keeps its finished datasets)
        (args.work / "table1_partial.md").write_text(table(all_results) + "\n")
    text = table(all_results)
    footer = (f"\n\n_{sum(len(r) for res in all_results.values() for r in res.values())} runs of " + (
              f"{args.minutes:g} min each" if args.steps is None else f"{args.steps} steps each") + (f", seeds {' '.join(map(str, args.seeds))}; "
              f"{(time.monotonic() - started) / 60:.0f} min in all on {os.cpu_count()} shared CPU cores, load average "
              f"{load[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end. Produced by "
              f"`python scripts/run_ablation.py {' '.join(sys.argv[1:])}`._"))
    print()
    print(text + footer)
    if args.write_docs:
        write_docs(text + footer, ROOT / "docs" / "results.md")
    (args.work / "ablation.json").write_text(json.dumps(all_results, indent=1))
    slim = {n: {m: [{k: v for k, v in r.items() if k not in ("reliability", "reliability_raw", "per_case")} for r in runs]
                for m, runs in res.items()} for n, res in all_results.items()}
    print(json.dumps(slim))
    return 0


if __name__ == "__main__":
    sys.exit(main())
