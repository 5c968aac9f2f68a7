"""--status-path: what the server is doing now, as JSON, for monitoring and debugging.

    {"version": "0.1.0", "uptime_seconds": 12.3, "forks_in_use": 1, "maxforks": 1024,
     "session_count": 1, "sessions": [{"id": "17955432596386400001", "remote": "127.0.0.1",
     "command": "/usr/bin/cat", "pid": 6709, "started": "2026-11-24T16:58:12Z"}]}

`forks_in_use` also counts running CGI scripts; `maxforks` is null when
unlimited; sessions are listed oldest first, `started` in UTC (when the
client connected). With --broadcast every client is a session and `pid` is
its endpoint's shared process now (null while it restarts).
"""

import dataclasses
import json
import time

from werkzeug.wrappers import Response

from . import __version__


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """What the report says about one running session."""

    id: str          # UNIQUE_ID, also the `id` of its log lines
    remote: str
    command: str
    pid: int
    started: float   # time.time() when the process started

    def as_json(self):
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return dict(dataclasses.asdict(self), started=started)


@dataclasses.dataclass(frozen=True)
class SharedSessionRecord:
    """A --broadcast client: its process is its hub's current one, which restarts may change."""

    id: str
    remote: str
    command: str
    started: float   # time.time() when the client connected
    hub: object      # a `broadcast.Hub`

    def as_json(self):
        process = self.hub.process
        return SessionRecord(self.id, self.remote, self.command,
                             process.pid if process is not None else None,
                             self.started).as_json()


def report(records, forks_in_use, maxforks, uptime):
    """The report as a dict, from the running sessions' records and the fork count."""
    sessions = sorted(records, key=lambda record: record.started)
    return {
        "version": __version__,
        "uptime_seconds": round(uptime, 3),
        "forks_in_use": forks_in_use,
        "maxforks": maxforks if maxforks > 0 else None,
        "session_count": len(sessions),
        "sessions": [record.as_json() for record in sessions],
    }


def response(document):
    """The report as an HTTP response; never cached, it is out of date at once."""
    return Response(json.dumps(document, indent=1) + "\n", mimetype="application/json",
                    headers=[("Cache-Control", "no-store")])
