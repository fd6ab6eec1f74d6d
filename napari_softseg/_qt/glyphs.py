"""The canvas' text glyphs, drawn ahead of the first legend that needs them.

napari renders each character of canvas text (the text overlay that carries our legend, the colour bar's
tick labels) the first time it is drawn: Qt rasterises the glyph at 256 pt and a CPU signed-distance pass
shrinks it into the font atlas, 4–6 ms a character on a laptop-class CPU. The first legend holds ~35 new
characters, so the frame that shows it stalled the GUI thread for 0.12–0.30 s on top of the overlay's own
work (measured on the 512 × 512 × 300 case). :func:`warm_glyphs` loads the missing ones one per idle
event-loop turn from the moment a dock opens (the Soft segmentation dock usually comes first, long before
the legend), so no turn holds the GUI for more than ~8 ms and the legend's frame finds them ready. While a
worker thread runs (Predict, a curve, the plot modules' import) it waits: under contention for the GIL a glyph took 0.15-0.25 s.
:func:`when_glyphs_ready` holds the canvas text back until the warm-up is through (at most
:data:`MAX_WAIT_S`): when the Threshold explorer opens straight after Predict its PR-curve worker keeps the
warm-up waiting, and the colour bar and legend drew their ~45 glyphs in their first frames instead
(0.2-0.25 s stalls at the head and the CT-sized case).

The canvas and its font manager are napari internals (``window._qt_viewer.canvas.font_info()``): when they
are not there (another napari, a headless viewer model) nothing is warmed and the text is drawn as before.
"""

from __future__ import annotations

import time
import weakref

from qtpy.QtCore import QThreadPool, QTimer

from napari_softseg._napari.overlay_style import legend_characters
from napari_softseg._qt.plot_preload import preloading
from napari_softseg._qt.qt_helpers import next_turn
from napari_softseg._qt.workers import is_alive
from napari_softseg.analysis.session import unwrapped

#: Glyphs loaded per event-loop turn.
PER_TURN = 1
#: While a worker thread runs, the next glyph waits this long (ms): a glyph's signed-distance pass is a
#: Python loop, and against a busy worker for the GIL one glyph took 0.15 s instead of 5 ms.
BUSY_RETRY_MS = 100
#: How often text held back by :func:`when_glyphs_ready` looks whether its glyphs are there (ms).
POLL_MS = 20

#: The longest the canvas text waits for a warm-up (s; a long job such as training keeps it waiting): after
#: that it is drawn and its missing glyphs are rendered on demand, as napari does.
MAX_WAIT_S = 3.0

_warming: weakref.WeakSet = weakref.WeakSet()     # fonts with a warm-up under way


#: vispy lays out every text by the glyphs of these (capitals with accents, descenders, the space), so the
#: first text drawn renders them too.
LAYOUT_CHARACTERS = "ÅÉÑŐjgpqy "


def canvas_characters() -> str:
    """What our docks put on the canvas: the legend's characters (digits and the point included: the colour
    bar's tick labels) and the ones vispy measures every text with."""
    legend = legend_characters()
    return legend + "".join(ch for ch in LAYOUT_CHARACTERS if ch not in legend)


def warm_canvas_glyphs(viewer) -> int:
    """:func:`warm_glyphs` of :func:`canvas_characters` (each dock calls it when it opens: the first one wins
    and the others find the glyphs there or on their way)."""
    return warm_glyphs(viewer, canvas_characters())


def when_glyphs_ready(viewer, fn, text: str | None = None, owner=None) -> bool:
    """Call ``fn`` once the canvas has the glyphs of ``text`` (default :func:`canvas_characters`): now when
    they are there (or the font cannot be reached), else after the warm-up, or after :data:`MAX_WAIT_S`;
    never once the Qt object ``owner`` (the dock asking) is gone.

    Returns:
        True when ``fn`` was called now.
    """
    font = canvas_font(viewer)
    text = canvas_characters() if text is None else text
    if font is None or not missing_glyphs(font, text):
        fn()
        return True
    warm_glyphs(viewer, text)
    deadline = time.monotonic() + MAX_WAIT_S

    def run() -> None:
        if is_alive(owner):
            fn()

    def check() -> None:
        if not is_alive(owner):
            return
        if not missing_glyphs(font, text) or time.monotonic() >= deadline:
            _release(run)
        else:
            QTimer.singleShot(POLL_MS, check)

    QTimer.singleShot(POLL_MS, check)
    return False


_released: list = []      # text held back and now ready, shown one per turn


def _release(fn) -> None:
    """Run ``fn`` on a turn of its own: the colour bar and the legend wait for the same warm-up, and shown
    together their new canvas overlays made one 0.25 s frame at 512 x 512 x 300."""
    _released.append(fn)
    if len(_released) == 1:
        next_turn(_run_released)


def _run_released() -> None:
    fn = _released[0]
    try:
        fn()
    finally:
        _released.pop(0)
        if _released:
            next_turn(_run_released)


def canvas_font(viewer):
    """The texture font the viewer's canvas draws text with, or None where napari does not expose one."""
    try:
        info = unwrapped(viewer).window._qt_viewer.canvas.font_info()
        return info.font_manager.get_font(info.face)
    except Exception:  # noqa: BLE001 - a napari internal: without it text is drawn on demand as before
        return None


def missing_glyphs(font, text: str) -> str:
    """The characters of ``text`` that ``font`` has not rendered yet (in order, once each)."""
    loaded = getattr(font, "_glyphs", None)
    if loaded is None:
        return ""
    return "".join(dict.fromkeys(ch for ch in text if ch not in "\n\r\t" and ch not in loaded))


def warm_glyphs(viewer, text: str, per_turn: int = PER_TURN) -> int:
    """Render the glyphs of ``text`` the viewer's canvas lacks, ``per_turn`` per event-loop turn.

    Returns:
        How many glyphs were scheduled (0 when all are there, when a warm-up of that font is already
        running, or when the canvas' font cannot be reached).
    """
    font = canvas_font(viewer)
    if font is None or font in _warming:
        return 0
    todo = list(missing_glyphs(font, text))
    if not todo:
        return 0
    _warming.add(font)

    def turn() -> None:
        if QThreadPool.globalInstance().activeThreadCount() or preloading():
            QTimer.singleShot(BUSY_RETRY_MS, turn)      # a prediction, a curve or an import is running: later
            return
        for _ in range(max(1, per_turn)):
            if not todo:
                break
            char = todo.pop(0)
            try:
                font[char]                   # renders it into the atlas (a no-op if a frame did meanwhile)
            except Exception:  # noqa: BLE001 - a glyph the font cannot draw is drawn (or not) as before
                pass
        if todo:
            next_turn(turn)
        else:
            _warming.discard(font)

    next_turn(turn)
    return len(todo)
