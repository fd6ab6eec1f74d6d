"""A cohort curve for 100 cases of 256 × 256 × 40 vs predicting those cases, in one process.

Run: ``python benchmarks/bench_cohort.py [--cases 100] [--shape 256 256 40] [--predict-cases 10]``.

What is timed (torch and numpy on one thread each, the machine's other core left to others):

- **predict**: :func:`napari_softseg.model.inference.predict_array` with the bundled demo model on the CPU, on
  the image's voxel size as ``softseg predict`` runs it (resampled to the model's target spacing when it has
  one; the v0.2 demo model has none, so on the image's own grid), per case, after one warm-up case; ``--predict-cases`` cases are predicted and the time per case is
  multiplied by ``--cases`` (the line says so when fewer were run).
- **cohort curve**: for every one of ``--cases`` cases, what ``softseg operating-point`` does per case once
  the maps exist (:func:`napari_softseg.pipeline.operating_points.histogram_from_files`): read the soft map
  (float32 ``.nii.gz``) and the raters' masks from disk, the consensus, one histogram pass; then pooling and
  choosing ``t`` for ``sensitivity>=0.90`` with 2000 bootstrap resamples over the cases
  (:func:`napari_softseg.analysis.cohort.choose_point`). The cases are ``--distinct`` synthetic phantoms
  (3 raters) written once and read again for each case, so the disk reads are real.

The last line is JSON with all timings and the ratio predict / cohort curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from napari_softseg.analysis.cohort import Cohort, choose_point, parse_requirement  # noqa: E402
from napari_softseg.datasets.bundled import demo_model_path  # noqa: E402
from napari_softseg.datasets.synthetic import make_phantom, write_case  # noqa: E402
from napari_softseg.io.dataset import find_case  # noqa: E402
from napari_softseg.io.nifti import save_volume  # noqa: E402
from napari_softseg.model.inference import predict_array  # noqa: E402
from napari_softseg.model.model_io import load_model  # noqa: E402
from napari_softseg.pipeline.operating_points import histogram_from_files  # noqa: E402
from napari_softseg.progress import drive  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 40))
    parser.add_argument("--predict-cases", type=int, default=10, help="cases actually predicted (time scaled up)")
    parser.add_argument("--distinct", type=int, default=5, help="distinct phantoms on disk")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    shape = tuple(args.shape)
    model = load_model(demo_model_path())
    spacing = (0.8, 0.8, 2.5)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        folders, images, affines = [], [], []
        for i in range(args.distinct):
            folder = write_case(Path(tmp) / f"case{i}", shape=shape, n_raters=3, seed=[7, i], spacing=spacing)
            folders.append(folder)
            image, _, affine = make_phantom(shape, n_raters=3, seed=[7, i], spacing=spacing)
            images.append(image)
            affines.append(affine)

        # predict: one warm-up case, then --predict-cases cases, each a full predict_array on the CPU
        drive(predict_array(model, images[0], device="cpu", spacing=spacing))
        maps, t0 = [], time.perf_counter()
        for i in range(args.predict_cases):
            probabilities = drive(predict_array(model, images[i % args.distinct], device="cpu", spacing=spacing))
            if i < args.distinct:
                maps.append(probabilities)
        predict_per_case = (time.perf_counter() - t0) / args.predict_cases
        for i in range(len(maps), args.distinct):  # every distinct phantom needs its map on disk
            maps.append(drive(predict_array(model, images[i], device="cpu", spacing=spacing)))
        for folder, probabilities, affine in zip(folders, maps, affines):
            save_volume(folder / "prediction.nii.gz", probabilities, affine=affine, dtype=np.float32)
        cases = [find_case(folder) for folder in folders]

        # cohort curve: read + consensus + histogram for every case, then choose t with the bootstrap
        t0 = time.perf_counter()
        histograms = []
        for i in range(args.cases):
            case = cases[i % args.distinct]
            histogram, _ = histogram_from_files(case, 1, case.path / "prediction.nii.gz")
            histogram.name = f"case{i:03d}"
            histograms.append(histogram)
        per_case_s = (time.perf_counter() - t0) / args.cases
        t1 = time.perf_counter()
        point = choose_point(Cohort(histograms), parse_requirement("sensitivity>=0.90"), n_boot=2000, seed=0)
        choose_s = time.perf_counter() - t1

    curve_s = per_case_s * args.cases + choose_s
    predict_s = predict_per_case * args.cases
    scaled = "" if args.predict_cases >= args.cases else f" ({args.predict_cases} predicted, scaled to {args.cases})"
    print(f"{args.cases} cases of {'x'.join(map(str, shape))} ({np.prod(shape) / 1e6:.1f} M voxels each), 1 thread")
    print(f"predict (bundled model, CPU): {predict_per_case:.2f} s per case -> {predict_s:.1f} s{scaled}")
    print(f"cohort curve: read map + masks, consensus, histogram {per_case_s * 1000:.0f} ms per case -> "
          f"{per_case_s * args.cases:.1f} s; pool + choose + 2000 bootstrap resamples {choose_s * 1000:.0f} ms; "
          f"total {curve_s:.1f} s")
    print(f"ratio predict / cohort curve: {predict_s / curve_s:.1f}x  (t = {point.threshold:.3f} for "
          f"sensitivity>=0.90 on the {args.cases} cases)")
    print(json.dumps({"cases": args.cases, "shape": list(shape), "predict_s_per_case": predict_per_case,
                      "predict_cases_run": args.predict_cases, "predict_s": predict_s,
                      "histogram_s_per_case": per_case_s, "choose_bootstrap_s": choose_s, "cohort_curve_s": curve_s,
                      "ratio_predict_over_curve": predict_s / curve_s}))


if __name__ == "__main__":
    main()
