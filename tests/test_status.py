"""--status-path: the running sessions as JSON, on a real server with real sessions."""

import calendar
import json
import subprocess
import sys
import time

import pytest
from websockets.sync.client import connect

from helpers import raw_upgrade, request, wait_for
from websocketd_py import __version__


def status(srv, path="/_status", headers=None):
    status_code, response_headers, body = request(srv.port, "GET", path, headers=headers)
    assert status_code == 200, body
    assert response_headers["content-type"] == "application/json"
    assert response_headers["cache-control"] == "no-store"
    return json.loads(body)


def test_an_idle_server_reports_version_uptime_and_no_sessions(server):
    srv = server("--status-path=/_status", "cat")
    first = status(srv)
    assert first == {"version": __version__, "uptime_seconds": first["uptime_seconds"],
                     "forks_in_use": 0, "maxforks": 1024, "session_count": 0, "sessions": []}
    second = wait_for(lambda: (report := status(srv))["uptime_seconds"] > first["uptime_seconds"]
                      and report, message="uptime to grow")
    assert 0 <= first["uptime_seconds"] < second["uptime_seconds"] < 60


def test_each_running_session_is_listed_until_it_ends(server):
    srv = server("--status-path=/_status", "cat")
    before = time.time()
    with connect(srv.url(), open_timeout=10) as first:
        first.send("ping")
        assert first.recv(timeout=10) == "ping"  # its process runs: it is the older session
        with connect(srv.url(), open_timeout=10) as second:
            second.send("ping")
            assert second.recv(timeout=10) == "ping"
            report = status(srv)
            assert (report["session_count"], report["forks_in_use"]) == (2, 2)
            sessions = report["sessions"]
            assert sorted(s["pid"] for s in sessions) == sorted(srv.session_pids())
            for session in sessions:
                assert set(session) == {"id", "remote", "command", "pid", "started"}
                assert session["remote"] == "127.0.0.1"
                assert session["command"].endswith("/cat")
                srv.wait_log(rf"id:'{session['id']}'.*remote:'127.0.0.1'.*\| CONNECT$")
                started = calendar.timegm(time.strptime(session["started"], "%Y-%m-%dT%H:%M:%SZ"))
                assert int(before) <= started <= time.time()
            assert sessions[0]["started"] <= sessions[1]["started"]
        wait_for(lambda: status(srv)["session_count"] == 1, message="the second session to end")
        assert status(srv)["sessions"][0]["id"] == sessions[0]["id"]
    wait_for(lambda: status(srv)["forks_in_use"] == 0, message="every session to end")
    assert status(srv)["sessions"] == []


@pytest.mark.slow
def test_unlimited_maxforks_is_null(server):
    srv = server("--status-path=/_status", "--maxforks=0", "cat")
    assert status(srv)["maxforks"] is None


@pytest.mark.slow
def test_only_that_exact_path_answers_and_a_query_is_ignored(server):
    srv = server("--status-path=/_status", "cat")
    assert status(srv, "/_status?verbose=1")["session_count"] == 0
    for path in ("/_status/", "/_status/x", "/_statusx", "/_STATUS", "/x/_status"):
        status_code, headers, body = request(srv.port, "GET", path)
        assert (status_code, headers["content-type"].split(";")[0]) == (404, "text/plain"), path
        assert b"WebSocket endpoint" in body


@pytest.mark.slow
def test_it_is_not_shadowed_by_a_static_file_or_the_dev_console(server, tmp_path):
    (tmp_path / "_status").write_text("a file")
    srv = server("--status-path=/_status", f"--staticdir={tmp_path}", "cat")
    assert status(srv)["version"] == __version__
    assert request(srv.port, "GET", "/_status")[2] != b"a file"
    srv = server("--status-path=/_status", "--devconsole", "cat")
    assert status(srv)["version"] == __version__


@pytest.mark.slow
def test_an_upgrade_to_that_path_still_reaches_the_endpoint(server):
    srv = server("--status-path=/_status", "sh", "-c", 'echo "$PATH_INFO"')
    assert raw_upgrade(srv.port, "/_status").messages == ["/_status"]


@pytest.mark.slow
def test_other_methods_get_405(server):
    srv = server("--status-path=/_status", "cat")
    status_code, headers, _ = request(srv.port, "POST", "/_status", body=b"x")
    assert (status_code, headers["allow"]) == (405, "GET, HEAD")
    status_code, _, body = request(srv.port, "HEAD", "/_status")
    assert (status_code, body) == (200, b"")


def test_it_is_off_by_default(server):
    srv = server("cat")
    assert request(srv.port, "GET", "/_status")[0] == 404


@pytest.mark.slow
def test_it_needs_the_credentials_basic_auth_asks_for(server):
    srv = server("--status-path=/_status", "--basic-auth=ann:pw", "cat")
    status_code, headers, _ = request(srv.port, "GET", "/_status")
    assert (status_code, headers["www-authenticate"]) == (401, 'Basic realm="websocketd-py"')
    assert status(srv, headers={"Authorization": "Basic YW5uOnB3"})["session_count"] == 0


def test_a_path_without_leading_slash_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "websocketd_py", "--port=0",
                             "--status-path=_status", "cat"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "--status-path" in result.stderr and result.stderr.count("\n") == 1
