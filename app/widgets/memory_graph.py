"""MemoryGraph: one device's used memory over time, against its total and safety reserve.

It draws the profile it is handed (:meth:`MemoryGraph.refresh`) with the sampler's ring buffers
for the history (never the driver), updating one curve with ``setData``. What ModelDeck booked per
model is drawn as stacked bands from the bottom, *as history*: a band starts when a model is booked
and ends when it goes, a changed booking is a step, and the past stays when a model expires. So the
gap between "the allocator booked" (bands) and "the card says" (the curve) is visible at any time.
Values are bytes inside; the plot's y axis is GiB, labelled.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QPalette, QResizeEvent, QShowEvent
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.booking_history import BookingHistory, BookingInterval, StackedBookings, stack
from app.core.sampler import device_key
from app.core.units import GiB, format_gib
from app.widgets.ports import ManagerPort, SamplerPort

__all__ = ["MemoryGraph", "TIME_WINDOWS", "DEFAULT_WINDOW_S"]

#: The windows a user can pick, label -> seconds.
TIME_WINDOWS: dict[str, int] = {"1 min": 60, "10 min": 600, "1 h": 3600, "24 h": 86_400}
DEFAULT_WINDOW_S = 600
#: The time axis spans whole minutes, at least one, while less history than the window exists.
SHORTEST_SPAN_S = 60

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


def _make_plot() -> pg.PlotWidget:
    plot = pg.PlotWidget(axisItems={"bottom": _RelativeTimeAxis("bottom")})
    plot.setMinimumHeight(120)
    item = plot.getPlotItem()
    item.setMenuEnabled(False)
    item.hideButtons()
    item.setMouseEnabled(x=False, y=False)
    # No showGrid(): measured offscreen, a grid costs ~10 ms per 1200x400 frame, the rest ~0.5 ms.
    item.setLabel("left", "GiB")
    item.setContentsMargins(0, 8, 8, 0)  # room for the top tick label and the "now" tick
    item.getAxis("left").setWidth(44)
    return plot


def _readout(t: float, x: float, used_gib: float, stacked: StackedBookings | None, booked: dict[str, int]) -> str:
    """Hover text: the time, what was in use, and what was booked then, per booking (top first)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(t))
    used = "no reading" if not np.isfinite(used_gib) else f"{used_gib:.2f} GiB used"
    if booked and stacked is not None:
        names = dict(zip(stacked.keys, stacked.labels, strict=True))
        used += f"\n{format_gib(sum(booked.values()))} booked" + "".join(
            f"\n  {names[k]} {format_gib(v)}" for k, v in reversed(booked.items()))
    return f"{stamp} ({_relative_label(x, 1.0)})\n{used}"


class _Hover:
    """The hover cursor (a vertical line) and its readout box."""

    def __init__(self, item: pg.PlotItem) -> None:
        self.text = ""
        self.cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(TOTAL_COLOR, width=1))
        self.readout = pg.TextItem(anchor=(1, 0))
        for z, part in ((20, self.cursor), (30, self.readout)):
            part.setVisible(False)
            part.setZValue(z)
            item.addItem(part, ignoreBounds=True)

    def set_palette(self, text: QColor, base: QColor) -> None:
        background = QColor(base)
        background.setAlpha(200)
        self.readout.setColor(text)
        self.readout.fill = pg.mkBrush(background)

    def place(self, x: float, readout_x: float, top: float) -> None:
        self.cursor.setPos(x)
        self.readout.setPos(readout_x, top)

    def show(self, text: str) -> bool:
        """Show ``text`` ("" hides); False when it was already shown."""
        if text == self.text:
            return False
        self.text = text
        self.cursor.setVisible(bool(text))
        self.readout.setVisible(bool(text))
        self.readout.setText(text)
        return True


def _blend(color: QColor, base: QColor, alpha: float) -> QColor:
    """``color`` over ``base`` at ``alpha``, as one opaque colour: stacked fills then never mix."""
    mix = [round(alpha * a + (1 - alpha) * b) for a, b in
           zip((color.red(), color.green(), color.blue()), (base.red(), base.green(), base.blue()), strict=True)]
    return QColor(*mix)


