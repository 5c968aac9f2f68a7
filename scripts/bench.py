#!/usr/bin/env python3
"""A/B benchmark of websocketd (Go) against websocketd-py.

Every round of every scenario starts each server under test afresh from its
command template, runs one client workload against it (in a separate
picows+uvloop process, see bench_client.py), stops the server and checks that
no child process outlives it. Servers are interleaved (A B, B A, A B, ...).

    python scripts/bench.py                     # full run, ~10 min
    python scripts/bench.py --quick             # ~1 min
    python scripts/bench.py --list
    python scripts/bench.py --scenario echo --scenario stream-seq --rounds 3
    python scripts/bench.py --server a='websocketd --port={port} {flags} {cmd}' \\
                            --server b='websocketd --port={port} {flags} {cmd}'
    python scripts/bench.py --server ref=builtin   # the client's own ceiling

Templates: {port} is a free port, {cmd} the scenario's program and its argv,
{flags} scenario flags such as --binary (inserted right before {cmd} when the
template has no {flags}), {python} this interpreter. Templates are split like a
shell would (shlex), but no shell runs them. Servers run in the repository root.

Benchmark-only dependencies: picows, uvloop (`pip install -e '.[bench]'`).
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLIENT = os.path.join(HERE, "bench_client.py")
sys.path.insert(0, HERE)
try:
    import bench_client as bc  # noqa: E402  (/proc helpers; needs picows + uvloop)
except ImportError as e:
    sys.exit(f"bench.py needs the benchmark extras: pip install picows uvloop ({e})")

DEFAULT_SERVERS = {
    "go": "websocketd --address=127.0.0.1 --port={port} {flags} {cmd}",
    "py": "{python} -m websocketd_py --address=127.0.0.1 --port={port} {flags} {cmd}",
}
BUILTIN = "{python} {client} serve --port={port} {flags} {cmd}"
CHURN_CMD = ["sh", "-c", "echo hello; exec cat"]


@dataclass
class Scenario:
    name: str
    kind: str           # workload in bench_client.WORKLOADS
    cmd: list
    desc: str
    params: dict
    flags: list = field(default_factory=list)
    max_rounds: int = 0  # 0: --rounds

    def budget(self):
        p = self.params
        return p.get("warmup", 0) + p.get("duration", 0) + p.get("cap", 0) + 30


def scenarios(quick, max_sessions):
    d, w = (0.6, 0.2) if quick else (3.0, 0.5)
    timed = dict(duration=d, warmup=w)
    n_seq = 200_000 if quick else 1_000_000
    unlimited = ["--maxforks=0"]  # websocketd-py defaults to 1024
    return [
        Scenario("churn-serial", "churn", CHURN_CMD,
                 "connect, wait for the first line, close; 1 session at a time",
                 dict(inflight=1, **timed)),
        Scenario("churn-16", "churn", CHURN_CMD,
                 "connect, wait for the first line, close; 16 sessions in flight",
                 dict(inflight=16, **timed)),
        Scenario("echo-1x1", "echo", ["cat"], "64-byte text through cat, 1 conn x 1 in flight",
                 dict(conns=1, inflight=1, size=64, **timed)),
        Scenario("echo-50x1", "echo", ["cat"], "64-byte text through cat, 50 conns x 1 in flight",
                 dict(conns=50, inflight=1, size=64, **timed)),
        Scenario("echo-50x8", "echo", ["cat"], "64-byte text through cat, 50 conns x 8 in flight",
                 dict(conns=50, inflight=8, size=64, **timed)),
        Scenario("stream-seq", "stream", ["seq", "1", str(n_seq)],
                 f"all {n_seq:,} lines of seq to 1 client (capped at 30 s)",
                 dict(expect=n_seq, cap=30)),
        Scenario("stream-yes", "stream", ["yes"], f"lines of yes to 1 client for {d:g} s",
                 dict(**timed)),
        # At most 64 KiB in flight: websocketd deadlocks when the pipes to and from
        # cat fill up (one goroutine moves both directions: it blocks writing stdin
        # while cat blocks writing stdout); seen now and then at 128 KiB.
        *[Scenario(f"binary-{k}k", "binary", ["cat"],
                   f"--binary, {k} KiB messages echoed through cat, 1 conn, "
                   f"{64 // k} in flight (64 KiB)",
                   dict(size=k * 1024, window=64 * 1024, **timed), flags=["--binary"])
          for k in (1, 10, 64)],
        Scenario("idle-rss", "idle_rss", ["cat"],
                 "server RSS per idle cat session at 250/500(/1000) sessions (RSS of "
                 "the server process only; each session echoed once)",
                 dict(levels=[250, 500] if quick else [250, 500, 1000], settle=0.5, cap=60),
                 flags=unlimited),
        Scenario("idle-max", "idle_max", ["cat"],
                 f"ramp idle cat sessions by 250 up to {max_sessions}; the most held "
                 "with all of them still echoing",
                 dict(step=250, max_sessions=max_sessions, cap=45 if quick else 120),
                 flags=unlimited, max_rounds=1 if quick else 2),
    ]


# ---------------------------------------------------------------- servers
def expand(template, port, flags, cmd):
    toks = shlex.split(template)
    if "{flags}" not in toks:
        toks.insert(toks.index("{cmd}"), "{flags}")
    out = []
    for t in toks:
        if t == "{cmd}":
            out += cmd
        elif t == "{flags}":
            out += flags
        else:
            out.append(t.replace("{port}", str(port)).replace("{python}", sys.executable)
                        .replace("{client}", CLIENT))
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_subreaper():
    """Orphans of the servers re-parent to us, so leftovers can be found and reaped."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def own_children(exclude=()):
    me = os.getpid()
    return {p: st for p, st in bc.proc_table().items() if st[0] == me and p not in exclude}


