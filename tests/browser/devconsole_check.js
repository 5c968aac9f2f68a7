#!/usr/bin/env node
// Headless-browser check of the websocketd-py dev console (websocketd_py/devconsole.html).
//
//   node tests/browser/devconsole_check.js BASE_URL [options]
//
// BASE_URL is a plain-HTTP URL of a WebSocket endpoint served with --devconsole
// whose program echoes every line it reads (e.g. `cat`), e.g. http://127.0.0.1:8080/
// (with --dir use the script's URL: http://127.0.0.1:8080/echo.sh).
//
// Options (--name=value or --name value):
//   --screenshot=PATH         PNG of the console after the echo session (also taken on failure)
//   --xss-screenshot=PATH     PNG of the console on the hostile URL
//   --quit-line=TEXT          a line that makes the program exit; then the close entry is checked
//   --expect-close-code=N     close code expected after --quit-line (default: any code)
//   --expect-close-reason=S   close reason expected after --quit-line (default: not checked)
//   --binary                  server runs with --binary: echoes arrive as binary messages
//   --no-xss                  skip the hostile-URL part
//   --program-side            instead of the echo checks: the program at BASE_URL prompts
//                             "What is your name? ", answers "Hello, NAME!", then fails with a
//                             NameError on stderr (exit status 1); checks the prompt shows before
//                             the answer, the stderr lines in red, the exit event and the close
//   --expect-hint=TEXT        instead of the echo checks: the program prints nothing; a hint
//                             entry containing TEXT must show, then the button disconnects
//   --timeout=MS              limit for each wait (default 10000)
//   --chromium=PATH           browser binary (default $CHROMIUM or /usr/bin/chromium)
//
// Prints one JSON object on stdout; exit 0 when every check passed, 1 when one failed,
// 2 on usage or browser-launch errors. Every wait is a wait-for-condition (no sleeps);
// the run stops at the first failed check.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const HOSTILE_PATH = `"><img src=x onerror=window.__xss=1>/<script>window.__xss=2</script>/'q'`;
const HOSTILE_QUERY = `q="><img src=x onerror=alert(1)>&s=<script>alert(2)</script>&t='x'"`;
const HOSTILE_HASH = `"><img src=x onerror=alert(3)>`;
const HOSTILE_MESSAGE = `<img src=x onerror="window.__xss=3"><script>window.__xss=4</script> "dq" 'sq' &amp; </span>`;
const LINES = ["hello", "wörld <b>&amp;</b> \"quoted\" 'single'"];

