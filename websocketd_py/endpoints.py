"""What a URL path runs: COMMAND, or with --dir (and --cgidir) the script the path names.

An `Endpoint` is the argv to start and how the path splits into SCRIPT_NAME
and PATH_INFO. In a directory the raw (still %-encoded) path is split on "/"
before decoding, so `%2f` never separates segments; a decoded segment that
holds "/", "\\", NUL or ":" or is "." or ".." is refused, and the script's
real path (symlinks resolved) must lie inside the real root.
"""

import dataclasses
import os
from typing import Tuple

from .decoding import percent_decoded
from .launching import IS_WINDOWS
from .refused import Refused


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """What a URL path runs: argv, and how the path splits into SCRIPT_NAME and PATH_INFO."""

    argv: Tuple[str, ...]
    script_name: str
    path_info: str


def endpoint_for(config, target):
    """The Endpoint for a `decoding.RequestTarget`; None when nothing runs there; Refused
    (403) when a script is there but may not run."""
    if config.command:
        return Endpoint(config.command, "/", target.path)
    if config.dir:
        return script_in(config.dir, target.raw_path)
    return None


def script_in(root, raw_path):
    """The Endpoint of the script a raw URL path names under `root`, walking its segments;
    None if there is none; Refused (403) if it lies outside or is not executable.

    PATH_INFO is the rest of the path as sent, empty segments and a trailing
    "/" included.
    """
    real_root = os.path.realpath(root)
    current = real_root
    parts = raw_path.split("/")
    for index, raw_segment in enumerate(parts):
        if not raw_segment:
            continue
        segment = _segment(raw_segment)
        if segment is None:
            return None
        candidate = os.path.join(current, segment)
        if os.path.isdir(candidate):
            current = candidate
            continue
        if not os.path.isfile(candidate):
            break
        real = os.path.realpath(candidate)
        if os.path.commonpath([real, real_root]) != real_root:
            raise Refused(403, "Forbidden: the script is outside the directory")
        if not (IS_WINDOWS or os.access(real, os.X_OK)):
            raise Refused(403, "Forbidden: the script is not executable")
        script_name = "/" + "/".join(percent_decoded(p) for p in parts[:index + 1] if p)
        rest = parts[index + 1:]
        path_info = "/" + percent_decoded("/".join(rest)) if rest else ""
        return Endpoint((candidate,), script_name, path_info)
    return None


def directory_in(root, raw_path):
    """The real path of the directory a raw URL path names under `root` (symlinks resolved,
    inside the real root), or None if the path names no such directory."""
    real_root = os.path.realpath(root)
    segments = [_segment(raw) for raw in raw_path.split("/") if raw]
    if None in segments:
        return None
    real = os.path.realpath(os.path.join(real_root, *segments))
    if os.path.commonpath([real, real_root]) != real_root or not os.path.isdir(real):
        return None
    return real


def _segment(raw_segment):
    """A raw path segment %-decoded, or None if it may not name a file (`valid_segment`)."""
    segment = percent_decoded(raw_segment)
    return segment if valid_segment(segment) else None


def valid_segment(segment):
    """Whether a decoded path segment may name a file: not "." or "..", no "/", "\\", NUL
    or ":" in it, and no longer than a file name can be."""
    return not (segment in (".", "..") or any(c in segment for c in "/\\\0:")
                or len(segment) > 255)
