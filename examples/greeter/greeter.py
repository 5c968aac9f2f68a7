#!/usr/bin/env python3
# Greeter: answers every line it receives with "Hello, <line>!".
#
#   websocketd-py --port=8080 examples/greeter/greeter.py
#
# Each message the client sends arrives here as one line on stdin;
# each line we print goes back to the client as one message.
import sys

# Read stdin line by line. (Using readline() in a loop instead of
# "for line in sys.stdin" makes sure we never wait for more input
# before answering the line we already have.)
for line in iter(sys.stdin.readline, ""):
    name = line.rstrip("\n")
    # stdout is a pipe: flush=True sends the answer right away.
    print(f"Hello, {name}!", flush=True)
# stdin was closed (the client went away): falling off the end exits.
