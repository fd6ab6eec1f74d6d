"""Resampling a network's probabilities back onto the scan's grid: ours against scipy, in one process.

Run: ``python benchmarks/bench_resampling.py [--repeats 3] [--threads 1] [--images]``. A probability map of
205 × 205 × 120 (a 512 × 512 × 300 scan at 0.4 mm brought to 1 mm by the planned target spacing) is
resampled back to 512 × 512 × 300 float32 (315 MB). The sides, timed in turn ``--repeats`` times (best
reported) and then run once more each under ``tracemalloc`` for the peak of the memory they allocate:

- **ours**: :func:`napari_softseg.model.resampling.resample_probabilities_back` — separable linear passes
  in float32 (rows gathered along X and Y, banded blocks of the weight matrix along Z).
- **scipy** (the named baseline): ``scipy.ndimage.zoom(p, zoom, order=1, grid_mode=True, mode="nearest",
  output=np.float32)`` on the whole volume — the same grid mapping and the same values (the maximum
  difference is printed).
- **torch** (reference, time only; its allocations are invisible to ``tracemalloc``):
  ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)`` when torch is installed.

``--images`` adds the forward direction for images: the 512 × 512 × 300 scan at 0.45 × 0.45 × 0.4 mm to
1 mm with :func:`~napari_softseg.model.resampling.resample_image` (cubic, anti-aliased) against
``scipy.ndimage.zoom(order=3, grid_mode=True)``. ``--threads`` sets the BLAS/OpenMP threads (default 1, so
every side runs on one core, like scipy). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc


def _threads_from_argv() -> str:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


# thread counts must be set before numpy (BLAS) and torch are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv()

import numpy as np  # noqa: E402

SCAN = (512, 512, 300)
NETWORK = (205, 205, 120)


def best_of(repeats: int, sides: dict) -> tuple[dict, dict]:
    """Each side ``repeats`` times, interleaved; (best seconds, last result) per side."""
    times = {name: [] for name in sides}
    results = {}
    for _ in range(repeats):
        for name, fn in sides.items():
            results[name] = None  # free the previous run's output first
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}, results


def peak_mb(fn) -> float:
    """Peak MB allocated (tracked by tracemalloc: numpy arrays included) while ``fn`` runs."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of every side (best is reported)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (default 1)")
    parser.add_argument("--images", action="store_true", help="also time the forward cubic image resampling")
    args = parser.parse_args()

    from scipy import ndimage

    from napari_softseg.model.resampling import resample_image, resample_probabilities_back

    rng = np.random.default_rng(0)
    prob = rng.random(NETWORK, dtype=np.float32)
    zoom = [m / n for m, n in zip(SCAN, NETWORK)]
    sides = {
        "ours": lambda: resample_probabilities_back(prob, SCAN),
        "scipy": lambda: ndimage.zoom(prob, zoom, order=1, grid_mode=True, mode="nearest", output=np.float32),
    }
    try:
        import torch

        torch.set_num_threads(args.threads)
        tensor = torch.from_numpy(prob)[None, None]

        def torch_side():
            with torch.inference_mode():
                return torch.nn.functional.interpolate(tensor, size=SCAN, mode="trilinear", align_corners=False)

        sides["torch"] = torch_side
    except ImportError:
        pass

    output_mb = np.prod(SCAN) * 4 / 2**20
    print(f"back-resampling {NETWORK} -> {SCAN} float32 ({output_mb:.0f} MB), {args.threads} thread(s), "
          f"best of {args.repeats}")
    best, results = best_of(args.repeats, sides)
    ours, ref = results["ours"], results["scipy"]
    assert ours.shape == ref.shape == SCAN and ours.dtype == np.float32
    diff = float(np.abs(ours - ref).max())
    in_range = bool(ours.min() >= 0.0 and ours.max() <= 1.0)
    del results, ours, ref
    peaks = {name: peak_mb(fn) for name, fn in sides.items() if name != "torch"}
    report = {"shape_in": NETWORK, "shape_out": SCAN, "threads": args.threads, "seconds": best,
              "ratio_scipy_over_ours": best["scipy"] / best["ours"], "peak_mb": peaks,
              "peak_over_output": {k: v / output_mb for k, v in peaks.items()}, "max_abs_diff_vs_scipy": diff,
              "ours_within_0_1": in_range}
    for name, seconds in best.items():
        mem = f", peak {peaks[name]:.0f} MB ({peaks[name] / output_mb:.2f}x the output)" if name in peaks else ""
        print(f"  {name:6s} {seconds:6.3f} s{mem}")
    print(f"  scipy / ours = {report['ratio_scipy_over_ours']:.1f}x; max |ours - scipy| = {diff:.2e}; "
          f"ours within [0, 1]: {in_range}")

    if args.images:
        image = rng.normal(300, 80, (1, *SCAN)).astype(np.float32)
        spacing, target = (0.45, 0.45, 0.4), (1.0, 1.0, 1.0)
        out_shape = resample_image(image[:, :8, :8, :8], spacing, target)[0].shape  # warm-up, small
        del out_shape
        t0 = time.perf_counter()
        fwd, _ = resample_image(image, spacing, target)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = ndimage.zoom(image[0], [m / n for m, n in zip(fwd.shape[1:], SCAN)], order=3, grid_mode=True,
                           mode="nearest", output=np.float32)
        t_scipy = time.perf_counter() - t0
        print(f"image {SCAN} at {spacing} mm -> {fwd.shape[1:]} at 1 mm, cubic: ours {t_ours:.2f} s "
              f"(anti-aliased), scipy zoom order 3 {t_scipy:.2f} s (no anti-aliasing), shapes equal: "
              f"{ref.shape == fwd.shape[1:]}")
        report["images"] = {"ours_s": t_ours, "scipy_order3_s": t_scipy}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
