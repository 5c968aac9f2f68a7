#!/usr/bin/env python3
# Sends one JSON object per line: a counter, the time and the load average.
# The browser parses each message with JSON.parse() (see index.html).
#
#   websocketd-py --port=8080 --staticdir=examples/json examples/json/stats.py
#   websocketd-py --port=8080 examples/json/stats.py 5 0.2   # 5 objects, 0.2 s apart
#
# Arguments: COUNT (default 0 = forever) and DELAY in seconds (default 1).
import json
import os
import sys
import time

count = int(sys.argv[1]) if len(sys.argv) > 1 else 0
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0

n = 0
while count == 0 or n < count:
    n += 1
    try:
        load = list(os.getloadavg())    # 1, 5 and 15 minute load average
    except (AttributeError, OSError):   # not available on Windows
        load = None
    stats = {"n": n, "time": time.time(), "load": load}
    # json.dumps() never puts a newline inside the object, so one object is
    # exactly one line, i.e. one message. flush=True sends it right away.
    print(json.dumps(stats), flush=True)
    time.sleep(delay)
