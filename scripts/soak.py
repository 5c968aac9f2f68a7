#!/usr/bin/env python3
"""Soak test: minutes of mixed traffic against a websocketd-py started here; nothing may pile up.

    python scripts/soak.py               # 10 minutes
    python scripts/soak.py --minutes 2

Not run in CI. Linux only (it reads /proc). Needs `websockets` (a test
dependency). The server serves a --dir of small scripts, and one asyncio
client runs, all at once until the time is up:

- echo: 10 long sessions through cat, 200 round trips each, then a new one;
- storms: every 5 s, 100 sessions opened at once, one echo each, closed;
- streams: 20,000 numbered lines read to the close frame, checked in order;
- loops: a bounded shell loop (100 lines, exit 3) read to its 1011;
- abrupt: half a frame, then a TCP reset, to a shell with a background child;
- silent and malformed: 50 sockets that say nothing for 2 s, and a bad request line.

Once a minute, and at the end, one line with the server's RSS, threads, open
descriptors and descendant processes (for the last three, the lowest value
seen in that minute: a leak raises the floor, a burst of sessions does not).
Exit status 1 when a figure of the last minute exceeds 1.5 times the first
minute's plus some slack, when the server does not come back to its idle
figures once the traffic stops, when traffic saw an error, or when a process
the server started outlives it.
"""

import argparse
import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SCRIPTS = {
    "echo.sh": "exec cat\n",
    "stream.sh": "exec seq 1 20000\n",
    "loop.sh": 'i=0\nwhile [ $i -lt 100 ]; do echo "$i"; i=$((i+1)); done\nexit 3\n',
    "abrupt.sh": "sleep 1000 &\nexec cat\n",
}
#: Growth allowed on top of 1.5 times the first minute's figure.
SLACK = {"rss_mib": 20, "threads": 20, "fds": 40, "processes": 20}
SAMPLE_SECONDS = 1.0
#: The figures of the first seconds, before every kind of traffic runs, are not counted.
WARM_UP_SECONDS = 5
TRAFFIC_TAIL_SECONDS = 5


class Tally:
    """Rounds done and errors seen by the traffic, by kind (the first error of each kind kept)."""

    def __init__(self):
        self.rounds, self.errors, self.first_error = {}, {}, {}

    def done(self, kind):
        self.rounds[kind] = self.rounds.get(kind, 0) + 1

    def failed(self, kind, error):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.first_error.setdefault(kind, repr(error))


# -- the server and its figures ------------------------------------------------------


def start_server(directory):
    """websocketd-py on a free port serving `directory`; (process, port, log line counter)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "websocketd_py", "--port=0", "--address=127.0.0.1",
         f"--dir={directory}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    port = None
    for raw in server.stdout:
        match = re.search(rb"ws://127\.0\.0\.1:(\d+)/", raw)
        if match:
            port = int(match.group(1))
            break
    if port is None:
        sys.exit("soak: the server did not start")
    lines = {"error": 0}

    def drain():  # the access log is part of the load: read it, count ERROR lines
        for raw in server.stdout:
            if b"| ERROR  |" in raw and b"| stderr " not in raw:
                lines["error"] += 1
    threading.Thread(target=drain, daemon=True).start()
    return server, port, lines


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(p) for p in f.read().split()]
            except FileNotFoundError:
                kids = []
            found += kids
            todo += kids
    return found


def figures(pid):
    """RSS in MiB, threads, open descriptors, descendant processes."""
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"rss_mib": round(rss, 1), "threads": len(os.listdir(f"/proc/{pid}/task")),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "processes": len(descendants(pid))}


def line(label, values, peaks=None):
    def figure(key, width):
        peak = f" (peak {peaks[key]})" if peaks else ""
        return f"{values[key]:{width}}{peak:13}"
    return (f"{label:>10}  rss {values['rss_mib']:7.1f} MiB  threads {figure('threads', 5)}  "
            f"fds {figure('fds', 6)}  processes {figure('processes', 5)}").rstrip()


async def watch(pid, deadline):
    """Sample every second; at each minute's end, and at `deadline`, print and keep the
    minute's figures: RSS as it is then, the others at their lowest (peaks shown too)."""
    per_minute, samples = [], []
    minute_end = time.monotonic() + 60
    await asyncio.sleep(WARM_UP_SECONDS)
    while True:
        samples.append(figures(pid))
        now = time.monotonic()
        if now >= min(minute_end, deadline):
            floors = {key: min(sample[key] for sample in samples) for key in samples[0]}
            floors["rss_mib"] = samples[-1]["rss_mib"]
            peaks = {key: max(sample[key] for sample in samples) for key in samples[0]}
            per_minute.append(floors)
            print(line(f"minute {len(per_minute)}", floors, peaks), flush=True)
            samples, minute_end = [], minute_end + 60
            if now >= deadline:
                return per_minute
        await asyncio.sleep(SAMPLE_SECONDS)


def outlivers(port):
    """Live processes whose environment says this server started them (or their parents)."""
    marker = f"\0SERVER_PORT={port}\0".encode()
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environment = b"\0" + f.read()
        except OSError:
            continue
        if marker in environment and b"\0GATEWAY_INTERFACE=websocketd" in environment:
            found.append(int(name))
    return found


# -- traffic -------------------------------------------------------------------------


