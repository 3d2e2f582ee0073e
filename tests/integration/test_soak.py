"""A bounded soak: many random clients at once, then every invariant.

Threads play TCP and UDP clients doing random ops on a few small queues
with dead letters (put and get with and without lease and timeout,
task_done, release with delay, join with timeout, qsize, stats), pipelined
bursts, frames sent in pieces with pauses, bad frames (invalid UTF-8, bad
JSON, too large for a small max_frame, too deep), and random disconnects,
some with tasks held and some with a request unanswered.  Every client
accounts for what it did.  The load runs in two equal phases, each drained
to empty (every task got and finished, delays and leases waited out), and
then:

  * U = Q + F + D held in every qsize and stats read;
  * per queue, from the daemon's counters: puts = task_dones + dead_lettered,
    and the clients' acknowledged puts and task_dones match those counters
    up to the requests whose reply was lost (to a deliberate disconnect or
    a UDP timeout), which are counted and bound them;
  * item by item: every acknowledged put is finished exactly once (done,
    or found in the dead-letter queue), nothing appears that was not put,
    a task id always carries the same item, no task is delivered after its
    task_done was acknowledged, and none more than max_deliveries times;
  * joinqd's RSS after phase 2 is at most 8 MiB above that after phase 1
    (a leak grows with load);
  * joinqd exits 0 on SIGTERM with no sanitizer report (jqtest).

JOINQ_SOAK_SECONDS sets the load time (default 20, both phases together);
JOINQ_SOAK_SEED the random seed (default: from the clock, printed).  A
longer local run:

    JOINQ_SOAK_SECONDS=300 JOINQD=daemon/joinqd \\
        python3 tests/integration/test_soak.py
"""
import collections
import json
import os
import random
import socket
import threading
import time
import traceback

import jqtest

SLOW = jqtest.SLOW
SECONDS = float(os.environ.get("JOINQ_SOAK_SECONDS", "20"))
SEED = int(os.environ.get("JOINQ_SOAK_SEED", "0")) or int(time.time())
N_TCP = 12
N_UDP = 4
MAX_FRAME = 8192
MAX_DEPTH = 16
UDP_LEASE = 2
FRAME_TIMEOUT = 5
MiB = 1 << 20
RSS_SLACK = 8 * MiB if not jqtest.WRAPPER else 24 * MiB

# name: (maxsize, max_deliveries)
QUEUES = {"s0": (4, 2), "s1": (8, 3), "s2": (2, 1), "s3": (16, 0)}
DEAD = {q + ".dead": q for q, (_, md) in QUEUES.items() if md}
CONFIG = "".join("[queue %s]\nmaxsize = %d\nmax_deliveries = %d\n"
                 % (q, m, md) for q, (m, md) in QUEUES.items())




