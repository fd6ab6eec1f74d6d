"""Precision–recall curve: napari-softseg's histogram + cumulative sums vs scikit-learn, same process.

Run: ``python benchmarks/bench_metrics.py [--size 256]``. A random soft map of size³ voxels (16.7 M at 256)
and a reference drawn from it; both methods build the full curve once. Agreement is checked at every
grid threshold that scikit-learn's curve also has (its curve is exact at each distinct score: the
first sklearn threshold >= t gives the same predicted set as ``p >= t``). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic volume (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (best is reported)")
    args = parser.parse_args()

    from sklearn.metrics import precision_recall_curve

    from napari_softseg.analysis.metrics import PRCurve

    rng = np.random.default_rng(0)
    n = args.size**3
    pred = rng.random(n, dtype=np.float32)
    truth = rng.random(n, dtype=np.float32) < pred

    ours = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        curve = PRCurve(pred, truth, n_bins=1000)
        ours.append(time.perf_counter() - t0)
    t_ours = min(ours)

    t0 = time.perf_counter()
    prec, rec, thr = precision_recall_curve(truth, pred)
    t_sk = time.perf_counter() - t0

    t0 = time.perf_counter()
    for t in np.linspace(0, 1, 10_000):
        curve.at(t)
    t_lookup = (time.perf_counter() - t0) / 10_000

    diffs = []
    for k, t in enumerate(curve.thresholds):
        i = np.searchsorted(thr, t)
        if i < thr.size:
            diffs.append(max(abs(curve.precision[k] - prec[i]), abs(curve.recall[k] - rec[i])))
    max_diff = float(max(diffs))

    print(f"voxels                          {n:,}")
    print(f"scikit-learn precision_recall_curve  {t_sk * 1000:9.1f} ms  (baseline)")
    print(f"napari-softseg PRCurve (1001 thr)    {t_ours * 1000:9.1f} ms  (best of {args.repeats})")
    print(f"speed-up                             {t_sk / t_ours:9.1f} x")
    print(f"lookup of one threshold              {t_lookup * 1e6:9.2f} us")
    print(f"thresholds compared                  {len(diffs)}; max |difference| {max_diff:.3g}")
    print(json.dumps({
        "voxels": n,
        "sklearn_s": round(t_sk, 4),
        "ours_s": round(t_ours, 4),
        "pr_curve_speedup_vs_sklearn": round(t_sk / t_ours, 2),
        "lookup_us": round(t_lookup * 1e6, 3),
        "thresholds_compared": len(diffs),
        "max_abs_diff": max_diff,
    }))


if __name__ == "__main__":
    main()
