"""``softseg operating-point`` / ``operating-points``, the cohort job (pipeline/operating_points.py) and the stored
points (pipeline/point_store.py)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_softseg.analysis.cohort_curves import CohortCurve
from napari_softseg.cli import main
from napari_softseg.errors import SoftsegError
from napari_softseg.io.nifti import load_volume
from napari_softseg.io.sidecar import read_sidecar
from napari_softseg.model.model_io import (
    MANIFEST_FILE,
    ModelConfig,
    load_model,
    new_network,
    save_config,
    save_model,
    sha256_file,
)
from napari_softseg.pipeline.point_store import (
    POINTS_FILE,
    get_operating_point,
    mask_path_for,
    read_operating_points,
    store_point,
    write_point_mask,
)


@pytest.fixture
def tiny_model(tmp_path):
    import torch

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, weights_dtype="float32")
    return save_model(tmp_path / "model", new_network(config), config)


def _run(*args):
    return main(["operating-point", *map(str, args), "--device", "cpu", "--quiet", "--bootstrap", "200"])


def test_choose_store_and_list_a_point(tiny_model, synthetic_2d_dataset, tmp_path, capsys):
    preds = tmp_path / "preds"
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "screening", "--require", "sensitivity>=0.9",
                "--predictions", preds, "--json", tmp_path / "point.json") == 0
    out = capsys.readouterr().out
    assert "operating point 'screening': sensitivity>=0.9 -> t = " in out
    assert "6 case(s)" in out and "95% CI over cases" in out and "fall short of the requirement at t" in out
    assert "warning: only 6 case(s)" in out and "--operating-point 'screening'" in out

    points = read_operating_points(tiny_model)
    point = points["screening"]
    assert point == json.loads((tmp_path / "point.json").read_text())
    assert point["requirement"] == "sensitivity>=0.9" and point["at_threshold"]["sensitivity"] >= 0.9
    assert point["cohort"]["n_cases"] == 6 and point["cohort"]["raters_per_case"] == [3]
    assert point["cohort"]["cases"][0] == "Training/case01" and point["n_bootstrap"] == 200
    assert point["model_sha256"]["model.safetensors"] == sha256_file(tiny_model / "model.safetensors")
    assert point["software"].startswith("napari-softseg") and point["created"].startswith("20")
    # the pooled curve and the per-case band are stored for the viewer's cohort mode
    assert CohortCurve.from_dict(point["cohort_curve"]).n_cases == 6
    # the points file is under the manifest's checksums and the model still loads (its checksums verified)
    manifest = json.loads((tiny_model / MANIFEST_FILE).read_text())
    assert manifest["files"][POINTS_FILE] == sha256_file(tiny_model / POINTS_FILE)
    assert load_model(tiny_model).config.task == 1
    assert sorted(p.name for p in (preds / "Training").iterdir()) == [f"case0{i}" for i in range(1, 5)]

    # the predictions are reused: a second point reads them without predicting again
    stamps = {p: p.stat().st_mtime_ns for p in preds.rglob("*.nii.gz")}
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "best", "--require", "dice=max", "--predictions", preds) == 0
    assert {p: p.stat().st_mtime_ns for p in preds.rglob("*.nii.gz")} == stamps
    capsys.readouterr()
    assert main(["operating-points", str(tiny_model)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("best: t = ") and "[current]" in listed[0]
    assert listed[1].startswith("screening: t = ") and "sensitivity>=0.9" in listed[1]


def test_a_stored_name_is_never_replaced_silently(tiny_model, synthetic_2d_dataset, tmp_path, capsys):
    preds = tmp_path / "preds"
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "s", "--require", "sensitivity>=0.9",
                "--predictions", preds) == 0
    before = (tiny_model / POINTS_FILE).read_bytes()
    capsys.readouterr()
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "s", "--require", "ppv>=0.1", "--predictions", preds) == 2
    err = capsys.readouterr().err
    assert "an operating point named 's' already exists" in err and "--replace" in err
    assert (tiny_model / POINTS_FILE).read_bytes() == before
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "s", "--require", "sensitivity>=0.5", "--predictions",
                preds, "--dry-run") == 0  # a dry run only reports
    assert (tiny_model / POINTS_FILE).read_bytes() == before
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "s", "--require", "sensitivity>=0.5",
                "--predictions", preds, "--replace") == 0
    assert read_operating_points(tiny_model)["s"]["requirement"] == "sensitivity>=0.5"
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "t", "--require", "sensitivity>=0.5",
                "--predictions", preds, "--dry-run") == 0
    assert "t" not in read_operating_points(tiny_model)


def test_a_point_of_a_recalibrated_model_or_a_changed_file_is_refused(tiny_model, synthetic_2d_dataset, tmp_path):
    assert _run(tiny_model, synthetic_2d_dataset / "Validation", "--name", "p", "--require", "sensitivity>=0.8") == 0
    assert get_operating_point(tiny_model, "p")["cohort"]["n_cases"] == 2
    with pytest.raises(SoftsegError, match=r"no operating point named 'q' \(stored: p\)"):
        get_operating_point(tiny_model, "q")
    points = tiny_model / POINTS_FILE
    original = points.read_bytes()
    edited = json.loads(original)
    edited["points"]["p"]["threshold"] = 0.01  # changed by hand
    points.write_text(json.dumps(edited))
    with pytest.raises(SoftsegError, match="does not match the checksum in manifest.json"):
        get_operating_point(tiny_model, "p")
    points.write_bytes(original)
    config = load_model(tiny_model).config
    config.temperature = 2.0
    save_config(tiny_model, config)  # a recalibrated model: its probabilities, hence its thresholds, changed
    with pytest.raises(SoftsegError, match="retrained or recalibrated since"):
        get_operating_point(tiny_model, "p")


def test_mask_at_a_point_is_written_next_to_the_soft_map(tiny_model, synthetic_2d_dataset, tmp_path):
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "p", "--require", "dice=max") == 0
    point = get_operating_point(tiny_model, "p")
    image = load_volume(synthetic_2d_dataset / "Training" / "case01" / "image.nii.gz")
    probabilities = np.linspace(0, 1, image.data.size, dtype=np.float32).reshape(image.data.shape)
    soft = tmp_path / "out" / "pred.nii.gz"
    written = write_point_mask(probabilities, image, soft, "p", point, provenance={"model": str(tiny_model)})
    assert written == tmp_path / "out" / "pred_mask.nii.gz"
    mask = nib.load(written)
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(mask.dataobj), probabilities >= np.float32(point["threshold"]))
    np.testing.assert_allclose(mask.affine, image.affine)
    side = read_sidecar(written)
    assert side["kind"] == "mask" and side["threshold"] == pytest.approx(point["threshold"])
    assert side["operating_point"]["name"] == "p" and side["operating_point"]["requirement"] == "dice=max"
    assert side["model"] == str(tiny_model)
    with pytest.raises(SoftsegError, match="already exists"):
        write_point_mask(probabilities, image, soft, "p", point)
    assert mask_path_for("a/prediction_task01.nii.gz").name == "prediction_task01_mask.nii.gz"
    assert mask_path_for("b.nii").name == "b_mask.nii"


def test_cohort_errors_are_one_line(tiny_model, synthetic_2d_dataset, tmp_path, capsys):
    case = synthetic_2d_dataset / "Training" / "case01"
    assert _run(tiny_model, case, "--name", "x", "--require", "dice=max") == 2
    assert "is one case; a cohort is a folder of cases" in capsys.readouterr().err
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "../evil", "--require", "dice=max") == 2
    assert "must be 1-64 letters" in capsys.readouterr().err
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "x", "--require", "accuracy>=0.9") == 2
    assert "unknown metric 'accuracy'" in capsys.readouterr().err
    no_raters = tmp_path / "unlabelled"
    for name in ("c1", "c2"):
        (no_raters / name).mkdir(parents=True)
        (no_raters / name / "image.nii.gz").write_bytes((case / "image.nii.gz").read_bytes())
    assert _run(tiny_model, no_raters, "--name", "x", "--require", "dice=max") == 2
    assert "no case has rater masks for task 1" in capsys.readouterr().err
    assert not (tiny_model / POINTS_FILE).exists()


def test_cases_the_model_was_trained_on_are_named(tiny_model, synthetic_2d_dataset, capsys):
    config = load_model(tiny_model).config
    config.training = {"dataset": str(synthetic_2d_dataset), "train_cases": ["Training/case01", "Training/case02"],
                       "val_cases": ["Training/case03"]}
    save_config(tiny_model, config)
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "p", "--require", "dice=max") == 0
    point = read_operating_points(tiny_model)["p"]
    assert point["cohort"]["training_overlap"] == ["Training/case01", "Training/case02", "Training/case03"]
    assert "3 of the 6 case(s) were used to train or calibrate this model" in capsys.readouterr().out


def test_store_point_refuses_a_bad_name(tiny_model):
    with pytest.raises(SoftsegError, match="must be 1-64 letters"):
        store_point(tiny_model, {"name": "", "threshold": 0.5})


def test_predict_writes_the_mask_at_a_named_point(tiny_model, synthetic_2d_dataset, tmp_path, capsys):
    assert _run(tiny_model, synthetic_2d_dataset, "--name", "screening", "--require", "sensitivity>=0.9") == 0
    point = get_operating_point(tiny_model, "screening")
    case = synthetic_2d_dataset / "Validation" / "case05"
    out = tmp_path / "pred.nii.gz"
    predict = ["predict", str(tiny_model), "--device", "cpu", "--quiet", "--operating-point", "screening"]
    assert main([*predict[:2], str(case), "-o", str(out), *predict[2:]]) == 0
    soft = np.asarray(nib.load(out).dataobj)
    mask = np.asarray(nib.load(tmp_path / "pred_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, soft >= np.float32(point["threshold"]))
    assert read_sidecar(out)["operating_point"]["name"] == "screening"
    assert read_sidecar(tmp_path / "pred_mask.nii.gz")["threshold"] == pytest.approx(point["threshold"])
    capsys.readouterr()
    assert main([*predict[:2], str(case), "-o", str(tmp_path / "other.nii.gz"), *predict[2:-1], "nope"]) == 2
    assert "no operating point named 'nope' (stored: screening)" in capsys.readouterr().err
    (tmp_path / "again_mask.nii.gz").write_bytes(b"keep")
    assert main([*predict[:2], str(case), "-o", str(tmp_path / "again.nii.gz"), *predict[2:]]) == 2
    assert "again_mask.nii.gz: already exists" in capsys.readouterr().err
    assert not (tmp_path / "again.nii.gz").exists()
    folder = tmp_path / "all"
    assert main([*predict[:2], str(synthetic_2d_dataset), "-o", str(folder), *predict[2:]]) == 0
    assert len(list(folder.rglob("prediction_task01_mask.nii.gz"))) == 6
