"""The Python client, client/python/joinq (issue 13), against the real
joinqd: the standard library's queue behaviour (Full, Empty, timeouts,
ValueError), items as JSON and pickle as an opt-in, processes (fork,
spawn, forkserver, Pool) and threads, fork safety, task_done batched with
the next request (counted in writes), deferred errors, put_many,
consume(), q.task(), release and leases, the token, UDP, declare, purge
and delete, several addresses, and joinq.aio (cancellation included).
"""
import asyncio
import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import jqtest
import tlscerts

SRCDIR = os.environ.get("JOINQ_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
PYDIR = os.path.join(SRCDIR, "client", "python")
sys.path.insert(0, PYDIR)

import joinq                    # noqa: E402 - from the source tree
import joinq.aio                # noqa: E402
import joinq.net                # noqa: E402
from test_failover import FakeDaemon, dead_address   # noqa: E402

TIMEOUT = jqtest.TIMEOUT
SLOW = jqtest.SLOW


# ---- what child processes run (module level, so that spawn finds them) ------

def eater(q):
    """The seeds' eater: takes dishes for ever."""
    while True:
        dish = q.get()
        q.task_done()
        if dish is None:
            return


def eat_n(q, n, results):
    """Takes n items, puts each on results, finishes each."""
    for _ in range(n):
        results.put(q.get())
        q.task_done()


def pool_worker(args):
    """A Pool-shaped worker: the queue comes pickled with each call."""
    q, results = args
    with q.task() as item:
        results.put(item * 2)
    return os.getpid()


def task_done_then_sleep(q, done):
    q.get()
    q.task_done()
    done.set()
    time.sleep(60)                  # terminated before this ends


def get_and_task_done(q):
    q.get()
    q.task_done()
    return os.getpid()


def put_from_child(q, items):
    for item in items:
        q.put(item)


class Counter:
    """Counts the writes joinq makes on its TCP connections (each exchange
    is one write), by wrapping TcpConnection.send."""

    def __init__(self):
        self.writes = 0

    def __enter__(self):
        self.real = joinq.net.TcpConnection.send
        counter = self

        def send(conn, data, timeout):
            counter.writes += 1
            return counter.real(conn, data, timeout)
        joinq.net.TcpConnection.send = send
        return self

    def __exit__(self, *exc):
        joinq.net.TcpConnection.send = self.real
        return False


class WithDaemon(jqtest.TestCase):
    """One daemon for the class; each test has queues of its own name.
    ARGS: the daemon's options."""

    ARGS = ("--queue", "bounded:2")

    @classmethod
    def setUpClass(cls):
        cls.d = jqtest.Daemon(*cls.ARGS).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def name(self, suffix=""):
        return self.id().rsplit(".", 1)[-1][5:60] + suffix

    def q(self, name=None, cls=None, **kw):
        """A queue of this test on the class's daemon, closed at its end."""
        kw.setdefault("host", self.d.host)
        kw.setdefault("port", self.d.port)
        q = (cls or joinq.JoinableQueue)(name or self.name(), **kw)
        self.addCleanup(self.close_quietly, q)
        return q

    @staticmethod
    def close_quietly(q):
        try:
            q.close()
        except joinq.Error:
            pass

    def figures(self, name=None):
        """The daemon's qsize reply for the queue (another connection)."""
        return self.qsize_of(self.d, name or self.name())

    def wait_figure(self, key, value, name=None):
        self.assertTrue(jqtest.wait_until(
            lambda: self.figures(name)[key] == value, TIMEOUT),
            "%s never %r: %r" % (key, value, self.figures(name)))


# ---- the standard library's behaviour ---------------------------------------

class Stdlib(WithDaemon):
    def test_put_get_fifo_and_sizes(self):
        q = self.q()
        self.assertEqual(q.maxsize, 0)
        self.assertTrue(q.empty())
        self.assertFalse(q.full())
        for item in (111, 333, 222):
            q.put(item)
        self.assertEqual(q.qsize(), 3)
        self.assertFalse(q.empty())
        self.assertEqual([q.get(), q.get(), q.get()], [111, 333, 222])
        self.assertEqual(q.qsize(), 0)
        q.put("seen at once")                 # by any later call
        self.assertEqual(q.get_nowait(), "seen at once")

    def test_full_where_python_raises_it(self):
        q = self.q("bounded")
        q.put(1)
        q.put_nowait(2)
        self.assertTrue(q.full())
        with self.assertRaises(queue.Full):
            q.put_nowait(3)
        with self.assertRaises(queue.Full):
            q.put(3, block=0)
        start = time.monotonic()
        with self.assertRaises(queue.Full):
            q.put(3, timeout=0.05)
        self.assertElapsed(start, 0.05, TIMEOUT)
        with self.assertRaises(queue.Full):
            q.put(3, block=False, timeout=-1)   # timeout ignored, as in Python
        # A blocking put waits for room that a get in a thread makes.
        other = self.q("bounded")
        t = threading.Timer(0.05, lambda: (other.get(), other.task_done()))
        t.start()
        q.put(3, timeout=TIMEOUT)
        t.join()
        self.assertEqual([q.get(), q.get()], [2, 3])
        q.task_done()
        q.task_done()
        q.join(timeout=TIMEOUT)

    def test_empty_where_python_raises_it(self):
        q = self.q()
        with self.assertRaises(queue.Empty):
            q.get_nowait()
        with self.assertRaises(queue.Empty):
            q.get(False)
        with self.assertRaises(queue.Empty):
            q.get(block=False, timeout=-1)
        start = time.monotonic()
        with self.assertRaises(queue.Empty):
            q.get(timeout=0.05)
        self.assertElapsed(start, 0.05, TIMEOUT)
        t = threading.Timer(0.05, q.put, ("late",))
        t.start()
        self.assertEqual(q.get(timeout=TIMEOUT), "late")
        t.join(TIMEOUT)

    def test_negative_timeout_is_value_error(self):
        q = self.q()
        for call in (lambda: q.put(1, timeout=-1),
                     lambda: q.get(1, timeout=-1),
                     lambda: q.join(timeout=-0.5),
                     lambda: q.get(lease=0),
                     lambda: q.consume(timeout=-1)):
            with self.assertRaises(ValueError):
                call()
        self.assertEqual(self.figures()["unfinished"], 0)

    def test_task_done_counts_like_python(self):
        q = self.q()
        with self.assertRaises(ValueError):
            q.task_done()
        q.put_many(range(3))
        q.get()
        q.get()
        q.task_done()
        q.task_done()
        with self.assertRaises(ValueError):
            q.task_done()
        with self.assertRaises(joinq.JoinTimeout) as cm:
            q.join(timeout=0.05)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertEqual(cm.exception.code, "timeout")
        q.get()
        q.task_done()
        q.join(timeout=TIMEOUT)

    def test_join_waits_for_threads_as_in_python(self):
        q = self.q()
        total = []
        workers = [threading.Thread(target=lambda: [
            (total.append(q.get()), q.task_done()) for _ in range(50)])
            for _ in range(2)]
        for w in workers:
            w.start()
        q.put_many(range(100))
        q.join(timeout=TIMEOUT)
        self.assertEqual(sorted(total), list(range(100)))
        for w in workers:
            w.join(TIMEOUT)
        q.join()                       # twice, as Python allows

    def test_queue_finishes_what_it_gets(self):
        """joinq.Queue is multiprocessing.Queue: a get removes the item."""
        q = self.q(cls=joinq.Queue)
        self.assertFalse(hasattr(q, "task_done"))
        self.assertFalse(hasattr(q, "join"))
        q.put("a")
        self.assertEqual(q.get(), "a")
        q.close()
        self.assertQsize(self.figures(), qsize=0, unfinished=0)

    def test_close_ends_a_get_waiting_in_another_thread(self):
        q = self.q()
        errors = []

        def get():
            try:
                q.get(timeout=TIMEOUT)
            except joinq.ConnectionLost as e:
                errors.append(e)
        t = threading.Thread(target=get)
        t.start()
        self.assertTrue(jqtest.wait_until(
            lambda: self.d.request({"op": "stats"})["queues"].get(
                self.name(), {}).get("waiting_gets") == 1))
        q.close()
        t.join(TIMEOUT)
        self.assertEqual(len(errors), 1)

    def test_close_gives_back_what_it_holds(self):
        q = self.q()
        q.put_many(["held", "finished"])
        held, finished = q.get_task(), q.get_task()
        q.task_done(finished)
        q.close()
        q.close()                        # twice is fine
        with self.assertRaises(ValueError):
            q.put(1)
        with self.assertRaises(ValueError):
            q.qsize()
        self.wait_figure("qsize", 1)
        self.assertEqual(self.q().get_task(), held._replace(deliveries=2))


class Items(WithDaemon):
    def test_json_values_round_trip_a_tuple_as_a_list(self):
        q = self.q()
        values = [None, True, 0, -7, 2 ** 60, 1.5, "é\u0000\U0001f600",
                  [1, [2]], {"a": {"b": None}}]
        q.put_many(values)
        self.assertEqual([q.get() for _ in values], values)
        q.put((1, (2, 3)))
        self.assertEqual(q.get(), [1, [2, 3]])
        q.put({1: "x"})
        self.assertEqual(q.get(), {"1": "x"})

    def test_what_json_cannot_hold_is_a_type_error_at_put(self):
        q = self.q()
        for bad in (object(), b"bytes", {1, 2}, float("nan"), "\ud800",
                    {(1, 2): 3}):
            with self.subTest(bad=bad):
                with self.assertRaises(TypeError) as cm:
                    q.put(bad)
                self.assertIn("JSON", str(cm.exception))
        with self.assertRaises(TypeError) as cm:
            q.put_many([1, 2, object()])
        self.assertEqual(len(cm.exception.tasks), 2)
        self.assertEqual(self.figures()["qsize"], 2)

    def test_pickle_is_opt_in(self):
        q = self.q(serializer="pickle")
        q.put(Point(1, 2))
        q.put({"set": {1, 2}, "bytes": b"\x00"})
        self.assertEqual(q.get(), Point(1, 2))
        self.assertEqual(q.get(), {"set": {1, 2}, "bytes": b"\x00"})
        # Another client sees a JSON object; plain JSON comes back as is.
        q.put((1, 2))
        raw = self.q().get()
        self.assertEqual(list(raw), ["pickle"])
        q.put_nowait("a")
        self.q().put("plain")
        self.assertEqual(q.get(), "a")
        self.assertEqual(q.get(), "plain")
        self.assertIn("runs code", joinq.PickleSerializer.__doc__)
        with self.assertRaises(TypeError):
            self.q(serializer="marshal")


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)


