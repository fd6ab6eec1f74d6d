"""Background is not tissue (issue 16): a body-region model's map is 0 far from the body, whatever the
network says there; dark spaces the body encloses are kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_softseg.errors import SoftsegError
from napari_softseg.model.background import DEFAULT_MARGIN_MM, near_body, zero_far_from_body
from napari_softseg.model.inference import predict_array
from napari_softseg.model.model_io import LoadedModel, ModelConfig
from napari_softseg.progress import drive


def _head(shape=(60, 60, 40), open_bottom=False):
    """A bright shell (scalp) around dark tissue (a ventricle-like space) in dark air."""
    g = np.indices(shape).astype(np.float32)
    c = [(n - 1) / 2 for n in shape]
    r = np.sqrt(sum((g[i] - c[i]) ** 2 for i in range(3)))
    scan = np.full(shape, 3.0, np.float32)             # air (noise level)
    scan[(r > 14) & (r <= 18)] = 150.0                 # the shell
    scan[r <= 14] = 10.0                               # a dark space the shell encloses
    if open_bottom:
        scan[:, :, :8] = 3.0                           # the field of view cuts the head: open in 3D
    return scan, r


def test_near_body_keeps_the_body_its_enclosed_spaces_and_a_margin_only():
    scan, r = _head()
    keep = near_body(scan, (1.0, 1.0, 1.0), level=50.0, margin_mm=5.0)
    assert keep[r <= 18].all()                         # shell and what it encloses
    assert not keep[r >= 34].any()                     # far air (5 mm + the 3 mm cells' rounding)
    assert keep[(r > 18) & (r <= 22)].all()            # the margin
    # a field of view that opens the inside to the border in 3D: the slices still enclose it
    scan, r = _head(open_bottom=True)
    keep = near_body(scan, (1.0, 1.0, 1.0), level=50.0, margin_mm=5.0)
    inside = (r <= 14)
    inside[:, :, :8] = False
    assert keep[inside].all()
    # nothing above the level: nothing to go by, nothing removed
    assert near_body(np.zeros((8, 8, 8)), (1, 1, 1), level=1.0, margin_mm=5.0).all()


def test_zero_far_from_body_counts_and_keeps_the_rest():
    scan, r = _head()
    prob = np.full(scan.shape, 0.6, np.float32)
    changed = zero_far_from_body(prob, scan, (1.0, 1.0, 1.0), level=50.0, margin_mm=5.0)
    assert changed == int(np.count_nonzero(prob == 0)) > 0
    assert (prob[r <= 18] == 0.6).all() and (prob[r >= 34] == 0).all()


class _Half(torch.nn.Module):
    """A network that says p = 0.5 everywhere (logit 0), air included."""

    size_multiple = 1

    def forward(self, x):
        return torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype, device=x.device)


@pytest.mark.parametrize("margin", [None, DEFAULT_MARGIN_MM])
def test_predict_array_zeroes_the_air_only_for_a_model_that_asks(margin):
    scan, r = _head()
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, normalization={"mode": "zscore", "region": "body"},
                         target_spacing=[1.0, 1.0, 1.0], background_margin_mm=margin)
    prob = drive(predict_array(LoadedModel(network=_Half(), config=config), scan[None], device="cpu",
                               spacing=(1.0, 1.0, 1.0)))
    assert np.allclose(prob[r <= 18], 0.5)
    if margin is None:
        assert np.allclose(prob, 0.5)
    else:
        assert (prob[r >= 34] == 0).all()


def test_config_round_trip_and_bad_margins():
    assert ModelConfig().background_margin_mm is None                     # models before v0.3
    assert ModelConfig(background_margin_mm=5).background_margin_mm == 5.0
    for bad in (0, -1.0, float("nan"), "5", True):
        with pytest.raises(SoftsegError, match="background_margin_mm"):
            ModelConfig(background_margin_mm=bad)
    data = json.loads(json.dumps(ModelConfig(background_margin_mm=7.5).to_dict()))
    assert ModelConfig.from_dict(data).background_margin_mm == 7.5


def test_the_shipped_model_zeroes_the_air_around_the_whole_head_sample():
    """The bundled model on the bundled whole head: no p >= 0.1 in air far from the head."""
    import nibabel as nib

    from napari_softseg.datasets.bundled import demo_model_path
    from napari_softseg.model.model_io import load_model
    from napari_softseg.model.normalization import body_level

    model = load_model(demo_model_path())
    assert model.config.background_margin_mm == DEFAULT_MARGIN_MM
    path = demo_model_path().parent.parent / "mni_head" / "Training" / "case01" / "image.nii.gz"
    image = nib.load(str(path))
    scan = np.asarray(image.dataobj, dtype=np.float32)[:, :, 90:]       # the top of the head and the air above
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    torch.set_num_threads(1)
    prob = drive(predict_array(model, scan[None], device="cpu", spacing=spacing))
    far = ~near_body(scan, spacing, level=body_level(scan), margin_mm=DEFAULT_MARGIN_MM)
    assert far.mean() > 0.2                                              # there is air to judge
    assert prob[far].max() == 0.0
    assert (prob >= 0.5).sum() > 1000                                    # and white matter is still found


@pytest.mark.parametrize("shape, cell_mm, reach_mm", [
    ((40, 33, 20), (1.0, 2.0, 3.0), 5.0),          # anisotropic cells, a few slabs
    ((7, 9, 5), (3.0, 1.0, 1.0), 30.0),            # a reach wider than the grid: one halo covers it all
    ((60, 20, 20), (0.5, 1.0, 1.0), 4.2),          # fine first axis: a halo of 9 cells per side
])
def test_slab_wise_distance_matches_the_whole_grid_transform(shape, cell_mm, reach_mm):
    from scipy import ndimage

    from napari_softseg.model.background import _within

    rng = np.random.default_rng(1)
    bodies = [ndimage.binary_dilation(rng.random(shape) > 0.99, iterations=2) for _ in range(3)]
    bodies = [body for body in bodies if body.any()]   # the caller never asks without a body (near_body)
    assert bodies
    lone = np.zeros(shape, bool)
    lone[shape[0] // 2, 3, 3] = True                # one body cell: slabs far from it see no body
    for body in bodies + [lone]:
        expected = ndimage.distance_transform_edt(~body, sampling=cell_mm) <= reach_mm
        np.testing.assert_array_equal(_within(body, cell_mm, reach_mm, slab=4), expected)
