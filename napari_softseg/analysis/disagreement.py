"""Where an annotator differs from the raters' consensus, and how many raters side with them there.

An annotator draws their own mask and wants to see not just *where* they differ from the consensus but
whether they are alone: a voxel they marked that only they marked is a different story from one that
two of five raters marked too. :func:`disagreement_map` labels each voxel where the annotator and the
consensus disagree with ``1 + (number of raters who agree with the annotator there)``; voxels where they
agree are 0. The viewer shows it as a Labels layer coloured by :func:`agreement_colors` (red: nobody
agrees with you, towards green: many raters do).

Example:
    >>> import numpy as np
    >>> masks = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], np.uint8)   # 3 raters, 4 voxels
    >>> annotation = np.array([1, 0, 1, 1], np.uint8)
    >>> disagreement_map(annotation, masks, k=2).tolist()      # consensus (2 of 3) = [1, 1, 0, 0]
    [0, 2, 2, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_softseg.analysis.consensus import agreement_count
from napari_softseg.analysis.softlabels import consensus
from napari_softseg.io.packed_masks import as_masks


def disagreement_map(annotation: np.ndarray, masks: np.ndarray, k: int) -> np.ndarray:
    """Label the voxels where ``annotation`` differs from the consensus of ``masks``.

    Args:
        annotation: The annotator's mask (nonzero = inside), shape ``S``.
        masks: Rater masks ``(R, *S)`` in {0, 1}.
        k: Raters needed for the consensus (``consensus(masks, k)``).

    Returns:
        uint8 array of shape ``S``: 0 where the annotator agrees with the consensus; elsewhere
        ``1 + n`` where ``n`` is the number of raters who marked the voxel the way the annotator did
        (so 1 = no rater agrees, ``R + 1`` is impossible because then the consensus would agree too).

    Raises:
        ValueError: Shapes do not match, no raters, or ``k`` out of range.
    """
    annotation = np.asarray(annotation) != 0
    masks = as_masks(masks)
    if masks.ndim < 1 or len(masks) == 0:
        raise ValueError("the disagreement map needs at least one rater mask")
    if tuple(masks.shape[1:]) != annotation.shape:
        raise ValueError(
            f"annotation shape {annotation.shape} does not match the raters' shape {tuple(masks.shape[1:])}"
        )
    n = len(masks)
    if not 1 <= k <= n:
        raise ValueError(f"consensus needs 1 <= k <= {n} raters, got k={k}")
    marked = agreement_count(masks).astype(np.int16)
    agreeing = np.where(annotation, marked, n - marked)
    differs = annotation != consensus(masks, k)
    out = np.zeros(annotation.shape, np.uint8)
    out[differs] = agreeing[differs] + 1
    return out


@dataclass
class DisagreementSummary:
    """Voxel counts of a disagreement map.

    Attributes:
        extra: Voxels the annotator marked that the consensus did not.
        missed: Consensus voxels the annotator left out.
        by_agreeing: ``by_agreeing[n]`` = disagreeing voxels where ``n`` raters agree with the annotator.
    """

    extra: int
    missed: int
    by_agreeing: list[int]


def summarize(annotation: np.ndarray, disagreement: np.ndarray, n_raters: int) -> DisagreementSummary:
    """Count a :func:`disagreement_map` by kind (extra / missed) and by number of raters agreeing."""
    annotation = np.asarray(annotation) != 0
    differs = disagreement > 0
    counts = np.bincount(disagreement[differs].ravel(), minlength=n_raters + 2)[1 : n_raters + 2]
    return DisagreementSummary(
        extra=int(np.count_nonzero(differs & annotation)),
        missed=int(np.count_nonzero(differs & ~annotation)),
        by_agreeing=[int(c) for c in counts],
    )


def agreement_colors(n_raters: int) -> dict[int, tuple[float, float, float, float]]:
    """RGBA colour per label of a disagreement map: 0 transparent, 1 (alone) red ... ``n_raters`` green.

    Args:
        n_raters: Number of raters ``R``; labels ``1 .. R`` (``R - 1`` raters agreeing at most) get colours.
    """
    colors: dict[int, tuple[float, float, float, float]] = {0: (0.0, 0.0, 0.0, 0.0)}
    top = max(n_raters - 1, 1)
    for n in range(n_raters + 1):
        f = min(n / top, 1.0)
        # red (1, 0.15, 0.1) -> amber -> green (0.1, 0.8, 0.25)
        colors[n + 1] = (1.0 - 0.9 * f, 0.15 + 0.65 * f, 0.1 + 0.15 * f, 1.0)
    return colors
