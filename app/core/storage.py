"""The user's files: atomic writes and a lock between processes (the model list, calibration, settings).

- :func:`atomic_write`: a temporary file in the same folder, fsynced, renamed over the old file, then
  the folder fsynced. A crash leaves the old file or the new one, never half of either; an error
  leaves no temporary file behind.
- :class:`FileLock`: an exclusive lock on a sidecar file (``flock`` on POSIX, ``msvcrt.locking`` on
  Windows), taken without blocking and retried until a timeout. The kernel drops it when the holder
  dies, so a killed writer never leaves a stuck lock. On POSIX the sidecar is removed on release; a
  waiter that then wins the lock on the removed file notices (its inode is no longer the one at the
  path) and retries, so the removal is safe. Where the file system refuses locks (some network
  mounts), writes go ahead unlocked (still atomic) and the log says so once.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "FileLock"]

_log = logging.getLogger(__name__)

try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt as _msvcrt
except ImportError:
    _msvcrt = None  # type: ignore[assignment]


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (``mode``: the permission bits to keep); an OSError
    leaves the old file as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


class FileLock:
    """An exclusive lock on the sidecar ``path`` guarding ``target``.

    ``busy()`` builds the error raised when another process held it for ``timeout`` seconds; ``what``
    names the writes in the one log line said where locking is not possible ("model list saves").
    """

    _warned: set[str] = set()

    def __init__(self, path: Path, target: Path, timeout: float, *, busy: Callable[[], Exception],
                 what: str) -> None:
        self.path = path
        self.target = target
        self.timeout = timeout
        self._busy = busy
        self._what = what
        self._fd: int | None = None

    @classmethod
    def beside(cls, target: Path, timeout: float, *, busy: Callable[[], Exception], what: str) -> FileLock:
        """The lock for ``target``: the sidecar ``.<name>.lock`` in its folder."""
        return cls(target.with_name(f".{target.name}.lock"), target, timeout, busy=busy, what=what)

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            try:
                if not self._lock_fd(fd, deadline):
                    os.close(fd)  # the file was removed (and maybe re-created) while we waited
                    continue
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return

    def _lock_fd(self, fd: int, deadline: float) -> bool:
        delay = 0.002
        while True:
            try:
                if _fcntl is not None:
                    _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                elif _msvcrt is not None:
                    os.lseek(fd, 0, os.SEEK_SET)
                    _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
                else:
                    self._no_locking("this platform has neither fcntl nor msvcrt")
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                    self._no_locking(f"the file system refused a lock ({err})")
                    break
            if time.monotonic() >= deadline:
                raise self._busy()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        if _fcntl is None:
            return True
        try:  # still the file at the path? (a releasing holder removes it)
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _no_locking(self, why: str) -> None:
        if self._what not in FileLock._warned:
            FileLock._warned.add(self._what)
            _log.warning("%s are not locked against other processes: %s", self._what, why)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _fcntl is not None:
                try:
                    os.unlink(self.path)  # while still held: see the module docstring
                except OSError:
                    pass
                try:
                    _fcntl.flock(fd, _fcntl.LOCK_UN)
                except OSError:
                    pass
            elif _msvcrt is not None:
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    _msvcrt.locking(fd, _msvcrt.LK_UNLCK, 1)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
