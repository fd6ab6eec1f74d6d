"""What the 3D view meshes: a soft-map layer's data and placement, taken on the GUI thread, and the mesh of
``p = level`` built from it off the GUI thread (:mod:`napari_softseg._qt.surface_worker` runs it)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from napari.utils.transforms import Affine

from napari_softseg.analysis.surface import Mesh, iso_surface


class MeshSource(NamedTuple):
    """What :func:`build_mesh` needs to mesh a soft-map layer, taken on the GUI thread.

    Attributes:
        data: The layer's array in its display order (not copied; read in the worker).
        spacing: Size in world mm of one step along each display axis.
        affine: ``4 x 4`` napari ``affine`` of the Surface layer: mesh mm (display order) -> world.
    """

    data: object
    spacing: tuple[float, float, float]
    affine: np.ndarray


def mesh_source_of(layer) -> MeshSource | None:
    """How to mesh ``layer`` (a 3D Image layer): its data, the world size of a step per axis, the mesh affine.

    The layer's whole placement (``affine`` and ``scale``/``translate``/``rotate``/``shear``) is the matrix
    ``M`` from data index to world. Marching cubes runs on the data with ``spacing`` the lengths of ``M``'s
    columns, so vertices are in mm (normals and smooth shading right for anisotropic voxels), and the
    Surface's affine is ``M @ diag(1 / spacing)``: vertices land where the layer shows the data. For this
    package's layers that is :func:`~napari_softseg.analysis.surface.surface_affine` of the NIfTI affine.
    Returns None for a layer that is not 3D.
    """
    if layer is None or layer.ndim != 3:
        return None
    placement = Affine(scale=layer.scale, translate=layer.translate, rotate=layer.rotate,
                       shear=layer.shear).affine_matrix
    matrix = np.asarray(layer.affine.affine_matrix, dtype=np.float64) @ placement
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        return None
    return MeshSource(layer.data, tuple(float(s) for s in spacing), matrix @ np.diag([*(1.0 / spacing), 1.0]))


def build_mesh(source: MeshSource, level: float) -> Mesh:
    """The smooth surface ``p = level`` of ``source`` (display order, mm); call it off the GUI thread.

    The grid step is chosen to keep the mesh under
    :data:`~napari_softseg.analysis.surface.MAX_FACES` triangles (0.2–0.3 s on a whole head, one thread).

    Where the region touches the field of view the surface is closed just outside the outer voxel centres
    (up to one voxel out). napari takes a Surface's vertices into the slider ranges, so such a mesh, even
    hidden in 2D, added a slider step and shifted every slice number by half a step. The vertices are kept
    within the outer voxel centres (the layer's own extent): the closing cap lies on the border slice.
    """
    data = np.asarray(source.data)
    mesh = iso_surface(data, level, spacing=source.spacing, step=None)
    if not mesh.is_empty:
        top = (np.asarray(data.shape, dtype=np.float64) - 1) * np.asarray(source.spacing, dtype=np.float64)
        np.clip(mesh.vertices, 0.0, top.astype(np.float32), out=mesh.vertices)
    return mesh


def surface_layer_data(mesh: Mesh, source: MeshSource) -> tuple[tuple, np.ndarray]:
    """``(data, affine)`` of the napari Surface that shows ``mesh`` (of ``source``) where its soft map is.

    napari sets the slice slider's step to the smallest scale of any layer, and a Surface in mm has scale 1:
    with 2.5 mm slices the slider got 2.5 times the steps after a 3D visit (the mesh stays, hidden, in 2D).
    The vertices are given in units of the largest voxel side instead (a uniform scale, so the shading's
    normals stay right, which a per-axis scale would skew), so no axis gets a finer step than the scan's.
    """
    unit = float(max(source.spacing))
    affine = np.asarray(source.affine, dtype=np.float64) @ np.diag([unit, unit, unit, 1.0])
    return (mesh.vertices / np.float32(unit), mesh.faces, mesh.values()), affine
