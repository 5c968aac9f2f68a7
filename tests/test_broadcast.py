"""--broadcast: one shared process per endpoint, every line to every client.

Programs here print their PID with what they echo, so a test can tell one
shared process from several, and a restarted process from the first one.
"""

import base64
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from werkzeug.serving import make_server

import websocketd_py
from helpers import parametrize_fast_first, process_state, receive_all, wait_for

PY = sys.executable
#: Echoes every stdin line as "PID line"; the line "exit N" ends it with status N.
ECHO_PID = r"""
import os, sys
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith("exit "):
        sys.exit(int(line.split()[1]))
    print(os.getpid(), line, flush=True)
"""
CONNECT_ID = r"id:'(\d+)'.* \| CONNECT$"


def joined(ws, tag):
    """Send `tag` and read until its echo comes back: the client is surely in the hub now.

    (A client joins the hub just after its handshake, and lines printed before
    that are not its.) Returns the PID of the process that echoed it.
    """
    ws.send(tag)
    message = ws.recv(timeout=10)
    while not message.endswith(" " + tag):
        message = ws.recv(timeout=10)
    return int(message.split()[0])


def lines_until(ws, suffix):
    """Messages received up to and including the first that ends with `suffix`."""
    messages = []
    while not messages or not messages[-1].endswith(suffix):
        messages.append(ws.recv(timeout=10))
    return messages


def all_joined(*clients):
    """With `cat`: each client in turn sends a line that every client joined so far reads."""
    for index, ws in enumerate(clients):
        ws.send(f"sync {index}")
        for reader in clients[:index + 1]:
            lines_until(reader, f"sync {index}")


def echo_server(server, *flags, **options):
    return server("--broadcast", *flags, PY, "-c", ECHO_PID, **options)


def test_two_clients_get_every_line_of_one_shared_process(server):
    srv = echo_server(server)
    with connect(srv.url()) as ann, connect(srv.url("/other/path")) as bob:
        pid = joined(ann, "ann joined")
        assert joined(bob, "bob joined") == pid
        assert lines_until(ann, "bob joined")[-1] == f"{pid} bob joined"
        ann.send("from ann")
        bob.send("from bob")
        for ws in (ann, bob):
            assert sorted(ws.recv(timeout=10) for _ in range(2)) == [
                f"{pid} from ann", f"{pid} from bob"]
        assert srv.session_pids() == [pid]


def test_a_late_joiner_gets_only_new_lines(server):
    srv = echo_server(server)
    with connect(srv.url()) as ann:
        pid = joined(ann, "early")
        ann.send("before bob")
        assert ann.recv(timeout=10) == f"{pid} before bob"
        with connect(srv.url()) as bob:
            bob.send("bob here")  # written after bob joined, so echoed to bob too
            assert bob.recv(timeout=10) == f"{pid} bob here"
            assert ann.recv(timeout=10) == f"{pid} bob here"


@pytest.mark.slow
def test_a_client_joining_inside_a_long_line_starts_at_the_next_message(server):
    # "start" prints 100 KB with no newline (sent as a fragmented message while it
    # arrives), "finish" ends that line; a client joining in between must not get
    # its continuation frames, which would be a protocol error for it.
    program = "import sys\nfor line in sys.stdin:\n    line = line.strip()\n" \
              "    if line == 'start': print('x' * 100000, end='', flush=True)\n" \
              "    elif line == 'finish': print(flush=True)\n" \
              "    else: print(line, flush=True)\n"
    srv = server("--broadcast", PY, "-c", program)
    with connect(srv.url(), max_size=None) as ann:
        all_joined(ann)
        ann.send("start")
        fragments = ann.recv_streaming()
        assert next(fragments) == "x" * 100000  # the server is inside that message now
        with connect(srv.url()) as bob:
            for line in ("start", "finish", "bob here"):  # more of the long line, its end
                bob.send(line)
            assert bob.recv(timeout=10) == "bob here"
        assert "".join(fragments) == "x" * 100000  # the rest of the long line
        assert ann.recv(timeout=10) == "bob here"


