"""NVIDIA GPUs through NVML (the `pynvml` module of nvidia-ml-py).

NVML starts lazily, once, under a lock. Nothing here raises to the caller: a missing driver makes
the backend unavailable with a reason (and it tries again later), a GPU that falls off the bus is
reported as lost while the others go on.

Degrading per field, never per backend
--------------------------------------
Every NVML query is one *field* of one device. An NVML error, an exception from the binding, or a
value that cannot be converted makes that field ``None`` with a reason in ``GpuDevice.unavailable``;
the device and every other device are read as usual. Only a failing ``nvmlDeviceGetCount`` (the
driver session is gone) empties the list, and only ``GPU_IS_LOST`` marks a device lost.

NOT_SUPPORTED is remembered for the driver session, and re-asked after ``retry_interval_s`` and
after every re-init of NVML, so a storm of spurious NOT_SUPPORTED answers heals within one interval.

Implausible values (never passed on)
------------------------------------
==========================  =====================================================================
memory total                0, > 1 PiB or the 2^64-1 sentinel: memory unavailable (0 / 0 / 0)
memory used                 < 0 or > total (2^64-1 included): clamped to total, free 0: the GPU
                            is treated as full (the safe reading for the allocator), with a reason
memory free / reserved      clamped to 0 .. total - used (- reserved), with a reason;
                            ``GpuDevice`` itself also guarantees used + free <= total
utilization, memory util    outside 0 .. 100 %, or ``None``: field unavailable
temperature                 outside -40 .. 150 °C: field unavailable
power, power limit          outside 0 .. 10 kW: field unavailable
SM / memory clock           outside 0 .. 100 GHz: field unavailable
compute capability          not two integers, major 1 .. 99, minor 0 .. 99: field unavailable
PCI bus id                  not ``dddd[dddd]:bb:dd.f``: field unavailable
name / uuid                 not text, empty or not printable: the default name / ``None``
process                     pid <= 0 or >= 2^32: the entry is dropped; a process holding more than
                            the GPU's total: its bytes become unknown (``None``); both with a reason
device count                > 64: the first 64 are read, logged once; probing stops at the first
                            index the driver does not know
MIG instances / processes   at most 16 instances and 256 processes per GPU
==========================  =====================================================================

Fault logging is rate-limited (see :mod:`app.core.hardware.faults`): a storm writes its first
occurrence, a count while it persists, and its recovery. A faulted tick costs about what a clean
one does: reasons come from a per-code cache (``str(NVMLError)`` of a code pynvml does not know
tries to load libnvidia-ml again, every time), and log messages are only built when written.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from app.core.hardware.faults import FaultLog
from app.core.hardware.processes import ProcessNames
from app.core.hardware.snapshot import UNKNOWN_PROCESS, BackendStatus, GpuDevice, GpuProcess

_log = logging.getLogger(__name__)

#: NVML's "value not available" for 64-bit counters.
_NOT_AVAILABLE_U64 = (1 << 64) - 1
#: NVML itself supports 64 GPUs per process; a driver answering more is confused.
MAX_DEVICES = 64
MAX_MIG_INSTANCES = 16
MAX_PROCESSES = 256
_MAX_TOTAL_BYTES = 1 << 50
_MAX_TEXT = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE, NVML_DEVICE_UUID_V2_BUFFER_SIZE
_BUS_ID = re.compile(r"[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]")
_NOT_SUPPORTED = "not supported by this GPU or driver"

Procs = list[tuple[int, int | None, str]]


class _Lost(Exception):
    """The device stopped answering in the middle of a read."""


class _Implausible(Exception):
    """A value no GPU can have; the message says what it was."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain_text(value: Any) -> str:
    if not isinstance(value, (str, bytes, bytearray)):
        raise _Implausible(f"not text: {_short(value)}")
    text = _text(value).strip().strip("\x00")
    if not text or len(text) > _MAX_TEXT or not text.isprintable():
        raise _Implausible(_short(value))
    return text


def _number(value: Any, lo: float, hi: float, unit: str) -> float:
    if value is None or isinstance(value, bool):
        raise _Implausible(f"{value!r}")
    number = float(value)
    if not lo <= number <= hi:  # also false for NaN
        raise _Implausible(f"{_short(value)}{unit}")
    return number


def _percent(value: Any) -> float:
    return _number(value, 0, 100, " %")


def _temperature(value: Any) -> float:
    return _number(value, -40, 150, " °C")


