"""torch's shared libraries are loaded with the GIL released before torch's first import (device detection).

Each check runs in a fresh interpreter: a process that has imported torch has nothing left to preload.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_softseg.model import torch_libs


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the library names checked are Linux's")
def test_preloading_loads_libtorch_without_importing_torch_and_torch_then_works():
    result = _run(
        "import json, sys\n"
        "from napari_softseg.model.torch_libs import preload_torch_libraries, preloaded\n"
        "loaded = preload_torch_libraries()\n"
        "imported_by_preload = 'torch' in sys.modules\n"
        "maps = open('/proc/self/maps').read()\n"
        "import torch\n"
        "print(json.dumps({'loaded': loaded, 'again': preload_torch_libraries(), 'preloaded': preloaded(),\n"
        "                  'imported_by_preload': imported_by_preload, 'in_maps': 'libtorch_cpu' in maps,\n"
        "                  'sum': float(torch.ones(3).sum()), 'after_import': preload_torch_libraries()}))\n")
    assert "libtorch_cpu.so" in result["loaded"] and "libc10.so" in result["loaded"]
    assert result["loaded"].index("libc10.so") < result["loaded"].index("libtorch_cpu.so")
    assert result["in_maps"] and not result["imported_by_preload"]       # mapped, torch not imported
    assert result["sum"] == 3.0                                         # torch works on top of them
    assert result["again"] == [] and result["preloaded"] == result["loaded"]    # once per process


def test_nothing_is_loaded_once_torch_is_imported_or_without_torch(monkeypatch, tmp_path):
    import torch  # noqa: F401 - imported in this process: nothing to preload

    monkeypatch.setattr(torch_libs, "_done", False)
    assert torch_libs.preload_torch_libraries() == []
    monkeypatch.setattr(torch_libs, "_done", False)
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(torch_libs, "torch_library_dir", lambda: None)   # torch not installed
    assert torch_libs.preload_torch_libraries() == []


@pytest.mark.parametrize(("platform", "suffix"), [("linux", ".so"), ("darwin", ".dylib")])
def test_library_paths_keep_the_dependency_order_and_skip_missing_files(tmp_path, monkeypatch, platform, suffix):
    monkeypatch.setattr(sys, "platform", platform)
    for name in ("libtorch_cpu", "libc10", "libtorch_python", "libtorchbind_test"):
        (tmp_path / f"{name}{suffix}").write_bytes(b"")
    names = [p.name for p in torch_libs.library_paths(tmp_path)]
    assert names == [f"libc10{suffix}", f"libtorch_cpu{suffix}", f"libtorch_python{suffix}"]
