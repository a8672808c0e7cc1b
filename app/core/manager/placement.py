"""The objects one placement decision is made of, from the request to the booking.

A :class:`PlacementRequest` and a :class:`LedgerView` go into the planner; a :class:`Decision` (a
:class:`Placement` plus the :class:`Action` s that make room for it) or a :class:`Refusal` comes out.
The same Placement travels from the picker to ``load(placement=...)`` and to the allocator. All are
immutable; bytes are ints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from app.core.estimation import MemoryEstimate
from app.core.units import format_gib

if TYPE_CHECKING:
    from app.core.model_spec import ModelMetadata, ModelType
    from app.core.quantization_strategy import Candidate
    from app.core.runtime_profile import RuntimeProfile

__all__ = [
    "Action",
    "Decision",
    "DeviceRoom",
    "Holding",
    "LedgerView",
    "Placement",
    "PlacementKind",
    "PlacementRequest",
    "Policy",
    "Refusal",
    "Share",
]

PlacementKind = Literal["gpu", "split", "partial", "cpu"]


class Share(NamedTuple):
    """What a placement books on one device."""

    device: str
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    #: The runtime context this model needs there; one context serves every model of the process.
    runtime_bytes: int
    #: Layers on this device (None for models without layers, or whole placements of them).
    layers: int | None = None

    @property
    def own_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes

    def adds_to(self, room: DeviceRoom) -> int:
        """What booking this share adds on ``room``: its own bytes, and the part of its runtime context
        the device has not booked already."""
        return self.own_bytes + max(0, self.runtime_bytes - room.runtime_bytes)

    def parts(self) -> dict[str, int]:
        """The allocator's categories ("overhead" is the shared runtime context)."""
        return {"weights": self.weights_bytes, "kv_cache": self.kv_cache_bytes, "compute": self.compute_bytes,
                "overhead": self.runtime_bytes}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and at which level a model loads: per-device bytes by category, GPU layers, and why."""

    model_id: str
    level: str
    kind: PlacementKind
    shares: tuple[Share, ...]
    #: The whole model's estimate (on a GPU, or on the CPU for a CPU placement).
    estimate: MemoryEstimate
    reason: str
    context: int | None = None
    gpu_layers: int | None = None
    layers: int | None = None
    alternatives: tuple[Candidate, ...] = field(default=(), compare=False)

    @property
    def device(self) -> str:
        """``cuda:0``, ``cpu``, ``cuda:0+cuda:1`` (split) or ``cuda:0+cpu`` (partial)."""
        return "+".join(s.device for s in self.shares)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(s.device for s in self.shares)

    @property
    def home_device(self) -> str:
        return self.shares[0].device

    @property
    def own_bytes(self) -> int:
        return sum(s.own_bytes for s in self.shares)

    @property
    def quantization(self) -> str:  # the name the seed's plan used
        return self.level

    def share_on(self, device: str) -> Share | None:
        return next((s for s in self.shares if s.device == device), None)

    def bookings(self) -> dict[str, dict[str, int]]:
        """What the allocator books: device → category → bytes."""
        return {s.device: s.parts() for s in self.shares}

    def describe(self) -> str:
        where = {"gpu": f"on {self.device}", "cpu": "on the CPU (RAM)",
                 "split": f"split across {', '.join(self.devices)}",
                 "partial": f"partly on {self.home_device}, partly in RAM"}[self.kind]
        return f"{self.level} {where}"


class Action(NamedTuple):
    """Something done to another model so a placement fits: offload it to RAM, unload it, or move it."""

    kind: Literal["offload", "unload", "move"]
    model_id: str
    name: str
    source: str
    #: "cpu" for an offload, the destination GPU for a move, None for an unload.
    target: str | None
    frees_bytes: int
    reason: str

    def describe(self) -> str:
        verb = {"offload": "offload", "unload": "unload", "move": "move"}[self.kind]
        where = {"offload": f"from {self.source} to RAM", "unload": f"from {self.source}",
                 "move": f"from {self.source} to {self.target}"}[self.kind]
        return f"{verb} {self.name} {where} (frees {format_gib(self.frees_bytes, 2)} on {self.source})"


@dataclass(frozen=True, slots=True)
class Decision:
    """A placement and the actions that make it possible (none when it fits as things are)."""

    placement: Placement
    actions: tuple[Action, ...] = ()

    @property
    def model_id(self) -> str:
        return self.placement.model_id

    @property
    def level(self) -> str:
        return self.placement.level

    @property
    def device(self) -> str:
        return self.placement.device

    @property
    def reason(self) -> str:
        return self.placement.reason

    def describe(self) -> str:
        text = self.placement.describe()
        if self.actions:
            text += " after: " + "; ".join(a.describe() for a in self.actions)
        return text

    def to_dict(self, available_bytes: int | None = None) -> dict[str, Any]:
        """The CLI contract's plan document."""
        p = self.placement
        est = p.estimate
        needed = sum(s.own_bytes + s.runtime_bytes for s in p.shares)
        return {
            "model_id": p.model_id, "quantization": p.level, "estimate": est.to_dict(), "device": p.device,
            "placement": p.kind, "fits": True, "gpu_layers": p.gpu_layers,
            "headroom_bytes": (available_bytes - needed) if available_bytes is not None else 0,
            "needed_bytes": needed, "reason": p.reason,
            "shares": [{"device": s.device, **s.parts(), "layers": s.layers} for s in p.shares],
            "actions": [{"action": a.kind, "model_id": a.model_id, "source": a.source, "target": a.target,
                         "frees_bytes": a.frees_bytes, "reason": a.reason} for a in self.actions],
            "alternatives": [{"quantization": c.quantization, "total_bytes": c.estimate.total_bytes, "fits": c.fits,
                              "quality_ppl": c.quality_ppl} for c in p.alternatives],
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a model cannot be placed: the numbers, and the options that would work."""

    model_id: str
    level: str | None
    device: str | None
    needed_bytes: int
    available_bytes: int
    reason: str
    options: tuple[str, ...] = ()
    #: The smallest estimate considered (for the CLI's plan document).
    estimate: MemoryEstimate | None = None
    alternatives: tuple[Candidate, ...] = field(default=(), compare=False)
    #: "memory" (too little room), "capability" (the GPU lacks the kernels), "device" (no such device).
    cause: str = "memory"

    def message(self) -> str:
        text = self.reason
        if self.options:
            text += ". Options: " + "; ".join(self.options)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id, "quantization": self.level or "", "device": self.device or "",
            "estimate": self.estimate.to_dict() if self.estimate else None, "placement": "none", "fits": False,
            "gpu_layers": None, "headroom_bytes": self.available_bytes - self.needed_bytes,
            "needed_bytes": self.needed_bytes, "available_bytes": self.available_bytes, "reason": self.reason,
            "options": list(self.options), "shares": [], "actions": [],
            "alternatives": [{"quantization": c.quantization, "total_bytes": c.estimate.total_bytes, "fits": c.fits,
                              "quality_ppl": c.quality_ppl} for c in self.alternatives],
        }


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What the caller asks for. ``level``/``device`` None: the planner chooses.

    ``allow_cpu`` None means: the CPU only where the machine has no usable GPU (a GPU user who is
    sent to the CPU silently gets a model many times slower; so with a GPU, CPU is an option the
    refusal names, not a fallback). A partial offload (layers in RAM, most on the GPU) is allowed
    unless ``allow_cpu=False``; with an explicit device it needs ``allow_cpu=True``.
    """

    metadata: ModelMetadata
    level: str | None = None
    device: str | None = None
    context: int | None = None
    make_room: bool = True
    allow_cpu: bool | None = None
    #: KV cache type (LLMs): f16, q8_0, q4_0 …
    kv_dtype: str = "f16"
    #: Images at once (diffusion), or the token batch (LLMs); None: the runtime's default.
    batch: int | None = None
    #: Output size in pixels (image and video models); None: the model's default.
    width: int | None = None
    height: int | None = None
    #: Fill in every level considered (``alternatives``) for display: the CLI and the picker.
    explain: bool = False
    #: The runtime and its settings (None: each level's own runtime with its defaults). A runtime named
    #: here limits the levels to those it loads (GGUF levels for llama.cpp and Ollama).
    runtime: RuntimeProfile | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The planner's knobs. Without a chosen level, levels at or under ``quality_floor_ppl`` are
    tried on the GPUs (free room, then making room, moving, splitting) before lower ones."""

    type_priority: Mapping[ModelType, int]
    quality_floor_ppl: float = 0.3
    allow_partial: bool = True
    #: (estimate, model id, level, context) → the estimate corrected by what real loads measured.
    calibrate: Callable[[MemoryEstimate, str, str, int | None], MemoryEstimate] | None = None


class DeviceRoom(NamedTuple):
    """One device as the planner sees it: what can still be booked, after the safety margin."""

    device: str
    name: str
    total_bytes: int
    available_bytes: int
    #: The runtime context already booked there.
    runtime_bytes: int
    compute_capability: tuple[int, int] | None = None
    margin_bytes: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.device != "cpu"


class Holding(NamedTuple):
    """A model the manager holds, as the planner sees it."""

    model_id: str
    name: str
    model_type: ModelType
    priority: int
    last_used: float
    pinned: bool
    #: Loaded and idle: the policy may offload, unload or move it.
    movable: bool
    #: Own bytes per device (runtime contexts are the device's).
    bytes_by_device: tuple[tuple[str, int], ...]
    weights_bytes: int
    placement: Placement | None = None
    compute_capability_min: tuple[int, int] | None = None

    def bytes_on(self, device: str) -> int:
        return sum(b for d, b in self.bytes_by_device if d == device)

    @property
    def total_bytes(self) -> int:
        return sum(b for _, b in self.bytes_by_device)


class LedgerView:
    """Devices and holdings at one moment: the planner's whole view of the world.

    ``holdings`` may be given, or come from ``holdings_source`` the first time a step needs them
    (most loads fit as things are and never look).
    """

    __slots__ = ("devices", "now", "_holdings", "_source")

    def __init__(self, devices: tuple[DeviceRoom, ...], holdings: tuple[Holding, ...] | None = None, *,
                 now: float = 0.0, holdings_source: Callable[[], tuple[Holding, ...]] | None = None) -> None:
        self.devices = tuple(devices)
        self.now = now
        self._holdings = tuple(holdings) if holdings is not None else None
        self._source = holdings_source

    @property
    def holdings(self) -> tuple[Holding, ...]:
        if self._holdings is None:
            self._holdings = self._source() if self._source is not None else ()
        return self._holdings

    @property
    def gpus(self) -> tuple[DeviceRoom, ...]:
        return tuple(d for d in self.devices if d.is_gpu)

    @property
    def rooms(self) -> dict[str, DeviceRoom]:
        return {d.device: d for d in self.devices}