# ---- processes and threads --------------------------------------------------

class Processes(WithDaemon):
    def test_seeds_cook_and_eaters(self):
        """The seeds' program with only the import changed: a cook puts
        dishes, two eater processes take them, the main program joins."""
        from joinq import JoinableQueue
        from multiprocessing import Process
        q = JoinableQueue(self.name(), host=self.d.host, port=self.d.port)
        self.addCleanup(q.close)
        eaters = [Process(target=eater, args=(q,), daemon=True)
                  for _ in range(2)]
        for p in eaters:
            p.start()
        for n in range(1, 21):
            q.put("dish %d" % n)
        q.join(timeout=TIMEOUT)
        self.assertQsize(self.figures(), unfinished=0)
        for _ in eaters:
            q.put(None)
        for p in eaters:
            p.join(TIMEOUT)
            self.assertEqual(p.exitcode, 0)
        self.assertEqual(self.d.request({"op": "stats"})["queues"][
            self.name()]["task_dones"], 22)

    def test_pickled_to_process_under_each_start_method(self):
        for method in ("fork", "spawn", "forkserver"):
            with self.subTest(method=method):
                ctx = multiprocessing.get_context(method)
                q = self.q(self.name(method))
                results = self.q(self.name(method + ".out"))
                p = ctx.Process(target=eat_n, args=(q, 3, results))
                p.start()
                q.put_many(["a", (1, 2), {"k": method}])
                q.join(timeout=TIMEOUT)
                p.join(TIMEOUT)
                self.assertEqual(p.exitcode, 0)
                self.assertEqual([results.get(timeout=TIMEOUT)
                                  for _ in range(3)],
                                 ["a", [1, 2], {"k": method}])

    def test_a_child_that_puts_and_exits_leaves_every_item(self):
        for method in ("fork", "spawn"):
            with self.subTest(method=method):
                q = self.q(self.name(method))
                p = multiprocessing.get_context(method).Process(
                    target=put_from_child, args=(q, range(300)))
                p.start()
                p.join(TIMEOUT)
                self.assertEqual(p.exitcode, 0)
                self.assertEqual(q.qsize(), 300)

    def test_pool_worker_loop(self):
        q = self.q()
        results = self.q(self.name(".out"), cls=joinq.Queue)
        q.put_many(range(6))
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            pids = pool.map(pool_worker, [(q, results)] * 6)
        self.assertNotIn(os.getpid(), pids)
        q.join(timeout=TIMEOUT)
        self.assertEqual(sorted(results.get(timeout=TIMEOUT)
                                for _ in range(6)), [0, 2, 4, 6, 8, 10])

    def test_a_process_terminated_after_task_done_leaves_it_done(self):
        """task_done() is written before it returns, as Python's is
        synchronous: Process.terminate() right after it loses nothing."""
        q = self.q(linger=60)            # no flusher to rescue it
        q.put("x")
        ctx = multiprocessing.get_context("fork")
        done = ctx.Event()
        p = ctx.Process(target=task_done_then_sleep, args=(q, done))
        p.start()
        self.assertTrue(done.wait(TIMEOUT))
        p.terminate()
        p.join(TIMEOUT)
        q.join(timeout=TIMEOUT)

    def test_a_pool_block_leaves_its_task_dones_done(self):
        """The end of a with Pool() block terminates the workers right
        after map returns: their last task_done is on the daemon."""
        q = self.q(linger=60)
        for _ in range(3):      # a worker may end by itself first
            q.put_many(range(4))
            with multiprocessing.get_context("fork").Pool(2) as pool:
                pool.map(get_and_task_done, [q] * 4)
            q.join(timeout=TIMEOUT)

    def test_pickle_is_the_name_and_address(self):
        q = self.q(token=None, linger=0.5, serializer="pickle")
        q2 = pickle.loads(pickle.dumps(q))
        self.assertIsNot(q2, q)
        self.assertEqual((q2.name, q2.maxsize, type(q2)),
                         (q.name, q.maxsize, joinq.JoinableQueue))
        self.assertEqual(q2._settings, q._settings)
        q.put(Point(3, 4))
        self.assertEqual(q2.get(), Point(3, 4))
        import ssl
        with self.assertRaises(TypeError):
            pickle.dumps(self.q(ssl=ssl.create_default_context()))


