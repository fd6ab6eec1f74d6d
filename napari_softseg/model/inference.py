"""Prediction: a soft probability map for any image size, on CUDA, MPS or the CPU.

A **2D model** cuts the image ``(C, X, Y, Z)`` into slices along its ``slice_axis`` (2.5D models get the
neighbouring slices as extra channels, repeating the edge slice at the volume's ends). A model trained on
patches (``config.patch_size``, every model the planner makes) predicts each slice with a window of its
training patch sliding over it (half-window overlap) and Gaussian blending — MONAI's
``sliding_window_inference``, as nnU-Net does; a slice smaller than the patch is padded to it with edge
values, as in training. Older models trained on whole slices get the whole slice in one pass (padded to a
multiple of ``2 ** depth``), or windows of ``tile_size`` for larger slices. A **3D model** slides a 3D
window of its patch over the whole volume the same way. Probabilities are ``sigmoid(logit / temperature)``
with the model's calibration temperature.

On a GPU, out-of-memory errors are handled by halving the batch, then the tile size, and finally by
moving to the CPU with a warning.

Work is a generator yielding :class:`~napari_softseg.progress.Progress` and returning its result, so the
viewer can run it in a worker and cancel it by closing the generator; output files are written only
whole (atomic rename), so a cancelled run leaves no partial file.

Example:
    >>> from napari_softseg.progress import drive
    >>> model = load_model("napari_softseg/data/models/mni_demo")  # doctest: +SKIP
    >>> probabilities = drive(predict_array(model, image))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.model.architecture import normalize_architecture
from napari_softseg.model.background import zero_far_from_body
from napari_softseg.model.device import DeviceChoice, resolve_device
from napari_softseg.model.model_io import LoadedModel, ModelConfig
from napari_softseg.model.normalization import Normalization, body_level
from napari_softseg.model.resampling import (
    resample_axes,
    resample_image,
    resample_planes,
    resample_probabilities_back,
    resampled_shape,
    value_range,
)
from napari_softseg.progress import Progress

DEFAULT_TILE_SIZE = 1024
DEFAULT_BATCH_SIZE = 8
MIN_TILE_SIZE = 64


def slice_stack(volume, indices, context: int):
    """2D network inputs for some slices of a channel-first volume (numpy array or torch tensor).

    Args:
        volume: ``(C, S, H, W)`` (slicing axis already moved to position 1).
        indices: Slice numbers to take.
        context: Neighbouring slices on each side added as channels (2.5D); indices past the ends repeat
            the edge slice.

    Returns:
        ``(len(indices), C * (2 * context + 1), H, W)``, the same kind (and device) as ``volume``, ordered
        channel-major (channel 0 at offsets -k … +k, then channel 1, ...).
    """
    c, s = volume.shape[:2]
    offsets = np.arange(-context, context + 1)
    idx = np.clip(np.asarray(list(indices))[:, None] + offsets[None, :], 0, s - 1)  # (N, 2k+1)
    shape = (len(idx), c * len(offsets), *volume.shape[2:])
    if isinstance(volume, np.ndarray):
        return np.ascontiguousarray(np.moveaxis(volume[:, idx], 1, 0).reshape(shape), dtype=np.float32)
    import torch

    taken = volume[:, torch.as_tensor(idx, device=volume.device)]  # (C, N, 2k+1, H, W)
    return taken.movedim(1, 0).reshape(shape)


#: Bytes of activations per pixel and per unit of U-Net width of one 2D slice, measured for the CPU
#: forward pass in inference mode (about nine full-resolution feature maps live at its peak).
ACTIVATION_BYTES_PER_PIXEL_CHANNEL = 40
#: Host memory the CPU prediction lets one batch's activations take (the user's RAM holds the scan, the
#: raters and the output beside it).
CPU_ACTIVATION_BUDGET = 128 * 2**20


def cpu_batch_size(config: ModelConfig, slice_shape, tile: int) -> int:
    """Slices per forward pass on the CPU whose activations fit :data:`CPU_ACTIVATION_BUDGET` (at least 1).

    On a CPU a larger batch is hardly faster, while each 512×512 slice of a width-16 U-Net holds about
    150 MB of activations at the peak of its forward pass. A model with a training patch runs a window of
    that size at a time (one per slice of the batch).
    """

    width = int(normalize_architecture(config.architecture)["base_channels"])
    window = config.patch_size or [tile] * len(slice_shape)
    pixels = 1
    for n, w in zip(slice_shape, window):
        pixels *= min(int(n), int(w), int(tile))
    per_slice = ACTIVATION_BYTES_PER_PIXEL_CHANNEL * pixels * width
    return max(1, CPU_ACTIVATION_BUDGET // max(per_slice, 1))


def _as_tensor_view(volume):
    """A torch tensor over ``volume`` without a copy (numpy axes of negative stride are flipped back: the
    statistics it serves do not depend on order)."""
    import torch

    if not isinstance(volume, np.ndarray):
        return volume
    flips = tuple(i for i, st in enumerate(volume.strides) if st < 0)
    return torch.from_numpy(np.flip(volume, flips) if flips else volume)


def _after_out_of_memory(exc: BaseException, device: str, cpu_message: str, source) -> None:
    """What a prediction does first on an error ``exc``: re-raise it unless the device ran out of memory; on the
    CPU (nothing smaller to fall back to) raise ``cpu_message``; on CUDA free the cache for a smaller retry."""
    if not is_out_of_memory(exc):
        raise exc
    if device == "cpu":
        raise SoftsegError(cpu_message, source) from None
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is a device out-of-memory error (CUDA or MPS)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def sliding_window_logits(network, x, roi, device: str, sw_batch_size: int = 4, overlap: float = 0.5):
    """Logits of ``x`` predicted window by window with Gaussian blending (:mod:`.sliding_window`, MONAI's
    ``sliding_window_inference`` without importing MONAI).

    Args:
        network: A 2D or 3D U-Net on ``device`` in eval mode.
        x: ``(N, C, *spatial)`` float32 tensor on ``device`` (already normalised).
        roi: Window size (one side per spatial axis; multiples of ``2 ** depth``). An input smaller than the
            window is padded (edge values) to it and cropped back.
        device: torch device string (mixed precision on CUDA).
        sw_batch_size: Windows per forward pass.
        overlap: Fraction of a window shared with its neighbour.

    Returns:
        ``(N, *spatial)`` float32 logits on ``device``.
    """
    import torch

    from napari_softseg.model.sliding_window import sliding_window

    use_amp = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
        out = sliding_window(lambda w: network(w).float(), x, roi, windows_per_pass=max(1, int(sw_batch_size)),
                             overlap=overlap)
    return out[:, 0].float()


def forward_logits(network, batch, device: str, tile_size: int = DEFAULT_TILE_SIZE, roi=None):
    """Logits of a batch of 2D inputs.

    With ``roi`` (the model's training patch), a window of that size slides over each slice with Gaussian
    blending, as the network was trained on such patches. Without it (models trained on whole slices),
    the whole slice goes through in one pass, padded at its ends (edge values) to a multiple of
    ``2 ** depth``; a slice with a side longer than ``tile_size`` is predicted in ``tile_size`` windows.

    Args:
        network: A :class:`~napari_softseg.model.unet.UNet2D` already on ``device`` and in eval mode.
        batch: ``(N, C, H, W)`` float32 tensor (or numpy array).
        device: torch device string.
        tile_size: Longest side processed in one piece (rounded down to a multiple of ``2 ** depth``).
        roi: Training patch ``(h, w)`` or ``None``.

    Returns:
        ``(N, H, W)`` float32 logits, a tensor on ``device``.
    """
    import torch
    import torch.nn.functional as F

    multiple = network.size_multiple
    x = torch.as_tensor(batch).to(device=device, dtype=torch.float32)
    n, _, h, w = x.shape
    tile = max(multiple, (int(tile_size) // multiple) * multiple)
    if roi is not None:
        roi = [max(multiple, min(int(r), tile) // multiple * multiple) for r in roi]
        return sliding_window_logits(network, x, roi, device, sw_batch_size=max(1, n))
    # a multiple of 2 ** depth, and at least twice it: the deepest level then keeps 2x2 values, which
    # instance normalisation needs (a one-voxel image would otherwise fail there)
    ph, pw = max(h + (-h) % multiple, 2 * multiple), max(w + (-w) % multiple, 2 * multiple)
    if ph > tile or pw > tile:
        return sliding_window_logits(network, x, (min(tile, ph), min(tile, pw)), device, sw_batch_size=max(1, n),
                                     overlap=0.25)
    if (ph, pw) != (h, w):
        x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
    use_amp = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
        out = network(x)[:, 0].float()
    return out[:, :h, :w]


def _check_image(config: ModelConfig, image: np.ndarray, source) -> None:
    if image.ndim != 4:
        raise SoftsegError(f"expected an image (C, X, Y, Z), got shape {image.shape}", source)
    if image.shape[0] != config.image_channels:
        raise SoftsegError(
            f"the model expects {config.image_channels} image channel(s) but this image has {image.shape[0]}",
            source,
        )
    if not np.all(np.isfinite(image)):
        raise SoftsegError("image contains NaN or infinite values", source)


def _predict(network, config: ModelConfig, image: np.ndarray, *, device, tile_size, batch_size, source,
             temperature: float | None, planes: _PlaneGrid | None = None) -> Generator[Progress, None, np.ndarray]:
    """Shared core of :func:`predict_logits` and :func:`predict_array` (see there); a 2D model with ``planes``
    predicts on the model's in-plane grid, batch by batch (:class:`_PlaneGrid`)."""
    import torch

    _check_image(config, image, source)
    device = resolve_device(device).device
    tile = int(tile_size or DEFAULT_TILE_SIZE)
    batch_size = max(1, int(batch_size))
    axis = config.slice_axis
    norm = Normalization.from_dict(config.normalization)
    network.eval()
    network.to(device)

    if config.dim == 3:
        return (yield from _predict_3d(network, config, image, norm=norm, device=device, batch_size=batch_size,
                                       source=source, temperature=temperature))

    def on(target: str):
        """The raw volume (C, S, H, W) on ``target``; batches are normalised as cut.

        On the CPU it is a numpy view of ``image`` (any strides: a layer's display-order view is not copied)
        and batches are gathered from it; on a GPU the volume is copied there once.
        """
        if target == "cpu":
            return np.moveaxis(np.asarray(image, dtype=np.float32), 1 + axis, 1)
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(target).movedim(1 + axis, 1)

    group = 2 * config.context_slices + 1
    roi = config.patch_size

    # the map is written batch by batch straight into its final (X, Y, Z) layout on the host: no
    # whole-volume copy at the end, and a GPU run keeps only the input volume on the device
    # with ``planes`` the batches are gathered and resampled on the host, whatever the device
    volume = on(device if planes is None else "cpu")
    stats = norm.statistics(_as_tensor_view(volume)) if planes is None else planes.stats
    output = np.empty(image.shape[1:], dtype=np.float32)
    result = np.moveaxis(output, axis, 0)  # (S, H, W) view
    n_slices = volume.shape[1]
    if device == "cpu":  # host memory is the user's RAM: keep the network's activations to a bounded size
        batch_size = min(batch_size, cpu_batch_size(config, volume.shape[2:] if planes is None else planes.grid,
                                                    tile))
    start = 0
    while start < n_slices:
        stop = min(start + batch_size, n_slices)
        try:
            # slice_stack gathers (numpy fancy index or an index tensor), i.e. a copy: normalising it in place
            # is safe
            batch = slice_stack(volume, range(start, stop), config.context_slices)
            if planes is not None:
                batch = planes.to_grid(batch)
            if isinstance(batch, np.ndarray):
                batch = torch.from_numpy(batch)
            batch = norm.apply_batch_(batch, stats, group)
            out = forward_logits(network, batch, device, tile, roi=roi) if roi else \
                forward_logits(network, batch, device, tile)
            out = (out if temperature is None else torch.sigmoid(out / temperature)).cpu().numpy()
            result[start:stop] = out if planes is None else planes.back(out, probabilities=temperature is not None)
        except Exception as exc:
            _after_out_of_memory(exc, device, "out of memory on the CPU; try a smaller --tile-size or --batch-size 1",
                                 source)
            if batch_size > 1:
                batch_size //= 2
            elif tile > MIN_TILE_SIZE:
                tile //= 2
            else:
                warnings.warn(f"{device} ran out of memory even with 1 slice and {tile}-pixel tiles; "
                              "continuing on the CPU (slower)", RuntimeWarning, stacklevel=3)
                device = "cpu"
                network.to(device)
                volume = on(device)
            yield Progress("slices", start, n_slices, f"out of memory: retrying with batch {batch_size}, "
                           f"tile {tile} on {device}")
            continue
        start = stop
        yield Progress("slices", start, n_slices, f"slice {start}/{n_slices} on {device}")
    return output


def _predict_3d(network, config: ModelConfig, image: np.ndarray, *, norm, device, batch_size, source, temperature
                ) -> Generator[Progress, None, np.ndarray]:
    """3D models: the whole normalised volume, predicted by a sliding window of the training patch."""
    import torch

    roi = config.patch_size or [64, 64, 64]
    sw_batch = max(1, int(batch_size) // 4)
    # one normalised copy of the volume (statistics from the caller's array, normalised in place) and the
    # sigmoid in place: MONAI's output and weight buffers are then the only other volumes held
    stats = norm.statistics(_as_tensor_view(np.asarray(image, dtype=np.float32)))
    while True:
        yield Progress("slices", 0, 1, f"sliding window {tuple(roi)} over {image.shape[1:]} on {device}")
        try:
            x = torch.from_numpy(np.array(image, dtype=np.float32, order="C", copy=True)).to(device)[None]
            x = norm.apply_batch_(x, stats)
            out = sliding_window_logits(network, x, roi, device, sw_batch_size=sw_batch)[0]
            del x
            if temperature is not None:
                with torch.inference_mode():  # the logits are an inference tensor: update them in place
                    out = out.div_(temperature).sigmoid_()
            result = out.cpu().numpy().astype(np.float32, copy=False)
            break
        except Exception as exc:
            _after_out_of_memory(exc, device, "out of memory on the CPU while predicting the volume", source)
            if sw_batch > 1:
                sw_batch //= 2
            else:
                warnings.warn(f"{device} ran out of memory even with one window at a time; continuing on the CPU "
                              "(slower)", RuntimeWarning, stacklevel=3)
                device = "cpu"
                network.to(device)
    yield Progress("slices", 1, 1, f"volume done on {device}")
    return result


def _on_model_grid(config: ModelConfig, image: np.ndarray, spacing, source
                   ) -> tuple[np.ndarray, tuple[int, ...] | None, tuple[int, ...]]:
    """``(image on the model's grid, input shape to resample back to or None, axes)``."""
    if config.target_spacing is None or spacing is None:
        return image, None, ()
    axes = resample_axes(config.dim, config.slice_axis)
    try:
        resampled, _ = resample_image(image, spacing, config.target_spacing, axes=axes)
    except SoftsegError as exc:
        raise SoftsegError(exc.message, source) from None
    if resampled is image:
        return image, None, axes
    return resampled, tuple(image.shape[1:]), axes


class _PlaneGrid:
    """A 2D model's in-plane grid, reached a batch of slices at a time.

    Resampling the whole scan to the model's grid, predicting there and resampling the map back held two
    grid-sized volumes beside the output (about one more scan of memory at 0.7 mm); here each batch of
    slices is resampled in-plane on its way in (cubic, clipped to each channel's range over the whole scan)
    and its map on its way back (linear), the same taps as the whole-volume resampling (equal up to float32
    rounding). Only the normalisation statistics need the whole scan on the grid: it is resampled once for
    them, before the output exists, and dropped.
    """

    def __init__(self, config: ModelConfig, image: np.ndarray, spacing, source):
        axis = config.slice_axis
        in_plane = [a for a in range(3) if a != axis]
        grid_shape = resampled_shape(image.shape[1:], spacing, config.target_spacing, resample_axes(2, axis))
        self.inputs = tuple(int(image.shape[1 + a]) for a in in_plane)
        self.grid = tuple(int(grid_shape[a]) for a in in_plane)
        self.group = 2 * config.context_slices + 1
        self.clips, self.stats = [], None
        if not self.resampled:
            return
        self.clips = [value_range(np.asarray(image[c])) for c in range(image.shape[0])]
        grid, _, _ = _on_model_grid(config, image, spacing, source)
        norm = Normalization.from_dict(config.normalization)
        self.stats = norm.statistics(_as_tensor_view(np.moveaxis(np.asarray(grid, dtype=np.float32), 1 + axis, 1)))

    @property
    def resampled(self) -> bool:
        """Whether the grid differs from the scan's."""
        return self.grid != self.inputs

    def to_grid(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C * group, H, W)`` slices of the scan on the model's grid ``(N, C * group, H', W')``."""
        n, k = batch.shape[:2]
        out = np.empty((n, k, *self.grid), np.float32)
        g = self.group
        for c, clip in enumerate(self.clips):
            planes = batch[:, c * g:(c + 1) * g].reshape(n * g, *self.inputs)
            out[:, c * g:(c + 1) * g] = resample_planes(planes, self.grid, order=3, clip=clip).reshape(n, g, *self.grid)
        return out

    def back(self, out: np.ndarray, *, probabilities: bool) -> np.ndarray:
        """``(N, H', W')`` network output back on the scan's grid (probabilities stay in ``[0, 1]``)."""
        return resample_planes(out, self.inputs, order=1, clip=(0.0, 1.0) if probabilities else None)


def _spaced(network, config, image, *, spacing, device, tile_size, batch_size, source, temperature
            ) -> Generator[Progress, None, np.ndarray]:
    """:func:`_predict` on the model's grid: resample the input to ``config.target_spacing`` and the result
    back (linear: a region ``p >= t`` of the result is the region of the model's grid, interpolated); a 2D
    model a few slices at a time (:class:`_PlaneGrid`)."""
    _check_image(config, image, source)
    if config.dim == 2 and config.target_spacing is not None and spacing is not None:
        planes = _PlaneGrid(config, image, spacing, source)
        return (yield from _predict(network, config, image, device=device, tile_size=tile_size,
                                    batch_size=batch_size, source=source, temperature=temperature,
                                    planes=planes if planes.resampled else None))
    grid, shape, axes = _on_model_grid(config, image, spacing, source)
    out = yield from _predict(network, config, grid, device=device, tile_size=tile_size, batch_size=batch_size,
                              source=source, temperature=temperature)
    if shape is None:
        return out
    del grid
    return resample_probabilities_back(out, shape, axes=axes)


def predict_logits(
    network,
    config: ModelConfig,
    image: np.ndarray,
    *,
    device: str | DeviceChoice = "cpu",
    tile_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    source: str | os.PathLike | None = None,
    spacing=None,
) -> Generator[Progress, None, np.ndarray]:
    """Logits of the network for every voxel of ``image`` (no temperature applied).

    The image is normalised, cut into slices and predicted on ``device``; only the result comes back.
    When the model has a ``target_spacing`` and ``spacing`` is given, the image is first resampled to the
    model's voxel size (cubic, anti-aliased when shrinking) and the logits are resampled back (linear)
    onto the image's grid; without ``spacing`` the image is taken to be at the model's voxel size.

    Args:
        network: The network (moved to ``device`` and put in eval mode here).
        config: Its config (normalisation, slicing, context).
        image: ``(C, X, Y, Z)`` raw intensities.
        device: Device name or resolved choice.
        tile_size: Longest slice side done in one piece (default 1024).
        batch_size: Slices per forward pass.
        source: File the image came from, for error messages.
        spacing: The image's voxel size ``(sx, sy, sz)`` in mm.

    Yields:
        ``Progress("slices", done, total)`` after each batch.

    Returns:
        ``float32 (X, Y, Z)`` logits on the image's grid.

    Raises:
        SoftsegError: Channel mismatch, NaN/inf in the image, or out of memory on the CPU.
    """
    return (yield from _spaced(network, config, image, spacing=spacing, device=device, tile_size=tile_size,
                               batch_size=batch_size, source=source, temperature=None))


def predict_array(
    model: LoadedModel,
    image: np.ndarray,
    *,
    device: str | DeviceChoice = "auto",
    tile_size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    source: str | os.PathLike | None = None,
    spacing=None,
) -> Generator[Progress, None, np.ndarray]:
    """Calibrated soft map ``float32 (X, Y, Z)`` in ``[0, 1]`` for a ``(C, X, Y, Z)`` image.

    ``sigmoid(logit / temperature)`` with the model's temperature, computed on the device, at the model's
    voxel size when it has one and ``spacing`` is given (probabilities resampled back linearly onto the
    image's grid). A model with ``background_margin_mm`` (body-region MR models) then gives p = 0 farther
    than that from the body (:mod:`~napari_softseg.model.background`). See :func:`predict_logits` for the
    arguments.
    """
    prob = yield from _spaced(model.network, model.config, image, spacing=spacing, device=device,
                              tile_size=tile_size, batch_size=batch_size, source=source,
                              temperature=model.config.temperature)
    margin = model.config.background_margin_mm
    if margin is not None:
        channel = np.asarray(image)[0]
        mm = spacing if spacing is not None else (model.config.target_spacing or (1.0, 1.0, 1.0))
        zero_far_from_body(prob, channel, mm, level=body_level(channel), margin_mm=margin)
    return prob


