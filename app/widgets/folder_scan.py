"""FolderScan: ``scan_path`` on a worker thread, with progress and cancel, results on the GUI thread.

Reading headers of a large model folder takes seconds on a slow disk; the UI must not freeze.
Cancelling raises inside the core's progress callback, which is how ``scan_path`` stops.
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from app.core.importers import ImportErrorKind, scan_path

__all__ = ["FolderScan", "ScanCancelled"]


class ScanCancelled(Exception):
    """Raised from the progress callback to stop a scan."""


class FolderScan(QThread):
    """Scans one path on its own thread.

    Signals:
        sigProgress(int, int, str): files done, files in all, the current file.
        sigFinished(object, object): (models, errors) from ``scan_path``; not emitted when cancelled.
        sigFailed(str): the scan raised (a bug or an unreadable tree), with the message.
    """

    sigProgress = Signal(int, int, str)
    sigFinished = Signal(object, object)
    sigFailed = Signal(str)

    def __init__(self, path: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._path = path
        self._cancel = threading.Event()
        self.cancelled = False

    @property
    def path(self) -> str:
        """The file or folder being scanned."""
        return self._path

    def cancel(self) -> None:
        self._cancel.set()

    def _progress(self, done: int, total: int, current: str) -> None:
        if self._cancel.is_set():
            raise ScanCancelled(self._path)
        self.sigProgress.emit(done, total, current)

    def run(self) -> None:
        try:
            models, errors = scan_path(self._path, progress=self._progress)
        except ScanCancelled:
            self.cancelled = True
            return
        except Exception as err:  # noqa: BLE001 - reported to the user, never a crash of the UI
            self.sigFailed.emit(f"{type(err).__name__}: {err}")
            return
        if self._cancel.is_set():
            self.cancelled = True
            return
        self.sigFinished.emit(models, errors)


def scanned_summary(registered: list[Any], errors: list[Any]) -> str:
    """One line for the status area: how many registered, how many skipped, how many ignored as no model."""
    ignored = [e for e in errors if getattr(e, "kind", None) == ImportErrorKind.NOT_A_MODEL]
    skipped = [e for e in errors if getattr(e, "kind", None) != ImportErrorKind.NOT_A_MODEL]
    text = f"{len(registered)} model(s) registered"
    if skipped:
        text += f", {len(skipped)} file(s) skipped: " + "; ".join(
            f"{getattr(e, 'path', '?')}: {getattr(e, 'message', e)}" for e in skipped[:3])
    if ignored:
        text += f", {len(ignored)} file(s) ignored as not models"
    return text
