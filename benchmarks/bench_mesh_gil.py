"""How long a 3D surface build in a worker thread holds up the GUI thread: slabs against one call.

Run: ``python benchmarks/bench_mesh_gil.py [--repeats 3]``. The Threshold explorer builds the mesh of
``p = t`` in a worker thread (:func:`napari_softseg.analysis.surface.iso_surface`). skimage's marching cubes
is one C call that holds the GIL, and a viewer's GUI thread needs the GIL for every event, so the GUI
waited for the whole call. A stand-in for the GUI thread (a Python thread that sleeps 1 ms in a loop, as an
event loop wakes for timers) records how late it wakes while the mesh is built; the longest wait is the
GUI stall the build causes.

The soft map: the bundled whole head's five raters averaged and smoothed (``napari_softseg/data/mni_head``,
131 × 155 × 126), resampled linearly to 197 × 233 × 189 at 1 mm ("head") and to 512 × 512 × 300 ("ct"),
meshed at ``p = 0.5`` with ``step=None`` (the explorer's call).

Sides, in one process, interleaved ``--repeats`` times (worst wait and best build time reported):

- **slabs** (ours): marching cubes in slabs of :data:`~napari_softseg.analysis.surface.SLAB_VOXELS` voxels;
- **one call** (the named baseline, what the explorer did before): ``SLAB_VOXELS`` set above the map's size.

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SIZES = {"head": (197, 233, 189), "ct": (512, 512, 300)}


def soft_map(shape: tuple[int, int, int]) -> np.ndarray:
    """The bundled head's raters averaged, smoothed and resampled to ``shape`` (float32, 0..1)."""
    import nibabel as nib
    from scipy import ndimage

    from napari_softseg.datasets.bundled import DATA_DIR

    case = os.path.join(DATA_DIR, "mni_head", "Training", "case01")
    raters = [np.asarray(nib.load(os.path.join(case, f"task01_seg0{r}.nii.gz")).dataobj, dtype=np.float32)
              for r in range(1, 6)]
    mean = ndimage.gaussian_filter(np.mean(raters, axis=0), 0.7)
    zoom = np.asarray(shape) / np.asarray(mean.shape)
    return np.clip(ndimage.zoom(mean, zoom, order=1), 0.0, 1.0).astype(np.float32)


def worst_wait_during(work) -> tuple[float, float, object]:
    """Run ``work()`` in a thread while this thread wakes every 1 ms; (longest late wake s, seconds, result)."""
    result, done = [], threading.Event()

    def run():
        result.append(work())
        done.set()

    waits = []
    worker = threading.Thread(target=run)
    t0 = time.perf_counter()
    worker.start()
    while not done.is_set():
        t = time.perf_counter()
        time.sleep(0.001)
        waits.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    worker.join()
    return max(waits, default=0.0), seconds, result[0]


def main(argv=None) -> int:
    from napari_softseg.analysis import surface

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="head,ct")
    args = parser.parse_args(argv)
    results = {"slab_voxels": surface.SLAB_VOXELS, "sizes": {}}
    for name in [s for s in args.sizes.split(",") if s]:
        soft = soft_map(SIZES[name])
        sides = {"slabs": surface.SLAB_VOXELS, "one call": soft.size * 8}
        runs = {side: [] for side in sides}
        faces = {}
        for _ in range(args.repeats):
            for side, slab_voxels in sides.items():
                surface.SLAB_VOXELS = slab_voxels
                try:
                    wait, seconds, mesh = worst_wait_during(lambda soft=soft: surface.iso_surface(soft, 0.5, step=None))
                finally:
                    surface.SLAB_VOXELS = sides["slabs"]
                runs[side].append((wait, seconds))
                faces[side] = mesh.n_faces
        entry = {side: {"longest_gui_wait_s": round(max(w for w, _ in r), 4),
                        "build_s": round(min(s for _, s in r), 3), "faces": faces[side]}
                 for side, r in runs.items()}
        entry["wait_ratio"] = round(entry["slabs"]["longest_gui_wait_s"] / entry["one call"]["longest_gui_wait_s"], 3)
        entry["build_ratio"] = round(entry["slabs"]["build_s"] / entry["one call"]["build_s"], 3)
        results["sizes"][name] = entry
        print(f"{name} {SIZES[name]}: {faces['slabs']} faces; longest GUI wait slabs "
              f"{entry['slabs']['longest_gui_wait_s'] * 1000:.0f} ms vs one call "
              f"{entry['one call']['longest_gui_wait_s'] * 1000:.0f} ms (ratio {entry['wait_ratio']:.2f}); build "
              f"{entry['slabs']['build_s']:.2f} s vs {entry['one call']['build_s']:.2f} s "
              f"(ratio {entry['build_ratio']:.2f})", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
