"""Short full garbage collections in the viewer's process: the long-lived objects are frozen (``gc.freeze``).

CPython collects its oldest generation on its own whenever enough new objects have survived, in whatever
thread is allocating, holding the GIL. With napari, Qt, matplotlib and torch loaded that collection scans
~1 M objects: 0.13–0.26 s on a 2-core machine, a stall of the GUI thread wherever it lands (in
``benchmarks/bench_scale.py`` inside about one step in three: the open, Predict, the PR curve).

Once the docks' heavy imports are done, :func:`freeze_long_lived` moves every object alive into CPython's
permanent generation (:func:`gc.freeze`), which collections skip: a full collection then scans only what was
made since, ~0.02 s. Nothing is freed any later than before, with one exception: a frozen object that
becomes cyclic garbage is not collected while frozen. What matters there is a removed layer (it holds its
data), so the collector is thawed (:func:`gc.unfreeze`) as a layer is about to leave a viewer, and frozen
again only after a collection that can free it:

* after a batch of removals, napari collects garbage at the batch's end: frozen again right after;
* after a single removal, napari collects while its ``removed`` event still holds the layer: the docks'
  ``later`` runs one more collection on the next turn of the event loop, then freezes (without a
  ``later``, the next :func:`freeze_long_lived` collects first).

Set ``NAPARI_SOFTSEG_GC_FREEZE=0`` to leave the process's collector alone (the test suite does, except for
the tests of this module).
"""

from __future__ import annotations

import gc
import os

#: The environment variable that turns the freezing off (``0``, ``false``, ``no`` or ``off``).
ENV = "NAPARI_SOFTSEG_GC_FREEZE"

_batches = 0            # layer-list batches under way (napari collects garbage at a batch's end)
_needs_collect = False  # a layer was removed and no collection that can free it has run since
_later = None           # the docks' ``later(fn)``: fn on a later turn of the event loop


def enabled() -> bool:
    """Whether long-lived objects are frozen (unless :data:`ENV` says no)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def freeze_long_lived(viewer, later=None) -> bool:
    """Freeze every object alive now; thaw around each removal of a layer from ``viewer``.

    Call it on the GUI thread once a dock's heavy imports are done. Calling it again (another dock, another
    viewer) freezes what was made since. ``later(fn)``: calls ``fn`` on a later turn of the event loop
    (after a single removal: one collection, then the freeze). Returns whether it froze (see :func:`enabled`).
    """
    global _later
    if not enabled():
        return False
    if later is not None:
        _later = later
    events = viewer.layers.events
    events.removing.connect(thaw)          # napari ignores a callback connected twice
    events.removed.connect(_removed)       # after napari's own handlers
    if hasattr(events, "begin_batch"):
        events.begin_batch.connect(_batch_begins)
        events.end_batch.connect(_batch_ends)
    _collect_and_freeze()
    return True


def thaw(event=None) -> None:
    """Give the frozen objects back to the collector (a layer is about to be removed)."""
    global _needs_collect
    gc.unfreeze()
    _needs_collect = True


def _removed(event=None) -> None:
    if not _batches and _later is not None:
        _later(_collect_and_freeze)


def _collect_and_freeze() -> None:
    """Collect first if a removed layer may still wait for it, then freeze what is alive."""
    global _needs_collect
    if not enabled():
        return
    if _needs_collect:
        gc.unfreeze()
        gc.collect()
        _needs_collect = False
    gc.freeze()


def _batch_begins(event=None) -> None:
    global _batches
    _batches += 1


def _batch_ends(event=None) -> None:
    global _batches, _needs_collect
    _batches = max(0, _batches - 1)
    if not _batches and _needs_collect and enabled():
        _needs_collect = False             # napari has just collected, after the removals' events
        gc.freeze()
