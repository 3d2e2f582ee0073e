"""natscluster - a three-node NATS JetStream cluster on loopback for the
tests of journal = nats (issue 12), and a small NATS client.

    import natscluster

    with natscluster.NatsCluster() as nc:
        nc.servers                 # "nats://127.0.0.1:p1,nats://...:p2,..."
        leader = nc.stream_leader("joinq")   # node index, or None
        nc.kill(leader)            # SIGKILL by PID
        nc.start(leader)           # same ports, same store directory
        nc.wait_healthy()

Every node is Debian's nats-server (2.9.10) with JetStream on, its store
directory in a temporary directory of the cluster's own, and its client,
cluster (route) and monitoring ports free loopback ports.  Every wait is
bounded and scaled by jqtest.SLOW; every process is stopped by its PID.  A
missing nats-server is an error, never a skip: scripts/deps installs it.

NatsClient speaks the NATS text protocol over a socket (INFO, CONNECT, PUB,
HPUB, SUB, MSG, HMSG, PING/PONG), enough for the JetStream API's JSON
requests ($JS.API.STREAM.CREATE.<name> and so on) and for plain publishes.

Run as a program, it checks itself: a cluster starts healthy, a stream with
three replicas has a leader, the leader's node killed loses nothing and gets
a new leader, and the node restarted is healthy again.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import jqtest

NATS_SERVER = os.environ.get("NATS_SERVER") or shutil.which("nats-server") \
    or "/usr/sbin/nats-server"
# A cold cluster is healthy in about a second, a node restarted after
# SIGKILL in up to 5 s, three nodes restarted together in about 11 s
# (shared/notes/jetstream.md), and past 30 s on a loaded machine: bounds
# well above those.
HEALTHY_TIMEOUT = 60 * jqtest.SLOW
# JetStream API errors that a cluster still electing answers: "JetStream
# system temporarily unavailable", and "no suitable peers" before its meta
# leader knows its peers.
TRANSIENT_JS_ERRORS = {10008, 10005}


def free_ports(n):
    """n distinct free loopback TCP ports (held together while chosen, so
    that they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsError(Exception):
    """An -ERR from the server, or a JetStream API error reply."""


class NatsClient:
    """A NATS client on one socket, synchronous: publish, and request
    (publish with a reply subject under an inbox of its own, wait for the
    one reply).  Headers in and out as dicts."""

    def __init__(self, url_or_port, timeout=jqtest.TIMEOUT):
        if isinstance(url_or_port, int):
            host, port = "127.0.0.1", url_or_port
        else:
            hostport = url_or_port.split("//", 1)[-1].split(",")[0]
            host, port = hostport.rsplit(":", 1)
            port = int(port)
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.timeout = timeout
        line = self._line()
        if not line.startswith(b"INFO "):
            raise NatsError("no INFO from the server: %r" % line)
        self.info = json.loads(line[5:])
        self.inbox = "_INBOX.jqtest%d%d" % (os.getpid(), id(self))
        self.next_sid = 1
        self.next_reply = 1
        self._send(b"CONNECT " + json.dumps(
            {"verbose": False, "pedantic": False, "headers": True,
             "no_responders": True, "name": "jqtest"}).encode() + b"\r\n")
        self.flush()
        self.sub(self.inbox + ".*")

    # ---- the wire -------------------------------------------------------

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply from NATS within %.1f s"
                               % self.timeout)
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the NATS server closed the connection")
        self.buf += chunk

    def _line(self, deadline=None):
        deadline = deadline or time.monotonic() + self.timeout
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n, deadline):
        while len(self.buf) < n + 2:
            self._fill(deadline)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _next(self, deadline):
        """The next message (subject, reply, headers, payload); answers
        PING, raises on -ERR."""
        while True:
            line = self._line(deadline)
            if line == b"PING":
                self._send(b"PONG\r\n")
            elif line in (b"PONG", b"+OK") or line.startswith(b"INFO "):
                continue
            elif line.startswith(b"-ERR"):
                raise NatsError(line.decode(errors="replace"))
            elif line.startswith(b"MSG "):
                f = line.decode().split()
                reply = f[3] if len(f) == 5 else None
                return f[1], reply, {}, self._bytes(int(f[-1]), deadline)
            elif line.startswith(b"HMSG "):
                f = line.decode().split()
                reply = f[3] if len(f) == 6 else None
                hlen, total = int(f[-2]), int(f[-1])
                data = self._bytes(total, deadline)
                return f[1], reply, self._headers(data[:hlen]), data[hlen:]
            else:
                raise NatsError("unexpected from NATS: %r" % line)

    @staticmethod
    def _headers(block):
        headers = {}
        lines = block.decode(errors="replace").split("\r\n")
        status = lines[0].split(None, 2)          # NATS/1.0 503 ...
        if len(status) > 1:
            headers["Status"] = status[1]
        for h in lines[1:]:
            if ":" in h:
                k, v = h.split(":", 1)
                headers[k.strip()] = v.strip()
        return headers

    def flush(self):
        """A PING answered: everything sent before was processed."""
        self._send(b"PING\r\n")
        deadline = time.monotonic() + self.timeout
        while True:
            line = self._line(deadline)
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise NatsError(line.decode(errors="replace"))
            if line == b"PING":
                self._send(b"PONG\r\n")

    def sub(self, subject):
        sid = self.next_sid
        self.next_sid += 1
        self._send(b"SUB %s %d\r\n" % (subject.encode(), sid))
        return sid

    def pub(self, subject, payload=b"", reply=None, headers=None):
        if isinstance(payload, str):
            payload = payload.encode()
        r = (" " + reply) if reply else ""
        if headers:
            h = "NATS/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in
                                         headers.items()) + "\r\n"
            hb = h.encode()
            self._send(b"HPUB %s%s %d %d\r\n" % (subject.encode(), r.encode(),
                       len(hb), len(hb) + len(payload)) + hb + payload +
                       b"\r\n")
        else:
            self._send(b"PUB %s%s %d\r\n" % (subject.encode(), r.encode(),
                       len(payload)) + payload + b"\r\n")

    def request(self, subject, payload=b"", headers=None, timeout=None):
        """The reply's (headers, payload); raises NatsError on "no
        responders" (status 503), TimeoutError after timeout."""
        reply = "%s.%d" % (self.inbox, self.next_reply)
        self.next_reply += 1
        self.pub(subject, payload, reply, headers)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            subject_in, _, h, data = self._next(deadline)
            if subject_in != reply:
                continue                     # a late reply to an earlier one
            if h.get("Status") == "503":
                raise NatsError("no responders on %s" % subject)
            return h, data

    def js(self, api, body=None, timeout=None):
        """A JetStream API request ($JS.API.<api>) with a JSON body; the
        decoded reply.  Raises NatsError if it is an error.

        A cluster that is still electing its meta leader drops API requests
        or answers them "temporarily unavailable" (a loaded machine makes
        that window long), so those are asked again until timeout (default
        HEALTHY_TIMEOUT).  Asking again is safe for the calls the tests
        make: reads, deletes, and creates with one config each (a create
        that did land answers the same config again with success)."""
        payload = b"" if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + (timeout or HEALTHY_TIMEOUT)
        while True:
            left = deadline - time.monotonic()
            try:
                _, data = self.request("$JS.API." + api, payload,
                                       timeout=max(0.1, min(left,
                                                            self.timeout)))
                reply = json.loads(data)
                err = reply.get("error")
                if not err:
                    return reply
                if err.get("err_code") not in TRANSIENT_JS_ERRORS:
                    raise NatsError("%s: %s" % (api, err))
                why = NatsError("%s: %s" % (api, err))
            except (TimeoutError, socket.timeout) as e:
                why = e
            except NatsError as e:
                if "no responders" not in str(e):
                    raise
                why = e
            if time.monotonic() + 0.1 > deadline:
                raise why
            time.sleep(0.1)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class NatsCluster:
    """Three nats-server processes (by default) clustered on loopback, with
    JetStream.  Nodes are numbered from 0; node i is named "n<i+1>"."""

    def __init__(self, nodes=3, max_payload=None):
        if not os.access(NATS_SERVER, os.X_OK):
            raise AssertionError("nats-server not found (%s): scripts/deps "
                                 "installs it" % NATS_SERVER)
        self.n = nodes
        self.tmp = tempfile.TemporaryDirectory(prefix="joinq-nats-")
        ports = free_ports(3 * nodes)
        self.client_ports = ports[0:nodes]
        self.route_ports = ports[nodes:2 * nodes]
        self.http_ports = ports[2 * nodes:3 * nodes]
        self.procs = [None] * nodes
        self.logs = [None] * nodes
        routes = ", ".join("nats-route://127.0.0.1:%d" % p
                           for p in self.route_ports)
        for i in range(nodes):
            extra = "max_payload: %d\n" % max_payload if max_payload else ""
            with open(self.conf(i), "w") as f:
                f.write("server_name: %s\n"
                        "listen: 127.0.0.1:%d\n"
                        "http: 127.0.0.1:%d\n"
                        "%s"
                        "jetstream { store_dir: %s }\n"
                        "cluster {\n"
                        "  name: jq\n"
                        "  listen: 127.0.0.1:%d\n"
                        "  routes: [ %s ]\n"
                        "}\n" % (self.name(i), self.client_ports[i],
                                 self.http_ports[i], extra,
                                 self.path("n%d" % (i + 1)),
                                 self.route_ports[i], routes))

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def conf(self, i):
        return self.path("n%d.conf" % (i + 1))

    @staticmethod
    def name(i):
        return "n%d" % (i + 1)

    def index(self, name):
        return int(name[1:]) - 1

    @property
    def servers(self):
        """The cluster's client URLs, comma separated (nats_servers)."""
        return ",".join(self.url(i) for i in range(self.n))

    def url(self, i):
        return "nats://127.0.0.1:%d" % self.client_ports[i]

    def pid(self, i):
        p = self.procs[i]
        return p.pid if p and p.poll() is None else None

    def log(self, i):
        with open(self.path("n%d.log" % (i + 1)), errors="replace") as f:
            return f.read()

    # ---- processes -------------------------------------------------------

    def start(self, node=None, wait=True):
        """Starts every node (or one) that is not running; waits until the
        nodes started are healthy unless wait is False."""
        nodes = range(self.n) if node is None else [node]
        for i in nodes:
            if self.pid(i):
                continue
            if self.logs[i]:
                self.logs[i].close()
            self.logs[i] = open(self.path("n%d.log" % (i + 1)), "a")
            self.procs[i] = subprocess.Popen(
                [NATS_SERVER, "-c", self.conf(i)], stdin=subprocess.DEVNULL,
                stdout=self.logs[i], stderr=subprocess.STDOUT)
        if wait:
            self.wait_healthy(list(nodes))
        return self

    def kill(self, node, sig=signal.SIGKILL):
        """Sends sig to node's process; for SIGKILL and SIGTERM, waits until
        it is gone."""
        p = self.procs[node]
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            try:
                p.wait(jqtest.TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self):
        """Stops every node (SIGTERM, SIGKILL after the bound)."""
        for i in range(self.n):
            p = self.procs[i]
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for i in range(self.n):
            p = self.procs[i]
            if p is not None:
                try:
                    p.wait(jqtest.TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if self.logs[i]:
                self.logs[i].close()
                self.logs[i] = None

    def close(self):
        self.stop()
        self.tmp.cleanup()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- monitoring ------------------------------------------------------

    def http(self, i, path, timeout=2):
        """The decoded JSON of GET http://127.0.0.1:<http i><path>, or None
        when the node does not answer 200."""
        url = "http://127.0.0.1:%d%s" % (self.http_ports[i], path)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def healthy(self, i):
        """True if node i's /healthz says ok (it can serve JetStream)."""
        h = self.http(i, "/healthz")
        return bool(h) and h.get("status") == "ok"

    def meta_leader(self):
        """The name of the JetStream meta leader as the first running node
        that knows one sees it, or None."""
        for i in range(self.n):
            if self.pid(i):
                j = self.http(i, "/jsz")
                leader = ((j or {}).get("meta_cluster") or {}).get("leader")
                if leader:
                    return leader
        return None

    def wait_healthy(self, nodes=None, timeout=HEALTHY_TIMEOUT):
        """Waits until every node given (default: every running one)
        answers /healthz ok and the cluster has a JetStream meta leader
        (streams can be created); raises with the logs if not."""
        nodes = [i for i in range(self.n) if self.pid(i)] \
            if nodes is None else nodes
        deadline = time.monotonic() + timeout
        while self.meta_leader() is None:
            if time.monotonic() > deadline:
                raise AssertionError("no JetStream meta leader in %.0f s:\n%s"
                                     % (timeout, self.log(nodes[0])))
            time.sleep(0.05)
        for i in nodes:
            while not self.healthy(i):
                if self.procs[i] is None or self.procs[i].poll() is not None:
                    raise AssertionError("nats-server %s exited:\n%s"
                                         % (self.name(i), self.log(i)))
                if time.monotonic() > deadline:
                    raise AssertionError("nats-server %s not healthy in "
                                         "%.0f s:\n%s" % (self.name(i),
                                                          timeout,
                                                          self.log(i)))
                time.sleep(0.05)

    def streams(self, i):
        """Node i's view of the streams: {name: stream detail} from /jsz
        (each with "state", "config" and, clustered, "cluster")."""
        j = self.http(i, "/jsz?accounts=true&streams=true&config=true")
        out = {}
        for acc in (j or {}).get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                out[s["name"]] = s
        return out

    def stream_leader(self, stream):
        """The index of the node leading stream, as the running nodes see
        it; None when none names a leader."""
        for i in range(self.n):
            if not self.pid(i):
                continue
            s = self.streams(i).get(stream)
            leader = s and (s.get("cluster") or {}).get("leader")
            if leader:
                return self.index(leader)
        return None

    def wait_stream_leader(self, stream, timeout=HEALTHY_TIMEOUT,
                           not_node=None):
        """The leader of stream once one is named (other than not_node)."""
        found = []

        def named():
            leader = self.stream_leader(stream)
            if leader is not None and leader != not_node:
                found.append(leader)
                return True
            return False
        if not jqtest.wait_until(named, timeout, 0.1):
            raise AssertionError("no leader for stream %s in %.0f s"
                                 % (stream, timeout))
        return found[0]

    def dump(self, stream, last=20):
        """The last messages of stream, a line each: sequence, joinq's
        headers (kind, writer, active, expected sequence), size; for the
        diagnostics of a failed test."""
        import base64
        lines = []
        try:
            with self.client() as c:
                state = c.js("STREAM.INFO." + stream)["state"]
                first = max(state["first_seq"], state["last_seq"] - last + 1)
                lines.append("stream %s: %s" % (stream, json.dumps(state)))
                for seq in range(first, state["last_seq"] + 1):
                    try:
                        m = c.js("STREAM.MSG.GET." + stream,
                                 {"seq": seq})["message"]
                    except NatsError as e:
                        lines.append("%d: %s" % (seq, e))
                        continue
                    h = NatsClient._headers(base64.b64decode(
                        m.get("hdrs") or b""))
                    lines.append("%d: %s %d bytes" % (seq, " ".join(
                        "%s=%s" % (k.replace("Joinq-", "").replace(
                            "Nats-Expected-Last-Sequence", "expect"), v)
                        for k, v in h.items()
                        if k.startswith("Joinq-") or k.startswith(
                            "Nats-Expected")), len(base64.b64decode(
                                m.get("data") or b""))))
        except (OSError, NatsError, StopIteration, ValueError) as e:
            lines.append("stream %s: cannot read it: %r" % (stream, e))
        return "\n".join(lines)

    def client(self, i=None):
        """A NatsClient on node i (default: the first running node)."""
        if i is None:
            i = next(k for k in range(self.n) if self.pid(k))
        return NatsClient(self.client_ports[i])


# ---- a self-test: python3 natscluster.py ----------------------------------

def self_test():
    t0 = time.monotonic()
    with NatsCluster() as nc:
        took = time.monotonic() - t0
        jqtest.diag("cluster healthy in %.2f s" % took)
        with nc.client() as c:
            info = c.js("STREAM.CREATE.selftest", {
                "name": "selftest", "subjects": ["selftest.x"],
                "retention": "limits", "storage": "file", "num_replicas": 3})
            assert info["config"]["num_replicas"] == 3, info
            for k in range(10):
                h, ack = c.request("selftest.x", b"m%d" % k)
                assert json.loads(ack)["seq"] == k + 1, ack
        leader = nc.wait_stream_leader("selftest")
        jqtest.diag("stream leader %s; /jsz: %s" % (
            nc.name(leader), json.dumps(nc.streams(leader)["selftest"]
                                        ["cluster"])))
        t1 = time.monotonic()
        nc.kill(leader)
        new = nc.wait_stream_leader("selftest", not_node=leader)
        jqtest.diag("killed %s; new leader %s in %.2f s"
                    % (nc.name(leader), nc.name(new), time.monotonic() - t1))
        other = next(i for i in range(3) if i != leader)
        with nc.client(other) as c:
            info = c.js("STREAM.INFO.selftest")
            assert info["state"]["messages"] == 10, info
        t2 = time.monotonic()
        nc.start(leader)
        jqtest.diag("restarted %s: healthy in %.2f s"
                    % (nc.name(leader), time.monotonic() - t2))
        assert nc.pid(leader)
    return True


if __name__ == "__main__":
    self_test()
    print("self-test passed")
