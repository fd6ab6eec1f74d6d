"""The U-Net (Ronneberger et al. 2015; 3D: Çiçek et al. 2016) used for soft-label segmentation.

A small, plain network of our own (2D on slices, ``"unet2d"``, or 3D on patches, ``"unet3d"``): the
architecture fits on one page and its parameter names are part of the shipped model files, so it does not
change when a library does. It is fully convolutional, so any input whose sides are multiples of
:attr:`UNet2D.size_multiple` (``2 ** depth``) goes through in one pass; :mod:`napari_softseg.model.inference`
pads to that (or predicts patch by patch with MONAI's sliding window).

This module imports torch at import time: import it only inside functions (``model_io``, ``training``
and ``inference`` do), so that ``import napari_softseg`` stays fast.

Example:
    >>> import torch
    >>> net = build_network({"in_channels": 1, "base_channels": 8, "depth": 3})
    >>> net(torch.zeros(2, 1, 64, 48)).shape
    torch.Size([2, 1, 64, 48])
"""

from __future__ import annotations

import torch
from torch import nn

from napari_softseg.model.architecture import normalize_architecture


def _norm(kind: str, channels: int, dim: int = 2) -> nn.Module:
    if kind == "instance":
        return (nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm2d if dim == 2 else nn.BatchNorm3d)(channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3×3 (3×3×3) convolutions, each followed by normalisation and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dim: int = 2):
        conv = nn.Conv2d if dim == 2 else nn.Conv3d
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, out_channels, dim),
            nn.LeakyReLU(0.01, inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=norm == "none"),
            _norm(norm, out_channels, dim),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet2D(nn.Module):
    """A 2D U-Net returning one logit per pixel.

    Args:
        in_channels: Input channels (image channels × slices of 2.5D context).
        out_channels: Output logits per pixel (1 for a soft foreground map).
        base_channels: Feature maps at full resolution; doubled at each level down.
        depth: Number of 2× downsamplings; inputs must have sides divisible by ``2 ** depth``.
        norm: ``"instance"`` (default), ``"batch"`` or ``"none"``.
    """

    dim = 2

    def __init__(self, in_channels=1, out_channels=1, base_channels=16, depth=4, norm="instance"):
        super().__init__()
        dim = self.dim
        conv, pool, up = (nn.Conv2d, nn.MaxPool2d, nn.ConvTranspose2d) if dim == 2 else (
            nn.Conv3d, nn.MaxPool3d, nn.ConvTranspose3d)
        widths = [min(base_channels * 2**level, 320) for level in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(previous, width, norm, dim))
            previous = width
        self.pool = pool(2)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsamplers.append(up(widths[level + 1], widths[level], kernel_size=2, stride=2))
            self.decoders.append(ConvBlock(widths[level] * 2, widths[level], norm, dim))
        self.head = conv(widths[0], out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (``2 ** depth``)."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` (3D: ``(N, C, D, H, W)``) to logits with ``out_channels`` channels."""
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.depth:
                skips.append(x)
                x = self.pool(x)
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)


class UNet3D(UNet2D):
    """The same U-Net with 3D convolutions, pooling and transposed convolutions (inputs ``(N, C, D, H, W)``)."""

    dim = 3


def build_network(arch: dict) -> UNet2D:
    """Create an untrained :class:`UNet2D` or :class:`UNet3D` from an architecture description (missing keys:
    defaults)."""
    full = normalize_architecture(arch)
    return (UNet3D if full["name"] == "unet3d" else UNet2D)(
        in_channels=full["in_channels"],
        out_channels=full["out_channels"],
        base_channels=full["base_channels"],
        depth=full["depth"],
        norm=full["norm"],
    )
