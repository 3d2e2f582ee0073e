"""jqtest - the harness of joinq's integration tests.

Starts the real joinqd (from $JOINQD) on a free loopback port, gives tests
raw TCP and UDP clients and the real CLI (from $JOINQ), and reports in TAP
so that `make check` counts every case.  Every wait here is bounded.

    import jqtest

    class Ops(jqtest.TestCase):
        def test_ping(self):
            with jqtest.Daemon() as d:
                self.assertTrue(d.tcp().request({"op": "ping"})["ok"])

    if __name__ == "__main__":
        jqtest.main()

$JOINQD_WRAPPER (say "valgrind --error-exitcode=99 --leak-check=full")
runs the daemon under a tool; the daemon must still exit 0 on SIGTERM.
Every time bound is scaled by SLOW (see time_scale): set JOINQ_TIME_SCALE
to choose the factor.

$JOINQ_TEST_JOURNAL=nats with $JOINQ_TEST_NATS=<nats_servers> runs every
Daemon that does not choose a journal itself with journal = nats (a
stream of its own, failover_timeout $JOINQ_TEST_FAILOVER or 1 s) and
waits until it is the active daemon: test_nats_suite.py runs the protocol
files so (issue 12, test 1).  The few tests about the file journal itself
are marked @file_journal_only("why") and are left out then, each named in
a diagnostic line.
"""

import json
import os
import re
import select
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

