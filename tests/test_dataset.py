import numpy as np
import pytest
from conftest import write_nifti

from napari_softseg.datasets.synthetic import write_qubiq_dataset
from napari_softseg.errors import SoftsegError
from napari_softseg.io.case import binarize_mask
from napari_softseg.io.dataset import discover, find_case, load_case, load_image

RNG = np.random.default_rng(0)


def _masks(n, shape=(8, 9, 1), p=0.4):
    return [(RNG.random(shape) < p).astype(np.uint8) for _ in range(n)]


def test_discover_2020_layout(synthetic_2d_dataset):
    ds = discover(synthetic_2d_dataset)
    assert [c.name for c in ds.cases] == [
        "Training/case01", "Training/case02", "Training/case03", "Training/case04",
        "Validation/case05", "Validation/case06",
    ]
    assert [c.split for c in ds.split("training")] == ["Training"] * 4
    assert len(ds.split("Validation")) == 2
    assert all(len(c.raters(1)) == 3 for c in ds.cases)
    assert ds.problems == []
    # a split folder or a single case works too
    assert len(discover(synthetic_2d_dataset / "Validation").cases) == 2
    single = discover(synthetic_2d_dataset / "Training" / "case02")
    assert len(single.cases) == 1 and single.cases[0].name == "case02"


def test_discover_pancreas_layout_and_rater_counts(tmp_path):
    root = write_qubiq_dataset(tmp_path / "pancreas", n_cases=3, shape=(16, 16, 4), layout="pancreas",
                               rater_counts=[2, 2, 5])
    ds = discover(root)
    assert [c.name for c in ds.cases] == ["case1-1", "case1-2", "case2-1"]
    assert [len(c.raters()) for c in ds.cases] == [2, 2, 5]
    assert all(c.split == "" for c in ds.cases)


def test_discover_several_datasets_and_problems(tmp_path):
    write_qubiq_dataset(tmp_path / "a", n_cases=1, shape=(16, 16, 1))
    write_qubiq_dataset(tmp_path / "b", n_cases=1, n_tasks=2, shape=(16, 16, 1))
    write_nifti(tmp_path / "b" / "Training" / "orphan" / "task01_seg01.nii.gz", np.zeros((4, 4)))
    write_nifti(tmp_path / "c" / "nomasks" / "image.nii.gz", np.zeros((4, 4)))
    ds = discover(tmp_path)
    assert [c.name for c in ds.cases] == ["a/Training/case01", "b/Training/case01", "c/nomasks"]
    assert ds.task_numbers == [1, 2]
    assert any("orphan" in p and "no image" in p for p in ds.problems)
    assert any("nomasks" in p and "no rater masks" in p for p in ds.problems)


def test_discover_errors(tmp_path):
    with pytest.raises(SoftsegError, match="folder not found"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SoftsegError, match="empty: no cases found"):
        discover(tmp_path / "empty")
    (tmp_path / "f.nii.gz").write_bytes(b"x")
    with pytest.raises(SoftsegError, match="not a folder"):
        discover(tmp_path / "f.nii.gz")


def test_load_case_values(make_case):
    image = RNG.random((8, 9, 1)).astype(np.float32)
    masks = _masks(3)
    aff = np.diag([0.5, 0.5, 3.0, 1.0])
    folder = make_case(image, masks, affine=aff)
    case = load_case(folder)
    assert case.image.shape == (1, 8, 9, 1) and case.image.dtype == np.float32
    np.testing.assert_array_equal(case.masks, np.stack(masks))
    assert case.rater_names == ["rater 1", "rater 2", "rater 3"]
    assert case.spacing == (0.5, 0.5, 3.0)
    assert case.spatial_shape == (8, 9, 1)
    assert case.warnings == []


def test_2d_stored_as_hw_and_hw1_mix(make_case):
    image = RNG.random((8, 9)).astype(np.float32)  # (H, W)
    masks = [m[..., 0] for m in _masks(2)]  # (H, W)
    case = load_case(make_case(image, masks))
    assert case.image.shape == (1, 8, 9, 1) and case.masks.shape == (2, 8, 9, 1)
    # image as (H, W, 1), masks as (H, W): still consistent
    case2 = load_case(make_case(image[..., None], masks, name="c2"))
    np.testing.assert_array_equal(case2.image, case.image)


