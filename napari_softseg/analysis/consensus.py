"""The one consensus rule of napari-softseg: a voxel is in the consensus when **at least half of the raters**
marked it.

Equivalently: the mean of the raters' masks (the soft label) is ``>= 0.5``; with ``R`` raters, at least
``k = ceil(R / 2)`` of them. This is the rule used everywhere a consensus appears — the viewer's
reference box and rater comparison, ``softseg evaluate``, the metrics (operating point, leave-one-rater-
out) and the docs.

Why this rule and not "more than half":

* It is the operating-point convention of the whole package applied to the soft label: the model's mask
  is ``p >= t``, and the consensus is ``soft label >= 0.5``. One comparison sign, one threshold, so the
  consensus is exactly what the model would be asked to reproduce at ``t = 0.5`` if it reproduced the
  soft label perfectly.
* It is defined for every rater count and never empty when raters agree in pairs: with 2 raters it is
  their **union** (1 of 2), with 3 it is 2 of 3, with 4 it is 2 of 4, with 5 it is 3 of 5. A strict
  majority (``2·count > R``) would make 2 raters' consensus their intersection and drop every voxel
  where an even panel splits evenly, which in QUBIQ's 2- and 4-rater tasks discards the very boundary
  the soft label is meant to keep.
* For an odd number of raters the two rules coincide, so results on 3- and 5-rater tasks are unchanged.

Leave-one-rater-out uses the same rule on the other ``R - 1`` raters (``k = ceil((R - 1) / 2)``).

Example:
    >>> import numpy as np
    >>> masks = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.uint8)   # 2 raters, 4 voxels
    >>> consensus_mask(masks).astype(int).tolist()                 # 1 of 2: the union
    [1, 1, 1, 0]
    >>> consensus_k(2), consensus_k(3), consensus_k(4), consensus_k(5)
    (1, 2, 2, 3)
    >>> describe(5)
    'consensus: ≥ half of raters (3 of 5)'
"""

from __future__ import annotations

import math

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.packed_masks import PackedMasks, as_masks

RULE = "at least half of the raters"
"""The rule in words (shown wherever a consensus is used)."""

RULE_DETAIL = "a voxel counts when at least half of the raters marked it (mean of raters ≥ 0.5)"
"""The rule in one sentence, for tooltips and reports."""


def consensus_k(n_raters: int) -> int:
    """Raters needed for the consensus of ``n_raters``: ``ceil(n / 2)`` (1 for 1 or 2, 2 for 3 or 4, ...).

    Raises:
        SoftsegError: ``n_raters < 1``.
    """
    n = int(n_raters)
    if n < 1:
        raise SoftsegError(f"a consensus needs at least one rater, got {n}")
    return max(1, math.ceil(n / 2))


def agreement_count(masks: np.ndarray) -> np.ndarray:
    """How many raters marked each voxel (``uint8`` for up to 255 raters, else ``int32``).

    Args:
        masks: Rater masks ``(R, ...)``; any non-zero value counts as marked; or
            :class:`~napari_softseg.io.packed_masks.PackedMasks` (counted from the bits, no stack).
    """
    if isinstance(masks, PackedMasks):
        if len(masks) < 1:
            raise SoftsegError(f"expected rater masks shaped (R, ...), got shape {masks.shape}")
        return masks.counts()
    masks = np.asarray(masks)
    if masks.ndim < 2 or masks.shape[0] < 1:
        raise SoftsegError(f"expected rater masks shaped (R, ...), got shape {masks.shape}")
    out = np.zeros(masks.shape[1:], dtype=np.uint8 if masks.shape[0] < 256 else np.int32)
    for m in masks:  # one rater at a time: no (R, ...) temporary
        out += (m != 0) if m.dtype != np.bool_ else m
    return out


def consensus_mask(masks: np.ndarray, k: int | None = None) -> np.ndarray:
    """Voxels marked by at least ``k`` raters (``bool``); ``k`` defaults to the rule, ``ceil(R / 2)``.

    Args:
        masks: Rater masks ``(R, ...)``.
        k: Raters needed; ``None`` for the package's rule. An explicit ``k`` lets a user ask for a
            stricter or looser panel (the viewer's "k of n" box), always shown as such.

    Raises:
        SoftsegError: ``k`` outside ``1 … R``.
    """
    masks = as_masks(masks)
    r = masks.shape[0] if masks.ndim >= 2 else 0
    k = consensus_k(r) if k is None else int(k)
    if not 1 <= k <= r:
        raise SoftsegError(f"consensus needs 1 <= k <= {r} raters, got k={k}")
    return agreement_count(masks) >= k


def leave_one_out_k(n_raters: int) -> int:
    """Raters needed for the consensus of the others when one of ``n_raters`` is left out."""
    return consensus_k(n_raters - 1)


def describe(n_raters: int, k: int | None = None) -> str:
    """The consensus in words, e.g. ``"consensus: ≥ half of raters (3 of 5)"``.

    A ``k`` other than the rule's is described as such (``"consensus: at least 4 of 5 raters"``).
    """
    n = int(n_raters)
    rule_k = consensus_k(n)
    if k is None or int(k) == rule_k:
        return f"consensus: ≥ half of raters ({rule_k} of {n})"
    return f"consensus: at least {int(k)} of {n} raters"
