"""Does a cohort operating point hold on new cases? Choose on one half of a held-out set, apply to the other.

Usage (from the repository root)::

    python scripts/cohort_operating_points.py WORK_DIR [--synthetic-minutes 4] [--fresh-cases 24]

For each evaluation set and each requirement (sensitivity >= 0.90, PPV >= 0.90, Dice = max, volume error
<= 10 %) the threshold is chosen on half of the set's held-out cases (a seeded random half) with
:func:`napari_softseg.analysis.cohort.choose_point` and applied to the other half with
:func:`~napari_softseg.analysis.cohort.evaluate_point`: the table gives the value required, the value
achieved on each half with its 95 % bootstrap interval over cases, how many cases of the second half fall
short, and, over 200 random half-splits, how often the second half still met the requirement. Each bound is
chosen twice: on the pooled value (the default of ``softseg operating-point``) and conservatively
(``--conservative``: the lower end of the 95 % interval meets the bound).

Sets (all held out from the model that predicts them):

* ``mni_demo``: the bundled demo model on the bundled ``mni_demo/Validation`` (4 cases: 2 + 2).
* ``mni_fresh``: the bundled demo model on new slabs drawn by ``scripts/make_mni_demo.py``'s generator with
  another seed (same template brain, new positions, deformations, contrasts and simulated raters).
* ``synthetic``: a model trained here (``softseg train``, ``--synthetic-minutes``) on 20 synthetic 2D
  phantoms (``napari_softseg.datasets.synthetic``, 4 raters), applied to 40 held-out phantoms.

Predictions are kept under ``WORK_DIR`` (a rerun reuses them), so only the first run predicts and trains.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from napari_softseg.analysis.cohort import choose_point, evaluate_point, parse_requirement  # noqa: E402
from napari_softseg.datasets.bundled import demo_dataset_path, demo_model_path  # noqa: E402
from napari_softseg.errors import SoftsegError  # noqa: E402
from napari_softseg.pipeline.operating_points import cohort_histograms  # noqa: E402
from napari_softseg.progress import drive  # noqa: E402

REQUIREMENTS = ("sensitivity>=0.90", "ppv>=0.90", "dice=max", "volume-error<=0.10")
N_SPLITS = 200
N_BOOT = 2000
SEED = 0


def fresh_mni_cases(out: Path, n: int, seed: int = 20090 + 19) -> Path:
    """``n`` new validation slabs from the bundled demo's generator (another seed); kept if already there."""
    import make_mni_demo as mni

    from napari_softseg.io.nifti import save_volume

    folder = out / "Validation"
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return out
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(seed)
    t1, wm, template_affine = mni.load_template()
    for i in range(n):
        z = float(rng.uniform(*mni.Z_RANGE_MM))
        image, masks, affine, _ = mni.make_case(t1, wm, template_affine, z, rng)
        case = folder / f"case{101 + i}"
        save_volume(case / "image.nii.gz", image, affine=affine, description=f"mni fresh slab z={z:.1f}")
        for r, mask in enumerate(masks, start=1):
            save_volume(case / f"task01_seg{r:02d}.nii.gz", mask, affine=affine)
    return out


def synthetic_set(work: Path, minutes: float) -> tuple[Path, Path]:
    """A synthetic 2D dataset (20 training + 40 held-out phantoms, 4 raters) and a model trained on it."""
    from napari_softseg.cli import main as softseg
    from napari_softseg.datasets.synthetic import write_qubiq_dataset

    data, model = work / "synth" / "ds", work / "synth" / "model"
    if not data.is_dir():
        write_qubiq_dataset(data, n_cases=20, n_validation=40, shape=(96, 96, 1), n_raters=4, seed=19)
    if not (model / "model.safetensors").is_file():
        code = softseg(["train", str(data), "--out", str(model), "--max-minutes", str(minutes), "--device", "cpu",
                        "--quiet"])
        if code:
            raise SystemExit(f"training the synthetic model failed ({code})")
    return model, data / "Validation"


