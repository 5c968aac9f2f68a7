#!/usr/bin/env bash
# Counter in bash: prints 1..COUNT, one number per line, pausing DELAY seconds.
#
#   websocketd-py --port=8080 examples/counter/count.sh        # 1..10, every 0.5 s
#   websocketd-py --port=8080 examples/counter/count.sh 3 0.1  # 1..3, every 0.1 s
#
# Every line we print becomes one WebSocket message.
# (Environment variables are not passed through by the server, so the
# settings come in as command-line arguments instead.)

count=${1:-10}
delay=${2:-0.5}

for ((i = 1; i <= count; i++)); do
  # echo is a shell builtin that writes the line straight away: bash does
  # not buffer it, so no explicit flush is needed here.
  echo "$i"
  sleep "$delay"
done
