"""What views and the planner may ask about the ledger, without reaching into the allocator."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.core.manager.lifecycle import ModelState
from app.core.manager.operations import Lifecycle
from app.core.manager.placement import DeviceRoom, Holding, LedgerView
from app.core.manager.settings import ManagerSettings
from app.core.memory_allocator import DeviceLedger, MemoryAllocator, PressureLevel, Reservation

__all__ = ["Booking", "LedgerQueries", "RUNTIME_LABEL"]

#: The label of a device's shared runtime context in ``bookings``.
RUNTIME_LABEL = "runtime context"


@dataclass(frozen=True, slots=True)
class Booking:
    """One band of a device's bookings: a model's own bytes, or the shared runtime context (model_id None)."""

    device: str
    model_id: str | None
    label: str
    bytes: int
    state: str


class LedgerQueries:
    """Reads the allocator and the lifecycle's records for views and the planner."""

    def __init__(self, allocator: MemoryAllocator, life: Lifecycle, settings: ManagerSettings) -> None:
        self._allocator = allocator
        self._life = life
        self._settings = settings
        self._cache: tuple[tuple[int, int], LedgerView] | None = None
        self._caps: tuple[object, dict[str, tuple[int, int] | None]] = (object(), {})
        self._rooms: dict[str, tuple[object, DeviceRoom]] = {}

    def ledgers(self) -> tuple[DeviceLedger, ...]:
        """Every device's ledger now (consistent with each other)."""
        return self._allocator.snapshot()

    def devices(self) -> list[str]:
        return self._allocator.devices()

    def bookings(self, device: str) -> tuple[Booking, ...]:
        """What is booked on ``device``: one entry per model, and the shared runtime context."""
        # A booking that is what the runtime reported allocating (llama.cpp) says so on the graph's band.
        names = {mid: r.metadata.name + (" (measured)" if r.measured else "")
                 for mid, r in list(self._life.records.items())}
        out = [Booking(device, r.model_id, names.get(r.model_id, r.model_id), r.total_bytes, r.state)
               for r in self._allocator.reservations(device)]
        runtime = self._allocator.runtime_bytes(device)
        if runtime:
            out.append(Booking(device, None, RUNTIME_LABEL, runtime, "shared"))
        return tuple(out)

    def reservations(self) -> tuple[Reservation, ...]:
        """Every booking, per model and device, with its bytes by category (immutable)."""
        return self._allocator.reservations()

    def ledgers_and_bookings(self) -> tuple[tuple[DeviceLedger, ...], tuple[Reservation, ...]]:
        """Every device's ledger and every booking, consistent with each other."""
        return self._allocator.snapshot_with_bookings()

    def safety_margin(self, device: str) -> int:
        """Bytes kept free on ``device`` (never booked)."""
        return self._settings.margins.for_device(device)

    def pressure(self, device: str) -> PressureLevel:
        return self._allocator.pressure(device)

    def available_bytes(self, device: str) -> int:
        """What can still be booked on ``device`` now."""
        return self._allocator.available_bytes(device)

    def allowed_actions(self, model_id: str) -> frozenset[str]:
        """What a user may do to a model now: unload, offload, restore, move, pin, unpin, cancel (a load)."""
        with self._life.lock:
            r = self._life.records.get(model_id)
            if r is None:
                return frozenset()
            out = {"unpin" if r.pinned else "pin"}
            if r.pinned:
                if r.state == ModelState.OFFLOADED:
                    out.add("restore")
                return frozenset(out)
            if r.state == ModelState.LOADED:
                out.add("unload")
                if r.device != "cpu":
                    out.add("offload")
                gpus = [d for d in self._allocator.devices() if d != "cpu"]
                if r.placement is not None and r.placement.kind == "gpu" and len(gpus) > 1:
                    out.add("move")
            elif r.state == ModelState.OFFLOADED:
                out |= {"restore", "unload"}
            elif r.state == ModelState.FAILED:
                out.add("unload")
            elif r.state == ModelState.LOADING and callable(getattr(self._life.loader, "cancel", None)):
                out.add("cancel")  # the runtime can stop a load in progress (llama.cpp's)
            return frozenset(out)

    # --- the planner's view ---------------------------------------------------------------------
    def ledger_view(self, exclude: Iterable[str] = ()) -> LedgerView:
        """Devices with what is bookable now, and (when a step needs them) the models held.

        Bytes held by the ``exclude`` models count as free (a model being planned again).
        """
        exclude = tuple(exclude)
        key = (self._allocator.version, self._life.version)
        cached = self._cache
        if cached is not None and cached[0] == key and not exclude:
            return cached[1]
        profile = self._allocator.hardware
        if profile is not self._caps[0]:
            self._caps = (profile, {g.device_id: g.compute_capability for g in profile.gpus} if profile else {})
        caps = self._caps[1]
        freed: dict[str, int] = {}
        for mid in exclude:
            for r in self._allocator.reservations(model_id=mid):
                freed[r.device] = freed.get(r.device, 0) + r.total_bytes
        made = self._rooms
        rooms = []
        for row in self._allocator.bookable():
            device = row[0]
            room = made.get(device)
            if room is None or room[0] is not row:  # the same row object: nothing changed on the device
                room = made[device] = (row, DeviceRoom(device, row[1], row[2], row[3], row[4], caps.get(device),
                                                       row[5]))
            extra = freed.get(device)
            rooms.append(room[1] if not extra else room[1]._replace(available_bytes=row[3] + extra))
        view = LedgerView(tuple(rooms), now=self._life.clock(), holdings_source=self._holdings)
        if not exclude:
            self._cache = (key, view)
        return view

    def _holdings(self) -> tuple[Holding, ...]:
        by_model: dict[str, list[tuple[str, int]]] = {}
        weights: dict[str, int] = {}
        for res in self._allocator.reservations():
            by_model.setdefault(res.model_id, []).append((res.device, res.total_bytes))
            weights[res.model_id] = weights.get(res.model_id, 0) + res.category("weights")
        priority = self._settings.type_priority
        with self._life.lock:
            records = list(self._life.records.values())
        out = []
        for r in records:
            meta = r.metadata
            cc = meta.compute_capability_min
            out.append(Holding(r.model_id, meta.name, meta.model_type, priority.get(meta.model_type, 0), r.last_used,
                               r.pinned, r.state == ModelState.LOADED and r.busy == 0,
                               tuple(by_model.get(r.model_id, ())), weights.get(r.model_id, 0), r.placement,
                               cc))
        return tuple(out)
