#!/usr/bin/env bash
# Build the standalone ModelDeck binary for Linux (PyInstaller; see packaging/binary/README.md for why).
#
#   packaging/binary/build.sh              # -> dist/modeldeck/modeldeck  (one folder; the default)
#   packaging/binary/build.sh --onefile    # -> dist/modeldeck-onefile    (one self-extracting file)
#   packaging/binary/build.sh --check      # build, then run --version / status / screenshot with env -i
#
# Run from anywhere. The first run makes a build venv in build/binary/venv (git-ignored) with ModelDeck
# installed from this checkout (not editable) plus PyInstaller; later runs reuse it and reinstall ModelDeck
# only. Set PYTHON=/path/to/python3.x to choose the interpreter (default: python3.11, else python3),
# MODELDECK_BUILD_VENV to put the venv elsewhere, and MODELDECK_FRESH_VENV=1 to rebuild it.
# Prints the size of the result (on disk and as a .tar.gz) at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${MODELDECK_BUILD_VENV:-$REPO/build/binary/venv}"
WORK="$REPO/build/binary/work"
DIST="$REPO/dist"
PYINSTALLER_SPEC="pyinstaller>=6.10,<7"

ONEFILE=0
CHECK=0
for arg in "$@"; do
    case "$arg" in
        --onefile) ONEFILE=1 ;;
        --check) CHECK=1 ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

start=$(date +%s)

# --- the build venv -----------------------------------------------------------------------------------
if [[ "${MODELDECK_FRESH_VENV:-0}" == 1 ]]; then rm -rf "$VENV"; fi
if [[ ! -x "$VENV/bin/python" ]]; then
    PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    echo "==> creating the build venv $VENV with $PY"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
echo "==> installing ModelDeck (non-editable) and PyInstaller into the build venv"
mkdir -p "$WORK"
pip_log="$WORK/pip.log"
{
    "$VENV/bin/python" -m pip install "$PYINSTALLER_SPEC" "$REPO"
    # Always refresh the app itself (same version number, new code).
    "$VENV/bin/python" -m pip install --no-deps --force-reinstall "$REPO"
} > "$pip_log" 2>&1 || { tail -n 40 "$pip_log"; echo "build.sh: pip failed; full log in $pip_log" >&2; exit 1; }
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md, sys
dists = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
if "pyside6" in dists or "pyside6-addons" in dists:
    sys.exit("build.sh: the build venv has the full PySide6 (or PySide6-Addons); only PySide6-Essentials is wanted. "
             "Rerun with MODELDECK_FRESH_VENV=1.")
EOF

# --- PyInstaller --------------------------------------------------------------------------------------
mkdir -p "$DIST"
echo "==> PyInstaller ($("$VENV/bin/python" -m PyInstaller --version))"
# Run outside the repository root so that `import app` finds the installed package, not the source tree.
(
    cd "$WORK"
    MODELDECK_ONEFILE="$ONEFILE" "$VENV/bin/python" -m PyInstaller \
        --noconfirm --clean --log-level WARN \
        --workpath "$WORK" --distpath "$DIST" \
        "$HERE/modeldeck.spec"
)

if [[ "$ONEFILE" == 1 ]]; then
    TARGET="$DIST/modeldeck-onefile"
    BIN="$TARGET"
    tar -czf "$DIST/modeldeck-onefile-linux-x86_64.tar.gz" -C "$DIST" modeldeck-onefile
    TARBALL="$DIST/modeldeck-onefile-linux-x86_64.tar.gz"
else
    TARGET="$DIST/modeldeck"
    BIN="$TARGET/modeldeck"
    tar -czf "$DIST/modeldeck-linux-$(uname -m).tar.gz" -C "$DIST" modeldeck
    TARBALL="$DIST/modeldeck-linux-$(uname -m).tar.gz"
fi

end=$(date +%s)
echo
echo "built:    $BIN  ($("$BIN" --version))"
echo "on disk:  $(du -sh "$TARGET" | cut -f1)  ($(du -sb "$TARGET" | cut -f1) bytes)"
echo "tarball:  $(du -h "$TARBALL" | cut -f1)  $TARBALL"
echo "time:     $((end - start)) s"

if [[ "$CHECK" == 1 ]]; then
    echo
    echo "==> checking the binary with an empty environment (env -i)"
    tmp="$(mktemp -d)"
    run() { env -i HOME="$tmp" LANG=C.UTF-8 PATH=/usr/bin:/bin "$BIN" "$@"; }
    run --version
    run status --simulate rtx4090 --json > "$tmp/status.json"
    run models --json > "$tmp/models.json"
    "$VENV/bin/python" - "$tmp" <<'EOF2'
import json, sys
tmp = sys.argv[1]
status = json.load(open(f"{tmp}/status.json"))
assert status["devices"] and status["devices"][0]["name"] == "NVIDIA GeForce RTX 4090", status["devices"]
models = json.load(open(f"{tmp}/models.json"))["models"]
assert len(models) > 10, f"only {len(models)} models: the catalog is missing"
print(f"status --json: ok ({status['devices'][0]['name']}); models --json: {len(models)} catalog models")
EOF2
    run screenshot "$tmp/shot.png" --simulate rtx4090 2>/dev/null
    echo "screenshot: $(du -h "$tmp/shot.png" | cut -f1) $tmp/shot.png"
    if [[ "$ONEFILE" == 0 ]]; then
        ls "$TARGET"/_internal/app/resources/fonts/*.ttf > /dev/null && echo "fonts: $(ls "$TARGET"/_internal/app/resources/fonts | tr '\n' ' ')"
    fi
fi
