"""``softseg demo``: the demo viewer, its screenshot, and a real-pixel screenshot of a shown viewer."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from napari_softseg._napari import layers as L
from napari_softseg.cli import demo_command
from napari_softseg.errors import SoftsegError


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained small U-Net; the demo must work with any model folder (--model)."""
    import torch

    from napari_softseg.model.model_io import ModelConfig, new_network, save_model

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2})
    return save_model(tmp_path_factory.mktemp("models") / "tiny", new_network(config), config)


def _args(*argv):
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def _png(path):
    import matplotlib.image

    return (matplotlib.image.imread(str(path))[..., :3] * 255).astype(np.uint8)


def test_no_display_gives_advice(monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SoftsegError, match="xvfb-run -a softseg demo"):
        demo_command.check_display()


def test_existing_screenshot_is_not_overwritten(tmp_path):
    out = tmp_path / "shot.png"
    out.write_bytes(b"keep me")
    with pytest.raises(SoftsegError, match="already exists"):
        demo_command.run(_args("--screenshot", str(out)))
    assert out.read_bytes() == b"keep me"


def test_demo_screenshot_of_whole_window(make_napari_viewer, tmp_path, tiny_model):  # fixture: clean plugin state
    from napari_softseg.datasets.bundled import demo_case_path

    out = tmp_path / "demo.png"
    assert demo_command.run(_args("--model", str(tiny_model), "--device", "cpu", "--screenshot", str(out))) == 0
    pixels = _png(out)
    height, width, _ = pixels.shape
    assert width >= 900 and height >= 500  # the whole window (fitted to the test screen), not only the canvas
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    assert not list(tmp_path.glob(".*"))  # atomic: no temporary file left
    assert demo_case_path().is_dir()


def test_demo_viewer_contents(make_napari_viewer, tiny_model):  # fixture: clean plugin state
    from napari_softseg._qt.segmentation_widget import PREDICTION_NAME
    from napari_softseg.datasets.bundled import demo_case_path

    viewer, docks = demo_command.open_demo(demo_case_path(), tiny_model, "cpu", quiet=True, show=False)
    try:
        assert set(docks) == set(demo_command.DOCKS)
        kinds = [L.kind_of(layer) for layer in viewer.layers]
        assert kinds.count("rater") >= 2 and "image" in kinds and "soft_label" in kinds
        assert all(layer.contour == 2 for layer in viewer.layers if L.kind_of(layer) == "rater")
        prediction = viewer.layers[PREDICTION_NAME]
        prov = L.provenance_of(prediction)
        assert prov["model"] == str(tiny_model) and prov["device"] == "cpu"
        assert np.allclose(prediction.affine.affine_matrix, viewer.layers[0].affine.affine_matrix)
        assert viewer.scene.camera.orientation2d == ("up", "right")
        from napari_softseg._napari.layer_roles import analysis_session

        assert analysis_session(viewer).threshold == 0.5
        # the clinician layout: raters hidden, the scan and the heat map shown, one colour bar
        assert not any(layer.visible for layer in viewer.layers if L.kind_of(layer) == "rater")
        assert prediction.visible and prediction.colorbar.visible
        assert sum(layer.colorbar.visible for layer in viewer.layers if hasattr(layer, "colorbar")) == 1
        assert docks["Soft segmentation"].model_path() == tiny_model
    finally:
        viewer.close()


def test_canvas_screenshot_shows_the_soft_map(make_napari_viewer):
    """A shown viewer renders real pixels: the inferno soft map over the grey scan, not a blank canvas."""
    from napari_softseg._napari.sample_data import synthetic_case

    viewer = make_napari_viewer(show=True)
    layers = L.add_layer_tuples(viewer, synthetic_case(), rater_contours=True)
    soft = layers[-1]
    soft.visible = True
    soft.opacity = 1.0
    viewer.dims.set_point(0, soft.data_to_world([soft.data.shape[0] // 2, 0, 0])[0])
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert shot.std() > 10
    warm = (shot[..., 0] > shot[..., 2] + 60) & (shot[..., 0] > 150)  # inferno's orange/yellow
    grey = (np.abs(shot[..., 0] - shot[..., 1]) < 8) & (np.abs(shot[..., 1] - shot[..., 2]) < 8) & (shot[..., 0] > 40)
    assert warm.sum() > 200, "no soft-map colours on the canvas"
    assert grey.sum() > 200, "no scan visible on the canvas"
    soft.visible = False
    for layer in viewer.layers:
        if L.kind_of(layer) == "rater":
            layer.visible = False
    shot_without = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    warm_without = (shot_without[..., 0] > shot_without[..., 2] + 60) & (shot_without[..., 0] > 150)
    assert warm_without.sum() < warm.sum() / 10
