"""Programs started the Windows way, by a server on the Windows CPython under Wine.

Linux clients connect to websocketd-py running on python.org's embeddable
CPython 3.11 (sys.platform == "win32"): `.py` programs run with the server's
own python.exe, `.cmd` files through cmd.exe with their arguments intact,
`cmd /c` commands, --passstderr and --binary.
"""

import json
import subprocess

from websockets.sync.client import connect

import wine

#: A .py program that says where it runs and what it was given, then echoes lines.
REPORT_PY = """\
import json, sys
print(json.dumps({"platform": sys.platform, "executable": sys.executable, "argv": sys.argv[1:]}),
      flush=True)
for line in sys.stdin:
    print("echo " + line.rstrip("\\n"), flush=True)
"""

#: What cmd.exe would take apart or expand outside quotes.
AWKWARD = ["a&b|c<d>e^f", "two words", "(x)", "semi;colon,comma=equals", "!bang!"]


def test_a_py_program_runs_with_the_servers_windows_python(wine_server, tmp_path):
    (tmp_path / "report.py").write_text(REPORT_PY)
    srv = wine_server("report.py", "two words", "naïve €", cwd=tmp_path)
    with connect(srv.url()) as ws:
        started = json.loads(ws.recv(timeout=20))
        assert started["platform"] == "win32"
        assert started["executable"].lower().endswith(r"\cp311\python.exe")
        assert started["argv"] == ["two words", "naïve €"]
        ws.send("héllo wörld ✓")
        assert ws.recv(timeout=20) == "echo héllo wörld ✓"
        ws.close()
        assert ws.close_code == 1000
    srv.wait_log(r"DISCONNECT")


def a_cmd_that_reports(directory):
    """directory/report.cmd: runs report.py with the server's python.exe on its arguments."""
    (directory / "report.py").write_text(REPORT_PY)
    (directory / "report.cmd").write_text(
        f'@"{wine.windows_path(wine.PYTHON)}" "%~dp0report.py" %*\r\n')


def test_a_cmd_file_gets_awkward_arguments_intact(wine_server, tmp_path):
    a_cmd_that_reports(tmp_path)
    srv = wine_server("report", *AWKWARD, cwd=tmp_path)  # found through PATHEXT
    with connect(srv.url()) as ws:
        assert json.loads(ws.recv(timeout=20))["argv"] == AWKWARD
        ws.send("through cmd.exe")
        assert ws.recv(timeout=20) == "echo through cmd.exe"


def test_a_percent_for_a_cmd_file_is_refused_at_start_in_one_line(windows_python, tmp_path):
    a_cmd_that_reports(tmp_path)
    result = subprocess.run(
        ["wine", windows_python, "-c", wine.BOOTSTRAP, wine.windows_path(wine.ROOT),
         "--port=0", "report.cmd", "100%"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=60)
    complaint = result.stderr.decode(errors="replace").strip().splitlines()
    assert result.returncode == 1 and len(complaint) == 1, complaint  # a bad setting
    assert "'%'" in complaint[0]


def test_cmd_c_runs_a_builtin(wine_server):
    srv = wine_server("cmd", "/c", "echo hi from cmd")
    with connect(srv.url()) as ws:
        assert ws.recv(timeout=20) == "hi from cmd"
    srv.wait_log(r"DISCONNECT")


def test_passstderr_sends_both_streams_as_json(wine_server, tmp_path):
    (tmp_path / "both.py").write_text(
        "import sys\nfor line in sys.stdin:\n"
        "    print('err ' + line, end='', file=sys.stderr, flush=True)\n"
        "    print('out ' + line, end='', flush=True)\n")
    srv = wine_server("--passstderr", "both.py", cwd=tmp_path)
    with connect(srv.url()) as ws:
        ws.send("x")
        messages = [json.loads(ws.recv(timeout=20)) for _ in range(2)]
    assert sorted((m["stream"], m["data"]) for m in messages) == [
        ("stderr", "err x"), ("stdout", "out x")]


def test_binary_passes_bytes_through_untouched(wine_server, tmp_path):
    (tmp_path / "copy.py").write_text(
        "import sys\nwhile chunk := sys.stdin.buffer.read1(65536):\n"
        "    sys.stdout.buffer.write(chunk)\n    sys.stdout.buffer.flush()\n")
    srv = wine_server("--binary", "copy.py", cwd=tmp_path)
    payload = bytes(range(256)) + b"\r\n\n\r\x00\x1a"  # no text mode, no Ctrl-Z end
    with connect(srv.url()) as ws:
        ws.send(payload)
        received = b""
        while len(received) < len(payload):
            received += ws.recv(timeout=20)
    assert received == payload
