"""A client that leaves is noticed on Windows too while its program does not read stdin
(Windows pipes cannot be watched for the client's hang-up: `process.StdinFeeder`)."""

import time

from websockets.sync.client import connect

NEVER_READS_PY = "import time\nprint('ready', flush=True)\ntime.sleep(1000)\n"


def test_a_client_that_sends_and_leaves_while_the_program_does_not_read(wine_server,
                                                                         tmp_path):
    (tmp_path / "deaf.py").write_text(NEVER_READS_PY)
    srv = wine_server("deaf.py", cwd=tmp_path)
    with connect(srv.url(), close_timeout=10) as ws:
        assert ws.recv(timeout=30) == "ready"
        for _ in range(100):
            ws.send("x" * 4000)  # 400 KB: far more than a pipe holds
        left = time.monotonic()
    assert time.monotonic() - left < 3, "the close was not answered in time"
    srv.wait_log(r"\| DISCONNECT\s*$", timeout=3)
    assert not srv.leftovers()
