"""joinqd under systemd: sd_notify (READY, STATUS, STOPPING, RELOADING),
the watchdog, socket activation, reload on SIGHUP, logging to the journal
and the Prometheus /metrics listener.

The tests play systemd themselves: they open the sockets and hand them to
the daemon as descriptors 3.. with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES,
and listen on a NOTIFY_SOCKET of their own (an AF_UNIX datagram socket in
a temporary directory).  Everything stays on loopback; every wait is
bounded.
"""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jqtest

TIMEOUT = jqtest.TIMEOUT

# Runs in the child between fork and the daemon: moves the descriptors the
# test passes to 3, 4, ... (as systemd does), sets LISTEN_PID and
# WATCHDOG_PID to its own pid when asked ("self": exec keeps the pid), and
# execs the daemon.
LAUNCHER = r'''
import fcntl, os, sys
src = [int(x) for x in os.environ.pop("JQTEST_FDS", "").split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 200) for fd in src]
for fd in src:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
for key in ("LISTEN_PID", "WATCHDOG_PID"):
    if os.environ.get(key) == "self":
        os.environ[key] = str(os.getpid())
os.execvp(sys.argv[1], sys.argv[1:])
'''

# Variables a test runner started by systemd could hand down to us.
SYSTEMD_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")

PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} "
                        r"(error|warning|info|debug): \S")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
STATUS_RE = re.compile(r"^STATUS=\d+ queues?, \d+ unfinished tasks?, "
                       r"\d+ clients?$")
ERROR_CODES = ("bad_json", "bad_utf8", "frame_too_large", "bad_request",
               "unknown_op", "bad_queue", "too_many_queues", "full", "empty",
               "timeout", "unknown_task", "too_large", "unauthorized",
               "too_many_connections", "shutting_down", "unavailable",
               "conflict")


def status_text(queues, unfinished, clients):
    """The STATUS= line the daemon owes for these figures."""
    def n(count, word):
        return "%d %s%s" % (count, word, "" if count == 1 else "s")
    return "STATUS=%s, %s, %s" % (n(queues, "queue"),
                                  n(unfinished, "unfinished task"),
                                  n(clients, "client"))


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
        finally:
            s.close()
        return True
    except OSError:
        return False


def free_port(host="127.0.0.1"):
    """A port free for TCP and UDP on host (free when we looked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        t = socket.socket(family, socket.SOCK_STREAM)
        u = socket.socket(family, socket.SOCK_DGRAM)
        try:
            t.bind((host, 0))
            port = t.getsockname()[1]
            u.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def stream_listener():
    """A listening TCP socket on a free loopback port, and the port: a
    socket unit's ListenStream= of its own (metrics, tls)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


def listeners(host="127.0.0.1", port=0):
    """A listening TCP socket and a UDP socket on the same port, as a
    systemd .socket unit with ListenStream= and ListenDatagram= holds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        t = socket.socket(family, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((host, port))
        p = t.getsockname()[1]
        u = socket.socket(family, socket.SOCK_DGRAM)
        try:
            u.bind((host, p))
        except OSError:
            t.close()
            u.close()
            if port:
                raise
            continue
        t.listen(128)
        return t, u, p
    raise RuntimeError("no port free for TCP and UDP")


def port_is_free(port, host="127.0.0.1"):
    """Nobody listens on TCP port nor holds UDP port on host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(TIMEOUT)
    try:
        c.connect((host, port))
        return False
    except ConnectionRefusedError:
        pass
    finally:
        c.close()
    u = socket.socket(family, socket.SOCK_DGRAM)
    try:
        u.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        u.close()


def inet_sockets(pid):
    """The daemon's TCP and UDP sockets: [(proto, local port, state,
    inode)], from /proc.  A listening TCP socket has state "0A"."""
    inodes = set()
    fddir = "/proc/%d/fd" % pid
    for fd in os.listdir(fddir):
        try:
            m = re.match(r"socket:\[(\d+)\]$", os.readlink(os.path.join(fddir,
                                                                      fd)))
        except OSError:
            continue
        if m:
            inodes.add(int(m.group(1)))
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            f = open("/proc/%d/net/%s" % (pid, proto))
        except OSError:
            continue
        with f:
            next(f)
            for line in f:
                parts = line.split()
                inode = int(parts[9])
                if inode in inodes:
                    found.append((proto, int(parts[1].rsplit(":", 1)[1], 16),
                                  parts[3], inode))
    return found


def served_sockets(pid):
    """The inodes of the daemon's listening TCP sockets and UDP sockets."""
    return {inode for proto, _, state, inode in inet_sockets(pid)
            if proto.startswith("udp") or state == "0A"}


def inode_of(sock):
    return os.fstat(sock.fileno()).st_ino


