"""journal = nats with an active joinqd and a standby (issue 12, tests 2-6;
PROTOCOL.md, "Replication"): the active dies, stalls and wakes, the stream's
NATS leader dies, everything restarts, and bad conditions give clear errors.

Each test has a three-node NATS cluster of its own (natscluster.py) and
two joinqd given the same stream, distinct advertise addresses and a
failover_timeout of FAILOVER seconds.  Load comes from raw TCP clients in
threads that follow the active daemon (Client, below) and keep a Ledger of
what was answered; the real joinq CLI (work pool, join) is given both
addresses.  What the tests hold the daemons to:

- every put answered is done or present exactly once afterwards; a put
  whose reply was lost is present at most once;
- a task whose task_done was answered is never delivered again;
- task ids never repeat;
- a daemon that lost the stream answers no change, and becomes a standby.

Every wait is bounded and scaled by jqtest.SLOW; every process is stopped
by its PID; everything stays on loopback.
"""
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time

import jqtest
import natscluster

SLOW = jqtest.SLOW
TIMEOUT = jqtest.TIMEOUT
FAILOVER = 1.0                   # failover_timeout of every daemon here
# The standby must serve within failover_timeout + 2 s (issue 12, test 2).
FAILOVER_BOUND = (FAILOVER + 2) * SLOW
CALL_TIMEOUT = 2 * SLOW          # a request's reply, before it is "lost"
LEASE = 2                        # the consumers' leases, in seconds
# Compaction early: past 4 KiB of stream, twice the live state.
COMPACT = "compact_size = 4096\ncompact_ratio = 2\n"


def clean_env():
    env = dict(os.environ)
    for name in ("JOINQ_HOST", "JOINQ_PORT", "JOINQ_TOKEN", "JOINQ_QUEUE",
                 "NOTIFY_SOCKET"):
        env.pop(name, None)
    return env


