"""--reverselookup: REMOTE_HOST from reverse DNS, in bounded time; else it is REMOTE_ADDR."""

import socket
import threading
import time

import pytest
from websockets.sync.client import connect

from websocketd_py import environment

PRINT_REMOTE = ("sh", "-c", 'echo "$REMOTE_ADDR|$REMOTE_HOST"')


def expected_name(address):
    """What reverse DNS says here, computed the way the server does it."""
    try:
        return socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0]
    except OSError:
        return address


def first_message(srv):
    with connect(srv.url(), open_timeout=10) as ws:
        return ws.recv(timeout=10)


def test_remote_host_is_the_address_without_the_flag(server):
    assert first_message(server(*PRINT_REMOTE)) == "127.0.0.1|127.0.0.1"


@pytest.mark.slow
def test_remote_host_is_the_reverse_dns_name_with_the_flag(server):
    assert (first_message(server("--reverselookup", *PRINT_REMOTE))
            == f"127.0.0.1|{expected_name('127.0.0.1')}")


def test_a_slow_lookup_is_given_up_and_does_not_hold_up_others(monkeypatch):
    release = threading.Event()

    def hanging_getnameinfo(address, flags):
        release.wait(30)
        raise socket.gaierror("gave up")

    monkeypatch.setattr(environment.socket, "getnameinfo", hanging_getnameinfo)
    monkeypatch.setattr(environment, "REVERSE_LOOKUP_TIMEOUT", 0.3)
    results = []
    lookups = [threading.Thread(target=lambda a=address: results.append(
        environment.remote_host(a, True))) for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3")]
    started = time.monotonic()
    try:
        for lookup in lookups:
            lookup.start()
        for lookup in lookups:
            lookup.join(5)
        assert time.monotonic() - started < 1.5  # in parallel, each bounded by the timeout
        assert sorted(results) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    finally:
        release.set()

