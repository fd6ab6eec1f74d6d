"""Training: tiny runs on synthetic data; determinism, checkpoints, resume, budgets and every bad input."""

from __future__ import annotations

import errno
import math
import os

import numpy as np
import pytest
import torch

from napari_softseg.datasets.synthetic import write_qubiq_dataset
from napari_softseg.errors import SoftsegError
from napari_softseg.model import model_io
from napari_softseg.model.augmentation import AugmentationSettings, augment_batch
from napari_softseg.model.calibration import fit_temperature
from napari_softseg.model.losses import soft_loss
from napari_softseg.model.model_io import load_model, load_tensors
from napari_softseg.model.training import STATE_FILE, TrainOptions, read_training_state, train
from napari_softseg.progress import drive

TINY = dict(base_channels=4, depth=2, batch_size=4, device="cpu", steps_per_epoch=3)


def _weights(model_dir):
    return load_tensors(model_dir / "model.safetensors")[0]


def _state_weights(model_dir):
    return {k: v for k, v in load_tensors(model_dir / STATE_FILE)[0].items() if k.startswith("model.")}


def test_tiny_run_writes_a_loadable_model(synthetic_2d_dataset, tmp_path):
    events = []
    gen = train(synthetic_2d_dataset, tmp_path / "m", epochs=2, **TINY)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert result.epochs_done == 2 and result.stopped == "epochs done" and 1 <= result.best_epoch <= 2
    assert result.steps == 6 and "schedule is complete (6 steps, 2 epochs)" in result.stop_reason
    assert 0 <= result.best_score <= 1
    stages = [e.stage for e in events]
    assert stages[0] == "device" and stages.count("epoch") == 2 and stages.count("batch") == 6
    plan_lines = [e.message for e in events if e.stage == "plan"]
    assert any(m.startswith("dataset: 3 training case(s), 3 rater(s)") for m in plan_lines)
    assert any("2D U-Net on slices along axis 2, 64x64 patches" in m for m in plan_lines)
    epoch_events = [e for e in events if e.stage == "epoch"]
    assert {"loss", "val_qubiq", "val_ece", "best"} <= set(epoch_events[-1].metrics)
    model = load_model(tmp_path / "m")
    cfg = model.config
    assert cfg.task == 1 and cfg.softlabel["method"] == "mean" and cfg.image_channels == 1
    # QUBIQ dataset: training uses Training/ only; validation is a held-out share of it (1 of 4 cases)
    assert len(cfg.training["train_cases"]) == 3 and len(cfg.training["val_cases"]) == 1
    assert all(c.startswith("Training/") for c in cfg.training["train_cases"] + cfg.training["val_cases"])
    assert cfg.validation["qubiq_score"] == pytest.approx(result.best_score)
    # the config's summary describes the whole run, the weights the best epoch
    assert cfg.training["epochs_done"] == 2 and cfg.training["stopped"] == "epochs done"
    # the plan is stored with the model; validation exists, so it was calibrated by default
    assert cfg.plan["dim"] == 2 and cfg.plan["fingerprint"]["n_cases"] == 3 and cfg.patch_size == [64, 64]
    assert cfg.plan["sources"]["depth"] == "option" and cfg.calibration["state"] == "calibrated"
    assert result.calibration is not None and cfg.temperature == pytest.approx(result.calibration["temperature"])
    assert [h["epoch"] for h in cfg.training["history"]] == [1, 2] and cfg.training["best_epoch"] == result.best_epoch


