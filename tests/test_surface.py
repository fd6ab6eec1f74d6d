"""The 3D iso-surface of a soft map (analysis/surface.py) and the band colour encoding (analysis/overlay_colors.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_softseg.analysis.overlay_colors import (
    BAND,
    heat_rgb,
    previous_heat_style,
    sample,
    uncertainty_colormap,
    uncertainty_style,
)
from napari_softseg.analysis.surface import (
    Mesh,
    choose_step,
    estimate_faces,
    iso_surface,
    surface_affine,
)
from napari_softseg.errors import SoftsegError
from napari_softseg.io.geometry import Geometry

SPACING = (0.8, 1.0, 2.5)


def sphere(shape=(40, 34, 16), spacing=SPACING, centre_index=(16.0, 17.0, 7.3), radius=10.0, width=2.0):
    """Soft map p = sigmoid((radius - r) / width), r in mm: p = 0.5 on the sphere of ``radius`` mm."""
    spacing = np.asarray(spacing, dtype=np.float64)
    centre = np.asarray(centre_index) * spacing
    grid = np.indices(shape).astype(np.float64) * spacing[:, None, None, None]
    r = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
    return (1.0 / (1.0 + np.exp((r - radius) / width))).astype(np.float32), centre


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume by the divergence theorem: positive when faces wind counter-clockwise seen from outside."""
    v = vertices.astype(np.float64)
    return float(np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() / 6.0)


def directed_edges(faces: np.ndarray) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def assert_closed(mesh: Mesh) -> None:
    """Watertight and consistently oriented: every directed edge once, and its reverse once."""
    edges = directed_edges(mesh.faces)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 1, "an edge is used twice in the same direction (inconsistent winding)"
    forward = {tuple(e) for e in unique.tolist()}
    assert all((b, a) in forward for a, b in forward), "an edge has only one face: the surface is open"


# -- iso_surface ------------------------------------------------------------------------------------
def test_sphere_vertices_lie_on_the_iso_radius_in_mm_with_anisotropic_spacing():
    soft, centre = sphere()
    mesh = iso_surface(soft, 0.5, spacing=SPACING)
    assert mesh.vertices.dtype == np.float32 and mesh.vertices.shape[1] == 3
    assert mesh.faces.dtype == np.int32 and mesh.faces.shape[1] == 3
    assert mesh.normals.shape == mesh.vertices.shape
    assert mesh.n_faces > 1000 and mesh.step == 1
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert np.abs(radii - 10.0).max() < 0.15            # mm, on a 0.8 x 1 x 2.5 mm grid
    assert abs(radii.mean() - 10.0) < 0.05
    # other levels: the sphere where sigmoid = level, r = 10 + 2 ln(1/level - 1)
    for level in (0.3, 0.7):
        radii = np.linalg.norm(iso_surface(soft, level, spacing=SPACING).vertices - centre, axis=1)
        assert abs(np.median(radii) - (10.0 + 2.0 * np.log(1.0 / level - 1.0))) < 0.1


def test_sphere_is_closed_outward_and_encloses_the_ball_volume():
    soft, _ = sphere()
    mesh = iso_surface(soft, 0.5, spacing=SPACING)
    assert_closed(mesh)
    volume = signed_volume(mesh.vertices, mesh.faces)
    assert volume > 0                                    # faces wind outward
    assert volume == pytest.approx(4.0 / 3.0 * np.pi * 10.0**3, rel=0.02)


def test_normals_are_unit_and_point_out_of_the_region_in_mm():
    soft, centre = sphere()
    mesh = iso_surface(soft, 0.5, spacing=SPACING)
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-5)
    radial = (mesh.vertices - centre) / np.linalg.norm(mesh.vertices - centre, axis=1, keepdims=True)
    cosines = (radial * mesh.normals).sum(1)
    assert cosines.min() > 0.98                          # the gradient in mm, not in voxel units


@pytest.mark.parametrize("level", [1.5, 1.0 + 1e-6, 0.0, -0.2])
def test_level_outside_the_range_gives_an_empty_mesh(level):
    soft, _ = sphere()
    soft = np.clip(soft, 0.0, 0.999)
    mesh = iso_surface(soft, level, spacing=SPACING)
    assert mesh.is_empty and mesh.n_vertices == 0
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3) and mesh.faces.dtype == np.int32
    assert mesh.napari_data()[0].shape == (0, 3)