async def until(deadline, tally, kind, one_round, pause=0.0):
    """Run `one_round()` again and again until `deadline`, counting rounds and errors."""
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(one_round(), 60)
            tally.done(kind)
        except Exception as error:
            tally.failed(kind, error)
        if pause:
            await asyncio.sleep(pause)


async def echo_round(url):
    async with connect(url + "echo.sh", open_timeout=30) as ws:
        for n in range(200):
            await ws.send(f"message {n}")
            reply = await ws.recv()
            if reply != f"message {n}":
                raise AssertionError(f"echo: sent message {n}, got {reply!r}")


async def storm_round(url):
    await asyncio.gather(*(echo_once(url, n) for n in range(100)))


async def echo_once(url, n):
    async with connect(url + "echo.sh", open_timeout=30) as ws:
        await ws.send(f"storm {n}")
        if await ws.recv() != f"storm {n}":
            raise AssertionError("storm: wrong echo")


async def read_to_close(ws):
    """Every message until the close frame; (messages, close code)."""
    messages = []
    try:
        while True:
            messages.append(await ws.recv())
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None


async def stream_round(url):
    async with connect(url + "stream.sh", open_timeout=30, max_queue=64) as ws:
        messages, code = await read_to_close(ws)
    if messages != [str(n) for n in range(1, 20001)] or code != 1000:
        raise AssertionError(f"stream: {len(messages)} lines, close {code}")


async def loop_round(url):
    async with connect(url + "loop.sh", open_timeout=30) as ws:
        messages, code = await read_to_close(ws)
    if messages != [str(n) for n in range(100)] or code != 1011:
        raise AssertionError(f"loop: {len(messages)} lines, close {code}")


async def abrupt_round(url):
    ws = await connect(url + "abrupt.sh", open_timeout=30)
    await ws.send("hello")
    await ws.recv()
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.write(bytes([0x81, 0xFE, 0x03, 0xE8, 0, 0, 0, 0]) + b"half")  # 1000 announced
    ws.transport.abort()


async def silent_and_malformed_round(port):
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
    await asyncio.sleep(2)
    for _, writer in opened:
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await reader.read()  # the whole answer: the server closes after it
    writer.close()
    if not answer.startswith(b"HTTP/1.1 400"):
        raise AssertionError(f"malformed request answered {answer[:40]!r}")


async def traffic(port, deadline, tally):
    url = f"ws://127.0.0.1:{port}/"
    workers = [until(deadline, tally, "echo", lambda: echo_round(url)) for _ in range(10)]
    workers += [until(deadline, tally, "storm", lambda: storm_round(url), pause=5)]
    workers += [until(deadline, tally, "stream", lambda: stream_round(url)) for _ in range(2)]
    workers += [until(deadline, tally, "loop", lambda: loop_round(url)) for _ in range(2)]
    workers += [until(deadline, tally, "abrupt", lambda: abrupt_round(url), pause=0.05)
                for _ in range(2)]
    workers += [until(deadline, tally, "silent", lambda: silent_and_malformed_round(port))]
    await asyncio.gather(*workers)


async def soak(pid, port, minutes, tally):
    """The traffic runs a little past the last report, so that every minute is under load."""
    deadline = time.monotonic() + minutes * 60
    per_minute, _ = await asyncio.gather(
        watch(pid, deadline), traffic(port, deadline + TRAFFIC_TAIL_SECONDS, tally))
    return per_minute


# -- verdict -------------------------------------------------------------------------


def unbounded(per_minute):
    """The figures whose last minute exceeds 1.5 times the first minute's plus slack."""
    first, last = per_minute[0], per_minute[-1]
    return [key for key in first if last[key] > 1.5 * first[key] + SLACK[key]]


def settle(pid, idle, timeout=30):
    """Wait for threads, descriptors and processes to come back to `idle`; the last figures."""
    deadline = time.monotonic() + timeout
    while True:
        now = figures(pid)
        back = all(now[key] <= idle[key] for key in ("threads", "fds", "processes"))
        if back or time.monotonic() > deadline:
            return now, back
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long (default 10)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        for name, body in SCRIPTS.items():
            path = os.path.join(directory, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n" + body)
            os.chmod(path, 0o755)
        server, port, log = start_server(directory)
        try:
            idle = figures(server.pid)
            print(line("idle", idle), flush=True)
            tally = Tally()
            per_minute = asyncio.run(soak(server.pid, port, options.minutes, tally))
            after, back = settle(server.pid, idle)
            print(line("after", after), flush=True)
            print("rounds: " + ", ".join(f"{kind} {n}" for kind, n in tally.rounds.items()))
        finally:
            server.send_signal(signal.SIGTERM)
            status = server.wait(30)
        left = outlivers(port)
    problems = []
    if len(per_minute) >= 2 and unbounded(per_minute):
        problems.append(f"grew without bound: {', '.join(unbounded(per_minute))}")
    if not back:
        problems.append("not back to the idle threads, descriptors and processes")
    for kind, count in tally.errors.items():
        problems.append(f"{count} {kind} errors, first: {tally.first_error[kind]}")
    if log["error"]:
        problems.append(f"{log['error']} ERROR lines in the server's log")
    if status != 0:
        problems.append(f"the server exited with status {status}")
    if left:
        problems.append(f"processes outlived the server: {left}")
    for problem in problems:
        print(f"soak: FAIL: {problem}")
    if not problems:
        print("soak: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