def test_deterministic_on_cpu_for_a_seed(synthetic_2d_dataset, tmp_path):
    drive(train(synthetic_2d_dataset, tmp_path / "a", epochs=1, seed=3, **TINY))
    drive(train(synthetic_2d_dataset, tmp_path / "b", epochs=1, seed=3, **TINY))
    drive(train(synthetic_2d_dataset, tmp_path / "c", epochs=1, seed=4, **TINY))
    a, b, c = _state_weights(tmp_path / "a"), _state_weights(tmp_path / "b"), _state_weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_interrupted_run_resumes_to_the_same_weights(synthetic_2d_dataset, tmp_path):
    drive(train(synthetic_2d_dataset, tmp_path / "full", epochs=2, **TINY))
    gen = train(synthetic_2d_dataset, tmp_path / "cut", epochs=2, **TINY)
    for event in gen:
        if event.stage == "epoch":  # epoch 1 is checkpointed; the user cancels here
            break
    gen.close()
    assert read_training_state(tmp_path / "cut")["epoch"] == 1
    result = drive(train(None, tmp_path / "cut", resume=True))  # dataset and options come from the state
    assert result.epochs_done == 2
    full, cut = _state_weights(tmp_path / "full"), _state_weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert read_training_state(tmp_path / "cut")["history"] == read_training_state(tmp_path / "full")["history"]


def test_resume_can_extend_epochs_but_not_change_the_model(synthetic_2d_dataset, tmp_path):
    drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, **TINY))
    with pytest.raises(SoftsegError, match="cannot resume with different settings \\(task: 1 -> 2"):
        drive(train(synthetic_2d_dataset, tmp_path / "m", resume=True, task=2))
    result = drive(train(synthetic_2d_dataset, tmp_path / "m", resume=True, epochs=2))
    assert result.epochs_done == 2
    with pytest.raises(SoftsegError, match="nothing to resume"):
        drive(train(synthetic_2d_dataset, tmp_path / "empty", resume=True))


def test_existing_model_is_not_overwritten(synthetic_2d_dataset, tmp_path):
    drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, **TINY))
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with pytest.raises(SoftsegError, match="already holds a model"):
        drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, **TINY))
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, overwrite=True, **{**TINY, "seed": 9}))
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != before


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(synthetic_2d_dataset, tmp_path, monkeypatch):
    out = tmp_path / "m"
    gen = train(synthetic_2d_dataset, out, epochs=3, **TINY)
    for event in gen:
        if event.stage == "epoch":
            break  # epoch 1 written
    good = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(model_io.os, "fsync", full_disk)
    with pytest.raises(SoftsegError, match="could not write the checkpoint of epoch 2 .*No space left.*epoch 1.* kept.*--resume"):
        for _ in gen:
            pass
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == good  # nothing half-written, nothing lost
    assert read_training_state(out)["epoch"] == 1
    load_model(out)
    assert drive(train(None, out, resume=True)).epochs_done == 3


def test_time_budget_stops_cleanly_and_keeps_a_model(synthetic_2d_dataset, tmp_path):
    result = drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=50, max_minutes=1e-6, **TINY))
    assert result.stopped == "time budget" and result.epochs_done == 1
    assert load_model(tmp_path / "m").config.training["history"][0]["batches"] == 1
    assert "budget ran out" in result.stop_reason


def test_empty_training_set(synthetic_2d_dataset, tmp_path):
    with pytest.raises(SoftsegError, match="empty training set: no case has rater masks for task 2") as err:
        drive(train(synthetic_2d_dataset, tmp_path / "m", task=2, **TINY))
    assert str(synthetic_2d_dataset) in str(err.value)
    assert not (tmp_path / "m").exists()


def test_no_validation_cases(tmp_path):
    one = write_qubiq_dataset(tmp_path / "one", n_cases=1, shape=(32, 32, 1), seed=0)
    with pytest.raises(SoftsegError, match="no validation cases: only 1 case"):
        drive(train(one, tmp_path / "m", epochs=1, **TINY))
    with pytest.warns(UserWarning, match="no validation cases"):
        result = drive(train(one, tmp_path / "m", epochs=1, val_fraction=0, **TINY))
    assert result.best_score is None and load_model(tmp_path / "m").config.training["val_cases"] == []
    with pytest.raises(SoftsegError, match="--calibrate needs validation cases"), pytest.warns(UserWarning):
        drive(train(one, tmp_path / "m2", epochs=1, val_fraction=0, calibrate=True, **TINY))


