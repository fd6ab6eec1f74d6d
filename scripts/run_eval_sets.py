"""Section 2 of docs/results.md: the default ``softseg train`` command on sets it was not designed on.

For each set made by ``scripts/make_eval_sets.py`` (one slice per case; MNI template cuts at other
orientations, spacings, structures and rater counts, and phantoms with 2 channels and 2 or 4 raters),
runs exactly what a user would::

    softseg train SET --task 1 --out WORK/SET --max-minutes M --overwrite --quiet

then scores every held-out ``Validation/`` case with ``run_ablation.evaluate_model`` (QUBIQ vs all raters,
ECE vs the mean of the raters, raw and temperature-scaled, leave-one-rater-out Dice). One heavy job at a
time: run it on an otherwise idle machine, since the budget is wall-clock time.

Usage::

    python scripts/make_eval_sets.py /tmp/trainsets
    python scripts/run_eval_sets.py /tmp/trainsets --minutes 8 [--sets mni_wm_axial,synth_r2] [--work /tmp/evalsets]

Prints one markdown row per set and, last, a JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))


def run_one(dataset: Path, out: Path, minutes: float) -> dict:
    """Train with the default CLI command and score the held-out cases."""
    from run_ablation import evaluate_model

    from napari_softseg.io.dataset import discover
    from napari_softseg.model.model_io import read_config

    softseg = Path(sys.executable).with_name("softseg")
    cmd = [str(softseg) if softseg.exists() else "softseg", "train", str(dataset), "--task", "1", "--out",
           str(out), "--max-minutes", f"{minutes:g}", "--overwrite", "--quiet"]
    print(" ".join(cmd), flush=True)
    started = time.monotonic()
    subprocess.run(cmd, check=True)
    wall = time.monotonic() - started
    res = evaluate_model(out, discover(dataset).split("Validation"))
    training = read_config(out).training
    res = {k: v for k, v in res.items() if k not in ("reliability", "reliability_raw", "per_case")}
    res.update(set=dataset.name, minutes=minutes, wall_s=round(wall), steps=training.get("steps"),
               stopped=training.get("stopped"), load_after=round(os.getloadavg()[0], 2))
    return res


def row(r: dict) -> str:
    return (f"| `{r['set']}` | {r['minutes']:g} min ({r['wall_s']} s wall, {r['stopped']}) | {r['steps']} | "
            f"**{r['qubiq']:.4f}** | {r['ece_raw']:.4f} → **{r['ece']:.4f}** | {r['temperature']:.2f} | "
            f"{r['rater_loro_dice']:.4f} → **{r['model_loro_dice']:.4f}** | {r['model_beats_raters']} | "
            f"{r['load_after']:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", type=Path, help="folder made by scripts/make_eval_sets.py")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--sets", dest="names", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/evalsets"))
    args = parser.parse_args(argv)
    names = args.names.split(",") if args.names else sorted(p.name for p in args.sets.iterdir() if p.is_dir())
    results = [run_one(args.sets / n, args.work / n, args.minutes) for n in names]
    print("| set | budget | steps | held-out QUBIQ | ECE raw → T-scaled | T | LORO Dice raters → model | "
          "model beats | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(row(r))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
