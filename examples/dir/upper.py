#!/usr/bin/env python3
# --dir example: answers every line in UPPER CASE.
#
#   websocketd-py --port=8080 --dir=examples/dir
#   # this script is then ws://localhost:8080/upper.py
import sys

for line in iter(sys.stdin.readline, ""):
    # stdout is a pipe: flush=True sends each answer right away.
    print(line.rstrip("\n").upper(), flush=True)
