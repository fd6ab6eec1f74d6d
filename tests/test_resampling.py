"""Spacing-aware resampling: target spacing rule, shapes, grid alignment, no-op path, 2D in-plane only,
round trips, value ranges, masks, and agreement with scipy's grid-mode zoom."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_softseg.errors import SoftsegError
from napari_softseg.model import resampling
from napari_softseg.model.resampling import (
    axis_weights,
    resample_axes,
    resample_image,
    resample_masks,
    resample_probabilities_back,
    resample_soft_map,
    resampled_shape,
    target_spacing,
)


def _smooth_map(shape):
    """A smooth probability map (a wide Gaussian blob) on a grid of ``shape``."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    r2 = axes[0][:, None, None] ** 2 / 0.5 + axes[1][None, :, None] ** 2 / 0.4 + axes[2][None, None, :] ** 2 / 0.6
    return np.exp(-r2).astype(np.float32)


def _edge_mm(profile, spacing):
    """Physical position (mm from the field of view's start) where a rising profile crosses 0.5."""
    i = int(np.flatnonzero(profile >= 0.5)[0])
    frac = (0.5 - profile[i - 1]) / (profile[i] - profile[i - 1])
    return (i - 1 + frac + 0.5) * spacing


# --- target spacing -------------------------------------------------------------------------------------

def test_target_spacing_is_the_median_for_isotropic_data():
    spacings = [(1.0, 1.0, 1.0), (1.2, 1.2, 1.2), (0.8, 0.9, 1.1), (1.1, 1.0, 0.9), (0.9, 1.1, 1.0)]
    shapes = [(160, 190, 150)] * 5
    assert target_spacing(spacings, shapes, dim=3) == (1.0, 1.0, 1.0)


def test_anisotropic_low_resolution_axis_takes_its_10th_percentile():
    z = [5.0, 5.0, 5.0, 5.0, 6.0, 5.0, 4.0, 3.0, 3.0, 2.5]
    spacings = [(0.7, 0.7, s) for s in z]
    shapes = [(512, 512, 30)] * len(z)
    got = target_spacing(spacings, shapes, dim=3)
    assert got[:2] == (0.7, 0.7)
    assert got[2] == pytest.approx(np.percentile(z, 10))  # 2.95, not the median 5
    assert got[2] < np.median(z)


def test_anisotropic_target_never_falls_below_the_other_axes():
    z = [0.5, 0.5, 3.0, 3.0, 3.0, 3.0, 3.0]  # median 3 >= 3 x 1.0; 10th percentile 0.5
    got = target_spacing([(1.0, 1.0, s) for s in z], [(300, 300, 40)] * len(z), dim=3)
    assert got == (1.0, 1.0, 1.0)


def test_anisotropic_spacing_with_many_slices_keeps_the_median():
    # 3 mm slices but as many voxels along Z as in-plane: nnU-Net's voxel condition is not met
    z = [3.0, 3.0, 3.0, 2.0, 2.0]
    got = target_spacing([(1.0, 1.0, s) for s in z], [(100, 100, 90)] * 5, dim=3)
    assert got == (1.0, 1.0, 3.0)


def test_2d_plan_keeps_the_slice_axis_median():
    z = [5.0, 5.0, 5.0, 3.0, 3.0]
    spacings = [(0.7, 0.8, s) for s in z]
    got = target_spacing(spacings, [(512, 512, 20)] * 5, dim=2, slice_axis=2)
    assert got == (0.7, 0.8, 5.0)
    # the slice axis may be any axis
    got = target_spacing([(s, 0.7, 0.8) for s in z], [(20, 512, 512)] * 5, dim=2, slice_axis=0)
    assert got == (5.0, 0.7, 0.8)


def test_target_spacing_refuses_bad_input():
    with pytest.raises(SoftsegError, match="no cases"):
        target_spacing([], [], dim=3)
    with pytest.raises(SoftsegError, match="positive"):
        target_spacing([(1.0, 0.0, 1.0)], [(10, 10, 10)], dim=3)
    with pytest.raises(SoftsegError, match="slice axis"):
        target_spacing([(1.0, 1.0, 1.0)], [(10, 10, 10)], dim=2)
    assert resample_axes(2, 0) == (1, 2) and resample_axes(3) == (0, 1, 2)