def test_broadcast_ids_prefix_every_line_with_the_client_id(server):
    srv = server("--broadcast", "--broadcast-ids", "cat")
    with connect(srv.url()) as ann:
        ann_id = srv.wait_log(CONNECT_ID).group(1)
        ann.send("hi")
        assert ann.recv(timeout=10) == f"{ann_id} hi"
        with connect(srv.url()) as bob:
            bob_id = srv.wait_log(CONNECT_ID, count=2).group(1)
            bob.send("two\nlines")  # each line is attributed: no line can pose as another id
            expected = [f"{bob_id} two", f"{bob_id} lines"]
            assert [bob.recv(timeout=10) for _ in range(2)] == expected
            assert [ann.recv(timeout=10) for _ in range(2)] == expected
            ann.send("")
            assert bob.recv(timeout=10) == f"{ann_id} "
    assert ann_id != bob_id


@pytest.mark.slow
def test_without_broadcast_ids_messages_are_written_as_sent(server):
    srv = server("--broadcast", "cat")
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        all_joined(ann, bob)
        ann.send("a\nb")
        assert [bob.recv(timeout=10) for _ in range(2)] == ["a", "b"]
        assert [ann.recv(timeout=10) for _ in range(2)] == ["a", "b"]


@pytest.mark.slow
def test_a_fragmented_message_is_written_whole(server):
    srv = server("--broadcast", "cat")
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        all_joined(ann, bob)

        def fragments():
            yield "part one, "
            bob.send("bob's line")  # written while ann's message is half there
            assert lines_until(bob, "bob's line")[-1] == "bob's line"
            yield "part two"
        ann.send(fragments())
        assert [ann.recv(timeout=10) for _ in range(2)] == ["bob's line", "part one, part two"]
        assert bob.recv(timeout=10) == "part one, part two"


#: A restart after 0.1 s instead of 1 s.
SHORT_RESTART = {"restart_delay": 0.1}


def test_the_process_restarts_when_it_exits_and_clients_stay(server):
    srv = echo_server(server, timings=SHORT_RESTART)
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        first = joined(ann, "ann")
        joined(bob, "bob")
        ann.send("exit 3")
        srv.wait_log(rf"pid:'{first}' \| program ended: exit status 3")
        srv.wait_log(r"ended with 2 client\(s\) connected: starting it again")
        bob.send("after the restart")  # waits for the new process
        second = int(lines_until(ann, "after the restart")[-1].split()[0])
        assert lines_until(bob, "after the restart")[-1] == f"{second} after the restart"
        assert second != first
        assert srv.session_pids() == [second]


def test_a_crashing_program_is_restarted_at_most_once_per_restart_delay(server, tmp_path):
    starts = tmp_path / "starts"
    # date starts in a millisecond where a Python would take tens, more on a loaded machine
    srv = server("--broadcast", "sh", "-c", f"date +%s.%N >> {starts}",
                 timings={"restart_delay": 0.5})
    with connect(srv.url()):
        wait_for(lambda: starts.exists() and len(starts.read_text().split()) >= 3,
                 message="three starts")
    times = [float(t) for t in starts.read_text().split()]
    assert all(b - a >= 0.4 for a, b in zip(times, times[1:])), times


def test_lazy_the_last_client_leaving_stops_the_process(server):
    srv = echo_server(server, "--closems=0")
    assert srv.session_pids() == []
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        first = joined(ann, "ann")
        joined(bob, "bob")
    wait_for(lambda: srv.session_pids() == [], message="the shared process to stop")
    srv.wait_log(r"last client left: stopping the program")
    with connect(srv.url()) as carl:
        second = joined(carl, "carl")
    assert second != first


def test_eager_starts_the_process_before_any_client(server, tmp_path):
    started = tmp_path / "started"
    program = (f"import os, sys\nopen({str(started)!r}, 'w').write(str(os.getpid()))\n"
               + ECHO_PID)
    srv = server("--broadcast=eager", PY, "-c", program)
    pid = int(wait_for(lambda: started.exists() and started.read_text(),
                       message="the eager process to start"))
    with connect(srv.url()) as ann:
        assert joined(ann, "ann") == pid
    srv.wait_log(r"\| DISCONNECT$")  # logged after the client left its hub
    assert not any("last client left" in line for line in srv.lines)
    assert srv.session_pids() == [pid]
    with connect(srv.url()) as bob:
        assert joined(bob, "bob") == pid


def test_eager_restarts_without_clients(server, tmp_path):
    starts = tmp_path / "starts"
    program = f"open({str(starts)!r}, 'a').write('started\\n')"
    server("--broadcast=eager", PY, "-c", program, timings=SHORT_RESTART)
    wait_for(lambda: starts.exists() and starts.read_text().count("started") >= 2,
             message="a second start")


