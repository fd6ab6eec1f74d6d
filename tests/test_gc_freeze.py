"""The docks freeze long-lived objects out of Python's collector, and a removed layer is still freed.

The suite runs with ``NAPARI_SOFTSEG_GC_FREEZE=0`` (tests/conftest.py); these tests turn it on, open the
docks the way napari does, and thaw before napari's viewer fixture checks that no viewer leaked.
"""

from __future__ import annotations

import gc
import weakref

import pytest
from _analysis_case import open_case, open_dock, wait_ready

from napari_softseg._napari import gc_freeze


@pytest.fixture
def freezing(monkeypatch):
    monkeypatch.setenv(gc_freeze.ENV, "1")
    gc.unfreeze()
    yield
    gc.unfreeze()                         # before napari's fixture collects and looks for leaked viewers


@pytest.mark.parametrize(("value", "on"), [("1", True), ("0", False), ("off", False), (" False ", False),
                                           ("yes", True)])
def test_the_environment_variable_turns_it_off(monkeypatch, value, on):
    monkeypatch.setenv(gc_freeze.ENV, value)
    assert gc_freeze.enabled() is on


def test_the_soft_segmentation_dock_freezes_once_torch_is_in(make_napari_viewer, qtbot, freezing):
    viewer = make_napari_viewer()
    open_case(viewer)
    assert gc.get_freeze_count() == 0
    widget = open_dock(viewer, "Soft segmentation")
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=60_000)
    assert gc.get_freeze_count() > 1000
    # the layers opened before the freeze are in it; removed, each is still freed
    layer = viewer.layers[0]
    gone = weakref.ref(layer)
    del layer
    viewer.layers.remove(viewer.layers[0])
    assert gc.get_freeze_count() == 0                              # thawed: napari's event still holds it
    qtbot.waitUntil(lambda: gc.get_freeze_count() > 1000, timeout=5000)   # a turn later: collected, frozen
    assert gone() is None
    # a batch of removals: napari collects at the batch's end, and so the freeze waits for it
    refs = [weakref.ref(layer) for layer in list(viewer.layers)[:2]]
    with viewer.layers.batched_update():
        for ref in refs:
            viewer.layers.remove(ref())
    assert all(ref() is None for ref in refs) and gc.get_freeze_count() > 1000    # at once


def test_the_threshold_explorer_freezes_after_its_curve(make_napari_viewer, qtbot, freezing):
    viewer = make_napari_viewer()
    soft_layer, _, _, _ = open_case(viewer)
    widget = open_dock(viewer, "Threshold explorer")
    wait_ready(qtbot, widget)
    assert gc.get_freeze_count() > 1000
    # its own helper layers, frozen with it, are freed when it replaces them (a batch)
    outline = weakref.ref(widget.contour_layer)
    widget.overlay.remove()
    qtbot.waitUntil(lambda: gc.get_freeze_count() > 1000, timeout=5000)
    assert outline() is None
    assert len(gc.get_objects()) < gc.get_freeze_count()          # what a full collection still scans


def test_nothing_is_frozen_when_turned_off(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setenv(gc_freeze.ENV, "0")
    gc.unfreeze()
    viewer = make_napari_viewer()
    open_case(viewer)
    widget = open_dock(viewer, "Soft segmentation")
    qtbot.waitUntil(lambda: not widget.devices.pending, timeout=60_000)
    assert gc.get_freeze_count() == 0
