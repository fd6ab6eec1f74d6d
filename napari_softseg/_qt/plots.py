"""Small matplotlib plots inside napari docks, coloured from napari's theme.

* :class:`ThemedCanvas` — a ``FigureCanvasQTAgg`` that takes its colours from the viewer's theme (dark,
  light or system) and recolours itself when ``viewer.theme`` changes.
* :class:`PRCurvePlot` — precision against recall; the curve is drawn once per reference, and the
  current operating point is a marker moved by **blitting** (restore the cached background, draw one
  artist, mark that rectangle for the next paint), at most once per ``marker_interval_ms``, and only while
  the plot is in view (scrolled out of the dock's view, it is drawn when it comes back). A slider move
  never redraws the figure; the marker's "t = …" label is drawn once the marker rests (:data:`LABEL_REST_MS`). A model's named operating points are marked and labelled on the curve
  (:meth:`PRCurvePlot.set_named_marks`), and a cohort's pooled curve with its per-case band can be drawn
  behind it (:meth:`PRCurvePlot.set_cohort`).
* :class:`ReliabilityPlot` — the reliability diagram of the calibration widget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy
from superqt.utils import qdebounced, qthrottled

from napari_softseg._qt.qt_helpers import next_turn
from napari_softseg._qt.workers import is_alive

__all__ = ["PRCurvePlot", "PlotColors", "ReliabilityPlot", "ThemedCanvas", "theme_colors"]


@dataclass(frozen=True)
class PlotColors:
    """Colours of one theme, as hex strings."""

    background: str
    text: str
    grid: str
    curve: str
    marker: str
    point: str
    series: tuple[str, ...]
    named: str = "#7bed9f"
    cohort: str = "#c8d6e5"

#: Quiet time (ms) after the last marker move before its "t = …" label is drawn (text costs ~5 ms a draw).
LABEL_REST_MS = 120

# Data colours chosen for contrast on each background (light lines on dark, dark lines on light).
_DATA = {
    "dark": dict(curve="#6cb4ff", marker="#ffd23f", point="#ff6b9a", named="#7bed9f", cohort="#c8d6e5",
                 series=("#ff9f43", "#7bed9f", "#a29bfe", "#ff6b6b", "#48dbfb", "#feca57", "#c8d6e5")),
    "light": dict(curve="#1f5fbf", marker="#d9480f", point="#c2185b", named="#2b8a3e", cohort="#495057",
                  series=("#e67700", "#2b8a3e", "#5f3dc4", "#c92a2a", "#0b7285", "#a61e4d", "#495057")),
}


def theme_colors(theme: str) -> PlotColors:
    """Plot colours for a napari theme name (``"dark"``, ``"light"``, ``"system"`` or a custom theme).

    Background, text and grid come from the theme itself; data colours from its type (dark/light).
    """
    from napari.utils.theme import get_theme

    try:
        t = get_theme(theme)
    except (KeyError, ValueError):
        t = get_theme("dark")
    kind = "light" if getattr(t, "type", "dark") == "light" else "dark"
    return PlotColors(
        background=t.background.as_hex(),
        text=t.text.as_hex(),
        grid=t.highlight.as_hex(),
        **_DATA[kind],
    )


class ThemedCanvas(FigureCanvasQTAgg):
    """A matplotlib canvas coloured like the napari viewer it lives in.

    Args:
        viewer: The napari viewer whose ``theme`` to follow (``None``: dark).
        height: Preferred height in pixels.
    """

    def __init__(self, viewer=None, height: int = 220):
        super().__init__(Figure(figsize=(3.2, height / 100), dpi=100, layout="constrained"))
        self.setMinimumHeight(height)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        self.axes = self.figure.add_subplot()
        self._viewer = viewer
        self.colors = theme_colors(viewer.theme if viewer is not None else "dark")
        if viewer is not None:
            viewer.events.theme.connect(self._on_theme)
        self._style_axes()

    def _on_theme(self, event=None) -> None:
        if self._viewer is not None and is_alive(self):
            self.apply_theme(self._viewer.theme)

    def draw(self) -> None:
        # a draw_idle queued just before the dock was closed may run after Qt deleted the widget
        if is_alive(self):
            super().draw()

    def draw_idle(self) -> None:
        """Queue a redraw on a later turn of the event loop. matplotlib posts it with a zero-delay timer, which
        Qt runs in the same pass as the event that asked for it, so a new dock's first draw (~50-80 ms of
        constrained layout and text) or a curve's landed on the turn that built the dock or took the curve."""
        if not (getattr(self, "_draw_pending", False) or getattr(self, "_is_drawing", False)):
            self._draw_pending = True
            next_turn(self._draw_idle)

    def paintEvent(self, event) -> None:
        # a paint shows the last drawing; it never draws the figure itself (matplotlib's paint does when a draw
        # is pending, e.g. the first paint of a new dock): the pending draw comes on its own turn
        pending = getattr(self, "_draw_pending", False)
        self._draw_pending = False
        try:
            super().paintEvent(event)
        finally:
            self._draw_pending = pending or self._draw_pending

    def apply_theme(self, theme: str) -> None:
        """Recolour the figure for ``theme`` and redraw."""
        self.colors = theme_colors(theme)
        self._style_axes()
        self.restyle_data()
        self.update_legend()
        self.draw_idle()

    def _style_axes(self) -> None:
        c = self.colors
        self.figure.set_facecolor(c.background)
        ax = self.axes
        ax.set_facecolor(c.background)
        for spine in ax.spines.values():
            spine.set_color(c.text)
        ax.tick_params(colors=c.text, labelsize=7)
        ax.xaxis.label.set_color(c.text)
        ax.yaxis.label.set_color(c.text)
        ax.title.set_color(c.text)
        ax.grid(True, color=c.grid, linewidth=0.5, alpha=0.6)

    def legend_handles(self) -> list:
        """Artists to list in the legend (subclasses); none: no legend."""
        return []

    legend_loc = "best"

    def _clear_legends(self) -> None:
        """Remove the axes' legend and any figure legend (before making a new one)."""
        for legend in list(self.figure.legends):
            legend.remove()
        legend = self.axes.get_legend()
        if legend is not None:
            legend.remove()

    def update_legend(self) -> None:
        """(Re)make the legend, so its entries copy the artists' current colours."""
        self._clear_legends()
        handles = self.legend_handles()
        if not handles:
            return
        legend = self.axes.legend(handles=handles, fontsize=6, framealpha=0.7, loc=self.legend_loc)
        legend.get_frame().set_facecolor(self.colors.background)
        legend.get_frame().set_edgecolor(self.colors.grid)
        for text in legend.get_texts():
            text.set_color(self.colors.text)

    def restyle_data(self) -> None:
        """Recolour the data artists after a theme change (subclasses)."""

    def disconnect_viewer(self) -> None:
        """Stop following the viewer's theme (call when the owning widget closes)."""
        if self._viewer is not None:
            self._viewer.events.theme.disconnect(self._on_theme)
            self._viewer = None