# --- shapes and the no-op path --------------------------------------------------------------------------

def test_resampled_shape_rounds_and_keeps_untouched_axes():
    assert resampled_shape((100, 80, 10), (0.5, 0.5, 2.0), (1.0, 1.0, 2.0)) == (50, 40, 10)
    assert resampled_shape((101, 80, 10), (0.5, 0.5, 2.0), (1.0, 1.0, 1.0), axes=(0, 1)) == (51, 40, 10)
    assert resampled_shape((512, 512, 300), (0.45, 0.45, 0.4), (1.0, 1.0, 1.0)) == (230, 230, 120)
    assert resampled_shape((3, 3, 1), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)  # never 0 voxels
    # within 1e-3 relative the spacing counts as equal even if the rounded count would move
    assert resampled_shape((2000, 10, 10), (1.0009, 1.0, 1.0), (1.0, 1.0, 1.0)) == (2000, 10, 10)


def test_no_op_returns_the_same_object():
    image = np.random.default_rng(0).random((2, 12, 10, 8)).astype(np.float32)
    out, zooms = resample_image(image, (1.0, 1.0, 2.0), (1.0005, 0.9995, 2.0))
    assert out is image and zooms == (1.0, 1.0, 2.0)
    masks = np.zeros((3, 12, 10, 8), np.uint8)
    assert resample_masks(masks, (1.0, 1.0, 2.0), (1.0, 1.0, 2.0))[0] is masks
    soft = image[0]
    assert resample_soft_map(soft, (1.0, 1.0, 2.0), (1.0, 1.0, 2.0))[0] is soft
    assert resample_probabilities_back(soft, soft.shape) is soft
    # a 2D model never touches the slice axis, whatever its spacing
    out, _ = resample_image(image, (1.0, 1.0, 2.0), (1.0, 1.0, 5.0), axes=(0, 1))
    assert out is image


def test_output_shapes_and_zooms_are_exact():
    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, (2, 101, 64, 17)).astype(np.float32)
    out, zooms = resample_image(image, (0.5, 0.75, 3.0), (1.0, 1.0, 2.0))
    assert out.shape == (2, 51, 48, 26) and out.dtype == np.float32
    assert zooms == pytest.approx((0.5 * 101 / 51, 0.75 * 64 / 48, 3.0 * 17 / 26))
    back = resample_probabilities_back(rng.random(out.shape[1:]).astype(np.float32), image.shape[1:])
    assert back.shape == image.shape[1:] and back.dtype == np.float32
    masks = (rng.random((3, 101, 64, 17)) > 0.5).astype(np.uint8)
    binary, _ = resample_masks(masks, (0.5, 0.75, 3.0), (1.0, 1.0, 2.0))
    assert binary.shape == (3, 51, 48, 26) and binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 1}


# --- values ---------------------------------------------------------------------------------------------

