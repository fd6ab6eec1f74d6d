"""Raters packed as bits: exact round trips, the lazy layers the reader makes, and the predict path that
does not copy the scan (issue 11, viewer memory)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg._napari import layers as L
from napari_softseg.analysis.softlabels import make_soft_label, weighted_mean
from napari_softseg.datasets.synthetic import write_qubiq_dataset
from napari_softseg.io.dataset import discover, load_case
from napari_softseg.io.packed_masks import MAX_PACKED_RATERS, LazyArray, PackedMasks


@pytest.mark.parametrize("n_raters", [1, 2, 5, 7, 8, 9, 16])
def test_pack_round_trip_and_mean_are_exact(n_raters):
    rng = np.random.default_rng(n_raters)
    masks = (rng.random((n_raters, 9, 7, 5)) < 0.4).astype(np.uint8)
    packed = PackedMasks.from_stack(masks)
    assert packed.bits.dtype == (np.uint8 if n_raters <= 8 else np.uint16)
    assert packed.shape == masks.shape and len(packed) == n_raters
    np.testing.assert_array_equal(np.asarray(packed), masks)
    for r in range(n_raters):
        np.testing.assert_array_equal(packed[r], masks[r])
    np.testing.assert_array_equal(packed[-1], masks[-1])
    # the very float32 values of the eager mean, not just close ones
    assert np.array_equal(packed.mean(), weighted_mean(masks))
    assert packed.mean().dtype == np.float32


def test_lazy_views_match_the_eager_arrays_under_any_display_view():
    rng = np.random.default_rng(3)
    masks = (rng.random((5, 6, 8, 4)) < 0.5).astype(np.uint8)
    packed = PackedMasks.from_stack(masks)

    def view(a):  # a transposed, flipped view like a display order
        return np.flip(np.transpose(a, (2, 1, 0)), axis=1)

    for r in range(5):
        lazy = packed.lazy_rater(r, view)
        assert isinstance(lazy, LazyArray) and lazy.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(lazy), view(masks[r]))
        np.testing.assert_array_equal(np.asarray(lazy[2]), view(masks[r])[2])  # one slice, as napari asks
    mean = packed.lazy_mean(view)
    assert mean.dtype == np.float32
    assert np.array_equal(np.asarray(mean), view(weighted_mean(masks)))
    assert np.array_equal(np.asarray(mean[1, ::-1, 2:]), view(weighted_mean(masks))[1, ::-1, 2:])


def test_too_many_raters_or_a_narrow_dtype_are_refused():
    with pytest.raises(ValueError, match="cannot be packed"):
        PackedMasks.empty(MAX_PACKED_RATERS + 1, (2, 2, 2))
    with pytest.raises(ValueError, match="cannot hold"):
        PackedMasks(np.zeros((2, 2, 2), np.uint8), 9)
    with pytest.raises(IndexError):
        PackedMasks.empty(2, (2, 2, 2)).set_rater(2, np.ones((2, 2, 2), np.uint8))


@pytest.fixture(scope="module")
def case_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed") / "ds"
    write_qubiq_dataset(root, n_cases=1, n_validation=0, shape=(40, 30, 12), n_raters=5, seed=1)
    return discover(root).cases[0]


def test_load_case_packed_holds_the_same_masks_in_a_fifth_of_the_memory(case_path):
    eager = load_case(case_path)
    packed = load_case(case_path, packed=True)
    assert isinstance(packed.masks, PackedMasks)
    np.testing.assert_array_equal(np.asarray(packed.masks), eager.masks)
    assert packed.masks.nbytes * 5 == eager.masks.nbytes
    assert packed.warnings == eager.warnings
    np.testing.assert_array_equal(packed.image, eager.image)


def test_reader_gives_lazy_raters_and_soft_label_equal_to_the_eager_ones(case_path):
    from napari_softseg._napari.reader import read_case_folder

    layers = read_case_folder(case_path.path)
    eager = load_case(case_path)
    geometry = L.geometry_of_case(eager)
    raters = [(d, kw) for d, kw, t in layers if t == "labels"]
    assert [kw["name"] for _, kw in raters] == eager.rater_names
    for (data, _), mask in zip(raters, eager.masks):
        assert isinstance(data, LazyArray)
        np.testing.assert_array_equal(np.asarray(data), geometry.to_display(mask))
    soft_data, soft_kwargs, kind = layers[-1]
    assert kind == "image" and isinstance(soft_data, LazyArray)
    assert soft_kwargs["contrast_limits"] == (0.0, 1.0)  # napari never scans a lazy layer for its range
    expected = make_soft_label(eager.masks, "mean", rater_names=eager.rater_names)
    assert np.array_equal(np.asarray(soft_data), geometry.to_display(expected.data))
    prov = soft_kwargs["metadata"]["softseg"]["provenance"]
    assert prov["method"] == "mean" and prov["n_raters"] == 5 and prov["raters"] == eager.rater_names


def test_predict_on_a_strided_view_equals_predict_on_a_copy():
    from napari_softseg.datasets.bundled import demo_model_path
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import load_model
    from napari_softseg.progress import drive

    model = load_model(demo_model_path())
    base = np.random.default_rng(0).normal(size=(1, 24, 20, 5)).astype(np.float32)
    view = base[:, ::-1, :, ::-1]  # negative strides, as a layer's display-order view can have
    a = drive(predict_array(model, np.ascontiguousarray(view), device="cpu"))
    b = drive(predict_array(model, view, device="cpu"))
    np.testing.assert_array_equal(a, b)
    c = drive(predict_array(model, view, device="cpu", batch_size=2))  # other batches: float rounding only
    np.testing.assert_allclose(c, a, atol=1e-5)


def test_cpu_batch_size_bounds_the_activations():
    from napari_softseg.model.inference import ACTIVATION_BYTES_PER_PIXEL_CHANNEL, CPU_ACTIVATION_BUDGET, cpu_batch_size
    from napari_softseg.model.model_io import ModelConfig

    wide = ModelConfig(architecture={"base_channels": 16, "depth": 4})
    assert cpu_batch_size(wide, (512, 512), 1024) == 1  # 160 MB a slice: one at a time
    narrow = ModelConfig(architecture={"base_channels": 8, "depth": 4})
    n = cpu_batch_size(narrow, (256, 256), 1024)
    assert n >= 1 and n * ACTIVATION_BYTES_PER_PIXEL_CHANNEL * 256 * 256 * 8 <= CPU_ACTIVATION_BUDGET
    patched = ModelConfig(architecture={"base_channels": 16, "depth": 4}, patch_size=[128, 128])
    assert cpu_batch_size(patched, (512, 512), 1024) == cpu_batch_size(wide, (128, 128), 1024) > 1


def test_lazy_layers_refuse_writes_with_a_clear_message():
    lazy = PackedMasks.from_stack(np.ones((2, 3, 3, 3), np.uint8)).lazy_rater(0)
    with pytest.raises(TypeError, match="read-only: draw in a new Labels layer"):
        lazy[0, 0, 0] = 0
    np.testing.assert_array_equal(np.asarray(lazy), np.ones((3, 3, 3), np.uint8))


def test_every_analysis_of_rater_masks_takes_them_packed_and_gives_the_stacks_answer():
    """The docks hold the raters packed (one byte a voxel); each analysis they run on them must give exactly
    what it gives for the ``(R, ...)`` stack, without unpacking the whole stack."""
    from napari_softseg._qt.calibration_widget import calibration_work
    from napari_softseg.analysis.consensus import agreement_count, consensus_mask
    from napari_softseg.analysis.disagreement import disagreement_map
    from napari_softseg.analysis.metrics import leave_one_rater_out
    from napari_softseg.analysis.operating_point import Reference, ThresholdSession, others_consensus
    from napari_softseg.progress import drive

    rng = np.random.default_rng(7)
    stack = (rng.random((5, 12, 10, 6)) < np.linspace(0.2, 0.8, 5)[:, None, None, None]).astype(np.uint8)
    packed = PackedMasks.from_stack(stack)
    pred = rng.random((12, 10, 6)).astype(np.float32)
    annotation = rng.random((12, 10, 6)) < 0.5

    np.testing.assert_array_equal(agreement_count(packed), agreement_count(stack))
    for k in range(1, 6):
        np.testing.assert_array_equal(consensus_mask(packed, k), consensus_mask(stack, k))
        np.testing.assert_array_equal(disagreement_map(annotation, packed, k), disagreement_map(annotation, stack, k))
    np.testing.assert_array_equal(weighted_mean(packed), weighted_mean(stack))
    np.testing.assert_allclose(weighted_mean(packed, [1, 2, 3, 4, 5]), weighted_mean(stack, [1, 2, 3, 4, 5]))
    for r in range(5):
        np.testing.assert_array_equal(others_consensus(packed, r), others_consensus(stack, r))
    assert leave_one_rater_out(packed, pred, 0.5) == leave_one_rater_out(stack, pred, 0.5)

    a, b = ThresholdSession(pred, packed, spacing=(1, 1, 2)), ThresholdSession(pred, stack, spacing=(1, 1, 2))
    for ref in (Reference("consensus", k=2), Reference("rater", rater=3), Reference("soft")):
        np.testing.assert_array_equal(a.reference_mask(ref), b.reference_mask(ref))
        assert drive(a.build_curve(ref)).at(0.4).as_dict() == drive(b.build_curve(ref)).at(0.4).as_dict()
    names = [f"rater {i + 1}" for i in range(5)]
    got, want = drive(calibration_work(pred, packed, names)), drive(calibration_work(pred, stack, names))
    assert [(n, e) for n, _, e in got] == [(n, e) for n, _, e in want] and len(got) == 6
