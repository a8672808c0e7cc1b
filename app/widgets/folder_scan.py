"""FolderScan: ``scan_path`` on a worker thread, with progress and cancel, results on the GUI thread; ScanFlow:
the Models tab's scan from start to preview.

Reading headers of a large model folder takes seconds on a slow disk; the UI must not freeze.
Cancelling raises inside the core's progress callback, which is how ``scan_path`` stops.
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtWidgets import QMessageBox, QProgressDialog, QWidget

from app.core.importers import ImportErrorKind, scan_path
from app.widgets.focus import return_focus_after
from app.widgets.ports import ManagedRegistry
from app.widgets.scan_preview import ScanPreviewDialog

__all__ = ["FolderScan", "ScanCancelled", "ScanFlow", "scanned_summary"]


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


class ScanFlow(QObject):
    """A scan started from the Models tab: the thread, a cancellable progress dialog, then the preview
    (nothing is registered until the user confirms it). Dialogs are parented to ``parent``.

    Signals:
        sigRunning(bool): a scan started or ended (the Scan button follows it).
        sigStatus(str): a one-line message (what was registered, skipped, cancelled, failed).
        sigRegistered(str): the first model registered from a preview (to select it).
    """

    sigRunning = Signal(bool)
    sigStatus = Signal(str)
    sigRegistered = Signal(str)

    def __init__(self, registry: ManagedRegistry, parent: QWidget) -> None:
        super().__init__(parent)
        self._registry = registry
        self._parent = parent
        self.scan: FolderScan | None = None
        self.preview: ScanPreviewDialog | None = None
        self._progress: QProgressDialog | None = None

    def start(self, path: str) -> FolderScan:
        if self.scan is not None:
            raise RuntimeError("a scan is already running")
        scan = FolderScan(path, self)
        progress = QProgressDialog(f"Reading model headers under {path}…", "Cancel", 0, 0, self._parent)
        progress.setWindowTitle("Scan folder")
        progress.setMinimumDuration(300)
        progress.setAutoClose(False)
        progress.setAutoReset(False)
        progress.canceled.connect(scan.cancel)
        scan.sigProgress.connect(self._on_progress)
        scan.sigFinished.connect(self._on_finished)
        scan.sigFailed.connect(self._on_failed)
        scan.finished.connect(self._on_done)
        self.scan, self._progress = scan, progress
        self.sigRunning.emit(True)
        scan.start()
        return scan

    def cancel(self) -> None:
        if self.scan is not None:
            self.scan.cancel()

    def shutdown(self) -> None:
        scan = self.scan
        if scan is not None:
            scan.cancel()
            scan.wait(5000)

    def _on_progress(self, done: int, total: int, current: str) -> None:
        if self._progress is not None:
            self._progress.setMaximum(max(total, 1))
            self._progress.setValue(done)
            self._progress.setLabelText(f"{done} of {total}: {current}")

    def _on_finished(self, models: list[Any], errors: list[Any]) -> None:
        path = self.scan.path if self.scan is not None else ""
        preview = ScanPreviewDialog(self._registry, path, models, errors, self._parent)
        preview.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        preview.accepted.connect(lambda: self._after_preview(preview))
        preview.rejected.connect(lambda: self.sigStatus.emit("Scan: nothing registered"))
        preview.destroyed.connect(lambda _o=None: setattr(self, "preview", None))
        self.preview = preview
        return_focus_after(preview, self._parent)
        preview.open()

    def _after_preview(self, preview: ScanPreviewDialog) -> None:
        self.sigStatus.emit(scanned_summary(preview.registered, preview.errors))
        if preview.registered:
            self.sigRegistered.emit(preview.registered[0].id)

    def _on_failed(self, message: str) -> None:
        self.sigStatus.emit(f"Scan failed: {message}")
        QMessageBox.warning(self._parent, "Scan failed", message)

    def _on_done(self) -> None:
        scan, self.scan = self.scan, None
        if scan is not None and scan.cancelled:
            self.sigStatus.emit("Scan cancelled")
        if self._progress is not None:
            self._progress.close()
            self._progress.deleteLater()
            self._progress = None
        self.sigRunning.emit(False)
        if scan is not None:
            scan.deleteLater()
