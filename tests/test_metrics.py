import numpy as np
import pytest

from napari_softseg.analysis.metrics import (
    QUBIQ_THRESHOLDS,
    PRCurve,
    dice,
    evaluate_case,
    expected_calibration_error,
    leave_one_rater_out,
    pairwise_dice,
    qubiq_score,
    reliability,
    volume_ml,
)
from napari_softseg.errors import SoftsegError

RNG = np.random.default_rng(42)


def reference_qubiq(pred, masks):
    """Independent QUBIQ score: per threshold, plain Python set arithmetic on float32 values."""
    pred = np.asarray(pred, np.float32).ravel()
    mean = (np.asarray(masks, np.float64).sum(0) / len(masks)).astype(np.float32).ravel()
    scores = []
    for k in range(1, 10):
        t = np.float32(k / 10)
        a = set(np.flatnonzero(pred > t).tolist())
        b = set(np.flatnonzero(mean > t).tolist())
        scores.append(1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b)))
    return sum(scores) / 9, scores


@pytest.mark.parametrize("seed", range(5))
def test_qubiq_matches_independent_random(seed):
    rng = np.random.default_rng(seed)
    r = int(rng.integers(2, 8))
    masks = (rng.random((r, 20, 17, 3)) < rng.random()).astype(np.uint8)
    pred = rng.random((20, 17, 3)).astype(np.float32)
    score, per_t = qubiq_score(pred, masks)
    ref_score, ref_per_t = reference_qubiq(pred, masks)
    assert score == pytest.approx(ref_score, abs=1e-12)
    np.testing.assert_allclose(per_t, ref_per_t, atol=1e-12)


def test_qubiq_edge_cases():
    empty = np.zeros((3, 6, 6, 1), np.uint8)
    assert qubiq_score(np.zeros((6, 6, 1), np.float32), empty) == (1.0, [1.0] * 9)
    # prediction non-empty but raters empty: Dice 0 where the prediction exceeds t
    pred = np.full((6, 6, 1), 0.55, np.float32)
    score, per_t = qubiq_score(pred, empty)
    assert per_t[:5] == [0.0] * 5 and per_t[5:] == [1.0] * 4
    # 2 raters whose mean sits exactly on t = 0.5: "p > t" leaves it out of the reference
    m = np.zeros((2, 4, 4, 1), np.uint8)
    m[0, :2] = 1
    m[1, :3] = 1  # rows 0-1: mean 1.0, row 2: mean 0.5
    mean = m.mean(0).astype(np.float32)
    assert qubiq_score(mean, m)[0] == 1.0  # the soft label itself (stored float32) scores 1
    pred = (m[0] * 1.0).astype(np.float32)  # only rows 0-1
    per_t = qubiq_score(pred, m)[1]
    assert per_t[4] == 1.0  # at 0.5 the reference is rows 0-1 only
    assert per_t[3] == pytest.approx(2 * 8 / (8 + 12))  # at 0.4 it includes row 2
    assert reference_qubiq(pred, m)[1] == per_t


def test_qubiq_float32_soft_label_of_five_raters_scores_one():
    masks = (RNG.random((5, 30, 30, 1)) < 0.5).astype(np.uint8)
    assert qubiq_score(masks.mean(0).astype(np.float32), masks)[0] == 1.0
    assert len(QUBIQ_THRESHOLDS) == 9


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert dice(a, b) == 0.5
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(SoftsegError, match="shapes"):
        dice(np.zeros(3), np.zeros(4))


def test_pr_curve_agrees_with_sklearn():
    from sklearn.metrics import precision_recall_curve

    pred = RNG.random(50_000).astype(np.float32)
    pred[:200] = 0.5  # ties exactly on a grid threshold
    truth = RNG.random(50_000) < pred
    curve = PRCurve(pred, truth, n_bins=100)
    prec, rec, thr = precision_recall_curve(truth, pred)
    for k, t in enumerate(curve.thresholds):
        i = np.searchsorted(thr, t)  # sklearn's first threshold >= t: same predicted set
        if i >= thr.size:
            continue
        assert curve.precision[k] == pytest.approx(prec[i], abs=1e-12)
        assert curve.recall[k] == pytest.approx(rec[i], abs=1e-12)


