"""--devconsole (SPEC §5): the page as served, then driven by a real headless Chromium.

The browser part runs tests/browser/devconsole_check.js (see its README) and
needs node, Chromium and `npm ci` in tests/browser; it is skipped, saying
which one is missing, when they are not installed, unless
WEBSOCKETD_PY_BROWSER_TESTS=required (CI), where that is a failure.
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: An echo program that exits 0 on "quit" (the check then expects close code 1000).
ECHO_UNTIL_QUIT = ("import sys\n"
                   "for line in sys.stdin:\n"
                   "    if line.strip() == 'quit':\n"
                   "        break\n"
                   "    print(line, end='', flush=True)\n")
#: Asks a question without a newline, answers, then fails on stderr with exit status 1.
PROMPT_THEN_FAIL = ("name = input('What is your name? ')\n"
                    "print('Hello, ' + name + '!', flush=True)\n"
                    "print(txt)\n")
#: Request targets a page that reflected its URL would turn into markup; sent as is.
HOSTILE_TARGETS = (
    "/some/deep/path?x=1",
    "/%22%3E%3Cscript%3Ealert(1)%3C/script%3E/'q'?a=%22%3E%3Cimg%20src=x%20onerror=alert(2)%3E",
    "/<script>alert(3)</script>/\"quoted\"/'single'?q=<script>&r=\"x\"",
)


def get(port, target):
    """(status, content type, body) of a raw GET to `target` (sent as is)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def test_page_is_html_for_any_path_and_never_reflects_the_url(server):
    srv = server("--devconsole", "cat")
    status, content_type, page = get(srv.port, "/")
    assert (status, content_type.split(";")[0]) == (200, "text/html")
    assert b"<title>websocketd-py dev console</title>" in page
    for target in HOSTILE_TARGETS:
        status, content_type, body = get(srv.port, target)
        assert (status, content_type.split(";")[0]) == (200, "text/html"), target
        assert body == page, f"the page for {target!r} differs from the page for /"


@pytest.mark.slow
def test_page_is_only_served_where_a_program_runs(server, tmp_path):
    script = tmp_path / "echo.sh"
    script.write_text("#!/bin/sh\nexec cat\n")
    script.chmod(0o755)
    srv = server("--devconsole", f"--dir={tmp_path}")
    assert get(srv.port, "/echo.sh")[:2] == (200, "text/html; charset=utf-8")
    assert get(srv.port, "/no-such-script")[0] == 404


def missing_browser_tools():
    """Why the browser check cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (set $CHROMIUM)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run `npm ci` in tests/browser"
    return None


def run_browser_check(url, *options):
    """The names of the checks devconsole_check.js passed at `url`; skipped (or failed)
    when the browser tools are missing."""
    missing = missing_browser_tools()
    if missing and os.environ.get("WEBSOCKETD_PY_BROWSER_TESTS") == "required":
        pytest.fail(f"browser check required but cannot run: {missing}")
    if missing:
        pytest.skip(f"browser check skipped: {missing}")
    result = subprocess.run(["node", str(BROWSER_DIR / "devconsole_check.js"), url, *options],
                            capture_output=True, text=True, timeout=180)
    report = json.loads(result.stdout)
    failed = [check for check in report.get("checks", []) if not check["ok"]]
    assert result.returncode == 0 and report["ok"], json.dumps(failed or report, indent=1)
    return {check["name"] for check in report["checks"]}


@pytest.mark.slow
def test_devconsole_in_a_headless_browser(server, tmp_path):
    """Connects by itself, echo, history, disconnect, reconnect, close code on exit, hostile
    URL: no XSS."""
    srv = server("--devconsole", sys.executable, "-u", "-c", ECHO_UNTIL_QUIT)
    names = run_browser_check(f"http://127.0.0.1:{srv.port}/", "--quit-line=quit",
                              "--expect-close-code=1000",
                              f"--screenshot={tmp_path / 'devconsole.png'}")
    assert {"connects-by-itself", "echo", "disconnect", "reconnect", "close-on-exit", "xss-load",
            "xss-session"} <= names


@pytest.mark.slow
def test_the_devconsole_shows_the_prompt_stderr_in_red_and_the_exit(server, tmp_path):
    """The student's view: the prompt before the answer, the traceback in red, the exit."""
    srv = server("--devconsole", sys.executable, "-c", PROMPT_THEN_FAIL)
    names = run_browser_check(f"http://127.0.0.1:{srv.port}/", "--program-side", "--no-xss",
                              f"--screenshot={tmp_path / 'program-side.png'}")
    assert {"connects-by-itself", "prompt-before-answer", "stderr-in-red", "exit-event"} <= names


@pytest.mark.slow
def test_the_devconsole_shows_the_buffering_hint_for_a_shell_script(server, tmp_path):
    srv = server("--devconsole", "sh", "-c", "sleep 30")
    names = run_browser_check(f"http://127.0.0.1:{srv.port}/", "--no-xss",
                              "--expect-hint=grep --line-buffered")
    assert {"connects-by-itself", "hint"} <= names
