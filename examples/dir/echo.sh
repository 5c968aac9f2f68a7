#!/usr/bin/env bash
# --dir example: sends every line back unchanged.
#
#   websocketd-py --port=8080 --dir=examples/dir
#   # this script is then ws://localhost:8080/echo.sh
#
# read -r keeps backslashes as they are; IFS= keeps leading/trailing spaces.
# printf is a bash builtin: it writes the line at once, no buffering.
while IFS= read -r line; do
  printf '%s\n' "$line"
done