JOINQD = os.environ.get("JOINQD", "daemon/joinqd")
JOINQ = os.environ.get("JOINQ", "client/joinq")
WRAPPER = shlex.split(os.environ.get("JOINQD_WRAPPER", ""))
# The source tree (make check sets $JOINQ_SRCDIR), and in it the joinq
# Python package's directory, which the Python client's tests import from.
SRCDIR = os.path.abspath(os.environ.get("JOINQ_SRCDIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PYTHON_CLIENT = os.path.join(SRCDIR, "client", "python")


def sanitized(path):
    """True if the program at path was built with AddressSanitizer or UBSan
    (configure --enable-sanitizers).  A libtool wrapper script stands for
    the program libtool keeps in .libs/."""
    head, name = os.path.split(path)
    for candidate in (path, os.path.join(head, ".libs", "lt-" + name),
                      os.path.join(head, ".libs", name)):
        try:
            with open(candidate, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if not data.startswith(b"#!"):
            return b"__asan_init" in data or b"__ubsan_handle_" in data
    return False


def time_scale():
    """The one factor every time bound of the suite is multiplied by: 1 for
    the plain build, 3 for a build with the sanitizers, 10 times that with
    joinqd under a tool such as valgrind ($JOINQD_WRAPPER).  A busy machine
    is a normal machine: the bounds are already generous at 1, and are
    bounds against hangs, never speed tests.  $JOINQ_TIME_SCALE overrides
    it."""
    if os.environ.get("JOINQ_TIME_SCALE"):
        return float(os.environ["JOINQ_TIME_SCALE"])
    scale = 3.0 if sanitized(JOINQD) or sanitized(JOINQ) else 1.0
    return scale * 10 if WRAPPER else scale


# Every bound on a wait, and every daemon duration that a test's bounds
# must stay consistent with, is multiplied by SLOW.
SLOW = time_scale()

# For a daemon whose memory a test measures: AddressSanitizer holds freed
# blocks back (up to 256 MiB) to catch a use after free, which looks like
# growth; with a small quarantine it reuses them as malloc would.
MEASURED_ENV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                ":quarantine_size_mb=1:thread_local_quarantine_size_kb=64"}
TIMEOUT = 10 * SLOW          # seconds any single wait may take
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "==ERROR", "Invalid read", "Invalid write",
                   "definitely lost")

LISTEN_RE = re.compile(r"listening on (\S+):(\d+)")
# The TLS listener in the same line (tls_port): "127.0.0.1:41234 (TLS)".
TLS_LISTEN_RE = re.compile(r"listening on .*?(\S+):(\d+) \(TLS\)")

# journal = nats for every Daemon that does not choose a journal itself.
JOURNAL = os.environ.get("JOINQ_TEST_JOURNAL", "")
NATS_SERVERS = os.environ.get("JOINQ_TEST_NATS", "")
NATS_FAILOVER = os.environ.get("JOINQ_TEST_FAILOVER", "1")
NATS_REPLICAS = os.environ.get("JOINQ_TEST_NATS_REPLICAS", "")
if JOURNAL not in ("", "nats"):
    raise SystemExit("JOINQ_TEST_JOURNAL: expected nats, not %r" % JOURNAL)
if JOURNAL == "nats" and not NATS_SERVERS:
    raise SystemExit("JOINQ_TEST_JOURNAL=nats needs JOINQ_TEST_NATS")
ROLE_TIMEOUT = 15 * SLOW   # a daemon reading its stream and taking over
_streams = [0]


def free_port(host="127.0.0.1"):
    """A free TCP port on host (free when asked: it may be taken later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def hostport(host, port):
    """HOST:PORT as the protocol writes it ("[::1]:7477" for IPv6)."""
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def unique_stream(prefix="jqt"):
    """A JetStream stream name no other daemon of this run uses."""
    _streams[0] += 1
    return "%s%d_%d" % (prefix, os.getpid(), _streams[0])


def nats_args(servers, stream, advertise, failover=None, replicas=None):
    """joinqd's flags for journal = nats (HELPERS.md's settings)."""
    args = ["--journal", "nats", "--nats-servers", servers,
            "--nats-stream", stream, "--failover-timeout",
            str(failover if failover is not None else NATS_FAILOVER),
            "--advertise", advertise]
    replicas = replicas or NATS_REPLICAS
    if replicas:
        args += ["--nats-replicas", str(replicas)]
    return args


def file_journal_only(reason):
    """Marks a test about the file journal itself (its files, a restart
    reading them): with JOINQ_TEST_JOURNAL=nats main() leaves it out,
    naming it and reason in a diagnostic line.  Keep the marked few."""
    def mark(test):
        test.file_journal_only = reason
        return test
    return mark


def encode(obj):
    """A request as one frame: dicts become compact JSON lines."""
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class Conn:
    """A raw TCP client speaking JSON lines."""

    def __init__(self, host, port, timeout=TIMEOUT, rcvbuf=None):
        """rcvbuf fixes the receive buffer (the kernel grows it otherwise,
        to megabytes), so that what the daemon wrote last is not far
        behind what the test reads."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, obj):
        self._sendall(encode(obj))

    def _sendall(self, data):
        self.sock.sendall(data)

    def _recv(self):
        """The next bytes from the daemon; b"" when it closed."""
        return self.sock.recv(65536)

    def _pending(self):
        """True if bytes already received wait to be read (TLS)."""
        return False

    def recv_line(self, timeout=TIMEOUT):
        """The next reply line (bytes, no LF); None if the daemon closed."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply within %.1f s" % timeout)
            self.sock.settimeout(left)
            chunk = self._recv()
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def recv(self, timeout=TIMEOUT):
        line = self.recv_line(timeout)
        if line is None:
            raise ConnectionError("the daemon closed the connection")
        return json.loads(line)

    def request(self, obj, timeout=TIMEOUT):
        self.send(obj)
        return self.recv(timeout)

    def nothing_for(self, seconds):
        """True if no reply arrives within seconds."""
        if b"\n" in self.buf:
            return False
        if not self._pending():
            r, _, _ = select.select([self.sock], [], [], seconds)
            if not r:
                return True
        self.sock.settimeout(TIMEOUT)
        chunk = self._recv()
        self.buf += chunk
        return chunk != b"" and b"\n" not in self.buf

    def closed_by_peer(self, timeout=TIMEOUT):
        """True if the daemon closes the connection (after any replies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self._recv()
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def send_raw(self, data):
        """Sends bytes as they are; False if the daemon reset or closed the
        connection meanwhile (as it may after frame_too_large)."""
        try:
            self._sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def replies_until_close(self, timeout=TIMEOUT):
        """Every reply (decoded) until the daemon closes the connection;
        raises TimeoutError if it does not close within timeout."""
        deadline = time.monotonic() + timeout
        replies = []
        while True:
            try:
                line = self.recv_line(max(0.01, deadline - time.monotonic()))
            except ConnectionResetError:
                return replies
            if line is None:
                return replies
            replies.append(json.loads(line))

    def close(self):
        self.sock.close()


class TlsConn(Conn):
    """A TCP client speaking JSON lines inside TLS (tls_port), with every
    method of Conn.  The TLS session runs over memory BIOs (ssl.SSLObject),
    so that the test holds the socket: shutdown_write() sends close_notify
    and then half-closes TCP, and the replies can still be read.  The
    handshake is done in the constructor; its failure raises ssl.SSLError
    (ssl.SSLCertVerificationError for the server's certificate)."""

    def __init__(self, host, port, context, server_hostname="localhost",
                 timeout=TIMEOUT, rcvbuf=None):
        super().__init__(host, port, timeout, rcvbuf)
        self.close_notify = False   # the daemon ended the session cleanly
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing,
                                    server_hostname=server_hostname)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionError("the daemon closed the connection "
                                          "in the TLS handshake")
            except ssl.SSLError:
                self._flush()      # the alert, as a real client sends it
                raise
        self._flush()

    def _flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _fill(self):
        """Reads ciphertext into the TLS session; False at EOF."""
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def _sendall(self, data):
        self.tls.write(data)
        self._flush()

    def _recv(self):
        while True:
            try:
                data = self.tls.read(65536)
                if not data:       # close_notify
                    self.close_notify = True
                return data
            except ssl.SSLWantReadError:
                if not self._fill():
                    continue    # read() now says how it ended
            except ssl.SSLZeroReturnError:
                self.close_notify = True
                return b""
            except ssl.SSLEOFError:
                return b""

    def _pending(self):
        return self.tls.pending() > 0

    def nothing_for(self, seconds):
        """True if no reply arrives within seconds (TLS records that carry
        no reply, such as session tickets, do not count)."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self.buf:
            if not self._pending():
                left = deadline - time.monotonic()
                r, _, _ = select.select([self.sock], [], [], max(0, left))
                if not r:
                    return True
                if not self._fill():
                    return False
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return False
            if not data:
                return False
            self.buf += data
        return False

    def peer_cert(self):
        """The server's certificate (DER bytes)."""
        return self.tls.getpeercert(True)

    def shutdown_write(self):
        """close_notify, then the TCP half-close; replies still readable."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)


def tls_context(ca=None, cert=None, key=None, verify=True):
    """A client ssl.SSLContext trusting ca, presenting cert and key if
    given; verify=False checks neither the chain nor the name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_args(certs, *more):
    """joinqd's flags for TLS on a free port with certs' (tlscerts.Certs)
    server certificate, then more: d = Daemon(*tls_args(certs))."""
    return ["--tls-port", "0", "--tls-cert-file", certs.server_cert,
            "--tls-key-file", certs.server_key] + list(more)


