"""Build the bundled real-MRI demo dataset ``napari_softseg/data/mni_demo/`` (deterministic).

Usage (from the repository root; needs nilearn, whose wheel carries the MNI ICBM152 2009a template)::

    python scripts/make_mni_demo.py --overwrite

Source: the skull-stripped T1-weighted MNI ICBM152 2009a nonlinear symmetric template and its white
matter probability map, both at 1 mm, as shipped inside nilearn (``nilearn/datasets/data/``; no download).

Each case is a 16-slice axial slab (2 × 2 × 2.5 mm voxels, 80 × 96 × 16) cut from the template at its own
height, after its own random rotation, scaling, shift and smooth elastic deformation; the image gets its own
contrast (gamma), smooth bias field and Rician noise. The target (task 1) is the **white matter**. Five
raters are *simulated* from the white-matter probability map — they are not real radiologists:

======  ===========  =====================================================================================
rater   threshold    habit
======  ===========  =====================================================================================
1       0.50         neutral
2       0.35         generous (includes partial-volume voxels at the grey-white boundary)
3       0.60         conservative, and draws smooth outlines (reads the map blurred by 1.5 mm in-plane)
4       0.45         neutral
5       0.55         hasty: leaves out small white-matter islands (< 10 voxels = 40 mm² in a slice)
======  ===========  =====================================================================================

Each rater's threshold moves by ±0.04 from case to case, and each rater reads the probability map through
its own smooth displacement field (about 1 mm), so boundaries differ the way hand-drawn outlines do. Every
parameter drawn for every case is written to ``recipe.json`` next to the data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "napari_softseg" / "data" / "mni_demo"

SEED = 20090  # ICBM 2009a
N_TRAINING = 12
N_VALIDATION = 4
SHAPE = (80, 96, 16)
SPACING = (2.0, 2.0, 2.5)
# (threshold on the white-matter probability, habit) per simulated rater
RATERS = (
    (0.50, "neutral"),
    (0.35, "generous"),
    (0.60, "smooth"),
    (0.45, "neutral"),
    (0.55, "misses-small"),
)
THRESHOLD_JITTER = 0.04
SMALL_ISLAND_VOXELS = 10
SMOOTH_MM = 1.5
# Slab centres (MNI z, mm) spread over the cerebrum; validation slabs sit between training slabs.
Z_RANGE_MM = (-14.0, 50.0)

LICENSE_TEXT = """\
The images in this folder are derived from the MNI ICBM152 2009a nonlinear symmetric template
(T1-weighted image and white-matter probability map), as distributed inside the nilearn package.
The derived files are resampled, deformed and noise-added slabs; the rater masks are simulated.

Copyright (C) 1993–2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty. The authors are not responsible for any data loss, equipment damage, property loss, or
injury to subjects or patients resulting from the use or misuse of this software package.

References:
  VS Fonov, AC Evans, K Botteron, CR Almli, RC McKinstry, DL Collins and BDCG. Unbiased average
  age-appropriate atlases for pediatric studies. NeuroImage 54(1), 2011.
  DOI: 10.1016/j.neuroimage.2010.07.033
  VS Fonov, AC Evans, RC McKinstry, CR Almli and DL Collins. Unbiased nonlinear average
  age-appropriate brain templates from birth to adulthood. NeuroImage 47(S1), 2009, S102.
  DOI: 10.1016/S1053-8119(09)70884-5
  DL Collins, AP Zijdenbos, WFC Baare and AC Evans. ANIMAL+INSECT: Improved Cortical Structure
  Segmentation. IPMI 1999, LNCS 1613.
Source: http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009
"""


def template_paths() -> tuple[Path, Path]:
    """The 1 mm T1 template and white-matter probability map inside nilearn's wheel."""
    from nilearn.datasets import struct

    return Path(struct.MNI152_FILE_PATH), Path(struct.WM_MNI152_FILE_PATH)


