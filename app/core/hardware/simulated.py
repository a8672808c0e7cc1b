"""Simulated GPUs for demos, tests and screenshots.

A spec names cards: ``rtx4090``, ``2xrtx4090``, ``a100-80gb,rtx3060``, or a JSON file. Each card has
its published memory size; usage is a deterministic function of an injectable clock, so a test or a
screenshot taken at the same clock value always sees the same numbers.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.core.hardware.snapshot import BackendStatus, GpuDevice, GpuProcess
from app.core.units import GiB, MiB


class SimulationSpecError(ValueError):
    """A ``--simulate`` spec that names no known card or is malformed."""


@dataclass(frozen=True)
class CardModel:
    """A real card's public facts."""

    key: str
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int]
    power_limit_w: float


def _card(key: str, name: str, gib: float, cc: tuple[int, int], watts: float) -> CardModel:
    return CardModel(key, name, int(gib * GiB), cc, watts)


#: Published memory size, compute capability and board power of real cards (vendor spec sheets).
CARDS: dict[str, CardModel] = {
    c.key: c
    for c in (
        _card("rtx5090", "NVIDIA GeForce RTX 5090", 32, (12, 0), 575),
        _card("rtx5080", "NVIDIA GeForce RTX 5080", 16, (12, 0), 360),
        _card("rtx4090", "NVIDIA GeForce RTX 4090", 24, (8, 9), 450),
        _card("rtx4080", "NVIDIA GeForce RTX 4080", 16, (8, 9), 320),
        _card("rtx4070ti", "NVIDIA GeForce RTX 4070 Ti", 12, (8, 9), 285),
        _card("rtx4060ti-16gb", "NVIDIA GeForce RTX 4060 Ti 16GB", 16, (8, 9), 165),
        _card("rtx4060", "NVIDIA GeForce RTX 4060", 8, (8, 9), 115),
        _card("rtx3090", "NVIDIA GeForce RTX 3090", 24, (8, 6), 350),
        _card("rtx3080", "NVIDIA GeForce RTX 3080", 10, (8, 6), 320),
        _card("rtx3060", "NVIDIA GeForce RTX 3060", 12, (8, 6), 170),
        _card("rtx2080ti", "NVIDIA GeForce RTX 2080 Ti", 11, (7, 5), 250),
        _card("gtx1080ti", "NVIDIA GeForce GTX 1080 Ti", 11, (6, 1), 250),
        _card("rtxa6000", "NVIDIA RTX A6000", 48, (8, 6), 300),
        _card("rtx6000ada", "NVIDIA RTX 6000 Ada Generation", 48, (8, 9), 300),
        _card("t4", "Tesla T4", 16, (7, 5), 70),
        _card("l4", "NVIDIA L4", 24, (8, 9), 72),
        _card("l40s", "NVIDIA L40S", 48, (8, 9), 350),
        _card("v100-16gb", "Tesla V100-SXM2-16GB", 16, (7, 0), 300),
        _card("v100-32gb", "Tesla V100-SXM2-32GB", 32, (7, 0), 300),
        _card("a100-40gb", "NVIDIA A100-SXM4-40GB", 40, (8, 0), 400),
        _card("a100-80gb", "NVIDIA A100-SXM4-80GB", 80, (8, 0), 400),
        _card("h100-80gb", "NVIDIA H100 80GB HBM3", 80, (9, 0), 700),
        _card("h200", "NVIDIA H200", 141, (9, 0), 700),
    )
}

_ALIASES = {"a100": "a100-80gb", "h100": "h100-80gb", "v100": "v100-16gb", "rtx4060ti": "rtx4060ti-16gb"}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP = {_norm(k): k for k in CARDS} | {_norm(a): k for a, k in _ALIASES.items()}


def known_cards() -> list[str]:
    return sorted(CARDS)


