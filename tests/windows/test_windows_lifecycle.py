"""Starting and stopping a server on the Windows CPython under Wine: Ctrl-C with live
sessions ends them all, and a second server on a taken port is refused."""

import contextlib

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import wine

ECHO_PY = "import sys\nfor line in sys.stdin:\n    print(line, end='', flush=True)\n"


def test_ctrl_c_ends_live_sessions_with_1001_and_leaves_nothing_running(wine_server, tmp_path):
    (tmp_path / "echo.py").write_text(ECHO_PY)
    srv = wine_server("echo.py", cwd=tmp_path)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(srv.url())) for _ in range(3)]
        for number, ws in enumerate(clients):
            ws.send(f"client {number}")
            assert ws.recv(timeout=20) == f"client {number}"
        assert len(srv.programs()) >= 3  # the three sessions' python.exe
        assert srv.stop() == 0
        for ws in clients:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
    assert sum(" | DISCONNECT" in line for line in srv.lines) == 3
    assert not srv.leftovers()


def test_a_second_server_on_a_taken_port_is_refused(wine_server, tmp_path):
    (tmp_path / "echo.py").write_text(ECHO_PY)
    first = wine_server("echo.py", cwd=tmp_path)
    second = wine_server(f"--port={first.port}", "--address=127.0.0.1", "echo.py", cwd=tmp_path,
                         port_flag=False, wait=False)
    assert second.proc.wait(60) != 0
    assert any(str(first.port) in line for line in second.lines + second.stderr_lines), \
        second.log_text()
    with connect(first.url()) as ws:  # the first one still serves
        ws.send("still here")
        assert ws.recv(timeout=20) == "still here"


@wine.needs_windows_console
def test_a_program_that_ignores_stdin_eof_gets_ctrl_break_first(wine_server, tmp_path):
    """On a console, the stop schedule's CTRL_BREAK_EVENT reaches the program's handler."""
    marker = tmp_path / "got-ctrl-break"
    (tmp_path / "stubborn.py").write_text(
        "import signal, sys, time\n"
        f"def bye(*_):\n    open({str(marker)!r}, 'w').close()\n    sys.exit(0)\n"
        "signal.signal(signal.SIGBREAK, bye)\nprint('ready', flush=True)\n"
        "while True:\n    time.sleep(1)\n")
    srv = wine_server("stubborn.py", cwd=tmp_path)
    with connect(srv.url()) as ws:
        assert ws.recv(timeout=20) == "ready"
    srv.wait_log(r"DISCONNECT")
    assert marker.exists()