def log_tail(d, lines=40):
    try:
        return "\n".join(d.log().splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Ledger:
    """What the clients sent and what was answered, shared by the threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.puts = {}              # item -> task, the put answered
        self.puts_lost = set()      # items whose put got no reply
        self.task_ids = []          # every task id a put answered
        self.deliveries = []        # (monotonic, task, item)
        self.done = {}              # task -> monotonic, task_done answered
        self.done_lost = set()      # tasks whose task_done got no reply
        self.calls = 0
        self.longest = 0.0          # the longest wait for an answered call
        self.errors = []            # replies no rule allows

    def note_call(self, took):
        with self.lock:
            self.calls += 1
            self.longest = max(self.longest, took)


class Client:
    """A raw TCP client given several daemons that follows the active one:
    it connects to a daemon whose ping says "role":"active", moves on when
    a request is refused unavailable (nothing was changed: sent again) and
    reports a request whose reply was lost as None (its outcome unknown)."""

    def __init__(self, daemons, ledger=None, stop_at=None):
        self.addrs = [(d.host, d.port) for d in daemons]
        self.i = 0
        self.conn = None
        self.ledger = ledger
        self.give_up = stop_at      # a monotonic deadline for any call

    def _connect(self):
        deadline = time.monotonic() + 30 * SLOW
        if self.give_up:
            deadline = min(deadline, self.give_up)
        while time.monotonic() < deadline:
            host, port = self.addrs[self.i]
            try:
                c = jqtest.Conn(host, port, timeout=CALL_TIMEOUT)
                try:
                    if c.request({"op": "ping"}, CALL_TIMEOUT).get("role") \
                            == "active":
                        self.conn = c
                        return
                except (OSError, ValueError, ConnectionError, TimeoutError):
                    pass
                c.close()
            except OSError:
                pass
            self.i = (self.i + 1) % len(self.addrs)
            time.sleep(0.02)
        raise TimeoutError("no active daemon among %r" % (self.addrs,))

    def drop(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def call(self, req, timeout=CALL_TIMEOUT):
        """The reply; None when it was lost (connection closed, or no reply
        within timeout).  An unavailable reply is never returned."""
        start = time.monotonic()
        while True:
            if self.conn is None:
                self._connect()
            try:
                reply = self.conn.request(req, timeout)
            except (OSError, ValueError, ConnectionError, TimeoutError):
                self.drop()
                return None
            if reply.get("error") == "unavailable":
                # A standby (or an active that cannot write its journal):
                # nothing changed; try whichever daemon is active.
                self.drop()
                self.i = (self.i + 1) % len(self.addrs)
                time.sleep(0.02)
                continue
            if self.ledger:
                self.ledger.note_call(time.monotonic() - start)
            return reply

    def close(self):
        self.drop()


class Load:
    """Producers and consumers in threads, against whichever daemon is
    active, on queue q: puts of unique items; gets with and without a
    lease; task_done, release and release with a delay.  stop() ends them
    and waits; the ledger holds what was answered."""

    def __init__(self, daemons, queue="q", producers=2, consumers=2,
                 max_puts=3000):
        self.daemons = daemons
        self.queue = queue
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.max_puts = max_puts
        self.failures = []
        self.gaps = []               # per producer, the longest gap
        self.threads = [threading.Thread(target=self._guard,
                                         args=(self._produce, k))
                        for k in range(producers)]
        self.threads += [threading.Thread(target=self._guard,
                                          args=(self._consume, k))
                         for k in range(consumers)]
        for t in self.threads:
            t.daemon = True
            t.start()

    def _guard(self, body, k):
        try:
            body(k)
        except Exception as e:        # reported by stop()
            self.failures.append("%s %d: %r" % (body.__name__, k, e))

    def _produce(self, k):
        led = self.ledger
        c = Client(self.daemons, led)
        last = time.monotonic()
        gap = 0.0
        try:
            for n in range(self.max_puts):
                if self.stopping.is_set():
                    break
                item = "p%d-%d" % (k, n)
                r = c.call({"op": "put", "queue": self.queue, "item": item})
                now = time.monotonic()
                if r is None:
                    with led.lock:
                        led.puts_lost.add(item)
                    continue
                gap = max(gap, now - last)
                last = now
                with led.lock:
                    if r.get("ok"):
                        led.puts[item] = r["task"]
                        led.task_ids.append(r["task"])
                    else:
                        led.errors.append(("put", item, r))
                time.sleep(0.01)   # puts all through the test, not a burst
        finally:
            self.gaps.append(gap)
            c.close()

    def _consume(self, k):
        led = self.ledger
        c = Client(self.daemons, led)
        n = 0
        try:
            while not self.stopping.is_set():
                req = {"op": "get", "queue": self.queue, "timeout": 0.3}
                if k % 2 == 0:
                    req["lease"] = LEASE
                r = c.call(req, CALL_TIMEOUT + 0.3)
                if r is None or not r.get("ok"):
                    if r is not None and r.get("error") not in ("empty",
                                                                "timeout"):
                        led.errors.append(("get", r))
                    continue
                task = r["task"]
                with led.lock:
                    led.deliveries.append((time.monotonic(), task, r["item"]))
                n += 1
                if n % 4 == 0:
                    req = {"op": "release", "task": task}
                    if n % 8 == 0:
                        req["delay"] = 0.5
                    r = c.call(req)
                    # As for task_done below: a lease may run out while a
                    # stalled stream holds the get's reply back.
                    if r is not None and not r.get("ok") and \
                            r.get("error") != "unknown_task":
                        led.errors.append(("release", task, r))
                    continue
                r = c.call({"op": "task_done", "task": task})
                with led.lock:
                    if r is None:
                        led.done_lost.add(task)
                    elif r.get("ok"):
                        led.done[task] = time.monotonic()
                    elif r.get("error") != "unknown_task":
                        led.errors.append(("task_done", task, r))
        finally:
            c.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60 * SLOW)
        alive = [t for t in self.threads if t.is_alive()]
        return self.failures + (["%d load threads did not end" % len(alive)]
                                if alive else [])


def drain(daemons, queue, timeout=None):
    """Gets and finishes every task of queue from the active daemon until
    its unfinished count is 0 (leases running out and delays ending meanwhile);
    returns [(task, item)] in the order delivered."""
    c = Client(daemons)
    got = []
    deadline = time.monotonic() + (timeout or (LEASE + 10) * SLOW)
    try:
        while True:
            r = c.call({"op": "qsize", "queue": queue})
            if r and r.get("ok") and r["unfinished"] == 0:
                return got
            if time.monotonic() > deadline:
                raise AssertionError("%s not drained: %r" % (queue, r))
            r = c.call({"op": "get", "queue": queue, "timeout": 0.2},
                       CALL_TIMEOUT + 0.2)
            if r and r.get("ok"):
                got.append((r["task"], r["item"]))
                done = c.call({"op": "task_done", "task": r["task"]})
                if not (done and done.get("ok")):
                    raise AssertionError("task_done %d in the drain: %r"
                                         % (r["task"], done))
    finally:
        c.close()


class Replicated(jqtest.TestCase):
    def _callTestMethod(self, method):
        # Noted for finish(), which shows the daemons' logs of a failure.
        try:
            method()
        except BaseException:
            self.failed = True
            raise

    def setUp(self):
        self.failed = False
        self.daemons = []
        self.streams = set()
        self.cluster = natscluster.NatsCluster()
        self.addCleanup(self.cluster.close)
        self.addCleanup(self.show_nats)

    def show_nats(self):
        """After a failure: the streams' last messages and the NATS logs."""
        if not self.failed:
            return
        for stream in sorted(self.streams):
            jqtest.diag(self.cluster.dump(stream, 30))
        for i in range(self.cluster.n):
            try:
                tail = self.cluster.log(i).splitlines()[-12:]
            except OSError:
                continue
            jqtest.diag("nats-server %s:\n%s" % (self.cluster.name(i),
                                                  "\n".join(tail)))

    # ---- the pieces ----------------------------------------------------

    def joinqd(self, stream, *extra, role=None, port=None, start=True,
               env=None, cluster=None, config=None):
        """A joinqd with journal = nats on stream; waits for role if given.
        It is killed (by its PID) when the test ends, its log shown if the
        test failed."""
        cluster = cluster or self.cluster
        self.streams.add(stream)
        port = port or jqtest.free_port()
        d = jqtest.Daemon(*(jqtest.nats_args(
            cluster.servers, stream, "127.0.0.1:%d" % port, FAILOVER) +
            list(extra)), port=port, env=env, config=config)
        self.daemons.append(d)
        self.addCleanup(self.finish, d)
        if start:
            d.start()
            if role:
                d.wait_role(role)
        return d

    def finish(self, d):
        if self.failed:
            try:
                jqtest.diag("joinqd on port %s:\n%s" % (d.port or d.want_port,
                                                        log_tail(d, 60)))
            except OSError:
                pass
        if d.proc is not None and d.proc.poll() is None:
            d.proc.send_signal(signal.SIGCONT)
            d.proc.kill()
            d.proc.wait()
        errfile = getattr(d, "errfile", None)
        if errfile and not errfile.closed:
            errfile.close()
        d.tmp.cleanup()

    def stop_cleanly(self, d):
        """SIGTERM: the daemon exits 0 and reports no memory error."""
        rc = d.stop()
        self.assertEqual(rc, 0, "joinqd exited %d:\n%s" % (rc, log_tail(d)))

    def pair(self, stream, *extra, config=None):
        """a (active) and b (standby) on stream."""
        a = self.joinqd(stream, *extra, role="active", config=config)
        b = self.joinqd(stream, *extra, role="standby", config=config)
        return a, b

    def wait_active(self, d, since, bound=FAILOVER_BOUND):
        """Seconds from since until d's ping says active; fails past bound
        (polls the whole bound, then reports how long it took after all)."""
        deadline = since + bound
        while time.monotonic() < deadline:
            if d.role() == "active":
                return time.monotonic() - since
            time.sleep(0.02)
        late = jqtest.wait_until(lambda: d.role() == "active", TIMEOUT, 0.05)
        self.fail("%s was not active within %.1f s of the failure (%s)"
                  ":\n%s" % (d.address(), bound,
                             "active %.1f s later" % (time.monotonic() - since)
                             if late else "still not active", log_tail(d)))

    def check_ledger(self, ledger, drained, never=()):
        """The rules of the module's docstring, on what the load saw and
        what was left to drain; never: items that must not be there."""
        self.assertEqual(ledger.errors, [], "replies no rule allows")
        ids = ledger.task_ids
        self.assertEqual(len(ids), len(set(ids)), "a task id was repeated")
        counts = {}
        for task, item in drained:
            counts[item] = counts.get(item, 0) + 1
        done_items = set()
        task_of = {}
        for _, task, item in ledger.deliveries:
            task_of[task] = item
        for task in ledger.done:
            if task in task_of:
                done_items.add(task_of[task])
        lost_done_items = {task_of[t] for t in ledger.done_lost
                           if t in task_of}
        for item, task in ledger.puts.items():
            if item in done_items:
                self.assertEqual(counts.get(item, 0), 0,
                                 "%s (task %d) was done, then drained"
                                 % (item, task))
            elif item in lost_done_items:
                self.assertLessEqual(counts.get(item, 0), 1, item)
            else:
                self.assertEqual(counts.get(item, 0), 1,
                                 "answered put %s (task %d) drained %d times"
                                 % (item, task, counts.get(item, 0)))
        for item in ledger.puts_lost:
            self.assertLessEqual(counts.get(item, 0), 1,
                                 "put %s, reply lost, is there twice" % item)
        for item in counts:
            self.assertTrue(item in ledger.puts or item in ledger.puts_lost,
                            "%r drained, never put" % item)
        for item in never:
            self.assertNotIn(item, counts, "%s was applied" % item)
        drained_ids = {t for t, _ in drained}
        self.assertEqual(drained_ids & set(ledger.done), set(),
                         "a task whose task_done was answered came back")
        for at, task, _ in ledger.deliveries:
            if task in ledger.done:
                self.assertLessEqual(at, ledger.done[task],
                                     "task %d delivered after its task_done "
                                     "was answered" % task)
        tasks = {}
        for task, item in drained:
            self.assertEqual(tasks.setdefault(task, item), item)

    def joinq(self, daemons, *args):
        hosts = ",".join(d.address() for d in daemons)
        return subprocess.Popen([jqtest.JOINQ, "-H", hosts] + list(args),
                                env=clean_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def reap(self, p, what, timeout):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.fail("%s did not finish within %.0f s: %s %s"
                      % (what, timeout, out, err))
        return p.returncode, out, err

    # ---- 2. the active dies --------------------------------------------

    def test_2_active_killed_under_load(self):
        self.cluster.start()
        a, b = self.pair("t2")
        work = tempfile.TemporaryDirectory(prefix="joinq-work-")
        self.addCleanup(work.cleanup)
        out = os.path.join(work.name, "out")
        witems = ["w%d" % k for k in range(40)]
        c = Client([a, b])
        for item in witems:
            self.assertOk(c.call({"op": "put", "queue": "w", "item": item}))
        c.close()
        pool = self.joinq([a, b], "-q", "w", "work", "-j", "2",
                          "--exit-when-empty", "--quiet", "--", "sh", "-c",
                          'sleep 0.1; echo "$1" >> "$2"', "sh", "{}", out)
        self.addCleanup(lambda: pool.poll() is None and pool.kill())
        joiner = self.joinq([a, b], "-q", "w", "join", "--timeout",
                            str(60 * SLOW))
        self.addCleanup(lambda: joiner.poll() is None and joiner.kill())
        load = Load([a, b])
        time.sleep(0.8)
        self.assertTrue(load.ledger.puts, "no put answered before the kill")
        killed = time.monotonic()
        a.proc.kill()
        a.proc.wait()
        took = self.wait_active(b, killed)
        jqtest.diag("failover after SIGKILL of the active: %.2f s "
                    "(failover_timeout %.1f s)" % (took, FAILOVER))
        time.sleep(1.0)                 # the load goes on against b
        failures = load.stop()
        self.assertEqual(failures, [])
        led = load.ledger
        rc, _, err = self.reap(pool, "the work pool", 60 * SLOW)
        self.assertEqual(rc, 0, "joinq work: %s" % err)
        rc, _, err = self.reap(joiner, "joinq join", 30 * SLOW)
        self.assertEqual(rc, 0, "joinq join: %s" % err)
        with open(out) as f:
            ran = f.read().split()
        self.assertEqual(set(ran), set(witems), "a w task never ran")
        drained = drain([b], "q")
        self.check_ledger(led, drained)
        jqtest.diag("test 2: %d puts answered (%d lost), %d task_done "
                    "answered, %d drained, w: %d runs for %d tasks"
                    % (len(led.puts), len(led.puts_lost), len(led.done),
                       len(drained), len(ran), len(witems)))
        r = b.request({"op": "qsize", "queue": "w"})
        self.assertQsize(r, unfinished=0)
        self.stop_cleanly(b)

    # ---- 3. the active stalls, then wakes ----------------------------------

    def test_3_active_stalls_then_wakes(self):
        self.cluster.start()
        a, b = self.pair("t3")
        load = Load([a, b], producers=1, consumers=1)
        early = a.tcp()
        self.assertEqual(early.request({"op": "ping"})["role"], "active")
        time.sleep(0.5)
        stopped = time.monotonic()
        a.proc.send_signal(signal.SIGSTOP)
        try:
            early.send({"op": "put", "queue": "q", "item": "stalled-early"})
            during = a.tcp()            # the kernel accepts for it
            during.send({"op": "put", "queue": "q", "item": "stalled-during"})
            took = self.wait_active(b, stopped)
            jqtest.diag("failover after SIGSTOP of the active: %.2f s" % took)
            time.sleep(0.5)             # b appends meanwhile
        finally:
            a.proc.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        late = a.tcp()
        late.send({"op": "put", "queue": "q", "item": "after-wake"})
        for name, conn in (("early", early), ("during", during),
                           ("late", late)):
            try:
                line = conn.recv_line(TIMEOUT)
            except ConnectionResetError:
                line = None
            if line is not None:
                r = json.loads(line)
                self.assertError(r, "unavailable",
                                 "the woken active answered a put (%s)" % name)
                if "active" in r:
                    self.assertEqual(r["active"], b.address(), r)
            conn.close()
        self.assertTrue(jqtest.wait_until(lambda: a.role() == "standby",
                                          10 * SLOW, 0.05),
                        "the woken daemon is %r, not standby:\n%s"
                        % (a.role(), log_tail(a)))
        jqtest.diag("the woken daemon was a standby %.2f s after SIGCONT"
                    % (time.monotonic() - woke))
        # A standby has read the stream to its end, b's takeover and
        # appends included: it names b (soon, if not at once).
        said = []

        def names_b():
            r = a.request({"op": "put", "queue": "q", "item": "to-the-old"})
            said.append(r)
            self.assertError(r, "unavailable")
            return r.get("active") == b.address()
        self.assertTrue(jqtest.wait_until(names_b, 5 * SLOW, 0.1),
                        "the old active, a standby, does not name the active "
                        "%s: %r\n%s" % (b.address(), said[-1], log_tail(a)))
        jqtest.diag("the woken daemon named the active %.2f s after SIGCONT"
                    " (%d replies without it)" % (time.monotonic() - woke,
                                                  len(said) - 1))
        time.sleep(0.3)
        failures = load.stop()
        self.assertEqual(failures, [])
        drained = drain([a, b], "q")
        self.check_ledger(load.ledger, drained,
                          never=("stalled-early", "stalled-during",
                                 "after-wake", "to-the-old"))
        self.assertEqual(b.role(), "active")
        self.stop_cleanly(a)
        self.stop_cleanly(b)

    # ---- 4. a NATS node dies --------------------------------------------

    def test_4_stream_leader_node_killed(self):
        self.cluster.start()
        a, b = self.pair("t4")
        leader = self.cluster.wait_stream_leader("t4")
        load = Load([a, b], producers=2, consumers=1)
        time.sleep(0.7)
        killed = time.monotonic()
        self.cluster.kill(leader)
        # Two nodes of three elect a new leader in a few seconds; should
        # they not (nats-server 2.9.10 on a loaded machine), the node comes
        # back and the cluster elects one: joinq must get through either.
        try:
            new = self.cluster.wait_stream_leader("t4", 20 * SLOW,
                                                  not_node=leader)
            elected = "after %.2f s" % (time.monotonic() - killed)
        except AssertionError:
            new, elected = None, "none in %.0f s" % (20 * SLOW)
        time.sleep(1.0)
        self.cluster.start(leader)
        restarted = time.monotonic() - killed
        if new is None:
            new = self.cluster.wait_stream_leader("t4")
        time.sleep(0.5)
        failures = load.stop()
        self.assertEqual(failures, [])
        led = load.ledger
        roles = {}

        def settled():
            roles.update(a=a.role(), b=b.role())
            return sorted(roles.values()) == ["active", "standby"]
        self.assertTrue(jqtest.wait_until(settled, 15 * SLOW, 0.05),
                        "roles after the node's death: %r" % roles)
        drained = drain([a, b], "q")
        self.check_ledger(led, drained)
        jqtest.diag("NATS leader %s killed: new leader %s (%s), "
                    "node healthy again %.2f s after the kill; longest "
                    "stall seen by a client %.2f s (longest gap between a "
                    "producer's answered puts %.2f s); active now: %s"
                    % (self.cluster.name(leader), self.cluster.name(new),
                       elected, restarted, led.longest,
                       max(load.gaps or [0]),
                       "a" if roles["a"] == "active" else "b"))
        self.assertGreater(len(led.puts), 0)
        self.stop_cleanly(a)
        self.stop_cleanly(b)

    # ---- 5. everything restarts -------------------------------------------

    def state(self, d, queues):
        out = {}
        for q in queues:
            r = d.request({"op": "qsize", "queue": q})
            self.assertQsize(r)
            out[q] = {k: r[k] for k in ("qsize", "maxsize", "unfinished",
                                        "inflight", "delayed")}
        return out

    def test_5_everything_restarts(self):
        self.cluster.start()
        a, b = self.pair("t5", "--queue", "r2:7", config=COMPACT)
        c = a.tcp()
        ids = []
        for k in range(5):
            ids.append(c.request({"op": "put", "queue": "r1",
                                  "item": "r1-%d" % k})["task"])
        for k in range(2):
            ids.append(c.request({"op": "put", "queue": "r2",
                                  "item": {"n": k}})["task"])
        g = c.request({"op": "get", "queue": "r1"})
        self.assertOk(c.request({"op": "task_done", "task": g["task"]}))
        held = c.request({"op": "get", "queue": "r1"})     # in flight
        self.assertEqual(held["item"], "r1-1")
        ids.append(c.request({"op": "put", "queue": "r3",
                              "item": "later"})["task"])
        g = c.request({"op": "get", "queue": "r3"})
        self.assertOk(c.request({"op": "release", "task": g["task"],
                                 "delay": 300}))
        queues = ("r1", "r2", "r3")
        before = self.state(a, queues)
        c.close()
        # A restart gives back the task in flight at the head, with its
        # delivery counted.
        expect = dict(before)
        expect["r1"] = dict(before["r1"], qsize=before["r1"]["qsize"] + 1,
                            inflight=0)
        self.stop_cleanly(a)
        self.stop_cleanly(b)
        t0 = time.monotonic()
        self.cluster.stop()
        self.cluster.start()
        healthy = time.monotonic() - t0
        a.start()
        b.start()
        self.assertTrue(jqtest.wait_until(
            lambda: sorted([a.role() or "", b.role() or ""]) ==
            ["active", "standby"], 20 * SLOW, 0.05),
            "roles after the restart: %s %s\n%s\n%s"
            % (a.role(), b.role(), log_tail(a), log_tail(b)))
        active = a if a.role() == "active" else b
        jqtest.diag("test 5: NATS healthy %.1f s after its stop, a daemon "
                    "active %.1f s after it" % (healthy, time.monotonic() -
                                                t0 - healthy))
        self.assertEqual(self.state(active, queues), expect)
        c = active.tcp()
        r = c.request({"op": "get", "queue": "r1", "block": False})
        self.assertEqual((r["item"], r["task"], r["deliveries"]),
                         ("r1-1", held["task"], 2), r)
        c.request({"op": "release", "task": r["task"]})
        new = c.request({"op": "put", "queue": "r2", "item": "new"})
        self.assertGreater(new["task"], max(ids), "a task id came again")

        # Compaction, then a standby that starts afterwards: churn on a
        # queue of its own until the active compacts.
        standby = b if active is a else a
        self.stop_cleanly(standby)
        blob = "x" * 100
        compacted = False
        deadline = time.monotonic() + 30 * SLOW
        while not compacted and time.monotonic() < deadline:
            for _ in range(20):
                p = c.request({"op": "put", "queue": "churn", "item": blob})
                self.assertOk(p)
                g = c.request({"op": "get", "queue": "churn"})
                self.assertOk(c.request({"op": "task_done",
                                         "task": g["task"]}))
            compacted = "journal: compacted" in active.log()
        self.assertTrue(compacted, "no compaction:\n" + log_tail(active))
        queues = ("r1", "r2", "r3", "churn")
        want = self.state(active, queues)
        late = self.joinqd("t5", "--queue", "r2:7", role="standby",
                           config=COMPACT)
        # It catches up: it takes over with the same state.
        c.close()
        killed = time.monotonic()
        active.proc.kill()
        active.proc.wait()
        self.wait_active(late, killed)
        self.assertEqual(self.state(late, queues), want)
        c = late.tcp()
        items = []
        while True:
            r = c.request({"op": "get", "queue": "r1", "block": False})
            if not r.get("ok"):
                break
            items.append(r["item"])
            c.request({"op": "task_done", "task": r["task"]})
        self.assertEqual(items, ["r1-1", "r1-2", "r1-3", "r1-4"])
        r = c.request({"op": "get", "queue": "r2", "block": False})
        self.assertEqual(r["item"], {"n": 0})
        c.close()
        self.stop_cleanly(late)

    # ---- an orderly stop ------------------------------------------------

    def test_7_orderly_stop_hands_over(self):
        """SIGTERM on the active: what it answered is in the stream, it
        exits 0 promptly, and its resign lets the standby take over at
        once rather than after failover_timeout (store_nats.c, "resign").
        The standby follows declares, purges and deletes as the rest: the
        settings hold after the takeover, and a deleted queue is gone."""
        self.cluster.start()
        slow = 5 * SLOW                 # a failover_timeout long enough
        a = self.joinqd("t7", "--failover-timeout", str(slow), role="active")
        b = self.joinqd("t7", "--failover-timeout", str(slow),
                        role="standby")
        for k in range(5):
            self.assertOk(a.request({"op": "put", "queue": "q", "item": k}))
        self.assertOk(a.request({"op": "declare", "queue": "d", "maxsize": 2,
                                 "max_deliveries": 3, "dead_letter": "dl"}))
        self.assertOk(a.request({"op": "put", "queue": "gone", "item": 1}))
        self.assertEqual(a.request({"op": "purge", "queue": "gone"}),
                         {"ok": True, "purged": 1})
        self.assertEqual(a.request({"op": "delete", "queue": "gone"}),
                         {"ok": True, "deleted": True})
        self.assertOk(a.request({"op": "put", "queue": "e", "item": 1}))
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            rc = a.proc.wait(2 * SLOW)
        except subprocess.TimeoutExpired:
            rc = None
        stopped = time.monotonic() - t0
        self.assertEqual(rc, 0, "the active did not stop in %.1f s:\n%s"
                         % (2 * SLOW, log_tail(a)))
        took = self.wait_active(b, t0, slow + 2 * SLOW)
        jqtest.diag("orderly stop: the active exited after %.2f s, the "
                    "standby active %.2f s after SIGTERM (failover_timeout "
                    "%.1f s)" % (stopped, took, slow))
        self.assertNotIn("not acknowledged", a.log(),
                         "every append was answered before the stop")
        self.assertLess(took, 2 * SLOW, "the standby waited for "
                        "failover_timeout: no resign in the stream")
        self.assertQsize(b.qsize("q"), qsize=5, unfinished=5)
        stats = b.request({"op": "stats"})["queues"]
        self.assertEqual(set(stats), {"q", "d", "e"})
        self.assertEqual((stats["d"]["maxsize"], stats["d"]["max_deliveries"],
                          stats["d"]["dead_letter"]), (2, 3, "dl"))
        self.assertError(b.request({"op": "declare", "queue": "d",
                                    "maxsize": 3}), "conflict")
        self.assertQsize(b.qsize("e"), qsize=1)
        self.stop_cleanly(b)

    # ---- an append bigger than NATS takes --------------------------------

    def test_8_append_over_max_payload(self):
        """An item that max_frame allows but that no NATS message can hold
        (max_payload, 1 MB by default; random characters do not compress)
        is answered, ok or an error, and the journal goes on: a later put
        on another connection is answered ok."""
        self.cluster.start()
        d = self.joinqd("t8", "--max-frame", str(4 << 20), role="active")
        rnd = random.Random(8)
        alphabet = ("abcdefghijklmnopqrstuvwxyz"
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        big = "".join(rnd.choice(alphabet) for _ in range(2 << 20))
        c = d.tcp()
        c.send({"op": "put", "queue": "q", "item": big})
        try:
            r = c.recv(TIMEOUT)
        except (TimeoutError, ConnectionError) as e:
            r = e
        other = d.tcp()
        other.send({"op": "put", "queue": "q", "item": "small"})
        try:
            small = other.recv(TIMEOUT)
        except (TimeoutError, ConnectionError) as e:
            small = e
        self.assertIsInstance(r, dict, "a put of 2 MiB got no reply (%s):\n%s"
                              % (r, log_tail(d)))
        jqtest.diag("a put of 2 MiB: %s" % json.dumps(r)[:200])
        self.assertIsInstance(small, dict, "after the big put, a small one "
                              "got no reply (%s):\n%s" % (small, log_tail(d)))
        self.assertOk(small)
        c.close()
        other.close()
        self.stop_cleanly(d)

    # ---- 6. bad conditions ----------------------------------------------

    def test_6a_nats_unreachable_at_start(self):
        notify_dir = tempfile.TemporaryDirectory(prefix="joinq-notify-")
        self.addCleanup(notify_dir.cleanup)
        notify = jqtest.NotifySocket(os.path.join(notify_dir.name, "notify"))
        self.addCleanup(notify.close)
        d = self.joinqd("t6a", env={"NOTIFY_SOCKET": notify.path})
        time.sleep(1.5 * SLOW)
        self.assertEqual(d.role(), "standby")
        r = d.request({"op": "put", "queue": "q", "item": 1})
        self.assertError(r, "unavailable")
        self.assertNotIn("active", r)
        r = d.request({"op": "qsize", "queue": "q"})
        self.assertError(r, "unavailable")
        lines = [l for l in d.log().splitlines()
                 if "nats" in l.lower() and
                 ("error:" in l or "warning:" in l)]
        self.assertTrue(lines, "joinqd does not say NATS is unreachable:\n"
                        + log_tail(d))
        jqtest.diag("said: " + lines[0])
        self.assertNotIn("READY=1", notify.lines(),
                         "READY=1 while NATS is unreachable")
        self.assertIsNone(d.proc.poll(), "joinqd gave up:\n" + log_tail(d))
        self.cluster.start()
        t0 = time.monotonic()
        d.wait_role("active", 30 * SLOW)
        jqtest.diag("active %.2f s after NATS became healthy"
                    % (time.monotonic() - t0))
        self.assertTrue(jqtest.wait_until(
            lambda: "READY=1" in notify.lines(), TIMEOUT),
            "no READY=1 once active: %r" % notify.lines())
        self.assertOk(d.request({"op": "put", "queue": "q", "item": 1}))
        self.stop_cleanly(d)

    def refused(self, d, stream, words):
        """d does not serve stream: it exits non-zero or stays standby, and
        a log line at warning or error names stream and gives a reason (one
        of words)."""
        def said():
            for line in d.log().splitlines():
                low = line.lower()
                if (" error: " in line or " warning: " in line) and \
                        stream in line and any(w in low for w in words):
                    return line
            return None
        self.assertTrue(jqtest.wait_until(lambda: said() is not None,
                                          (FAILOVER + 5) * SLOW, 0.05),
                        "no log line naming %s and why:\n%s"
                        % (stream, log_tail(d)))
        # It exits non-zero, or stays up serving nothing.
        try:
            d.proc.wait(FAILOVER + 1)
        except subprocess.TimeoutExpired:
            pass
        if d.proc.poll() is None:
            try:
                r = d.request({"op": "put", "queue": "q", "item": "x"})
            except (ConnectionError, OSError):
                r = None                 # it was exiting meanwhile
            if r is not None:
                self.assertError(r, "unavailable")
        if d.proc.poll() is not None:
            self.assertNotEqual(d.proc.returncode, 0, log_tail(d))
        return said()

    def start_refused(self, stream):
        d = self.joinqd(stream, start=False)
        try:
            d.start()
        except RuntimeError:
            pass                           # exited at start: see refused()
        return d

    def test_6b_stream_of_another_kind(self):
        self.cluster.start()
        with self.cluster.client() as nc:
            nc.js("STREAM.CREATE.t6b", {
                "name": "t6b", "subjects": ["joinq.t6b"],
                "retention": "workqueue", "storage": "memory",
                "num_replicas": 1})
        d = self.start_refused("t6b")
        line = self.refused(d, "t6b", ("retention", "workqueue",
                                       "work_queue", "work queue", "storage",
                                       "memory", "kind", "config", "limits"))
        jqtest.diag("refused: " + line)

    def test_6c_stream_written_by_something_else(self):
        self.cluster.start()
        d = self.joinqd("t6c", role="active")
        self.assertOk(d.request({"op": "put", "queue": "q", "item": "mine"}))
        self.stop_cleanly(d)
        with self.cluster.client() as nc:
            _, ack = nc.request("joinq.t6c", b"hello, I am not joinqd")
            self.assertIn("seq", json.loads(ack), ack)
        d2 = self.start_refused("t6c")
        line = self.refused(d2, "t6c", ("record", "foreign", "not a joinq",
                                        "not joinq", "bad", "corrupt",
                                        "damaged", "invalid", "unknown",
                                        "cannot", "refus", "written"))
        jqtest.diag("refused: " + line)

    def test_6d_stream_missing_is_created(self):
        """A stream missing is created (limits retention, file storage, the
        replicas asked): the first daemon on a cluster starts one."""
        self.cluster.start()
        d = self.joinqd("t6d", "--nats-replicas", "3", role="active")
        with self.cluster.client() as nc:
            info = nc.js("STREAM.INFO.t6d")
        cfg = info["config"]
        self.assertEqual((cfg.get("retention"), cfg.get("storage"),
                          cfg.get("num_replicas")), ("limits", "file", 3),
                         cfg)
        self.assertIn("joinq.t6d", cfg.get("subjects", []), cfg)
        self.stop_cleanly(d)


if __name__ == "__main__":
    jqtest.main()
