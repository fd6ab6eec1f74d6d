"""What the Rater comparison dock computes, off the GUI thread: Qt-free Progress generators.

* :func:`table_work` — each rater against the consensus of the other raters
  (:func:`~napari_softseg.analysis.metrics.leave_one_rater_out`), one PR curve of the model per left-out
  rater (so the model's column follows the threshold in O(1)), and the PR curve against a reference;
* :func:`annotation_work` — an annotator's mask as an operating point against the chosen reference and
  its disagreement map with the raters' consensus
  (:func:`~napari_softseg.analysis.disagreement.disagreement_map`).

Both only read the :class:`~napari_softseg.analysis.operating_point.ThresholdSession` they are given, so
they can run in a worker thread; :func:`~napari_softseg.progress.drive` runs them inline.
"""

from __future__ import annotations

import numpy as np

from napari_softseg.analysis.disagreement import disagreement_map
from napari_softseg.analysis.metrics import leave_one_rater_out
from napari_softseg.analysis.operating_point import (
    Reference,
    ThresholdSession,
    default_k,
    leave_one_out_curves,
    mask_operating_point,
)
from napari_softseg.progress import Progress


def table_work(session: ThresholdSession, reference: Reference | None, need_table: bool):
    """Background work of the table channel: leave-one-out rows and curves, and the reference's curve.

    Args:
        session: The session (only read).
        reference: Reference whose PR curve to build, or None if it is cached.
        need_table: Build the leave-one-rater-out rows and one curve per rater (needs >= 2 raters).

    Returns:
        A Progress generator returning ``{"rows": [...], "loo": [PRCurve, ...], "curve": PRCurve}``
        (keys present only for what was built).
    """
    out: dict = {}
    if need_table:
        yield Progress("rater agreement", 0, None, "each rater against the others")
        out["rows"] = leave_one_rater_out(session.masks, rater_names=session.rater_names)
        out["loo"] = yield from leave_one_out_curves(session.prediction, session.masks, n_bins=session.n_bins)
    if reference is not None:
        out["curve"] = yield from session.build_curve(reference)
    return out


def annotation_work(session: ThresholdSession, reference: Reference, annotation: np.ndarray):
    """Background work of the annotator channel: the mask's operating point and disagreement map.

    Args:
        session: The session (only read).
        reference: What the annotation is compared with.
        annotation: The annotator's mask (bool, a copy taken on the GUI thread).

    Returns:
        A Progress generator returning ``(OperatingPoint, disagreement map or None, k)``.
    """
    yield Progress("annotation", 0, None, f"your mask vs {session.describe_reference(reference)}")
    target = session.reference_mask(reference)
    if target is None:          # expected: the calibrated map is its own reference
        target = session.prediction
    point = mask_operating_point(annotation, target, session.spacing)
    if not session.n_raters:
        return point, None, 0
    k = reference.k if reference.kind == "consensus" else default_k(session.n_raters)
    return point, disagreement_map(annotation, session.masks, k), k
