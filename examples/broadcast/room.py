#!/usr/bin/env python3
"""A chat room in ONE process that every client shares (websocketd-py --broadcast).

    websocketd-py --port=8080 --devconsole --broadcast --broadcast-ids examples/broadcast/room.py
    # open http://localhost:8080/ in several tabs; the first line you send is your name

With --broadcast every line printed here goes to every connected client, and
every client's message arrives on stdin. --broadcast-ids puts the client's id
and a space before each line, so the program knows who wrote it: a client's
first line names it, the next ones are its messages, and nobody can write
under someone else's name.
"""

import sys

names = {}  # client id: name
for line in sys.stdin:
    client, _, text = line.rstrip("\n").partition(" ")
    if client not in names:
        names[client] = text.strip() or f"guest{len(names) + 1}"
        print(f"* {names[client]} joined", flush=True)
    else:
        print(f"{names[client]}: {text}", flush=True)
