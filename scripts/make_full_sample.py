"""Build the bundled whole-head sample ``napari_softseg/data/mni_head/`` (deterministic).

Usage (from the repository root; needs nilearn, whose wheel carries the MNI ICBM152 2009a template)::

    python scripts/make_full_sample.py --overwrite

One 3D case in the QUBIQ layout (``Training/case01/image.nii.gz`` + ``task01_seg01 … 05.nii.gz``): a whole
head — brain, CSF, skull, scalp, eyes, sinuses, face and neck, and the air around them — over the
template's full field of view (197 × 233 × 189 mm) at 1.5 mm isotropic, axial, 131 × 155 × 126 voxels.

nilearn ships only the **skull-stripped** T1 template (and grey/white-matter probability maps; no whole-head
T1, no CSF map, no brain mask), so everything outside the brain is *simulated* around the template's brain
by :func:`build_head`: layers grown outward from the intracranial volume (CSF 1–3 mm, skull 4–9 mm with
dark tables and brighter diploë, scalp 3.5–9 mm plus temporal muscle, with a bright subcutaneous fat layer
and skin), a face and neck below the forehead, eyes in bright orbital fat, and air-filled nasal and
maxillary sinuses. Intensities follow T1 contrast (fat about as bright as white matter, bone and air
dark). The brain itself is the real template.

The case gets a mild pose change (rotation, scaling, shift, a smooth 1.5 mm elastic deformation), a mild
gamma, bias field and Rician noise. The target (task 1) is the **white matter**; the five raters are
simulated exactly as for the bundled slabs (``scripts/make_mni_demo.py``: its ``RATERS`` thresholds and
habits, threshold jitter, 1 mm displacement fields, 1.5 mm smoothing, 40 mm² islands), generalised here to
any voxel size by :func:`simulate_raters`. Every parameter is written to ``recipe.json``.

``scripts/eval_whole_head.py`` builds the same head, unposed, at any voxel size with other seeds, to
measure a model on whole heads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from make_mni_demo import (  # noqa: E402  (the bundled slabs' raters, licence and geometry helpers)
    LICENSE_TEXT,
    RATERS,
    SMALL_ISLAND_VOXELS,
    SMOOTH_MM,
    SPACING,
    THRESHOLD_JITTER,
    pairwise_dice,
    rotation,
    template_paths,
)

from napari_softseg.datasets.synthetic import smooth_random_field  # noqa: E402

DEFAULT_OUT = REPO / "napari_softseg" / "data" / "mni_head"
CASE = "Training/case01"
SEED = 20091  # the sample; eval_whole_head.py uses other seeds
HEAD_SEED = 152  # the simulated extracranial anatomy, shared by the sample and the evaluation heads
SPACING_MM = 1.5
#: Smallest island the hasty rater keeps, in mm² of a slice (10 voxels of the slabs' 2 × 2 mm).
SMALL_ISLAND_MM2 = SMALL_ISLAND_VOXELS * SPACING[0] * SPACING[1]
#: Brain: the skull-stripped template above this (nilearn's ``load_mni152_brain_mask`` rule), filled.
BRAIN_LEVEL = 0.2
#: Simulated T1 intensities (template scale: white matter ≈ 0.87, grey matter ≈ 0.65, ventricles ≈ 0.27).
TISSUE = {"csf": 0.25, "bone": 0.07, "diploe": 0.5, "muscle": 0.33, "fat": 0.92, "skin": 0.55,
          "vitreous": 0.15, "air": 0.0}
CLOSE_MM = 6.0  # the intracranial volume is the brain closed over its sulci
FACE_Z_MM = -15.0  # below this MNI height the head is a face and neck, not a shell around the brain
EYE = {"x_mm": 31.0, "z_mm": -38.0, "radius_mm": 12.0, "orbit_fat_mm": 5.0}
IMAGE_SCALE = 220.0  # stored as uint8: round(magnitude × 220), as the bundled slabs


@dataclass
class Templates:
    """The 1 mm template: T1 and white-matter probability in [0, 1] (float32) and their affine."""

    t1: np.ndarray
    wm: np.ndarray
    affine: np.ndarray


@dataclass
class Head:
    """The simulated whole head at the template's 1 mm grid.

    Attributes:
        image: Noise-free T1-like image, float32 in [0, 1] (the template inside the brain).
        brain: The template's brain mask (``t1 > BRAIN_LEVEL``, filled).
        params: What was drawn and fixed, for recipes.
    """

    image: np.ndarray
    brain: np.ndarray
    params: dict


def load_templates() -> Templates:
    """The skull-stripped 1 mm T1 template and white-matter map from nilearn's wheel (nothing downloaded)."""
    import nibabel as nib

    t1_path, wm_path = template_paths()
    t1_img, wm_img = nib.load(t1_path), nib.load(wm_path)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    if not np.allclose(affine, wm_img.affine) or not np.allclose(np.abs(np.diag(affine)[:3]), 1.0):
        raise SystemExit(f"{t1_path}: expected 1 mm axis-aligned T1 and WM templates on one grid")
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(wm_img.dataobj, dtype=np.float32) / 255.0
    return Templates(t1=t1, wm=wm, affine=affine)


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """Holes filled in 3D and then in every axial slice (the neck is open at the volume's bottom)."""
    from scipy.ndimage import binary_fill_holes

    mask = binary_fill_holes(mask)
    for k in range(mask.shape[2]):
        mask[:, :, k] = binary_fill_holes(mask[:, :, k])
    return mask


