"""websocketd-py under Wine: the official Windows CPython serving, Linux clients connecting.

scripts/windows-tests.sh builds the Windows Python and sets the variables read
here. Each Windows process Wine runs is a Linux process too, with the Wine
prefix in its environment: that is how the tests see what a server under Wine
has started, and what it left behind.
"""

import os
import signal
import sys
import time

import pytest

from helpers import Server

#: "required" when the Windows lane runs: a broken set-up then fails instead of skipping.
MODE = os.environ.get("WEBSOCKETD_PY_WINDOWS_TESTS", "")
#: The Windows python.exe (a Linux path) scripts/windows-tests.sh built.
PYTHON = os.environ.get("WEBSOCKETD_PY_WINDOWS_PYTHON", "")
#: The checkout under test.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Runs this checkout's websocketd_py: the embeddable Python's ._pth file makes it ignore
#: PYTHONPATH, so the checkout goes first on sys.path here (argv[1]).
BOOTSTRAP = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
             "runpy.run_module('websocketd_py', run_name='__main__', alter_sys=True)")

#: Wine's own processes, which start with the first Windows program and outlive it.
WINE_SERVICES = {"wineserver", "wineserver64", "services.exe", "winedevice.exe",
                 "explorer.exe", "plugplay.exe", "svchost.exe", "rpcss.exe", "wineboot.exe",
                 "winemenubuilder.exe", "conhost.exe"}

needs_windows_console = pytest.mark.skipif(
    sys.platform != "win32",
    reason="needs a real Windows console: Wine cannot deliver CTRL_BREAK_EVENT")


def windows_path(path):
    """`path` as Windows programs under Wine see it (Wine's Z: drive is /)."""
    return "Z:" + os.fspath(path).replace("/", "\\")


def windows_processes():
    """Linux PIDs of the live Windows programs in our Wine prefix (Wine's services left out)."""
    marker = b"WINEPREFIX=" + os.fsencode(os.environ.get("WINEPREFIX", ""))
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                program = f.read().split(b"\0")[0].strip()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        name = program.replace(b"\\", b"/").rsplit(b"/", 1)[-1].decode(errors="replace").lower()
        if state != "Z" and name not in WINE_SERVICES:
            found.add(int(entry))
    return found


class WineServer(Server):
    """websocketd-py running on the Windows CPython under Wine; stopped with Ctrl-C."""

    def __init__(self, args, cwd=None, env=None, port_flag=True):
        self.already_running = windows_processes()
        command = ["wine", PYTHON, "-c", BOOTSTRAP, windows_path(ROOT)]
        if port_flag:
            command += ["--port=0", "--address=127.0.0.1"]
        self._start(command + list(args), cwd=cwd, env=None if env is None else {
            **os.environ, **env})

    def programs(self):
        """PIDs of the Windows programs started since this server was (its sessions' too)."""
        return windows_processes() - self.already_running - {self.proc.pid}

    def session_pids(self):
        return sorted(self.programs())

    def stop(self, sig=signal.SIGINT, timeout=15):
        """Ctrl-C (Wine turns SIGINT into CTRL_C_EVENT); the exit status."""
        return super().stop(sig, timeout)

    def leftovers(self, timeout=5.0):
        """Windows programs this server started that still run `timeout` s after it stopped."""
        deadline = time.monotonic() + timeout
        while (left := self.programs()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left
