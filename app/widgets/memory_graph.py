"""MemoryGraph: one device's used memory over time, against its total and safety reserve.

It reads the sampler's ring buffers (never the driver) and updates one curve with ``setData``.
What ModelDeck has reserved per model is drawn as stacked bands from the bottom, so the gap
between "the allocator thinks" (bands) and "the card says" (the curve) is visible at a glance.
Values are bytes inside; the plot's y axis is GiB, labelled.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.core.units import GiB, format_gib

__all__ = ["MemoryGraph", "TIME_WINDOWS", "DEFAULT_WINDOW_S"]

#: The windows a user can pick, label -> seconds.
TIME_WINDOWS: dict[str, int] = {"1 min": 60, "10 min": 600, "1 h": 3600, "24 h": 86_400}
DEFAULT_WINDOW_S = 600

USED_COLOR = QColor(59, 130, 246)
TOTAL_COLOR = QColor(128, 128, 128)
RESERVE_COLOR = QColor(234, 88, 12)
BAND_COLORS = (
    QColor(16, 185, 129), QColor(168, 85, 247), QColor(245, 158, 11),
    QColor(236, 72, 153), QColor(20, 184, 166), QColor(132, 204, 22),
)
_NICE_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


class _RelativeTimeAxis(pg.AxisItem):
    """Seconds before the newest sample, labelled "-10 min" … "now" (no clock or time zone in it,
    so screenshots are the same everywhere)."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:  # noqa: N802
        span = max(1e-9, maxVal - minVal)
        most = max(2.0, size / 70.0)
        step = next((s for s in _NICE_STEPS_S if span / s <= most), _NICE_STEPS_S[-1])
        return [(float(step), 0.0)]

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        return [_relative_label(v, spacing) for v in values]


def _relative_label(value: float, spacing: float) -> str:
    v = -value
    if abs(v) < 0.5:
        return "now"
    if spacing >= 3600:
        return f"-{v / 3600:g} h"
    if spacing >= 60:
        return f"-{v / 60:g} min"
    return f"-{v:g} s"


