"""--devconsole: the interactive test page, served for plain HTTP requests to an endpoint.

The page is static (`devconsole.html`, package data): it derives the ws:// or
wss:// URL from its own `location`, so the server never writes the request URL
into it (websocketd does, unescaped: an XSS hole).
"""

from importlib import resources


def page():
    """The page's bytes, read once at start."""
    return resources.files(__package__).joinpath("devconsole.html").read_bytes()
