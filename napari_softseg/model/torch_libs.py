"""Load torch's shared libraries without holding Python's GIL, so that importing torch in a worker thread
does not freeze the viewer.

``import torch`` maps libtorch (~0.5 GB of shared libraries) and runs its static initialisers inside
``dlopen``, called by Python's import machinery with the GIL held: 0.19–0.36 s during which no other
Python thread runs (napari's GUI thread included), on a 2-core machine, even when the import is in a
worker. :func:`preload_torch_libraries` ``dlopen``s the same libraries first through a ctypes call into
libc; a ctypes call into a ``CDLL`` releases the GIL while it runs, so the GUI thread keeps going. When
torch's extension module then asks for them the dynamic linker finds them loaded, and the import's longest
hold of the GIL falls to ~0.04 s (``benchmarks/bench_torch_import.py``: 0.19–0.20 s → 0.04 s).

What is loaded, and how, follows torch's own import: ``libtorch_global_deps`` first (torch loads it again
``RTLD_GLOBAL`` itself, which promotes it), then ``libtorch_python`` in one ``dlopen``, which brings in
libtorch, libtorch_cpu, libc10 and libshm in the order torch's extension module would, each symbol bound
once; with Python's own ``dlopen`` flags (local). Nothing is preloaded when torch would choose libraries
itself first: a CUDA or ROCm build (torch pins the CUDA libraries of its wheels before loading libtorch, so
that no other copy on the library path is used), or ``TORCH_USE_RTLD_GLOBAL``. Those keep the GUI stall of
a plain import.

While it loads, the dynamic loader's lock is held: another thread importing an extension module meanwhile
waits for it holding the GIL, which would stall the GUI thread again. Callers preload before their own
imports (the device detection, and every Soft segmentation job, wait for one another on this module's
lock with the GIL released).

It never imports torch and never raises: a platform without ``dlopen`` (Windows), a torch that is not
installed or already imported, or a library that fails to load (logged with ``dlerror``) leaves
everything to torch's own import.
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

#: What is ``dlopen``ed, in this order (``libtorch_python`` pulls in the rest of libtorch).
LIBRARIES = ("libtorch_global_deps", "libtorch_python")
#: Libraries of a torch build that loads GPU libraries itself before libtorch: then nothing is preloaded.
GPU_LIBRARIES = ("libtorch_cuda", "libc10_cuda", "libtorch_hip", "libc10_hip")

_lock = threading.Lock()
_loaded: list[str] = []
_done = False


def _torch_imported() -> bool:
    return "torch" in sys.modules


def _suffix() -> str:
    return ".dylib" if sys.platform == "darwin" else ".so"


def torch_library_dir() -> Path | None:
    """torch's ``lib`` folder, found without importing torch (None if torch is not installed)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    lib = Path(spec.origin).parent / "lib"
    return lib if lib.is_dir() else None


def library_paths(lib: Path) -> list[Path]:
    """The files of :data:`LIBRARIES` in ``lib``, in that order; none for a GPU build (see the module)."""
    suffix = _suffix()
    if any((lib / f"{name}{suffix}").exists() for name in GPU_LIBRARIES):
        return []
    return [lib / f"{name}{suffix}" for name in LIBRARIES if (lib / f"{name}{suffix}").is_file()]


def _libc():
    """libc as a ``CDLL`` (its functions release the GIL while they run), or None (no ``dlopen`` here)."""
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.dlerror.restype = ctypes.c_char_p
        libc.dlerror.argtypes = []
    except (OSError, AttributeError):
        return None
    return libc


def preload_torch_libraries() -> list[str]:
    """Load torch's shared libraries with the GIL released (once per process; call it in a worker thread
    before the first ``import torch``). Returns the names of the libraries this call loaded."""
    global _done
    with _lock:
        if _done or _torch_imported() or os.environ.get("TORCH_USE_RTLD_GLOBAL"):
            return []
        _done = True
        try:
            return _preload()
        except Exception:  # noqa: BLE001 - an optimisation only: torch's own import does the work
            logger.debug("preloading torch's libraries failed; torch's import will load them", exc_info=True)
            return []


def _preload() -> list[str]:
    lib = torch_library_dir()
    libc = _libc()
    if lib is None or libc is None:
        return []
    flags = sys.getdlopenflags()
    for path in library_paths(lib):
        if not libc.dlopen(os.fsencode(path), flags):
            error = libc.dlerror()
            logger.debug("preloading %s failed (%s); torch's import will load it", path,
                         error.decode(errors="replace") if error else "no error text")
            break                        # what is left is loaded by torch's import, as without a preload
        _loaded.append(path.name)
    return list(_loaded)


def preloaded() -> list[str]:
    """The libraries :func:`preload_torch_libraries` has loaded in this process."""
    return list(_loaded)
