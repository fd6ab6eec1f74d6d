"""Cohort operating points (analysis/cohort.py): pooling, choosing, bootstrap intervals, per-case spread."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg.analysis.cohort import (
    Cohort,
    PooledCurve,
    Requirement,
    case_histogram,
    choose_index,
    choose_point,
    evaluate_point,
    parse_requirement,
)
from napari_softseg.analysis.consensus import consensus_mask
from napari_softseg.analysis.metrics import PRCurve
from napari_softseg.errors import SoftsegError


def _cases(n=12, seed=0, shape=(24, 24, 6), noise=0.15):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        masks = (rng.random((3, *shape)) > 0.6).astype(np.uint8)
        p = np.clip(masks.mean(0) + rng.normal(0, noise, shape), 0, 1).astype(np.float32)
        out.append((p, masks))
    return out


def _cohort(cases, spacing=(1.0, 1.0, 2.0)):
    return Cohort([case_histogram(p, m, name=f"case{i:02d}", spacing=spacing) for i, (p, m) in enumerate(cases)])


def test_pooled_curve_equals_the_curve_of_all_voxels_together():
    cases = _cases(5)
    cohort = _cohort(cases)
    together = PRCurve(np.concatenate([p.ravel() for p, _ in cases]),
                       np.concatenate([consensus_mask(m).ravel() for _, m in cases]), spacing=(1.0, 1.0, 2.0))
    pooled = cohort.pooled()
    assert isinstance(pooled, PooledCurve)
    for name in ("precision", "recall", "dice", "specificity", "n_positive", "tp"):
        np.testing.assert_allclose(getattr(pooled, name), getattr(together, name), rtol=0, atol=1e-9)
    assert pooled.at(0.5).volume_ml == pytest.approx(together.at(0.5).volume_ml)
    np.testing.assert_allclose(cohort.curves("sensitivity")[0], together.recall, atol=1e-12)
    np.testing.assert_allclose(cohort.curves("dice")[0], together.dice, atol=1e-12)


def test_voxels_count_by_their_volume_when_spacings_differ():
    p = np.array([0.9, 0.9, 0.1, 0.1], np.float32).reshape(4, 1, 1)
    ref = np.array([1, 1, 1, 1], np.uint8).reshape(4, 1, 1)
    small = case_histogram(p, ref, name="fine", spacing=(1, 1, 1))  # one binary mask is taken as the reference
    big = case_histogram(np.full((4, 1, 1), 0.1, np.float32), ref, name="coarse", spacing=(2, 2, 2))
    cohort = Cohort([small, big])
    # at t = 0.5: 2 of 4 fine voxels found (2 x 1 mm3), none of the 4 coarse ones (4 x 8 mm3)
    assert cohort.curves("sensitivity")[0, 500] == pytest.approx(2 / (4 + 32))
    assert cohort.pooled().at(0.5).volume_ml == pytest.approx(0.002)
    unknown = Cohort([case_histogram(p, ref, name="a"), case_histogram(p, ref, name="b")])
    assert unknown.voxel_ml is None and unknown.curves("sensitivity")[0, 500] == pytest.approx(0.5)


@pytest.mark.parametrize("text, expected", [
    ("sensitivity>=0.90", Requirement("sensitivity", ">=", 0.9)),
    ("recall ≥ 0.8", Requirement("sensitivity", ">=", 0.8)),
    ("PPV>=0.75", Requirement("ppv", ">=", 0.75)),
    ("precision>=1", Requirement("ppv", ">=", 1.0)),
    ("dice=max", Requirement("dice", "max")),
    ("dice>=0.8", Requirement("dice", ">=", 0.8)),
    ("volume-error<=10%", Requirement("volume-error", "<=", 0.1)),
    ("volume_error<=0.05", Requirement("volume-error", "<=", 0.05)),
    ("volume-error=min", Requirement("volume-error", "min")),
])
def test_requirements_are_read(text, expected):
    assert parse_requirement(text) == expected


@pytest.mark.parametrize("text", ["sensitivity<=0.9", "sensitivity>=1.5", "ppv=min", "dice=0.8", "accuracy>=0.9",
                                  "volume-error>=0.1", "sensitivity", "volume-error=max", ""])
def test_bad_requirements_are_one_clear_error(text):
    with pytest.raises(SoftsegError, match="requirement|metric|asked for as|bound"):
        parse_requirement(text)


def test_each_requirement_picks_the_documented_end_of_its_range():
    cohort = _cohort(_cases())
    sens = cohort.curves("sensitivity")[0]
    ppv = cohort.curves("ppv")[0]
    k = int(choose_index(sens[None], parse_requirement("sensitivity>=0.9"))[0])
    assert sens[k] >= 0.9 and (k == cohort.n_bins or sens[k + 1] < 0.9)  # the highest t still reaching 0.9
    k = int(choose_index(ppv[None], parse_requirement("ppv>=0.9"))[0])
    assert ppv[k] >= 0.9 and np.all(np.nan_to_num(ppv[:k]) < 0.9)  # the lowest t reaching 0.9
    dice = cohort.curves("dice")[0]
    assert choose_point(cohort, parse_requirement("dice=max"), n_boot=50).achieved == pytest.approx(dice.max())
    verr = cohort.curves("volume-error")[0]
    point = choose_point(cohort, parse_requirement("volume-error<=0.2"), n_boot=50)
    assert point.achieved == pytest.approx(np.nanmin(verr)) and point.achieved <= 0.2


def test_volume_error_is_the_mean_of_per_case_relative_errors():
    # case a: the mask at 0.5 is 2 voxels vs a consensus of 4 (error 0.5); case b: 6 vs 4 (0.5); pooled volume
    # would be exact (8 vs 8), which is why the volume error is per case
    ref = np.zeros((8, 1, 1), np.uint8)
    ref[:4] = 1
    pa = np.zeros((8, 1, 1), np.float32)
    pa[:2] = 0.9
    pb = np.zeros((8, 1, 1), np.float32)
    pb[:6] = 0.9
    cohort = Cohort([case_histogram(pa, ref, name="a"), case_histogram(pb, ref, name="b")])
    assert cohort.curves("volume-error")[0, 500] == pytest.approx(0.5)
    np.testing.assert_allclose(cohort.per_case("volume-error")[:, 500], [0.5, 0.5])


def test_an_unreachable_requirement_says_what_is_reachable():
    rng = np.random.default_rng(3)
    masks = (rng.random((3, 10, 10, 2)) > 0.5).astype(np.uint8)
    wrong = np.where(consensus_mask(masks), 0.2, 0.8).astype(np.float32)  # confident where the raters are not
    cohort = Cohort([case_histogram(wrong, masks, name="x")])
    with pytest.raises(SoftsegError, match=r"no threshold meets ppv>=0.99 .* best reachable ppv is 0\.\d+"):
        choose_point(cohort, parse_requirement("ppv>=0.99"), n_boot=10)


def test_bootstrap_is_seeded_and_brackets_the_point():
    cohort = _cohort(_cases(15))
    req = parse_requirement("sensitivity>=0.9")
    a = choose_point(cohort, req, n_boot=300, seed=7)
    b = choose_point(cohort, req, n_boot=300, seed=7)
    c = choose_point(cohort, req, n_boot=300, seed=8)
    assert a.as_dict() == b.as_dict() and a.ci != c.ci
    assert a.ci[0] <= a.achieved <= a.ci[1] and a.threshold_ci[0] <= a.threshold <= a.threshold_ci[1]
    assert 0.0 < a.p_meets < 1.0 and a.n_bootstrap == 300 and a.n_cases == 15
    assert not a.warnings  # 15 cases, a sensible point


def test_per_case_spread_names_the_cases_that_fall_short():
    cases = _cases(10, noise=0.05)
    p_bad, masks_bad = cases[3]
    cases[3] = (np.clip(p_bad - 0.3, 0, 1), masks_bad)  # a case the model under-segments
    cohort = _cohort(cases)
    point = choose_point(cohort, parse_requirement("sensitivity>=0.9"), n_boot=100)
    per_case = cohort.per_case("sensitivity")[:, round(point.threshold * 1000)]
    assert point.n_failing == int(np.sum(per_case < 0.9)) >= 1
    assert point.failing[0] == "case03"  # the worst first
    assert point.per_case_quantiles["min"] == pytest.approx(per_case.min())
    assert set(point.at_threshold) == {"sensitivity", "ppv", "dice", "volume-error"}


def test_applying_a_point_to_another_cohort_reports_achieved_vs_required():
    cases = _cases(16, seed=5)
    first, second = _cohort(cases[:8]), _cohort(cases[8:])
    req = parse_requirement("ppv>=0.85")
    chosen = choose_point(first, req, n_boot=200)
    check = evaluate_point(second, req, chosen.threshold, n_boot=200)
    assert check.threshold == chosen.threshold and check.n_cases == 8
    assert check.achieved == pytest.approx(second.curves("ppv")[0, round(chosen.threshold * 1000)])
    assert check.ci[0] <= check.achieved <= check.ci[1]
    assert any("only 8 case(s)" in w for w in check.warnings)


def test_degenerate_points_are_flagged():
    rng = np.random.default_rng(1)
    masks = (rng.random((2, 12, 12, 3)) > 0.5).astype(np.uint8)
    faint = np.where(consensus_mask(masks), 0.003, 0.0).astype(np.float32)  # found only at the very end of the range
    cohort = Cohort([case_histogram(faint, masks, name=f"c{i}") for i in range(10)])
    point = choose_point(cohort, parse_requirement("sensitivity>=0.9"), n_boot=20)
    assert point.threshold == pytest.approx(0.003) and point.achieved == 1.0
    assert any(w.startswith("degenerate operating point") for w in point.warnings)


def test_grids_must_agree_and_cohorts_are_not_empty():
    p, m = _cases(1)[0]
    with pytest.raises(SoftsegError, match="different threshold grids"):
        Cohort([case_histogram(p, m, n_bins=100), case_histogram(p, m, n_bins=1000)])
    with pytest.raises(SoftsegError, match="at least one case"):
        Cohort([])


def test_a_conservative_point_meets_the_bound_at_the_interval_end():
    cohort = _cohort(_cases(15, seed=2))
    req = parse_requirement("sensitivity>=0.9")
    plain = choose_point(cohort, req, n_boot=400, seed=1)
    safe = choose_point(cohort, req, n_boot=400, seed=1, conservative=True)
    assert safe.conservative and not plain.conservative
    assert safe.threshold < plain.threshold  # a lower t: more sensitive
    assert safe.ci[0] >= 0.9 - 1e-9 and safe.p_meets > 0.97 > plain.p_meets
    verr = choose_point(cohort, parse_requirement("volume-error<=0.2"), n_boot=400, conservative=True)
    assert verr.ci[1] <= 0.2 + 1e-9
    with pytest.raises(SoftsegError, match="conservative point needs a bound"):
        choose_point(cohort, parse_requirement("dice=max"), conservative=True)


@pytest.mark.parametrize("name", ["analysis.cohort", "analysis.review", "pipeline.operating_points", "pipeline.point_store",
                                  "pipeline.dataset_review"])
def test_docstring_examples_stay_true(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"napari_softseg.{name}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
