#!/usr/bin/env bash
# --dir example: sends the current time once a second until the client leaves.
#
#   websocketd-py --port=8080 --dir=examples/dir
#   # this script is then ws://localhost:8080/time.sh
#
# echo is a bash builtin and is not buffered: each line goes out at once.
while true; do
  echo "$(date '+%H:%M:%S')"
  sleep 1
done