def test_constant_and_nan_maps_give_empty_meshes():
    assert iso_surface(np.zeros((5, 6, 7), np.float32), 0.5).is_empty
    assert iso_surface(np.full((5, 6, 7), np.nan, np.float32), 0.5).is_empty


def test_region_touching_the_border_is_closed_there():
    soft = np.zeros((12, 10, 8), np.float32)
    soft[:5] = 1.0                                       # a slab across the whole Y and Z extent
    spacing = (1.0, 2.0, 3.0)
    mesh = iso_surface(soft, 0.5, spacing=spacing)
    assert_closed(mesh)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    # closed half a voxel beyond the outer voxel centres (the voxels' outer faces), at x = 4.5 voxels inside
    np.testing.assert_allclose(lo, [-0.5, -1.0, -1.5], atol=1e-5)
    np.testing.assert_allclose(hi, [4.5, 19.0, 22.5], atol=1e-5)
    # the 5 x 20 x 24 mm box, less marching cubes' chamfer on a binary map: along each of the 12 edges a
    # prism of cross-section (half a voxel)^2 / 2 (4 edges each of 5 mm x 0.75, 20 mm x 0.375, 24 mm x 0.25)
    chamfer = 4 * (5.0 * 0.75 + 20.0 * 0.375 + 24.0 * 0.25)
    assert signed_volume(mesh.vertices, mesh.faces) == pytest.approx(5.0 * 20.0 * 24.0 - chamfer, rel=0.005)


def test_binary_plateau_at_its_maximum_still_gets_a_surface():
    soft = np.zeros((10, 10, 10), np.float32)
    soft[3:7, 3:7, 3:7] = 1.0                            # a rater-mean map: p >= 1 where all raters agree
    mesh = iso_surface(soft, 1.0)
    assert not mesh.is_empty and mesh.level == 1.0
    assert_closed(mesh)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    np.testing.assert_allclose(lo, 3.0, atol=1e-3)      # tight around the voxel centres with p == 1
    np.testing.assert_allclose(hi, 6.0, atol=1e-3)


