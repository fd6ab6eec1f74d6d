"""Sliding-window prediction with Gaussian blending, for models trained on patches.

The same windows, weights and padding as MONAI's ``sliding_window_inference(..., mode="gaussian",
padding_mode="replicate")`` (its ``dense_patch_slices`` positions, a separable Gaussian importance map of
``sigma = 0.125 × window`` clamped at ``1e-3``, inputs smaller than a window padded symmetrically with edge
values and cropped back); ``tests/test_sliding_window.py`` checks it against MONAI's output.

Why not call MONAI: ``import monai`` loads pandas, scikit-learn, scikit-image and ~430 modules, 154 MB
resident in the viewer's process (half a 512 × 512 × 300 float32 scan, the largest single item of the
prediction's memory after the map itself; issue 15) and ~2 s of the first Predict, for this one loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

#: MONAI's default Gaussian width, as a fraction of the window.
SIGMA_SCALE = 0.125


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """First index of each window along one axis of length ``size`` (``size >= window``).

    Windows step by ``int(window × (1 − overlap))`` (at least 1); the last one is moved back to end at
    ``size``.

    Example:
        >>> window_starts(10, 4, 0.5)
        [0, 2, 4, 6]
        >>> window_starts(9, 4, 0.5)
        [0, 2, 4, 5]
    """
    if window >= size:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    starts = []
    start = 0
    while True:
        starts.append(min(start, size - window))
        if start + window >= size:
            return starts
        start += step


def gaussian_weights(window: Sequence[int], device=None):
    """The blending weight of each position of a window: a separable Gaussian, 1 at the centre."""
    import torch

    weights = None
    for n in window:
        t = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        g = torch.exp(t ** 2 / (-2 * (SIGMA_SCALE * n) ** 2))
        weights = g if weights is None else weights.unsqueeze(-1) * g
    return weights.clamp_(min=max(float(weights.min()), 1e-3))


def sliding_window(predictor: Callable, x, window: Sequence[int], *, windows_per_pass: int = 4,
                   overlap: float = 0.5):
    """``predictor`` applied window by window to ``x`` ``(N, C, *spatial)``, blended with Gaussian weights.

    Args:
        predictor: Maps a ``(B, C, *window)`` tensor to ``(B, K, *window)``.
        x: The input tensor (any device).
        window: Window size per spatial axis.
        windows_per_pass: Windows (of any of the ``N`` inputs) per call of ``predictor``.
        overlap: Fraction of a window shared with its neighbour along each axis.

    Returns:
        ``(N, K, *spatial)`` float32 on ``x``'s device.
    """
    import torch
    import torch.nn.functional as F

    window = [int(w) for w in window]
    spatial = list(x.shape[2:])
    if len(window) != len(spatial):
        raise ValueError(f"a {len(window)}-D window for a {len(spatial)}-D input")
    pads = [(max(w - s, 0) // 2, max(w - s, 0) - max(w - s, 0) // 2) for w, s in zip(window, spatial)]
    if any(a or b for a, b in pads):
        x = F.pad(x, [v for pair in reversed(pads) for v in pair], mode="replicate")
    size = list(x.shape[2:])
    weights = gaussian_weights(window, device=x.device)
    corners = list(itertools.product(*(window_starts(s, w, overlap) for s, w in zip(size, window))))
    boxes = [tuple(slice(c, c + w) for c, w in zip(corner, window)) for corner in corners]
    count = torch.zeros(size, dtype=torch.float32, device=x.device)
    for box in boxes:
        count[box] += weights
    out = None
    jobs = [(n, box) for n in range(x.shape[0]) for box in boxes]
    for first in range(0, len(jobs), max(1, int(windows_per_pass))):
        chunk = jobs[first:first + max(1, int(windows_per_pass))]
        pred = predictor(torch.stack([x[(n, slice(None), *box)] for n, box in chunk])).float()
        if out is None:
            out = torch.zeros((x.shape[0], pred.shape[1], *size), dtype=torch.float32, device=x.device)
        for (n, box), p in zip(chunk, pred):
            out[(n, slice(None), *box)] += p * weights
    out /= count
    crop = tuple(slice(a, a + s) for (a, _), s in zip(pads, spatial))
    return out[(slice(None), slice(None), *crop)]
