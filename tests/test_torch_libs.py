"""torch's shared libraries are loaded with the GIL released before torch's first import (device detection).

The end-to-end check runs in a fresh interpreter: a process that has imported torch has nothing to preload.
How long the GUI thread waits is measured in ``benchmarks/bench_torch_import.py``, not here.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from napari_softseg.model import torch_libs


def _run(code: str, env: dict | None = None) -> dict:
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


CHILD = (
    "import json, sys\n"
    "from napari_softseg.model.torch_libs import preload_torch_libraries, preloaded\n"
    "loaded = preload_torch_libraries()\n"
    "imported_by_preload = 'torch' in sys.modules\n"
    "maps = open('/proc/self/maps').read()\n"
    "import torch\n"
    "print(json.dumps({'loaded': loaded, 'again': preload_torch_libraries(), 'preloaded': preloaded(),\n"
    "                  'imported_by_preload': imported_by_preload, 'in_maps': 'libtorch_cpu' in maps,\n"
    "                  'sum': float(torch.ones(3).sum())}))\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_preloading_maps_libtorch_without_importing_torch_and_torch_then_works():
    result = _run(CHILD)
    if torch_libs.library_paths(torch_libs.torch_library_dir()):    # a CPU build: preloaded
        assert result["loaded"] == ["libtorch_global_deps.so", "libtorch_python.so"]
        assert result["in_maps"]                                    # libtorch_python brought libtorch_cpu in
    else:                                                           # a CUDA / ROCm build: left to torch
        assert result["loaded"] == []
    assert not result["imported_by_preload"]
    assert result["sum"] == 3.0                                     # torch works on top of them
    assert result["again"] == [] and result["preloaded"] == result["loaded"]    # once per process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_nothing_is_preloaded_when_torch_asks_for_global_symbols():
    result = _run(CHILD, env={"TORCH_USE_RTLD_GLOBAL": "1"})
    assert result["loaded"] == [] and result["sum"] == 3.0


@pytest.mark.skipif(torch_libs._libc() is None, reason="no dlopen on this platform")
def test_dlopen_is_called_with_the_gil_released():
    # a CDLL function (not a PyDLL one) drops the GIL for the length of the call: the point of the module
    assert not torch_libs._libc().dlopen._flags_ & ctypes._FUNCFLAG_PYTHONAPI


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(torch_libs, "_done", False)
    monkeypatch.setattr(torch_libs, "_loaded", [])
    monkeypatch.setattr(torch_libs, "_torch_imported", lambda: False)
    monkeypatch.delenv("TORCH_USE_RTLD_GLOBAL", raising=False)


class FakeLibc:
    """libc's dlopen / dlerror, recording the calls; fails from the ``fail_at``-th call on."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple[bytes, int]] = []
        self.fail_at = fail_at

    def dlopen(self, path: bytes, flags: int) -> int:
        self.calls.append((path, flags))
        return 0 if self.fail_at is not None and len(self.calls) >= self.fail_at else 1234

    def dlerror(self) -> bytes:
        return b"cannot open shared object file"


def _fake_torch(tmp_path, names, suffix=".so"):
    for name in names:
        (tmp_path / f"{name}{suffix}").write_bytes(b"")
    return tmp_path


def test_a_failed_load_stops_there_and_leaves_the_rest_to_torch(fresh, monkeypatch, tmp_path):
    lib = _fake_torch(tmp_path, ["libtorch_global_deps", "libtorch_python", "libtorch_cpu", "libc10"])
    libc = FakeLibc(fail_at=2)
    monkeypatch.setattr(torch_libs, "torch_library_dir", lambda: lib)
    monkeypatch.setattr(torch_libs, "_libc", lambda: libc)
    assert torch_libs.preload_torch_libraries() == ["libtorch_global_deps.so"]
    assert [path for path, _ in libc.calls] == [bytes(lib / "libtorch_global_deps.so"),
                                                bytes(lib / "libtorch_python.so")]
    assert {flags for _, flags in libc.calls} == {sys.getdlopenflags()}      # Python's own (local) flags
    assert torch_libs.preload_torch_libraries() == []                       # once per process


def test_a_gpu_build_is_left_to_torch(fresh, monkeypatch, tmp_path):
    lib = _fake_torch(tmp_path, ["libtorch_global_deps", "libtorch_python", "libtorch_cuda"])
    libc = FakeLibc()
    monkeypatch.setattr(torch_libs, "torch_library_dir", lambda: lib)
    monkeypatch.setattr(torch_libs, "_libc", lambda: libc)
    assert torch_libs.preload_torch_libraries() == [] and libc.calls == []


def test_nothing_happens_once_torch_is_imported_without_torch_or_without_dlopen(fresh, monkeypatch, tmp_path):
    monkeypatch.setattr(torch_libs, "_torch_imported", lambda: True)
    assert torch_libs.preload_torch_libraries() == []
    monkeypatch.setattr(torch_libs, "_torch_imported", lambda: False)
    monkeypatch.setattr(torch_libs, "_done", False)
    monkeypatch.setattr(torch_libs, "torch_library_dir", lambda: None)          # torch not installed
    assert torch_libs.preload_torch_libraries() == []
    monkeypatch.setattr(torch_libs, "_done", False)
    monkeypatch.setattr(torch_libs.os, "name", "nt")                         # Windows: no dlopen
    assert torch_libs._libc() is None


def test_an_unexpected_error_is_swallowed(fresh, monkeypatch):
    def broken():
        raise PermissionError("lib: permission denied")

    monkeypatch.setattr(torch_libs, "torch_library_dir", broken)
    assert torch_libs.preload_torch_libraries() == []


@pytest.mark.parametrize(("platform", "suffix"), [("linux", ".so"), ("darwin", ".dylib")])
def test_library_paths_in_order_and_missing_files_skipped(tmp_path, monkeypatch, platform, suffix):
    monkeypatch.setattr(sys, "platform", platform)
    _fake_torch(tmp_path, ["libtorch_python", "libtorchbind_test"], suffix)
    assert [p.name for p in torch_libs.library_paths(tmp_path)] == [f"libtorch_python{suffix}"]
    _fake_torch(tmp_path, ["libtorch_global_deps"], suffix)
    assert [p.name for p in torch_libs.library_paths(tmp_path)] == [f"libtorch_global_deps{suffix}",
                                                                    f"libtorch_python{suffix}"]