def backlog_counters():
    """Per CPU, the packets the kernel dropped so far because that CPU's input
    backlog was full (net.core.netdev_max_backlog); on loopback each one costs a
    TCP retransmit, 200 ms or more. Machine-wide, so other traffic counts too.
    None where /proc/net/softnet_stat is missing (not Linux)."""
    try:
        with open("/proc/net/softnet_stat") as f:
            return [int(line.split()[1], 16) for line in f]
    except (OSError, IndexError, ValueError):
        return None


def backlog_drops_since(before):
    """Drops since `before` (from `backlog_counters`), or None if unknown."""
    after = backlog_counters()
    if before is None or after is None or len(after) != len(before):
        return None
    return sum((b - a) % 2 ** 32 for a, b in zip(before, after))  # 32-bit counters wrap


def reap_orphans(grace):
    """Wait up to `grace` s for processes re-parented to us to exit; kill the rest.
    Returns the command lines of those that had to be killed."""
    deadline, killed = time.monotonic() + grace, []
    while True:
        alive = []
        for pid, (_, state, _) in own_children().items():
            if state == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            else:
                alive.append(pid)
        if not alive:
            return killed
        if time.monotonic() > deadline:
            for pid in alive:
                killed.append(cmdline(pid))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 2
        time.sleep(0.02)


class Server:
    def __init__(self, name, template):
        self.name, self.template = name, BUILTIN if template == "builtin" else template
        self.proc = None

    def start(self, sc):
        self.port = free_port()
        argv = expand(self.template, self.port, sc.flags, sc.cmd)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:  # poll until the port accepts connections
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{shlex.join(argv)}\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name}: port {self.port} never opened")
                time.sleep(0.01)

    def log_tail(self, n=2000):
        self.log.seek(0)
        return self.log.read()[-n:].decode(errors="replace")

    def log_errors(self, n=5):
        """The first few error lines of the server's log, then its tail."""
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").splitlines()
        first = [l for l in lines if "ERROR" in l or "rror:" in l][:n]
        return first + ["..."] + lines[-n:]

    def settle(self, timeout):
        """After the client is gone: wait for the server to end every session's process."""
        t0 = time.monotonic()
        while True:
            left = bc.descendants(self.proc.pid)
            if not left or time.monotonic() - t0 > timeout:
                return len(left), time.monotonic() - t0
            time.sleep(0.02)

    def stop(self):
        """SIGTERM (SIGKILL after 5 s), then check that no descendant survives."""
        p, t0 = self.proc, time.monotonic()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        stop_s = time.monotonic() - t0
        leftover = reap_orphans(grace=3)
        self.log.close()
        return dict(stop_s=stop_s, exit=p.returncode, leftover=leftover)


