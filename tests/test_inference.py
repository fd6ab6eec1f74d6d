"""Prediction: shapes, geometry, slicing, tiling, temperature, OOM fallback, and file/case/dataset inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_softseg.errors import SoftsegError
from napari_softseg.model import inference
from napari_softseg.model.calibration import sigmoid
from napari_softseg.model.inference import forward_logits, predict_array, predict_logits, slice_stack
from napari_softseg.model.model_io import LoadedModel, ModelConfig, load_model, new_network, save_model
from napari_softseg.pipeline.predict import predict_path
from napari_softseg.progress import drive

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _model(seed=0, norm="instance", **config_kw):
    config = ModelConfig(architecture={"base_channels": 4, "depth": 2, "norm": norm}, **config_kw)
    torch.manual_seed(seed)
    network = new_network(config).eval()
    return LoadedModel(network=network, config=config)


@pytest.fixture
def model_dir(tmp_path):
    model = _model()
    return save_model(tmp_path / "model", model.network, model.config)


def test_slice_stack_25d_channels_and_edges():
    volume = np.arange(2 * 4 * 3 * 3, dtype=np.float32).reshape(2, 4, 3, 3)  # (C, S, H, W)
    out = slice_stack(volume, [0, 3], context=1)
    assert out.shape == (2, 6, 3, 3)
    np.testing.assert_array_equal(slice_stack(torch.from_numpy(volume), [0, 3], context=1).numpy(), out)
    # slice 0: channel 0 at offsets -1 (clamped to 0), 0, +1, then channel 1 likewise
    np.testing.assert_array_equal(out[0, :3], volume[0, [0, 0, 1]])
    np.testing.assert_array_equal(out[0, 3:], volume[1, [0, 0, 1]])
    np.testing.assert_array_equal(out[1, :3], volume[0, [2, 3, 3]])


@pytest.mark.parametrize("shape", [(37, 29, 3), (64, 64, 1), (17, 80, 2)])
def test_any_shape_gives_a_soft_map_of_the_same_shape(shape):
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    prob = drive(predict_array(_model(), image, device="cpu"))
    assert prob.shape == shape and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1


def test_slices_are_independent_along_the_slice_axis():
    model = _model(slice_axis=0)
    image = np.random.default_rng(1).normal(size=(1, 3, 32, 40)).astype(np.float32)
    whole = drive(predict_array(model, image, device="cpu"))
    assert whole.shape == (3, 32, 40)
    # z-score uses the whole volume, so normalise first and compare one slice predicted alone
    one = drive(predict_array(_model(slice_axis=0, normalization={"mode": "none"}), image[:, 1:2], device="cpu"))
    normed = drive(predict_array(_model(slice_axis=0, normalization={"mode": "none"}), image, device="cpu"))
    np.testing.assert_allclose(one[0], normed[1], atol=1e-5)


def test_temperature_is_applied():
    model = _model()
    image = np.random.default_rng(2).normal(size=(1, 32, 32, 2)).astype(np.float32)
    logits = drive(predict_logits(model.network, model.config, image))
    model.config.temperature = 2.5
    prob = drive(predict_array(model, image, device="cpu"))
    np.testing.assert_allclose(prob, sigmoid(logits / 2.5), atol=1e-6)


class _Pointwise(torch.nn.Module):
    """A network without spatial context: tiling must reproduce the whole-slice pass exactly."""

    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv(x) * 3 + x**2


def test_tiling_blends_to_exactly_the_whole_pass_for_pointwise_network():
    torch.manual_seed(0)
    net = _Pointwise().eval()
    batch = np.random.default_rng(3).normal(size=(2, 1, 70, 45)).astype(np.float32)
    whole = forward_logits(net, batch, "cpu", tile_size=1024).numpy()
    tiled = forward_logits(net, batch, "cpu", tile_size=16).numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiling_matches_whole_slice_pass_for_a_unet():
    # no normalisation layers: only the border context of each tile differs, and blending hides it
    torch.manual_seed(0)
    model = _model(norm="none")
    batch = np.random.default_rng(4).normal(size=(1, 1, 160, 128)).astype(np.float32)
    whole = sigmoid(forward_logits(model.network, batch, "cpu", tile_size=1024).numpy())
    tiled = sigmoid(forward_logits(model.network, batch, "cpu", tile_size=64).numpy())
    assert np.abs(tiled - whole).max() < 0.02
    assert np.abs(tiled - whole).mean() < 0.002


def test_channel_mismatch_and_nan_are_clear_errors():
    model = _model()
    with pytest.raises(SoftsegError, match="expects 1 image channel\\(s\\) but this image has 4") as err:
        drive(predict_array(model, np.zeros((4, 8, 8, 1), np.float32), source="scan.nii.gz"))
    assert "scan.nii.gz" in str(err.value)
    bad = np.zeros((1, 8, 8, 1), np.float32)
    bad[0, 1, 1, 0] = np.nan
    with pytest.raises(SoftsegError, match="NaN"):
        drive(predict_array(model, bad))


def test_gpu_out_of_memory_retries_smaller_then_falls_back_to_cpu(monkeypatch):
    # No GPU here: "cpu:0" stands in for the accelerator (any device other than "cpu" gets the GPU
    # treatment); every forward pass on it runs out of memory.
    model = _model()
    calls = []
    real_forward = inference.forward_logits

    def fake_forward(network, batch, device, tile_size):
        calls.append((device, len(batch), tile_size))
        if device != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(network, batch, device, tile_size)

    monkeypatch.setattr(inference, "forward_logits", fake_forward)
    image = np.random.default_rng(5).normal(size=(1, 32, 32, 5)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        events, result = [], None
        gen = predict_array(model, image, device=inference.DeviceChoice("cpu:0", "stand-in GPU"), batch_size=4)
        while True:
            try:
                events.append(next(gen))
            except StopIteration as stop:
                result = stop.value
                break
    gpu_calls = [c for c in calls if c[0] != "cpu"]
    assert [c[1] for c in gpu_calls][:3] == [4, 2, 1]  # the batch is halved first
    assert [c[2] for c in gpu_calls] == [1024, 1024, 1024, 512, 256, 128, 64]  # then the tile size
    assert calls[-1][0] == "cpu" and next(model.network.parameters()).device.type == "cpu"
    assert any("out of memory" in e.message for e in events)
    expected = drive(predict_array(_model(), image, device="cpu"))
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_cpu_out_of_memory_is_a_user_error(monkeypatch):
    def oom(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1 GB. out of memory")

    monkeypatch.setattr(inference, "forward_logits", oom)
    with pytest.raises(SoftsegError, match="out of memory on the CPU"):
        drive(predict_array(_model(), np.zeros((1, 8, 8, 1), np.float32), device="cpu"))


def test_predict_file_keeps_affine_and_writes_float32(model_dir, synthetic_2d_dataset, tmp_path):
    image_path = synthetic_2d_dataset / "Validation" / "case05" / "image.nii.gz"
    out = tmp_path / "out" / "p.nii.gz"
    gen = predict_path(model_dir, image_path, out, device="cpu")
    first = next(gen)
    assert first.stage == "device" and "cpu" in first.message
    written = drive(gen)
    assert written == [out]
    src, res = nib.load(image_path), nib.load(out)
    assert res.shape == (64, 64, 1)
    np.testing.assert_allclose(res.affine, src.affine)
    assert res.get_data_dtype() == np.float32
    data = np.asanyarray(res.dataobj)
    assert data.min() >= 0 and data.max() <= 1


def test_predict_case_folder_and_dataset_mirror(model_dir, synthetic_2d_dataset, tmp_path):
    case = synthetic_2d_dataset / "Training" / "case01"
    assert drive(predict_path(model_dir, case, tmp_path / "case.nii.gz")) == [tmp_path / "case.nii.gz"]
    written = drive(predict_path(model_dir, synthetic_2d_dataset, tmp_path / "all"))
    expected = {tmp_path / "all" / f"{split}/case{i:02d}/prediction_task01.nii.gz"
                for split, i in [("Training", 1), ("Training", 2), ("Training", 3), ("Training", 4),
                                 ("Validation", 5), ("Validation", 6)]}
    assert set(written) == expected and all(p.is_file() for p in expected)


def test_existing_output_stops_before_writing_anything(model_dir, synthetic_2d_dataset, tmp_path):
    out = tmp_path / "all"
    existing = out / "Validation" / "case06" / "prediction_task01.nii.gz"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"mine")
    with pytest.raises(SoftsegError, match="already exists"):
        drive(predict_path(model_dir, synthetic_2d_dataset, out))
    assert existing.read_bytes() == b"mine"
    assert sorted(p for p in out.rglob("*") if p.is_file()) == [existing]
    written = drive(predict_path(model_dir, synthetic_2d_dataset, out, overwrite=True))
    assert existing in written and existing.read_bytes() != b"mine"


def test_task_mismatch_and_bad_output_names(model_dir, synthetic_2d_dataset, tmp_path):
    with pytest.raises(SoftsegError, match="trained for task 1, not task 2"):
        drive(predict_path(model_dir, synthetic_2d_dataset, tmp_path / "o", task=2))
    model = _model(task=2)
    with pytest.raises(SoftsegError, match="trained for task 2, but this case has masks for task\\(s\\) 1 only"):
        drive(predict_path(model, synthetic_2d_dataset, tmp_path / "o"))
    with pytest.raises(SoftsegError, match="must be a .nii or .nii.gz file name"):
        drive(predict_path(model_dir, synthetic_2d_dataset / "Training" / "case01", tmp_path / "o"))
    with pytest.raises(SoftsegError, match="must be a folder"):
        drive(predict_path(model_dir, synthetic_2d_dataset, tmp_path / "o.nii.gz"))
    with pytest.raises(SoftsegError, match="input not found"):
        drive(predict_path(model_dir, tmp_path / "missing.nii.gz", tmp_path / "o.nii.gz"))


def test_closing_the_generator_leaves_no_partial_file(model_dir, synthetic_2d_dataset, tmp_path):
    out = tmp_path / "all"
    gen = predict_path(model_dir, synthetic_2d_dataset, out)
    for event in gen:
        if event.stage == "case":  # first case written, stop in the middle of the run
            break
    gen.close()
    files = [p for p in out.rglob("*") if p.is_file() and p.name != "softseg_predict.json"]  # + the run record
    # the first case's map and its provenance sidecar (written by the pipeline with the map)
    assert sorted(f.name for f in files) == ["prediction_task01.nii.gz", "prediction_task01.softseg.json"]
    assert files[0].parent == files[1].parent
    assert nib.load(files[0].with_name("prediction_task01.nii.gz")).shape[:2] == (64, 64)


@pytest.mark.gpu
@requires_cuda
def test_cuda_prediction_matches_cpu():
    model = _model()
    image = np.random.default_rng(6).normal(size=(1, 128, 96, 4)).astype(np.float32)
    cpu = drive(predict_array(model, image, device="cpu"))
    gpu = drive(predict_array(model, image, device="cuda"))
    np.testing.assert_allclose(gpu, cpu, atol=1e-2)  # float16 autocast on the GPU


def test_normalisation_zscore_per_channel_and_ct_window():
    from napari_softseg.model.normalization import Normalization

    rng = np.random.default_rng(7)
    image = np.stack([rng.normal(100, 20, (8, 8, 3)), rng.normal(-5, 0.5, (8, 8, 3))]).astype(np.float32)
    out = Normalization("zscore").apply(image)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-5)
    np.testing.assert_allclose(out, (image - image.mean(axis=(1, 2, 3), keepdims=True))
                               / image.std(axis=(1, 2, 3), keepdims=True), atol=1e-5)
    assert np.all(Normalization("zscore").apply(np.full((1, 4, 4, 1), 7, np.float32)) == 0)  # constant: no NaN
    ct = Normalization("ct", window=(-100, 200)).apply(np.array([[[[-1000.0, -100, 50, 200, 3000]]]], np.float32))
    np.testing.assert_allclose(ct.ravel(), [0, 0, 0.5, 1, 1])
    with pytest.raises(SoftsegError, match="low < high"):
        Normalization("ct", window=(10, 10))
    with pytest.raises(SoftsegError, match="unknown normalisation"):
        Normalization("minmax")


def test_shipped_demo_model_still_reaches_its_published_held_out_numbers():
    """docs/results.md §1: held-out QUBIQ 0.9066, ECE (T-scaled) 0.0067, beats the left-out rater 20/20.

    The shipped model works at 1 mm in-plane, so the scan's voxel size (2 × 2 × 2.5 mm) must reach it, as
    ``softseg predict`` and the dock pass it; without it the network would see the slab at the wrong scale.
    """
    from napari_softseg.analysis.metrics import evaluate_case
    from napari_softseg.datasets.bundled import demo_dataset_path, demo_model_path
    from napari_softseg.io.dataset import discover, load_case

    model = load_model(demo_model_path())
    scores, eces, beats, comparisons = [], [], 0, 0
    for case in discover(demo_dataset_path()).split("Validation"):
        data = load_case(case, task=model.config.task)
        prob = drive(predict_array(model, data.image, device="cpu", spacing=data.spacing))
        report = evaluate_case(prob, data.masks, data.rater_names, data.spacing)
        scores.append(report["qubiq_score"])
        eces.append(report["ece"])
        beats += report["model_beats_raters"]
        comparisons += data.masks.shape[0]
    assert len(scores) == 4
    assert np.mean(scores) == pytest.approx(0.9066, abs=0.003)
    assert np.mean(eces) <= 0.0067 + 0.003
    assert beats == comparisons == 20


def test_dataset_run_goes_past_a_bad_case_and_a_rerun_retries_only_it(model_dir, synthetic_2d_dataset, tmp_path,
                                                                      capsys):
    import shutil

    from napari_softseg.cli import main

    data = tmp_path / "ds"
    shutil.copytree(synthetic_2d_dataset, data)
    bad = data / "Training" / "case02" / "image.nii.gz"
    good_copy = tmp_path / "case02_image.nii.gz"
    shutil.move(bad, good_copy)
    bad.write_bytes(b"not a NIfTI file")  # a damaged case in the middle of the dataset
    out = tmp_path / "pred"
    code = main(["predict", str(model_dir), str(data), "-o", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    maps = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert len(maps) == 5 and "Training/case02/prediction_task01.nii.gz" not in maps  # the 5 others written
    assert "1 case failed (5 written)" in captured.err and str(bad) in captured.err  # listed at the end, with why
    assert str(out / "Training/case03/prediction_task01.nii.gz") in captured.out
    before = {m: (out / m).stat().st_mtime_ns for m in maps}

    shutil.move(good_copy, bad)  # repaired: the rerun predicts only the failed case and keeps the others
    code = main(["predict", str(model_dir), str(data), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and "resuming: 5 of 6 case(s) already predicted" in captured.err
    assert (out / "Training/case02/prediction_task01.nii.gz").is_file()
    assert all((out / m).stat().st_mtime_ns == t for m, t in before.items())