function usage(msg) {
  process.stderr.write(`devconsole_check: ${msg}\nusage: node devconsole_check.js BASE_URL [--screenshot=PATH] ` +
    `[--xss-screenshot=PATH] [--quit-line=TEXT] [--expect-close-code=N] [--expect-close-reason=S] ` +
    `[--binary] [--no-xss] [--program-side] [--timeout=MS] [--chromium=PATH]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const flags = new Set(["binary", "no-xss", "program-side"]);
  const valued = new Set(["screenshot", "xss-screenshot", "quit-line", "expect-close-code",
    "expect-close-reason", "timeout", "chromium", "expect-hint"]);
  const opts = { timeout: 10000, chromium: process.env.CHROMIUM || "/usr/bin/chromium" };
  let base = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      if (base !== null) usage(`unexpected argument ${JSON.stringify(a)}`);
      base = a;
      continue;
    }
    const eq = a.indexOf("=");
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (flags.has(name) && eq < 0) { opts[name] = true; continue; }
    if (!valued.has(name)) usage(`unknown option ${a}`);
    let value;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (i + 1 < argv.length) value = argv[++i];
    else usage(`${a} needs a value`);
    opts[name] = value;
  }
  if (base === null) usage("BASE_URL missing");
  let u;
  try { u = new URL(base); } catch (e) { usage(`bad BASE_URL ${JSON.stringify(base)}`); }
  if (u.protocol !== "http:" && u.protocol !== "https:") usage("BASE_URL must be http:// or https://");
  opts.timeout = Number(opts.timeout);
  if (!(opts.timeout > 0)) usage("--timeout must be a positive number of milliseconds");
  if (opts["expect-close-code"] !== undefined && !/^\d+$/.test(opts["expect-close-code"])) {
    usage("--expect-close-code must be a number");
  }
  return { base: u, opts };
}

// ws(s) URL the page should derive from its own location: same host, path, query; no fragment.
function wsUrlOf(pageUrl) {
  const u = new URL(pageUrl);
  return (u.protocol === "https:" ? "wss://" : "ws://") + u.host + u.pathname + u.search;
}

function hostileUrl(base) {
  const u = new URL(base.href);
  const dir = u.pathname.endsWith("/") ? u.pathname : u.pathname + "/";
  // Built as a string so the browser, not Node, does the percent-encoding.
  return `${u.protocol}//${u.host}${dir}${HOSTILE_PATH}?${HOSTILE_QUERY}#${HOSTILE_HASH}`;
}

function hex(bytes) {
  return Array.from(Buffer.from(bytes), (b) => b.toString(16).padStart(2, "0")).join(" ");
}

class CheckFailed extends Error {}

async function main() {
  const { base, opts } = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  const result = {
    ok: false, base: base.href, browser: null, durationMs: 0, checks: [],
    screenshot: opts.screenshot || null, xssScreenshot: opts["xss-screenshot"] || null,
    pageErrors: [], consoleErrors: [], dialogs: [], extraRequests: [],
  };
  let current = null;

  async function check(name, fn) {
    const c = { name, ok: false, ms: 0 };
    const start = Date.now();
    result.checks.push(c);
    try {
      const detail = await fn();
      if (detail !== undefined) c.detail = detail;
      c.ok = true;
    } catch (e) {
      c.error = e instanceof CheckFailed ? e.message : String(e && e.stack || e).split("\n").slice(0, 3).join(" | ");
      if (current) c.log = await logDump(current).catch(() => undefined);
      throw new CheckFailed(`${name}: ${c.error}`);
    } finally {
      c.ms = Date.now() - start;
    }
  }
  function expect(cond, msg) { if (!cond) throw new CheckFailed(msg); }

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "wsdpy-chromium-"));
  let context = null;
  const cleanup = async () => {
    if (context) { const c = context; context = null; await c.close().catch(() => {}); }
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  for (const sig of ["SIGINT", "SIGTERM"]) {
    process.once(sig, () => { cleanup().finally(() => process.exit(130)); });
  }

  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: opts.chromium,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-proxy-server"],
      viewport: { width: 960, height: 640 },
      deviceScaleFactor: 1,
      ignoreHTTPSErrors: true, // for --ssl runs with self-signed test certificates
      timeout: 30000,
    });
  } catch (e) {
    result.error = `cannot launch ${opts.chromium}: ${String(e.message || e).split("\n")[0]}`;
    result.durationMs = Date.now() - t0;
    await cleanup();
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    process.exit(2);
  }
  result.browser = context.browser() ? context.browser().version() : null;
  context.setDefaultTimeout(opts.timeout);

  const page = context.pages()[0] || await context.newPage();
  current = page;
  page.on("pageerror", (e) => result.pageErrors.push(String(e.message || e)));
  page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
  page.on("dialog", (d) => { result.dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on("request", (r) => {
    if (!(r.isNavigationRequest() && r.frame() === page.mainFrame())) result.extraRequests.push(r.url());
  });

  // --- helpers that run in the page -----------------------------------------------------
  const entryCount = () => page.evaluate(() => document.querySelectorAll("#log .entry").length);
  // Wait for an entry of `kind` (index >= start) whose .data text equals / contains `text`.
  async function waitEntry(start, kind, text, how = "equals") {
    const h = await page.waitForFunction(({ start, kind, text, how }) => {
      const es = Array.from(document.querySelectorAll("#log .entry")).slice(start);
      const e = es.find((e) => e.classList.contains(kind) && (text === null ||
        (how === "equals" ? e.querySelector(".data").textContent === text
          : e.querySelector(".data").textContent.includes(text))));
      return e ? { text: e.querySelector(".data").textContent, code: e.getAttribute("data-code"),
        reason: e.getAttribute("data-reason"), index: Array.prototype.indexOf.call(e.parentNode.children, e) } : null;
    }, { start, kind, text, how }, { timeout: opts.timeout });
    return h.jsonValue();
  }
  const waitState = (state) => page.waitForFunction(
    (s) => document.getElementById("status").getAttribute("data-state") === s, state, { timeout: opts.timeout });
  const ui = () => page.evaluate(() => ({
    state: document.getElementById("status").getAttribute("data-state"),
    status: document.getElementById("status").textContent,
    connect: document.getElementById("connect").textContent,
    url: document.getElementById("url").value,
    inputDisabled: document.getElementById("input").disabled,
  }));
  const xssState = () => page.evaluate(() => ({
    xss: typeof window.__xss === "undefined" ? null : String(window.__xss),
    images: document.images.length,
    scripts: document.scripts.length,
    elements: document.querySelectorAll("#log img, #log script, #log b, #log span span").length,
    title: document.title,
  }));
  async function sendLine(line, via) {
    await page.fill("#input", line);
    if (via === "button") await page.click("#send");
    else await page.press("#input", "Enter");
  }
  // Send `lines` and wait for each sent entry and its echo, in order.
  async function echoLines(lines) {
    let start = await entryCount();
    const seen = [];
    for (const [i, line] of lines.entries()) {
      await sendLine(line, i % 2 ? "button" : "enter");
      const s = await waitEntry(start, "sent", line);
      // The echo is the next received entry; compare it here so a mismatch fails at once.
      const r = await waitEntry(s.index + 1, "received", null);
      if (opts.binary) {
        const want = hex(Buffer.from(line, "utf8").subarray(0, 64)); // the page previews 64 bytes
        expect(r.text.startsWith("binary, ") && r.text.includes(want),
          `echo of ${JSON.stringify(line)} shows ${JSON.stringify(r.text)}, wanted hex ${want}`);
      } else {
        expect(r.text === line, `echo of ${JSON.stringify(line)} shows ${JSON.stringify(r.text)}`);
      }
      seen.push(r.text);
      start = r.index + 1;
    }
    return seen;
  }
  // label: what the button says before it is clicked; null: the page connects by itself on load.
  async function openSession(expectedUrl, label) {
    const start = label === null ? 0 : await entryCount();
    if (label !== null) {
      const before = await ui();
      expect(before.state === "closed", `status is ${before.state} before connecting`);
      expect(before.connect === label, `connect button says ${JSON.stringify(before.connect)}, wanted ${JSON.stringify(label)}`);
      await page.click("#connect");
    }
    const e = await waitEntry(start, "open", null);
    await waitState("open");
    expect(e.text === `connected to ${expectedUrl}`, `open entry says ${JSON.stringify(e.text)}`);
    const after = await ui();
    expect(after.connect === "Disconnect" && !after.inputDisabled, `after open: ${JSON.stringify(after)}`);
    return e.text;
  }
  async function closeByButton() {
    const start = await entryCount();
    await page.click("#connect");
    const e = await waitEntry(start, "close", null);
    await waitState("closed");
    expect(/^code 1000\b/.test(e.text) && e.code === "1000", `close entry says ${JSON.stringify(e.text)}`);
    const after = await ui();
    expect(after.connect === "Reconnect" && after.inputDisabled, `after close: ${JSON.stringify(after)}`);
    return e.text;
  }

  // The program's side (--program-side): prompt, answer, stderr in red, exit event, close.
  async function programSide() {
    let prompt, sent;
    await check("prompt-before-answer", async () => {
      prompt = await waitEntry(0, "prompt", "What is your name? ");
      const sentBefore = await page.evaluate(() => document.querySelectorAll("#log .entry.sent").length);
      expect(sentBefore === 0, "something was sent before the prompt showed");
      await sendLine("Ada", "enter");
      sent = await waitEntry(prompt.index + 1, "sent", "Ada");
      const answer = await waitEntry(sent.index + 1, "received", "Hello, Ada!");
      return { prompt: prompt.index, sent: sent.index, answer: answer.index };
    });
    await check("stderr-in-red", async () => {
      const e = await waitEntry(sent.index + 1, "stderr", "NameError: name 'txt' is not defined");
      const look = await page.evaluate((i) => {
        const row = document.getElementById("log").children[i];
        return { label: row.querySelector(".kind").textContent,
          color: getComputedStyle(row.querySelector(".data")).color };
      }, e.index);
      expect(look.color === "rgb(220, 38, 38)", `stderr text color is ${look.color}`);
      expect(look.label === "stderr", `stderr label is ${JSON.stringify(look.label)}`);
      return look;
    });
    await check("exit-event", async () => {
      const e = await waitEntry(sent.index + 1, "exit", "exit status 1");
      const c = await waitEntry(e.index + 1, "close", null);
      await waitState("closed");
      expect(c.code === "1011" && c.reason === "exit status 1", `close entry says ${JSON.stringify(c.text)}`);
      const u = await ui();
      expect(u.connect === "Reconnect", `after the exit the button says ${JSON.stringify(u.connect)}`);
      return { exit: e.text, close: c.text };
    });
    await check("no-page-errors", async () => {
      expect(result.pageErrors.length === 0, `page errors: ${JSON.stringify(result.pageErrors)}`);
      expect(result.consoleErrors.length === 0, `console errors: ${JSON.stringify(result.consoleErrors)}`);
    });
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
  }

  try {
    // --- normal page ------------------------------------------------------------------------
    let expectedWs;
    await check("load", async () => {
      const resp = await page.goto(base.href, { waitUntil: "load" });
      expect(resp && resp.status() === 200, `HTTP status ${resp && resp.status()}`);
      const ct = resp.headers()["content-type"] || "";
      expect(ct.startsWith("text/html"), `content-type ${JSON.stringify(ct)}`);
      await page.waitForSelector("#url");
      return { status: resp.status(), contentType: ct };
    });
    await check("url-field", async () => {
      expectedWs = wsUrlOf(page.url());
      const u = await ui();
      expect(u.url === expectedWs, `#url is ${JSON.stringify(u.url)}, expected ${JSON.stringify(expectedWs)}`);
      return u.url;
    });
    await check("connects-by-itself", () => openSession(expectedWs, null));
    if (opts["program-side"]) {
      await programSide();
    } else if (opts["expect-hint"] !== undefined) {
      await check("hint", async () => {
        const e = await waitEntry(0, "hint", opts["expect-hint"], "contains");
        await closeByButton();
        return e.text;
      });
    } else {
      await check("echo", () => echoLines(LINES));
      await check("history", async () => {
        const seq = [];
        await page.fill("#input", "draft");
        for (const key of ["ArrowUp", "ArrowUp", "ArrowUp", "ArrowDown", "ArrowDown"]) {
          await page.press("#input", key);
          seq.push(await page.inputValue("#input"));
        }
        const want = [LINES[1], LINES[0], LINES[0], LINES[1], "draft"];
        expect(JSON.stringify(seq) === JSON.stringify(want), `history gave ${JSON.stringify(seq)}`);
        await page.fill("#input", "");
        return seq;
      });
      await check("disconnect", closeByButton);
      await check("reconnect", async () => {
        await openSession(expectedWs, "Reconnect");
        return echoLines(["again"]);
      });
      if (opts["quit-line"] !== undefined) {
        await check("close-on-exit", async () => {
          const start = await entryCount();
          await sendLine(opts["quit-line"], "enter");
          const e = await waitEntry(start, "close", null);
          await waitState("closed");
          expect(/^code \d+/.test(e.text), `close entry says ${JSON.stringify(e.text)}`);
          const want = opts["expect-close-code"];
          expect(want === undefined || e.code === want, `close code ${e.code}, expected ${want}`);
          const reason = opts["expect-close-reason"];
          expect(reason === undefined || e.reason === reason, `close reason ${JSON.stringify(e.reason)}, expected ${JSON.stringify(reason)}`);
          return e.text;
        });
      } else {
        await check("disconnect-again", closeByButton);
      }
      await check("no-page-errors", async () => {
        expect(result.pageErrors.length === 0, `page errors: ${JSON.stringify(result.pageErrors)}`);
        expect(result.consoleErrors.length === 0, `console errors: ${JSON.stringify(result.consoleErrors)}`);
        expect(result.extraRequests.length === 0, `page fetched more than itself: ${JSON.stringify(result.extraRequests)}`);
      });
      if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
      await check("clear", async () => {
        await page.click("#clear");
        await page.waitForFunction(() => document.querySelectorAll("#log .entry").length === 0, null, { timeout: opts.timeout });
      });

      // --- hostile URL ------------------------------------------------------------------------
      if (!opts["no-xss"]) {
        const hostile = hostileUrl(base);
        result.hostile = hostile;
        let hostileWs;
        await check("xss-load", async () => {
          const resp = await page.goto(hostile, { waitUntil: "load" });
          expect(resp && resp.status() === 200, `HTTP status ${resp && resp.status()}`);
          hostileWs = wsUrlOf(page.url());
          const u = await ui();
          expect(u.url === hostileWs, `#url is ${JSON.stringify(u.url)}, expected ${JSON.stringify(hostileWs)}`);
          const x = await xssState();
          expect(x.xss === null && result.dialogs.length === 0, `script ran: __xss=${x.xss} dialogs=${JSON.stringify(result.dialogs)}`);
          expect(x.images === 0 && x.scripts === 1 && x.elements === 0, `markup was injected: ${JSON.stringify(x)}`);
          return { requested: page.url(), url: u.url };
        });
        await check("xss-session", async () => {
          const opened = await openSession(hostileWs, null);
          const echoed = await echoLines([HOSTILE_MESSAGE]);
          const x = await xssState();
          expect(x.xss === null && result.dialogs.length === 0, `script ran: __xss=${x.xss} dialogs=${JSON.stringify(result.dialogs)}`);
          expect(x.images === 0 && x.scripts === 1 && x.elements === 0, `markup was injected: ${JSON.stringify(x)}`);
          expect(x.title === "websocketd-py dev console", `title changed to ${JSON.stringify(x.title)}`);
          if (opts["xss-screenshot"]) await page.screenshot({ path: opts["xss-screenshot"] });
          await closeByButton();
          return { opened, echoed };
        });
        await check("xss-no-page-errors", async () => {
          expect(result.pageErrors.length === 0, `page errors: ${JSON.stringify(result.pageErrors)}`);
          expect(result.consoleErrors.length === 0, `console errors: ${JSON.stringify(result.consoleErrors)}`);
          expect(result.extraRequests.length === 0, `page fetched more than itself: ${JSON.stringify(result.extraRequests)}`);
        });
      }
    }
    result.ok = true;
  } catch (e) {
    if (!(e instanceof CheckFailed)) result.error = String(e && e.stack || e);
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot }).catch(() => {});
  } finally {
    current = null;
    await cleanup();
  }
  result.durationMs = Date.now() - t0;
  process.stdout.write(JSON.stringify(result, null, 2) + "\n");
  process.exit(result.ok ? 0 : 1);
}

async function logDump(page) {
  return page.evaluate(() => Array.from(document.querySelectorAll("#log .entry"))
    .slice(-20).map((e) => `${e.getAttribute("data-kind")}: ${e.querySelector(".data").textContent}`));
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }, null, 2) + "\n");
  process.exit(2);
});
