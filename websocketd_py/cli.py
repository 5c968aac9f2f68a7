"""The command line: Go-flag syntax, help, version and license, usage errors.

Options follow Go's `flag` package, as websocketd's do: `-port=8080`,
`--port=8080` and `--port 8080` are the same; booleans take `--ssl`,
`--ssl=true`, `--ssl=false`. Parsing stops at the first argument that is not
an option (or after `--`): it and everything after it are COMMAND and its
argv, untouched.
"""

import sys

from . import WEBSOCKETD_COMPAT_VERSION, __version__, launching
from .config import Config, UsageError
from .log import LEVELS

# name: (kind, help). kind is "bool", "int", "str", "list" (repeatable) or "optional"
# (a value only after "=": `--broadcast` alone means "true").
FLAGS = {
    "port": ("int", "HTTP port to listen on (default 80, or 443 with --ssl; 0 = any free port)"),
    "address": ("list", "Interface to bind to, e.g. 127.0.0.1 or [::1] (repeatable; default: all)"),
    "unixsocket": ("str", "Also listen on this Unix socket path"),
    "ssl": ("bool", "Use TLS on the listening sockets (needs --sslcert and --sslkey)"),
    "sslcert": ("str", "Certificate PEM file for --ssl"),
    "sslkey": ("str", "Private key PEM file for --ssl"),
    "sslca": ("str", "Require client certificates signed by this CA (PEM file)"),
    "redirport": ("int", "Also listen on this port and redirect plain HTTP to the --ssl port"),
    "maxforks": ("int", "Most processes running at once; over it upgrades get 429 "
                        "(default 1024; 0 or negative = unlimited)"),
    "maxframesize": ("int", "Largest message accepted from a client, in bytes; larger ones "
                            "close the connection with 1009 (default 1048576; 0 = no limit)"),
    "closems": ("int", "Extra time in ms a process gets to exit after its client left, "
                       "before SIGINT (then SIGTERM, SIGKILL) (default 0)"),
    "pingms": ("int", "Ping clients every N ms; close those that do not answer for 2N ms "
                      "(default 0 = off)"),
    "binary": ("bool", "Binary mode: pass raw bytes both ways instead of lines"),
    "passstderr": ("bool", "Send stderr lines to the client too, every line as JSON "
                           '{"stream":"stdout"|"stderr","data":"..."}'),
    "passenv": ("str", "Comma-separated environment variables passed to the process "
                       f"(default {','.join(launching.DEFAULT_PASSENV)})"),
    "reverselookup": ("bool", "Look up REMOTE_HOST with reverse DNS"),
    "dir": ("str", "Serve every executable in this directory as an endpoint named by its path"),
    "staticdir": ("str", "Serve static files from this directory over plain HTTP"),
    "cgidir": ("str", "Serve CGI scripts from this directory over plain HTTP"),
    "devconsole": ("bool", "Answer plain HTTP requests to an endpoint with an interactive "
                           "test page (not with --staticdir or --cgidir)"),
    "header": ("list", "Header added to every response, \"Name: value\" (repeatable)"),
    "header-ws": ("list", "Header added to WebSocket upgrade (101) responses only (repeatable)"),
    "header-http": ("list", "Header added to all other HTTP responses (repeatable)"),
    "sameorigin": ("bool", "Refuse (403) upgrades whose Origin is not the requested host"),
    "origin": ("str", "Refuse (403) upgrades unless Origin matches one of "
                      "[scheme://]host[:port],..."),
    "loglevel": ("str", f"Log level: {', '.join(LEVELS)} or none (default access)"),
    "subprotocol": ("list", "WebSocket subprotocol the server speaks (repeatable): the first one "
                            "a client asks for that is listed is chosen and passed to the "
                            "process as WEBSOCKET_PROTOCOL"),
    "basic-auth": ("list", "Require HTTP Basic authentication for everything, with this "
                           "user:password or user:sha256:HEX (repeatable)"),
    "basic-auth-file": ("str", "Require HTTP Basic authentication, with the users of this file "
                               "(one user:password or user:sha256:HEX per line)"),
    "status-path": ("str", "Answer GET on this URL path (e.g. /_status) with JSON about the "
                           "running sessions"),
    "compress": ("bool", "Offer permessage-deflate compression to clients that ask for it "
                         "(off by default: it costs CPU and about 40 KiB per connection)"),
    "broadcast": ("optional", "One shared process per endpoint for all its clients: every line "
                              "goes to every client, every message to its stdin; =eager starts "
                              "it with the server instead of at the first client"),
    "broadcast-ids": ("bool", "With --broadcast: each line a client sends reaches the process "
                              "as \"ID line\" (the client's id, as in the log; with --binary "
                              "each binary message gets \"ID \" before it)"),
    "broadcast-backlog": ("int", "With --broadcast: bytes a slow client may fall behind before "
                                 "it is closed with 1008 (default 1048576)"),
    "trusted-proxy": ("str", "Comma-separated addresses or networks (CIDR) of reverse proxies: "
                             "requests from them get REMOTE_ADDR from X-Forwarded-For, HTTPS "
                             "from X-Forwarded-Proto, SERVER_NAME from X-Forwarded-Host"),
    "help": ("bool", "Print this help and exit"),
    "version": ("bool", "Print the version and exit"),
    "license": ("bool", "Print the license and exit"),
}
_ALIASES = {"h": "help"}

