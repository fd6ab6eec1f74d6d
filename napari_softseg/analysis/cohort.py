"""Cohort operating points: one threshold chosen on many cases, with how much it holds.

A hospital sets an operating point once, on a validation cohort, and applies it to new patients. The
numbers here make that cheap and honest:

* Each case is reduced to a **histogram** of its soft map ``p`` on the threshold grid, split into voxels
  inside and outside the raters' consensus (:func:`case_histogram`; the one pass of
  :class:`~napari_softseg.analysis.metrics.PRCurve`). A cohort is the stack of these histograms
  (:class:`Cohort`), so every pooled or per-case metric at every threshold is a cumulative sum.
* Pooling sums the cases' counts, each voxel weighted by its volume (so cases of different voxel sizes
  count by anatomy, not by voxel number): pooled sensitivity, PPV and Dice at every threshold.
  The **volume error** is per case, ``|V_mask − V_consensus| / V_consensus``, averaged over the cases
  with a non-empty consensus (a pooled volume would let one case's excess hide another's shortfall).
* :func:`choose_point` picks ``t`` for a :class:`Requirement` (``sensitivity>=0.90``, ``ppv>=0.8``,
  ``dice=max``, ``volume-error<=0.1``), and a seeded **bootstrap over cases** gives a confidence interval
  of the metric achieved at ``t``, of ``t`` itself (re-chosen in each resample) and the share of
  resamples in which ``t`` still meets the requirement. A point chosen on the pooled value meets a bound
  on only about half of new cohorts; ``conservative=True`` chooses ``t`` so that the interval's far end
  meets it instead. The **per-case spread** says how many cases fall
  short of the requirement at ``t``. :func:`evaluate_point` does the same for a threshold chosen
  elsewhere (apply to a held-out half).

Thresholds follow the package's convention: the mask at ``t`` is ``p >= t`` on the 0.001 grid.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cases = []
    >>> for i in range(6):
    ...     masks = (rng.random((3, 16, 16, 4)) > 0.6).astype(np.uint8)
    ...     cases.append(case_histogram(masks.mean(0), masks, name=f"case{i}", spacing=(1, 1, 2)))
    >>> point = choose_point(Cohort(cases), parse_requirement("sensitivity>=0.9"), n_boot=200)
    >>> point.threshold <= 0.67 and point.achieved >= 0.9
    True
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from napari_softseg.analysis.consensus import consensus_mask
from napari_softseg.analysis.metrics import PRCurve
from napari_softseg.analysis.operating_point import GRID
from napari_softseg.analysis.presets import is_degenerate
from napari_softseg.errors import SoftsegError

#: The metrics a requirement can name, with the comparisons each accepts.
METRICS = {"sensitivity": (">=", "max"), "ppv": (">=", "max"), "dice": (">=", "max"), "volume-error": ("<=", "min")}
_ALIASES = {"recall": "sensitivity", "tpr": "sensitivity", "precision": "ppv", "volume_error": "volume-error",
            "volerr": "volume-error"}
_TOL = 1e-12
#: Below this many cases a bootstrap interval says little; the point carries a warning.
FEW_CASES = 10


@dataclass(frozen=True)
class Requirement:
    """What the operating point must achieve on the cohort.

    Attributes:
        metric: ``"sensitivity"``, ``"ppv"``, ``"dice"`` or ``"volume-error"`` (relative, 0.1 = 10 %).
        goal: ``">="`` / ``"<="`` (a bound) or ``"max"`` / ``"min"`` (the best threshold).
        value: The bound (``None`` for max/min).
    """

    metric: str
    goal: str
    value: float | None = None

    @property
    def text(self) -> str:
        """The requirement as typed: ``"sensitivity>=0.9"``, ``"dice=max"``."""
        return f"{self.metric}={self.goal}" if self.value is None else f"{self.metric}{self.goal}{self.value:g}"

    def meets(self, values):
        """Whether ``values`` satisfy the bound (always true for max/min)."""
        values = np.asarray(values, dtype=np.float64)
        if self.goal == ">=":
            return values >= self.value - _TOL
        if self.goal == "<=":
            return values <= self.value + _TOL
        return np.ones(values.shape, dtype=bool)


def parse_requirement(text: str) -> Requirement:
    """Read ``"sensitivity>=0.90"``, ``"ppv>=0.8"``, ``"dice=max"``, ``"volume-error<=10%"``, ...

    Also accepted: ``recall``/``precision`` for sensitivity/PPV, ``≥``/``≤``, a percentage, and a bound
    on Dice (``dice>=0.8``: the best-Dice threshold, which must reach 0.8).

    Raises:
        SoftsegError: The text is not a requirement this module can choose a threshold for.
    """
    raw = str(text)
    m = re.fullmatch(r"\s*([A-Za-z_-]+)\s*(>=|<=|=|≥|≤)\s*([A-Za-z]+|[0-9]*\.?[0-9]+(?:e-?[0-9]+)?\s*%?)\s*", raw)
    examples = "e.g. sensitivity>=0.90, ppv>=0.8, dice=max, volume-error<=0.1"
    if not m:
        raise SoftsegError(f"cannot read the requirement {raw!r} ({examples})")
    name, op, rhs = m.group(1).lower(), m.group(2).replace("≥", ">=").replace("≤", "<="), m.group(3).strip().lower()
    metric = _ALIASES.get(name, name)
    if metric not in METRICS:
        raise SoftsegError(f"unknown metric {name!r} in {raw!r}; choose from {', '.join(METRICS)} ({examples})")
    bound, best = METRICS[metric]
    if op == "=":
        if rhs != best:
            raise SoftsegError(f"{metric} can be asked for as {metric}={best} or {metric}{bound}VALUE, not {raw!r}")
        return Requirement(metric, best)
    if op != bound or rhs.isalpha():
        raise SoftsegError(f"{metric} can be asked for as {metric}{bound}VALUE or {metric}={best}, not {raw!r}")
    value = float(rhs.rstrip("%").strip()) / (100.0 if rhs.endswith("%") else 1.0)
    if metric == "volume-error" and not value >= 0:
        raise SoftsegError(f"a volume error bound must be >= 0, got {raw!r}")
    if metric != "volume-error" and not 0 < value <= 1:
        raise SoftsegError(f"a {metric} bound must be in (0, 1], got {raw!r}")
    return Requirement(metric, op, value)


@dataclass
class CaseHistogram:
    """One case reduced to what a cohort needs: its soft map's histogram on the threshold grid.

    Attributes:
        name: Case name.
        count: ``(n_bins + 1,)`` voxels whose ``p`` falls in each grid bin (``p >= k / n`` and below the next).
        positive: Of those, voxels inside the consensus.
        voxel_ml: Volume of one voxel in mL (``None``: unknown; the cohort then counts voxels).
    """

    name: str
    count: np.ndarray
    positive: np.ndarray
    voxel_ml: float | None = None


def case_histogram(prediction: np.ndarray, masks: np.ndarray, *, name: str = "", spacing: Sequence[float] | None = None,
                   n_bins: int = GRID) -> CaseHistogram:
    """The histogram of one case's soft map against the raters' consensus (at least half of them).

    Args:
        prediction: Soft map in [0, 1].
        masks: Rater masks ``(R, *prediction.shape)``, or one binary reference mask of the map's shape.
        name: Case name.
        spacing: Voxel size in mm.
        n_bins: Grid resolution.
    """
    masks = np.asarray(masks)
    reference = masks != 0 if masks.shape == np.shape(prediction) else consensus_mask(masks)
    curve = PRCurve(prediction, reference, n_bins=n_bins, spacing=spacing)
    return histogram_from_curve(curve, name)


def histogram_from_curve(curve: PRCurve, name: str = "") -> CaseHistogram:
    """Recover the per-bin counts from a binary-reference PR curve (its cumulative sums, undone)."""
    npos = curve.n_positive.astype(np.int64)
    tp = np.rint(curve.tp).astype(np.int64)
    count = npos - np.append(npos[1:], 0)
    positive = tp - np.append(tp[1:], 0)
    return CaseHistogram(name, count, positive, curve.voxel_ml)


def _rev_cumsum(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a[..., ::-1], axis=-1)[..., ::-1]


def _ratio(num, den, empty: float = 1.0):
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.full(num.shape, empty)
    np.divide(num, den, out=out, where=den > 0)
    return out


class PooledCurve(PRCurve):
    """A :class:`~napari_softseg.analysis.metrics.PRCurve` made from summed histograms.

    Counts are in units of ``voxel_ml`` (the cohort's smallest voxel; plain voxels when ``None``).

    Every look-up of a PR curve works (``at``, ``threshold_for_recall``, ...), so the viewer can draw a
    cohort curve like a case's.
    """

    def __init__(self, count: np.ndarray, positive: np.ndarray, *, voxel_ml: float | None):  # noqa: D107
        count = np.asarray(count, np.float64)
        positive = np.asarray(positive, np.float64)
        self.n_bins = count.size - 1
        self.thresholds = (np.arange(self.n_bins + 1) / self.n_bins).astype(np.float32)
        self.voxel_ml = voxel_ml
        self.is_expected = False
        self.n_positive = _rev_cumsum(count)
        self.tp = _rev_cumsum(positive)
        total_pos, total = float(positive.sum()), float(count.sum())
        self.fp = self.n_positive - self.tp
        self.fn = total_pos - self.tp
        self.tn = total - self.n_positive - self.fn
        self.total_reference = total_pos
        self.precision = _ratio(self.tp, self.n_positive)
        self.recall = _ratio(self.tp, np.full_like(self.tp, total_pos))
        self.dice = _ratio(2 * self.tp, self.n_positive + total_pos)
        self.specificity = _ratio(self.tn, self.tn + self.fp)


class Cohort:
    """Stacked case histograms: pooled and per-case metrics at every grid threshold.

    Args:
        cases: One :class:`CaseHistogram` per case, all on the same grid.

    Raises:
        SoftsegError: No cases, or histograms on different grids.
    """

    def __init__(self, cases: Sequence[CaseHistogram]):
        self.cases = list(cases)
        if not self.cases:
            raise SoftsegError("a cohort needs at least one case with rater masks")
        sizes = {c.count.size for c in self.cases}
        if len(sizes) != 1:
            raise SoftsegError(f"the cases' histograms use different threshold grids ({sorted(sizes)} bins)")
        self.n_bins = sizes.pop() - 1
        known = all(c.voxel_ml is not None for c in self.cases)
        #: The counting unit in mL: the smallest voxel of the cohort (``None``: spacing unknown, plain voxels).
        self.voxel_ml = min(c.voxel_ml for c in self.cases) if known else None
        #: Each case's voxel in counting units (a voxel counts by its volume when every spacing is known).
        self.weights = np.array([c.voxel_ml / self.voxel_ml if known else 1.0 for c in self.cases], np.float64)
        weight = self.weights[:, None]
        self.npos = _rev_cumsum(np.stack([c.count for c in self.cases]).astype(np.float64)) * weight
        self.tp = _rev_cumsum(np.stack([c.positive for c in self.cases]).astype(np.float64)) * weight
        self.reference = self.tp[:, 0].copy()  # consensus volume of each case

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def names(self) -> list[str]:
        """Case names, in order."""
        return [c.name for c in self.cases]

    def subset(self, indices: Sequence[int]) -> Cohort:
        """The cohort of the given cases."""
        return Cohort([self.cases[i] for i in indices])

    def pooled(self) -> PooledCurve:
        """The pooled PR curve (sum of the cases' counts)."""
        count = np.sum([c.count * w for c, w in zip(self.cases, self.weights)], axis=0)
        positive = np.sum([c.positive * w for c, w in zip(self.cases, self.weights)], axis=0)
        return PooledCurve(count, positive, voxel_ml=self.voxel_ml)

    def per_case(self, metric: str) -> np.ndarray:
        """``(n_cases, n_bins + 1)`` values of ``metric`` for each case at each threshold (e.g. a band).

        Volume error is NaN for a case whose consensus is empty.
        """
        ref = self.reference[:, None]
        if metric == "sensitivity":
            return _ratio(self.tp, np.broadcast_to(ref, self.tp.shape))
        if metric == "ppv":
            return _ratio(self.tp, self.npos)
        if metric == "dice":
            return _ratio(2 * self.tp, self.npos + ref)
        if metric == "volume-error":
            return _ratio(np.abs(self.npos - ref), np.broadcast_to(ref, self.npos.shape), np.nan)
        raise SoftsegError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")

    def curves(self, metric: str, weights: np.ndarray | None = None) -> np.ndarray:
        """Cohort value of ``metric`` at every threshold, for each row of case ``weights`` ``(B, n_cases)``.

        Sensitivity, PPV and Dice pool the weighted counts; volume error is the weighted mean over cases
        with a non-empty consensus (NaN when there is none). Without weights: one row, every case once.
        """
        w = np.ones((1, len(self)), np.float64) if weights is None else np.asarray(weights, np.float64)
        if metric == "volume-error":
            valid = self.reference > 0
            errors = np.nan_to_num(self.per_case("volume-error"))
            wv = w * valid
            return _ratio(wv @ errors, np.broadcast_to((wv.sum(axis=1))[:, None], (w.shape[0], self.n_bins + 1)),
                          np.nan)
        tp, npos, ref = w @ self.tp, w @ self.npos, (w @ self.reference)[:, None]
        if metric == "sensitivity":
            return _ratio(tp, np.broadcast_to(ref, tp.shape))
        if metric == "ppv":
            out = _ratio(tp, npos)
            out[npos <= 0] = np.nan  # an empty mask is no operating point for a PPV target
            return out
        if metric == "dice":
            return _ratio(2 * tp, npos + ref)
        raise SoftsegError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


def choose_index(values: np.ndarray, requirement: Requirement) -> np.ndarray:
    """Grid index chosen in each row of ``values`` ``(B, n_bins + 1)``; -1 where the requirement cannot be met.

    ``sensitivity>=x``: the highest threshold still reaching ``x`` (the smallest mask that does);
    ``ppv>=x``: the lowest threshold reaching ``x`` with a non-empty mask (the most sensitive one);
    ``dice=max`` / ``dice>=x``: the best Dice; ``volume-error=min`` / ``<=x``: the smallest volume error.
    """
    values = np.atleast_2d(values)
    finite = np.isfinite(values)
    nb = values.shape[1]
    if requirement.metric in ("dice", "volume-error"):
        sign = 1.0 if requirement.metric == "dice" else -1.0
        best = np.argmax(np.where(finite, sign * values, -np.inf), axis=1)
        at = values[np.arange(len(values)), best]
        ok = finite.any(axis=1) & requirement.meets(np.nan_to_num(at, nan=np.inf * -sign))
        return np.where(ok, best, -1)
    ok = finite & requirement.meets(np.nan_to_num(values, nan=-np.inf))
    if requirement.metric == "sensitivity":
        idx = nb - 1 - np.argmax(ok[:, ::-1], axis=1)
    else:
        idx = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), idx, -1)