class PRCurvePlot(ThemedCanvas):
    """Precision–recall curve with a movable operating-point marker and optional extra points.

    Args:
        viewer: The napari viewer (theme).
        marker_interval_ms: At most one marker repaint per this many milliseconds while dragging.
    """

    legend_loc = "lower left"

    def __init__(self, viewer=None, marker_interval_ms: int = 30):
        super().__init__(viewer)
        ax = self.axes
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        # fixed ticks: the constrained layout measured on one draw holds on the next (auto ticks outside the
        # view, e.g. "−0.2", change width between draws and pushed the axis label off the figure's edge)
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel("sensitivity (recall)", fontsize=8)
        ax.set_ylabel("PPV (precision)", fontsize=8)
        (self.curve_line,) = ax.plot([], [], lw=1.5)
        (self.ticks,) = ax.plot([], [], ls="none", marker="|", ms=6, mew=1.2)
        self.tick_labels: list = []
        (self.points,) = ax.plot([], [], ls="none", marker="*", ms=12, label="you")
        # the cohort's pooled curve and per-case band (behind the case's curve) and the named points
        (self.cohort_line,) = ax.plot([], [], ls="--", lw=1.1, zorder=1.5, label="cohort (pooled)")
        self.cohort_band = None          # a Polygon patch while shown
        (self.named_marks,) = ax.plot([], [], ls="none", marker="D", ms=6, zorder=3, label="named points")
        self.named_labels: list = []
        (self.marker,) = ax.plot([], [], ls="none", marker="o", ms=8, mec="black", animated=True)
        # on a small box of the background colour: readable where it crosses the curve or the grid
        self.marker_label = ax.annotate("", (0, 0), xytext=(6, 6), textcoords="offset points", fontsize=8,
                                        fontweight="bold", animated=True, annotation_clip=False,
                                        bbox=dict(boxstyle="round,pad=0.15", linewidth=0, alpha=0.85))
        self._background = None
        self._tick_boxes: list = []      # the threshold tick labels and marks, (x0, y0, x1, y1) in pixels
        self._label_sizes: dict = {}     # (text length, dpi, font size) -> the marker label's size
        self.restyle_data()
        self.mpl_connect("draw_event", self._on_draw)
        self._blit_throttled = qthrottled(self._blit_marker, timeout=marker_interval_ms, leading=True)
        # the "t = …" label is drawn once the marker rests: its text costs ~5 ms a move (glyphs), more than the
        # marker; while the marker moves the label is off (the dock shows t beside the slider)
        self._label_later = qdebounced(self._blit_label, timeout=LABEL_REST_MS)
        self._label_shown = True
        self._marker_stale = False       # moved while the plot was scrolled out of view (not drawn then)

    def restyle_data(self) -> None:
        c = self.colors
        self.curve_line.set_color(c.curve)
        self.marker.set_color(c.marker)
        self.marker.set_markeredgecolor(c.text)
        self.points.set_color(c.point)
        self.points.set_markeredgecolor(c.text)
        self.ticks.set_color(c.text)
        self.cohort_line.set_color(c.cohort)
        if self.cohort_band is not None:
            self.cohort_band.set_facecolor(c.cohort)
        self.named_marks.set_color(c.named)
        self.named_marks.set_markeredgecolor(c.text)
        for text in self.named_labels:
            text.set_color(c.named)
            text.get_bbox_patch().set_facecolor(c.background)
            text.arrow_patch.set_color(c.named)
        self.marker_label.set_color(c.text)
        self.marker_label.get_bbox_patch().set_facecolor(c.background)
        for text in self.tick_labels:
            text.set_color(c.text)

    def legend_handles(self) -> list:
        handles = [self.points, self.named_marks, self.cohort_line]
        out = [h for h in handles if len(h.get_xdata())]
        return out + ([self.cohort_band] if self.cohort_band is not None else [])

    def set_named_marks(self, marks) -> None:
        """Mark named operating points: ``(name, recall, precision)`` each, labelled with the name; ``[]`` clears.

        Points chosen on one cohort often lie close together on a case's curve, so the labels are not put
        next to their marks: they are stacked in a column inside the curve (down and to the left of the
        marks, where a PR curve leaves the axes empty), the highest mark's label on top, each joined to its
        mark by a thin line. Drawn with the curve (a full redraw; never per slider move).
        """
        for text in self.named_labels:
            text.remove()
        self.named_labels = []
        marks = [(str(n), float(x), float(y)) for n, x, y in marks if np.isfinite(x) and np.isfinite(y)]
        self.named_marks.set_data([m[1] for m in marks], [m[2] for m in marks])
        if marks:
            column = max(0.3, min(m[1] for m in marks) - 0.12)
            top = min(0.95, max(m[2] for m in marks) - 0.08)
            step = 0.075
            if top - step * (len(marks) - 1) < 0.3:          # no room below: stack from the top
                top = 0.95
            for i, (name, x, y) in enumerate(sorted(marks, key=lambda m: -m[2])):
                self.named_labels.append(self.axes.annotate(
                    name, (x, y), xytext=(column, top - step * i), textcoords="data", fontsize=7, ha="right",
                    va="center", color=self.colors.named, annotation_clip=False,
                    bbox=dict(boxstyle="round,pad=0.1", linewidth=0, alpha=0.8, facecolor=self.colors.background),
                    arrowprops=dict(arrowstyle="-", linewidth=0.6, color=self.colors.named, shrinkA=1, shrinkB=3),
                ))
        self.update_legend()
        self.draw_idle()

    def set_cohort(self, recall=(), precision=(), band=None, band_label: str = "") -> None:
        """Draw a cohort's pooled curve (dashed) and its per-case band (``(n, 2)`` polygon vertices) behind the
        case's curve; no arguments clear them."""
        from matplotlib.patches import Polygon

        self.cohort_line.set_data(np.asarray(recall, float), np.asarray(precision, float))
        if self.cohort_band is not None:
            self.cohort_band.remove()
            self.cohort_band = None
        if band is not None and len(band) >= 3:
            self.cohort_band = Polygon(np.asarray(band, float), closed=True, alpha=0.22, linewidth=0, zorder=1,
                                       facecolor=self.colors.cohort, label=band_label or "per-case band")
            self.axes.add_patch(self.cohort_band)
        self.update_legend()
        self.draw_idle()

    def set_axis_labels(self, x: str, y: str) -> None:
        """Name the axes (e.g. "expected sensitivity" for the annotation-free reference)."""
        if self.axes.get_xlabel() != x or self.axes.get_ylabel() != y:
            self.axes.set_xlabel(x, fontsize=8)
            self.axes.set_ylabel(y, fontsize=8)
            self.draw_idle()

    def set_curve(self, recall: np.ndarray, precision: np.ndarray, title: str = "") -> None:
        """Draw a new curve (a full redraw; call when the reference changes, never per slider move).

        A curve on the threshold grid (index ``k`` is ``t = k / (len - 1)``) gets ticks labelled with
        their threshold at t = 0.1, 0.3, 0.5, 0.7, 0.9.
        """
        recall, precision = np.asarray(recall, float), np.asarray(precision, float)
        self.curve_line.set_data(recall, precision)
        for text in self.tick_labels:
            text.remove()
        self.tick_labels = []
        xs, ys = [], []
        if recall.size > 10:
            n = recall.size - 1
            for t in self.TICKS:
                k = int(round(t * n))
                xs.append(recall[k])
                ys.append(precision[k])
                self.tick_labels.append(self.axes.annotate(
                    f"{t:g}", (recall[k], precision[k]), xytext=(-4, -9), textcoords="offset points", fontsize=6,
                    color=self.colors.text, ha="right",
                ))
        self.ticks.set_data(xs, ys)
        self.axes.set_title(title, fontsize=8, color=self.colors.text, wrap=True)   # long references wrap
        self.draw_idle()

    TICKS = (0.1, 0.3, 0.5, 0.7, 0.9)

    def set_points(self, recall, precision) -> None:
        """Extra fixed points (an annotator's mask against the same reference); empty lists clear them."""
        self.points.set_data(np.atleast_1d(recall), np.atleast_1d(precision))
        self.update_legend()
        self.draw_idle()

    def set_marker(self, recall: float, precision: float, label: str = "") -> None:
        """Move the operating-point marker and its label (e.g. ``"t = 0.347"``); a throttled blit."""
        self.marker.set_data([recall], [precision])
        finite = np.isfinite(recall) and np.isfinite(precision)
        self.marker_label.set_text(label if finite else "")
        if finite:
            self.marker_label.xy = (recall, precision)
        self._blit_throttled()

    def _label_places(self) -> list[tuple[float, float, str, str]]:
        """Places for the marker's label, as (x, y offset in points, horizontal and vertical alignment), the
        preferred one first: a corner inside the axes (left of the marker near the right edge, below it near
        the top), then the other corners, then straight above/below/beside it, then all of those farther out."""
        recall, precision = self.marker_label.xy
        sx, sy = (-1 if recall > 0.7 else 1), (-1 if precision > 0.85 else 1)
        places = []
        for d in (6, 14):
            for x, y in ((sx, sy), (-sx, sy), (sx, -sy), (-sx, -sy)):
                places.append((d * x, d * y, "left" if x > 0 else "right", "bottom" if y > 0 else "top"))
            for y in (sy, -sy):
                places.append((0, d * y, "center", "bottom" if y > 0 else "top"))
            for x in (sx, -sx):
                places.append((d * x, 0, "left" if x > 0 else "right", "center"))
        return places

    def _set_label_place(self, place) -> None:
        dx, dy, ha, va = place
        self.marker_label.set_position((dx, dy))
        self.marker_label.set_horizontalalignment(ha)
        self.marker_label.set_verticalalignment(va)

    def _label_size(self, renderer) -> tuple[float, float]:
        """Width and height (pixels) of the marker's label as drawn, with its box.

        Measured once per text length ("t = 0.347" and "t = 0.512" are as wide: figures have one width).
        """
        key = (len(self.marker_label.get_text()), self.figure.dpi, self.marker_label.get_fontsize())
        if key not in self._label_sizes:
            self.marker_label.update_bbox_position_size(renderer)
            box = self.marker_label.get_bbox_patch().get_window_extent(renderer)   # the text and its pad
            self._label_sizes[key] = (box.width, box.height)
        return self._label_sizes[key]

    def place_marker_label(self) -> None:
        """Put the "t = …" label next to the marker where it stays inside the axes and clear of the threshold
        tick labels and marks; if no place is, the one that overlaps them least and stays inside the figure.

        The candidate boxes are computed from the label's size (measured once per text), not laid out one by
        one: a placement costs well under a millisecond per marker repaint.
        """
        label = self.marker_label
        if not label.get_text():
            return
        renderer = self.get_renderer()
        w, h = self._label_size(renderer)
        x, y = self.axes.transData.transform(label.xy)
        px = self.figure.dpi / 72.0                     # offsets are in points
        axes, figure = self.axes.bbox.extents, self.figure.bbox.extents
        best, best_cost = None, None
        for place in self._label_places():
            dx, dy, ha, va = place
            x0 = x + dx * px - {"left": 0.0, "center": w / 2, "right": w}[ha]
            y0 = y + dy * px - {"bottom": 0.0, "center": h / 2, "top": h}[va]
            box = (x0, y0, x0 + w, y0 + h)
            cost = (1000.0 * _outside(box, figure) + _outside(box, axes)
                    + sum(_overlap(box, tick) for tick in self._tick_boxes))
            if best_cost is None or cost < best_cost:
                best, best_cost = place, cost
            if cost == 0:
                break
        self._set_label_place(best)

    def _on_draw(self, event=None) -> None:
        # full redraws exclude the animated marker: keep that picture and put the marker on top
        self._background = self.copy_from_bbox(self.figure.bbox)
        renderer = self.get_renderer()
        # what the marker's label must not cover: the threshold tick labels and the tick marks
        self._tick_boxes = [tuple(text.get_window_extent(renderer).extents)
                            for text in self.tick_labels + self.named_labels]
        xs, ys = self.ticks.get_data()
        for x, y in self.axes.transData.transform(np.column_stack([xs, ys])) if len(xs) else []:
            self._tick_boxes.append((x - 4, y - 5, x + 4, y + 5))
        self.place_marker_label()
        self.figure.draw_artist(self.marker)
        self.figure.draw_artist(self.marker_label)

    def _blit_marker(self, label: bool = False, paint: bool = True) -> None:
        if self._background is None or not is_alive(self) or not self.isVisible():
            return
        self._label_shown = label
        if not label:
            self._label_later()
        if self.visibleRegion().isEmpty():   # scrolled out of the dock's view: drawn when it comes back
            self._marker_stale = True
            return
        self._marker_stale = False
        self.restore_region(self._background)
        self.figure.draw_artist(self.marker)
        if label:
            self.place_marker_label()
            self.figure.draw_artist(self.marker_label)
        # Like FigureCanvasQTAgg.blit, but asking Qt for an *asynchronous* update of the rectangle: a
        # synchronous repaint() makes Qt compose the whole main window (it holds napari's OpenGL canvas)
        # once more per move; update() lets that happen once, together with the canvas repaint.
        if paint:
            self.update()   # the label may reach outside the axes: the whole (small) canvas, asynchronously

    def _blit_label(self) -> None:
        """The marker rests: draw it with its label."""
        self._blit_marker(label=True)

    def paintEvent(self, event) -> None:
        if self._marker_stale:               # moved while out of view: put it where it is now
            self._marker_stale = False
            self._blit_marker(label=self._label_shown, paint=False)     # this paint shows it
        super().paintEvent(event)

    @property
    def label_shown(self) -> bool:
        """Whether the marker's label is on the canvas (it is off while the marker moves)."""
        return self._label_shown

    def flush(self) -> None:
        """Run a pending throttled marker repaint and the label's now (tests, benchmarks)."""
        self._blit_throttled.flush()
        self._label_later.flush()


