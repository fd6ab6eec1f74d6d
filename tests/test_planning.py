"""The dataset fingerprint and the plan made from it: 2D/3D, slice axis, patch, batch, width, depth,
normalisation, budget, GPU planning (mocked device), overrides and conflicting options."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg.errors import SoftsegError
from napari_softseg.model.planning import (
    CPU_BATCH_2D,
    CPU_PIXELS_2D,
    DEFAULT_MINUTES_CPU,
    GPU_BATCH_2D,
    Fingerprint,
    Plan,
    fingerprint,
    make_plan,
)


def _fp(shape, spacing=(1.0, 1.0, 1.0), n=6, raters=3, channels=1, ct=False, seed=0):
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for _ in range(n):
        image = rng.normal(100, 20, (channels, *shape)).astype(np.float32)
        if ct:
            image = np.round(rng.normal(-300, 400, (channels, *shape))).astype(np.float32)
            image[..., : max(1, shape[2] // 4)] = -1024
        m = np.zeros((raters, *shape), np.uint8)
        sl = tuple(slice(k // 4, k // 4 + max(1, k // 3)) for k in shape)
        for r in range(raters):
            m[(r, *sl)] = 1
        masks.append(m)
        images.append(image)
    return fingerprint(images, masks, [spacing] * n)


def test_fingerprint_measures_the_dataset():
    fp = _fp((40, 50, 1), spacing=(0.5, 0.5, 3.0), n=5, raters=4, channels=2)
    assert fp.n_cases == 5 and fp.rater_counts == [4] * 5 and fp.channels == 2
    assert fp.median_shape == [40, 50, 1] and fp.median_spacing == [0.5, 0.5, 3.0]
    assert 0 < fp.foreground_fraction < 0.2 and fp.soft_fraction == 0.0  # identical raters: nothing disputed
    assert len(fp.intensity) == 2 and 60 < fp.intensity[0]["mean"] < 140 and not fp.intensity[0]["integer"]
    d = fp.to_dict()
    assert d["raters"] == [4, 4] and d["median_shape"] == [40, 50, 1]
    assert "5 training case(s), 4 rater(s), 2 channel(s)" in fp.summary()
    with pytest.raises(SoftsegError, match="different channel counts"):
        fingerprint([np.zeros((1, 4, 4, 1)), np.zeros((2, 4, 4, 1))], [np.zeros((1, 4, 4, 1))] * 2, [(1, 1, 1)] * 2)


@pytest.mark.parametrize("shape, axis", [((197, 233, 1), 2), ((120, 1, 110), 1), ((1, 150, 140), 0)])
def test_single_slice_data_is_2d_across_its_length_one_axis_whatever_the_orientation(shape, axis):
    plan = make_plan(_fp(shape, n=3))
    assert plan.dim == 2 and plan.slice_axis == axis and plan.context_slices == 0
    # the CPU budget per step: patch within the pixel budget, sides multiples of 2**depth
    assert np.prod(plan.patch_size) <= CPU_PIXELS_2D and all(p % 2**plan.depth == 0 for p in plan.patch_size)
    assert plan.batch_size == CPU_BATCH_2D and plan.base_channels == 16 and not plan.amp
    assert plan.max_minutes == DEFAULT_MINUTES_CPU and plan.epochs is None  # the printed default budget
    assert any("default budget" in line for line in plan.lines())


def test_small_slices_are_trained_whole():
    plan = make_plan(_fp((80, 96, 16), spacing=(2.0, 2.0, 2.5)))
    assert plan.dim == 2 and plan.slice_axis == 2 and plan.patch_size == [80, 96] and plan.depth == 4


def test_anisotropic_volumes_are_sliced_across_the_coarse_axis_and_isotropic_ones_are_3d():
    aniso = make_plan(_fp((48, 64, 64), spacing=(4.0, 0.8, 0.8), n=2))
    assert aniso.dim == 2 and aniso.slice_axis == 0
    iso = make_plan(_fp((64, 72, 80), spacing=(1.0, 1.0, 1.2), n=2))
    assert iso.dim == 3 and len(iso.patch_size) == 3 and np.prod(iso.patch_size) <= 48**3 * 1.0001
    assert iso.batch_size == 2 and all(p % 2**iso.depth == 0 for p in iso.patch_size)
    assert "3D U-Net" in iso.lines()[0]
    # --dim overrides the choice both ways
    assert make_plan(_fp((64, 72, 80), n=2), dim=2).dim == 2
    assert make_plan(_fp((40, 40, 12), spacing=(1.0, 1.0, 1.0), n=2), dim=3).dim == 3


def test_gpu_plans_larger_patches_batches_and_width_with_mixed_precision():
    fp = _fp((512, 512, 1), n=3)
    cpu, gpu = make_plan(fp, cuda=False), make_plan(fp, cuda=True)
    assert np.prod(gpu.patch_size) > np.prod(cpu.patch_size) and gpu.patch_size == [512, 512]
    assert gpu.batch_size == GPU_BATCH_2D > cpu.batch_size and gpu.base_channels == 32 and gpu.amp
    assert gpu.steps_per_epoch == 250 and gpu.device == "cuda"
    vol = _fp((160, 160, 160), n=1)
    assert np.prod(make_plan(vol, cuda=True).patch_size) > np.prod(make_plan(vol).patch_size)


def test_ct_intensities_get_a_foreground_window():
    plan = make_plan(_fp((64, 64, 8), ct=True))
    assert plan.normalization == "ct" and plan.ct_window[0] < plan.ct_window[1]
    assert make_plan(_fp((64, 64, 8))).normalization == "zscore"
    assert make_plan(_fp((64, 64, 8), ct=True), normalization="zscore").normalization == "zscore"


def test_every_option_overrides_its_part_and_is_marked():
    fp = _fp((197, 233, 1), n=3)
    plan = make_plan(fp, patch_size=64, batch_size=3, base_channels=8, depth=3, epochs=4, steps_per_epoch=7,
                     learning_rate=1e-3, slice_axis=2, norm="batch")
    assert plan.patch_size == [64, 64] and plan.batch_size == 3 and plan.base_channels == 8 and plan.depth == 3
    assert plan.epochs == 4 and plan.max_minutes is None and plan.steps_per_epoch == 7 and plan.norm == "batch"
    assert plan.sources["depth"] == "option" and "depth 3 (option)" in plan.lines()[1]
    assert make_plan(fp, patch_size=[64, 96], depth=4).patch_size == [64, 96]
    assert Plan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("options, message", [
    (dict(dim=3, context_slices=2), "--context-slices is a 2D option and conflicts with --dim 3"),
    (dict(dim=3, slice_axis=0), "--slice-axis is a 2D option"),
    (dict(patch_size=40, depth=4), "must be a multiple of 2\\*\\*depth = 16"),
    (dict(normalization="zscore", ct_window=(0, 1)), "--ct-window conflicts with --normalization zscore"),
    (dict(patch_size=[64, 64, 64]), "needs 1 or 2 values for a 2D plan"),
])
def test_conflicting_options_are_refused_in_one_line(options, message):
    with pytest.raises(SoftsegError, match=message) as err:
        make_plan(_fp((96, 96, 1), n=2), **options)
    assert "\n" not in str(err.value)


def test_3d_on_single_slices_is_refused():
    with pytest.raises(SoftsegError, match="--dim 3 needs volumes"):
        make_plan(_fp((96, 96, 1), n=2), dim=3)


def test_fingerprint_is_a_dataclass_for_the_record():
    fp = _fp((32, 32, 1), n=2)
    assert isinstance(fp, Fingerprint) and fp.to_dict()["n_cases"] == 2
