"""Intensity normalisation, stored with the model so prediction reproduces training exactly.

Two modes:

- ``"zscore"`` (MR, the default): per image and per channel, subtract the mean and divide by the
  standard deviation of the volume (not per slice, so every slice of a volume is scaled the same way).
  ``region`` says over which voxels the mean and deviation are taken: ``"all"`` (every voxel; models
  before v0.3) or ``"body"`` (the voxels brighter than :data:`BODY_LEVEL` × the channel's 99.5th
  percentile — the head or body, not the air around it). With ``"body"`` the air's share of the field of
  view no longer drives the scaling: a whole head with much air around it and a tight slab of the same
  brain are scaled alike, as nnU-Net's z-score on the nonzero region does for skull-stripped MR (with a
  level instead of ``!= 0``, because air in a real scan is noise, not zero). It is meant for
  non-negative intensities (MR); the planner picks it when the training images have no negative values.
- ``"ct"``: clip Hounsfield units to a window ``(low, high)`` and map it linearly to ``[0, 1]``; the
  same for every image, as CT intensities are absolute.

Example:
    >>> import numpy as np
    >>> norm = Normalization("ct", window=(-100.0, 200.0))
    >>> norm.apply(np.array([[[[-1000.0, 50.0, 1000.0]]]], dtype=np.float32)).ravel().tolist()
    [0.0, 0.5, 1.0]
    >>> Normalization.from_dict(norm.to_dict()) == norm
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_softseg.errors import SoftsegError

MODES = ("zscore", "ct", "none")
REGIONS = ("all", "body")
#: ``"body"`` region: voxels above this fraction of the channel's 99.5th percentile (T1 air/noise is a few
#: percent of it, CSF and muscle 15-40 %).
BODY_LEVEL = 0.1
#: Voxels sampled (on a regular stride) to estimate the 99.5th percentile.
PERCENTILE_SAMPLE = 2**20
#: Voxels per slab when summing over the body region (bounds the temporary arrays).
SLAB_VOXELS = 2**22
DEFAULT_CT_WINDOW = (-160.0, 240.0)  # soft-tissue abdomen window (level 40, width 400)


@dataclass(frozen=True)
class Normalization:
    """How image intensities are scaled before the network sees them.

    Attributes:
        mode: ``"zscore"``, ``"ct"`` or ``"none"``.
        window: ``(low, high)`` in the image's units, used by ``"ct"``.
        region: ``"all"`` or ``"body"``: the voxels a z-score's mean and deviation come from.
    """

    mode: str = "zscore"
    window: tuple[float, float] = DEFAULT_CT_WINDOW
    region: str = "all"

    def __post_init__(self):
        if self.mode not in MODES:
            raise SoftsegError(f"unknown normalisation {self.mode!r}; choose one of {', '.join(MODES)}")
        low, high = (float(v) for v in self.window)
        if not high > low:
            raise SoftsegError(f"CT window must have low < high, got ({low}, {high})")
        object.__setattr__(self, "window", (low, high))
        if self.region not in REGIONS:
            raise SoftsegError(f"unknown normalisation region {self.region!r}; choose one of {', '.join(REGIONS)}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Normalise a ``(C, X, Y, Z)`` numpy image (each channel on its own); returns float32 numpy."""
        import torch

        return self.apply_torch(torch.from_numpy(np.asarray(image, dtype=np.float32))).numpy()

    def statistics(self, image) -> list[tuple[float, float]]:
        """Per channel ``(offset, scale)`` with ``normalised = (x - offset) / scale``.

        Computed once per volume (a ``(C, ...)`` torch tensor), so a caller can normalise slice batches
        as it goes instead of holding a normalised copy of the whole volume.
        """
        import torch

        if self.mode == "none":
            return [(0.0, 1.0)] * image.shape[0]
        if self.mode == "ct":
            low, high = self.window
            return [(low, high - low)] * image.shape[0]
        stats = []
        for c in range(image.shape[0]):
            if self.region == "body":
                mean, std = _body_mean_std(image[c])
            else:
                var, mean = torch.var_mean(image[c].to(torch.float32), correction=0)
                mean, std = float(mean), float(var) ** 0.5
            stats.append((mean, std if std > 1e-8 else 1.0))
        return stats

    def apply_batch_(self, batch, stats: list[tuple[float, float]], group: int = 1):
        """Normalise, in place, a float32 ``(N, C * group, ...)`` batch whose channels come in runs of
        ``group`` per image channel (2.5D context slices); ``stats`` from :meth:`statistics`."""
        runs = batch.view(batch.shape[0], len(stats), group, *batch.shape[2:])
        if self.mode == "ct":
            low, high = self.window
            runs.clamp_(low, high)
        for c, (offset, scale) in enumerate(stats):
            runs[:, c].sub_(offset).div_(scale)
        return batch

    def apply_torch(self, image):
        """Normalise a ``(C, ...)`` torch tensor on its own device (CPU or GPU); returns a new float32 tensor."""
        import torch

        out = image.to(torch.float32, copy=True)
        return self.apply_batch_(out[None], self.statistics(out))[0]

    def to_dict(self) -> dict:
        """JSON-ready form stored in ``config.json``."""
        return {"mode": self.mode, "window": list(self.window), "region": self.region}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        """Inverse of :meth:`to_dict` (``region`` defaults to ``"all"``: models written before it existed)."""
        return cls(mode=data.get("mode", "zscore"), window=tuple(data.get("window", DEFAULT_CT_WINDOW)),
                   region=data.get("region", "all"))


def body_level(channel) -> float:
    """The intensity above which a voxel counts as body: :data:`BODY_LEVEL` × the 99.5th percentile.

    The percentile is estimated on a regular-stride sample of at most about :data:`PERCENTILE_SAMPLE`
    voxels (no copy of the volume). ``channel`` is a torch tensor or numpy array of any shape.
    """
    import torch

    ndim = len(channel.shape)
    step = max(1, round((math.prod(channel.shape) / PERCENTILE_SAMPLE) ** (1 / max(ndim, 1))))
    picked = channel[(slice(None, None, step),) * ndim]
    if isinstance(picked, np.ndarray):   # any strides (a layer's display-order view may be flipped): copy the sample
        picked = np.ascontiguousarray(picked, dtype=np.float32)
    sample = torch.as_tensor(picked).reshape(-1).to(torch.float32)
    sample = sample[torch.isfinite(sample)]
    if sample.numel() == 0:
        return 0.0
    k = max(1, min(sample.numel(), round(0.995 * sample.numel())))
    return BODY_LEVEL * float(sample.kthvalue(k).values)


def _body_mean_std(channel) -> tuple[float, float]:
    """Mean and standard deviation of the voxels above :func:`body_level` (all voxels when none are).

    Summed slab by slab in float64, so a 512 × 512 × 300 volume needs no volume-sized temporary.
    """
    import torch

    x = torch.as_tensor(channel)
    level = body_level(x)
    rows = max(1, SLAB_VOXELS // max(1, x[0].numel())) if x.ndim > 1 else x.numel()
    n = s1 = s2 = 0.0
    for start in range(0, x.shape[0], rows):
        slab = x[start:start + rows].to(torch.float64)
        keep = slab[slab > level]
        n += keep.numel()
        s1 += float(keep.sum())
        s2 += float((keep * keep).sum())
    if n == 0:
        var, mean = torch.var_mean(x.to(torch.float32), correction=0)
        return float(mean), float(var) ** 0.5
    mean = s1 / n
    return mean, max(s2 / n - mean * mean, 0.0) ** 0.5
