"""Client side of scripts/bench.py (benchmark-only; needs `picows` and `uvloop`).

    python scripts/bench_client.py run '<json spec>'     one measured workload, prints JSON
    python scripts/bench_client.py serve --port=N [--binary] CMD...
                                                         reference picows server (no child
                                                         processes) used to measure the
                                                         client's own ceiling

Also holds the /proc helpers shared with bench.py (CPU of a process tree, RSS).
"""
import asyncio
import json
import os
import resource
import sys
import time
from collections import deque

from picows import (WSCloseCode, WSListener, WSMsgType, ws_connect,
                    ws_create_server)
import uvloop

now = time.perf_counter
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TEXT, BINARY, CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE


# ---------------------------------------------------------------- /proc helpers
def proc_stat(pid):
    """(ppid, state, cpu ticks incl. reaped children) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()  # comm may hold spaces/parens
    # fields[0]=state [1]=ppid ... [11..14]=utime stime cutime cstime
    return int(fields[1]), fields[0].decode(), sum(int(x) for x in fields[11:15])


def proc_table():
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st:
                table[int(name)] = st
    return table


def descendants(root, table=None):
    table = proc_table() if table is None else table
    kids = {}
    for pid, (ppid, _, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in kids.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def tree_cpu(root):
    """CPU seconds used so far by `root` and its descendants.

    Each live process contributes utime+stime+cutime+cstime: processes that
    already exited and were reaped are counted in their parent's cutime/cstime,
    so the difference of two samples covers short-lived children too."""
    table = proc_table()
    pids = [root] + descendants(root, table)
    return sum(table[p][2] for p in pids if p in table) / CLK_TCK


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except OSError:
        return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p / 100))]


# ---------------------------------------------------------------- measurement
class Run:
    """Shared state of one workload: a warm-up, then a measured window."""

    def __init__(self, server_pid):
        self.server_pid = server_pid
        self.running = True      # workers keep going
        self.measuring = False   # completions are counted
        self.count = 0           # messages / sessions / bytes completed in window
        self.lat = []            # latencies (s) completed in window
        self.errors = {}
        self.window = None

    def error(self, what):
        self.errors[what] = self.errors.get(what, 0) + 1

    def start(self):
        self.count, self.lat = 0, []
        self._srv0 = tree_cpu(self.server_pid)
        self._cli0 = resource.getrusage(resource.RUSAGE_SELF)
        self._t0 = now()
        self.measuring = True

    def stop(self):
        t1 = now()
        self.measuring = False
        cli1 = resource.getrusage(resource.RUSAGE_SELF)
        srv1 = tree_cpu(self.server_pid)
        wall = t1 - self._t0
        cli = (cli1.ru_utime + cli1.ru_stime) - (self._cli0.ru_utime + self._cli0.ru_stime)
        self.window = dict(wall_s=wall, client_cpu_s=cli, server_cpu_s=srv1 - self._srv0)

    async def measure(self, warmup, duration):
        await asyncio.sleep(warmup)
        self.start()
        await asyncio.sleep(duration)
        self.stop()
        self.running = False

    def result(self, **metrics):
        w = self.window
        out = {"metrics": metrics, "window": w, "errors": self.errors}
        metrics["server CPU %"] = 100 * w["server_cpu_s"] / w["wall_s"]
        metrics["client CPU %"] = 100 * w["client_cpu_s"] / w["wall_s"]
        return out

    def latency_metrics(self, label):
        lat = sorted(self.lat)
        return {f"{label} p50 ms": 1e3 * pct(lat, 50) if lat else None,
                f"{label} p99 ms": 1e3 * pct(lat, 99) if lat else None}


class Conn(WSListener):
    """Base listener: answers a close frame (websocketd-py) and treats a bare TCP
    drop (websocketd, 1006) the same way; `done` resolves on disconnect."""

    def __init__(self):
        self.transport = None
        self.done = asyncio.get_running_loop().create_future()
        self.close_code = None

    def on_ws_connected(self, transport):
        self.transport = transport

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == CLOSE:
            self.close_code = frame.get_close_code()
            if not transport.is_close_frame_sent:
                transport.send_close(self.close_code)
            transport.disconnect()
        else:
            self.on_message(frame)

    def on_message(self, frame):
        pass

    def on_ws_disconnected(self, transport):
        if not self.done.done():
            self.done.set_result(self.close_code or 1006)

    async def close(self, timeout=5.0):
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout)
        except asyncio.TimeoutError:
            t.disconnect(graceful=False)
            raise


async def close_all(run, conns):
    """Close handshake at the end of a workload; a slow one is reported, not fatal."""
    res = await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    for r in res:
        if isinstance(r, BaseException):
            run.error(f"close: {type(r).__name__}")


async def connect(url, cls, *args, timeout=5.0):
    _, listener = await ws_connect(lambda: cls(*args), url,
                                   websocket_handshake_timeout=timeout,
                                   max_frame_size=64 * 1024 * 1024)
    return listener


async def connect_many(url, n, cls, *args, concurrency=64):
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            return await connect(url, cls, *args)
    return await asyncio.gather(*(one() for _ in range(n)))


# ---- churn: connect, wait for the first line, close (client-initiated) ----
class FirstLine(Conn):
    def __init__(self):
        super().__init__()
        self.first = asyncio.get_running_loop().create_future()

    def on_message(self, frame):
        if not self.first.done():
            self.first.set_result(now())


async def churn_worker(run, url):
    while run.running:
        t0 = now()
        try:
            c = await connect(url, FirstLine)
            t1 = await asyncio.wait_for(c.first, 5)
            await c.close()
        except Exception as e:  # noqa: BLE001 - counted, reported
            run.error(type(e).__name__)
            await asyncio.sleep(0.01)
            continue
        if run.measuring:
            run.count += 1
            run.lat.append(t1 - t0)


async def churn(spec):
    run = Run(spec["server_pid"])
    workers = [asyncio.ensure_future(churn_worker(run, spec["url"]))
               for _ in range(spec["inflight"])]
    await run.measure(spec["warmup"], spec["duration"])
    await asyncio.wait(workers, timeout=10)
    return run.result(**{"sessions/s": run.count / run.window["wall_s"]},
                      **run.latency_metrics("first msg"))


# ---- echo: N connections x K messages in flight through `cat` ----
class Echo(Conn):
    def __init__(self, run, payload, inflight, msg_type):
        super().__init__()
        self.run, self.payload, self.inflight, self.type = run, payload, inflight, msg_type
        self.sent = deque()

    def kick(self):
        for _ in range(self.inflight):
            self.sent.append(now())
            self.transport.send(self.type, self.payload)

    def on_message(self, frame):
        run = self.run
        t = now()
        t0 = self.sent.popleft()
        if run.measuring:
            run.count += 1
            run.lat.append(t - t0)
        if run.running:
            self.sent.append(t)
            self.transport.send(self.type, self.payload)


async def echo(spec):
    run = Run(spec["server_pid"])
    payload = (b"0123456789abcdef" * ((spec["size"] + 15) // 16))[:spec["size"]]
    conns = await connect_many(spec["url"], spec["conns"], Echo, run, payload,
                               spec["inflight"], TEXT)
    for c in conns:
        c.kick()
    await run.measure(spec["warmup"], spec["duration"])
    out = run.result(**{"msgs/s": run.count / run.window["wall_s"]},
                     **run.latency_metrics("round trip"))
    await close_all(run, conns)
    return out


# ---- binary: bytes echoed through `cat --binary`, at most `window` bytes in flight ----
class BinEcho(Conn):
    def __init__(self, run, payload, window):
        super().__init__()
        self.run, self.payload, self.window = run, payload, window
        self.outstanding = 0
        self.last_rx = now()

    def pump(self):
        while self.outstanding < self.window and self.run.running:
            self.transport.send(BINARY, self.payload)
            self.outstanding += len(self.payload)

    def on_message(self, frame):
        n = frame.payload_size
        self.outstanding -= n
        self.last_rx = now()
        if self.run.measuring:
            self.run.count += n
        self.pump()


async def binary(spec):
    run = Run(spec["server_pid"])
    payload = os.urandom(spec["size"])
    c = await connect(spec["url"], BinEcho, run, payload, spec["window"])
    c.pump()
    await run.measure(spec["warmup"], spec["duration"])
    out = run.result(**{"MB/s": run.count / run.window["wall_s"] / 1e6})
    idle = now() - c.last_rx
    if idle > 0.5:  # nothing came back for a while: the server is stuck
        run.error(f"stalled: nothing echoed in the last {idle:.1f} s (deadlock?)")
        c.transport.disconnect(graceful=False)
    await close_all(run, [c])
    return out


# ---- streaming: count lines from `seq 1 N` (until the end) or `yes` (for a while) ----
class Sink(Conn):
    def __init__(self, run):
        super().__init__()
        self.run = run
        self.last = None
        self.t_last = None

    def on_message(self, frame):
        if self.run.measuring:
            self.run.count += 1
            self.last = frame.get_payload_as_bytes()
            self.t_last = now()


async def stream(spec):
    run = Run(spec["server_pid"])
    if spec.get("expect"):                 # seq: whole output, bounded by a time cap
        run.start()
        c = await connect(spec["url"], Sink, run)
        try:
            await asyncio.wait_for(asyncio.shield(c.done), spec["cap"])
            complete = True
        except asyncio.TimeoutError:
            complete = False
        run.stop()
        await close_all(run, [c])
        ok = complete and run.count == spec["expect"] and c.last == str(spec["expect"]).encode()
        if not ok:
            run.error("incomplete" if not complete else "wrong output")
        wall = (c.t_last or now()) - (run._t0)
        return run.result(**{"lines/s": run.count / wall, "lines": run.count})
    c = await connect(spec["url"], Sink, run)  # yes: fixed duration after a warm-up
    await run.measure(spec["warmup"], spec["duration"])
    out = run.result(**{"lines/s": run.count / run.window["wall_s"]})
    await close_all(run, [c])
    return out


# ---- idle sessions: RSS per session, and the most sessions that all still echo ----
class Idle(Conn):
    def __init__(self):
        super().__init__()
        self.waiter = None

    def on_message(self, frame):
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(True)

    async def ping(self, timeout):
        if self.transport is None or self.transport.is_disconnected:
            return False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.send(TEXT, b"ping")
        try:
            await asyncio.wait_for(asyncio.shield(self.waiter), timeout)
            return True
        except asyncio.TimeoutError:
            return False


async def echo_all(conns, timeout=10.0):
    res = await asyncio.gather(*(c.ping(timeout) for c in conns))
    return sum(res)


async def open_sessions(url, n, deadline, concurrency=64):
    """Open up to n echoing sessions; stop at the first failure. -> (list, error)"""
    sem, opened, failure = asyncio.Semaphore(concurrency), [], []

    async def one():
        async with sem:
            if failure or now() > deadline:
                return
            c = None
            try:
                c = await connect(url, Idle, timeout=3)
                if not await c.ping(5):
                    raise RuntimeError("session opened but does not echo")
                opened.append(c)
            except Exception as e:  # noqa: BLE001
                failure.append(f"{type(e).__name__}: {e}"[:200])
                if c is not None:
                    c.transport.disconnect(graceful=False)
    await asyncio.gather(*(one() for _ in range(n)))
    if not failure and now() > deadline:
        failure.append("time limit")
    return opened, (failure[0] if failure else None)


async def idle_rss(spec):
    pid, url = spec["server_pid"], spec["url"]
    raise_nofile()
    base = rss_kib(pid)
    fds0 = fd_count(pid)
    conns, metrics = [], {"idle RSS MiB": base / 1024}
    deadline = now() + spec["cap"]
    for n in spec["levels"]:
        new, err = await open_sessions(url, n - len(conns), deadline)
        conns += new
        if err:
            return {"metrics": metrics, "errors": {err: 1}}
        if await echo_all(conns) != n:
            return {"metrics": metrics, "errors": {f"not all {n} sessions echo": 1}}
        await asyncio.sleep(spec["settle"])   # let the server finish allocating
        metrics[f"RSS/session KiB @{n}"] = (rss_kib(pid) - base) / n
        metrics[f"children @{n}"] = sum(1 for ppid, _, _ in proc_table().values() if ppid == pid)
        metrics[f"fds/session @{n}"] = (fd_count(pid) - fds0) / n
    for c in conns:
        c.transport.disconnect(graceful=False)
    return {"metrics": metrics, "errors": {}}


async def idle_max(spec):
    pid, url = spec["server_pid"], spec["url"]
    limit = raise_nofile()
    t0 = now()
    deadline = t0 + spec["cap"]
    conns, held, reason = [], 0, "reached --max-sessions"
    while len(conns) < spec["max_sessions"]:
        new, err = await open_sessions(url, min(spec["step"], spec["max_sessions"] - len(conns)),
                                       deadline)
        conns += new
        alive = await echo_all(conns)
        if alive == len(conns):
            held = len(conns)
        if err or alive != len(conns):
            reason = err or f"only {alive}/{len(conns)} sessions still echo"
            break
    metrics = {"sessions held": held, "ramp s": now() - t0,
               "server RSS MiB": rss_kib(pid) / 1024, "children": len(descendants(pid))}
    for c in conns:
        if c.transport:
            c.transport.disconnect(graceful=False)
    return {"metrics": metrics, "errors": {}, "stop_reason": reason, "client_nofile": limit}


WORKLOADS = {"churn": churn, "echo": echo, "binary": binary, "stream": stream,
             "idle_rss": idle_rss, "idle_max": idle_max}


def run_main(spec):
    raise_nofile()
    res = uvloop.run(WORKLOADS[spec["kind"]](spec))
    print(json.dumps(res))


# ---------------------------------------------------------------- reference server
class RefSession(WSListener):
    """Emulates websocketd running `cat`, `sh -c 'echo X; exec cat'`, `seq A B`, `yes`
    in-process (no child), to find what the client alone can measure."""

    def __init__(self, cmd, binary):
        self.cmd, self.binary = cmd, binary
        self.t = None
        self.paused = False
        self.lines = None

    def on_ws_connected(self, transport):
        self.t = transport
        cmd = self.cmd
        if cmd[0] == "sh" and "echo" in cmd[-1]:
            transport.send(TEXT, cmd[-1].split("echo", 1)[1].split(";")[0].strip().encode())
        elif cmd[0] == "seq":
            self.lines = (str(i).encode() for i in range(int(cmd[-2]), int(cmd[-1]) + 1))
        elif cmd[0] == "yes":
            self.lines = iter(lambda: b"y", None)
        if self.lines is not None:
            asyncio.get_running_loop().call_soon(self.produce)

    def produce(self):
        t = self.t
        if self.paused or t.is_close_frame_sent or t.is_disconnected:
            return
        for i, line in enumerate(self.lines):
            t.send(TEXT, line)
            if self.paused or t.is_close_frame_sent:
                return
            if i == 1000:  # yield to the loop so the client's frames are read
                asyncio.get_running_loop().call_soon(self.produce)
                return
        t.send_close(WSCloseCode.OK)
        t.disconnect()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        asyncio.get_running_loop().call_soon(self.produce)

    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt == CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif mt == TEXT or (mt == BINARY and self.binary):
            transport.send(BINARY if self.binary else TEXT, frame.get_payload_as_memoryview())


def serve_main(argv):
    port, binary, cmd = None, False, []
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            cmd = argv[i:]
            break
        if a.lstrip("-").startswith("port="):
            port = int(a.split("=", 1)[1])
        elif a.lstrip("-") == "binary":
            binary = True
    if not port or not cmd:
        sys.exit("usage: bench_client.py serve --port=N [--binary] CMD...")

    async def main():
        server = await ws_create_server(lambda req: RefSession(cmd, binary), "127.0.0.1", port,
                                        max_frame_size=64 * 1024 * 1024)
        await server.serve_forever()
    raise_nofile()
    uvloop.run(main())


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        run_main(json.loads(sys.argv[2]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve_main(sys.argv[2:])
    else:
        sys.exit(__doc__)
