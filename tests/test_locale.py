"""UTF-8 by default: a program counts characters, not bytes, unless --passenv says otherwise.

A real bash program reads one message and prints `${#l}`, its length as bash
counts it: 7 characters for `élève 🎉` in a UTF-8 locale, 12 bytes in the C
locale. The server runs with the locale variables its test sets, and none
of the others.
"""

import os
import sys

import pytest
from websockets.sync.client import connect

from websocketd_py import environment

from helpers import parametrize_fast_first, receive_all

WORD = "élève 🎉"
LOCALE = ("LANG", "LC_ALL", "LC_CTYPE")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no locales on Windows")


def server_environment(**locale):
    env = {name: value for name, value in os.environ.items() if name not in LOCALE}
    return {**env, **locale}


def length_in_bash(srv):
    with connect(srv.url(), open_timeout=10) as ws:
        ws.send(WORD)
        messages, code, _ = receive_all(ws)
    assert code == 1000
    return messages


@pytest.fixture
def counter(tmp_path):
    path = tmp_path / "count.sh"
    path.write_text('#!/bin/bash\nread -r l\necho "${#l} $LANG $LC_ALL $LC_CTYPE"\n')
    path.chmod(0o755)
    return path


@parametrize_fast_first("flags, locale, expected", [
    ((), {}, "7   C.UTF-8"),                                  # none set: C.UTF-8
    ((), {"LANG": "C.UTF-8"}, "7 C.UTF-8  "),                 # the server's passes
    ((), {"LC_ALL": "C"}, "12  C "),                          # the server's wins
    (("--passenv=PATH",), {"LANG": "C.UTF-8"}, "7   C.UTF-8"),  # not passed: the default
    (("--passenv=PATH,LANG",), {"LANG": "C"}, "12 C  "),      # --passenv decides
])
def test_bash_counts_characters_unless_told_otherwise(server, counter, flags, locale, expected):
    if not environment.utf8_locale():
        pytest.skip("the C.UTF-8 locale is not installed")
    srv = server(*flags, str(counter), env=server_environment(**locale))
    assert length_in_bash(srv) == [expected]