USAGE = """\
websocketd-py turns any program that reads stdin and writes stdout into a
WebSocket server: each connection starts the program, each line it prints is
sent as a message, each message received is written to its stdin.

Usage:
  websocketd-py [options] COMMAND [command args]   serve one program
  websocketd-py [options] --dir=DIR                serve every program in DIR

Example:
  websocketd-py --port=8080 ./count.sh             then connect to ws://localhost:8080/

Options (-flag, --flag, --flag=value, --flag value; booleans also --flag=false):
"""

LICENSE = """\
websocketd-py is distributed under the BSD 2-Clause License.

Copyright (c) 2026, the websocketd-py authors.
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND
ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def go_int(text):
    """An integer as Go's flag package reads one (strconv.ParseInt base 0).

    0x1F90, 0o17, 0b11 and 017 (octal) are numbers; spaces and non-ASCII digits are not.
    """
    sign, digits = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if not (digits.isascii() and digits[:1].isdigit() and digits == digits.strip()):
        raise ValueError(text)
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXoObB":
        digits = "0o" + digits[1:]  # Go's legacy octal
    value = int(digits, 0)
    return -value if sign == "-" else value


def help_text():
    lines = [USAGE]
    for name, (kind, text) in FLAGS.items():
        placeholder = {"int": "=N", "str": "=VALUE", "list": "=VALUE",
                       "optional": "[=VALUE]"}.get(kind, "")
        lines.append(f"  --{name}{placeholder}\n      {text}\n")
    lines.append("\nFull documentation: README.md of websocketd-py.\n")
    return "".join(lines)


def version_text():
    return (f"websocketd-py {__version__} (compatible with websocketd "
            f"{WEBSOCKETD_COMPAT_VERSION}; Python {sys.version.split()[0]})")


def parse_flags(argv):
    """Split argv into ({flag name: value}, COMMAND argv) the way Go's flag package does."""
    values = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body.startswith("-") or body.startswith("="):
            raise UsageError(f"bad flag syntax: {arg}")
        name, has_value, value = body.partition("=")
        name = _ALIASES.get(name, name)
        if name not in FLAGS:
            raise UsageError(f"flag provided but not defined: -{name} "
                             "(see websocketd-py --help for the list)")
        kind = FLAGS[name][0]
        index += 1
        if kind == "bool":
            if not has_value:
                value = "true"
            elif value not in _TRUE | _FALSE:
                raise UsageError(f"invalid boolean value {value!r} for -{name}: "
                                 "use true or false")
            values[name] = value in _TRUE
            continue
        if kind == "optional":
            values[name] = value if has_value else "true"
            continue
        if not has_value:
            if index >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[index]
            index += 1
        if kind == "int":
            try:
                values[name] = go_int(value)
            except ValueError:
                raise UsageError(f"invalid value {value!r} for -{name}: "
                                 "expected a whole number") from None
        elif kind == "list":
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values, list(argv[index:])