def test_pr_curve_counts_exact_at_every_threshold():
    pred = np.concatenate([RNG.random(5000), np.arange(101) / 100]).astype(np.float32)
    truth = RNG.random(pred.size) < 0.3
    curve = PRCurve(pred, truth, n_bins=100, spacing=(2.0, 1.0, 0.5))
    for k in range(101):
        m = pred >= np.float32(k / 100)
        op = curve.at(k / 100)
        assert op.tp == (m & truth).sum() and op.fp == (m & ~truth).sum()
        assert op.fn == (~m & truth).sum() and op.tn == (~m & ~truth).sum()
        assert op.n_positive == m.sum()
        assert op.volume_ml == pytest.approx(m.sum() * 1e-3)
        expected_dice = 2 * (m & truth).sum() / (m.sum() + truth.sum())
        assert op.dice == pytest.approx(expected_dice)
    assert curve.at(0.0).recall == 1.0
    assert curve.at(0.123456).threshold == pytest.approx(0.12)


def test_pr_curve_float64_input_matches_float32_rule():
    pred = np.array([0.7, 0.69999999, 0.3, 0.30000001, 1.0, 0.0])
    curve = PRCurve(pred, np.ones(6, bool), n_bins=10)
    assert curve.at(0.7).n_positive == int((pred >= np.float32(0.7)).sum())
    assert curve.at(0.3).n_positive == int((pred >= np.float32(0.3)).sum())


def test_soft_reference_and_expected_pr():
    pred = RNG.random(10_000).astype(np.float32)
    soft = RNG.random(10_000).astype(np.float32)
    curve = PRCurve(pred, soft, n_bins=50)
    m = pred >= np.float32(0.4)
    assert curve.at(0.4).tp == pytest.approx(soft[m].sum(dtype=np.float64), rel=1e-9)
    assert curve.at(0.4).fp == pytest.approx((1 - soft[m].astype(np.float64)).sum(), rel=1e-9)
    expected = PRCurve(pred, None, n_bins=50)
    op = expected.at(0.4)
    assert op.precision == pytest.approx(pred[m].mean(dtype=np.float64), rel=1e-9)
    assert op.recall == pytest.approx(pred[m].sum(dtype=np.float64) / pred.sum(dtype=np.float64), rel=1e-9)
    assert expected.is_expected


def test_presets():
    pred = np.linspace(0, 1, 1001).astype(np.float32)
    truth = pred > 0.3
    curve = PRCurve(pred, truth, n_bins=1000)
    t = curve.threshold_for_recall(0.95)
    assert curve.at(t).recall >= 0.95 and curve.at(t + 0.001).recall < 0.95
    t = curve.threshold_for_precision(0.9)
    assert curve.at(t).precision >= 0.9 and curve.at(t - 0.001).precision < 0.9
    assert curve.threshold_for_precision(1.1) is None


