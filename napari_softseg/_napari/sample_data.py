"""napari sample data: the real-MRI demo case, the full-size whole-head case and a synthetic 3D case.

Each returns the same layers as opening a case folder: the image, one Labels layer per rater and the
soft label (mean of the raters). Nothing is downloaded: the demo slab and the whole head ship with the
package (``napari_softseg/data``) and the synthetic case is generated (deterministically) on the fly.
"""

from __future__ import annotations

from pathlib import Path

from napari_softseg._napari import layers as L
from napari_softseg._napari.reader import read_case_folder
from napari_softseg.analysis.softlabels import make_soft_label
from napari_softseg.datasets.bundled import demo_case_path, full_case_path
from napari_softseg.datasets.synthetic import make_phantom
from napari_softseg.io.case import CaseData

SYNTHETIC_SHAPE = (128, 128, 40)
SYNTHETIC_RATERS = 4


def demo_case() -> list[L.LayerData]:
    """The bundled MNI ICBM152-derived demo case with its simulated raters."""

    return read_case_folder(demo_case_path())


def full_case() -> list[L.LayerData]:
    """The bundled whole head at full size (131 × 155 × 126 at 1.5 mm) with its five simulated raters.

    The brain is the MNI ICBM152 2009a template; the head around it is simulated (see the sample's README).
    """

    return read_case_folder(full_case_path())


def synthetic_case_data(shape=SYNTHETIC_SHAPE, n_raters: int = SYNTHETIC_RATERS, seed: int = 0):
    """A synthetic phantom as :class:`~napari_softseg.io.case.CaseData` (no files involved)."""

    image, masks, affine = make_phantom(shape, n_raters=n_raters, seed=seed)
    geometry = L.Geometry(affine, image.shape[1:])
    return CaseData(
        name="synthetic",
        image=image,
        masks=masks,
        rater_names=[f"rater {i + 1}" for i in range(n_raters)],
        affine=geometry.affine,
        spacing=geometry.spacing,
        header=geometry.nifti_header(),
        image_path=Path("synthetic"),
        mask_paths=[Path(f"synthetic rater {i + 1}") for i in range(n_raters)],
        task=1,
    )


def synthetic_case() -> list[L.LayerData]:
    """A deterministic synthetic 3D phantom with four raters who disagree like real ones."""

    case = synthetic_case_data()
    soft = make_soft_label(case.masks, "mean", spacing=case.spacing, rater_names=case.rater_names)
    return L.case_layers(case, soft)
