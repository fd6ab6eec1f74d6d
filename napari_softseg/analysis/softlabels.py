"""Soft labels from several raters' binary masks.

The soft label of Silva & Oliveira (QUBIQ 2021) is the **mean of the raters' masks**: a voxel marked by
3 of 4 raters gets 0.75. Variants here:

- ``"mean"`` — the (optionally weighted) mean of the masks. QUBIQ's definition; the default.
- ``"smoothed"`` — the mean, Gaussian-smoothed with ``sigma_mm`` in millimetres, honouring the voxel
  spacing (spatially varying label smoothing, SVLS). Smoothing each mask before averaging gives the
  same result, because both smoothing and averaging are linear; ``"smoothed-mean"`` and
  ``"smoothed-raters"`` are accepted as names for it.
- ``"majority"`` — the hard consensus (at least half of the raters, the package's one rule in
  :mod:`napari_softseg.analysis.consensus`), for comparison.
- ``"staple"`` — STAPLE's posterior probability of the structure (Warfield et al. 2004): an EM estimate of
  each rater's sensitivity and specificity, so reliable raters weigh more.

Every soft label is ``float32`` in ``[0, 1]`` and carries a provenance record.

Example:
    >>> import numpy as np
    >>> masks = np.array([[[[1]], [[1]]], [[[1]], [[0]]]], dtype=np.uint8)  # 2 raters, 2 voxels
    >>> make_soft_label(masks).data.ravel().tolist()
    [1.0, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_softseg import SOFTWARE
from napari_softseg.analysis.consensus import agreement_count, consensus_mask
from napari_softseg.errors import SoftsegError
from napari_softseg.io.packed_masks import PackedMasks

METHODS = ("mean", "smoothed", "majority", "staple")
ALIASES = {"smoothed-mean": "smoothed", "smoothed-raters": "smoothed", "svls": "smoothed"}


@dataclass
class SoftLabel:
    """A soft label and how it was made.

    Attributes:
        data: ``float32 (X, Y, Z)`` in ``[0, 1]`` (the viewer's reader puts a lazy array in display
            order here, see :meth:`~napari_softseg.io.packed_masks.PackedMasks.lazy_mean`).
        provenance: ``method``, ``sigma_mm``, ``weights``, ``raters``, ``n_raters``, ``software`` and, for
            STAPLE, the estimated per-rater ``sensitivity`` / ``specificity``.
    """

    data: np.ndarray
    provenance: dict = field(default_factory=dict)


def _check_masks(masks: np.ndarray) -> np.ndarray:
    if isinstance(masks, PackedMasks):   # {0, 1} by construction; kept packed
        if len(masks) == 0:
            raise SoftsegError("no rater masks: a soft label needs at least one rater")
        return masks
    masks = np.asarray(masks)
    if masks.ndim < 2:
        raise SoftsegError(f"expected stacked rater masks (R, X, Y, Z), got shape {masks.shape}")
    if masks.shape[0] == 0:
        raise SoftsegError("no rater masks: a soft label needs at least one rater")
    if masks.dtype == np.bool_ or (masks.dtype == np.uint8 and masks.size and masks.max() <= 1):
        return masks  # already {0, 1}: no copy
    return masks != 0  # {0, 255} and other encodings alike


def consensus(masks: np.ndarray, k: int | None = None) -> np.ndarray:
    """Voxels marked by at least ``k`` of the ``R`` raters (``bool``); ``k`` defaults to the package's rule.

    See :func:`napari_softseg.analysis.consensus.consensus_mask` (the one consensus rule).

    Raises:
        SoftsegError: ``k`` outside ``1 … R``.
    """

    return consensus_mask(_check_masks(masks), k)


def majority_vote(masks: np.ndarray) -> np.ndarray:
    """The hard consensus label (``uint8``): at least half of the raters (a 2-2 tie counts as marked).

    The same rule as every consensus in the package (:mod:`napari_softseg.analysis.consensus`).
    """
    return consensus(masks).astype(np.uint8)


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise SoftsegError(f"got {w.size} rater weights for {n} raters")
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise SoftsegError("rater weights must be finite, non-negative and not all zero")
    return w / w.sum()


def weighted_mean(masks: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Mean of the masks (``float32``), optionally weighted per rater.

    Unweighted, it is the rater count divided by R in float32 — the float32 value nearest to k/R, the
    same value :func:`napari_softseg.analysis.metrics.qubiq_score` compares — with no float64 temporary.
    """
    masks = _check_masks(masks)
    if weights is None:
        return np.divide(agreement_count(masks), masks.shape[0], dtype=np.float32)
    out = np.zeros(masks.shape[1:], dtype=np.float32)
    for wi, m in zip(_weights(weights, masks.shape[0]), masks):
        out += np.float32(wi) * m
    return np.clip(out, 0.0, 1.0, out=out)


