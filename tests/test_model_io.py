"""Model files: safetensors + config.json round trip; every foreign or broken file is refused unopened."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest
import torch

from napari_softseg.errors import SoftsegError
from napari_softseg.model import model_io
from napari_softseg.model.model_io import ModelConfig, load_model, new_network, read_config, save_model


def _config(**kw):
    return ModelConfig(architecture={"base_channels": 4, "depth": 2}, **kw)


@pytest.fixture
def saved(tmp_path):
    config = _config(task=2, temperature=1.5, softlabel={"method": "mean"})
    torch.manual_seed(0)
    net = new_network(config)
    save_model(tmp_path / "m", net, config)
    return tmp_path / "m", net, config


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_pickle(path, marker):
    path.write_bytes(pickle.dumps({"state_dict": _Evil(marker)}))
    return path


def test_round_trip_float16_and_float32(saved, tmp_path):
    model_dir, net, config = saved
    loaded = load_model(model_dir)
    assert loaded.config == read_config(model_dir)
    assert loaded.config.task == 2 and loaded.config.temperature == 1.5
    assert loaded.config.architecture["in_channels"] == 1 and not loaded.network.training
    x = torch.randn(2, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        ref, got = net(x), loaded.network(x)
    assert got.dtype == torch.float32
    assert torch.allclose(ref, got, atol=5e-2)  # float16 storage
    config32 = _config(weights_dtype="float32")
    save_model(tmp_path / "m32", net, config32)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m32").network(x), ref)
    # float16 storage is half the size of float32
    assert (model_dir / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "m32" / "model.safetensors").stat().st_size


def test_config_json_is_readable_and_versioned(saved):
    model_dir, _, _ = saved
    data = json.loads((model_dir / "config.json").read_text())
    assert data["format"] == "napari-softseg-model" and data["format_version"] == model_io.FORMAT_VERSION
    assert data["software"]["name"] == "napari-softseg"
    assert data["architecture"]["name"] == "unet2d" and data["normalization"]["mode"] == "zscore"
    assert load_model(model_dir / "config.json").path == model_dir  # the config file also names the model


def test_malicious_pickle_checkpoint_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_pickle(tmp_path / "checkpoint.pth", marker)
    # sanity: unpickling it really would run code
    probe = _evil_pickle(tmp_path / "probe.pkl", tmp_path / "probe_marker")
    pickle.loads(probe.read_bytes())
    assert (tmp_path / "probe_marker").exists()

    with pytest.raises(SoftsegError, match="pickle") as err:
        load_model(evil)
    assert "checkpoint.pth" in str(err.value)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_refused(saved, tmp_path):
    model_dir, _, _ = saved
    marker = tmp_path / "pwned"
    _evil_pickle(model_dir / "model.safetensors", marker)
    with pytest.raises(SoftsegError, match="pickle") as err:
        load_model(model_dir)
    assert "model.safetensors" in str(err.value)
    assert not marker.exists()


def test_torch_save_checkpoint_and_folder_with_only_pt_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weights": torch.zeros(3), "evil": _Evil(marker)}, tmp_path / "model.bin")
    with pytest.raises(SoftsegError, match="never opens pickles"):
        load_model(tmp_path / "model.bin")
    folder = tmp_path / "foreign"
    folder.mkdir()
    torch.save({"w": torch.zeros(3)}, folder / "best.pt")
    with pytest.raises(SoftsegError, match=r"config.json and model.safetensors missing; found best.pt"):
        load_model(folder)
    assert not marker.exists()


def test_corrupt_weights_and_config(saved):
    model_dir, _, _ = saved
    weights = model_dir / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(SoftsegError, match="not a valid safetensors file") as err:
        load_model(model_dir)
    assert str(weights) in str(err.value)
    weights.write_bytes(good)
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(SoftsegError, match="config is not valid JSON"):
        load_model(model_dir)


def _edit_config(model_dir, **changes):
    path = model_dir / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format_version": 99, "software": {"version": "9.0"}}, "format version 99 .*upgrade napari-softseg"),
        ({"format": "something-else"}, "not a napari-softseg model config"),
        ({"architecture": {"name": "resnet50"}}, "unknown network architecture 'resnet50'"),
        ({"architecture": {"depth": 3}}, "weights do not match the architecture"),
        ({"architecture": {"base_channels": 8}}, "of wrong shape"),
        ({"image_channels": 4}, "architecture has 1 input channels but image_channels=4"),
        ({"temperature": -1}, "temperature must be positive"),
    ],
)
def test_incompatible_configs_are_clear_errors(saved, changes, message):
    model_dir, _, _ = saved
    _edit_config(model_dir, **changes)
    with pytest.raises(SoftsegError, match=message) as err:
        load_model(model_dir)
    assert str(model_dir) in str(err.value)


def test_missing_model(tmp_path):
    with pytest.raises(SoftsegError, match="model not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SoftsegError, match="not a napari-softseg model"):
        load_model(tmp_path / "notes.txt")


def test_failed_write_keeps_previous_file_and_leaves_no_temp(saved, monkeypatch):
    model_dir, net, config = saved
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(model_io.os, "fsync", full_disk)
    torch.manual_seed(1)
    with pytest.raises(SoftsegError, match="No space left on device"):
        save_model(model_dir, new_network(config), config)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before


def test_new_files_respect_umask(tmp_path):
    model_io.atomic_write_bytes(tmp_path / "f.json", b"{}")
    old = os.umask(0o022)
    os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~old


@pytest.mark.parametrize("field, value, message", [
    ("normalization", "zscore", "normalization must be a JSON object"),
    ("task", "1", "task must be a whole number"),
    ("softlabel", "mean", "softlabel must be a JSON object"),
    ("temperature", "1.0", "temperature must be a number"),
])
def test_hand_edited_config_with_wrong_types_is_refused(field, value, message):
    from napari_softseg.model.model_io import ModelConfig

    data = ModelConfig(architecture={"base_channels": 4, "depth": 2}).to_dict()
    data[field] = value
    with pytest.raises(SoftsegError, match=f"cfg.json: {message}"):
        ModelConfig.from_dict(data, "cfg.json")
