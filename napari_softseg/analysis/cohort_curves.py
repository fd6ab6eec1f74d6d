"""A cohort's PR curve in a few kilobytes: the pooled curve and the per-case band, stored with a named point.

A named operating point (``softseg operating-point``) is chosen on a pooled cohort curve; the viewer shows
that curve next to the open case's own, with the spread of the cases around it. The whole cohort (one
1001-bin histogram per case) is not kept with the model, so :func:`curve_summary` reduces it to
:data:`N_POINTS` thresholds ``0, 0.01, …, 1``: the pooled sensitivity and PPV, and per-case percentiles
(:data:`PERCENTILES`, 10th, median, 90th) of each, at every one of them (~8 kB of JSON).

:class:`CohortCurve` reads the summary back from a stored point (``None`` for a point stored before
summaries existed, or a damaged one: the point itself stays usable). Its :meth:`CohortCurve.band_polygon`
is the band drawn on a PR plot: the region between the cases' low curve (10th percentile of sensitivity
and of PPV at each threshold) and their high curve (90th percentiles).

Example:
    >>> import numpy as np
    >>> from napari_softseg.analysis.cohort import Cohort, case_histogram
    >>> rng = np.random.default_rng(0)
    >>> cases = [case_histogram(rng.random((8, 8, 2)), rng.random((8, 8, 2)) > 0.5, name=f"c{i}") for i in range(5)]
    >>> curve = CohortCurve.from_dict(curve_summary(Cohort(cases)))
    >>> curve.n_cases, len(curve.thresholds), curve.percentiles
    (5, 101, (10.0, 50.0, 90.0))
    >>> bool(np.all(curve.sensitivity_band[0] <= curve.sensitivity_band[-1]))
    True
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from napari_softseg.analysis.cohort import Cohort

#: Thresholds stored: 0, 0.01, …, 1.
N_POINTS = 101
#: Per-case percentiles stored at each threshold (low edge of the band, median, high edge).
PERCENTILES = (10.0, 50.0, 90.0)
#: Decimals kept in the file (a PR plot shows two).
DECIMALS = 4


def _rounded(values) -> list:
    return [None if not math.isfinite(v) else round(float(v), DECIMALS) for v in np.asarray(values, np.float64)]


def curve_summary(cohort: Cohort, n_points: int = N_POINTS, percentiles=PERCENTILES) -> dict:
    """The pooled curve and per-case percentiles of sensitivity and PPV at ``n_points`` thresholds (JSON-ready).

    Per-case PPV at a threshold where a case's mask is empty counts as 1 (as on a case's own curve).
    """
    idx = np.rint(np.linspace(0, cohort.n_bins, n_points)).astype(int)
    pooled = cohort.pooled()
    out = {"thresholds": _rounded(idx / cohort.n_bins), "n_cases": len(cohort),
           "percentiles": [float(p) for p in percentiles],
           "pooled": {"sensitivity": _rounded(pooled.recall[idx]), "ppv": _rounded(pooled.precision[idx])}}
    for metric in ("sensitivity", "ppv"):
        values = cohort.per_case(metric)[:, idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q = np.nanpercentile(values, list(percentiles), axis=0)
        out[f"per_case_{metric}"] = [_rounded(row) for row in q]
    return out


def _floats(values, n: int) -> np.ndarray | None:
    if not isinstance(values, list) or len(values) != n:
        return None
    if not all(v is None or isinstance(v, (int, float)) for v in values):
        return None
    return np.array([np.nan if v is None else float(v) for v in values], np.float64)


@dataclass(frozen=True)
class CohortCurve:
    """A stored cohort curve (see :func:`curve_summary`).

    Attributes:
        thresholds: ``(n,)`` thresholds.
        sensitivity, ppv: ``(n,)`` pooled values.
        sensitivity_band, ppv_band: ``(len(percentiles), n)`` per-case percentiles.
        percentiles: The percentiles of the band's rows.
        n_cases: Cases pooled.
    """

    thresholds: np.ndarray
    sensitivity: np.ndarray
    ppv: np.ndarray
    sensitivity_band: np.ndarray
    ppv_band: np.ndarray
    percentiles: tuple[float, ...]
    n_cases: int

    @classmethod
    def from_dict(cls, data) -> CohortCurve | None:
        """Read a summary; ``None`` when it is absent or malformed (an older point, a hand edit)."""
        if not isinstance(data, dict):
            return None
        n = len(data.get("thresholds") or [])
        pcts = data.get("percentiles")
        pooled = data.get("pooled") if isinstance(data.get("pooled"), dict) else {}
        if n < 2 or not isinstance(pcts, list) or not pcts or not all(isinstance(p, (int, float)) for p in pcts):
            return None
        arrays = [_floats(data["thresholds"], n), _floats(pooled.get("sensitivity"), n), _floats(pooled.get("ppv"), n)]
        bands = []
        for metric in ("sensitivity", "ppv"):
            rows = data.get(f"per_case_{metric}")
            rows = [_floats(r, n) for r in rows] if isinstance(rows, list) and len(rows) == len(pcts) else [None]
            bands.append(None if any(r is None for r in rows) else np.stack(rows))
        if any(a is None for a in arrays + bands):
            return None
        n_cases = data.get("n_cases")
        return cls(*arrays, *bands, percentiles=tuple(float(p) for p in pcts),
                   n_cases=int(n_cases) if isinstance(n_cases, int) else 0)

    def pooled_at(self, threshold: float) -> tuple[float, float]:
        """Pooled (sensitivity, PPV) at ``threshold``, interpolated between the stored thresholds."""
        return (float(np.interp(threshold, self.thresholds, self.sensitivity)),
                float(np.interp(threshold, self.thresholds, self.ppv)))

    def band_polygon(self) -> np.ndarray:
        """``(2n, 2)`` (sensitivity, PPV) vertices of the band: the low curve out, the high curve back."""
        low = np.column_stack([self.sensitivity_band[0], self.ppv_band[0]])
        high = np.column_stack([self.sensitivity_band[-1], self.ppv_band[-1]])
        poly = np.vstack([low, high[::-1]])
        return poly[np.all(np.isfinite(poly), axis=1)]

    @property
    def band_text(self) -> str:
        """``"10–90th percentile"``: what the band spans."""
        return f"{self.percentiles[0]:g}–{self.percentiles[-1]:g}th percentile"