def load_template():
    """T1 (0..1) and WM probability (0..1) as float32, lightly blurred to the 2 × 2 × 2.5 mm PSF."""
    import nibabel as nib
    from scipy.ndimage import gaussian_filter

    t1_path, wm_path = template_paths()
    t1_img, wm_img = nib.load(t1_path), nib.load(wm_path)
    if not np.allclose(t1_img.affine, wm_img.affine):
        sys.exit("T1 and WM templates do not share a grid")
    # anti-aliasing before sampling 1 mm -> 2 x 2 x 2.5 mm
    sigma = (0.7, 0.7, 0.9)
    t1 = gaussian_filter(np.asarray(t1_img.dataobj, dtype=np.float32) / 255.0, sigma)
    wm = gaussian_filter(np.asarray(wm_img.dataobj, dtype=np.float32) / 255.0, sigma)
    return t1, wm, np.asarray(t1_img.affine, dtype=np.float64)


def slab_centres(rng: np.random.Generator) -> list[float]:
    """MNI z of each case's slab centre: training cases spread evenly, validation cases in between."""
    n = N_TRAINING + N_VALIDATION
    levels = np.linspace(*Z_RANGE_MM, n)
    validation = set(np.round(np.linspace(2, n - 3, N_VALIDATION)).astype(int))
    order = [i for i in range(n) if i not in validation] + sorted(validation)
    return [float(levels[i] + rng.uniform(-2.0, 2.0)) for i in order]


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, y, z."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    my = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    mz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return mz @ my @ mx


def output_grid(centre: np.ndarray, shape, spacing) -> tuple[np.ndarray, np.ndarray]:
    """A case's output grid centred on ``centre`` (MNI mm): its affine, and each voxel's offset from the centre
    in mm, ``(3, *shape)``."""
    spacing = np.asarray(spacing, dtype=np.float64)
    origin = centre - (np.array(shape) - 1) / 2.0 * spacing
    affine = np.diag(tuple(spacing) + (1.0,))
    affine[:3, 3] = origin
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=0).astype(np.float64)
    world = origin[:, None, None, None] + spacing[:, None, None, None] * grid
    return affine, world - centre[:, None, None, None]


def make_case(t1, wm, template_affine, z_centre: float, rng: np.random.Generator):
    """One case: uint8 image (X, Y, Z), uint8 masks (R, X, Y, Z), its affine, and the recipe."""
    from scipy.ndimage import gaussian_filter, label, map_coordinates

    from napari_softseg.datasets.synthetic import smooth_random_field

    spacing = np.array(SPACING)
    # output grid in MNI mm: in-plane box around the brain, slab centred on z_centre
    centre = np.array([0.0, -18.0, z_centre])
    affine, relative = output_grid(centre, SHAPE, spacing)

    recipe = {
        "slab_centre_mni_mm": [round(float(c), 2) for c in centre],
        "rotation_deg": [round(float(a), 2) for a in (rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-8, 8))],
        "scale": [round(float(s), 3) for s in rng.uniform(0.92, 1.08) * rng.uniform(0.96, 1.04, 3)],
        "shift_mm": [round(float(s), 2) for s in rng.uniform(-3, 3, 3)],
        "elastic_mm": 2.0,
        "gamma": round(float(rng.uniform(0.85, 1.2)), 3),
        "bias_strength": round(float(rng.uniform(0.08, 0.18)), 3),
        "noise_sigma": round(float(rng.uniform(0.025, 0.045)), 4),
    }
    matrix = rotation(*recipe["rotation_deg"]) @ np.diag(recipe["scale"])
    correlation = 30.0 / spacing
    elastic = np.stack([smooth_random_field(rng, SHAPE, correlation) for _ in range(3)]) * recipe["elastic_mm"]
    source = (np.einsum("ij,j...->i...", matrix, relative) + centre[:, None, None, None]
              + np.array(recipe["shift_mm"])[:, None, None, None] + elastic)
    to_voxel = np.linalg.inv(template_affine)

    def sample(volume, points, order):
        vox = np.einsum("ij,j...->i...", to_voxel[:3, :3], points) + to_voxel[:3, 3][:, None, None, None]
        return map_coordinates(volume, vox, order=order, mode="constant", cval=0.0)

    # image: T1 with contrast change, smooth bias field and Rician noise, stored as uint8
    t1_case = np.clip(sample(t1, source, order=3), 0.0, None) ** recipe["gamma"]
    bias = np.exp(recipe["bias_strength"] * smooth_random_field(rng, SHAPE, 80.0 / spacing))
    sigma = recipe["noise_sigma"]
    real = t1_case * bias + sigma * rng.standard_normal(SHAPE)
    imag = sigma * rng.standard_normal(SHAPE)
    magnitude = np.sqrt(real * real + imag * imag)
    image = np.clip(np.round(magnitude * 220.0), 0, 255).astype(np.uint8)

    # simulated raters: thresholds of the WM probability read through each rater's own displacement
    masks = np.zeros((len(RATERS),) + SHAPE, dtype=np.uint8)
    recipe["raters"] = []
    for r, (threshold, habit) in enumerate(RATERS):
        level = threshold + rng.uniform(-THRESHOLD_JITTER, THRESHOLD_JITTER)
        wobble = np.stack([smooth_random_field(rng, SHAPE, 15.0 / spacing) for _ in range(3)])
        seen = sample(wm, source + 1.0 * wobble, order=1)
        if habit == "smooth":
            seen = gaussian_filter(seen, (SMOOTH_MM / SPACING[0], SMOOTH_MM / SPACING[1], 0.0))
        mask = seen >= level
        if habit == "misses-small":
            for z in range(SHAPE[2]):  # raters outline slice by slice
                labels, n = label(mask[:, :, z])
                sizes = np.bincount(labels.ravel(), minlength=n + 1)
                sizes[0] = 0
                mask[:, :, z] &= (sizes >= SMALL_ISLAND_VOXELS)[labels]
        masks[r] = mask
        recipe["raters"].append({"rater": r + 1, "habit": habit, "threshold": round(float(level), 3)})
    return image, masks, affine, recipe


