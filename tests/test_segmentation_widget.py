"""The Soft segmentation dock driven programmatically in a headless viewer (pytest-xvfb)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from _analysis_case import open_dock

from napari_softseg._napari import layers as L
from napari_softseg._napari.sample_data import synthetic_case, synthetic_case_data
from napari_softseg._qt.segmentation_widget import PREDICTION_NAME
from napari_softseg._qt.workers import run_progress
from napari_softseg.errors import SoftsegError
from napari_softseg.progress import Progress, drive

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 2-level U-Net with 4 base channels, saved like any model (fast on the CPU)."""
    import torch

    from napari_softseg.model.model_io import ModelConfig, new_network, save_model

    torch.manual_seed(0)
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2}, weights_dtype="float32")
    return save_model(tmp_path_factory.mktemp("models") / "tiny", new_network(config), config)


@pytest.fixture
def notifications():
    """Messages of napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list[str] = []

    def record(event):
        seen.append(str(event.message if hasattr(event, "message") else event))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def viewer_with_case(make_napari_viewer):
    viewer = make_napari_viewer()
    L.add_layer_tuples(viewer, synthetic_case())
    widget = open_dock(viewer, "Soft segmentation")
    return viewer, widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.task is None, timeout=TIMEOUT_MS)


def _tiny_training(widget, *, epochs: int, batch_size: int = 4, steps_per_epoch: int = 5) -> None:
    """Set the dock to train a tiny U-Net (width 4, depth 2, no augmentation) on the CPU for ``epochs``."""
    widget.train_overrides = {"base_channels": 4, "depth": 2, "batch_size": batch_size, "augment": False,
                              "weights_dtype": "float32", "steps_per_epoch": steps_per_epoch}
    widget.train_options.epochs.value = epochs
    widget.device_options.device.value = "cpu"


def test_auto_detects_image_and_raters(viewer_with_case):
    viewer, widget = viewer_with_case
    assert widget.image_layer().name == "synthetic image"
    assert [layer.name for layer in widget.rater_layers()] == ["rater 1", "rater 2", "rater 3", "rater 4"]
    # A Labels layer added later that is not a rater is offered but not ticked.
    viewer.add_labels(np.zeros(viewer.layers["rater 1"].data.shape, np.uint8), name="my drawing")
    assert "my drawing" not in [layer.name for layer in widget.rater_layers()]
    assert widget.rater_list.count() == 5


def test_device_auto_says_what_and_why(viewer_with_case, qtbot):
    from napari_softseg.model.device import resolve_device

    _, widget = viewer_with_case
    assert widget.device_options.device.value == "auto"
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=TIMEOUT_MS)    # torch may load in a worker
    choice = resolve_device("auto")
    assert choice.device in widget.device_label.text() and choice.reason in widget.device_label.text()


@pytest.mark.parametrize("method", ["mean", "majority"])
def test_build_soft_label_matches_core(viewer_with_case, method):
    from napari_softseg.analysis.softlabels import make_soft_label

    viewer, widget = viewer_with_case
    case = synthetic_case_data()
    widget.set_raters(["rater 1", "rater 3", "rater 4"])
    widget.soft_options.method.value = method
    widget.soft_button.click()
    layer = viewer.layers[f"soft label ({method})"]
    expected = make_soft_label(case.masks[[0, 2, 3]], method, spacing=case.spacing).data
    geometry = L.Geometry(case.affine, case.spatial_shape)
    assert np.allclose(geometry.from_display(layer.data), expected)
    prov = L.provenance_of(layer)
    assert prov["method"] == method and prov["raters"] == ["rater 1", "rater 3", "rater 4"]
    assert np.allclose(layer.affine.affine_matrix, viewer.layers["synthetic image"].affine.affine_matrix)


def test_magicgui_forms_feed_the_core(qtbot, viewer_with_case, monkeypatch, tmp_path):
    """The magicgui option forms (method, sigma, epochs, time budget, device) reach the same core calls."""
    from magicgui.widgets import Container

    from napari_softseg._qt import segmentation_widget as sw
    from napari_softseg.analysis.softlabels import make_soft_label

    viewer, widget = viewer_with_case
    assert all(isinstance(c, Container) for c in (widget.soft_options, widget.train_options, widget.device_options))
    assert widget.soft_options.method.value == "mean" and not widget.soft_options.sigma.enabled
    widget.soft_options.method.value = "smoothed"
    assert widget.soft_options.sigma.enabled       # sigma only matters for smoothing
    widget.soft_options.sigma.value = 2.5
    widget.soft_button.click()
    case = synthetic_case_data()
    expected = make_soft_label(case.masks, "smoothed", spacing=case.spacing, sigma_mm=2.5).data
    other = make_soft_label(case.masks, "smoothed", spacing=case.spacing, sigma_mm=1.0).data
    assert not np.allclose(expected, other)        # the sigma really changes the map
    geometry = L.Geometry(case.affine, case.spatial_shape)
    layer = viewer.layers["soft label (smoothed)"]
    assert np.allclose(geometry.from_display(layer.data), expected, atol=1e-6)

    seen = {}

    def fake_job(case, out_dir, **options):    # records what Train passes to the core, then "trains" nothing
        seen.update(options)
        yield sw.Progress("setup", 0, None, "recorded")
        return out_dir

    monkeypatch.setattr(sw, "train_on_cases", fake_job)
    widget.train_options.epochs.value = 7
    widget.train_options.max_minutes.value = 1.5
    widget.device_options.device.value = "cpu"
    widget.train(out_dir=tmp_path / "m")
    assert not widget.train_options.native.isEnabled() and not widget.soft_options.sigma.enabled
    _wait(qtbot, widget)
    assert seen == {"softlabel": "smoothed", "sigma_mm": 2.5, "epochs": 7, "max_minutes": 1.5, "device": "cpu"}
    assert widget.train_options.native.isEnabled() and widget.soft_options.sigma.enabled


def test_predicts_layer_model_is_made_in_the_worker_and_inserted_as_is(qtbot, viewer_with_case, tiny_model,
                                                                       monkeypatch):
    """The GUI thread only inserts the soft map's layer: napari's model of it is made in the worker."""
    import threading

    from napari_softseg._qt import segmentation_widget as sw

    made = []

    class Recorded(sw.Image):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self, threading.current_thread() is threading.main_thread()))

    monkeypatch.setattr(sw, "Image", Recorded)
    viewer, widget = viewer_with_case
    widget.add_model(tiny_model, label="tiny")
    widget.device_options.device.value = "cpu"
    widget.predict_button.click()
    _wait(qtbot, widget)
    ((layer, on_gui_thread),) = made
    assert not on_gui_thread and viewer.layers[PREDICTION_NAME] is layer
    assert L.kind_of(layer) == "prediction" and L.provenance_of(layer)["device"] == "cpu"


def test_predict_adds_soft_map_equal_to_engine(qtbot, viewer_with_case, tiny_model):
    from napari_softseg.model.inference import predict_array
    from napari_softseg.model.model_io import load_model

    viewer, widget = viewer_with_case
    label = widget.add_model(tiny_model, label="tiny")
    assert widget.model_path() == tiny_model and widget.model_combo.currentText() == label
    widget.device_options.device.value = "cpu"
    widget.predict_button.click()                    # the proxy napari hands docks: no "publiconlyproxy layer"
    task = widget.task
    assert task is not None and not widget.predict_button.isEnabled() and widget.cancel_button.isEnabled()
    _wait(qtbot, widget)
    assert widget.predict_button.isEnabled() and not widget.cancel_button.isEnabled()
    layer = viewer.layers[PREDICTION_NAME]
    case = synthetic_case_data()
    expected = drive(predict_array(load_model(tiny_model), case.image, device="cpu"))
    geometry = L.Geometry(case.affine, case.spatial_shape)
    assert np.allclose(geometry.from_display(layer.data), expected, atol=1e-5)
    assert layer.colormap.name == L.SOFT_MAP_COLORMAP and tuple(layer.contrast_limits) == (0.0, 1.0)
    assert np.allclose(layer.affine.affine_matrix, viewer.layers["synthetic image"].affine.affine_matrix)
    prov = L.provenance_of(layer)
    assert prov["model"] == str(tiny_model) and prov["device"] == "cpu" and prov["image_layer"] == "synthetic image"
    # the weights' checksum, as a CLI prediction's sidecar records it (named points check it)
    from napari_softseg.model.model_io import sha256_file

    assert prov["model_sha256"] == sha256_file(tiny_model / "model.safetensors")
    assert L.kind_of(layer) == "prediction"
    # Predicting again updates the same layer instead of piling up copies.
    widget.predict_button.click()
    _wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers].count(PREDICTION_NAME) == 1


def test_bad_inputs_notify_and_change_nothing(qtbot, viewer_with_case, notifications, tiny_model):
    viewer, widget = viewer_with_case
    before = [(layer.name, id(layer.data)) for layer in viewer.layers]
    # A rater layer whose shape does not match the image.
    viewer.add_labels(np.zeros((3, 4, 5), np.uint8), name="odd")
    widget.set_raters(["rater 1", "odd"])
    assert widget.build_soft_label() is None
    assert "odd" in widget.status.text() and "shape" in widget.status.text()
    assert any("odd" in m for m in notifications)
    # No model chosen.
    widget.model_combo.setCurrentText("model folder…")
    assert widget.predict() is None
    assert "no model" in widget.status.text()
    # A model folder that is not a model.
    widget.add_model(viewer_with_case[0].layers["rater 1"].name and tiny_model.parent, label="not a model")
    assert "not a napari-softseg model" in widget.model_info.text()
    # The scan removed: no image layer.
    viewer.layers.remove("synthetic image")
    assert widget.predict() is None and "no image layer" in widget.status.text()
    after = [(layer.name, id(layer.data)) for layer in viewer.layers if layer.name != "odd"]
    assert after == [b for b in before if b[0] != "synthetic image"]


def test_wrong_channel_count_is_reported(qtbot, make_napari_viewer, tmp_path, notifications):
    from napari_softseg.model.model_io import ModelConfig, new_network, save_model

    config = ModelConfig(architecture={"base_channels": 4, "depth": 1}, image_channels=2)
    model = save_model(tmp_path / "two", new_network(config), config)
    viewer = make_napari_viewer()
    L.add_layer_tuples(viewer, synthetic_case()[:1])
    widget = open_dock(viewer, "Soft segmentation")
    widget.add_model(model)
    widget.device_options.device.value = "cpu"
    widget.predict()
    _wait(qtbot, widget)
    assert "channel" in widget.status.text()
    assert PREDICTION_NAME not in viewer.layers


def _slow_job(*args, **kwargs):
    for i in range(10_000):
        time.sleep(0.01)
        yield Progress("slices", i, 10_000, f"slice {i}")
    return np.zeros(1), {}


def test_cancel_leaves_layers_unchanged(qtbot, viewer_with_case, monkeypatch, tiny_model):
    import napari_softseg._qt.segmentation_widget as module

    monkeypatch.setattr(module, "predict_image", _slow_job)
    viewer, widget = viewer_with_case
    widget.add_model(tiny_model)
    n_layers = len(viewer.layers)
    task = widget.predict()
    qtbot.waitUntil(lambda: task.last_event is not None, timeout=TIMEOUT_MS)
    assert not widget.train_button.isEnabled() and not widget.image_combo.isEnabled()
    widget.cancel()
    _wait(qtbot, widget)
    assert task.cancelled and task.result is None
    assert len(viewer.layers) == n_layers and "cancelled" in widget.status.text()
    assert widget.predict_button.isEnabled()


def test_a_job_loads_torchs_libraries_in_its_worker_before_it_runs(qtbot, viewer_with_case, monkeypatch,
                                                                      tiny_model):
    import threading

    import napari_softseg._qt.segmentation_widget as module

    order = []
    monkeypatch.setattr(module, "preload_torch_libraries",
                        lambda: order.append(("preload", threading.current_thread() is threading.main_thread())))

    def job(*args, **kwargs):
        order.append(("job", threading.current_thread() is threading.main_thread()))
        yield Progress("slices", 0, 1, "slice 0")
        return np.zeros(1), {}

    monkeypatch.setattr(module, "predict_image", job)
    viewer, widget = viewer_with_case
    widget.add_model(tiny_model)
    widget.device_options.device.value = "cpu"
    task = widget.predict()
    qtbot.waitUntil(lambda: not task.running, timeout=TIMEOUT_MS)
    assert order == [("preload", False), ("job", False)]


def test_closing_viewer_during_run_does_not_crash(qtbot, make_napari_viewer, monkeypatch, tiny_model):
    import napari_softseg._qt.segmentation_widget as module

    monkeypatch.setattr(module, "predict_image", _slow_job)
    viewer = make_napari_viewer()
    L.add_layer_tuples(viewer, synthetic_case()[:2])
    widget = open_dock(viewer, "Soft segmentation")
    widget.add_model(tiny_model)
    task = widget.predict()
    qtbot.waitUntil(lambda: task.last_event is not None, timeout=TIMEOUT_MS)
    viewer.close()
    qtbot.waitUntil(lambda: not task.running, timeout=TIMEOUT_MS)
    assert task.cancelled  # the dock went away with the viewer and stopped its work


def test_train_offers_the_model_then_predicts(qtbot, viewer_with_case, tmp_path, monkeypatch):
    import tempfile

    viewer, widget = viewer_with_case
    _tiny_training(widget, epochs=1)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    events = []
    widget.train_button.click()                      # a tiny budget: 1 epoch of a 4-channel U-Net
    task = widget.task
    assert task is not None
    task._callbacks["progress"] = lambda ev, old=task._callbacks["progress"]: (events.append(ev), old(ev))
    _wait(qtbot, widget)
    assert task.error is None, task.error
    (trained,) = (tmp_path / "softseg-models").iterdir()
    assert (trained / "model.safetensors").is_file()
    assert widget.model_path() == trained
    assert any(ev.stage == "epoch" for ev in events)
    # trained in memory on the open layers, with a held-out slab for validation and calibration
    from napari_softseg.model.model_io import read_config

    config = read_config(trained)
    assert len(config.training["val_cases"]) == 1 and config.calibration["state"] == "calibrated"
    assert "calibrated: T = " in widget.model_info.text()
    widget.predict_button.click()
    _wait(qtbot, widget)
    assert PREDICTION_NAME in viewer.layers


def test_cancelled_train_offers_the_checkpoint_it_kept(qtbot, viewer_with_case, tmp_path):
    viewer, widget = viewer_with_case
    _tiny_training(widget, epochs=500)
    out = tmp_path / "stopped"
    task = widget.train(out_dir=out)
    qtbot.waitUntil(lambda: (out / "model.safetensors").is_file(), timeout=TIMEOUT_MS)  # epoch 1 checkpointed
    widget.cancel()
    _wait(qtbot, widget)
    assert task.cancelled
    assert widget.model_path() == out and "stopped" in widget.status.text() and "--resume" in widget.status.text()


def test_run_progress_reports_errors_and_results(qtbot):
    def failing():
        yield Progress("x", 1, 2)
        raise SoftsegError("broken input", "/some/file.nii.gz")

    errors = []
    task = run_progress(failing(), description="Job", on_error=errors.append, show_bar=False)
    qtbot.waitUntil(lambda: not task.running, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(errors), timeout=TIMEOUT_MS)
    assert "broken input" in str(errors[0]) and task.result is None

    def working():
        yield Progress("x", 1, 1)
        return 42

    results = []
    task = run_progress(working(), description="Job", on_returned=results.append)
    qtbot.waitUntil(lambda: results == [42], timeout=TIMEOUT_MS)


def test_case_with_two_tasks_uses_one_task_everywhere(make_napari_viewer, tmp_path):
    from napari_softseg._napari.reader import get_reader
    from napari_softseg.datasets.synthetic import write_case

    folder = write_case(tmp_path / "case01", shape=(32, 32, 4), n_raters=3, n_tasks=2, seed=2)
    viewer = make_napari_viewer()
    L.add_layer_tuples(viewer, get_reader(str(folder))(str(folder)))
    widget = open_dock(viewer, "Soft segmentation")
    ticked = [layer.name for layer in widget.rater_layers()]
    assert ticked == ["task 1 rater 1", "task 1 rater 2", "task 1 rater 3"]
    case = widget._case()
    assert case.masks.shape[0] == 3
    explorer = open_dock(viewer, "Threshold explorer")
    assert explorer.inputs.soft_layer().name == "task 1 soft label (mean)"
    assert [layer.name for layer in explorer.inputs.rater_layers()] == ticked


def test_train_learns_from_every_open_case(qtbot, make_napari_viewer, tmp_path):
    """Two case folders opened the napari way: each image keeps its own raters ticked, and Train learns from
    both cases in memory (one trains, one validates and calibrates)."""
    from napari_softseg.datasets.synthetic import write_qubiq_dataset
    from napari_softseg.io.dataset import discover, load_case
    from napari_softseg.model.model_io import read_config

    root = tmp_path / "ds"
    write_qubiq_dataset(root, n_cases=2, n_validation=0, shape=(24, 20, 6), n_raters=3, seed=2)
    on_disk = discover(root).cases
    viewer = make_napari_viewer()
    for case in on_disk:
        viewer.open(str(case.path), plugin="napari-softseg")
    widget = open_dock(viewer, "Soft segmentation")
    # the selected image (the last opened) has its own three raters ticked, not the other case's
    assert widget.image_layer().name == "case02 image"
    ticked = widget.rater_layers()
    assert len(ticked) == 3 and {L.provenance_of(r)["case"] for r in ticked} == {"case02"}
    cases, skipped = widget.training_cases()
    assert [c.name for c in cases] == ["case02", "case01"] and skipped == []
    for case in cases:
        expected = load_case(root / "Training" / case.name)
        np.testing.assert_array_equal(case.masks, expected.masks)
        np.testing.assert_array_equal(case.image, expected.image)

    _tiny_training(widget, epochs=1, batch_size=2, steps_per_epoch=3)
    out = tmp_path / "model"
    task = widget.train(out_dir=out)
    assert "starting on 2 case(s) in memory (case02, case01)" in widget.status.text()
    _wait(qtbot, widget)
    assert task.error is None, task.error
    config = read_config(out)
    assert sorted(config.training["train_cases"] + config.training["val_cases"]) == ["case01", "case02"]
    assert config.calibration["state"] == "calibrated"
    assert "Trained on 2 case(s) in memory (case02, case01)" in widget.status.text()