class SdDaemon(jqtest.Daemon):
    """A joinqd started as systemd starts one.

    listen_fds: [(socket or file, name)], passed as descriptors 3.. with
    LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the daemon's own pid unless
    env says otherwise).  notify: a NOTIFY_SOCKET of our own, d.notify.
    journal: stderr "is the journal" (JOURNAL_STREAM names its dev:ino).
    bind: add "-p 0 -b HOST" (off when the config names port and bind).
    log_level: the --log-level flag, or None for none.  env: extra
    variables (None removes one); "self" as LISTEN_PID or WATCHDOG_PID is
    the daemon's pid."""

    def __init__(self, *args, config=None, env=None, host="127.0.0.1",
                 listen_fds=None, notify=True, journal=False, bind=True,
                 log_level="debug"):
        super().__init__(*args, config=config, env=env, host=host)
        self.listen_fds = listen_fds
        self.want_notify = notify
        self.journal = journal
        self.bind = bind
        self.log_level = log_level
        self.notify = None

    def launch(self):
        """Starts the process without waiting for anything."""
        argv = list(jqtest.WRAPPER) + [jqtest.JOINQD]
        if self.bind:
            argv += ["-p", "0", "-b", self.host]
        if self.log_level:
            argv += ["--log-level", self.log_level]
        if self.config is not None:
            self.write_config(self.config)
            argv += ["-c", self.path("joinqd.conf")]
        argv += self.args
        env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
        self.errfile = open(self.path("stderr"), "w+")
        if self.journal:
            st = os.fstat(self.errfile.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        if self.want_notify:
            self.notify = jqtest.NotifySocket(self.path("notify"))
            env["NOTIFY_SOCKET"] = self.notify.path
        fds = []
        if self.listen_fds is not None:
            fds = [x if isinstance(x, int) else x.fileno()
                   for x, _ in self.listen_fds]
            env["LISTEN_PID"] = "self"
            env["LISTEN_FDS"] = str(len(fds))
            env["LISTEN_FDNAMES"] = ":".join(n for _, n in self.listen_fds)
        env["JQTEST_FDS"] = ",".join(map(str, fds))
        env.update(self.env or {})
        env = {k: v for k, v in env.items() if v is not None}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER] + argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.errfile, env=env, pass_fds=fds)
        return self

    def write_config(self, text):
        with open(self.path("joinqd.conf"), "w") as f:
            f.write(text)

    def start(self):
        self.launch()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.notify:
                ready = self.notify.wait("READY=1", timeout=0.02) is not None
            else:
                ready = jqtest.LISTEN_RE.search(self.log()) is not None
                time.sleep(0.01)
            if ready:
                if not self.read_ports(self.log()):
                    self.proc.kill()
                    raise RuntimeError("READY=1 before the listening line:\n"
                                       + self.log())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("joinqd exited with %d at start:\n%s"
                                   % (self.proc.returncode, self.log()))
        self.proc.kill()
        raise RuntimeError("joinqd did not start:\n" + self.log())

    def wait_exit(self, timeout=TIMEOUT):
        """The exit status of a daemon that must stop by itself."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("joinqd did not exit:\n" + self.log())

    def log_lines(self):
        return [l for l in self.log().splitlines() if l.strip()]

    def reload(self, config=None):
        """Writes config (if given), sends SIGHUP and waits until the
        daemon has logged the outcome ("reloaded" or "...stays").  With a
        NOTIFY_SOCKET, returns the index of its RELOADING=1 line."""
        if config is not None:
            self.write_config(config)
        marks = re.compile(r"reloaded |the running configuration stays")
        before = len(marks.findall(self.log()))
        start = self.notify.count() if self.notify else None
        self.proc.send_signal(signal.SIGHUP)
        if not jqtest.wait_until(lambda: len(marks.findall(self.log())) >
                                 before):
            raise AssertionError("no reload logged:\n" + self.log())
        if self.notify:
            i = self.notify.wait("RELOADING=1", start)
            if i is None:
                raise AssertionError("no RELOADING=1: %r"
                                     % self.notify.lines(start))
            return i
        return None

    def __exit__(self, exc_type, exc, tb):
        try:
            return super().__exit__(exc_type, exc, tb)
        finally:
            if self.notify:
                self.notify.close()

    def close(self):
        """Cleans up a daemon that exited by itself (or kills it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.notify:
            self.notify.close()
        if getattr(self, "errfile", None):
            self.errfile.close()
        self.tmp.cleanup()


def http_get(port, path="/metrics", method="GET", host="127.0.0.1"):
    """(status, headers, body text) of one HTTP request."""
    c = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        c.request(method, path, body=b"x=1" if method == "POST" else None)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


METRICS_RE = re.compile(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")
SAMPLE_RE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')

FAMILY_TYPES = {
    "joinq_queue_items": "gauge",
    "joinq_queue_inflight": "gauge",
    "joinq_queue_delayed": "gauge",
    "joinq_queue_unfinished": "gauge",
    "joinq_queue_maxsize": "gauge",
    "joinq_queue_max_deliveries": "gauge",
    "joinq_queue_puts_total": "counter",
    "joinq_queue_gets_total": "counter",
    "joinq_queue_task_dones_total": "counter",
    "joinq_queue_releases_total": "counter",
    "joinq_queue_redeliveries_total": "counter",
    "joinq_queue_dead_letters_total": "counter",
    "joinq_queue_purged_total": "counter",
    "joinq_protocol_errors_total": "counter",
    "joinq_connections": "gauge",
    "joinq_queues": "gauge",
    "joinq_uptime_seconds": "gauge",
    "joinq_build_info": "gauge",
    "joinq_role": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
# with a journal only: metric family -> its type and the field of stats'
# "journal" it mirrors
JOURNAL_FAMILIES = {
    "joinq_journal_position": ("gauge", "position"),
    "joinq_journal_lag": ("gauge", "lag"),
    "joinq_takeovers_total": ("counter", "takeovers"),
}
# metric family -> the field of qsize/stats it mirrors
QUEUE_FIELDS = {
    "joinq_queue_items": "qsize",
    "joinq_queue_inflight": "inflight",
    "joinq_queue_delayed": "delayed",
    "joinq_queue_unfinished": "unfinished",
    "joinq_queue_maxsize": "maxsize",
    "joinq_queue_max_deliveries": "max_deliveries",
    "joinq_queue_puts_total": "puts",
    "joinq_queue_gets_total": "gets",
    "joinq_queue_task_dones_total": "task_dones",
    "joinq_queue_releases_total": "releases",
    "joinq_queue_redeliveries_total": "redeliveries",
    "joinq_queue_dead_letters_total": "dead_lettered",
    "joinq_queue_purged_total": "purged",
}


class Scrape:
    """A parsed /metrics page: families {name: {"help", "type"}} and
    samples {(name, frozenset(labels.items())): value}."""

    def __init__(self, test, text):
        self.families = {}
        self.samples = {}
        test.assertTrue(text.endswith("\n"), "the page must end with LF")
        for n, line in enumerate(text.split("\n")[:-1], 1):
            where = "line %d: %r" % (n, line)
            if line.startswith("# HELP "):
                name, _, help_text = line[7:].partition(" ")
                fam = self.families.setdefault(name, {})
                test.assertNotIn("help", fam, "a second HELP, " + where)
                test.assertNotIn("samples", fam, "HELP after samples, "
                                 + where)
                test.assertTrue(help_text.strip(), "an empty HELP, " + where)
                fam["help"] = help_text
            elif line.startswith("# TYPE "):
                name, _, typ = line[7:].partition(" ")
                fam = self.families.setdefault(name, {})
                test.assertNotIn("type", fam, "a second TYPE, " + where)
                test.assertNotIn("samples", fam, "TYPE after samples, "
                                 + where)
                test.assertIn(typ, ("counter", "gauge", "histogram",
                                    "summary", "untyped"), where)
                fam["type"] = typ
            elif line.startswith("#"):
                continue
            else:
                m = SAMPLE_RE.match(line)
                test.assertIsNotNone(m, "not a sample, " + where)
                name, labeltext, value = m.groups()
                test.assertIn(name, self.families,
                              "a sample of no declared family, " + where)
                fam = self.families[name]
                test.assertIn("type", fam, "a sample before its TYPE, "
                              + where)
                fam["samples"] = True
                labels = {}
                if labeltext:
                    rest = labeltext
                    for lm in LABEL_RE.finditer(labeltext):
                        labels[lm.group(1)] = lm.group(2)
                        rest = rest.replace(lm.group(0), "", 1)
                    test.assertEqual(rest, "", "bad labels, " + where)
                key = (name, frozenset(labels.items()))
                test.assertNotIn(key, self.samples, "a repeated series, "
                                 + where)
                self.samples[key] = float(value)

    def value(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))

    def series(self, name):
        """{frozenset(labels): value} of one family."""
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}


class MetricsMixin:
    def scrape(self, port):
        status, headers, body = http_get(port)
        self.assertEqual(status, 200, body)
        ctype = {k.lower(): v for k, v in headers.items()}.get("content-type",
                                                               "")
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        return Scrape(self, body)

    def metrics_port(self, d):
        m = METRICS_RE.search(d.log())
        self.assertIsNotNone(m, "no metrics log line:\n" + d.log())
        return int(m.group(1))


# ---------------------------------------------------------------------------


class Notify(jqtest.TestCase):
    def test_ready_after_listeners_serve_then_status_and_stopping(self):
        with SdDaemon() as d:
            # start() returned as READY=1 arrived: both listeners serve now
            self.assertOk(d.udp().request({"op": "ping"}))
            self.assertOk(d.request({"op": "ping"}))
            lines = d.notify.lines()
            i = lines.index("READY=1")
            self.assertNotIn("READY=1", lines[i + 1:])
            # the first STATUS follows READY=1
            j = d.notify.wait(lambda l: l.startswith("STATUS="), i)
            self.assertIsNotNone(j)
            self.assertEqual(d.notify.lines()[j], status_text(0, 0, 0))

            # 1 queue, 1 task, 1 client: the periodic STATUS (every 5 s)
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "queue": "a", "item": 1}))
            mark = d.notify.count()
            want = status_text(1, 1, 1)
            self.assertIsNotNone(d.notify.wait(want, mark,
                                                 timeout=6 * jqtest.SLOW),
                                 "no %r within 6 s: %r"
                                 % (want, d.notify.lines(mark)))
            for line in d.notify.lines():
                if line.startswith("STATUS="):
                    self.assertRegex(line, STATUS_RE)

            # plural: 2 queues, 3 unfinished (one of them in flight),
            # 2 clients; a reload says STATUS at once
            c2 = d.tcp()
            for n in range(2):
                self.assertOk(c2.request({"op": "put", "queue": "b",
                                          "item": n}))
            self.assertOk(c2.request({"op": "get", "queue": "b"}))
            r = d.reload()
            want = status_text(2, 3, 2)
            self.assertIsNotNone(d.notify.wait(want, r),
                                 "no %r after the reload: %r"
                                 % (want, d.notify.lines(r)))

            c.close()
            c2.close()
            mark = d.notify.count()
            d.proc.send_signal(signal.SIGTERM)
            self.assertEqual(d.wait_exit(), 0, d.log())
            self.assertIsNotNone(d.notify.wait("STOPPING=1", mark),
                                 d.notify.lines(mark))
            self.assertNotIn("READY=1", d.notify.lines(mark))


