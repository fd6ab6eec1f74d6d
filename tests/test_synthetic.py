"""The synthetic phantom generator and the QUBIQ layouts it writes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_softseg.datasets.synthetic import (
    GENEROUS_RATER,
    make_phantom,
    smooth_random_field,
    write_case,
    write_qubiq_dataset,
)
from napari_softseg.errors import SoftsegError

SHAPE_2D = (96, 96, 1)
SHAPE_3D = (64, 64, 32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def pairwise(masks: np.ndarray) -> list[float]:
    return [dice(masks[i], masks[j]) for i in range(len(masks)) for j in range(i + 1, len(masks))]


# ---------------------------------------------------------------- make_phantom


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
def test_same_seed_gives_identical_arrays(shape):
    first = make_phantom(shape, n_raters=4, seed=7, n_channels=2)
    second = make_phantom(shape, n_raters=4, seed=7, n_channels=2)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
def test_different_seeds_differ(shape):
    image_a, masks_a, _ = make_phantom(shape, seed=1)
    image_b, masks_b, _ = make_phantom(shape, seed=2)
    assert not np.array_equal(image_a, image_b)
    assert dice(masks_a[0], masks_b[0]) < 0.95


def test_shapes_dtypes_and_binary_masks_2d():
    image, masks, affine = make_phantom(SHAPE_2D, n_raters=3, seed=0, n_channels=4)
    assert image.shape == (4, 96, 96, 1) and image.dtype == np.float32
    assert masks.shape == (3, 96, 96, 1) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    assert np.isfinite(image).all() and image.min() >= 0
    assert affine.shape == (4, 4)
    np.testing.assert_allclose(np.diag(affine)[:3], (0.8, 0.8, 1.0))


def test_two_element_shape_means_2d():
    image, masks, _ = make_phantom((40, 50), n_raters=2, seed=0)
    assert image.shape == (1, 40, 50, 1) and masks.shape == (2, 40, 50, 1)


def test_shapes_dtypes_and_spacing_3d():
    image, masks, affine = make_phantom(SHAPE_3D, n_raters=5, seed=3)
    assert image.shape == (1,) + SHAPE_3D and image.dtype == np.float32
    assert masks.shape == (5,) + SHAPE_3D and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}
    np.testing.assert_allclose(np.diag(affine)[:3], (0.8, 0.8, 2.5))
    # the affine centres the volume on the world origin
    centre = affine @ np.append((np.array(SHAPE_3D) - 1) / 2.0, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_custom_spacing_goes_into_the_affine():
    _, _, affine = make_phantom(SHAPE_3D, seed=0, spacing=(0.5, 0.6, 3.0))
    np.testing.assert_allclose(np.diag(affine), (0.5, 0.6, 3.0, 1.0))


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
@pytest.mark.parametrize("seed", range(6))
def test_raters_disagree_realistically(shape, seed):
    _, masks, _ = make_phantom(shape, n_raters=4, seed=seed)
    scores = pairwise(masks)
    assert all(0.6 <= s <= 0.99 for s in scores), scores
    assert min(scores) < 0.95  # real disagreement, not four copies
    volumes = masks.reshape(4, -1).sum(axis=1)
    others = np.delete(volumes, GENEROUS_RATER)
    assert volumes[GENEROUS_RATER] > others.max()  # the generous rater is systematically larger


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D])
@pytest.mark.parametrize("seed", range(6))
def test_last_rater_misses_a_small_structure(shape, seed):
    _, masks, _ = make_phantom(shape, n_raters=3, seed=seed)
    labels, n = ndimage.label(masks[GENEROUS_RATER])
    last = masks[-1].astype(bool)
    missed = [k for k in range(1, n + 1) if not last[labels == k].any()]
    assert missed, "the last rater should leave out a whole structure the generous rater marked"
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, n + 1))
    assert max(sizes[k - 1] for k in missed) < 0.25 * sizes.max()  # what it misses is small


def test_structure_is_brighter_than_its_surroundings():
    image, masks, _ = make_phantom(SHAPE_2D, n_raters=3, seed=4)
    inside = masks.min(axis=0).astype(bool)  # all raters agree: inside
    ring = ndimage.binary_dilation(masks.max(axis=0), iterations=6) & ~ndimage.binary_dilation(
        masks.max(axis=0), iterations=2
    )
    x, y = np.ogrid[:96, :96]
    ring &= ((x - 47.5) ** 2 + (y - 47.5) ** 2 < 40**2)[:, :, None]  # inside the body, not the air
    contrast = image[0][inside].mean() - image[0][ring].mean()
    noise = image[0][ring].std()
    assert contrast > 2.0 * noise


def test_task_two_is_an_inner_core_and_the_image_does_not_depend_on_the_task():
    image1, whole, _ = make_phantom(SHAPE_3D, n_raters=3, seed=5, task=1)
    image2, core, _ = make_phantom(SHAPE_3D, n_raters=3, seed=5, task=2)
    np.testing.assert_array_equal(image1, image2)
    for w, c in zip(whole.astype(bool), core.astype(bool)):
        assert 0 < c.sum() < 0.7 * w.sum()
        assert (c & w).sum() >= 0.98 * c.sum()


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=(4, 4, 1)), dict(shape=(10, 10, 10, 10)), dict(n_raters=0), dict(n_channels=0), dict(task=3),
     dict(task=0)],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make_phantom(**kwargs)


def test_smooth_random_field_is_normalised_smooth_and_seeded():
    field = smooth_random_field(np.random.default_rng(0), (60, 50, 1), (10.0, 10.0, 1.0))
    assert field.shape == (60, 50, 1)
    assert abs(field.mean()) < 1e-9 and abs(field.std() - 1.0) < 1e-9
    # neighbouring voxels are strongly correlated (white noise would give ~0)
    assert np.corrcoef(field[1:, :, 0].ravel(), field[:-1, :, 0].ravel())[0, 1] > 0.9
    again = smooth_random_field(np.random.default_rng(0), (60, 50, 1), (10.0, 10.0, 1.0))
    np.testing.assert_array_equal(field, again)


# ---------------------------------------------------------------- layouts on disk


def load(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img


def test_qubiq_2020_layout_holds_the_phantoms(tmp_path):
    shape = (40, 40, 12)
    root = write_qubiq_dataset(tmp_path / "ds", n_cases=3, n_validation=2, shape=shape, n_raters=3, seed=11)
    assert sorted(p.name for p in (root / "Training").iterdir()) == ["case01", "case02", "case03"]
    assert sorted(p.name for p in (root / "Validation").iterdir()) == ["case04", "case05"]
    for index, case in enumerate(["Training/case01", "Training/case02", "Training/case03",
                                  "Validation/case04", "Validation/case05"]):
        names = sorted(p.name for p in (root / case).iterdir())
        assert names == ["image.nii.gz", "task01_seg01.nii.gz", "task01_seg02.nii.gz", "task01_seg03.nii.gz"]
        image, masks, affine = make_phantom(shape, n_raters=3, seed=[11, index])
        data, img = load(root / case / "image.nii.gz")
        assert data.shape == shape and data.dtype == np.float32
        np.testing.assert_array_equal(data, image[0])
        np.testing.assert_allclose(img.affine, affine)
        np.testing.assert_allclose(img.header.get_zooms(), (0.8, 0.8, 2.5))
        for r in range(3):
            mask, mask_img = load(root / case / f"task01_seg{r + 1:02d}.nii.gz")
            assert mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, masks[r])
            np.testing.assert_allclose(mask_img.affine, affine)


def test_pancreas_layout_has_case_folders_at_the_top(tmp_path):
    root = write_qubiq_dataset(tmp_path / "pancreas", n_cases=3, shape=(32, 32, 8), layout="pancreas")
    assert sorted(p.name for p in root.iterdir()) == ["case1-1", "case1-2", "case2-1"]
    assert not (root / "Training").exists()
    with pytest.raises(ValueError, match="Validation"):
        write_qubiq_dataset(tmp_path / "p2", n_cases=2, n_validation=1, layout="pancreas")


def test_per_case_rater_counts(tmp_path):
    root = write_qubiq_dataset(tmp_path / "prostate", n_cases=3, n_validation=1, rater_counts=[3, 5, 2, 1])
    counts = [len(list(case.glob("task01_seg*.nii.gz")))
              for case in [root / "Training/case01", root / "Training/case02", root / "Training/case03",
                           root / "Validation/case04"]]
    assert counts == [3, 5, 2, 1]
    with pytest.raises(ValueError, match="rater_counts"):
        write_qubiq_dataset(tmp_path / "bad", n_cases=2, rater_counts=[3])
    with pytest.raises(ValueError, match="at least one rater"):
        write_qubiq_dataset(tmp_path / "bad2", n_cases=2, rater_counts=[3, 0])
    assert not (tmp_path / "bad2").exists()  # nothing written before the arguments were checked


@pytest.mark.parametrize("squeeze, expected", [(False, (96, 96, 1)), (True, (96, 96))])
def test_2d_storage_with_and_without_trailing_axis(tmp_path, squeeze, expected):
    root = write_qubiq_dataset(tmp_path / "ds", n_cases=1, shape=SHAPE_2D, squeeze_2d=squeeze)
    image, _ = load(root / "Training/case01/image.nii.gz")
    mask, _ = load(root / "Training/case01/task01_seg01.nii.gz")
    assert image.shape == expected and mask.shape == expected


def test_multichannel_storage(tmp_path):
    root2d = write_qubiq_dataset(tmp_path / "tumor", n_cases=1, shape=SHAPE_2D, n_channels=4, squeeze_2d=True)
    image, _ = load(root2d / "Training/case01/image.nii.gz")
    mask, _ = load(root2d / "Training/case01/task01_seg01.nii.gz")
    assert image.shape == (96, 96, 4) and mask.shape == (96, 96)
    expected, _, _ = make_phantom(SHAPE_2D, seed=[0, 0], n_channels=4)
    np.testing.assert_array_equal(np.moveaxis(image, -1, 0), expected[..., 0])

    root3d = write_qubiq_dataset(tmp_path / "mc3d", n_cases=1, shape=(32, 32, 8), n_channels=2)
    image, _ = load(root3d / "Training/case01/image.nii.gz")
    assert image.shape == (32, 32, 8, 2)


def test_two_tasks(tmp_path):
    root = write_qubiq_dataset(tmp_path / "ds", n_cases=1, n_tasks=2, n_raters=2)
    names = sorted(p.name for p in (root / "Training/case01").iterdir())
    assert names == ["image.nii.gz", "task01_seg01.nii.gz", "task01_seg02.nii.gz",
                     "task02_seg01.nii.gz", "task02_seg02.nii.gz"]


def test_never_writes_into_a_non_empty_folder_unless_asked(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(SoftsegError) as err:
        write_qubiq_dataset(root, n_cases=1)
    assert str(root) in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]

    write_qubiq_dataset(root, n_cases=1, n_raters=4, overwrite=True)
    write_qubiq_dataset(root, n_cases=1, n_raters=2, overwrite=True, seed=3)
    case = root / "Training/case01"
    assert sorted(p.name for p in case.iterdir()) == ["image.nii.gz", "task01_seg01.nii.gz", "task01_seg02.nii.gz"]
    assert (root / "notes.txt").read_text() == "mine"
    image, _ = load(case / "image.nii.gz")
    np.testing.assert_array_equal(image[..., 0], make_phantom(SHAPE_2D, n_raters=2, seed=[3, 0])[0][0, ..., 0])


def test_write_case_refuses_existing_files(tmp_path):
    write_case(tmp_path / "case", shape=(32, 32, 1))
    with pytest.raises(SoftsegError, match="already exists"):
        write_case(tmp_path / "case", shape=(32, 32, 1))


def test_invalid_layout_and_counts(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_qubiq_dataset(tmp_path / "a", layout="2019")
    with pytest.raises(ValueError):
        write_qubiq_dataset(tmp_path / "b", n_cases=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SoftsegError, match="not a folder"):
        write_qubiq_dataset(tmp_path / "file")


# ---------------------------------------------------------------- the data layer reads what we write


def test_discover_and_load_case_read_the_2020_layout(tmp_path):
    dataset = pytest.importorskip("napari_softseg.io.dataset")
    root = write_qubiq_dataset(tmp_path / "ds", n_cases=2, n_validation=1, shape=(48, 48, 12),
                               rater_counts=[3, 5, 2])
    found = dataset.discover(root)
    assert not found.problems
    assert [c.split for c in found.cases] == ["Training", "Training", "Validation"]
    assert [len(c.raters(1)) for c in found.cases] == [3, 5, 2]
    data = dataset.load_case(found.cases[1])
    image, masks, affine = make_phantom((48, 48, 12), n_raters=5, seed=[0, 1])
    np.testing.assert_array_equal(data.image, image)
    np.testing.assert_array_equal(data.masks, masks)
    np.testing.assert_allclose(data.affine, affine)
    assert data.spacing == pytest.approx((0.8, 0.8, 2.5))


def test_discover_reads_the_pancreas_layout(tmp_path):
    dataset = pytest.importorskip("napari_softseg.io.dataset")
    root = write_qubiq_dataset(tmp_path / "pancreas", n_cases=3, shape=(32, 32, 8), layout="pancreas")
    found = dataset.discover(root)
    assert sorted(c.name for c in found.cases) == ["case1-1", "case1-2", "case2-1"]
    assert all(c.split == "" for c in found.cases)


@pytest.mark.parametrize("n_channels, squeeze", [(1, True), (1, False), (4, True), (4, False)])
def test_load_case_reads_2d_storage_variants(tmp_path, n_channels, squeeze):
    dataset = pytest.importorskip("napari_softseg.io.dataset")
    root = write_qubiq_dataset(tmp_path / "ds", n_cases=1, n_channels=n_channels, squeeze_2d=squeeze)
    data = dataset.load_case(root / "Training/case01")
    image, masks, _ = make_phantom(SHAPE_2D, seed=[0, 0], n_channels=n_channels)
    assert data.image.shape == (n_channels, 96, 96, 1)
    np.testing.assert_array_equal(data.image, image)
    np.testing.assert_array_equal(data.masks, masks)


def test_load_case_reads_3d_multichannel(tmp_path):
    dataset = pytest.importorskip("napari_softseg.io.dataset")
    root = write_qubiq_dataset(tmp_path / "ds", n_cases=1, shape=(32, 32, 8), n_channels=3)
    data = dataset.load_case(root / "Training/case01")
    image, masks, _ = make_phantom((32, 32, 8), seed=[0, 0], n_channels=3)
    np.testing.assert_array_equal(data.image, image)
    np.testing.assert_array_equal(data.masks, masks)
