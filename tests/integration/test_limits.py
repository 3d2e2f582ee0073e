"""Limits on clients: max_connections, running out of descriptors,
frame_timeout (slowloris), idle_timeout, max_output and output_timeout,
udp_allow and UDP floods, and keeping the auth token secret.

Every test crosses a limit and then checks that the daemon still serves
others: a fresh connection and one that was open before each do ping, put,
get, task_done and qsize (served()).

Timing bounds are scaled by jqtest.SLOW (JOINQ_TIME_SCALE); under
JOINQD_WRAPPER (valgrind) the tests that move much data use less of it.
"""
import http.client
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time

import jqtest

SLOW = jqtest.SLOW
UNDER_TOOL = bool(jqtest.WRAPPER)
MiB = 1 << 20

# Sets the open-file limit (soft and hard) and execs the rest of argv; put
# before jqtest.WRAPPER, so that valgrind too runs under the limit.
NOFILE_EXEC = ("import os, resource, sys; n = int(sys.argv[1]); "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
               "os.execvp(sys.argv[2], sys.argv[2:])")




def cpu_seconds(pid):
    """User plus system CPU time of pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read()


def is_open(conn):
    """True if the daemon has not closed conn (nothing it sent is taken)."""
    r, _, _ = select.select([conn.sock], [], [], 0)
    if not r:
        return True
    try:
        return conn.sock.recv(1, socket.MSG_PEEK) != b""
    except (ConnectionResetError, BrokenPipeError):
        return False


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


class LowNofile:
    """Within it, jqtest.Daemon starts joinqd with an open-file limit of n
    (soft and hard), so that joinqd cannot raise it."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.saved = jqtest.WRAPPER
        jqtest.WRAPPER = ([sys.executable, "-c", NOFILE_EXEC, str(self.n)] +
                          self.saved)

    def __exit__(self, *exc):
        jqtest.WRAPPER = self.saved
        return False


class LimitsCase(jqtest.TestCase):
    def served(self, d, existing=None, queue="probe"):
        """A fresh connection, and existing if given, are served: ping,
        put, get, task_done, qsize."""
        fresh = d.tcp()
        try:
            for c in [fresh] + ([existing] if existing else []):
                self.assertOk(c.request({"op": "ping"}))
                self.assertOk(c.request({"op": "put", "queue": queue,
                                         "item": "probe"}))
                g = c.request({"op": "get", "queue": queue, "block": False})
                self.assertOk(g)
                self.assertEqual(g["item"], "probe")
                self.assertOk(c.request({"op": "task_done",
                                         "task": g["task"]}))
                self.assertQsize(c.request({"op": "qsize", "queue": queue}),
                                 qsize=0, inflight=0)
        finally:
            fresh.close()

    def stats(self, d):
        return d.request({"op": "stats"})


# ---- max_connections ---------------------------------------------------------

class MaxConnections(LimitsCase):
    N = 5

    def accepted(self, d):
        """A fresh connection is served (not turned away); it stays open
        and is returned, or None."""
        c = d.tcp()
        try:
            r = c.request({"op": "ping"})
        except (ConnectionError, OSError):
            r = {}
        if r.get("ok"):
            return c
        c.close()
        return None

    def test_one_past_the_limit_gets_one_line_then_eof(self):
        with jqtest.Daemon("--max-connections", str(self.N)) as d:
            held = [d.tcp() for _ in range(self.N)]
            for c in held:
                self.assertOk(c.request({"op": "ping"}))
            self.assertEqual(held[0].request({"op": "stats"})["connections"],
                             self.N)
            for attempt in range(3):
                extra = d.tcp()
                line = extra.recv_line()
                self.assertIsNotNone(line, "closed without the error line")
                r = json.loads(line)
                self.assertError(r, "too_many_connections")
                self.assertIn("max_connections", r["message"])
                # exactly one line, then EOF
                self.assertEqual(extra.replies_until_close(), [])
                self.assertEqual(extra.buf, b"")
                extra.close()
            # the turned-away clients cost nothing: those held still work
            for c in held:
                self.assertOk(c.request({"op": "qsize"}))
            self.assertEqual(held[1].request({"op": "stats"})["connections"],
                             self.N)
            # closing one lets one new client in, and only one
            held.pop().close()
            new = []
            self.assertTrue(jqtest.wait_until(
                lambda: new.append(self.accepted(d)) or new[-1] is not None,
                timeout=5 * SLOW))
            late = d.tcp()
            self.assertError(late.recv(), "too_many_connections")
            late.close()
            # served() needs a slot for its fresh connection
            held.pop().close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.stats_via(new[-1])["connections"] == self.N - 1,
                timeout=5 * SLOW))
            self.served(d, existing=held[0])
            self.served(d, existing=new[-1])
            for c in held + new:
                if c:
                    c.close()

    def stats_via(self, c):
        return c.request({"op": "stats"})


# ---- out of descriptors: EMFILE ----------------------------------------------