def test_multichannel_2d_brain_tumor_style(make_case):
    image = RNG.random((8, 9, 4)).astype(np.float32)  # (H, W, C) like QUBIQ brain-tumor
    case = load_case(make_case(image, _masks(3, (8, 9))))
    assert case.image.shape == (4, 8, 9, 1)
    np.testing.assert_array_equal(case.image[2, :, :, 0], image[:, :, 2])


def test_multichannel_3d(make_case):
    image = RNG.random((6, 7, 5, 2)).astype(np.float32)
    case = load_case(make_case(image, _masks(2, (6, 7, 5))))
    assert case.image.shape == (2, 6, 7, 5)


def test_masks_0_255_and_bool_and_float(make_case):
    m = _masks(1)[0]
    folder = make_case(np.zeros((8, 9, 1)), [m * 255, m.astype(np.float32), m])
    case = load_case(folder)
    assert all((case.masks[i] == m).all() for i in range(3))
    assert binarize_mask(m.astype(bool), "x").dtype == np.uint8


def test_non_binary_mask_names_values(make_case):
    m = _masks(1)[0].astype(np.int16)
    m[0, 0, 0] = 3
    folder = make_case(np.zeros((8, 9, 1)), [_masks(1)[0], m])
    with pytest.raises(SoftsegError, match=r"task01_seg02.nii.gz: mask is not binary \(values found: 0, 1, 3\)"):
        load_case(folder)


def test_nan_mask_and_nan_image(make_case):
    m = _masks(1)[0].astype(np.float32)
    m[1, 1, 0] = np.nan
    with pytest.raises(SoftsegError, match="seg01.nii.gz: mask is not binary: it contains NaN"):
        load_case(make_case(np.zeros((8, 9, 1)), [m]))



def test_nan_image_voxels_become_background_with_a_warning(make_case, caplog):
    img = np.full((8, 9, 1), 5.0, np.float32)
    img[2, 2, 0] = 2.0
    img[0, 0, 0], img[1, 0, 0], img[0, 1, 0] = np.inf, -np.inf, np.nan
    folder = make_case(img, _masks(1), name="c2")
    with caplog.at_level("WARNING"):
        case = load_case(folder)
    assert np.isfinite(case.image).all()
    assert case.image[0, 0, 0, 0] == case.image[0, 1, 0, 0] == case.image[0, 0, 1, 0] == 2.0  # the minimum
    assert case.image[0, 3, 3, 0] == 5.0
    assert "image.nii.gz: image has 3 NaN or infinite voxel(s) of 72; treated as background (2)" in caplog.text
    image, _ = load_image(folder / "image.nii.gz")
    assert image.dtype == np.float32 and np.isfinite(image).all() and image.min() == 2.0


def test_shape_mismatch(make_case):
    folder = make_case(np.zeros((8, 9, 1)), _masks(1, (8, 10, 1)))
    with pytest.raises(SoftsegError, match=r"image.nii.gz: image shape \(8, 9, 1\) does not match mask shape"):
        load_case(folder)
    folder = make_case(np.zeros((8, 9, 1)), [_masks(1)[0], _masks(1, (8, 10, 1))[0]], name="c2")
    with pytest.raises(SoftsegError, match="seg02.nii.gz: mask shape"):
        load_case(folder)


def test_affine_mismatch_and_tolerance(make_case):
    aff = np.eye(4)
    near = np.eye(4)
    near[0, 3] = 1e-5
    case = load_case(make_case(np.zeros((8, 9, 1)), _masks(2), affine=aff, mask_affines=[aff, near]))
    assert case.masks.shape[0] == 2
    far = np.eye(4)
    far[0, 3] = 0.5
    folder = make_case(np.zeros((8, 9, 1)), _masks(2), name="c2", affine=aff, mask_affines=[aff, far])
    with pytest.raises(SoftsegError, match="seg02.nii.gz: mask affine differs"):
        load_case(folder)


