"""DeviceCard: one device's numbers at a glance, each with a tooltip that says what it means.

A card shows a GPU, the host's RAM, or a backend that is not available (a machine without an
NVIDIA driver is a normal case, and the card says why there is no GPU). A lost GPU, or a field
the driver cannot read, is shown as such with the driver's reason, never as a zero.

Beside what the driver measures (used / total, free) it shows the manager's ledger: what ModelDeck
booked and what is still bookable, so the pressure pill sits beside the figures that explain it
(a device can be "critical" with 9 GiB free when those 9 GiB are booked for a model still loading).
The pressure level is the manager's answer (:meth:`ManagerPort.pressure`), never re-derived here.
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.core.hardware.snapshot import BackendStatus, GpuDevice, HardwareProfile, HostMemory
from app.core.memory_allocator import DeviceLedger
from app.core.units import GiB, format_gib
from app.widgets.elided_label import ElidedLabel
from app.widgets.ports import ManagerPort
from app.widgets.usage_bar import UsageBar

__all__ = ["DeviceCard", "PRESSURE_LEVELS"]

#: Pill colours (background, text) per pressure level; readable on light and dark palettes.
PRESSURE_LEVELS: dict[str, tuple[str, str]] = {
    "ok": ("#16a34a", "#ffffff"),
    "elevated": ("#ca8a04", "#000000"),
    "high": ("#ea580c", "#000000"),
    "critical": ("#dc2626", "#ffffff"),
}
_PRESSURE_TIPS = {
    "ok": "Memory pressure: ok. There is room for more models.",
    "elevated": "Memory pressure: elevated. Most of this device is in use or booked.",
    "high": "Memory pressure: high. New loads may need an eviction first.",
    "critical": "Memory pressure: critical. Loads will be refused or evict other models.",
}
_BACKEND_NAMES = {"nvml": "NVML", "amd": "AMD SMI", "amdsmi": "AMD SMI", "host": "Host"}


def _num(value: float | None, unit: str, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


class DeviceCard(QFrame):
    """Name, used / total, booked / bookable, utilization, temperature, power and pressure of one device.

    With a ``manager`` and its ``device`` (``cuda:N`` or ``cpu``), :meth:`refresh` takes a profile
    and shows everything (the ledger and the manager's pressure included). Without, a host pushes
    each part: :meth:`set_gpu` / :meth:`set_host`, :meth:`set_ledger`, :meth:`set_pressure`.
    """

    def __init__(self, manager: ManagerPort | None = None, device: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self._manager = manager
        self._device = device
        self._pressure = ""
        self._ledger: DeviceLedger | None = None

        self._title = ElidedLabel()  # a long GPU name ends in "…" beside the pill; whole in the tooltip
        font = QFont(self._title.font())
        font.setBold(True)
        self._title.setFont(font)
        self._title.setMinimumWidth(40)
        self._pill = QLabel()
        self._pill.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._pill.setVisible(False)

        self._bar = UsageBar()
        self._bar.setToolTip("Share of this device's memory in use now, by any program.")

        self._used = QLabel()
        self._free = QLabel()
        self._free.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self._booked = QLabel()
        self._bookable = QLabel()
        self._bookable.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        for label in (self._used, self._free, self._booked, self._bookable):
            label.setMinimumWidth(10)  # a narrow card cuts a figure's end, never widens the row
        self._booked.setVisible(False)
        self._bookable.setVisible(False)
        self._util = QLabel()
        self._temp = QLabel()
        self._power = QLabel()
        for label in (self._util, self._temp, self._power):
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._message = QLabel()
        self._message.setWordWrap(True)
        self._message.setTextFormat(Qt.TextFormat.PlainText)
        self._message.setVisible(False)

        head = QHBoxLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addWidget(self._title, 1)
        head.addWidget(self._pill)
        self._numbers = QWidget()
        grid = QGridLayout(self._numbers)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setVerticalSpacing(2)
        grid.addWidget(self._bar, 0, 0, 1, 3)
        grid.addWidget(self._used, 1, 0, 1, 2)
        grid.addWidget(self._free, 1, 2)
        grid.addWidget(self._booked, 2, 0, 1, 2)
        grid.addWidget(self._bookable, 2, 2)
        grid.addWidget(self._util, 3, 0)
        grid.addWidget(self._temp, 3, 1)
        grid.addWidget(self._power, 3, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addWidget(self._numbers)
        layout.addWidget(self._message)

    # --- what a card shows ---------------------------------------------------------------------
    def refresh(self, profile: HardwareProfile, ledgers: Sequence[DeviceLedger] | None = None) -> None:
        """Show ``profile``'s figures for this card's device with the manager's ledger and pressure
        (needs the ``manager`` and ``device`` the card was made with). ``ledgers``: the manager's
        ``ledgers()`` when the caller already read them for several cards (one snapshot a sample)."""
        if self._manager is None or self._device is None:
            raise RuntimeError("DeviceCard.refresh needs the manager and device it was made with")
        device = self._device
        if device == "cpu":
            self.set_host(profile.host)
            lost = False
        else:
            gpu = next((g for g in profile.gpus if g.device_id == device and g.mig_parent is None), None)
            if gpu is None:
                self._show_message(f"{device} is not in the latest sample.")
                self.set_pressure(None)
                return
            self.set_gpu(gpu)
            lost = gpu.lost
        ledger = next((x for x in (ledgers if ledgers is not None else self._manager.ledgers()) if x.device == device),
                      None)
        self.set_ledger(None if lost else ledger)
        self.set_pressure(None if lost else self._manager.pressure(device).value)

    def set_ledger(self, ledger: DeviceLedger | None) -> None:
        """What ModelDeck booked on the device and what is still bookable (``None`` hides the row)."""
        self._ledger = ledger
        self._booked.setVisible(ledger is not None)
        self._bookable.setVisible(ledger is not None)
        if ledger is None:
            self._update_pill_tip()
            return
        self._set(self._booked, f"Booked {format_gib(ledger.reserved_bytes)}")
        self._booked.setToolTip(
            f"What ModelDeck booked here for its models (runtime context included): {ledger.reserved_bytes:,} "
            f"bytes.\n{format_gib(ledger.unreflected_bytes)} of it is not in use yet, so the driver's "
            "'free' still counts it.")
        self._set(self._bookable, f"{format_gib(ledger.available_bytes)} bookable")
        self._bookable.setToolTip(
            f"What a new model can still book here: free memory less what is booked but not in use yet, "
            f"less the {format_gib(ledger.safety_reserve_bytes)} safety reserve.")
        self._update_pill_tip()
    def set_gpu(self, gpu: GpuDevice) -> None:
        """Show a GPU; a lost one says so and why."""
        self._set(self._title, f"GPU {gpu.index} · {gpu.name}")
        self._title.setToolTip(
            f"{gpu.name}\nDevice id for loaders: {gpu.device_id}"
            + (f"\nUUID: {gpu.uuid}" if gpu.uuid else "")
            + (f"\nPCI bus: {gpu.pci_bus_id}" if gpu.pci_bus_id else "")
            + (f"\nCompute capability {gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
               if gpu.compute_capability else "")
        )
        if gpu.lost:
            reason = gpu.reason_unavailable("memory") or "the GPU stopped answering"
            self._show_message(f"Lost: {reason}. Models on it are unusable until the driver sees it again.")
            return
        self._show_numbers()
        self._set_memory(gpu.used_bytes, gpu.total_bytes, gpu.free_bytes,
                         used_tip="Memory in use on this GPU by every process (and the driver), as NVML reports it.",
                         free_tip="Memory no one holds yet. ModelDeck keeps a safety reserve of it free.")
        self._set_field(self._util, gpu.utilization_percent, "%", "Util ",
                        "Share of the last sample period in which a kernel ran on the GPU.",
                        gpu.reason_unavailable("utilization_percent"))
        self._set_field(self._temp, gpu.temperature_c, " °C", "",
                        "GPU core temperature.", gpu.reason_unavailable("temperature_c"))
        limit = f" of {gpu.power_limit_w:.0f} W limit" if gpu.power_limit_w else ""
        self._set_field(self._power, gpu.power_w, " W", "",
                        f"Board power draw now{limit}.", gpu.reason_unavailable("power_w"))

    def set_host(self, host: HostMemory) -> None:
        """Show the system's RAM (unified memory on Apple silicon is the GPU's memory too)."""
        shared = " (unified, shared with the GPU)" if host.unified_memory else ""
        self._set(self._title, f"System RAM{shared}")
        self._title.setToolTip(f"{host.platform} {host.machine}, {host.cpu_count} CPU cores "
                               f"({host.logical_cpu_count} threads)")
        ram_reason = dict(host.unavailable).get("ram")
        if ram_reason:
            self._show_message(f"RAM unavailable: {ram_reason}")
            return
        self._show_numbers()
        self._set_memory(host.used_bytes, host.total_bytes, host.available_bytes,
                         used_tip="System memory in use by every program (psutil's 'used').",
                         free_tip="Memory available to start programs without swapping (psutil's 'available').",
                         free_word="available")
        swap = "n/a" if host.swap_used_bytes is None else format_gib(host.swap_used_bytes)
        self._set(self._util, f"Swap {swap}")
        self._util.setToolTip("Swap in use. Models paged out to swap run very slowly.")
        self._set(self._temp, f"{host.cpu_count} cores")
        self._temp.setToolTip(f"{host.cpu_count} physical cores, {host.logical_cpu_count} threads.")
        rss = "n/a" if host.process_rss_bytes is None else format_gib(host.process_rss_bytes, 2)
        self._set(self._power, f"App {rss}")
        self._power.setToolTip("Memory held by this ModelDeck process (resident set size).")

    def set_backend_unavailable(self, statuses: BackendStatus | Sequence[BackendStatus], title: str = "No GPU") -> None:
        """Backends that are not in use: the card says which, and the reason each gave."""
        if isinstance(statuses, BackendStatus):
            statuses = (statuses,)
        lines = [f"{_BACKEND_NAMES.get(s.name.lower(), s.name)} unavailable: {s.reason or 'no reason given'}"
                 for s in statuses]
        self._set(self._title, title)
        self._title.setToolTip("No GPU backend answered; models can still run on the CPU from RAM.")
        self._show_message("\n".join(lines) or "No GPU backend is configured.")
        self.set_pressure(None)

    def set_pressure(self, level: str | None) -> None:
        """The pressure level as text (ok / elevated / high / critical); ``None`` hides it."""
        level = (level or "").lower()
        if level == self._pressure:
            return
        self._pressure = level
        colors = PRESSURE_LEVELS.get(level)
        self._pill.setVisible(bool(level))
        if not level:
            return
        bg, fg = colors or ("#6b7280", "#ffffff")
        self._pill.setText(level)
        self._pill.setStyleSheet(f"QLabel {{ background: {bg}; color: {fg}; border-radius: 6px; padding: 0 6px; }}")
        self._update_pill_tip()

    def _update_pill_tip(self) -> None:
        """The level in words and, with a ledger, the figures that make it."""
        level = self._pressure
        tip = _PRESSURE_TIPS.get(level, f"Memory pressure: {level}.")
        x = self._ledger
        if x is not None and x.total_bytes > 0:
            tip += (f"\n{100 * x.committed_fraction:.0f}% of {format_gib(x.total_bytes)} is in use or booked: "
                    f"{format_gib(x.measured_used_bytes)} in use by every program, {format_gib(x.unreflected_bytes)} "
                    f"booked by ModelDeck and not in use yet, {format_gib(x.safety_reserve_bytes)} kept as the "
                    f"safety reserve; {format_gib(x.available_bytes)} can still be booked.")
        self._pill.setToolTip(tip)

    # --- read back (tests, hosts) ----------------------------------------------------------------
    @property
    def title(self) -> str:
        return self._title.text()

    @property
    def pressure(self) -> str:
        return self._pressure

    def message(self) -> str:
        """The lost / unavailable text ("" while the card shows numbers)."""
        return self._message.text() if not self._message.isHidden() else ""

    def texts(self) -> dict[str, str]:
        booked = self._ledger is not None
        return {"title": self.title, "used": self._used.text(), "free": self._free.text(),
                "booked": self._booked.text() if booked else "", "bookable": self._bookable.text() if booked else "",
                "util": self._util.text(), "temp": self._temp.text(), "power": self._power.text(),
                "pressure": self._pressure, "message": self.message()}

    # --- internals -------------------------------------------------------------------------------
    @staticmethod
    def _set(label: QLabel, text: str) -> None:
        if label.text() != text:
            label.setText(text)

    def _show_numbers(self) -> None:
        if self._numbers.isHidden():
            self._numbers.setVisible(True)
            self._message.setVisible(False)

    def _show_message(self, text: str) -> None:
        self._set(self._message, text)
        self._message.setVisible(True)
        self._numbers.setVisible(False)

    def _set_memory(self, used: int, total: int, free: int, *, used_tip: str, free_tip: str,
                    free_word: str = "free") -> None:
        self._set(self._used, f"{used / GiB:.1f} / {format_gib(total)} used")
        self._used.setToolTip(f"{used_tip}\n{used:,} of {total:,} bytes.")
        self._set(self._free, f"{format_gib(free)} {free_word}")
        self._free.setToolTip(free_tip)
        self._bar.setValue(int(round(UsageBar.MAXIMUM * used / total)) if total else 0)

    def _set_field(self, label: QLabel, value: float | None, unit: str, prefix: str, tip: str,
                   reason: str | None) -> None:
        self._set(label, f"{prefix}{_num(value, unit)}")
        label.setToolTip(tip if value is not None else f"{tip}\nNot available: {reason or 'the driver does not say'}.")