def _watts(milliwatts: Any) -> float:
    return _number(milliwatts, 0, 10_000_000, " mW") / 1000.0


def _mhz(value: Any) -> int:
    return int(_number(value, 0, 100_000, " MHz"))


def _compute_capability(value: Any) -> tuple[int, int]:
    major, minor = value
    if not (isinstance(major, int) and isinstance(minor, int) and 1 <= major <= 99 and 0 <= minor <= 99):
        raise _Implausible(_short(value))
    return int(major), int(minor)


def _bus_id(pci: Any) -> str:
    text = _plain_text(pci.busId)
    if not _BUS_ID.fullmatch(text):
        raise _Implausible(_short(pci.busId))
    return text


def _count(value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Implausible(_short(value))
    return min(value, limit)


class NvmlBackend:
    """Reads every NVIDIA GPU (and MIG instance) NVML can see."""

    name = "nvml"

    def __init__(
        self,
        nvml: Any = None,
        *,
        process_names: ProcessNames | None = None,
        retry_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        max_devices: int = MAX_DEVICES,
    ) -> None:
        self._nvml = nvml
        self._names = process_names
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._max_devices = max_devices
        self._lock = threading.RLock()
        self._started = False
        self._ever_started = False
        self._next_try = 0.0
        self._now = 0.0
        self._status = BackendStatus(self.name, False, "not started yet")
        self._faults = FaultLog(_log, clock=clock)
        #: (device key, field) the card said it does not support -> when to ask again. Emptied at re-init.
        self._unsupported: dict[tuple[Any, str], float] = {}
        #: Last known identity per index, so a lost GPU still has a name.
        self._known: dict[int, tuple[str, str | None]] = {}
        #: NVML error code -> reason text, so a faulted tick does not call into the library for it.
        self._reasons: dict[int, str] = {}
        self._error_cls: type[BaseException] = Exception
        self._code_lost: object = object()
        self._codes_unsupported: frozenset[Any] = frozenset()
        self._codes_absent: frozenset[Any] = frozenset()

    # --- lifecycle ---------------------------------------------------------------------------
    def status(self) -> BackendStatus:
        with self._lock:
            try:
                self._now = self._clock()
                self._ensure_started()
            finally:
                self._faults.flush()
            return self._status

    def close(self) -> None:
        with self._lock:
            if self._started:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # noqa: BLE001
                    pass
            self._started = False

    def _module(self) -> Any:
        if self._nvml is None:
            import pynvml  # nvidia-ml-py; pure ctypes, imports fine without a GPU

            self._nvml = pynvml
        return self._nvml

    def _learn_codes(self, nvml: Any) -> None:
        """Look NVML's constants up once (the module may be a slow proxy, e.g. the tests' fake)."""
        self._error_cls = getattr(nvml, "NVMLError", Exception)
        missing = object()
        self._code_lost = getattr(nvml, "NVML_ERROR_GPU_IS_LOST", missing)
        self._codes_unsupported = frozenset(
            c for c in (getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", missing),
                        getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", missing)) if c is not missing
        )
        self._codes_absent = frozenset(
            c for c in (getattr(nvml, "NVML_ERROR_INVALID_ARGUMENT", missing),
                        getattr(nvml, "NVML_ERROR_NOT_FOUND", missing)) if c is not missing
        )

    def _ensure_started(self) -> bool:
        if self._started:
            return True
        now = self._clock()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry_interval_s
        try:
            nvml = self._module()
        except ImportError:
            self._set_unavailable("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
            return False
        self._learn_codes(nvml)
        try:
            nvml.nvmlInit()
        except self._error_cls as err:
            self._set_unavailable(self._init_reason(nvml, err))
            return False
        except Exception as err:  # noqa: BLE001 - e.g. OSError from ctypes on a broken install
            self._set_unavailable(f"NVML could not start: {_short(err, 200)}")
            return False
        self._started = True
        # A new driver session: whatever it said it does not support is asked again.
        self._unsupported.clear()
        self._status = BackendStatus(
            self.name,
            True,
            None,
            driver_version=self._optional(lambda: _plain_text(nvml.nvmlSystemGetDriverVersion())),
            runtime_version=self._optional(lambda: self._cuda_version(nvml.nvmlSystemGetCudaDriverVersion())),
        )
        self._faults.clear("init")
        _log.log(logging.DEBUG if self._ever_started else logging.INFO,
                 "NVML started (driver %s)", self._status.driver_version)
        self._ever_started = True
        return True

    def _set_unavailable(self, reason: str, level: int = logging.INFO) -> None:
        self._status = BackendStatus(self.name, False, reason)
        self._faults.fault("init", f"NVIDIA GPUs unavailable: {reason}", level)

    def _fail_backend(self, reason: str) -> None:
        """A fault that makes the whole backend unusable; shut down and try again later."""
        self.close()
        self._next_try = self._clock() + self._retry_interval_s
        self._set_unavailable(reason, logging.WARNING)

    def _init_reason(self, nvml: Any, err: BaseException) -> str:
        reasons = {
            "NVML_ERROR_LIBRARY_NOT_FOUND": "the NVIDIA driver library (libnvidia-ml) was not found: "
            "no NVIDIA driver is installed on this machine",
            "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA driver is installed but not loaded: "
            "check that the nvidia kernel module is loaded (nvidia-smi)",
            "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "the NVIDIA driver and its library have different versions "
            "(usually after a driver update): reboot or reload the nvidia kernel module",
            "NVML_ERROR_NO_PERMISSION": "no permission to open the NVIDIA devices: "
            "check the permissions of /dev/nvidia*",
            "NVML_ERROR_INSUFFICIENT_POWER": "a GPU is not connected to power properly",
        }
        code = getattr(err, "value", None)
        for const, reason in reasons.items():
            if code is not None and code == getattr(nvml, const, object()):
                return reason
        return f"NVML could not start: {self._reason(err)}"

    @staticmethod
    def _cuda_version(value: int) -> str:
        return f"{value // 1000}.{(value % 1000) // 10}"

    def _optional(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001
            return None

    def _reason(self, err: BaseException) -> str:
        """Why a query failed, without ``str(NVMLError)`` (which may try to load libnvidia-ml again)."""
        code = getattr(err, "value", None)
        if isinstance(err, self._error_cls) and isinstance(code, int):
            reason = self._reasons.get(code)
            if reason is None:
                known = getattr(type(err), "_errcode_to_string", None)
                text = known.get(code) if isinstance(known, dict) else None
                reason = str(text) if text else f"NVML error {code}"
                if len(self._reasons) < 256:
                    self._reasons[code] = reason
            return reason
        return _short(err, 200)

    # --- reading -----------------------------------------------------------------------------
    def read(self) -> list[GpuDevice]:
        """Every GPU, then its MIG instances; indexes are this backend's own (the profiler renumbers)."""
        with self._lock:
            try:
                self._now = self._clock()
                if not self._ensure_started():
                    return []
                devices, raw = self._read_all()
            except Exception as err:  # noqa: BLE001 - a bug here must not take the profile down
                why = _short(err, 200)
                self._faults.fault("read", lambda: f"NVIDIA GPUs could not be read: {why}", logging.ERROR)
                return []
            finally:
                self._faults.flush()
            self._faults.clear("read")
        return self._attach_process_names(devices, raw)

    def _read_all(self) -> tuple[list[GpuDevice], list[Procs]]:
        nvml = self._nvml
        try:
            raw_count = nvml.nvmlDeviceGetCount()
        except Exception as err:  # noqa: BLE001
            self._fail_backend(f"NVML stopped answering: {self._reason(err)}")
            return [], []
        try:
            count = _count(raw_count, 1 << 62)
        except Exception as err:  # noqa: BLE001
            self._fail_backend(f"NVML answered an implausible device count: {err}")
            return [], []
        clamped = count > self._max_devices
        if clamped:
            reported, limit = count, self._max_devices
            self._faults.fault("count", lambda: f"NVML reports {reported} GPUs, more than any machine has: "
                               f"reading at most the first {limit}")
            count = limit
        else:
            self._faults.clear("count")
        devices: list[GpuDevice] = []
        raw: list[Procs] = []
        for i in range(count):
            found = self._read_gpu(i, stop_if_absent=clamped)
            if found is None:
                break
            for device, procs in found:
                devices.append(device)
                raw.append(procs)
        return devices, raw

    def _attach_process_names(self, devices: list[GpuDevice], raw: list[Procs]) -> list[GpuDevice]:
        pids = {pid for procs in raw for pid, _, _ in procs}
        if not pids:
            return devices
        try:
            if self._names is None:
                self._names = ProcessNames()
            names = self._names.lookup(pids)
        except Exception:  # noqa: BLE001 - a name is never worth the GPUs
            names = {}
        out = []
        for device, procs in zip(devices, raw, strict=True):
            if procs:
                processes = tuple(GpuProcess(pid, names.get(pid, UNKNOWN_PROCESS), used, kind)
                                  for pid, used, kind in procs)
                device = dataclasses.replace(device, processes=processes)
            out.append(device)
        return out

    def _read_gpu(self, i: int, stop_if_absent: bool = False) -> list[tuple[GpuDevice, Procs]] | None:
        """GPU ``i`` and its MIG instances; ``[]`` for an index the driver does not know;
        ``None`` to stop probing (the count was implausible and this index is past the real ones)."""
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
        except Exception as err:  # noqa: BLE001
            code = getattr(err, "value", None)
            if isinstance(err, self._error_cls) and code == self._code_lost:
                return [(self._lost_device(i), [])]
            if isinstance(err, self._error_cls) and code in self._codes_absent and i not in self._known:
                return None if stop_if_absent else []  # a GPU that never was: nothing to report
            reason = self._reason(err)
            self._faults.fault((i, "handle"), lambda: f"GPU {i}: cannot open the device: {reason}")
            return [(self._lost_device(i, reason=reason), [])]
        try:
            device, procs = self._read_handle(i, handle, mig_parent=None)
        except _Lost:
            return [(self._lost_device(i), [])]
        except Exception as err:  # noqa: BLE001 - a bug in one device's read: that device only
            reason = f"internal error: {_short(err, 200)}"
            self._faults.fault((i, "internal"), lambda: f"GPU {i}: could not be read: {reason}", logging.ERROR)
            return [(self._lost_device(i, reason=reason), [])]
        self._faults.clear((i, "lost"))
        self._faults.clear((i, "handle"))
        self._faults.clear((i, "internal"))
        result = [(device, procs)]
        try:
            result.extend(self._read_mig(i, handle))
        except Exception as err:  # noqa: BLE001
            why = _short(err)
            self._faults.fault((i, "mig"), lambda: f"GPU {i}: MIG instances could not be read: {why}")
        return result

    def _lost_device(self, i: int, reason: str = "the GPU has fallen off the bus or stopped answering") -> GpuDevice:
        self._faults.fault((i, "lost"), lambda: f"GPU {i} lost: {reason}", logging.ERROR)
        name, uuid = self._known.get(i, (f"NVIDIA GPU {i}", None))
        return GpuDevice(
            index=i, name=name, kind="nvidia", uuid=uuid, total_bytes=0, used_bytes=0, free_bytes=0,
            lost=True, unavailable=(("memory", reason),),
        )

    def _fail_field(self, key: Any, field: str, una: list[tuple[str, str]], reason: str, level: int) -> None:
        una.append((field, reason))
        self._faults.fault((key, field), lambda: f"GPU {_label(key)}: cannot read {field}: {reason}", level)

    def _read(
        self, key: Any, field: str, una: list[tuple[str, str]], check: Callable[[Any], Any] | None,
        fn: Callable[..., Any], *args: Any,
    ) -> Any:
        """One NVML query, checked: its value, or ``None`` with the reason noted in ``una``.

        Raises ``_Lost`` only when the driver says the GPU is lost.
        """
        until = self._unsupported.get((key, field))
        if until is not None:
            if self._now < until:
                una.append((field, _NOT_SUPPORTED))
                return None
            del self._unsupported[(key, field)]  # ask again: it may have been a passing answer
        try:
            value = fn(*args)
        except self._error_cls as err:
            code = getattr(err, "value", None)
            if code == self._code_lost:
                raise _Lost from None
            if code in self._codes_unsupported:
                self._unsupported[(key, field)] = self._now + self._retry_interval_s
                una.append((field, _NOT_SUPPORTED))
                self._faults.clear((key, field))
                return None
            self._fail_field(key, field, una, self._reason(err), logging.WARNING)
            return None
        except Exception as err:  # noqa: BLE001 - ctypes or a binding bug: still not the caller's problem
            self._fail_field(key, field, una, _short(err, 200), logging.WARNING)
            return None
        if check is not None:
            try:
                value = check(value)
            except _Implausible as err:
                self._fail_field(key, field, una, f"implausible value: {err}", logging.WARNING)
                return None
            except Exception as err:  # noqa: BLE001 - None, a wrong type, a struct without the field
                self._fail_field(key, field, una, f"unreadable value {_short(value, 40)}: {_short(err, 80)}",
                                 logging.WARNING)
                return None
        self._faults.clear((key, field))
        return value

    def _checked(
        self, key: Any, field: str, una: list[tuple[str, str]], check: Callable[[Any], Any], value: Any
    ) -> Any:
        """A part of a value already read (utilization's two halves), checked on its own."""
        try:
            checked = check(value)
        except _Implausible as err:
            reason = f"implausible value: {err}"
        except Exception as err:  # noqa: BLE001
            reason = f"unreadable value {_short(value, 40)}: {_short(err, 80)}"
        else:
            self._faults.clear((key, field, "value"))
            return checked
        una.append((field, reason))
        self._faults.fault((key, field, "value"), lambda: f"GPU {_label(key)}: {field}: {reason}")
        return None

    def _memory(self, key: Any, handle: Any, una: list[tuple[str, str]]) -> tuple[int, int, int, int | None]:
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            mem = self._read(key, "memory_v2", [], None, nvml.nvmlDeviceGetMemoryInfo, handle, version)
            if mem is not None:
                return self._sane_memory(key, una, mem, v2=True)
        mem = self._read(key, "memory", una, None, nvml.nvmlDeviceGetMemoryInfo, handle)
        if mem is None:
            return 0, 0, 0, None
        return self._sane_memory(key, una, mem, v2=False)

    def _sane_memory(
        self, key: Any, una: list[tuple[str, str]], mem: Any, v2: bool
    ) -> tuple[int, int, int, int | None]:
        """Memory figures the allocator can trust: 0 <= used <= total, used + free (+ reserved) <= total."""
        notes: list[str] = []
        try:
            total, used, free = int(mem.total), int(mem.used), int(mem.free)
            reserved = int(mem.reserved) if v2 else None
        except Exception as err:  # noqa: BLE001
            return self._bad_memory(key, una, f"unreadable memory figures: {_short(err, 80)}")
        if not 0 < total <= _MAX_TOTAL_BYTES:
            return self._bad_memory(key, una, f"implausible total of {total} bytes")
        if reserved is not None and not 0 <= reserved <= total:
            notes.append(f"reserved {reserved} bytes: ignored")
            reserved = None
        if not 0 <= used <= total:
            notes.append(f"used {used} of {total} bytes: treated as full")
            used, free = total, 0
        room = total - used - (reserved or 0)
        if room < 0:  # used + reserved > total: the reserve is what is wrong
            notes.append(f"reserved {reserved} + used {used} > total {total}: reserve cut to fit")
            reserved, room = total - used, 0
        if not 0 <= free <= room:
            notes.append(f"free {free} bytes: clamped to {min(max(free, 0), room)}")
            free = min(max(free, 0), room)
        if notes:
            reason = "implausible value: " + "; ".join(notes)
            una.append(("memory", reason))
            self._faults.fault((key, "memory", "value"), lambda: f"GPU {_label(key)}: {reason}")
        else:
            self._faults.clear((key, "memory", "value"))
        return total, used, free, reserved

    def _bad_memory(self, key: Any, una: list[tuple[str, str]], reason: str) -> tuple[int, int, int, int | None]:
        una.append(("memory", reason))
        self._faults.fault((key, "memory", "value"), lambda: f"GPU {_label(key)}: memory unavailable: {reason}")
        return 0, 0, 0, None

    def _read_handle(self, i: int, handle: Any, mig_parent: int | None) -> tuple[GpuDevice, Procs]:
        nvml = self._nvml
        una: list[tuple[str, str]] = []
        key: Any = i if mig_parent is None else (mig_parent, i)
        read = self._read
        name = read(key, "name", una, _plain_text, nvml.nvmlDeviceGetName, handle)
        if name is None:
            name = self._known[i][0] if mig_parent is None and i in self._known else f"NVIDIA GPU {i}"
        uuid = read(key, "uuid", una, _plain_text, nvml.nvmlDeviceGetUUID, handle)
        if mig_parent is None:
            known = self._known.get(i)
            self._known[i] = (name, uuid if uuid is not None else known[1] if known else None)
        total, used, free, reserved = self._memory(key, handle, una)
        util = read(key, "utilization_percent", una, None, nvml.nvmlDeviceGetUtilizationRates, handle)
        gpu_util = mem_util = None
        if util is not None:
            gpu_util = self._checked(key, "utilization_percent", una, lambda u: _percent(u.gpu), util)
            mem_util = self._checked(key, "memory_utilization_percent", una, lambda u: _percent(u.memory), util)
        temp = read(key, "temperature_c", una, _temperature, nvml.nvmlDeviceGetTemperature, handle,
                    nvml.NVML_TEMPERATURE_GPU)
        power = read(key, "power_w", una, _watts, nvml.nvmlDeviceGetPowerUsage, handle)
        limit = read(key, "power_limit_w", una, _watts, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        sm = read(key, "sm_clock_mhz", una, _mhz, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)
        memclk = read(key, "memory_clock_mhz", una, _mhz, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM)
        cc = read(key, "compute_capability", una, _compute_capability, nvml.nvmlDeviceGetCudaComputeCapability, handle)
        pci = read(key, "pci_bus_id", una, _bus_id, nvml.nvmlDeviceGetPciInfo, handle)
        procs = self._processes(key, handle, una, total)
        device = GpuDevice(
            index=i,
            name=name,
            kind="nvidia",
            total_bytes=total,
            used_bytes=used,
            free_bytes=free,
            uuid=uuid,
            pci_bus_id=pci,
            reserved_bytes=reserved,
            utilization_percent=gpu_util,
            memory_utilization_percent=mem_util,
            temperature_c=temp,
            power_w=power,
            power_limit_w=limit,
            sm_clock_mhz=sm,
            memory_clock_mhz=memclk,
            compute_capability=cc,
            mig_parent=mig_parent,
            unavailable=tuple(una),
        )
        return device, procs

    def _processes(self, key: Any, handle: Any, una: list[tuple[str, str]], total: int) -> Procs:
        nvml = self._nvml
        merged: dict[int, tuple[int | None, str]] = {}
        most = total if total > 0 else _MAX_TOTAL_BYTES  # total 0: the memory figures are unknown
        for kind, fn in (
            ("compute", nvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics", nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            field = f"{kind}_processes"
            procs = self._read(key, field, una, lambda ps: list(itertools.islice(ps, MAX_PROCESSES + 1)), fn, handle)
            if not procs:
                continue
            notes: list[str] = []
            if len(procs) > MAX_PROCESSES:
                notes.append(f"more than {MAX_PROCESSES} processes: the rest are not listed")
                del procs[MAX_PROCESSES:]
            for p in procs:
                try:
                    pid = getattr(p, "pid", None)
                    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 1 << 32:
                        notes.append(f"process with pid {_short(pid, 24)} dropped")
                        continue
                    used = getattr(p, "usedGpuMemory", None)
                    if used is None or used == _NOT_AVAILABLE_U64:
                        used = None
                    elif isinstance(used, bool) or not isinstance(used, int) or not 0 <= used <= most:
                        notes.append(f"pid {pid} holds {_short(used, 24)} bytes: unknown")
                        used = None
                except Exception as err:  # noqa: BLE001
                    notes.append(f"unreadable process entry: {_short(err, 60)}")
                    continue
                if pid in merged:
                    # The same allocation is reported in both lists: count it once.
                    known = [x for x in (merged[pid][0], used) if x is not None]
                    merged[pid] = (max(known) if known else None, "compute+graphics")
                else:
                    merged[pid] = (used, kind)
            if notes:
                more = f"; and {len(notes) - 3} more" if len(notes) > 3 else ""
                reason = "implausible value: " + "; ".join(notes[:3]) + more
                una.append((field, reason))
                message = f"GPU {_label(key)}: {reason}"
                self._faults.fault((key, field, "value"), message)
            else:
                self._faults.clear((key, field, "value"))
        return [(pid, used, kind) for pid, (used, kind) in sorted(merged.items())]

    def _read_mig(self, i: int, handle: Any) -> list[tuple[GpuDevice, Procs]]:
        nvml = self._nvml
        mode = self._read(i, "mig", [], None, nvml.nvmlDeviceGetMigMode, handle)
        if mode is None or mode[0] != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        count = self._read(i, "mig_count", [], lambda n: _count(n, MAX_MIG_INSTANCES),
                           nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        out = []
        for j in range(count):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except Exception:  # noqa: BLE001
                continue  # an empty slot reports NOT_FOUND
            try:
                out.append(self._read_handle(j, mig, mig_parent=i))
            except Exception:  # noqa: BLE001 - _Lost, or a bug: that instance only
                continue
        return out


def _label(key: Any) -> str:
    """GPU 3, or MIG instance 1 of GPU 0 as "0/1"."""
    return f"{key[0]}/{key[1]}" if isinstance(key, tuple) else str(key)
