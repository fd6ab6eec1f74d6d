"""Small Qt helpers the docks share: quiet updates, session signals tied to a widget's life, shrinkable combos.

* :class:`signals_blocked` — set widgets' values without firing their change signals (a ``with`` block).
* :func:`connect_while_alive` — connect a psygnal signal of the viewer's shared session to a dock's slot
  until the dock is destroyed.
* :func:`relax_combos` — let combo boxes shrink below their longest entry, so no dock is forced wider
  than its column.
* :func:`next_turn` — call a function on a later turn of the event loop, after the input and timers
  that are waiting (what work split into pieces uses between its pieces).
"""

from __future__ import annotations

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QComboBox, QWidget


class signals_blocked:  # noqa: N801 - used like a function: ``with signals_blocked(a, b):``
    """Block the Qt signals of some widgets inside a ``with`` block (restored even on error).

    Example:
        ``with signals_blocked(self.combo, self.spin): self.combo.setCurrentIndex(2)``
    """

    def __init__(self, *widgets):
        self.widgets = widgets

    def __enter__(self):
        for w in self.widgets:
            w.blockSignals(True)
        return self

    def __exit__(self, *exc):
        for w in self.widgets:
            w.blockSignals(False)


#: Delay of :func:`next_turn` (ms). Not 0: Qt runs a zero-delay single shot as a posted event, and posted
#: events posted while posted events are handled run in the same pass, before timers and input; a chain of
#: zero-delay pieces then holds the GUI thread for the sum of two or more pieces (measured: a 10 ms
#: heartbeat missed every other 20 ms piece with 0, none with 1).
TURN_MS = 1


def next_turn(fn) -> None:
    """Call ``fn`` on a later turn of the event loop, once waiting input, timers and repaints have run."""
    QTimer.singleShot(TURN_MS, fn)


def connect_while_alive(widget: QObject, signal, slot) -> None:
    """Connect a psygnal ``signal`` of the session to ``slot`` until ``widget`` is destroyed."""
    signal.connect(slot)
    widget.destroyed.connect(lambda *_: signal.disconnect(slot))


def relax_combos(root: QWidget, min_chars: int = 10) -> None:
    """Let every combo box under ``root`` shrink below its longest entry (elided), so no dock is forced
    wider than its column; the full text stays in the drop-down list and the tooltip."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(min_chars)