class Watchdog(jqtest.TestCase):
    def test_pings_at_half_the_interval_only_when_asked(self):
        cases = {
            "usec": {"WATCHDOG_USEC": "400000"},
            "usec+own pid": {"WATCHDOG_USEC": "400000",
                             "WATCHDOG_PID": "self"},
            "no usec": {},
            "usec+other pid": {"WATCHDOG_USEC": "400000",
                               "WATCHDOG_PID": str(os.getpid())},
        }
        daemons = {name: SdDaemon(env=env) for name, env in cases.items()}
        try:
            for d in daemons.values():
                d.launch()
            for d in daemons.values():
                self.assertIsNotNone(d.notify.wait("READY=1"), d.log())
            t0 = time.monotonic()
            time.sleep(1.5)
            t1 = time.monotonic()
            for name, d in daemons.items():
                with self.subTest(case=name):
                    pings = d.notify.times_of("WATCHDOG=1", t0, t1)
                    lines = d.notify.lines()
                    if name in ("usec", "usec+own pid"):
                        self.assertTrue(5 <= len(pings) <= 10,
                                        "%d pings in 1.5 s" % len(pings))
                        # the first one at once: before the first STATUS
                        first = next(i for i, l in enumerate(lines)
                                     if l.startswith("STATUS="))
                        self.assertIn("WATCHDOG=1", lines[:first], lines)
                        self.assertIn("watchdog: pinging systemd every "
                                      "0.200 s", d.log())
                    else:
                        self.assertNotIn("WATCHDOG=1", lines)
                        self.assertNotIn("watchdog", d.log())
            for d in daemons.values():
                d.proc.send_signal(signal.SIGTERM)
            for name, d in daemons.items():
                self.assertEqual(d.wait_exit(), 0, d.log())
        finally:
            for d in daemons.values():
                d.close()


class SocketActivation(MetricsMixin, jqtest.TestCase):
    def test_tcp_and_udp_on_one_port_and_nothing_bound(self):
        t, u, port = listeners()
        other = free_port()
        try:
            with SdDaemon("-p", str(other), "-b", "127.0.0.1", bind=False,
                          listen_fds=[(t, "joinq"), (u, "joinq")]) as d:
                self.assertEqual(d.port, port)
                # served right after READY=1: TCP and UDP
                self.assertOk(d.udp().request({"op": "ping"}))
                c = d.tcp()
                self.assertOk(c.request({"op": "ping"}))
                # a put over UDP, the get over TCP
                r = d.udp().request({"op": "put", "queue": "sa",
                                     "item": {"via": "udp"}})
                self.assertOk(r)
                g = c.request({"op": "get", "queue": "sa", "block": False})
                self.assertOk(g)
                self.assertEqual(g["item"], {"via": "udp"})
                self.assertEqual(g["task"], r["task"])
                self.assertOk(c.request({"op": "task_done",
                                         "task": g["task"]}))
                log = d.log()
                self.assertIn("socket-activated: 2 sockets from systemd; "
                              "binding nothing", log)
                self.assertIn("listening on 127.0.0.1:%d (TCP and UDP)" % port,
                              log)
                # -p/-b were ignored: nothing on the other port, and the
                # daemon serves exactly the sockets we passed
                self.assertTrue(port_is_free(other),
                                "something serves port %d" % other)
                self.assertEqual(served_sockets(d.proc.pid),
                                 {inode_of(t), inode_of(u)})
        finally:
            t.close()
            u.close()

    def test_several_sockets_of_each_kind(self):
        socks = []
        addrs = []      # (host, port) served over TCP and UDP
        try:
            for host in ["127.0.0.1", "127.0.0.1"] + \
                    (["::1"] if have_ipv6() else []):
                t, u, port = listeners(host)
                socks += [t, u]
                addrs.append((host, port))
            # streams first, then datagrams, as a .socket unit may order them
            fds = [(s, "joinq") for s in socks if s.type == socket.SOCK_STREAM]
            fds += [(s, "joinq") for s in socks if s.type == socket.SOCK_DGRAM]
            with SdDaemon(bind=False, listen_fds=fds) as d:
                for host, port in addrs:
                    with self.subTest(host=host, port=port):
                        c = jqtest.Conn(host, port)
                        self.assertOk(c.request({"op": "ping"}))
                        self.assertOk(c.request({"op": "put", "queue": "m",
                                                 "item": [host, port]}))
                        c.close()
                        u = jqtest.UdpConn(host, port)
                        self.assertOk(u.request({"op": "ping"}))
                        g = u.request({"op": "get", "queue": "m",
                                       "block": False})
                        self.assertOk(g)
                        self.assertEqual(g["item"], [host, port])
                        self.assertOk(u.request({"op": "task_done",
                                                 "task": g["task"]}))
                        u.close()
                self.assertIn("socket-activated: %d sockets from systemd; "
                              "binding nothing" % len(socks), d.log())
                self.assertEqual(served_sockets(d.proc.pid),
                                 {inode_of(s) for s in socks})
        finally:
            for s in socks:
                s.close()

    def test_socket_named_metrics_serves_metrics(self):
        t, u, port = listeners()
        m, mport = stream_listener()
        try:
            with SdDaemon(bind=False, listen_fds=[(t, "joinq"), (m, "metrics"),
                                                  (u, "joinq")]) as d:
                self.assertOk(d.request({"op": "put", "queue": "x",
                                         "item": 1}))
                s = self.scrape(mport)
                self.assertEqual(s.value("joinq_queue_items", queue="x"), 1)
                self.assertEqual(s.value("joinq_queues"), 1)
                # the metrics socket is not a queue listener
                c = socket.create_connection(("127.0.0.1", mport), TIMEOUT)
                c.sendall(b'{"op":"ping"}\n')
                c.settimeout(TIMEOUT)
                reply = c.recv(4096)
                c.close()
                self.assertNotIn(b'"ok":true', reply)
                self.assertIn("metrics: serving /metrics on the socket from "
                              "systemd", d.log())
                self.assertEqual(served_sockets(d.proc.pid),
                                 {inode_of(t), inode_of(u), inode_of(m)})
        finally:
            for s in (t, u, m):
                s.close()

    def test_socket_named_tls_is_a_tls_listener(self):
        """A stream socket named "tls" serves TCP inside TLS (issue 14),
        with tls_cert_file and tls_key_file and no tls_port; the others
        stay plain."""
        import tlscerts
        certs = tlscerts.shared()
        t, u, port = listeners()
        s, sport = stream_listener()
        try:
            with SdDaemon("--tls-cert-file", certs.server_cert,
                          "--tls-key-file", certs.server_key, bind=False,
                          listen_fds=[(t, "joinq"), (s, "tls"),
                                      (u, "joinq")]) as d:
                self.assertEqual(d.port, port)
                self.assertEqual(d.tls_port, sport)
                c = jqtest.TlsConn("127.0.0.1", sport,
                                   jqtest.tls_context(certs.ca))
                self.assertOk(c.request({"op": "put", "item": 1}))
                c.close()
                self.assertEqual(d.qsize()["qsize"], 1)
                self.assertEqual(served_sockets(d.proc.pid),
                                 {inode_of(t), inode_of(u), inode_of(s)})
            # without a certificate, a "tls" socket is a start-up error
            with self.assertRaises(RuntimeError) as e:
                SdDaemon(bind=False, listen_fds=[(t, "joinq"), (s, "tls")]
                         ).start()
            self.assertIn("TLS needs tls_cert_file and tls_key_file",
                          str(e.exception))
        finally:
            for x in (t, u, s):
                x.close()

    def test_bad_descriptor_exits_1(self):
        t, u, port = listeners()
        regular = open(__file__, "rb")
        idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        mt = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        mt.bind(("127.0.0.1", 0))
        mt.listen(4)
        cases = [
            ("a regular file", [(regular, "joinq")], {}, "descriptor 3"),
            ("a socket that does not listen", [(idle, "joinq")], {},
             "descriptor 3"),
            ("a good socket, then a file", [(t, "joinq"), (regular, "joinq")],
             {}, "descriptor 4"),
            ("LISTEN_FDS counts a descriptor not passed", [(u, "joinq")],
             {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "joinq:joinq"},
             "socket activation: "),
            ("LISTEN_FDNAMES does not match LISTEN_FDS", [(u, "joinq")],
             {"LISTEN_FDNAMES": "joinq:joinq"}, "socket activation: "),
            ("only a metrics socket", [(mt, "metrics")], {},
             "no socket for queues"),
        ]
        try:
            for name, fds, env, message in cases:
                with self.subTest(case=name):
                    d = SdDaemon(bind=False, listen_fds=fds, env=env)
                    try:
                        d.launch()
                        rc = d.wait_exit()
                        log = d.log()
                        self.assertEqual(rc, 1, log)
                        self.assertIn(message, log)
                        self.assertIn("socket activation", log)
                        self.assertNotIn("listening on", log)
                        time.sleep(0.05)   # the notify thread's last read
                        self.assertNotIn("READY=1", d.notify.lines())
                    finally:
                        d.close()
        finally:
            for s in (t, u, idle, regular, mt):
                s.close()

    def test_without_fdnames_and_datagrams_only(self):
        t, u, port = listeners()
        try:
            # an older systemd sets no LISTEN_FDNAMES
            with SdDaemon(bind=False, listen_fds=[(u, ""), (t, "")],
                          env={"LISTEN_FDNAMES": None}) as d:
                self.assertOk(d.request({"op": "ping"}))
                self.assertOk(d.udp().request({"op": "ping"}))
                self.assertIn("socket-activated: 2 sockets", d.log())
            # UDP alone is a daemon too
            with SdDaemon(bind=False, listen_fds=[(u, "joinq")]) as d:
                r = d.udp().request({"op": "put", "item": "udp only"})
                self.assertOk(r)
                self.assertIn("socket-activated: 1 socket from systemd", d.log())
                self.assertIn("127.0.0.1:%d (UDP)" % port, d.log())
        finally:
            t.close()
            u.close()

    def test_listen_pid_of_another_process_is_ignored(self):
        t, u, port = listeners()
        try:
            with SdDaemon(listen_fds=[(t, "joinq"), (u, "joinq")],
                          env={"LISTEN_PID": str(os.getpid())}) as d:
                self.assertNotEqual(d.port, port)
                self.assertNotIn("socket-activated", d.log())
                self.assertOk(d.request({"op": "ping"}))
        finally:
            t.close()
            u.close()