def _outside(box, frame) -> float:
    """How far (pixels, summed over the four sides) ``box`` reaches out of ``frame`` (both x0, y0, x1, y1)."""
    return (max(0.0, frame[0] - box[0]) + max(0.0, box[2] - frame[2])
            + max(0.0, frame[1] - box[1]) + max(0.0, box[3] - frame[3]))


def _overlap(a, b) -> float:
    """Area (pixels²) shared by two boxes given as (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


class ReliabilityPlot(ThemedCanvas):
    """Reliability diagram: mean target against mean prediction per bin, and the diagonal."""

    legend_loc = "upper left"

    def __init__(self, viewer=None):
        super().__init__(viewer, height=300)
        ax = self.axes
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("observed frequency", fontsize=8)
        (self.diagonal,) = ax.plot([0, 1], [0, 1], ls="--", lw=0.8)
        self.series: list = []
        self.restyle_data()

    def restyle_data(self) -> None:
        c = self.colors
        self.diagonal.set_color(c.grid)
        for i, line in enumerate(self.series):
            color = c.curve if i == 0 else c.series[(i - 1) % len(c.series)]
            line.set_color(color)

    def legend_handles(self) -> list:
        return list(self.series)

    def update_legend(self) -> None:
        """The legend goes below the axes (outside them), so it never covers the curves."""
        self._clear_legends()
        handles = self.legend_handles()
        if not handles:
            return
        legend = self.figure.legend(handles=handles, fontsize=6, loc="outside lower center",
                                    ncol=min(3, len(handles)), frameon=False)
        for text in legend.get_texts():
            text.set_color(self.colors.text)

    def plot(self, curves: list[tuple[str, dict]]) -> None:
        """Draw one line per ``(label, reliability dict)``; the first is drawn thicker (the soft label).

        Bins without voxels are left out of each line.
        """
        for line in self.series:
            line.remove()
        self.series = []
        for i, (label, rel) in enumerate(curves):
            count = np.asarray(rel["count"])
            keep = count > 0
            (line,) = self.axes.plot(
                np.asarray(rel["mean_pred"])[keep], np.asarray(rel["mean_target"])[keep],
                marker="o", ms=4 if i == 0 else 2.5, lw=2.0 if i == 0 else 0.9, label=label,
            )
            self.series.append(line)
        self.restyle_data()
        self.update_legend()
        self.draw_idle()
