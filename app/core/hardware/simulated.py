"""Simulated GPUs for demos, tests and screenshots.

A spec names cards: ``rtx4090``, ``2xrtx4090``, ``a100-80gb,rtx3060``, or a JSON file. Each card has
its published memory size; usage is a deterministic function of an injectable clock, so a test or a
screenshot taken at the same clock value always sees the same numbers.

A simulated runtime: :meth:`SimulatedBackend.hold` makes a GPU's measured usage rise by the bytes a
model loaded there would take, attributed to our own process, and :meth:`SimulatedBackend.release`
takes them away again, so graphs, cards and "booked vs measured" agree under ``--simulate``.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


#: Bounds on a simulation file: as many GPUs as the ``NxCARD`` syntax allows, memory up to 1 TiB per
#: card (the largest real ones have 141-256 GB), and a file small enough to read at once.
MAX_GPUS = 64
MAX_MEMORY_BYTES = 1 << 40
MAX_PROCESSES = 256
MAX_POWER_W = 5000.0
MAX_SPEC_FILE_BYTES = 1 << 20
_GPU_KEYS = ("card", "name", "memory_gib", "total_bytes", "compute_capability", "power_limit_w", "processes", "load")
_PROCESS_KEYS = ("name", "kind", "used_gib", "used_bytes")
_PROCESS_KINDS = ("compute", "graphics")


def _short(text: object, limit: int = 80) -> str:
    """``repr`` of user input, cut so that an error stays one readable line."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 5] + "…" + r[-4:]


