"""Shared fixtures. Owned by the lead; add fixtures in your own test module unless several modules need them."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

# The docks freeze the long-lived objects out of Python's collector (napari_softseg/_napari/gc_freeze.py).
# napari's viewer fixture fails a test whose viewer is still alive after ``gc.collect()``, and frozen objects
# are not collected: off for the suite; tests/test_gc_freeze.py turns it on and thaws before that check.
os.environ.setdefault("NAPARI_SOFTSEG_GC_FREEZE", "0")


def write_nifti(path, data, affine=None, dtype=None):
    """Write an array as NIfTI with plain nibabel (independent of the package's writer)."""
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@pytest.fixture
def make_case(tmp_path):
    """Write a case folder from arrays: ``make_case(image, masks, name="case01", affine=None)``."""

    def _make(image, masks, name="case01", affine=None, mask_affines=None, task=1):
        folder = tmp_path / name
        write_nifti(folder / "image.nii.gz", image, affine)
        for i, m in enumerate(masks, start=1):
            aff = affine if mask_affines is None else mask_affines[i - 1]
            write_nifti(folder / f"task{task:02d}_seg{i:02d}.nii.gz", m, aff)
        return folder

    return _make


@pytest.fixture(scope="session")
def synthetic_2d_dataset(tmp_path_factory):
    """A small 2D QUBIQ-layout dataset: 4 training + 2 validation cases, 3 raters, 64×64."""
    from napari_softseg.datasets.synthetic import write_qubiq_dataset

    root = tmp_path_factory.mktemp("synthetic2d") / "ds"
    return write_qubiq_dataset(root, n_cases=4, n_validation=2, shape=(64, 64, 1), n_raters=3, seed=1)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report as ``item.rep_setup`` / ``rep_call`` / ``rep_teardown``.

    napari's ``make_napari_viewer`` teardown reads ``item.rep_call``; without this a fixture that fails
    during setup surfaces as ``AttributeError: rep_call`` instead of the real error.
    """
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


def init_napari_plugins():
    """Let napari discover installed plugins once (a second call would register their commands twice)."""
    from napari._app_model import get_app_model
    from napari.plugins import _initialize_plugins

    if "napari-softseg.get_reader" not in get_app_model().commands:
        _initialize_plugins()