@dataclass(frozen=True)
class SimulatedProcess:
    name: str
    #: Mean share of the card's memory, how much it swings, and how fast (seconds per cycle).
    share: float
    swing: float = 0.0
    period_s: float = 60.0
    kind: str = "compute"
    fixed_bytes: int | None = None


@dataclass(frozen=True)
class SimulatedGpu:
    card: CardModel
    processes: tuple[SimulatedProcess, ...]
    load: float = 0.5


_MIXES: tuple[tuple[SimulatedProcess, ...], ...] = (
    (
        SimulatedProcess("Xorg", 0.0, kind="graphics", fixed_bytes=412 * MiB),
        SimulatedProcess("ollama", 0.10, 0.02, 97.0),
        SimulatedProcess("python3", 0.05, 0.04, 41.0),
    ),
    (
        SimulatedProcess("python3", 0.08, 0.03, 53.0),
        SimulatedProcess("firefox", 0.0, kind="graphics", fixed_bytes=268 * MiB),
    ),
    (
        SimulatedProcess("llama-server", 0.20, 0.01, 120.0),
        SimulatedProcess("blender", 0.04, 0.03, 29.0),
    ),
)


def _gpu_from_json(i: int, item: Any, where: str) -> SimulatedGpu:
    if not isinstance(item, dict):
        raise SimulationSpecError(f"{where}: gpus[{i}] must be an object, got {type(item).__name__}")
    base = None
    if "card" in item:
        base = _resolve_card(str(item["card"]))
    try:
        if "total_bytes" in item:
            memory = int(item["total_bytes"])
        elif "memory_gib" in item:
            memory = int(float(item["memory_gib"]) * GiB)
        elif base is not None:
            memory = base.memory_bytes
        else:
            raise SimulationSpecError(f"{where}: gpus[{i}] needs 'card', 'memory_gib' or 'total_bytes'")
        if memory <= 0:
            raise SimulationSpecError(f"{where}: gpus[{i}] memory must be positive")
        cc = tuple(item.get("compute_capability", base.compute_capability if base else (8, 6)))
        card = CardModel(
            key=base.key if base else f"custom{i}",
            name=str(item.get("name", base.name if base else f"Simulated GPU {i}")),
            memory_bytes=memory,
            compute_capability=(int(cc[0]), int(cc[1])),
            power_limit_w=float(item.get("power_limit_w", base.power_limit_w if base else 250.0)),
        )
        procs = tuple(
            SimulatedProcess(
                name=str(p["name"]),
                share=0.0,
                kind=str(p.get("kind", "compute")),
                fixed_bytes=int(float(p["used_gib"]) * GiB) if "used_gib" in p else int(p["used_bytes"]),
            )
            for p in item.get("processes", [])
        ) if "processes" in item else _MIXES[i % len(_MIXES)]
        load = float(item.get("load", 0.5))
    except SimulationSpecError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise SimulationSpecError(f"{where}: gpus[{i}] is malformed ({err!r})") from err
    return SimulatedGpu(card, procs, load)


def _resolve_card(name: str) -> CardModel:
    key = _LOOKUP.get(_norm(name))
    if key is None:
        raise SimulationSpecError(
            f"unknown card {name!r} in --simulate; known cards: {', '.join(known_cards())} "
            "(or pass a JSON file with a 'gpus' list)"
        )
    return CARDS[key]


