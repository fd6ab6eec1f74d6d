"""Domain notes before prediction: spacing, field of view, intensities and NaN, against the bundled demo model's
training data (a fingerprint recomputed from the bundled demo slabs, the shipped model's own stored
fingerprint, and a v0.2-style config without one)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_softseg.datasets.bundled import demo_case_path, demo_dataset_path, demo_model_path
from napari_softseg.io.dataset import discover, load_case
from napari_softseg.model.domain import DomainNote, check_domain
from napari_softseg.model.planning import fingerprint
from napari_softseg.model.resampling import resample_image

TARGET = (2.0, 2.0, 2.5)  # the demo data's spacing: what a spacing-aware plan stores for them


@pytest.fixture(scope="module")
def demo():
    """The bundled training cases' fingerprint (as ``config.json`` stores it), the model config and a held-out
    case."""
    dataset = discover(demo_dataset_path())
    train = [load_case(c, task=1) for c in dataset.cases if "Training" in str(c.path)]
    fp = fingerprint([c.image for c in train], [c.masks for c in train], [c.spacing for c in train]).to_dict()
    config = json.loads((demo_model_path() / "config.json").read_text())
    case = load_case(demo_case_path(), task=1)
    return {"fp": fp, "config": config, "norm": config["normalization"], "case": case,
            "slice_axis": config["slice_axis"], "all": train + [load_case(c, task=1) for c in dataset.cases
                                                                if "Validation" in str(c.path)]}


def _check(demo, image, spacing, fp=None, **kw):
    kw.setdefault("target_spacing", TARGET)
    kw.setdefault("normalization", demo["norm"])
    kw.setdefault("slice_axis", demo["slice_axis"])
    return check_domain(demo["fp"] if fp is None else fp, image, spacing, **kw)


def _at(demo, mm):
    """The held-out case as if scanned at ``mm`` in-plane (same field of view)."""
    case = demo["case"]
    image, _ = resample_image(case.image, case.spacing, (mm, mm, case.spacing[2]), axes=(0, 1))
    return image, (mm, mm, case.spacing[2])


def test_matching_inputs_have_no_notes(demo):
    assert demo["fp"]["median_spacing"] == list(TARGET)
    for case in demo["all"]:  # training and held-out cases alike
        assert _check(demo, case.image, case.spacing) == []
    assert _check(demo, demo["case"].image, demo["case"].spacing, target_spacing=None) == []


def test_fine_scan_is_noted_as_resampled(demo):
    image, spacing = _at(demo, 0.45)
    assert image.shape[1:] == (356, 427, 16)
    assert _check(demo, image, spacing) == [
        DomainNote("spacing", "0.45 mm scan, model trained at 2 mm: resampled to 2 mm in-plane")]


def test_coarse_scan_is_noted_as_resampled(demo):
    image, spacing = _at(demo, 2.5)
    notes = _check(demo, image, spacing)
    assert [(n.kind, str(n)) for n in notes] == [
        ("spacing", "2.5 mm scan, model trained at 2 mm: resampled to 2 mm in-plane")]


def test_without_resampling_the_note_says_what_the_network_sees(demo):
    image, spacing = _at(demo, 0.45)
    (note,) = _check(demo, image, spacing, target_spacing=None)
    assert note.kind == "spacing"
    assert note.message == ("0.45 mm scan, model trained at 2 mm in-plane and not resampled: structures look 4.44x "
                            "larger to the network than in training; expect a poorer map")


def test_small_spacing_differences_are_not_noted(demo):
    image, spacing = _at(demo, 2.2)  # 10 %: inside the training augmentation's scaling
    assert _check(demo, image, spacing) == []
    # a 2D model never looks at the slice axis's spacing
    assert _check(demo, demo["case"].image, (2.0, 2.0, 3.0)) == []


def test_ct_like_input_for_the_mr_model(demo):
    rng = np.random.default_rng(0)
    ct = np.round(rng.uniform(-1000, 2000, demo["case"].image.shape)).astype(np.float32)
    (note,) = _check(demo, ct, demo["case"].spacing)
    assert note.kind == "intensity"
    assert note.message.startswith("CT-like input (0.5..99.5%: -98")
    assert note.message.endswith("for a model trained on MR-like intensities (0.5..99.5%: 1..227)")  # the whole image's range


def test_z_score_model_ignores_a_change_of_scale(demo):
    case = demo["case"]
    assert _check(demo, case.image * 12.0 + 300.0, case.spacing) == []


def test_the_shipped_models_own_fingerprint(demo):
    """The bundled model's stored fingerprint (whole heads 0.6-2.5 mm and the demo slabs, predicted at 1 mm
    in-plane): the held-out slab and a 0.45 mm version of it are in its domain; the only note says how the
    scan reaches the network's grid."""
    fp = demo["config"]["plan"]["fingerprint"]
    target = demo["config"]["target_spacing"]
    case = demo["case"]
    notes = _check(demo, case.image, case.spacing, fp=fp, target_spacing=target)
    assert [n.message for n in notes] == ["2 mm scan, model trained on 0.6-2.5 mm scans at 1 mm: resampled to 1 mm in-plane"]
    image, spacing = _at(demo, 0.45)
    notes = _check(demo, image, spacing, fp=fp, target_spacing=target)
    assert [n.message for n in notes] == ["0.45 mm scan, model trained on 0.6-2.5 mm scans at 1 mm: resampled to 1 mm in-plane"]


