"""While our docks are open, long-lived objects are frozen out of Python's collector; removed layers are freed.

The suite runs with ``NAPARI_SOFTSEG_GC_FREEZE=0`` (tests/conftest.py); these tests turn it on, open the
docks the way napari does, and thaw before napari's viewer fixture checks that no viewer leaked.
"""

from __future__ import annotations

import gc
import weakref

import nibabel as nib
import numpy as np
import pytest
from _analysis_case import open_case, open_dock, wait_ready

from napari_softseg._napari import background_open, gc_freeze
from napari_softseg.datasets.bundled import demo_case_path


@pytest.fixture
def freezing(monkeypatch):
    monkeypatch.setenv(gc_freeze.ENV, "1")
    monkeypatch.setattr(gc_freeze, "_holders", 0)
    monkeypatch.setattr(gc_freeze, "_uncollected", False)
    gc.unfreeze()
    yield
    gc.unfreeze()                         # before napari's fixture collects and looks for leaked viewers


@pytest.mark.parametrize(("value", "on"), [("1", True), ("0", False), ("off", False), (" False ", False),
                                           ("yes", True)])
def test_the_environment_variable_turns_it_off(monkeypatch, value, on):
    monkeypatch.setenv(gc_freeze.ENV, value)
    assert gc_freeze.enabled() is on


def test_a_dock_holds_the_freeze_and_removed_layers_are_still_freed(make_napari_viewer, qtbot, freezing):
    viewer = make_napari_viewer()
    open_case(viewer)
    assert gc.get_freeze_count() == 0 and not gc_freeze.freeze_long_lived()    # no dock: nothing frozen
    widget = open_dock(viewer, "Soft segmentation")
    assert gc.get_freeze_count() > 1000
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=60_000)
    # a layer opened before the freeze, removed: freed on the next turn (napari's event held it till then)
    gone = weakref.ref(viewer.layers[0])
    viewer.layers.remove(viewer.layers[0])
    qtbot.waitUntil(lambda: gone() is None, timeout=5000)
    assert gc.get_freeze_count() > 1000                            # frozen again after that collection
    # a batch of removals: one collection after the batch
    refs = [weakref.ref(layer) for layer in list(viewer.layers)[:2]]
    with viewer.layers.batched_update():
        for ref in refs:
            viewer.layers.remove(ref())
    qtbot.waitUntil(lambda: all(ref() is None for ref in refs), timeout=5000)
    assert gc.get_freeze_count() > 1000
    assert len(gc.get_objects()) < gc.get_freeze_count()          # what a full collection still scans


def test_the_explorers_replaced_helpers_are_freed_and_closing_thaws(make_napari_viewer, qtbot, freezing):
    viewer = make_napari_viewer()
    open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    assert gc.get_freeze_count() > 1000
    widget.bands_check.setChecked(True)
    qtbot.waitUntil(lambda: widget.bands_layer is not None, timeout=5000)
    helpers = [weakref.ref(widget.contour_layer), weakref.ref(widget.bands_layer)]
    widget.overlay.remove()                                         # two helpers: one batch
    qtbot.waitUntil(lambda: all(ref() is None for ref in helpers), timeout=5000)
    assert gc.get_freeze_count() > 1000
    viewer.window.remove_dock_widget(widget)                        # napari keeps the inner widget: delete it
    widget.deleteLater()                                            # the last dock gone: all thawed
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=5000)
    assert not gc_freeze.freeze_long_lived()


def test_nothing_is_frozen_when_turned_off(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setenv(gc_freeze.ENV, "0")
    gc.unfreeze()
    viewer = make_napari_viewer()
    open_case(viewer)
    widget = open_dock(viewer, "Soft segmentation")
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=60_000)
    assert gc.get_freeze_count() == 0


@pytest.fixture
def background(monkeypatch):
    monkeypatch.delenv(background_open.SYNC_ENV, raising=False)
    monkeypatch.setattr(background_open, "BACKGROUND_MIN_BYTES", 0)


def _open(viewer, qtbot, path=None):
    viewer.open(str(path or demo_case_path()), plugin="napari-softseg")
    (job,) = background_open.pending()
    qtbot.waitUntil(lambda: job.done.is_set() and not background_open.pending(), timeout=60_000)
    return job


def test_an_open_freezes_until_a_layer_is_removed(make_napari_viewer, qtbot, freezing, background):
    viewer = make_napari_viewer()
    frozen_while_adding = []
    viewer.layers.events.inserted.connect(lambda event: frozen_while_adding.append(gc.get_freeze_count()))
    viewer.open(str(demo_case_path()), plugin="napari-softseg")
    (job,) = background_open.pending()
    assert gc.get_freeze_count() > 1000                      # frozen from the start of the read
    qtbot.waitUntil(lambda: job.done.is_set() and not background_open.pending(), timeout=60_000)
    assert len(frozen_while_adding) == len(job.layers) >= 3 and min(frozen_while_adding) > 1000
    first_case = list(viewer.layers)
    _open(viewer, qtbot)                                     # a second open freezes the first case's layers
    assert gc.get_freeze_count() > 1000                      # and after it, while the cases are looked at
    # no dock: the first removal thaws, and Python's next collection frees the layer, frozen until then
    gone = weakref.ref(first_case[0])
    viewer.layers.remove(first_case[0])
    del first_case
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_an_open_right_after_a_removal_does_not_freeze_the_removed_layers(make_napari_viewer, qtbot, freezing,
                                                                          background):
    viewer = make_napari_viewer()
    _open(viewer, qtbot)
    _open(viewer, qtbot)                                     # the first case's layers are frozen
    first = [weakref.ref(layer) for layer in list(viewer.layers)[:3]]
    viewer.layers.selection = {ref() for ref in first}
    viewer.layers.remove_selected()                          # a batch; napari collects at its end
    assert gc.get_freeze_count() == 0
    _open(viewer, qtbot)                                     # no full collection since: nothing frozen now
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert all(ref() is None for ref in first)


def test_an_open_that_adds_nothing_or_a_closed_window_thaws(make_napari_viewer, qtbot, freezing, background,
                                                             tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    monkeypatch.setattr(notifications, "show_error", lambda message: None)
    viewer = make_napari_viewer()
    broken = tmp_path / "scan.nii.gz"                        # truncated: the header reads, the data does not
    nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 30), dtype=np.float32), np.eye(4)).to_filename(broken)
    broken.write_bytes(broken.read_bytes()[:20000])
    job = _open(viewer, qtbot, broken)
    assert job.error is not None and len(viewer.layers) == 0 and gc.get_freeze_count() == 0
    _open(viewer, qtbot)
    assert gc.get_freeze_count() > 1000
    # the close button leaves the layers in the viewer and deletes the window (WA_DeleteOnClose): its
    # destroyed signal thaws (emitted here; a real close would break napari's viewer fixture)
    viewer.window._qt_window.destroyed.emit()
    assert gc.get_freeze_count() == 0


def test_a_dock_keeps_the_heap_frozen_after_an_open(make_napari_viewer, qtbot, freezing, background):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Soft segmentation")
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=60_000)
    viewer.open(str(demo_case_path()), plugin="napari-softseg")
    (job,) = background_open.pending()
    qtbot.waitUntil(lambda: job.done.is_set() and not background_open.pending(), timeout=60_000)
    assert gc.get_freeze_count() > 1000
    gone = weakref.ref(viewer.layers[0])                      # removals are still collected as they come
    viewer.layers.remove(viewer.layers[0])
    qtbot.waitUntil(lambda: gone() is None, timeout=5000)
    assert gc.get_freeze_count() > 1000                      # and the heap frozen again after