def _peak_decimate(x: np.ndarray, y: np.ndarray, width_px: int) -> tuple[np.ndarray, np.ndarray]:
    """At most four points per pixel column: each bin's minimum and maximum (gaps stay gaps).

    pyqtgraph's own peak downsampling does the same per paint; doing it once here, in numpy,
    keeps a 24-hour window (86,400 samples) cheap to hand over.
    """
    bins = 2 * width_px
    n = x.size
    if n <= 2 * bins:
        return x, y
    per = n // bins
    head = n - per * bins  # the oldest few samples that don't fill a bin are dropped
    xs = x[head:].reshape(bins, per)
    ys = y[head:].reshape(bins, per)
    lo = np.fmin.reduce(ys, axis=1)  # ignores NaN unless a whole bin is NaN (a lost GPU: a gap)
    hi = np.fmax.reduce(ys, axis=1)
    out_x = np.repeat(xs[:, per // 2], 2)
    out_y = np.empty(2 * bins)
    out_y[0::2], out_y[1::2] = lo, hi
    return out_x, out_y


class MemoryGraph(QWidget):
    """Used memory of one device over a time window, with total, safety reserve and reserved bands.

    ``key`` is a GPU's :func:`app.core.sampler.device_key`, or ``None`` for the host's RAM.
    Call :meth:`refresh` when a sample arrives (the panel connects it to the bridge); a hidden
    graph only notes that it is stale and catches up when shown.

    Signals:
        sigHoverChanged(str): the hover readout text ("" when the pointer leaves).
    """

    sigHoverChanged = Signal(str)

    def __init__(self, sampler: Any, key: str | None, *, reserve_bytes: int = 0,
                 window_s: int = DEFAULT_WINDOW_S, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._sampler = sampler
        self._key = key
        self._metric = "ram_used_bytes" if key is None else "used_bytes"
        self._reserve_bytes = int(reserve_bytes)
        self._window_s = int(window_s)
        self._total_bytes: float = float("nan")
        self._bands: dict[str, int] = {}
        self._band_items: list[tuple[str, pg.PlotDataItem, pg.TextItem]] = []
        self._x = np.empty(0)
        self._y = np.empty(0)
        self._t_last = float("nan")
        self._stale = True
        self._last_drawn_t = -math.inf
        self._hover_text = ""
        self._y_top = 1.0

        self._plot = pg.PlotWidget(axisItems={"bottom": _RelativeTimeAxis("bottom")})
        self._plot.setMinimumHeight(120)
        item = self._plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setMouseEnabled(x=False, y=False)
        # No showGrid(): measured offscreen, a grid costs ~10 ms per 1200x400 frame, the rest ~0.5 ms.
        item.setLabel("left", "GiB")
        item.setContentsMargins(0, 8, 8, 0)  # room for the top tick label and the "now" tick
        item.getAxis("left").setWidth(44)
        # The legend sits above the plot, not in it: inside, it covered the lines of short graphs.
        self.legend_label = QLabel()
        self.legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.legend_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.legend_label.setToolTip("used: measured by the driver · total: the device's memory · "
                                     "safety reserve: kept free by ModelDeck · filled bands: what ModelDeck booked")

        # A line, not a filled area: filling 24 h of points cost ~15 ms a frame, and the filled
        # areas are kept for what the allocator reserved, so "measured" and "booked" look different.
        self._used = item.plot(pen=pg.mkPen(USED_COLOR, width=1), connect="finite")
        self._used.setZValue(10)
        # On the curve (PlotDataItem): its keyword is method=; PlotItem's is mode=.
        self._used.setDownsampling(auto=True, method="peak")
        self._used.setClipToView(True)
        self._total = item.plot(pen=pg.mkPen(TOTAL_COLOR, width=1, style=Qt.PenStyle.DashLine))
        self._reserve = item.plot(pen=pg.mkPen(RESERVE_COLOR, width=1, style=Qt.PenStyle.DotLine))
        self._cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(TOTAL_COLOR, width=1))
        self._cursor.setVisible(False)
        self._cursor.setZValue(20)
        item.addItem(self._cursor, ignoreBounds=True)
        self._readout = pg.TextItem(anchor=(1, 0))
        self._readout.setVisible(False)
        self._readout.setZValue(30)
        item.addItem(self._readout, ignoreBounds=True)
        self._plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.legend_label)
        layout.addWidget(self._plot)
        self._apply_palette()
        self._set_x_range()

    # --- public ------------------------------------------------------------------------------
    @property
    def key(self) -> str | None:
        return self._key

    @property
    def window_s(self) -> int:
        return self._window_s

    def set_window(self, seconds: int) -> None:
        """Show the last ``seconds`` (60, 600, 3600 or 86400 in the UI; any positive value works)."""
        if seconds <= 0:
            raise ValueError(f"a time window must be positive, got {seconds}")
        self._window_s = int(seconds)
        self._set_x_range()
        self._draw_static()
        self._stale = True
        self._last_drawn_t = -math.inf
        self.refresh()

    def set_reserve(self, reserve_bytes: int) -> None:
        """The safety reserve kept free on this device (drawn as a line below the total)."""
        self._reserve_bytes = int(reserve_bytes)
        self._draw_static()

    def set_reserved(self, bands: dict[str, int]) -> None:
        """What ModelDeck has reserved per model (bytes), stacked from the bottom and labelled on
        the band itself (the legend stays three entries wide so it never covers the lines).

        Changes rarely (on load or evict), so items are rebuilt here rather than per sample.
        """
        clean = {str(k): int(v) for k, v in bands.items() if v > 0}
        if clean == self._bands:
            return
        self._bands = clean
        item = self._plot.getPlotItem()
        for _name, curve, label in self._band_items:
            item.removeItem(curve)
            item.removeItem(label)
        self._band_items = []
        for i, (name, size) in enumerate(clean.items()):
            color = QColor(BAND_COLORS[i % len(BAND_COLORS)])
            brush = QColor(color)
            brush.setAlpha(90)
            curve = pg.PlotDataItem(pen=pg.mkPen(color, width=1), brush=brush)  # no name: not in the legend
            curve.setZValue(1)
            label = pg.TextItem(f"{name} {format_gib(size)}", anchor=(0, 0.5), color=self._text_color())
            label.setZValue(2)
            item.addItem(curve)
            item.addItem(label, ignoreBounds=True)
            self._band_items.append((name, curve, label))
        self._draw_static()

    @property
    def reserved(self) -> dict[str, int]:
        return dict(self._bands)

    def refresh(self) -> None:
        """Redraw from the sampler's history (cheap when hidden: it only marks itself stale)."""
        self._stale = True
        if not self.isVisible():
            return
        self._redraw()

    def latest_used_bytes(self) -> float:
        return float(self._y[-1] * GiB) if self._y.size else float("nan")

    @property
    def total_bytes(self) -> float:
        return self._total_bytes

    def plot_widget(self) -> pg.PlotWidget:
        return self._plot

    def readout_at(self, x_rel_s: float) -> str:
        """The hover text for a point ``x_rel_s`` seconds before the newest sample ("" when none)."""
        if self._x.size == 0:
            return ""
        i = int(np.clip(np.searchsorted(self._x, x_rel_s), 0, self._x.size - 1))
        if i > 0 and abs(self._x[i - 1] - x_rel_s) < abs(self._x[i] - x_rel_s):
            i -= 1
        t = self._t_last + float(self._x[i])
        value = self._y[i]
        stamp = time.strftime("%H:%M:%S", time.localtime(t))
        used = "no reading" if not np.isfinite(value) else f"{value:.2f} GiB used"
        return f"{stamp} ({_relative_label(float(self._x[i]), 1.0)})\n{used}"

    # --- drawing -------------------------------------------------------------------------------
    def _redraw(self, force: bool = False) -> None:
        sampler = self._sampler
        interval = max(0.1, float(getattr(sampler, "interval_s", 1.0)))
        # Long windows gain nothing from a redraw per sample: one pixel holds many samples.
        width = max(100, self._plot.width())
        min_gap = self._window_s / width * 0.5
        latest = sampler.latest
        if latest is not None and not force and latest.timestamp - self._last_drawn_t < min_gap:
            return
        n = int(self._window_s / interval) + 2
        try:
            t, used = sampler.window(self._key, self._metric, n)
        except KeyError:
            t, used = np.empty(0), np.empty(0)
        total = self._read_total()
        if t.size:
            t_last = float(t[-1])
            keep = t >= t_last - self._window_s
            self._x = t[keep] - t_last
            self._y = used[keep] / GiB
            self._t_last = t_last
        else:
            self._x, self._y = np.empty(0), np.empty(0)
        x, y = _peak_decimate(self._x, self._y, max(100, self._plot.width()))
        self._used.setData(x, y, connect="finite")
        self._last_drawn_t = self._t_last if t.size else -math.inf
        self._stale = False
        if total != self._total_bytes and not (math.isnan(total) and math.isnan(self._total_bytes)):
            self._total_bytes = total
            self._draw_static()

    def _read_total(self) -> float:
        latest = self._sampler.latest
        if latest is None:
            return float("nan")
        if self._key is None:
            return float(latest.host.total_bytes) or float("nan")
        from app.core.sampler import device_key

        gpu = next((g for g in latest.gpus if device_key(g) == self._key), None)
        if gpu is not None and not gpu.lost:
            return float(gpu.total_bytes)
        if math.isfinite(self._total_bytes):
            return self._total_bytes
        try:  # lost now: the last size the history knows
            _, totals = self._sampler.window(self._key, "total_bytes", int(self._window_s) + 2)
        except KeyError:
            return float("nan")
        finite = totals[np.isfinite(totals)]
        return float(finite[-1]) if finite.size else float("nan")

    def _draw_static(self) -> None:
        """Total and reserve lines, reserved bands and the y range: they change rarely."""
        x = np.array([-float(self._window_s), 0.0])
        total = self._total_bytes
        item = self._plot.getPlotItem()
        if math.isfinite(total) and total > 0:
            self._total.setData(x, np.full(2, total / GiB))
            reserve_y = max(0.0, total - self._reserve_bytes) / GiB
            if self._reserve_bytes:
                self._reserve.setData(x, np.full(2, reserve_y))
            else:
                self._reserve.setData([], [])
            top = total / GiB
        else:
            self._total.setData([], [])
            self._reserve.setData([], [])
            top = float(np.nanmax(self._y)) if self._y.size and np.isfinite(self._y).any() else 1.0
        bottom = 0.0
        for name, curve, label in self._band_items:
            upper = bottom + self._bands.get(name, 0) / GiB
            curve.setData(x, np.full(2, upper), fillLevel=bottom)
            label.setPos(-0.98 * self._window_s, (bottom + upper) / 2)
            bottom = upper
        top = max(top, bottom)
        self._y_top = top * 1.25 if top > 0 else 1.0
        item.setYRange(0.0, self._y_top, padding=0)
        self._place_band_labels()

    def _place_band_labels(self) -> None:
        """Label a band only where it is tall enough to hold its text (thin ones keep the colour)."""
        px_per_gib = self._plot.getPlotItem().getViewBox().height() / max(self._y_top, 1e-9)
        last_y = -math.inf
        bottom = 0.0
        for name, _curve, label in self._band_items:
            height = self._bands.get(name, 0) / GiB
            middle_px = (bottom + height / 2) * px_per_gib
            fits = height * px_per_gib >= 13 and middle_px - last_y >= 13
            label.setVisible(fits)
            if fits:
                last_y = middle_px
            bottom += height

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._band_items:
            self._place_band_labels()

    def _set_x_range(self) -> None:
        self._plot.getPlotItem().setXRange(-float(self._window_s), 0.0, padding=0.01)

    # --- hover ---------------------------------------------------------------------------------
    def _on_mouse_moved(self, pos: QPointF) -> None:
        vb = self._plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos) or self._x.size == 0:
            self._set_hover("")
            return
        point = vb.mapSceneToView(pos)
        text = self.readout_at(point.x())
        self._cursor.setPos(point.x())
        (x0, x1), (_, y1) = vb.viewRange()
        self._readout.setPos(max(point.x(), x0 + 0.25 * (x1 - x0)), y1)
        self._set_hover(text)

    def _set_hover(self, text: str) -> None:
        if text == self._hover_text:
            return
        self._hover_text = text
        self._cursor.setVisible(bool(text))
        self._readout.setVisible(bool(text))
        self._readout.setText(text)
        self.sigHoverChanged.emit(text)

    def leaveEvent(self, event: QEvent) -> None:  # noqa: N802
        self._set_hover("")
        super().leaveEvent(event)

    # --- theme and visibility ------------------------------------------------------------------
    def _text_color(self) -> QColor:
        return self.palette().color(QPalette.ColorRole.Text)

    def _apply_palette(self) -> None:
        """Follow the host's palette: pyqtgraph's own defaults are process-wide and black."""
        pal = self.palette()
        base, text = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        self._plot.setBackground(base)
        item = self._plot.getPlotItem()
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(text, width=1))
            axis.setTextPen(pg.mkPen(text, width=1))
        self.legend_label.setText(
            f'<span style="color:{USED_COLOR.name()}">━━</span> used &nbsp; '
            f'<span style="color:{TOTAL_COLOR.name()}">╌╌</span> total &nbsp; '
            f'<span style="color:{RESERVE_COLOR.name()}">┈┈</span> safety reserve&nbsp;')
        legend_bg = QColor(base)
        legend_bg.setAlpha(200)
        self._readout.setColor(text)
        self._readout.fill = pg.mkBrush(legend_bg)
        for _name, _curve, label in self._band_items:
            label.setColor(text)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        if self._stale:
            self._redraw(force=True)
