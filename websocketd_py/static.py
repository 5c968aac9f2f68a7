"""--staticdir: files over plain HTTP, through werkzeug's SharedDataMiddleware.

Around the middleware: `/` and directories serve their `index.html` (a
directory without the trailing slash is redirected to it, so relative links
work), nothing outside the directory is served (symlinks leading out
included, an `index.html` too), HEAD gets no body, and every response is
revalidated (`max-age=0` with an ETag from the file's size and mtime), so a
changed file shows on reload during a demo.
"""

import os
from urllib.parse import quote

from werkzeug.middleware.shared_data import SharedDataMiddleware
from werkzeug.wrappers import Response

from .decoding import as_wsgi, request_target


def _not_found(environ, start_response):
    return Response("404 page not found\n", 404, mimetype="text/plain")(environ, start_response)


class StaticFiles:
    """A WSGI app serving one directory."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.files = SharedDataMiddleware(_not_found, {"/": self.root}, cache_timeout=0)

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            response = Response("Method not allowed\n", 405, mimetype="text/plain",
                                headers=[("Allow", "GET, HEAD")])
            return response(environ, start_response)
        path = request_target(environ).path
        target = self._inside(path)
        if target is None:
            return _not_found(environ, start_response)
        if os.path.isdir(target):
            if not path.endswith("/"):
                return self._redirect_to_directory(environ, start_response, path)
            index = self._inside(path + "index.html")
            if index is None or not os.path.isfile(index):
                return _not_found(environ, start_response)
            path += "index.html"
        # werkzeug's own PATH_INFO is wrong for a raw UTF-8 target: the file is named by ours
        environ = dict(environ, PATH_INFO=as_wsgi(path))
        body = self.files(environ, start_response)
        if environ["REQUEST_METHOD"] == "HEAD":  # SharedDataMiddleware would send the file
            if hasattr(body, "close"):
                body.close()
            return []
        return body

    @staticmethod
    def _redirect_to_directory(environ, start_response, path):
        """301 to `path/`, as a path of this server (`//host` in it must not name another one)."""
        location = quote("/" + "/".join(p for p in path.split("/") if p) + "/")
        if environ.get("QUERY_STRING"):
            location += "?" + environ["QUERY_STRING"]
        return Response("", 301, headers=[("Location", location)])(environ, start_response)

    def _inside(self, path):
        """The real file system path for a URL path, or None if it is not inside the root."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p or ":" in p for p in parts):
            return None
        real = os.path.realpath(os.path.join(self.root, *parts))
        if os.path.commonpath([real, self.root]) != self.root or not os.path.exists(real):
            return None
        return real