def test_validation_from_a_second_dataset(synthetic_2d_dataset, tmp_path):
    result = drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, val_dataset=synthetic_2d_dataset / "Validation",
                         **TINY))
    cfg = load_model(result.model_dir).config
    assert len(cfg.training["train_cases"]) == 4 and cfg.training["val_cases"] == ["case05", "case06"]
    write_qubiq_dataset(tmp_path / "noval", n_cases=1, shape=(32, 32, 1))
    for mask in (tmp_path / "noval").rglob("task01_seg*"):
        mask.rename(mask.with_name(mask.name.replace("task01", "task02")))
    with pytest.raises(SoftsegError, match="no validation cases: no case here has rater masks for task 1"):
        drive(train(synthetic_2d_dataset, tmp_path / "m2", epochs=1, val_dataset=tmp_path / "noval", **TINY))


def test_single_rater_dataset_trains_with_a_warning(tmp_path):
    single = write_qubiq_dataset(tmp_path / "single", n_cases=3, shape=(32, 32, 1), n_raters=1, seed=2)
    with pytest.warns(UserWarning, match="only one rater, so its labels are hard"):
        result = drive(train(single, tmp_path / "m", epochs=1, **TINY))
    assert any("labels are hard" in w for w in result.warnings)
    assert any("labels are hard" in w for w in load_model(tmp_path / "m").config.training["warnings"])


def test_hard_label_mode_and_calibration(synthetic_2d_dataset, tmp_path):
    result = drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=2, softlabel="majority", calibrate=True, **TINY))
    cfg = load_model(tmp_path / "m").config
    assert cfg.softlabel["method"] == "majority"
    cal = result.calibration
    assert cfg.temperature == pytest.approx(cal["temperature"]) and cfg.calibration["fitted_on"] == cfg.training["val_cases"]
    assert cal["bce_after"] <= cal["bce_before"] + 1e-9  # the fitted temperature minimises this loss
    assert {"ece_before", "ece_after"} <= set(cal)


def test_bad_options_are_user_errors():
    with pytest.raises(SoftsegError, match="unknown soft-label method"):
        TrainOptions(softlabel="median")
    with pytest.raises(SoftsegError, match="unknown loss"):
        TrainOptions(loss="focal")
    with pytest.raises(SoftsegError, match="val-fraction"):
        TrainOptions(val_fraction=1.0)
    assert TrainOptions(softlabel="smoothed-mean").softlabel == "smoothed"


def test_losses():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), 0.5)
    assert float(soft_loss(logits, target, "bce")) == pytest.approx(math.log(2), rel=1e-6)
    big = torch.full((1, 1, 4, 4), 30.0)
    ones = torch.ones(1, 1, 4, 4)
    assert float(soft_loss(big, ones, "dice")) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_loss(big, ones, "bce+dice")) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_loss(-big, ones, "dice")) == pytest.approx(1 - 1 / 17, abs=1e-4)


def test_augmentation_is_reproducible_and_keeps_image_and_target_aligned():
    images = torch.zeros(6, 1, 24, 24)
    images[:, :, 4:10, 3:15] = 1.0
    targets = images.clone()
    only_spatial = AugmentationSettings(contrast=0, brightness=0, bias_field=0, noise=0)
    a1, t1 = augment_batch(images, targets, torch.Generator().manual_seed(0), only_spatial)
    a2, t2 = augment_batch(images, targets, torch.Generator().manual_seed(0), only_spatial)
    assert torch.equal(a1, a2) and torch.equal(t1, t2)
    assert torch.allclose(a1, t1, atol=1e-5)  # the same warp moved image and target
    assert not torch.equal(a1, images)
    full, soft = augment_batch(torch.randn(4, 2, 16, 16), torch.rand(4, 1, 16, 16), torch.Generator().manual_seed(1))
    assert full.shape == (4, 2, 16, 16) and 0 <= float(soft.min()) and float(soft.max()) <= 1


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, 50_000)
    targets = 1 / (1 + np.exp(-logits))  # soft targets that the logits describe exactly
    assert fit_temperature(2.0 * logits, targets) == pytest.approx(2.0, rel=1e-3)
    assert fit_temperature(0.5 * logits, targets) == pytest.approx(0.5, rel=1e-3)