def _ellipsoid(axes: tuple, centre, radii) -> np.ndarray:
    x, y, z = axes
    return (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((z - centre[2]) / radii[2]) ** 2) <= 1.0


def _front_y(head: np.ndarray, axes: tuple, x_mm: float, z_mm: float) -> float:
    """Most anterior head voxel (MNI y, mm) on the line at ``x_mm``, ``z_mm``."""
    i, k = int(np.argmin(np.abs(axes[0][:, 0, 0] - x_mm))), int(np.argmin(np.abs(axes[2][0, 0, :] - z_mm)))
    ys = np.flatnonzero(head[i, :, k])
    if ys.size == 0:
        raise SystemExit(f"the simulated head has no voxel at x={x_mm} z={z_mm} mm")
    return float(axes[1][0, ys[-1], 0])


def build_head(templates: Templates, seed: int = HEAD_SEED) -> Head:
    """Simulate skull, scalp, face, neck and air around the template's brain (1 mm grid, deterministic).

    Args:
        templates: From :func:`load_templates`.
        seed: Seed of the smooth thickness and texture fields.

    Returns:
        The noise-free whole head and the brain mask.
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    t1 = templates.t1
    shape = t1.shape
    origin, step = templates.affine[:3, 3], np.diag(templates.affine)[:3]
    axes = tuple((origin[a] + step[a] * np.arange(n)).reshape([-1 if b == a else 1 for b in range(3)])
                 for a, n in enumerate(shape))
    brain = ndi.binary_fill_holes(t1 > BRAIN_LEVEL)
    grown = ndi.distance_transform_edt(~brain) <= CLOSE_MM
    icv = ndi.binary_fill_holes((ndi.distance_transform_edt(grown) > CLOSE_MM) | brain)
    d = ndi.distance_transform_edt(~icv).astype(np.float32)  # mm outside the intracranial volume

    def field(mean, sd, lo, hi, correlation=40.0):
        return np.clip(mean + sd * smooth_random_field(rng, shape, (correlation,) * 3), lo, hi).astype(np.float32)

    csf_t = field(2.0, 0.5, 1.0, 3.0)
    skull_t = field(6.5, 1.5, 4.0, 9.0)
    temporalis = 6.0 * np.clip((np.abs(axes[0]) - 45.0) / 20.0, 0.0, 1.0) * np.exp(-((axes[2] - 10.0) / 30.0) ** 2)
    scalp_t = field(6.0, 1.5, 3.5, 9.0) + temporalis.astype(np.float32)
    fat_t = field(3.0, 1.0, 1.5, 5.0)
    inner, bone = csf_t, csf_t + skull_t
    head = d <= bone + scalp_t

    # face and neck: the head's cross-section at FACE_Z_MM, narrowing by up to 20 % (left-right) and 10 %
    # (front-back) towards the bottom of the volume
    k0 = int(np.argmin(np.abs(axes[2][0, 0, :] - FACE_Z_MM)))
    section = ndi.binary_fill_holes(head[:, :, k0]).astype(np.float32)
    centre = np.array(ndi.center_of_mass(section))
    for k in range(k0):
        shrink = (k0 - k) / max(k0, 1)
        zoom = np.array([1.0 - 0.20 * shrink, 1.0 - 0.10 * shrink])
        scaled = ndi.affine_transform(section, 1.0 / zoom, offset=centre - centre / zoom, order=1)
        head[:, :, k] |= scaled >= 0.5
    head = _fill_slices(ndi.gaussian_filter(head.astype(np.float32), 1.5) >= 0.5)
    lower = head & (axes[2] < FACE_Z_MM) & (d > bone)
    e = ndi.distance_transform_edt(head).astype(np.float32)  # mm inside the head from the air

    image = np.zeros(shape, dtype=np.float32)
    image[head] = TISSUE["muscle"]
    texture = smooth_random_field(rng, shape, (12.0,) * 3)
    image[lower & (texture > 1.2)] = TISSUE["fat"]  # fat between the muscles of face and neck
    image[head & (e <= 1.5 + fat_t)] = TISSUE["fat"]  # subcutaneous fat
    image[head & (e <= 1.5)] = TISSUE["skin"]

    cavities = {}
    for name, (x, z, back, radii) in {"nasal": (0.0, -48.0, 25.0, (7.0, 22.0, 16.0)),
                                      "maxillary_left": (-24.0, -55.0, 24.0, (11.0, 15.0, 13.0)),
                                      "maxillary_right": (24.0, -55.0, 24.0, (11.0, 15.0, 13.0))}.items():
        centre_mm = (x, _front_y(head, axes, x, z) - back, z)
        cavities[name] = {"centre_mm": [round(c, 1) for c in centre_mm], "radii_mm": list(radii)}
        image[_ellipsoid(axes, centre_mm, radii) & (d > bone) & (e > 3.0)] = TISSUE["air"]
    eyes = []
    r, fat_r = EYE["radius_mm"], EYE["radius_mm"] + EYE["orbit_fat_mm"]
    for x in (-EYE["x_mm"], EYE["x_mm"]):
        centre_mm = (x, _front_y(head, axes, x, EYE["z_mm"]) - r - 2.0, EYE["z_mm"])
        eyes.append([round(c, 1) for c in centre_mm])
        behind = axes[1] < centre_mm[1] + 3.0
        image[_ellipsoid(axes, centre_mm, (fat_r,) * 3) & behind & (d > bone)] = TISSUE["fat"]
        image[_ellipsoid(axes, centre_mm, (r,) * 3) & (d > bone)] = TISSUE["vitreous"]

    shell = (d > inner) & (d <= bone)
    depth = (d - inner) / skull_t
    diploe = shell & (depth > 0.3) & (depth < 0.7)
    image[shell] = TISSUE["bone"]
    image[diploe] = (TISSUE["diploe"] * (1.0 + 0.1 * texture[diploe])).astype(np.float32)
    image[(d <= inner) | icv] = TISSUE["csf"]
    inside = icv & (t1 > 0)
    image[inside] = np.maximum(t1[inside], TISSUE["csf"])
    image = np.clip(ndi.gaussian_filter(image, 0.6), 0.0, 1.0).astype(np.float32)
    params = {
        "seed": seed,
        "brain_mask": f"template T1 > {BRAIN_LEVEL}, holes filled",
        "intracranial_volume": f"brain closed by {CLOSE_MM} mm, filled",
        "tissue_intensity": TISSUE,
        "thickness_mm": {"csf": [1.0, 3.0], "skull": [4.0, 9.0], "scalp": [3.5, 9.0], "temporalis_extra": 6.0,
                         "subcutaneous_fat": [1.5, 5.0], "skin": 1.5},
        "face_below_mni_z_mm": FACE_Z_MM,
        "eyes_centre_mm": eyes,
        "eye": EYE,
        "air_cavities": cavities,
        "volumes_ml": {"head": round(float(head.sum()) / 1000.0, 1), "brain": round(float(brain.sum()) / 1000.0, 1),
                       "intracranial": round(float(icv.sum()) / 1000.0, 1)},
    }
    return Head(image=image, brain=brain, params=params)


def fov_geometry(spacing: float, templates: Templates) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """Shape, affine and centre (mm) of the template's whole field of view at ``spacing`` mm, axial.

    At 1 mm this is the template's own grid (197 × 233 × 189).
    """
    n1 = np.array(templates.t1.shape)
    step = np.diag(templates.affine)[:3]
    centre = templates.affine[:3, 3] + step * (n1 - 1) / 2.0
    shape = tuple(int(v) for v in np.floor(n1 * np.abs(step) / spacing + 0.5))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = centre - (np.array(shape) - 1) / 2.0 * spacing
    return shape, affine, centre


class Resampling:
    """Where each output voxel reads the 1 mm template: ``matrix @ index + offset`` (template voxels)
    plus an optional smooth displacement in mm; sampled in axial chunks so big grids stay affordable."""

    def __init__(self, templates: Templates, shape, affine, centre, *, rotation_deg=(0.0, 0.0, 0.0),
                 scale=(1.0, 1.0, 1.0), shift_mm=(0.0, 0.0, 0.0), displacement_mm: np.ndarray | None = None):
        pose = rotation(*rotation_deg) @ np.diag(scale)
        to_voxel = np.linalg.inv(templates.affine)
        self.shape = tuple(shape)
        self.linear = to_voxel[:3, :3]
        self.matrix = self.linear @ pose @ affine[:3, :3]
        self.offset = (self.linear @ (pose @ (affine[:3, 3] - centre) + centre + np.asarray(shift_mm))
                       + to_voxel[:3, 3])
        self.displacement_mm = displacement_mm

    def sample(self, volume: np.ndarray, order: int, extra_mm: np.ndarray | None = None, mode: str = "constant",
               chunk_voxels: int = 1 << 22) -> np.ndarray:
        """``volume`` (template grid) read at every output voxel, float32 ``shape``.

        Outside the template it is zero (``mode="constant"``) or the nearest edge value (``"nearest"``: the
        neck goes on below the template's last slice).
        """
        from scipy.ndimage import map_coordinates

        nx, ny, nz = self.shape
        out = np.empty(self.shape, dtype=np.float32)
        step = max(1, chunk_voxels // (nx * ny))
        for z0 in range(0, nz, step):
            z1 = min(nz, z0 + step)
            index = np.empty((3, nx, ny, z1 - z0))
            index[0] = np.arange(nx)[:, None, None]
            index[1] = np.arange(ny)[None, :, None]
            index[2] = np.arange(z0, z1)[None, None, :]
            vox = np.einsum("ij,j...->i...", self.matrix, index) + self.offset[:, None, None, None]
            for move in (self.displacement_mm, extra_mm):
                if move is not None:
                    vox += np.einsum("ij,j...->i...", self.linear, move[:, :, :, z0:z1])
            out[:, :, z0:z1] = map_coordinates(volume, vox, order=order, mode=mode, cval=0.0)
        return out


def antialias(volume: np.ndarray, spacing: float) -> np.ndarray:
    """The 1 mm map blurred to the output voxel size before sampling (σ = 0.35 voxel, as the slabs)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(volume, 0.35 * spacing) if spacing > 1.0 else volume


def simulate_raters(wm: np.ndarray, resampling: Resampling, spacing: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, list[dict]]:
    """Five raters of the white matter, as ``make_mni_demo.make_case`` simulates them, at any voxel size.

    Each rater thresholds the (anti-aliased) probability map read through its own smooth 1 mm displacement
    field (15 mm smoothness); ``RATERS`` gives each one's threshold (± ``THRESHOLD_JITTER``) and habit:
    "smooth" reads the map blurred by ``SMOOTH_MM`` in-plane, "misses-small" drops islands smaller than
    :data:`SMALL_ISLAND_MM2` slice by slice.

    Returns:
        ``uint8 (R, X, Y, Z)`` masks and one recipe row per rater.
    """
    from scipy.ndimage import gaussian_filter, label

    shape = resampling.shape
    correlation = (15.0 / spacing,) * 3
    min_voxels = int(math.ceil(SMALL_ISLAND_MM2 / (spacing * spacing)))
    masks = np.zeros((len(RATERS),) + shape, dtype=np.uint8)
    rows = []
    for r, (threshold, habit) in enumerate(RATERS):
        level = threshold + rng.uniform(-THRESHOLD_JITTER, THRESHOLD_JITTER)
        wobble = np.stack([smooth_random_field(rng, shape, correlation) for _ in range(3)])
        seen = resampling.sample(wm, order=1, extra_mm=wobble)
        del wobble
        if habit == "smooth":
            seen = gaussian_filter(seen, (SMOOTH_MM / spacing, SMOOTH_MM / spacing, 0.0))
        mask = seen >= level
        if habit == "misses-small":
            for z in range(shape[2]):  # raters outline slice by slice
                labels, n = label(mask[:, :, z])
                sizes = np.bincount(labels.ravel(), minlength=n + 1)
                sizes[0] = 0
                mask[:, :, z] &= (sizes >= min_voxels)[labels]
        masks[r] = mask
        rows.append({"rater": r + 1, "habit": habit, "threshold": round(float(level), 3)})
    return masks, rows


def acquire(clean: np.ndarray, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A mild scan of the noise-free head: gamma, smooth bias field, Rician noise, stored as uint8."""
    params = {
        "gamma": round(float(rng.uniform(0.95, 1.08)), 3),
        "bias_strength": round(float(rng.uniform(0.05, 0.10)), 3),
        "noise_sigma": round(float(rng.uniform(0.015, 0.025)), 4),
        "stored": f"uint8 = round(magnitude x {IMAGE_SCALE:g}), clipped to 0..255",
    }
    shape = clean.shape
    bias = np.exp(params["bias_strength"] * smooth_random_field(rng, shape, (80.0 / spacing,) * 3))
    sigma = params["noise_sigma"]
    real = clean ** params["gamma"] * bias + sigma * rng.standard_normal(shape)
    del bias
    magnitude = np.hypot(real, sigma * rng.standard_normal(shape))
    return np.clip(np.round(magnitude * IMAGE_SCALE), 0, 255).astype(np.uint8), params


@dataclass
class HeadCase:
    """One simulated whole-head scan with its raters (all arrays ``(X, Y, Z)`` on one grid)."""

    image: np.ndarray  # uint8
    masks: np.ndarray  # uint8 (R, X, Y, Z)
    clean: np.ndarray  # float32 noise-free head
    brain: np.ndarray  # bool
    affine: np.ndarray
    spacing: float
    recipe: dict


def make_head_case(templates: Templates, head: Head, spacing: float, rng: np.random.Generator, *,
                   pose: bool) -> HeadCase:
    """The whole head at ``spacing`` mm over the template's field of view, scanned and rated.

    Args:
        templates: From :func:`load_templates`.
        head: From :func:`build_head`.
        spacing: Isotropic voxel size in mm.
        rng: Consumed for the pose (when ``pose``), raters and scan.
        pose: Draw a mild rotation, scaling, shift and elastic deformation; otherwise the template's axial
            orientation exactly (at 1 mm the template's own voxels).
    """
    shape, affine, centre = fov_geometry(spacing, templates)
    recipe: dict = {"shape": list(shape), "spacing_mm": [spacing] * 3}
    kwargs = {}
    if pose:
        recipe["pose"] = {
            "rotation_deg": [round(float(a), 2) for a in (rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-5, 5))],
            "scale": [round(float(s), 3) for s in rng.uniform(0.97, 1.03) * rng.uniform(0.98, 1.02, 3)],
            "shift_mm": [round(float(s), 2) for s in rng.uniform(-3, 3, 3)],
            "elastic_mm": 1.5,
            "elastic_smoothness_mm": 40.0,
        }
        elastic = np.stack([smooth_random_field(rng, shape, (40.0 / spacing,) * 3) for _ in range(3)]) * 1.5
        kwargs = dict(rotation_deg=recipe["pose"]["rotation_deg"], scale=recipe["pose"]["scale"],
                      shift_mm=recipe["pose"]["shift_mm"], displacement_mm=elastic)
    resampling = Resampling(templates, shape, affine, centre, **kwargs)
    clean = np.clip(resampling.sample(antialias(head.image, spacing), order=3, mode="nearest"), 0.0, 1.0)
    brain = resampling.sample(head.brain.astype(np.float32), order=1) >= 0.5
    masks, recipe["raters"] = simulate_raters(antialias(templates.wm, spacing), resampling, spacing, rng)
    image, recipe["scan"] = acquire(clean, spacing, rng)
    return HeadCase(image=image, masks=masks, clean=clean, brain=brain, affine=affine, spacing=spacing,
                    recipe=recipe)


def head_mask(clean: np.ndarray, level: float = 0.02) -> np.ndarray:
    """The head: the noise-free image above ``level``, holes (skull, sinuses) filled in 3D and per slice."""
    return _fill_slices(clean > level)


def license_text() -> str:
    """``make_mni_demo``'s notice with a first paragraph describing this folder."""
    notice = LICENSE_TEXT.split("\n\n", 1)[1]
    return ("The image in this folder is derived from the MNI ICBM152 2009a nonlinear symmetric template\n"
            "(T1-weighted image and white-matter probability map), as distributed inside the nilearn package.\n"
            "It is resampled, mildly deformed and noise-added; the tissues outside the brain (CSF, skull,\n"
            "scalp, eyes, sinuses, face and neck) are simulated around the template's brain; the rater masks\n"
            "are simulated.\n\n" + notice)


README = """\
# MNI whole-head sample (real brain anatomy, simulated head and raters)

One whole-head 3D case in the QUBIQ 2020 layout, bundled with napari-softseg to show and test the tools at
the size of a real scan: the template's full field of view with skull, scalp, face and air.
**The brain comes from a real MRI template; everything outside the brain and all five raters are
simulated. No radiologist drew these masks.**

```
mni_head/
  {case}/   image.nii.gz, task01_seg01.nii.gz … task01_seg05.nii.gz
  recipe.json        every parameter drawn, the raters' pairwise Dice and volumes
  LICENSE.txt        the MNI ICBM152 licence notice
```

- **Task 1 = white matter** (the template's white-matter map: cerebrum, cerebellum, brainstem), 5 simulated
  raters.
- {shape_x} × {shape_y} × {shape_z} voxels at {spacing} mm isotropic (197 × 233 × 189 mm), axial; image
  `uint8` (round(magnitude × 220), as the demo slabs), masks `uint8` in {{0, 1}}. Affine in MNI mm
  (approximate: the case is mildly deformed).
- Rater volumes {volumes} mL; pairwise Dice mean {dice_mean:.3f} (range {dice_min:.3f}–{dice_max:.3f}).

## How it was made

One command, deterministic (seed {seed}; head seed {head_seed}):

```
python scripts/make_full_sample.py --overwrite
```

Source: the skull-stripped T1-weighted MNI ICBM152 2009a nonlinear symmetric template and its white-matter
probability map at 1 mm, as shipped inside nilearn's wheel (nothing is downloaded). That wheel has no
whole-head T1, so the head around the brain is **simulated**: CSF (1–3 mm), skull (4–9 mm; dark tables,
brighter diploë), scalp (3.5–9 mm, thicker over the temporal muscles) with a bright subcutaneous fat layer
and skin, a face and neck below the forehead with fat between the muscles, two eyes in bright orbital fat,
and air-filled nasal and maxillary sinuses; the air around the head is Rician noise. Fat is about as bright
as white matter, as on real T1 scans, so a white-matter model must tell them apart by shape and place.

The case gets a mild pose (rotation ≤ 3°/3°/5° about x/y/z, scaling ± 3 % overall and ± 2 % per axis,
shift ± 3 mm, 1.5 mm elastic deformation with 40 mm smoothness), a gamma of 0.95–1.08, a 5–10 % bias field and Rician noise of 1.5–2.5 %.

The raters are simulated exactly as for the demo slabs (`scripts/make_mni_demo.py`): each thresholds the
white-matter probability map read through its own smooth 1 mm displacement field — neutral 0.50,
generous 0.35, conservative-and-smooth 0.60, neutral 0.45, hasty 0.55 (drops islands under 40 mm² in a
slice) — each threshold jittered by ± 0.04.

It is the same brain as the demo slabs and as the heads `scripts/eval_whole_head.py` builds (with other
seeds): numbers measured on it show that a pipeline works at whole-head scale, not how a model
generalises to new patients.

## Licence

The image is derived from the MNI ICBM152 2009a template; its notice is in `LICENSE.txt` and must be kept
with copies of these files. The simulated masks and the recipe are part of napari-softseg (BSD-3-Clause).
"""


def build(out: Path, spacing: float = SPACING_MM) -> dict:
    """Write the sample into ``out`` (which must not exist) at ``spacing`` mm and return its recipe."""
    import nibabel.openers

    from napari_softseg.io.nifti import save_volume

    nibabel.openers.Opener.default_compresslevel = 9  # smallest files; the data are fixed
    templates = load_templates()
    head = build_head(templates)
    case = make_head_case(templates, head, spacing, np.random.default_rng(SEED), pose=True)
    description = "napari-softseg MNI ICBM152 2009a whole-head sample"
    folder = out / CASE
    save_volume(folder / "image.nii.gz", case.image, affine=case.affine, description=description)
    for r, mask in enumerate(case.masks, start=1):
        save_volume(folder / f"task01_seg{r:02d}.nii.gz", mask, affine=case.affine,
                    description=description + f" simulated rater {r}")
    voxel_ml = spacing ** 3 / 1000.0
    recipe = {
        "seed": SEED,
        "source": [p.name for p in template_paths()],
        "task01": "white matter",
        "case": CASE,
        **case.recipe,
        "head": head.params,
        "pairwise_dice": [round(d, 4) for d in pairwise_dice(case.masks)],
        "rater_volumes_ml": [round(float(m.sum()) * voxel_ml, 1) for m in case.masks],
        "brain_volume_ml": round(float(case.brain.sum()) * voxel_ml, 1),
        "head_volume_ml": round(float(head_mask(case.clean).sum()) * voxel_ml, 1),
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    (out / "LICENSE.txt").write_text(license_text())
    dice = recipe["pairwise_dice"]
    (out / "README.md").write_text(README.format(
        case=CASE, shape_x=case.image.shape[0], shape_y=case.image.shape[1], shape_z=case.image.shape[2],
        spacing=spacing, volumes=", ".join(f"{v:.0f}" for v in recipe["rater_volumes_ml"]),
        dice_mean=float(np.mean(dice)), dice_min=min(dice), dice_max=max(dice), seed=SEED, head_seed=HEAD_SEED))
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder")
    parser.add_argument("--spacing", type=float, default=SPACING_MM,
                        help=f"isotropic voxel size in mm (default {SPACING_MM}, the bundled sample's)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"{out}: already exists; pass --overwrite to rebuild it", file=sys.stderr)
        return 2
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if not 0.25 <= args.spacing <= 8.0:
        print(f"--spacing {args.spacing}: expected 0.25 to 8 mm", file=sys.stderr)
        return 2
    recipe = build(staging, args.spacing)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"wrote {out} ({' x '.join(map(str, recipe['shape']))} at {args.spacing} mm)")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        print(f"  {path.relative_to(out)}  {path.stat().st_size / 1024:.0f} KiB  sha256 {digest}")
    dice = recipe["pairwise_dice"]
    print(f"pairwise rater Dice: mean {np.mean(dice):.3f}, min {min(dice):.3f}, max {max(dice):.3f}; "
          f"rater volumes {recipe['rater_volumes_ml']} mL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
