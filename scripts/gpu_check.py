"""One call for the GPU: CUDA tests, the 512 × 512 × 200 inference benchmark and a 2-minute GPU training; one JSON.

Usage (from the repository root, on a machine with a CUDA GPU; ``scripts/gpu_check.sh`` wraps it)::

    python scripts/gpu_check.py [--json OUT] [--minutes 2]

Steps, each recorded in the JSON whatever the others do:

1. ``pytest`` on the tests that need CUDA (``-k cuda``: device choice, half precision, out-of-memory
   fallback), with their pass/skip/fail counts;
2. ``benchmarks/bench_inference.py``: its JSON line, including ``gpu_512x512x200_seconds`` (a 512 × 512 ×
   200 volume predicted end to end by the default-width network; the aim is at most 1 s);
3. ``softseg train`` on a synthetic 3D dataset (``softseg synthetic``, 8 cases of 96 × 96 × 64, 3 raters)
   with ``--device cuda --max-minutes`` (default 2): the GPU plan (patch, batch, width, mixed precision),
   the steps done, the validation score and seconds.

Without CUDA nothing is run: the JSON says ``"cuda": false`` with the reason and the script exits 0, so it
can sit in any checklist.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - start
    except subprocess.TimeoutExpired as exc:
        return 124, f"timed out after {timeout:.0f} s: {exc}", time.perf_counter() - start


def cuda_tests() -> dict:
    code, out, seconds = _run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                               "tests/test_device.py", "tests/test_inference.py"], 600)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    return {"returncode": code, "seconds": round(seconds, 1), **counts, "tail": out.strip().splitlines()[-3:]}


def inference_benchmark() -> dict:
    code, out, seconds = _run([sys.executable, "benchmarks/bench_inference.py", "--repeats", "3"], 900)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if code == 0 and lines else {"tail": out.strip().splitlines()[-5:]}
    return {"returncode": code, "seconds": round(seconds, 1), **result}


def gpu_training(minutes: float) -> dict:
    entry = Path(sys.executable).with_name("softseg")
    softseg = [str(entry) if entry.exists() else "softseg"]
    with tempfile.TemporaryDirectory() as tmp:
        data, model = Path(tmp) / "ds", Path(tmp) / "model"
        code, out, _ = _run(softseg + ["synthetic", str(data), "--cases", "8", "--validation", "2", "--raters", "3",
                                       "--shape", "96,96,64", "--seed", "0"], 600)
        if code != 0:
            return {"returncode": code, "tail": out.strip().splitlines()[-5:]}
        code, out, seconds = _run(softseg + ["train", str(data), "--out", str(model), "--device", "cuda",
                                             "--max-minutes", f"{minutes:g}", "--quiet"], 60 * minutes + 600)
        result = {"returncode": code, "wall_seconds": round(seconds, 1), "output": out.strip().splitlines()[-3:]}
        config = model / "config.json"
        if config.is_file():
            stored = json.loads(config.read_text())
            plan = stored.get("plan", {})
            result["plan"] = {k: plan.get(k) for k in ("dim", "patch_size", "batch_size", "base_channels", "depth",
                                                       "amp", "device", "target_spacing")}
            result["training"] = {k: stored.get("training", {}).get(k) for k in ("steps", "epochs", "seconds",
                                                                                  "stopped", "device")}
            result["validation"] = stored.get("validation")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget (default 2)")
    args = parser.parse_args(argv)

    import torch

    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if not report["cuda"]:
        report["skipped"] = "no CUDA device visible to torch (CPU build or no GPU): nothing was run"
        print(report["skipped"])
    else:
        report["gpu"] = torch.cuda.get_device_name(0)
        report["cuda_version"] = torch.version.cuda
        for name, step in (("cuda_tests", cuda_tests), ("inference", inference_benchmark),
                           ("training", lambda: gpu_training(args.minutes))):
            print(f"gpu_check: {name} ...", flush=True)
            report[name] = step()
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