# --- the planned recipe: budget, calibration, 3D, channels, in-memory cases --------------------------------

def test_budget_is_timed_and_the_learning_rate_decays_to_its_end(synthetic_2d_dataset, tmp_path):
    events = []
    # early stop off: this test is about the budget; a plateau (fast, quiet machine) would end it first
    gen = train(synthetic_2d_dataset, tmp_path / "m", max_minutes=0.25, early_stop=False, **TINY)
    result = None
    while result is None:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            result = stop.value
    messages = [e.message for e in events if e.stage == "plan"]
    assert any(m.startswith("timing: ") and "s per step" in m for m in messages)
    assert any("until 0.25 min (--max-minutes)" in m for m in messages)
    assert result.stopped in ("schedule complete", "time budget") and result.stop_reason in messages
    from napari_softseg.model.budget import WARMUP_STEPS

    history = load_model(tmp_path / "m").config.training["history"]
    lrs = [h["lr"] for h in history if h["steps"] >= WARMUP_STEPS]  # after the linear warm-up
    assert len(lrs) >= 2 and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] <= 0.1 * max(h["lr"] for h in history)  # decayed to (nearly) zero at the budget


def test_plateau_stops_early_and_says_why(synthetic_2d_dataset, tmp_path, monkeypatch):
    from napari_softseg.model import training

    monkeypatch.setattr(training, "validate", lambda *a, **k: {"qubiq_score": 0.5, "ece": 0.1, "qubiq_raw": 0.5,
                                                               "ece_raw": 0.1, "per_case": {}})
    result = drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=20, **{**TINY, "steps_per_epoch": 1}))
    assert result.stopped == "plateau" and result.epochs_done < 20 and result.best_epoch == 1
    assert "has not improved for" in result.stop_reason and "(best 0.5000 at epoch 1)" in result.stop_reason


def test_temperature_on_its_bound_is_warned(synthetic_2d_dataset, tmp_path, monkeypatch):
    from napari_softseg.model import calibration, validation

    # the run fits its temperatures through the name validation imported
    monkeypatch.setattr(validation, "fit_temperature", lambda z, y, **k: calibration.T_MAX)
    with pytest.warns(UserWarning, match="temperature 20 is at its bound"):
        result = drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, **TINY))
    cfg = load_model(tmp_path / "m").config
    assert cfg.calibration["on_bound"] and cfg.temperature == calibration.T_MAX
    assert any("at its bound" in w for w in result.warnings + cfg.training["warnings"])


def test_no_calibrate_keeps_raw_probabilities_and_says_so(synthetic_2d_dataset, tmp_path):
    drive(train(synthetic_2d_dataset, tmp_path / "m", epochs=1, calibrate=False, **TINY))
    cfg = load_model(tmp_path / "m").config
    assert cfg.temperature == 1.0 and cfg.calibration == {"state": "not calibrated", "reason": "calibration switched off"}