class Reload(jqtest.TestCase):
    def test_reloading_then_ready_with_notify_socket(self):
        with SdDaemon(config="default_maxsize = 1\n") as d:
            self.assertQsize(d.qsize(), maxsize=1)
            i = d.reload("default_maxsize = 2\n")
            j = d.notify.wait("READY=1", i + 1)
            self.assertIsNotNone(j, d.notify.lines(i))
            self.assertIsNotNone(d.notify.wait(
                lambda l: l.startswith("STATUS="), j), d.notify.lines(i))
            self.assertQsize(d.qsize(), maxsize=2)
            # a reload that fails still ends with READY=1
            i = d.reload("default_maxsize = many\n")
            self.assertIsNotNone(d.notify.wait("READY=1", i + 1),
                                 d.notify.lines(i))
            self.assertQsize(d.qsize(), maxsize=2)
            self.assertIn("the running configuration stays", d.log())

    def test_reload_without_notify_socket(self):
        with SdDaemon(notify=False, config="default_maxsize = 1\n") as d:
            d.reload("default_maxsize = 3\n")
            self.assertIn("reloaded %s" % d.path("joinqd.conf"), d.log())
            self.assertQsize(d.qsize(), maxsize=3)

    def test_reload_without_config_file(self):
        with SdDaemon("--default-maxsize", "2", notify=False) as d:
            d.reload()
            self.assertIn("reloaded the settings (no config file)", d.log())
            self.assertQsize(d.qsize(), maxsize=2)

    def test_default_maxsize_shrinks_and_grows(self):
        with SdDaemon(notify=False, config="default_maxsize = 2\n") as d:
            c = d.tcp()
            for n in range(2):
                self.assertOk(c.request({"op": "put", "item": n}))
            self.assertError(c.request({"op": "put", "item": 2,
                                        "block": False}), "full")
            d.reload("default_maxsize = 1\n")
            self.assertQsize(d.qsize(), qsize=2, maxsize=1, full=True)
            g = c.request({"op": "get"})
            self.assertOk(g)
            self.assertOk(c.request({"op": "task_done", "task": g["task"]}))
            # 1 item, maxsize 1: still full
            self.assertError(c.request({"op": "put", "item": 3,
                                        "block": False}), "full")
            blocked = d.tcp()
            blocked.send({"op": "put", "item": "waiting", "id": "b"})
            self.assertTrue(blocked.nothing_for(0.3))
            # growing maxsize admits the blocked put at once
            d.reload("default_maxsize = 3\n")
            r = blocked.recv()
            self.assertOk(r)
            self.assertEqual(r["id"], "b")
            self.assertQsize(d.qsize(), qsize=2, maxsize=3)
            self.assertOk(c.request({"op": "put", "item": 4, "block": False}))
            self.assertError(c.request({"op": "put", "item": 5,
                                        "block": False}), "full")
            # and 0 is unbounded again
            d.reload("")
            self.assertQsize(d.qsize(), maxsize=0)
            self.assertOk(c.request({"op": "put", "item": 6, "block": False}))

    def test_queue_maxsize_section(self):
        with SdDaemon(notify=False,
                      config="[queue small]\nmaxsize = 1\n") as d:
            c = d.tcp()
            put = {"op": "put", "queue": "small", "item": 1, "block": False}
            self.assertOk(c.request(put))
            self.assertError(c.request(put), "full")
            self.assertOk(c.request({"op": "put", "queue": "big", "item": 1}))
            blocked = d.tcp()
            blocked.send({"op": "put", "queue": "small", "item": 2})
            self.assertTrue(blocked.nothing_for(0.3))
            d.reload("[queue small]\nmaxsize = 3\n[queue big]\nmaxsize = 1\n")
            self.assertOk(blocked.recv())
            self.assertQsize(d.qsize("small"), qsize=2, maxsize=3)
            self.assertQsize(d.qsize("big"), qsize=1, maxsize=1)
            self.assertOk(c.request(put))
            self.assertError(c.request(put), "full")
            self.assertError(c.request({"op": "put", "queue": "big",
                                        "item": 2, "block": False}), "full")
            # without its section a queue takes default_maxsize
            d.reload("default_maxsize = 5\n")
            self.assertQsize(d.qsize("small"), maxsize=5)
            self.assertQsize(d.qsize("big"), maxsize=5)

    def test_the_file_over_declared_settings(self):
        # PROTOCOL.md, declare: "Settings given in the daemon's
        # configuration file for that queue are never changed by
        # declare"; a reload applies the file again over them, and a
        # setting the file drops falls back to the declared one.
        with SdDaemon(notify=False, config="default_maxsize = 9\n") as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "declare", "queue": "q",
                                     "maxsize": 2, "max_deliveries": 3}))
            d.reload("default_maxsize = 9\n[queue q]\nmaxsize = 5\n")
            q = d.request({"op": "stats"})["queues"]["q"]
            self.assertEqual((q["maxsize"], q["max_deliveries"]), (5, 3))
            self.assertError(c.request({"op": "declare", "queue": "q",
                                        "maxsize": 2}), "conflict")
            d.reload("default_maxsize = 9\n")
            self.assertQsize(d.qsize("q"), maxsize=2)
            self.assertQsize(d.qsize("other"), maxsize=9)

    def test_max_deliveries_and_dead_letter(self):
        with SdDaemon(notify=False, config="") as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "queue": "jobs",
                                     "item": "j"}))
            for n in (1, 2):
                g = c.request({"op": "get", "queue": "jobs"})
                self.assertEqual(g["deliveries"], n, g)
                self.assertOk(c.request({"op": "release", "task": g["task"]}))
            self.assertQsize(d.qsize("jobs"), qsize=1, dead_lettered=0)
            d.reload("[queue jobs]\nmax_deliveries = 2\n"
                     "dead_letter = graveyard\n")
            g = c.request({"op": "get", "queue": "jobs"})
            self.assertEqual(g["deliveries"], 3, g)
            self.assertOk(c.request({"op": "release", "task": g["task"]}))
            self.assertQsize(d.qsize("jobs"), qsize=0, unfinished=0,
                             dead_lettered=1)
            self.assertQsize(d.qsize("graveyard"), qsize=1)
            self.assertEqual(c.request({"op": "get", "queue": "graveyard"})
                             ["item"], "j")
            # the daemon-wide default, NAME.dead
            d.reload("max_deliveries = 1\n")
            self.assertOk(c.request({"op": "put", "queue": "other",
                                     "item": "o"}))
            g = c.request({"op": "get", "queue": "other"})
            self.assertOk(c.request({"op": "release", "task": g["task"]}))
            self.assertQsize(d.qsize("other"), qsize=0, dead_lettered=1)
            self.assertQsize(d.qsize("other.dead"), qsize=1)
            # and back to no limit
            d.reload("")
            self.assertOk(c.request({"op": "put", "queue": "other",
                                     "item": "p"}))
            g = c.request({"op": "get", "queue": "other"})
            self.assertOk(c.request({"op": "release", "task": g["task"]}))
            self.assertQsize(d.qsize("other"), qsize=1, dead_lettered=1)

    def test_limits(self):
        with SdDaemon(notify=False, config="max_queues = 2\n") as d:
            c = d.tcp()
            u = d.udp()
            big = {"op": "put", "queue": "a", "item": "x" * 2000}
            with self.subTest(setting="max_queues"):
                self.assertOk(c.request({"op": "put", "queue": "a",
                                         "item": 1}))
                self.assertOk(c.request({"op": "put", "queue": "b",
                                         "item": 1}))
                self.assertError(c.request({"op": "put", "queue": "c",
                                            "item": 1}), "too_many_queues")
                d.reload("max_queues = 3\n")
                self.assertOk(c.request({"op": "put", "queue": "c",
                                         "item": 1}))
                self.assertError(c.request({"op": "put", "queue": "d",
                                            "item": 1}), "too_many_queues")
            with self.subTest(setting="max_frame"):
                self.assertOk(c.request(big))
                d.reload("max_frame = 1k\n")
                # the connection opened before the reload too
                c.send(big)
                self.assertError(c.recv(), "frame_too_large")
                self.assertTrue(c.closed_by_peer())
                c = d.tcp()
                c.send(big)
                self.assertError(c.recv(), "frame_too_large")
                c = d.tcp()
                d.reload("max_frame = 4k\n")
                self.assertOk(c.request(big))
            with self.subTest(setting="max_depth"):
                deep = {"op": "put", "queue": "a", "item": {"k": [1]}}
                self.assertOk(c.request(deep))
                d.reload("max_depth = 2\n")
                self.assertError(c.request(deep), "bad_json")
                self.assertOk(c.request({"op": "put", "queue": "a",
                                         "item": [1]}))
                d.reload("")
                self.assertOk(c.request(deep))
            with self.subTest(setting="udp_max_reply"):
                self.assertOk(c.request({"op": "put", "queue": "u",
                                         "item": "y" * 1000}))
                d.reload("udp_max_reply = 512\n")
                self.assertError(u.request({"op": "get", "queue": "u",
                                            "block": False}), "too_large")
                self.assertQsize(d.qsize("u"), qsize=1)
                d.reload("udp_max_reply = 2k\n")
                g = u.request({"op": "get", "queue": "u", "block": False})
                self.assertOk(g)
                self.assertEqual(g["item"], "y" * 1000)
                self.assertOk(u.request({"op": "task_done",
                                         "task": g["task"]}))
            with self.subTest(setting="udp_lease"):
                self.assertOk(c.request({"op": "put", "queue": "l",
                                         "item": 1}))
                g = u.request({"op": "get", "queue": "l"})
                self.assertOk(g)
                time.sleep(0.5)    # the default lease (30 s) holds it
                self.assertQsize(d.qsize("l"), qsize=0, inflight=1)
                self.assertOk(u.request({"op": "release", "task": g["task"]}))
                d.reload("udp_lease = 0.2\n")
                g = u.request({"op": "get", "queue": "l"})
                self.assertEqual(g["deliveries"], 2, g)
                self.assertTrue(jqtest.wait_until(
                    lambda: d.qsize("l")["qsize"] == 1, timeout=TIMEOUT),
                    "the 0.2 s lease did not run out")

    def test_max_connections(self):
        with SdDaemon(notify=False, config="") as d:
            a = d.tcp()
            self.assertOk(a.request({"op": "ping"}))
            d.reload("max_connections = 2\n")
            b = d.tcp()
            self.assertOk(b.request({"op": "ping"}))
            c = d.tcp()
            self.assertError(c.recv(), "too_many_connections")
            self.assertTrue(c.closed_by_peer())
            d.reload("max_connections = 3\n")
            c = d.tcp()
            self.assertOk(c.request({"op": "ping"}))
            e = d.tcp()
            self.assertError(e.recv(), "too_many_connections")
            # shrinking below the clients open keeps them, turns new away
            d.reload("max_connections = 1\n")
            for conn in (a, b, c):
                self.assertOk(conn.request({"op": "ping"}))
            e = d.tcp()
            self.assertError(e.recv(), "too_many_connections")
            for conn in (a, b, c):
                conn.close()

    def test_log_level_info_to_debug_and_back(self):
        with SdDaemon(notify=False, log_level=None,
                      config="log_level = info\n") as d:
            def connect():
                c = d.tcp()
                self.assertOk(c.request({"op": "ping"}))
                return c
            keep = [connect()]
            self.assertNotIn(": connected", d.log())
            d.reload("log_level = debug\n")
            keep.append(connect())
            self.assertTrue(jqtest.wait_until(
                lambda: ": connected" in d.log()), d.log())
            n = d.log().count(": connected")
            d.reload("log_level = info\n")
            keep.append(connect())
            self.assertEqual(d.log().count(": connected"), n)
            for c in keep:
                c.close()

    def test_token_added_changed_removed(self):
        with SdDaemon(notify=False, config="") as d:
            tok = d.file("token", "tok-first\n")
            u = d.udp()
            self.assertOk(d.request({"op": "qsize"}))
            early = d.tcp()     # opened (and "authed") before any token
            self.assertOk(early.request({"op": "auth", "token": "x"}))
            conf = "auth_token_file = %s\n" % tok
            d.reload(conf)
            self.assertError(d.request({"op": "qsize"}), "unauthorized")
            self.assertError(early.request({"op": "qsize"}), "unauthorized")
            self.assertOk(early.request({"op": "auth", "token": "tok-first"}))
            self.assertOk(early.request({"op": "qsize"}))
            self.assertError(u.request({"op": "qsize"}), "unauthorized")
            self.assertOk(d.request({"op": "qsize", "token": "tok-first"}))
            self.assertOk(u.request({"op": "qsize", "token": "tok-first"}))
            self.assertOk(d.request({"op": "ping"}))
            # changed in the file: what the old token opened is closed,
            # so a leaked token stops working on live connections too
            d.file("token", "tok-second\n")
            d.reload()
            self.assertIn("reload: a new token; connected clients must "
                          "authenticate again", d.log())
            self.assertError(early.request({"op": "qsize"}), "unauthorized")
            self.assertOk(early.request({"op": "auth", "token": "tok-second"}))
            self.assertOk(early.request({"op": "qsize"}))
            self.assertError(d.request({"op": "qsize", "token": "tok-first"}),
                             "unauthorized")
            self.assertOk(d.request({"op": "qsize", "token": "tok-second"}))
            self.assertOk(u.request({"op": "qsize", "token": "tok-second"}))
            # an empty token file: the running token stays
            d.file("token", "\n")
            d.reload()
            self.assertIn("reload: auth_token_file %s holds no token; the "
                          "running configuration stays" % tok, d.log())
            self.assertOk(d.request({"op": "qsize", "token": "tok-second"}))
            self.assertError(d.request({"op": "qsize"}), "unauthorized")
            # an unreadable one too
            os.unlink(tok)
            d.reload()
            self.assertRegex(d.log(), r"reload: cannot read auth_token_file "
                             r"%s: .*; the running configuration stays"
                             % re.escape(tok))
            self.assertOk(d.request({"op": "qsize", "token": "tok-second"}))
            # removed from the config: no token at all
            d.reload("")
            self.assertOk(d.request({"op": "qsize"}))
            self.assertOk(u.request({"op": "qsize"}))
            # the token is never logged
            self.assertNotIn("tok-first", d.log())
            self.assertNotIn("tok-second", d.log())

    def test_config_with_an_error_changes_nothing(self):
        good = "default_maxsize = 1\n"
        with SdDaemon(notify=False, config=good) as d:
            conf = d.path("joinqd.conf")
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "item": 1}))
            frame = {"op": "ping", "pad": "z" * 500}
            cases = [
                ("default_maxsize = 5\nmax_frame = 128\nmax_frame = tiny\n",
                 "%s:3: max_frame = tiny: expected" % conf),
                ("default_maxsize = 5\nmax_frame = 128\n[queue a]\n"
                 "bogus = 1\n", "%s:4: bogus = 1: unknown queue setting"
                 % conf),
                ("max_frame = 128\ndefault_maxsize = 5\nnot a setting\n",
                 "%s:3:" % conf),
                ("max_frame = 128\n[server]\nport = 1\n", "%s:3:" % conf),
                ("max_frame = 128\n[queue jobs]\ndead_letter = jobs\n",
                 "%s:3:" % conf),
                (None, "cannot read config file %s" % conf),
            ]
            for text, message in cases:
                with self.subTest(config=text):
                    if text is None:
                        os.unlink(conf)
                        d.reload()
                    else:
                        d.reload(text)
                    last = [l for l in d.log_lines() if "reload" in l][-1]
                    self.assertIn("reload: " + message, last)
                    self.assertTrue(last.endswith(
                        "; the running configuration stays"), last)
                    # behaviour unchanged: maxsize 1, max_frame 1M
                    self.assertError(c.request({"op": "put", "item": 2,
                                                "block": False}), "full")
                    self.assertQsize(d.qsize(), maxsize=1)
                    self.assertOk(c.request(frame))
            # and a good file still reloads
            d.reload("default_maxsize = 2\n")
            self.assertOk(c.request({"op": "put", "item": 2,
                                     "block": False}))

    def test_bind_and_port_change_needs_a_restart(self):
        p1, p2 = free_port(), free_port()
        while p2 == p1:
            p2 = free_port()
        conf = "bind = 127.0.0.1\nport = %d\n" % p1
        warning = "reload: bind and port take effect at the next start"
        with SdDaemon(notify=False, bind=False, config=conf) as d:
            self.assertEqual(d.port, p1)
            d.reload(conf)                    # unchanged: no word about it
            self.assertNotIn(warning, d.log())
            d.reload("bind = 127.0.0.1\nport = %d\n" % p2)
            self.assertEqual(d.log().count(warning), 1)
            self.assertOk(d.request({"op": "ping"}))
            self.assertOk(d.udp().request({"op": "ping"}))
            self.assertTrue(port_is_free(p2))
            d.reload("bind = 127.0.0.1 127.0.0.2\nport = %d\n" % p2)
            self.assertEqual(d.log().count(warning), 2)
            self.assertOk(d.request({"op": "ping"}))
            self.assertTrue(port_is_free(p1, "127.0.0.2"))
            # metrics_listen likewise
            d.reload(conf + "metrics_listen = 127.0.0.1:0\n")
            self.assertIn("reload: metrics_listen takes effect at the next "
                          "start", d.log())
            self.assertIsNone(METRICS_RE.search(d.log()))
            self.assertEqual(len([s for s in inet_sockets(d.proc.pid)
                                  if s[0] == "tcp" and s[2] == "0A"]), 1)

    def test_restart_warning_compares_with_what_is_bound(self):
        """The warning says whether the file's bind, port and
        metrics_listen differ from what the daemon serves, not from the
        file read at the previous reload."""
        p1, p2 = free_port(), free_port()
        while p2 == p1:
            p2 = free_port()
        conf = "bind = 127.0.0.1\nport = %d\n" % p1
        warning = "reload: bind and port take effect at the next start"
        mwarning = "reload: metrics_listen takes effect at the next start"
        with SdDaemon(notify=False, bind=False, config=conf) as d:
            moved = "bind = 127.0.0.1\nport = %d\n" % p2
            d.reload(moved + "metrics_listen = 127.0.0.1:0\n")
            self.assertEqual(d.log().count(warning), 1)
            self.assertEqual(d.log().count(mwarning), 1)
            # reloaded again for another setting: p2 and the metrics
            # listener are still not in effect
            d.reload(moved + "metrics_listen = 127.0.0.1:0\n"
                     "default_maxsize = 3\n")
            with self.subTest("a second reload of the same change"):
                self.assertEqual(d.log().count(warning), 2,
                                 "port %d is still not served" % p2)
                self.assertEqual(d.log().count(mwarning), 2,
                                 "metrics are still not served")
            # back to what is bound: nothing waits for a restart
            n, m = d.log().count(warning), d.log().count(mwarning)
            d.reload(conf)
            with self.subTest("back to the bound settings"):
                self.assertEqual(d.log().count(warning), n,
                                 "port %d is what it serves" % p1)
                self.assertEqual(d.log().count(mwarning), m,
                                 "metrics are off, as the file says")
            self.assertOk(d.request({"op": "ping"}))

    def test_socket_activated_reload_says_nothing_of_bind(self):
        t, u, port = listeners()
        try:
            with SdDaemon(notify=False, bind=False, config="port = 1\n",
                          listen_fds=[(t, "joinq"), (u, "joinq")]) as d:
                d.reload("port = 2\nbind = 127.0.0.2\n")
                self.assertIn("reloaded", d.log())
                self.assertNotIn("bind and port", d.log())
                self.assertOk(d.request({"op": "ping"}))
        finally:
            t.close()
            u.close()

    def test_flags_still_win_after_a_reload(self):
        conf = "default_maxsize = 5\n[queue q]\nmaxsize = 9\n" \
               "[queue r]\nmaxsize = 3\n"
        with SdDaemon("--default-maxsize", "1", "--queue", "q:2",
                      notify=False, config=conf) as d:
            c = d.tcp()
            for name in ("default", "q", "r"):
                self.assertOk(c.request({"op": "put", "queue": name,
                                         "item": 0}))
            sizes = lambda: {n: d.qsize(n)["maxsize"]
                             for n in ("default", "q", "r")}
            self.assertEqual(sizes(), {"default": 1, "q": 2, "r": 3})
            d.reload("default_maxsize = 7\nlog_level = error\n[queue q]\n"
                     "maxsize = 8\n[queue r]\nmaxsize = 4\n")
            self.assertEqual(sizes(), {"default": 1, "q": 2, "r": 4})
            # --log-level debug (the launcher's flag) still wins
            n = d.log().count(": connected")
            self.assertOk(d.request({"op": "ping"}))
            self.assertTrue(jqtest.wait_until(
                lambda: d.log().count(": connected") > n), d.log())


