"""'Fine-tune on open cases' in the Soft segmentation dock (issue 19 item 4), opened the way napari opens docks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from _analysis_case import open_dock

from napari_softseg._napari import layers as L
from napari_softseg._napari.sample_data import synthetic_case
from napari_softseg.model.model_io import read_config

TIMEOUT_MS = 120_000


@pytest.fixture
def tiny_model(tmp_path):
    """An untrained 2-level U-Net with 4 base channels, saved like any model (fast on the CPU)."""
    import torch

    from napari_softseg.model.model_io import ModelConfig, new_network, save_model

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, weights_dtype="float32")
    return save_model(tmp_path / "models" / "tiny", new_network(config), config)


def _files(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_fine_tune_on_open_cases_with_a_corrected_annotation(qtbot, make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    L.add_layer_tuples(viewer, synthetic_case())
    widget = open_dock(viewer, "Soft segmentation")
    panel = widget.fine_tune_panel
    # the annotator's own mask (as Rater comparison ▸ Add my annotation layer makes it), drawn as the union
    # of the raters: a correction the model should learn
    raters = widget.rater_layers()
    union = np.max([np.asarray(r.data) for r in raters], axis=0).astype(np.uint8)
    first = raters[0]
    viewer.add_labels(union, name="my annotation", metadata=L.make_metadata("annotation", L.geometry_of(first)),
                      affine=first.affine.affine_matrix, scale=first.scale, translate=first.translate)
    assert panel.corrections_combo.currentText() == "my annotation"  # offered first, chosen
    cases, skipped = panel.cases()
    assert len(cases) == 1 and cases[0].masks.shape[0] == len(raters) + 1 and skipped == []

    label = widget.add_model(tiny_model, label="tiny")
    assert widget.model_path() == tiny_model
    widget.device_options.device.value = "cpu"
    panel.overrides = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "augment": False}
    source_files = _files(tiny_model)

    panel.button.click()
    task = widget.task
    assert task is not None and not panel.button.isEnabled() and widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: widget.task is None, timeout=TIMEOUT_MS)
    assert task.error is None, task.error

    # a new model beside the source, now the current one; the source is untouched
    new = widget.model_path()
    assert new != tiny_model and new.parent == tiny_model.parent and new.name.startswith("tiny-finetuned-")
    assert widget.model_combo.currentText() != label and panel.button.isEnabled()
    assert _files(tiny_model) == source_files
    config = read_config(new)
    assert config.training["init"]["model"] == str(tiny_model.absolute())
    assert config.plan["fingerprint"]["raters"] == [len(raters) + 1, len(raters) + 1]
    # the before/after figures on the held-out slab, in the config and in the dock
    report = panel.last_report
    assert report == config.training["before_after"] and len(report["cases"]) == 1
    assert 0 <= report["before"]["qubiq_score"] <= 1 and 0 <= report["after"]["qubiq_score"] <= 1
    text = panel.report_label.text()
    assert "before" in text and "after" in text and f"{report['after']['qubiq_score']:.3f}" in text
    assert "Fine-tuned tiny" in widget.status.text()


def test_fine_tune_without_corrections_or_raters_says_why(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    L.add_layer_tuples(viewer, synthetic_case())
    widget = open_dock(viewer, "Soft segmentation")
    widget.add_model(tiny_model, label="tiny")
    widget.set_raters([])
    assert widget.fine_tune_panel.fine_tune() is None
    assert "nothing to learn from" in widget.status.text()
