"""MemoryAllocator: a per-device ledger of what ModelDeck has booked, reconciled with what is measured.

Available memory on a device is computed from the latest measurement:

    free (measured) + what our processes hold (measured) - max(what we booked, what we hold) - safety reserve

so memory held by other programs always counts, a model that is loaded is not counted twice (once
as a booking, once in the measurement), and a booking the measurement does not show yet (a load in
progress, or a host that has not loaded yet) is still subtracted. Where the driver cannot say how
much our processes hold, bookings for loads that finished before the latest measurement are taken as
reflected in it.

Thread-safe: one lock around the ledger; events are emitted after it is released.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Mapping

from app.core.estimation import GPU_RUNTIME_OVERHEAD, MemoryEstimate
from app.core.events import Signal
from app.core.hardware.snapshot import HardwareProfile
from app.core.units import GiB, format_gib, gib

__all__ = [
    "AllocationError",
    "AllocatorSettings",
    "DeviceLedger",
    "MemoryAllocation",
    "MemoryAllocator",
    "PressureLevel",
    "Reservation",
    "CATEGORIES",
]

_log = logging.getLogger(__name__)

CATEGORIES = ("weights", "kv_cache", "compute", "overhead")


class PressureLevel(str, Enum):
    OK = "ok"
    ELEVATED = "elevated"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ("ok", "elevated", "high", "critical").index(self.value)


@dataclass(frozen=True)
class AllocatorSettings:
    """Safety reserves and pressure thresholds (fractions of a device's memory in use or booked)."""

    gpu_reserve_bytes: int = GPU_RUNTIME_OVERHEAD
    cpu_reserve_bytes: int = 2 * GiB
    elevated: float = 0.80
    high: float = 0.90
    critical: float = 0.97

    def reserve_for(self, device: str) -> int:
        return self.cpu_reserve_bytes if device == "cpu" else self.gpu_reserve_bytes

    def level(self, fraction: float) -> PressureLevel:
        if fraction >= self.critical:
            return PressureLevel.CRITICAL
        if fraction >= self.high:
            return PressureLevel.HIGH
        if fraction >= self.elevated:
            return PressureLevel.ELEVATED
        return PressureLevel.OK


class AllocationError(Exception):
    """A booking that does not fit: what was needed, what was available, where, and what to do."""

    def __init__(self, model_id: str, device: str, needed_bytes: int, available_bytes: int) -> None:
        self.model_id = model_id
        self.device = device
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        super().__init__(
            f"{model_id} needs {format_gib(needed_bytes, 2)} on {device} but only {format_gib(available_bytes, 2)} "
            "is available; unload or offload a model, choose a smaller level or a shorter context, or use another device"
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """Memory booked for one model on one device."""

    model_id: str
    device: str
    bytes_by_category: tuple[tuple[str, int], ...]
    #: "booked" (not loaded yet), "loaded" (in memory), or "offloaded" (moved to this device from a GPU).
    state: str = "booked"
    created_at: float = 0.0
    #: When the load finished (monotonic clock); None until then.
    loaded_at: float | None = None
    total_bytes: int = field(default=-1, compare=False)

    def __post_init__(self) -> None:
        if self.total_bytes < 0:
            object.__setattr__(self, "total_bytes", sum(b for _, b in self.bytes_by_category))

    def category(self, name: str) -> int:
        return dict(self.bytes_by_category).get(name, 0)


@dataclass(frozen=True, slots=True)
class DeviceLedger:
    """One device as the allocator sees it now."""

    device: str
    name: str
    total_bytes: int
    measured_free_bytes: int
    measured_used_bytes: int
    #: What our own processes hold on the device, as measured (None when the driver cannot say).
    measured_ours_bytes: int | None
    reserved_bytes: int
    #: Bookings the measurement does not show yet.
    unreflected_bytes: int
    safety_reserve_bytes: int
    available_bytes: int
    pressure: PressureLevel
    lost: bool = False
    #: available_bytes before clamping at zero: negative when others grew into what we booked.
    balance_bytes: int = 0

    @property
    def committed_fraction(self) -> float:
        """Share of the device in use or booked (1.0 when over-committed)."""
        if self.total_bytes <= 0:
            return 1.0
        return min(1.0, max(0.0, 1 - (self.balance_bytes + self.safety_reserve_bytes) / self.total_bytes))


@dataclass(frozen=True, slots=True)
class MemoryAllocation:
    """The seed's allocation record, plus the bookings behind it."""

    model_id: str
    vram_allocated_gb: float
    ram_allocated_gb: float
    device: str
    reservations: tuple[Reservation, ...] = field(default=())

    @property
    def total_bytes(self) -> int:
        return sum(r.total_bytes for r in self.reservations)


def breakdown_of(estimate: MemoryEstimate | Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    if isinstance(estimate, MemoryEstimate):
        return (("weights", estimate.weights_bytes), ("kv_cache", estimate.kv_cache_bytes),
                ("compute", estimate.compute_bytes), ("overhead", estimate.overhead_bytes))
    unknown = set(estimate) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown memory categories {sorted(unknown)}; use {', '.join(CATEGORIES)}")
    if any(int(v) < 0 for v in estimate.values()):
        raise ValueError("bytes booked must not be negative")
    return tuple((k, int(estimate.get(k, 0))) for k in CATEGORIES)


class MemoryAllocator:
    """Per-device ledger (``cuda:N``, ``cpu``) with safety reserves and pressure levels.

    Signals:
        allocation_changed(device): a booking on ``device`` was made, changed or released.
        pressure_changed(device, level): the device's pressure level changed.
    """

    def __init__(
        self,
        hardware: HardwareProfile | None = None,
        *,
        settings: AllocatorSettings | None = None,
        owned_pids: Iterable[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = _log
        self.settings = settings or AllocatorSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._profile: HardwareProfile | None = None
        self._gpus: dict[str, Any] = {}
        self._measured_at = float("-inf")
        #: device -> model id -> booking, and the bytes booked per device (kept in step).
        self._by_device: dict[str, dict[str, Reservation]] = {}
        self._booked: dict[str, int] = {}
        self._owned = set(owned_pids) if owned_pids is not None else {os.getpid()}
        self._rss_baseline: int | None = None
        self._pressure: dict[str, PressureLevel] = {}
        self.allocation_changed: Signal[Callable[[str], None]] = Signal("allocation_changed")
        self.pressure_changed: Signal[Callable[[str, PressureLevel], None]] = Signal("pressure_changed")
        if hardware is not None:
            self.update(hardware)

    # --- measurement -------------------------------------------------------------------------
    @property
    def hardware(self) -> HardwareProfile | None:
        """The latest measurement (the seed's attribute name)."""
        return self._profile

    def update(self, profile: HardwareProfile) -> None:
        """Take a new measurement (from the sampler or the profiler) and re-evaluate pressure."""
        with self._lock:
            self._profile = profile
            self._gpus = {g.device_id: g for g in profile.gpus if g.mig_parent is None}
            self._measured_at = self._clock()
            if self._rss_baseline is None and profile.host.process_rss_bytes is not None:
                loaded_cpu = sum(r.total_bytes for r in self._by_device.get("cpu", {}).values() if r.state != "booked")
                self._rss_baseline = profile.host.process_rss_bytes - loaded_cpu
            changes = self._pressure_changes_locked(self._devices_locked())
        for device, level in changes:
            self.pressure_changed.emit(device, level)

    def claim_pid(self, pid: int) -> None:
        """Count a process's GPU memory as ours (a loader that runs models in a child process)."""
        with self._lock:
            self._owned.add(pid)

    # --- views ---------------------------------------------------------------------------------
    def devices(self) -> list[str]:
        with self._lock:
            return self._devices_locked()

    def _devices_locked(self) -> list[str]:
        out = []
        if self._profile is not None:
            out = list(self._gpus)
        out.append("cpu")
        for dev, bookings in self._by_device.items():
            if bookings and dev not in out:
                out.append(dev)
        return out

    def ledger(self, device: str) -> DeviceLedger:
        with self._lock:
            return self._ledger_locked(device)

    def snapshot(self) -> tuple[DeviceLedger, ...]:
        """Every device's ledger at once (consistent with each other)."""
        with self._lock:
            return tuple(self._ledger_locked(d) for d in self._devices_locked())

    def available_bytes(self, device: str) -> int:
        return self.ledger(device).available_bytes

    def reservations(self, device: str | None = None, model_id: str | None = None) -> tuple[Reservation, ...]:
        with self._lock:
            devices = [device] if device is not None else list(self._by_device)
            out = []
            for d in devices:
                bookings = self._by_device.get(d, {})
                if model_id is None:
                    out.extend(bookings.values())
                elif model_id in bookings:
                    out.append(bookings[model_id])
            return tuple(out)

    def _put(self, res: Reservation) -> None:
        bookings = self._by_device.setdefault(res.device, {})
        old = bookings.get(res.model_id)
        self._booked[res.device] = self._booked.get(res.device, 0) - (old.total_bytes if old else 0) + res.total_bytes
        bookings[res.model_id] = res

    def _pop(self, model_id: str, device: str) -> Reservation | None:
        res = self._by_device.get(device, {}).pop(model_id, None)
        if res is not None:
            self._booked[device] -= res.total_bytes
        return res

    def _ledger_locked(self, device: str) -> DeviceLedger:
        profile = self._profile
        reserve = self.settings.reserve_for(device)
        booked = self._booked.get(device, 0)
        if device == "cpu":
            host = profile.host if profile else None
            total = host.total_bytes if host else 0
            free = host.available_bytes if host else 0
            used = total - free
            ours: int | None = None
            if host is not None and host.process_rss_bytes is not None and self._rss_baseline is not None:
                ours = max(0, host.process_rss_bytes - self._rss_baseline)
            name, lost = "System RAM", False
        else:
            gpu = self._gpus.get(device)
            if gpu is None or gpu.lost:
                return DeviceLedger(device, gpu.name if gpu else device, 0, 0, 0, None, booked, booked, reserve,
                                    0, PressureLevel.CRITICAL, lost=True)
            total, free, used, name, lost = gpu.total_bytes, gpu.free_bytes, gpu.used_bytes, gpu.name, False
            mine = [p for p in gpu.processes if p.pid in self._owned]
            if not mine:
                ours = 0
            elif all(p.used_bytes is not None for p in mine):
                ours = sum(p.used_bytes or 0 for p in mine)
            else:
                ours = None
        if ours is None:
            # The driver can't tell what we hold: bookings whose load finished before the latest
            # measurement are in it; the rest are not yet.
            reflected = sum(r.total_bytes for r in self._by_device.get(device, {}).values()
                            if r.loaded_at is not None and r.loaded_at <= self._measured_at)
            unreflected = booked - reflected
            available = free - unreflected - reserve
        else:
            unreflected = max(0, booked - ours)
            available = free + ours - max(booked, ours) - reserve
        fraction = 1.0 if total <= 0 else min(1.0, max(0.0, 1 - (available + reserve) / total))
        return DeviceLedger(device, name, total, free, used, ours, booked, unreflected, reserve,
                            max(0, available), self.settings.level(fraction), lost, available)

    def _pressure_changes_locked(self, devices: Iterable[str]) -> list[tuple[str, PressureLevel]]:
        changes = []
        for device in devices:
            level = self._ledger_locked(device).pressure
            if self._pressure.get(device) != level:
                previous = self._pressure.get(device)
                self._pressure[device] = level
                if previous is not None or level != PressureLevel.OK:
                    changes.append((device, level))
        return changes

    def pressure(self, device: str) -> PressureLevel:
        return self.ledger(device).pressure

    # --- booking -------------------------------------------------------------------------------
    def reserve(
        self,
        model_id: str,
        device: str,
        estimate: MemoryEstimate | Mapping[str, int],
        *,
        state: str = "booked",
        force: bool = False,
    ) -> Reservation:
        """Book memory for a model on a device; raises :class:`AllocationError` when it does not fit.

        Booking the same model on the same device again replaces the old booking (its bytes are
        not counted against the new one).
        """
        parts = breakdown_of(estimate)
        needed = sum(b for _, b in parts)
        with self._lock:
            previous = self._pop(model_id, device)
            available = self._ledger_locked(device).available_bytes
            if needed > available and not force:
                if previous is not None:
                    self._put(previous)
                raise AllocationError(model_id, device, needed, available)
            res = Reservation(model_id, device, parts, state, self._clock(),
                              self._clock() if state != "booked" else None)
            self._put(res)
            changes = self._pressure_changes_locked([device])
        self.logger.info("booked %s for %s on %s", format_gib(needed, 2), model_id, device)
        self._announce([device], changes)
        return res

    def set_state(self, model_id: str, state: str, device: str | None = None) -> None:
        """Mark a model's bookings as loaded (or back to booked)."""
        with self._lock:
            touched = []
            for dev, bookings in self._by_device.items():
                res = bookings.get(model_id)
                if res is not None and (device is None or dev == device):
                    loaded_at = self._clock() if state != "booked" else None
                    bookings[model_id] = dataclasses.replace(res, state=state, loaded_at=loaded_at)
                    touched.append(dev)
            changes = self._pressure_changes_locked(touched)
        self._announce(touched, changes)

    def release(self, model_id: str, device: str | None = None) -> tuple[Reservation, ...]:
        """Release a model's bookings (all devices, or one). Unknown models release nothing."""
        with self._lock:
            devices = [device] if device is not None else list(self._by_device)
            gone = [r for r in (self._pop(model_id, d) for d in devices) if r is not None]
            changes = self._pressure_changes_locked([r.device for r in gone])
        if gone:
            self.logger.info("released %s for %s", format_gib(sum(r.total_bytes for r in gone), 2), model_id)
        self._announce([r.device for r in gone], changes)
        return tuple(gone)

    def _announce(self, devices: Iterable[str], changes: list[tuple[str, PressureLevel]]) -> None:
        for device in dict.fromkeys(devices):
            self.allocation_changed.emit(device)
        for device, level in changes:
            self.pressure_changed.emit(device, level)

    # --- the seed's API ------------------------------------------------------------------------
    def can_allocate(self, model_id: str, quantization: object, device: str = "cuda:0") -> bool:
        needed = self._seed_bytes(quantization)
        return needed <= self.available_bytes(device)

    def allocate(self, model_id: str, quantization: object, device: str = "cuda:0") -> MemoryAllocation | None:
        """Book a model from a seed ``QuantizationConfig``; None when it does not fit (as the seed did)."""
        estimate = getattr(quantization, "estimate", None)
        booking: MemoryEstimate | Mapping[str, int] = estimate if isinstance(estimate, MemoryEstimate) else {
            "weights": self._seed_bytes(quantization)}
        try:
            res = self.reserve(model_id, device, booking)
        except AllocationError as err:
            self.logger.warning("%s", err)
            return None
        return self.allocation_of(model_id) or MemoryAllocation(model_id, 0.0, 0.0, device, (res,))

    @staticmethod
    def _seed_bytes(quantization: object) -> int:
        estimate = getattr(quantization, "estimate", None)
        if isinstance(estimate, MemoryEstimate):
            return estimate.total_bytes
        return int(float(getattr(quantization, "estimated_memory_gb", 0.0)) * GiB)

    def allocation_of(self, model_id: str) -> MemoryAllocation | None:
        res = self.reservations(model_id=model_id)
        if not res:
            return None
        vram = sum(r.total_bytes for r in res if r.device != "cpu")
        ram = sum(r.total_bytes for r in res if r.device == "cpu")
        device = next((r.device for r in res if r.device != "cpu"), "cpu")
        return MemoryAllocation(model_id, gib(vram), gib(ram), device, res)

    def deallocate(self, model_id: str) -> None:
        self.release(model_id)

    def get_total_allocated_vram(self) -> float:
        return gib(sum(r.total_bytes for r in self.reservations() if r.device != "cpu"))

    def get_total_allocated_ram(self) -> float:
        return gib(sum(r.total_bytes for r in self.reservations() if r.device == "cpu"))

    def is_under_memory_pressure(self) -> bool:
        """True when any device is at high or critical pressure."""
        return any(l.pressure.rank >= PressureLevel.HIGH.rank and not l.lost for l in self.snapshot()
                   if l.total_bytes > 0)
