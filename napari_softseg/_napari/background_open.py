"""Open large files from the viewer without freezing it: read in a worker thread, add the layers when ready.

napari calls a reader on its GUI thread and waits for the layer data. A 512 × 512 × 300 float32
``.nii.gz`` case takes seconds to decompress (tens of seconds on a busy machine), and the window would
not repaint or answer meanwhile. So when a file or case folder holds more than
:data:`BACKGROUND_MIN_BYTES` of voxels and a napari window is open, :func:`open_in_background` returns
napari's "nothing to add now" sentinel ``[(None,)]`` at once and

1. reads the path in a worker thread with the same :func:`~napari_softseg._napari.reader.read` as
   always (so the layers are exactly those of a synchronous open), with a napari progress bar
   ("Opening case01: reading …", then "adding layer 3 of 7") in the activity dock;
2. makes every layer's model in the worker too (napari's ``Layer.create``: thumbnail, contrast limits,
   transforms and napari's first-use imports, all Qt-free), all before the first is handed over (made
   while the GUI thread inserted the previous layer, a model competed with it for the GIL), and inserts
   the layers into the viewer the open came from **one per turn of the event loop**, so no single step
   blocks the window for long; into an empty viewer, the dimension sliders are made on a turn of their
   own first (napari makes them with the first layer otherwise: ~0.07 s more on that turn);
3. shows a read error as a napari notification naming the file, as a synchronous open would.

Smaller paths, scripts without a window, and ``NAPARI_SOFTSEG_SYNC=1`` read synchronously: the
reader returns the layer data as usual. :func:`pending` lists the reads still running (tests and
scripts wait on ``read.done``).

This module uses napari's public thread helper (``napari.qt.threading``), imported only when a read
goes to the background, i.e. only inside a running napari window; the rest of the adapter stays Qt-free.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from napari_softseg._napari import gc_freeze
from napari_softseg.errors import SoftsegError
from napari_softseg.io.nifti import is_nifti_path, peek_nifti_shape

logger = logging.getLogger(__name__)

#: Paths whose voxels take at least this much memory (float32 for images, one byte per mask voxel) are
#: read in the background when a napari window is open (the 197 × 233 × 189 whole head is 33 MiB).
BACKGROUND_MIN_BYTES = 24 * 2**20

#: How long the worker waits for the GUI thread to insert one layer before it gives up (seconds).
ACK_TIMEOUT_S = 600.0

#: Environment switch shared with the docks' background jobs: read synchronously.
SYNC_ENV = "NAPARI_SOFTSEG_SYNC"

_PENDING: list[BackgroundRead] = []

#: The worker's first step, before the layers: make an empty viewer's dimension sliders.
DIMS = -1


def synchronous() -> bool:
    """Whether :data:`SYNC_ENV` asks for synchronous work."""
    return os.environ.get(SYNC_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pending() -> list[BackgroundRead]:
    """The background reads not finished yet (oldest first)."""
    return [r for r in _PENDING if not r.done.is_set()]


def voxel_bytes(paths: Sequence[str | os.PathLike]) -> int:
    """About how much memory the voxels of ``paths`` take once read, from NIfTI headers only (float32).

    A folder counts the NIfTI files directly inside it (a case's image and masks; masks are counted as
    float32 too, an over-estimate that only matters near :data:`BACKGROUND_MIN_BYTES`). DICOM folders and
    ``.npz`` files count 0, so they are read synchronously. The headers are peeked at without nibabel
    (:func:`~napari_softseg.io.nifti.peek_nifti_shape`: its import would stall the GUI thread ~0.2 s on the
    first File ▸ Open; the read itself imports it in the worker). Never raises.
    """

    def nbytes(path: Path) -> int:
        shape = peek_nifti_shape(path)       # unreadable headers are reported by the reader itself
        return 0 if shape is None else 4 * int(np.prod(shape, dtype=np.int64))

    total = 0
    for p in map(Path, paths):
        try:
            files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        except OSError:
            continue
        total += sum(nbytes(f) for f in files if is_nifti_path(f))
    return total


def _current_viewer():
    """The napari viewer with a window that is calling the reader, or None (scripts, headless reads)."""
    import sys

    if "napari._qt" not in sys.modules:          # no Qt window was ever made: a script or a plain read
        return None
    import napari

    return napari.current_viewer()


def wants_background(paths: Sequence[str | os.PathLike]) -> bool:
    """Whether to read ``paths`` in the background: a napari window is open and they are large."""
    if synchronous():
        return False
    try:
        if _current_viewer() is None:
            return False
        return voxel_bytes(paths) >= BACKGROUND_MIN_BYTES
    except Exception:  # noqa: BLE001 - when in doubt, read as always
        logger.debug("background check for %r failed", paths, exc_info=True)
        return False


def open_in_background(paths: Sequence[str | os.PathLike], read: Callable[[Any], list]) -> list:
    """Start reading ``paths`` with ``read`` in a worker thread; returns napari's sentinel ``[(None,)]``.

    The layers are added to the current viewer when they are ready (see the module docstring).
    """
    BackgroundRead(_current_viewer(), [Path(p) for p in paths], read).start()
    return [(None,)]


class BackgroundRead:
    """One path (or list of paths) being read in a worker thread for ``viewer``.

    Attributes:
        paths: What is read.
        layers: The layers added so far (that still exist).
        error: The exception the read raised, if any.
        reading: True while the worker thread reads the files.
        done: Set once every layer was added (or the read failed).
    """

    def __init__(self, viewer, paths: list[Path], read: Callable[[Any], list]):
        self.viewer = viewer
        self.paths = paths
        self._layers: list[weakref.ref] = []   # weak: a removed layer must not be kept alive by its open
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.reading = False
        self._read = read
        self._added = threading.Event()     # the GUI thread added the last layer handed to it
        self._bar = None
        self._worker = None
        self._frozen = False
        self.name = paths[0].name if len(paths) == 1 else f"{len(paths)} files"

    @property
    def layers(self) -> list:
        """The layers this open added, as long as they exist (removed ones are not kept alive)."""
        return [layer for layer in (ref() for ref in self._layers) if layer is not None]

    def start(self) -> BackgroundRead:
        """Start the worker thread and the progress bar."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        # short full collections while the read and the insertions allocate, and after (see gc_freeze)
        self._frozen = gc_freeze.hold_for_open(self.viewer)

        _PENDING.append(self)
        self._bar = progress(total=0, desc=f"Opening {self.name}: reading …")
        self._worker = create_worker(self._work, _start_thread=False, _ignore_errors=True)
        self._worker.yielded.connect(self._add_one)
        self._worker.errored.connect(self._failed)
        self._worker.finished.connect(self._finish)
        self._worker.start()
        return self

    # -- worker thread -------------------------------------------------------------------------------
    def _work(self):
        """Read, then hand the layers to the GUI thread one at a time (each waits for the previous)."""
        from napari.layers import Layer

        self.reading = True
        try:
            tuples = self._read(self.paths[0] if len(self.paths) == 1 else self.paths)
        finally:
            self.reading = False
        # every layer model (Qt-free: thumbnail, contrast limits, transforms, first-use imports) is made
        # here, before the first is handed over: the GUI thread then only inserts them (their canvas visuals
        # and controls), with no Python work in this thread competing with it for the GIL meanwhile
        with _layer_source(self.paths[0]):
            layers = [Layer.create(data, kwargs, layer_type) for data, kwargs, layer_type in tuples]
        steps = [(DIMS, max(layer.ndim for layer in layers), None)] if layers else []
        steps += [(i, len(layers), layer) for i, layer in enumerate(layers)]
        for step in steps:
            self._added.clear()
            yield step
            # the GUI thread sets the event once the step is done; stop if it failed or never answers (the
            # application is quitting), so the thread cannot outlive the interpreter
            if not self._added.wait(ACK_TIMEOUT_S) or self.done.is_set():
                return

    # -- GUI thread ----------------------------------------------------------------------------------
    def _add_one(self, value) -> None:
        i, n, layer = value
        try:
            if i == DIMS:
                self._make_sliders(n)
                return
            if self._bar is not None:
                self._bar.total = n
                self._bar.set_description(f"Opening {self.name}: adding layer {i + 1} of {n}")
                self._bar.update(1)
            self._layers.append(weakref.ref(self.viewer.add_layer(layer)))
        except Exception as exc:  # noqa: BLE001 - a closed viewer or a refused layer: report, stop adding
            logger.debug("adding a layer of %s failed", self.name, exc_info=True)
            self._failed(exc)
        finally:
            self._added.set()

    def _make_sliders(self, ndim: int) -> None:
        """An empty viewer gets its dimension sliders now, on a turn before the first layer's."""
        if not len(self.viewer.layers) and self.viewer.dims.ndim < ndim:
            self.viewer.dims.ndim = ndim

    def _failed(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        self.error = exc.with_traceback(None)   # its frames would keep the read's arrays alive
        self.done.set()
        message = str(exc) if isinstance(exc, SoftsegError) else f"{self.name}: cannot open ({type(exc).__name__}: {exc})"
        try:
            show_error(message)
        except Exception:  # noqa: BLE001 - no viewer left to show it
            logger.warning("%s", message)

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.done.set()
        if self in _PENDING:
            _PENDING.remove(self)
        if self._frozen and not self._layers:
            gc_freeze.open_added_nothing()
        # napari's task list may keep the worker, and through it this object: keep nothing big
        self._worker = None
        self._read = None


def _layer_source(path: Path):
    """napari's record of where a layer came from (shown in its tooltip), as a synchronous open sets it."""
    try:
        from napari.layers._source import layer_source
    except ImportError:  # pragma: no cover - a napari without it
        return nullcontext()
    return layer_source(path=str(path), reader_plugin="napari-softseg")