class Ledger:
    """What every client did, merged under a lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.violations = []
        self.acked_puts = collections.defaultdict(dict)      # q: tag -> task
        self.lost_puts = collections.defaultdict(set)        # q: {tag}
        self.task_tag = {}                                   # task -> tag
        self.task_queue = {}                                 # task -> q
        self.done_at = {}            # task -> when its task_done was acked
        self.dones = collections.defaultdict(list)           # q: [task]
        self.lost_dones = collections.defaultdict(set)       # q: {task}
        self.deliveries = []         # (q, task, tag, deliveries, sent at)
        self.dead_items = collections.defaultdict(list)      # q: [tag]
        self.ops = collections.Counter()

    def violation(self, text):
        with self.lock:
            if len(self.violations) < 1000:
                self.violations.append(text)

    def count(self, what, n=1):
        with self.lock:
            self.ops[what] += n

    def see_task(self, task, tag, queue, how):
        with self.lock:
            old = self.task_tag.setdefault(task, tag)
            oldq = self.task_queue.setdefault(task, queue)
        if old != tag or oldq != queue:
            self.violation("task %d carries %s on %s (%s), was %s on %s"
                           % (task, tag, queue, how, old, oldq))

    def put_acked(self, q, tag, task):
        self.see_task(task, tag, q, "put")
        with self.lock:
            self.acked_puts[q][tag] = task

    def put_lost(self, q, tag):
        with self.lock:
            self.lost_puts[q].add(tag)

    def delivered(self, q, r, sent):
        item = r.get("item")
        tag = item[0] if isinstance(item, list) and item else repr(item)
        if q in DEAD:
            with self.lock:
                self.dead_items[DEAD[q]].append(tag)
            return tag
        self.see_task(r["task"], tag, q, "get")
        with self.lock:
            self.deliveries.append((q, r["task"], tag, r["deliveries"], sent))
        md = QUEUES[q][1]
        if md and r["deliveries"] > md:
            self.violation("task %d of %s delivered %d times (max_deliveries "
                           "%d)" % (r["task"], q, r["deliveries"], md))
        return tag

    def done_acked(self, q, task):
        now = time.monotonic()
        with self.lock:
            if q not in DEAD:
                self.dones[q].append(task)
            self.done_at.setdefault(task, now)

    def done_lost(self, q, task):
        with self.lock:
            self.lost_dones[q].add(task)


def check_figures(ledger, reply, what):
    """U = Q + F + D in a qsize reply or each queue of a stats reply."""
    if reply.get("ok") is not True:
        ledger.violation("%s failed: %r" % (what, reply))
        return
    figs = reply["queues"].items() if "queues" in reply else [(what, reply)]
    for name, f in figs:
        if f["unfinished"] != f["qsize"] + f["inflight"] + f["delayed"]:
            ledger.violation("U = Q + F + D broken in %s of %s: %r"
                             % (what, name, f))


class Lost(Exception):
    """The reply did not come (a disconnect, a UDP timeout)."""


def item_for(rng, tag):
    kind = rng.randrange(5)
    if kind == 0:
        payload = rng.randrange(-10 ** 12, 10 ** 12)
    elif kind == 1:
        payload = "\u00e9t\u00e9 \u2603 \U0001f600 " * rng.randrange(1, 8)
    elif kind == 2:
        payload = {"k": [1, 2.5, None, True, "x"], "n": {"m": [[]]}}
    elif kind == 3:
        payload = "z" * rng.randrange(100, 2000)
    else:
        payload = None
    return [tag, payload]


class Client(threading.Thread):
    """A random client; run() until stop is set."""

    def __init__(self, soak, wid, seed):
        super().__init__(daemon=True)
        self.soak = soak
        self.d = soak.d
        self.ledger = soak.ledger
        self.wid = wid
        self.rng = random.Random(seed)
        self.n = 0
        self.held = {}        # task -> (queue, lease end or None, deliveries)

    def tag(self):
        self.n += 1
        return "p%d%s%d.%d" % (self.soak.phase_no, self.KIND, self.wid,
                               self.n)

    def run(self):
        try:
            self.setup()
            while not self.soak.stop.is_set():
                self.step()
            self.finish()
        except Exception:
            self.ledger.violation("client %s%d crashed:\n%s"
                                  % (self.KIND, self.wid,
                                     traceback.format_exc()))

    def queue(self):
        return self.rng.choice(list(QUEUES))

    def done_or_release(self):
        """Finishes or gives back one of the tasks held."""
        task = self.rng.choice(list(self.held))
        q, lease_end, n = self.held.pop(task)
        if self.rng.random() < 0.75:
            req = {"op": "task_done", "task": task}
        else:
            req = {"op": "release", "task": task}
            if self.rng.random() < 0.5:
                req["delay"] = self.rng.choice([0, 0.05, 0.3])
        try:
            r = self.request(req)
        except Lost:
            if req["op"] == "task_done":
                self.ledger.done_lost(q, task)
            return
        # Only the client a task is delivered to may have it finished
        # under it, or one it was delivered to before (any client may
        # finish any delivered task: one whose lease ran out may still
        # finish it): a first delivery, unleased or well within its lease,
        # must be ours to finish.
        sure = n == 1 and (lease_end is None or
                           time.monotonic() < lease_end - 0.5 * SLOW)
        if r.get("ok"):
            if req["op"] == "task_done":
                self.ledger.done_acked(q, task)
            self.ledger.count(req["op"])
        elif r.get("error") == "unknown_task" and not sure:
            self.ledger.count("lease_ran_out")
        else:
            self.ledger.violation("%s of a held task %d (%s, lease end "
                                  "%s): %r" % (req["op"], task, q, lease_end,
                                               r))

    def put(self, extra=None):
        q = self.queue()
        tag = self.tag()
        req = {"op": "put", "queue": q, "item": item_for(self.rng, tag)}
        if self.rng.random() < 0.5:
            req["block"] = False
        else:
            req["timeout"] = self.rng.choice([0, 0.02, 0.1])
        req.update(extra or {})
        try:
            r = self.request(req)
        except Lost:
            self.ledger.put_lost(q, tag)
            return
        if r.get("ok"):
            self.ledger.put_acked(q, tag, r["task"])
            self.ledger.count("put")
        elif r.get("error") == "full":
            self.ledger.count("full")
        else:
            self.ledger.violation("put: %r" % r)

    def get(self, lease=None):
        q = self.queue()
        req = {"op": "get", "queue": q}
        if lease:
            req["lease"] = lease
        if self.rng.random() < 0.5:
            req["block"] = False
        else:
            req["timeout"] = self.rng.choice([0, 0.02, 0.1])
        sent = time.monotonic()
        try:
            r = self.request(req)
        except Lost:
            return
        if r.get("ok"):
            self.ledger.delivered(q, r, sent)
            self.ledger.count("get")
            self.held[r["task"]] = (q, sent + lease if lease else None,
                                    r["deliveries"])
        elif r.get("error") == "empty":
            self.ledger.count("empty")
        else:
            self.ledger.violation("get: %r" % r)

    def join_op(self):
        try:
            r = self.request({"op": "join", "queue": self.queue(),
                              "timeout": self.rng.choice([0, 0.05, 0.1])})
        except Lost:
            return
        if not (r.get("ok") or r.get("error") == "timeout"):
            self.ledger.violation("join: %r" % r)
        self.ledger.count("join")

    def qsize(self):
        q = self.queue()
        try:
            r = self.request({"op": "qsize", "queue": q})
        except Lost:
            return
        check_figures(self.ledger, r, "qsize " + q)
        self.ledger.count("qsize")

    def stats(self):
        try:
            r = self.request({"op": "stats"})
        except Lost:
            return
        check_figures(self.ledger, r, "stats")
        self.ledger.count("stats")


class TcpClient(Client):
    KIND = "t"

    def setup(self):
        self.c = None
        self.connect()

    def connect(self):
        if self.c:
            self.c.close()
        self.c = self.d.tcp()
        self.held = {}
        self.ledger.count("connect")

    def finish(self):
        self.c.close()

    def request(self, req, slow=False):
        try:
            if slow:
                data = jqtest.encode(req)
                cuts = sorted(self.rng.sample(range(1, len(data)), 2))
                for a, b in ((0, cuts[0]), (cuts[0], cuts[1]),
                             (cuts[1], len(data))):
                    self.c.sock.sendall(data[a:b])
                    time.sleep(self.rng.uniform(0.01, 0.2))
            else:
                self.c.send(req)
            return self.c.recv()
        except (ConnectionError, OSError) as e:
            self.ledger.violation("TCP %s: %r: %s" % (self.wid, req, e))
            self.connect()
            raise Lost()

    def step(self):
        rng = self.rng
        x = rng.random()
        if len(self.held) > 4 or (self.held and x < 0.2):
            self.done_or_release()
        elif x < 0.4:
            self.put()
        elif x < 0.65:
            self.get(lease=rng.choice([None, None, 0.3, 1.0, 2.0]))
        elif x < 0.70:
            self.join_op()
        elif x < 0.76:
            self.qsize()
        elif x < 0.78:
            self.stats()
        elif x < 0.82:
            self.pipelined()
        elif x < 0.85:
            self.slow_frame()
        elif x < 0.90:
            self.bad_frame()
        elif x < 0.95:
            self.disconnect()
        else:
            self.ledger.count("pause")
            time.sleep(rng.uniform(0, 0.02))

    def slow_frame(self):
        q = self.queue()
        if self.rng.random() < 0.5:
            tag = self.tag()
            req = {"op": "put", "queue": q, "block": False,
                   "item": item_for(self.rng, tag)}
            try:
                r = self.request(req, slow=True)
            except Lost:
                self.ledger.put_lost(q, tag)
                return
            if r.get("ok"):
                self.ledger.put_acked(q, tag, r["task"])
            elif r.get("error") != "full":
                self.ledger.violation("slow put: %r" % r)
        else:
            try:
                r = self.request({"op": "qsize", "queue": q}, slow=True)
            except Lost:
                return
            check_figures(self.ledger, r, "slow qsize " + q)
        self.ledger.count("slow_frame")

    def pipelined(self):
        """A burst of requests written at once, replies read after."""
        reqs, tags = [], {}
        for i in range(self.rng.randrange(2, 20)):
            q = self.queue()
            if self.rng.random() < 0.5:
                tag = self.tag()
                tags[i] = (q, tag)
                reqs.append({"op": "put", "queue": q, "block": False,
                             "item": item_for(self.rng, tag), "id": i})
            else:
                reqs.append({"op": "qsize", "queue": q, "id": i})
        try:
            self.c.sock.sendall(b"".join(jqtest.encode(r) for r in reqs))
            replies = [self.c.recv() for _ in reqs]
        except (ConnectionError, OSError) as e:
            self.ledger.violation("TCP %s: pipelined: %s" % (self.wid, e))
            for q, tag in tags.values():
                self.ledger.put_lost(q, tag)
            self.connect()
            return
        for i, (req, r) in enumerate(zip(reqs, replies)):
            if r.get("id") != i:
                self.ledger.violation("pipelined reply %d out of order: %r"
                                      % (i, r))
                continue
            if req["op"] == "qsize":
                check_figures(self.ledger, r, "pipelined qsize")
            elif r.get("ok"):
                self.ledger.put_acked(tags[i][0], tags[i][1], r["task"])
            elif r.get("error") != "full":
                self.ledger.violation("pipelined put: %r" % r)
        self.ledger.count("pipelined")

    BAD = [
        (b'{"op":"put","queue":"s0","item":"\xff\xfe"}\n', ("bad_utf8",)),
        (b'{"op":"put","queue":"s0","item":1,}\n', ("bad_json",)),
        (b'{"op":"put","queue":"s0","item":[1,2\n', ("bad_json",)),
        (b'["op","put"]\n', ("bad_json",)),
        (b'{"op":"put","queue":"s0","item":' + b"[" * (MAX_DEPTH + 4) +
         b"]" * (MAX_DEPTH + 4) + b"}\n", ("bad_request", "bad_json")),
        (b'{"op":"get","queue":"s0","lease":-1}\n', ("bad_request",)),
        (b'{"op":"put","queue":"bad queue","item":1}\n', ("bad_queue",)),
        (b'{"op":"frobnicate"}\n', ("unknown_op",)),
        (b'{"op":"task_done","task":0}\n', ("bad_request",)),
    ]

    def bad_frame(self):
        self.ledger.count("bad_frame")
        if self.rng.random() < 0.15:
            # too large: answered, then the connection is closed (its
            # tasks held without a lease come back)
            # exactly one byte past max_frame, no LF: answered at once,
            # and nothing is left unread for a reset to throw away
            head = b'{"op":"put","item":"'
            data = head + b"x" * (MAX_FRAME + 1 - len(head))
            try:
                self.c.sock.sendall(data)
            except OSError:
                pass
            try:
                r = self.c.recv()
                if r.get("error") != "frame_too_large":
                    self.ledger.violation("oversize frame: %r" % r)
                if not self.c.closed_by_peer():
                    self.ledger.violation("open after frame_too_large")
            except (ConnectionError, OSError) as e:
                self.ledger.violation("oversize frame: no reply: %s" % e)
            self.connect()
            return
        data, codes = self.rng.choice(self.BAD)
        try:
            self.c.sock.sendall(data)
            r = self.c.recv()
        except (ConnectionError, OSError) as e:
            self.ledger.violation("bad frame %r: %s" % (data[:40], e))
            self.connect()
            return
        if r.get("ok") is not False or r.get("error") not in codes:
            self.ledger.violation("bad frame %r: %r" % (data[:40], r))

    def disconnect(self):
        """Closes, holding tasks or not, and sometimes with a request
        sent and its reply never read."""
        self.ledger.count("disconnect")
        self.ledger.count("abandoned_tasks", len(self.held))
        x = self.rng.random()
        if x < 0.3:
            q, tag = self.queue(), self.tag()
            self.c.send({"op": "put", "queue": q, "block": False,
                         "item": item_for(self.rng, tag)})
            self.ledger.put_lost(q, tag)
            self.ledger.count("lost_reply")
        elif x < 0.45 and self.held:
            task = next(iter(self.held))
            q, _, _ = self.held.pop(task)
            self.c.send({"op": "task_done", "task": task})
            self.ledger.done_lost(q, task)
            self.ledger.count("lost_reply")
        elif x < 0.6:
            self.c.send({"op": "get", "queue": self.queue(),
                         "lease": self.rng.choice([0.2, 1.0])})
            self.ledger.count("lost_reply")
        if self.rng.random() < 0.5:
            self.c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.c.close()
        self.c = None
        self.connect()


class UdpClient(Client):
    KIND = "u"

    def setup(self):
        self.u = self.d.udp()
        self.ids = 0

    def finish(self):
        self.u.close()

    def request(self, req):
        self.ids += 1
        rid = "%d.%d" % (self.wid, self.ids)
        req = dict(req, id=rid)
        self.u.send(req)
        deadline = time.monotonic() + 2 * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.ledger.count("udp_timeout")
                raise Lost()
            try:
                r = self.u.recv(left)
            except socket.timeout:
                continue
            if r.get("id") == rid:
                return r
            self.ledger.count("udp_stale_reply")

    def step(self):
        rng = self.rng
        x = rng.random()
        if len(self.held) > 4 or (self.held and x < 0.3):
            self.done_or_release()
        elif x < 0.5:
            self.put()
        elif x < 0.7:
            lease = rng.choice([None, 0.5, 1.0])
            before = time.monotonic()
            self.get(lease=lease)
            # a UDP get always has a lease: udp_lease by default
            for task, (q, end, n) in self.held.items():
                if end is None:
                    self.held[task] = (q, before + UDP_LEASE, n)
        elif x < 0.75:
            self.join_op()
        elif x < 0.85:
            self.qsize()
        elif x < 0.88:
            self.stats()
        elif x < 0.93:
            self.ledger.count("bad_datagram")
            self.u.sock.sendto(b'{"op":"put","item":\xff}',
                               self.u.addr)
            try:
                r = self.u.recv(2 * SLOW)
                if r.get("error") not in ("bad_utf8", "bad_json"):
                    self.ledger.violation("bad datagram: %r" % r)
            except socket.timeout:
                self.ledger.count("udp_timeout")
        else:
            # walks away from its leased tasks: they come back later
            self.ledger.count("abandoned_tasks", len(self.held))
            self.held = {}
            time.sleep(rng.uniform(0, 0.02))


class Soak(jqtest.TestCase):
    def phase(self, d, ledger, seconds, seed):
        self.d, self.ledger = d, ledger
        self.phase_no = seed
        self.stop = threading.Event()
        clients = [TcpClient(self, i, seed * 1000 + i) for i in range(N_TCP)]
        clients += [UdpClient(self, i, seed * 1000 + 100 + i)
                    for i in range(N_UDP)]
        for c in clients:
            c.start()
        self.stop.wait(seconds)
        self.stop.set()
        for c in clients:
            c.join(jqtest.TIMEOUT * 3)
            if c.is_alive():
                ledger.violation("client %s%d did not stop" % (c.KIND, c.wid))

    def drain(self, d, ledger):
        """Gets and finishes everything, waiting out delays and leases,
        until every queue is finished; returns the last stats."""
        c = d.tcp()
        deadline = time.monotonic() + 30 * SLOW
        names = list(QUEUES) + list(DEAD)
        try:
            while True:
                st = c.request({"op": "stats"})
                check_figures(ledger, st, "drain stats")
                left = {q: f["unfinished"] for q, f in st["queues"].items()
                        if f["unfinished"]}
                if not left:
                    return st
                self.assertLess(time.monotonic(), deadline,
                                "cannot drain: %r" % left)
                for q in names:
                    if q not in left:
                        continue
                    while True:
                        sent = time.monotonic()
                        r = c.request({"op": "get", "queue": q,
                                       "timeout": 0.1})
                        if r.get("error") == "empty":
                            break
                        self.assertOk(r)
                        ledger.delivered(q, r, sent)
                        r2 = c.request({"op": "task_done", "task": r["task"]})
                        self.assertOk(r2, "drain: task_done %r: %r" % (r, r2))
                        ledger.done_acked(q, r["task"])
        finally:
            c.close()

    def check(self, ledger, st, label):
        """Every invariant on what the ledger holds and the daemon's
        counters (st, the stats of a drained daemon)."""
        self.assertEqual(ledger.violations[:20], [], "%s: %d violations"
                         % (label, len(ledger.violations)))
        qs = st["queues"]
        for q, (maxsize, md) in QUEUES.items():
            with self.subTest(phase=label, queue=q):
                f = qs.get(q)
                self.assertIsNotNone(f, "queue %s never used" % q)
                self.assertEqual((f["unfinished"], f["qsize"], f["inflight"],
                                  f["delayed"]), (0, 0, 0, 0))
                # the daemon's own books
                self.assertEqual(f["puts"], f["task_dones"] +
                                 f["dead_lettered"], f)
                dead = len(ledger.dead_items[q])
                self.assertEqual(f["dead_lettered"], dead)
                if md:
                    self.assertEqual(qs.get(q + ".dead", {"puts": 0})["puts"],
                                     dead)
                else:
                    self.assertEqual(dead, 0)
                # the clients' books against the daemon's
                acked, lost = len(ledger.acked_puts[q]), len(ledger.lost_puts[q])
                self.assertLessEqual(acked, f["puts"])
                self.assertLessEqual(f["puts"], acked + lost,
                                     "puts nobody made")
                dones = len(ledger.dones[q])
                lost_dones = len(ledger.lost_dones[q])
                self.assertLessEqual(dones, f["task_dones"])
                self.assertLessEqual(f["task_dones"], dones + lost_dones)
                self.assertLessEqual(abs(acked - dones - dead),
                                     lost + lost_dones)
                self.check_items(ledger, q)
        self.check_deliveries(ledger)
        # the replies lost are those lost on purpose (or to UDP)
        lost = sum(map(len, ledger.lost_puts.values())) + \
            sum(map(len, ledger.lost_dones.values()))
        self.assertLessEqual(lost, ledger.ops["lost_reply"] +
                             ledger.ops["udp_timeout"])

    def check_items(self, ledger, q):
        finished = collections.Counter()
        maybe = set()
        for task in ledger.dones[q]:
            finished[ledger.task_tag.get(task)] += 1
        for task in ledger.lost_dones[q]:
            maybe.add(ledger.task_tag.get(task))
        for tag in ledger.dead_items[q]:
            finished[tag] += 1
        put = set(ledger.acked_puts[q]) | ledger.lost_puts[q]
        unknown = [t for t in finished if t not in put]
        self.assertEqual(unknown[:10], [], "items finished in %s that were "
                         "never put there" % q)
        twice = [t for t, n in finished.items() if n > 1]
        self.assertEqual(twice[:10], [], "items finished twice in %s" % q)
        unfinished = [t for t in ledger.acked_puts[q]
                      if not finished[t] and t not in maybe]
        self.assertEqual(unfinished[:10], [], "acknowledged puts on %s "
                         "never finished" % q)

    def check_deliveries(self, ledger):
        late = [(q, task, n, sent - ledger.done_at[task])
                for q, task, tag, n, sent in ledger.deliveries
                if task in ledger.done_at and sent > ledger.done_at[task]]
        self.assertEqual(late[:10], [], "tasks delivered after their "
                         "task_done was acknowledged")

    def test_soak(self):
        half = SECONDS / 2
        jqtest.diag("soak: %.0f s of load in two phases, seed %d, %d TCP and %d UDP "
             "clients" % (SECONDS, SEED, N_TCP, N_UDP))
        with jqtest.Daemon("--max-frame", str(MAX_FRAME), "--max-depth",
                           str(MAX_DEPTH), "--udp-lease", str(UDP_LEASE),
                           "--frame-timeout", str(FRAME_TIMEOUT),
                           "--log-level", "info", config=CONFIG,
                           env=jqtest.MEASURED_ENV) as d:
            pid = d.proc.pid
            ledger = Ledger()
            rss = []
            for n in (1, 2):
                start = time.monotonic()
                self.phase(d, ledger, half, SEED + n)
                loaded = time.monotonic()
                st = self.drain(d, ledger)
                time.sleep(0.3)
                rss.append(jqtest.rss_bytes(pid))
                ops = dict(sorted(ledger.ops.items()))
                jqtest.diag("phase %d: load %.1f s, drain %.1f s, RSS %.1f MiB; "
                     "ops so far %s" % (n, loaded - start,
                                        time.monotonic() - loaded,
                                        rss[-1] / MiB, json.dumps(ops)))
                jqtest.diag("phase %d: per queue %s" % (n, json.dumps(
                    {q: [f["puts"], f["task_dones"], f["dead_lettered"],
                         f["redeliveries"]]
                     for q, f in sorted(st["queues"].items())})) +
                     " [puts, task_dones, dead_lettered, redeliveries]")
                lost = sum(map(len, ledger.lost_puts.values()))
                lost_d = sum(map(len, ledger.lost_dones.values()))
                jqtest.diag("phase %d: replies lost: %d puts, %d task_dones"
                     % (n, lost, lost_d))
                self.check(ledger, st, "phase %d" % n)
                self.assertEqual(st["connections"], 1)
            jqtest.diag("RSS after phase 1 %.1f MiB, after phase 2 %.1f MiB"
                 % (rss[0] / MiB, rss[1] / MiB))
            self.assertLessEqual(rss[1], rss[0] + RSS_SLACK,
                                 "joinqd's memory grows with load")
            self.assertGreater(ledger.ops["put"], 100)
            self.assertGreater(sum(len(v) for v in ledger.dead_items.values()),
                               0, "no dead letters in the soak")


if __name__ == "__main__":
    jqtest.main()
