"""Short full garbage collections while our docks are open: the long-lived objects are frozen (``gc.freeze``).

CPython collects its oldest generation on its own whenever enough new objects have survived, in whatever
thread is allocating, holding the GIL. With napari, Qt, matplotlib and torch loaded that collection scans
~1 M objects: 0.13–0.26 s on a 2-core machine, a stall of the GUI thread wherever it lands (in
``benchmarks/bench_scale.py`` inside about one step in three: Predict, the PR curve).

While at least one of our docks is open (:func:`hold`, released when the dock is destroyed),
:func:`freeze_long_lived` moves every object alive into CPython's permanent generation (:func:`gc.freeze`),
which collections skip: a full collection then scans only what was made since, ~0.02 s. A frozen object
that becomes cyclic garbage is not collected while frozen; what matters there is a removed layer (it holds
its data). So after every removal from a held viewer (one layer, or a batch at its end), once the event
and its callers have let go of the layer, the docks' ``later`` turn thaws, collects once and freezes again
(napari's own collection at the removal, run while the event still holds the layer, is a short one now).
When the last dock closes, everything is thawed and Python's collector works as before.

A background open (:mod:`~napari_softseg._napari.background_open`) of a case freezes too
(:func:`hold_for_open`): its full collections (0.13–0.22 s each with napari and Qt loaded, about one in
every other open of a large case, on top of a layer's insertion) then scan only the new layers, and the heap
stays frozen after it, while the case is looked at. The first layer removed from that viewer with no dock
holding thaws everything (no collection of our own: Python's next one frees the layer, as it would have).
Closing the viewer removes its layers, so it thaws too.

Limits: the freeze is process-wide. A layer that existed before the freeze and is removed from a second
viewer we do not follow, in the same process, is freed at our next collection or thaw.

Set ``NAPARI_SOFTSEG_GC_FREEZE=0`` to leave the process's collector alone (the test suite does, except for
the tests of this module).
"""

from __future__ import annotations

import gc
import os

#: The environment variable that turns the freezing off (``0``, ``false``, ``no`` or ``off``).
ENV = "NAPARI_SOFTSEG_GC_FREEZE"

_holders = 0        # docks open that hold the freeze
_batches = 0        # layer-list batches under way
_batch_removed = False
_later = None       # the docks' ``later(fn)``: fn on a later turn of the event loop


def enabled() -> bool:
    """Whether long-lived objects are frozen (unless :data:`ENV` says no)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def hold(viewer, later) -> bool:
    """A dock of ``viewer`` opens: freeze from now on (see :func:`freeze_long_lived`) until :func:`release`.

    Args:
        viewer: The dock's viewer; its layer removals are followed (a collection, then the freeze again).
        later: ``later(fn)`` calls ``fn`` on a later turn of the event loop (the collection after a removal).

    Returns whether it holds (False when :func:`enabled` says no); connect :func:`release` to the dock's
    destruction only then.
    """
    global _holders, _later
    if not enabled():
        return False
    _holders += 1
    _later = later
    _follow_removals(viewer)
    gc.freeze()
    return True


def _follow_removals(viewer) -> None:
    events = viewer.layers.events
    events.removed.connect(_removed)       # napari ignores a callback connected twice
    if hasattr(events, "begin_batch"):
        events.begin_batch.connect(_batch_begins)
        events.end_batch.connect(_batch_ends)


def release(*_args) -> None:
    """A dock that held the freeze was destroyed; the last one thaws everything."""
    global _holders
    _holders = max(0, _holders - 1)
    if not _holders:
        gc.unfreeze()


def hold_for_open(viewer) -> bool:
    """A background open into ``viewer`` starts: freeze what is alive, and thaw at the first removal from
    ``viewer`` while no dock holds the freeze (False when turned off)."""
    if not enabled():
        return False
    _follow_removals(viewer)
    gc.freeze()
    return True


def freeze_long_lived() -> bool:
    """Freeze what is alive now (a dock's heavy imports or work are done), if a dock holds the freeze."""
    if not (_holders and enabled()):
        return False
    gc.freeze()
    return True


def collect_and_freeze() -> None:
    """Thaw, collect once (a removed layer is freed) and freeze what is left, if a dock still holds it."""
    if not (_holders and enabled()):
        return
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _after_removal() -> None:
    if _holders and _later is not None:
        _later(collect_and_freeze)
    elif not _holders:                     # frozen by an open only: Python's collector takes over again
        gc.unfreeze()


def _removed(event=None) -> None:
    global _batch_removed
    if _batches:
        _batch_removed = True              # collected once, after the batch
    else:
        _after_removal()


def _batch_begins(event=None) -> None:
    global _batches
    _batches += 1


def _batch_ends(event=None) -> None:
    global _batches, _batch_removed
    _batches = max(0, _batches - 1)
    if not _batches and _batch_removed:
        _batch_removed = False
        _after_removal()