def parse_spec(spec: str) -> list[SimulatedGpu]:
    """``"2xrtx4090"``, ``"a100-80gb,rtx3060"`` or the path of a JSON file → simulated GPUs."""
    spec = spec.strip()
    if not spec:
        raise SimulationSpecError("empty --simulate spec; name a card such as rtx4090, or a JSON file")
    if spec.lower().endswith(".json") or Path(spec).is_file():
        path = Path(spec)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise SimulationSpecError(f"cannot read simulation file {path}: {err.strerror or err}") from err
        except json.JSONDecodeError as err:
            raise SimulationSpecError(f"simulation file {path} is not valid JSON: {err}") from err
        items = data.get("gpus") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise SimulationSpecError(f"simulation file {path} must hold a list of GPUs or {{'gpus': [...]}}")
        return [_gpu_from_json(i, item, str(path)) for i, item in enumerate(items)]
    gpus: list[SimulatedGpu] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(?:(\d+)\s*[x×*]\s*)?(.+)", part, flags=re.IGNORECASE)
        count = int(m.group(1)) if m and m.group(1) else 1
        if count < 1 or count > 64:
            raise SimulationSpecError(f"{part!r}: the count must be between 1 and 64")
        card = _resolve_card(m.group(2) if m else part)
        for _ in range(count):
            i = len(gpus)
            gpus.append(SimulatedGpu(card, _MIXES[i % len(_MIXES)]))
    if not gpus:
        raise SimulationSpecError(f"--simulate {spec!r} names no card")
    return gpus


@dataclass
class SimulatedBackend:
    """GPUs that do not exist, behaving like ones that do."""

    gpus: list[SimulatedGpu]
    clock: Callable[[], float] = time.time
    name: str = field(default="simulated", init=False)
    _lost: set[int] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @classmethod
    def from_spec(cls, spec: str, clock: Callable[[], float] = time.time) -> "SimulatedBackend":
        return cls(parse_spec(spec), clock)

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True, None, driver_version="simulated")

    def close(self) -> None:
        pass

    def set_lost(self, index: int, lost: bool = True) -> None:
        """Make a simulated GPU fall off the bus (or come back), to exercise fault handling."""
        with self._lock:
            (self._lost.add if lost else self._lost.discard)(index)

    def read(self) -> list[GpuDevice]:
        t = self.clock()
        with self._lock:
            lost = set(self._lost)
        return [self._device(i, g, t, i in lost) for i, g in enumerate(self.gpus)]

    @staticmethod
    def _device(i: int, gpu: SimulatedGpu, t: float, lost: bool) -> GpuDevice:
        card = gpu.card
        uuid = f"GPU-5140{i:04d}-0000-4000-8000-{card.key[:12].replace('-', '0').ljust(12, '0')}"
        if lost:
            return GpuDevice(index=i, name=card.name, kind="simulated", uuid=uuid, total_bytes=0, used_bytes=0,
                             free_bytes=0, lost=True, unavailable=(("memory", "simulated GPU loss"),))
        total = card.memory_bytes
        phase = 1.7 * i
        processes = []
        for n, p in enumerate(gpu.processes):
            if p.fixed_bytes is not None:
                used = p.fixed_bytes
            else:
                wave = math.sin(2 * math.pi * t / p.period_s + phase + n)
                used = int(total * max(0.0, p.share + p.swing * wave))
            processes.append(GpuProcess(pid=4000 + 100 * i + n, name=p.name, used_bytes=used, kind=p.kind))
        driver = 300 * MiB  # CUDA context and driver bookkeeping not attributed to a process
        used_total = min(total, driver + sum(p.used_bytes or 0 for p in processes))
        util = min(100.0, max(0.0, 100 * gpu.load + 35 * math.sin(2 * math.pi * t / 17.0 + phase)))
        return GpuDevice(
            index=i,
            name=card.name,
            kind="simulated",
            total_bytes=total,
            used_bytes=used_total,
            free_bytes=total - used_total,
            uuid=uuid,
            pci_bus_id=f"00000000:{i + 1:02X}:00.0",
            reserved_bytes=0,
            utilization_percent=round(util, 1),
            memory_utilization_percent=round(util * 0.6, 1),
            temperature_c=round(38 + 0.42 * util, 1),
            power_w=round(card.power_limit_w * (0.12 + 0.78 * util / 100), 1),
            power_limit_w=card.power_limit_w,
            sm_clock_mhz=int(1200 + 12 * util),
            memory_clock_mhz=10501,
            compute_capability=card.compute_capability,
            processes=tuple(processes),
        )