class Logs(jqtest.TestCase):
    def test_journal_lines_have_priority_prefixes(self):
        with SdDaemon(notify=False, journal=True, config="") as d:
            self.assertOk(d.request({"op": "ping"}))
            d.reload("metrics_listen = 127.0.0.1:0\n")     # a warning
            d.reload("max_frame = tiny\n")                 # an error
            self.assertTrue(jqtest.wait_until(
                lambda: "<7>" in d.log()), d.log())
            self.assertEqual(d.stop(), 0)
            lines = d.log_lines()
        lines = [l for l in lines if l]
        for line in lines:
            self.assertRegex(line, r"^<[3467]>\S", line)
            self.assertNotRegex(line, TIMESTAMP)
            self.assertNotRegex(line, r"^<\d>(error|warning|info|debug):")
        self.assertTrue(any(re.match(r"<6>joinqd \S+ listening on ", l)
                            for l in lines), lines)
        self.assertIn("<6>reloaded %s" % d.path("joinqd.conf"), lines)
        self.assertTrue(any(l.startswith("<7>") and l.endswith(": connected")
                            for l in lines), lines)
        self.assertIn("<4>reload: metrics_listen takes effect at the next "
                      "start", lines)
        self.assertTrue(any(l.startswith("<3>reload: ") and
                            "the running configuration stays" in l
                            for l in lines), lines)
        self.assertIn("<6>stopped", lines)

    def test_plain_stderr_lines_have_timestamps(self):
        other = os.stat(__file__)
        for name, env in (("no JOURNAL_STREAM", {}),
                          ("JOURNAL_STREAM of another file",
                           {"JOURNAL_STREAM": "%d:%d" % (other.st_dev,
                                                         other.st_ino)})):
            with self.subTest(case=name):
                with SdDaemon(notify=False, env=env, config="") as d:
                    self.assertOk(d.request({"op": "ping"}))
                    d.reload("metrics_listen = 127.0.0.1:0\n")
                    self.assertEqual(d.stop(), 0)
                    lines = d.log_lines()
                for line in lines:
                    self.assertRegex(line, PLAIN_LINE)
                    self.assertFalse(line.startswith("<"), line)
                levels = {PLAIN_LINE.match(l).group(1) for l in lines}
                self.assertLessEqual({"info", "debug", "warning"}, levels)