class OutOfDescriptors(LimitsCase):
    NOFILE = 64

    def test_emfile_pauses_accepting_without_spinning(self):
        with LowNofile(self.NOFILE), \
                jqtest.Daemon("--max-connections", "1000") as d:
            self.assertIn("open-file limit", d.log(),
                          "joinqd did not warn of its low open-file limit")
            conns, stuck = [], None
            for _ in range(4 * self.NOFILE):
                c = d.tcp()
                c.send({"op": "ping"})
                try:
                    self.assertOk(c.recv(timeout=1.0 * SLOW))
                except TimeoutError:
                    stuck = c
                    break
                except ConnectionResetError:
                    # valgrind keeps the top descriptors for itself: an
                    # accept() landing there is closed (a reset) and
                    # reported to joinqd as EMFILE.  The next client waits.
                    if not UNDER_TOOL:
                        raise
                    c.close()
                    stuck = d.tcp()
                    stuck.send({"op": "ping"})
                    break
                conns.append(c)
            self.assertIsNotNone(stuck, "never ran out of descriptors with "
                                 "a limit of %d" % self.NOFILE)
            self.assertTrue(jqtest.wait_until(
                lambda: "cannot accept" in d.log(), timeout=2 * SLOW),
                "no accept error logged:\n" + d.log()[-2000:])
            jqtest.diag("EMFILE after %d clients (open-file limit %d)"
                 % (len(conns), self.NOFILE))
            self.assertGreater(len(conns), self.NOFILE // 2)

            # out of descriptors, the daemon must not spin on its listener
            pid = d.proc.pid
            cpu0 = cpu_seconds(pid)
            time.sleep(2)
            used = cpu_seconds(pid) - cpu0
            jqtest.diag("CPU time over 2 s while out of descriptors: %.3f s" % used)
            self.assertLess(used, 0.3, "joinqd spins while out of descriptors")
            if UNDER_TOOL:
                # valgrind resets every client that an accept() hands it
                # past its own descriptors, so none can wait: a fresh one
                # stands for it once descriptors are freed (below).
                stuck.close()
            else:
                self.assertTrue(is_open(stuck))

            # the clients it holds keep working (no fresh one can come in)
            for c in (conns[0], conns[-1]):
                self.assertOk(c.request({"op": "put", "queue": "e",
                                         "item": 1}))
                g = c.request({"op": "get", "queue": "e", "block": False})
                self.assertOk(g)
                self.assertOk(c.request({"op": "task_done",
                                         "task": g["task"]}))
                self.assertQsize(c.request({"op": "qsize", "queue": "e"}),
                                 qsize=0, unfinished=0)
                self.assertOk(c.request({"op": "ping"}))

            # descriptors freed: the waiting client is taken within ~2 s
            for c in conns[-5:]:
                c.close()
            del conns[-5:]
            start = time.monotonic()
            if UNDER_TOOL:
                time.sleep(1.5)   # the listener's pause runs out
                stuck = d.tcp()
                stuck.send({"op": "ping"})
            self.assertOk(stuck.recv(timeout=3 * SLOW))
            took = time.monotonic() - start
            jqtest.diag("the waiting client was accepted %.2f s after descriptors "
                 "were freed" % took)
            self.assertLess(took, 2.5 * SLOW)
            self.served(d, existing=conns[0])
            self.served(d, existing=stuck)
            for c in conns + [stuck]:
                c.close()


    def test_emfile_with_a_metrics_client_waiting(self):
        """The /metrics listener runs out of descriptors too: it must pause
        like the queue listener, not spin (nor fill the log)."""
        with LowNofile(self.NOFILE), \
                jqtest.Daemon("--max-connections", "1000", "--metrics-listen",
                              "127.0.0.1:0") as d:
            port = int(METRICS_RE.search(d.log()).group(1))
            conns = []
            for _ in range(4 * self.NOFILE):
                c = d.tcp()
                c.send({"op": "ping"})
                try:
                    self.assertOk(c.recv(timeout=1.0 * SLOW))
                except (TimeoutError, ConnectionResetError) as e:
                    if isinstance(e, ConnectionResetError) and not UNDER_TOOL:
                        raise   # a reset only under valgrind: see above
                    c.close()
                    break
                conns.append(c)
            m = socket.create_connection(("127.0.0.1", port),
                                         timeout=jqtest.TIMEOUT)
            m.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            time.sleep(0.2)
            pid = d.proc.pid
            cpu0, log0 = cpu_seconds(pid), len(d.log())
            time.sleep(2)
            used = cpu_seconds(pid) - cpu0
            logged = len(d.log()) - log0
            jqtest.diag("metrics client waiting while out of descriptors: CPU %.3f s "
                 "over 2 s, %d bytes logged" % (used, logged))
            # the queue clients still work meanwhile
            self.assertOk(conns[0].request({"op": "qsize"}))
            self.assertLess(used, 0.3, "joinqd spins while out of "
                            "descriptors with a metrics client waiting")
            self.assertLess(logged, 4096, "the log floods while out of "
                            "descriptors")
            for c in conns[-5:]:
                c.close()
            del conns[-5:]
            if UNDER_TOOL:
                # valgrind reset it (see the test above): ask again
                m.close()
                time.sleep(1.5)
                m = socket.create_connection(("127.0.0.1", port),
                                             timeout=jqtest.TIMEOUT)
                m.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            page = b""
            while True:
                chunk = m.recv(65536)
                if not chunk:
                    break
                page += chunk
            self.assertTrue(page.startswith(b"HTTP/1.0 200"), page[:100])
            m.close()
            self.served(d, existing=conns[0])
            for c in conns:
                c.close()


# ---- frame_timeout (slowloris) -----------------------------------------------

class FrameTimeout(LimitsCase):
    def test_byte_a_fifth_of_a_second_is_closed(self):
        with jqtest.Daemon("--frame-timeout", "1") as d:
            other = d.tcp()
            self.assertOk(other.request({"op": "ping"}))
            slow = d.tcp()
            frame = jqtest.encode({"op": "put", "item": "x" * 200})
            start = time.monotonic()
            closed_after, served = None, 0
            for i in range(len(frame) - 1):   # never the LF
                if not slow.send_raw(frame[i:i + 1]):
                    closed_after = time.monotonic() - start
                    break
                r, _, _ = select.select([slow.sock], [], [], 0.2)
                if r and not is_open(slow):
                    closed_after = time.monotonic() - start
                    break
                # meanwhile others are served
                self.assertOk(other.request({"op": "ping"}, timeout=2 * SLOW))
                served += 1
                if time.monotonic() - start > 6 * SLOW:
                    break
            jqtest.diag("slowloris closed after %s s; %d round trips meanwhile"
                 % (closed_after and "%.2f" % closed_after, served))
            self.assertIsNotNone(closed_after, "a slowloris was not closed")
            self.assertGreaterEqual(closed_after, 0.8)
            self.assertLessEqual(closed_after, 3 * SLOW)
            self.assertEqual(slow.replies_until_close(), [],
                             "the partial frame got a reply")
            self.assertIn("frame_timeout", d.log())
            self.served(d, existing=other)
            self.assertQsize(d.qsize(), qsize=0)

    def test_complete_frames_sent_slowly_are_not_closed(self):
        # frame_timeout scaled: the test's own pace must stay below it
        with jqtest.Daemon("--frame-timeout", "%g" % (1 * SLOW)) as d:
            c = d.tcp()
            start = time.monotonic()
            for i in range(6):
                frame = jqtest.encode({"op": "put", "item": i, "id": i})
                third = len(frame) // 3
                for piece in (frame[:third], frame[third:2 * third],
                              frame[2 * third:]):
                    c.send_raw(piece)
                    time.sleep(0.2)     # 0.4 s a frame: below the limit
                self.assertEqual(c.recv(timeout=2 * SLOW),
                                 {"ok": True, "id": i, "task": i + 1})
                time.sleep(0.5)         # between frames: nothing started
            self.assertGreater(time.monotonic() - start, 5)
            self.assertTrue(is_open(c))
            self.assertQsize(c.request({"op": "qsize"}), qsize=6)
            self.served(d, existing=c)

    def test_each_frame_is_timed_from_its_own_start(self):
        """A pipelining client whose every write ends inside a frame: each
        frame is finished 0.3 s after it began, so none is a slowloris,
        though some frame is always unfinished.  frame_timeout is scaled:
        the test's own pace must stay below it."""
        with jqtest.Daemon("--frame-timeout", "%g" % (1 * SLOW)) as d:
            c = d.tcp()
            frames = [jqtest.encode({"op": "put", "item": i, "id": i})
                      for i in range(12)]
            c.send_raw(frames[0][:10])
            start = time.monotonic()
            for i in range(11):
                time.sleep(0.3)
                self.assertTrue(c.send_raw(frames[i][10:] +
                                           frames[i + 1][:10]))
                try:
                    r = c.recv(timeout=2 * SLOW)
                except ConnectionError:
                    self.fail("closed after %.2f s, at frame %d, though "
                              "every frame took 0.3 s: %s"
                              % (time.monotonic() - start, i,
                                 d.log().splitlines()[-2]))
                self.assertEqual(r["id"], i)
            c.send_raw(frames[11][10:])
            self.assertEqual(c.recv()["id"], 11)
            self.served(d, existing=c)

    def test_partial_frame_behind_a_blocked_request_does_not_count(self):
        with jqtest.Daemon("--frame-timeout", "1") as d:
            c = d.tcp()
            c.send({"op": "get", "queue": "b", "id": "g"})
            time.sleep(0.2)
            tail = jqtest.encode({"op": "ping", "id": "p"})
            c.send_raw(tail[:5])
            # more of it trickles in while the get waits, well past 1 s
            for i in range(5, 12):
                time.sleep(0.4)
                self.assertTrue(c.send_raw(tail[i:i + 1]))
                self.assertTrue(is_open(c), "closed while blocked")
            self.assertTrue(c.nothing_for(0.3))
            self.assertTrue(is_open(c), "closed while blocked")
            other = d.tcp()
            self.assertOk(other.request({"op": "put", "queue": "b",
                                         "item": "w"}))
            g = c.recv(timeout=2 * SLOW)
            self.assertEqual((g["id"], g["item"]), ("g", "w"))
            # unblocked: the frame behind it may now take up to 1 s
            c.send_raw(tail[12:])
            self.assertEqual(c.recv(timeout=2 * SLOW)["id"], "p")
            self.assertOk(c.request({"op": "task_done", "task": g["task"]}))
            self.served(d, existing=other)
            self.served(d, existing=c)

    def test_partial_frame_after_unblocking_is_timed(self):
        """The frame behind a blocked request is timed once it runs."""
        with jqtest.Daemon("--frame-timeout", "1") as d:
            c = d.tcp()
            c.send({"op": "get", "queue": "b", "lease": 30})
            c.send_raw(b'{"op":"pi')
            time.sleep(1.5)
            self.assertTrue(is_open(c))
            start = time.monotonic()    # before the put that unblocks it
            self.assertOk(d.request({"op": "put", "queue": "b", "item": 1}))
            self.assertOk(c.recv(timeout=2 * SLOW))
            self.assertTrue(c.closed_by_peer(timeout=4 * SLOW))
            self.assertElapsed(start, 0.7, 3)
            self.served(d)


# ---- idle_timeout ------------------------------------------------------------

class IdleTimeout(LimitsCase):
    def test_idle_closed_busy_kept(self):
        with jqtest.Daemon("--idle-timeout", "1", "--frame-timeout", "3") as d:
            idle = d.tcp()
            holder = d.tcp()          # holds a task delivered without lease
            self.assertOk(holder.request({"op": "put", "queue": "h",
                                          "item": 1}))
            task = holder.request({"op": "get", "queue": "h"})["task"]
            blocked = d.tcp()         # waits in a get
            blocked.send({"op": "get", "queue": "bq", "lease": 30})
            partial = d.tcp()         # has started a frame
            partial.send_raw(b'{"op":"ping"')
            start = time.monotonic()    # before idle's last request
            self.assertOk(idle.request({"op": "ping"}))

            self.assertTrue(idle.closed_by_peer(timeout=4 * SLOW),
                            "an idle connection was not closed")
            self.assertElapsed(start, 0.8, 3)
            time.sleep(max(0, start + 2.0 - time.monotonic()))
            self.assertTrue(is_open(holder), "closed while holding a task")
            self.assertTrue(is_open(blocked), "closed while blocked")
            self.assertTrue(is_open(partial),
                            "a partial frame closed by idle_timeout")
            self.served(d, existing=holder)

            # the partial frame is closed by frame_timeout (3 s) instead
            self.assertTrue(partial.closed_by_peer(timeout=4 * SLOW))
            self.assertElapsed(start, 2.5, 5)
            port = partial.sock.getsockname()[1]
            self.assertRegex(d.log(), r"127\.0\.0\.1:%d: a frame unfinished "
                             r"for frame_timeout" % port)
            self.assertNotRegex(d.log(), r"127\.0\.0\.1:%d: idle" % port)

            # the blocked one, its get answered (with a lease), is idle
            self.assertTrue(is_open(blocked))
            t = time.monotonic()
            self.assertOk(d.request({"op": "put", "queue": "bq", "item": 2}))
            self.assertEqual(blocked.recv(timeout=2 * SLOW)["item"], 2)
            self.assertTrue(blocked.closed_by_peer(timeout=4 * SLOW))
            self.assertElapsed(t, 0.8, 3)

            # the holder, its task done, is idle too
            self.assertTrue(is_open(holder))
            t = time.monotonic()
            self.assertOk(holder.request({"op": "task_done", "task": task}))
            self.assertTrue(holder.closed_by_peer(timeout=4 * SLOW))
            self.assertElapsed(t, 0.8, 3)
            self.assertQsize(d.qsize("h"), unfinished=0)
            self.assertQsize(d.qsize("bq"), inflight=1)   # leased: kept

            keep = d.tcp()
            self.assertOk(keep.request({"op": "ping"}))
            self.served(d, existing=keep)

    def test_tasks_finished_elsewhere_leave_it_idle(self):
        """Any client may finish or release a task: the connection it was
        delivered on then holds nothing, and is idle."""
        for how in ("task_done", "release"):
            with self.subTest(how=how), \
                    jqtest.Daemon("--idle-timeout", "1") as d:
                holder = d.tcp()
                self.assertOk(holder.request({"op": "put", "item": 1}))
                task = holder.request({"op": "get"})["task"]
                time.sleep(1.5)
                self.assertTrue(is_open(holder), "closed holding a task")
                start = time.monotonic()
                self.assertOk(d.request({"op": how, "task": task}))
                closed = holder.closed_by_peer(timeout=4 * SLOW)
                self.assertTrue(closed, "holds nothing after %s by another "
                                "client, and is never closed as idle" % how)
                self.assertElapsed(start, 0.5, 3)
                self.served(d)

    def test_unsent_output_is_not_idle(self):
        # idle_timeout scaled: once the last reply is written, reading the
        # ones still buffered must take less than it before served() asks.
        idle = 1 * SLOW
        with jqtest.Daemon("--idle-timeout", "%g" % idle) as d:
            c = d.tcp()
            reqs = [{"op": "put", "queue": "q%03d" % q, "item": q}
                    for q in range(300)]
            c.send(b"".join(jqtest.encode(r) for r in reqs))
            for _ in reqs:
                self.assertOk(c.recv())
            n = 300 if UNDER_TOOL else 1000   # 12 or 40 MiB, unread yet
            c.sock.sendall(b"".join(jqtest.encode({"op": "stats", "id": i})
                                    for i in range(n)))
            time.sleep(2.5 * idle)
            self.assertTrue(is_open(c), "closed as idle with replies unsent")
            for i in range(n):
                self.assertEqual(c.recv()["id"], i)
            self.served(d, existing=c)

    def test_default_never_closes(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "ping"}))
            time.sleep(2.5)
            self.assertTrue(is_open(c))
            self.served(d, existing=c)