def test_linear_upsampling_matches_scipy_grid_mode_zoom():
    x = np.random.default_rng(2).random((20, 17, 9)).astype(np.float32)
    for shape in [(50, 40, 23), (20, 41, 9), (33, 17, 30)]:
        ours = resample_probabilities_back(x, shape)
        ref = ndimage.zoom(x, [m / n for m, n in zip(shape, x.shape)], order=1, grid_mode=True, mode="nearest")
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_without_antialias_downsampling_also_matches_scipy():
    x = np.random.default_rng(3).random((40, 36, 20)).astype(np.float32)
    ours = resample_probabilities_back(x, (15, 12, 8), antialias=False)
    ref = ndimage.zoom(x, [15 / 40, 12 / 36, 8 / 20], order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_antialiased_downsampling_averages_noise():
    noise = np.random.default_rng(4).random((1, 120, 120, 4)).astype(np.float32)
    point, _ = resample_image(noise, (0.5, 0.5, 1.0), (1.5, 1.5, 1.0), order=1, antialias=False)
    smooth, _ = resample_image(noise, (0.5, 0.5, 1.0), (1.5, 1.5, 1.0), order=1)
    # a 3x coarser voxel covers ~9 input voxels: much less variance than point sampling
    assert smooth.std() < 0.6 * point.std()
    assert abs(float(smooth.mean()) - float(noise.mean())) < 0.01


def test_probabilities_stay_in_0_1():
    rng = np.random.default_rng(5)
    prob = (rng.random((30, 25, 12)) > 0.5).astype(np.float32)  # the harshest case: 0/1 noise
    for shape in [(75, 61, 30), (11, 9, 5), (75, 9, 12)]:
        back = resample_probabilities_back(prob, shape)
        assert back.min() >= 0.0 and back.max() <= 1.0
    soft, _ = resample_soft_map(prob, (1.0, 1.0, 1.0), (0.37, 2.3, 1.0))
    assert soft.min() >= 0.0 and soft.max() <= 1.0


def test_round_trip_of_a_smooth_map_is_close():
    smooth = _smooth_map((96, 80, 40))
    down, zooms = resample_soft_map(smooth, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert down.shape == (48, 40, 20) and zooms == (2.0, 2.0, 2.0)
    back = resample_probabilities_back(down, smooth.shape)
    err = np.abs(back - smooth)
    # measured: 0.0016 mean, 0.010 inside, 0.021 in the outermost voxels (the edge voxel is repeated past the
    # field of view, so a steep gradient there is flattened by half a coarse voxel)
    assert err.mean() < 0.003 and err[2:-2, 2:-2, 2:-2].max() < 0.012 and err.max() < 0.03
    # and the other way round: upsampled to 0.5 mm, then back to 1 mm (measured 0.0004 / 0.0026 / 0.0062)
    up, _ = resample_soft_map(smooth, (1.0, 1.0, 1.0), (0.5, 0.5, 0.5))
    err = np.abs(resample_probabilities_back(up, smooth.shape) - smooth)
    assert err.mean() < 0.001 and err[2:-2, 2:-2, 2:-2].max() < 0.004 and err.max() < 0.01


@pytest.mark.parametrize("target", [0.5, 2.0, 0.7, 1.6])
def test_step_edge_stays_at_the_same_physical_position(target):
    # 64 voxels of 1 mm; the step is at 32 mm from the field of view's start (between voxels 31 and 32)
    step = np.zeros((1, 64, 3, 2), np.float32)
    step[0, 32:] = 1.0
    for order in (1, 3):
        out, zooms = resample_image(step, (1.0, 1.0, 1.0), (target, 1.0, 1.0), order=order)
        assert _edge_mm(out[0, :, 1, 0], zooms[0]) == pytest.approx(32.0, abs=0.02)
        back = resample_probabilities_back(np.clip(out[0], 0, 1), step.shape[1:])
        assert _edge_mm(back[:, 1, 0], 1.0) == pytest.approx(32.0, abs=0.02)
        # symmetric around the edge: voxels mirrored about 32 mm sum to 1
        np.testing.assert_allclose(back[31::-1, 1, 0] + back[32:, 1, 0], 1.0, atol=1e-5)


def test_cubic_overshoot_is_clipped_to_the_input_range():
    step = np.full((1, 64, 4, 4), -1000.0, np.float32)
    step[0, 32:] = 2000.0
    up, _ = resample_image(step, (1.0, 1.0, 1.0), (0.4, 1.0, 1.0), antialias=False)
    assert up.min() == -1000.0 and up.max() == 2000.0
    # unclipped, Keys' cubic rings by 1/16 of the step on upsampling
    index, weights = axis_weights(64, 160, order=3)
    raw = (step[0, :, 0, 0][index] * weights).sum(axis=1)
    assert raw.max() == pytest.approx(2000.0 + 3000.0 / 16, rel=1e-3)


def test_2d_model_resamples_in_plane_only():
    rng = np.random.default_rng(6)
    image = rng.normal(0, 1, (1, 40, 30, 7)).astype(np.float32)
    image[..., 3] = 0.0
    out, zooms = resample_image(image, (0.5, 0.5, 4.0), (1.0, 1.0, 2.0), axes=(0, 1))
    assert out.shape == (1, 20, 15, 7) and zooms == (1.0, 1.0, 4.0)
    assert np.all(out[..., 3] == 0.0)  # slices never mix
    alone, _ = resample_image(image[..., 5:6], (0.5, 0.5, 4.0), (1.0, 1.0, 2.0), axes=(0, 1))
    np.testing.assert_allclose(out[..., 5:6], alone, atol=1e-6)
    back = resample_probabilities_back(np.clip(out[0], 0, 1), (40, 30, 7), axes=(0, 1))
    assert back.shape == (40, 30, 7)
    with pytest.raises(SoftsegError, match="not resampled"):
        resample_probabilities_back(out[0], (40, 30, 9), axes=(0, 1))


def test_strided_input_gives_the_same_result():
    image = np.random.default_rng(7).random((1, 30, 20, 10)).astype(np.float32)
    view = np.ascontiguousarray(np.transpose(image, (0, 3, 2, 1))).transpose(0, 3, 2, 1)[:, ::-1]
    assert not view.flags.c_contiguous
    a, _ = resample_image(np.ascontiguousarray(view), (1.0, 1.0, 1.0), (0.6, 1.3, 2.0))
    b, _ = resample_image(view, (1.0, 1.0, 1.0), (0.6, 1.3, 2.0))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_masks_binary_and_fractional():
    masks = np.zeros((3, 40, 40, 6), np.uint8)
    for r, half in enumerate((10, 12, 14)):
        masks[r, 20 - half:20 + half, 20 - half:20 + half] = 1
    binary, zooms = resample_masks(masks, (0.5, 0.5, 2.0), (1.0, 1.0, 2.0))
    assert binary.shape == (3, 20, 20, 6) and zooms == (1.0, 1.0, 2.0)
    # a square of 2*half voxels at 0.5 mm covers half voxels at 1 mm
    assert [int(b[:, :, 0].sum()) for b in binary] == [100, 144, 196]
    fractions, _ = resample_masks(masks, (0.5, 0.5, 2.0), (0.8, 1.3, 2.0), binary=False)
    assert fractions.dtype == np.float32 and fractions.min() >= 0 and fractions.max() <= 1
    soft = masks.mean(axis=0, dtype=np.float32)
    mean_then, _ = resample_soft_map(soft, (0.5, 0.5, 2.0), (0.8, 1.3, 2.0))
    np.testing.assert_allclose(fractions.mean(axis=0), mean_then, atol=1e-6)  # linear: order does not matter


def test_bad_inputs_are_named():
    with pytest.raises(SoftsegError, match=r"\(C, X, Y, Z\)"):
        resample_image(np.zeros((4, 4, 4), np.float32), (1, 1, 1), (2, 2, 2))
    with pytest.raises(SoftsegError, match="spacing"):
        resample_image(np.zeros((1, 4, 4, 4), np.float32), (1, 1), (2, 2, 2))
    with pytest.raises(SoftsegError, match="order"):
        resample_image(np.zeros((1, 4, 4, 4), np.float32), (1, 1, 1), (2, 2, 2), order=2)
    with pytest.raises(SoftsegError, match="axes"):
        resample_image(np.zeros((1, 4, 4, 4), np.float32), (1, 1, 1), (2, 2, 2), axes=(0, 3))


def test_slab_sizes_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(8)
    prob = rng.random((23, 19, 11)).astype(np.float32)
    image = rng.normal(0, 1, (1, 40, 33, 70)).astype(np.float32)
    whole_back = resample_probabilities_back(prob, (57, 47, 30))
    whole_image, _ = resample_image(image, (0.5, 0.5, 0.5), (1.1, 0.9, 1.3))
    # one voxel row per slab, and blocks of 3 output voxels along Z: many slabs, overlapping input rows
    monkeypatch.setattr(resampling, "FUSED_BYTES", 1)
    monkeypatch.setattr(resampling, "CHUNK_BYTES", 1)
    monkeypatch.setattr(resampling, "LAST_AXIS_BLOCK", 3)
    np.testing.assert_allclose(resample_probabilities_back(prob, (57, 47, 30)), whole_back, atol=1e-6)
    np.testing.assert_allclose(resample_image(image, (0.5, 0.5, 0.5), (1.1, 0.9, 1.3))[0], whole_image, atol=1e-5)
