#!/usr/bin/env bash
# Prints the environment the server gave this process, one VAR=value per
# line, sorted. Handy to see the CGI-style variables (REMOTE_ADDR,
# QUERY_STRING, HTTP_USER_AGENT, ...):
#
#   websocketd-py --port=8080 examples/env/dump-env.sh
#   # then connect to ws://localhost:8080/some/path?name=value
#
# "env" prints every variable; "sort" orders them. Both exit at once, so
# their output is flushed when they finish.
# (LC_ALL=C makes the sort order plain byte order, the same everywhere.)
# Note: PWD, SHLVL and _ are not from the server: bash itself adds them.
env | LC_ALL=C sort
