"""The standalone dashboard: a main window around the ResourcePanel, on a qasync event loop.

Everything process-wide lives here and only here (QApplication, the Fusion style, the palette,
the bundled font for screenshots): the widgets stay embeddable in a host's own window.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# PySide6 before qasync, so qasync binds to it (QT_NOTES.md).
from PySide6.QtCore import QByteArray, QObject, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QFont, QFontDatabase, QIcon, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QDialog, QMainWindow, QMessageBox, QWidget

from app.core.settings import UserSettings
from app.widgets.focus import return_focus_after
from app.widgets.memory_graph import TIME_WINDOWS
from app.widgets.ports import ManagedRegistry, ManagerPort, SamplerPort
from app.widgets.quit_guard import ask_before_quitting, held_models
from app.widgets.resource_panel import ResourcePanel

__all__ = ["MainWindow", "run_gui", "screenshot", "bundled_fonts_dir", "register_bundled_fonts",
           "apply_color_scheme", "NO_DISPLAY_MESSAGE"]

#: The questions the dashboard asks before acting, by key: making room for a load (moving others),
#: evicting or offloading several models at once, quitting with models loaded.
CONFIRMATIONS: dict[str, str] = {
    "moves": "&Ask before making room for a load (moving others)",
    "bulk": "Ask before evicting or offloading &several models",
    "quit": "Ask before &quitting with models loaded",
}

ORGANIZATION = "ModelDeck"
APPLICATION = "ModelDeck"
UI_FONT = "DejaVu Sans"
NO_DISPLAY_MESSAGE = (
    "modeldeck: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set), so the dashboard cannot "
    "open a window.\n"
    "  - render it to an image instead:  modeldeck screenshot dashboard.png [--simulate rtx4090]\n"
    "  - or read the hardware as text:    modeldeck status\n"
    "  - or set QT_QPA_PLATFORM (e.g. offscreen, vnc) to choose a Qt platform yourself."
)


# --- resources ---------------------------------------------------------------------------------------
APP_ID = "io.github.modeldeck.ModelDeck"


def _resources_dir(sub: str) -> Path | None:
    """``app/resources/<sub>`` when installed as package data, else the source tree's ``resources/<sub>``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "resources" / sub, here.parent / "resources" / sub):
        if candidate.is_dir():
            return candidate
    return None


def bundled_fonts_dir() -> Path | None:
    return _resources_dir("fonts")


def app_icon() -> QIcon:
    """The application icon (SVG, with the rendered PNG sizes for small menus)."""
    icon = QIcon()
    folder = _resources_dir("icons")
    if folder is not None:
        for png in sorted(folder.glob(f"hicolor/*/apps/{APP_ID}.png")):
            icon.addFile(str(png))
        svg = folder / f"{APP_ID}.svg"
        if svg.exists():
            icon.addFile(str(svg))
    return icon


def register_bundled_fonts() -> list[str]:
    """Add the bundled TTFs to the application's font database; returns the families added."""
    folder = bundled_fonts_dir()
    families: list[str] = []
    if folder is None:
        return families
    for ttf in sorted(folder.glob("*.ttf")):
        font_id = QFontDatabase.addApplicationFont(str(ttf))
        if font_id >= 0:
            families += QFontDatabase.applicationFontFamilies(font_id)
    return families


# --- palette ---------------------------------------------------------------------------------------
def _dark_palette() -> QPalette:
    pal = QPalette()
    c = {
        QPalette.ColorRole.Window: "#2b2d31", QPalette.ColorRole.WindowText: "#e6e6e6",
        QPalette.ColorRole.Base: "#1e1f22", QPalette.ColorRole.AlternateBase: "#26282c",
        QPalette.ColorRole.ToolTipBase: "#1e1f22", QPalette.ColorRole.ToolTipText: "#e6e6e6",
        QPalette.ColorRole.Text: "#e6e6e6", QPalette.ColorRole.Button: "#35373c",
        QPalette.ColorRole.ButtonText: "#e6e6e6", QPalette.ColorRole.BrightText: "#ff6b6b",
        QPalette.ColorRole.Link: "#6ea8fe", QPalette.ColorRole.Highlight: "#3b82f6",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.PlaceholderText: "#8b8d93",
        QPalette.ColorRole.Mid: "#45474d", QPalette.ColorRole.Dark: "#18191c",
        QPalette.ColorRole.Light: "#45474d", QPalette.ColorRole.Midlight: "#3a3c41",
        QPalette.ColorRole.Shadow: "#000000",
    }
    for role, color in c.items():
        pal.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor("#7d7f85"))
    return pal


