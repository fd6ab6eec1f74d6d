"""Cheap 2D augmentations for medical slices, applied to whole batches in torch.

Spatial: random flips, small rotations and scalings (one bilinear resampling of image and soft target
together). Intensity: contrast/brightness jitter, a smooth multiplicative bias field (like MR coil
inhomogeneity) and Gaussian noise. Every random number comes from the ``torch.Generator`` passed in (on
the CPU), so training is reproducible for a seed whatever device runs it.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> images, targets = torch.randn(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    >>> a, b = augment_batch(images, targets, g)
    >>> a.shape, b.shape, bool(b.min() >= 0 and b.max() <= 1)
    (torch.Size([4, 1, 32, 32]), torch.Size([4, 1, 32, 32]), True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AugmentationSettings:
    """Strength of each augmentation (set a value to 0 / False to switch it off).

    Attributes:
        flip: Mirror along each in-plane axis with probability 0.5.
        p_spatial: Probability that a sample is rotated/scaled.
        rotate_degrees: Maximum absolute in-plane rotation.
        scale: Maximum relative zoom (0.15 = 0.85 … 1.15).
        contrast: Maximum relative contrast change (intensities times 1 ± contrast).
        brightness: Maximum shift in normalised units.
        bias_field: Maximum amplitude of the log bias field (0.3 ≈ ±35 % gain across the slice).
        noise: Maximum standard deviation of additive Gaussian noise (normalised units).
    """

    flip: bool = True
    p_spatial: float = 0.5
    rotate_degrees: float = 15.0
    scale: float = 0.15
    contrast: float = 0.15
    brightness: float = 0.1
    bias_field: float = 0.3
    noise: float = 0.05

    def to_dict(self) -> dict:
        """JSON-ready form (stored in the model's training summary)."""
        return asdict(self)


def _uniform(generator, n, low, high):
    import torch

    return low + (high - low) * torch.rand(n, generator=generator)


def _rotate_and_zoom(images, targets, generator, settings: AugmentationSettings):
    """A small rotation (about the last axis) and scaling of a random share of the batch, image and target by
    one (bi/tri)linear resampling each; returns new tensors where anything moved. 2D ``(N, C, H, W)`` and 3D
    ``(N, C, D, H, W)`` alike (the same random draws, in the same order)."""
    import torch
    import torch.nn.functional as F

    n, nd, device = images.shape[0], images.ndim - 2, images.device
    spatial = torch.rand(n, generator=generator) < settings.p_spatial
    angles = _uniform(generator, n, -1.0, 1.0) * math.radians(settings.rotate_degrees)
    zooms = 1.0 + _uniform(generator, n, -settings.scale, settings.scale)
    if not (spatial.any() and (settings.rotate_degrees > 0 or settings.scale > 0)):
        return images, targets
    idx = spatial.nonzero().flatten()
    cos, sin = torch.cos(angles[idx]) / zooms[idx], torch.sin(angles[idx]) / zooms[idx]
    theta = torch.zeros(len(idx), nd, nd + 1)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if nd == 3:
        theta[:, 2, 2] = 1.0 / zooms[idx]
    theta = theta.to(device=device, dtype=images.dtype)
    grid = F.affine_grid(theta, (len(idx), 1, *images.shape[2:]), align_corners=False)
    idx = idx.to(device)
    images, targets = images.clone(), targets.clone()
    images[idx] = F.grid_sample(images[idx], grid, mode="bilinear", padding_mode="border", align_corners=False)
    targets[idx] = F.grid_sample(targets[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return images, targets


def _contrast_and_brightness(images, generator, settings: AugmentationSettings):
    """Per-sample contrast and brightness jitter."""
    n, device = images.shape[0], images.device
    shape = (n,) + (1,) * (images.ndim - 1)
    contrast = 1.0 + _uniform(generator, n, -settings.contrast, settings.contrast)
    brightness = _uniform(generator, n, -settings.brightness, settings.brightness)
    return images * contrast.to(device).view(shape) + brightness.to(device).view(shape)


def _noise(images, generator, settings: AugmentationSettings):
    """Gaussian noise of a per-sample strength up to ``settings.noise``."""
    import torch

    if settings.noise <= 0:
        return images
    shape = (images.shape[0],) + (1,) * (images.ndim - 1)
    sigma = _uniform(generator, images.shape[0], 0.0, settings.noise).view(shape)
    return images + (torch.randn(images.shape, generator=generator) * sigma).to(device=images.device,
                                                                                  dtype=images.dtype)


def augment_batch(images, targets, generator, settings: AugmentationSettings | None = None):
    """Augment a batch of slices and their soft targets consistently.

    Args:
        images: ``(N, C, H, W)`` float tensor (already normalised).
        targets: ``(N, 1, H, W)`` soft targets in ``[0, 1]``.
        generator: CPU ``torch.Generator`` that supplies every random number.
        settings: Strengths; default :class:`AugmentationSettings`.

    Returns:
        ``(images, targets)``, new tensors on the inputs' device; targets stay in ``[0, 1]``.
    """
    import torch
    import torch.nn.functional as F

    settings = settings or AugmentationSettings()
    n, _, height, width = images.shape
    device = images.device

    if settings.flip:
        for dim in (2, 3):
            flip = torch.rand(n, generator=generator) < 0.5
            if flip.any():
                idx = flip.nonzero().flatten().to(device)
                images = images.clone()
                targets = targets.clone()
                images[idx] = images[idx].flip(dim)
                targets[idx] = targets[idx].flip(dim)

    images, targets = _rotate_and_zoom(images, targets, generator, settings)
    images = _contrast_and_brightness(images, generator, settings)

    if settings.bias_field > 0:
        coarse = torch.randn(n, 1, 3, 3, generator=generator) * (settings.bias_field / 2)
        field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)
        images = images * torch.exp(field).to(device=device, dtype=images.dtype)

    images = _noise(images, generator, settings)

    return images, targets.clamp_(0.0, 1.0)


def augment_batch_3d(images, targets, generator, settings: AugmentationSettings | None = None):
    """Augment a batch of 3D patches and their soft targets consistently.

    Flips along each axis, a small rotation (about the last axis) and scaling by one trilinear resampling,
    contrast/brightness jitter and Gaussian noise; every random number comes from ``generator``.

    Args:
        images: ``(N, C, D, H, W)`` float tensor (already normalised).
        targets: ``(N, 1, D, H, W)`` soft targets in ``[0, 1]``.
        generator: CPU ``torch.Generator``.
        settings: Strengths; default :class:`AugmentationSettings`.

    Returns:
        ``(images, targets)``, new tensors; targets stay in ``[0, 1]``.
    """
    import torch

    settings = settings or AugmentationSettings()
    n = images.shape[0]
    device = images.device
    images, targets = images.clone(), targets.clone()
    if settings.flip:
        for dim in (2, 3, 4):
            flip = torch.rand(n, generator=generator) < 0.5
            idx = flip.nonzero().flatten().to(device)
            if len(idx):
                images[idx] = images[idx].flip(dim)
                targets[idx] = targets[idx].flip(dim)
    images, targets = _rotate_and_zoom(images, targets, generator, settings)
    images = _contrast_and_brightness(images, generator, settings)
    images = _noise(images, generator, settings)
    return images, targets.clamp_(0.0, 1.0)