def test_mask_restricts_the_meshed_cubes():
    soft, centre = sphere()
    mask = np.zeros(soft.shape, bool)
    mask[: soft.shape[0] // 2] = True
    mesh = iso_surface(soft, 0.5, spacing=SPACING, mask=mask)
    full = iso_surface(soft, 0.5, spacing=SPACING)
    assert 0 < mesh.n_faces < full.n_faces
    assert mesh.vertices[:, 0].max() <= soft.shape[0] // 2 * SPACING[0] + 1e-4
    assert iso_surface(soft, 0.5, spacing=SPACING, mask=np.zeros(soft.shape, bool)).is_empty


@pytest.mark.parametrize("with_mask", [False, True])
def test_meshing_in_slabs_gives_the_mesh_of_one_call(monkeypatch, with_mask):
    """Marching cubes holds the GIL, so big maps are meshed a slab of planes per call (a GUI thread beside
    it runs in between): the vertices and faces are those of one call over the whole map, the surface is
    still closed, and no call sees more than a slab."""
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes

    from napari_softseg.analysis import surface

    rng = np.random.default_rng(3)
    soft, _ = sphere()
    soft = np.clip(soft + 0.3 * rng.random(soft.shape).astype(np.float32) * (soft > 0.2), 0, 1)  # folds
    mask = (rng.random(soft.shape) > 0.2) if with_mask else None
    padded = np.pad(soft, 1)
    kwargs = {} if mask is None else {"mask": np.pad(mask, 1, mode="edge")}
    v0, f0, _, _ = marching_cubes(padded, 0.5, step_size=1, allow_degenerate=False, **kwargs)
    seen = []
    real = marching_cubes

    def counted(volume, *args, **kw):
        seen.append(volume.shape[0])
        return real(volume, *args, **kw)

    monkeypatch.setattr("skimage.measure.marching_cubes", counted)
    per_plane = padded.shape[1] * padded.shape[2]
    monkeypatch.setattr(surface, "SLAB_VOXELS", 5 * per_plane)
    v1, f1, normals = surface._marching_cubes_in_slabs(padded, 0.5, kwargs.get("mask"))
    assert len(seen) >= 7 and max(seen) <= 5 + 3                   # slabs of 5 planes' cubes (+ context)
    distance, index = cKDTree(v0).query(v1)
    assert distance.max() < 1e-4 and len(set(index.tolist())) == len(v0) == len(v1)   # the same vertices

    def rotations(faces):                                           # a face, from its lowest vertex, in order
        faces = np.asarray(faces)
        first = np.argmin(faces, axis=1)
        return {tuple(r) for r in np.stack([faces[np.arange(len(faces)), (first + k) % 3] for k in range(3)], 1)}

    assert rotations(index[f1]) == rotations(f0)                    # the same faces, the same winding
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
    mesh = iso_surface(soft, 0.5, spacing=SPACING, mask=mask)       # through the public function
    assert mesh.n_faces == len(f0)
    if mask is None:
        assert_closed(mesh)


def test_coarse_step_keeps_the_mesh_under_the_face_budget_and_on_the_sphere():
    soft, centre = sphere(shape=(80, 68, 32), centre_index=(40.0, 34.0, 16.0), radius=20.0)
    full = iso_surface(soft, 0.5, spacing=SPACING)
    assert estimate_faces(soft, 0.5) == pytest.approx(full.n_faces, rel=0.1)
    budget = full.n_faces // 5
    step = choose_step(soft, 0.5, max_faces=budget)
    assert step == 3
    coarse = iso_surface(soft, 0.5, spacing=SPACING, step=None, max_faces=budget)
    assert coarse.step == step and 0 < coarse.n_faces <= budget * 1.1
    assert_closed(coarse)
    radii = np.linalg.norm(coarse.vertices - centre, axis=1)
    assert np.abs(radii - 20.0).max() < 1.5              # coarser, still where the sphere is
    assert choose_step(soft, 0.5) == 1                   # small maps: full resolution


def test_surface_lines_up_with_the_image_layers_of_an_oblique_flipped_volume():
    """Mesh + surface_affine land where Geometry.napari_affine shows the same voxels (napari world z, y, x)."""
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    affine = np.eye(4)
    # a coronal-like acquisition: voxel axes (X, Y, Z) -> world (-x, z, y), tilted 20°, anisotropic
    affine[:3, :3] = rotation @ np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) @ np.diag(SPACING)
    affine[:3, 3] = [40.0, -20.0, 10.0]
    geometry = Geometry(affine, (40, 34, 16))
    centre_index = (16, 17, 7)
    soft, _ = sphere(spacing=geometry.spacing, centre_index=centre_index)
    mesh = iso_surface(soft, 0.5, spacing=geometry.spacing)
    vertices, faces, values = mesh.napari_data()
    assert values.shape == (mesh.n_vertices,) and np.all(values == 0.5)
    matrix = surface_affine(geometry.affine, mesh.spacing)
    world = vertices.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    # where the image layers show the sphere's centre voxel: its display index through the napari affine
    marker = np.zeros(geometry.shape, np.float32)
    marker[centre_index] = 1.0
    display_index = np.unravel_index(np.argmax(geometry.to_display(marker)), geometry.display_shape)
    centre_world = (geometry.napari_affine() @ [*display_index, 1.0])[:3]
    radii = np.linalg.norm(world - centre_world, axis=1)
    assert np.abs(radii - 10.0).max() < 0.15             # a 10 mm sphere around that point: rigid placement
    # the world-space mesh (NIfTI x, y, z) is the same surface, still wound outward after the flips
    world_mesh = mesh.world(affine)
    np.testing.assert_allclose(world_mesh.vertices[:, ::-1], world, atol=1e-3)
    assert signed_volume(world_mesh.vertices, world_mesh.faces) > 0
    np.testing.assert_allclose(np.linalg.norm(world_mesh.normals, axis=1), 1.0, atol=1e-5)
    radial = (world_mesh.vertices - centre_world[::-1]) / radii[:, None]
    assert (radial * world_mesh.normals).sum(1).min() > 0.98


