"""`Refused`: a request answered with an HTTP error or a redirect, and one line of text."""

from werkzeug.wrappers import Response


class Refused(Exception):
    """Raised anywhere on a request's way; `routing` turns it into the response."""

    def __init__(self, status, text, headers=()):
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = tuple(headers)

    def response(self):
        return Response(self.text + "\n", self.status, headers=list(self.headers),
                        mimetype="text/plain")