def test_old_model_config_without_fingerprint(demo):
    """A v0.2 config has no stored fingerprint: every check that has its data still runs."""
    case = demo["case"]
    assert _check(demo, case.image, case.spacing, fp={}) == []
    image, spacing = _at(demo, 0.45)
    assert [n.kind for n in _check(demo, image, spacing, fp={})] == ["spacing"]
    ct = np.full(case.image.shape, -1000.0, np.float32)
    ct[:, 20:60, 20:70] = 40.0
    (note,) = _check(demo, ct, case.spacing, fp={})
    assert note.kind == "intensity" and "CT-like" in note.message and "z-score" in note.message
    # nothing known at all: nothing to compare
    assert check_domain(None, ct, case.spacing) == []


def test_larger_field_of_view(demo):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (1, 205, 205, 48)).astype(np.float32)
    notes = _check(demo, image, (1.0, 1.0, 2.5))
    assert [n.kind for n in notes] == ["spacing", "field_of_view"]
    assert notes[1].message == ("field of view 205 x 205 x 120 mm vs training 160 x 192 x 40 mm: over 2x the largest "
                                "training case along Z (anatomy the model never saw)")


def test_smaller_field_of_view_for_a_3d_model(demo):
    image = np.random.default_rng(2).uniform(0, 255, (1, 30, 40, 16)).astype(np.float32)
    (note,) = _check(demo, image, TARGET, slice_axis=None)
    assert note.kind == "field_of_view"
    assert note.message.endswith("under 0.5x the smallest along X, Y (structures may be cut off)")
    # a 2D model is fine with a small stack of slices
    assert _check(demo, image[..., :2], TARGET) == []


def test_single_slice_training_has_no_slice_axis_field_of_view():
    fp = {"median_spacing": [1.0, 1.0, 1.0], "median_shape": [128, 128, 1], "min_shape": [128, 128, 1],
          "max_shape": [128, 128, 1]}
    image = np.zeros((1, 128, 128, 60), np.float32)
    assert check_domain(fp, image, (1.0, 1.0, 3.0), target_spacing=(1.0, 1.0, 1.0), slice_axis=2) == []


def test_measured_extents_are_used_when_the_fingerprint_has_them():
    fp = {"median_spacing": [1.0, 1.0, 1.0], "median_shape": [100, 100, 100],
          "extent_mm_min": [50.0, 50.0, 50.0], "extent_mm_max": [80.0, 80.0, 80.0],
          "extent_mm_median": [70.0, 70.0, 70.0]}
    (note,) = check_domain(fp, np.zeros((1, 170, 100, 100), np.float32), (1.0, 1.0, 1.0))
    assert note.message.startswith("field of view 170 x 100 x 100 mm vs training 70 x 70 x 70 mm: over 2x")


def test_nonfinite_voxels(demo):
    image = demo["case"].image.copy()
    image[0, :5, 0, 0] = np.nan
    image[0, 7, 7, 7] = np.inf
    notes = _check(demo, image, demo["case"].spacing)
    assert notes == [DomainNote("nonfinite", "6 NaN or infinite voxel(s) (0.0049% of the image)")]