# ---------------------------------------------------------------- rounds
def run_client(spec, timeout):
    p = subprocess.Popen([sys.executable, CLIENT, "run", json.dumps(spec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return {"metrics": {}, "errors": {f"client timed out after {timeout:.0f} s": 1}}
    lines = out.strip().splitlines()
    if p.returncode or not lines:
        last = (err.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return {"metrics": {}, "errors": {f"client failed: {last[:300]}": 1}}
    return json.loads(lines[-1])


def run_one(server, sc):
    t0 = time.monotonic()
    drops_before = backlog_counters()
    try:
        server.start(sc)
    except RuntimeError as e:
        reap_orphans(grace=3)
        return {"metrics": {}, "errors": {str(e): 1}}
    try:
        spec = dict(sc.params, kind=sc.kind, url=f"ws://127.0.0.1:{server.port}/",
                    server_pid=server.proc.pid)
        res = run_client(spec, sc.budget())
        res["lingering"], res["settle_s"] = server.settle(10 if sc.kind.startswith("idle") else 3)
        if server.proc.poll() is not None:
            res["errors"][f"server died (exit {server.proc.returncode})"] = 1
        if res["errors"] or not res.get("stop_reason", "reached").startswith("reached"):
            res["server_log"] = server.log_errors()  # in the JSON, to see why
    finally:
        res_stop = server.stop()
    res.update(res_stop)
    res["round_s"] = time.monotonic() - t0
    res["backlog_drops"] = backlog_drops_since(drops_before)
    return res


def summarize(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    q = statistics.quantiles(v, n=4) if len(v) >= 2 else [v[0]] * 3
    return dict(median=statistics.median(v), min=v[0], max=v[-1], q1=q[0], q3=q[2], n=len(v))


def fmt(x):
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if a >= 0.1 else f"{x:.3f}"


def table(sc, servers, runs):
    """Lines of text: metric | per server: median [min..max] | ratios to the first server."""
    names = [s.name for s in servers]
    metrics = []
    for n in names:
        for r in runs[n]:
            for m in r.get("metrics", {}):
                if m not in metrics:
                    metrics.append(m)
    metrics.sort(key=lambda m: (m in ("server CPU %", "client CPU %"), m.endswith("client CPU %")))
    summary = {n: {m: summarize([r.get("metrics", {}).get(m) for r in runs[n]])
                   for m in metrics} for n in names}
    rows = [["metric"] + names + [f"{n}/{names[0]}" for n in names[1:]]]
    for m in metrics:
        row = [m]
        for n in names:
            s = summary[n][m]
            row.append("-" if s is None else
                       f"{fmt(s['median'])} [{fmt(s['min'])}..{fmt(s['max'])}]"
                       if s["n"] > 1 else fmt(s["median"]))
        for n in names[1:]:
            a, b = summary[names[0]][m], summary[n][m]
            row.append(f"{b['median'] / a['median']:.2f}" if a and b and a["median"] else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [f"== {sc.name}: {sc.desc}  [{shlex.join(sc.flags + sc.cmd)}]"]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for n in names:
        errs, notes = {}, set()
        for r in runs[n]:
            for e, k in r.get("errors", {}).items():
                errs[e] = errs.get(e, 0) + k
            if r.get("leftover"):
                notes.add(f"{len(r['leftover'])} process(es) outlived the server and were "
                          f"killed: {r['leftover'][:3]}")
            if r.get("lingering"):
                notes.add(f"{r['lingering']} session process(es) still running "
                          f"{r['settle_s']:.1f} s after the client left")
            if r.get("stop_s", 0) > 3:
                notes.add(f"slow shutdown: {r['stop_s']:.1f} s after SIGTERM")
            if r.get("stop_reason"):
                notes.add(f"ramp stopped: {r['stop_reason']}")
            if r.get("backlog_drops"):
                notes.add(f"{r['backlog_drops']:,} packets dropped by the kernel in a round "
                          f"(input backlog full, net.core.netdev_max_backlog): TCP "
                          f"retransmits, 200 ms or more each")
        cpu = summary[n].get("client CPU %")
        if cpu and cpu["median"] > 90:
            notes.add(f"client CPU {cpu['median']:.0f} %: the client may be the bottleneck")
        for e, k in errs.items():
            out.append(f"  ! {n}: {k} x {e}")
        out += [f"  * {n}: {x}" for x in sorted(notes)]
    return out, summary


def machine():
    info = dict(python=sys.version.split()[0], platform=platform.platform(),
                cpus=os.cpu_count(), loadavg=os.getloadavg())
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["mem"] = f.readline().split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version
    info.update({m: version(m) for m in ("picows", "uvloop")})
    return info


def server_version(template):
    toks = []
    for t in shlex.split(template):
        if t.startswith("--") or "{" in t.replace("{python}", ""):
            break
        toks.append(t.replace("{python}", sys.executable))
    try:
        r = subprocess.run(toks + ["--version"], capture_output=True, text=True, timeout=10,
                           cwd=REPO)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--server", action="append", metavar="NAME=TEMPLATE",
                    help="server under test (repeatable; default: go and py); "
                         "TEMPLATE 'builtin' is the picows reference server (no child processes)")
    ap.add_argument("--scenario", action="append", metavar="NAME",
                    help="scenario name or prefix, e.g. echo (repeatable; default: all)")
    ap.add_argument("--rounds", type=int, help="rounds per server (default 5, --quick 2)")
    ap.add_argument("--quick", action="store_true", help="about one minute: shorter, fewer rounds")
    ap.add_argument("--max-sessions", type=int, help="cap of idle-max (default 6000, --quick 1000)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench-results"),
                    help="results folder (default: bench-results/)")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    args = ap.parse_args()

    max_sessions = args.max_sessions or (1000 if args.quick else 6000)
    all_sc = scenarios(args.quick, max_sessions)
    if args.list:
        for sc in all_sc:
            print(f"{sc.name:13} {sc.desc}  [{shlex.join(sc.flags + sc.cmd)}]")
        return 0
    chosen = [sc for sc in all_sc if not args.scenario
              or any(sc.name == s or sc.name.startswith(s) for s in args.scenario)]
    if not chosen:
        ap.error(f"no scenario matches {args.scenario}; see --list")
    servers = []
    for spec in args.server or [f"{k}={v}" for k, v in DEFAULT_SERVERS.items()]:
        name, sep, template = spec.partition("=")
        if not sep or not template:
            ap.error(f"--server wants NAME=TEMPLATE, got {spec!r}")
        if template != "builtin" and "{cmd}" not in shlex.split(template):
            ap.error(f"--server {name}: template has no {{cmd}}")
        servers.append(Server(name, template))
    rounds = args.rounds or (2 if args.quick else 5)

    set_subreaper()
    bc.raise_nofile()  # servers inherit the same (hard) fd limit
    os.makedirs(args.out, exist_ok=True)
    ignore = os.path.join(args.out, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w") as f:
            f.write("*\n")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"bench-{stamp}.json")
    doc = dict(started=stamp, machine=machine(), rounds=rounds, quick=args.quick,
               servers={s.name: dict(template=s.template, version=server_version(s.template))
                        for s in servers},
               scenarios={})
    print(f"# {doc['machine'].get('cpu')} x{doc['machine']['cpus']}, "
          f"Python {doc['machine']['python']}, rounds={rounds}")
    for s in servers:
        print(f"# {s.name}: {s.template}  ({doc['servers'][s.name]['version']})")
    t_start = time.monotonic()
    try:
        run_all(chosen, servers, rounds, doc, path, t_start)
    except KeyboardInterrupt:
        print("# interrupted", file=sys.stderr)
        return 130
    finally:
        print(f"# {time.monotonic() - t_start:.0f} s; results: {os.path.relpath(path)}")
    return 0


def run_all(chosen, servers, rounds, doc, path, t_start):
    for sc in chosen:
        runs = {s.name: [] for s in servers}
        n_rounds = min(rounds, sc.max_rounds) if sc.max_rounds else rounds
        for r in range(n_rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for s in order:
                res = run_one(s, sc)
                res["round"] = r + 1
                runs[s.name].append(res)
                head = next(iter(res.get("metrics", {}).items()), ("error", None))
                print(f"  {sc.name} round {r + 1}/{n_rounds} {s.name}: {head[0]} = "
                      f"{fmt(head[1])}  ({res.get('round_s', 0):.1f} s)"
                      + ("  ERR" if res.get("errors") else ""), file=sys.stderr, flush=True)
        lines, summary = table(sc, servers, runs)
        print("\n".join(lines) + "\n", flush=True)
        doc["scenarios"][sc.name] = dict(desc=sc.desc, cmd=sc.cmd, flags=sc.flags,
                                         params=sc.params, runs=runs, summary=summary)
        doc["elapsed_s"] = time.monotonic() - t_start
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
