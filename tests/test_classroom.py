"""A class on one server: 20 students, each with a working, a buggy and a prompting program.

One --dir server with --devconsole and --logformat=short; 60 real clients at
once, each speaking the dev console page's subprotocol as a student's page
does. Each student's page lists their three programs, none marked; each
dev console gets what its program printed, its traceback (stderr) and its
prompt before the answer; the teacher's log has one line per event, every
session's events under its own tag, and each error exactly once.
"""

import json
import re
import threading

import pytest
from websockets.sync.client import connect

from helpers import receive_all, request

STUDENTS = [f"s{number:02d}" for number in range(1, 21)]
PROGRAMS = {
    "hello.py": "print('hello', input())\n",
    "buggy.py": "text = input()\nprint(txt)\n",
    "ask.py": "name = input('Your name? ')\nprint(f'Hello {name}')\n",
}
LINE = re.compile(r"\d\d:\d\d:\d\d(?: (\S+)(?: (#\d{4}))?)?  (\S.*)")
NAME_ERROR = re.compile(r"NameError: name 'txt' is not defined.* \(buggy\.py, line 3\)")


@pytest.mark.slow
def test_twenty_students_at_once(server, tmp_path):
    for student in STUDENTS:
        for name, body in PROGRAMS.items():
            path = tmp_path / student / name
            path.parent.mkdir(exist_ok=True)
            path.write_text("#!/usr/bin/env python3\n" + body)
            path.chmod(0o755)
    srv = server("--devconsole", "--logformat=short", f"--dir={tmp_path}")
    status, _, page = request(srv.port, "GET", "/s07/")
    assert status == 200 and page.count(b'<li><a href="/s07/') == 3 and b"will not run" not in page

    results = {}

    def student_runs(student, name):
        with connect(srv.url(f"/{student}/{name}"), open_timeout=30,
                     subprotocols=["websocketd-py.devconsole"]) as ws:
            seen = []
            if name == "ask.py":  # the student answers once the question shows
                seen.append(json.loads(ws.recv(timeout=30)))
            ws.send("Ada")
            messages, code, reason = receive_all(ws, timeout=30)
            results[student, name] = (seen + [json.loads(m) for m in messages], code, reason)

    clients = [threading.Thread(target=student_runs, args=(student, name))
               for student in STUDENTS for name in PROGRAMS]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert len(results) == 60
    exit_0 = {"event": "exit", "data": "exit status 0"}
    for student in STUDENTS:
        assert results[student, "hello.py"] == (
            [{"stream": "stdout", "data": "hello Ada"}, exit_0], 1000, "")
        assert results[student, "ask.py"] == ([{"stream": "prompt", "data": "Your name? "},
                                               {"stream": "stdout", "data": "Hello Ada"},
                                               exit_0], 1000, "")
        messages, code, reason = results[student, "buggy.py"]
        assert (code, reason, messages[-1]) == (1011, "exit status 1",
                                                {"event": "exit", "data": "exit status 1"})
        stderr = [m["data"] for m in messages[:-1] if m["stream"] == "stderr"]
        assert len(stderr) == len(messages) - 1 and stderr[0].startswith("Traceback")
        assert stderr[-1] == "NameError: name 'txt' is not defined. Did you mean: 'text'?"
    srv.wait_log(r"  disconnected", count=60)

    sessions = {}
    for line in srv.lines:
        who, tag, event = LINE.fullmatch(line).groups()
        if tag:
            sessions.setdefault((who, tag), []).append(event)
    assert sorted(who for who, _ in sessions) == sorted(
        f"{student}/{name}" for student in STUDENTS for name in PROGRAMS)
    for (who, _), events in sessions.items():
        assert events[0] == "connected from 127.0.0.1"
        if who.endswith("buggy.py"):
            assert NAME_ERROR.fullmatch(events[1]), events
            assert events[2:] == ["disconnected: exit status 1"]
        else:
            assert events[1:] == ["disconnected"]
    assert sum(bool(NAME_ERROR.search(line)) for line in srv.lines) == 20
    assert not any("Traceback" in line or "  File " in line for line in srv.lines)