def test_3d_volumes_train_a_3d_unet_and_predict_with_a_sliding_window(tmp_path):
    from napari_softseg.io.dataset import load_case
    from napari_softseg.model.inference import predict_array

    ds = write_qubiq_dataset(tmp_path / "vol", n_cases=3, shape=(40, 36, 34), n_raters=2, seed=3,
                             spacing=(1.0, 1.0, 1.0))
    result = drive(train(ds, tmp_path / "m", epochs=1, base_channels=4, steps_per_epoch=2, device="cpu"))
    model = load_model(tmp_path / "m")
    assert model.config.dim == 3 and model.config.architecture["name"] == "unet3d"
    assert len(model.config.patch_size) == 3 and result.plan["dim"] == 3
    image = load_case(ds / "Training" / "case01").image
    prob = drive(predict_array(model, image, device="cpu"))
    assert prob.shape == image.shape[1:] and 0 <= prob.min() and prob.max() <= 1 and np.isfinite(prob).all()
    # --dim 2 overrides the planner on the same data
    drive(train(ds, tmp_path / "m2", epochs=1, dim=2, **TINY))
    assert load_model(tmp_path / "m2").config.dim == 2


def test_multichannel_images_train_and_predict(tmp_path):
    from napari_softseg.io.dataset import load_case
    from napari_softseg.model.inference import predict_array

    ds = write_qubiq_dataset(tmp_path / "mc", n_cases=3, shape=(48, 40, 1), n_raters=3, n_channels=4, seed=4)
    drive(train(ds, tmp_path / "m", epochs=1, **TINY))
    model = load_model(tmp_path / "m")
    assert model.config.image_channels == 4 and model.config.plan["fingerprint"]["channels"] == 4
    image = load_case(ds / "Training" / "case02").image
    assert image.shape[0] == 4
    assert drive(predict_array(model, image, device="cpu")).shape == image.shape[1:]


def test_in_memory_cases_get_a_validation_slab_and_calibration_without_temporary_files(tmp_path, monkeypatch):
    import tempfile

    from napari_softseg.datasets.synthetic import make_phantom
    from napari_softseg.model.training import TrainingCase, train_cases

    def no_temp(*a, **k):
        raise AssertionError("no temporary files")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_temp)
    monkeypatch.setattr(tempfile, "mkdtemp", no_temp)
    image, masks, _ = make_phantom((48, 48, 12), 3, seed=0)
    case = TrainingCase("viewer case", image, masks, (1.0, 1.0, 3.0))
    result = drive(train_cases([case], tmp_path / "m", epochs=1, **TINY))
    cfg = load_model(tmp_path / "m").config
    assert cfg.training["train_cases"] == ["viewer case [Z 0-9]"] and cfg.training["val_cases"] == ["viewer case [Z 10-11]"]
    assert cfg.calibration["state"] == "calibrated" and result.calibration is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_training_learns_on_single_slice_cases_and_beats_untrained_and_constant_predictions(tmp_path):
    """A QUBIQ-shaped 2D set with ONE slice per case; scored on held-out cases (``Validation/``) only."""
    from napari_softseg.analysis.metrics import qubiq_score
    from napari_softseg.io.dataset import discover, load_case
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import LoadedModel

    ds = write_qubiq_dataset(tmp_path / "ds", n_cases=12, n_validation=6, shape=(64, 64, 1), n_raters=3, seed=5)
    result = drive(train(ds, tmp_path / "m", epochs=6, steps_per_epoch=20, device="cpu"))
    model = load_model(tmp_path / "m")
    held_out = [load_case(c) for c in discover(ds).split("Validation")]
    untrained = LoadedModel(new_network_like(model.config), model.config)

    def mean_qubiq(predict):
        return float(np.mean([qubiq_score(predict(c), c.masks)[0] for c in held_out]))

    trained = mean_qubiq(lambda c: drive(predict_array(model, c.image, device="cpu")))
    random_init = mean_qubiq(lambda c: drive(predict_array(untrained, c.image, device="cpu")))
    fraction = float(np.mean([c.masks.mean() for c in held_out]))
    constant = mean_qubiq(lambda c: np.full(c.masks.shape[1:], fraction, np.float32))
    assert result.steps == 120 and result.calibration is not None
    assert trained >= 0.75, trained
    assert trained >= max(random_init, constant) + 0.4, (trained, random_init, constant)


def new_network_like(config):
    torch.manual_seed(0)
    return model_io.new_network(config).eval()
