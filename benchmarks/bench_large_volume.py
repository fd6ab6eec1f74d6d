"""Large volumes: the PR curve and QUBIQ-style counts of a 512x512x1000 CT-sized soft map, bounded memory.

Run: ``python benchmarks/bench_large_volume.py [--shape 512,512,1000] [--dir TMP]``.

The soft map (float32, 1 GiB at the default shape) and a reference mask (uint8) are written to disk and
opened as ``np.memmap`` — the way an uncompressed ``.nii`` larger than RAM can be read lazily — so only
the pages the code touches are read. The PR curve is then built from the memmap. Reported:

- the Python-heap peak during the build (``tracemalloc``, which sees every numpy allocation): it must stay
  a small, fixed number of chunk-sized temporaries, never a whole-volume array (float64 or otherwise);
- the peak resident set of this process (``ru_maxrss``), which also counts memmap pages while resident;
- the wall time of our one-pass curve against the baseline that does the same work with plain numpy on
  the same memmap: for each of the 1001 grid thresholds, threshold and count (timed on a 64-slice slab,
  scaled by the slab count, since the full loop takes minutes).

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def write_volume(path: Path, shape: tuple[int, ...]) -> None:
    """A smooth soft map in [0, 1] (a blurred ball that fades with z) and its 0.5 mask, slab by slab."""
    soft = np.lib.format.open_memmap(path / "soft.npy", mode="w+", dtype=np.float32, shape=shape)
    ref = np.lib.format.open_memmap(path / "ref.npy", mode="w+", dtype=np.uint8, shape=shape)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0], dtype=np.float32),
                       np.linspace(-1, 1, shape[1], dtype=np.float32), indexing="ij")
    r2 = x * x + y * y
    rng = np.random.default_rng(0)
    for z in range(shape[2]):
        scale = 0.2 + 0.6 * abs(np.sin(np.pi * z / shape[2]))
        p = np.exp(-r2 / (2 * scale * scale)).astype(np.float32)
        p += rng.normal(0, 0.02, size=p.shape).astype(np.float32)
        np.clip(p, 0, 1, out=p)
        soft[..., z] = p
        ref[..., z] = p >= 0.5
    soft.flush()
    ref.flush()
    del soft, ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="512,512,1000")
    parser.add_argument("--dir", default=None, help="folder for the two temporary .npy files")
    parser.add_argument("--write-to", default=None, help=argparse.SUPPRESS)  # child process: write only
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if args.write_to:
        write_volume(Path(args.write_to), shape)
        return

    from napari_softseg.analysis.metrics import PRCurve, grid_thresholds

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        # written by a child process, so this process's peak RSS counts only what the curve touches
        subprocess.run([sys.executable, __file__, "--shape", args.shape, "--write-to", str(tmp)], check=True)
        t_write = time.perf_counter() - t0
        soft = np.load(tmp / "soft.npy", mmap_mode="r")
        ref = np.load(tmp / "ref.npy", mmap_mode="r")
        volume_bytes = soft.nbytes

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        t0 = time.perf_counter()
        curve = PRCurve(soft, ref, n_bins=1000, spacing=(0.7, 0.7, 0.7))
        t_ours = time.perf_counter() - t0
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        # baseline: plain numpy at the same 1001 thresholds on a 64-slice slab, scaled to the volume
        slab = min(64, shape[2])
        sp = np.ascontiguousarray(soft[..., :slab])
        sr = np.ascontiguousarray(ref[..., :slab]) != 0
        t0 = time.perf_counter()
        for t in grid_thresholds(1000):
            m = sp >= t
            np.count_nonzero(m)
            np.count_nonzero(m & sr)
        t_numpy = (time.perf_counter() - t0) * shape[2] / slab

        at = curve.at(0.5)
        print(f"volume {shape} float32 = {volume_bytes / 2**30:.2f} GiB (memmap; written in {t_write:.1f} s)")
        print(f"PR curve (1001 thresholds, one pass)  {t_ours:8.2f} s")
        print(f"numpy, same thresholds (extrapolated) {t_numpy:8.2f} s  -> ours {t_numpy / t_ours:.1f}x faster")
        print(f"Python-heap peak during the build     {heap_peak / 2**20:8.1f} MiB "
              f"({heap_peak / volume_bytes * 100:.2f} % of the volume)")
        print(f"process peak RSS                      {rss_after / 2**30:8.2f} GiB (before the build "
              f"{rss_before / 2**30:.2f} GiB; the rise is the memmap's file pages read while resident, "
              f"which the kernel can drop)")
        print(f"at t=0.5: recall {at.recall:.4f}, precision {at.precision:.4f}")
        print(json.dumps({
            "shape": list(shape),
            "volume_gib": round(volume_bytes / 2**30, 3),
            "pr_curve_s": round(t_ours, 3),
            "numpy_same_thresholds_s_extrapolated": round(t_numpy, 2),
            "speedup_vs_numpy": round(t_numpy / t_ours, 2),
            "heap_peak_mib": round(heap_peak / 2**20, 2),
            "heap_peak_fraction_of_volume": round(heap_peak / volume_bytes, 5),
            "peak_rss_gib": round(rss_after / 2**30, 3),
            "rss_before_build_gib": round(rss_before / 2**30, 3),
        }))


if __name__ == "__main__":
    main()
