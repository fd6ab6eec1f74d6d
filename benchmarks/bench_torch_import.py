"""How long torch's first import, in a worker thread, holds up the GUI thread: preloaded libraries vs plain.

Run: ``python benchmarks/bench_torch_import.py [--repeats 3]``. The Soft segmentation dock imports torch in
a worker (device detection). The import ``dlopen``s libtorch inside Python's import machinery, holding the
GIL, so every other Python thread (the viewer's GUI thread) waits; :mod:`napari_softseg.model.torch_libs`
loads the same libraries first through a ctypes call into libc, which releases the GIL.

A stand-in for the GUI thread (a Python thread that sleeps 1 ms in a loop, as an event loop wakes for
timers) records how late it wakes while another thread imports torch; the longest wait is the stall.
torch can be imported once per process, so each side runs in a fresh interpreter, the two sides taking
turns ``--repeats`` times:

- **plain** (the named baseline, what the dock did before): ``import torch`` in the worker;
- **preloaded** (ours): :func:`~napari_softseg.model.torch_libs.preload_torch_libraries`, then ``import torch``,
  both in the worker.

The last line is JSON: per side the longest wait of each run and the import time (preload included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time
preload = sys.argv[1] == "preloaded"
waits, stop = [], threading.Event()
def gui():
    last = time.perf_counter()
    while not stop.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        waits.append(now - last)
        last = now
def work(out):
    t = time.perf_counter()
    if preload:
        from napari_softseg.model.torch_libs import preload_torch_libraries
        out["libraries"] = preload_torch_libraries()
    import torch  # noqa: F401
    out["seconds"] = time.perf_counter() - t
beat = threading.Thread(target=gui)
beat.start()
time.sleep(0.2)
out = {}
worker = threading.Thread(target=work, args=(out,))
worker.start()
worker.join()
time.sleep(0.05)
stop.set()
beat.join()
out["longest_wait_s"] = max(waits)
print(json.dumps(out))
"""


def run_side(side: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, side], capture_output=True, text=True, check=True,
                          timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {"plain": [], "preloaded": []}
    for _ in range(args.repeats):
        for side in runs:
            runs[side].append(run_side(side))
    summary = {}
    for side, results in runs.items():
        waits = [r["longest_wait_s"] for r in results]
        summary[side] = {"longest_wait_s": [round(w, 3) for w in waits], "worst_wait_s": round(max(waits), 3),
                         "import_s": [round(r["seconds"], 2) for r in results]}
        print(f"{side:>9}: longest GUI wait {max(waits):.3f} s (runs: "
              f"{', '.join(f'{w:.3f}' for w in waits)}); import {min(r['seconds'] for r in results):.2f} s best")
    ratio = summary["preloaded"]["worst_wait_s"] / summary["plain"]["worst_wait_s"]
    summary["worst_wait_ratio_preloaded_to_plain"] = round(ratio, 3)
    summary["libraries"] = runs["preloaded"][0].get("libraries", [])
    print(f"worst wait, preloaded / plain: {ratio:.2f}×")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
