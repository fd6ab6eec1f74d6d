"""Run a :class:`~napari_softseg.progress.Progress` generator in a napari worker thread.

Long work in napari-softseg (prediction, training) is a generator that yields ``Progress`` events and
returns its result. :func:`run_progress` runs such a generator in a ``thread_worker`` and gives it

* a napari progress bar (the activity dock / status bar) that follows each ``Progress`` stage,
* a cancel that stops the work between two events and closes the generator *in the worker thread*
  (so the generator's ``finally`` blocks, e.g. a checkpoint write, run where the work ran),
* callbacks on the main (GUI) thread for each event, the result, an error, a cancel and the end,
* safety when the widget or the viewer goes away mid-run: callbacks whose Qt owner has been deleted
  are skipped instead of crashing.

Example (in a widget)::

    from napari_softseg._qt.workers import run_progress

    def _on_predict(self):
        gen = predict_volume(model, image, device=device)       # a Progress generator
        self._task = run_progress(
            gen,
            description="Predict",
            on_progress=lambda ev: self._status.setText(ev.message),
            on_returned=self._add_prediction,                    # gets the generator's return value
            on_finished=self._set_idle,                          # always called last (done, error, cancel)
            owner=self,                                          # callbacks skipped once self is deleted
        )

    def _on_cancel(self):
        self._task.cancel()

Errors: by default an exception from the generator becomes a napari notification
(:func:`~napari_softseg._qt.notifications.notify_exception`); pass ``on_error`` to handle it yourself.
A cancel calls ``on_cancelled`` (default: an info notification "<description>: cancelled"), never
``on_returned``.

Tests can wait for the end with ``qtbot.waitUntil(lambda: not task.running)`` or :meth:`ProgressTask.wait`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress as napari_progress

from napari_softseg._qt.notifications import notify_exception, show_info
from napari_softseg.errors import SoftsegCancelled
from napari_softseg.progress import Progress

__all__ = ["ProgressTask", "run_progress"]


class _Cancelled:
    """Returned by the pump instead of the result when the user cancelled."""


_CANCELLED = _Cancelled()


def _pump(gen: Generator[Progress, None, Any], cancel: threading.Event) -> Generator[Progress, None, Any]:
    """Forward ``gen``'s events; stop and close ``gen`` (in this thread) once ``cancel`` is set."""
    try:
        while True:
            if cancel.is_set():
                return _CANCELLED
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            except SoftsegCancelled:
                return _CANCELLED
            yield event
    finally:
        gen.close()


def is_alive(owner: Any) -> bool:
    """False once ``owner`` (a Qt object) has been deleted on the C++ side."""
    if owner is None:
        return True
    try:
        from qtpy import sip  # PyQt

        return not sip.isdeleted(owner)
    except ImportError:  # pragma: no cover - PySide
        try:
            import shiboken6

            return shiboken6.isValid(owner)
        except ImportError:
            return True
    except TypeError:  # not a Qt object
        return True


