"""The `wine_server` fixture: websocketd-py on the Windows CPython under Wine.

Off (skipped) unless WEBSOCKETD_PY_WINDOWS_TESTS is set, as scripts/windows-tests.sh
does; with WEBSOCKETD_PY_WINDOWS_TESTS=required a broken Wine or Windows Python
fails the tests instead of skipping them.
"""

import os
import signal
import subprocess

import pytest

import wine


@pytest.fixture(scope="session")
def windows_python():
    """The Windows python.exe (a Linux path), checked to run under Wine as win32."""
    if not wine.MODE:
        pytest.skip("the Windows lane is off: scripts/windows-tests.sh runs these tests")
    try:
        result = subprocess.run(
            ["wine", wine.PYTHON, "-c", "import sys, websocketd_py; print(sys.platform)"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=120)
        ready = result.stdout.decode(errors="replace").strip().endswith("win32")
        problem = f"rc {result.returncode}: {result.stdout.decode(errors='replace')}"
    except (OSError, subprocess.TimeoutExpired) as error:
        ready, problem = False, repr(error)
    if not ready:
        message = f"no Windows Python under Wine at {wine.PYTHON!r} ({problem})"
        if wine.MODE == "required":
            pytest.fail(message)
        pytest.skip(message)
    # Wine's server and services for the whole run, started here with no pipe of a test's
    # server: one they inherited would hold the server's log open after it exited.
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
             "stderr": subprocess.DEVNULL}
    subprocess.run(["wineserver", "-k"], check=False, **quiet)
    subprocess.run(["wineserver", "-p"], check=True, **quiet)
    subprocess.run(["wine", "wineboot"], check=True, timeout=120, **quiet)
    yield wine.PYTHON
    subprocess.run(["wineserver", "-k"], check=False, **quiet)


@pytest.fixture
def wine_server(windows_python):
    """`wine_server(*args, cwd=None, env=None, port_flag=True, wait=True)` starts
    websocketd-py under Wine; at teardown each is stopped with Ctrl-C, must exit 0, and must
    leave no Windows program running."""
    started = []

    def start(*args, wait=True, **options):
        instance = wine.WineServer(args, **options)
        started.append(instance)
        return instance.wait_started(timeout=60) if wait else instance

    yield start
    problems = []
    for instance in started:
        status = instance.stop()
        if status != 0 and instance.port is not None:
            problems.append(f"server exited with {status}:\n{instance.log_text()}")
        leftovers = instance.leftovers()
        if leftovers:
            for pid in leftovers:
                os.kill(pid, signal.SIGKILL)
            problems.append(f"Windows programs left running: {sorted(leftovers)}\n"
                            + instance.log_text())
    if problems:
        pytest.fail("\n".join(problems))