def apply_color_scheme(app: QApplication, scheme: Qt.ColorScheme | None = None) -> None:
    """Fusion with a dark or light palette, following the system's scheme (or ``scheme``)."""
    scheme = app.styleHints().colorScheme() if scheme is None else scheme
    app.setPalette(_dark_palette() if scheme == Qt.ColorScheme.Dark else app.style().standardPalette())


def _setup_app(app: QApplication, font_size: float = 9.0) -> None:
    app.setStyle("Fusion")
    if UI_FONT in register_bundled_fonts():
        font = QFont(UI_FONT)
        font.setPointSizeF(font_size)
        app.setFont(font)


# --- the window ---------------------------------------------------------------------------------------
class MainWindow(QMainWindow):
    """The dashboard window: the panel, menus, a status bar, and settings for its layout."""

    def __init__(self, sampler: SamplerPort, registry: ManagedRegistry, *, manager: ManagerPort | None = None,
                 settings: QSettings | None = None, user_settings: UserSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelDeckMainWindow")
        self.setWindowTitle("ModelDeck")
        self._settings = settings
        self.restored_geometry = False
        self.panel = ResourcePanel(sampler, registry, manager=manager, parent=self)
        self.setCentralWidget(self.panel)
        if settings is not None:
            # The Cluster tab's Prometheus servers and exporters, kept for the next start.
            saved = settings.value("cluster/sources", [])
            self.panel.cluster.set_sources([saved] if isinstance(saved, str) else list(saved or []))
            self.panel.cluster.sigSourcesChanged.connect(lambda specs: self.save_setting("cluster/sources", specs))
        # The status bar is there from the start (it never appears with the first message and shifts
        # the layout); the panel's own line says the same, so the bar keeps news for 10 s.
        self.setStatusBar(self.statusBar())
        self.statusBar().setSizeGripEnabled(True)
        self.panel.sigStatus.connect(lambda text: self.statusBar().showMessage(" ".join(text.split()), 10_000))
        self.panel.sigWindowChanged.connect(lambda seconds: self.save_setting("panel/window_s", seconds))
        #: What the user is asked before it happens (CONFIRMATIONS), kept in the window's settings.
        self.confirm: dict[str, bool] = {}
        self.quit_box: QMessageBox | None = None
        self._quitting = False
        self._user_settings = user_settings
        for key in CONFIRMATIONS:
            stored = settings.value(f"confirm/{key}", "true") if settings is not None else "true"
            self.set_confirm(key, str(stored).lower() != "false", save=False)
        self.panel.sigConfirmMovesChanged.connect(lambda on: self.set_confirm("moves", on))
        loaded = getattr(self.panel, "loaded_view", None)
        if loaded is not None:
            loaded.sigConfirmBulkChanged.connect(lambda on: self.set_confirm("bulk", on))
        self._build_menus()
        for problem in getattr(registry, "problems", []):
            self.statusBar().showMessage(problem)
        self._restore()

    def set_confirm(self, key: str, on: bool, *, save: bool = True) -> None:
        """Turn one of CONFIRMATIONS on or off where it acts, and keep it for the next start."""
        self.confirm[key] = bool(on)
        if key == "moves":
            self.panel.loads.confirm_moves = bool(on)
        elif key == "bulk" and getattr(self.panel, "loaded_view", None) is not None:
            self.panel.loaded_view.confirm_bulk = bool(on)
        if save:
            self.save_setting(f"confirm/{key}", bool(on))

    def save_setting(self, key: str, value: Any) -> None:
        """Write a setting the user just changed through at once (a killed process keeps it)."""
        if self._settings is not None:
            self._settings.setValue(key, value)
            self._settings.sync()

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        add = file_menu.addAction("&Add model…", self.panel.browser.open_add_dialog)
        _set_keys(add, QKeySequence.StandardKey.New, "Ctrl+N")
        scan = file_menu.addAction("&Scan folder…", self.panel.browser.scan_button.click)
        _set_keys(scan, QKeySequence.StandardKey.Open, "Ctrl+O")
        settings_action = file_menu.addAction("Se&ttings…", self.open_settings)
        _set_keys(settings_action, QKeySequence.StandardKey.Preferences, "Ctrl+,")
        file_menu.addSeparator()
        quit_action = file_menu.addAction("&Quit", self.close)
        _set_keys(quit_action, QKeySequence.StandardKey.Quit, "Ctrl+Q")

        view = self.menuBar().addMenu("&View")
        history = view.addMenu("&History")
        group = QActionGroup(self)
        self._window_actions: dict[int, QAction] = {}
        for n, (label, seconds) in enumerate(TIME_WINDOWS.items(), start=1):
            action = history.addAction(label)
            action.setCheckable(True)
            action.setShortcut(QKeySequence(f"Ctrl+{n}"))
            action.triggered.connect(lambda _c=False, s=seconds: self.panel.set_window(s))
            group.addAction(action)
            self._window_actions[seconds] = action
        self.panel.window_combo.currentIndexChanged.connect(self._sync_window_actions)
        self._sync_window_actions()

        help_menu = self.menuBar().addMenu("&Help")
        keys = help_menu.addAction("&Keyboard shortcuts", self.show_shortcuts)
        keys.setShortcut(QKeySequence("F1"))
        help_menu.addAction("&About ModelDeck", self._about)

    def _sync_window_actions(self, *_: Any) -> None:
        action = self._window_actions.get(self.panel.window_s)
        if action is not None:
            action.setChecked(True)

    def open_settings(self) -> QDialog:
        """File › Settings: keep-alive, safety reserves and the questions asked before acting."""
        from app.core.settings import default_settings_path, load_settings
        from app.widgets.settings_dialog import SettingsDialog

        current = self._user_settings
        if current is None:
            try:
                current = load_settings()
            except ValueError as err:  # a broken file: start from the defaults, and say so
                self.statusBar().showMessage(f"Settings file not read ({err}); showing the defaults")
                current = UserSettings()
        dialog = SettingsDialog(current, self.panel.manager, confirm=dict(self.confirm), labels=CONFIRMATIONS,
                                path=default_settings_path(), parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.sigSettingsChanged.connect(self._settings_saved)
        dialog.sigConfirmChanged.connect(self.set_confirm)
        return_focus_after(dialog, self.panel)
        dialog.open()
        return dialog

    def _settings_saved(self, new: UserSettings) -> None:
        self._user_settings = new
        self.panel.sigStatus.emit("Settings saved; keep-alive applies to models loaded from now on")

    def show_shortcuts(self) -> QDialog:
        """Help › Keyboard shortcuts: every key the window answers to, read from the window itself."""
        from app.widgets.shortcuts_dialog import ShortcutsDialog

        dialog = ShortcutsDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        return_focus_after(dialog, self.panel)
        dialog.open()
        return dialog

    def _about(self) -> None:
        from app import __version__

        QMessageBox.about(self, "About ModelDeck",
                          f"ModelDeck {__version__}\nWhat your GPUs and RAM hold, and what will fit.")

    def _restore(self) -> None:
        s = self._settings
        if s is None:
            return
        geometry, state = s.value("window/geometry"), s.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restored_geometry = self.restoreGeometry(geometry)
        if isinstance(state, QByteArray):
            self.restoreState(state)
        panel_state = {k: s.value(f"panel/{k}") for k in ("splitter", "browser_splitter")}
        panel_state = {k: bytes(v.data()) for k, v in panel_state.items() if isinstance(v, QByteArray)}
        window_s = s.value("panel/window_s")
        if window_s is not None:
            panel_state["window_s"] = int(window_s)
        self.panel.restore_state(panel_state)

    def save_settings(self) -> None:
        s = self._settings
        if s is None:
            return
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        state = self.panel.save_state()
        s.setValue("panel/splitter", QByteArray(state["splitter"]))
        s.setValue("panel/browser_splitter", QByteArray(state["browser_splitter"]))
        s.setValue("panel/window_s", state["window_s"])
        s.sync()

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        held = held_models(self.panel.manager)
        if held and self.confirm["quit"] and not self._quitting:
            event.ignore()
            if self.quit_box is None:
                self.quit_box = ask_before_quitting(self, held, self._quit_now, self._never_ask_quit)
                self.quit_box.finished.connect(self._forget_quit_box)
            return
        self.save_settings()
        self.panel.shutdown()
        super().closeEvent(event)

    def _quit_now(self) -> None:
        self._quitting = True
        self.close()

    def _never_ask_quit(self) -> None:
        self.set_confirm("quit", False)

    def _forget_quit_box(self, *_: Any) -> None:
        self.quit_box = None


def _set_keys(action: QAction, standard: QKeySequence.StandardKey, fallback: str) -> None:
    """The platform's keys for ``standard``, or ``fallback`` where the platform has none (some have no Quit)."""
    keys = QKeySequence.keyBindings(standard)
    action.setShortcuts(keys or [QKeySequence(fallback)])


# --- entry points -------------------------------------------------------------------------------------
def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


#: The sampling intervals the dashboard takes: the sampler's minimum up to an hour (the 1 h graph
#: then still has a point). `modeldeck gui --interval` checks the same range.
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 3600.0


def check_gui_args(simulate: str | None, interval_s: float) -> None:
    """Raise ValueError with one clear line when the dashboard's arguments are wrong (before any window)."""
    import math

    from app.core.hardware.simulated import parse_spec

    try:
        interval = float(interval_s)
    except (TypeError, ValueError):
        raise ValueError(f"the sampling interval {interval_s!r} is not a number; give 0.1 to 3600 seconds") from None
    if not (math.isfinite(interval) and MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S):
        raise ValueError(f"the sampling interval {interval_s!r} is out of range; "
                         f"give {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} seconds")
    if simulate is not None:
        parse_spec(simulate)  # SimulationSpecError is a ValueError with the known cards in it


def check_screenshot_args(out: str | os.PathLike[str], simulate: str | None) -> None:
    """Raise ValueError with one clear line when ``out`` cannot be written or ``simulate`` is wrong,
    before anything is rendered. A missing folder is an error, not created: a typo in a path should
    not leave a new folder tree behind, and the user sees exactly which folder is missing."""
    from app.core.hardware.simulated import parse_spec

    text = os.fspath(out)
    path = Path(text)
    if not text.strip() or text.endswith(("/", os.sep)) or path.is_dir():
        raise ValueError(f"{text!r} is a folder, not a file; give a file name such as {path / 'dashboard.png'}")
    if path.suffix and path.suffix.lower() != ".png":
        raise ValueError(f"{text!r}: screenshots are PNG images; name the file with .png")
    folder = path.parent
    if not folder.exists():
        raise ValueError(f"the folder {str(folder)!r} does not exist; create it first (mkdir -p {folder}) "
                         "or choose another path")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a folder, so {text!r} cannot be written there; choose another path")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write in the folder {str(folder)!r} (permission denied); choose another path")
    if simulate is not None:
        parse_spec(simulate)


def run_gui(simulate: str | None, interval_s: float, *, metrics_port: int | None = None,
            metrics_address: str = "127.0.0.1", cluster_sources: list[str] | None = None) -> int:
    """Open the dashboard and run until its window closes; 2 when there is no display or an argument is wrong.

    ``metrics_port``: also serve Prometheus metrics (``app.core.metrics``) while the window is open.
    ``cluster_sources``: "prometheus:URL" / "exporter:URL" entries for the Cluster tab (added to the saved ones).
    """
    try:
        check_gui_args(simulate, interval_s)
    except ValueError as err:
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return 2
    if not _has_display():
        print(NO_DISPLAY_MESSAGE, file=sys.stderr)
        return 2
    import asyncio

    import qasync

    from app.core.hardware_profiler import HardwareProfiler
    from app.core.model_registry import ModelRegistry
    from app.core.sampler import Sampler

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())
    _setup_app(app)
    apply_color_scheme(app)
    app.styleHints().colorSchemeChanged.connect(lambda scheme: apply_color_scheme(app, scheme))

    from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader
    from app.core.settings import SettingsError, load_settings

    try:
        user_settings = load_settings()
    except SettingsError as err:
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return 2
    profiler = HardwareProfiler(simulate=simulate)
    sampler = Sampler(profiler, interval_s=interval_s)
    registry = ModelRegistry()
    # Simulated GPUs get the simulated runtime: a load shows in their measured memory.
    loader = SimulatedLoader.for_profiler(profiler) or _runtime_loader()
    from app.core.calibration import CalibrationStore

    # Simulated loads measure nothing; real ones (llama.cpp) are kept, and later plans use them.
    manager = ModelResourceManager(profiler=profiler, registry=registry, settings=user_settings.manager_settings(),
                                   loader=loader, calibration=None if simulate else CalibrationStore())
    sampler.sampled.connect(manager.tick)  # measurements feed the ledger; keep-alive runs on each sample
    window = MainWindow(sampler, registry, manager=manager, settings=QSettings(ORGANIZATION, APPLICATION),
                        user_settings=user_settings)
    _show_load_progress(loader, window)
    for problem in manager.preload():
        window.statusBar().showMessage(f"preload {problem}")
    if not window.restored_geometry:  # first run: a comfortable size that fits the screen
        screen = app.primaryScreen().availableGeometry()
        window.resize(min(1280, int(screen.width() * 0.9)), min(800, int(screen.height() * 0.9)))
    if cluster_sources:
        known = window.panel.cluster.sources()
        window.panel.cluster.set_sources(known + [s for s in cluster_sources if s not in known])
        window.save_setting("cluster/sources", window.panel.cluster.sources())  # kept for the next start
    metrics = None
    if metrics_port is not None:
        from app.core.metrics import serve_metrics

        try:
            metrics = serve_metrics(manager, sampler, port=metrics_port, address=metrics_address)
        except OSError as err:
            print(f"modeldeck: error: cannot serve metrics on {metrics_address}:{metrics_port}: "
                  f"{err.strerror or err}; choose another --metrics-port", file=sys.stderr)
            window.close()
            sampler.stop()
            manager.stop()
            profiler.close()
            return 2
        window.statusBar().showMessage(f"metrics on {metrics.url}")
    sampler.tick()  # the first frame shows real numbers, not an empty window
    window.show()
    sampler.start()

    async def until_closed() -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        app.lastWindowClosed.connect(lambda: done.done() or done.set_result(0))
        return await done

    try:
        return int(qasync.run(until_closed()))
    finally:
        if metrics is not None:
            metrics.close()
        sampler.stop()
        manager.stop()
        profiler.close()


