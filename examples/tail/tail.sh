#!/usr/bin/env bash
# Live log tail: sends the last 10 lines of a file, then every new line
# as it is written.
#
#   websocketd-py --port=8080 examples/tail/tail.sh /var/log/syslog
#
# -F keeps following the file even if it is rotated or recreated.
# GNU tail flushes its output after each new line, so nothing waits in a
# buffer. "exec" replaces this shell with tail, so when the client goes
# away the server stops tail directly.

if [ $# -ne 1 ]; then
  echo "usage: $0 FILE" >&2
  exit 2
fi

exec tail -n 10 -F "$1"