@pytest.mark.parametrize(
    ("soft", "kwargs", "message"),
    [
        (np.zeros((4, 4), np.float32), {}, "3D array"),
        (np.zeros((4, 4, 4), np.float32), {"spacing": (1.0, 0.0, 1.0)}, "positive"),
        (np.zeros((4, 4, 4), np.float32), {"spacing": (1.0, 1.0)}, "three"),
        (np.zeros((4, 4, 4), np.float32), {"step": 0}, "step"),
        (np.zeros((4, 4, 4), np.float32), {"mask": np.ones((4, 4, 5), bool)}, "mask"),
    ],
)
def test_bad_arguments_are_named(soft, kwargs, message):
    with pytest.raises(SoftsegError, match=message):
        iso_surface(soft, 0.5, **kwargs)


# -- overlay_colors ---------------------------------------------------------------------------------
def test_band_colormap_is_transparent_outside_the_band_and_tinted_inside():
    spec = uncertainty_colormap()
    low, high = BAND
    p = np.linspace(0.0, 1.0, 2001)
    rgba = sample(spec, p)
    outside = (p <= low) | (p >= high)
    assert np.abs(rgba[outside, 3]).max() < 1e-6
    inside = (p > low + 0.005) & (p < high - 0.005)
    assert rgba[inside, 3].min() > 0.0
    assert rgba[:, 3].max() == pytest.approx(0.6, abs=0.01)
    assert (0.0 <= spec["colors"]).all() and (spec["colors"] <= 1.0).all()
    controls = spec["controls"]
    assert controls[0] == 0.0 and controls[-1] == 1.0 and np.all(np.diff(controls) > 0)
    assert spec["colors"].shape == (controls.size, 4)


def test_band_hues_are_todays_heat_hues_and_warm_with_p():
    spec = uncertainty_colormap()
    p = np.array([0.2, 0.5, 0.8])
    np.testing.assert_allclose(sample(spec, p)[:, :3], heat_rgb(p), atol=0.02)
    green = sample(spec, p)[:, 1]
    assert np.all(np.diff(green) > 0)                    # dark red -> orange -> yellow


def test_napari_draws_the_spec_as_sampled():
    from napari.utils.colormaps import ensure_colormap

    spec = uncertainty_colormap(low=0.1, high=0.9, peak_alpha=0.5)
    colormap = ensure_colormap(spec)
    p = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97, 1.0])
    np.testing.assert_allclose(colormap.map(p), sample(spec, p), atol=1e-5)


def test_soft_maps_are_drawn_in_the_band_style():
    """The soft-map layer style is the band encoding: no colour where p >= 0.95, unlike v0.2's heat."""
    from napari.utils.colormaps import ensure_colormap

    from napari_softseg._napari.layers import SOFT_MAP_COLORMAP, soft_map_style

    style = soft_map_style()
    band = uncertainty_style()
    assert set(style) == set(band) and style["colormap"].name == SOFT_MAP_COLORMAP == band["colormap"]["name"]
    assert style["contrast_limits"] == band["contrast_limits"] == (0.0, 1.0) and style["opacity"] == band["opacity"]
    p = np.array([0.0, 0.03, 0.3, 0.5, 0.9, 0.96, 1.0])
    np.testing.assert_allclose(style["colormap"].map(p), sample(band["colormap"], p), atol=1e-5)
    alpha = style["colormap"].map(p)[:, 3]
    assert alpha[[0, 1, 5, 6]].max() == 0.0 and alpha[3] == pytest.approx(0.6, abs=0.01)
    old = ensure_colormap(previous_heat_style()["colormap"]).map(p)[:, 3]
    assert old[-1] == pytest.approx(0.58) and old[5] > 0.5        # v0.2 washed the sure region


@pytest.mark.parametrize("kwargs", [{"low": 0.0}, {"low": 0.6, "high": 0.4}, {"high": 1.0}, {"peak_alpha": 0.0},
                                    {"n": 2}])
def test_bad_band_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        uncertainty_colormap(**kwargs)
