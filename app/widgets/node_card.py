"""NodeCard: one ModelDeck node of the Cluster tab — its GPUs, what is booked and bookable on each,
their pressure and the models they hold; DOWN with its last-seen time and its last figures, greyed."""

from __future__ import annotations

import time
from collections.abc import Iterable

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.core.cluster import (
    NodeSnapshot,
    RemoteDevice,
    RemoteModel,
)
from app.core.units import GiB, format_gib
from app.widgets.device_card import PRESSURE_LEVELS

__all__ = ["NodeCard", "attention_color", "plain_label", "seen_text"]


def seen_text(stamp: float | None, now: float) -> str:
    """"12:01:03 (40 s ago)"; the date too when it was not today."""
    if stamp is None:
        return "never seen"
    age = max(0.0, now - stamp)
    try:
        fmt = "%H:%M:%S" if time.localtime(stamp)[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M:%S"
        when = time.strftime(fmt, time.localtime(stamp))
    except (OverflowError, OSError, ValueError):
        return "at a time the node could not state"
    ago = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.1f} h"
    return f"{when} ({ago} ago)"


def attention_color(palette: QPalette) -> str:
    """A red that reads on the palette's window colour (light or dark)."""
    return "#f87171" if palette.color(QPalette.ColorRole.Window).lightness() < 128 else "#b91c1c"


def plain_label(text: str = "", *, bold: bool = False, wrap: bool = True) -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    if bold:
        font = QFont(label.font())
        font.setBold(True)
        label.setFont(font)
    return label


def _pill(text: str, bg: str, fg: str, tip: str) -> QLabel:
    pill = QLabel(text)
    pill.setStyleSheet(f"QLabel {{ background: {bg}; color: {fg}; border-radius: 6px; padding: 0 6px; }}")
    pill.setToolTip(tip)
    pill.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
    return pill


def _model_line(m: RemoteModel, device: str) -> QLabel:
    others = [d for d in m.devices if d != device]
    text = (f"{m.name} · {m.level} · {m.state} · {format_gib(m.bytes_on(device) if device else m.booked_bytes)}"
            + (f" (also on {', '.join(others)})" if others else "") + (" · pinned" if m.pinned else ""))
    line = plain_label(text)
    line.setContentsMargins(14, 0, 0, 0)
    line.setToolTip(f"{m.model_id}\nplacement: {m.placement or 'n/a'}, booked {format_gib(m.booked_bytes, 2)} "
                    f"in all" + ("\npinned: never evicted" if m.pinned else ""))
    return line


class NodeCard(QFrame):
    """One node: a header (up, or DOWN and when last seen), then its GPUs and their models, then RAM."""

    def __init__(self, node: NodeSnapshot, now: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node = node
        self.setFrameShape(QFrame.Shape.StyledPanel)
        # Never squashed: the scroll area scrolls instead (word-wrapped lines grow with a narrow width).
        policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        red = attention_color(self.palette())
        state = "up" if node.up else f"DOWN — last seen {seen_text(node.last_seen, now)}"
        if not node.up and node.last_seen is None:
            state = "DOWN — never seen"
        where = node.node if node.node == node.instance else f"{node.node} · {node.instance}"
        self.header = plain_label(f"{where} · {state}", bold=True)
        self.setAccessibleName(f"Node {node.node}, {'up' if node.up else 'down'}")
        self.header.setToolTip(f"Read from {node.source}" + (f"\nModelDeck {node.version}" if node.version else ""))
        if not node.up:
            self.header.setStyleSheet(f"QLabel {{ color: {red}; }}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(3)
        layout.addWidget(self.header)
        if node.error:
            why = plain_label(node.error + ("; figures below are as last seen" if not node.up and node.devices else ""))
            why.setStyleSheet(f"QLabel {{ color: {red}; }}")
            layout.addWidget(why)
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(2)
        for gpu in node.gpus:
            self._add_device(body, gpu, node.models_on(gpu.device), node.up)
        ram = next((d for d in node.devices if not d.is_gpu), None)
        in_ram = [m for m in node.models if not any(d != "cpu" for d in m.devices)]
        if ram is not None or in_ram:
            body.addSpacing(4)
            title = plain_label("RAM", bold=True)
            title.setToolTip("The node's system memory: where CPU-placed models and offloaded layers are booked.")
            body.addWidget(title)
            body.addWidget(plain_label(self._figures(ram) if ram is not None else "n/a"))
            for m in in_ram:
                body.addWidget(_model_line(m, "cpu" if m.devices else ""))
        if not node.devices and not node.up:
            body.addWidget(plain_label("No figures: this node was never read."))
        elif not node.models:
            quiet = plain_label("No models loaded")
            quiet.setEnabled(False)
            body.addWidget(quiet)
        self.body.setEnabled(node.up)  # a down node's figures are its last known: greyed
        layout.addWidget(self.body)

    @staticmethod
    def _figures(d: RemoteDevice) -> str:
        used = "n/a" if d.used_bytes is None else f"{d.used_bytes / GiB:.1f}"
        return (f"{used} / {format_gib(d.total_bytes)} used · {format_gib(d.booked_bytes)} booked · "
                f"{format_gib(d.bookable_bytes)} bookable")

    def _add_device(self, body: QVBoxLayout, gpu: RemoteDevice, models: Iterable[RemoteModel], up: bool) -> None:
        body.addSpacing(4)
        head = QHBoxLayout()
        head.setSpacing(6)
        title = plain_label(f"{gpu.device} · {gpu.name}", bold=True)
        title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        cc = gpu.compute_capability
        title.setToolTip(f"{gpu.name} ({gpu.device})" + (f", compute capability {cc[0]}.{cc[1]}" if cc else ""))
        head.addWidget(title, 1)
        if gpu.lost:
            head.addWidget(_pill("lost", "#dc2626", "#ffffff", "The GPU stopped answering: its figures are unknown."))
        else:
            bg, fg = PRESSURE_LEVELS.get(gpu.pressure, ("#6b7280", "#ffffff")) if up else ("#9ca3af", "#000000")
            head.addWidget(_pill(gpu.pressure, bg, fg, f"Memory pressure: {gpu.pressure}"
                                 + ("" if up else " (as last seen)")))
        body.addLayout(head)
        bar = QProgressBar()
        bar.setRange(0, 1000)
        bar.setTextVisible(False)
        bar.setFixedHeight(6)
        fraction = (gpu.used_bytes or 0) / gpu.total_bytes if gpu.total_bytes > 0 else 0.0
        bar.setValue(int(1000 * min(1.0, max(0.0, fraction))))  # a driver's odd figure never overflows the bar
        bar.setToolTip("Share of this GPU's memory in use, by any program.")
        body.addWidget(bar)
        figures = plain_label(self._figures(gpu))
        figures.setToolTip("used: by every process, as the driver reports it · booked: by that node's ModelDeck, "
                           "with its runtime context · bookable: what its next model can still book")
        body.addWidget(figures)
        for m in models:
            body.addWidget(_model_line(m, gpu.device))

    def text(self) -> str:
        """Every line the card shows (tests, hosts)."""
        return "\n".join(label.text() for label in self.findChildren(QLabel))