# ---- max_output and output_timeout -------------------------------------------

class MaxOutput(LimitsCase):
    ITEM = 256 * 1024

    def test_a_client_that_does_not_read_costs_bounded_memory(self):
        nqueues = 1000                       # a stats reply of ~150 KiB
        nreq = 200 if UNDER_TOOL else 800    # ~30 or ~120 MiB of replies
        nitems = 40
        with jqtest.Daemon("--max-output", "1M",
                           env=jqtest.MEASURED_ENV) as d:
            pid = d.proc.pid
            existing = d.tcp()
            big = {}
            reqs = []
            for q in range(nqueues):
                reqs.append({"op": "put", "queue": "q%04d" % q, "item": q})
            for i in range(nitems):
                big[i] = "%d:" % i + "b" * self.ITEM
                reqs.append({"op": "put", "queue": "big", "item": big[i]})
            existing.send(b"".join(jqtest.encode(r) for r in reqs))
            for r in reqs:
                self.assertOk(existing.recv())
            stats_len = len(jqtest.encode(existing.request({"op": "stats"})))
            time.sleep(0.2)
            base = jqtest.rss_bytes(pid)

            # pipelined, unread: a get of a large item now and then, stats
            # otherwise (each a request of a few bytes, a reply of 150 KiB)
            reader = d.tcp()
            pipeline = []
            for i in range(nreq):
                if i % (nreq // nitems) == 0:
                    pipeline.append({"op": "get", "queue": "big",
                                     "block": False, "id": i})
                else:
                    pipeline.append({"op": "stats", "id": i})
            data = b"".join(jqtest.encode(r) for r in pipeline)
            reader.sock.sendall(data)

            peak = [base]
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    try:
                        peak[0] = max(peak[0], jqtest.rss_bytes(pid))
                    except (OSError, AssertionError):
                        return
                    stop.wait(0.02)
            w = threading.Thread(target=watch)
            w.start()
            try:
                time.sleep(1.0)
                stuck = peak[0]
                # others are served while it does not read
                self.served(d, existing=existing)
                st = existing.request({"op": "stats"})
                self.assertEqual(st["queues"]["big"]["inflight"] +
                                 st["queues"]["big"]["qsize"], nitems)
                # now it reads: every reply, in order
                start = time.monotonic()
                got = 0
                for i, req in enumerate(pipeline):
                    r = reader.recv(timeout=jqtest.TIMEOUT)
                    self.assertEqual(r["id"], i)
                    self.assertOk(r)
                    if req["op"] == "get":
                        self.assertEqual(r["item"], big[got])
                        got += 1
                        self.assertOk(existing.request(
                            {"op": "task_done", "task": r["task"]}))
                    else:
                        self.assertIn("q0999", r["queues"])
                took = time.monotonic() - start
            finally:
                stop.set()
                w.join(jqtest.TIMEOUT)
            grew = peak[0] - base
            jqtest.diag("%d replies of ~%d KiB, %d MiB in all: RSS %.1f MiB at "
                 "start, +%.1f MiB while it did not read, +%.1f MiB at "
                 "peak; read back in %.1f s"
                 % (nreq, stats_len // 1024, nreq * stats_len // MiB,
                    base / MiB, (stuck - base) / MiB, grew / MiB, took))
            self.assertEqual(got, nitems)
            self.assertLess(grew, 64 * MiB, "memory grew with unread output")
            self.assertQsize(existing.request({"op": "qsize",
                                               "queue": "big"}),
                             unfinished=0)
            self.served(d, existing=reader)

    def test_input_behind_unsent_output_is_bounded(self):
        """Large request frames that it does not execute are not all read:
        the sender stalls, the daemon's memory stays bounded."""
        pad = "p" * (128 * 1024)
        nreq = 160 if UNDER_TOOL else 640     # 20 or 80 MiB each way
        with jqtest.Daemon("--max-output", "1M", "--max-frame", "1M",
                           env=jqtest.MEASURED_ENV) as d:
            pid = d.proc.pid
            existing = d.tcp()
            self.assertOk(existing.request({"op": "ping"}))
            time.sleep(0.2)
            base = jqtest.rss_bytes(pid)
            c = d.tcp()
            data = b"".join(jqtest.encode({"op": "ping", "id": [i, pad]})
                            for i in range(nreq))
            sent = [0]
            stop = threading.Event()

            def send():
                view = memoryview(data)
                while sent[0] < len(data) and not stop.is_set():
                    _, w, _ = select.select([], [c.sock], [], 0.1)
                    if not w:
                        continue
                    try:
                        sent[0] += c.sock.send(view[sent[0]:sent[0] + 65536])
                    except (socket.timeout, BlockingIOError):
                        pass
                    except OSError:
                        return
            t = threading.Thread(target=send)
            t.start()
            try:
                time.sleep(1.5)
                stalled = sent[0]
                held = jqtest.rss_bytes(pid) - base
                self.served(d, existing=existing)
                for i in range(nreq):
                    r = c.recv(timeout=jqtest.TIMEOUT)
                    self.assertEqual(r["id"], [i, pad])
            finally:
                stop.set()
                t.join(jqtest.TIMEOUT)
            jqtest.diag("sender stalled after %.1f of %.1f MiB; RSS +%.1f MiB"
                 % (stalled / MiB, len(data) / MiB, held / MiB))
            self.assertLess(stalled, len(data) // 2,
                            "the daemon read its input without bound")
            self.assertLess(held, 48 * MiB)
            self.served(d, existing=c)

    def test_output_timeout_closes_a_client_that_never_reads(self):
        with jqtest.Daemon("--output-timeout", "1") as d:
            c = d.tcp()
            reqs = [{"op": "put", "queue": "q%03d" % q, "item": q}
                    for q in range(300)]
            c.send(b"".join(jqtest.encode(r) for r in reqs))
            for _ in reqs:
                self.assertOk(c.recv())
            self.assertOk(c.request({"op": "put", "queue": "t", "item": "x"}))
            g = c.request({"op": "get", "queue": "t"})       # no lease
            self.assertQsize(d.qsize("t"), qsize=0, inflight=1)
            # ~40 MiB of stats replies it never reads
            start = time.monotonic()
            c.sock.sendall(b'{"op":"stats"}\n' * 1000)
            back = lambda: d.qsize("t")["qsize"] == 1
            self.assertTrue(jqtest.wait_until(back, timeout=5 * SLOW),
                            "the client that never reads was not closed")
            took = time.monotonic() - start
            jqtest.diag("closed %.2f s after it stopped reading" % took)
            self.assertGreaterEqual(took, 0.9)
            self.assertLessEqual(took, 3 * SLOW)
            self.assertIn("output_timeout", d.log())
            # its task came back, and is delivered again
            self.assertQsize(d.qsize("t"), qsize=1, inflight=0, unfinished=1)
            again = d.request({"op": "get", "queue": "t", "lease": 5})
            self.assertEqual((again["task"], again["deliveries"]),
                             (g["task"], 2))
            self.assertTrue(c.closed_by_peer(timeout=5 * SLOW))
            self.served(d)

    def test_output_timeout_spares_clients_with_nothing_unsent(self):
        with jqtest.Daemon("--output-timeout", "1") as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "item": 1}))
            self.assertOk(c.request({"op": "get"}))
            b = d.tcp()
            b.send({"op": "get", "queue": "empty"})       # blocked, no output
            time.sleep(2.5)
            self.assertTrue(is_open(c))
            self.assertTrue(is_open(b))
            self.served(d, existing=c)
            self.assertQsize(c.request({"op": "qsize"}), inflight=1)

    def test_slow_steady_reader_is_not_closed(self):
        # The replies in the kernel's buffers (megabytes: its small
        # receive buffer keeps them fewer) are read, pauses included,
        # before the daemon can write again: output_timeout holds a few
        # of its pauses, both scaled, and a loaded machine's slower reads.
        # The whole read takes longer than output_timeout.
        timeout, pause = 3 * SLOW, 0.5 * SLOW
        with jqtest.Daemon("--output-timeout", "%g" % timeout, "--max-output",
                           "256k") as d:
            c = jqtest.Conn(d.host, d.port, rcvbuf=64 * 1024)
            reqs = [{"op": "put", "queue": "q%03d" % q, "item": q}
                    for q in range(300)]
            c.send(b"".join(jqtest.encode(r) for r in reqs))
            for _ in reqs:
                self.assertOk(c.recv())
            n = 400          # ~16 MiB of replies
            c.sock.sendall(b''.join(jqtest.encode({"op": "stats", "id": i})
                                    for i in range(n)))
            start = time.monotonic()
            # takes about 1.5 MiB, then pauses: slow, but never stops
            for i in range(n):
                r = c.recv(timeout=jqtest.TIMEOUT)
                self.assertEqual(r["id"], i)
                if i % 40 == 39:
                    time.sleep(pause)
            jqtest.diag("a slow reader took %d replies in %.1f s"
                 % (n, time.monotonic() - start))
            self.assertNotIn("output_timeout", d.log())
            self.served(d, existing=c)


