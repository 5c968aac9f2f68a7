"""--basic-auth and --basic-auth-file: HTTP Basic authentication for the whole server.

Every request (upgrade, static file, CGI script, dev console, status page)
needs `Authorization: Basic` with a listed user and password; `app` answers
the others 401 with `WWW-Authenticate: Basic realm="websocketd-py"`.

An entry is `user:password`, or `user:sha256:<64 hex digits>` (the SHA-256
of the UTF-8 password), so a file or `ps` need not show the password. A check
hashes both the user and the password given and compares the digests with
every entry using `hmac.compare_digest`: the time it takes does not tell
which user exists or how much of a password was right.

A request that passes gets REMOTE_USER and AUTH_TYPE=Basic (for the program
and CGI scripts), and loses its Authorization header, so the password never
reaches a program's environment nor the debug log; `without_userinfo` keeps
one a client put in its request line out of the log's URLs.
"""

import base64
import binascii
import hashlib
import hmac
import re

CHALLENGE = 'Basic realm="websocketd-py"'
_HASHED = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}\Z")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")  # scheme://user:password@


class CredentialsError(ValueError):
    """A bad --basic-auth entry or --basic-auth-file; the message never holds a password."""


def _digest(text):
    """SHA-256: every comparison is then between 32 bytes, whatever the lengths given."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def parse_entry(entry, where):
    """(user digest, password digest) of one `user:password` or `user:sha256:HEX`."""
    user, colon, password = entry.partition(":")
    if not colon or not user:
        raise CredentialsError(f"{where}: expected user:password")
    if not password.startswith(_HASHED):
        return _digest(user), _digest(password)
    hex_digest = password[len(_HASHED):]
    if not _HEX_DIGEST.match(hex_digest):
        raise CredentialsError(f"{where}: the password of {user!r} starts with sha256: "
                               "but 64 hex digits do not follow")
    return _digest(user), bytes.fromhex(hex_digest)


def read_file(path):
    """The entries of a --basic-auth-file: one per line; blank lines and `#` comments skipped."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = [line.rstrip("\n") for line in file]  # "\r\n" is read as "\n"
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise CredentialsError(f"cannot read --basic-auth-file={path}: {reason}") from None
    entries = [parse_entry(line, f"--basic-auth-file={path} line {number}")
               for number, line in enumerate(lines, 1)
               if line.strip() and not line.startswith("#")]
    if not entries:
        raise CredentialsError(f"--basic-auth-file={path} holds no user:password line")
    return entries


def from_config(config):
    """The `BasicAuth` of --basic-auth and --basic-auth-file, None without them."""
    if not config.basic_auth and config.basic_auth_file is None:
        return None
    entries = [parse_entry(entry, f"--basic-auth entry {number}")
               for number, entry in enumerate(config.basic_auth, 1)]
    if config.basic_auth_file is not None:
        entries += read_file(config.basic_auth_file)
    return BasicAuth(entries)


def without_userinfo(url):
    """A URL for the log: `user:password@` taken out (a client may put it in the request line)."""
    return _USERINFO.sub(r"\1", url)


def logged_url(environ):
    """The request's URL for the log, without any user:password in it."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    return without_userinfo(f"{scheme}://{host}{environ.get('REQUEST_URI', '')}")


def _credentials(header):
    """(user, password) from an `Authorization: Basic ...` value; None if it is not one."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class BasicAuth:
    """The listed users, as (user digest, password digest) pairs, and the check of a request."""

    def __init__(self, entries):
        self.entries = tuple(entries)

    def authenticate(self, environ):
        """None when the request's credentials are good (then REMOTE_USER and AUTH_TYPE are set
        and the Authorization header is gone); else why not, without the password."""
        credentials = _credentials(environ.get("HTTP_AUTHORIZATION", ""))
        if credentials is None:
            return "no Basic credentials"
        user, password = credentials
        if not self._listed(user, password):
            return f"wrong user name or password (user {user!r})"
        environ["REMOTE_USER"] = user
        environ["AUTH_TYPE"] = "Basic"
        _drop_authorization(environ)
        return None

    def _listed(self, user, password):
        """Every entry is compared, whatever matched before: constant time."""
        user_digest, password_digest = _digest(user), _digest(password)
        found = False
        for known_user, known_password in self.entries:
            found |= (hmac.compare_digest(user_digest, known_user)
                      & hmac.compare_digest(password_digest, known_password))
        return found


def _drop_authorization(environ):
    """Take the password out of what the program, CGI script and debug log get."""
    environ.pop("HTTP_AUTHORIZATION", None)
    headers = environ.get("websocketd_py.headers")
    if headers is not None:
        environ["websocketd_py.headers"] = [(name, value) for name, value in headers
                                            if name.lower() != "authorization"]