def _header(flag, text):
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or any(c in name for c in " \t\r\n"):
        raise UsageError(f"invalid --{flag}={text!r}: expected \"Name: value\"")
    if "\r" in value or "\n" in value:
        raise UsageError(f"invalid --{flag}={text!r}: a header value cannot hold a line break")
    return (name.strip(), value.strip())


def _address(text):
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise UsageError("--address cannot be empty")
    return text


def _broadcast(value):
    """--broadcast's value: "" (off), "lazy" (at the first client) or "eager" (at startup)."""
    if value in _FALSE:
        return ""
    if value in _TRUE:
        return "lazy"
    if value == "eager":
        return "eager"
    raise UsageError(f"invalid value {value!r} for -broadcast: use --broadcast, "
                     "--broadcast=eager or --broadcast=false")


def build_config(values, command):
    """A `Config` from parsed flags, with every value checked for range and form."""
    for name in ("port", "redirport"):
        if name in values and not 0 <= values[name] <= 65535:
            raise UsageError(f"invalid -{name}={values[name]}: a port is 0 to 65535")
    for name in ("closems", "pingms", "maxframesize", "broadcast-backlog"):
        if values.get(name, 0) < 0:
            raise UsageError(f"invalid -{name}={values[name]}: cannot be negative")
    loglevel = values.get("loglevel", "access").lower()
    if loglevel not in LEVELS + ("none",):
        raise UsageError(f"invalid -loglevel={values['loglevel']}: use one of "
                         f"{', '.join(LEVELS)}, none")
    for name in ("dir", "staticdir", "cgidir", "unixsocket", "sslcert", "sslkey", "sslca"):
        if values.get(name) == "":
            raise UsageError(f"-{name} needs a path")
    simple = {name: values[name] for name in (
        "port", "unixsocket", "ssl", "sslcert", "sslkey", "sslca", "redirport", "maxforks",
        "maxframesize", "closems", "pingms", "binary", "passstderr", "reverselookup", "dir",
        "staticdir", "cgidir", "devconsole", "sameorigin", "compress") if name in values}
    if "passenv" in values:
        simple["passenv"] = tuple(v.strip() for v in values["passenv"].split(",") if v.strip())
    if "origin" in values:
        simple["origins"] = tuple(o.strip() for o in values["origin"].split(",") if o.strip())
    if "trusted-proxy" in values:
        simple["trusted_proxies"] = tuple(
            a.strip() for a in values["trusted-proxy"].split(",") if a.strip())
    return Config(
        command=tuple(command),
        addresses=tuple(_address(a) for a in values.get("address", [])),
        headers=tuple(_header("header", h) for h in values.get("header", [])),
        headers_ws=tuple(_header("header-ws", h) for h in values.get("header-ws", [])),
        headers_http=tuple(_header("header-http", h) for h in values.get("header-http", [])),
        loglevel=loglevel,
        explicit=frozenset(values),
        subprotocols=tuple(values.get("subprotocol", ())),
        basic_auth=tuple(values.get("basic-auth", ())),
        basic_auth_file=values.get("basic-auth-file"),
        status_path=values.get("status-path"),
        broadcast=_broadcast(values.get("broadcast", "false")),
        broadcast_ids=values.get("broadcast-ids", False),
        broadcast_backlog=values.get("broadcast-backlog", Config.broadcast_backlog),
        **simple,
    )


def parse_args(argv):
    """argv (without the program name) → validated `Config`, or a `str` to print and exit 0."""
    values, command = parse_flags(argv)
    if values.get("help"):
        return help_text()
    if values.get("version"):
        return version_text() + "\n"
    if values.get("license"):
        return LICENSE
    return build_config(values, command).validate()


def main(argv=None):
    """Entry point of the `websocketd-py` command."""
    try:
        outcome = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        sys.stderr.write(f"websocketd-py: {error}\n")
        sys.exit(2)
    if isinstance(outcome, str):
        sys.stdout.write(outcome)
        return
    from .server import run
    sys.exit(run(outcome))

