
import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

from napari_softseg.errors import SoftsegError
from napari_softseg.io.nifti import Volume, check_finite, load_volume, save_volume


def test_load_2d_gets_trailing_axis(tmp_path):
    aff = np.diag([0.5, 0.7, 1.0, 1.0])
    write_nifti(tmp_path / "a.nii.gz", np.arange(12, dtype=np.int16).reshape(3, 4), aff)
    vol = load_volume(tmp_path / "a.nii.gz")
    assert vol.data.shape == (3, 4, 1)
    assert vol.spacing[:2] == pytest.approx((0.5, 0.7))
    np.testing.assert_array_equal(vol.data[..., 0], np.arange(12).reshape(3, 4))


def test_missing_file(tmp_path):
    with pytest.raises(SoftsegError, match="file not found") as err:
        load_volume(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(err.value)


def test_not_nifti_and_garbage(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(SoftsegError, match=r"x.txt: not an image file name \(expected NIfTI .nii/.nii.gz, Analyze"):
        load_volume(tmp_path / "x.txt")
    (tmp_path / "bad.nii.gz").write_bytes(b"this is not gzip")
    with pytest.raises(SoftsegError, match="bad.nii.gz: cannot read NIfTI"):
        load_volume(tmp_path / "bad.nii.gz")


def test_truncated_file(tmp_path):
    path = write_nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).random((20, 20, 20)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SoftsegError, match="t.nii.gz: cannot read NIfTI"):
        load_volume(path)
    # an uncompressed file cut short
    p2 = write_nifti(tmp_path / "u.nii", np.ones((20, 20, 20), np.float32))
    p2.write_bytes(p2.read_bytes()[:1000])
    with pytest.raises(SoftsegError, match="u.nii: (cannot read NIfTI|file is truncated)"):
        load_volume(p2)


def test_check_finite():
    check_finite(np.ones(3, np.float32), "x")
    with pytest.raises(SoftsegError, match="img.nii: image contains 2 NaN or infinite"):
        check_finite(np.array([1.0, np.nan, np.inf]), "img.nii", "image")


def test_save_keeps_affine_and_refuses_overwrite(tmp_path):
    aff = np.array([[0, 0, 2.0, 10], [0, 1.5, 0, -3], [1.2, 0, 0, 7], [0, 0, 0, 1]])
    src = load_volume(write_nifti(tmp_path / "src.nii.gz", np.zeros((4, 5, 6), np.int16), aff))
    out = save_volume(tmp_path / "out.nii.gz", np.full((4, 5, 6), 0.25, np.float32), src, description="hello")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, aff)
    assert img.get_data_dtype() == np.float32
    assert np.all(np.asarray(img.dataobj) == np.float32(0.25))
    assert img.header["descrip"].tobytes().startswith(b"hello")
    before = out.read_bytes()
    with pytest.raises(SoftsegError, match="already exists"):
        save_volume(out, np.zeros((4, 5, 6), np.float32), src)
    assert out.read_bytes() == before
    save_volume(out, np.zeros((4, 5, 6), np.float32), src, overwrite=True)
    assert float(np.asarray(nib.load(out).dataobj).max()) == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz", "src.nii.gz"]  # no temp files


def test_save_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(SoftsegError, match="No space left"):
        save_volume(tmp_path / "o.nii.gz", np.zeros((2, 2, 2), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_volume_spacing_pads_2d():
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((3, 4))
    hdr.set_zooms((0.5, 0.5))
    assert Volume(np.zeros((3, 4, 1)), np.diag([0.5, 0.5, 1.0, 1.0]), hdr).spacing == (0.5, 0.5, 1.0)


def test_written_files_follow_umask_and_drop_display_window(tmp_path):
    import os
    import stat

    from napari_softseg.io.jsonio import write_json

    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), np.eye(4))
    img.header["cal_min"], img.header["cal_max"] = 0, 1000
    nib.save(img, tmp_path / "src.nii.gz")
    src = load_volume(tmp_path / "src.nii.gz")
    out = save_volume(tmp_path / "soft.nii.gz", np.zeros((3, 3, 3), np.float32), src)
    assert float(nib.load(out).header["cal_max"]) == 0.0
    old = os.umask(0o022)
    try:
        out2 = save_volume(tmp_path / "b.nii.gz", np.zeros((2, 2, 2), np.float32))
        js = write_json(tmp_path / "x.json", {"ok": np.bool_(True)})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out2.stat().st_mode) == 0o644 and stat.S_IMODE(js.stat().st_mode) == 0o644
    assert js.read_text().strip().endswith("}") and '"ok": true' in js.read_text()