# ---- UDP: udp_allow, floods, replies to the sender ----------------------------

METRICS_RE = re.compile(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")


def metrics(d):
    port = int(METRICS_RE.search(d.log()).group(1))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=jqtest.TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


class UdpAllow(LimitsCase):
    def test_sender_outside_the_list_is_dropped_and_counted(self):
        with jqtest.Daemon("--udp-allow", "10.0.0.0/8", "--metrics-listen",
                           "127.0.0.1:0") as d:
            tcp = d.tcp()
            u = d.udp()
            reqs = [{"op": "ping"}, {"op": "put", "item": 1},
                    {"op": "qsize"}, {"op": "bogus"}, b"{not json\n"]
            for r in reqs:
                u.send(r)
                self.assertTrue(u.nothing_for(0.5),
                                "a denied sender got a reply to %r" % (r,))
            self.assertTrue(jqtest.wait_until(
                lambda: self.stats(d)["udp_denied"] == len(reqs),
                timeout=2 * SLOW), self.stats(d))
            self.assertQsize(d.qsize(), qsize=0, unfinished=0)
            self.assertNotIn("default", self.stats(d)["queues"])
            self.assertRegex(metrics(d), r"(?m)^joinq_udp_denied_total %d$"
                             % len(reqs))
            self.served(d, existing=tcp)

    def test_star_serves_everyone(self):
        for allow in ("*", "127.0.0.1", "10.0.0.0/8 127.0.0.0/8"):
            with self.subTest(allow=allow), \
                    jqtest.Daemon("--udp-allow", allow) as d:
                u = d.udp()
                self.assertOk(u.request({"op": "put", "item": 1}))
                self.assertEqual(u.request({"op": "get"})["item"], 1)
                self.assertEqual(self.stats(d)["udp_denied"], 0)
                self.served(d)

    def test_empty_list_does_not_admit_everyone(self):
        """udp_allow names the senders served: an empty list must not
        serve every sender ("*" is how to say that).  joinqd may refuse
        it at start, or serve no one."""
        for how in ("flag", "config"):
            with self.subTest(how=how):
                if how == "flag":
                    d = jqtest.Daemon("--udp-allow", "")
                else:
                    d = jqtest.Daemon(config="udp_allow =\n")
                try:
                    d.start()
                except RuntimeError as e:     # refused: fine
                    d.errfile.close()
                    d.tmp.cleanup()
                    self.assertIn("udp_allow", str(e))
                    continue
                try:
                    u = d.udp()
                    u.send({"op": "ping"})
                    self.assertTrue(u.nothing_for(0.5), "an empty udp_allow "
                                    "serves every sender")
                finally:
                    d.__exit__(None, None, None)

    def test_replies_go_only_to_the_sender(self):
        with jqtest.Daemon() as d:
            a, b = d.udp(), d.udp()
            for i in range(50):
                a.send({"op": "ping", "id": "A%d" % i})
                b.send({"op": "qsize", "id": "B%d" % i})
            for sock, tag in ((a, "A"), (b, "B")):
                ids = []
                while not sock.nothing_for(0.5 * SLOW):
                    ids.append(sock.recv(1)["id"])
                self.assertEqual(sorted(ids), sorted("%s%d" % (tag, i)
                                                     for i in range(50)))
            # a parked request answers its own sender, however woken
            a.send({"op": "get", "queue": "w", "timeout": 5 * SLOW,
                    "id": "A-get"})
            time.sleep(0.2)
            b.send({"op": "put", "queue": "w", "item": "v", "id": "B-put"})
            self.assertEqual(b.recv()["id"], "B-put")
            r = a.recv()
            self.assertEqual((r["id"], r["item"]), ("A-get", "v"))
            self.assertTrue(a.nothing_for(0.3))
            self.assertTrue(b.nothing_for(0.3))
            self.served(d)


class UdpFlood(LimitsCase):
    SECONDS = 2.0

    def test_flood_does_not_starve_tcp(self):
        with jqtest.Daemon() as d:
            tcp = d.tcp()
            self.assertOk(tcp.request({"op": "ping"}))
            stop = threading.Event()
            sent = [0]
            frames = [b'{"op":"ping"}', b'{"op":"qsize","queue":"f"}',
                      b'{"op":"stats"}', b'{not json', b'{"op":"nope"}',
                      b'{"op":"get","queue":"f","block":false}']

            def flood():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                n = 0
                try:
                    while not stop.is_set():
                        try:
                            s.sendto(frames[n % len(frames)],
                                     ("127.0.0.1", d.port))
                            n += 1
                        except (BlockingIOError, ConnectionRefusedError):
                            time.sleep(0)
                finally:
                    sent[0] = n
                    s.close()
            t = threading.Thread(target=flood)
            t.start()
            lat = []
            try:
                time.sleep(0.1)
                end = time.monotonic() + self.SECONDS
                i = 0
                while time.monotonic() < end:
                    for req in ({"op": "put", "queue": "lat", "item": i},
                                {"op": "get", "queue": "lat",
                                 "block": False}, None, {"op": "qsize",
                                                         "queue": "lat"}):
                        if req is None:
                            req = {"op": "task_done", "task": r["task"]}
                        t0 = time.monotonic()
                        r = tcp.request(req, timeout=5 * SLOW)
                        lat.append(time.monotonic() - t0)
                        self.assertOk(r)
                    i += 1
            finally:
                stop.set()
                t.join(jqtest.TIMEOUT)
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            jqtest.diag("UDP flood: %d datagrams in %.1f s; %d TCP round trips: "
                 "p50 %.2f ms, p99 %.2f ms, max %.2f ms"
                 % (sent[0], self.SECONDS, len(lat), p50 * 1e3, p99 * 1e3,
                    max(lat) * 1e3))
            self.assertGreater(sent[0], 1000)
            # Starved, the TCP client would time out (5 * SLOW) or make a
            # handful of round trips; how fast each is depends on the
            # machine's load, so the latencies are reported, not judged.
            self.assertGreater(len(lat), 20 / SLOW)
            self.assertEqual(d.proc.poll(), None)
            # The flood's last datagrams may still fill the socket's
            # buffer, where the kernel drops what comes: ask again.
            u = d.udp()
            for attempt in range(5):
                try:
                    self.assertOk(u.request({"op": "ping"}, timeout=SLOW))
                    break
                except TimeoutError:
                    if attempt == 4:
                        raise
            self.assertQsize(d.qsize("lat"), qsize=0, unfinished=0)
            self.served(d, existing=tcp)


# ---- the auth token stays secret ---------------------------------------------

TOKEN = "Tok-9f3a1c77e2-secret"


class TokenSecret(LimitsCase):
    def test_tokens_never_logged_nor_shown(self):
        wrong = ["WrongTok-%02d-zq" % i for i in range(12)]
        d = jqtest.Daemon("--metrics-listen", "127.0.0.1:0")
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        with d:
            c = d.tcp()
            self.assertError(c.request({"op": "auth", "token": wrong[0]}),
                             "unauthorized")
            self.assertError(c.request({"op": "put", "item": 1,
                                        "token": wrong[1]}), "unauthorized")
            self.assertError(c.request({"op": "bogus", "token": wrong[2],
                                        "queue": "bad queue"}),
                             "unauthorized")
            self.assertError(c.request({"op": "auth", "token": [wrong[3]]}),
                             "unauthorized")
            self.assertError(c.request(b'{"op":"auth","token":"%s"\n'
                                       % wrong[4].encode()), "bad_json")
            self.assertError(c.request(b'{"op":"auth","token":"%s\xff"}\n'
                                       % wrong[5].encode()), "bad_utf8")
            self.assertError(c.request({"op": "auth", "token": wrong[6],
                                        "timeout": -1}), "unauthorized")
            self.assertOk(c.request({"op": "auth", "token": TOKEN}))
            # authorised: a wrong token still fails and is not logged
            self.assertError(c.request({"op": "auth", "token": wrong[7]}),
                             "unauthorized")
            self.assertError(c.request({"op": "qsize", "token": wrong[8]}),
                             "unauthorized")
            self.assertError(c.request({"op": "put", "token": TOKEN}),
                             "bad_request")
            self.assertOk(c.request({"op": "put", "item": "i"}))
            u = d.udp()
            self.assertError(u.request({"op": "auth", "token": wrong[9]}),
                             "unauthorized")
            self.assertError(u.request({"op": "qsize", "token": wrong[10]}),
                             "unauthorized")
            self.assertOk(u.request({"op": "qsize", "token": TOKEN}))
            big = d.tcp()
            big.send_raw(b'{"op":"auth","token":"%s' % wrong[11].encode() +
                         b"x" * (1 << 20) + b'"}\n')
            self.assertError(big.recv(), "frame_too_large")

            c.send({"op": "stats"})
            line = c.recv_line()
            self.assertOk(json.loads(line))
            page = metrics(d)
            argv = cmdline(d.proc.pid)
            log = d.log()
            for secret in wrong + [TOKEN]:
                with self.subTest(secret=secret):
                    self.assertNotIn(secret, log)
                    self.assertNotIn(secret.encode(), line)
                    self.assertNotIn(secret, page)
                    self.assertNotIn(secret.encode(), argv)
            self.assertIn("unauthorized", log, "the failures are logged")
            self.served_with_token(d, c)

    def served_with_token(self, d, existing):
        fresh = d.tcp()
        self.assertOk(fresh.request({"op": "auth", "token": TOKEN}))
        for c in (fresh, existing):
            self.assertOk(c.request({"op": "put", "queue": "p", "item": 1}))
            g = c.request({"op": "get", "queue": "p", "block": False})
            self.assertOk(c.request({"op": "task_done", "task": g["task"]}))
            self.assertQsize(c.request({"op": "qsize", "queue": "p"}),
                             unfinished=0)
            self.assertOk(c.request({"op": "ping"}))
        fresh.close()

    def test_cli_token_not_in_its_argv(self):
        d = jqtest.Daemon()
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        with d:
            path = d.file("cli-token", TOKEN + "\n")
            for how, args, env in (
                    ("--token-file", ["--token-file", path], {}),
                    ("JOINQ_TOKEN", [], {"JOINQ_TOKEN": TOKEN})):
                # (the CLI's get leaves the task undone: it comes back)
                queue = "cli-" + how.strip("-")
                with self.subTest(how=how):
                    p = d.cli_start(*args, "-q", queue, "get", "--timeout",
                                    str(10 * SLOW), env=env)
                    try:
                        self.assertTrue(jqtest.wait_until(
                            lambda: self.waiting_in_get(d), timeout=5 * SLOW))
                        argv = cmdline(p.pid)
                        self.assertNotIn(TOKEN.encode(), argv)
                        self.assertIn(b"get", argv)
                        self.assertOk(d.request({"op": "put", "queue": queue,
                                                 "item": how,
                                                 "token": TOKEN}))
                        out, err = p.communicate(timeout=jqtest.TIMEOUT)
                    finally:
                        if p.poll() is None:
                            p.kill()
                            p.communicate()
                    self.assertEqual(p.returncode, 0, err)
                    self.assertEqual(out.strip(), how)
                    self.assertNotIn(TOKEN, out + err)
                    r = d.cli(*args, "qsize", env=env)
                    self.assertEqual(r.returncode, 0, r.stderr)
            # a wrong token from the CLI is not echoed either
            r = d.cli("put", "x", env={"JOINQ_TOKEN": "WrongCliTok-77"})
            self.assertEqual(r.returncode, 1)
            self.assertNotIn("WrongCliTok-77", r.stdout + r.stderr)
            self.assertNotIn("WrongCliTok-77", d.log())
            self.assertNotIn(TOKEN, d.log())

    def waiting_in_get(self, d):
        # the CLI connected and its get waits: one more connection
        st = d.request({"op": "stats", "token": TOKEN})
        return st["connections"] >= 2


if __name__ == "__main__":
    jqtest.main()
