"""Files from the wild (issue 17): other formats, NaN voxels, broken voxel sizes, 5D, DICOM without geometry.

Every file here is written by its own library (nibabel, pynrrd, pydicom), never by this package.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from napari_softseg._napari.reader import get_reader
from napari_softseg.cli import main
from napari_softseg.errors import SoftsegError
from napari_softseg.io.dataset import discover, load_case, load_image
from napari_softseg.io.formats import is_image_path, repair_affine, strip_image_suffix
from napari_softseg.io.nifti import load_volume, read_header

AFFINE = np.array([[1.5, 0, 0, -10], [0, 1.5, 0, 20], [0, 0, 3.0, 5], [0, 0, 0, 1]])


def _image(shape=(12, 14, 6), seed=0):
    return (np.random.default_rng(seed).random(shape) * 100).astype(np.float32)


def _patch_header(path, **fields):
    """Change fields of a stored NIfTI-1 header (nibabel rewrites geometry from the affine when saving)."""
    with open(path, "r+b") as fh:
        header = nib.Nifti1Header.from_fileobj(fh)
        for key, value in fields.items():
            header[key] = value
        fh.seek(0)
        fh.write(header.binaryblock)
    return path


@pytest.mark.parametrize("klass, name", [
    (nib.AnalyzeImage, "a.hdr"), (nib.Nifti1Pair, "p.hdr"), (nib.Nifti2Pair, "p2.hdr"), (nib.MGHImage, "m.mgh"),
    (nib.MGHImage, "m.mgz"),
])
def test_nibabel_formats_read_like_nifti(tmp_path, klass, name):
    data = _image()
    klass(data, AFFINE).to_filename(str(tmp_path / name))
    reference = nib.load(str(tmp_path / name))
    vol = load_volume(tmp_path / name)
    np.testing.assert_array_equal(vol.data, np.asarray(reference.dataobj))
    np.testing.assert_allclose(vol.affine, reference.affine)
    assert isinstance(vol.header, nib.Nifti1Header)  # results written for it are NIfTI with its geometry
    image, _ = load_image(tmp_path / name)
    assert image.shape == (1, 12, 14, 6)
    if name.endswith(".hdr"):  # the data half of the pair opens the same image
        np.testing.assert_array_equal(load_volume(tmp_path / name.replace(".hdr", ".img")).data, vol.data)
    layers = get_reader(str(tmp_path / name))(str(tmp_path / name))
    assert [kind for _, _, kind in layers] == ["image"]


def test_a_pair_without_its_data_file_is_refused_naming_it(tmp_path):
    nib.AnalyzeImage(_image(), AFFINE).to_filename(str(tmp_path / "a.hdr"))
    (tmp_path / "a.img").unlink()
    with pytest.raises(SoftsegError, match=r"a.hdr: its data file a.img is missing"):
        read_header(tmp_path / "a.hdr")
    reader = get_reader(str(tmp_path / "a.hdr"))  # claimed, so napari shows the line instead of "no reader"
    with pytest.raises(SoftsegError, match="a.img is missing"):
        reader(str(tmp_path / "a.hdr"))


def test_nrrd_geometry_is_turned_from_lps_into_ras(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    data = _image()
    directions = np.array([[0.0, 1.2, 0], [-1.5, 0, 0], [0, 0, 3.0]])  # rotated in-plane, LPS
    origin = np.array([10.0, -20.0, 30.0])
    nrrd.write(str(tmp_path / "v.nrrd"), data, {"space": "left-posterior-superior", "space directions": directions,
                                                "space origin": origin})
    vol = load_volume(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(vol.data, data)  # pynrrd's (fastest axis first) order is nibabel's
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = directions.T, origin
    np.testing.assert_allclose(vol.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)
    assert vol.spacing == pytest.approx((1.2, 1.5, 3.0))
    # detached header + data file, and a vector axis (no space direction) that becomes the channel axis
    vec = np.stack([data, data * 2], axis=0)
    nrrd.write(str(tmp_path / "d.nhdr"), vec, {"space": "RAS", "space directions": np.vstack([np.full(3, np.nan), np.diag([1.0, 2.0, 3.0])]),
                                                "kinds": ["vector", "domain", "domain", "domain"]},
               detached_header=True)
    vol = load_volume(tmp_path / "d.nhdr")
    assert vol.data.shape == (12, 14, 6, 2)
    np.testing.assert_array_equal(vol.data[..., 1], data * 2)
    np.testing.assert_allclose(np.diag(vol.affine), [1.0, 2.0, 3.0, 1.0])


def test_a_case_folder_in_other_formats(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    case = tmp_path / "case01"
    case.mkdir()
    img = _image()
    nib.MGHImage(img, np.diag([1.0, 1.0, 1.0, 1.0])).to_filename(str(case / "image.mgz"))
    for r in (1, 2):
        mask = (img > 40 + 10 * r).astype(np.uint8)
        nrrd.write(str(case / f"task01_seg0{r}.nrrd"), mask, {"space": "RAS", "space directions": np.eye(3),
                                                              "space origin": np.zeros(3)})
    assert [c.name for c in discover(tmp_path).cases] == ["case01"]
    data = load_case(case)
    assert data.masks.shape == (2, 12, 14, 6)
    np.testing.assert_array_equal(data.masks[0], img > 50)


@pytest.mark.parametrize("fields, spacing, said", [
    ({"qform_code": 0, "sform_code": 0, "pixdim": [1, 1.5, 1.5, 0, 1, 1, 1, 1]}, (1.5, 1.5, 1.0), "pixdim"),
    ({"qform_code": 0, "sform_code": 0, "pixdim": [1, np.nan, 1.5, 3, 1, 1, 1, 1]}, (1.0, 1.5, 3.0), "pixdim"),
    ({"qform_code": 0, "sform_code": 1, "srow_z": [0, 0, 0, 0]}, (1.5, 1.5, 3.0), "affine is singular"),
])
def test_broken_voxel_sizes_open_axis_aligned_with_a_warning(tmp_path, caplog, fields, spacing, said):
    path = nib.save(nib.Nifti1Image(_image(), AFFINE), str(tmp_path / "x.nii")) or tmp_path / "x.nii"
    _patch_header(path, **fields)
    with caplog.at_level(logging.WARNING):
        vol = load_volume(path)
    assert vol.spacing == pytest.approx(spacing)
    assert len(vol.warnings) == 1 and said in vol.warnings[0] and "opened axis-aligned" in vol.warnings[0]
    assert f"warning: {path}: header" in caplog.text
    assert np.isfinite(vol.affine).all() and abs(np.linalg.det(vol.affine[:3, :3])) > 0


def test_repair_affine_leaves_good_geometry_alone():
    affine, note = repair_affine(AFFINE, np.array([1.5, 1.5, 3.0]))
    assert note is None and affine is AFFINE


def test_five_d_unit_axes_are_dropped_and_real_5d_is_refused_with_a_line(tmp_path, caplog):
    data = _image()
    nib.save(nib.Nifti1Image(data[..., None, None], AFFINE), str(tmp_path / "unit.nii.gz"))
    with caplog.at_level(logging.WARNING):
        vol = load_volume(tmp_path / "unit.nii.gz")
    assert vol.data.shape == (12, 14, 6) and "trailing axes of length 1 are dropped" in vol.warnings[0]
    layers = get_reader(str(tmp_path / "unit.nii.gz"))(str(tmp_path / "unit.nii.gz"))
    assert [kind for _, _, kind in layers] == ["image"]  # not taken for MONAI class probabilities
    nib.save(nib.Nifti1Image(np.zeros((12, 14, 6, 2, 3), np.float32), AFFINE), str(tmp_path / "five.nii.gz"))
    with pytest.raises(SoftsegError, match=r"five.nii.gz: 5D data \(12, 14, 6, 2, 3\) is not supported"):
        read_header(tmp_path / "five.nii.gz")
    reader = get_reader(str(tmp_path / "five.nii.gz"))
    assert reader is not None  # claimed and refused with the line, never declined in silence
    with pytest.raises(SoftsegError, match="5D data"):
        reader(str(tmp_path / "five.nii.gz"))


def test_nan_voxels_open_as_background_with_the_count(tmp_path, caplog):
    data = _image()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = -np.inf
    nib.save(nib.Nifti1Image(data, AFFINE), str(tmp_path / "nan.nii.gz"))
    with caplog.at_level(logging.WARNING):
        layers = get_reader(str(tmp_path / "nan.nii.gz"))(str(tmp_path / "nan.nii.gz"))
    shown = np.asarray(layers[0][0])
    assert np.isfinite(shown).all() and shown.min() == pytest.approx(np.nanmin(data[np.isfinite(data)]))
    assert "nan.nii.gz: image has 4 NaN or infinite voxel(s) of 1008; treated as background" in caplog.text
    image, _ = load_image(tmp_path / "nan.nii.gz")
    assert np.isfinite(image).all()
    all_nan = tmp_path / "all.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), np.nan, np.float32), AFFINE), str(all_nan))
    assert np.all(load_image(all_nan)[0] == 0)


def test_inspect_one_file(tmp_path, capsys):
    data = _image()
    data[0, 0, 0] = np.nan
    nib.MGHImage(data, AFFINE).to_filename(str(tmp_path / "brain.mgz"))
    assert main(["inspect", str(tmp_path / "brain.mgz"), "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "brain.mgz: MGH image 12x14x6 float32, spacing 1.5x1.5x3 mm, orientation RAS" in out
    assert "warning: 1 NaN or infinite voxel(s)" in out
    import json

    info = json.loads((tmp_path / "i.json").read_text())
    assert info["non_finite_voxels"] == 1 and info["shape"] == [12, 14, 6]
    assert info["min"] == pytest.approx(float(np.nanmin(data))) and info["max"] == pytest.approx(float(np.nanmax(data)))
    (tmp_path / "notes.txt").write_text("x")
    assert main(["inspect", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt: not an image file name" in capsys.readouterr().err


def test_names():
    assert is_image_path("a/B.NII.GZ") and is_image_path("x.mgz") and is_image_path("y.nhdr")
    assert not is_image_path("z.txt") and not is_image_path("seg.nii.bak")
    assert strip_image_suffix("image.nii.gz") == "image" and strip_image_suffix("brain.MGZ") == "brain"


# ---------------------------------------------------------------------------------------------- DICOM
def _test_file(name):
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in this pydicom")
    return path


def test_single_dicom_file_opens_in_the_reader():
    path = _test_file("MR_small.dcm")
    layers = get_reader(path)(path)
    assert [kind for _, _, kind in layers] == ["image"] and np.asarray(layers[0][0]).shape == (64, 64)


def test_dicom_without_series_uid_or_geometry_opens(tmp_path, caplog):
    pydicom = pytest.importorskip("pydicom")
    src = pydicom.dcmread(_test_file("MR_small.dcm"))
    for name in ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient"):
        delattr(src, name)
    src.save_as(tmp_path / "bare.dcm")
    with caplog.at_level(logging.WARNING):
        image, vol = load_image(tmp_path / "bare.dcm")
    assert image.shape == (1, 64, 64, 1)
    assert vol.spacing[:2] == pytest.approx((0.3125, 0.3125))  # PixelSpacing kept, axis-aligned
    assert "no patient geometry" in caplog.text


def test_malformed_integer_strings_give_a_line_not_a_traceback(capsys):
    path = _test_file("badVR.dcm")  # NumberOfFrames '1A'
    assert main(["inspect", path]) == 0
    assert "badVR.dcm: DICOM, 1 image series" in capsys.readouterr().out
    with pytest.raises(SoftsegError, match="badVR.dcm"):
        load_image(path)


def test_colour_dicom_is_refused_as_colour():
    path = _test_file("SC_rgb.dcm")
    with pytest.raises(SoftsegError, match=r"SC_rgb.dcm: colour images \(RGB\) are not supported"):
        load_image(path)
