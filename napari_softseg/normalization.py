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

from .errors import SoftsegError

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

    def apply_torch(self, image):
        """Normalise a ``(C, ...)`` torch tensor on its own device (CPU or GPU); returns a new float32 tensor.

        One output-sized allocation; the statistics need no copy of the volume.
        """
        import torch

        image = image.to(torch.float32)
        if self.mode == "none":
            return image.clone()
        if self.mode == "ct":
            low, high = self.window
            return image.clamp(low, high).sub_(low).div_(high - low)
        out = torch.empty_like(image)
        for c in range(image.shape[0]):
            var, mean = torch.var_mean(image[c], correction=0)
            std = float(var) ** 0.5
            torch.sub(image[c], mean, out=out[c]).div_(std if std > 1e-8 else 1.0)
        return out

    def to_dict(self) -> dict:
        """JSON-ready form stored in ``config.json``."""
        return {"mode": self.mode, "window": list(self.window)}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        return cls(mode=data.get("mode", "zscore"), window=tuple(data.get("window", DEFAULT_CT_WINDOW)))
