"""The napari reader: what it accepts, what it refuses (returning None, never raising), and the layers."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from napari_softseg._napari import layers as L
from napari_softseg._napari.reader import get_reader, read_case_folder
from napari_softseg.errors import SoftsegError


def _oblique_affine():
    """An LPS-stored, sagittal-first affine: voxel axes (A->P, S->I, R->L) — not RAS at all."""
    a = np.zeros((4, 4))
    a[1, 0] = -1.5  # voxel x runs posterior
    a[2, 1] = -2.0  # voxel y runs inferior
    a[0, 2] = -0.8  # voxel z runs left
    a[:3, 3] = [40.0, 30.0, 20.0]
    a[3, 3] = 1.0
    return a


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda p: (p / "garbage.nii.gz").write_bytes(b"not a nifti at all" * 10) and p / "garbage.nii.gz",
        lambda p: (p / "garbage.nii").write_bytes(b"\x00" * 10) and p / "garbage.nii",
        lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt",
        lambda p: p / "missing.nii.gz",
        lambda p: (p / "empty").mkdir() or p / "empty",
        lambda p: ((p / "noncase").mkdir(), (p / "noncase" / "readme.md").write_text("x")) and p / "noncase",
        lambda p: [],
        lambda p: [str(p / "missing.nii.gz")],
    ],
    ids=["garbage-gz", "garbage-nii", "text", "missing", "empty-folder", "non-case-folder", "empty-list", "missing-list"],
)
def test_get_reader_returns_none_for_unreadable(tmp_path, make):
    path = make(tmp_path)
    assert get_reader(path) is None


def test_get_reader_never_raises_on_odd_input():
    for weird in (None, 3, object(), [None], ["\x00bad"]):
        assert get_reader(weird) is None


def test_list_with_one_unreadable_path_is_refused(tmp_path):
    good = write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4), np.float32))
    (tmp_path / "b.txt").write_text("x")
    assert get_reader([str(good)]) is not None
    assert get_reader([str(good), str(tmp_path / "b.txt")]) is None


def test_truncated_file_raises_clean_error(tmp_path):
    path = write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random((32, 32, 32)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reader = get_reader(str(path))
    assert reader is not None  # the header is fine; the damage shows only when reading
    with pytest.raises(SoftsegError, match="img.nii.gz"):
        reader(str(path))


# -- NIfTI files --------------------------------------------------------------------------------------
def test_nifti_image_layer_orientation_affine_and_metadata(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.random((6, 7, 8)).astype(np.float32)
    affine = _oblique_affine()
    path = write_nifti(tmp_path / "scan.nii.gz", data, affine)
    layers = get_reader(str(path))(str(path))
    assert len(layers) == 1
    arr, kwargs, kind = layers[0]
    assert kind == "image" and kwargs["name"] == "scan"
    # Every voxel lands at the same world position as in the NIfTI file (world order z, y, x = S, A, R).
    napari_affine = kwargs["affine"]
    for idx in itertools.islice(itertools.product(range(6), range(7), range(8)), 0, None, 37):
        pos = np.argwhere(arr == data[idx])[0]
        world = napari_affine @ np.r_[pos, 1.0]
        assert np.allclose(world[:3], (affine @ np.r_[idx, 1.0])[2::-1])
    # Canonical display: the slider runs inferior -> superior, rows posterior -> anterior, columns left -> right.
    assert np.all(np.diag(napari_affine)[:3] > 0)
    assert np.allclose(napari_affine[:3, :3], np.diag(np.diag(napari_affine)[:3]))
    assert np.allclose(np.diag(napari_affine)[:3], [2.0, 1.5, 0.8])  # S from voxel y, A from x, R from z
    meta = kwargs["metadata"]["softseg"]
    assert meta["kind"] == "image" and meta["provenance"]["source"] == str(path)
    assert meta["geometry"]["shape"] == [6, 7, 8]


def test_2d_nifti_becomes_2d_layer(tmp_path):
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    path = write_nifti(tmp_path / "slice.nii", data, np.diag([0.5, 0.7, 1.0, 1.0]))
    arr, kwargs, _ = get_reader(str(path))(str(path))[0]
    assert arr.shape == (5, 4)
    assert np.array_equal(arr, data.T)
    assert np.allclose(kwargs["affine"], np.diag([0.7, 0.5, 1.0]))


def test_binary_nifti_becomes_labels(tmp_path):
    mask = np.zeros((8, 8, 4), np.uint8)
    mask[2:5, 3:6, 1:3] = 1
    path = write_nifti(tmp_path / "task01_seg02.nii.gz", mask)
    arr, kwargs, kind = get_reader(str(path))(str(path))[0]
    assert kind == "labels"
    assert arr.sum() == mask.sum()
    assert kwargs["metadata"]["softseg"]["kind"] == "rater"


def test_four_d_image_has_channel_axis(tmp_path):
    data = np.random.default_rng(2).random((5, 6, 7, 3)).astype(np.float32)
    path = write_nifti(tmp_path / "multi.nii.gz", data)
    arr, kwargs, kind = get_reader(str(path))(str(path))[0]
    assert kind == "image" and arr.shape == (3, 7, 6, 5)
    assert np.array_equal(arr[2], data[..., 2].transpose(2, 1, 0))
    assert kwargs["affine"].shape == (5, 5)


def test_list_of_files(tmp_path):
    a = write_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4), np.float32))
    b = write_nifti(tmp_path / "b.nii.gz", np.ones((4, 4, 4), np.float32))
    layers = get_reader([str(a), str(b)])([str(a), str(b)])
    assert [k["name"] for _, k, _ in layers] == ["a", "b"]


# -- case folders ---------------------------------------------------------------------------------------
def test_case_folder_layers(make_case):
    rng = np.random.default_rng(3)
    image = rng.random((10, 12, 6)).astype(np.float32)
    masks = (rng.random((3, 10, 12, 6)) > 0.5).astype(np.uint8)
    affine = np.diag([1.2, 1.0, 2.5, 1.0])
    folder = make_case(image, masks, affine=affine)
    reader = get_reader(str(folder))
    assert reader is not None
    layers = reader(str(folder))
    names = [k["name"] for _, k, _ in layers]
    assert names == ["case01 image", "rater 1", "rater 2", "rater 3", "soft label (mean)"]
    types = [t for _, _, t in layers]
    assert types == ["image", "labels", "labels", "labels", "image"]
    geometry = L.Geometry(affine, image.shape)
    for r in range(3):
        data, kwargs, _ = layers[1 + r]
        assert np.array_equal(geometry.from_display(data), masks[r])
        assert kwargs["metadata"]["softseg"]["kind"] == "rater"
        assert kwargs["metadata"]["softseg"]["provenance"]["source"].endswith(f"task01_seg{r + 1:02d}.nii.gz")
        assert np.allclose(kwargs["affine"], layers[0][1]["affine"])
    soft, soft_kwargs, _ = layers[-1]
    assert np.allclose(geometry.from_display(soft), masks.mean(axis=0))
    assert soft_kwargs["contrast_limits"] == (0.0, 1.0)
    assert soft_kwargs["metadata"]["softseg"]["provenance"]["method"] == "mean"


def test_case_folder_with_two_tasks(make_case, tmp_path):
    image = np.zeros((6, 6, 3), np.float32)
    masks = np.zeros((2, 6, 6, 3), np.uint8)
    folder = make_case(image, masks)
    write_nifti(folder / "task02_seg01.nii.gz", masks[0])
    names = [k["name"] for _, k, _ in read_case_folder(folder)]
    assert "task 1 rater 1" in names and "task 2 rater 1" in names and "task 2 soft label (mean)" in names


def test_case_with_mismatched_mask_raises_clean_error(make_case):
    image = np.zeros((6, 6, 3), np.float32)
    folder = make_case(image, [np.zeros((6, 6, 3), np.uint8)])
    write_nifti(folder / "task01_seg02.nii.gz", np.zeros((5, 6, 3), np.uint8))
    reader = get_reader(str(folder))
    assert reader is not None
    with pytest.raises(SoftsegError, match="task01_seg02"):
        reader(str(folder))


def test_demo_case_reads():
    from napari_softseg.datasets.bundled import demo_case_path

    layers = get_reader(str(demo_case_path()))(str(demo_case_path()))
    raters = [k["name"] for _, k, t in layers if t == "labels"]
    assert len(raters) >= 2 and raters[0] == "rater 1"
    image, kwargs, _ = layers[0]
    vol = nib.load(str(demo_case_path() / "image.nii.gz"))
    assert image.size == np.prod(vol.shape)