def gaussian_smooth(soft: np.ndarray, sigma_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Gaussian-smooth a soft map with ``sigma_mm`` millimetres along each axis of given ``spacing``.

    Axes of length 1 (2D data stored as ``(X, Y, 1)``) are not smoothed.
    """
    from scipy.ndimage import gaussian_filter

    if sigma_mm < 0:
        raise SoftsegError(f"sigma must be >= 0 mm, got {sigma_mm}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != soft.ndim or any(s <= 0 for s in spacing):
        raise SoftsegError(f"spacing {spacing} does not fit a {soft.ndim}D array")
    sigma = [0.0 if n == 1 else sigma_mm / s for n, s in zip(soft.shape, spacing)]
    out = gaussian_filter(soft.astype(np.float32), sigma=sigma, mode="nearest")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def staple(masks: np.ndarray, *, max_iter: int = 50, tol: float = 1e-6) -> tuple[np.ndarray, dict]:
    """Binary STAPLE (Warfield, Zou & Wells 2004) by expectation–maximisation.

    The prior probability of the structure is the mean fraction of voxels the raters marked, over the
    whole image, as in the original method (and SimpleITK's filter).

    Returns:
        The posterior probability ``float32`` and ``{"sensitivity": [...], "specificity": [...],
        "iterations": n}``.
    """
    masks = _check_masks(masks).astype(bool)
    r = masks.shape[0]
    d = masks.reshape(r, -1).astype(np.float32)  # (R, N)
    prior = min(max(float(d.mean()), 1e-6), 1 - 1e-6)
    sens = np.full(r, 0.99)
    spec = np.full(r, 0.99)
    w = d.mean(axis=0)
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported after the loop
        log_a = math.log(prior) + np.log1p(-sens).sum() + np.log(sens / (1 - sens)) @ d
        log_b = math.log1p(-prior) + np.log(spec).sum() + np.log((1 - spec) / spec) @ d
        w_new = 1.0 / (1.0 + np.exp(np.clip(log_b - log_a, -80, 80)))
        sens = np.clip((d @ w_new) / max(float(w_new.sum()), 1e-12), 1e-6, 1 - 1e-6)
        spec = np.clip(((1 - d) @ (1 - w_new)) / max(float((1 - w_new).sum()), 1e-12), 1e-6, 1 - 1e-6)
        converged = float(np.max(np.abs(w_new - w))) < tol
        w = w_new
        if converged:
            break
    info = {
        "sensitivity": [round(float(s), 6) for s in sens],
        "specificity": [round(float(s), 6) for s in spec],
        "iterations": iterations,
    }
    return w.reshape(masks.shape[1:]).astype(np.float32), info


def soft_label_provenance(method: str, n_raters: int, *, rater_names: Sequence[str] | None = None,
                          weights: Sequence[float] | None = None) -> dict:
    """The provenance a soft label of ``method`` from ``n_raters`` raters carries (see :func:`make_soft_label`)."""

    names = list(rater_names) if rater_names is not None else [f"rater {i + 1}" for i in range(n_raters)]
    return {
        "method": method,
        "raters": names,
        "n_raters": n_raters,
        "weights": None if weights is None else [float(x) for x in _weights(weights, n_raters)],
        "sigma_mm": None,
        "software": SOFTWARE,
    }


def make_soft_label(
    masks: np.ndarray,
    method: str = "mean",
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    sigma_mm: float = 1.0,
    weights: Sequence[float] | None = None,
    rater_names: Sequence[str] | None = None,
) -> SoftLabel:
    """Build a soft label from stacked rater masks.

    Args:
        masks: ``(R, X, Y, Z)`` binary masks (``uint8`` or ``bool``).
        method: One of :data:`METHODS` (or an alias in :data:`ALIASES`).
        spacing: Voxel size in mm, for ``"smoothed"``.
        sigma_mm: Gaussian sigma in mm, for ``"smoothed"``.
        weights: Per-rater weights for ``"mean"`` and ``"smoothed"`` (normalised to sum to 1).
        rater_names: Names recorded in the provenance (default ``rater 1`` …).

    Returns:
        The soft label with its provenance.

    Raises:
        SoftsegError: Unknown method, no raters, bad weights or sigma.
    """
    masks = _check_masks(masks)
    name = ALIASES.get(method, method)
    if name not in METHODS:
        raise SoftsegError(f"unknown soft-label method {method!r}; choose from {', '.join(METHODS)}")
    r = masks.shape[0]
    provenance = soft_label_provenance(name, r, rater_names=rater_names, weights=weights)
    if name == "mean":
        data = weighted_mean(masks, weights)
    elif name == "smoothed":
        data = gaussian_smooth(weighted_mean(masks, weights), sigma_mm, spacing)
        provenance["sigma_mm"] = float(sigma_mm)
        provenance["spacing_mm"] = [float(s) for s in spacing]
    elif name == "majority":
        if weights is not None:
            raise SoftsegError("rater weights apply to 'mean' and 'smoothed' only")
        data = majority_vote(masks).astype(np.float32)
    else:
        if weights is not None:
            raise SoftsegError("STAPLE estimates rater weights itself; do not pass weights")
        data, info = staple(masks)
        provenance.update(info)
    return SoftLabel(data=data, provenance=provenance)