class _BookingBands:
    """The stacked booking bands of one plot: per booking, one filled step curve and one label.

    Each band's curve is the *cumulative* top of the stack, filled down to zero with an opaque colour
    and drawn behind the bands below it, so each visible area is one booking's own bytes.

    The curves are built in seconds from an ``origin`` (the time they were built), with bookings
    still open drawn a quarter window into the future; as time passes each redraw only moves the
    items left (``setPos``), and they are built again when the history or window changes or a
    quarter window has passed.
    """

    LABEL_MIN_PX = 13
    LABEL_MIN_WIDTH_PX = 40

    def __init__(self, item: pg.PlotItem) -> None:
        self._item = item
        self._items: dict[str, tuple[pg.PlotDataItem, pg.TextItem]] = {}
        self._colors: dict[str, QColor] = {}
        self._text = QColor(0, 0, 0)
        self._base = QColor(255, 255, 255)
        self.stacked: StackedBookings | None = None
        self.now = 0.0
        self._origin = 0.0
        self._built: tuple[object, float] | None = None
        self._top = 0.0
        #: Key -> the segment its label describes (its newest one in the window), where that run starts
        #: and ends, and where its label sits (seconds from the origin, GiB).
        self._label_at: dict[str, int] = {}
        self._label_run: dict[str, tuple[float, float]] = {}
        self._label_pos: dict[str, tuple[float, float]] = {}

    @property
    def labels(self) -> dict[str, pg.TextItem]:
        return {k: label for k, (_curve, label) in self._items.items()}

    @property
    def curves(self) -> dict[str, pg.PlotDataItem]:
        return {k: curve for k, (curve, _label) in self._items.items()}

    def set_palette(self, text: QColor, base: QColor) -> None:
        self._text, self._base = QColor(text), QColor(base)
        for key, (curve, label) in self._items.items():
            curve.setBrush(_blend(self._colors[key], self._base, 0.4))
            label.setColor(self._text)

    def draw(self, history: tuple[BookingInterval, ...], now: float, window_s: float) -> tuple[float, bool]:
        """Show ``history`` with ``now`` at x = 0: (the top of the stack in GiB, whether it was rebuilt
        so that its labels need placing)."""
        self.now = now
        built = self._built
        rebuild = (built is None or built[0] is not history or built[1] != window_s
                   or not self._origin <= now <= self._origin + window_s / 4)
        if rebuild:
            self._build(history, now, window_s)
        shift = self._origin - now
        for key, (curve, label) in self._items.items():
            curve.setPos(shift, 0)
            if key in self._label_pos:
                x, y = self._label_pos[key]
                label.setPos(x + shift, y)
        return self._top, rebuild

    def _build(self, history: tuple[BookingInterval, ...], now: float, window_s: float) -> None:
        self._built, self._origin = (history, window_s), now
        stacked = self.stacked = stack(history, now - window_s, now + window_s / 4)
        for key in [k for k in self._items if k not in stacked.keys]:
            curve, label = self._items.pop(key)
            self._item.removeItem(curve)
            self._item.removeItem(label)
        self._label_at, self._label_pos = {}, {}
        if stacked.edges.size < 2 or not stacked.keys:
            self._top = 0.0
            return
        x = np.repeat(stacked.edges - now, 2)[1:-1]
        for k, key in enumerate(stacked.keys):
            curve, label = self._items.get(key) or self._add(key, len(stacked.keys) - k)
            curve.setZValue(1 + len(stacked.keys) - k)  # lower bands paint over the ones above them
            curve.setData(x, np.repeat(stacked.tops[k] / GiB, 2), fillLevel=0.0)
            self._place_label(k, key, label, window_s)
        self._top = float(stacked.tops[-1].max() / GiB)

    def _add(self, key: str, z: int) -> tuple[pg.PlotDataItem, pg.TextItem]:
        used = {c.rgb() for c in self._colors.values()}
        color = next((c for c in BAND_COLORS if c.rgb() not in used), BAND_COLORS[len(self._colors) % len(BAND_COLORS)])
        self._colors[key] = QColor(color)
        curve = pg.PlotDataItem(pen=None, brush=_blend(color, self._base, 0.4))  # no name: not in the legend
        label = pg.TextItem("", anchor=(0, 0.5), color=self._text)
        label.setZValue(5)
        self._item.addItem(curve)
        self._item.addItem(label, ignoreBounds=True)
        self._items[key] = (curve, label)
        return curve, label

    def _place_label(self, k: int, key: str, label: pg.TextItem, window_s: float) -> None:
        """Where the booking's newest run in the window starts: :meth:`fit_labels` places it."""
        stacked = self.stacked
        assert stacked is not None
        active = np.flatnonzero(stacked.own[k] > 0)
        if active.size == 0:
            self._label_at.pop(key, None)
            return
        last = int(active[-1])
        first = last
        while first > 0 and stacked.own[k, first - 1] > 0:
            first -= 1
        self._label_at[key] = last
        # Seconds from the origin; far enough from the left edge to stay in view until the next build.
        self._label_run[key] = (max(float(stacked.edges[first] - self._origin), -0.75 * window_s),
                                min(float(stacked.edges[last + 1] - self._origin), 0.0))

    def fit_labels(self, px_per_gib: float, px_per_s: float) -> None:
        """A label shows on its band's newest run where the run is tall and wide enough to hold it:
        the name and bytes, else the name cut with "…"; a band too small keeps only its colour (the
        hover readout names it)."""
        stacked = self.stacked
        last_y = -math.inf
        for k, key in enumerate(stacked.keys if stacked else ()):
            label = self._items[key][1]
            s = self._label_at.get(key)
            if s is None or stacked is None:
                label.setVisible(False)
                continue
            height = stacked.own[k, s] / GiB * px_per_gib
            middle = (stacked.tops[k, s] / GiB) * px_per_gib - height / 2
            x0, x1 = self._label_run[key]
            room = (x1 - x0) * px_per_s - 8
            metrics = QFontMetrics(label.textItem.font())
            text = f"{stacked.labels[k]} {format_gib(int(stacked.own[k, s]))}"
            if metrics.horizontalAdvance(text) + 4 > room:
                text = metrics.elidedText(stacked.labels[k], Qt.TextElideMode.ElideRight, int(room) - 4)
            fits = (height >= self.LABEL_MIN_PX and middle - last_y >= self.LABEL_MIN_PX
                    and room >= self.LABEL_MIN_WIDTH_PX and text not in ("", "…"))
            label.setText(text)
            label.setVisible(bool(fits))
            if not fits:
                continue
            last_y = middle
            self._label_pos[key] = (x0 + 4 / max(px_per_s, 1e-9), (stacked.tops[k, s] - stacked.own[k, s] / 2) / GiB)
            label.setPos(self._label_pos[key][0] + self._origin - self.now, self._label_pos[key][1])


