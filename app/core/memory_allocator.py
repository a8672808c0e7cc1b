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

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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
    "SafetyMargins",
    "CATEGORIES",
]

_log = logging.getLogger(__name__)

CATEGORIES = ("weights", "kv_cache", "compute", "overhead")
#: Categories a model owns alone; "overhead" (the runtime's context) is shared by every model of this
#: process on a device, so a device books the largest such need once, not one per model.
OWN_CATEGORIES = ("weights", "kv_cache", "compute")


class PressureLevel(str, Enum):
    OK = "ok"
    ELEVATED = "elevated"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return ("ok", "elevated", "high", "critical").index(self.value)


@dataclass(frozen=True, slots=True)
class SafetyMargins:
    """Bytes kept free on each device, never booked: the one margin the planner, the allocator, the
    settings file, the CLI and the views all use."""

    gpu_bytes: int = GPU_RUNTIME_OVERHEAD
    cpu_bytes: int = 2 * GiB

    def for_device(self, device: str) -> int:
        return self.cpu_bytes if device == "cpu" else self.gpu_bytes


@dataclass(frozen=True)
class AllocatorSettings:
    """Safety reserves and pressure thresholds (fractions of a device's memory in use or booked)."""

    gpu_reserve_bytes: int = GPU_RUNTIME_OVERHEAD
    cpu_reserve_bytes: int = 2 * GiB
    elevated: float = 0.80
    high: float = 0.90
    critical: float = 0.97
    #: Hysteresis: a level is entered at its threshold but left only below threshold minus this share
    #: of the device (3 %), so a device hovering at a threshold does not flip levels every sample.
    hysteresis: float = 0.03

    @property
    def margins(self) -> SafetyMargins:
        return SafetyMargins(self.gpu_reserve_bytes, self.cpu_reserve_bytes)

    def reserve_for(self, device: str) -> int:
        return self.margins.for_device(device)

    def level(self, fraction: float, previous: PressureLevel | None = None) -> PressureLevel:
        """The level of a device ``fraction`` in use or booked. With the ``previous`` level, a fall is
        held until the fraction is ``hysteresis`` below the threshold it fell under."""
        rising = self._threshold_level(fraction)
        if previous is None or rising.rank >= previous.rank:
            return rising
        held = self._threshold_level(fraction + self.hysteresis)
        return held if held.rank < previous.rank else previous

    def _threshold_level(self, fraction: float) -> PressureLevel:
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
            "is available; unload or offload a model, choose a smaller level or a shorter context, "
            "or use another device"
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """Memory booked for one model on one device.

    ``total_bytes`` is what the model holds alone (weights, KV cache, compute buffer);
    ``runtime_bytes`` is the runtime context it needs on the device, shared with every other model
    of the process there (the device books the largest need once).
    """

    model_id: str
    device: str
    bytes_by_category: tuple[tuple[str, int], ...]
    #: "booked" (not loaded yet), "loaded" (in memory), or "offloaded" (moved to this device from a GPU).
    state: str = "booked"
    created_at: float = 0.0
    #: When the load finished (monotonic clock); None until then.
    loaded_at: float | None = None
    runtime_bytes: int = 0
    total_bytes: int = field(default=-1, compare=False)

    def __post_init__(self) -> None:
        if self.total_bytes < 0:
            object.__setattr__(self, "total_bytes", sum(b for _, b in self.bytes_by_category))

    def category(self, name: str) -> int:
        if name == "overhead":
            return self.runtime_bytes
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
    #: The runtime context booked once for every model of this process on the device (in reserved_bytes).
    runtime_bytes: int = 0

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


