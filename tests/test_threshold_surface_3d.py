"""Threshold explorer in 3D (issue 15 item 4): a smooth shaded mesh of p = t, built off the GUI thread.

Through the real dock (opened from the manifest the way the Plugins menu does): switch to 3D, move the
slider, wait for the Surface layer and check where its vertices are in world mm; a move shows the fast iso
volume until the new mesh is in; going back to 2D removes the mesh.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _analysis_case import open_dock, wait_ready

from napari_softseg._napari.layers import Geometry, add_layer_tuples, image_layer, soft_map_layer
from napari_softseg._napari.mesh_source import build_mesh
from napari_softseg._qt import surface_worker

DOCK = "Threshold explorer"
SHAPE = (36, 30, 14)                       # core (X, Y, Z)
SPACING = (0.9, 1.1, 2.5)
CENTRE = (17, 14, 7)                       # a voxel centre (core index)
RADIUS = 9.0                               # mm: p = 0.5 there
WIDTH = 2.0                                # mm: the logistic fall-off


def sphere_case():
    """A soft ball in world mm on an anisotropic, flipped grid: ``p = 1 / (1 + exp((r - RADIUS) / WIDTH))``.

    Returns ``(soft, image, geometry)`` in core order; the surface ``p = t`` is the sphere of radius
    ``RADIUS + WIDTH * ln((1 - t) / t)`` around :data:`CENTRE`'s world position.
    """
    affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = (20.0, -15.0, 4.0)
    index = np.indices(SHAPE).reshape(3, -1).T
    world = index @ affine[:3, :3].T
    centre = np.asarray(CENTRE) @ affine[:3, :3].T
    r = np.linalg.norm(world - centre, axis=1).reshape(SHAPE)
    soft = (1.0 / (1.0 + np.exp((r - RADIUS) / WIDTH))).astype(np.float32)
    image = (100.0 + 50.0 * soft)[None].astype(np.float32)
    return soft, image, Geometry(affine, SHAPE)


def expected_radius(t: float) -> float:
    return RADIUS + WIDTH * np.log((1.0 - t) / t)


@pytest.fixture
def sphere_dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    soft, image, geometry = sphere_case()
    add_layer_tuples(viewer, [image_layer(image, geometry, name="scan")])
    (soft_layer,) = add_layer_tuples(viewer, [soft_map_layer(soft, geometry, name="prediction")])
    widget = open_dock(viewer, DOCK)
    wait_ready(qtbot, widget)
    return widget, viewer, soft_layer


def world_vertices(layer) -> np.ndarray:
    """The Surface layer's vertices in napari world coordinates (its affine applied; no scale/translate set)."""
    vertices = np.asarray(layer.data[0], dtype=np.float64)
    matrix = np.asarray(layer.affine.affine_matrix) @ np.diag([*layer.scale, 1.0])
    return vertices @ matrix[:3, :3].T + matrix[:3, 3]


def centre_world(soft_layer) -> np.ndarray:
    """World position (napari order) of the ball's centre: the soft map's maximum, through the image layer."""
    data = np.asarray(soft_layer.data)
    index = np.unravel_index(int(np.argmax(data)), data.shape)
    return np.asarray(soft_layer.data_to_world(index), dtype=np.float64)


def mesh_of(widget, t: float) -> bool:
    """The dock shows the finished mesh of ``t``."""
    layer = widget.mesh_layer
    return (not widget.surfaces.busy and layer is not None and layer.visible
            and widget.overlay.mesh_level == pytest.approx(t))


