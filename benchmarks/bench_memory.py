"""Peak memory of the viewer: open a 512×512×300 case with 5 raters and predict, vs napari's own baseline.

Each scenario runs in its own Python process (peak RSS, ``ru_maxrss``, cannot be reset within one, and
Linux carries it over fork/exec, so the parent only orchestrates and even the setup runs apart), in a
shown napari viewer (run under Xvfb: ``xvfb-run -a python benchmarks/bench_memory.py``):

* ``baseline`` — napari's own floor: an empty viewer plus the scan read with nibabel as float32 and added
  with ``viewer.add_image``;
* ``baseline+torch`` — the same after ``import torch`` (the engine's library cost, not data);
* ``softseg`` — the plugin's path: ``viewer.open(case_folder, plugin="napari-softseg")`` (scan, 5 rater
  Labels layers, soft label), then **Predict** in the Soft segmentation dock (worker thread), which adds the
  soft prediction layer. It runs once per model: ``bundled`` is the dock's default, the bundled demo model
  (2D U-Net, width 8, depth 4); ``wide2d`` is a 2D U-Net of the planned width (16, depth 4) predicting
  whole slices; ``planned`` is the network ``softseg train`` plans for this very case on a CPU (a 3D
  U-Net on patches, predicted by a sliding window), all untrained.

Reported: peaks in MB and ``(softseg peak − baseline peak) / float32 image size`` (issue 11 aims at ≤ 3),
plus the same against ``baseline+torch``. The case is synthetic (ellipsoids + noise), written once as
uncompressed NIfTI to a temporary folder; the reader copies it into memory all the same (the raters are
packed as bits while read, the scan is read as float32). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def write_case(folder: Path, shape: tuple[int, int, int], n_raters: int) -> Path:
    """A synthetic case: noisy ellipsoid scan and raters whose ellipsoids differ slightly."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    rng = np.random.default_rng(0)
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    r2 = x[:, None, None] ** 2 / 0.36 + y[None, :, None] ** 2 / 0.25 + z[None, None, :] ** 2 / 0.49
    image = (100.0 + 80.0 * (r2 < 1.0)).astype(np.float32)
    image += rng.normal(0, 20, size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), str(folder / "image.nii"))
    del image
    for r in range(n_raters):
        mask = (r2 < 0.9 + 0.05 * r).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, affine), str(folder / f"task01_seg{r + 1:02d}.nii"))
    return folder


