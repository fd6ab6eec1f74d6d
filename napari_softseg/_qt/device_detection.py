"""The compute devices the Soft segmentation dock offers, found without freezing the viewer.

Listing the devices (``available_devices``) and resolving ``auto`` need torch, whose first import takes
1–4 s. :class:`DeviceDetector` does that once per dock in a worker thread (a
:class:`~napari_softseg._qt.background.LatestJob`), so the dock opens at once: until the answer arrives the
device box offers ``auto`` and ``cpu`` (``cpu`` needs no torch) and the dock says "detecting …"; a Predict
started meanwhile with ``auto`` resolves the device in its own worker. When torch is already imported the
detection is cheap and runs inline. With ``NAPARI_SOFTSEG_SYNC=1`` it runs inline too. The worker imports
torch's libraries with the GIL released first (:mod:`~napari_softseg.model.torch_libs`), then the plot docks'
modules (matplotlib), then torch, so the dock's background imports run one after the other.

Tests wait with ``qtbot.waitUntil(lambda: not detector.pending)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QWidget

from napari_softseg._qt.background import LatestJob
from napari_softseg._qt.plot_preload import import_plots, plots_imported
from napari_softseg._qt.qt_helpers import next_turn
from napari_softseg._qt.workers import is_alive
from napari_softseg.model.device import DeviceChoice, available_devices, resolve_device
from napari_softseg.model.torch_libs import preload_torch_libraries
from napari_softseg.progress import Progress, drive

#: What the device box offers before the detection has answered (neither needs torch).
PROVISIONAL = ["auto", "cpu"]


def torch_imported() -> bool:
    """Whether torch is imported already (then the detection is cheap and runs inline)."""
    return "torch" in sys.modules


def detect_devices(with_plots: bool = False) -> Generator[Progress, None, tuple[list[str], DeviceChoice]]:
    """The device names for the dropdown and what ``auto`` resolves to (imports torch).

    ``with_plots`` (in a worker): import the plot docks' modules first (:mod:`~napari_softseg._qt.plot_preload`),
    in this thread: two importing threads and a Predict started meanwhile fought the GUI thread for the GIL
    (a 0.23 s stall at Predict's start on a whole head).
    """
    yield Progress("devices", 0, 1, "detecting compute devices")
    # libtorch loaded with the GIL released, first: while it loads it holds the dynamic loader's lock, and an
    # extension module imported meanwhile by another thread (matplotlib's) would wait for it holding the GIL
    preload_torch_libraries()
    if with_plots and not plots_imported():
        import_plots()
    return available_devices(), resolve_device("auto")


class DeviceDetector(QObject):
    """Finds the devices once, off the GUI thread unless torch is already imported.

    Args:
        owner: The dock (the result is dropped once it is deleted).
        on_detected: Called on the GUI thread once :attr:`names` and :attr:`auto` are known.
    """

    def __init__(self, owner: QWidget, on_detected: Callable[[], None]):
        super().__init__(owner)
        self.job = LatestJob(owner, "Soft segmentation: devices")
        self.on_detected = on_detected
        self.names: list[str] | None = None
        self.auto: DeviceChoice | None = None

    @property
    def pending(self) -> bool:
        """True until the device list is known."""
        return self.names is None

    def start(self) -> None:
        """Detect the devices (inline when torch is imported already, else in a worker, from the next turn
        of the event loop: torch's import holds the GIL for 0.15-0.2 s at a time, and begun while the dock
        was still being laid out and drawn it stretched that turn to 0.27 s on a whole head)."""
        if torch_imported():
            self._done(drive(detect_devices()))
        else:
            next_turn(self._start_worker)

    def _start_worker(self) -> None:
        if not is_alive(self):           # the dock was closed before the turn came
            return
        self.job.start(detect_devices(with_plots=True), self._done, message="detecting devices …",
                       on_error=self._failed)

    def _done(self, result: tuple[list[str], DeviceChoice]) -> None:
        self.names, self.auto = list(result[0]), result[1]
        self.on_detected()

    def _failed(self, exc: BaseException) -> None:
        self._done((list(PROVISIONAL), DeviceChoice("cpu", f"device detection failed ({exc}); using CPU")))