CT_FP = {"median_spacing": [0.8, 0.8, 2.5], "median_shape": [512, 512, 80], "min_shape": [512, 512, 40],
         "max_shape": [512, 512, 190],
         "intensity": [{"mean": 60.0, "std": 40.0, "p00_5": -90.0, "p99_5": 230.0, "p00_5_all": -1024.0,
                        "integer": True}]}
CT_NORM = {"mode": "ct", "window": [-90.0, 230.0]}


def _abdomen_ct(offset=0.0):
    image = np.full((1, 128, 128, 40), -1000.0, np.float32)
    image[:, 16:112, 24:104] = 40.0
    image[:, 40:60, 40:60] = 400.0  # bone
    return image + offset


def test_ct_model_accepts_hounsfield_units():
    assert check_domain(CT_FP, _abdomen_ct(), (3.2, 3.2, 2.5), target_spacing=(0.8, 0.8, 2.5),
                        normalization=CT_NORM, slice_axis=2) == [
        DomainNote("spacing", "3.2 mm scan, model trained at 0.8 mm: resampled to 0.8 mm in-plane")]


@pytest.mark.parametrize("fp", [CT_FP, {}])
def test_ct_model_warns_about_unrescaled_or_mr_input(fp):
    unrescaled = _abdomen_ct(offset=1024.0)
    (note,) = check_domain(fp, unrescaled, (0.8, 0.8, 2.5), normalization=CT_NORM, slice_axis=2)
    assert note.kind == "intensity"
    assert note.message.startswith("no negative intensities (0.5..99.5%: 24..1424) but the model expects CT in "
                                   "Hounsfield units (window -90..230)")
    mr = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 20)).astype(np.float32)
    assert [n.kind for n in check_domain(fp, mr, (0.8, 0.8, 2.5), normalization=CT_NORM, slice_axis=2)] == ["intensity"]


def test_far_outside_the_training_range_for_an_absolute_normalisation():
    fp = {"intensity": [{"p00_5": 40.0, "p99_5": 900.0, "p00_5_all": 0.0, "p99_5_all": 900.0, "integer": True}]}
    image = np.linspace(1800.0, 2400.0, 64 * 64 * 11, dtype=np.float32).reshape(1, 64, 64, 11)
    (note,) = check_domain(fp, image, (1, 1, 1), normalization={"mode": "none"})
    assert note.message == "intensities far outside the training range (median 2100 vs 0..900)"
    # the same scan for a z-score model: a change of scale is normalised away
    assert check_domain(fp, image, (1, 1, 1), normalization={"mode": "zscore"}) == []


def test_multichannel_notes_name_the_channel():
    fp = {"intensity": [{"p00_5": 10.0, "p99_5": 300.0, "p00_5_all": 0.0, "integer": True}] * 2}
    image = np.zeros((2, 32, 32, 8), np.float32)
    image[1] = -1000.0
    image[1, 8:24, 8:24] = 50.0
    image[0, 0, 0, 0] = np.nan
    notes = check_domain(fp, image, (1, 1, 1), normalization={"mode": "zscore"})
    assert [(n.kind, n.message.split(":")[0]) for n in notes] == [("nonfinite", "channel 1"),
                                                                 ("intensity", "channel 2")]


def test_odd_fingerprints_and_spacings_never_raise():
    image = np.ones((1, 16, 16, 4), np.float32)
    odd = {"median_spacing": "1 mm", "median_shape": [16, 16], "intensity": ["?"], "min_shape": None}
    assert check_domain(odd, image, (1, 1, 1), target_spacing=(1, 1, 1)) == []
    assert check_domain({}, image, (0, 1, 1), target_spacing=(1, 1, 1)) == []
    with pytest.raises(ValueError, match=r"\(C, X, Y, Z\)"):
        check_domain({}, image[0], (1, 1, 1))


def test_accepts_a_fingerprint_object(demo):
    from napari_softseg.model.planning import Fingerprint

    fp = Fingerprint(n_cases=1, rater_counts=[3], channels=1, shapes=[[80, 96, 16]], spacings=[[2.0, 2.0, 2.5]],
                     intensity=demo["fp"]["intensity"], foreground_fraction=0.3, soft_fraction=0.5)
    image, spacing = _at(demo, 0.45)
    assert [n.kind for n in check_domain(fp, image, spacing, target_spacing=TARGET, slice_axis=2)] == ["spacing"]
