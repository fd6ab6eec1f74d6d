"""DICOM SEG: rater SEGs as a case's raters, probability / binary SEG output (CLI, viewer), bad SEGs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("highdicom")

sys.path.insert(0, str(Path(__file__).parent))
from dicom_series import write_enhanced, write_rater_seg, write_series  # noqa: E402

from napari_softseg.cli import main  # noqa: E402
from napari_softseg.errors import SoftsegError  # noqa: E402
from napari_softseg.io.dicom import read_series  # noqa: E402
from napari_softseg.io.dicom_seg import load_dicom_case, read_seg, write_seg  # noqa: E402
from napari_softseg.pipeline.predict_dicom import mask_path_for

DEMO = Path(__file__).parents[1] / "napari_softseg" / "data" / "mni_demo" / "Training" / "case01"


@pytest.fixture(scope="module")
def demo():
    img = nib.load(DEMO / "image.nii.gz")
    masks = np.stack([np.asarray(nib.load(DEMO / f"task01_seg{r:02d}.nii.gz").dataobj) for r in range(1, 6)])
    return np.asarray(img.dataobj).astype(np.float64), img.affine, masks.astype(np.uint8)


@pytest.fixture
def dicom_case(demo, tmp_path):
    """The demo case as DICOM: the MR series and one rater SEG per rater."""
    data, affine, masks = demo
    folder = tmp_path / "case01_dicom"
    paths = write_series(folder / "MR", data, affine, slope=0.5, intercept=-10.0)
    for r, m in enumerate(masks, start=1):
        write_rater_seg(folder / f"SEG_rater{r}.dcm", paths, m[np.newaxis], [f"rater {r}"])
    return folder, paths


def _cli_error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("softseg: error:"), err
    return lines[0]


def test_fractional_and_binary_round_trip(demo, tmp_path):
    data, affine, masks = demo
    write_series(tmp_path / "ax", data, affine)
    series = read_series(tmp_path / "ax", with_pixels=False)
    assert series.data is None and series.shape == data.shape
    soft = np.random.default_rng(0).random(data.shape).astype(np.float32)
    soft[:, :, 3] = 0  # an empty frame (omitted from the SEG) must come back as zeros
    write_seg(tmp_path / "p.dcm", series, soft, kind="probability", model="demo-model")
    write_seg(tmp_path / "m.dcm", series, masks[0], kind="binary", threshold=0.5, model="demo-model")
    back = read_seg(tmp_path / "p.dcm", series)
    assert back.shape == (1, *data.shape) and back.dtype == np.float32
    assert np.abs(back[0] - soft).max() <= 1 / 255 / 2 + 1e-6  # stored as round(255 p)
    np.testing.assert_array_equal(read_seg(tmp_path / "m.dcm", series)[0], masks[0])

    import pydicom

    p = pydicom.dcmread(tmp_path / "p.dcm")
    assert p.SegmentationType == "FRACTIONAL" and p.SegmentationFractionalType == "PROBABILITY"
    assert p.ReferencedSeriesSequence[0].SeriesInstanceUID == series.info.uid
    m = pydicom.dcmread(tmp_path / "m.dcm")
    assert m.SegmentationType == "BINARY"
    assert m.SegmentSequence[0].SegmentDescription == "softseg mask p>=0.50 model=demo-model"
    assert m.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    with pytest.raises(SoftsegError, match="already exists"):
        write_seg(tmp_path / "m.dcm", series, masks[0], kind="binary")


def test_round_trip_on_enhanced_multiframe(demo, tmp_path):
    data, affine, masks = demo
    write_enhanced(tmp_path / "enh" / "mr.dcm", data, affine, seed=2)
    series = read_series(tmp_path / "enh", with_pixels=False)
    soft = np.random.default_rng(1).random(data.shape).astype(np.float32)
    write_seg(tmp_path / "p.dcm", series, soft)
    write_seg(tmp_path / "m.dcm", series, masks[2], kind="binary")
    assert np.abs(read_seg(tmp_path / "p.dcm", series)[0] - soft).max() <= 1 / 255
    np.testing.assert_array_equal(read_seg(tmp_path / "m.dcm", series)[0], masks[2])


def test_rater_segs_load_as_the_raters_of_the_case(demo, dicom_case, tmp_path, capsys):
    data, affine, masks = demo
    folder, _ = dicom_case
    case = load_dicom_case(folder)
    np.testing.assert_array_equal(case.masks, masks)
    np.testing.assert_array_equal(case.image[0], data)
    np.testing.assert_allclose(case.affine, affine, atol=1e-4)
    assert case.rater_names == [f"rater {r}" for r in range(1, 6)]
    # the same soft label through the CLI from DICOM and from the source NIfTI case
    assert main(["softlabel", str(folder), "-o", str(tmp_path / "dcm.nii.gz")]) == 0
    assert main(["softlabel", str(DEMO), "-o", str(tmp_path / "nii.nii.gz")]) == 0
    a, b = nib.load(tmp_path / "dcm.nii.gz"), nib.load(tmp_path / "nii.nii.gz")
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    capsys.readouterr()
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 image series, 5 SEG series" in out and "BINARY, segment(s): rater 3 (MANUAL)" in out


def test_one_seg_with_one_segment_per_rater(demo, tmp_path):
    data, affine, masks = demo
    paths = write_series(tmp_path / "c" / "MR", data, affine)
    write_rater_seg(tmp_path / "c" / "raters.dcm", paths, masks, ["Ann", "Bob", "Cy", "Di", "Ed"])
    case = load_dicom_case(tmp_path / "c")
    np.testing.assert_array_equal(case.masks, masks)
    assert case.rater_names == ["Ann", "Bob", "Cy", "Di", "Ed"]


def test_seg_referencing_another_series_is_one_line(demo, tmp_path, capsys):
    data, affine, masks = demo
    other = write_series(tmp_path / "elsewhere", data, affine, description="other scan")
    write_series(tmp_path / "case" / "MR", data, affine)
    write_rater_seg(tmp_path / "case" / "seg.dcm", other, masks[:1])
    line = _cli_error(["softlabel", str(tmp_path / "case"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert "seg.dcm: SEG references series" in line and "not the image series" in line


def test_seg_frames_not_matching_the_image_is_one_line(demo, tmp_path, capsys):
    data, affine, masks = demo
    paths = write_series(tmp_path / "case" / "MR", data, affine)
    write_rater_seg(tmp_path / "case" / "seg.dcm", paths, masks[:1], shift_mm=5.0)  # same UIDs, moved 5 mm
    line = _cli_error(["softlabel", str(tmp_path / "case"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert "seg.dcm: SEG frames do not match the image: frame" in line and "source slice at" in line

    # a SEG made on a cropped copy of the series (same UIDs, other rows/columns)
    import pydicom

    crop_dir = tmp_path / "crop"
    crop_dir.mkdir()
    cropped = []
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.Rows = 90
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").reshape(96, 80)[:90].tobytes()
        ds.save_as(crop_dir / p.name)
        cropped.append(crop_dir / p.name)
    (tmp_path / "case" / "seg.dcm").unlink()
    write_rater_seg(tmp_path / "case" / "seg2.dcm", cropped, masks[:1, :, :90])
    line = _cli_error(["softlabel", str(tmp_path / "case"), "-o", str(tmp_path / "s.nii.gz")], capsys)
    assert "SEG frames do not match the image: frames are 90x80" in line


def test_predict_writes_probability_and_binary_seg(dicom_case, tmp_path, capsys):
    from napari_softseg.datasets.bundled import demo_model_path

    folder, _ = dicom_case
    model = demo_model_path()
    out = tmp_path / "pred.dcm"
    assert main(["predict", str(model), str(folder), "-o", str(out), "--format", "dicom-seg", "--threshold", "0.4",
                 "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and str(mask_path_for(out)) in printed
    assert main(["predict", str(model), str(DEMO), "-o", str(tmp_path / "pred.nii.gz"), "--device", "cpu",
                 "--quiet"]) == 0
    reference = nib.load(tmp_path / "pred.nii.gz").get_fdata()
    series = read_series(folder, with_pixels=False)
    soft = read_seg(out, series)[0]
    assert np.abs(soft - reference).max() <= 1 / 255 / 2 + 1e-5  # same model, same voxels, 8-bit fractions
    mask = read_seg(mask_path_for(out), series)[0]
    np.testing.assert_array_equal(mask, (reference >= 0.4).astype(np.uint8))

    import pydicom

    m = pydicom.dcmread(mask_path_for(out))
    assert m.SegmentSequence[0].SegmentDescription == f"softseg mask p>=0.40 model={model.name}"
    # the same provenance sidecar as a NIfTI prediction, beside each SEG (pred.dcm.softseg.json, pred_mask.dcm.softseg.json)
    import json

    from napari_softseg.io.sidecar import sidecar_path
    from napari_softseg.model.model_io import read_config

    side = json.loads((tmp_path / "pred.dcm.softseg.json").read_text())
    nifti_side = json.loads(sidecar_path(tmp_path / "pred.nii.gz").read_text())
    assert sidecar_path(out).name == "pred.dcm.softseg.json"   # not the NIfTI map's pred.softseg.json
    assert side["kind"] == "prediction" and side["software"].startswith("napari-softseg")
    assert {k: side[k] for k in ("model", "device", "task", "temperature")} == \
        {k: nifti_side[k] for k in ("model", "device", "task", "temperature")}
    assert side["temperature"] == read_config(model).temperature and side["input"] == str(folder)
    mask_side = json.loads((tmp_path / "pred_mask.dcm.softseg.json").read_text())
    assert mask_side["kind"] == "mask" and mask_side["threshold"] == 0.4 and mask_side["model"] == str(model)
    assert str(tmp_path / "pred.dcm.softseg.json") in printed and str(tmp_path / "pred_mask.dcm.softseg.json") in printed
    # the model's outputs in the case folder are not raters; opened, they carry the sidecar's provenance
    from napari_softseg._napari import layers as L
    from napari_softseg._napari.dicom_layers import dicom_layers

    for name in ("pred.dcm", "pred_mask.dcm", "pred.dcm.softseg.json", "pred_mask.dcm.softseg.json"):
        shutil.copy(tmp_path / name, folder / name)
    assert load_dicom_case(folder).masks.shape[0] == 5
    opened = {kw["name"]: kw for _, kw, _ in dicom_layers(folder)}
    soft_prov = L.provenance_of(opened["pred.dcm: softseg probability"]["metadata"])
    assert soft_prov["model"] == str(model) and soft_prov["temperature"] == side["temperature"]
    assert L.softseg_meta(opened["pred.dcm: softseg probability"]["metadata"])["kind"] == "prediction"
    mask_prov = L.provenance_of(opened["pred_mask.dcm: softseg mask"]["metadata"])
    assert mask_prov["threshold"] == 0.4 and mask_prov["device"] == "cpu"
    for name in ("pred.dcm", "pred_mask.dcm", "pred.dcm.softseg.json", "pred_mask.dcm.softseg.json"):
        (folder / name).unlink()

    # NIfTI output from a DICOM case folder, and from a folder of DICOM cases (one map per case)
    assert main(["predict", str(model), str(folder), "-o", str(tmp_path / "d.nii.gz"), "--quiet"]) == 0
    img = nib.load(tmp_path / "d.nii.gz")
    np.testing.assert_allclose(img.get_fdata(), reference, atol=1e-6)
    np.testing.assert_allclose(img.affine, nib.load(DEMO / "image.nii.gz").affine, atol=1e-4)
    shutil.copytree(folder, tmp_path / "dataset" / "caseA")
    shutil.copytree(folder, tmp_path / "dataset" / "caseB")
    assert main(["predict", str(model), str(tmp_path / "dataset"), "-o", str(tmp_path / "maps"), "--quiet"]) == 0
    for name in ("caseA", "caseB"):
        maps = list((tmp_path / "maps" / name).glob("*.nii.gz"))
        assert len(maps) == 1 and np.allclose(nib.load(maps[0]).get_fdata(), reference, atol=1e-6)

    capsys.readouterr()
    line = _cli_error(["predict", str(model), str(folder), "-o", str(out), "--format", "dicom-seg"], capsys)
    assert "already exists" in line
    # a sidecar of that name that is not ours: refused before any work, nothing written
    other = tmp_path / "other.dcm"
    (tmp_path / "other.dcm.softseg.json").write_text('{"mine": 1}')
    line = _cli_error(["predict", str(model), str(folder), "-o", str(other), "--format", "dicom-seg"], capsys)
    assert "not written by napari-softseg" in line and "other.dcm.softseg.json" in line
    assert not other.exists() and (tmp_path / "other.dcm.softseg.json").read_text() == '{"mine": 1}'
    line = _cli_error(["predict", str(model), str(DEMO / "image.nii.gz"), "-o", str(tmp_path / "x.dcm"),
                       "--format", "dicom-seg"], capsys)
    assert "need a DICOM series folder" in line


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_written_segs_pass_dciodvfy(demo, tmp_path):
    data, affine, masks = demo
    write_series(tmp_path / "ax", data, affine)
    series = read_series(tmp_path / "ax", with_pixels=False)
    write_seg(tmp_path / "p.dcm", series, np.clip(data / 255, 0, 1), model="m")
    write_seg(tmp_path / "m.dcm", series, masks[0], kind="binary", threshold=0.5, model="m")
    for name in ("p.dcm", "m.dcm"):
        result = subprocess.run(["dciodvfy", str(tmp_path / name)], capture_output=True, text=True)
        report = result.stdout + result.stderr
        assert "Segmentation" in report
        problems = [line for line in report.splitlines() if line.startswith(("Error", "Warning"))]
        assert not problems, report


def test_napari_reader_and_seg_writers(dicom_case, tmp_path):
    from napari_softseg._napari import layers as L
    from napari_softseg._napari.reader import get_reader
    from napari_softseg._napari.writer import write_mask_seg, write_soft_map_seg

    folder, _ = dicom_case
    assert get_reader(str(tmp_path / "nothing-here")) is None
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.dcm").write_bytes(b"not dicom")
    assert get_reader(str(tmp_path / "junk")) is None
    reader = get_reader(str(folder))
    assert reader is not None
    layers = reader(str(folder))
    names = [kw["name"] for _, kw, _ in layers]
    assert names[0] == "case01_dicom image" and names[1:6] == [f"rater {r}" for r in range(1, 6)]
    assert names[6] == "soft label (mean)"
    soft_data, soft_kwargs, kind = layers[6]
    assert kind == "image" and L.softseg_meta(soft_kwargs["metadata"])["provenance"]["dicom_folder"] == str(folder)

    written = write_soft_map_seg(str(tmp_path / "soft"), soft_data, soft_kwargs)
    assert written == [str(tmp_path / "soft.dcm"), str(tmp_path / "soft.dcm.softseg.json")]
    import json

    side = json.loads((tmp_path / "soft.dcm.softseg.json").read_text())  # the NIfTI writers' sidecar format
    assert side["kind"] == "soft_label" and side["method"] == "mean" and side["layer"] == "soft label (mean)"
    assert side["dicom_series_uid"] == read_series(folder, with_pixels=False).info.uid
    series = read_series(folder, with_pixels=False)
    geometry = L.geometry_of({**soft_kwargs, "data": soft_data})
    np.testing.assert_allclose(read_seg(written[0], series)[0], geometry.from_display(soft_data), atol=1 / 255)

    mask_data, mask_kwargs, _ = L.labels_layer((geometry.from_display(soft_data) >= 0.5).astype(np.uint8), geometry,
                                               name="mask", kind="mask", threshold=0.5,
                                               source=str(folder))
    written = write_mask_seg(str(tmp_path / "mask.dcm"), mask_data, mask_kwargs)
    np.testing.assert_array_equal(read_seg(written[0], series)[0], geometry.from_display(mask_data))
    assert written[1] == str(tmp_path / "mask.dcm.softseg.json")
    assert json.loads((tmp_path / "mask.dcm.softseg.json").read_text())["threshold"] == 0.5

    # the outputs, put in the folder, open as the soft label they were and a mask (not as raters);
    # without the sidecar a FRACTIONAL SEG opens as a prediction
    shutil.copy(tmp_path / "soft.dcm", folder / "soft.dcm")
    shutil.copy(tmp_path / "soft.dcm.softseg.json", folder / "soft.dcm.softseg.json")
    shutil.copy(tmp_path / "mask.dcm", folder / "mask.dcm")
    shutil.copy(tmp_path / "soft.dcm", folder / "bare.dcm")
    layers = {kw["name"]: kw for _, kw, _ in get_reader(str(folder))(str(folder))}
    kinds = {name: L.softseg_meta(kw["metadata"])["kind"] for name, kw in layers.items()}
    assert kinds["soft label (mean)"] == "soft_label" and list(kinds.values()).count("rater") == 5
    assert kinds["soft.dcm: soft label (mean)"] == "soft_label" and kinds["mask.dcm: mask"] == "mask"
    assert kinds["bare.dcm: soft label (mean)"] == "prediction"
    assert L.provenance_of(layers["soft.dcm: soft label (mean)"]["metadata"])["raters"] == side["raters"]
    for name in ("soft.dcm", "soft.dcm.softseg.json", "mask.dcm", "bare.dcm"):
        (folder / name).unlink()

    outside = L.soft_map_layer(np.zeros((4, 4, 4), np.float32), L.Geometry(np.eye(4), (4, 4, 4)), name="x",
                               source=str(DEMO / "image.nii.gz"))
    with pytest.raises(SoftsegError, match="does not come from a DICOM series"):
        write_soft_map_seg(str(tmp_path / "x.dcm"), outside[0], outside[1])
    assert not (tmp_path / "x.dcm").exists()


def test_viewer_opens_a_dicom_folder_and_saves_both_segs(make_napari_viewer, dicom_case, tmp_path):
    """File ▸ Open Folder on a DICOM case, Make mask layer, File ▸ Save as .dcm: both SEG kinds, read back."""
    from napari.layers import Labels

    from napari_softseg._napari import layers as L

    folder, _ = dicom_case
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-softseg")
    assert [layer.name for layer in viewer.layers][:6] == ["case01_dicom image"] + [f"rater {r}" for r in range(1, 6)]
    soft = viewer.layers["soft label (mean)"]
    data, kwargs, _ = L.mask_layer_from_soft(soft, 0.6)
    mask = viewer.add_layer(Labels(data, **kwargs))
    soft.save(str(tmp_path / "soft.dcm"), plugin="napari-softseg")
    mask.save(str(tmp_path / "mask.dcm"), plugin="napari-softseg")

    series = read_series(folder, with_pixels=False)
    core = L.geometry_of(soft).from_display(np.asarray(soft.data))
    assert np.abs(read_seg(tmp_path / "soft.dcm", series)[0] - core).max() <= 1 / 255 / 2 + 1e-6
    np.testing.assert_array_equal(read_seg(tmp_path / "mask.dcm", series)[0], (core >= 0.6).astype(np.uint8))

    import pydicom

    m = pydicom.dcmread(tmp_path / "mask.dcm")
    assert m.SegmentationType == "BINARY" and "p>=0.60" in m.SegmentSequence[0].SegmentDescription


def test_a_folder_of_dicom_cases_is_a_dataset(demo, tmp_path):
    """discover() finds DICOM case folders beside NIfTI ones; load_case() reads them (what train/predict use)."""
    from napari_softseg.io.dataset import discover, load_case

    data, affine, masks = demo
    for name in ("caseA", "caseB"):
        paths = write_series(tmp_path / "ds" / name / "MR", data, affine)
        write_rater_seg(tmp_path / "ds" / name / "raters.dcm", paths, masks[:3])
    shutil.copytree(DEMO, tmp_path / "ds" / "caseC")
    ds = discover(tmp_path / "ds")
    assert [c.name for c in ds.cases] == ["caseA", "caseB", "caseC"] and not ds.problems
    assert [len(c.raters(1)) for c in ds.cases] == [3, 3, 5]
    a, c = load_case(ds.cases[0]), load_case(ds.cases[2])
    np.testing.assert_array_equal(a.masks, c.masks[:3])
    np.testing.assert_array_equal(a.image, c.image)
    np.testing.assert_allclose(a.affine, c.affine, atol=1e-4)


def test_seg_of_an_anonymised_series_without_type2_attributes(demo, tmp_path, capsys):
    """Anonymised exports drop Type 2 attributes; the SEG is still made, with them present and empty."""
    import pydicom

    from napari_softseg.datasets.bundled import demo_model_path
    from napari_softseg.io.dicom_seg import TYPE2_COPIED

    data, affine, _ = demo
    folder = tmp_path / "anon"
    paths = write_series(folder, data, affine)
    dropped = ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyTime")
    for p in paths:
        ds = pydicom.dcmread(p)
        for name in dropped:
            delattr(ds, name)
        ds.save_as(p)
    assert set(dropped) <= set(TYPE2_COPIED)
    out = tmp_path / "pred.dcm"
    assert main(["predict", str(demo_model_path()), str(folder), "-o", str(out), "--format", "dicom-seg",
                 "--device", "cpu", "--quiet"]) == 0, capsys.readouterr().err
    for path in (out, mask_path_for(out)):
        seg = pydicom.dcmread(path)
        assert seg.Modality == "SEG" and seg.PatientID == "SOFTSEG001"  # what the source has is copied
        for name in dropped:  # what it lacks is present and empty (Type 2)
            assert name in seg and str(seg.data_element(name).value) == ""
    assert read_seg(out, read_series(folder, with_pixels=False)).shape[0] == 1
