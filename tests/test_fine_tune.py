"""Fine-tuning from an existing model (issue 19 item 4): ``train(..., init=MODEL_DIR)`` and ``softseg train --init``.

Tiny runs on the synthetic 2D dataset: a 4-wide, 2-deep U-Net, 2 optimizer steps per epoch, on the CPU.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_softseg.errors import SoftsegError
from napari_softseg.model.fine_tune import InitSource, before_after, new_model_folder
from napari_softseg.model.model_io import load_model, read_config
from napari_softseg.model.training import TrainingCase, read_training_state, train, train_cases
from napari_softseg.model.training_options import TrainOptions
from napari_softseg.progress import drive

TINY = dict(base_channels=4, depth=2, batch_size=4, device="cpu", steps_per_epoch=2)
TUNE = dict(batch_size=4, device="cpu", steps_per_epoch=2)


def _files(folder) -> dict[str, str]:
    """Every file of a folder and its SHA-256 (the source model must stay byte-for-byte the same)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _state_weights(folder) -> dict:
    from napari_softseg.model.model_io import load_tensors

    tensors, _ = load_tensors(folder / "training_state.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def base_model(synthetic_2d_dataset, tmp_path_factory):
    """A tiny planned model (1 epoch, calibrated) to fine-tune from."""
    out = tmp_path_factory.mktemp("base") / "base"
    drive(train(synthetic_2d_dataset, out, epochs=1, weights_dtype="float32", **TINY))
    return out


@pytest.fixture(scope="module")
def tuned(base_model, synthetic_2d_dataset, tmp_path_factory):
    before = _files(base_model)
    out = tmp_path_factory.mktemp("tuned") / "ft"
    result = drive(train(synthetic_2d_dataset, out, init=base_model, epochs=1, **TUNE))
    return before, out, result


def test_fine_tuning_changes_the_weights_and_inherits_the_model(base_model, tuned):
    _, out, result = tuned
    src, new = load_model(base_model), load_model(out)
    a, b = src.network.state_dict(), new.network.state_dict()
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a), "the weights must change"
    for field in ("architecture", "normalization", "target_spacing", "image_channels", "patch_size", "slice_axis",
                  "context_slices", "task", "softlabel", "loss", "weights_dtype"):
        assert getattr(new.config, field) == getattr(src.config, field), field
    # a tenth of the source's learning rate; the inherited choices are marked as such in the plan
    assert new.config.plan["learning_rate"] == pytest.approx(0.1 * src.config.plan["learning_rate"])
    assert new.config.plan["sources"]["depth"] == "init" and new.config.plan["sources"]["patch_size"] == "init"
    # recalibrated on the validation cases
    assert new.config.calibration["state"] == "calibrated"
    assert new.config.temperature == pytest.approx(result.calibration["temperature"])


def test_provenance_names_the_source_and_its_checksums(base_model, tuned):
    before, out, _ = tuned
    init = read_config(out).training["init"]
    assert init["model"] == str(base_model.absolute())
    assert init["checksums"] == {"model.safetensors": before["model.safetensors"], "config.json": before["config.json"]}


def test_the_source_model_is_untouched(base_model, tuned):
    before, _, _ = tuned
    assert _files(base_model) == before


def test_before_after_figures_on_the_held_out_cases(base_model, tuned):
    _, out, result = tuned
    report = result.before_after
    assert report == read_config(out).training["before_after"]
    assert report["cases"] == read_config(out).training["val_cases"] and report["cases"]
    for side, folder in (("before", base_model), ("after", out)):
        figures = report[side]
        assert figures["model"] == str(folder.absolute()) or figures["model"] == str(folder)
        assert 0 <= figures["qubiq_score"] <= 1 and 0 <= figures["ece"] <= 1
        assert set(figures["per_case"]) == set(report["cases"])
    assert report["change"]["qubiq_score"] == pytest.approx(report["after"]["qubiq_score"]
                                                            - report["before"]["qubiq_score"])


def test_before_after_matches_predicting_each_case(base_model, synthetic_2d_dataset):
    """The figures are those of ``predict_array`` at the case's spacing, scored with analysis/metrics."""
    from napari_softseg.analysis.metrics import expected_calibration_error, qubiq_score
    from napari_softseg.io.dataset import discover, load_case
    from napari_softseg.model.inference import predict_array

    case = load_case(discover(synthetic_2d_dataset / "Validation").cases[0].path)
    report = drive(before_after(base_model, base_model, [case], "cpu"))
    soft = drive(predict_array(load_model(base_model), case.image, device="cpu", spacing=case.spacing))
    assert report["before"]["qubiq_score"] == pytest.approx(qubiq_score(soft, case.masks)[0])
    assert report["after"]["ece"] == pytest.approx(expected_calibration_error(soft, case.masks.mean(0)))
    assert report["change"] == {"qubiq_score": 0.0, "ece": 0.0}


