"""How the request's bytes become text for programs and files: one convention, one place.

http.server reads the request line and headers as latin-1 (one character per
byte), and werkzeug's REQUEST_URI encodes that text as UTF-8 once more before
reading it as latin-1 again. Here both are undone, and the bytes the client
sent are read as UTF-8, keeping any byte that is not UTF-8 as a lone
surrogate (`surrogateescape`), as the OS takes it back in a path or an
environment variable. So a raw `/café` and `/caf%C3%A9` both give the path
`/café`, and `QUERY_STRING` and `REQUEST_URI` hold exactly what was sent.
"""

import dataclasses
from urllib.parse import quote, unquote_to_bytes, urlsplit

#: Printable ASCII, which a header value (a Location) keeps as sent.
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def as_sent(latin1_text):
    """Text that http.server read as latin-1 (a header value), as the client's UTF-8 meant it."""
    try:
        return latin1_text.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # not latin-1 text: it did not come from the wire as bytes
        return latin1_text


def as_wsgi(text):
    """Text in this module's convention as a WSGI environ string (its UTF-8 bytes as latin-1)."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def percent_decoded(raw):
    """%-decoded text of a raw path piece, bytes that are not UTF-8 kept (surrogateescape)."""
    return unquote_to_bytes(raw.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape")


def ascii_only(text):
    """Text in this module's convention (a request target) with every byte that is not
    printable ASCII %-encoded, for a header: `/café` becomes `/caf%C3%A9`."""
    return quote(text.encode("utf-8", "surrogateescape"), safe=_PRINTABLE_ASCII)


@dataclasses.dataclass(frozen=True)
class RequestTarget:
    """The request target as sent, in origin form (`GET http://h/p?q` gives `/p?q`)."""

    uri: str     # REQUEST_URI: path and query as sent, still %-encoded
    raw_path: str  # the path as sent, still %-encoded (split on "/" before decoding)
    query: str   # QUERY_STRING: as sent, still %-encoded

    @property
    def path(self):
        """The path %-decoded (PATH_INFO in command mode)."""
        return percent_decoded(self.raw_path)


def request_target(environ):
    """The `RequestTarget` of a request from werkzeug's server (REQUEST_URI undone once)."""
    sent = environ.get("REQUEST_URI") or "/"
    target = as_sent(as_sent(sent))
    if not target.startswith("/") and "://" in target.split("?", 1)[0]:  # absolute form
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raw_path, _, query = target.partition("?")
    return RequestTarget(target, raw_path, query)
