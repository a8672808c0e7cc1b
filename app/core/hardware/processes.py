"""Names for the process ids the GPU drivers report, from psutil."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from app.core.hardware.snapshot import ACCESS_DENIED_PROCESS, EXITED_PROCESS, UNKNOWN_PROCESS


class ProcessNames:
    """Looks up process names once per pid and forgets pids that are gone.

    A process we may not inspect gets ``"unknown (access denied)"``; one that exited between the
    driver's report and our look-up gets ``"exited"``. Nothing here raises.
    """

    def __init__(self, psutil_module: Any = None) -> None:
        if psutil_module is None:
            import psutil

            psutil_module = psutil
        self._psutil = psutil_module
        self._cache: dict[int, str] = {}
        self._lock = threading.Lock()

    def lookup(self, pids: Iterable[int]) -> dict[int, str]:
        wanted = set(pids)
        with self._lock:
            for pid in wanted - self._cache.keys():
                self._cache[pid] = self._name_of(pid)
            names = {pid: self._cache[pid] for pid in wanted}
            # A name that could not be read is retried next time; pids no longer reported are dropped.
            self._cache = {
                pid: name
                for pid, name in self._cache.items()
                if pid in wanted and name not in (ACCESS_DENIED_PROCESS, EXITED_PROCESS, UNKNOWN_PROCESS)
            }
        return names

    def _name_of(self, pid: int) -> str:
        ps = self._psutil
        try:
            return str(ps.Process(pid).name()) or UNKNOWN_PROCESS
        except ps.AccessDenied:
            return ACCESS_DENIED_PROCESS
        except ps.NoSuchProcess:  # ZombieProcess is a subclass
            return EXITED_PROCESS
        except Exception:  # noqa: BLE001 - a name is never worth a crash
            return UNKNOWN_PROCESS
