"""``torchrun`` runs of ``softseg train`` and ``softseg predict`` on 2 CPU processes (gloo), against one process.

Training: every rank draws the same global batch and takes its rows; the loss is built from sums over the
ranks, so two processes follow the single-process loss curve up to the order of floating-point reductions
(asserted within :data:`LOSS_RTOL`). An interrupted 2-process run (SIGTERM to torchrun) resumes from rank 0's
checkpoint onto the same curve; a time budget stops every rank together and ``--resume`` continues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_softseg.datasets.synthetic import write_qubiq_dataset
from napari_softseg.model.training import read_training_state, train
from napari_softseg.progress import drive

ROOT = Path(__file__).resolve().parents[1]
#: Largest relative difference allowed between the 2-process and the 1-process loss curves. The
#: computation is the same up to the order of floating-point sums (per-rank convolutions, the all-reduce of
#: gradients and loss sums); over 24 AdamW steps the curves agree far closer in practice.
LOSS_RTOL = 1e-4
#: 24 optimizer steps; the history's per-epoch losses (means of 3 steps) are the curve compared.
RUN = dict(epochs=8, steps_per_epoch=3, batch_size=4, base_channels=4, depth=2, device="cpu", seed=0,
           loss="bce+dice", val_fraction=0.25)


def _cli_options(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def torchrun(*args: str, nproc: int = 2, wait: bool = True, timeout: float = 180):
    """``torchrun --standalone --nproc-per-node N -m napari_softseg ARGS`` (a finished or running process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "napari_softseg", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _history(model_dir: Path) -> list[dict]:
    return json.loads((model_dir / "config.json").read_text())["training"]["history"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun") / "ds"
    return write_qubiq_dataset(root, n_cases=4, n_validation=0, shape=(48, 48, 1), n_raters=3, seed=1)


@pytest.fixture(scope="module")
def single_process_run(dataset, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("single") / "m"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun sets for each rank (OMP_NUM_THREADS=1); much faster on shared cores
    try:
        result = drive(train(dataset, out, **RUN))
    finally:
        torch.set_num_threads(threads)
    return out, result


def test_two_processes_follow_the_single_process_loss_curve_and_resume_after_a_kill(dataset, single_process_run,
                                                                                   tmp_path):
    single, single_result = single_process_run
    out = tmp_path / "m2"
    proc = torchrun("train", str(dataset), "-o", str(out), "--quiet", *_cli_options(RUN), wait=False)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if read_training_state(out)["epoch"] >= 3:
                break
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0, stderr[-3000:]
    cut = read_training_state(out)["epoch"]
    assert 3 <= cut < RUN["epochs"], "the run was not interrupted in the middle"

    resumed = torchrun("train", "-o", str(out), "--resume", "--quiet")  # dataset and options from the state
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # rank 0 alone prints: one resume line, one result line
    assert resumed.stderr.count(f"resuming after epoch {cut}") == 1 and resumed.stdout.count("model: ") == 1
    a, b = _history(single), _history(out)
    assert [h["epoch"] for h in b] == list(range(1, RUN["epochs"] + 1))
    np.testing.assert_allclose([h["loss"] for h in b], [h["loss"] for h in a], rtol=LOSS_RTOL)
    assert b[-1]["loss"] < b[0]["loss"]  # it learned: the comparison is not between two idle runs
    # validation on rank 0 sees the same model: same scores, same best epoch, same calibration
    np.testing.assert_allclose([h["val_qubiq"] for h in b], [h["val_qubiq"] for h in a], rtol=1e-3, atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["processes"] == 2 and config["training"]["steps"] == 24
    assert config["training"]["best_epoch"] == single_result.best_epoch
    assert config["calibration"]["state"] == "calibrated"
    assert config["temperature"] == pytest.approx(json.loads((single / "config.json").read_text())["temperature"],
                                                  rel=1e-2)


@pytest.mark.slow
def test_time_budget_stops_every_rank_and_one_process_resumes(dataset, tmp_path):
    out = tmp_path / "m2"
    options = {**RUN, "epochs": 10_000, "max_minutes": 0.1}
    first = torchrun("train", str(dataset), "-o", str(out), "--quiet", *_cli_options(options))
    assert first.returncode == 0, first.stderr[-3000:]
    state = read_training_state(out)
    assert 1 <= state["epoch"] < 10_000
    assert "budget" in first.stderr or "schedule is complete" in first.stderr
    steps = state["steps_done"]
    # the checkpoint holds no per-rank state: a 2-process run may be resumed by one process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    second = subprocess.run([sys.executable, "-m", "napari_softseg", "train", "-o", str(out), "--resume",
                             "--max-minutes", "0.1", "--quiet"], env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["training"]["processes"] == 1
    after = read_training_state(out)
    assert after["steps_done"] > steps and after["epoch"] > state["epoch"]
    assert after["history"][: state["epoch"]] == state["history"]


def test_global_batch_smaller_than_the_processes_is_refused(dataset, tmp_path, monkeypatch):
    from napari_softseg.errors import SoftsegError
    from napari_softseg.model.distributed import Distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(Distributed, "start", lambda self, device: None)  # no group needed to refuse
    with pytest.raises(SoftsegError, match=r"global batch \(1 patches per step\) is smaller than the 2 processes"):
        drive(train(dataset, tmp_path / "m", **{**RUN, "batch_size": 1}))


def test_sharded_prediction_equals_one_process_and_a_rerun_skips_every_case(single_process_run, tmp_path):
    import nibabel as nib
    import torch

    from napari_softseg.pipeline.predict import predict_path

    model, _ = single_process_run
    data = write_qubiq_dataset(tmp_path / "archive", n_cases=5, n_validation=0, shape=(40, 36, 3), n_raters=2,
                               seed=2) / "Training"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = drive(predict_path(model, data, tmp_path / "one", device="cpu"))
    finally:
        torch.set_num_threads(threads)
    assert len(single) == 5

    out = tmp_path / "two"
    proc = torchrun("predict", str(model), str(data), "-o", str(out), "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = [line for line in proc.stdout.split() if line.endswith(".nii.gz")]  # the maps (then sidecars)
    # rank 0 lists every rank's files: each case exactly once, in case order
    assert listed == [str(out / p.parent.name / p.name) for p in single]
    assert "5 case(s) predicted by 2 processes" in proc.stderr
    for path in single:
        a, b = nib.load(path), nib.load(out / path.parent.name / path.name)
        assert a.header.binaryblock == b.header.binaryblock
        np.testing.assert_allclose(np.asarray(b.dataobj), np.asarray(a.dataobj), rtol=0, atol=1e-6)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}

    again = torchrun("predict", str(model), str(data), "-o", str(out), "--device", "cpu", "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("5 of 5 case(s) already predicted") == 1  # said once, by rank 0, for all ranks
    assert again.stdout.split() == []  # nothing predicted, nothing listed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == before  # nothing rewritten
