"""The Threshold explorer's 3D surface, built off the GUI thread once the slider rests.

In 3D the explorer shows ``p >= t`` as a smooth shaded mesh of ``p = t``
(:class:`~napari_softseg._napari.overlay.ThresholdOverlay` draws it; marching cubes in
:func:`~napari_softseg._napari.mesh_source.build_mesh`, 0.2–0.3 s on a whole head). :class:`SurfaceBuilder` is the
glue between the slider and that work:

* every slider move (:meth:`SurfaceBuilder.threshold_moved`) restarts a short rest timer (debounce,
  :data:`REST_MS`); meanwhile the overlay keeps the last mesh and its legend names both levels;
* when the slider rests, the mesh is built in a worker thread (a
  :class:`~napari_softseg._qt.background.LatestJob`: a newer request supersedes an older one, whose result
  is dropped) and swapped in on the GUI thread (:meth:`ThresholdOverlay.show_mesh
  <napari_softseg._napari.overlay.ThresholdOverlay.show_mesh>`, which also drops a mesh of a threshold or
  soft map that is no longer shown);
* entering 3D builds at once (the legend says so until the first mesh is in; it is added hidden and shown
  on the next turn); leaving 3D cancels (the overlay hides the mesh, kept for the next 3D view).

With ``NAPARI_SOFTSEG_SYNC=1`` the build runs inline (as the docks' other jobs). Tests wait with
``qtbot.waitUntil(lambda: not builder.busy)``.
"""

from __future__ import annotations

import time
from collections.abc import Generator

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QWidget

from napari_softseg._napari.mesh_source import MeshSource, build_mesh
from napari_softseg._napari.overlay import ThresholdOverlay
from napari_softseg._qt.background import LatestJob
from napari_softseg._qt.qt_helpers import next_turn
from napari_softseg.analysis.surface import Mesh
from napari_softseg.progress import Progress

#: How long the slider must rest before the mesh of the new threshold is built (ms).
REST_MS = 200
#: A drag is paced by the frames it draws: under software OpenGL a 3D frame takes 0.15-0.5 s, longer than
#: :data:`REST_MS`, so every move of a drag counted as a rest and rebuilt the mesh (its swap then landed in
#: a later move: one 3D step of six took 2.4x a repaint). The rest is at least this many times the time
#: between the last two moves (capped at :data:`MAX_REST_MS`).
REST_PACE = 1.5
MAX_REST_MS = 1000


def mesh_work(source: MeshSource, level: float) -> Generator[Progress, None, Mesh]:
    """The mesh build as a Progress generator (one event: a superseded request stops before meshing)."""
    yield Progress("surface", 0, 1, f"3D surface p = {level:g}")
    return build_mesh(source, level)


class SurfaceBuilder(QObject):
    """Builds and swaps in the 3D mesh of ``p = t`` for one :class:`ThresholdOverlay`.

    Args:
        owner: The dock widget (results are dropped once it is deleted).
        overlay: The overlay whose mesh is built.
        description: Prefix of error notifications.
        rest_ms: The debounce: how long the slider must rest before a build starts.
    """

    def __init__(self, owner: QWidget, overlay: ThresholdOverlay, description: str = "3D surface",
                 rest_ms: int = REST_MS):
        super().__init__(owner)
        self.overlay = overlay
        self.job = LatestJob(owner, description)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(rest_ms))
        self.timer.timeout.connect(self.build)
        self.built = 0                      # meshes swapped in (for tests and benchmarks)
        self.rest_ms = int(rest_ms)
        self._last_move: float | None = None
        self._running: tuple[float, object] | None = None    # (level, data) of the build under way

    @property
    def busy(self) -> bool:
        """True while a mesh is due: the rest timer runs or a build is under way."""
        return self.timer.isActive() or self.job.busy

    def threshold_moved(self) -> None:
        """The threshold (or the soft map, or the mode) changed: build once the slider rests, if in 3D."""
        if not self.overlay.needs_mesh:
            self.timer.stop()
        elif not (self.job.busy and self._is_running(self._wanted())):
            self.timer.start(self._rest())  # restarts: only a resting slider builds
        # else: the mesh being built is the one wanted (e.g. the dock re-applied the same threshold)

    def _rest(self) -> int:
        """The rest (ms) before a build: :attr:`rest_ms`, longer while the moves come slower than that."""
        now = time.perf_counter()
        pace_ms = None if self._last_move is None else (now - self._last_move) * 1000.0
        self._last_move = now
        if pace_ms is None or pace_ms > MAX_REST_MS:
            return self.rest_ms
        return round(min(MAX_REST_MS, max(self.rest_ms, REST_PACE * pace_ms)))

    def _is_running(self, wanted: tuple[float, object] | None) -> bool:
        running = self._running
        return running is not None and wanted is not None and running[0] == wanted[0] and running[1] is wanted[1]

    def _wanted(self) -> tuple[float, object] | None:
        source = self.overlay.source
        return None if source is None else (self.overlay.threshold, source.data)

    def on_ndisplay(self) -> None:
        """2D ↔ 3D: build at once on entering 3D; stop on leaving it."""
        if self.overlay.needs_mesh:
            self.timer.stop()
            self.build()
        else:
            self.cancel()

    def cancel(self) -> None:
        """Drop any pending or running build."""
        self.timer.stop()
        if self.job.busy:
            self.job.cancel()

    def build(self) -> None:
        """Start building the mesh of the current threshold in a worker thread (if one is still needed)."""
        source = self.overlay.mesh_source() if self.overlay.needs_mesh else None
        if source is None:
            return
        level = self.overlay.threshold
        self._running = (level, source.data)
        self.job.start(mesh_work(source, level), lambda mesh: self._on_mesh(mesh, source),
                       message=f"3D surface p = {level:g} …")

    def _on_mesh(self, mesh: Mesh, source: MeshSource) -> None:
        if self.overlay.show_mesh(mesh, source, later=next_turn):
            self.built += 1
        elif self.overlay.needs_mesh and not self.timer.isActive():
            self.timer.start()             # stale (the slider moved on while it was built): build again
