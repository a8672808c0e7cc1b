#!/usr/bin/env bash
# Adds ModelDeck to the desktop's application menu for this user (or system-wide with PREFIX=/usr/local
# as root): the .desktop entry, the AppStream metadata and the icons. `modeldeck` must be on PATH
# (pip install modeldeck, or the standalone binary linked into ~/.local/bin).
#   packaging/linux/install-desktop-entry.sh            # ~/.local/share
#   PREFIX=/usr/local packaging/linux/install-desktop-entry.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
app_id="io.github.modeldeck.ModelDeck"
share="${PREFIX:-$HOME/.local}/share"

install -Dm644 "$here/$app_id.desktop" "$share/applications/$app_id.desktop"
install -Dm644 "$here/$app_id.metainfo.xml" "$share/metainfo/$app_id.metainfo.xml"
install -Dm644 "$root/resources/icons/$app_id.svg" "$share/icons/hicolor/scalable/apps/$app_id.svg"
for png in "$root"/resources/icons/hicolor/*/apps/"$app_id".png; do
  size="$(basename "$(dirname "$(dirname "$png")")")"
  install -Dm644 "$png" "$share/icons/hicolor/$size/apps/$app_id.png"
done
command -v update-desktop-database >/dev/null && update-desktop-database -q "$share/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$share/icons/hicolor" || true
echo "installed $app_id into $share"
command -v modeldeck >/dev/null || echo "note: modeldeck is not on PATH yet; the menu entry needs it"
