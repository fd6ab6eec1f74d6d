"""Reading a CT-sized DICOM series: napari-softseg's ``read_series`` vs a bare pydicom loop (and dcm2niix).

- ours: :func:`napari_softseg.io.dicom.read_series` — header scan of the folder, series choice, geometry
  checks (orientation, spacing, gaps, tilt), then pixel data with rescale, into ``float32 (X, Y, Z)``;
- baseline (same process): ``pydicom.dcmread`` of every file, sort by ImagePositionPatient z, stack the
  ``pixel_array`` s with rescale into ``float32`` — what a script would do without any checks;
- dcm2niix (a separate process, writes an uncompressed NIfTI too), when installed, for reference.

Runs alternate (ours, baseline, ...) after one warm-up each; medians of ``--repeats`` are reported.

Usage::

    python benchmarks/bench_dicom.py [--slices 120] [--size 512] [--repeats 3]

The last line is JSON with ``ratio_ours_over_pydicom_loop``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def baseline(folder: Path) -> np.ndarray:
    import pydicom

    files = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    files.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array.T.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                     for ds in files], axis=-1)


def main() -> None:
    from dicom_series import write_series

    from napari_softseg.io.dicom import read_series

    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=120)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2000, size=(args.size, args.size, args.slices)).astype(np.float64) - 1000
    affine = np.diag([0.7, 0.7, 1.25, 1.0])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ct"
        write_series(folder, data, affine, modality="CT", slope=1.0, intercept=-1000.0)
        ours = read_series(folder).data
        ref = baseline(folder)
        assert np.array_equal(ours, ref) and np.array_equal(ours, data.astype(np.float32))
        t_ours, t_base = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            read_series(folder)
            t_ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            baseline(folder)
            t_base.append(time.perf_counter() - t0)
        t_dcm2niix = None
        if shutil.which("dcm2niix"):
            runs = []
            for i in range(args.repeats):
                out = Path(tmp) / f"n{i}"
                out.mkdir()
                t0 = time.perf_counter()
                subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "x", "-o", str(out), str(folder)],
                               check=True, capture_output=True)
                runs.append(time.perf_counter() - t0)
            t_dcm2niix = statistics.median(runs)
    ours_s, base_s = statistics.median(t_ours), statistics.median(t_base)
    mb = data.size * 2 / 1e6
    print(f"series: {args.slices} slices of {args.size}x{args.size} (uint16, {mb:.0f} MB of pixel data)")
    print(f"napari-softseg read_series: {ours_s:.3f} s   bare pydicom loop: {base_s:.3f} s   "
          f"ratio {ours_s / base_s:.2f}")
    print(f"dcm2niix (separate process, writes NIfTI): {t_dcm2niix:.3f} s" if t_dcm2niix else "dcm2niix: not installed")
    print(json.dumps({"benchmark": "dicom_read", "slices": args.slices, "size": args.size,
                      "ours_s": round(ours_s, 4), "pydicom_loop_s": round(base_s, 4),
                      "dcm2niix_s": None if t_dcm2niix is None else round(t_dcm2niix, 4),
                      "ratio_ours_over_pydicom_loop": round(ours_s / base_s, 3)}))


if __name__ == "__main__":
    main()
