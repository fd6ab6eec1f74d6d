"""``softseg train`` / ``softseg predict`` end to end through the CLI entry point."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from napari_softseg.cli import main
from napari_softseg.progress import Progress

TINY = ["--base-channels", "4", "--depth", "2", "--batch-size", "4", "--steps-per-epoch", "3", "--device", "cpu",
        "--quiet"]


def test_train_then_predict_then_evaluate(synthetic_2d_dataset, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["train", str(synthetic_2d_dataset), "--out", str(model), "--epochs", "2", "--calibrate", *TINY]) == 0
    out = capsys.readouterr()
    assert "device: cpu (CPU requested)" in out.err
    assert f"model: {model}" in out.out and "validation QUBIQ score" in out.out and "calibration: temperature" in out.out
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()

    case = synthetic_2d_dataset / "Validation" / "case05"
    pred = tmp_path / "pred.nii.gz"
    assert main(["predict", str(model), str(case), "-o", str(pred), "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr()
    assert str(pred) in out.out and "device: cpu" in out.err
    img = nib.load(pred)
    np.testing.assert_allclose(img.affine, nib.load(case / "image.nii.gz").affine)
    assert img.get_data_dtype() == np.float32

    assert main(["evaluate", str(case), "--pred", str(pred)]) == 0
    assert "QUBIQ" in capsys.readouterr().out


def test_cuda_without_cuda_is_a_one_line_error(synthetic_2d_dataset, tmp_path, capsys, monkeypatch):
    from napari_softseg.model import device

    monkeypatch.setattr(device, "_cuda_available", lambda: False)
    code = main(["train", str(synthetic_2d_dataset), "--out", str(tmp_path / "m"), "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("softseg: error:") and "CUDA was requested but is not available" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_predict_refuses_existing_output_and_foreign_checkpoint(synthetic_2d_dataset, tmp_path, capsys):
    (tmp_path / "evil.pth").write_bytes(b"\x80\x04\x95\x00\x00")
    code = main(["predict", str(tmp_path / "evil.pth"), str(synthetic_2d_dataset), "-o", str(tmp_path / "o")])
    assert code == 2 and "never opens pickles" in capsys.readouterr().err
    model = tmp_path / "model"
    assert main(["train", str(synthetic_2d_dataset), "--out", str(model), "--epochs", "1", *TINY]) == 0
    existing = tmp_path / "p.nii.gz"
    existing.write_bytes(b"keep me")
    code = main(["predict", str(model), str(synthetic_2d_dataset / "Training" / "case01"), "-o", str(existing)])
    assert code == 2 and "already exists" in capsys.readouterr().err and existing.read_bytes() == b"keep me"


def test_ctrl_c_keeps_the_checkpoint_and_prints_how_to_resume(synthetic_2d_dataset, tmp_path, capsys, monkeypatch):
    from napari_softseg.cli import model_commands

    real_train = model_commands.train

    def interrupted_after_first_epoch(*args, **kwargs):
        gen = real_train(*args, **kwargs)
        for event in gen:
            yield event
            if event.stage == "epoch":
                raise KeyboardInterrupt

    monkeypatch.setattr(model_commands, "train", interrupted_after_first_epoch)
    model = tmp_path / "model"
    code = main(["train", str(synthetic_2d_dataset), "--out", str(model), "--epochs", "3", *TINY])
    err = capsys.readouterr().err
    assert code == 130
    assert "the last good checkpoint (epoch 1)" in err and f"--out {model} --resume" in err
    monkeypatch.setattr(model_commands, "train", real_train)
    assert main(["train", "--out", str(model), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "best epoch" in out and "of 3," in out


def test_train_needs_a_dataset_unless_resuming(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "m")]) == 2
    assert "give the DATASET folder" in capsys.readouterr().err


def test_announced_stages_print_lines_and_the_rest_become_bars(capsys):
    from napari_softseg.progress import run_with_progress_bar

    def gen():
        yield Progress("device", 0, None, "device: cpu (because)")
        yield Progress("epoch", 1, 2)
        return "done"

    assert run_with_progress_bar(gen(), disable=True, announce=("device",)) == "done"
    assert "device: cpu (because)" in capsys.readouterr().err
