#!/usr/bin/env bash
# A CGI script: runs once per plain HTTP request (no WebSocket here).
#
#   websocketd-py --port=8080 --cgidir=examples/cgi
#   # open http://localhost:8080/hello.sh?anything
#
# A CGI script prints headers, then an empty line, then the body.
# The query string (the part after "?") arrives in $QUERY_STRING.
echo "Content-Type: text/plain"
echo ""
echo "Hello from a CGI script!"
echo "QUERY_STRING=$QUERY_STRING"
