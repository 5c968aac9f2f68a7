"""Programs started the Windows way, by a server on the Windows CPython under Wine.

Linux clients connect to websocketd-py running on python.org's embeddable
CPython 3.11 (sys.platform == "win32"): `.py` programs run with the server's
own python.exe, `.cmd` files through cmd.exe with their arguments intact,
`cmd /c` commands, and --passstderr.
"""

import json

from websockets.sync.client import connect

from helpers import receive_all

#: A .py program that says where it runs and what it was given, then echoes lines.
REPORT_PY = """\
import json, sys
print(json.dumps({"platform": sys.platform, "executable": sys.executable, "argv": sys.argv[1:]}),
      flush=True)
for line in sys.stdin:
    print("echo " + line.rstrip("\\n"), flush=True)
"""


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
