#!/usr/bin/env python3
# Counter in Python: prints 1..COUNT, one number per line, pausing DELAY seconds.
#
#   websocketd-py --port=8080 examples/counter/count.py        # 1..10, every 0.5 s
#   websocketd-py --port=8080 examples/counter/count.py 3 0.1  # 1..3, every 0.1 s
import sys
import time

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5

for i in range(1, count + 1):
    # stdout is a pipe, not a terminal, so Python would keep the output in
    # a buffer and send it all at the end. flush=True sends each line now.
    print(i, flush=True)
    time.sleep(delay)
