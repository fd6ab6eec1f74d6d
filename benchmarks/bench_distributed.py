"""Training step and dataset prediction under ``torchrun``: N processes against one, on this machine.

The same planned run is timed three ways, each in a fresh Python process started by this script:

- **1 process, default threads** (the baseline: ``softseg train`` as a user runs it; torch uses one
  thread per core);
- **1 process, 1 thread** (what ``torchrun`` gives each rank: it sets ``OMP_NUM_THREADS=1``);
- **N processes** under ``torchrun --standalone --nproc-per-node N`` (gloo on the CPU, nccl on CUDA),
  each taking its rows of the same global batch.

Training: a :class:`~napari_softseg.model.training.TrainingRun` on a synthetic 2D dataset (planned patch,
batch and width; ``--val-fraction 0``) is prepared, planned and built, then ``--steps`` optimizer steps
are timed after ``--warmup`` steps; the figure is the median step time on rank 0 (the ranks step in
lockstep). Prediction: ``predict_path`` over ``--cases`` cases (each rank its share), wall time from the
first to the last case written, rank 0's view after a barrier.

On a machine with fewer cores than processes × threads, N processes are not faster: the figures say how
much the distributed machinery costs, not what a cluster gains. The last line is JSON with the ratios
``two_vs_one_default`` and ``two_vs_one_single_thread`` (time of N processes / time of the baseline; < 1
is faster).

Usage::

    python benchmarks/bench_distributed.py [--nproc 2] [--steps 20] [--cases 8] [--work /tmp/bench_dist]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    from napari_softseg.model.distributed import Distributed
    from napari_softseg.pipeline.predict import predict_path
    from napari_softseg.model.training import TrainingRun, TrainOptions
    from napari_softseg.progress import drive

    work, steps, warmup, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist = Distributed.from_environment()
    run = TrainingRun(f"{work}/model-{mode}", TrainOptions(device="cpu", val_fraction=0, epochs=1, augment=True,
                                                           max_minutes=None), dataset=f"{work}/data", overwrite=True)
    drive(run.prepare()); drive(run.plan()); drive(run.build())
    times = []
    for i in range(warmup + steps):
        dist.barrier()
        t0 = time.perf_counter()
        loss = run._step()
        run.steps_done += 1
        dist.barrier()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    dist.barrier()
    t0 = time.perf_counter()
    written = drive(predict_path(f"{work}/model-ref", f"{work}/cases", f"{work}/pred-{mode}", device="cpu",
                                 overwrite=True, dist=dist))
    dist.barrier()
    predict_s = time.perf_counter() - t0
    if dist.is_main:
        p = run.plan_
        print(json.dumps({"step_s": float(np.median(times)), "predict_s": predict_s, "cases": len(written),
                          "batch": p.batch_size, "patch": list(p.patch_size), "width": p.base_channels,
                          "depth": p.depth, "processes": dist.world_size}))
    dist.stop()
''')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--work", default="/tmp/bench_dist")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from napari_softseg.datasets.synthetic import write_qubiq_dataset
    from napari_softseg.model.training import train
    from napari_softseg.progress import drive

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "data").exists():
        write_qubiq_dataset(work / "data", n_cases=6, n_validation=0, shape=(128, 128, 1), n_raters=3, seed=5)
        write_qubiq_dataset(work / "cases-root", n_cases=args.cases, n_validation=0, shape=(160, 160, 24),
                            n_raters=2, seed=6)
        (work / "cases-root" / "Training").rename(work / "cases")
        drive(train(work / "data", work / "model-ref", epochs=1, steps_per_epoch=2, val_fraction=0, device="cpu",
                    overwrite=True))
    worker = work / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    common = [str(work), str(args.steps), str(args.warmup)]

    def run(cmd, extra_env=None):
        proc = subprocess.run(cmd, env={**env, **(extra_env or {})}, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])

    load = os.getloadavg()
    one_default = run([sys.executable, str(worker), *common, "one-default"])
    one_single = run([sys.executable, str(worker), *common, "one-single"], {"OMP_NUM_THREADS": "1"})
    many = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
                str(worker), *common, f"n{args.nproc}"])
    load_after = os.getloadavg()
    rows = [("1 process, default threads", one_default), ("1 process, 1 thread", one_single),
            (f"{args.nproc} processes (torchrun, 1 thread each)", many)]
    print(f"plan: batch {many['batch']}, patch {many['patch']}, width {many['width']}, depth {many['depth']}; "
          f"{args.steps} timed steps; {many['cases']} cases predicted; cores {os.cpu_count()}")
    print(f"{'':44s} {'step s':>8s} {'predict s':>10s}")
    for name, r in rows:
        print(f"{name:44s} {r['step_s']:8.3f} {r['predict_s']:10.2f}")
    print(f"load average before {load[0]:.2f}, after {load_after[0]:.2f}")
    result = {
        "nproc": args.nproc, "cores": os.cpu_count(),
        "step_s_one_default": one_default["step_s"], "step_s_one_single_thread": one_single["step_s"],
        "step_s_many": many["step_s"],
        "two_vs_one_default": many["step_s"] / one_default["step_s"],
        "two_vs_one_single_thread": many["step_s"] / one_single["step_s"],
        "predict_s_one_default": one_default["predict_s"], "predict_s_many": many["predict_s"],
        "predict_s_one_single_thread": one_single["predict_s"],
        "predict_two_vs_one_default": many["predict_s"] / one_default["predict_s"],
        "predict_two_vs_one_single_thread": many["predict_s"] / one_single["predict_s"],
        "load_before": load[0], "load_after": load_after[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
