"""Spacing-aware engine (issue 16): the plan's target spacing, resampled training and prediction on every path,
body-region z-scoring, domain notes in the CLI and the sidecar."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_softseg.errors import SoftsegError
from napari_softseg.model.domain import model_domain_notes, spacing_record
from napari_softseg.model.inference import predict_array, predict_logits
from napari_softseg.model.model_io import LoadedModel, ModelConfig, load_model, new_network, read_config, save_model
from napari_softseg.model.normalization import Normalization, body_level
from napari_softseg.model.planning import fingerprint, make_plan
from napari_softseg.model.resampling import resample_image, resample_probabilities_back
from napari_softseg.model.training_options import TrainOptions
from napari_softseg.progress import drive


def _model(target_spacing=None, slice_axis=2, seed=0):
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, slice_axis=slice_axis,
                         target_spacing=target_spacing)
    torch.manual_seed(seed)
    return LoadedModel(network=new_network(config).eval(), config=config)


def _fp(spacings, shapes):
    images = [np.random.default_rng(i).uniform(0, 100, (1, *s)).astype(np.float32) for i, s in enumerate(shapes)]
    masks = [np.zeros((2, *s), np.uint8) for s in shapes]
    return fingerprint(images, masks, spacings)


# -- plan ---------------------------------------------------------------------------------------------------------

def test_plan_stores_the_median_target_spacing_and_plans_patches_on_resampled_shapes():
    fp = _fp([(0.5, 0.5, 3.0), (1.0, 1.0, 3.0), (1.0, 1.0, 3.0)], [(256, 256, 8), (128, 128, 8), (128, 128, 8)])
    plan = make_plan(fp)
    assert plan.dim == 2 and plan.slice_axis == 2
    assert plan.target_spacing == [1.0, 1.0, 3.0]
    assert plan.patch_size == [128, 128]  # the 0.5 mm case is 128 x 128 at 1 mm
    assert any("voxel size 1x1x3 mm" in line for line in plan.lines())
    fpd = fp.to_dict()
    assert fpd["extent_mm_min"] == [128.0, 128.0, 24.0] and fpd["extent_mm_max"] == [128.0, 128.0, 24.0]
    assert {"p50_all", "p99_5_all"} <= set(fpd["intensity"][0])


def test_target_spacing_option_native_or_given():
    fp = _fp([(0.5, 0.5, 3.0)], [(64, 64, 8)])
    assert make_plan(fp, target_spacing="native").target_spacing is None
    plan = make_plan(fp, target_spacing=0.8)
    assert plan.target_spacing == [0.8, 0.8, 3.0]  # a 2D plan never resamples its slice axis
    assert plan.sources["target_spacing"] == "option"
    with pytest.raises(SoftsegError, match="target-spacing"):
        make_plan(fp, target_spacing="fine")
    with pytest.raises(SoftsegError, match="target-spacing"):
        TrainOptions(target_spacing=[1.0, -1.0, 1.0])
    assert TrainOptions(target_spacing=["native"]).target_spacing == "native"
    assert TrainOptions(target_spacing=["1.5"]).target_spacing == 1.5


def test_body_region_is_planned_for_non_negative_images_only():
    fp = _fp([(1.0, 1.0, 1.0)], [(32, 32, 4)])
    assert make_plan(fp).normalization_region == "body"
    fp.intensity[0]["p00_5_all"] = -5.0
    assert make_plan(fp).normalization_region == "all"


# -- normalisation ------------------------------------------------------------------------------------------------

def test_body_zscore_ignores_the_air_around_a_head():
    rng = np.random.default_rng(0)
    tissue = rng.normal(100.0, 10.0, (40, 40, 10)).astype(np.float32)
    small = np.zeros((1, 60, 60, 10), np.float32)
    large = np.zeros((1, 120, 120, 10), np.float32)
    small[0, 10:50, 10:50] = tissue
    large[0, 40:80, 40:80] = tissue
    small[0, :10] += np.abs(rng.normal(0, 2.0, small[0, :10].shape))  # noise in the air
    body = Normalization("zscore", region="body")
    (m1, s1), = body.statistics(torch.from_numpy(small))
    (m2, s2), = body.statistics(torch.from_numpy(large))
    assert m1 == pytest.approx(float(tissue.mean()), rel=1e-4) and m2 == pytest.approx(m1, rel=1e-4)
    assert s1 == pytest.approx(float(tissue.std()), rel=1e-3) and s2 == pytest.approx(s1, rel=1e-3)
    (a1, _), = Normalization("zscore").statistics(torch.from_numpy(small))
    (a2, _), = Normalization("zscore").statistics(torch.from_numpy(large))
    assert a2 < 0.5 * a1  # over all voxels the air's share drives the scaling
    assert 5.0 < body_level(small[0]) < 15.0
    assert Normalization.from_dict({"mode": "zscore"}).region == "all"  # models before the region existed


# -- prediction ---------------------------------------------------------------------------------------------------

def test_prediction_resamples_to_the_model_grid_and_back():
    model = _model(target_spacing=[1.0, 1.0, 2.0])
    image = np.random.default_rng(1).uniform(0, 1, (1, 64, 48, 5)).astype(np.float32)
    prob = drive(predict_array(model, image, device="cpu", spacing=(0.5, 0.5, 2.0)))
    assert prob.shape == (64, 48, 5) and 0 <= prob.min() and prob.max() <= 1
    grid, _ = resample_image(image, (0.5, 0.5, 2.0), (1.0, 1.0, 2.0), axes=(0, 1))
    assert grid.shape == (1, 32, 24, 5)
    expected = resample_probabilities_back(drive(predict_array(model, grid, device="cpu")), (64, 48, 5), axes=(0, 1))
    np.testing.assert_allclose(prob, expected, atol=1e-6)
    # at the model's own voxel size, or without a spacing, nothing is resampled
    same = drive(predict_array(model, image, device="cpu", spacing=(1.0, 1.0, 7.0)))
    np.testing.assert_array_equal(same, drive(predict_array(model, image, device="cpu")))
    # logits go back the same way (validation and calibration use them)
    logits = drive(predict_logits(model.network, model.config, image, spacing=(0.5, 0.5, 2.0)))
    assert logits.shape == (64, 48, 5)


@pytest.mark.parametrize("slice_axis, context, channels, spacing", [
    (2, 0, 1, (0.5, 0.5, 2.0)),    # finer scan: shrunk on the way in
    (0, 1, 1, (2.0, 0.6, 0.6)),    # other slicing axis, 2.5D context
    (1, 0, 2, (1.6, 2.0, 2.5)),    # coarser scan (grown on the way in, averaged back), two channels
])
def test_a_2d_model_predicts_its_grid_slice_batch_by_slice_batch(slice_axis, context, channels, spacing):
    """A 2D model reaches its grid a batch of slices at a time: the map equals resampling the whole scan there
    and the map back, and a finer scan no longer holds grid-sized volumes beside the output."""
    import tracemalloc

    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, slice_axis=slice_axis, context_slices=context,
                         image_channels=channels, target_spacing=[1.0, 1.0, 1.0])
    torch.manual_seed(3)
    model = LoadedModel(network=new_network(config).eval(), config=config)
    image = np.random.default_rng(4).uniform(0, 200, (channels, 40, 36, 30)).astype(np.float32)
    axes = tuple(a for a in range(3) if a != slice_axis)

    def whole_volume():
        grid, _ = resample_image(image, spacing, (1.0, 1.0, 1.0), axes=axes)
        out = drive(predict_array(model, grid, device="cpu", batch_size=2))
        del grid
        return resample_probabilities_back(out, image.shape[1:], axes=axes)

    peaks = []
    for run in (whole_volume, lambda: drive(predict_array(model, image, device="cpu", spacing=spacing, batch_size=2))):
        tracemalloc.start()
        result = run()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        if run is whole_volume:
            expected = result
    prob = result
    assert prob.shape == image.shape[1:] and prob.dtype == np.float32
    np.testing.assert_allclose(prob, expected, atol=2e-6)
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    if spacing[axes[0]] < 1.0:   # measured: 3.7-4.0x the output before, 1.8-2.0x now
        assert peaks[1] < 0.6 * peaks[0], peaks


def test_old_models_without_target_spacing_predict_on_the_input_grid():
    model = _model(target_spacing=None)
    image = np.random.default_rng(2).uniform(0, 1, (1, 40, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(drive(predict_array(model, image, device="cpu", spacing=(0.3, 0.3, 1.0))),
                                  drive(predict_array(model, image, device="cpu")))


def test_config_round_trips_the_target_spacing_and_refuses_bad_values(tmp_path):
    model = _model(target_spacing=[1.0, 1.0, 2.5])
    path = save_model(tmp_path / "m", model.network, model.config)
    assert read_config(path).target_spacing == [1.0, 1.0, 2.5]
    with pytest.raises(SoftsegError, match="target_spacing"):
        ModelConfig(architecture={"base_channels": 4, "depth": 2}, target_spacing=[1.0, 0.0, 1.0])
    config = json.loads((path / "config.json").read_text())
    del config["target_spacing"]
    (path / "config.json").write_text(json.dumps(config))
    assert read_config(path).target_spacing is None


def test_domain_notes_and_spacing_record():
    model = _model(target_spacing=[1.0, 1.0, 2.0])
    model.config.plan = {"fingerprint": {"median_spacing": [1.0, 1.0, 2.0], "median_shape": [64, 64, 20],
                                         "intensity": [{"p00_5_all": 0.0, "p99_5": 300.0, "p00_5": 10.0}]}}
    image = np.random.default_rng(3).uniform(0, 300, (1, 142, 142, 20)).astype(np.float32)
    notes = model_domain_notes(model.config, image, (0.45, 0.45, 2.0))
    assert [n.kind for n in notes] == ["spacing"]
    assert str(notes[0]) == "0.45 mm scan, model trained at 1 mm: resampled to 1 mm in-plane"
    record = spacing_record(model.config, (0.45, 0.45, 2.0), notes)
    assert record == {"input_spacing_mm": [0.45, 0.45, 2.0], "model_spacing_mm": [1.0, 1.0, 2.0], "resampled": True,
                      "domain_notes": [str(notes[0])]}
    ct = np.random.default_rng(4).uniform(-1000, 400, (1, 64, 64, 20)).astype(np.float32)
    assert any(n.kind == "intensity" for n in model_domain_notes(model.config, ct, (1.0, 1.0, 2.0)))


def _write_model(tmp_path, target):
    model = _model(target_spacing=target)
    model.config.plan = {"fingerprint": {"median_spacing": [1.0, 1.0, 1.0], "median_shape": [64, 64, 4]}}
    return save_model(tmp_path / "model", model.network, model.config)


def test_cli_predict_prints_the_domain_line_and_the_sidecar_records_both_spacings(tmp_path, capsys):
    from napari_softseg.cli import main

    model_dir = _write_model(tmp_path, [1.0, 1.0, 1.0])
    image = np.random.default_rng(5).uniform(0, 100, (90, 90, 4)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([0.45, 0.45, 1.0, 1.0])), str(path))
    out = tmp_path / "pred.nii.gz"
    assert main(["predict", str(model_dir), str(path), "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "scan.nii.gz: 0.45 mm scan, model trained at 1 mm: resampled to 1 mm" in err
    written = nib.load(str(out))
    assert written.shape == (90, 90, 4)
    np.testing.assert_allclose(written.affine, np.diag([0.45, 0.45, 1.0, 1.0]))
    record = json.dumps(json.loads((tmp_path / "pred.softseg.json").read_text()))
    assert '"input_spacing_mm": [0.45, 0.45, 1.0]' in record and '"model_spacing_mm": [1.0, 1.0, 1.0]' in record
    assert '"resampled": true' in record


def test_training_resamples_cases_to_the_target_and_records_it(tmp_path):
    from napari_softseg.datasets.synthetic import write_qubiq_dataset
    from napari_softseg.model.training import train

    root = write_qubiq_dataset(tmp_path / "ds", n_cases=3, n_validation=0, shape=(48, 48, 1), n_raters=2, seed=3)
    # one case at half the voxel size: the same anatomy drawn on twice as many voxels per axis
    case = sorted((root / "Training").iterdir())[0]
    zooms = nib.load(str(case / "image.nii.gz")).header.get_zooms()[:3]
    half = [zooms[0] / 2, zooms[1] / 2, zooms[2]]
    for f in case.glob("*.nii.gz"):
        data = np.asarray(nib.load(str(f)).dataobj)
        fine = np.repeat(np.repeat(data, 2, axis=0), 2, axis=1)
        nib.save(nib.Nifti1Image(fine, np.diag([*half, 1.0])), str(f))
    result = drive(train(root, tmp_path / "m", epochs=1, steps_per_epoch=2, val_fraction=0, device="cpu",
                         base_channels=4, augment=False, seed=0))
    config = read_config(result.model_dir)
    expected = [pytest.approx(float(v)) for v in zooms]  # the median: the two cases at the native size
    assert config.target_spacing == expected and config.plan["target_spacing"] == expected
    assert config.plan["patch_size"] == [48, 48]  # planned on the resampled 48 x 48 shapes, not 96 x 96
    assert config.normalization["region"] == "body"
    assert config.background_margin_mm == 5.0        # body-region MR: p = 0 far from the body at prediction
    model = load_model(result.model_dir)
    image = np.asarray(nib.load(str(case / "image.nii.gz")).dataobj, np.float32)[None]
    assert drive(predict_array(model, image, spacing=half, device="cpu")).shape == image.shape[1:]
