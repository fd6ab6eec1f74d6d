"""Train the bundled model ``napari_softseg/data/models/mni_demo`` (deterministic; CPU, about half an hour).

Usage (from the repository root; needs nilearn, whose wheel carries the MNI ICBM152 2009a template)::

    python scripts/train_bundled_model.py --out /tmp/bundled_model [--work /tmp/bundled_data] [--epochs 40]

then, after checking it (``scripts/eval_whole_head.py --model /tmp/bundled_model`` and
``pytest tests/test_inference.py``), copy ``config.json`` and ``model.safetensors`` over the shipped model.

**Training data** (written to ``--work`` in the QUBIQ layout, task 1 = white matter, five simulated raters
per case):

- :data:`HEAD_CASES` whole heads with skull, scalp, face, neck and the air around them
  (``scripts/make_full_sample.py``'s head around the real template brain), each with its own simulated
  extracranial anatomy (head seeds :data:`HEAD_SEEDS`, never the sample's or the evaluation's 152), a mild
  random pose and elastic deformation, bias field, Rician noise and gamma, at isotropic voxel sizes from
  0.6 to 2.5 mm, stored in the three slice orientations in turn (axial, coronal, sagittal: the array's
  last axis is then inferior-superior, anterior-posterior or left-right), each with the matching affine;
- the bundled demo slabs' 12 training cases (``napari_softseg/data/mni_demo/Training``: 2 × 2 × 2.5 mm,
  skull-stripped), so the demo keeps its figures.

The demo slabs' ``Validation/`` cases and the evaluation heads of ``scripts/eval_whole_head.py`` (head seed
152, unposed, other noise and rater seeds) are never trained on. There is only one whole brain in the wheel
(the template), so every case shares that brain's anatomy: the held-out checks vary the head around it,
pose, voxel size, orientation, noise and raters, not the brain.

**Recipe.** ``softseg train`` with a 2D U-Net on slices along the array's last axis (``--dim 2
--slice-axis 2``; orientations vary through the data), width 16, at 1 mm (``--target-spacing 1``: every
case is resampled in-plane to 1 mm, so voxel size no longer matters to the network; prediction resamples
the same way), z-score over the body region (planned for non-negative MR), mean soft labels, BCE, a fixed
number of epochs (``--epochs``, so the result does not depend on the machine's speed), seed 0, one or two
CPU threads (``--threads``), temperature calibrated on the held-out 20 % of the cases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import make_full_sample as sample  # noqa: E402  (the whole head around the template brain, raters, scan)

from napari_softseg.datasets.bundled import demo_dataset_path  # noqa: E402

#: Extracranial anatomy seeds of the training heads (the sample and the evaluation use 152).
HEAD_SEEDS = (11, 12, 13)
#: ``(voxel size in mm, orientation)`` of each training head; orientations cycle axial, coronal, sagittal.
HEAD_CASES = ((0.6, "axial"), (0.8, "coronal"), (1.0, "sagittal"), (1.0, "axial"), (1.25, "coronal"),
              (1.5, "sagittal"), (1.8, "axial"), (2.2, "coronal"), (2.5, "sagittal"))
#: The array axis order of each orientation (the last axis is the one the 2D model slices).
ORIENTATIONS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}
DATA_SEED = 2026
TRAIN_OPTIONS = dict(task=1, dim=2, slice_axis=2, target_spacing=1.0, base_channels=16, depth=4, softlabel="mean",
                     loss="bce", seed=0, device="cpu", val_fraction=0.2, early_stop=False)


def reorient(array: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """``array`` (X, Y, Z or R, X, Y, Z) with its spatial axes permuted for ``orientation``, and the affine that
    keeps every voxel at the same place in the scanner."""
    order = ORIENTATIONS[orientation]
    lead = array.ndim - 3
    data = np.ascontiguousarray(np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in order)))
    new = np.eye(4)
    new[:3, :3] = affine[:3, :3][:, list(order)]
    new[:3, 3] = affine[:3, 3]
    return data, new


def build_dataset(work: Path) -> dict:
    """Write the training set into ``work`` (which must not exist); returns its recipe."""
    from napari_softseg.io.nifti import save_volume

    templates = sample.load_templates()
    heads = {seed: sample.build_head(templates, seed=seed) for seed in HEAD_SEEDS}
    rng = np.random.default_rng(DATA_SEED)
    recipe: dict = {"seed": DATA_SEED, "head_seeds": list(HEAD_SEEDS), "cases": []}
    for number, (spacing, orientation) in enumerate(HEAD_CASES, start=1):
        head_seed = HEAD_SEEDS[(number - 1) % len(HEAD_SEEDS)]
        start = time.perf_counter()
        case = sample.make_head_case(templates, heads[head_seed], spacing, rng, pose=True)
        image, affine = reorient(case.image, case.affine, orientation)
        masks, _ = reorient(case.masks, case.affine, orientation)
        folder = work / "Training" / f"head{number:02d}"
        save_volume(folder / "image.nii.gz", image, affine=affine)
        for r, mask in enumerate(masks, start=1):
            save_volume(folder / f"task01_seg{r:02d}.nii.gz", mask, affine=affine)
        recipe["cases"].append({"case": folder.name, "head_seed": head_seed, "orientation": orientation,
                                "shape": list(image.shape), **{k: case.recipe[k] for k in ("spacing_mm", "pose", "scan")}})
        print(f"{folder.name}: {orientation} {'x'.join(map(str, image.shape))} at {spacing} mm "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    for case in sorted((demo_dataset_path() / "Training").iterdir()):
        shutil.copytree(case, work / "Training" / f"slab_{case.name}")
    recipe["slabs"] = "napari_softseg/data/mni_demo/Training (12 cases)"
    (work / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write (must not hold a model)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/softseg_bundled_data"),
                        help="where the training set is built (reused when it exists)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of 50 steps (default 40)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared machine two threads were 6x slower per step)")
    parser.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not (args.work / "recipe.json").is_file():
        if args.work.exists():
            raise SystemExit(f"{args.work} exists but holds no finished training set; remove it first")
        build_dataset(args.work)

    from napari_softseg.model.training import train
    from napari_softseg.progress import run_with_progress_bar

    options = {} if args.resume else TRAIN_OPTIONS
    result = run_with_progress_bar(train(args.work, args.out, epochs=args.epochs, resume=args.resume, **options),
                                   announce=("device", "plan"))
    (args.out / "training_state.safetensors").unlink(missing_ok=True)  # resumable state: not shipped
    print(f"model: {result.model_dir} (validation QUBIQ {result.best_score}, {result.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
