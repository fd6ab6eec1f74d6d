"""Recompute off the GUI thread, where only the latest request counts.

The analysis docks rebuild PR curves, leave-one-rater-out tables and disagreement maps when the layers,
the reference or a drawn mask change (0.2–0.5 s per curve at 256³, seconds for several raters). A
:class:`LatestJob` runs that work — a :class:`~napari_softseg.progress.Progress` generator — in a napari
worker thread (:func:`~napari_softseg._qt.workers.run_progress`) and

* numbers each request (a generation counter): a new request cancels the running one (it stops at its
  next ``Progress`` event) and the result of any request but the latest is dropped, so a quick series of
  changes ends with the numbers of the last one;
* reports ``busy`` through :attr:`LatestJob.busy_changed` and a :class:`ComputeStatus` line in the dock
  ("computing …" with a progress bar), so the dock can disable the controls that depend on the result;
* calls the result callback on the GUI thread, and never once the dock has been deleted.

Tests wait with ``qtbot.waitUntil(lambda: widget.ready)``. Setting the environment variable
``NAPARI_SOFTSEG_SYNC=1`` runs every job inline instead (as stardist-napari's ``*_NOTHREADS`` switch
does), for debugging and for scripts without an event loop.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QObject, QThreadPool, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

from napari_softseg._qt.notifications import notify_exception
from napari_softseg._qt.workers import ProgressTask, is_alive, run_progress
from napari_softseg.progress import Progress

#: Environment switch: run the docks' background jobs synchronously.
SYNC_ENV = "NAPARI_SOFTSEG_SYNC"

#: How long the interpreter waits at exit for jobs still running (closing a viewer removes its layers,
#: which can start one); a worker thread that outlives the interpreter would abort it.
EXIT_WAIT_MS = 10000

_started_any = False


def _wait_at_exit() -> None:
    if _started_any:
        QThreadPool.globalInstance().waitForDone(EXIT_WAIT_MS)


def synchronous() -> bool:
    """Whether :data:`SYNC_ENV` asks for inline jobs."""
    return os.environ.get(SYNC_ENV, "").strip().lower() not in ("", "0", "false", "no")


class ComputeStatus(QWidget):
    """A "computing …" line with a small progress bar; hidden while nothing runs."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)  # a long "computing: …" line wraps instead of widening the dock
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(120)
        self.bar.setTextVisible(False)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.bar)
        self.setVisible(False)

    def start(self, message: str) -> None:
        self.label.setText(message)
        self.bar.setRange(0, 0)          # indeterminate until the first event says how many steps
        self.setVisible(True)

    def progress(self, event: Progress) -> None:
        if event.message:
            self.label.setText(f"computing: {event.message} …")
        if event.total:
            self.bar.setRange(0, event.total)
            self.bar.setValue(event.step)

    def stop(self) -> None:
        self.setVisible(False)


class LatestJob(QObject):
    """One background channel of a dock: at most one job runs; only the latest result is delivered.

    Args:
        owner: The dock widget (callbacks are skipped once it is deleted).
        description: Prefix of error notifications, e.g. ``"Threshold explorer"``.
        status: Where to show "computing …" (optional).

    Signals:
        busy_changed(bool): A job started (True) or the latest one ended (False).
    """

    busy_changed = Signal(bool)

    def __init__(self, owner: QWidget, description: str, status: ComputeStatus | None = None):
        super().__init__(owner)
        self.owner = owner
        self.description = description
        self.status = status
        self.generation = 0
        self.busy = False
        self._task: ProgressTask | None = None

    def start(
        self,
        work: Generator[Progress, None, Any],
        on_result: Callable[[Any], None],
        *,
        message: str = "computing …",
        on_error: Callable[[BaseException], None] | None = None,
    ) -> int:
        """Cancel the running job (its result will be dropped) and run ``work``.

        Args:
            work: The Progress generator (created, not started).
            on_result: Called on the GUI thread with the generator's return value, if this is still the
                latest job when it ends.
            message: Shown in the status line until the first progress event.
            on_error: Called with an exception from ``work`` (latest job only); default: a napari
                error notification.

        Returns:
            The job's generation number.
        """
        self.cancel_running()
        self.generation += 1
        generation = self.generation

        def latest() -> bool:
            return generation == self.generation and is_alive(self.owner)

        def returned(value: Any) -> None:
            if latest():
                on_result(value)

        def errored(exc: BaseException) -> None:
            if latest():
                (on_error or self._notify)(exc)

        def finished() -> None:
            if latest():
                self._set_busy(False)

        self._set_busy(True, message)
        global _started_any
        if not _started_any:
            _started_any = True
            atexit.register(_wait_at_exit)
        if synchronous():
            self._run_inline(work, returned, errored, finished)
            return generation
        self._task = run_progress(
            work, description=self.description, on_progress=self._on_progress, on_returned=returned,
            on_error=errored, on_cancelled=lambda: None, on_finished=finished, owner=self.owner,
            show_bar=False,
        )
        return generation

    def cancel(self) -> None:
        """Cancel the running job and drop its result; the channel is idle afterwards."""
        self.cancel_running()
        self.generation += 1
        self._set_busy(False)

    def cancel_running(self) -> None:
        """Ask the running job (if any) to stop at its next progress event."""
        if self._task is not None and self._task.running:
            self._task.cancel()
        self._task = None

    def _run_inline(self, work, returned, errored, finished) -> None:
        try:
            while True:
                try:
                    self._on_progress(next(work))
                except StopIteration as stop:
                    returned(stop.value)
                    break
        except Exception as exc:  # noqa: BLE001 - delivered like a worker's error
            errored(exc)
        finally:
            finished()

    def _on_progress(self, event: Progress) -> None:
        if self.status is not None and is_alive(self.status):
            self.status.progress(event)

    def _notify(self, exc: BaseException) -> None:
        notify_exception(exc, action=self.description)

    def _set_busy(self, busy: bool, message: str = "") -> None:
        if self.status is not None and is_alive(self.status):
            if busy:
                self.status.start(message)
            else:
                self.status.stop()
        if busy != self.busy:
            self.busy = busy
            self.busy_changed.emit(busy)
