"""scripts/bench.py end to end: one quick round, websocketd-py against the client's own server.

The benchmark's figures are not checked (speed is not a test's business);
what is checked is that the harness works: it starts and stops each server
itself, every workload completes without errors, the ratio column is
there, the JSON lands in its git-ignored folder, and no session process
outlives a server. Linux only, like the benchmark (it reads /proc).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "scripts", "bench.py")
PY_SERVER = "{python} -m websocketd_py --address=127.0.0.1 --port={port} {flags} {cmd}"
SCENARIOS = ("churn-serial", "echo-1x1", "binary-10k")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"),
                                                    reason="the benchmark reads /proc")]


def test_a_quick_round_measures_every_server_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "results"
    argv = [sys.executable, BENCH, "--quick", "--rounds=1", f"--out={out}",
            f"--server=py={PY_SERVER}", "--server=ref=builtin"]
    argv += [f"--scenario={name}" for name in SCENARIOS]
    finished = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert finished.returncode == 0, finished.stderr

    [result] = out.glob("bench-*.json")
    assert (out / ".gitignore").read_text() == "*\n"
    doc = json.loads(result.read_text())
    assert list(doc["scenarios"]) == list(SCENARIOS)
    for name, scenario in doc["scenarios"].items():
        for server in ("py", "ref"):
            [run] = scenario["runs"][server]
            assert run["errors"] == {}, (name, server, run["errors"])
            assert run["leftover"] == [] and run["lingering"] == 0, (name, server, run)
            rate = next(iter(run["metrics"].values()))  # sessions/s, msgs/s, MB/s
            assert rate > 0, (name, server, run["metrics"])
            assert run["metrics"]["server CPU %"] > 0
        assert f"== {name}:" in finished.stdout
    assert "ref/py" in finished.stdout  # the ratio column: each server / the first