def raw_websocket(port, path="/"):
    """A client that completes the handshake, then never reads: a slow client."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


@pytest.mark.slow
def test_a_slow_client_is_dropped_with_1008_and_the_others_go_on(server):
    # 64 KiB lines, 100 a second: a reading client keeps up, one that never reads
    # fills the socket buffers and then its 256 KiB backlog within seconds.
    program = "import time\nn = 0\nwhile True:\n" \
              "    n += 1\n    print(n, 'x' * 65536, flush=True)\n    time.sleep(0.01)\n"
    srv = server("--broadcast", "--broadcast-backlog=262144", PY, "-c", program)
    with connect(srv.url(), max_size=None) as fast:
        fast.recv(timeout=10)
        slow = raw_websocket(srv.port)
        slow_id = srv.wait_log(CONNECT_ID, count=2).group(1)
        received = 0
        while not any("too slow" in line for line in srv.lines):
            fast.recv(timeout=10)
            received += 1
            assert received < 3000, "the slow client was never dropped"
        srv.wait_log(rf"id:'{slow_id}'.*\| client too slow: more than 262144 bytes behind, "
                     r"closing with 1008")
        drained = threading.Thread(target=read_to_the_end, args=(slow,))
        drained.start()  # the server closed it: what it had sent, then the end
        numbers = []
        while drained.is_alive() or len(numbers) < 50:
            numbers.append(int(fast.recv(timeout=10).split()[0]))
            assert len(numbers) < 1000, "the slow client's connection was not closed"
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # nothing lost
        srv.wait_log(rf"id:'{slow_id}'.*\| DISCONNECT")
    assert sum("too slow" in line for line in srv.lines) == 1, srv.log_text()


def read_to_the_end(sock):
    sock.settimeout(10)
    while sock.recv(1 << 20):
        pass
    sock.close()


@pytest.mark.slow
def test_passstderr_sends_both_streams_to_every_client(server):
    program = "import sys\nfor line in sys.stdin:\n" \
              "    print('out', line, end='', flush=True)\n" \
              "    print('err', line, end='', file=sys.stderr, flush=True)\n"
    srv = server("--broadcast", "--passstderr", PY, "-c", program)
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        ann.send("ann")
        stderr_lines_until(ann, "err ann")
        bob.send("bob")
        for ws in (ann, bob):
            stderr_lines_until(ws, "err bob")
        ann.send("hello")
        for ws in (ann, bob):
            streams = {}
            while len(streams) < 2:
                message = json.loads(ws.recv(timeout=10))
                if message["data"] != "out bob":  # it may come after "err bob"
                    streams[message["data"]] = message["stream"]
            assert streams == {"out hello": "stdout", "err hello": "stderr"}
    srv.wait_log(r"ERROR .*stderr .*\| err hello")


def stderr_lines_until(ws, data):
    while json.loads(ws.recv(timeout=10)) != {"stream": "stderr", "data": data}:
        pass


@pytest.mark.slow
def test_binary_mode_broadcasts_each_read_as_one_binary_message(server):
    srv = server("--broadcast", "--binary", "cat")
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        ann.send(b"sync ann")
        assert ann.recv(timeout=10) == b"sync ann"
        bob.send(b"sync bob")
        for ws in (ann, bob):
            while ws.recv(timeout=10) != b"sync bob":
                pass
        bob.send(b"\x00\x01\xff")
        assert ann.recv(timeout=10) == b"\x00\x01\xff"
        assert bob.recv(timeout=10) == b"\x00\x01\xff"


SCRIPT = "#!/bin/sh\nwhile read -r line; do echo \"$$ {name} $line\"; done\n"


@pytest.mark.slow
def test_dir_gives_each_script_its_own_shared_process(server, tmp_path):
    for name in ("a.sh", "b.sh"):
        (tmp_path / name).write_text(SCRIPT.format(name=name))
        (tmp_path / name).chmod(0o755)
    srv = server("--broadcast", f"--dir={tmp_path}")
    with connect(srv.url("/a.sh")) as a1, connect(srv.url("/a.sh/extra")) as a2, \
            connect(srv.url("/b.sh")) as b1:
        pid_a = joined(a1, "a1")
        assert joined(a2, "a2") == pid_a
        pid_b = joined(b1, "b1")
        assert pid_b != pid_a
        b1.send("only b")
        assert b1.recv(timeout=10) == f"{pid_b} b.sh only b"
        a1.send("only a")
        assert lines_until(a2, "only a")[-1] == f"{pid_a} a.sh only a"
        assert sorted(srv.session_pids()) == sorted([pid_a, pid_b])


def test_a_program_that_cannot_start_closes_its_clients_with_1011(server, tmp_path):
    script = tmp_path / "broken.sh"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    srv = server("--broadcast", f"--dir={tmp_path}")
    with connect(srv.url("/broken.sh")) as ws:
        _, code, reason = receive_all(ws)
    assert (code, reason) == (1011, "interpreter /no/such/interpreter not found")
    srv.wait_log(r"ERROR .*broadcast .*cannot start")


@pytest.mark.slow
def test_the_shared_process_gets_the_endpoint_environment_and_no_client_facts(server):
    program = "import os, sys\nfor line in sys.stdin:\n" \
              "    for key in ('SCRIPT_NAME', 'PATH_INFO', 'REMOTE_ADDR', 'QUERY_STRING', " \
              "'SERVER_PORT', 'HTTP_X_TEST', 'UNIQUE_ID'):\n" \
              "        print(key, repr(os.environ.get(key)), flush=True)\n"
    srv = server("--broadcast=eager", PY, "-c", program)
    process_id = srv.wait_log(r"id:'(\d+)' pid:'\d+' \| program started").group(1)
    with connect(srv.url("/path?q=1"), additional_headers={"X-Test": "1"}) as ws:
        ws.send("show")
        lines = [ws.recv(timeout=10) for _ in range(7)]
    assert lines == ["SCRIPT_NAME '/'", "PATH_INFO ''", "REMOTE_ADDR ''", "QUERY_STRING ''",
                     "SERVER_PORT ''", "HTTP_X_TEST None", f"UNIQUE_ID '{process_id}'"]


@pytest.mark.slow
def test_status_lists_every_client_with_the_shared_pid(server):
    srv = echo_server(server, "--status-path=/_status")
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        pid = joined(ann, "ann")
        joined(bob, "bob")
        with urllib.request.urlopen(srv.url("/_status", scheme="http"), timeout=10) as response:
            report = json.load(response)
    assert report["session_count"] == 2
    assert [s["pid"] for s in report["sessions"]] == [pid, pid]
    assert report["forks_in_use"] == 2


@pytest.mark.slow
def test_maxforks_counts_clients_not_the_shared_process(server):
    srv = echo_server(server, "--maxforks=2")
    with connect(srv.url()) as ann, connect(srv.url()) as bob:
        joined(ann, "ann")
        joined(bob, "bob")
        with pytest.raises(InvalidStatus) as refused:
            connect(srv.url(), open_timeout=10)
        assert refused.value.response.status_code == 429


@parametrize_fast_first("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_closes_clients_with_1001_and_leaves_no_process(server, sig):
    srv = server("--broadcast=eager", PY, "-c",
                 "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + ECHO_PID)
    with connect(srv.url()) as ann:
        pid = joined(ann, "ann")
        started = time.monotonic()
        assert srv.stop(sig) == 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ann.recv(timeout=10)
    assert closed.value.rcvd.code == 1001
    assert time.monotonic() - started < 5
    wait_for(lambda: process_state(pid) in (None, "Z"), message="the shared process to end")


@pytest.mark.slow
def test_the_python_api_takes_the_broadcast_options():
    app = websocketd_py.WebSocketApp([PY, "-c", ECHO_PID], broadcast="eager",
                                     broadcast_backlog=65536)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"ws://127.0.0.1:{server.port}/"
        with connect(url) as ann, connect(url) as bob:
            pid = joined(ann, "ann")
            assert joined(bob, "bob") == pid
            app.close()
            assert receive_all(ann)[1] == 1001
    finally:
        server.shutdown()
        server.server_close()
    wait_for(lambda: process_state(pid) in (None, "Z"), message="the shared process to end")
    with pytest.raises(TypeError, match="broadcast"):
        websocketd_py.WebSocketApp(["cat"], broadcast=1)
    assert websocketd_py.WebSocketApp(["cat"], broadcast=True).config.broadcast == "lazy"