class MemoryGraph(QWidget):
    """Used memory of one device over a time window, with total, safety reserve and booking bands.

    ``key`` is a GPU's :func:`app.core.sampler.device_key`, or ``None`` for the host's RAM. Call
    :meth:`refresh` with each new profile (the panel connects it to the bridge's ``sigSampled``); a
    hidden graph only keeps the profile and draws it when shown. With a ``manager`` the bands are its
    :meth:`booking_history` for ``device`` (``cuda:N`` or ``cpu``); without one, the graph keeps the
    history of what :meth:`set_reserved` was given.

    Signals:
        sigHoverChanged(str): the hover readout text ("" when the pointer leaves).
    """

    sigHoverChanged = Signal(str)

    def __init__(self, sampler: SamplerPort, key: str | None, *, reserve_bytes: int = 0,
                 window_s: int = DEFAULT_WINDOW_S, manager: ManagerPort | None = None, device: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._sampler = sampler
        self._key = key
        self._metric = "ram_used_bytes" if key is None else "used_bytes"
        self._manager = manager
        self._device = device or ("cpu" if key is None else None)
        self._local = BookingHistory() if manager is None else None
        self._history: tuple[BookingInterval, ...] = ()
        self._reserve_bytes = int(reserve_bytes)
        self._window_s = int(window_s)
        self._total_bytes: float = float("nan")
        self._bands: dict[str, int] = {}
        self._bands_top = 0.0
        self._x = np.empty(0)
        self._shown_s = 0
        self._y = np.empty(0)
        self._t_last = float("nan")
        self._profile: HardwareProfile | None = sampler.latest
        #: The sample time drawn last: the graph is stale while its profile is newer (the one flag).
        self._drawn_t = -math.inf
        self._y_top = 1.0

        self._plot = _make_plot()
        item = self._plot.getPlotItem()
        # The legend sits above the plot, not in it: inside, it covered the lines of short graphs.
        self.legend_label = QLabel()
        self.legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.legend_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.legend_label.setToolTip("used: measured by the driver · total: the device's memory · "
                                     "safety reserve: kept free by ModelDeck · filled bands: what ModelDeck "
                                     "booked per model, from when it was booked until it went")
        # A line, not a filled area: filling 24 h of points cost ~15 ms a frame, and the filled
        # areas are kept for what the allocator booked, so "measured" and "booked" look different.
        self._used = item.plot(pen=pg.mkPen(USED_COLOR, width=1), connect="finite")
        self._used.setZValue(10)
        # On the curve (PlotDataItem): its keyword is method=; PlotItem's is mode=.
        self._used.setDownsampling(auto=True, method="peak")
        self._used.setClipToView(True)
        self._total = item.plot(pen=pg.mkPen(TOTAL_COLOR, width=1, style=Qt.PenStyle.DashLine))
        self._reserve = item.plot(pen=pg.mkPen(RESERVE_COLOR, width=1, style=Qt.PenStyle.DotLine))
        self._total.setZValue(9)
        self._reserve.setZValue(9)
        self._bands_view = _BookingBands(item)
        self._hover = _Hover(item)
        self._plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.legend_label)
        layout.addWidget(self._plot)
        self._apply_palette()
        self._set_x_range()
        if manager is not None:
            self._load_history()

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
        self._load_history()
        self._drawn_t = -math.inf
        self.refresh(self._profile)

    def set_reserve(self, reserve_bytes: int) -> None:
        """The safety reserve kept free on this device (drawn as a line below the total); with a manager,
        the graph also reads it from the manager whenever the bookings change."""
        self._reserve_bytes = int(reserve_bytes)
        self._draw_static()

    def set_reserved(self, bands: dict[str, int]) -> None:
        """What ModelDeck has booked per model now (bytes): call it whenever the bookings change.

        The bands are drawn from the booking history (the manager's, or without one, the history of
        these calls), stacked from the bottom and labelled on the band itself.
        """
        self._bands = {str(k): int(v) for k, v in bands.items() if v > 0}
        if self._local is not None:  # booked now: at the newest sample, even while hidden (not yet drawn)
            latest = self._sampler.latest
            now = latest.timestamp if latest is not None else self._history_now()
            self._local.record(self._device_id(), [(k, k, v) for k, v in self._bands.items()], now)
        self._load_history()

    @property
    def reserved(self) -> dict[str, int]:
        return dict(self._bands)

    def booking_history(self) -> tuple[BookingInterval, ...]:
        """The booking intervals the bands show (those that reach into the window)."""
        return self._history

    def refresh(self, profile: HardwareProfile | None = None) -> None:
        """Draw ``profile`` (the newest sample; without one, the sampler's latest). A hidden graph
        only keeps it and draws when shown."""
        self._profile = profile if profile is not None else self._sampler.latest
        if self.isVisible():
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
        x = float(self._x[i])
        stacked = self._bands_view.stacked
        return _readout(self._t_last + x, x, float(self._y[i]), stacked,
                        stacked.at(self._bands_view.now + x) if stacked is not None else {})

    # --- drawing -------------------------------------------------------------------------------
    def _device_id(self) -> str:
        """``cuda:N`` / ``cpu``: what the manager calls this graph's device."""
        if self._device is None and self._profile is not None:
            gpu = next((g for g in self._profile.gpus if device_key(g) == self._key), None)
            if gpu is not None:
                self._device = gpu.device_id
        return self._device or str(self._key)

    def _history_now(self) -> float:
        """Now on the history's clock: the manager's, or the sample times the local history uses."""
        if self._manager is not None:
            clock: Callable[[], float] = self._manager.clock
            return float(clock())
        return float(self._profile.timestamp) if self._profile is not None else 0.0

    def _load_history(self) -> None:
        now = self._history_now()
        since = now - self._window_s
        if self._manager is not None:  # the reserve too: the settings dialog may have changed it
            self._history = self._manager.booking_history(self._device_id(), since)
            self._reserve_bytes = self._manager.safety_margin(self._device_id())
        elif self._local is not None:
            self._history = self._local.intervals(self._device_id(), since)
        self._draw_bands()
        self._draw_static()

    def _draw_bands(self) -> None:
        self._bands_top, rebuilt = self._bands_view.draw(self._history, self._history_now(), self._window_s)
        if rebuilt:
            self._place_band_labels()

    def _redraw(self, force: bool = False) -> None:
        profile = self._profile
        interval = max(0.1, float(getattr(self._sampler, "interval_s", 1.0)))
        # A redraw only when the curve moves by two pixels (a lag nobody sees; at idle with 4 GPUs it
        # saves ~1.5 ms of CPU a second over one pixel): long windows hold many samples per pixel.
        width = max(100, self._plot.width())
        min_gap = 2 * self._shown_s / width
        if profile is not None and not force and profile.timestamp - self._drawn_t < min_gap:
            return
        n = int(self._window_s / interval) + 2
        try:
            t, used = self._sampler.window(self._key, self._metric, n)
        except KeyError:
            t, used = np.empty(0), np.empty(0)
        if t.size:
            t_last = float(t[-1])
            keep = t >= t_last - self._window_s
            self._x = t[keep] - t_last
            self._y = used[keep] / GiB
            self._t_last = t_last
        else:
            self._x, self._y = np.empty(0), np.empty(0)
        self._fit_x_range()
        x, y = _peak_decimate(self._x, self._y, width)
        self._used.setData(x, y, connect="finite")
        self._drawn_t = profile.timestamp if profile is not None else -math.inf
        top = self._bands_top
        if self._history:
            self._draw_bands()
        total = self._read_total(profile)
        same = total == self._total_bytes or (math.isnan(total) and math.isnan(self._total_bytes))
        self._total_bytes = total
        if not same or top != self._bands_top:
            self._draw_static()

    def _read_total(self, profile: HardwareProfile | None) -> float:
        if profile is None:
            return float("nan")
        if self._key is None:
            return float(profile.host.total_bytes) or float("nan")
        gpu = next((g for g in profile.gpus if device_key(g) == self._key), None)
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
        """Total and reserve lines and the y range: they change rarely."""
        x = np.array([-float(self._window_s), 0.0])
        total = self._total_bytes
        if math.isfinite(total) and total > 0:
            self._total.setData(x, np.full(2, total / GiB))
            if self._reserve_bytes:
                self._reserve.setData(x, np.full(2, max(0.0, total - self._reserve_bytes) / GiB))
            else:
                self._reserve.setData([], [])
            top = total / GiB
        else:
            self._total.setData([], [])
            self._reserve.setData([], [])
            top = float(np.nanmax(self._y)) if self._y.size and np.isfinite(self._y).any() else 1.0
        top = max(top, self._bands_top)
        self._y_top = top * 1.25 if top > 0 else 1.0
        self._plot.getPlotItem().setYRange(0.0, self._y_top, padding=0)
        self._place_band_labels()

    def _place_band_labels(self) -> None:
        box = self._plot.getPlotItem().getViewBox()
        self._bands_view.fit_labels(box.height() / max(self._y_top, 1e-9), box.width() / (1.02 * self._window_s))

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._history:
            self._place_band_labels()

    def _set_x_range(self) -> None:
        self._shown_s = 0  # the window changed: fit the axis again
        self._fit_x_range()

    def _fit_x_range(self) -> None:
        """The time axis spans the window, or less while the history is shorter (whole minutes, at
        least one): a window chosen at start is not an empty plot with a sliver at its right edge."""
        have = -float(self._x[0]) if self._x.size else 0.0
        shown = min(self._window_s, max(SHORTEST_SPAN_S, SHORTEST_SPAN_S * math.ceil(have / SHORTEST_SPAN_S)))
        if shown != self._shown_s:
            self._shown_s = shown
            self._plot.getPlotItem().setXRange(-float(shown), 0.0, padding=0.01)

    @property
    def shown_s(self) -> int:
        """How many seconds the time axis spans now (the window, or less while history is shorter)."""
        return self._shown_s

    # --- hover ---------------------------------------------------------------------------------
    def _on_mouse_moved(self, pos: QPointF) -> None:
        vb = self._plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos) or self._x.size == 0:
            self._set_hover("")
            return
        point = vb.mapSceneToView(pos)
        (x0, x1), (_, y1) = vb.viewRange()
        self._hover.place(point.x(), max(point.x(), x0 + 0.25 * (x1 - x0)), y1)
        self._set_hover(self.readout_at(point.x()))

    def _set_hover(self, text: str) -> None:
        if self._hover.show(text):
            self.sigHoverChanged.emit(text)

    def leaveEvent(self, event: QEvent) -> None:  # noqa: N802
        self._set_hover("")
        super().leaveEvent(event)

    # --- theme and visibility ------------------------------------------------------------------
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
        self._hover.set_palette(text, base)
        self._bands_view.set_palette(text, base)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        if self._profile is not None and self._profile.timestamp != self._drawn_t:
            self._redraw(force=True)