def test_3d_shows_a_smooth_mesh_at_the_right_place_and_rebuilds_it_when_the_slider_rests(sphere_dock, qtbot):
    widget, viewer, soft_layer = sphere_dock
    viewer.camera.orientation2d = ("up", "right")                   # anterior up in 2D: a mirrored 3D camera
    assert viewer.camera.handedness == "left"
    widget.slider.setValue(500)
    viewer.dims.ndisplay = 3
    assert widget.shown_overlay_mode == "surface"
    assert widget.overlay.building_first_mesh and widget.surface_layer is None   # no iso volume meanwhile
    widget.overlay.update_legend()
    assert viewer.text_overlay.text == "cyan surface: p ≥ 0.5 (building the surface…)"
    assert viewer.camera.handedness == "right"                      # 3D is never mirrored (light in front)
    assert tuple(str(a.value) for a in viewer.camera.orientation2d) == ("up", "right")
    qtbot.waitUntil(lambda: mesh_of(widget, 0.5), timeout=20000)
    mesh = widget.mesh_layer
    assert type(mesh).__name__ != "Image" and mesh.shading == "smooth"
    assert [layer for layer in viewer.layers if layer.name == mesh.name][0]._type_string == "surface"
    centre = centre_world(soft_layer)
    radii = np.linalg.norm(world_vertices(mesh) - centre, axis=1)
    assert radii.mean() == pytest.approx(expected_radius(0.5), abs=0.1)
    assert np.abs(radii - expected_radius(0.5)).max() < 0.5        # sub-voxel, on a 0.9 x 1.1 x 2.5 mm grid
    assert widget.surface_layer is None and not widget.overlay.building_first_mesh
    assert viewer.text_overlay.text == "cyan surface: p ≥ 0.5"
    assert not soft_layer.visible and viewer.layers["scan"].opacity <= 0.25

    widget.slider.setValue(270)                                     # drag: the last mesh stays, and says so
    assert mesh.visible and widget.overlay.mesh_is_stale
    widget.overlay.update_legend()
    assert "surface of p ≥ 0.5, updating to: p ≥ 0.27" in viewer.text_overlay.text
    qtbot.waitUntil(lambda: mesh_of(widget, 0.27), timeout=20000)    # rested: the new mesh swapped in
    assert viewer.text_overlay.text.startswith("cyan surface: p ≥ 0.27")
    assert widget.mesh_layer is mesh or widget.mesh_layer.name == mesh.name   # the same layer, new data
    radii = np.linalg.norm(world_vertices(widget.mesh_layer) - centre, axis=1)
    assert radii.mean() == pytest.approx(expected_radius(0.27), abs=0.1)

    viewer.dims.ndisplay = 2                                        # back to 2D: the 3D helpers are hidden
    assert viewer.camera.handedness == "left"                       # the user's 2D orientation
    assert not [layer for layer in viewer.layers if layer._type_string == "surface" and layer.visible]
    qtbot.waitUntil(lambda: widget.contour_layer.visible and soft_layer.visible
                    and viewer.layers["scan"].opacity == 1.0, timeout=5000)    # one layer per turn

    built = widget.surfaces.built                                   # 3D again, same threshold: the same mesh
    viewer.dims.ndisplay = 3
    assert not widget.mesh_layer.visible                            # shown on a later turn, not in the switch's
    qtbot.waitUntil(lambda: mesh_of(widget, 0.27), timeout=20000)
    assert widget.surfaces.built == built and widget.surface_layer is None
    before = np.linalg.norm(world_vertices(widget.mesh_layer) - centre, axis=1).mean()
    viewer.dims.ndisplay = 2
    qtbot.waitUntil(lambda: soft_layer.visible, timeout=5000)      # napari's refresh skips a hidden layer
    data = soft_layer.data
    data[(data >= 0.27) & (data < 0.5)] = 0.0                       # the map edited in place: not that mesh
    soft_layer.refresh()
    qtbot.waitUntil(lambda: widget.overlay.mesh_level is None and widget.ready, timeout=20000)
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: widget.surfaces.built == built + 1 and mesh_of(widget, 0.27), timeout=20000)
    after = np.linalg.norm(world_vertices(widget.mesh_layer) - centre, axis=1).mean()
    assert after < before - 0.2                                     # the surface moved in with the edit


def test_a_drag_builds_one_mesh_off_the_gui_thread(sphere_dock, qtbot, monkeypatch):
    widget, viewer, soft_layer = sphere_dock
    threads = []
    real_build = surface_worker.build_mesh

    def build(source, level):
        threads.append((threading.current_thread() is threading.main_thread(), level))
        return real_build(source, level)

    monkeypatch.setattr(surface_worker, "build_mesh", build)
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    built = widget.surfaces.built
    for value in range(300, 420, 10):                               # one drag, no pause in between
        widget.slider.setValue(value)
    assert widget.surfaces.busy and widget.mesh_layer.visible and widget.overlay.mesh_is_stale
    qtbot.waitUntil(lambda: mesh_of(widget, 0.41), timeout=20000)
    assert widget.surfaces.built == built + 1                       # only the resting value was meshed
    assert threads and not any(on_main for on_main, _ in threads)   # never on the GUI thread
    assert threads[-1][1] == pytest.approx(0.41)