def pairwise_dice(masks: np.ndarray) -> list[float]:
    """Dice of every pair of raters."""
    flat = masks.reshape(len(masks), -1).astype(bool)
    out = []
    for i in range(len(flat)):
        for j in range(i + 1, len(flat)):
            total = flat[i].sum() + flat[j].sum()
            out.append(1.0 if total == 0 else 2.0 * float((flat[i] & flat[j]).sum()) / float(total))
    return out


def build(out: Path) -> dict:
    """Write the whole dataset into ``out`` (which must not exist) and return the recipe."""
    import nibabel.openers

    from napari_softseg.io.nifti import save_volume

    nibabel.openers.Opener.default_compresslevel = 9  # smallest files; the data are fixed
    rng = np.random.default_rng(SEED)
    t1, wm, template_affine = load_template()
    recipe = {
        "seed": SEED,
        "source": [p.name for p in template_paths()],
        "shape": list(SHAPE),
        "spacing_mm": list(SPACING),
        "task01": "white matter",
        "raters": [{"rater": i + 1, "threshold": t, "habit": h} for i, (t, h) in enumerate(RATERS)],
        "cases": {},
    }
    for index, z_centre in enumerate(slab_centres(rng)):
        split = "Training" if index < N_TRAINING else "Validation"
        name = f"case{index + 1:02d}"
        image, masks, affine, case_recipe = make_case(t1, wm, template_affine, z_centre, rng)
        description = f"napari-softseg MNI ICBM152 2009a demo {name}"
        save_volume(out / split / name / "image.nii.gz", image, affine=affine, description=description)
        for r, mask in enumerate(masks, start=1):
            save_volume(out / split / name / f"task01_seg{r:02d}.nii.gz", mask, affine=affine,
                        description=description + f" simulated rater {r}")
        case_recipe["split"] = split
        case_recipe["pairwise_dice"] = [round(d, 4) for d in pairwise_dice(masks)]
        case_recipe["rater_volumes_ml"] = [round(float(m.sum()) * float(np.prod(SPACING)) / 1000.0, 2) for m in masks]
        recipe["cases"][f"{split}/{name}"] = case_recipe
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    (out / "LICENSE.txt").write_text(LICENSE_TEXT)
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder's generated files")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists() and any(p.name != "README.md" for p in out.iterdir()) and not args.overwrite:
        print(f"{out}: already exists; pass --overwrite to rebuild it", file=sys.stderr)
        return 2
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    recipe = build(staging)
    readme = out / "README.md"
    if readme.exists():  # the README is written by hand; keep it
        shutil.copy2(readme, staging / "README.md")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    dice = np.array([d for case in recipe["cases"].values() for d in case["pairwise_dice"]])
    print(f"wrote {len(recipe['cases'])} cases to {out}")
    print(f"pairwise rater Dice: mean {dice.mean():.3f}, min {dice.min():.3f}, max {dice.max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
