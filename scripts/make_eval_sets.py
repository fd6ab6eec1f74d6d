"""Build evaluation datasets for the training recipe (single-slice, QUBIQ-shaped) — deterministic.

Usage (from the repository root; needs nilearn, whose wheel carries the MNI ICBM152 2009a template)::

    python scripts/make_eval_sets.py OUT_DIR [--only NAME ...]

Each set is ``OUT_DIR/<name>/Training/caseNN`` + ``Validation/caseNN`` with ``image.nii.gz`` and
``task01_segRR.nii.gz``: one slice per case, like most QUBIQ tasks. The MNI sets cut one slice per case
from the MNI ICBM152 2009a T1 template (each case at its own position, after its own rotation, scaling,
shift and smooth elastic deformation, with its own gamma, bias field and Rician noise) and simulate raters
from a tissue probability map, as ``scripts/make_mni_demo.py`` does for the bundled slabs:

==================  ==============  ===========  ===========  =====  ======  ============================
name                structure       orientation  spacing mm   shape  raters  cases (Training+Validation)
==================  ==============  ===========  ===========  =====  ======  ============================
mni_wm_axial        white matter    axial        1 x 1        197x233  5       24 + 8
mni_gm_coronal      grey matter     coronal      1.5 x 1.5    (X,1,Z) 3       16 + 6
mni_wm_sagittal     white matter    sagittal     1.2 x 1.2    (1,Y,Z) 4       30 + 8
==================  ==============  ===========  ===========  =====  ======  ============================

plus two ``softseg synthetic`` phantom sets with one slice per case: ``synth_r4`` (4 raters, 20 + 8
cases, 128 x 128) and ``synth_r2`` (2 raters, 2 channels, 12 + 6 cases, 96 x 112).

The simulated raters are thresholds of the probability map (one neutral, one generous, one conservative
with smooth outlines, ...) read through their own smooth displacement fields; they are not real raters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_mni_demo import output_grid, rotation  # noqa: E402  (the bundled slabs' grid and rotation)

RATER_STYLES = ((0.50, "neutral"), (0.35, "generous"), (0.62, "smooth"), (0.45, "neutral"), (0.56, "misses-small"))

MNI_SETS = {
    # name: (tissue, plane, spacing, in-plane field of view mm, raters, n_train, n_val, seed)
    "mni_wm_axial": ("wm", "axial", 1.0, (197.0, 233.0), 5, 24, 8, 101),
    "mni_gm_coronal": ("gm", "coronal", 1.5, (180.0, 165.0), 3, 16, 6, 202),
    "mni_wm_sagittal": ("wm", "sagittal", 1.2, (220.0, 180.0), 4, 30, 8, 303),
}
SYNTH_SETS = {
    "synth_r4": dict(n_cases=20, n_validation=8, shape=(128, 128, 1), n_raters=4, seed=11),
    "synth_r2": dict(n_cases=12, n_validation=6, shape=(96, 112, 1), n_raters=2, n_channels=2, seed=12),
}


def _templates(tissue: str):
    import nibabel as nib
    from nilearn.datasets import struct
    from scipy.ndimage import gaussian_filter

    prob_path = struct.WM_MNI152_FILE_PATH if tissue == "wm" else struct.GM_MNI152_FILE_PATH
    t1_img, prob_img = nib.load(struct.MNI152_FILE_PATH), nib.load(prob_path)
    t1 = gaussian_filter(np.asarray(t1_img.dataobj, dtype=np.float32) / 255.0, 0.5)
    prob = np.asarray(prob_img.dataobj, dtype=np.float32)
    prob = prob / max(float(prob.max()), 1e-6)
    return t1, prob, np.asarray(t1_img.affine, dtype=np.float64)


def _mni_case(t1, prob, template_affine, plane, spacing, fov, n_raters, level_mm, rng):
    from scipy.ndimage import gaussian_filter, label, map_coordinates

    from napari_softseg.datasets.synthetic import smooth_random_field

    normal = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    inplane = [a for a in range(3) if a != normal]
    shape = [1, 1, 1]
    for a, extent in zip(inplane, fov):
        shape[a] = int(round(extent / spacing))
    shape = tuple(shape)
    centre = np.array([0.0, -18.0, 12.0])
    centre[normal] = level_mm
    space = np.full(3, spacing)
    affine, relative = output_grid(centre, shape, space)
    angles = [rng.uniform(-3, 3) for _ in range(3)]
    angles[normal] = rng.uniform(-10, 10)
    matrix = rotation(*angles) @ np.diag(rng.uniform(0.92, 1.08) * rng.uniform(0.96, 1.04, 3))
    correlation = 30.0 / space
    elastic = np.stack([smooth_random_field(rng, shape, correlation) for _ in range(3)]) * 2.0
    source = (np.einsum("ij,j...->i...", matrix, relative) + centre[:, None, None, None]
              + rng.uniform(-3, 3, 3)[:, None, None, None] + elastic)
    to_voxel = np.linalg.inv(template_affine)

    def sample(volume, points, order):
        vox = np.einsum("ij,j...->i...", to_voxel[:3, :3], points) + to_voxel[:3, 3][:, None, None, None]
        return map_coordinates(volume, vox, order=order, mode="constant", cval=0.0)

    gamma = rng.uniform(0.85, 1.2)
    image = np.clip(sample(t1, source, 3), 0.0, None) ** gamma
    image = image * np.exp(rng.uniform(0.08, 0.18) * smooth_random_field(rng, shape, 80.0 / space))
    sigma = rng.uniform(0.025, 0.045)
    image = np.sqrt((image + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2)
    image = np.clip(np.round(image * 220.0), 0, 255).astype(np.uint8)
    masks = np.zeros((n_raters,) + shape, dtype=np.uint8)
    smooth_sigma = [1.5 / spacing] * 3
    smooth_sigma[normal] = 0.0
    for r in range(n_raters):
        threshold, habit = RATER_STYLES[r % len(RATER_STYLES)]
        level = threshold + rng.uniform(-0.04, 0.04)
        wobble = np.stack([smooth_random_field(rng, shape, 15.0 / space) for _ in range(3)])
        seen = sample(prob, source + 1.0 * wobble, 1)
        if habit == "smooth":
            seen = gaussian_filter(seen, smooth_sigma)
        mask = seen >= level
        if habit == "misses-small":
            labels, n = label(mask)
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            sizes[0] = 0
            mask &= (sizes >= 10)[labels]
        masks[r] = mask
    return image, masks, affine


def build_mni(out: Path, name: str) -> Path:
    from napari_softseg.io.nifti import save_volume

    tissue, plane, spacing, fov, n_raters, n_train, n_val, seed = MNI_SETS[name]
    rng = np.random.default_rng(seed)
    t1, prob, template_affine = _templates(tissue)
    span = {"axial": (-20.0, 50.0), "coronal": (-60.0, 20.0), "sagittal": (-45.0, 45.0)}[plane]
    levels = rng.uniform(*span, n_train + n_val)
    for index, level in enumerate(levels):
        split = "Training" if index < n_train else "Validation"
        folder = out / name / split / f"case{index + 1:02d}"
        image, masks, affine = _mni_case(t1, prob, template_affine, plane, spacing, fov, n_raters, float(level), rng)
        save_volume(folder / "image.nii.gz", image, affine=affine, overwrite=True)
        for r, mask in enumerate(masks, start=1):
            save_volume(folder / f"task01_seg{r:02d}.nii.gz", mask, affine=affine, overwrite=True)
    return out / name


def build_synthetic(out: Path, name: str) -> Path:
    from napari_softseg.datasets.synthetic import write_qubiq_dataset

    return write_qubiq_dataset(out / name, overwrite=True, **SYNTH_SETS[name])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", nargs="*", choices=sorted(MNI_SETS) + sorted(SYNTH_SETS))
    args = parser.parse_args(argv)
    for name in args.only or (list(MNI_SETS) + list(SYNTH_SETS)):
        path = build_mni(args.out, name) if name in MNI_SETS else build_synthetic(args.out, name)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
