"""The HTTP side of a server on the Windows CPython under Wine: --dir, --cgidir, --staticdir,
the dev console; Windows path tricks in URLs are refused."""

from websockets.sync.client import connect

from helpers import request, start_on_free_port


def test_dir_runs_py_and_cmd_scripts_by_url(wine_server, tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.py").write_text("print('hello from py')\n")
    (scripts / "hello.cmd").write_text("@echo hello from cmd\r\n")
    srv = wine_server(f"--dir={scripts}")
    for name, expected in [("hello.py", "hello from py"), ("hello.cmd", "hello from cmd")]:
        with connect(srv.url("/" + name)) as ws:
            assert ws.recv(timeout=20) == expected


def test_cgidir_runs_py_and_bat_scripts(wine_server, tmp_path):
    cgi = tmp_path / "cgi"
    cgi.mkdir()
    (cgi / "hello.py").write_text(
        "import os\nprint('Content-Type: text/plain')\nprint()\n"
        "print('py ' + os.environ['REQUEST_METHOD'] + ' ' + os.environ['QUERY_STRING'])\n")
    (cgi / "hello.bat").write_text(
        "@echo off\r\necho Content-Type: text/plain\r\necho.\r\necho bat %REQUEST_METHOD%\r\n")
    srv = start_on_free_port(wine_server, f"--cgidir={cgi}", timeout=60)
    status, headers, body = request(srv.port, "GET", "/hello.py?a=1")
    assert (status, headers["content-type"], body.split()) == (
        200, "text/plain", [b"py", b"GET", b"a=1"])
    status, headers, body = request(srv.port, "GET", "/hello.bat")
    assert (status, body.split()) == (200, [b"bat", b"GET"])


#: Ways out of the static directory on Windows: `..`, encoded dots, backslashes, a drive.
ESCAPES = ["/../secret.txt", "/%2e%2e/secret.txt", "/..%5csecret.txt", "/%5c..%5csecret.txt",
           "/C:%5cwindows%5cwin.ini", "/C:/windows/win.ini"]


def test_staticdir_serves_files_and_nothing_outside(wine_server, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.txt").write_text("inside\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    srv = wine_server(f"--staticdir={site}", "cmd", "/c", "echo hi")
    assert request(srv.port, "GET", "/page.txt")[::2] == (200, b"inside\n")
    for target in ESCAPES:
        status, headers, body = request(srv.port, "GET", target)
        if status == 301:  # dot segments: to the cleaned path, as websocketd; a browser follows
            status, _, body = request(srv.port, "GET", headers["location"])
        assert (target, status) == (target, 404) and b"outside" not in body


def test_the_dev_console_is_served(wine_server):
    srv = wine_server("--devconsole", "cmd", "/c", "echo hi")
    status, headers, body = request(srv.port, "GET", "/")
    assert (status, headers["content-type"].split(";")[0]) == (200, "text/html")
    assert b"<title>websocketd-py dev console</title>" in body
    with connect(srv.url()) as ws:  # and the same URL still upgrades
        assert ws.recv(timeout=20) == "hi"
