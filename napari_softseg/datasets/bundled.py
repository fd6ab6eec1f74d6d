"""Where the bundled sample data live, and a synthetic case on demand (Qt-free).

The package ships a small real-MRI demo dataset (``napari_softseg/data/mni_demo/``, derived from the MNI
ICBM152 2009a template with *simulated* raters; see ``docs/data.md``), a full-size whole-head case
(``napari_softseg/data/mni_head/``: the template's brain inside a simulated head, five simulated raters)
and the default demo model (``napari_softseg/data/models/mni_demo/``). The paths are resolved relative to this file, so they
work from a source checkout, an editable install and an installed wheel alike.

Example:
    >>> from napari_softseg.datasets.bundled import demo_case_path
    >>> demo_case_path().name
    'case13'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from napari_softseg.datasets.synthetic import write_case
from napari_softseg.errors import SoftsegError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: Folder name of the bundled demo dataset under :data:`DATA_DIR`.
DEMO_DATASET = "mni_demo"
#: The held-out case the viewer demo opens (not used to train the demo model).
DEMO_CASE = "Validation/case13"
#: The demo model's folder, relative to :data:`DATA_DIR`.
DEMO_MODEL = "models/mni_demo"
#: Folder name of the bundled whole-head sample under :data:`DATA_DIR` (``scripts/make_full_sample.py``).
FULL_DATASET = "mni_head"
#: The whole-head sample's one case, relative to its dataset folder.
FULL_CASE = "Training/case01"

_REBUILD_HINT = "the bundled sample data are missing; reinstall napari-softseg or run scripts/make_mni_demo.py"


def demo_dataset_path() -> Path:
    """The bundled MNI demo dataset (QUBIQ 2020 layout: ``Training/``, ``Validation/``).

    Raises:
        SoftsegError: The folder is missing (a broken install).
    """
    path = DATA_DIR / DEMO_DATASET
    if not (path / "Training").is_dir():
        raise SoftsegError(_REBUILD_HINT, path)
    return path


def demo_case_path() -> Path:
    """The demo dataset's case the viewer demo opens (``Validation/case13``, held out from training).

    Raises:
        SoftsegError: The case folder or its image is missing.
    """
    path = demo_dataset_path() / DEMO_CASE
    if not (path / "image.nii.gz").is_file():
        raise SoftsegError(_REBUILD_HINT, path)
    return path


def full_case_path() -> Path:
    """The bundled whole-head case (131 × 155 × 126 voxels at 1.5 mm, five simulated raters).

    The brain is the real MNI ICBM152 2009a template; the head around it and the raters are simulated
    (see ``napari_softseg/data/mni_head/README.md``). It shows the tools at the size of a real scan, in 3D.

    Raises:
        SoftsegError: The case folder or its image is missing (a broken install).
    """
    path = DATA_DIR / FULL_DATASET / FULL_CASE
    if not (path / "image.nii.gz").is_file():
        raise SoftsegError(
            "the bundled whole-head sample is missing; reinstall napari-softseg or run "
            "scripts/make_full_sample.py --overwrite",
            path,
        )
    return path


def demo_model_path(check: bool = True) -> Path:
    """The default demo model folder (``model.safetensors`` + ``config.json``), trained on the demo dataset.

    Args:
        check: Raise if the model files are not there.

    Raises:
        SoftsegError: ``check`` is true and ``config.json`` or ``model.safetensors`` is missing.
    """
    path = DATA_DIR / DEMO_MODEL
    if check:
        missing = [name for name in ("config.json", "model.safetensors") if not (path / name).is_file()]
        if missing:
            raise SoftsegError(
                f"the bundled demo model is missing ({', '.join(missing)}); reinstall napari-softseg "
                "or train it again (see docs/data.md)",
                path,
            )
    return path


def synthetic_case(
    folder: str | os.PathLike | None = None,
    dims: int = 3,
    *,
    n_raters: int = 4,
    seed: int = 0,
    n_channels: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic multi-rater case (image + rater masks, QUBIQ file names) and return its folder.

    Args:
        folder: Case folder to write; a new temporary folder when ``None``.
        dims: 2 for a 96×96 slice, 3 for a 64×64×32 volume (0.8×0.8×2.5 mm).
        n_raters: Number of simulated raters (rater 2 is the generous one).
        seed: Phantom seed.
        n_channels: Image channels.
        overwrite: Replace existing files in ``folder``.

    Returns:
        The case folder, ready for :func:`napari_softseg.io.dataset.load_case`.

    Raises:
        ValueError: ``dims`` is not 2 or 3.
        SoftsegError: A file exists and ``overwrite`` is false.
    """

    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="softseg-synthetic-")) / f"synthetic{dims}d"
    shape = (96, 96, 1) if dims == 2 else (64, 64, 32)
    return write_case(folder, shape=shape, n_raters=n_raters, seed=seed, n_channels=n_channels,
                      overwrite=overwrite)
