"""Which Qt plugins and translations the binary keeps (shared by the hook overrides next to this file).

The stock PyInstaller hooks for PySide6.QtCore/QtGui/QtWidgets/QtSvg collect every plugin of each kind
(all platforms, egl device integrations, input methods, GTK3 platform theme, image formats, ...) and every
Qt translation. These overrides filter that list *before* PyInstaller resolves shared-library
dependencies, so that what a dropped plugin links (GTK3, cairo, pango, QtNetwork, the eglfs libraries)
is not collected either.
"""

from __future__ import annotations

import os

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

KEEP_PLUGINS: dict[str, set[str] | None] = {
    # X11 (xcb), Wayland, and the two headless ones (`modeldeck screenshot` uses offscreen).
    "platforms": {"libqxcb.so", "libqoffscreen.so", "libqminimal.so", "libqwayland.so",
                  "libqwayland-generic.so", "libqwayland-egl.so"},
    # A Wayland window needs the xdg-shell integration and (on GNOME) client-side decorations.
    "wayland-shell-integration": {"libxdg-shell.so"},
    "wayland-decoration-client": None,
    # The application icon is an SVG (PNG support is built into QtGui).
    "iconengines": {"libqsvgicon.so"},
    "imageformats": {"libqsvg.so"},
    # Dead keys and compose sequences, and IBus input methods (CJK and others), in text fields.
    "platforminputcontexts": {"libcomposeplatforminputcontextplugin.so", "libibusplatforminputcontextplugin.so"},
}


def keep(dest: str) -> bool:
    """False for a Qt translation or for a Qt plugin not in KEEP_PLUGINS; True for anything else."""
    dest = dest.replace(os.sep, "/")
    marker = "PySide6/Qt/"
    if marker not in dest + "/":
        return True
    rest = dest.split(marker, 1)[1]
    if rest.startswith("translations"):
        return False
    if rest.startswith("plugins/"):
        parts = rest.split("/")
        if len(parts) < 2:
            return True
        kind = parts[1]
        if kind not in KEEP_PLUGINS:
            return False
        allowed = KEEP_PLUGINS[kind]
        return allowed is None or len(parts) == 2 or parts[-1] in allowed
    return True


def trimmed_qt6_dependencies(hook_file: str):
    hiddenimports, binaries, datas = add_qt6_dependencies(hook_file)
    # Entries are (source, destination folder); a source may be a single file or a whole folder.
    def wanted(entry) -> bool:
        src, dest_dir = entry
        return keep(os.path.join(dest_dir, os.path.basename(src)))
    return hiddenimports, [b for b in binaries if wanted(b)], [d for d in datas if wanted(d)]
