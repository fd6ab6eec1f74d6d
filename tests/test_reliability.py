"""Reliability mechanisms: the no-replace commit, group commits and their roll-back, resumable dataset
prediction, the model-folder manifest, memory refusals measured in a child process, and the CLI's
behaviour on pipes and strict encodings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_softseg.errors import SoftsegError
from napari_softseg.io import files, jsonio

sys.path.insert(0, str(Path(__file__).parent))
import hostile_corpus as corpus  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def softseg(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "napari_softseg", *map(str, args)], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=300, **kwargs)


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if corpus.TEMP_RE.search(p.name)]


# ------------------------------------------------------------------------------------ commit primitive

def test_racing_writers_without_overwrite_never_replace(tmp_path):
    target = tmp_path / "out.bin"
    barrier = threading.Barrier(8)
    results = {}

    def writer(i):
        tmp = files.temp_path_for(target)
        files.write_bytes_synced(tmp, f"writer {i}".encode() * 1000)
        barrier.wait()
        try:
            files.commit_file(tmp, target)
            results[i] = "won"
        except SoftsegError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "won"]
    assert len(winners) == 1
    assert all("already exists" in r for i, r in results.items() if i not in winners)
    assert target.read_bytes() == f"writer {winners[0]}".encode() * 1000
    assert temporaries(tmp_path) == []


def test_commit_with_overwrite_replaces_atomically(tmp_path):
    target = tmp_path / "out.json"
    jsonio.write_json(target, {"v": 1})
    with pytest.raises(SoftsegError, match="already exists"):
        jsonio.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    jsonio.write_json(target, {"v": 3}, overwrite=True)
    assert json.loads(target.read_text()) == {"v": 3}


def test_group_commit_is_all_or_nothing_when_a_member_appears_meanwhile(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    with pytest.raises(SoftsegError, match="b.json: already exists"):
        with files.OutputGroup([a, b]) as group:
            group.temp(a).write_text("new a")
            group.temp(b).write_text("new b")
            b.write_text("someone else's")  # another program creates b while we work
    assert not a.exists()  # rolled back
    assert b.read_text() == "someone else's"
    assert temporaries(tmp_path) == []


def test_interrupted_group_commit_is_rolled_back_by_the_next_write(tmp_path):
    """A journal of a dead process: finals still linked to its temporaries are removed, others kept."""
    dead = 999999999
    finals = [tmp_path / "s.nii.gz", tmp_path / "s.json", tmp_path / "mine.txt"]
    temps = [tmp_path / f".{p.name}.softseg-{dead}-0000000{i}.part" for i, p in enumerate(finals)]
    for t in temps:
        t.write_text("half of a group")
    os.link(temps[0], finals[0])  # committed before the crash
    os.link(temps[1], finals[1])
    finals[2].write_text("the user's own file")  # same name in the journal, but not our inode
    journal = tmp_path / f".s.nii.gz.softseg-{dead}-0000000a.journal"
    journal.write_text(json.dumps({"pairs": [[str(t), str(f)] for t, f in zip(temps, finals)]}))
    files.check_writable(tmp_path / "anything.nii.gz")
    assert not finals[0].exists() and not finals[1].exists()
    assert finals[2].read_text() == "the user's own file"
    assert temporaries(tmp_path) == []


def test_temporaries_of_live_processes_are_left_alone(tmp_path):
    mine = tmp_path / f".x.softseg-{os.getpid()}-00000001.part"
    mine.write_text("in progress")
    dead = tmp_path / ".x.softseg-999999999-00000002.part.nii.gz"
    dead.write_text("left by a killed run")
    unrelated = tmp_path / ".x.part"
    unrelated.write_text("not ours")
    files.clean_stale_temporaries(tmp_path)
    assert mine.exists() and unrelated.exists() and not dead.exists()


def test_softlabel_race_has_one_winner_and_complete_outputs(tmp_path):
    case = corpus.good_case(tmp_path / "case", shape=(32, 32, 4))
    out = tmp_path / "s.nii.gz"
    procs = [subprocess.Popen([sys.executable, "-m", "napari_softseg", "softlabel", str(case), "-o", str(out),
                               "--agreement", str(tmp_path / "a.nii.gz")], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2, 2], results
    assert all("already exists" in err for c, err in results if c == 2)
    assert nib.load(out).get_fdata().shape == (32, 32, 4)
    assert json.loads((tmp_path / "s.json").read_text())["method"] == "mean"
    assert nib.load(tmp_path / "a.nii.gz").get_fdata().max() <= 3
    assert temporaries(tmp_path) == []


# --------------------------------------------------------------------------------- datasets and resume

def test_symlink_loops_list_each_case_once(tmp_path):
    from napari_softseg.io.dataset import discover

    ds = tmp_path / "ds" / "Training"
    corpus.good_case(ds / "case01")
    corpus.good_case(ds / "case02", seed=1)
    os.symlink("..", ds / "case02" / "loop")
    os.symlink(ds, tmp_path / "ds" / "again")
    os.symlink("self", tmp_path / "ds" / "self")  # a link to itself
    found = discover(tmp_path / "ds")
    assert sorted(c.name for c in found.cases) == ["Training/case01", "Training/case02"]
    assert any("listed once" in p for p in found.problems)


def test_dataset_prediction_resumes_after_an_interruption(tmp_path):
    from napari_softseg.pipeline.predict import RUN_RECORD, predict_path
    from napari_softseg.progress import drive

    model = corpus.good_model(tmp_path / "model")
    for i in range(3):
        corpus.good_case(tmp_path / "ds" / "Training" / f"case0{i + 1}", seed=i)
    out = tmp_path / "preds"
    gen = predict_path(model, tmp_path / "ds", out, device="cpu")
    for event in gen:
        if event.stage == "case":
            break  # interrupted after the first case
    gen.close()
    first = out / "Training" / "case01" / "prediction_task01.nii.gz"
    before = first.stat().st_mtime_ns
    messages = []
    gen = predict_path(model, tmp_path / "ds", out, device="cpu")
    try:
        while True:
            messages.append(next(gen).message)
    except StopIteration as stop:
        written = stop.value
    assert any("resuming: 1 of 3 case(s) already predicted" in m for m in messages)
    assert [p.parent.name for p in written] == ["case02", "case03"]
    assert first.stat().st_mtime_ns == before
    assert json.loads((out / RUN_RECORD).read_text())["task"] == 1
    # another model may not mix its maps into this folder
    other = tmp_path / "other"
    corpus.good_model(other)
    corpus.rewrite_weights(other, lambda t: {k: v * 0.5 if v.is_floating_point() else v for k, v in t.items()})
    with pytest.raises(SoftsegError, match="already exists"):
        drive(predict_path(other, tmp_path / "ds", out, device="cpu"))


# -------------------------------------------------------------------------------------- model folders

def test_model_folder_manifest_binds_weights_and_config(tmp_path):
    import torch

    from napari_softseg.model.model_io import (
        MANIFEST_FILE,
        ModelConfig,
        load_model,
        new_network,
        save_config,
        save_model,
    )

    config = ModelConfig(architecture={"base_channels": 2, "depth": 1})
    save_model(tmp_path / "m", new_network(config), config)
    manifest = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    config.temperature = 1.7
    save_config(tmp_path / "m", config)  # config alone: the manifest follows
    assert load_model(tmp_path / "m").config.temperature == 1.7
    # a crash after new weights but before the new manifest: refused, never paired silently
    torch.manual_seed(5)
    weights = tmp_path / "m" / "model.safetensors"
    good = weights.read_bytes()
    save_model(tmp_path / "n", new_network(config), config)
    weights.write_bytes((tmp_path / "n" / "model.safetensors").read_bytes())
    with pytest.raises(SoftsegError, match="model.safetensors: does not match manifest.json"):
        load_model(tmp_path / "m")
    weights.write_bytes(good)
    load_model(tmp_path / "m")
    (tmp_path / "m" / MANIFEST_FILE).unlink()  # folders from before the manifest still load
    load_model(tmp_path / "m")


def test_resume_with_broken_checkpoint_metadata_is_one_line(tmp_path):
    import torch

    from napari_softseg.model.model_io import save_tensors
    from napari_softseg.model.training import STATE_FILE

    out = tmp_path / "m"
    out.mkdir()
    save_tensors(out / STATE_FILE, {"x": torch.zeros(1)}, {"options": "not a dict", "epoch": "three"})
    result = softseg("train", "-o", out, "--resume", "--quiet")
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "training_state.safetensors" in lines[0] and "cannot be resumed" in lines[0]


# ------------------------------------------------------------------------------------ memory and streams

def test_gzip_bomb_is_refused_before_reading_with_bounded_memory(tmp_path):
    """A real bomb: 2 GiB of zeros behind a 2048x1024x1024 header (a 2 MiB file)."""
    bomb = corpus.gzip_bomb(tmp_path / "bomb.nii.gz", zeros_mib=2048)
    assert bomb.stat().st_size < 8 * 2**20
    model = corpus.good_model(tmp_path / "model")
    code = (
        "import resource, sys\n"
        "from napari_softseg.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    env = {**ENV, "SOFTSEG_MAX_MEMORY_GB": "4"}
    # what the same process costs without any input: Python, torch, nibabel and the CLI imported
    baseline = subprocess.run([sys.executable, "-c", "import resource, torch, nibabel, napari_softseg.cli\n"
                               "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                              capture_output=True, text=True, env=env, timeout=300)
    base_mib = int(baseline.stdout.split("maxrss_kib")[1]) / 1024
    for argv in (["predict", model, bomb, "-o", tmp_path / "p.nii.gz", "--quiet"],
                 ["evaluate", corpus.good_case(tmp_path / "case"), "--pred", bomb]):
        result = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                                env=env, timeout=300)
        assert result.returncode == 2, result.stderr
        assert "bomb.nii.gz" in result.stderr and ("needs about" in result.stderr or "does not match" in result.stderr)
        rss_mib = int(result.stdout.split("maxrss_kib")[1]) / 1024
        # reading the bomb would add 2 GiB (stored) to 10 GiB (as float32); refusing it adds nothing
        assert rss_mib < base_mib + 256, f"{argv[0]}: peak RSS {rss_mib:.0f} MiB vs {base_mib:.0f} MiB at rest"
    assert not (tmp_path / "p.nii.gz").exists()


def test_broken_pipe_ends_quietly(tmp_path):
    for i in range(40):
        corpus.good_case(tmp_path / "ds" / f"case{i:02d}", raters=1, seed=i)
    result = subprocess.run(f"{sys.executable} -m napari_softseg inspect {tmp_path / 'ds'} | head -1",
                            shell=True, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_non_utf8_file_names_with_strict_utf8_output(tmp_path):
    corpus.good_case(tmp_path / os.fsdecode(b"case\xff"))
    result = softseg("inspect", tmp_path, env={"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"})
    assert result.returncode == 0, result.stderr
    assert "case\\udcff" in result.stdout or "case\\xff" in result.stdout
    bad = softseg("softlabel", tmp_path / os.fsdecode(b"miss\xfe"), "-o", tmp_path / "s.nii.gz",
                  env={"PYTHONIOENCODING": "utf-8:strict"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "folder not found" in bad.stderr


# -------------------------------------------------------------------------------------------- reader

@pytest.mark.parametrize("sidecar", [
    "[" * 50000 + "]" * 50000,
    '{"software": 5, "kind": ["prediction"]}',
    '{"software": "napari-softseg 0.1", "kind": {"a": 1}, "name": 3, "geometry": "x", "zzz": [1, 2]}',
    '{"software": "napari-softseg 0.1", "kind": "prediction", "threshold": "high"}',
    "\udcff not json",
])
def test_reader_survives_malformed_sidecars(tmp_path, sidecar):
    from napari_softseg._napari.reader import get_reader

    path = corpus.nii(tmp_path / "p.nii.gz", np.full((8, 8, 2), 0.5, np.float32))
    (tmp_path / "p.softseg.json").write_text(sidecar, encoding="utf-8", errors="surrogateescape")
    reader = get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert len(layers) == 1 and np.asarray(layers[0][0]).size == 8 * 8 * 2


@pytest.mark.parametrize("make", [corpus._rgb, lambda p: corpus.nii(p, np.ones((4, 4, 1), np.complex64)),
                                  lambda p: corpus.nii(p, np.full((4, 4, 1), 1e300))], ids=["rgb", "complex", "1e300"])
def test_reader_turns_every_failure_into_one_line_naming_the_file(tmp_path, make):
    from napari_softseg._napari.reader import get_reader, read

    path = tmp_path / "bad.nii.gz"
    make(path)
    reader = get_reader(str(path)) or read
    with pytest.raises(SoftsegError) as err:
        reader(str(path))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------- values, not just exit codes

def test_huge_equal_weights_give_the_plain_mean(tmp_path):
    case = corpus.good_case(tmp_path / "case", raters=3)
    code, _, err, _ = corpus.run_cli(["softlabel", str(case), "-o", str(tmp_path / "w.nii.gz"),
                                      "--weights", "1e308,1e308,1e308"])
    assert code == 0, err
    code, _, err, _ = corpus.run_cli(["softlabel", str(case), "-o", str(tmp_path / "m.nii.gz")])
    assert code == 0, err
    weighted = np.asarray(nib.load(tmp_path / "w.nii.gz").dataobj)
    assert weighted.max() > 0
    np.testing.assert_allclose(weighted, np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj), atol=1e-6)


def test_one_voxel_image_gives_a_probability(tmp_path):
    model = corpus.good_model(tmp_path / "model")
    corpus.nii(tmp_path / "one.nii.gz", np.full((1, 1, 1), 3.0, np.float32))
    code, _, err, _ = corpus.run_cli(["predict", str(model), str(tmp_path / "one.nii.gz"), "-o",
                                      str(tmp_path / "p.nii.gz"), "--quiet"])
    assert code == 0, err
    p = np.asarray(nib.load(tmp_path / "p.nii.gz").dataobj)
    assert p.shape == (1, 1, 1) and 0 <= float(p[0, 0, 0]) <= 1


def test_oversized_training_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTSEG_MAX_MEMORY_GB", "2")
    corpus.good_case(tmp_path / "ds" / "Training" / "case01")
    code, _, err, _ = corpus.run_cli(["train", str(tmp_path / "ds"), "-o", str(tmp_path / "m"), "--patch-size", "4096",
                                      "--quiet"])
    assert code == 2 and "--patch-size 4096" in err and "needs about" in err
    assert not (tmp_path / "m").exists()
    monkeypatch.setenv("SOFTSEG_MAX_MEMORY_GB", "100")  # activations fit: the network's own size is refused
    code, _, err, _ = corpus.run_cli(["train", str(tmp_path / "ds"), "-o", str(tmp_path / "m"), "--base-channels", "256",
                                      "--depth", "7", "--quiet", "--device", "cpu", "--val-fraction", "0"])
    assert code == 2 and "parameters, more than this tool handles" in err
    assert not (tmp_path / "m" / "model.safetensors").exists()


@pytest.mark.filterwarnings("ignore:no validation cases")
def test_two_trainings_never_write_one_folder_at_once(tmp_path):
    from napari_softseg.model.training import train

    corpus.good_case(tmp_path / "ds" / "Training" / "case01")
    first = train(tmp_path / "ds", tmp_path / "m", epochs=1, base_channels=2, depth=1, val_fraction=0.0, device="cpu")
    next(first)  # running: holds the folder
    second = train(tmp_path / "ds", tmp_path / "m", epochs=1, base_channels=2, depth=1, val_fraction=0.0, device="cpu")
    with pytest.raises(SoftsegError, match=r"m: another softseg train \(process \d+\) is writing this folder"):
        next(second)
    first.close()  # a stopped run releases the folder
    assert not (tmp_path / ".m.softseg-lock").exists()
    third = train(tmp_path / "ds", tmp_path / "m", epochs=1, base_channels=2, depth=1, val_fraction=0.0, device="cpu")
    from napari_softseg.progress import drive

    assert drive(third).epochs_done == 1
    assert not (tmp_path / ".m.softseg-lock").exists()
    # a lock left by a killed run is taken over
    (tmp_path / ".m.softseg-lock").write_text("999999999")
    assert drive(train(tmp_path / "ds", tmp_path / "m", epochs=2, base_channels=2, depth=1, val_fraction=0.0,
                       device="cpu", resume=True)).epochs_done == 2


def test_a_complete_group_of_a_dead_run_is_kept(tmp_path):
    dead = 999999999
    finals = [tmp_path / "s.nii.gz", tmp_path / "s.json"]
    temps = [tmp_path / f".{p.name}.softseg-{dead}-0000000{i}.part" for i, p in enumerate(finals)]
    for t, f in zip(temps, finals):
        t.write_text("whole")
        os.link(t, f)  # every member linked; killed before removing the journal
    (tmp_path / f".s.nii.gz.softseg-{dead}-0000000a.journal").write_text(
        json.dumps({"pairs": [[str(t), str(f)] for t, f in zip(temps, finals)]}))
    files.clean_stale_temporaries(tmp_path)
    assert all(f.read_text() == "whole" for f in finals)
    assert temporaries(tmp_path) == []


def test_overwriting_a_group_is_all_or_nothing_too(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("old a")
    with files.OutputGroup([a, b], overwrite=True) as group:
        group.temp(a).write_text("new a")
        group.temp(b).write_text("new b")
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    # a failure half-way puts the old files back and removes the new one that had no predecessor
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_replace)
    c = tmp_path / "c.json"
    with pytest.raises(SoftsegError, match="No space left"):
        with files.OutputGroup([a, c], overwrite=True) as group:
            group.temp(a).write_text("newer a")
            group.temp(c).write_text("new c")
    monkeypatch.undo()
    assert a.read_text() == "new a" and not c.exists()
    assert temporaries(tmp_path) == []
