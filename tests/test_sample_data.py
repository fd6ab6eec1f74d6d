"""The bundled MNI demo dataset and the sample-data helpers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_softseg.datasets import bundled as sample_data
from napari_softseg.datasets.bundled import (
    demo_case_path,
    demo_dataset_path,
    demo_model_path,
    synthetic_case,
)
from napari_softseg.datasets.synthetic import make_phantom
from napari_softseg.errors import SoftsegError

REPO = Path(__file__).resolve().parent.parent
TRAINING = [f"case{i:02d}" for i in range(1, 13)]
VALIDATION = [f"case{i:02d}" for i in range(13, 17)]
N_RATERS = 5
SHAPE = (80, 96, 16)


def all_cases():
    root = demo_dataset_path()
    return [root / "Training" / c for c in TRAINING] + [root / "Validation" / c for c in VALIDATION]


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def read_masks(case: Path) -> np.ndarray:
    return np.stack([np.asanyarray(nib.load(case / f"task01_seg{r:02d}.nii.gz").dataobj)
                     for r in range(1, N_RATERS + 1)])


def test_demo_dataset_has_the_expected_cases_and_raters():
    root = demo_dataset_path()
    assert sorted(p.name for p in (root / "Training").iterdir()) == TRAINING
    assert sorted(p.name for p in (root / "Validation").iterdir()) == VALIDATION
    expected = ["image.nii.gz"] + [f"task01_seg{r:02d}.nii.gz" for r in range(1, N_RATERS + 1)]
    for case in all_cases():
        assert sorted(p.name for p in case.iterdir()) == expected


@pytest.mark.parametrize("case", all_cases(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_demo_case_loads_with_consistent_geometry(case):
    image = nib.load(case / "image.nii.gz")
    data = np.asanyarray(image.dataobj)
    assert data.shape == SHAPE and data.dtype == np.uint8
    assert image.header.get_zooms() == pytest.approx((2.0, 2.0, 2.5))
    assert 100 < data.max() <= 255 and data.std() > 20  # a real image, not a blank volume
    for r in range(1, N_RATERS + 1):
        mask = nib.load(case / f"task01_seg{r:02d}.nii.gz")
        values = np.asanyarray(mask.dataobj)
        assert values.shape == SHAPE and values.dtype == np.uint8
        assert set(np.unique(values)) == {0, 1}
        np.testing.assert_allclose(mask.affine, image.affine)


def test_raters_disagree_plausibly_and_keep_their_habits():
    scores, volumes = [], []
    for case in all_cases():
        masks = read_masks(case)
        scores += [dice(masks[i], masks[j]) for i in range(N_RATERS) for j in range(i + 1, N_RATERS)]
        volumes.append(masks.reshape(N_RATERS, -1).sum(axis=1))
    scores, volumes = np.array(scores), np.array(volumes)
    assert 0.5 < scores.min() and scores.max() < 0.95
    assert 0.75 < scores.mean() < 0.9
    assert (volumes[:, 1] > volumes[:, [0, 2, 3, 4]].max(axis=1)).all()  # rater 2 is generous
    assert (volumes[:, 2] < volumes[:, [0, 1, 3]].min(axis=1)).all()  # rater 3 is conservative


def test_white_matter_is_bright_on_the_t1_image():
    case = demo_case_path()
    image = np.asanyarray(nib.load(case / "image.nii.gz").dataobj).astype(float)
    masks = read_masks(case)
    all_agree = masks.min(axis=0).astype(bool)
    brain = image > 0.3 * image.max()
    none_marked = (masks.max(axis=0) == 0) & brain
    # T1 contrast: white matter is brighter than grey matter by more than the grey matter's spread
    assert image[all_agree].mean() > image[none_marked].mean() + 2 * image[none_marked].std()


def test_cases_differ_from_each_other():
    images = [np.asanyarray(nib.load(c / "image.nii.gz").dataobj) for c in all_cases()]
    offsets = [nib.load(c / "image.nii.gz").affine[2, 3] for c in all_cases()]
    assert len(set(np.round(offsets, 3))) == len(offsets)  # every slab at its own height
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])


def test_recipe_matches_the_files():
    root = demo_dataset_path()
    recipe = json.loads((root / "recipe.json").read_text())
    assert recipe["task01"] == "white matter" and len(recipe["raters"]) == N_RATERS
    assert sorted(recipe["cases"]) == sorted(f"{c.parent.name}/{c.name}" for c in all_cases())
    for name in ("Training/case01", "Validation/case13"):
        masks = read_masks(root / name)
        expected = [dice(masks[i], masks[j]) for i in range(N_RATERS) for j in range(i + 1, N_RATERS)]
        np.testing.assert_allclose(recipe["cases"][name]["pairwise_dice"], expected, atol=1e-4)


def test_licence_and_readme_are_bundled():
    root = demo_dataset_path()
    licence = (root / "LICENSE.txt").read_text(encoding="utf-8")
    for phrase in ("Louis Collins", "McConnell Brain Imaging Centre", "McGill University",
                   "Permission to use, copy, modify, and distribute", "ICBM152 2009a"):
        assert phrase in licence
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "simulated" in readme and "make_mni_demo.py" in readme


def test_bundled_data_stay_within_the_size_budget():
    """Demo slabs and whole head at most 3 MiB each; everything shipped (both samples + models) at most 8 MiB."""
    data_dir = sample_data.DATA_DIR
    demo = sum(p.stat().st_size for p in demo_dataset_path().rglob("*") if p.is_file())
    full = sum(p.stat().st_size for p in (data_dir / sample_data.FULL_DATASET).rglob("*") if p.is_file())
    everything = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    assert demo <= 3 * 1024 * 1024, f"demo dataset is {demo / 1e6:.2f} MB"
    assert 0 < full <= 3 * 1024 * 1024, f"whole-head sample is {full / 1e6:.2f} MB"
    assert everything <= 8 * 1024 * 1024, f"bundled data (samples + models) is {everything / 1e6:.2f} MB"


def test_the_data_layer_discovers_the_demo_dataset():
    dataset = pytest.importorskip("napari_softseg.io.dataset")
    found = dataset.discover(demo_dataset_path())
    assert not found.problems
    assert len(found.split("Training")) == 12 and len(found.split("Validation")) == 4
    assert all(len(case.raters(1)) == N_RATERS for case in found.cases)
    data = dataset.load_case(demo_case_path())
    assert data.image.shape == (1,) + SHAPE and data.masks.shape == (N_RATERS,) + SHAPE
    assert data.spacing == pytest.approx((2.0, 2.0, 2.5))


def test_demo_case_is_held_out():
    case = demo_case_path()
    assert case.parent.name == "Validation" and case.parent.parent == demo_dataset_path()


def test_demo_model_path_points_into_the_package(monkeypatch, tmp_path):
    assert demo_model_path(check=False) == sample_data.DATA_DIR / "models" / "mni_demo"
    monkeypatch.setattr(sample_data, "DATA_DIR", tmp_path)
    with pytest.raises(SoftsegError) as err:
        demo_model_path()
    assert str(tmp_path / "models" / "mni_demo") in str(err.value) and "config.json" in str(err.value)
    (tmp_path / "models" / "mni_demo").mkdir(parents=True)
    (tmp_path / "models" / "mni_demo" / "config.json").write_text("{}")
    (tmp_path / "models" / "mni_demo" / "model.safetensors").write_bytes(b"")
    assert demo_model_path() == tmp_path / "models" / "mni_demo"


def test_missing_bundled_data_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sample_data, "DATA_DIR", tmp_path)
    with pytest.raises(SoftsegError, match="missing"):
        demo_dataset_path()
    with pytest.raises(SoftsegError, match="missing"):
        demo_case_path()


@pytest.mark.parametrize("dims, shape", [(2, (96, 96, 1)), (3, (64, 64, 32))])
def test_synthetic_case_writes_a_loadable_case(tmp_path, dims, shape):
    folder = synthetic_case(tmp_path / "case", dims=dims, n_raters=3, seed=4)
    assert folder == tmp_path / "case"
    assert sorted(p.name for p in folder.iterdir()) == [
        "image.nii.gz", "task01_seg01.nii.gz", "task01_seg02.nii.gz", "task01_seg03.nii.gz"]
    image, masks, _ = make_phantom(shape, n_raters=3, seed=4)
    np.testing.assert_array_equal(np.asanyarray(nib.load(folder / "image.nii.gz").dataobj), image[0])
    np.testing.assert_array_equal(np.asanyarray(nib.load(folder / "task01_seg03.nii.gz").dataobj), masks[2])


def test_synthetic_case_defaults_to_a_new_temporary_folder():
    first, second = synthetic_case(dims=2), synthetic_case(dims=2)
    assert first != second and (first / "image.nii.gz").is_file() and (second / "image.nii.gz").is_file()


def test_synthetic_case_refuses_to_overwrite_and_bad_dims(tmp_path):
    synthetic_case(tmp_path / "case", dims=2)
    with pytest.raises(SoftsegError, match="already exists"):
        synthetic_case(tmp_path / "case", dims=2)
    synthetic_case(tmp_path / "case", dims=2, seed=1, overwrite=True)
    with pytest.raises(ValueError):
        synthetic_case(tmp_path / "other", dims=4)


def test_build_script_reproduces_the_first_case():
    """``scripts/make_mni_demo.py`` is deterministic: rebuilding case01 gives the vendored arrays."""
    pytest.importorskip("nilearn")
    spec = importlib.util.spec_from_file_location("make_mni_demo", REPO / "scripts" / "make_mni_demo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(script.SEED)
    t1, wm, template_affine = script.load_template()
    z_centre = script.slab_centres(rng)[0]
    image, masks, affine, _ = script.make_case(t1, wm, template_affine, z_centre, rng)
    case = demo_dataset_path() / "Training" / "case01"
    np.testing.assert_array_equal(image, np.asanyarray(nib.load(case / "image.nii.gz").dataobj))
    np.testing.assert_array_equal(masks, read_masks(case))
    np.testing.assert_allclose(affine, nib.load(case / "image.nii.gz").affine)
