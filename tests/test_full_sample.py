"""The bundled full-size whole-head sample: files, licence, napari sample data and ``softseg demo --sample``."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from napari_softseg.cli import demo_command
from napari_softseg.datasets import bundled
from napari_softseg.datasets.bundled import demo_case_path, full_case_path
from napari_softseg.errors import SoftsegError

SHAPE = (131, 155, 126)          # core (X, Y, Z)
SPACING = (1.5, 1.5, 1.5)
N_RATERS = 5


def test_full_case_is_a_whole_head_with_five_raters():
    case = full_case_path()
    assert case == bundled.DATA_DIR / "mni_head" / "Training" / "case01"
    expected = ["image.nii.gz"] + [f"task01_seg{r:02d}.nii.gz" for r in range(1, N_RATERS + 1)]
    assert sorted(p.name for p in case.iterdir()) == expected
    image = nib.load(case / "image.nii.gz")
    data = np.asanyarray(image.dataobj)
    assert data.shape == SHAPE and image.header.get_zooms() == pytest.approx(SPACING)
    # the whole field of view of a head scan: ~197 x 233 x 189 mm, with air around the head
    assert np.array(SHAPE) * np.array(SPACING) == pytest.approx((196.5, 232.5, 189.0))
    assert data.std() > 20 and (data < 0.05 * data.max()).mean() > 0.2
    volumes = []
    for r in range(1, N_RATERS + 1):
        mask = nib.load(case / f"task01_seg{r:02d}.nii.gz")
        values = np.asanyarray(mask.dataobj)
        assert values.shape == SHAPE and set(np.unique(values)) == {0, 1}
        np.testing.assert_allclose(mask.affine, image.affine)
        volumes.append(values.sum() * np.prod(SPACING) / 1000.0)
    recipe = json.loads((case.parent.parent / "recipe.json").read_text())
    assert recipe["shape"] == list(SHAPE) and len(recipe["raters"]) == N_RATERS
    assert 300 < min(volumes) and max(volumes) < 900           # white matter of an adult brain, in mL


def test_full_sample_carries_its_licence_and_says_what_is_simulated():
    root = full_case_path().parent.parent
    licence = (root / "LICENSE.txt").read_text(encoding="utf-8")
    for phrase in ("Louis Collins", "McGill University", "Permission to use, copy, modify, and distribute",
                   "ICBM152 2009a", "simulated"):
        assert phrase in licence
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "simulated" in readme and "No radiologist drew these masks" in readme
    assert "make_full_sample.py" in readme


def test_full_case_path_names_the_missing_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "DATA_DIR", tmp_path)
    with pytest.raises(SoftsegError, match="whole-head sample is missing") as err:
        full_case_path()
    assert str(tmp_path / "mni_head" / "Training" / "case01") in str(err.value)


def test_open_sample_gives_the_3d_head_with_its_raters(make_napari_viewer):
    from conftest import init_napari_plugins

    init_napari_plugins()
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-softseg", "full_case")
    kinds = [layer.metadata["softseg"]["kind"] for layer in layers]
    assert kinds == ["image"] + ["rater"] * N_RATERS + ["soft_label"]
    image = layers[0]
    assert image.ndim == 3 and image.data.shape == SHAPE[::-1]          # display order (z, y, x)
    header_affine = nib.load(full_case_path() / "image.nii.gz").affine
    # voxel (0, 0, 0) and the far corner land where the NIfTI affine puts them (napari's world is z, y, x)
    for index in ((0, 0, 0), tuple(s - 1 for s in SHAPE)):
        world = header_affine @ [*index, 1.0]
        np.testing.assert_allclose(image.data_to_world(index[::-1]), world[:3][::-1], atol=1e-4)
    soft = np.asarray(layers[-1].data)
    masks = np.stack([np.asarray(layer.data) for layer in layers[1:-1]])
    np.testing.assert_allclose(soft, masks.mean(0), atol=1e-6)
    assert layers[-1].colorbar is not None and 0.0 <= soft.min() and soft.max() == 1.0


def _demo_args(*argv):
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


class _Opened(Exception):
    """Raised by the stand-in ``open_demo`` to report the case the command chose."""


@pytest.mark.parametrize("argv, expected", [((), demo_case_path), (("--sample", "demo"), demo_case_path),
                                            (("--sample", "full"), full_case_path)])
def test_demo_command_opens_the_chosen_sample(monkeypatch, argv, expected):
    def opened(case_path, model_dir, device, **kwargs):
        raise _Opened(case_path)

    monkeypatch.setattr(demo_command, "open_demo", opened)
    monkeypatch.setattr(demo_command, "isolate_settings", lambda: None)
    monkeypatch.setattr(demo_command, "check_display", lambda: None)
    with pytest.raises(_Opened) as chosen:
        demo_command.run(_demo_args(*argv))
    assert chosen.value.args[0] == expected()


def test_demo_command_refuses_case_and_sample_together(tmp_path):
    with pytest.raises(SoftsegError, match="alternatives"):
        demo_command.run(_demo_args("--sample", "full", "--case", str(tmp_path)))
    with pytest.raises(SystemExit):
        _demo_args("--sample", "huge")
