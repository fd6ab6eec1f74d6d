import json

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from napari_softseg.analysis.metrics import qubiq_score
from napari_softseg.cli import main


@pytest.fixture
def case_dir(tmp_path):
    from napari_softseg.datasets.synthetic import write_case

    return write_case(tmp_path / "case01", shape=(40, 36, 3), n_raters=3, seed=5)


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("inspect", "softlabel", "evaluate", "synthetic"):
        assert cmd in out


def test_inspect(synthetic_2d_dataset, tmp_path, capsys):
    assert main(["inspect", str(synthetic_2d_dataset), "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "6 case(s) — Training: 4, Validation: 2" in out
    assert "Training/case01" in out and "task 1: 3" in out
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["n_cases"] == 6 and info["cases"][0]["shape"] == [64, 64, 1]


def test_softlabel_writes_nifti_and_provenance(case_dir, tmp_path, capsys):
    out = tmp_path / "soft.nii.gz"
    assert main(["softlabel", str(case_dir), "-o", str(out), "--method", "mean"]) == 0
    img = nib.load(out)
    src = nib.load(case_dir / "image.nii.gz")
    np.testing.assert_allclose(img.affine, src.affine)
    masks = np.stack([np.asarray(nib.load(case_dir / f"task01_seg0{r}.nii.gz").dataobj) for r in (1, 2, 3)])
    np.testing.assert_allclose(np.asarray(img.dataobj), masks.mean(0), atol=1e-6)
    prov = json.loads((tmp_path / "soft.json").read_text())
    assert prov["method"] == "mean" and prov["n_raters"] == 3 and prov["task"] == 1
    # refuses to overwrite, exit code 2, file untouched
    before = out.read_bytes()
    assert main(["softlabel", str(case_dir), "-o", str(out), "--method", "smoothed"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["softlabel", str(case_dir), "-o", str(out), "--method", "smoothed", "--overwrite",
                 "--agreement", str(tmp_path / "agree.nii.gz")]) == 0
    agree = np.asarray(nib.load(tmp_path / "agree.nii.gz").dataobj)
    np.testing.assert_array_equal(agree, masks.sum(0))


def test_evaluate_json_matches_independent(case_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = nib.load(case_dir / "image.nii.gz")
    pred = rng.random(src.shape[:3]).astype(np.float32)
    write_nifti(tmp_path / "pred.nii.gz", pred, src.affine)
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(case_dir), "--pred", str(tmp_path / "pred.nii.gz"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "QUBIQ score" in text and "leave-one-rater-out" in text
    res = json.loads(out.read_text())
    masks = np.stack([np.asarray(nib.load(case_dir / f"task01_seg0{r}.nii.gz").dataobj) for r in (1, 2, 3)])
    assert res["qubiq_score"] == pytest.approx(qubiq_score(pred, masks)[0])
    assert len(res["dice_per_threshold"]) == 9 and "ece" in res
    assert [r["rater"] for r in res["raters"]] == ["rater 1", "rater 2", "rater 3"]
    assert all(set(r) == {"rater", "dice_vs_others", "model_dice_vs_same"} for r in res["raters"])


def _aff(case_dir):
    return nib.load(case_dir / "image.nii.gz").affine


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda d, t: t / "missing.nii.gz", "missing.nii.gz: file not found"),
        (lambda d, t: write_nifti(t / "nan.nii.gz", np.full((40, 36, 3), np.nan, np.float32), _aff(d)), "prediction contains"),
        (lambda d, t: write_nifti(t / "small.nii.gz", np.zeros((4, 4, 3), np.float32), _aff(d)), "does not match the case"),
        (lambda d, t: write_nifti(t / "big.nii.gz", np.full((40, 36, 3), 2.0, np.float32), _aff(d)), "must be probabilities"),
    ],
)
def test_evaluate_bad_prediction(case_dir, tmp_path, capsys, make_bad, message):
    bad = make_bad(case_dir, tmp_path)
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(case_dir), "--pred", str(bad), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_case_inputs_give_one_line(tmp_path, capsys):
    (tmp_path / "notacase").mkdir()
    (tmp_path / "notacase" / "readme.txt").write_text("x")
    assert main(["softlabel", str(tmp_path / "notacase"), "-o", str(tmp_path / "o.nii.gz")]) == 2
    assert "not a case folder" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


def test_synthetic_command(tmp_path, capsys):
    assert main(["synthetic", str(tmp_path / "syn"), "--cases", "2", "--validation", "1", "--shape", "32,32,1"]) == 0
    assert (tmp_path / "syn" / "Validation" / "case03" / "task01_seg04.nii.gz").exists()
    assert main(["synthetic", str(tmp_path / "syn"), "--cases", "2"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_evaluate_refuses_prediction_on_another_grid(case_dir, tmp_path, capsys):
    src = nib.load(case_dir / "image.nii.gz")
    flipped = src.affine.copy()
    flipped[0, 0] *= -1
    write_nifti(tmp_path / "p.nii.gz", np.zeros(src.shape[:3], np.float32), flipped)
    assert main(["evaluate", str(case_dir), "--pred", str(tmp_path / "p.nii.gz")]) == 2
    assert "p.nii.gz: prediction affine differs" in capsys.readouterr().err


def test_softlabel_leaves_nothing_after_a_bad_output_name(case_dir, tmp_path, capsys):
    out = tmp_path / "s.nii.gz"
    assert main(["softlabel", str(case_dir), "-o", str(out), "--agreement", str(tmp_path / "a.txt")]) == 2
    assert main(["softlabel", str(case_dir), "-o", str(out), "--agreement", str(out)]) == 2
    assert "different files" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case01"]
