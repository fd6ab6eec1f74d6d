"""Soft maps round-trip: `softseg predict` and the viewer's writer write one sidecar format, and the reader
opens either file as a soft map (translucent heat, offered by the docks) — also from the header alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_softseg._napari.reader import get_reader
from napari_softseg._napari.writer import write_soft_map
from napari_softseg.cli import main
from napari_softseg.datasets.bundled import demo_case_path, demo_model_path
from napari_softseg.io.sidecar import sidecar_path


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "p.nii.gz"
    assert main(["predict", str(demo_model_path()), str(demo_case_path() / "image.nii.gz"), "-o", str(out),
                 "--device", "cpu", "--quiet"]) == 0
    return out


def _style(kwargs):
    return kwargs["colormap"].name, kwargs["blending"], tuple(kwargs["contrast_limits"])


def test_predict_writes_the_viewers_sidecar_and_opens_as_soft_map(predicted):
    side = json.loads(sidecar_path(predicted).read_text())
    assert side["kind"] == "prediction" and side["software"].startswith("napari-softseg")
    assert side["model"] == str(demo_model_path()) and side["device"] == "cpu" and "temperature" in side
    (data, kwargs, kind), = get_reader(str(predicted))(str(predicted))
    assert kind == "image"
    assert kwargs["metadata"]["softseg"]["kind"] == "prediction"
    assert _style(kwargs) == ("softseg heat band", "translucent", (0.0, 1.0))
    assert 0.0 <= data.min() and data.max() <= 1.0


def test_header_alone_is_enough(predicted, tmp_path):
    bare = tmp_path / "bare.nii.gz"
    bare.write_bytes(predicted.read_bytes())            # no sidecar next to this copy
    (data, kwargs, kind), = get_reader(str(bare))(str(bare))
    meta = kwargs["metadata"]["softseg"]
    assert meta["kind"] == "prediction" and meta["provenance"]["task"] == 1
    assert meta["provenance"]["header_description"].startswith("softseg p(task1) T=")
    assert _style(kwargs) == ("softseg heat band", "translucent", (0.0, 1.0))


def test_writer_and_cli_sidecars_have_the_same_fields(predicted, tmp_path):
    (data, kwargs, kind), = get_reader(str(predicted))(str(predicted))
    written = write_soft_map(str(tmp_path / "again.nii.gz"), data, kwargs)
    viewer_side = json.loads(open(written[1]).read())
    cli_side = json.loads(sidecar_path(predicted).read_text())
    common = {"software", "kind", "layer", "written", "dtype"}
    assert common <= set(viewer_side) and common <= set(cli_side)
    assert viewer_side["kind"] == cli_side["kind"] == "prediction"
    (data2, kwargs2, _), = get_reader(written[0])(written[0])
    assert _style(kwargs2) == _style(kwargs)
    np.testing.assert_allclose(data2, data)


def test_opened_prediction_is_offered_by_the_explorer(predicted, make_napari_viewer, qtbot):
    from _analysis_case import open_dock, wait_ready

    viewer = make_napari_viewer()
    viewer.open(str(demo_case_path()), plugin="napari-softseg")
    viewer.open(str(predicted), plugin="napari-softseg")
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    assert widget.inputs.soft_layer().name == "p"              # the prediction, before the soft label
    assert widget.operating_point() is not None and widget.contour_layer.visible
