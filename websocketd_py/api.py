"""websocketd-py from Python: `serve()` runs the server, `WebSocketApp` mounts it in werkzeug.

    import websocketd_py
    websocketd_py.serve(["./count.sh"], port=8080)        # = websocketd-py --port=8080 ./count.sh

    server = websocketd_py.make_server(["./count.sh"], port=8080)
    threading.Thread(target=server.serve_forever).start()  # ...; server.shutdown()

    counter = websocketd_py.WebSocketApp(["./count.sh"], maxforks=10)
    app = DispatcherMiddleware(site, {"/count": counter})   # ws://host/count runs count.sh

COMMAND is an argv list, or a single program path (never split, never given
to a shell). Options are the command-line flags, with `_` for `-`
(`header_ws=`, `basic_auth=`, `status_path=`): True/False for switches,
integers for numbers, a string or a list of strings for repeatable flags and
for `passenv` and `origin`, and `broadcast=True` or `broadcast="eager"`. They
go through the same parsing and checks as the command line
(`config.build_config`, `Config.validate`), then the same
`server.make_server` (or `server.build_app`): a bad value raises ValueError with the
command line's message, an unknown option TypeError.
"""

import os

from . import server
from .config import FLAGS, UsageError, build_config
from .server import build_app

#: Flags that are no options: they print something and exit.
_NOT_OPTIONS = frozenset(("help", "version", "license"))
#: Flags about listeners and directories: the werkzeug server an app is mounted in has its own.
_NOT_FOR_MOUNTING = frozenset(("port", "address", "unixsocket", "ssl", "sslcert", "sslkey",
                               "sslca", "redirport", "dir", "staticdir", "cgidir"))
#: "str" flags that hold a comma-separated list, so they also take a Python list.
_COMMA_LISTS = frozenset(("passenv", "origin"))


def serve(command, port=None, address=None, **options):
    """Serve COMMAND like `websocketd-py`; block until Ctrl-C (KeyboardInterrupt) or the
    server's `shutdown()`, then end every session.

    `port` and `address` are --port (default 80) and --address (a string or a
    list). Returns the exit status the command line would have: 0 after a
    clean stop, 3 when a listener could not be opened (said as the command
    line says it: websocketd's FATAL log line on stdout, one line on stderr).
    Options the command line would refuse raise instead: TypeError for one it
    would not parse (its exit status 2), ValueError for a bad setting (1, or
    4 for --devconsole with --cgidir). It changes nothing process-wide: no
    signal handlers, no CPU affinity; the command line alone does that.
    """
    return server.serve(_server_config(command, port, address, options))


def make_server(command, port=None, address=None, **options):
    """A server for COMMAND with its listeners open, as werkzeug's `make_server` gives one:
    `serve_forever()`, `shutdown()` (from another thread), `startup_lines()`.
    Raises `server.ListenError` when a listener cannot be opened."""
    return server.make_server(_server_config(command, port, address, options))


def _server_config(command, port, address, options):
    listen = {name: value for name, value in (("port", port), ("address", address))
              if value is not None}
    return _config(command, {**options, **listen}, _NOT_OPTIONS)


class WebSocketApp:
    """A WSGI app that starts COMMAND for every WebSocket connection, for werkzeug's server.

    It needs werkzeug's development server with threads (`make_server(...,
    threaded=True)` or `run_simple(..., threaded=True)`): a session takes the
    socket werkzeug puts in `environ["werkzeug.socket"]` and holds its request
    thread until it ends. Paths are whole request paths, mount point
    included: the process's PATH_INFO, and what `status_path` must name.
    REMOTE_USER and AUTH_TYPE set by a middleware in front reach the process.
    With `broadcast="eager"` the shared process starts here. Call `close()`
    when the server stops.
    """

    def __init__(self, command, **options):
        self.config = _config(command, options, _NOT_OPTIONS | _NOT_FOR_MOUNTING)
        self.log = server.make_log(self.config)
        self.app = build_app(self.config, self.log)
        self.app.start_eager_broadcast()

    def __call__(self, environ, start_response):
        # The headers for HTTP_* variables: websocketd-py's own server records them as sent.
        environ.setdefault("websocketd_py.headers", _headers_from(environ))
        return self.app(environ, start_response)

    def close(self):
        """End every session as a server shutdown does (1001, stop schedule), refuse new
        ones, and end the threads the app started."""
        self.app.shutdown()


def _headers_from(environ):
    """(name, value) pairs rebuilt from a WSGI environ's HTTP_* keys."""
    return [(key[5:].replace("_", "-").title(), value)
            for key, value in environ.items() if key.startswith("HTTP_")]


def _config(command, options, excluded):
    """A validated `Config` from COMMAND and options, exactly as the command line makes one."""
    values = {}
    for option, value in options.items():
        name = option.replace("_", "-")
        if name not in FLAGS or name in excluded:
            raise TypeError(f"unexpected option {option!r}")
        values[name] = _flag_value(option, name, FLAGS[name][0], value)
    try:
        return build_config(values, _argv(command)).validate()
    except UsageError as error:
        raise ValueError(str(error)) from None


def _flag_value(option, name, kind, value):
    """A Python value as `cli.parse_flags` would have parsed the flag; TypeError if it cannot be."""
    if kind == "list" or name in _COMMA_LISTS:
        items = [value] if isinstance(value, str) else list(value)
        if not all(isinstance(item, str) for item in items):
            raise TypeError(f"option {option!r} takes a string or a list of strings")
        return items if kind == "list" else ",".join(items)
    if kind == "optional":  # --broadcast: True, False or a value such as "eager"
        if isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, str):
            raise TypeError(f"option {option!r} takes True, False or a string")
        return value
    if kind == "bool" and not isinstance(value, bool):
        raise TypeError(f"option {option!r} takes True or False")
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"option {option!r} takes an integer")
    if kind == "str" and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"option {option!r} takes a string")
    return os.fspath(value) if kind == "str" else value


def _argv(command):
    """COMMAND as argv: a list of arguments, or one program path."""
    if isinstance(command, (str, os.PathLike)):
        return [os.fspath(command)]
    return [os.fspath(argument) for argument in command]