def test_overlay_mode_none_in_3d_removes_the_mesh_and_a_stale_mesh_is_dropped(sphere_dock, qtbot):
    widget, viewer, soft_layer = sphere_dock
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    source = widget.overlay.mesh_source()
    stale = build_mesh(source, 0.8)                  # a mesh of a threshold not shown
    assert not widget.overlay.show_mesh(stale, source)
    assert widget.overlay.mesh_level == pytest.approx(widget.threshold)
    empty = build_mesh(source, widget.threshold)
    assert widget.overlay.show_mesh(empty, source)
    widget.set_overlay_mode("none")
    assert widget.mesh_layer is None and not widget.surfaces.busy
    widget.set_overlay_mode("outline")                              # back: built again
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)


def test_a_threshold_above_the_map_hides_the_mesh(sphere_dock, qtbot):
    widget, viewer, soft_layer = sphere_dock
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    top = float(np.asarray(soft_layer.data).max())
    widget.set_threshold(min(1.0, top + 0.01))
    qtbot.waitUntil(lambda: not widget.surfaces.busy and widget.overlay.mesh_level == widget.threshold,
                    timeout=20000)
    assert not widget.mesh_layer.visible and widget.surface_layer is None     # nothing at or above t
    assert not widget.overlay.building_first_mesh


def test_a_soft_map_opened_while_in_3d_gets_the_3d_view(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    soft, image, geometry = sphere_case()
    (scan,) = add_layer_tuples(viewer, [image_layer(image, geometry, name="scan")])
    widget = open_dock(viewer, DOCK)
    viewer.dims.ndisplay = 3
    assert widget.mesh_layer is None and scan.opacity == 1.0
    limits, blending = tuple(scan.contrast_limits), scan.blending
    (soft_layer,) = add_layer_tuples(viewer, [soft_map_layer(soft, geometry, name="prediction")])
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    assert not soft_layer.visible and scan.opacity <= 0.25 and scan.blending == "translucent_no_depth"
    assert scan.contrast_limits[1] > limits[1]                     # dimmed: faint context behind the surface
    viewer.dims.ndisplay = 2
    qtbot.waitUntil(lambda: scan.opacity == 1.0, timeout=5000)
    assert scan.blending == blending and tuple(scan.contrast_limits) == limits


def test_a_mesh_closed_at_the_field_of_view_leaves_the_slice_slider_alone(make_napari_viewer, qtbot):
    """A region that touches the border is closed there; napari takes a Surface's vertices into the slider
    ranges, so a cap half a voxel outside added a slice step (and shifted the slice numbers) after a 3D visit."""
    viewer = make_napari_viewer()
    soft, image, geometry = sphere_case()
    soft = soft.copy()
    soft[:4] = 0.9                                   # touches the X border (and spans the whole Y and Z)
    soft[:, :, 0] = np.maximum(soft[:, :, 0], 0.7)   # and the Z border
    add_layer_tuples(viewer, [image_layer(image, geometry, name="scan")])
    (soft_layer,) = add_layer_tuples(viewer, [soft_map_layer(soft, geometry, name="prediction")])
    widget = open_dock(viewer, DOCK)
    wait_ready(qtbot, widget)
    widget.set_threshold(0.5)
    ranges, steps = tuple(viewer.dims.range), tuple(viewer.dims.nsteps)
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, 0.5), timeout=20000)
    vertices = world_vertices(widget.mesh_layer)
    data = np.c_[vertices, np.ones(len(vertices))] @ np.linalg.inv(soft_layer.affine.affine_matrix).T
    assert data[:, :3].min() >= -1e-3 and np.all(data[:, :3].max(0) <= np.asarray(soft_layer.data.shape) - 1 + 1e-3)
    # the caps are there: on the border slices, not beyond them
    assert np.isclose(data[:, :3], 0.0, atol=1e-3).any(axis=0).sum() >= 2
    viewer.dims.ndisplay = 2
    assert tuple(viewer.dims.nsteps) == steps and tuple(viewer.dims.range) == ranges


