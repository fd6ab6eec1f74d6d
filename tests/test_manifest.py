"""The plugin manifest: valid with imports, discovered by napari, and its contributions work."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_softseg._napari import layers as L


def _npe2() -> list[str]:
    exe = Path(sys.executable).with_name("npe2")
    return [str(exe)] if exe.exists() else [shutil.which("npe2") or "npe2"]


def test_npe2_validate_with_imports():
    result = subprocess.run([*_npe2(), "validate", "--imports", "napari-softseg"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout.lower()


def test_manifest_ships_inside_the_package():
    import napari_softseg

    manifest = Path(napari_softseg.__file__).with_name("napari.yaml")
    assert manifest.is_file() and "napari_softseg._napari.reader:get_reader" in manifest.read_text()


def test_napari_lists_the_plugin_and_its_contributions():
    import npe2
    from conftest import init_napari_plugins

    init_napari_plugins()
    pm = npe2.PluginManager.instance()
    manifest = pm.get_manifest("napari-softseg")
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration", "Dataset review"
    }
    assert {s.key for s in contributions.sample_data} == {"demo_case", "full_case", "synthetic_case"}
    assert {tuple(w.layer_types) for w in contributions.writers} == {("image",), ("labels",)}
    assert "napari/layers/segment" in contributions.menus
    # every python_name resolves to a callable
    for command in contributions.commands:
        assert callable(pm.commands.get(command.id)), command.id


def test_open_case_folder_and_sample_in_viewer(make_napari_viewer, make_case):
    rng = np.random.default_rng(0)
    folder = make_case(rng.random((8, 9, 5)).astype(np.float32), (rng.random((2, 8, 9, 5)) > 0.5).astype(np.uint8))
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin="napari-softseg")
    assert [layer.name for layer in viewer.layers] == ["case01 image", "rater 1", "rater 2", "soft label (mean)"]
    assert L.kind_of(viewer.layers["rater 2"]) == "rater"
    viewer.open_sample("napari-softseg", "synthetic_case")
    assert "synthetic image" in viewer.layers and "rater 4" in viewer.layers


def test_demo_sample_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-softseg", "demo_case")
    kinds = [L.kind_of(layer) for layer in viewer.layers]
    assert kinds[0] == "image" and kinds.count("rater") >= 2 and kinds[-1] == "soft_label"


@pytest.mark.parametrize("name", ["Soft segmentation", "Threshold explorer", "Rater comparison", "Calibration"])
def test_every_widget_docks(make_napari_viewer, name):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-softseg", "synthetic_case")
    _, widget = viewer.window.add_plugin_dock_widget("napari-softseg", name)
    assert widget is not None