class ProgressTask:
    """A running (or finished) progress generator; returned by :func:`run_progress`.

    Attributes:
        worker: The underlying napari ``GeneratorWorker``.
        description: Label of the progress bar.
        result: The generator's return value once it finished normally, else ``None``.
        error: The exception it raised, if any.
        cancelled: True if it stopped because of :meth:`cancel` (or a ``SoftsegCancelled``).
        last_event: The most recent ``Progress`` event.
    """

    def __init__(
        self,
        gen: Generator[Progress, None, Any],
        *,
        description: str,
        on_progress: Callable[[Progress], None] | None = None,
        on_returned: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        owner: Any = None,
        show_bar: bool = True,
    ):
        self.description = description
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.last_event: Progress | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._ended = False  # main-thread view: returned/errored/finished delivered
        self._owner = owner
        self._callbacks = {
            "progress": on_progress,
            "returned": on_returned,
            "error": on_error,
            "cancelled": on_cancelled,
            "finished": on_finished,
        }
        self._show_bar = show_bar
        self._bar: napari_progress | None = None
        self._bar_stage: tuple[str, int | None] | None = None
        self.worker: GeneratorWorker = create_worker(
            _pump, gen, self._cancel, _start_thread=False, _ignore_errors=True
        )
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)

    # -- control ---------------------------------------------------------------------------------
    def start(self) -> ProgressTask:
        """Start the worker thread (done by :func:`run_progress`)."""
        self.worker.start()
        return self

    def cancel(self) -> None:
        """Ask the work to stop after its current step; the generator is closed in its thread."""
        self._cancel.set()

    @property
    def running(self) -> bool:
        """True until the worker finished (normally, with an error, or cancelled)."""
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker thread ended (main-thread callbacks may still be queued).

        Returns:
            True if it ended within ``timeout`` seconds.
        """
        return self._done.wait(timeout)

    # -- callbacks (main thread) ------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> None:
        callback = self._callbacks[name]
        if callback is not None and is_alive(self._owner):
            callback(*args)

    def _update_bar(self, event: Progress) -> None:
        if not self._show_bar or self._ended:
            return
        stage = (event.stage, event.total)
        bar = self._bar
        if bar is None or self._bar_stage != stage:
            self._close_bar()
            # Creating a napari bar may process queued signals (even our own end): use a local name.
            bar = napari_progress(total=event.total, desc=f"{self.description}: {event.stage}")
            if self._ended:
                bar.close()
                return
            self._bar, self._bar_stage = bar, stage
        bar.n = event.step
        if event.message:
            bar.set_description(f"{self.description}: {event.message}")
        bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _on_yielded(self, event: Progress) -> None:
        if self._ended:  # a late event (bar updates can run queued signals): the work is over
            return
        self.last_event = event
        self._call("progress", event)
        self._update_bar(event)

    def _on_returned(self, value: Any) -> None:
        self._ended = True
        if value is _CANCELLED:
            self.cancelled = True
            if self._callbacks["cancelled"] is None:
                show_info(f"{self.description}: cancelled")
            else:
                self._call("cancelled")
            return
        self.result = value
        self._call("returned", value)

    def _on_aborted(self) -> None:
        """napari quit the worker (e.g. the viewer closed): same as a cancel."""
        self._cancel.set()
        gen = getattr(self.worker, "_gen", None)
        if gen is not None:
            gen.close()  # not running any more: runs the work's clean-up (finally blocks) now
        self._on_returned(_CANCELLED)

    def _on_errored(self, exc: BaseException) -> None:
        self._ended = True
        self.error = exc
        if self._callbacks["error"] is None:
            notify_exception(exc, action=self.description)
        else:
            self._call("error", exc)

    def _on_finished(self) -> None:
        self._ended = True
        self._close_bar()
        self._done.set()
        self._call("finished")


def run_progress(
    gen: Generator[Progress, None, Any],
    *,
    description: str,
    on_progress: Callable[[Progress], None] | None = None,
    on_returned: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_cancelled: Callable[[], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    owner: Any = None,
    show_bar: bool = True,
) -> ProgressTask:
    """Run a ``Progress`` generator in a worker thread with a napari progress bar and cancel.

    Args:
        gen: The generator (already created, not started), e.g. ``predict_volume(...)``.
        description: Progress-bar label and prefix of notifications, e.g. ``"Predict"``.
        on_progress: Called with each ``Progress`` on the main thread.
        on_returned: Called with the generator's return value (not on cancel or error).
        on_error: Called with the exception; default: a napari error notification.
        on_cancelled: Called after a cancel; default: an info notification.
        on_finished: Always called last, whatever the outcome (re-enable controls here).
        owner: A QObject (usually the widget); callbacks are skipped once it is deleted, so closing
            the viewer mid-run does not crash.
        show_bar: Show a napari progress bar.

    Returns:
        The started :class:`ProgressTask` (``cancel()``, ``running``, ``result``, ``wait()``).
    """
    task = ProgressTask(
        gen,
        description=description,
        on_progress=on_progress,
        on_returned=on_returned,
        on_error=on_error,
        on_cancelled=on_cancelled,
        on_finished=on_finished,
        owner=owner,
        show_bar=show_bar,
    )
    return task.start()