FAULT_LIB = os.environ.get("JOINQ_FAULT_LIB") or os.path.join(
    os.path.abspath(os.environ.get("JOINQ_BUILDDIR") or os.getcwd()),
    "tests", "faults", ".libs", "libjqfault.so")


def fault_env(**controls):
    """The environment that preloads the fault shim (tests/faults/fault.c);
    controls name its control files (diskfull=PATH, eio=PATH,
    sync_delay=PATH, no_gso=PATH) and narrow the EIO (eio_only=CALL,
    eio_path=SUFFIX, eio_in=parent|child)."""
    if not os.path.exists(FAULT_LIB):
        raise AssertionError("the fault shim %s is not built (make check "
                             "builds it)" % FAULT_LIB)
    env = {"LD_PRELOAD": " ".join(
        x for x in (FAULT_LIB, os.environ.get("LD_PRELOAD", "")) if x)}
    # Preloaded ahead of the ASan runtime, which would refuse to start.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + \
        "verify_asan_link_order=0"
    for key, value in controls.items():
        env["JOINQ_FAULT_" + key.upper()] = value
    return env


UDP_SEGMENT = 103   # linux/udp.h: send a GSO train (a uint16_t size)
UDP_GRO = 104       # linux/udp.h: receive one (an int size)


class UdpConn:
    """A raw UDP client: one request per datagram."""

    def __init__(self, host, port, timeout=TIMEOUT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.addr = (host, port)

    def send(self, obj):
        self.sock.sendto(encode(obj), self.addr)

    def recv(self, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(70000)
        return json.loads(data)

    def recv_raw(self, timeout=TIMEOUT):
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(70000)
        return data

    def request(self, obj, timeout=TIMEOUT):
        self.send(obj)
        return self.recv(timeout)

    def send_train(self, frames):
        """Sends frames (bytes of one size, but for a shorter last one) in
        one send with UDP segmentation offload (UDP_SEGMENT, linux/udp.h):
        the peer sees len(frames) datagrams, or one GRO buffer."""
        self.sock.sendmsg([b"".join(frames)],
                          [(socket.SOL_UDP, UDP_SEGMENT,
                            struct.pack("=H", len(frames[0])))], 0,
                          self.addr)

    def nothing_for(self, seconds):
        r, _, _ = select.select([self.sock], [], [], seconds)
        return not r

    def close(self):
        self.sock.close()


class Daemon:
    """A joinqd of its own for a test: `with Daemon("--default-maxsize", "2")
    as d:`.  config is the text of a config file to pass with -c."""

    def __init__(self, *args, config=None, env=None, host="127.0.0.1",
                 port=0):
        self.args = list(args)
        self.config = config
        self.env = env
        self.host = host
        self.port = None
        self.tls_port = None      # its TLS port, from the start-up line
        self.tls_context = None   # what tls() connects with by default
        self.want_port = port
        self.proc = None
        self.stream = None        # its own stream, when JOURNAL is nats
        self.stderr_lines = []
        self.tmp = tempfile.TemporaryDirectory(prefix="joinq-test-")

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def file(self, name, text):
        """Writes text to name in the daemon's directory and returns the
        path: d.args += ["--auth-token-file", d.file("token", "t\\n")]."""
        path = self.path(name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def chooses_journal(self):
        """True if the test gives this daemon a journal setting itself."""
        return "--journal" in self.args or bool(
            self.config and re.search(r"^\s*journal\s*=", self.config, re.M))

    def start(self):
        nats = JOURNAL == "nats" and not self.chooses_journal()
        if nats and not self.want_port:
            # A port known before the start, for --advertise; kept on a
            # restart, so that the same daemon comes back.
            self.want_port = free_port(self.host)
        argv = WRAPPER + [JOINQD, "-p", str(self.want_port),
                          "--log-level", "debug"]
        if self.config is not None:
            conf = self.path("joinqd.conf")
            with open(conf, "w") as f:
                f.write(self.config)
            argv += ["-c", conf]
        if nats:
            self.stream = self.stream or unique_stream()
            argv += nats_args(NATS_SERVERS, self.stream,
                              hostport(self.host, self.want_port))
        argv += self.args
        if not any(a in ("-b", "--bind") for a in self.args):
            argv += ["-b", self.host]
        env = dict(os.environ)
        env.update(self.env or {})
        self.errfile = open(self.path("stderr"), "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.errfile, env=env)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.read_ports(self.log()):
                if nats:
                    self.wait_role("active")
                    # The pings' connections gone, so that a test of
                    # max_connections counts only its own.
                    wait_until(lambda: self.request({"op": "stats"}).get(
                        "connections", 0) <= 1, TIMEOUT, 0.02)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("joinqd exited with %d at start:\n%s"
                                   % (self.proc.returncode, self.log()))
            time.sleep(0.01)
        self.proc.kill()
        raise RuntimeError("joinqd did not start:\n" + self.log())

    def read_ports(self, log):
        """Sets port and tls_port from the start-up line in log; False if
        the line is not there yet."""
        m = LISTEN_RE.search(log)
        if not m:
            return False
        self.port = int(m.group(2))
        t = TLS_LISTEN_RE.search(log)
        self.tls_port = int(t.group(2)) if t else None
        return True

    def log(self):
        with open(self.path("stderr")) as f:
            return f.read()

    def address(self):
        return hostport(self.host, self.port)

    def role(self, timeout=2):
        """The role its ping names ("active", "standby"), or None when it
        does not answer within timeout (stopped, or closing)."""
        try:
            c = Conn(self.host, self.port, timeout=timeout)
            try:
                return c.request({"op": "ping"}, timeout).get("role")
            finally:
                c.close()
        except (OSError, ValueError):
            return None

    def wait_role(self, role, timeout=ROLE_TIMEOUT):
        """Waits until its ping says role; raises with its log if not."""
        deadline = time.monotonic() + timeout
        while True:
            if self.role() == role:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("joinqd exited with %d waiting to be %s:"
                                   "\n%s" % (self.proc.returncode, role,
                                             self.log()))
            if time.monotonic() > deadline:
                raise RuntimeError("joinqd not %s within %.0f s:\n%s"
                                   % (role, timeout, self.log()))
            time.sleep(0.02)

    def tcp(self, host=None):
        return Conn(host or self.host, self.port)

    def tls(self, context=None, host=None, server_hostname="localhost",
            **kw):
        """A TlsConn to its TLS port, with context (by default
        self.tls_context, which a test sets once)."""
        return TlsConn(host or self.host, self.tls_port,
                       context or self.tls_context, server_hostname, **kw)

    def udp(self, host=None):
        return UdpConn(host or self.host, self.port)

    def request(self, obj):
        """One request on a fresh TCP connection."""
        c = self.tcp()
        try:
            return c.request(obj)
        finally:
            c.close()

    def qsize(self, queue="default"):
        return self.request({"op": "qsize", "queue": queue})

    def cli(self, *args, input=None, timeout=TIMEOUT, udp=False, env=None):
        """Runs the joinq CLI against this daemon; returns CompletedProcess
        with text stdout and stderr."""
        argv = [JOINQ, "-H", self.host, "-p", str(self.port)]
        if udp:
            argv.append("-u")
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run(argv + list(args), input=input, env=e,
                              capture_output=True, text=True, timeout=timeout)

    def cli_start(self, *args, udp=False, env=None, **kw):
        """Starts the CLI without waiting: a Popen with text pipes."""
        argv = [JOINQ, "-H", self.host, "-p", str(self.port)]
        if udp:
            argv.append("-u")
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.Popen(argv + list(args), env=e, text=True,
                                stdin=kw.get("stdin", subprocess.DEVNULL),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stop(self, sig=signal.SIGTERM):
        """Stops the daemon; returns its exit status.  Raises if a sanitizer
        or valgrind reported anything."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("joinqd did not stop on %s:\n%s"
                                     % (sig, self.log()))
        log = self.log()
        for mark in SANITIZER_MARKS:
            if mark in log:
                raise AssertionError("joinqd reported a memory error:\n" + log)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            rc = self.stop()
            if exc_type is None and rc != 0:
                raise AssertionError("joinqd exited with %d:\n%s"
                                     % (rc, self.log()))
        finally:
            self.errfile.close()
            self.tmp.cleanup()
            if self.stream:
                drop_streams(NATS_SERVERS, self.stream)
        return False


def drop_streams(servers, stream):
    """Deletes the streams whose names hold stream (the journal's and any
    it keeps its snapshots in), so that a long run does not pile up raft
    groups on the test cluster.  Best effort: the cluster goes anyway."""
    import natscluster
    try:
        with natscluster.NatsClient(servers.split(",")[0], timeout=5) as c:
            names = c.js("STREAM.NAMES", {"offset": 0}).get("streams") or []
            for name in names:
                if stream in name:
                    c.js("STREAM.DELETE." + name)
    except (OSError, natscluster.NatsError, ValueError):
        pass


class NotifySocket:
    """A NOTIFY_SOCKET of our own.  A thread drains it at once: the daemon's
    sd_notify blocks when the receive queue is full (max_dgram_qlen is
    small), as it would with a systemd that stopped reading."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.items = []          # (monotonic time, "KEY=VALUE")
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self.cond:
                for line in data.decode("utf-8", "replace").split("\n"):
                    if line:
                        self.items.append((now, line))
                self.cond.notify_all()

    def lines(self, start=0):
        with self.cond:
            return [line for _, line in self.items[start:]]

    def count(self):
        with self.cond:
            return len(self.items)

    def wait(self, predicate, start=0, timeout=TIMEOUT):
        """The index of the first line at or after start that satisfies
        predicate (a string: equal to it), or None after timeout."""
        if isinstance(predicate, str):
            want = predicate
            predicate = lambda line: line == want
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.items):
                    if predicate(self.items[i][1]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def times_of(self, line, start, end):
        with self.cond:
            return [t for t, l in self.items if l == line and start <= t < end]

    def close(self):
        self.done = True
        self.thread.join(TIMEOUT)
        self.sock.close()


def readme_blocks(section, level=2):
    """The code blocks (lines indented four spaces) of README.md's section
    "## section" ("### section" with level 3), each as its text with the
    indent taken off, so that a test runs what the README shows."""
    with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^%s %s\n(.*?)(?=^#{1,%d} )" % ("#" * level,
                                                   re.escape(section), level),
                  text, re.M | re.S)
    if not m:
        raise AssertionError("README.md has no section %r" % section)
    blocks = re.findall(r"^\n((?:^    .*\n)(?:^(?:    .*)?\n)*)",
                        m.group(1), re.M)
    return [re.sub(r"^    ", "", b, flags=re.M).strip("\n") + "\n"
            for b in blocks]


def diag(text):
    """A TAP diagnostic line a line of text (the figures a test measured)."""
    for line in text.splitlines():
        sys.stdout.write("# " + line + "\n")
    sys.stdout.flush()


def rss_bytes(pid):
    """The resident memory of process pid, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


def wait_until(predicate, timeout=TIMEOUT, interval=0.01):
    """Polls predicate until it is true; False after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class TestCase(unittest.TestCase):
    """unittest.TestCase with the checks joinq tests keep making."""

    def assertOk(self, reply, msg=None):
        self.assertTrue(reply.get("ok"), msg or reply)

    def assertError(self, reply, code, msg=None):
        self.assertIs(reply.get("ok"), False, msg or reply)
        self.assertEqual(reply.get("error"), code, msg or reply)
        self.assertIsInstance(reply.get("message"), str)
        self.assertTrue(reply["message"], "an error needs a message")

    def assertQsize(self, reply, **expect):
        """A qsize reply: ok, PROTOCOL.md's invariant U = Q + F + D, and
        the fields given (assertQsize(r, qsize=1, delayed=0))."""
        self.assertOk(reply)
        self.assertEqual(reply["unfinished"], reply["qsize"] +
                         reply["inflight"] + reply["delayed"],
                         "U = Q + F + D broken: %r" % reply)
        for key, value in expect.items():
            self.assertEqual(reply[key], value, "%s in %r" % (key, reply))

    def qsize_of(self, d, queue="default"):
        """d.qsize(queue), its reply checked with assertQsize."""
        reply = d.qsize(queue)
        self.assertQsize(reply)
        return reply

    def assertElapsed(self, start, low, high, msg=None):
        """time.monotonic() - start lies within [low, high] seconds (high
        scaled by SLOW)."""
        took = time.monotonic() - start
        self.assertGreaterEqual(took, low, msg or "too early: %.3f s" % took)
        self.assertLessEqual(took, high * SLOW,
                             msg or "too late: %.3f s" % took)


class TapResult(unittest.TestResult):
    """Prints one TAP line per test as it ends."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.n = 0
        self.printed = False      # the current test has its line
        self.sub_failures = []    # of its subTests, for its one line

    def _line(self, ok, test, note=""):
        self.n += 1
        self.printed = True
        self.stream.write("%s %d - %s%s\n" % ("ok" if ok else "not ok", self.n,
                                              test.id(), note))
        self.stream.flush()

    def startTest(self, test):
        super().startTest(test)
        self.printed = False
        self.sub_failures = []

    def addSubTest(self, test, subtest, err):
        # A failed subTest fails its test, which then gets no other call:
        # stopTest prints its one "not ok" line with every subTest failure.
        before = len(self.failures) + len(self.errors)
        super().addSubTest(test, subtest, err)
        if err is not None and len(self.failures) + len(self.errors) > before:
            fails = self.failures if issubclass(err[0],
                                                test.failureException) \
                else self.errors
            self.sub_failures.append("%s\n%s" % (subtest, fails[-1][1]))

    def stopTest(self, test):
        if self.sub_failures:
            if not self.printed:
                self._line(False, test)
            for text in self.sub_failures:
                self._diag(text)
        super().stopTest(test)

    def _diag(self, text):
        for line in text.rstrip().splitlines():
            self.stream.write("# " + line + "\n")

    def addSuccess(self, test):
        super().addSuccess(test)
        self._line(True, test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line(False, test)
        self._diag(self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._line(False, test)
        self._diag(self.errors[-1][1])

    def addSkip(self, test, reason):
        # A skipped test is a defect: it is reported as a failure.
        super().addSkip(test, reason)
        self._line(False, test, " # skipped: " + reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._line(False, test, " # expected failure is not allowed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._line(False, test, " # unexpected success")


def leave_out_file_journal(suite):
    """suite without the tests marked @file_journal_only, each named in a
    diagnostic line with its reason."""
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(leave_out_file_journal(test))
            continue
        method = getattr(test, getattr(test, "_testMethodName", ""), None)
        reason = getattr(method, "file_journal_only", None)
        if reason:
            diag("not run with journal = nats: %s (file journal only: %s)"
                 % (test.id(), reason))
        else:
            kept.addTest(test)
    return kept


def main(select=None):
    """Runs the calling module's tests (or those named in argv) as TAP;
    select, when given, makes the suite to run from the loaded one."""
    # A shell runs a background job with SIGINT ignored, and the programs
    # the tests start would inherit that: they get the default, as from a
    # terminal (test_work.py's Ctrl-C test sends one).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM (a runner's timeout) ends the run through the tests' finally
    # clauses, so that the daemons they started are stopped too.
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(128 + sig))
    loader = unittest.TestLoader()
    module = sys.modules["__main__"]
    if len(sys.argv) > 1:
        suite = loader.loadTestsFromNames(sys.argv[1:], module)
    else:
        suite = loader.loadTestsFromModule(module)
    if select:
        suite = select(suite)
    if JOURNAL == "nats":
        suite = leave_out_file_journal(suite)
    print("1..%d" % suite.countTestCases(), flush=True)
    result = TapResult(sys.stdout)
    suite.run(result)
    sys.exit(0 if result.wasSuccessful() and not result.skipped else 1)