class Metrics(MetricsMixin, jqtest.TestCase):
    maxDiff = None
    CONF = "[queue beta]\nmax_deliveries = 1\n[queue alpha]\nmaxsize = 10\n"

    def test_families_and_per_queue_figures(self):
        with SdDaemon("--metrics-listen", "127.0.0.1:0", notify=False,
                      config=self.CONF) as d:
            mport = self.metrics_port(d)
            self.assertNotEqual(mport, 0)
            empty = self.scrape(mport)
            self.check_families(empty)
            self.assertEqual(empty.value("joinq_queues"), 0)
            self.assertEqual(empty.series("joinq_queue_items"), {})

            c = d.tcp()
            req = lambda **r: c.request(r)
            for n in range(5):
                self.assertOk(req(op="put", queue="alpha", item=n))
            g = req(op="get", queue="alpha")
            self.assertOk(req(op="task_done", task=g["task"]))
            g = req(op="get", queue="alpha")
            self.assertOk(req(op="release", task=g["task"]))
            g = req(op="get", queue="alpha")
            self.assertEqual(g["deliveries"], 2)
            self.assertOk(req(op="task_done", task=g["task"]))
            g = req(op="get", queue="alpha")
            self.assertOk(req(op="release", task=g["task"], delay=60))
            self.assertOk(req(op="get", queue="alpha"))       # held
            for n in range(2):
                self.assertOk(req(op="put", queue="beta", item=n))
            g = req(op="get", queue="beta")
            self.assertOk(req(op="release", task=g["task"]))  # dead letter
            self.assertOk(req(op="purge", queue="beta"))      # the other
            # a declared queue, and one deleted: gone from the page
            self.assertOk(req(op="declare", queue="gamma", maxsize=4,
                              max_deliveries=3))
            self.assertOk(req(op="put", queue="gone", item=1))
            self.assertOk(req(op="purge", queue="gone"))
            self.assertOk(req(op="delete", queue="gone"))

            s = self.scrape(mport)
            self.check_families(s)
            stats = req(op="stats")["queues"]
            self.assertEqual(set(stats), {"alpha", "beta", "beta.dead",
                                          "gamma"})
            self.assertEqual(stats["alpha"]["gets"], 5)
            self.assertEqual(stats["alpha"]["redeliveries"], 1)
            self.assertEqual(stats["beta"]["dead_lettered"], 1)
            for family, field in QUEUE_FIELDS.items():
                series = s.series(family)
                self.assertEqual({dict(k)["queue"] for k in series},
                                 set(stats), family)
                for labels, value in series.items():
                    self.assertEqual(set(dict(labels)), {"queue"})
                    q = dict(labels)["queue"]
                    with self.subTest(family=family, queue=q):
                        self.assertEqual(value, stats[q][field])
                        qs = d.qsize(q)
                        if field in qs:
                            self.assertEqual(value, qs[field])
            self.assertEqual(s.value("joinq_queue_delayed", queue="alpha"), 1)
            self.assertEqual(s.value("joinq_queue_inflight", queue="alpha"), 1)
            self.assertEqual(s.value("joinq_queue_maxsize", queue="alpha"),
                             10)
            self.assertEqual(s.value("joinq_queue_maxsize", queue="gamma"), 4)
            self.assertEqual(s.value("joinq_queue_max_deliveries",
                                     queue="gamma"), 3)
            self.assertEqual(s.value("joinq_queue_max_deliveries",
                                     queue="beta"), 1)
            self.assertEqual(s.value("joinq_queue_purged_total",
                                     queue="beta"), 1)
            self.assertEqual(s.value("joinq_queues"), 4)
            self.assertEqual(s.value("joinq_connections"), 1)
            ping = req(op="ping")
            info = s.series("joinq_build_info")
            self.assertEqual(list(info.values()), [1])
            self.assertEqual(dict(next(iter(info))),
                             {"version": ping["version"], "protocol": "1"})
            uptime = s.value("joinq_uptime_seconds")
            start = s.value("process_start_time_seconds")
            self.assertGreaterEqual(uptime, 0)
            self.assertLess(abs(time.time() - uptime - start), 5)
            self.assertGreater(s.value("process_resident_memory_bytes"),
                               1 << 20)
            self.assertGreaterEqual(s.value("process_cpu_seconds_total"), 0)
            fds = len(os.listdir("/proc/%d/fd" % d.proc.pid))
            self.assertLess(abs(s.value("process_open_fds") - fds), 4)
            # no journal: active, and no journal figures
            self.assertEqual({dict(k)["role"]: v for k, v in
                              s.series("joinq_role").items()},
                             {"active": 1, "standby": 0, "starting": 0})
            for family in JOURNAL_FAMILIES:
                self.assertNotIn(family, s.families)

    def test_role_and_journal_figures(self):
        d = SdDaemon("--metrics-listen", "127.0.0.1:0", notify=False)
        d.args += ["--journal", "on", "--state-dir", d.path("state")]
        with d:
            mport = self.metrics_port(d)
            c = d.tcp()
            before = self.scrape(mport)
            self.check_families(before)
            roles = {dict(k)["role"]: v for k, v in
                     before.series("joinq_role").items()}
            self.assertEqual(roles, {"active": 1, "standby": 0,
                                     "starting": 0})
            for family, (typ, _) in JOURNAL_FAMILIES.items():
                with self.subTest(family=family):
                    self.assertEqual(before.families[family].get("type"), typ)
                    self.assertIn("help", before.families[family])
            self.assertOk(c.request({"op": "put", "item": 1}))
            s = self.scrape(mport)
            stats = c.request({"op": "stats"})["journal"]
            for family, (_, field) in JOURNAL_FAMILIES.items():
                with self.subTest(family=family):
                    self.assertEqual(s.value(family), stats[field])
            self.assertGreater(s.value("joinq_journal_position"),
                               before.value("joinq_journal_position"))
            self.assertEqual(s.value("joinq_takeovers_total"), 0)

    def check_families(self, s):
        for name, typ in FAMILY_TYPES.items():
            with self.subTest(family=name):
                self.assertIn(name, s.families)
                self.assertIn("help", s.families[name])
                self.assertEqual(s.families[name].get("type"), typ)
        for name, fam in s.families.items():
            self.assertIn("help", fam, name)
            self.assertIn("type", fam, name)
            if fam["type"] == "counter":
                self.assertTrue(name.endswith("_total"), name)
        codes = {dict(k)["code"] for k in
                 s.series("joinq_protocol_errors_total")}
        self.assertEqual(codes, set(ERROR_CODES))

    def test_protocol_errors_counted_by_code(self):
        token = "sekrit"
        d = SdDaemon("--metrics-listen", "127.0.0.1:0", "--max-frame", "1k",
                     "--udp-max-reply", "512", "--max-connections", "2",
                     "--max-queues", "3", "--queue", "f:1", notify=False)
        d.args += ["--auth-token-file", d.file("token", token + "\n")]
        with d:
            mport = self.metrics_port(d)
            before = self.scrape(mport).series("joinq_protocol_errors_total")
            a = d.tcp()
            self.assertOk(a.request({"op": "auth", "token": token}))
            sends = [
                (b"{x\n", "bad_json"),
                (b'{"op":"\xff"}\n', "bad_utf8"),
                ({"op": "nope"}, "unknown_op"),
                ({"op": "qsize", "queue": "bad name"}, "bad_queue"),
                ({"op": "put"}, "bad_request"),
                ({"op": "get", "queue": "e", "block": False}, "empty"),
                ({"op": "task_done", "task": 999999}, "unknown_task"),
                ({"op": "put", "queue": "f", "item": 1}, None),
                ({"op": "put", "queue": "f", "item": 2, "block": False},
                 "full"),
                ({"op": "put", "queue": "j", "item": 1}, None),
                ({"op": "join", "queue": "j", "timeout": 0}, "timeout"),
                ({"op": "delete", "queue": "j"}, "conflict"),
                ({"op": "put", "queue": "k", "item": 1}, "too_many_queues"),
            ]
            for frame, code in sends:
                r = a.request(frame)
                if code:
                    self.assertError(r, code)
                else:
                    self.assertOk(r)
            a.send({"op": "nope", "noreply": True})     # counted, unanswered
            self.assertOk(a.request({"op": "ping"}))
            u = d.udp()
            self.assertOk(a.request({"op": "put", "queue": "e",
                                     "item": "i" * 600}))
            r = u.request({"op": "get", "queue": "e", "block": False,
                           "token": token, "id": 1})
            self.assertError(r, "too_large")
            self.assertEqual(r["id"], 1)
            # an id too long even for the error: one reply, without the id
            r = u.request({"op": "ping", "id": "i" * 600})
            self.assertError(r, "too_large")
            self.assertNotIn("id", r)
            self.assertTrue(u.nothing_for(0.1))
            b = d.tcp()
            self.assertError(b.request({"op": "qsize"}), "unauthorized")
            b.send_raw(b'{"op":"ping","x":"' + b"x" * 1100 + b'"}\n')
            self.assertError(b.recv(), "frame_too_large")
            self.assertTrue(b.closed_by_peer())
            self.assertTrue(jqtest.wait_until(
                lambda: a.request({"op": "stats"})["connections"] == 1))
            c = d.tcp()
            self.assertOk(c.request({"op": "ping"}))
            e = d.tcp()
            self.assertError(e.recv(), "too_many_connections")
            after = self.scrape(mport).series("joinq_protocol_errors_total")
            want = {code: 0 for code in ERROR_CODES}
            for _, code in sends:
                if code:
                    want[code] += 1
            want["too_large"] += 1
            for code in ("unknown_op", "too_large", "unauthorized",
                         "frame_too_large", "too_many_connections"):
                want[code] += 1
            got = {dict(k)["code"]: int(after[k] - before.get(k, 0))
                   for k in after}
            self.assertEqual(got, want)

    def test_connections_gauge(self):
        with SdDaemon("--metrics-listen", "127.0.0.1:0", notify=False) as d:
            mport = self.metrics_port(d)
            conns = [d.tcp() for _ in range(3)]
            for c in conns:
                self.assertOk(c.request({"op": "ping"}))
            gauge = lambda: self.scrape(mport).value("joinq_connections")
            self.assertEqual(gauge(), 3)
            self.assertEqual(conns[0].request({"op": "stats"})["connections"],
                             3)
            conns.pop().close()
            self.assertTrue(jqtest.wait_until(lambda: gauge() == 2),
                            "joinq_connections %r, not 2" % gauge())
            u = d.udp()
            self.assertOk(u.request({"op": "ping"}))
            self.assertEqual(gauge(), 2)

    def test_other_paths_and_methods(self):
        with SdDaemon("--metrics-listen", "127.0.0.1:0", notify=False) as d:
            mport = self.metrics_port(d)
            for path in ("/", "/metric", "/metrics/x", "/metricsx",
                         "/favicon.ico"):
                with self.subTest(path=path):
                    status, _, _ = http_get(mport, path)
                    self.assertEqual(status, 404)
            for method in ("POST", "PUT", "DELETE"):
                with self.subTest(method=method):
                    status, headers, _ = http_get(mport, method=method)
                    self.assertEqual(status, 405)
            self.assertEqual(http_get(mport)[0], 200)
            self.assertOk(d.request({"op": "ping"}))

    def test_ipv6_metrics_listen(self):
        if not have_ipv6():      # nothing to check on a host without ::1
            return
        with SdDaemon("--metrics-listen", "[::1]:0", notify=False) as d:
            m = re.search(r"metrics: serving http://\[::1\]:(\d+)/metrics",
                          d.log())
            self.assertIsNotNone(m, d.log())
            status, _, body = http_get(int(m.group(1)), host="::1")
            self.assertEqual(status, 200)
            self.assertIn("# TYPE joinq_queues gauge", body)

    def test_off_by_default(self):
        with SdDaemon(notify=False) as d:
            self.assertOk(d.request({"op": "ping"}))
            self.assertNotIn("metrics", d.log())
            listening = [s for s in inet_sockets(d.proc.pid)
                         if s[0].startswith("tcp") and s[2] == "0A"]
            self.assertEqual([s[1] for s in listening], [d.port])

    def test_bad_metrics_listen_exits_2_naming_the_setting(self):
        d = jqtest.Daemon()
        try:
            for value in ("nonsense", "127.0.0.1", "127.0.0.1:99999",
                          ":9477", "[::1:9477", "127.0.0.1:x"):
                with self.subTest(flag=value):
                    p = subprocess.run(
                        jqtest.WRAPPER + [jqtest.JOINQD, "-p", "0", "-b",
                                          "127.0.0.1", "--metrics-listen",
                                          value],
                        capture_output=True, text=True, timeout=TIMEOUT,
                        stdin=subprocess.DEVNULL)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("--metrics-listen", p.stderr)
                with self.subTest(config=value):
                    conf = d.file("m.conf", "port = 0\nmetrics_listen = %s\n"
                                  % value)
                    p = subprocess.run(
                        jqtest.WRAPPER + [jqtest.JOINQD, "-p", "0", "-b",
                                          "127.0.0.1", "-c", conf],
                        capture_output=True, text=True, timeout=TIMEOUT,
                        stdin=subprocess.DEVNULL)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("%s:2: metrics_listen" % conf, p.stderr)
        finally:
            d.tmp.cleanup()


if __name__ == "__main__":
    jqtest.main()
