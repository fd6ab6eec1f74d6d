"""The network description stored in ``config.json``: names, defaults and checks (no torch needed).

:mod:`~napari_softseg.model.unet` builds the network from it; everything that only reads or validates a
model's config (loading, planning, memory estimates) uses this module and stays torch-free.
"""

from __future__ import annotations

from napari_softseg.errors import SoftsegError

ARCHITECTURE_NAME = "unet2d"
ARCHITECTURE_NAMES = ("unet2d", "unet3d")
NORMS = ("instance", "batch", "none")
DEFAULT_ARCHITECTURE = {
    "name": ARCHITECTURE_NAME,
    "in_channels": 1,
    "out_channels": 1,
    "base_channels": 16,
    "depth": 4,
    "norm": "instance",
}


def normalize_architecture(arch: dict) -> dict:
    """Fill defaults and check an architecture description from ``config.json``.

    Raises:
        SoftsegError: Unknown network name, norm, or impossible sizes.
    """
    full = {**DEFAULT_ARCHITECTURE, **arch}
    if full["name"] not in ARCHITECTURE_NAMES:
        raise SoftsegError(f"unknown network architecture {full['name']!r} "
                           f"(this version knows {', '.join(map(repr, ARCHITECTURE_NAMES))})")
    if full["norm"] not in NORMS:
        raise SoftsegError(f"unknown normalisation layer {full['norm']!r}; choose one of {', '.join(NORMS)}")
    for key in ("in_channels", "out_channels", "base_channels", "depth"):
        if not isinstance(full[key], int) or full[key] < (0 if key == "depth" else 1):
            raise SoftsegError(f"architecture field {key!r} must be a positive integer, got {full[key]!r}")
    if full["depth"] > 7:
        raise SoftsegError(f"U-Net depth {full['depth']} is too large (at most 7)")
    return full