@dataclass
class PointCheck:
    """A threshold's standing on a cohort.

    Attributes:
        requirement: The requirement as text.
        threshold: The threshold (``p >= t``).
        achieved: Cohort value of the requirement's metric at ``t``.
        ci: Bootstrap interval of ``achieved`` (over cases).
        confidence: Level of the intervals.
        p_meets: Share of bootstrap resamples in which ``t`` meets the requirement (None for max/min).
        n_cases: Cases in the cohort.
        n_failing: Cases whose own value falls short of the requirement at ``t`` (None for max/min).
        failing: Their names, worst first (at most 10).
        per_case_quantiles: Min, 10 %, median, 90 %, max of the per-case values.
        at_threshold: Every cohort metric at ``t`` (sensitivity, ppv, dice, volume-error).
        warnings: Things a clinician must read (degenerate point, few cases, ...).
    """

    requirement: str
    threshold: float
    achieved: float
    ci: tuple[float, float]
    confidence: float
    p_meets: float | None
    n_cases: int
    n_failing: int | None
    failing: list[str]
    per_case_quantiles: dict
    at_threshold: dict
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


@dataclass
class CohortPoint(PointCheck):
    """A threshold chosen on a cohort: :class:`PointCheck` plus how stable the choice itself is.

    Attributes:
        threshold_ci: Bootstrap interval of the threshold re-chosen in each resample.
        n_bootstrap: Resamples drawn.
        seed: Their seed.
        conservative: ``t`` was chosen so that the interval's far end meets the bound (see :func:`choose_point`).
    """

    threshold_ci: tuple[float, float] = (float("nan"), float("nan"))
    n_bootstrap: int = 0
    seed: int = 0
    conservative: bool = False


