"""The iso-surface ``p = t`` of a soft map as a triangle mesh, for a shaded 3D view (Qt-free, no napari).

napari's ``Image`` iso rendering draws a flat, unshaded silhouette; a mesh from marching cubes
(``skimage.measure.marching_cubes``, Lewiner's variant) shown as a napari ``Surface`` layer with
``shading="smooth"`` has sub-voxel vertices and a light that follows the camera, so a clinician sees the
shape of the region ``p >= t``.

Coordinates: a :class:`Mesh` is in **millimetres along the core voxel axes** ``(X, Y, Z)``: a vertex at
``index * spacing``, measured from the centre of voxel ``(0, 0, 0)`` (what marching cubes returns with
``spacing``). The NIfTI world position of a vertex ``v`` is ``affine @ [v / spacing, 1]``;
:meth:`Mesh.world` applies that. To show a mesh in napari on top of this package's image layers (whose
napari ``affine`` maps display indices to world mm in napari's ``(z, y, x)`` order, see
:class:`napari_softseg.io.geometry.Geometry`), pass the layer data and affine from here::

    mesh = iso_surface(soft, t, spacing=geometry.spacing, step=None)   # soft: core (X, Y, Z)
    viewer.add_surface(mesh.napari_data(), affine=surface_affine(geometry.affine, geometry.spacing),
                       shading="smooth")

(no ``scale``/``translate``: the affine does it all). :meth:`Mesh.napari_data` reverses the vertex axes to
napari's ``(z, y, x)`` order, and :func:`surface_affine` is ``R @ affine @ diag(1/spacing, 1) @ R`` with ``R``
the axis reversal — the same construction as ``Geometry.napari_affine``, so surface and scan line up for
any orientation (flips, axis swaps, oblique affines).

The volume is padded with one voxel of 0 on every side before marching cubes, so a region that touches
the volume's border is closed there (a watertight surface). Large volumes are meshed on a coarser grid:
``step=None`` picks the smallest step that keeps the mesh under :data:`MAX_FACES` faces, estimated in
milliseconds from the level crossings of a subsample (:func:`estimate_faces`).

Measured on this project's 2-core machine (one thread), a folded-ellipsoid soft map at p = 0.5,
``step=None``: 197 x 233 x 189 -> step 1, 306k faces, 0.2 s; 512 x 512 x 300 -> step 2, 332k faces,
0.26 s (step 1 would give 1.34M faces in 1.35 s). These times are short, so there is no progress
generator: call it in a worker thread. Marching cubes holds the GIL, so it runs in slabs of about
:data:`SLAB_VOXELS` voxels (the same mesh) and a GUI thread beside it is never held up for long.

Example:
    >>> import numpy as np
    >>> g = np.indices((20, 20, 10)).astype(np.float32)
    >>> r = np.sqrt(((g[0] - 10) * 1.0) ** 2 + ((g[1] - 10) * 1.0) ** 2 + ((g[2] - 5) * 2.0) ** 2)
    >>> soft = (1.0 / (1.0 + np.exp(r - 6.0))).astype(np.float32)   # p = 0.5 at 6 mm
    >>> mesh = iso_surface(soft, 0.5, spacing=(1.0, 1.0, 2.0))
    >>> radii = np.linalg.norm(mesh.vertices - np.array([10.0, 10.0, 10.0]), axis=1)
    >>> bool(abs(radii.mean() - 6.0) < 0.1), mesh.faces.dtype.name
    (True, 'int32')
    >>> iso_surface(soft, 1.5).is_empty
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_softseg.errors import SoftsegError
from napari_softseg.io.geometry import check_spacing, reverse_matrix

MAX_FACES = 500_000
"""Face budget of ``step=None``: the coarsest mesh napari still rotates smoothly under software GL."""

SLAB_VOXELS = 1_000_000
"""Voxels per marching-cubes call (see :func:`_marching_cubes_in_slabs`): ~15-30 ms each on this machine."""

_PLATEAU_EPS = 1e-5
"""``level == max(p)``: the surface is taken this fraction of the value range below, around the plateau."""


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh of the iso-surface ``p = level``.

    Attributes:
        vertices: ``float32 (N, 3)``, mm along the core axes ``(X, Y, Z)`` from voxel ``(0, 0, 0)``'s centre.
        faces: ``int32 (M, 3)`` vertex indices; counter-clockwise seen from outside the region ``p >= level``
            (the right-hand rule gives the outward normal).
        normals: ``float32 (N, 3)`` unit vertex normals (the soft map's gradient in mm), pointing out of
            the region ``p >= level``, for smooth shading.
        level: The iso level asked for.
        spacing: Voxel size in mm along ``(X, Y, Z)``.
        step: The grid step used (1 = every voxel; ``s`` = every ``s``-th voxel along each axis).
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    level: float
    spacing: tuple[float, float, float]
    step: int

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def is_empty(self) -> bool:
        """No triangles (the level is outside the soft map's range)."""
        return self.n_faces == 0

    def values(self) -> np.ndarray:
        """``float32 (N,)``: the level at every vertex (napari's Surface needs one value per vertex)."""
        return np.full(self.n_vertices, self.level, dtype=np.float32)

    def world(self, affine: np.ndarray) -> Mesh:
        """This mesh in NIfTI world mm ``(x, y, z)``, given the soft map's voxel-to-world ``affine``.

        Normals follow (inverse transpose, renormalised) and faces keep their outward orientation when
        the affine flips handedness.
        """
        return self.transformed(_to_world(affine, self.spacing))

    def transformed(self, matrix: np.ndarray) -> Mesh:
        """The mesh mapped by a homogeneous ``4 x 4`` matrix (vertices, normals and face orientation).

        Raises:
            SoftsegError: ``matrix`` is not a finite, invertible ``4 x 4`` matrix.
        """
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise SoftsegError(f"a mesh transform must be a finite 4x4 matrix, got shape {matrix.shape}")
        linear = matrix[:3, :3]
        det = float(np.linalg.det(linear))
        if abs(det) < 1e-12:
            raise SoftsegError("a mesh transform must be invertible (its 3x3 part has determinant 0)")
        vertices = (self.vertices.astype(np.float64) @ linear.T + matrix[:3, 3]).astype(np.float32)
        normals = self.normals.astype(np.float64) @ np.linalg.inv(linear)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        faces = self.faces[:, ::-1].copy() if det < 0 else self.faces
        return Mesh(vertices, faces, normals.astype(np.float32), self.level, self.spacing, self.step)

    def napari_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vertices, faces, values)`` for ``viewer.add_surface``, vertices in napari's ``(z, y, x)`` order.

        Use with ``affine=surface_affine(geometry.affine, mesh.spacing)`` (see the module docstring).
        Faces are reversed with the axes so their orientation stays outward.
        """
        return (np.ascontiguousarray(self.vertices[:, ::-1]), np.ascontiguousarray(self.faces[:, ::-1]),
                self.values())


def surface_affine(affine: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """napari ``affine`` of a Surface layer made from :meth:`Mesh.napari_data`: mesh mm -> world mm ``(z, y, x)``.

    It places the mesh exactly where this package's image layers (``Geometry.napari_affine``) show the
    soft map it was made from.

    Args:
        affine: The soft map's NIfTI voxel-to-world matrix (``Geometry.affine``).
        spacing: The spacing the mesh was made with (``Mesh.spacing``).
    """
    rev = reverse_matrix(3)
    return rev @ _to_world(affine, spacing) @ rev


def _to_world(affine: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise SoftsegError(f"invalid affine (expected a finite 4x4 matrix, got shape {affine.shape})")
    return affine @ np.diag([*(1.0 / np.asarray(check_spacing(spacing))), 1.0])


def _check_soft(soft: np.ndarray) -> np.ndarray:
    soft = np.asarray(soft)
    if soft.ndim != 3 or min(soft.shape) < 1:
        raise SoftsegError(f"a soft map for a surface must be a 3D array (X, Y, Z), got shape {soft.shape}")
    if not (np.issubdtype(soft.dtype, np.floating) or np.issubdtype(soft.dtype, np.integer)
            or soft.dtype == np.bool_):
        raise SoftsegError(f"a soft map must hold numbers, got dtype {soft.dtype}")
    return soft


def estimate_faces(soft: np.ndarray, level: float, step: int = 1) -> int:
    """About how many triangles ``iso_surface(soft, level, step=step)`` makes, in milliseconds.

    Every grid edge the level crosses gives one vertex and a closed surface has about two triangles
    per vertex; the crossings are counted on every second voxel (a quarter of them per unit area) and
    scaled to ``step``. Border crossings (the padding) count too. Within a few percent on smooth maps.
    """
    soft = _check_soft(soft)
    sub = 2 if min(soft.shape) >= 8 else 1
    inside = np.pad(np.asarray(soft[::sub, ::sub, ::sub]) >= level, 1)
    crossings = sum(int(np.count_nonzero(np.diff(inside, axis=a))) for a in range(3))
    return int(round(2 * crossings * (sub / max(int(step), 1)) ** 2))


def choose_step(soft: np.ndarray, level: float, max_faces: int = MAX_FACES) -> int:
    """The smallest grid step whose mesh stays under ``max_faces`` triangles (1 for small maps)."""
    if max_faces < 1:
        raise SoftsegError(f"the face budget must be at least 1, got {max_faces}")
    full = estimate_faces(soft, level, 1)
    return max(1, math.ceil(math.sqrt(full / max_faces)))   # faces scale as 1 / step**2


def _empty(level: float, spacing: tuple[float, float, float], step: int) -> Mesh:
    return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.float32),
                float(level), spacing, step)


def iso_surface(
    soft: np.ndarray, level: float, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), step: int | None = 1,
    mask: np.ndarray | None = None, max_faces: int = MAX_FACES,
) -> Mesh:
    """The closed iso-surface ``p = level`` of a soft map, in mm (see the module docstring for placement).

    Args:
        soft: The soft map, core order ``(X, Y, Z)`` (float; other numbers are converted).
        level: The iso level, e.g. the explorer's threshold ``t``: the surface bounds ``p >= level``.
            A level at the map's maximum gives the surface just around the voxels equal to it.
        spacing: Voxel size in mm along ``(X, Y, Z)``; vertices are ``index * spacing``.
        step: Grid step (1 = full resolution); ``None`` picks :func:`choose_step` with ``max_faces``.
        mask: Optional boolean ``(X, Y, Z)`` array: only cubes whose first corner is ``True`` are meshed
            (e.g. the head, to skip background).
        max_faces: Face budget for ``step=None``.

    Returns:
        The mesh; empty (0 vertices, 0 faces) when ``level`` is not inside the range of the zero-padded
        map, i.e. ``level <= min(0, p.min())`` or ``level > p.max()`` — no boundary to draw.

    Raises:
        SoftsegError: ``soft`` is not 3D, ``spacing`` is not three positive sizes, ``step`` < 1, or the
            mask's shape differs.
    """
    soft = _check_soft(soft)
    spacing = check_spacing(spacing)
    level = float(level)
    if not math.isfinite(level):
        raise SoftsegError(f"the surface level must be a finite number, got {level}")
    if step is None:
        step = choose_step(soft, level, max_faces)
    if int(step) != step or step < 1:
        raise SoftsegError(f"the surface step must be a whole number >= 1, got {step!r}")
    step = int(step)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != soft.shape:
            raise SoftsegError(f"the surface mask has shape {mask.shape}, the soft map {soft.shape}")
    coarse = soft[::step, ::step, ::step]
    padded = np.pad(np.asarray(coarse, dtype=np.float32), 1)      # the one copy; 0 closes the border
    lo, hi = float(padded.min()), float(padded.max())
    if math.isnan(lo) or math.isnan(hi):                           # NaN counts as p = 0
        np.nan_to_num(padded, copy=False, nan=0.0)
        lo, hi = float(padded.min()), float(padded.max())
    if not lo < level <= hi:
        return _empty(level, spacing, step)
    effective = level if level < hi else hi - _PLATEAU_EPS * (hi - lo)
    grid = tuple(s * step for s in spacing)
    kwargs = {}
    if mask is not None:
        kwargs["mask"] = np.pad(mask[::step, ::step, ::step].astype(bool), 1, mode="edge")
        if not kwargs["mask"].any():
            return _empty(level, spacing, step)
    vertices, faces, normals = _marching_cubes_in_slabs(padded, effective, kwargs.get("mask"))
    if not len(faces):              # the mask left no crossing
        return _empty(level, spacing, step)
    vertices = (vertices - 1.0) * np.asarray(grid, dtype=np.float32)   # undo the padding's shift; to mm
    faces = np.ascontiguousarray(faces[:, ::-1], dtype=np.int32)   # skimage's winding is inward
    # skimage's normals are the gradient in index units, whatever the spacing: the gradient in mm is
    # d/d(index) / spacing (without this, normals of a sphere on a 0.8 x 1 x 2.5 mm grid tilt up to 38°)
    normals = normals / np.asarray(grid, dtype=np.float32)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 0).astype(np.float32)
    return Mesh(vertices.astype(np.float32, copy=False), faces, normals, level, spacing, step)


def _marching_cubes_in_slabs(volume: np.ndarray, level: float, mask: np.ndarray | None,
                             slab_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``skimage.measure.marching_cubes`` of ``volume`` (index units), one slab of axis-0 planes per call.

    Marching cubes is one C call that holds the GIL: on a whole head (424k faces) it held it for 0.12 s on
    an idle machine and longer beside a drawing viewer, so the viewer's GUI thread, which needs the GIL for
    every event, stalled while a 3D surface was built in a worker. In slabs of about :data:`SLAB_VOXELS`
    voxels each call is short and the GUI thread runs in between. The vertices and faces are the single
    call's: each slab meshes only its own cubes (with skimage's ``mask``) and the vertices on the planes
    two slabs share, computed the same way by both, are merged. skimage takes a vertex's normal from the
    first cube that reaches it, so on a shared plane it may come from the neighbouring cube (the same
    accuracy: on a sphere on a 0.8 x 1 x 2.5 mm grid a mean error of 2.4° against 1.9°; napari shades
    with normals of its own).

    Returns:
        ``(vertices float32 (N, 3), faces int32 (M, 3), normals float32 (N, 3))``; no faces when nothing
        crosses ``level`` (in the masked cubes).
    """
    from skimage.measure import marching_cubes

    n = volume.shape[0]
    per_plane = max(1, int(np.prod(volume.shape[1:])))
    thickness = max(1, (SLAB_VOXELS if slab_voxels is None else slab_voxels) // per_plane)
    starts = list(range(0, n - 1, thickness))                      # cubes [a, a + thickness) of planes 0..n-2
    parts, offset = [], 0
    for a in starts:
        b = min(a + thickness, n - 1)                              # the slab's cubes: first corners a..b-1
        lo, hi = max(a - 1, 0), min(b + 2, n)                     # planes a..b, and one more each side
        cubes = np.zeros((hi - lo,) + volume.shape[1:], dtype=bool)
        # skimage's mask picks a cube by its far corner: mask[c + 1] for the cube of planes c..c+1
        cubes[a + 1 - lo:b + 1 - lo] = True if mask is None else mask[a + 1:b + 1]
        sub = volume[lo:hi]
        if not cubes.any() or not float(sub.min()) <= level <= float(sub.max()):
            continue
        try:
            v, f, nrm, _ = marching_cubes(sub, level=level, step_size=1, allow_degenerate=False, mask=cubes)
        except RuntimeError:        # "No surface found" in this slab's cubes
            continue
        v[:, 0] += lo
        parts.append((v.astype(np.float32, copy=False), f + offset, nrm.astype(np.float32, copy=False), a, b))
        offset += len(v)
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.float32)
    vertices = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([p[1] for p in parts])
    normals = np.concatenate([p[2] for p in parts])
    if len(parts) > 1:
        vertices, faces, normals = _merge_shared_planes(vertices, faces, normals, [p[4] for p in parts[:-1]])
    return vertices, faces.astype(np.int32, copy=False), normals


def _merge_shared_planes(vertices, faces, normals, planes):
    """Merge the vertices that lie on the planes ``x = p`` of ``planes`` (two slabs made each one)."""
    index = np.flatnonzero(np.isin(vertices[:, 0], np.asarray(planes, dtype=vertices.dtype)))
    if len(index):
        _, first, inverse = np.unique(vertices[index], axis=0, return_index=True, return_inverse=True)
        remap = np.arange(len(vertices))
        remap[index] = index[first[inverse.ravel()]]               # each to the first vertex at its place
        keep = remap == np.arange(len(vertices))
        vertices, faces, normals = vertices[keep], (np.cumsum(keep) - 1)[remap[faces]], normals[keep]
    # zero-area triangles (skimage drops them): two vertices that differed in the last bit of a slab's own
    # coordinates can fall on one point once moved to the slab's place (a corner exactly at the level)
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    flat = (a == b).all(axis=1) | (b == c).all(axis=1) | (a == c).all(axis=1)
    return vertices, faces[~flat], normals
