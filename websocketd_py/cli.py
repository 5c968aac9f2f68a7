"""The command line: Go-flag syntax, help, version and license, usage errors.

Options follow Go's `flag` package, as websocketd's do: `-port=8080`,
`--port=8080` and `--port 8080` are the same; booleans take `--ssl`,
`--ssl=true`, `--ssl=false`. Parsing stops at the first argument that is not
an option (or after `--`): it and everything after it are COMMAND and its
argv, untouched.
"""

import os
import sys

from . import WEBSOCKETD_COMPAT_VERSION, __version__, tuning
from .config import FALSE, FLAGS, TRUE, UsageError, build_config
from .log import FATAL, Log

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


class FlagSyntaxError(UsageError):
    """A command line Go's flag package cannot parse: an unknown flag, a missing or
    malformed value (websocketd's exit status 2)."""

    exit_status = 2


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
            raise FlagSyntaxError(f"bad flag syntax: {arg}")
        name, has_value, value = body.partition("=")
        name = _ALIASES.get(name, name)
        if name not in FLAGS:
            raise FlagSyntaxError(f"flag provided but not defined: -{name} "
                                "(see websocketd-py --help for the list)")
        kind = FLAGS[name][0]
        index += 1
        if kind == "bool":
            if not has_value:
                value = "true"
            elif value not in TRUE | FALSE:
                raise FlagSyntaxError(f"invalid boolean value {value!r} for -{name}: "
                                    "use true or false")
            values[name] = value in TRUE
            continue
        if kind == "optional":
            values[name] = value if has_value else "true"
            continue
        if not has_value:
            if index >= len(argv):
                raise FlagSyntaxError(f"flag needs an argument: -{name}")
            value = argv[index]
            index += 1
        if kind == "int":
            try:
                values[name] = go_int(value)
            except ValueError:
                raise FlagSyntaxError(f"invalid value {value!r} for -{name}: "
                                    "expected a whole number") from None
        elif kind == "list":
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return values, list(argv[index:])


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
    """Entry point of the `websocketd-py` command.

    Exit statuses, as websocketd's: 0 after a clean stop, 1 for a bad setting,
    2 for a command line that cannot be parsed, 3 when the server cannot
    start (a listener cannot be opened), 4 for --devconsole with --staticdir
    or --cgidir.
    """
    try:
        outcome = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        if error.fatal:  # websocketd logs this one too
            Log(FATAL).write(FATAL, "server", error.fatal)
        sys.stderr.write(f"websocketd-py: {error}\n")
        sys.exit(error.exit_status)
    if isinstance(outcome, str):
        sys.stdout.write(outcome)
        return
    sys.exit(serve(outcome))


def serve(config, timings=None):
    """Serve as the command: process-wide tuning and signal handlers (`tuning`) for as long
    as it serves. The first Ctrl-C or SIGTERM asks for a clean shutdown; a second one kills
    every program and exits at once. The exit status. `timings`: see `server.make_server`."""
    from .server import ListenError, make_server, report_start_failure
    from .session import Timings
    signals = _Signals()
    with tuning.for_the_command_line(signals.received):  # before any thread starts
        try:
            server = make_server(config, timings=timings or Timings())
        except ListenError as error:
            return report_start_failure(config, error)
        signals.server = server
        if signals.first is not None:  # it came while the server was being made
            server.request_stop(f"{signals.first} received")
        server.serve_forever()
    return 0


class _Signals:
    """What the command line's signal handlers do. They run in the main thread, possibly in
    the middle of a log write, so they take no lock."""

    def __init__(self):
        self.first = None
        self.server = None

    def received(self, name):
        if self.first is None:
            self.first = name
            if self.server is not None:
                self.server.request_stop(f"{name} received")
        elif self.server is not None:
            self.server.app.kill_all()
            try:
                os.write(2, f"websocketd-py: {name} again: exiting now\n".encode())
            finally:
                os._exit(1)