def _resamples(n_cases: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n_cases)`` case multiplicities of a seeded bootstrap (cases drawn with replacement)."""
    if n_boot < 1:
        raise SoftsegError(f"the bootstrap needs at least one resample, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_cases, np.full(n_cases, 1.0 / n_cases), size=n_boot).astype(np.float64)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def evaluate_point(cohort: Cohort, requirement: Requirement, threshold: float, *, n_boot: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> PointCheck:
    """How a threshold (chosen here or on another cohort) does on ``cohort``: value, CI, per-case spread.

    Args:
        cohort: The cases.
        requirement: What the threshold was meant to achieve.
        threshold: The threshold (snapped to the cohort's grid).
        n_boot: Bootstrap resamples over cases.
        seed: Their seed (same seed, same interval).
        confidence: Interval level.
    """
    if not 0 < confidence < 1:
        raise SoftsegError(f"confidence must be between 0 and 1, got {confidence}")
    k = int(min(max(round(float(threshold) * cohort.n_bins), 0), cohort.n_bins))
    t = k / cohort.n_bins
    weights = _resamples(len(cohort), n_boot, seed)
    boot = cohort.curves(requirement.metric, weights)[:, k]
    achieved = float(cohort.curves(requirement.metric)[0, k])
    per_case = cohort.per_case(requirement.metric)[:, k]
    failing: list[str] = []
    n_failing = p_meets = None
    if requirement.value is not None:
        p_meets = float(np.mean(requirement.meets(np.nan_to_num(boot, nan=-np.inf if requirement.goal == ">=" else np.inf))))
        short = ~requirement.meets(np.nan_to_num(per_case, nan=0.0))  # NaN only for volume error: empty consensus
        short &= np.isfinite(per_case)
        n_failing = int(short.sum())
        order = np.argsort(per_case if requirement.goal == ">=" else -per_case)
        failing = [cohort.names[i] for i in order if short[i]][:10]
    finite = per_case[np.isfinite(per_case)]
    quantiles = ({} if not finite.size else
                 dict(zip(("min", "p10", "median", "p90", "max"),
                          (float(v) for v in np.percentile(finite, [0, 10, 50, 90, 100])))))
    metrics_at = {m: float(cohort.curves(m)[0, k]) for m in METRICS}
    op = cohort.pooled().at(t)
    warnings = []
    if is_degenerate(op):
        warnings.append(f"degenerate operating point at t = {t:g}: at the end of the threshold range, or the mask "
                        "keeps almost none of the consensus; check the outlines before using it")
    if len(cohort) < FEW_CASES:
        warnings.append(f"only {len(cohort)} case(s): the bootstrap interval over cases says little below "
                        f"{FEW_CASES}")
    return PointCheck(requirement=requirement.text, threshold=t, achieved=achieved, ci=_interval(boot, confidence),
                      confidence=confidence, p_meets=p_meets, n_cases=len(cohort), n_failing=n_failing,
                      failing=failing, per_case_quantiles=quantiles, at_threshold=metrics_at, warnings=warnings)


def choose_point(cohort: Cohort, requirement: Requirement, *, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95, conservative: bool = False) -> CohortPoint:
    """Choose the threshold meeting ``requirement`` on the pooled cohort, with bootstrap intervals.

    Args:
        cohort: The cases.
        requirement: What ``t`` must achieve.
        n_boot: Bootstrap resamples over cases.
        seed: Their seed.
        confidence: Interval level.
        conservative: Choose ``t`` so that the *lower end* of the interval meets the bound (the upper end
            for volume error), not the pooled value: a point that still holds on most new cohorts of this
            size, at the cost of some of the other metric. Needs a bound (not ``=max`` / ``=min``).

    Raises:
        SoftsegError: The requirement cannot be met on this cohort (the message gives the best reachable).
    """
    weights = _resamples(len(cohort), n_boot, seed)
    boot = cohort.curves(requirement.metric, weights)
    values = cohort.curves(requirement.metric)
    if conservative:
        if requirement.value is None:
            raise SoftsegError(f"a conservative point needs a bound such as sensitivity>=0.9, not {requirement.text}")
        tail = (1.0 - confidence) / 2 * 100
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # thresholds with no mask in any resample: NaN
            values = np.nanpercentile(boot, tail if requirement.goal == ">=" else 100 - tail, axis=0)[None]
    k = int(choose_index(values, requirement)[0])
    if k < 0:
        finite = values[np.isfinite(values)]
        best = (finite.max() if requirement.metric != "volume-error" else finite.min()) if finite.size else float("nan")
        what = "the conservative bound of " if conservative else ""
        raise SoftsegError(f"no threshold meets {requirement.text} on these {len(cohort)} case(s): the best reachable "
                           f"{what}{requirement.metric} is {best:.3f}")
    check = evaluate_point(cohort, requirement, k / cohort.n_bins, n_boot=n_boot, seed=seed, confidence=confidence)
    rechosen = choose_index(boot, requirement)
    t_boot = np.where(rechosen >= 0, rechosen / cohort.n_bins, np.nan)
    return CohortPoint(**asdict(check), threshold_ci=_interval(t_boot, confidence), n_bootstrap=int(n_boot),
                       seed=int(seed), conservative=bool(conservative))