class Threads(WithDaemon):
    def test_threads_share_one_object(self):
        q = self.q()
        got = []
        lock = threading.Lock()

        def consume():
            for _ in range(25):
                item = q.get(timeout=TIMEOUT)
                with lock:
                    got.append(item)
                q.task_done()
        threads = [threading.Thread(target=consume) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(100):
            q.put(i)
        q.join(timeout=TIMEOUT)
        for t in threads:
            t.join(TIMEOUT)
        self.assertEqual(sorted(got), list(range(100)))

    def test_a_blocked_get_holds_only_its_own_connection(self):
        q = self.q()
        got = []
        blocked = [threading.Thread(target=lambda: got.append(
            q.get(timeout=TIMEOUT))) for _ in range(3)]
        for t in blocked:
            t.start()
        self.assertTrue(jqtest.wait_until(
            lambda: self.d.request({"op": "stats"})["queues"].get(
                self.name(), {}).get("waiting_gets") == 3))
        # Meanwhile the same object answers at once.
        self.assertEqual(q.qsize(), 0)
        q.put_many([1, 2, 3])
        for t in blocked:
            t.join(TIMEOUT)
        self.assertEqual(sorted(got), [1, 2, 3])


class ForkSafety(WithDaemon):
    def fork(self, child):
        """Runs child() in a forked process; its exit status (0: passed).
        Forking with threads running is the point here (Python 3.12 warns
        of it)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child()
                code = 0
            except BaseException:                       # noqa: BLE001
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def test_child_leaves_a_held_task_with_the_parent(self):
        q = self.q()
        q.put_many(["parent's", "child's"])
        self.assertEqual(q.get(), "parent's")        # held, no lease

        def child():
            with self.assertRaises(ValueError):
                q.task_done()                         # nothing of its own
            assert q.get() == "child's"
            q.task_done()
            q.put("from the child")
            q.close()
        self.assertEqual(self.fork(child), 0)
        # The parent's task is still in flight on its connection, which
        # the child neither used nor shut down.
        self.assertQsize(self.figures(), qsize=1, inflight=1)
        q.task_done()
        self.assertEqual(q.get(), "from the child")
        q.task_done()
        q.join(timeout=TIMEOUT)

    def test_child_works_while_the_parent_is_blocked_mid_get(self):
        q = self.q()
        got = []
        t = threading.Thread(target=lambda: got.append(q.get(timeout=TIMEOUT)))
        t.start()
        self.assertTrue(jqtest.wait_until(
            lambda: self.d.request({"op": "stats"})["queues"].get(
                self.name(), {}).get("waiting_gets") == 1))

        def child():
            other = self.q(self.name(".child"), port=self.d.port)
            assert q.qsize() == 0
            other.put("not for the parent")
            q.put("for the parent")
        self.assertEqual(self.fork(child), 0)
        t.join(TIMEOUT)
        self.assertEqual(got, ["for the parent"])
        q.task_done()
        self.assertEqual(q.qsize(), 0)


# ---- the speed that is free -------------------------------------------------

class Batching(WithDaemon):
    def test_task_done_costs_no_round_trip(self):
        n = 50
        q = self.q(linger=60)            # the flusher out of the way
        q.put_many(range(n))
        with Counter() as c:
            for _ in range(n):
                q.get()
                q.task_done()
            # One round trip per task: the task_done is written at once,
            # its reply read with the next get's.
            self.assertEqual(c.writes, 2 * n)
            q.close()                             # reads the last reply
            self.assertEqual(c.writes, 2 * n + 1)
        self.assertQsize(self.figures(), unfinished=0)
        self.assertEqual(self.d.request({"op": "stats"})["queues"][
            self.name()]["task_dones"], n)

    def test_an_idle_consumer_does_not_hold_up_join(self):
        q = self.q()                     # linger 1 ms
        q.put("only")
        q.get()
        q.task_done()                    # and nothing more from q
        start = time.monotonic()
        self.q().join(timeout=TIMEOUT)
        self.assertElapsed(start, 0, TIMEOUT)

    def test_puts_on_an_unbounded_queue_do_not_wait(self):
        """A blocking put on an unbounded queue returns once written (as
        multiprocessing's put returns before its feeder thread writes);
        the next other call reads the replies first."""
        q = self.q()
        with Counter() as c:
            for i in range(100):
                q.put(i)
            self.assertEqual(c.writes, 100)   # the first asks qsize too
            self.assertEqual(q.qsize(), 100)
            self.assertEqual(c.writes, 101)
        self.assertEqual(q.get(), 0)
        q.task_done()
        bounded = self.q("bounded")           # learnt with the first put
        bounded.put(1)
        bounded.put(2)
        other = self.q("bounded")
        t = threading.Timer(0.05, lambda: [(other.get(), other.task_done())
                                           for _ in range(2)])
        t.start()
        start = time.monotonic()
        bounded.put(3)                        # waits for room
        self.assertElapsed(start, 0.04, TIMEOUT)
        t.join(TIMEOUT)
        self.assertEqual(bounded.get(), 3)
        bounded.task_done()
        bounded.join(timeout=TIMEOUT)

    def test_a_put_that_did_not_wait_reports_its_failure(self):
        d = jqtest.Daemon("--max-frame", "1000").start()
        self.addCleanup(d.__exit__, None, None, None)
        q = joinq.JoinableQueue("big", host=d.host, port=d.port)
        self.addCleanup(self.close_quietly, q)
        q.put("small")                        # learns: unbounded
        q.put("x" * 2000)                     # refused: frame_too_large
        q.put("behind it")                    # the daemon closes first
        with self.assertRaises(joinq.PutError) as cm:
            q.qsize()
        self.assertEqual(cm.exception.code, "frame_too_large")
        self.assertIsInstance(cm.exception, joinq.DeferredError)
        with self.assertRaises(joinq.PutError) as cm:
            q.qsize()
        self.assertIsNone(cm.exception.code)  # may or may not be queued
        self.assertEqual(q.qsize(), 1)

    def test_put_many_pipelines(self):
        q = self.q()
        with Counter() as c:
            tasks = q.put_many("item %d" % i for i in range(1200))
        self.assertEqual(c.writes, 3)          # 512 requests a write
        self.assertEqual(len(tasks), 1200)
        self.assertEqual(tasks, sorted(tasks))
        self.assertEqual(q.qsize(), 1200)

    def test_put_many_failure_says_what_was_queued(self):
        q = self.q("bounded")
        with self.assertRaises(queue.Full) as cm:
            q.put_many(["a", "b", "c", "d"], block=False)
        tasks = cm.exception.tasks
        self.assertEqual([t is not None for t in tasks],
                         [True, True, False, False])
        self.assertEqual(q.get(), "a")
        self.assertEqual(q.get(), "b")
        q.task_done()
        q.task_done()

    def test_consume_prefetches_and_finishes_as_it_goes(self):
        q = self.q()
        q.put_many(range(200))
        seen = []
        with Counter() as c:
            for item in q.consume(prefetch=64, timeout=0):
                seen.append(item)
        self.assertEqual(seen, list(range(200)))
        self.assertLessEqual(c.writes, 5)       # 4 refills, 1 that finds none
        q.join(timeout=TIMEOUT)

    def test_consume_left_early_releases_in_order(self):
        q = self.q()
        q.put_many(range(10))
        for item in q.consume(prefetch=4):
            if item == 1:
                break                   # 1 in hand, 2 and 3 fetched ahead
        # 0 finished, 1 in hand and 2, 3 fetched ahead given back.
        self.assertQsize(self.figures(), qsize=9, inflight=0, unfinished=9)
        with self.assertRaises(RuntimeError):
            with q.consume(prefetch=3) as items:
                for item in items:
                    raise RuntimeError(item)
        tasks = [q.get_task() for _ in range(9)]
        self.assertEqual([t.item for t in tasks], list(range(1, 10)))
        self.assertEqual([t.deliveries for t in tasks[:4]], [3, 3, 3, 1])
        for _ in tasks:
            q.task_done()
        q.join(timeout=TIMEOUT)

    def test_task_done_in_a_consume_body_finishes_at_once(self):
        q = self.q()
        q.put_many(["a", "b"])
        for item in q.consume(timeout=0):
            q.task_done()
            if item == "a":
                break
        q.flush()
        self.assertQsize(self.figures(), unfinished=1)
        self.assertEqual(q.get(), "b")
        q.task_done()

    def test_queue_consume_removes_for_good(self):
        q = self.q(cls=joinq.Queue)
        q.put_many(range(5))
        for item in q.consume(timeout=0):
            if item == 2:
                break
        q.close()
        self.assertQsize(self.figures(), qsize=2, unfinished=2)


# ---- tasks, leases, errors --------------------------------------------------

class Tasks(WithDaemon):
    def test_task_scope_finishes_or_releases(self):
        q = self.q()
        q.put_many(["ok", "boom"])
        with q.task() as item:
            self.assertEqual(item, "ok")
        with self.assertRaises(ZeroDivisionError):
            with q.task() as item:
                1 / 0
        self.wait_figure("unfinished", 1)
        t = q.get_task()
        self.assertEqual((t.item, t.deliveries), ("boom", 2))
        q.task_done(t)
        q.join(timeout=TIMEOUT)

    def test_release_and_delay(self):
        q = self.q()
        q.put_many(["a", "b"])
        a = q.get_task()
        q.release(a)
        self.assertEqual(q.get_task(), a._replace(deliveries=2))
        q.release(a.id, delay=0.1)
        self.assertQsize(self.figures(), qsize=1, delayed=1)
        self.assertEqual(q.get(), "b")
        self.assertEqual(q.get(timeout=TIMEOUT), "a")
        with self.assertRaises(ValueError):
            q.release(a, delay=-1)
        with self.assertRaises(TypeError):
            q.release("a")

    def test_lease_brings_a_task_back(self):
        q = self.q()
        q.put("leased")
        t = q.get_task(lease=0.05)
        self.assertEqual(q.get_task(timeout=TIMEOUT).id, t.id)

    def test_explicit_task_done(self):
        q = self.q()
        q.put("x")
        t = q.get_task()
        other = self.q()                 # any client may finish any task
        other.task_done(t.id)
        with self.assertRaises(joinq.UnknownTask) as cm:
            other.task_done(t)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(cm.exception.code, "unknown_task")
        self.assertTrue(cm.exception.message)

    def test_a_deferred_task_done_that_failed_is_raised_next(self):
        q = self.q(linger=60)
        q.put("x")
        t = q.get_task()
        self.q().task_done(t)            # someone else finishes it first
        q.task_done()                    # deferred
        self.assertEqual(q.qsize(), 0)   # carries it; its reply is kept
        with self.assertRaises(joinq.TaskDoneError) as cm:
            q.qsize()
        self.assertEqual((cm.exception.task, cm.exception.code),
                         (t.id, "unknown_task"))
        self.assertEqual(q.qsize(), 0)   # raised once

    def test_the_flusher_and_close_report_failures_too(self):
        q = self.q()                     # the flusher sends it
        q.put("x")
        self.q().task_done(q.get_task())
        q.task_done()
        self.assertTrue(jqtest.wait_until(lambda: q._st.book.failures))
        with self.assertRaises(joinq.TaskDoneError):
            q.put(1)
        q2 = self.q(linger=60)
        q2.put("y")
        self.q().task_done(q2.get_task())
        q2.task_done()
        with self.assertRaises(joinq.TaskDoneError):
            q2.close()

    def test_a_failure_at_exit_is_said_on_stderr(self):
        code = ("import joinq\n"
                "q = joinq.JoinableQueue(%r, host=%r, port=%d, linger=60)\n"
                "q.put(1)\n"
                "joinq.JoinableQueue(%r, host=%r, port=%d)"
                ".task_done(q.get_task())\n"
                "q.task_done()\n" % ((self.name(), self.d.host, self.d.port)
                                     * 2))
        p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           text=True, timeout=TIMEOUT,
                           env=dict(os.environ, PYTHONPATH=PYDIR))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("joinq: at exit: unknown_task", p.stderr)

    def test_what_waits_goes_out_at_exit(self):
        """A program that ends right after a task_done (or a put that did
        not wait, or an asyncio loop's task_done) leaves nothing undone."""
        code = ("import asyncio, joinq, joinq.aio\n"
                "kw = dict(host=%r, port=%d, linger=60)\n"
                "q = joinq.JoinableQueue(%r, **kw)\n"
                "q.put_many([1, 2])\n"
                "q.get(); q.task_done()\n"
                "q.put(3); q.put(4)\n"
                "async def main():\n"
                "    aq = joinq.aio.JoinableQueue(%r, **kw)\n"
                "    await aq.get(); aq.task_done()\n"
                "asyncio.run(main())\n"
                % (self.d.host, self.d.port, self.name(), self.name()))
        p = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           text=True, timeout=TIMEOUT,
                           env=dict(os.environ, PYTHONPATH=PYDIR))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        self.assertQsize(self.figures(), qsize=2, unfinished=2, inflight=0)

    def test_errors_carry_code_and_message_and_pickle(self):
        err = joinq.Conflict("maxsize differs", "conflict", {"ok": False})
        back = pickle.loads(pickle.dumps(err))
        self.assertEqual((type(back), back.code, back.message, str(back)),
                         (joinq.Conflict, "conflict", "maxsize differs",
                          "conflict: maxsize differs"))
        lost = pickle.loads(pickle.dumps(joinq.OutcomeUnknown("gone")))
        self.assertIsInstance(lost, ConnectionError)
        self.assertEqual(str(lost), "gone")
        self.assertTrue(issubclass(joinq.CannotConnect, ConnectionError))


# ---- where the daemon is, the token, UDP ------------------------------------

class Addresses(jqtest.TestCase):
    def test_host_and_port_as_the_cli_reads_them(self):
        from joinq.settings import addresses
        env = {"JOINQ_HOST": "", "JOINQ_PORT": ""}
        with patched_env(env):
            self.assertEqual(addresses(), [("127.0.0.1", 7477)])
        with patched_env({"JOINQ_HOST": "h1,[::1]:9,h2:8", "JOINQ_PORT": "7"}):
            self.assertEqual(addresses(), [("h1", 7), ("::1", 9), ("h2", 8)])
            self.assertEqual(addresses("x"), [("x", 7)])
            self.assertEqual(addresses(None, 5)[0], ("h1", 5))
        self.assertEqual(addresses(["a:1", ("b", 2), "::1"], 3),
                         [("a", 1), ("b", 2), ("::1", 3)])
        for bad in ("a:", "[::1", "[::1]x", "a:0", "a:70000", ",", "a:b"):
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    addresses(bad, 1)
        with patched_env({"JOINQ_PORT": "x"}):
            with self.assertRaises(ValueError) as cm:
                addresses()
            self.assertIn("JOINQ_PORT", str(cm.exception))

    def test_env_reaches_the_daemon(self):
        with jqtest.Daemon() as d:
            with patched_env({"JOINQ_HOST": d.host,
                              "JOINQ_PORT": str(d.port)}):
                q = joinq.JoinableQueue("envq")
            q.put(1)
            q.close()
            self.assertQsize(d.qsize("envq"), qsize=1)

    def test_no_daemon_is_cannot_connect_naming_it(self):
        dead = dead_address()
        q = joinq.JoinableQueue("x", host=dead)
        with self.assertRaises(joinq.CannotConnect) as cm:
            q.put(1)
        self.assertIn(dead, str(cm.exception))
        self.assertIsInstance(cm.exception, ConnectionError)
        q.close()

    def test_lost_reply_of_a_put_is_outcome_unknown(self):
        with FakeDaemon("drop") as fake:
            q = joinq.JoinableQueue("x", host=fake.address)
            with self.assertRaises(joinq.OutcomeUnknown):
                q.put(1)
            with self.assertRaises(joinq.ConnectionLost) as cm:
                q.get()
            self.assertNotIsInstance(cm.exception, joinq.OutcomeUnknown)
            q.close()

    def test_a_stopped_daemon_ends_a_blocked_get(self):
        """Stopped, the daemon answers a blocked get shutting_down; killed,
        its connection is lost; started again, the next call connects."""
        d = jqtest.Daemon().start()
        q = joinq.JoinableQueue("x", host=d.host, port=d.port)
        try:
            for sig, error in ((signal.SIGTERM, joinq.ShuttingDown),
                               (signal.SIGKILL, joinq.ConnectionLost)):
                errors = []

                def get():
                    try:
                        q.get(timeout=TIMEOUT)
                    except joinq.Error as e:
                        errors.append(type(e))
                t = threading.Thread(target=get)
                t.start()
                self.assertTrue(jqtest.wait_until(lambda: d.request(
                    {"op": "stats"})["queues"].get("x", {}).get(
                        "waiting_gets") == 1))
                d.stop(sig)
                t.join(TIMEOUT)
                self.assertEqual(len(errors), 1)
                self.assertTrue(issubclass(errors[0], error), errors)
                d.want_port = d.port
                d.start()                       # the same port
                q.put("again")
                self.assertEqual(q.get(), "again")
                q.task_done()
        finally:
            q.close()
            d.__exit__(None, None, None)

    def test_several_addresses_dead_first_then_a_standby(self):
        with jqtest.Daemon() as d:
            with FakeDaemon("standby", active=d.address()) as standby:
                q = joinq.JoinableQueue(
                    "x", host=[dead_address(), standby.address])
                q.put("via the active")
                self.assertGreaterEqual(standby.count("put"), 1)
                self.assertEqual(q.get(), "via the active")
                q.task_done()
                q.close()
            with FakeDaemon("standby") as silent:
                q = joinq.JoinableQueue(
                    "x", host="%s,%s" % (silent.address, d.address()))
                q.put("past a standby naming none")
                q.close()
            self.assertQsize(d.qsize("x"), qsize=1)


@contextlib.contextmanager
def patched_env(values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Tls(jqtest.TestCase):
    """ssl= against a daemon's TLS port (PROTOCOL.md "TLS"), with
    certificates made for the test (tlscerts.py); the daemon asks for a
    client certificate (tls_client_auth = request) and refuses a bad
    one."""

    @classmethod
    def setUpClass(cls):
        cls.certs = tlscerts.shared()
        cls.d = jqtest.Daemon(*jqtest.tls_args(
            cls.certs, "--tls-ca-file", cls.certs.ca,
            "--tls-client-auth", "request")).start()
        cls.at = {"host": "localhost", "port": cls.d.tls_port}

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def q(self, name, **kw):
        q = joinq.JoinableQueue(name, **kw)
        self.addCleanup(WithDaemon.close_quietly, q)
        return q

    def cannot_connect(self, **kw):
        """The one line ConnectionFailed says for a queue made with kw
        (CannotConnect, or ConnectionLost for a client certificate the
        daemon refuses after TLS 1.3's handshake)."""
        with self.assertRaises(joinq.ConnectionFailed) as e:
            joinq.JoinableQueue("refused", **kw).qsize()
        return str(e.exception)

    def test_blocking_asyncio_and_a_spawned_process(self):
        tls = joinq.TLS(cafile=self.certs.ca)
        q = self.q("tls", ssl=tls, **self.at)
        results = self.q("tls.out", ssl=tls, **self.at)
        q.put_many(range(5))
        self.assertEqual([q.get(timeout=TIMEOUT) for _ in range(5)],
                         list(range(5)))
        for _ in range(5):
            q.task_done()
        q.join(timeout=TIMEOUT)
        # A joinq.TLS pickles (an SSLContext does not): the queue goes to
        # a spawned child, which speaks TLS too.
        p = multiprocessing.get_context("spawn").Process(
            target=eat_n, args=(q, 2, results))
        p.start()
        q.put_many(["a", "b"])
        q.join(timeout=TIMEOUT)
        p.join(TIMEOUT)
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(sorted(results.get(timeout=TIMEOUT)
                                for _ in range(2)), ["a", "b"])

        async def body():
            aq = joinq.aio.JoinableQueue("tls.aio", ssl=tls, **self.at)
            await aq.put("over tls")
            self.assertEqual(await aq.get(), "over tls")
            aq.task_done()
            await aq.join()
            await aq.close()
        asyncio.run(asyncio.wait_for(body(), TIMEOUT))
        # An SSLContext of the caller's works as well.
        ctx = jqtest.tls_context(self.certs.ca)
        self.q("tls.ctx", ssl=ctx, **self.at).put("ctx")
        self.assertEqual(self.q("tls.ctx", ssl=tls, **self.at).get(), "ctx")

    def test_environment_and_client_certificate(self):
        """$JOINQ_TLS=1 with $JOINQ_CACERT, $JOINQ_CERT and $JOINQ_KEY, as
        the CLI reads them; the default port is then 7478."""
        env = {"JOINQ_TLS": "1", "JOINQ_CACERT": self.certs.ca,
               "JOINQ_CERT": self.certs.client_cert,
               "JOINQ_KEY": self.certs.client_key}
        with patched_env(env):
            self.assertEqual(joinq.JoinableQueue("x")._settings.addresses,
                             [("127.0.0.1", 7478)])
            q = self.q("tls.env", **self.at)
            q.put("with a client certificate")
            self.assertEqual(q.get(), "with a client certificate")
            q.task_done()
            self.assertEqual(q._settings.ssl, joinq.TLS(
                cafile=self.certs.ca, certfile=self.certs.client_cert,
                keyfile=self.certs.client_key))
            plain = self.q("tls.env", ssl=False, host=self.d.host,
                           port=self.d.port)
            self.assertEqual(plain.qsize(), 0)
        # What joinq work --tls-insecure-any-name gives its CMD.
        with patched_env(dict(env, JOINQ_TLS_SERVER_NAME="other.example",
                              JOINQ_TLS_INSECURE_ANY_NAME="1")):
            self.assertEqual(self.q("tls.env", **self.at).qsize(), 0)
        # A certificate from another CA is refused by the daemon.
        line = self.cannot_connect(ssl=joinq.TLS(
            cafile=self.certs.ca, certfile=self.certs.stranger_cert,
            keyfile=self.certs.stranger_key), **self.at)
        jqtest.diag("another CA's client certificate: " + line)
        self.assertIn("the daemon refused the session: unknown ca", line)
        with self.assertRaises(ValueError):
            joinq.TLS(certfile=self.certs.client_cert)

    def test_errors_say_what_to_do(self):
        cases = [
            ("the system's CAs", dict(ssl=True, **self.at),
             "certificate was refused: "),
            ("another name", dict(ssl=joinq.TLS(
                cafile=self.certs.ca, server_name="other.example"),
                **self.at), "certificate was refused: Hostname mismatch, "
                "certificate is not valid for 'other.example'"),
            ("the plain port", dict(ssl=joinq.TLS(cafile=self.certs.ca),
                                    host="localhost", port=self.d.port),
             "closed the connection during the TLS handshake: is %d its "
             "TLS port" % self.d.port),
        ]
        for what, kw, says in cases:
            with self.subTest(what):
                line = self.cannot_connect(connect_timeout=TIMEOUT, **kw)
                jqtest.diag("%s: %s" % (what, line))
                self.assertIn(says, line)
        # insecure_any_name: the name is not checked, the chain still is.
        q = self.q("tls.anyname", ssl=joinq.TLS(
            cafile=self.certs.ca, server_name="other.example",
            insecure_any_name=True), **self.at)
        self.assertEqual(q.qsize(), 0)
        # A plain client on the TLS port hears why.
        with self.assertRaises(joinq.Error) as e:
            joinq.JoinableQueue("plain", host=self.d.host,
                                port=self.d.tls_port).qsize()
        self.assertIn("this port speaks TLS", str(e.exception))


class Token(jqtest.TestCase):
    def test_token_argument_file_and_env(self):
        with jqtest.Daemon() as d:
            path = d.file("token", "s3cret\n")
            d.stop()
            d.args += ["--auth-token-file", path]
            d.start()
            kw = {"host": d.host, "port": d.port}
            joinq.JoinableQueue("t", token="s3cret", **kw).put("arg")
            joinq.JoinableQueue("t", token_file=d.file(
                "padded", " \ts3cret \r\nsecond line\n"), **kw).put("file")
            with patched_env({"JOINQ_TOKEN": "s3cret"}):
                joinq.JoinableQueue("t", **kw).put("env")
                q = joinq.JoinableQueue("t", udp=True, **kw)
                q.put("udp")
            with patched_env({"JOINQ_TOKEN": ""}):
                q = joinq.JoinableQueue("t", **kw)
                with self.assertRaises(joinq.Unauthorized) as cm:
                    q.put("none")
            self.assertEqual(cm.exception.code, "unauthorized")
            with self.assertRaises(joinq.Unauthorized):
                joinq.JoinableQueue("t", token="wrong", **kw).qsize()

            async def aio():
                q = joinq.aio.JoinableQueue("t", token="s3cret", **kw)
                await q.put("aio")
                await q.close()
            asyncio.run(aio())
            self.assertQsize(d.request({"op": "qsize", "queue": "t",
                                        "token": "s3cret"}), qsize=5)

    def test_token_file_as_the_cli_reads_it(self):
        with jqtest.Daemon() as d:
            self.assertEqual(joinq.read_token_file(
                d.file("a", "  tok\t\r\n")), "tok")
            for text in ("", "\n", " \t \nnext\n", "x" * 4097 + "\n"):
                with self.subTest(text=text[:10]):
                    with self.assertRaises(ValueError):
                        joinq.read_token_file(d.file("b", text))
            with self.assertRaises(OSError):
                joinq.read_token_file(d.path("missing"))
            with self.assertRaises(ValueError):
                joinq.JoinableQueue("t", token="a", token_file=d.file(
                    "c", "b"))


class Udp(WithDaemon):
    def test_udp_puts(self):
        q = self.q(udp=True)
        q.put("over udp")
        tasks = q.put_many(["b", "c"])
        self.assertEqual(len(tasks), 2)
        self.assertTrue(all(isinstance(t, int) for t in tasks))
        self.assertEqual([q.get() for _ in range(3)], ["over udp", "b", "c"])
        full = self.q("bounded", udp=True)
        full.put_many([1, 2])
        with self.assertRaises(queue.Full):
            full.put(3, timeout=0.01)
        self.assertEqual([full.get(), full.get()], [1, 2])

    def test_noreply_fires_and_forgets(self):
        q = self.q(udp=True, noreply=True)
        self.assertEqual(q.put_many(range(5)), [None] * 5)
        q.put(5)
        self.wait_figure("qsize", 6)
        with self.assertRaises(ValueError):
            self.q(noreply=True)

    def test_too_big_for_a_datagram(self):
        with self.assertRaises(ValueError):
            self.q(udp=True).put("x" * 70000)
        self.assertEqual(self.figures()["qsize"], 0)


# ---- declare, purge, delete -------------------------------------------------

class Lifecycle(WithDaemon):
    def test_maxsize_declares_and_conflict_is_clear(self):
        q = self.q(maxsize=3)
        self.assertEqual(q.maxsize, 3)
        self.assertEqual(self.figures()["maxsize"], 3)
        self.q(maxsize=3).put(1)                  # the same: fine
        self.q(maxsize=0).put(2)                  # declares nothing
        with self.assertRaises(joinq.Conflict) as cm:
            self.q(maxsize=4)
        self.assertEqual(cm.exception.code, "conflict")
        self.assertIn("maxsize", cm.exception.message)
        with self.assertRaises(joinq.Conflict):
            self.q("bounded", maxsize=5)          # the config's is 2
        as_python = joinq.JoinableQueue(7, host=self.d.host,
                                        port=self.d.port)   # maxsize first
        self.addCleanup(as_python.close)
        self.assertEqual((as_python.name, as_python.maxsize), ("default", 7))
        self.assertEqual(self.figures("default")["maxsize"], 7)
        pickle.loads(pickle.dumps(q)).put(3)      # not declared again
        with self.assertRaises(queue.Full):
            q.put_nowait(4)
        self.assertEqual(q.declare(maxsize=3)["created"], False)
        other = self.q(self.name(".dl"), max_deliveries=2,
                       dead_letter=self.name(".dead"))
        info = other.declare(max_deliveries=2)
        self.assertEqual((info["created"], info["maxsize"],
                          info["max_deliveries"], info["dead_letter"]),
                         (False, 0, 2, self.name(".dead")))
        with self.assertRaises(joinq.Conflict):
            other.declare(max_deliveries=3)

    def test_aio_declares_before_its_first_call(self):
        async def body():
            q = joinq.aio.JoinableQueue(self.name(), 2, host=self.d.host,
                                        port=self.d.port)
            await q.put(1)
            self.assertEqual((await q.stats())["maxsize"], 2)
            with self.assertRaises(joinq.Conflict):
                async with joinq.aio.JoinableQueue(
                        self.name(), 3, host=self.d.host, port=self.d.port):
                    pass
            self.assertEqual(await q.purge(), 1)
            self.assertIs(await q.delete(), True)
            await q.close()
        asyncio.run(asyncio.wait_for(body(), TIMEOUT))

    def test_purge_and_delete(self):
        q = self.q()
        q.put_many(range(5))
        held = q.get()
        self.assertEqual(q.purge(), 4)
        with self.assertRaises(joinq.Conflict):
            q.delete()
        self.assertEqual(held, 0)
        q.task_done()
        q.join(timeout=TIMEOUT)
        self.assertIs(q.delete(), True)
        self.assertIs(q.delete(), False)
        self.assertNotIn(self.name(), self.d.request({"op": "stats"})[
            "queues"])
        self.assertEqual(q.stats(), {})
        q.put("reborn")
        self.assertEqual(q.stats()["qsize"], 1)


# ---- asyncio ----------------------------------------------------------------

class Aio(WithDaemon):
    def run_async(self, coro):
        return asyncio.run(asyncio.wait_for(coro, TIMEOUT))

    def aq(self, name=None, cls=None, **kw):
        kw.setdefault("host", self.d.host)
        kw.setdefault("port", self.d.port)
        return (cls or joinq.aio.JoinableQueue)(name or self.name(), **kw)

    def test_methods_as_coroutines(self):
        async def body():
            async with self.aq() as q:
                self.assertTrue(await q.empty())
                await q.put((1, 2))
                await q.put_nowait("b")
                self.assertEqual(await q.qsize(), 2)
                self.assertEqual(await q.get(), [1, 2])
                self.assertEqual((await q.get_task()).item, "b")
                q.task_done()
                with self.assertRaises(joinq.JoinTimeout):
                    await q.join(timeout=0.05)
                q.task_done()
                with self.assertRaises(ValueError):
                    q.task_done()
                await q.join(timeout=TIMEOUT)
                with self.assertRaises(asyncio.QueueEmpty):
                    await q.get_nowait()
                with self.assertRaises(asyncio.QueueEmpty):
                    await q.get(timeout=0.01)
                with self.assertRaises(ValueError):
                    await q.get(timeout=-1)
                with self.assertRaises(TypeError):
                    await q.put(object())
            async with self.aq("bounded") as full:
                await full.put_many([1, 2])
                with self.assertRaises(asyncio.QueueFull):
                    await full.put_nowait(3)
                await full.get()
                await full.get()
                full.task_done()
                full.task_done()
        self.run_async(body())

    def test_consume_task_and_flush(self):
        async def body():
            q = self.aq(linger=60)
            await q.put_many(range(100))
            seen = [item async for item in q.consume(prefetch=16, timeout=0)]
            self.assertEqual(seen, list(range(100)))
            await q.put_many(["ok", "boom"])
            async with q.task() as item:
                self.assertEqual(item, "ok")
            with self.assertRaises(KeyError):
                async with q.task():
                    raise KeyError
            t = await q.get_task()
            self.assertEqual((t.item, t.deliveries), ("boom", 2))
            q.task_done(t)
            await q.flush()
            await q.join(timeout=TIMEOUT)
            await q.put_many(range(4))
            async with q.consume(prefetch=4) as items:
                async for item in items:
                    break
            self.assertEqual(await q.qsize(), 4)
            await q.close()
        self.run_async(body())

    def test_cancelled_get_whose_reply_came_loses_no_task(self):
        async def body():
            q = self.aq()
            waiting = asyncio.create_task(q.get(lease=60))
            while self.d.request({"op": "stats"})["queues"].get(
                    self.name(), {}).get("waiting_gets") != 1:
                await asyncio.sleep(0.01)
            # The put's item goes to the blocked get: its reply is on the
            # socket, unread (this loop is busy here), when it is
            # cancelled.
            self.assertOk(self.d.request({"op": "put", "queue": self.name(),
                                          "item": "not lost"}))
            self.assertQsize(self.figures(), inflight=1)
            waiting.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await waiting
            while self.figures()["qsize"] != 1:
                await asyncio.sleep(0.01)
            t = await q.get_task()
            self.assertEqual((t.item, t.deliveries), ("not lost", 2))
            q.task_done()
            # Cancelled while blocked with nothing delivered: nothing held.
            waiting = asyncio.create_task(q.get(lease=60))
            await asyncio.sleep(0.05)
            waiting.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await waiting
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(q.get(), 0.05)
            await q.close()
            self.assertQsize(self.figures(), qsize=0, unfinished=0)
        self.run_async(body())

    def test_one_object_in_several_event_loops(self):
        q = self.aq(cls=joinq.aio.Queue)
        for i in range(3):
            self.run_async(q.put(i))        # each asyncio.run a new loop
        self.assertEqual(len(q._states), 1)
        self.assertEqual([self.run_async(q.get()) for _ in range(3)],
                         [0, 1, 2])
        # Each get's task_done waited in a loop that ended before it went:
        # a later call sends it.
        self.assertEqual(self.run_async(q.qsize()), 0)
        self.assertQsize(self.figures(), unfinished=0)

    def test_udp_and_pickle(self):
        async def body():
            q = self.aq(udp=True, cls=joinq.aio.Queue)
            await q.put("udp")
            self.assertEqual(len(await q.put_many([1, 2])), 2)
            back = pickle.loads(pickle.dumps(q))
            self.assertEqual([await back.get() for _ in range(3)],
                             ["udp", 1, 2])
            await q.close()
            await back.close()
            self.assertQsize(self.figures(), unfinished=0)
        self.run_async(body())


if __name__ == "__main__":
    jqtest.main()