def test_no_masks_and_wrong_task(make_case, tmp_path):
    folder = make_case(np.zeros((8, 9, 1)), [])
    with pytest.raises(SoftsegError, match="case has no rater masks"):
        load_case(folder)
    assert load_case(folder, allow_no_masks=True).masks.shape == (0, 8, 9, 1)
    folder2 = make_case(np.zeros((8, 9, 1)), _masks(2), name="c2")
    with pytest.raises(SoftsegError, match=r"no rater masks for task 2 \(tasks found: 1\)"):
        load_case(folder2, task=2)


def test_not_a_case_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SoftsegError, match="not a case folder: no image.nii.gz found"):
        find_case(tmp_path)
    with pytest.raises(SoftsegError, match="folder not found"):
        load_case(tmp_path / "nope")


def test_single_rater_and_empty_masks_are_valid_but_reported(make_case):
    case = load_case(make_case(np.zeros((8, 9, 1)), _masks(1)))
    assert any("only one rater" in w for w in case.warnings)
    zeros = [np.zeros((8, 9, 1), np.uint8)] * 2
    case = load_case(make_case(np.zeros((8, 9, 1)), zeros, name="c2"))
    assert "all rater masks are empty" in case.warnings


def test_plain_folder_with_patterns(tmp_path):
    write_nifti(tmp_path / "t1.nii.gz", np.ones((5, 5, 3)))
    masks = _masks(3, (5, 5, 3))
    for name, m in zip(["ann_bob.nii.gz", "ann_alice.nii.gz", "ann_carol.nii.gz"], masks):
        write_nifti(tmp_path / name, m)
    case = load_case(tmp_path, image_pattern="t1.nii*", mask_pattern="ann_*.nii.gz")
    assert case.masks.shape == (3, 5, 5, 3)
    # natural name order: alice, bob, carol
    np.testing.assert_array_equal(case.masks[0], masks[1])
    assert [p.name for p in case.mask_paths] == ["ann_alice.nii.gz", "ann_bob.nii.gz", "ann_carol.nii.gz"]


def test_alternate_mask_names(tmp_path):
    write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4)))
    for r in (1, 2, 10):
        write_nifti(tmp_path / f"case07_seg{r:02d}.nii.gz", np.zeros((4, 4)))
    case = find_case(tmp_path)
    assert case.rater_ids == {1: [1, 2, 10]}


def test_load_image_channels(tmp_path):
    write_nifti(tmp_path / "mc.nii.gz", np.ones((6, 7, 4), np.float32))
    img, vol = load_image(tmp_path / "mc.nii.gz", n_channels=4)
    assert img.shape == (4, 6, 7, 1)
    img, _ = load_image(tmp_path / "mc.nii.gz")
    assert img.shape == (1, 6, 7, 4)


def test_duplicate_rater_is_refused_and_hidden_files_ignored(make_case):
    import shutil

    folder = make_case(np.zeros((8, 9, 1)), _masks(2))
    (folder / "._task01_seg01.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    assert load_case(folder).masks.shape[0] == 2
    write_nifti(folder / "task01_seg01.nii", _masks(1)[0])
    with pytest.raises(SoftsegError, match="rater 1 of task 1 appears twice: task01_seg01.nii and task01_seg01.nii.gz"):
        load_case(folder)
    with pytest.raises(SoftsegError, match="no usable case: .*appears twice"):
        discover(folder.parent)
    shutil.copy(folder / "image.nii.gz", folder / "image.nii")
    with pytest.raises(SoftsegError, match="two images"):
        find_case(folder)


def test_spacing_comes_from_the_affine(tmp_path):
    import nibabel as nib

    from napari_softseg.io.nifti import load_volume

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_zooms((1.0, 1.0, 1.0))  # some converters leave pixdim at 1
    nib.save(img, tmp_path / "a.nii.gz")
    assert load_volume(tmp_path / "a.nii.gz").spacing == (2.0, 2.0, 3.0)


def test_channel_guess_is_reported(make_case):
    case = load_case(make_case(np.zeros((8, 9, 6), np.float32), _masks(1, (8, 9))))
    assert case.image.shape == (6, 8, 9, 1)
    assert any("read as 6 channels" in w for w in case.warnings)
