"""Load torch's shared libraries without holding Python's GIL, so that importing torch in a worker thread
does not freeze the viewer.

``import torch`` maps libtorch (~0.5 GB of shared libraries) and runs its static initialisers inside
``dlopen``, called by Python's import machinery with the GIL held: 0.19–0.36 s during which no other
Python thread runs (napari's GUI thread included), on a 2-core machine, even when the import is in a
worker. :func:`preload_torch_libraries` ``dlopen``s the same libraries first through a ctypes call into
libc; ctypes releases the GIL for the length of a foreign call, so the GUI thread keeps running. The
libraries are loaded ``RTLD_LOCAL``, as torch's own import loads them; when torch's extension module then
asks for them the dynamic linker finds them loaded, and the import's longest hold of the GIL falls to
~0.04–0.05 s (``benchmarks/bench_scale.py``, "import torch in a thread").

It never imports torch and never raises: a platform without ``dlopen`` (Windows), a torch that is not
installed or already imported, or a library that fails to load leaves everything to torch's own import.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

#: torch's libraries in the order they depend on each other (those present are loaded; the CUDA ones pull
#: in the NVIDIA wheels' libraries through their own RPATH).
LIBRARIES = ("libtorch_global_deps", "libc10", "libtorch_cpu", "libc10_cuda", "libtorch_cuda", "libtorch",
             "libtorch_python", "libshm")

RTLD_NOW = 2

_lock = threading.Lock()
_loaded: list[str] = []
_done = False


def torch_library_dir() -> Path | None:
    """torch's ``lib`` folder, found without importing torch (None if torch is not installed)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    lib = Path(spec.origin).parent / "lib"
    return lib if lib.is_dir() else None


def library_paths(lib: Path) -> list[Path]:
    """The files of :data:`LIBRARIES` in ``lib``, in that order (``.so`` on Linux, ``.dylib`` on macOS)."""
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    return [lib / f"{name}{suffix}" for name in LIBRARIES if (lib / f"{name}{suffix}").is_file()]


def _libc_dlopen():
    """libc's ``dlopen`` as a ctypes function (a ``CDLL`` function: the GIL is released while it runs)."""
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
    except (OSError, AttributeError):
        return None
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return dlopen


def preload_torch_libraries() -> list[str]:
    """Load torch's shared libraries with the GIL released (once per process; call it in a worker thread
    before the first ``import torch``). Returns the names of the libraries this call loaded."""
    global _done
    with _lock:
        if _done or "torch" in sys.modules:
            return []
        _done = True
        lib = torch_library_dir()
        dlopen = _libc_dlopen()
        if lib is None or dlopen is None:
            return []
        loaded = []
        for path in library_paths(lib):
            if not dlopen(os.fsencode(path), RTLD_NOW):
                logger.debug("preloading %s failed; torch's import will load it", path)
                break                    # a later library depends on this one: leave the rest to torch
            loaded.append(path.name)
        _loaded.extend(loaded)
        return loaded


def preloaded() -> list[str]:
    """The libraries :func:`preload_torch_libraries` has loaded in this process."""
    return list(_loaded)
