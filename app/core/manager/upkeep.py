"""Upkeep: what the manager does on its own, on each measurement or timer tick, and at start.

Keep-alive expiry (idle, unpinned models past their keep-alive are unloaded, with the reason),
re-quantization proposals (applied only when the settings say so), the preload list, and the
swap that re-quantization and hosts use (with rollback). It acts only through the facade's public
methods and the lifecycle, like any host would.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.calls import run_sync
from app.core.manager.errors import LoaderError, PinnedModelError, UnknownModelError
from app.core.manager.keep_alive import Ticker, expired
from app.core.manager.lifecycle import InvalidTransitionError, LoadedModel, ModelState
from app.core.manager.operations import Lifecycle
from app.core.manager.requantize import QuantizationProposal, Requantizer
from app.core.memory_allocator import AllocationError
from app.core.quantization_strategy import PlacementError, QuantizationLevel

if TYPE_CHECKING:
    from app.core.model_resource_manager import ModelResourceManager

__all__ = ["Upkeep"]

_log = logging.getLogger("app.core.model_resource_manager")


class Upkeep:
    def __init__(self, manager: ModelResourceManager, life: Lifecycle) -> None:
        self._m = manager
        self._life = life
        self._requantizer = Requantizer(manager.settings.requantize_after_ticks, manager.settings.type_priority)
        self._ticker = Ticker(lambda: self.tick(manager.hardware_profiler.get_profile()))

    def tick(self, profile: HardwareProfile | None) -> None:
        m = self._m
        if profile is not None:
            m.memory_allocator.update(profile)
        with self._life.lock:
            gone = expired(self._life.records.values(), m.clock())
        for r in gone:
            why = f"idle longer than its keep-alive ({r.keep_alive_s:g} s)"
            try:
                run_sync(self._life.unload(r.model_id, why, policy=True))
            except (InvalidTransitionError, PinnedModelError, LoaderError) as err:
                _log.warning("keep-alive could not unload %s: %s", r.model_id, err)
        with self._life.lock:
            records = list(self._life.records.values())
        for proposal in self._requantizer.proposals(m.memory_allocator.snapshot(), records):
            m.quantization_proposed.emit(proposal)
            if m.settings.auto_requantize:
                self._apply(proposal)

    def _apply(self, p: QuantizationProposal) -> None:
        if self._m.state_of(p.model_id) != ModelState.LOADED:
            return
        try:
            self.swap(p.model_id, p.model_id, level=p.proposed)
        except Exception as err:  # noqa: BLE001 - a failed re-quantization leaves the old model loaded
            _log.warning("re-quantizing %s failed: %s", p.model_id, err)

    def preload(self) -> list[str]:
        failed = []
        for item in self._m.settings.preload:
            mid, level = (item, None) if isinstance(item, str) else item
            try:
                self._m.load(mid, level, keep_alive_s=-1)
            except (UnknownModelError, AllocationError, PlacementError, LoaderError, ValueError) as err:
                _log.error("preloading %s failed: %s", mid, err)
                failed.append(f"{mid}: {err}")
        return failed

    def start(self, interval_s: float) -> None:
        self._ticker.start(interval_s)

    def stop(self) -> None:
        self._ticker.stop()

    def swap(self, old_id: str, new_id: str, *, level: QuantizationLevel | str | None = None,
             device: str | None = None, context: int | None = None) -> LoadedModel:
        m = self._m
        m.request(new_id, level, device, context=context)  # a level it cannot have is refused before anything moves
        with self._life.lock:
            old = self._life.require(old_id)
            if old.pinned:
                raise PinnedModelError(f"{old.model_id} is pinned; unpin it to swap it out")
            keep = (old.model_id, old.level, old.placement, old.keep_alive_s, old.preferred)
        m.unload(keep[0], reason=f"swapped out for {new_id}")
        m.evicted.emit(keep[0], f"swapped out for {new_id}")
        try:
            loaded = m.load(new_id, level, device, context=context)
            if loaded.model_id == keep[0]:  # re-quantized in place: remember what the user first asked for
                self._life.replace_preferred(loaded.model_id, keep[4])
            return loaded
        except BaseException:
            mid, lv, placement, ka, _ = keep
            try:
                m.load(mid, lv, keep_alive_s=ka, context=placement.context if placement else None)
                _log.warning("swap to %s failed; %s was loaded back", new_id, mid)
            except Exception as err:  # noqa: BLE001
                _log.error("swap to %s failed and %s could not be loaded back: %s", new_id, mid, err)
            raise