def test_the_rest_before_a_rebuild_follows_the_pace_of_the_drag(sphere_dock, qtbot, monkeypatch):
    """Under software OpenGL a 3D frame (0.15-0.5 s) is longer than the 0.2 s rest, so every move of a drag
    counted as a rest and rebuilt the mesh; the rest now stretches to 1.5x the time between moves."""
    widget, viewer, soft_layer = sphere_dock
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    clock = [100.0]
    monkeypatch.setattr(surface_worker.time, "perf_counter", lambda: clock[0])
    timer = widget.surfaces.timer
    widget.set_threshold(0.41)                       # the first move: the plain rest
    assert timer.isActive() and timer.interval() == surface_worker.REST_MS
    for t in (0.42, 0.43):
        clock[0] += 0.3                              # a move every 0.3 s: frames paced the drag
        widget.set_threshold(t)
        assert timer.isActive() and timer.interval() == 450
    clock[0] += 0.9
    widget.set_threshold(0.44)
    assert timer.interval() == 1000                  # capped
    clock[0] += 5.0                                  # a pause, then a single move: the plain rest again
    widget.set_threshold(0.45)
    assert timer.interval() == surface_worker.REST_MS
    qtbot.waitUntil(lambda: mesh_of(widget, 0.45), timeout=20000)


def test_the_first_mesh_is_added_hidden_and_shown_on_a_later_turn(make_napari_viewer):
    """Adding the Surface layer and drawing its first frame are two turns of the event loop, not one stall."""
    from napari_softseg._napari.overlay import ThresholdOverlay

    viewer = make_napari_viewer()
    soft, _, geometry = sphere_case()
    (soft_layer,) = add_layer_tuples(viewer, [soft_map_layer(soft, geometry, name="prediction")])
    overlay = ThresholdOverlay(viewer)
    overlay.set_source(soft_layer, soft_layer.data)
    viewer.dims.ndisplay = 3
    source = overlay.mesh_source()
    turns = []
    assert overlay.show_mesh(build_mesh(source, overlay.threshold), source, later=turns.append)
    mesh = overlay.mesh_layer
    assert mesh is not None and not mesh.visible and len(turns) == 1
    assert overlay.building_first_mesh and not overlay.shows_mesh
    overlay.update_legend()
    assert viewer.text_overlay.text == "cyan surface: p ≥ 0.5 (building the surface…)"
    turns.pop()()                                                   # the later turn
    assert mesh.visible and overlay.shows_mesh and not overlay.building_first_mesh
    assert viewer.text_overlay.text == "cyan surface: p ≥ 0.5"
    overlay.update(0.3)                                             # a new threshold: the same layer, new data
    assert overlay.show_mesh(build_mesh(source, 0.3), source, later=turns.append)
    assert overlay.mesh_layer is mesh and mesh.visible and not turns
    viewer.dims.ndisplay = 2
    overlay.set_visibility()
    assert not mesh.visible and not overlay.building_first_mesh


def test_back_to_3d_before_2d_is_restored_loses_nothing(sphere_dock, qtbot):
    """2D's layers come back one per turn; a quick 3D → 2D → 3D → 2D still ends with the user's 2D look."""
    widget, viewer, soft_layer = sphere_dock
    scan = viewer.layers["scan"]
    look = (scan.opacity, scan.blending, scan.rendering, tuple(scan.contrast_limits))
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    viewer.dims.ndisplay = 2
    assert not soft_layer.visible and scan.opacity < look[0]        # not restored yet: on later turns
    viewer.dims.ndisplay = 3
    assert not soft_layer.visible and scan.opacity <= 0.25
    viewer.dims.ndisplay = 2
    qtbot.waitUntil(lambda: widget.contour_layer.visible and soft_layer.visible and scan.opacity == look[0],
                    timeout=5000)
    assert (scan.opacity, scan.blending, scan.rendering, tuple(scan.contrast_limits)) == look
    assert not widget.mesh_layer.visible


def test_a_layer_removed_in_3d_is_not_kept_to_be_restored(sphere_dock, qtbot):
    """The 3D layout keeps what it must restore in 2D; a layer the user removes meanwhile is let go (its data)."""
    import gc
    import weakref

    widget, viewer, soft_layer = sphere_dock
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: mesh_of(widget, widget.threshold), timeout=20000)
    gone = weakref.ref(viewer.layers["scan"])                      # dimmed in 3D: its 2D look was saved
    viewer.layers.remove("scan")
    gc.collect()
    assert gone() is None
    viewer.dims.ndisplay = 2
    qtbot.waitUntil(lambda: widget.contour_layer.visible and soft_layer.visible, timeout=5000)