def planned_models(folder: Path, shape) -> tuple[Path, Path]:
    """Untrained networks of the planned width: a 2D U-Net (width 16, depth 4, whole slices) and the 3D U-Net
    ``softseg train`` plans for this case on a CPU (sliding window of the planned patch)."""
    import torch

    from napari_softseg.model.model_io import ModelConfig, new_network, save_model
    from napari_softseg.model.planning import fingerprint, make_plan

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": 16, "depth": 4}, weights_dtype="float32")
    two = save_model(folder / "planned2d", new_network(config), config)
    image = np.zeros((1, *shape), np.float32)
    masks = np.zeros((5, *shape), np.uint8)
    masks[:, shape[0] // 4: shape[0] // 2, shape[1] // 4: shape[1] // 2] = 1
    plan = make_plan(fingerprint([image], [masks], [(0.7, 0.7, 1.0)]), device="cpu")
    del image, masks
    arch = {"name": "unet3d" if plan.dim == 3 else "unet2d", "base_channels": plan.base_channels,
            "depth": plan.depth}
    config3 = ModelConfig(architecture=arch, weights_dtype="float32", patch_size=list(plan.patch_size),
                          slice_axis=plan.slice_axis)
    three = save_model(folder / "planned", new_network(config3), config3)
    return two, three


def _settle(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def scenario(name: str, case: Path, model: Path | None) -> dict:
    """Run one scenario in this process; return its peaks (MB)."""
    import napari

    out: dict = {"scenario": name}
    if name == "baseline+torch":
        import torch  # noqa: F401
    viewer = napari.Viewer(show=True)
    _settle()
    out["empty_viewer_mb"] = peak_mb()
    if name.startswith("baseline"):
        import nibabel as nib

        data = np.asarray(nib.load(str(case / "image.nii")).dataobj, dtype=np.float32)
        viewer.add_image(data)
        _settle()
        out["peak_mb"] = peak_mb()
    else:
        from napari_softseg._qt.segmentation_widget import PREDICTION_NAME, SegmentationWidget

        viewer.open(str(case), plugin="napari-softseg")
        # a big case is read in a worker (napari_softseg._napari.background_open): wait for all its layers
        from napari_softseg._napari.background_open import pending

        deadline = time.monotonic() + 600
        while (pending() or len(viewer.layers) < 2) and time.monotonic() < deadline:
            _settle(0.05)
        if pending():
            raise RuntimeError("the case did not finish opening in 10 minutes")
        _settle()
        out["after_open_mb"] = peak_mb()
        widget = SegmentationWidget(viewer)
        viewer.window.add_dock_widget(widget)
        if model is not None:
            widget.add_model(model)
        widget.device_options.device.value = "cpu"
        t0 = time.perf_counter()
        task = widget.predict()
        while widget.task is not None:
            _settle(0.05)
        out["predict_s"] = round(time.perf_counter() - t0, 2)
        if task.error is not None or PREDICTION_NAME not in viewer.layers:
            raise RuntimeError(f"prediction failed: {task.error}")
        _settle()
        out["layers"] = [layer.name for layer in viewer.layers]
        out["peak_mb"] = peak_mb()
    viewer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--raters", type=int, default=5)
    parser.add_argument("--models", default="bundled,wide2d,planned",
                        help="comma-separated models to predict with (default all three: bundled, wide2d, planned;"
                             " the planned 3D network takes ~25 minutes on a CPU)")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--case", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario == "setup":  # child process: big arrays and torch stay out of the parent's peak
        write_case(args.case, tuple(args.shape), args.raters)
        planned_models(args.model, tuple(args.shape))
        return
    if args.scenario:  # child process
        print(json.dumps(scenario(args.scenario, args.case, args.model)))
        return

    shape = tuple(args.shape)
    image_mb = float(np.prod(shape)) * 4 / 2**20
    with tempfile.TemporaryDirectory(prefix="softseg-bench-memory-") as tmp:
        t0 = time.perf_counter()
        case, model = Path(tmp) / "case01", Path(tmp) / "model"
        # Linux keeps a process's peak RSS across fork/exec, so the parent stays small: setup runs in a child.
        setup = [sys.executable, __file__, "--scenario", "setup", "--case", str(case), "--model", str(model),
                 "--shape", *map(str, shape), "--raters", str(args.raters)]
        subprocess.run(setup, check=True)
        print(f"case {shape} with {args.raters} raters written in {time.perf_counter() - t0:.1f} s; "
              f"float32 image = {image_mb:.0f} MB", flush=True)
        results = {}
        runs = [("baseline", None, "baseline"), ("baseline+torch", None, "baseline+torch"),
                ("softseg", None, "softseg_bundled"), ("softseg", model / "planned2d", "softseg_wide2d"),
                ("softseg", model / "planned", "softseg_planned")]
        wanted = {f"softseg_{m.strip()}" for m in args.models.split(",") if m.strip()}
        runs = [run for run in runs if run[2].startswith("baseline") or run[2] in wanted]
        for name, model_dir, key in runs:
            cmd = [sys.executable, __file__, "--scenario", name, "--case", str(case)]
            if model_dir is not None:
                cmd += ["--model", str(model_dir)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=3600)
            if proc.returncode != 0:
                sys.exit(f"scenario {key} failed:\n{proc.stderr[-3000:]}")
            results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{key:16s} peak {results[key]['peak_mb']:8.0f} MB  {results[key]}", flush=True)

    base, base_torch = results["baseline"]["peak_mb"], results["baseline+torch"]["peak_mb"]
    summary = {
        "shape": list(shape),
        "raters": args.raters,
        "image_float32_mb": round(image_mb, 1),
        "baseline_peak_mb": round(base, 1),
        "baseline_torch_peak_mb": round(base_torch, 1),
        "target_ratio": 3.0,
    }
    for key in [k for k in ("softseg_bundled", "softseg_wide2d", "softseg_planned") if k in results]:
        ours = results[key]
        summary[key] = {
            "after_open_mb": round(ours["after_open_mb"], 1),
            "peak_mb": round(ours["peak_mb"], 1),
            "predict_s": ours["predict_s"],
            "ratio_above_baseline": round((ours["peak_mb"] - base) / image_mb, 2),
            "ratio_above_baseline_torch": round((ours["peak_mb"] - base_torch) / image_mb, 2),
            "open_ratio_above_baseline": round((ours["after_open_mb"] - base) / image_mb, 2),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
