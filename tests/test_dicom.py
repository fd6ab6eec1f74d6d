"""DICOM series reading: geometry, slice order, rescale, enhanced multi-frame, several series, tilt, bad input.

Series are written from the bundled NIfTI demo case with pydicom (tests/dicom_series.py) and read back;
voxels and affine are compared with nibabel's reading of the source NIfTI and with dcm2niix's conversion.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pydicom")

sys.path.insert(0, str(Path(__file__).parent))
from dicom_series import LPS, rotation, write_enhanced, write_series  # noqa: E402

from napari_softseg.cli import main  # noqa: E402
from napari_softseg.errors import SoftsegError  # noqa: E402
from napari_softseg.io.dicom import read_series, scan_folder  # noqa: E402

DEMO = Path(__file__).parents[1] / "napari_softseg" / "data" / "mni_demo" / "Training" / "case01"


@pytest.fixture(scope="module")
def demo():
    img = nib.load(DEMO / "image.nii.gz")
    return np.asarray(img.dataobj).astype(np.float64), img.affine


def _flipped(data, affine):
    """The same scan stored with X and Z reversed (slices superior -> inferior, columns left -> right)."""
    flip = np.eye(4)
    nx, _, nz = data.shape
    flip[0, 0], flip[0, 3] = -1, nx - 1
    flip[2, 2], flip[2, 3] = -1, nz - 1
    return data[::-1, :, ::-1].copy(), affine @ flip


def _canonical(data, affine):
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    return np.asarray(img.dataobj), img.affine


def test_axial_series_matches_nibabel_with_rescale_and_shuffled_instance_numbers(demo, tmp_path):
    data, affine = demo
    write_series(tmp_path / "ax", data, affine, slope=0.5, intercept=-10.0, seed=3)
    s = read_series(tmp_path / "ax")
    assert s.data.dtype == np.float32 and s.data.shape == data.shape
    np.testing.assert_array_equal(s.data, data)  # (stored * 0.5 - 10) gives back the NIfTI values exactly
    np.testing.assert_allclose(s.affine, affine, atol=1e-4)  # RAS, as nibabel reads the source
    np.testing.assert_allclose(s.affine_lps, LPS @ affine, atol=1e-4)
    assert s.info.description == "T1 axial" and not s.warnings


def test_oblique_series_keeps_the_rotation(demo, tmp_path):
    data, affine = demo
    oblique = rotation([1.0, 0.3, 0.2], 25) @ affine
    write_series(tmp_path / "obl", data, oblique)
    s = read_series(tmp_path / "obl")
    np.testing.assert_array_equal(s.data, data)
    np.testing.assert_allclose(s.affine, oblique, atol=1e-4)


def test_flipped_series_lands_on_the_same_world_grid(demo, tmp_path):
    data, affine = demo
    fdata, faffine = _flipped(data, affine)
    write_series(tmp_path / "flip", fdata, faffine)
    s = read_series(tmp_path / "flip")
    # slices are sorted along the normal row_dir x col_dir, which here points inferior (X was flipped)
    got, got_aff = _canonical(s.data, s.affine)
    ref, ref_aff = _canonical(data, affine)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(got_aff, ref_aff, atol=1e-4)
    lps = s.affine_lps
    normal = np.cross(lps[:3, 0] / 2, lps[:3, 1] / 2)
    np.testing.assert_allclose(lps[:3, 2], 2.5 * normal, atol=1e-6)
    np.testing.assert_allclose(normal, [0, 0, -1], atol=1e-6)


def test_enhanced_multiframe_mr(demo, tmp_path):
    data, affine = demo
    oblique = rotation([0.0, 1.0, 0.0], -12) @ affine
    write_enhanced(tmp_path / "enh" / "mr.dcm", 2 * data, oblique, slope=2.0, intercept=-100.0, seed=5)
    s = read_series(tmp_path / "enh")
    assert s.is_multiframe and len(s.headers) == 1
    np.testing.assert_array_equal(s.data, 2 * data)
    np.testing.assert_allclose(s.affine, oblique, atol=1e-4)
    # frames were stored shuffled: slice k knows its frame
    assert sorted(f for _, f in s.slice_sources) == list(range(1, data.shape[2] + 1))
    assert [f for _, f in s.slice_sources] != list(range(1, data.shape[2] + 1))
    s2 = read_series(tmp_path / "enh" / "mr.dcm")  # one file works too
    np.testing.assert_array_equal(s2.data, s.data)


def test_several_series_listed_and_chosen_by_uid_or_description(demo, tmp_path, capsys):
    data, affine = demo
    folder = tmp_path / "study"
    write_series(folder / "a", data, affine, description="T1 axial", series_uid="1.2.826.0.1.3680043.8.498.11",
                 series_number=2)
    write_series(folder / "b", data[:, :, :8], rotation([0, 0, 1], 30) @ affine, description="T1 oblique",
                 series_uid="1.2.826.0.1.3680043.8.498.12", series_number=3)
    listing = scan_folder(folder)
    assert [(s.description, s.n_frames) for s in listing] == [("T1 axial", 16), ("T1 oblique", 8)]
    with pytest.raises(SoftsegError, match="2 image series.*--series.*1.2.826.0.1.3680043.8.498.11.*T1 oblique"):
        read_series(folder)
    assert read_series(folder, "t1 OBLIQUE").data.shape == (80, 96, 8)
    assert read_series(folder, "1.2.826.0.1.3680043.8.498.11").data.shape == (80, 96, 16)
    with pytest.raises(SoftsegError, match="no image series with UID or description 'T2'"):
        read_series(folder, "T2")

    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "2 image series" in out and "1.2.826.0.1.3680043.8.498.12" in out and '"T1 oblique"' in out
    assert "16 slice(s) of 96 rows x 80 columns, pixel spacing 2x2 mm" in out and "--series" in out


def test_gantry_tilt_is_resampled_with_a_warning(demo, tmp_path, caplog):
    data, affine = demo
    lps = LPS @ affine
    tilt = np.radians(15)
    shift = np.array([0.0, np.tan(tilt) * 2.5, 0.0])  # each slice slides along the column direction
    positions = [(lps @ [0, 0, k, 1])[:3] + k * shift for k in range(data.shape[2])]
    write_series(tmp_path / "tilt", data, affine, slice_positions=positions)
    s = read_series(tmp_path / "tilt")
    assert s.resampled and any("gantry tilt of 15.0 deg" in w for w in s.warnings)
    assert "gantry tilt of 15.0 deg: resampled" in caplog.text  # logged too: the CLI prints it, napari logs it
    np.testing.assert_allclose(s.affine, affine, atol=1e-4)  # resampled onto the untilted grid
    # slice k was slid by k * shift (LPS); on the untilted grid its content sits k * shift further along the
    # column direction (here -y in LPS, i.e. +rows): an independent per-slice 1D shift gives the expectation
    from scipy import ndimage

    col_dir = (LPS @ affine)[:3, 1] / 2.0
    rows_per_slice = float(shift @ col_dir) / 2.0
    expected = np.stack([ndimage.shift(data[:, :, k], (0, rows_per_slice * k), order=1) for k in range(16)], -1)
    inner = slice(8, data.shape[1] - 8)  # away from rows shifted in from outside the field of view
    np.testing.assert_allclose(s.data[:, inner], expected[:, inner], atol=1e-3)
    assert abs(rows_per_slice) * 15 > 4  # the check above is not trivial: the last slice moved > 4 rows


def _cli_error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("softseg: error:"), err
    return lines[0]


def test_mixed_series_without_a_choice_is_one_line(demo, tmp_path, capsys):
    data, affine = demo
    write_series(tmp_path / "mix", data, affine, description="T1")
    write_series(tmp_path / "mix", data, affine, description="T1 repeat")  # same folder, two series
    line = _cli_error(["softlabel", str(tmp_path / "mix"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert str(tmp_path / "mix") in line and "choose one with --series" in line
    from napari_softseg.datasets.bundled import demo_model_path

    model = str(demo_model_path())
    line = _cli_error(["predict", model, str(tmp_path / "mix"), "-o", str(tmp_path / "p.nii.gz")], capsys)
    assert "choose one with --series" in line
    assert main(["predict", model, str(tmp_path / "mix"), "--series", "t1 repeat", "-o", str(tmp_path / "p.nii.gz"),
                 "--quiet"]) == 0
    np.testing.assert_allclose(nib.load(tmp_path / "p.nii.gz").affine, affine, atol=1e-4)


def test_missing_slice_is_one_line(demo, tmp_path, capsys):
    data, affine = demo
    paths = write_series(tmp_path / "gap", data, affine)
    paths[7].unlink()
    line = _cli_error(["softlabel", str(tmp_path / "gap"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert "missing slice" in line and "about 1 slice(s) missing" in line and str(tmp_path / "gap") in line
    assert not (tmp_path / "s.nii.gz").exists()


def test_napari_get_reader_accepts_a_broken_dicom_folder_and_reading_says_why(demo, tmp_path):
    from napari_softseg._napari.reader import get_reader

    data, affine = demo
    paths = write_series(tmp_path / "gap", data, affine)
    paths[5].unlink()
    reader = get_reader(str(tmp_path / "gap"))  # never raises; a DICOM folder is ours to read
    assert reader is not None
    with pytest.raises(SoftsegError, match="missing slice"):
        reader(str(tmp_path / "gap"))


def test_inconsistent_spacing_is_one_line(demo, tmp_path, capsys):
    data, affine = demo
    lps = LPS @ affine
    z = np.concatenate([np.arange(8) * 2.5, 17.5 + np.arange(1, 9) * 3.1])
    positions = [lps[:3, 3] + np.array([0, 0, dz]) for dz in z]
    write_series(tmp_path / "uneven", data, affine, slice_positions=positions)
    line = _cli_error(["softlabel", str(tmp_path / "uneven"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert "inconsistent slice spacing" in line and "2.5 to 3.1 mm" in line


def test_compressed_without_decoder_names_the_package(demo, tmp_path, capsys):
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG lossless decoder is installed here")
    data, affine = demo
    write_series(tmp_path / "jpeg", data[:, :, :3], affine, transfer_syntax=JPEGLosslessSV1,
                 pixel_bytes=b"\xff\xd8\xff\xd9")
    line = _cli_error(["softlabel", str(tmp_path / "jpeg"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert "JPEG Lossless" in line and "pip install pylibjpeg pylibjpeg-libjpeg" in line and ".dcm" in line


def test_missing_extra_is_one_line(tmp_path, monkeypatch, demo):
    data, affine = demo
    write_series(tmp_path / "ax", data[:, :, :2], affine)
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom -> ImportError
    with pytest.raises(SoftsegError, match=r'pip install "napari-softseg\[dicom\]"'):
        read_series(tmp_path / "ax")


def _dcm2niix(folder: Path, out: Path):
    out.mkdir()
    subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "conv", "-o", str(out), str(folder)],
                   check=True, capture_output=True, text=True)
    img = nib.load(out / "conv.nii")
    return img.get_fdata(), img.affine


def _sitk(folder: Path):
    sitk = pytest.importorskip("SimpleITK", reason="neither dcm2niix nor SimpleITK is available")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(float), LPS @ lps


@pytest.mark.parametrize("kind", ["axial", "oblique", "flipped"])
def test_agrees_with_an_independent_converter(demo, tmp_path, kind):
    data, affine = demo
    if kind == "oblique":
        affine = rotation([0.2, 1.0, 0.4], 20) @ affine
    elif kind == "flipped":
        data, affine = _flipped(data, affine)
    write_series(tmp_path / "dcm", data, affine, slope=0.5, intercept=-10.0)
    if shutil.which("dcm2niix"):
        ref, ref_aff = _dcm2niix(tmp_path / "dcm", tmp_path / "conv")
    else:
        ref, ref_aff = _sitk(tmp_path / "dcm")
    s = read_series(tmp_path / "dcm")
    got, got_aff = _canonical(s.data, s.affine)
    want, want_aff = _canonical(ref, ref_aff)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3)
    np.testing.assert_allclose(got_aff, want_aff, atol=1e-3)