def test_defaults_lower_learning_rate_and_shorter_budget(base_model):
    source = InitSource.open(base_model)
    options = source.resolve_options(TrainOptions(), {}, cuda=False)
    assert options.learning_rate == pytest.approx(2e-4) and options.max_minutes == pytest.approx(2.5)
    assert options.depth == 2 and options.base_channels == 4
    assert source.resolve_options(TrainOptions(), {}, cuda=True).max_minutes == pytest.approx(5.0)
    given = source.resolve_options(TrainOptions(epochs=3, learning_rate=1e-3), {"epochs": 3}, cuda=False)
    assert given.learning_rate == 1e-3 and given.epochs == 3 and given.max_minutes is None


def test_refuses_to_write_over_its_source(base_model, synthetic_2d_dataset):
    before = _files(base_model)
    for overwrite in (False, True):
        with pytest.raises(SoftsegError, match="never overwrites its source") as exc:
            drive(train(synthetic_2d_dataset, base_model, init=base_model, overwrite=overwrite, **TUNE))
        assert Path(exc.value.path) == base_model
    with pytest.raises(SoftsegError, match="never overwrites"):  # named through its config file
        drive(train(synthetic_2d_dataset, base_model, init=base_model / "config.json", **TUNE))
    assert _files(base_model) == before


def test_refuses_another_channel_count_naming_the_model(base_model, tmp_path):
    rng = np.random.default_rng(0)
    cases = [TrainingCase(f"c{i}", rng.normal(size=(2, 32, 32, 1)), rng.integers(0, 2, (2, 32, 32, 1)))
             for i in range(3)]
    with pytest.raises(SoftsegError, match="2 image channel.*takes 1") as exc:
        drive(train_cases(cases, tmp_path / "ft", init=base_model, **TUNE))
    assert Path(exc.value.path) == base_model.absolute()
    assert not (tmp_path / "ft" / "model.safetensors").exists()


def test_refuses_options_that_would_not_fit_the_weights(base_model, synthetic_2d_dataset, tmp_path):
    with pytest.raises(SoftsegError, match="--depth cannot be set with --init"):
        drive(train(synthetic_2d_dataset, tmp_path / "ft", init=base_model, depth=3, **TUNE))


def test_an_interrupted_fine_tune_resumes_to_the_same_weights(base_model, synthetic_2d_dataset, tmp_path):
    drive(train(synthetic_2d_dataset, tmp_path / "full", init=base_model, epochs=2, **TUNE))
    gen = train(synthetic_2d_dataset, tmp_path / "cut", init=base_model, epochs=2, **TUNE)
    for event in gen:
        if event.stage == "epoch":  # epoch 1 is checkpointed; the user cancels here
            break
    gen.close()
    assert read_training_state(tmp_path / "cut")["init"]["model"] == str(base_model.absolute())
    result = drive(train(None, tmp_path / "cut", resume=True))  # the source comes from the state
    assert result.epochs_done == 2 and result.before_after["before"] is not None
    full, cut = _state_weights(tmp_path / "full"), _state_weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert read_config(tmp_path / "cut").training["init"] == read_config(tmp_path / "full").training["init"]
    with pytest.raises(SoftsegError, match="was fine-tuned from"):
        drive(train(None, tmp_path / "cut", resume=True, init=tmp_path / "full"))


def test_fine_tune_cases_writes_beside_the_source(base_model, tmp_path, monkeypatch):
    from napari_softseg.datasets.bundled import demo_model_path

    assert new_model_folder(base_model, stamp="s").parent == base_model.absolute().parent
    assert new_model_folder(base_model, stamp="s").name == "base-finetuned-s"
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    assert new_model_folder(demo_model_path(), stamp="s") == tmp_path / "softseg-models" / "mni_demo-finetuned-s"


def test_cli_train_init_prints_before_and_after(base_model, synthetic_2d_dataset, tmp_path, capsys):
    from napari_softseg.cli import main

    out = tmp_path / "cli_ft"
    code = main(["train", str(synthetic_2d_dataset), "--init", str(base_model), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "4", "--device", "cpu", "--quiet"])
    assert code == 0
    printed = capsys.readouterr()
    assert "before/after on 1 held-out case(s): QUBIQ" in printed.out and "ECE" in printed.out
    assert "fine-tuning from" in printed.err
    code = main(["train", str(synthetic_2d_dataset), "--init", str(base_model), "--out", str(base_model), "--quiet"])
    assert code == 2 and "never overwrites its source model" in capsys.readouterr().err