def _runtime_loader() -> Any:
    """Real GGUF loads through llama.cpp when the ``modeldeck[llama]`` extra is installed (other models
    are booked for their runtime to load); None otherwise (booking only)."""
    import importlib.util

    from app.core.llama_cpp_runtime import LlamaCppLoader, RuntimeRouter
    from app.core.manager.loaders import ReservationLoader

    # Only whether it is installed: importing llama.cpp (~0.2 s) waits for the first GGUF load, and a
    # library that does not load is then that load's one-line error, not a failed start.
    installed = importlib.util.find_spec("llama_cpp") is not None
    return RuntimeRouter(LlamaCppLoader(), ReservationLoader()) if installed else None


class _Progress(QObject):
    """Carries llama.cpp's load progress from the loading thread to the status bar."""

    sigText = Signal(str)


def _show_load_progress(loader: Any, window: MainWindow) -> None:
    llama = getattr(loader, "llama", None)
    if llama is None:
        return
    relay = _Progress(window)
    relay.sigText.connect(lambda text: window.statusBar().showMessage(text, 5_000))
    shown: dict[str, int] = {}

    def progress(model_id: str, fraction: float) -> None:
        step = int(fraction * 10)
        if shown.get(model_id) != step:  # every 10 %, not every tensor
            shown[model_id] = step
            relay.sigText.emit(f"loading {model_id} with llama.cpp: {step * 10} %")

    llama.progress = progress


