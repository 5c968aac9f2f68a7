"""websocketd-py: turn any stdin/stdout program into a WebSocket server.

A drop-in, pure-Python replacement for websocketd. Each WebSocket connection
starts a fresh instance of a program; every line it prints becomes a message,
every message becomes a line on its stdin.
"""

__version__ = "0.1.0"

#: The websocketd release whose command line, environment and logs we follow.
WEBSOCKETD_COMPAT_VERSION = "0.4.1"
