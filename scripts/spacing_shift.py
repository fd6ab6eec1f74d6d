"""The spacing-shift table of docs/results.md: train at the native voxel size, predict at 0.5×, 1× and 2× it.

Usage (from the repository root; the sets come from ``scripts/make_eval_sets.py``)::

    python scripts/make_eval_sets.py /tmp/trainsets --only mni_wm_axial mni_gm_coronal mni_wm_sagittal
    python scripts/spacing_shift.py /tmp/trainsets --sets mni_wm_axial,mni_gm_coronal,mni_wm_sagittal \\
        --epochs 12 --work /tmp/spacing_shift [--json OUT]

For each set the default ``softseg train`` recipe is run at the set's own voxel size (``--epochs`` fixes
the length so the figure does not depend on the machine's load; ``--reuse`` keeps a model already in
``--work``). Every held-out ``Validation/`` case is then moved to 0.5×, 1× and 2× its voxel size —
image by cubic resampling (anti-aliased when coarsening: a coarser acquisition), each rater's mask by
linear resampling kept at ``>= 0.5`` — and predicted twice:

- **resampled** (v0.3): ``predict_array(..., spacing=...)`` resamples the scan to the model's target
  spacing and the probabilities back, as every ``softseg predict`` path now does;
- **native grid** (v0.2): the network runs on the scan's own grid, as before.

Reported per set and shift: the mean QUBIQ score against the resampled raters and the expected
calibration error against their mean (temperature-scaled), and the drop from the 1× figure. Prints a
markdown table and, last, a JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FACTORS = (0.5, 1.0, 2.0)


def shifted(data, factor: float):
    """``(image, masks, spacing)`` of a loaded case at ``factor`` × its voxel size (in-plane axes only)."""
    from napari_softseg.model.resampling import resample_image, resample_masks

    axes = tuple(a for a in range(3) if data.image.shape[1 + a] > 1)
    target = tuple(s * factor if a in axes else s for a, s in enumerate(data.spacing))
    image, zooms = resample_image(data.image, data.spacing, target, axes=axes)
    masks, _ = resample_masks(data.masks, data.spacing, target, axes=axes, binary=True)
    return image, masks, zooms


def evaluate(model_dir: Path, cases) -> dict:
    """Per shift and mode, the mean QUBIQ and ECE over ``cases``."""
    from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score
    from napari_softseg.io.dataset import load_case
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import load_model
    from napari_softseg.progress import drive

    model = load_model(model_dir)
    out: dict = {}
    for factor in FACTORS:
        for mode in ("resampled", "native_grid"):
            scores, eces = [], []
            for case in cases:
                data = load_case(case, task=model.config.task)
                image, masks, spacing = shifted(data, factor)
                prob = drive(predict_array(model, image, device="cpu",
                                           spacing=spacing if mode == "resampled" else None))
                scores.append(qubiq_score(prob, masks)[0])
                eces.append(expected_calibration_error(prob, masks.mean(axis=0, dtype=np.float32)))
            out[f"{factor:g}x/{mode}"] = {"qubiq": float(np.mean(scores)), "ece": float(np.mean(eces)),
                                          "cases": len(scores)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets_dir", type=Path)
    parser.add_argument("--sets", default="mni_wm_axial,mni_gm_coronal,mni_wm_sagittal")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/spacing_shift"))
    parser.add_argument("--reuse", action="store_true", help="keep models already trained in --work")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: a shared machine)")
    args = parser.parse_args(argv)

    import torch

    from napari_softseg.io.dataset import discover
    from napari_softseg.model.model_io import read_config
    from napari_softseg.model.training import train
    from napari_softseg.progress import drive

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.sets.split(","):
        dataset = args.sets_dir / name
        out = args.work / name
        started = time.monotonic()
        if not (args.reuse and (out / "config.json").is_file()):
            drive(train(dataset, out, task=1, epochs=args.epochs, seed=0, device="cpu", overwrite=True))
        config = read_config(out)
        result = evaluate(out, discover(dataset).split("Validation"))
        rows.append({"set": name, "target_spacing": config.target_spacing, "seconds": round(time.monotonic() - started),
                     **result})
        print(json.dumps(rows[-1]), flush=True)

    print("\n| set (trained at) | shift | QUBIQ resampled (drop) | ECE resampled | QUBIQ native grid (drop) | "
          "ECE native grid |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = {m: r[f"1x/{m}"]["qubiq"] for m in ("resampled", "native_grid")}
        trained = "x".join(f"{v:g}" for v in r["target_spacing"] or [])
        for factor in FACTORS:
            cells = []
            for mode in ("resampled", "native_grid"):
                q, e = r[f"{factor:g}x/{mode}"]["qubiq"], r[f"{factor:g}x/{mode}"]["ece"]
                cells += [f"{q:.4f} ({q - base[mode]:+.4f})", f"{e:.4f}"]
            print(f"| `{r['set']}` ({trained} mm) | {factor:g}× | " + " | ".join(cells) + " |")
    print(json.dumps(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
