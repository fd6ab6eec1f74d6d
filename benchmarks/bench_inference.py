"""CPU inference per 256x256 slice: napari-softseg's predictor vs MONAI's ``sliding_window_inference``.

Both run the *same* network object with the same weights, in the same process, on the same slices, and
both do the **same work**, every step inside the timed call:

- ours: :func:`napari_softseg.model.inference.predict_array` on a ``(1, 256, 256, N)`` volume, end to end
  (z-score normalisation, slicing, forward passes, temperature + sigmoid, result back as numpy);
- MONAI: the same z-score normalisation (our ``Normalization``, timed on MONAI's side too), the slices
  moved to ``(N, 1, 256, 256)``, ``sliding_window_inference`` with a 256x256 window and the same batch
  size, sigmoid, and the result back as a numpy ``(256, 256, N)`` array.

Runs alternate (ours, MONAI, ours, ...) after one warm-up each; the median of ``--repeats`` runs is
reported. With a CUDA GPU, it also times a 512x512x200 CT-sized volume end to end (file loading
excluded); without one that part prints "not measured".

Usage::

    python benchmarks/bench_inference.py [--slices 16] [--repeats 5] [--base-channels 16] [--depth 4]

The last line is JSON with ``ratio_ours_over_monai`` (<= 1.0 means ours is not slower).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=16, help="default training architecture: 16")
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)

    import torch
    from monai.inferers import sliding_window_inference

    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import LoadedModel, ModelConfig, new_network
    from napari_softseg.model.normalization import Normalization
    from napari_softseg.progress import drive

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": args.base_channels, "depth": args.depth})
    network = new_network(config).eval()
    model = LoadedModel(network=network, config=config)
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, size=(1, 256, 256, args.slices)).astype(np.float32)

    def ours():
        return drive(predict_array(model, image, device="cpu", batch_size=args.batch_size))

    def monai():
        slices = torch.from_numpy(np.moveaxis(Normalization().apply(image), 3, 0).copy())  # (N, 1, 256, 256)
        with torch.inference_mode():
            logits = sliding_window_inference(slices, roi_size=(256, 256), sw_batch_size=args.batch_size,
                                              predictor=network, overlap=0.0)
            return torch.sigmoid(logits)[:, 0].permute(1, 2, 0).numpy()

    a, b = ours(), monai()  # warm-up, and the two must agree
    max_abs_diff = float(np.abs(a - b).max())
    times = {"ours": [], "monai": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("monai", monai)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    per_slice = {k: 1000 * statistics.median(v) / args.slices for k, v in times.items()}
    ratio = per_slice["ours"] / per_slice["monai"]
    print(f"CPU ({torch.get_num_threads()} threads), U-Net base {args.base_channels} depth {args.depth}, "
          f"{args.slices} slices of 256x256, batch {args.batch_size}")
    print(f"  ours  {per_slice['ours']:8.2f} ms/slice (median of {args.repeats})")
    print(f"  MONAI {per_slice['monai']:8.2f} ms/slice (sliding_window_inference, same network and weights)")
    print(f"  ratio ours/MONAI = {ratio:.3f}; max |difference| of probabilities = {max_abs_diff:.2e}")

    gpu_seconds = None
    if torch.cuda.is_available():
        volume = rng.normal(0, 300, size=(1, 512, 512, 200)).astype(np.float32)
        drive(predict_array(model, volume[..., :16], device="cuda", batch_size=32))  # warm-up
        torch.cuda.synchronize()
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            drive(predict_array(model, volume, device="cuda", batch_size=32))
            runs.append(time.perf_counter() - t0)
        gpu_seconds = min(runs)
        print(f"GPU {torch.cuda.get_device_name(0)}: 512x512x200 volume end to end {gpu_seconds:.3f} s")
    else:
        print("GPU: not measured (no CUDA device)")
    print(json.dumps({
        "benchmark": "inference_cpu_per_256x256_slice",
        "ours_ms_per_slice": round(per_slice["ours"], 3),
        "monai_ms_per_slice": round(per_slice["monai"], 3),
        "ratio_ours_over_monai": round(ratio, 4),
        "max_abs_diff": max_abs_diff,
        "slices": args.slices,
        "threads": torch.get_num_threads(),
        "architecture": {"base_channels": args.base_channels, "depth": args.depth},
        "gpu_512x512x200_seconds": gpu_seconds,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
