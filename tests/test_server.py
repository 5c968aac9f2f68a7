"""Listeners and bad input: one listener per --address, IPv4 and IPv6, nothing leaks;
the server's threads on one CPU."""

import os
import socket
import struct

import pytest
from websockets.sync.client import connect

from helpers import children_of, receive_all, wait_for
from websocketd_py import tuning

HAS_IPV6 = socket.has_ipv6


def ipv6_loopback_works():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def echo_once(url):
    with connect(url, open_timeout=10) as ws:
        ws.send("ping")
        return ws.recv(timeout=10)


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")
def test_one_listener_per_address_ipv4_and_ipv6(server):
    srv = server("--address=[::1]", "cat")  # the fixture adds --address=127.0.0.1
    assert echo_once(srv.url()) == "ping"
    assert echo_once(f"ws://[::1]:{srv.port}/") == "ping"
    srv.wait_log(r"ws://\[::1\]:\d+/")


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")
@pytest.mark.slow
def test_default_listens_on_every_interface_ipv4_and_ipv6(server):
    srv = server("--port=0", "cat", port_flag=False, wait=False)
    srv.port = int(srv.wait_log(r"ws://localhost:(\d+)/").group(1))
    assert echo_once(f"ws://127.0.0.1:{srv.port}/") == "ping"
    assert echo_once(f"ws://[::1]:{srv.port}/") == "ping"


def test_no_development_server_banner(server):
    srv = server("cat")
    assert echo_once(srv.url()) == "ping"
    srv.stop()
    assert srv.stderr_lines == []
    assert not any("WARNING" in line or "Running on" in line for line in srv.lines)


def test_program_that_exits_at_once(server):
    srv = server("true")
    with connect(srv.url()) as ws:
        assert receive_all(ws)[:2] == ([], 1000)


@pytest.mark.slow
def test_client_vanishing_mid_message_leaves_nothing(server):
    """Half a frame, then a TCP reset: the session ends and its process is stopped."""
    srv = server("cat")
    with connect(srv.url()) as ws:
        ws.send("warm-up")
        assert ws.recv(timeout=10) == "warm-up"
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", 1000) + b"\x00\x00\x00\x00"
        ws.socket.sendall(header + b"only part of it")
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.socket.close()
    srv.wait_log(r"DISCONNECT")
    wait_for(lambda: children_of(srv.proc.pid) == [], message="the cat process to be stopped")


def test_request_that_is_not_http_gets_400_and_the_server_goes_on(server):
    srv = server("cat")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    assert echo_once(srv.url()) == "ping"


def cpus_of_threads(pid):
    """The CPU set of each thread of process `pid` (threads that ended meanwhile left out)."""
    sets = set()
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            sets.add(frozenset(os.sched_getaffinity(int(thread))))
        except ProcessLookupError:
            pass
    return sets


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="Linux with two CPUs or more")
@pytest.mark.slow
def test_the_servers_threads_keep_to_one_cpu_and_its_programs_get_every_cpu(server):
    """Against the GIL convoy (`tuning.server_threads_on_one_cpu`), without confining the programs."""
    given = os.sched_getaffinity(0)  # what the server was started with
    srv = server("sh", "-c", "echo ready; exec cat")
    with connect(srv.url(), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "ready"
        [child] = srv.session_pids()
        [server_cpus] = cpus_of_threads(srv.proc.pid)  # every thread: the same set...
        assert len(server_cpus) == 1 and server_cpus <= given  # ...of one CPU
        assert os.sched_getaffinity(child) == given
        ws.send("still echoing")  # the thread that started it is back on its one CPU
        assert ws.recv(timeout=10) == "still echoing"
        assert cpus_of_threads(srv.proc.pid) == {server_cpus}


def test_the_cpu_is_read_from_a_stat_line_whatever_the_process_name():
    fields_from_3 = b" ".join(str(number).encode() for number in range(3, 53))
    assert tuning.cpu_in_stat(b"4242 (x) 9 (y) z) " + fields_from_3) == 39


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/stat"), reason="Linux")
def test_the_cpu_this_thread_runs_on_is_one_it_may_use():
    assert tuning._current_cpu() in os.sched_getaffinity(0)
