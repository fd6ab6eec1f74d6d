"""Device choice: cuda -> mps -> cpu with a reason; a missing backend is a clear error."""

from __future__ import annotations

import pytest
import torch

from napari_softseg.errors import SoftsegError
from napari_softseg.model import device as device_mod
from napari_softseg.model.device import DeviceChoice, available_devices, resolve_device

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(device_mod, "_cuda_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)


def test_auto_without_gpu_uses_cpu_and_says_why(no_gpu):
    choice = resolve_device("auto")
    assert choice == DeviceChoice("cpu", "CUDA not available; MPS not available; using CPU")
    assert resolve_device(None).device == "cpu"


def test_auto_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(device_mod, "_cuda_available", lambda: True)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    monkeypatch.setattr(device_mod, "_cuda_name", lambda d: "Fake GPU")
    choice = resolve_device("auto")
    assert choice.device == "cuda" and "Fake GPU" in choice.reason and choice.is_cuda
    monkeypatch.setattr(device_mod, "_cuda_available", lambda: False)
    choice = resolve_device("auto")
    assert choice.device == "mps" and choice.reason.startswith("CUDA not available; MPS available")


@pytest.mark.parametrize("name, expected", [("cuda", "CUDA was requested"), ("cuda:1", "CUDA was requested"),
                                            ("mps", "MPS was requested"), ("tpu", "unknown device")])
def test_missing_or_unknown_backend_is_an_error(no_gpu, name, expected):
    with pytest.raises(SoftsegError, match=expected):
        resolve_device(name)


def test_cpu_always_works_and_choice_passes_through():
    assert resolve_device(" CPU ").device == "cpu"
    choice = DeviceChoice("cpu", "because")
    assert resolve_device(choice) is choice


def test_available_devices_for_dropdown(no_gpu):
    assert available_devices() == ["auto", "cpu"]


def test_available_devices_lists_each_gpu(monkeypatch):
    monkeypatch.setattr(device_mod, "_cuda_available", lambda: True)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert available_devices() == ["auto", "cuda:0", "cuda:1", "cpu"]


@pytest.mark.gpu
@requires_cuda
def test_auto_picks_cuda_on_a_gpu_machine():
    choice = resolve_device("auto")
    assert choice.device == "cuda" and torch.cuda.get_device_name(0) in choice.reason