def split_halves(n: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    order = rng.permutation(n)
    return sorted(order[: n // 2].tolist()), sorted(order[n // 2:].tolist())


def repeated_splits(cohort, requirement, n_splits: int, seed: int, conservative: bool) -> tuple[float, float]:
    """Over random half-splits: share where the second half meets the requirement, median achieved there.

    A conservative choice draws 200 bootstrap resamples per split (the table's own points use 2000).
    """
    rng = np.random.default_rng(seed + 1)
    met, achieved = [], []
    for _ in range(n_splits):
        first, second = split_halves(len(cohort), rng)
        try:
            k = round(choose_point(cohort.subset(first), requirement, n_boot=200, seed=seed,
                                   conservative=conservative).threshold * cohort.n_bins)
        except SoftsegError:
            continue
        value = float(cohort.subset(second).curves(requirement.metric)[0, k])
        achieved.append(value)
        met.append(bool(requirement.meets(value)) if requirement.value is not None else True)
    return (float(np.mean(met)) if met else float("nan")), (float(np.median(achieved)) if achieved else float("nan"))


def _ci(check) -> str:
    return f"{check.achieved:.3f} [{check.ci[0]:.3f}, {check.ci[1]:.3f}]"


def _row(label, cohort, a, b, req, conservative: bool) -> str:
    name = req.text + (" (conservative)" if conservative else "")
    try:
        chosen = choose_point(a, req, n_boot=N_BOOT, seed=SEED, conservative=conservative)
    except SoftsegError as exc:  # an unreachable requirement is a row, not a crash
        return f"| {label} | {name} | {len(a)} / {len(b)} | {exc} | | | | |"
    applied = evaluate_point(b, req, chosen.threshold, n_boot=N_BOOT, seed=SEED)
    share, median = repeated_splits(cohort, req, N_SPLITS, SEED, conservative)
    short = "—" if applied.n_failing is None else f"{applied.n_failing} of {len(b)}"
    meets = "—" if req.value is None else f"{share * 100:.0f} %"
    return (f"| {label} | {name} | {len(a)} / {len(b)} | {chosen.threshold:.3f} "
            f"[{chosen.threshold_ci[0]:.3f}, {chosen.threshold_ci[1]:.3f}] | {_ci(chosen)} | {_ci(applied)} "
            f"| {short} | {meets} / {median:.3f} |")


def table(sets: dict) -> list[str]:
    """The markdown rows for every set and requirement."""
    lines = ["| set (model) | requirement | cases choose / apply | t chosen [95% CI] | achieved, choose half "
             "[95% CI] | achieved, apply half [95% CI] | apply-half cases short | 200 random splits: apply half "
             "meets / median achieved |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, cohort in sets.items():
        rng = np.random.default_rng(SEED)
        first, second = split_halves(len(cohort), rng)
        a, b = cohort.subset(first), cohort.subset(second)
        for text in REQUIREMENTS:
            req = parse_requirement(text)
            for conservative in (False, True) if req.value is not None else (False,):
                lines.append(_row(label, cohort, a, b, req, conservative))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="folder for generated data, the synthetic model and predictions")
    parser.add_argument("--synthetic-minutes", type=float, default=4.0, help="training budget of the synthetic model")
    parser.add_argument("--fresh-cases", type=int, default=24, help="new MNI slabs for the mni_fresh set")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    demo_model = demo_model_path()
    synth_model, synth_val = synthetic_set(work, args.synthetic_minutes)
    sources = {
        "mni_demo Validation (bundled model)": (demo_model, demo_dataset_path() / "Validation", work / "pred_demo"),
        f"mni_fresh, {args.fresh_cases} new slabs (bundled model)":
            (demo_model, fresh_mni_cases(work / "mni_fresh", args.fresh_cases) / "Validation", work / "pred_fresh"),
        "synthetic 2D, 40 held-out phantoms (trained here)": (synth_model, synth_val, work / "pred_synth"),
    }
    cohorts = {}
    for label, (model, data, preds) in sources.items():
        cohorts[label] = drive(cohort_histograms(model, data, predictions=preds, device="cpu")).cohort
        print(f"{label}: {len(cohorts[label])} cases from {data}", file=sys.stderr)
    print("\n".join(table(cohorts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
