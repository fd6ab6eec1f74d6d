"""Intensity normalisation, stored with the model so prediction reproduces training exactly.

Two modes:

- ``"zscore"`` (MR, the default): per image and per channel, subtract the mean and divide by the
  standard deviation of all voxels of the whole volume (not per slice, so every slice of a volume is
  scaled the same way).
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

from dataclasses import dataclass

import numpy as np

from napari_softseg.errors import SoftsegError

MODES = ("zscore", "ct", "none")
DEFAULT_CT_WINDOW = (-160.0, 240.0)  # soft-tissue abdomen window (level 40, width 400)


@dataclass(frozen=True)
class Normalization:
    """How image intensities are scaled before the network sees them.

    Attributes:
        mode: ``"zscore"``, ``"ct"`` or ``"none"``.
        window: ``(low, high)`` in the image's units, used by ``"ct"``.
    """

    mode: str = "zscore"
    window: tuple[float, float] = DEFAULT_CT_WINDOW

    def __post_init__(self):
        if self.mode not in MODES:
            raise SoftsegError(f"unknown normalisation {self.mode!r}; choose one of {', '.join(MODES)}")
        low, high = (float(v) for v in self.window)
        if not high > low:
            raise SoftsegError(f"CT window must have low < high, got ({low}, {high})")
        object.__setattr__(self, "window", (low, high))

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
            var, mean = torch.var_mean(image[c].to(torch.float32), correction=0)
            std = float(var) ** 0.5
            stats.append((float(mean), std if std > 1e-8 else 1.0))
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
        return {"mode": self.mode, "window": list(self.window)}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        return cls(mode=data.get("mode", "zscore"), window=tuple(data.get("window", DEFAULT_CT_WINDOW)))
