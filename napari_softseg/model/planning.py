"""Self-configuration: a dataset fingerprint and the training plan made from it (after nnU-Net).

:func:`fingerprint` measures what matters for training — cases, raters, image channels, spatial sizes and
spacings, intensity statistics under the raters' foreground, and how much of each image is foreground.
:func:`make_plan` turns it into every choice a user would otherwise have to make:

- **2D or 3D.** A 3D U-Net on patches when the cases are true volumes: at least
  :data:`MIN_SLICES_3D` voxels along every axis and an anisotropy (largest / smallest spacing) of at most
  :data:`MAX_ANISOTROPY_3D`. Otherwise a 2D U-Net on slices cut along the axis with the coarsest spacing
  (or, for isotropic data, the one with the fewest voxels — the length-1 axis of single-slice data,
  whatever its orientation).
- **Patch and batch.** The median in-plane (3D: volume) size, rounded up to a multiple of ``2 ** depth``,
  shrunk along its longest side until it fits the device's compute budget per step (CPU:
  :data:`CPU_PIXELS_2D` pixels × :data:`CPU_BATCH_2D` slices; a GPU gets 16× more and a batch of 16).
- **Width and depth.** Downsample until the bottleneck is about 5-10 voxels wide (at most 5 levels);
  width 16 on the CPU, 32 on a GPU (nnU-Net's). (Width 8 was tried on the CPU for more steps per minute:
  it learned far slower per step — validation QUBIQ 0.50 vs 0.89 after 100 steps on a single-slice MRI set.)
- **Target spacing.** The voxel size the network learns and predicts at
  (:func:`~napari_softseg.model.resampling.target_spacing`, nnU-Net's rule: the median spacing, the
  low-resolution axis of anisotropic data at a lower percentile; a 2D plan resamples in-plane only).
  Training cases are resampled to it once, and prediction resamples every input to it and the
  probabilities back, so a 0.5 mm and a 2 mm scan of the same anatomy look alike to the network. Patch
  sizes are planned on the resampled shapes. ``--target-spacing native`` turns resampling off.
- **Normalisation.** Per-image z-score for MR-like intensities — over the body region (voxels above a
  tenth of the 99.5th percentile: not the air around a head) when the images have no negative values, over
  every voxel otherwise; a CT window (the 0.5-99.5 percentiles of the foreground, as nnU-Net) when the
  intensities look like Hounsfield units.
- **Schedule.** An epoch is a fixed number of optimizer steps (:data:`STEPS_PER_EPOCH_CPU` on the CPU,
  250 on a GPU) whatever the dataset size; a third of the patches are centred on a voxel that some rater
  marked. The learning rate decays (poly 0.9) to zero at the end of the time budget (``--max-minutes``, or
  the printed default) or of ``--epochs``.

Every choice can be overridden by the matching ``softseg train`` option; options that contradict each
other are refused with one line. The plan is printed at the start and stored in the model's
``config.json``.

Example:
    >>> import numpy as np
    >>> fp = fingerprint([np.zeros((1, 64, 80, 1), np.float32)], [np.ones((3, 64, 80, 1), np.uint8)],
    ...                  [(1.0, 1.0, 1.0)])
    >>> plan = make_plan(fp, cuda=False)
    >>> plan.dim, plan.slice_axis, plan.patch_size
    (2, 2, [64, 80])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.model.normalization import DEFAULT_CT_WINDOW
from napari_softseg.model.resampling import resampled_shape, target_spacing

MIN_SLICES_3D = 32
MAX_ANISOTROPY_3D = 3.0
CPU_PIXELS_2D = 128 * 128
CPU_BATCH_2D = 8
GPU_PIXELS_2D = 512 * 512
GPU_BATCH_2D = 16
CPU_VOXELS_3D = 48**3
CPU_BATCH_3D = 2
GPU_VOXELS_3D = 128**3
GPU_BATCH_3D = 2
STEPS_PER_EPOCH_CPU = 50
STEPS_PER_EPOCH_GPU = 250
DEFAULT_MINUTES_CPU = 10.0
DEFAULT_MINUTES_GPU = 20.0
LEARNING_RATE = 2e-3
FOREGROUND_OVERSAMPLING = 1 / 3
MAX_DEPTH = 5


@dataclass
class Fingerprint:
    """What the planner needs to know about a dataset.

    Attributes:
        n_cases: Training cases (validation cases excluded).
        rater_counts: Raters of each case.
        channels: Image channels.
        shapes: Spatial shape ``(X, Y, Z)`` of each case.
        spacings: Voxel size in mm of each case.
        intensity: Per channel, statistics of the voxels some rater marked: ``mean``, ``std``, ``p00_5``,
            ``p99_5`` and whether all values are whole numbers (``integer``), plus the image-wide
            ``p00_5_all``, ``p50_all`` and ``p99_5_all``.
        foreground_fraction: Mean share of voxels marked by at least one rater.
        soft_fraction: Mean share of the foreground where the raters disagree (0 < mean < 1).
    """

    n_cases: int
    rater_counts: list[int]
    channels: int
    shapes: list[list[int]]
    spacings: list[list[float]]
    intensity: list[dict]
    foreground_fraction: float
    soft_fraction: float

    @property
    def median_shape(self) -> list[int]:
        """Median spatial shape over the cases."""
        return [int(v) for v in np.median(np.asarray(self.shapes), axis=0)]

    @property
    def median_spacing(self) -> list[float]:
        """Median voxel size over the cases."""
        return [float(v) for v in np.median(np.asarray(self.spacings, dtype=float), axis=0)]

    @property
    def extents_mm(self) -> np.ndarray:
        """Physical extent ``shape × spacing`` (mm) of each case, ``(n_cases, 3)``."""
        return np.asarray(self.shapes, dtype=float) * np.asarray(self.spacings, dtype=float)

    def to_dict(self) -> dict:
        """JSON-ready form (shapes, spacings and extents summarised by their medians and ranges)."""
        shapes = np.asarray(self.shapes)
        extents = self.extents_mm
        return {
            "n_cases": self.n_cases,
            "raters": [int(min(self.rater_counts)), int(max(self.rater_counts))],
            "channels": self.channels,
            "median_shape": self.median_shape,
            "min_shape": [int(v) for v in shapes.min(axis=0)],
            "max_shape": [int(v) for v in shapes.max(axis=0)],
            "median_spacing": [round(v, 4) for v in self.median_spacing],
            "min_spacing": [round(float(v), 4) for v in np.min(np.asarray(self.spacings, float), axis=0)],
            "max_spacing": [round(float(v), 4) for v in np.max(np.asarray(self.spacings, float), axis=0)],
            "extent_mm_min": [round(float(v), 2) for v in extents.min(axis=0)],
            "extent_mm_max": [round(float(v), 2) for v in extents.max(axis=0)],
            "extent_mm_median": [round(float(v), 2) for v in np.median(extents, axis=0)],
            "intensity": self.intensity,
            "foreground_fraction": round(self.foreground_fraction, 5),
            "soft_fraction": round(self.soft_fraction, 5),
        }

    def summary(self) -> str:
        """One line for the console."""
        lo, hi = min(self.rater_counts), max(self.rater_counts)
        raters = str(lo) if lo == hi else f"{lo}-{hi}"
        shape = "x".join(str(v) for v in self.median_shape)
        spacing = "x".join(f"{v:g}" for v in self.median_spacing)
        return (f"dataset: {self.n_cases} training case(s), {raters} rater(s), {self.channels} channel(s), "
                f"median shape {shape} at {spacing} mm, foreground {100 * self.foreground_fraction:.1f}% "
                f"({100 * self.soft_fraction:.0f}% of it disputed)")


def fingerprint(images, masks, spacings) -> Fingerprint:
    """Measure a dataset.

    Args:
        images: Per case, a ``(C, X, Y, Z)`` image.
        masks: Per case, the raters' ``(R, X, Y, Z)`` masks.
        spacings: Per case, ``(sx, sy, sz)`` in mm.

    Returns:
        The fingerprint.

    Raises:
        SoftsegError: No cases, or cases with different channel counts.
    """
    if not images:
        raise SoftsegError("no training cases to plan from")
    channels = {int(im.shape[0]) for im in images}
    if len(channels) > 1:
        raise SoftsegError(f"cases have different channel counts ({sorted(channels)}); a model needs one")
    n_channels = channels.pop()
    rng = np.random.default_rng(0)
    samples: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    whole: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    fg_fractions, soft_fractions = [], []
    for image, mask in zip(images, masks):
        any_rater = mask.max(axis=0) > 0
        mean = mask.mean(axis=0, dtype=np.float32)
        fg_fractions.append(float(any_rater.mean()))
        n_fg = int(any_rater.sum())
        soft_fractions.append(float(((mean > 0) & (mean < 1)).sum()) / n_fg if n_fg else 0.0)
        for c in range(n_channels):
            values = image[c][any_rater] if n_fg else image[c].ravel()
            if values.size > 20000:
                values = values[rng.choice(values.size, 20000, replace=False)]
            samples[c].append(values.astype(np.float64))
            flat = image[c].ravel()
            whole[c].append(flat[rng.choice(flat.size, min(flat.size, 20000), replace=False)].astype(np.float64))
    intensity = []
    for c in range(n_channels):
        v, a = np.concatenate(samples[c]), np.concatenate(whole[c])
        intensity.append({
            "mean": float(v.mean()), "std": float(v.std()),
            "p00_5": float(np.percentile(v, 0.5)), "p99_5": float(np.percentile(v, 99.5)),
            "p00_5_all": float(np.percentile(a, 0.5)),
            "p50_all": float(np.percentile(a, 50)),
            "p99_5_all": float(np.percentile(a, 99.5)),
            "integer": bool(np.all(np.equal(np.mod(a, 1), 0))),
        })
    return Fingerprint(
        n_cases=len(images),
        rater_counts=[int(m.shape[0]) for m in masks],
        channels=n_channels,
        shapes=[[int(v) for v in im.shape[1:]] for im in images],
        spacings=[[float(v) for v in sp] for sp in spacings],
        intensity=intensity,
        foreground_fraction=float(np.mean(fg_fractions)),
        soft_fraction=float(np.mean(soft_fractions)),
    )


@dataclass
class Plan:
    """Every choice of a training run (see the module docstring for how each is made).

    Attributes:
        dim: 2 (a U-Net on slices) or 3 (on volume patches).
        slice_axis: Axis cut into slices (2D).
        context_slices: 2.5D context slices on each side (2D; 0 unless asked for).
        patch_size: Training patch (2 or 3 sides); prediction slides a window of this size.
        batch_size: Patches per optimizer step.
        base_channels: U-Net width at full resolution.
        depth: U-Net downsamplings.
        norm: Normalisation layers.
        normalization: ``"zscore"`` or ``"ct"``.
        ct_window: CT window (``"ct"``).
        normalization_region: ``"all"`` or ``"body"``: the voxels a z-score is taken over.
        target_spacing: Voxel size ``(sx, sy, sz)`` in mm the network trains and predicts at (a 2D plan
            keeps the slice axis's median; it is never resampled); ``None``: the data's own grid.
        steps_per_epoch: Optimizer steps between validations/checkpoints.
        learning_rate: Peak AdamW learning rate.
        max_minutes: Time budget; ``None`` only when ``epochs`` fixes the schedule.
        epochs: Fixed number of epochs (``--epochs``), or ``None``: as many as the budget allows.
        foreground_oversampling: Share of patches centred on a voxel some rater marked.
        amp: Mixed precision (CUDA).
        device: The device it was planned for.
        sources: For each field, ``"plan"`` or ``"option"`` (given by the user), and why.
    """

    dim: int
    slice_axis: int
    context_slices: int
    patch_size: list[int]
    batch_size: int
    base_channels: int
    depth: int
    norm: str
    normalization: str
    ct_window: list[float]
    steps_per_epoch: int
    learning_rate: float
    max_minutes: float | None
    epochs: int | None
    foreground_oversampling: float
    amp: bool
    device: str
    sources: dict = field(default_factory=dict)
    normalization_region: str = "all"
    target_spacing: list[float] | None = None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """Inverse of :meth:`to_dict`."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def lines(self) -> list[str]:
        """The plan as console lines (each choice, and ``(option)`` where the user set it)."""
        def tag(name):
            return " (option)" if self.sources.get(name) == "option" else ""

        patch = "x".join(str(v) for v in self.patch_size)
        if self.dim == 3:
            shape = f"3D U-Net on {patch} patches"
        else:
            ctx = f", 2.5D with {self.context_slices} slice(s) each side" if self.context_slices else ""
            shape = f"2D U-Net on slices along axis {self.slice_axis}{tag('slice_axis')}, {patch} patches{ctx}"
        why = self.sources.get("dim_reason", "")
        if self.max_minutes is None:
            schedule = f"{self.epochs} epochs{tag('epochs')} of {self.steps_per_epoch} steps (no time budget)"
        else:
            budget = "--max-minutes" if self.sources.get("max_minutes") == "option" else "default budget; set --max-minutes"
            cap = f", at most {self.epochs} epochs{tag('epochs')}" if self.epochs else ""
            schedule = f"{self.steps_per_epoch} steps per epoch until {self.max_minutes:g} min ({budget}){cap}"
        norm = self.normalization if self.normalization != "ct" else (
            f"ct window {self.ct_window[0]:g}..{self.ct_window[1]:g}")
        if self.normalization == "zscore" and self.normalization_region == "body":
            norm += " over the body (not the air)"
        if self.target_spacing is None:
            grid = "the data's own voxel grid (no resampling)"
        else:
            grid = "x".join(f"{v:g}" for v in self.target_spacing) + " mm (cases and inputs resampled to it)"
        return [
            f"plan: {shape}{tag('dim')}" + (f" [{why}]" if why and not tag("dim") else ""),
            f"plan: batch {self.batch_size}{tag('batch_size')}, width {self.base_channels}{tag('base_channels')}, "
            f"depth {self.depth}{tag('depth')}, {self.norm} norm, intensities {norm}{tag('normalization')}, "
            f"{round(100 * self.foreground_oversampling)}% foreground-centred patches"
            + (", mixed precision" if self.amp else ""),
            f"plan: {schedule}; AdamW lr {self.learning_rate:g}{tag('learning_rate')}, poly decay to 0 at the end",
            f"plan: voxel size {grid}{tag('target_spacing')}",
        ]


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-int(n) // multiple) * multiple)


def _fit_patch(shape: list[int], spacing: list[float], budget: int, multiple: int) -> list[int]:
    """Round ``shape`` up to ``multiple`` and shrink its (physically) longest side until it fits ``budget``."""
    patch = [_round_up(n, multiple) for n in shape]
    while math.prod(patch) > budget:
        extents = [p * s for p, s in zip(patch, spacing)]
        order = sorted(range(len(patch)), key=lambda i: (-extents[i], -patch[i]))
        for i in order:
            if patch[i] > multiple:
                patch[i] -= multiple
                break
        else:
            break
    return patch


def _depth_for(patch: list[int]) -> int:
    return int(min(MAX_DEPTH, max(2, math.floor(math.log2(max(1, min(patch)) / 5)))))


def choose_dim(fp: Fingerprint) -> tuple[int, int, str]:
    """``(dim, slice_axis, reason)`` from the median shape and spacing."""
    shape, spacing = fp.median_shape, fp.median_spacing
    anisotropy = max(spacing) / max(min(spacing), 1e-6)
    if min(shape) >= MIN_SLICES_3D and anisotropy <= MAX_ANISOTROPY_3D:
        return 3, 2, (f"volumes of at least {MIN_SLICES_3D} voxels per axis, anisotropy {anisotropy:.1f} "
                      f"<= {MAX_ANISOTROPY_3D:g}")
    if anisotropy > 1.5:
        axis = int(np.argmax(spacing))
        reason = f"anisotropy {anisotropy:.1f}: slices across the {spacing[axis]:g} mm axis"
    else:
        fewest = min(shape)
        axis = max(i for i, n in enumerate(shape) if n == fewest)  # the last of equals (Z for RAS data)
        reason = ("one slice per case" if fewest == 1 else
                  f"{fewest} slices (< {MIN_SLICES_3D} for 3D)")
    return 2, axis, reason


def make_plan(fp: Fingerprint, *, cuda: bool = False, device: str | None = None, **overrides) -> Plan:
    """Plan a training run from a fingerprint; ``overrides`` are options the user gave (``None``: plan it).

    Args:
        fp: The dataset fingerprint.
        cuda: Plan for a CUDA GPU (larger patches and batches, wider network, mixed precision).
        device: Device name, for the record (default ``"cuda"`` or ``"cpu"``).
        **overrides: ``dim``, ``slice_axis``, ``context_slices``, ``patch_size`` (one side for all axes, or a
            list), ``batch_size``, ``base_channels``, ``depth``, ``norm``, ``normalization``, ``ct_window``,
            ``steps_per_epoch``, ``learning_rate``, ``max_minutes``, ``epochs``.

    Returns:
        The plan.

    Raises:
        SoftsegError: Options that contradict each other or the data (one line saying which).
    """
    o = {k: v for k, v in overrides.items() if v is not None}
    sources = {k: "option" for k in o}
    dim, slice_axis, reason = choose_dim(fp)
    if "dim" in o:
        if o["dim"] not in (2, 3):
            raise SoftsegError(f"--dim must be 2 or 3, got {o['dim']}")
        dim = int(o["dim"])
    sources["dim_reason"] = reason
    if dim == 3:
        for name, flag in (("context_slices", "--context-slices"), ("slice_axis", "--slice-axis")):
            if name in o and not (name == "context_slices" and o[name] == 0):
                raise SoftsegError(f"{flag} is a 2D option and conflicts with --dim 3 (a 3D U-Net sees whole volumes)")
        thin = min(min(s) for s in fp.shapes)
        if thin < 8:
            raise SoftsegError(f"--dim 3 needs volumes, but a case has only {thin} voxel(s) along an axis; use --dim 2")
        context, slice_axis = 0, 2
    else:
        slice_axis = int(o.get("slice_axis", slice_axis))
        context = int(o.get("context_slices", 0))
        if context < 0:
            raise SoftsegError(f"--context-slices must be >= 0, got {context}")
    if o.get("normalization") not in (None, "ct") and "ct_window" in o:
        raise SoftsegError(f"--ct-window conflicts with --normalization {o['normalization']} (it is for ct only)")

    target = _plan_target_spacing(fp, o.get("target_spacing"), dim, slice_axis)
    shape, spacing = fp.median_shape, fp.median_spacing
    if target is not None:  # patches are cut from the resampled cases
        shape = [int(v) for v in np.median([resampled_shape(s, sp, target) for s, sp in zip(fp.shapes, fp.spacings)],
                                           axis=0)]
        spacing = list(target)
    if dim == 2:
        axes = [a for a in range(3) if a != slice_axis]
        shape, spacing = [shape[a] for a in axes], [spacing[a] for a in axes]
        budget = (GPU_PIXELS_2D if cuda else CPU_PIXELS_2D)
        batch = GPU_BATCH_2D if cuda else CPU_BATCH_2D
    else:
        budget = GPU_VOXELS_3D if cuda else CPU_VOXELS_3D
        batch = GPU_BATCH_3D if cuda else CPU_BATCH_3D
    depth = o.get("depth")
    multiple = 2 ** (depth if depth is not None else 4)
    if "patch_size" in o:
        given = o["patch_size"]
        patch = [int(given)] * dim if isinstance(given, (int, np.integer)) else [int(v) for v in given]
        if len(patch) != dim:
            raise SoftsegError(f"--patch-size needs 1 or {dim} values for a {dim}D plan, got {len(patch)}")
    else:
        patch = _fit_patch(shape, spacing, budget, multiple)
    if depth is None:
        depth = _depth_for(patch)
        if "patch_size" not in o:
            patch = _fit_patch(shape, spacing, budget, 2**depth)
    depth = int(depth)
    if not 1 <= depth <= 7:
        raise SoftsegError(f"--depth must be between 1 and 7, got {depth}")
    if min(patch) < 2**depth or any(p % 2**depth for p in patch):
        raise SoftsegError(f"--patch-size {'x'.join(map(str, patch))} must be a multiple of 2**depth = {2**depth} "
                           f"(depth {depth})")
    if "batch_size" not in o and "patch_size" in o:
        batch = max(1, min(batch * 4, round(batch * budget / math.prod(patch))))

    info = fp.intensity[0] if fp.intensity else {}
    looks_ct = bool(info) and info.get("p00_5_all", 0.0) <= -500 and info.get("integer", False)
    normalization = o.get("normalization", "ct" if looks_ct else "zscore")
    if "ct_window" in o:
        window = [float(v) for v in o["ct_window"]]
    elif looks_ct:
        window = [float(info["p00_5"]), float(info["p99_5"])]
        if not window[1] > window[0]:
            window = [-160.0, 240.0]
    else:

        window = list(DEFAULT_CT_WINDOW)

    region = o.get("normalization_region")
    if region is None:
        region = "body" if normalization == "zscore" and bool(info) and info.get("p00_5_all", -1.0) >= 0 else "all"

    epochs = o.get("epochs")
    if epochs is not None and epochs < 1:
        raise SoftsegError(f"--epochs must be at least 1, got {epochs}")
    max_minutes = o.get("max_minutes")
    if max_minutes is None and epochs is None:
        max_minutes = DEFAULT_MINUTES_GPU if cuda else DEFAULT_MINUTES_CPU
    steps = int(o.get("steps_per_epoch", STEPS_PER_EPOCH_GPU if cuda else STEPS_PER_EPOCH_CPU))
    if steps < 1:
        raise SoftsegError(f"--steps-per-epoch must be at least 1, got {steps}")
    batch = int(o.get("batch_size", batch))
    if batch < 1:
        raise SoftsegError(f"--batch-size must be at least 1, got {batch}")
    width = 32 if cuda else 16
    return Plan(
        dim=dim, slice_axis=slice_axis, context_slices=context, patch_size=[int(p) for p in patch],
        batch_size=batch, base_channels=int(o.get("base_channels", width)), depth=depth,
        norm=o.get("norm", "instance"), normalization=normalization, ct_window=window, steps_per_epoch=steps,
        learning_rate=float(o.get("learning_rate", LEARNING_RATE)), max_minutes=max_minutes, epochs=epochs,
        foreground_oversampling=float(o.get("foreground_oversampling", FOREGROUND_OVERSAMPLING)), amp=bool(cuda),
        device=device or ("cuda" if cuda else "cpu"), sources=sources, normalization_region=region,
        target_spacing=None if target is None else [round(float(v), 6) for v in target],
    )


def _plan_target_spacing(fp: Fingerprint, given, dim: int, slice_axis: int) -> tuple[float, float, float] | None:
    """The plan's target spacing: nnU-Net's rule, or the user's (one value: every resampled axis; ``"native"``:
    none). A 2D plan's slice axis always keeps the data's median."""
    if isinstance(given, str):
        if given.lower() != "native":
            raise SoftsegError(f"--target-spacing must be 'native' or 1 or 3 positive numbers in mm, got {given!r}")
        return None
    planned = target_spacing(fp.spacings, fp.shapes, dim=dim, slice_axis=slice_axis if dim == 2 else None)
    if given is None:
        return planned
    values = [float(v) for v in (given if isinstance(given, (list, tuple)) else [given])]
    if len(values) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in values):
        raise SoftsegError(f"--target-spacing must be 'native' or 1 or 3 positive numbers in mm, got {given!r}")
    values = values * 3 if len(values) == 1 else values
    if dim == 2:
        values[slice_axis] = planned[slice_axis]
    return tuple(values)