def test_reliability_and_ece_against_monai():
    import torch
    from monai.metrics.calibration import calibration_binning

    pred = RNG.random((30, 30, 5)).astype(np.float32)
    target = (RNG.random(pred.shape) < pred ** 2).astype(np.float32)
    rel = reliability(pred, target, 10)
    mp, mg, cnt = calibration_binning(torch.from_numpy(pred)[None, None], torch.from_numpy(target)[None, None], 10)
    np.testing.assert_allclose(rel["count"], cnt[0, 0].numpy())
    np.testing.assert_allclose(rel["mean_pred"], mp[0, 0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(rel["mean_target"], mg[0, 0].numpy(), rtol=1e-5)
    c = cnt[0, 0].numpy()
    monai_ece = float(np.nansum(c * np.abs(mp[0, 0].numpy() - mg[0, 0].numpy())) / c.sum())
    assert expected_calibration_error(pred, target) == pytest.approx(monai_ece, rel=1e-5)
    # a perfectly calibrated soft reference: prediction == target -> ECE 0
    assert expected_calibration_error(pred, pred) == pytest.approx(0.0, abs=1e-7)


def test_leave_one_rater_out_and_pairwise():
    m = np.zeros((3, 10, 1, 1), np.uint8)
    m[0, :4] = 1
    m[1, :5] = 1
    m[2, :8] = 1
    rows = leave_one_rater_out(m, prediction=np.where(np.arange(10) < 5, 0.9, 0.1).reshape(10, 1, 1))
    # others of rater 1: raters 2+3 -> at least 1 of 2 -> voxels 0-7
    assert rows[0].dice_vs_others == pytest.approx(2 * 4 / (4 + 8))
    assert rows[0].model_dice_vs_same == pytest.approx(2 * 5 / (5 + 8))
    # others of rater 3: raters 1+2 -> voxels 0-4
    assert rows[2].dice_vs_others == pytest.approx(2 * 5 / (8 + 5))
    assert rows[2].model_dice_vs_same == 1.0
    assert leave_one_rater_out(m[:1]) == []
    pw = pairwise_dice(m)
    assert pw.shape == (3, 3) and pw[0, 1] == pytest.approx(8 / 9) and pw[1, 0] == pw[0, 1]


def test_volume_ml():
    assert volume_ml(np.ones((10, 10, 10)), (1.0, 1.0, 2.0)) == pytest.approx(2.0)


def test_evaluate_case_keys():
    masks = (RNG.random((3, 12, 12, 2)) < 0.5).astype(np.uint8)
    pred = masks.mean(0).astype(np.float32)
    res = evaluate_case(pred, masks, spacing=(1, 1, 1))
    assert res["qubiq_score"] == 1.0
    assert set(res["dice_per_threshold"]) == {f"{k / 10:.1f}" for k in range(1, 10)}
    assert res["ece"] == pytest.approx(0.0, abs=1e-7)
    assert [r["rater"] for r in res["raters"]] == ["rater 1", "rater 2", "rater 3"]
    assert res["volume_ml"]["raters"]["rater 1"] == pytest.approx(masks[0].sum() / 1000)
    with pytest.raises(SoftsegError, match="does not match"):
        evaluate_case(pred[:5], masks)


def test_precision_preset_never_returns_an_empty_mask():
    curve = PRCurve(np.array([0.2, 0.4, 0.6, 0.8], np.float32), np.array([1, 0, 0, 0]), n_bins=100)
    assert curve.threshold_for_precision(0.9) is None  # only the empty mask has precision >= 0.9
    expected = PRCurve(np.array([0.1, 0.85], np.float32), None, n_bins=100)
    t = expected.threshold_for_precision(0.8)
    assert t == pytest.approx(0.01 * round(0.85 * 100) - 0.84, abs=0.85) and expected.at(t).n_positive > 0


def test_api_accepts_0_255_masks_like_0_1():
    masks = (RNG.random((4, 10, 10, 1)) < 0.5).astype(np.uint8)
    soft = masks.mean(0).astype(np.float32)
    assert qubiq_score(soft, masks * 255) == qubiq_score(soft, masks)
    a, b = evaluate_case(soft, masks * 255), evaluate_case(soft, masks)
    assert a["ece"] == b["ece"] == pytest.approx(0, abs=1e-7)
    from napari_softseg.analysis.softlabels import make_soft_label

    np.testing.assert_array_equal(make_soft_label(masks * 255).data, soft)


def test_evaluate_case_uses_one_snapped_threshold():
    masks = np.zeros((2, 4, 1, 1), np.uint8)
    masks[:, :2] = 1
    pred = np.array([0.9, 0.5003, 0.2, 0.1]).reshape(4, 1, 1)  # float64 through the API
    res = evaluate_case(pred, masks, spacing=(10, 10, 10), threshold=0.5005)
    assert res["threshold"] == 0.5 or res["threshold"] == pytest.approx(0.501)
    n = res["operating_point_vs_consensus"]["n_positive"]
    assert res["volume_ml"]["prediction"] == pytest.approx(n * 1.0)


def test_pr_curve_of_a_memmap_needs_no_whole_volume_temporary(tmp_path):
    """A volume on disk (as a large uncompressed NIfTI would be) is read chunk by chunk: the heap peak
    stays a few chunk-sized temporaries, far below the volume (no float64 copy, no mask of it)."""
    import tracemalloc

    shape = (256, 256, 256)  # 64 MiB of float32
    soft = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=shape)
    rng = np.random.default_rng(1)
    for z in range(shape[2]):
        soft[..., z] = rng.random(shape[:2], dtype=np.float32)
    ref = np.lib.format.open_memmap(tmp_path / "r.npy", mode="w+", dtype=np.uint8, shape=shape)
    ref[:] = soft[:] >= 0.7
    soft.flush(), ref.flush()
    soft = np.load(tmp_path / "p.npy", mmap_mode="r")
    ref = np.load(tmp_path / "r.npy", mmap_mode="r")
    tracemalloc.start()
    curve = PRCurve(soft, ref, n_bins=1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 12 * 2**20, f"heap peak {peak} bytes for a {soft.nbytes}-byte volume"  # ~6 MiB of chunk temporaries
    op = curve.at(0.7)
    assert op.recall == 1.0 and op.precision == 1.0
    assert curve.n_positive[0] == soft.size
