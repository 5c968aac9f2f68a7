"""websocketd-py: turn any stdin/stdout program into a WebSocket server.

A drop-in, pure-Python replacement for websocketd. Each WebSocket connection
starts a fresh instance of a program; every line it prints becomes a message,
every message becomes a line on its stdin.

From Python (see `websocketd_py.api`): `serve(command, port=..., **options)`
runs the server as the command line does; `make_server(...)` gives the server
object (`serve_forever()`, `shutdown()`); `WebSocketApp(command, **options)`
is a WSGI app to mount in a werkzeug application. They are imported on first
use, so `import websocketd_py` stays cheap.
"""

__version__ = "0.1.0"

#: The websocketd release whose command line, environment and logs we follow.
WEBSOCKETD_COMPAT_VERSION = "0.4.1"

__all__ = ["WebSocketApp", "make_server", "serve", "__version__"]


def __getattr__(name):
    """Import the embedding API (werkzeug and all) only when it is asked for (PEP 562)."""
    if name in ("WebSocketApp", "make_server", "serve"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
