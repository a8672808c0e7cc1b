#!/usr/bin/env bash
# Sets up ModelDeck in ./.venv on a Debian/Ubuntu machine that has only python3.
#   scripts/bootstrap.sh          the application
#   scripts/bootstrap.sh test     the application, its test tools and the llama.cpp runtime
#   scripts/bootstrap.sh llama    the application with the llama.cpp runtime
# Installs the system libraries Qt needs where they are missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

say() { printf 'modeldeck setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root to run: $*"; return 1
  fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { say "missing system packages ($*) and no apt-get: install them yourself"; return 0; }
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  say "installing system packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { say "Python 3.10 or newer is needed (found $(python3 --version 2>&1))"; exit 1; }

# Debian's python3 ships venv/ensurepip separately.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  v=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install "python${v}-venv" || apt_install python3-venv
fi

# Shared libraries the Qt wheels load: the offscreen platform and fonts ...
qt_libs=(libEGL.so.1:libegl1 libGL.so.1:libgl1 libxkbcommon.so.0:libxkbcommon0 libfontconfig.so.1:libfontconfig1
         libdbus-1.so.3:libdbus-1-3 libglib-2.0.so.0:libglib2.0-0)
# ... and the xcb platform plugin, the window on an X11 desktop (`ldd` of PySide6/Qt/plugins/platforms/
# libqxcb.so and Qt/lib/libQt6XcbQpa.so.6): without them `modeldeck` on a fresh desktop stops with
# "Could not load the Qt platform plugin "xcb"".
xcb_libs=(libxcb.so.1:libxcb1 libX11.so.6:libx11-6 libX11-xcb.so.1:libx11-xcb1 libxcb-cursor.so.0:libxcb-cursor0
          libxcb-icccm.so.4:libxcb-icccm4 libxcb-image.so.0:libxcb-image0 libxcb-keysyms.so.1:libxcb-keysyms1
          libxcb-randr.so.0:libxcb-randr0 libxcb-render.so.0:libxcb-render0 libxcb-render-util.so.0:libxcb-render-util0
          libxcb-shape.so.0:libxcb-shape0 libxcb-shm.so.0:libxcb-shm0 libxcb-sync.so.1:libxcb-sync1
          libxcb-util.so.1:libxcb-util1 libxcb-xfixes.so.0:libxcb-xfixes0 libxcb-xkb.so.1:libxcb-xkb1
          libxkbcommon-x11.so.0:libxkbcommon-x11-0)
missing=()
# Read the linker cache once. (Piping it into `grep -q` under pipefail fails whenever grep stops
# reading early: a library that is there then counts as missing and apt runs on every start.)
cache="$(ldconfig -p 2>/dev/null || true)"
for pair in "${qt_libs[@]}" "${xcb_libs[@]}"; do
  lib="${pair%%:*}"; pkg="${pair##*:}"
  grep -qF "$lib (" <<<"$cache" || missing+=("$pkg")
done
command -v fc-list >/dev/null 2>&1 || missing+=(fontconfig)
if [ "$extra" = "test" ]; then
  # tests/gui_xcb opens the dashboard in a real X server (Xvfb) and drives it with xdotool.
  command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
  command -v xauth >/dev/null 2>&1 || missing+=(xauth)
  command -v xdotool >/dev/null 2>&1 || missing+=(xdotool)
  # the desktop entry and AppStream metadata are validated by the tests
  command -v desktop-file-validate >/dev/null 2>&1 || missing+=(desktop-file-utils)
  command -v appstreamcli >/dev/null 2>&1 || missing+=(appstream)
  # The monitoring tests scrape `modeldeck exporter` with a real Prometheus and check the shipped
  # alert rules with promtool (both in Debian's and Ubuntu's prometheus package).
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
fi
if [ "$extra" = "test" ] || [ "$extra" = "llama" ]; then  # llama-cpp-python builds from source (cmake comes from PyPI)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
fi
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi

spec="."
# The tests hold ModelDeck's estimates against real llama.cpp loads, so they install its runtime too.
[ "$extra" = "test" ] && spec=".[test,llama]"
[ "$extra" = "llama" ] && spec=".[llama]"
stamp=".venv/.modeldeck-installed-${extra:-app}"
digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
# A fuller install of the same pyproject.toml serves too: `test` holds the app and llama, `llama` the app.
covering=("$stamp")
[ -z "$extra" ] && covering+=(.venv/.modeldeck-installed-llama .venv/.modeldeck-installed-test)
[ "$extra" = "llama" ] && covering+=(.venv/.modeldeck-installed-test)
installed=""
for s in "${covering[@]}"; do
  if [ -f "$s" ] && [ "$(cat "$s")" = "$digest" ]; then installed=1; fi
done
if [ -z "$installed" ]; then
  say "installing ModelDeck ${extra:+with $extra tools }into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$spec"
  echo "$digest" > "$stamp"
fi
