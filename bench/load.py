#!/usr/bin/env python3
"""load.py - sets up the background load that bench/flat.sh measures
joinqd under.  Standard library only.

    load.py HOST PORT queues N      N queues flat-q1..flat-qN, one item each
    load.py HOST PORT inflight N    N items on queue flat-held, each got with
                                    a lease of an hour and not acknowledged
    load.py HOST PORT idle N        N idle TCP connections, held until
                                    SIGTERM; prints "ready" once all are open

Requests are pipelined on one connection and every reply is checked: any
error reply, or no reply within 60 s, exits 1 with a message.
"""

import json
import signal
import socket
import sys
import time

BATCH = 5000         # requests written before their replies are read
REPLY_WAIT = 60      # seconds a batch's replies may take


def connect(host, port):
    s = socket.create_connection((host, port), timeout=REPLY_WAIT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pipeline(host, port, requests):
    """Sends the requests (dicts) in batches; checks every reply is ok."""
    s = connect(host, port)
    buf = b""
    for start in range(0, len(requests), BATCH):
        batch = requests[start:start + BATCH]
        s.sendall(b"".join(json.dumps(r, separators=(",", ":")).encode() +
                           b"\n" for r in batch))
        got = 0
        while got < len(batch):
            chunk = s.recv(1 << 20)
            if not chunk:
                sys.exit("load.py: the daemon closed the connection")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                reply = json.loads(line)
                if not reply.get("ok"):
                    sys.exit("load.py: error reply: %s" % line.decode())
                got += 1
    s.close()


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    host, port, what, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
        int(sys.argv[4])
    if what == "queues":
        pipeline(host, port, [{"op": "put", "queue": "flat-q%d" % i,
                               "item": i} for i in range(1, n + 1)])
    elif what == "inflight":
        pipeline(host, port, [{"op": "put", "queue": "flat-held",
                               "item": i} for i in range(n)])
        # With a lease the tasks stay delivered after this connection
        # closes: in flight for an hour, held by no one.
        pipeline(host, port, [{"op": "get", "queue": "flat-held",
                               "lease": 3600, "block": False}] * n)
    elif what == "idle":
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        conns = [connect(host, port) for _ in range(n)]
        # One round trip at the end: the daemon has taken them all.
        conns[-1].sendall(b'{"op":"ping"}\n')
        conns[-1].recv(4096)
        print("ready", flush=True)
        while not stop:
            time.sleep(0.2)
        for c in conns:
            c.close()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
