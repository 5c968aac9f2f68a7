#!/usr/bin/env python3
"""websocketd-py inside a werkzeug application: a page at /, a WebSocket counter at /count.

    python examples/embedding/app.py          # then open http://localhost:8080/
    python examples/embedding/app.py 9000     # another port (0: any free port)

`websocketd_py.WebSocketApp` is a WSGI app like any other, here mounted with
werkzeug's DispatcherMiddleware: /count goes to it, everything else to the
small werkzeug app `site`. Its options are the command-line flags
(`maxforks=10` is `--maxforks=10`). It needs werkzeug's server with threads:
each session keeps its request thread and takes over the socket werkzeug
puts in environ["werkzeug.socket"]. Ctrl-C stops the server, and
`counter.close()` ends the sessions still running, so no counter outlives it.
"""

import os
import sys

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

import websocketd_py

COUNT_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "counter", "count.py")

PAGE = """<!DOCTYPE html>
<html lang="en">
<meta charset="utf-8">
<title>websocketd-py in a werkzeug app</title>
<h1>Hello from werkzeug</h1>
<p>The counter below runs in websocketd-py, mounted at <code>/count</code>:
<span id="count">&hellip;</span></p>
<script>
  var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://")
                         + location.host + "/count");
  ws.onmessage = function (event) {
    document.getElementById("count").textContent = event.data;
  };
</script>
"""


@Request.application
def site(request):
    """The rest of the application: here one page."""
    return Response(PAGE, mimetype="text/html")


# One count.py per WebSocket connection: 1..5, one number every 0.5 s.
counter = websocketd_py.WebSocketApp([sys.executable, COUNT_PY, "5"], maxforks=10)
application = DispatcherMiddleware(site, {"/count": counter})


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    server = make_server("127.0.0.1", port, application, threaded=True)
    print(f"Serving on http://127.0.0.1:{server.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        counter.close()


if __name__ == "__main__":
    main()
