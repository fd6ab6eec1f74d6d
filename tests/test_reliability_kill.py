"""SIGKILL at random moments of every writing command, then a rerun.

After each kill no final path may hold a partial file (every output that exists reads back whole), and
running the command again must succeed: it finishes the work (or resumes it), or, when the killed run had
already committed everything, it refuses with "already exists" and changes nothing. After the rerun no
temporary file is left. Kill moments are drawn with a fixed seed, spread over the command's run time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import hostile_corpus as corpus  # noqa: E402

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
KILLS = int(os.environ.get("SOFTSEG_KILLS", "3"))


def start(argv: list) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_softseg", *map(str, argv)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run(argv: list) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_softseg", *map(str, argv)], env=ENV, capture_output=True,
                          text=True, timeout=600)


def duration(argv: list) -> float:
    t0 = time.monotonic()
    result = run(argv)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - t0


def kill_at(argv: list, seconds: float) -> int | None:
    proc = start(argv)
    try:
        proc.wait(timeout=seconds)
        return proc.returncode  # finished before the kill
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


def whole(path: Path) -> None:
    """Raise unless ``path`` reads back completely."""
    name = path.name
    if name.endswith((".nii", ".nii.gz")):
        img = nib.load(path)
        np.asarray(img.dataobj)  # reads and checks the whole gzip stream
    elif name.endswith(".json"):
        json.loads(path.read_text())
    elif name.endswith(".safetensors"):
        from safetensors.numpy import load_file

        load_file(str(path))


def finals(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not corpus.TEMP_RE.search(p.name) and not p.name.startswith(".")]


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if corpus.TEMP_RE.search(p.name)]


def moments(total: float, seed: str) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.uniform(0.3, total * 1.05) for _ in range(KILLS))


def check_outputs_whole(out_root: Path) -> None:
    for p in finals(out_root):
        whole(p)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-inputs")
    case = corpus.good_case(root / "case", shape=(96, 96, 48), raters=5)
    for i in range(4):
        corpus.good_case(root / "ds" / "Training" / f"case{i + 1:02d}", shape=(64, 64, 8), raters=2, seed=i)
    model = corpus.good_model(root / "model")
    pred = corpus.nii(root / "pred.nii.gz", np.random.default_rng(0).random((96, 96, 48), dtype=np.float32))
    return {"case": case, "ds": root / "ds", "model": model, "pred": pred}


def _kill_loop(tmp_path, make_argv, outputs_of, rerun_rule, name):
    total = duration(make_argv(tmp_path / "timing"))
    for i, t in enumerate(moments(total, name)):
        work = tmp_path / f"k{i}"
        work.mkdir()
        argv = make_argv(work)
        finished = kill_at(argv, t)
        check_outputs_whole(work)
        existing = {p: p.stat().st_mtime_ns for p in finals(work)}
        result = rerun_rule(work, argv, finished)
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode == 2:
            assert "already exists" in result.stderr or "not empty" in result.stderr, result.stderr
            assert {p: p.stat().st_mtime_ns for p in finals(work)} == existing  # nothing changed
        else:
            assert result.returncode == 0, (t, result.stderr)
        for p in outputs_of(work):
            assert p.exists(), f"{p} missing after the rerun (kill at {t:.2f} s of {total:.2f} s)"
            whole(p)
        assert temporaries(work) == [], f"temporaries left after the rerun: {temporaries(work)}"


def plain_rerun(work, argv, finished):
    return run(argv)


def test_kill_softlabel(tmp_path, inputs):
    def argv(w):
        return ["softlabel", inputs["case"], "-o", w / "s.nii.gz", "--agreement", w / "a.nii.gz"]

    def outputs(w):
        return [w / "s.nii.gz", w / "s.json", w / "a.nii.gz"]

    def rerun(w, a, finished):
        present = [p.exists() for p in outputs(w)]
        result = run(a)
        if all(present):
            assert result.returncode == 2
        else:  # a partly linked group is rolled back by the rerun, which then succeeds
            assert result.returncode == 0, result.stderr
        return result

    _kill_loop(tmp_path, argv, outputs, rerun, "softlabel")


def test_kill_predict_file(tmp_path, inputs):
    _kill_loop(tmp_path, lambda w: ["predict", inputs["model"], inputs["case"] / "image.nii.gz", "-o", w / "p.nii.gz",
                                     "--quiet", "--device", "cpu"],
               lambda w: [w / "p.nii.gz"], plain_rerun, "predict-file")


def test_kill_predict_dataset_resumes(tmp_path, inputs):
    def outputs(w):
        return [w / "out" / "Training" / f"case{i:02d}" / "prediction_task01.nii.gz" for i in range(1, 5)]

    def rerun(w, a, finished):
        result = run(a)
        assert result.returncode == 0, result.stderr  # a dataset run always resumes
        return result

    _kill_loop(tmp_path, lambda w: ["predict", inputs["model"], inputs["ds"], "-o", w / "out", "--quiet",
                                     "--device", "cpu"], outputs, rerun, "predict-dataset")


def test_kill_evaluate_json(tmp_path, inputs):
    _kill_loop(tmp_path, lambda w: ["evaluate", inputs["case"], "--pred", inputs["pred"], "--json", w / "e.json"],
               lambda w: [w / "e.json"], plain_rerun, "evaluate")


def test_kill_synthetic(tmp_path):
    _kill_loop(tmp_path, lambda w: ["synthetic", w / "syn", "--cases", "4", "--validation", "1", "--shape", "48,48,8"],
               lambda w: [w / "syn" / "Training" / "case04" / "task01_seg04.nii.gz",
                          w / "syn" / "Validation" / "case05" / "image.nii.gz"], plain_rerun, "synthetic")


def test_kill_train_then_resume(tmp_path, inputs):
    from napari_softseg.model.model_io import load_model

    def argv(w):
        return ["train", inputs["ds"], "-o", w / "m", "--epochs", "3", "--base-channels", "4", "--depth", "2",
                "--quiet", "--device", "cpu", "--val-fraction", "0.25"]

    def rerun(w, a, finished):
        m = w / "m"
        if (m / "training_state.safetensors").exists():
            return run([*a, "--resume"])
        if (m / "config.json").exists() or (m / "model.safetensors").exists():
            return run([*a, "--overwrite"])  # killed before the first checkpoint was complete
        return run(a)

    def outputs(w):
        load_model(w / "m")  # weights, config and manifest agree
        return [w / "m" / "model.safetensors", w / "m" / "config.json", w / "m" / "manifest.json"]

    _kill_loop(tmp_path, argv, outputs, rerun, "train")


def test_kill_napari_writer(tmp_path):
    script = (
        "import sys, numpy as np\n"
        "from napari_softseg._napari.writer import write_soft_map\n"
        "data = np.random.default_rng(0).random((64, 160, 160), dtype=np.float32)\n"
        "write_soft_map(sys.argv[1], data, {'name': 'p', 'metadata': {}})\n"
    )

    def argv_for(w):
        return w / "map.nii.gz"

    def run_writer(path):
        return subprocess.run([sys.executable, "-c", script, str(path)], env=ENV, capture_output=True, text=True,
                              timeout=600)

    t0 = time.monotonic()
    assert run_writer(tmp_path / "timing.nii.gz").returncode == 0
    total = time.monotonic() - t0
    for i, t in enumerate(moments(total, "writer")):
        work = tmp_path / f"k{i}"
        work.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", script, str(argv_for(work))], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=t)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        check_outputs_whole(work)
        result = run_writer(argv_for(work))  # napari's dialog asked: the writer replaces
        assert result.returncode == 0, result.stderr
        whole(work / "map.nii.gz")
        assert temporaries(work) == []


# ------------------------------------------------------- the worst moments, hit on purpose (SOFTSEG_CRASH_AT)

def run_env(argv: list, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_softseg", *map(str, argv)], env={**ENV, **env},
                          capture_output=True, text=True, timeout=600)


def test_crash_between_the_files_of_a_soft_label_group(tmp_path, inputs):
    argv = ["softlabel", inputs["case"], "-o", tmp_path / "s.nii.gz", "--agreement", tmp_path / "a.nii.gz"]
    crashed = run_env(argv, SOFTSEG_CRASH_AT="group-after-first-link")
    assert crashed.returncode == -signal.SIGKILL
    assert (tmp_path / "s.nii.gz").exists() and not (tmp_path / "a.nii.gz").exists()  # the torn state
    whole(tmp_path / "s.nii.gz")
    result = run(argv)  # rolls the dead run's group back, then writes all three
    assert result.returncode == 0, result.stderr
    for name in ("s.nii.gz", "s.json", "a.nii.gz"):
        whole(tmp_path / name)
    assert temporaries(tmp_path) == []


def test_crash_before_a_commit_leaves_only_a_temporary(tmp_path, inputs):
    argv = ["evaluate", inputs["case"], "--pred", inputs["pred"], "--json", tmp_path / "e.json"]
    crashed = run_env(argv, SOFTSEG_CRASH_AT="before-commit")
    assert crashed.returncode == -signal.SIGKILL
    assert not (tmp_path / "e.json").exists() and len(temporaries(tmp_path)) == 1
    assert run(argv).returncode == 0
    whole(tmp_path / "e.json")
    assert temporaries(tmp_path) == []


def test_crash_between_weights_and_manifest_is_refused_then_resumed(tmp_path, inputs):
    from napari_softseg.errors import SoftsegError
    from napari_softseg.model.model_io import load_model

    argv = ["train", inputs["ds"], "-o", tmp_path / "m", "--epochs", "2", "--base-channels", "4", "--depth", "2",
            "--quiet", "--device", "cpu", "--val-fraction", "0"]
    assert run(argv[:-2] + ["--val-fraction", "0", "--epochs", "1"]).returncode == 0  # a first good checkpoint
    crashed = run_env([*argv, "--resume"], SOFTSEG_CRASH_AT="model-after-model.safetensors")
    assert crashed.returncode == -signal.SIGKILL
    with pytest.raises(SoftsegError, match="does not match manifest.json"):  # new weights, old config: refused
        load_model(tmp_path / "m")
    result = run([*argv, "--resume"])
    assert result.returncode == 0, result.stderr
    assert load_model(tmp_path / "m").config.training["epochs_done"] == 2


def test_concurrent_predicts_to_one_output_have_one_winner(tmp_path, inputs):
    out = tmp_path / "p.nii.gz"
    argv = ["predict", inputs["model"], inputs["case"] / "image.nii.gz", "-o", out, "--quiet", "--device", "cpu"]
    procs = [start(argv) for _ in range(4)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2, 2, 2], results
    assert all("p.nii.gz: already exists" in err for code, err in results if code == 2)
    whole(out)
    assert temporaries(tmp_path) == []


def test_crash_while_overwriting_a_soft_label_group_restores_the_old_one(tmp_path, inputs):
    argv = ["softlabel", inputs["case"], "-o", tmp_path / "s.nii.gz", "--agreement", tmp_path / "a.nii.gz"]
    assert run(argv).returncode == 0
    old = {n: (tmp_path / n).read_bytes() for n in ("s.nii.gz", "s.json", "a.nii.gz")}
    crashed = run_env([*argv, "--overwrite", "--method", "majority"], SOFTSEG_CRASH_AT="group-after-first-replace")
    assert crashed.returncode == -signal.SIGKILL
    assert (tmp_path / "s.nii.gz").read_bytes() != old["s.nii.gz"]  # torn: first member already replaced
    from napari_softseg.io.files import clean_stale_temporaries

    clean_stale_temporaries(tmp_path)  # what the next write into the folder does first
    assert {n: (tmp_path / n).read_bytes() for n in old} == old
    assert temporaries(tmp_path) == []
