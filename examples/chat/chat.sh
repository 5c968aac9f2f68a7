#!/usr/bin/env bash
# A chat room built only on a shared file: every connection runs its own
# copy of this script. Messages are appended to one log file, and every
# copy follows that file and sends each new line to its own client.
#
#   websocketd-py --port=8080 --staticdir=examples/chat examples/chat/chat.sh
#   # open http://localhost:8080/ in several browser tabs
#
# The log file can be given as an argument (default /tmp/websocketd-chat.log):
#   websocketd-py --port=8080 examples/chat/chat.sh /tmp/my-room.log

log=${1:-/tmp/websocketd-chat.log}
touch "$log" || exit 1

# Background "follower": print the last 20 lines (the recent history), then
# every line added later. GNU tail flushes after each new line, so the
# client sees messages at once.
tail -n 20 -f "$log" &
follower=$!

# Whatever happens, stop the follower when this script ends; otherwise it
# would keep running (and keep the connection open) forever.
trap 'kill "$follower" 2>/dev/null' EXIT
trap 'exit 0' INT TERM HUP

# Foreground: each message from the client is one line on stdin; append
# it to the shared log (">>" appends, so tabs never overwrite each other).
while IFS= read -r line; do
  [ -n "$line" ] && printf '%s\n' "$line" >> "$log"
done

# stdin closed: the client has gone. Leaving the loop ends the script,
# and the EXIT trap above stops the follower.
