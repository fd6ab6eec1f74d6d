"""The one consensus rule: at least half of the raters, used by metrics, operating points, soft labels and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg.analysis import consensus as C
from napari_softseg.errors import SoftsegError


@pytest.mark.parametrize("n, k", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4)])
def test_k_is_at_least_half(n, k):
    assert C.consensus_k(n) == k
    rng = np.random.default_rng(n)
    masks = (rng.random((n, 50)) > 0.5).astype(np.uint8)
    # the rule equals "mean of raters >= 0.5" for every rater count
    np.testing.assert_array_equal(C.consensus_mask(masks), masks.mean(0) >= 0.5)


def test_two_raters_is_union_and_explicit_k():
    masks = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.uint8)
    np.testing.assert_array_equal(C.consensus_mask(masks), [True, True, True, False])
    np.testing.assert_array_equal(C.consensus_mask(masks, 2), [True, False, False, False])
    with pytest.raises(SoftsegError, match="1 <= k <= 2"):
        C.consensus_mask(masks, 3)
    with pytest.raises(SoftsegError):
        C.consensus_k(0)


def test_describe_names_rule_and_other_k():
    assert C.describe(4) == "consensus: ≥ half of raters (2 of 4)"
    assert C.describe(4, 3) == "consensus: at least 3 of 4 raters"


def test_every_caller_uses_the_rule():
    """metrics.evaluate_case, leave-one-out, softlabels.majority and the operating-point default agree."""
    from napari_softseg.analysis.metrics import PRCurve, evaluate_case, leave_one_rater_out
    from napari_softseg.analysis.operating_point import Reference, ThresholdSession, others_consensus
    from napari_softseg.analysis.softlabels import make_soft_label

    rng = np.random.default_rng(0)
    masks = (rng.random((4, 12, 10, 3)) > 0.5).astype(np.uint8)   # an even panel: ties matter
    pred = rng.random((12, 10, 3)).astype(np.float32)
    rule = masks.mean(0) >= 0.5
    np.testing.assert_array_equal(make_soft_label(masks, "majority").data, rule.astype(np.float32))
    res = evaluate_case(pred, masks, threshold=0.5)
    assert res["consensus_rule"] == C.describe(4)
    op = PRCurve(pred, rule).at(0.5)
    assert res["operating_point_vs_consensus"]["n_positive"] == op.n_positive
    assert res["operating_point_vs_consensus"]["recall"] == pytest.approx(op.recall)
    session = ThresholdSession(pred, masks)
    assert session.reference == Reference("consensus", k=C.consensus_k(4))
    for i in range(4):
        others = np.delete(masks, i, 0).mean(0) >= 0.5
        np.testing.assert_array_equal(others_consensus(masks, i), others)
    rows = leave_one_rater_out(masks, pred, 0.5)
    from napari_softseg.analysis.metrics import dice

    assert rows[0].dice_vs_others == pytest.approx(dice(masks[0] > 0, np.delete(masks, 0, 0).mean(0) >= 0.5))