def breakdown_of(estimate: MemoryEstimate | Mapping[str, int]) -> tuple[tuple[tuple[str, int], ...], int]:
    """(the model's own bytes by category, the runtime context it needs) from an estimate or a mapping."""
    if isinstance(estimate, MemoryEstimate):
        return ((("weights", estimate.weights_bytes), ("kv_cache", estimate.kv_cache_bytes),
                 ("compute", estimate.compute_bytes)), estimate.overhead_bytes)
    unknown = set(estimate) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown memory categories {sorted(unknown)}; use {', '.join(CATEGORIES)}")
    if any(int(v) < 0 for v in estimate.values()):
        raise ValueError("bytes booked must not be negative")
    return tuple((k, int(estimate.get(k, 0))) for k in OWN_CATEGORIES), int(estimate.get("overhead", 0))


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
        #: Per thread: announcements held back while a caller's own lock is held.
        self._held = threading.local()
        self._profile: HardwareProfile | None = None
        self._gpus: dict[str, Any] = {}
        self._measured_at = float("-inf")
        #: device -> model id -> booking, and the bytes booked per device (kept in step).
        self._by_device: dict[str, dict[str, Reservation]] = {}
        self._booked: dict[str, int] = {}
        #: The same bookings by model (model id -> device -> booking).
        self._by_model: dict[str, dict[str, Reservation]] = {}
        #: The largest runtime context any booking on a device needs (kept in step with _by_device).
        self._runtime: dict[str, int] = {}
        #: device -> bytes of bookings released since the latest measurement, which it still shows as ours.
        self._released: dict[str, int] = {}
        #: device -> its computed numbers, dropped whenever that device's bookings or the measurement change.
        self._raw: dict[str, tuple[str, int, int, int, int | None, int, int, int, int, bool, int]] = {}
        #: device -> (the raw numbers, the row ``bookable`` made of them): the same row while nothing changed.
        self._rows: dict[str, tuple[object, tuple[str, str, int, int, int, int]]] = {}
        self._owned = set(owned_pids) if owned_pids is not None else {os.getpid()}
        self._rss_baseline: int | None = None
        self._pressure: dict[str, PressureLevel] = {}
        #: Bumped on every change (a booking, a release, a measurement): lets callers cache views.
        self._version = 0
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
            self._version += 1
            self._raw.clear()
            self._released.clear()
            self._profile = profile
            self._gpus = {g.device_id: g for g in profile.gpus if g.mig_parent is None}
            self._measured_at = self._clock()
            if self._rss_baseline is None and profile.host.process_rss_bytes is not None:
                loaded_cpu = sum(r.total_bytes for r in self._by_device.get("cpu", {}).values() if r.state != "booked")
                self._rss_baseline = profile.host.process_rss_bytes - loaded_cpu
            changes = self._pressure_changes_locked(self._devices_locked())
        for device, level in changes:
            self.pressure_changed.emit(device, level)

    def configure(self, settings: AllocatorSettings) -> None:
        """New reserves and thresholds at runtime: every device is re-evaluated (and announced)."""
        with self._lock:
            self.settings = settings
            self._version += 1
            self._raw.clear()
            devices = self._devices_locked()
            changes = self._pressure_changes_locked(devices)
        self._announce(devices, changes)

    def claim_pid(self, pid: int) -> None:
        """Count a process's GPU memory as ours (a loader that runs models in a child process)."""
        with self._lock:
            self._owned.add(pid)
            self._raw.clear()

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

    def snapshot_with_bookings(self) -> tuple[tuple[DeviceLedger, ...], tuple[Reservation, ...]]:
        """Every device's ledger and every booking, taken together (a device's booked bytes are then
        exactly its bookings plus its runtime context)."""
        with self._lock:
            ledgers = tuple(self._ledger_locked(d) for d in self._devices_locked())
            return ledgers, tuple(r for bookings in self._by_device.values() for r in bookings.values())

    def available_bytes(self, device: str) -> int:
        with self._lock:
            return self._available_locked(device)

    def reservations(self, device: str | None = None, model_id: str | None = None) -> tuple[Reservation, ...]:
        with self._lock:
            if model_id is not None and device is None:
                return tuple(self._by_model.get(model_id, {}).values())
            devices = [device] if device is not None else list(self._by_device)
            out: list[Reservation] = []
            for d in devices:
                bookings = self._by_device.get(d, {})
                if model_id is None:
                    out.extend(bookings.values())
                elif model_id in bookings:
                    out.append(bookings[model_id])
            return tuple(out)

    @property
    def version(self) -> int:
        """A number that changes whenever the ledger or the measurement does."""
        return self._version

    def _put(self, res: Reservation) -> None:
        self._version += 1
        self._raw.pop(res.device, None)
        bookings = self._by_device.setdefault(res.device, {})
        old = bookings.get(res.model_id)
        self._booked[res.device] = self._booked.get(res.device, 0) - (old.total_bytes if old else 0) + res.total_bytes
        bookings[res.model_id] = res
        self._by_model.setdefault(res.model_id, {})[res.device] = res
        self._runtime[res.device] = max((r.runtime_bytes for r in bookings.values()), default=0)

    def _pop(self, model_id: str, device: str) -> Reservation | None:
        bookings = self._by_device.get(device, {})
        res = bookings.pop(model_id, None)
        if res is not None:
            self._version += 1
            self._raw.pop(device, None)
            mine = self._by_model.get(model_id)
            if mine is not None:
                mine.pop(device, None)
                if not mine:
                    del self._by_model[model_id]
            self._booked[device] -= res.total_bytes
            before = self._runtime.get(device, 0)
            self._runtime[device] = max((r.runtime_bytes for r in bookings.values()), default=0)
            if res.loaded_at is not None and res.loaded_at <= self._measured_at:
                # The latest measurement still shows this model; until the next one, what it held
                # (and the context it alone needed) is no longer ours.
                freed = res.total_bytes + before - self._runtime[device]
                self._released[device] = self._released.get(device, 0) + freed
        return res

    def _runtime_locked(self, device: str) -> int:
        return self._runtime.get(device, 0)

    def runtime_bytes(self, device: str) -> int:
        """The runtime context booked on ``device`` (once for all of this process's models there)."""
        with self._lock:
            return self._runtime_locked(device)

    def _raw_locked(self, device: str) -> tuple[str, int, int, int, int | None, int, int, int, int, bool, int]:
        """(name, total, free, used, ours, booked, unreflected, reserve, available, lost, runtime) for a device;
        available may be negative (others grew into what we booked). Cached until the device changes."""
        raw = self._raw.get(device)
        if raw is None:
            raw = self._raw[device] = self._compute_locked(device)
        return raw

    def _compute_locked(self, device: str) -> tuple[str, int, int, int, int | None, int, int, int, int, bool, int]:
        profile = self._profile
        settings = self.settings
        reserve = settings.cpu_reserve_bytes if device == "cpu" else settings.gpu_reserve_bytes
        runtime = self._runtime.get(device, 0)
        booked = self._booked.get(device, 0) + runtime
        ours: int | None
        if device == "cpu":
            host = profile.host if profile else None
            total = host.total_bytes if host else 0
            free = host.available_bytes if host else 0
            used = total - free
            ours = None
            if host is not None and host.process_rss_bytes is not None and self._rss_baseline is not None:
                ours = max(0, host.process_rss_bytes - self._rss_baseline)
            name = "System RAM"
        else:
            gpu = self._gpus.get(device)
            if gpu is None or gpu.lost:
                return (gpu.name if gpu else device, 0, 0, 0, None, booked, booked, reserve, 0, True, runtime)
            total, free, used, name = gpu.total_bytes, gpu.free_bytes, gpu.used_bytes, gpu.name
            mine = [p for p in gpu.processes if p.pid in self._owned]
            if not mine:
                ours = 0
            elif all(p.used_bytes is not None for p in mine):
                ours = sum(p.used_bytes or 0 for p in mine)
            else:
                ours = None
        released = self._released.get(device, 0)
        if released:  # freed since the measurement, which still counts it as used (and as ours)
            free = min(total, free + released)
            ours = None if ours is None else max(0, ours - released)
        if ours is None:
            # The driver can't tell what we hold: bookings whose load finished before the latest
            # measurement are in it; the rest are not yet.
            done = [r for r in self._by_device.get(device, {}).values()
                    if r.loaded_at is not None and r.loaded_at <= self._measured_at]
            reflected = sum(r.total_bytes for r in done) + max((r.runtime_bytes for r in done), default=0)
            unreflected = booked - reflected
            available = free - unreflected - reserve
        else:
            unreflected = max(0, booked - ours)
            available = free + ours - max(booked, ours) - reserve
        return (name, total, free, used, ours, booked, unreflected, reserve, available, False, runtime)

    def _level_of(self, device: str, total: int, available: int, reserve: int, lost: bool) -> PressureLevel:
        """The device's level, with hysteresis from the level last announced for it."""
        if lost:
            return PressureLevel.CRITICAL
        fraction = 1.0 if total <= 0 else min(1.0, max(0.0, 1 - (available + reserve) / total))
        return self.settings.level(fraction, self._pressure.get(device))

    def _ledger_locked(self, device: str) -> DeviceLedger:
        name, total, free, used, ours, booked, unreflected, reserve, available, lost, runtime = self._raw_locked(device)
        level = self._level_of(device, total, available, reserve, lost)
        return DeviceLedger(device, name, total, free, used, ours, booked, unreflected, reserve, max(0, available),
                            level, lost, 0 if lost else available, runtime)

    def _available_locked(self, device: str) -> int:
        return max(0, self._raw_locked(device)[8])

    def bookable(self) -> tuple[tuple[str, str, int, int, int, int], ...]:
        """Per device, quickly: (device, name, total, available to book, runtime context, safety reserve);
        a lost device has total 0."""
        with self._lock:
            out = []
            rows = self._rows
            for device in self._devices_locked():
                raw = self._raw_locked(device)
                row = rows.get(device)
                if row is None or row[0] is not raw:
                    name, total, _, _, _, _, _, reserve, available, lost, runtime = raw
                    row = rows[device] = (raw, (device, name, 0 if lost else total, max(0, available), runtime,
                                                reserve))
                out.append(row[1])
            return tuple(out)

    def _pressure_changes_locked(self, devices: Iterable[str]) -> list[tuple[str, PressureLevel]]:
        changes = []
        for device in devices:
            raw = self._raw_locked(device)
            level = self._level_of(device, raw[1], raw[8], raw[7], raw[9])
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
        not counted against the new one). An "overhead" part is the runtime context: the device
        books it once for all models, so only what it adds to the context already booked counts.
        """
        return self.reserve_all(model_id, {device: estimate}, state=state, force=force)[0]

    def reserve_all(
        self,
        model_id: str,
        shares: Mapping[str, MemoryEstimate | Mapping[str, int]],
        *,
        state: str = "booked",
        force: bool = False,
    ) -> tuple[Reservation, ...]:
        """Book a model on several devices at once: every device fits, or nothing is booked.

        Raises :class:`AllocationError` naming the first device that does not fit.
        """
        parts = {device: breakdown_of(estimate) for device, estimate in shares.items()}
        with self._lock:
            previous = {d: self._pop(model_id, d) for d in parts}
            if not force:
                for device, (own, runtime) in parts.items():
                    needed = self._adds_locked(device, sum(b for _, b in own), runtime)
                    available = self._available_locked(device)
                    if needed > available:
                        for old in previous.values():
                            if old is not None:
                                self._put(old)
                        raise AllocationError(model_id, device, needed, available)
            now = self._clock()
            made = tuple(Reservation(model_id, device, own, state, now, now if state != "booked" else None, runtime)
                         for device, (own, runtime) in parts.items())
            for res in made:
                self._put(res)
            changes = self._pressure_changes_locked(list(parts))
        if self.logger.isEnabledFor(logging.INFO):
            for res in made:
                self.logger.info("booked %s for %s on %s", format_gib(res.total_bytes, 2), model_id, res.device)
        self._announce(list(parts), changes)
        return made

    def _adds_locked(self, device: str, own_bytes: int, runtime_bytes: int) -> int:
        return own_bytes + max(0, runtime_bytes - self._runtime_locked(device))

    def set_state(self, model_id: str, state: str, device: str | None = None) -> None:
        """Mark a model's bookings as loaded (or back to booked)."""
        with self._lock:
            touched = []
            for dev, bookings in self._by_device.items():
                res = bookings.get(model_id)
                if res is not None and (device is None or dev == device):
                    loaded_at = self._clock() if state != "booked" else None
                    bookings[model_id] = self._by_model[model_id][dev] = Reservation(
                        res.model_id, dev, res.bytes_by_category, state, res.created_at, loaded_at,
                        res.runtime_bytes, res.total_bytes)
                    touched.append(dev)
                    raw = self._raw.get(dev)
                    if raw is None or raw[4] is None:  # only then does "loaded before the measurement" count
                        self._raw.pop(dev, None)
            self._version += 1
            changes = self._pressure_changes_locked(touched)
        self._announce(touched, changes)

    def release(self, model_id: str, device: str | None = None) -> tuple[Reservation, ...]:
        """Release a model's bookings (all devices, or one). Unknown models release nothing."""
        with self._lock:
            devices = [device] if device is not None else list(self._by_model.get(model_id, ()))
            gone = [r for r in (self._pop(model_id, d) for d in devices) if r is not None]
            changes = self._pressure_changes_locked([r.device for r in gone])
        if gone and self.logger.isEnabledFor(logging.INFO):
            self.logger.info("released %s for %s", format_gib(sum(r.total_bytes for r in gone), 2), model_id)
        self._announce([r.device for r in gone], changes)
        return tuple(gone)

    def _announce(self, devices: Iterable[str], changes: list[tuple[str, PressureLevel]]) -> None:
        held = getattr(self._held, "news", None)
        if held is not None:  # a caller holds its own lock: announce once it lets go (see ``hold_news``)
            held.append((list(devices), changes))
            return
        for device in dict.fromkeys(devices):
            self.allocation_changed.emit(device)
        for device, level in changes:
            self.pressure_changed.emit(device, level)

    def hold_news(self) -> None:
        """Keep this thread's announcements until :meth:`release_news` (a caller about to book under a
        lock of its own, whose subscribers must never run under it). Nests."""
        if getattr(self._held, "depth", 0) == 0:
            self._held.news = []
        self._held.depth = getattr(self._held, "depth", 0) + 1

    def release_news(self) -> None:
        """Announce what :meth:`hold_news` kept, once the outermost hold ends."""
        self._held.depth -= 1
        if self._held.depth > 0:
            return
        news, self._held.news = self._held.news, None
        for devices, changes in news:
            self._announce(devices, changes)

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
        """GiB booked on every GPU, runtime contexts included."""
        return gib(sum(x.reserved_bytes for x in self.snapshot() if x.device != "cpu"))

    def get_total_allocated_ram(self) -> float:
        return gib(self.ledger("cpu").reserved_bytes)

    def is_under_memory_pressure(self) -> bool:
        """True when any device is at high or critical pressure."""
        return any(x.pressure.rank >= PressureLevel.HIGH.rank and not x.lost for x in self.snapshot()
                   if x.total_bytes > 0)
