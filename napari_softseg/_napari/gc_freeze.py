"""Short full garbage collections while a case is looked at: the long-lived objects are frozen (``gc.freeze``).

CPython collects its oldest generation on its own whenever enough new objects have survived, in whatever
thread is allocating, holding the GIL. With napari, Qt, matplotlib and torch loaded that collection scans
~1 M objects: 0.13–0.26 s on a 2-core machine, a stall of the GUI thread wherever it lands (in
``benchmarks/bench_scale.py`` inside about one step in three: open, Predict, the PR curve).

While at least one of our docks is open (:func:`hold`, released when the dock is destroyed),
:func:`freeze_long_lived` moves every object alive into CPython's permanent generation (:func:`gc.freeze`),
which collections skip: a full collection then scans only what was made since, ~0.02 s. A frozen object
that becomes cyclic garbage is not collected while frozen; what matters there is a removed layer (it holds
its data). So after every removal from a held viewer (one layer, or a batch at its end), once the event
and its callers have let go of the layer, the docks' ``later`` turn thaws, collects once and freezes again
(napari's own collection at the removal, run while the event still holds the layer, is a short one now).
When the last dock closes, everything is thawed and Python's collector works as before.

A background open (:mod:`~napari_softseg._napari.background_open`) of a case freezes too
(:func:`hold_for_open`): its full collections (0.13–0.15 s each, about one in every other open of a large
case, on top of a layer's insertion) then scan only the new layers, and the heap stays frozen after it,
while the case is looked at. With no dock holding, the heap is thawed (no collection of our own: Python's
next one frees what became garbage, as it would have) by the first removal from that viewer, by an open
that added nothing, or by the viewer's window being destroyed (the close button; ``viewer.close()`` removes
the layers first).

Nothing is frozen while a layer removed from a followed viewer has not been through a full collection yet
(it would be frozen as garbage): a dock then collects on its next turn and freezes after; an open does not
freeze.

Limits: the freeze is process-wide. A layer that existed before the freeze and is removed from a viewer we
do not follow (one our reader did not open into and our docks are not in), in the same process, is freed
once we thaw or collect: the next removal from ours, our last dock closing, or our window closing.

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
_uncollected = False  # a followed viewer lost a layer and no full collection has run since
_WINDOW_MARK = "_softseg_gc_thaw"   # set on a napari window whose destruction thaws


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
    if _uncollected:                       # a removed layer may not be garbage yet: collect first
        later(collect_and_freeze)
    else:
        gc.freeze()
    return True


def _follow_removals(viewer) -> None:
    if _full_collection_ended not in gc.callbacks:
        gc.callbacks.append(_full_collection_ended)
    events = viewer.layers.events
    events.removed.connect(_removed)       # napari ignores a callback connected twice
    if hasattr(events, "begin_batch"):
        events.begin_batch.connect(_batch_begins)
        events.end_batch.connect(_batch_ends)


def release(*_args) -> None:
    """A dock that held the freeze was destroyed; the last one thaws everything."""
    global _holders
    _holders = max(0, _holders - 1)
    _thaw_unless_held()


def _thaw_unless_held(*_args) -> None:
    """Thaw everything, unless a dock still holds the freeze (its removals are collected as they come)."""
    if not _holders:
        gc.unfreeze()


def hold_for_open(viewer) -> bool:
    """A background open into ``viewer`` starts: freeze what is alive (see the module); returns whether it
    froze (not when turned off, or while a removed layer awaits a full collection)."""
    if not enabled():
        return False
    _follow_removals(viewer)
    _thaw_with_window(viewer)
    if _uncollected:
        return False
    gc.freeze()
    return True


def open_added_nothing() -> None:
    """An open that :func:`hold_for_open` froze failed before adding a layer: thaw, unless a dock holds."""
    _thaw_unless_held()


def _thaw_with_window(viewer) -> None:
    """Thaw (unless a dock holds) when ``viewer``'s window is destroyed: its close button leaves the layers
    in the viewer, so no removal would."""
    try:
        window = viewer.window._qt_window       # napari's main window (no public handle to its lifetime)
        if not getattr(window, _WINDOW_MARK, False):
            window.destroyed.connect(_thaw_unless_held)
            setattr(window, _WINDOW_MARK, True)
    except (AttributeError, RuntimeError, TypeError):   # a viewer without a window
        return


def _full_collection_ended(phase, info) -> None:
    global _uncollected
    if phase == "stop" and info.get("generation") == 2:
        _uncollected = False


def freeze_long_lived() -> bool:
    """Freeze what is alive now (a dock's heavy imports or work are done), if a dock holds the freeze and
    no removed layer awaits its collection (the dock's ``later`` turn collects and freezes then)."""
    if not (_holders and enabled()) or _uncollected:
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
    else:                                  # frozen by an open only: Python's collector takes over again
        _thaw_unless_held()


def _removed(event=None) -> None:
    global _batch_removed, _uncollected
    _uncollected = True
    if _batches:
        _batch_removed = True              # collected once, after the batch
    else:
        _after_removal()


def _batch_begins(event=None) -> None:
    global _batches
    _batches += 1


def _batch_ends(event=None) -> None:
    global _batches, _batch_removed, _uncollected
    _batches = max(0, _batches - 1)
    if not _batches and _batch_removed:
        _batch_removed = False
        _uncollected = True                # again: napari's own collection at the batch's end came first
        _after_removal()
