"""ViewPlanner: how views ask the core's one planner, never deciding anything themselves.

Every figure a view shows about fit comes from ``ModelResourceManager.decide`` against the
manager's ledger: the browser's "best level", the picker's per-level, per-device cells and its
recommendation. A panel given no manager (a host that loads models itself) plans with a private
manager that books nothing and sees the measurements the panel is shown. A request that names no
runtime profile gets the manager's own (``runtime_profile``), as ``manager.plan`` and ``load`` do.
"""

from __future__ import annotations

from typing import Any

from app.core.hardware.snapshot import HardwareProfile
from app.core.manager.placement import Decision, DeviceRoom, PlacementRequest, Refusal
from app.core.memory_allocator import AllocatorSettings
from app.core.quantization_strategy import QuantizationStrategy
from app.core.runtime_profile import RuntimeProfile, lighter_settings
from app.widgets.ports import runtime_profile_of

__all__ = ["ViewPlanner", "Answer", "kind_of"]

Answer = Decision | Refusal


def kind_of(answer: Answer | None) -> str:
    """"gpu", "split", "partial", "cpu" for a decision; "none" for a refusal or nothing."""
    return answer.placement.kind if isinstance(answer, Decision) else "none"


class _Latest:
    """A profiler stand-in for a planning-only manager: the latest measurement the view was shown."""

    def __init__(self, profile: HardwareProfile | None) -> None:
        self.profile = profile

    def get_profile(self) -> HardwareProfile:
        if self.profile is None:
            from app.core.hardware.snapshot import HostMemory

            empty = HostMemory(total_bytes=0, available_bytes=0, used_bytes=0)
            return HardwareProfile(timestamp=0.0, gpus=(), host=empty)
        return self.profile


class ViewPlanner:
    """The manager views plan with (the host's, or a private planning-only one)."""

    def __init__(self, registry: Any, manager: Any = None, strategy: QuantizationStrategy | None = None,
                 profile: HardwareProfile | None = None) -> None:
        self._private: _Latest | None = None
        self._lighter: dict[str, str] = {}
        if manager is None:
            from app.core.model_resource_manager import ManagerSettings, ModelResourceManager

            margins = strategy or QuantizationStrategy()
            self._private = _Latest(profile)
            if registry is None:  # plans are asked with metadata in hand: no need for the user's own store
                from app.core.model_registry import ModelRegistry

                registry = ModelRegistry(user_store=None)
            manager = ModelResourceManager(
                profiler=self._private, registry=registry,  # type: ignore[arg-type]
                settings=ManagerSettings(allocator=AllocatorSettings(
                    gpu_reserve_bytes=margins.gpu_headroom_bytes, cpu_reserve_bytes=margins.ram_headroom_bytes)))
        self.manager = manager

    @property
    def planning_only(self) -> bool:
        """True when this planner's manager books nothing (the host loads models itself)."""
        return self._private is not None

    def observe(self, profile: HardwareProfile) -> None:
        """A new measurement (only a private manager needs it: a host's manager is fed by its sampler)."""
        if self._private is not None and profile is not self._private.profile:  # once per sample
            self._private.profile = profile
            self.manager.observe(profile)

    def rooms(self, exclude: str | None = None) -> tuple[DeviceRoom, ...]:
        """Every device with what can be booked there now (``exclude``'s own bytes counted as free)."""
        return self.manager.ledger_view(exclude=(exclude,) if exclude else ()).devices

    def safety_margin(self, device: str) -> int:
        return int(self.manager.safety_margin(device))

    def best(self, metadata: Any, device: str | None = None) -> Answer:
        """The best level as things are, touching nothing (the browser's column): CPU counts, as an answer.

        Where that is the CPU or nothing, the core's lighter settings (VAE tiling, text encoders on the CPU,
        one component at a time; a q8_0 KV cache) are asked in turn: the first that fits a GPU is the answer,
        and :meth:`lighter_label` says which, so the view shows the condition next to the fit."""
        answer = self.decide(metadata, device=device, make_room=False, allow_cpu=True)
        self._lighter.pop(metadata.id, None)
        if device == "cpu" or (isinstance(answer, Decision) and answer.placement.kind != "cpu"):
            return answer
        base = runtime_profile_of(self.manager) or RuntimeProfile()
        for label, profile in lighter_settings(metadata.model_type, base):
            alt = self.decide(metadata, device=device, make_room=False, allow_cpu=False, runtime=profile)
            if isinstance(alt, Decision):
                self._lighter[metadata.id] = label
                return alt
        return answer

    def lighter_label(self, model_id: str) -> str | None:
        """The lighter setting the last :meth:`best` for this model needed ("with VAE tiling"), or None."""
        return self._lighter.get(model_id)

    def request(self, metadata: Any, *, level: str | None = None, device: str | None = None,
                context: int | None = None, make_room: bool | None = None, allow_cpu: bool | None = None,
                width: int | None = None, height: int | None = None, batch: int | None = None,
                explain: bool = False, runtime: RuntimeProfile | None = None) -> PlacementRequest:
        """The request :meth:`decide` asks: the manager's defaults (``make_room``: auto_swap; ``runtime``: its
        ``runtime_profile``), and ``allow_cpu`` for a CPU device."""
        settings = self.manager.settings
        return PlacementRequest(
            metadata, level, device, context,
            make_room=settings.auto_swap if make_room is None else make_room,
            allow_cpu=True if device == "cpu" else allow_cpu, batch=batch, width=width, height=height,
            explain=explain, runtime=runtime if runtime is not None else runtime_profile_of(self.manager))

    def decide(self, metadata: Any, *, level: str | None = None, device: str | None = None,
               context: int | None = None, make_room: bool | None = None, allow_cpu: bool | None = None,
               width: int | None = None, height: int | None = None, batch: int | None = None,
               explain: bool = False, runtime: RuntimeProfile | None = None) -> Answer:
        """The manager's answer to :meth:`request` with these arguments."""
        return self.manager.decide(self.request(
            metadata, level=level, device=device, context=context, make_room=make_room, allow_cpu=allow_cpu,
            width=width, height=height, batch=batch, explain=explain, runtime=runtime))
