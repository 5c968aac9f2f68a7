"""Dot segments: websocketd's 301 to the cleaned path, and never a `..` for a program.

Go's net/http, so websocketd, answers a request whose path as sent (still
%-encoded) holds a "." or ".." segment or "//" with a 301 to the path
cleaned as Go's `path.Clean` cleans it, the query kept; nothing runs. A
WebSocket client cannot follow a redirect, so an upgrade to such a path gets
400. A ".." that only %-decoding makes (`..%2f`, `%2e%2e`, or `..%5c`, since
Windows programs split paths on backslashes too) would reach PATH_INFO and
PATH_TRANSLATED: such a request gets 404.
"""

import re

from .decoding import ascii_only
from .refused import Refused

#: A ".." segment of a decoded path, between slashes or backslashes.
_DOT_DOT = re.compile(r"(?:^|[/\\])\.\.(?:[/\\]|$)")


def clean(raw_path):
    """`raw_path` as Go's net/http cleans it (`cleanPath`): rooted, no "." or ".." segment,
    no empty segment, a trailing "/" kept."""
    segments = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    cleaned = "/" + "/".join(segments)
    if raw_path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def require_clean(target, upgrade):
    """Refused (301, 400 or 404) for a `decoding.RequestTarget` whose path is not clean."""
    cleaned = clean(target.raw_path)
    if cleaned != target.raw_path:
        if upgrade:
            raise Refused(400, "Bad Request: the path has \".\" or \"..\" segments or \"//\"; "
                               f"connect to {ascii_only(cleaned)}")
        location = ascii_only(cleaned + (f"?{target.query}" if target.query else ""))
        raise Refused(301, f"Moved Permanently: {location}", (("Location", location),))
    if _DOT_DOT.search(target.path):
        raise Refused(404, "404 page not found")
