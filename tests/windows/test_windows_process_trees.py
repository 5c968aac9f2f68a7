"""Process trees on Windows end: every program runs in a Job Object of its own, and the stop
schedule ends the job, grandchildren included, even without a console to send
CTRL_BREAK_EVENT through (under Wine there is none)."""

import time

from websockets.sync.client import connect

#: Starts a grandchild that ignores Ctrl-Break, then ignores stdin's end itself.
STUBBORN_PY = """\
import signal, subprocess, sys, time
signal.signal(signal.SIGBREAK, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c",
                  "import signal, time; signal.signal(signal.SIGBREAK, signal.SIG_IGN); "
                  "print('grandchild', flush=True); time.sleep(1000)"])
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_a_stubborn_program_and_its_grandchild_end_when_the_client_leaves(wine_server,
                                                                          tmp_path):
    (tmp_path / "stubborn.py").write_text(STUBBORN_PY)
    srv = wine_server("stubborn.py", cwd=tmp_path)
    with connect(srv.url()) as ws:
        assert sorted(ws.recv(timeout=30) for _ in range(2)) == ["grandchild", "ready"]
        programs = srv.programs()
        assert len(programs) >= 2, programs  # the program and its grandchild
        left = time.monotonic()
    srv.wait_log(r"\| DISCONNECT\s*$", timeout=3)  # the schedule: about a second
    assert time.monotonic() - left < 3
    assert not srv.leftovers()


def test_a_stubborn_tree_ends_at_shutdown(wine_server, tmp_path):
    (tmp_path / "stubborn.py").write_text(STUBBORN_PY)
    srv = wine_server("stubborn.py", cwd=tmp_path)
    with connect(srv.url()) as ws:
        assert sorted(ws.recv(timeout=30) for _ in range(2)) == ["grandchild", "ready"]
        assert srv.stop() == 0
    assert not srv.leftovers()
