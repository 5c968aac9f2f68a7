"""The buffering trap: a Python program's prints arrive without flush (PYTHONUNBUFFERED=1)."""

import os
import sys

import pytest
from websockets.sync.client import connect

from helpers import receive_all

#: Prints without flushing, then waits for a line on stdin before it exits: with its stdout
#: buffered, the printed line could only arrive after the client has answered.
PRINT_THEN_WAIT = ("import sys\n"
                   "print('printed without flush')\n"
                   "sys.stdin.readline()\n")
PRINT_UNBUFFERED = "import os; print(os.environ.get('PYTHONUNBUFFERED'))"


def test_a_python_print_arrives_while_the_program_still_runs(server):
    srv = server(sys.executable, "-c", PRINT_THEN_WAIT)
    with connect(srv.url(), open_timeout=10) as ws:
        assert ws.recv(timeout=5) == "printed without flush"
        ws.send("you may exit now")
        messages, code, _ = receive_all(ws)
    assert (messages, code) == ([], 1000)


@pytest.mark.slow
def test_the_default_replaces_a_value_the_server_does_not_pass(server):
    srv = server(sys.executable, "-c", PRINT_UNBUFFERED,
                 env={**os.environ, "PYTHONUNBUFFERED": "from-the-server"})
    with connect(srv.url(), open_timeout=10) as ws:
        assert receive_all(ws)[0] == ["1"]


@pytest.mark.slow
def test_a_value_passed_with_passenv_wins(server):
    srv = server("--passenv=PATH,PYTHONUNBUFFERED", sys.executable, "-c", PRINT_UNBUFFERED,
                 env={**os.environ, "PYTHONUNBUFFERED": "from-the-server"})
    with connect(srv.url(), open_timeout=10) as ws:
        assert receive_all(ws)[0] == ["from-the-server"]
