"""Quality against wall time: ``softseg train`` vs a plain MONAI UNet baseline, same budget, same data, one run.

Data: a synthetic QUBIQ-shaped 2D dataset with **one slice per case**
(``synthetic.write_qubiq_dataset(n_cases=24, n_validation=8, shape=(128, 128, 1), n_raters=4, seed=21)``).
Both models train on its ``Training/`` cases for the same wall-clock budget on the CPU and are scored on its
``Validation/`` cases, which neither saw:

- **softseg**: the default recipe (:func:`napari_softseg.model.training.train` with ``max_minutes`` = the
  budget: planned patch/batch/network, step-based epochs, poly LR to the budget, best epoch on the
  internal validation split, temperature scaling);
- **monai**: ``monai.networks.nets.UNet`` (channels 16-32-64-128, strides 2, 2 residual units), BCE
  against the mean of the raters, random flips + intensity scale/shift jitter, Adam 1e-3, batch 8 of
  whole slices, trained on all ``Training/`` cases until the same budget is spent; raw probabilities.

Held-out QUBIQ score (vs the raters' masks) and ECE (10 bins, vs the mean of the raters) are the mean over
cases. The last line is JSON ``{"softseg_qubiq", "monai_qubiq", "softseg_ece", "monai_ece", "budget_s", ...}``.

Usage::

    python benchmarks/bench_training.py [--minutes 2] [--work /tmp/bench_training]
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
sys.path.insert(0, str(ROOT))


def held_out_scores(prob_maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    """Mean QUBIQ score and mean ECE over the held-out cases."""
    from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score

    q = [qubiq_score(p, m)[0] for p, m in zip(prob_maps, masks)]
    e = [expected_calibration_error(p, m.mean(axis=0, dtype=np.float32)) for p, m in zip(prob_maps, masks)]
    return float(np.mean(q)), float(np.mean(e))


def run_softseg(dataset: Path, out: Path, budget_s: float, val_cases) -> dict:
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import load_model
    from napari_softseg.model.training import train
    from napari_softseg.progress import drive

    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = drive(train(dataset, out, max_minutes=budget_s / 60, device="cpu", overwrite=True))
    seconds = time.monotonic() - started
    model = load_model(out)
    probs = [drive(predict_array(model, c.image, device="cpu", spacing=c.spacing)) for c in val_cases]
    q, e = held_out_scores(probs, [c.masks for c in val_cases])
    return {"qubiq": q, "ece": e, "seconds": seconds, "steps": result.steps, "temperature": model.config.temperature}


def run_monai(train_cases, budget_s: float, val_cases, seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    def prep(image):  # per-image z-score, (C, H, W) of the single slice, padded to a multiple of 8
        x = image[..., 0]
        x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-8)
        return x

    def pad(a, mult=8):
        h, w = a.shape[-2:]
        return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, -h % mult), (0, -w % mult)], mode="edge")

    xs = np.stack([pad(prep(c.image)) for c in train_cases]).astype(np.float32)
    ys = np.stack([pad(c.masks.mean(axis=0, dtype=np.float32)[None, ..., 0]) for c in train_cases])
    net = UNet(spatial_dims=2, in_channels=xs.shape[1], out_channels=1, channels=(16, 32, 64, 128),
               strides=(2, 2, 2), num_res_units=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    started = time.monotonic()
    steps = 0
    net.train()
    while time.monotonic() - started < budget_s:
        idx = rng.integers(0, len(xs), 8)
        x, y = torch.from_numpy(xs[idx].copy()), torch.from_numpy(ys[idx].copy())
        for dim in (2, 3):
            if rng.random() < 0.5:
                x, y = x.flip(dim), y.flip(dim)
        x = x * torch.from_numpy(rng.uniform(0.9, 1.1, (8, 1, 1, 1)).astype(np.float32)) + \
            torch.from_numpy(rng.uniform(-0.1, 0.1, (8, 1, 1, 1)).astype(np.float32))
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        steps += 1
    seconds = time.monotonic() - started
    net.eval()
    probs = []
    with torch.inference_mode():
        for c in val_cases:
            x = torch.from_numpy(pad(prep(c.image))[None].astype(np.float32))
            h, w = c.image.shape[1:3]
            probs.append(torch.sigmoid(net(x))[0, 0, :h, :w].numpy()[..., None])
    q, e = held_out_scores(probs, [c.masks for c in val_cases])
    return {"qubiq": q, "ece": e, "seconds": seconds, "steps": steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="budget of each model (wall clock)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_training"))
    args = parser.parse_args(argv)

    import torch

    from napari_softseg.datasets.synthetic import write_qubiq_dataset
    from napari_softseg.io.dataset import discover, load_case

    data = args.work / "data"
    if not data.exists():
        write_qubiq_dataset(data, n_cases=24, n_validation=8, shape=(128, 128, 1), n_raters=4, seed=21)
    ds = discover(data)
    train_cases = [load_case(c) for c in ds.split("Training")]
    val_cases = [load_case(c) for c in ds.split("Validation")]
    budget_s = 60.0 * args.minutes
    load_before = os.getloadavg()
    soft = run_softseg(data, args.work / "softseg_model", budget_s, val_cases)
    print(f"softseg train: held-out QUBIQ {soft['qubiq']:.4f}  ECE {soft['ece']:.4f}  ({soft['steps']} steps, "
          f"{soft['seconds']:.0f} s incl. validation and calibration, T = {soft['temperature']:.3f})", flush=True)
    monai = run_monai(train_cases, budget_s, val_cases)
    print(f"MONAI UNet baseline: held-out QUBIQ {monai['qubiq']:.4f}  ECE {monai['ece']:.4f}  ({monai['steps']} steps, "
          f"{monai['seconds']:.0f} s)", flush=True)
    load_after = os.getloadavg()
    print(f"budget {budget_s:.0f} s each on the CPU ({torch.get_num_threads()} threads); load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(json.dumps({
        "softseg_qubiq": round(soft["qubiq"], 4), "monai_qubiq": round(monai["qubiq"], 4),
        "softseg_ece": round(soft["ece"], 4), "monai_ece": round(monai["ece"], 4), "budget_s": budget_s,
        "softseg_steps": soft["steps"], "monai_steps": monai["steps"],
        "qubiq_ratio": round(soft["qubiq"] / max(monai["qubiq"], 1e-9), 4),
        "load_avg_1min": [round(load_before[0], 2), round(load_after[0], 2)],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