def _number(value: Any, lo: float, hi: float, what: str, where: str, *, integer: bool = False) -> float:
    """A finite JSON number in [lo, hi]; booleans and strings are not numbers."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        raise SimulationSpecError(f"{where}: {what} must be a finite number, got {_short(value)}")
    if not lo <= value <= hi:
        raise SimulationSpecError(f"{where}: {what} {value!r} is out of range; give {lo:g} to {hi:g}")
    if integer and value != int(value):
        raise SimulationSpecError(f"{where}: {what} must be a whole number, got {value!r}")
    return value


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise SimulationSpecError(f"{where}: {what} must be a non-empty string of at most 200 characters, "
                                  f"got {_short(value)}")
    return value


def _gpu_from_json(i: int, item: Any, where: str) -> SimulatedGpu:
    here = f"{where}: gpus[{i}]"
    if not isinstance(item, dict):
        raise SimulationSpecError(f"{here} must be an object, got {type(item).__name__}")
    unknown = [k for k in item if k not in _GPU_KEYS]
    if unknown:
        raise SimulationSpecError(f"{here}: unknown key {_short(unknown[0])}; use: {', '.join(_GPU_KEYS)}")
    base = _resolve_card(_text(item["card"], "'card'", here)) if "card" in item else None
    if "total_bytes" in item:
        memory = int(_number(item["total_bytes"], 1, MAX_MEMORY_BYTES, "'total_bytes'", here, integer=True))
    elif "memory_gib" in item:
        gib = _number(item["memory_gib"], 0.001, MAX_MEMORY_BYTES / GiB, "'memory_gib'", here)
        memory = int(gib * GiB)
    elif base is not None:
        memory = base.memory_bytes
    else:
        raise SimulationSpecError(f"{here} needs 'card', 'memory_gib' or 'total_bytes'")
    if memory <= 0:
        raise SimulationSpecError(f"{here} memory must be positive")
    cc = item.get("compute_capability", base.compute_capability if base else (8, 6))
    if not isinstance(cc, (list, tuple)) or len(cc) != 2:
        raise SimulationSpecError(f"{here}: 'compute_capability' must be [major, minor], e.g. [8, 9]; "
                                  f"got {_short(cc)}")
    major = int(_number(cc[0], 1, 99, "compute capability major", here, integer=True))
    minor = int(_number(cc[1], 0, 99, "compute capability minor", here, integer=True))
    power = _number(item.get("power_limit_w", base.power_limit_w if base else 250.0), 1, MAX_POWER_W,
                    "'power_limit_w'", here)
    card = CardModel(
        key=base.key if base else f"custom{i}",
        name=_text(item["name"], "'name'", here) if "name" in item else (base.name if base else f"Simulated GPU {i}"),
        memory_bytes=memory,
        compute_capability=(major, minor),
        power_limit_w=float(power),
    )
    if "processes" in item:
        procs = _processes_from_json(item["processes"], memory, here)
    else:
        procs = _MIXES[i % len(_MIXES)]
    load = float(_number(item.get("load", 0.5), 0, 1, "'load'", here))
    return SimulatedGpu(card, procs, load)


def _processes_from_json(items: Any, memory: int, here: str) -> tuple[SimulatedProcess, ...]:
    if not isinstance(items, list):
        raise SimulationSpecError(f"{here}: 'processes' must be a list, got {type(items).__name__}")
    if len(items) > MAX_PROCESSES:
        raise SimulationSpecError(f"{here}: {len(items)} processes; a simulated GPU takes at most {MAX_PROCESSES}")
    procs = []
    for n, p in enumerate(items):
        where = f"{here}.processes[{n}]"
        if not isinstance(p, dict):
            raise SimulationSpecError(f"{where} must be an object, got {type(p).__name__}")
        unknown = [k for k in p if k not in _PROCESS_KEYS]
        if unknown:
            raise SimulationSpecError(f"{where}: unknown key {_short(unknown[0])}; use: {', '.join(_PROCESS_KEYS)}")
        if "name" not in p:
            raise SimulationSpecError(f"{where} needs a 'name'")
        kind = p.get("kind", "compute")
        if kind not in _PROCESS_KINDS:
            raise SimulationSpecError(f"{where}: 'kind' must be one of {', '.join(_PROCESS_KINDS)}, got {_short(kind)}")
        if "used_gib" in p:
            used = int(_number(p["used_gib"], 0, memory / GiB, "'used_gib'", where) * GiB)
        elif "used_bytes" in p:
            used = int(_number(p["used_bytes"], 0, memory, "'used_bytes'", where, integer=True))
        else:
            raise SimulationSpecError(f"{where} needs 'used_gib' or 'used_bytes'")
        procs.append(SimulatedProcess(name=_text(p["name"], "'name'", where), share=0.0, kind=kind, fixed_bytes=used))
    total = sum(p.fixed_bytes or 0 for p in procs)
    if total > memory:
        raise SimulationSpecError(f"{here}: its processes use {total / GiB:.2f} GiB, more than the card's "
                                  f"{memory / GiB:.2f} GiB; lower 'used_gib' or give the card more memory")
    return tuple(procs)


def _resolve_card(name: str) -> CardModel:
    key = _LOOKUP.get(_norm(name))
    if key is None:
        raise SimulationSpecError(
            f"unknown card {_short(name)} in --simulate; known cards: {', '.join(known_cards())} "
            "(or pass a JSON file with a 'gpus' list)"
        )
    return CARDS[key]


def _read_spec_file(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise SimulationSpecError(f"simulation file {path} is a folder; give the path of a JSON file")
        if size > MAX_SPEC_FILE_BYTES:
            raise SimulationSpecError(f"simulation file {path} is {size:,} bytes; a rig description is at most "
                                      f"{MAX_SPEC_FILE_BYTES:,} (up to {MAX_GPUS} GPUs)")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise SimulationSpecError(f"cannot read simulation file {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise SimulationSpecError(f"simulation file {path} is not UTF-8 text (byte {err.start}); "
                                  "save it as UTF-8 JSON") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SimulationSpecError(f"simulation file {path} is not valid JSON: {err}") from err
    except RecursionError as err:
        raise SimulationSpecError(f"simulation file {path} is nested too deeply to be a rig description; "
                                  "give {'gpus': [{...}, ...]}") from err
    except ValueError as err:  # e.g. an integer with thousands of digits
        raise SimulationSpecError(f"simulation file {path} is not valid JSON: {err}") from err


def _looks_like_file(spec: str) -> bool:
    if spec.lower().endswith(".json"):
        return True
    try:
        return Path(spec).is_file()
    except (OSError, ValueError):  # a name too long for a path, or one with a NUL byte: not a file
        return False


def parse_spec(spec: str) -> list[SimulatedGpu]:
    """``"2xrtx4090"``, ``"a100-80gb,rtx3060"`` or the path of a JSON file → simulated GPUs."""
    spec = spec.strip()
    if not spec:
        raise SimulationSpecError("empty --simulate spec; name a card such as rtx4090, or a JSON file")
    if _looks_like_file(spec):
        path = Path(spec)
        data = _read_spec_file(path)
        items = data.get("gpus") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise SimulationSpecError(f"simulation file {path} must hold a list of GPUs or {{'gpus': [...]}}")
        if len(items) > MAX_GPUS:
            raise SimulationSpecError(f"simulation file {path} lists {len(items):,} GPUs; "
                                      f"simulate between 0 and {MAX_GPUS}")
        return [_gpu_from_json(i, item, str(path)) for i, item in enumerate(items)]
    gpus: list[SimulatedGpu] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(?:(\d+)\s*[x×*]\s*)?(.+)", part, flags=re.IGNORECASE)
        digits = m.group(1) if m else None
        count = 1 if not digits else int(digits) if len(digits) <= 4 else MAX_GPUS + 1
        if count < 1 or count > MAX_GPUS:
            raise SimulationSpecError(f"{_short(part)}: the count must be between 1 and {MAX_GPUS}")
        card = _resolve_card(m.group(2) if m else part)
        for _ in range(count):
            if len(gpus) >= MAX_GPUS:
                raise SimulationSpecError(f"--simulate {_short(spec)} names more than {MAX_GPUS} GPUs")
            i = len(gpus)
            gpus.append(SimulatedGpu(card, _MIXES[i % len(_MIXES)]))
    if not gpus:
        raise SimulationSpecError(f"--simulate {_short(spec)} names no card")
    return gpus


#: Largest relative wobble of a held amount's measured bytes (the allocator's slack must exceed it).
HOLD_JITTER = 0.015
_DRIVER_BYTES = 300 * MiB  # CUDA context and driver bookkeeping not attributed to a process


@dataclass(frozen=True)
class _Hold:
    nbytes: int
    pid: int
    name: str


def _wobble(owner: str, index: int, t: float) -> float:
    """A deterministic relative wobble in [-0.012, 0.012] (inside :data:`HOLD_JITTER`) for one hold.

    The phase comes from a CRC of the owner, not ``hash()``, which Python salts per process.
    """
    phase = (zlib.crc32(f"{owner}@{index}".encode()) % 10_000) / 10_000 * 2 * math.pi
    return 0.008 * math.sin(2 * math.pi * t / 23.0 + phase) + 0.004 * math.sin(2 * math.pi * t / 5.3 + 2 * phase)


@dataclass
class SimulatedBackend:
    """GPUs that do not exist, behaving like ones that do."""

    gpus: list[SimulatedGpu]
    clock: Callable[[], float] = time.time
    name: str = field(default="simulated", init=False)
    _lost: set[int] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    #: (owner, GPU index) -> what that owner holds there; insertion order decides process order.
    _holds: dict[tuple[str, int], _Hold] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_spec(cls, spec: str, clock: Callable[[], float] = time.time) -> SimulatedBackend:
        return cls(parse_spec(spec), clock)

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True, None, driver_version="simulated")

    def close(self) -> None:
        pass

    def set_lost(self, index: int, lost: bool = True) -> None:
        """Make a simulated GPU fall off the bus (or come back), to exercise fault handling."""
        with self._lock:
            (self._lost.add if lost else self._lost.discard)(index)

    # --- the simulated runtime ------------------------------------------------------------------
    def hold(self, owner: str, index: int, nbytes: int, *, pid: int | None = None, name: str = "modeldeck") -> None:
        """From now on GPU ``index`` shows ``nbytes`` more used, held by process ``pid`` (default: us).

        Holding again for the same ``(owner, index)`` replaces the amount; holding 0 bytes releases it.
        Owners with the same pid on one GPU add up into one process entry, as NVML reports them.
        """
        if not 0 <= index < len(self.gpus):
            raise IndexError(f"no simulated GPU {index}; there are {len(self.gpus)}")
        nbytes = int(nbytes)
        if nbytes < 0:
            raise ValueError("bytes held must not be negative")
        with self._lock:
            if nbytes == 0:
                self._holds.pop((owner, index), None)
            else:
                self._holds[(owner, index)] = _Hold(nbytes, os.getpid() if pid is None else int(pid), name)

    def release(self, owner: str, index: int | None = None) -> None:
        """Drop what ``owner`` holds on GPU ``index`` (every GPU when ``None``). Unknown owners: no-op."""
        with self._lock:
            for key in [k for k in self._holds if k[0] == owner and (index is None or k[1] == index)]:
                del self._holds[key]

    def held(self, index: int | None = None) -> int:
        """Bytes held on GPU ``index`` (all GPUs when ``None``), exactly as booked, without jitter."""
        with self._lock:
            return sum(h.nbytes for (_, i), h in self._holds.items() if index is None or i == index)

    def holdings(self) -> dict[tuple[str, int], int]:
        """``(owner, index) -> bytes`` for every hold now (a copy)."""
        with self._lock:
            return {k: h.nbytes for k, h in self._holds.items()}

    def read(self) -> list[GpuDevice]:
        t = self.clock()
        with self._lock:
            lost = set(self._lost)
            holds = list(self._holds.items())
        return [
            self._device(i, g, t, i in lost, [(owner, h) for (owner, gi), h in holds if gi == i])
            for i, g in enumerate(self.gpus)
        ]

    @staticmethod
    def _device(i: int, gpu: SimulatedGpu, t: float, lost: bool,
                holds: list[tuple[str, _Hold]] | None = None) -> GpuDevice:
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
        if holds:
            processes = SimulatedBackend._add_holds(processes, holds, total, t, i)
        used_total = min(total, _DRIVER_BYTES + sum(p.used_bytes or 0 for p in processes))
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

    @staticmethod
    def _add_holds(processes: list[GpuProcess], holds: list[tuple[str, _Hold]], total: int, t: float,
                   i: int) -> list[GpuProcess]:
        """The card's own processes plus the held bytes, one entry per pid, never more than fits."""
        per_pid: dict[int, list] = {}  # pid -> [measured bytes, name], in order of first hold
        for owner, h in holds:
            measured = max(0, round(h.nbytes * (1 + _wobble(owner, i, t))))
            entry = per_pid.setdefault(h.pid, [0, h.name])
            entry[0] += measured
        # A real card refuses allocations past its memory: held bytes get only the room that is left.
        room = max(0, total - _DRIVER_BYTES - sum(p.used_bytes or 0 for p in processes))
        out = list(processes)
        at = {p.pid: n for n, p in enumerate(out)}
        for pid, (measured, name) in per_pid.items():
            granted = min(measured, room)
            room -= granted
            if pid in at:
                p = out[at[pid]]
                out[at[pid]] = GpuProcess(pid, p.name, (p.used_bytes or 0) + granted, p.kind)
            else:
                out.append(GpuProcess(pid=pid, name=name, used_bytes=granted, kind="compute"))
        return out


def simulated_backend(profiler: Any) -> SimulatedBackend | None:
    """The :class:`SimulatedBackend` of a ``HardwareProfiler`` (or any object with ``backends``).

    With ``HardwareProfiler(simulate=...)`` it is the only backend, so its GPU indices are the
    profile's (``cuda:N`` is ``hold(owner, N, ...)``). ``None`` when the profiler reads real GPUs.
    """
    return next((b for b in getattr(profiler, "backends", ()) if isinstance(b, SimulatedBackend)), None)