def render_window(window: QWidget, size: tuple[int, int]) -> bytes:
    """The window rendered at ``size`` as PNG bytes (offscreen-friendly: no OpenGL)."""
    from PySide6.QtCore import QBuffer, QIODevice

    window.resize(*size)
    window.show()
    QApplication.processEvents()
    QApplication.processEvents()
    image = window.grab().toImage()
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(buffer.data().data())


def screenshot(out: str, simulate: str | None, size: tuple[int, int]) -> int:
    """Render the dashboard offscreen after 120 simulated one-second samples; write ``out`` as PNG.

    Deterministic: simulated GPUs (``simulate`` or a two-card demo) and RAM on a manual clock,
    the bundled font, Fusion's light palette, and the built-in catalog only (no user models).
    """
    try:
        check_screenshot_args(out, simulate)
    except ValueError as err:
        print(f"modeldeck: error: {err}", file=sys.stderr)
        return 2
    from app.core.model_registry import ModelRegistry
    from app.core.sampler import Sampler
    from app.demo import ManualClock, demo_profiler

    if QApplication.instance() is None:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "modeldeck", "-platform", "offscreen"])
    assert isinstance(app, QApplication)
    _setup_app(app)
    apply_color_scheme(app, Qt.ColorScheme.Light)

    clock = ManualClock()
    profiler = demo_profiler(simulate, clock)
    sampler = Sampler(profiler, interval_s=1.0, clock=clock)
    from app.core.model_resource_manager import ModelResourceManager, SimulatedLoader

    registry = ModelRegistry(user_store=None)
    manager = ModelResourceManager(profiler=profiler, registry=registry, clock=clock,
                                   loader=SimulatedLoader.for_profiler(profiler))
    for _ in range(90):
        sampler.tick()
        clock.advance(1.0)
    window = MainWindow(sampler, registry, manager=manager)
    window.panel.set_window(TIME_WINDOWS["1 min"])
    window.resize(*size)  # the cells reflow with the width: lay them out at the size rendered
    window.show()
    QApplication.processEvents()
    # A typical pair loaded on the first GPU half a minute ago: the measured curve rises by what
    # the simulated runtime holds, under the bands of what ModelDeck booked.
    for model_id, level in (("mistralai/Ministral-8B-Instruct-2410", "Q4_K_M"),
                            ("stable-diffusion-v1-5/stable-diffusion-v1-5", "fp16")):
        try:
            manager.load(model_id, level, "cuda:0")
        except Exception as err:  # noqa: BLE001 - a small simulated card may not hold them
            window.statusBar().showMessage(f"could not book {model_id}: {err}")
    for _ in range(30):
        sampler.tick()
        clock.advance(1.0)
    QApplication.processEvents()
    sample = registry.search("Ministral 8B", limit=1) or registry.list_models()[:1]
    if sample:
        window.panel.browser.select_model(sample[0].id)
    png = render_window(window, size)
    window.panel.shutdown()
    window.close()
    window.deleteLater()
    QApplication.processEvents()
    profiler.close()
    try:
        Path(out).write_bytes(png)
    except OSError as err:
        print(f"modeldeck: error: cannot write {out}: {err.strerror or err}; choose another path", file=sys.stderr)
        return 2
    print(f"wrote {out} ({size[0]}x{size[1]})")
    return 0
