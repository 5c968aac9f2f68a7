"""The least a threaded Python server does per WebSocket session: a floor for churn.

    python scripts/floor_server.py PORT CMD [ARG...]
    python scripts/bench.py --scenario churn \
        --server floor='{python} scripts/floor_server.py {port} {cmd}'

Benchmark-only, not a server to use: no HTTP parsing beyond finding the key,
no checks, no logs, text frames under 126 bytes, no stderr. It answers the
upgrade, starts CMD with `Popen` (as websocketd-py does: pipes, own session,
the environment), sends each stdout read as one frame from a second thread,
and on the client's close frame closes stdin, waits for CMD and answers.
One thread per connection plus one writer, as in websocketd-py, so what
websocketd-py spends above this floor is its own per-session Python work
(docs/performance.md, "Churn").
"""
import base64
import hashlib
import os
import socket
import subprocess
import sys
import threading

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def serve_connection(conn, command):
    request = b""
    while b"\r\n\r\n" not in request:
        data = conn.recv(4096)
        if not data:  # a port probe
            conn.close()
            return
        request += data
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, bufsize=0, start_new_session=True,
                               env=dict(os.environ))

    def write():
        while True:
            out = os.read(process.stdout.fileno(), 65536).rstrip(b"\n")
            if not out:
                break
            conn.sendall(bytes([0x81, len(out)]) + out)

    threading.Thread(target=write, daemon=True).start()
    while True:
        data = conn.recv(65536)
        if not data or data[0] & 0x0F == 0x8:
            break
    process.stdin.close()
    process.wait()
    try:
        conn.sendall(b"\x88\x02\x03\xe8")
    except OSError:
        pass
    conn.close()
    process.stdout.close()


def main():
    if len(sys.argv) < 3 or not sys.argv[1].isdigit():  # also bench.py's --version probe
        print("floor_server.py: a benchmark floor; usage: floor_server.py PORT CMD [ARG...]")
        return
    port, command = int(sys.argv[1]), sys.argv[2:]
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(conn, command), daemon=True).start()


if __name__ == "__main__":
    main()
