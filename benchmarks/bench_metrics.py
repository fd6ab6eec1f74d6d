"""Precision–recall curve: napari-softseg's histogram + cumulative sums against three baselines, one process.

Run: ``python benchmarks/bench_metrics.py [--size 256] [--repeats 3]``. A random soft map of size³ voxels
(16.7 M at 256) and a reference drawn from it. Every side is run ``--repeats`` times and its best time
is reported. The sides, and what work each does:

- **ours**: :class:`napari_softseg.analysis.metrics.PRCurve` — the full curve at the 1001 grid thresholds
  ``k / 1000`` (``p >= t``), from one histogram pass and cumulative sums.
- **numpy, same thresholds** (the like-for-like baseline): for each of the same 1001 thresholds,
  threshold the whole map and count TP and predicted positives with numpy. Same output as ours.
- **one pass** (the floor): ``np.count_nonzero(p >= 0.5)``, a single threshold's mask count; no curve
  can be built in less than about one pass over the map.
- **scikit-learn** ``precision_recall_curve``: the exact curve at every *distinct* score (a sort of 16.7 M
  values) — different, larger work, reported for reference, not as the headline ratio.

Agreement: ours equals numpy's counts at every threshold (exactly), and scikit-learn's curve at every grid
threshold that its curve also has (the first sklearn threshold >= t gives the same set as ``p >= t``).
The last line is JSON with all timings and ratios.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def best_of(repeats: int, fn):
    """Run ``fn`` ``repeats`` times; return (best seconds, last result)."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="edge of the cubic volume (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every side (best is reported)")
    args = parser.parse_args()

    from sklearn.metrics import precision_recall_curve

    from napari_softseg.analysis.metrics import PRCurve, grid_thresholds

    rng = np.random.default_rng(0)
    n = args.size**3
    pred = rng.random(n, dtype=np.float32)
    truth = rng.random(n, dtype=np.float32) < pred
    thresholds = grid_thresholds(1000)

    def numpy_same_thresholds():
        tp = np.empty(thresholds.size, dtype=np.int64)
        pos = np.empty(thresholds.size, dtype=np.int64)
        mask = np.empty(n, dtype=bool)
        for k, t in enumerate(thresholds):
            np.greater_equal(pred, t, out=mask)
            pos[k] = np.count_nonzero(mask)
            tp[k] = np.count_nonzero(mask & truth)
        return tp, pos

    t_ours, curve = best_of(args.repeats, lambda: PRCurve(pred, truth, n_bins=1000))
    t_np, (np_tp, np_pos) = best_of(args.repeats, numpy_same_thresholds)
    t_floor, _ = best_of(args.repeats, lambda: np.count_nonzero(pred >= 0.5))
    t_sk, (prec, rec, thr) = best_of(args.repeats, lambda: precision_recall_curve(truth, pred))

    t0 = time.perf_counter()
    for t in np.linspace(0, 1, 10_000):
        curve.at(t)
    t_lookup = (time.perf_counter() - t0) / 10_000

    numpy_equal = bool(np.array_equal(curve.tp.astype(np.int64), np_tp)
                       and np.array_equal(curve.n_positive, np_pos))
    diffs = []
    for k, t in enumerate(curve.thresholds):
        i = np.searchsorted(thr, t)
        if i < thr.size:
            diffs.append(max(abs(curve.precision[k] - prec[i]), abs(curve.recall[k] - rec[i])))
    max_diff = float(max(diffs))

    print(f"voxels {n:,}; best of {args.repeats} for every side")
    print(f"numpy, the same 1001 thresholds        {t_np * 1000:9.1f} ms  (baseline: same work)")
    print(f"napari-softseg PRCurve (1001 thr)      {t_ours * 1000:9.1f} ms  -> {t_np / t_ours:6.1f}x faster")
    print(f"one pass, count_nonzero(p >= 0.5)      {t_floor * 1000:9.1f} ms  (floor) -> ours = "
          f"{t_ours / t_floor:5.1f} passes")
    print(f"scikit-learn precision_recall_curve    {t_sk * 1000:9.1f} ms  (exact at every distinct score: "
          f"other work) -> {t_sk / t_ours:6.1f}x")
    print(f"lookup of one threshold                {t_lookup * 1e6:9.2f} us")
    print(f"counts equal numpy's at all 1001 thresholds: {numpy_equal}; "
          f"{len(diffs)} thresholds shared with scikit-learn, max |difference| {max_diff:.3g}")
    print(json.dumps({
        "voxels": n,
        "repeats": args.repeats,
        "ours_s": round(t_ours, 4),
        "numpy_same_thresholds_s": round(t_np, 4),
        "one_pass_floor_s": round(t_floor, 4),
        "sklearn_s": round(t_sk, 4),
        "speedup_vs_numpy_same_thresholds": round(t_np / t_ours, 2),
        "ours_over_one_pass_floor": round(t_ours / t_floor, 2),
        "speedup_vs_sklearn_exact_curve": round(t_sk / t_ours, 2),
        "lookup_us": round(t_lookup * 1e6, 3),
        "counts_equal_numpy": numpy_equal,
        "sklearn_thresholds_compared": len(diffs),
        "max_abs_diff_vs_sklearn": max_diff,
    }))


if __name__ == "__main__":
    main()
