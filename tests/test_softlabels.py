import numpy as np
import pytest

from napari_softseg.analysis.consensus import agreement_count
from napari_softseg.analysis.softlabels import (
    METHODS,
    consensus,
    gaussian_smooth,
    majority_vote,
    make_soft_label,
    staple,
)
from napari_softseg.datasets.synthetic import make_phantom
from napari_softseg.errors import SoftsegError


@pytest.fixture(scope="module")
def masks():
    _, m, _ = make_phantom((48, 48, 1), n_raters=4, seed=3)
    return m


def test_mean_is_fraction_of_raters(masks):
    soft = make_soft_label(masks, "mean", rater_names=list("abcd"))
    assert soft.data.dtype == np.float32 and soft.data.shape == masks.shape[1:]
    np.testing.assert_allclose(soft.data, masks.sum(0) / 4)
    assert set(np.unique(soft.data)) <= {0, 0.25, 0.5, 0.75, 1}
    assert soft.provenance["method"] == "mean" and soft.provenance["raters"] == list("abcd")
    assert soft.provenance["n_raters"] == 4 and soft.provenance["software"].startswith("napari-softseg")


def test_weights(masks):
    soft = make_soft_label(masks, "mean", weights=[1, 1, 1, 0])
    np.testing.assert_allclose(soft.data, masks[:3].sum(0) / 3, atol=1e-6)
    assert soft.provenance["weights"] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    with pytest.raises(SoftsegError, match="3 rater weights for 4 raters"):
        make_soft_label(masks, "mean", weights=[1, 1, 1])
    with pytest.raises(SoftsegError, match="non-negative"):
        make_soft_label(masks, "mean", weights=[1, -1, 1, 1])


def test_smoothing_honours_spacing_and_equals_smoothing_each_mask(masks):
    vol = np.zeros((21, 21, 21), np.float32)
    vol[10, 10, 10] = 1
    out = gaussian_smooth(vol, sigma_mm=2.0, spacing=(1.0, 2.0, 4.0))
    # sigma in voxels is 2, 1, 0.5: the profile is widest along x
    prof = [out[10:, 10, 10], out[10, 10:, 10], out[10, 10, 10:]]
    widths = [float((p > p[0] * 0.01).sum()) for p in prof]
    assert widths[0] > widths[1] > widths[2]
    # 2D (Z == 1) data is not smoothed along Z and stays within [0, 1]
    soft = make_soft_label(masks, "smoothed", spacing=(0.8, 0.8, 1.0), sigma_mm=1.0)
    assert soft.data.min() >= 0 and soft.data.max() <= 1
    assert soft.provenance["sigma_mm"] == 1.0
    # linearity: smoothing the mean == mean of smoothed masks
    each = np.mean([gaussian_smooth(m.astype(np.float32), 1.0, (0.8, 0.8, 1.0)) for m in masks], axis=0)
    np.testing.assert_allclose(soft.data, each, atol=1e-6)
    alias = make_soft_label(masks, "smoothed-raters", spacing=(0.8, 0.8, 1.0))
    np.testing.assert_array_equal(alias.data, soft.data)


def test_majority_agreement_consensus():
    m = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], np.uint8).T[..., None, None]
    m = np.moveaxis(m, 1, 0)  # (R=4, 4 voxels, 1, 1)
    np.testing.assert_array_equal(agreement_count(m).ravel(), [3, 2, 1, 0])
    np.testing.assert_array_equal(majority_vote(m).ravel(), [1, 1, 0, 0])  # a 2-2 tie: at least half
    np.testing.assert_array_equal(consensus(m, 2).ravel(), [1, 1, 0, 0])
    with pytest.raises(SoftsegError, match="1 <= k <= 4"):
        consensus(m, 5)
    assert set(np.unique(make_soft_label(m, "majority").data)) <= {0.0, 1.0}


def test_staple_downweights_a_bad_rater():
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40, 1), np.uint8)
    truth[10:30, 10:30] = 1
    good = [truth.copy() for _ in range(3)]
    for g in good:
        flip = rng.random(truth.shape) < 0.02
        g[flip] = 1 - g[flip]
    bad = (rng.random(truth.shape) < 0.3).astype(np.uint8)
    masks = np.stack(good + [bad])
    post, info = staple(masks)
    assert post.dtype == np.float32 and post.min() >= 0 and post.max() <= 1
    assert info["sensitivity"][3] < min(info["sensitivity"][:3]) or info["specificity"][3] < min(info["specificity"][:3])
    # STAPLE recovers the truth better than the plain mean at 0.5
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())
    mean = masks.mean(0)
    assert dice(post >= 0.5, truth > 0) >= dice(mean >= 0.5, truth > 0)
    assert dice(post >= 0.5, truth > 0) > 0.95


def test_errors(masks):
    with pytest.raises(SoftsegError, match="unknown soft-label method 'median'"):
        make_soft_label(masks, "median")
    with pytest.raises(SoftsegError, match="at least one rater"):
        make_soft_label(np.zeros((0, 4, 4, 1), np.uint8))
    with pytest.raises(SoftsegError, match="sigma must be >= 0"):
        make_soft_label(masks, "smoothed", sigma_mm=-1)
    assert set(METHODS) == {"mean", "smoothed", "majority", "staple"}


def test_single_rater_soft_label_is_hard(masks):
    soft = make_soft_label(masks[:1])
    np.testing.assert_array_equal(soft.data, masks[0])
