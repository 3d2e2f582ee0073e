"""The joinq CLI against a real joinqd: every command, every output form and
every exit status (0 ok, 1 error reply, 2 usage, 3 empty, 4 full,
5 timeout, 6 connection, 7 conflict)."""
import fcntl
import itertools
import json
import os
import pty
import re
import select
import socket
import struct
import subprocess
import termios
import threading
import time

import jqtest

TIMEOUT = jqtest.TIMEOUT
_names = itertools.count(1)


def fresh_queue():
    """A queue name no other test uses."""
    return "cli%d" % next(_names)


def free_port():
    """A TCP and UDP port that nothing listens on (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(port, *args, input=None, udp=False, env=None, host="127.0.0.1"):
    """Runs the CLI with bytes in and out: for input that is not UTF-8."""
    argv = [jqtest.JOINQ, "-H", host, "-p", str(port)]
    if udp:
        argv.append("-u")
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(argv + list(args), input=input, env=e,
                          capture_output=True, timeout=TIMEOUT)


def wait_exit(proc, timeout=TIMEOUT):
    """The exit status of a cli_start process, killing it if it hangs."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("joinq did not exit within %.1f s" % timeout)
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if proc.stdin:
            proc.stdin.close()
    return proc.returncode


def get_all(d, queue, n):
    """Takes n items off queue over one raw TCP connection, pipelined;
    returns the replies."""
    c = d.tcp()
    replies = []
    try:
        while len(replies) < n:
            batch = min(5000, n - len(replies))
            req = jqtest.encode({"op": "get", "queue": queue, "block": False,
                                 "lease": 600})
            c.sock.sendall(req * batch)
            for _ in range(batch):
                replies.append(c.recv())
    finally:
        c.close()
    return replies


class SharedDaemon(jqtest.TestCase):
    """One daemon for the class; each test takes queues of its own."""

    @classmethod
    def setUpClass(cls):
        cls.d = jqtest.Daemon().start()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def setUp(self):
        self.q = fresh_queue()

    def cli(self, *args, **kw):
        """The CLI on this test's queue."""
        return self.d.cli("-q", self.q, *args, **kw)

    def qsize(self, queue=None):
        r = self.d.qsize(queue or self.q)
        self.assertOk(r)
        return r

    def assertExit(self, p, status, msg=None):
        self.assertEqual(p.returncode, status, msg or
                         "stdout %r stderr %r" % (p.stdout, p.stderr))


class Put(SharedDaemon):
    def test_arguments_are_string_items(self):
        p = self.cli("put", "a", "b c", "", "42")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "")
        self.assertEqual(p.stderr, "")
        items = [r["item"] for r in get_all(self.d, self.q, 4)]
        self.assertEqual(items, ["a", "b c", "", "42"])

    def test_json_arguments_are_json_values(self):
        p = self.cli("put", "--json", '{"a": [1, 2.5, "x"]}', '"s"', "42",
                     "null", "[\n true\n]")
        self.assertExit(p, 0)
        items = [r["item"] for r in get_all(self.d, self.q, 5)]
        self.assertEqual(items, [{"a": [1, 2.5, "x"]}, "s", 42, None, [True]])

    def test_invalid_json_argument_is_a_usage_error(self):
        p = self.cli("put", "--json", "1", "{bad", "2")
        self.assertExit(p, 2)
        self.assertIn("item 2", p.stderr)
        self.assertIn("JSON", p.stderr)
        self.assertEqual(self.qsize()["unfinished"], 0,
                         "nothing is sent when an argument is bad")

    def test_invalid_utf8_argument_is_a_usage_error(self):
        p = run(self.d.port, "-q", self.q, "put", "ok", b"bad\xff")
        self.assertExit(p, 2)
        self.assertIn(b"item 2", p.stderr)
        self.assertIn(b"UTF-8", p.stderr)
        self.assertEqual(self.qsize()["unfinished"], 0)

    def test_show_task_prints_ids_in_order(self):
        p = self.cli("put", "--show-task", "x", "y", "z")
        self.assertExit(p, 0)
        ids = [int(t) for t in p.stdout.split()]
        self.assertEqual(len(ids), 3)
        self.assertEqual(ids, sorted(ids))
        got = get_all(self.d, self.q, 3)
        self.assertEqual([(r["task"], r["item"]) for r in got],
                         list(zip(ids, ["x", "y", "z"])))

    def test_stdin_lines_are_items(self):
        p = run(self.d.port, "-q", self.q, "put",
                input=b"one\r\ntwo\n\n  spaced \nlast")
        self.assertExit(p, 0)
        items = [r["item"] for r in get_all(self.d, self.q, 5)]
        self.assertEqual(items, ["one", "two", "", "  spaced ", "last"])

    def test_stdin_json_lines(self):
        p = self.cli("put", "--json", input='{"n":1}\n[2]\n"three"\n')
        self.assertExit(p, 0)
        items = [r["item"] for r in get_all(self.d, self.q, 3)]
        self.assertEqual(items, [{"n": 1}, [2], "three"])

    def test_stdin_invalid_json_line_stops_there(self):
        p = self.cli("put", "--json", input="1\n2\nnope\n4\n")
        self.assertExit(p, 2)
        self.assertIn("line 3", p.stderr)
        self.assertEqual(self.qsize()["qsize"], 2)

    def test_stdin_invalid_utf8_stops_there(self):
        p = run(self.d.port, "-q", self.q, "put", "--show-task",
                input=b"a\nb\n\xc3\x28\nc\n")
        self.assertExit(p, 2)
        self.assertIn(b"line 3", p.stderr)
        self.assertIn(b"UTF-8", p.stderr)
        self.assertEqual(len(p.stdout.split()), 2,
                         "the lines sent before it are reported")
        self.assertEqual(self.qsize()["qsize"], 2,
                         "lines before it stay, nothing after it is sent")

    def test_stdin_pipelines_100000_lines_in_order(self):
        n = 100000
        text = "".join("%d\n" % i for i in range(1, n + 1))
        # a bound against a hang, for 100,000 requests
        p = self.cli("put", input=text, timeout=3 * TIMEOUT)
        self.assertExit(p, 0)
        q = self.cli("qsize")
        self.assertExit(q, 0)
        self.assertEqual(q.stdout.split()[:2], ["qsize", str(n)])
        items = [r["item"] for r in get_all(self.d, self.q, n)]
        self.assertEqual(items, [str(i) for i in range(1, n + 1)])

    def test_stdin_show_task_matches_items(self):
        n = 3000
        p = self.cli("put", "--show-task",
                     input="".join("item%d\n" % i for i in range(n)))
        self.assertExit(p, 0)
        ids = [int(t) for t in p.stdout.split()]
        self.assertEqual(len(ids), n)
        got = get_all(self.d, self.q, n)
        self.assertEqual([(r["task"], r["item"]) for r in got],
                         [(t, "item%d" % i) for i, t in enumerate(ids)])

    def test_stdin_items_are_sent_before_stdin_ends(self):
        # A slow producer (tail -f) must see each line queued without
        # waiting for a window to fill.
        proc = self.d.cli_start("-q", self.q, "put", "--show-task",
                                stdin=subprocess.PIPE)
        try:
            proc.stdin.write("early\n")
            proc.stdin.flush()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize()["qsize"] == 1))
            proc.stdin.write("late\n")
            proc.stdin.close()
            proc.stdin = None
            out = proc.stdout.read()
        finally:
            status = wait_exit(proc)
        self.assertEqual(status, 0)
        self.assertEqual(len(out.split()), 2)
        self.assertEqual(self.qsize()["qsize"], 2)


class Full(jqtest.TestCase):
    """put on a full queue: exit 4."""

    def test_nowait_on_full_queue_exits_4(self):
        with jqtest.Daemon("--queue", "small:1") as d:
            p = d.cli("-q", "small", "put", "--nowait", "a", "b")
            self.assertEqual(p.returncode, 4, p.stderr)
            self.assertRegex(p.stderr, r"joinq: item 2: full: ")
            self.assertEqual(d.qsize("small")["qsize"], 1)

    def test_timeout_on_full_queue_exits_4(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            self.assertEqual(d.cli("put", "a").returncode, 0)
            start = time.monotonic()
            p = d.cli("put", "--timeout", "0.2", "b")
            elapsed = time.monotonic() - start
            self.assertEqual(p.returncode, 4, p.stderr)
            self.assertIn("full", p.stderr)
            self.assertGreaterEqual(elapsed, 0.2)

    def test_stdin_stops_at_first_full_and_ends_promptly(self):
        # Many lines in flight, each allowed 0.5 s: the CLI must not wait
        # out every timeout once the first has failed.
        with jqtest.Daemon("--default-maxsize", "1") as d:
            start = time.monotonic()
            p = d.cli("put", "--timeout", "0.5",
                      input="".join("%d\n" % i for i in range(5000)))
            elapsed = time.monotonic() - start
            self.assertEqual(p.returncode, 4, p.stderr)
            self.assertIn("line 2: full: ", p.stderr)
            self.assertLess(elapsed, 5 * jqtest.SLOW)
            self.assertEqual(d.qsize()["qsize"], 1)

    def test_blocking_put_waits_for_room(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            self.assertEqual(d.cli("put", "a").returncode, 0)
            proc = d.cli_start("put", "b")
            try:
                time.sleep(0.3)
                self.assertIsNone(proc.poll(), "put should wait for room")
                g = d.cli("get", "--lease", "30")
                self.assertEqual(g.returncode, 0, g.stderr)
            finally:
                status = wait_exit(proc)
            self.assertEqual(status, 0)
            self.assertEqual(d.qsize()["qsize"], 1)


class Get(SharedDaemon):
    def test_string_item_prints_raw_and_task_on_stderr(self):
        t = self.cli("put", "--show-task", "hello world").stdout.strip()
        p = self.cli("get")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "hello world\n")
        self.assertEqual(p.stderr, "task %s\n" % t)

    def test_json_item_prints_compact(self):
        self.assertExit(self.cli("put", "--json", '{ "a" : [1, {"b": null}] }',
                                 '"q\\"uote"', "7"), 0)
        # With a lease, so that each get takes the next item for good.
        get = ("get", "--lease", "60")
        self.assertEqual(self.cli(*get).stdout, '{"a":[1,{"b":null}]}\n')
        self.assertEqual(self.cli(*get).stdout, 'q"uote\n')
        self.assertEqual(self.cli(*get).stdout, "7\n")

    def assertItemsPrintAsPut(self, items, udp):
        """put --json of items, then a get for each prints it as put, but
        for the whitespace between tokens."""
        self.assertExit(self.cli("put", "--json", "--",
                                 *[i for i, _ in items], udp=udp), 0)
        get = ("get", "--lease", "60")
        self.assertEqual([self.cli(*get, udp=udp).stdout for _ in items],
                         [want + "\n" for _, want in items])

    def test_reals_print_as_put(self):
        # Items are not re-encoded on their way through the CLI, libjoinq
        # and the daemon (issue 11): 0.1 stays 0.1, 1e300 stays 1e300.
        items = [("0.1", "0.1"), ("1e300", "1e300"), ("-2.50", "-2.50"),
                 (' { "r" : [ 0.1 , 1e300 ] , "s" : "a b" } ',
                  '{"r":[0.1,1e300],"s":"a b"}')]
        for udp in (False, True):
            with self.subTest(udp=udp):
                self.assertItemsPrintAsPut(items, udp)

    def test_big_integers_print_as_put(self):
        # RFC 8259 sets no limit on integers: one beyond 64 bits is kept.
        big = str(2 ** 70)
        items = [(big, big), ("-" + big, "-" + big),
                 ('{"n": %s}' % big, '{"n":%s}' % big)]
        for udp in (False, True):
            with self.subTest(udp=udp):
                self.assertItemsPrintAsPut(items, udp)

    def test_show_task_prints_task_tab_item(self):
        t = self.cli("put", "--show-task", "x y").stdout.strip()
        p = self.cli("get", "--show-task")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "%s\tx y\n" % t)
        self.assertEqual(p.stderr, "")

    def test_nowait_on_empty_exits_3(self):
        p = self.cli("get", "--nowait")
        self.assertExit(p, 3)
        self.assertEqual(p.stdout, "")
        self.assertIn("empty", p.stderr)

    def test_timeout_on_empty_exits_3(self):
        start = time.monotonic()
        p = self.cli("get", "--timeout", "0.2")
        self.assertExit(p, 3)
        self.assertGreaterEqual(time.monotonic() - start, 0.2)

    def test_blocking_get_waits_for_a_put(self):
        proc = self.d.cli_start("-q", self.q, "get", "--lease", "30")
        try:
            time.sleep(0.2)
            self.assertIsNone(proc.poll())
            self.assertExit(self.cli("put", "late"), 0)
            out = proc.stdout.read()
        finally:
            status = wait_exit(proc)
        self.assertEqual(status, 0)
        self.assertEqual(out, "late\n")

    def test_lease_keeps_task_after_exit(self):
        self.assertExit(self.cli("put", "kept"), 0)
        self.assertExit(self.cli("get", "--lease", "60"), 0)
        r = self.qsize()
        self.assertEqual((r["qsize"], r["inflight"], r["unfinished"]),
                         (0, 1, 1))

    def test_without_lease_task_returns_when_joinq_exits(self):
        self.assertExit(self.cli("put", "back"), 0)
        p = self.cli("get", "--show-task")
        self.assertExit(p, 0)
        task = p.stdout.split("\t")[0]
        self.assertTrue(jqtest.wait_until(
            lambda: self.qsize()["qsize"] == 1 and
            self.qsize()["inflight"] == 0))
        again = self.cli("get", "--show-task", "--lease", "60")
        self.assertEqual(again.stdout, "%s\tback\n" % task,
                         "the same task comes back")

    def test_bad_lease_and_timeout_are_usage_errors(self):
        for args in (["--lease", "0"], ["--lease", "-1"], ["--lease", "x"],
                     ["--timeout", "-1"], ["--timeout", "nan"],
                     ["--timeout", "1s"]):
            p = self.cli("get", *args)
            self.assertExit(p, 2, args)
            self.assertIn("joinq", p.stderr)


class TaskDone(SharedDaemon):
    def take(self):
        self.assertExit(self.cli("put", "work"), 0)
        p = self.cli("get", "--lease", "60", "--show-task")
        self.assertExit(p, 0)
        return p.stdout.split("\t")[0]

    def test_task_done_finishes_task(self):
        task = self.take()
        p = self.cli("task_done", task)
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "")
        self.assertEqual(self.qsize()["unfinished"], 0)

    def test_verbose_prints_unfinished(self):
        self.assertExit(self.cli("put", "other"), 0)
        task = self.take()
        p = self.cli("task_done", "-v", task)
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "unfinished 1\n")

    def test_unknown_task_exits_1(self):
        task = self.take()
        self.assertExit(self.cli("task_done", task), 0)
        p = self.cli("task_done", task)
        self.assertExit(p, 1)
        self.assertIn("unknown_task", p.stderr)
        p = self.cli("release", "999999999")
        self.assertExit(p, 1)
        self.assertIn("unknown_task", p.stderr)

    def test_bad_task_id_is_usage_error(self):
        for bad in ("0", "-1", "x", "1.5", "", "9007199254740992", "1e3"):
            for cmd in ("task_done", "release"):
                p = self.cli(cmd, "--", bad)
                self.assertExit(p, 2, (cmd, bad, p.stderr))
        self.assertExit(self.cli("task_done"), 2)
        self.assertExit(self.cli("task_done", "1", "2"), 2)

    def test_release_returns_task_to_head(self):
        self.assertExit(self.cli("put", "second"), 0)
        task = self.take()   # "second" is at the head, then "work"
        self.assertExit(self.cli("release", task), 0)
        r = self.qsize()
        self.assertEqual((r["qsize"], r["inflight"]), (2, 0))
        p = self.cli("get", "--show-task", "--lease", "60")
        self.assertEqual(p.stdout, "%s\tsecond\n" % task)

    def test_release_with_delay(self):
        task = self.take()
        self.assertExit(self.cli("release", "--delay", "1", task), 0)
        self.assertEqual(self.qsize()["delayed"], 1)
        self.assertTrue(jqtest.wait_until(
            lambda: self.qsize()["qsize"] == 1))
        self.assertExit(self.cli("release", "--delay", "x", task), 2)


class Join(SharedDaemon):
    def test_join_on_finished_queue_returns(self):
        p = self.cli("join", "--timeout", "1")
        self.assertExit(p, 0)
        self.assertExit(self.cli("join", "--nowait"), 0)

    def test_join_timeout_exits_5(self):
        self.assertExit(self.cli("put", "pending"), 0)
        start = time.monotonic()
        p = self.cli("join", "--timeout", "0.2")
        self.assertExit(p, 5)
        self.assertIn("timeout", p.stderr)
        self.assertGreaterEqual(time.monotonic() - start, 0.2)
        self.assertExit(self.cli("join", "--nowait"), 5)

    def test_join_returns_once_tasks_are_done(self):
        self.assertExit(self.cli("put", "a", "b"), 0)
        proc = self.d.cli_start("-q", self.q, "join")
        try:
            tasks = []
            for _ in range(2):
                p = self.cli("get", "--lease", "60", "--show-task")
                tasks.append(p.stdout.split("\t")[0])
            self.assertExit(self.cli("task_done", tasks[0]), 0)
            time.sleep(0.2)
            self.assertIsNone(proc.poll(), "one task is still unfinished")
            self.assertExit(self.cli("task_done", tasks[1]), 0)
        finally:
            status = wait_exit(proc)
        self.assertEqual(status, 0)


def finish(d, queue, n, pause=0.0):
    """Takes n tasks off queue and finishes each, pause seconds apart, over
    one raw TCP connection, as a consumer would."""
    c = d.tcp()
    try:
        for _ in range(n):
            r = c.request({"op": "get", "queue": queue, "timeout": TIMEOUT})
            assert r.get("ok"), r
            time.sleep(pause)
            r = c.request({"op": "task_done", "task": r["task"]})
            assert r.get("ok"), r
    finally:
        c.close()


def outcome(proc, timeout=TIMEOUT):
    """(status, stdout, stderr) of a cli_start process, killing it if it
    hangs."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("joinq did not exit within %.1f s; stderr %r"
                             % (timeout, err))
    return proc.returncode, out, err


def first_line(proc, timeout=TIMEOUT):
    """The first line a cli_start process writes to stderr, read from the
    descriptor byte by byte (so that outcome() still gets the rest): it has
    started and looked once then, however slow the machine."""
    fd, line = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        r, _, _ = select.select([fd], [], [],
                                max(0, deadline - time.monotonic()))
        byte = os.read(fd, 1) if r else b""
        if not byte:
            proc.kill()
            proc.wait()
            raise AssertionError("no line within %.1f s: %r" % (timeout,
                                                                 line))
        line += byte
    return line.decode().rstrip("\n")


def in_background(fn, *args, **kw):
    """Runs fn in a thread; join() it before checking what it did."""
    t = threading.Thread(target=fn, args=args, kwargs=kw, daemon=True)
    t.start()
    return t


class PutJoin(SharedDaemon):
    def test_returns_once_consumers_finish(self):
        proc = self.d.cli_start("-q", self.q, "put", "--join", "a", "b", "c")
        try:
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize()["unfinished"] == 3))
            finish(self.d, self.q, 2)
            time.sleep(0.2)
            self.assertIsNone(proc.poll(), "one task is still unfinished")
            finish(self.d, self.q, 1)
        finally:
            status = wait_exit(proc)
        self.assertEqual(status, 0)
        self.assertEqual(self.qsize()["unfinished"], 0)

    def test_stdin_items_then_join(self):
        consumer = in_background(finish, self.d, self.q, 3, pause=0.05)
        p = self.cli("put", "--join", input="x\ny\nz\n")
        consumer.join(TIMEOUT)
        self.assertExit(p, 0)
        self.assertEqual((p.stdout, p.stderr), ("", ""))
        r = self.qsize()
        self.assertEqual((r["unfinished"], r["qsize"]), (0, 0))

    def test_join_waits_for_other_producers_tasks_too(self):
        self.assertExit(self.cli("put", "earlier"), 0)
        proc = self.d.cli_start("-q", self.q, "put", "--join", "mine")
        try:
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize()["unfinished"] == 2))
            finish(self.d, self.q, 1)
            time.sleep(0.2)
            self.assertIsNone(proc.poll(), "joins the queue, not its items")
            finish(self.d, self.q, 1)
        finally:
            status = wait_exit(proc)
        self.assertEqual(status, 0)

    def test_join_timeout_exits_5_with_items_queued(self):
        start = time.monotonic()
        p = self.cli("put", "--join", "--join-timeout", "0.3", "x", "y")
        self.assertExit(p, 5)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertRegex(p.stderr, r"^joinq: timeout: ")
        self.assertEqual(self.qsize()["unfinished"], 2, "the puts stay")

    def test_join_timeout_over_udp(self):
        p = self.cli("put", "--join", "--join-timeout", "0.2", "x", udp=True)
        self.assertExit(p, 5)
        finish(self.d, self.q, 1)
        p = self.cli("put", "--join", "--join-timeout", "5", udp=True,
                     input="")
        self.assertExit(p, 0)

    def test_join_options_need_join(self):
        for args in (["--join-timeout", "1"], ["--progress"]):
            p = self.cli("put", *args, "x")
            self.assertExit(p, 2, args)
            self.assertIn("needs --join", p.stderr)
        p = self.cli("put", "--join", "--join-timeout", "-1", "x")
        self.assertExit(p, 2)
        p = self.cli("join", "--join-timeout", "1")
        self.assertExit(p, 2)
        self.assertEqual(self.qsize()["unfinished"], 0, "nothing was put")

    def test_failed_put_does_not_join(self):
        with jqtest.Daemon("--queue", "one:1") as d:
            self.assertEqual(d.cli("-q", "one", "put", "a").returncode, 0)
            start = time.monotonic()
            p = d.cli("-q", "one", "put", "--nowait", "--join", "b")
            self.assertEqual(p.returncode, 4, p.stderr)
            self.assertLess(time.monotonic() - start, 2 * jqtest.SLOW)
            self.assertNotIn("timeout", p.stderr)

    def test_put_join_with_progress(self):
        consumer = in_background(finish, self.d, self.q, 2, pause=0.1)
        p = self.cli("put", "--join", "--progress", "a", "b")
        consumer.join(TIMEOUT)
        self.assertExit(p, 0)
        lines = p.stderr.splitlines()
        self.assertRegex(lines[-1], r"^joinq: join %s: 0 unfinished, "
                         r"2 done, joined after \d+s$" % self.q)


class JoinProgress(SharedDaemon):
    LINE = r"^joinq: join %s: (\d+) unfinished, (\d+) done, (\S+)/s, ETA (\S+)$"

    def test_plain_lines_when_not_a_terminal(self):
        self.assertExit(self.cli("put", "a", "b", "c"), 0)
        proc = self.d.cli_start("-q", self.q, "join", "--progress")
        try:
            first = first_line(proc)
            finish(self.d, self.q, 3, pause=0.1)
        finally:
            status, out, err = outcome(proc)
        self.assertEqual(status, 0, err)
        self.assertEqual(out, "")
        lines = [first] + err.splitlines()
        self.assertGreaterEqual(len(lines), 2, lines)
        self.assertEqual(lines[0], "joinq: join %s: 3 unfinished, 0 done, "
                         "-/s, ETA -" % self.q)
        self.assertRegex(lines[-1], r"^joinq: join %s: 0 unfinished, 3 "
                         r"done, joined after \d+s$" % self.q)

    def test_a_line_every_5_seconds(self):
        self.assertExit(self.cli("put", "a", "b"), 0)
        proc = self.d.cli_start("-q", self.q, "join", "--progress")
        try:
            first = first_line(proc)
            finish(self.d, self.q, 1)
            time.sleep(5.5)
            finish(self.d, self.q, 1)
        finally:
            status, out, err = outcome(proc)
        self.assertEqual(status, 0, err)
        lines = [first] + err.splitlines()
        self.assertEqual(len(lines), 3, lines)
        m = re.match(self.LINE % self.q, lines[1])
        self.assertTrue(m, lines[1])
        self.assertEqual(m.group(1, 2), ("1", "1"))
        self.assertNotEqual(m.group(3), "-", "the rate is known by then")
        self.assertIn("0 unfinished, 2 done, joined after", lines[2])

    def test_timeout_exits_5(self):
        self.assertExit(self.cli("put", "a"), 0)
        p = self.cli("join", "--progress", "--timeout", "0.3")
        self.assertExit(p, 5)
        lines = p.stderr.splitlines()
        self.assertRegex(lines[0], self.LINE % self.q)
        self.assertRegex(lines[-1], r"^joinq: timeout: ")
        self.assertNotIn("joined", p.stderr)

    def test_finished_queue_returns_at_once(self):
        p = self.cli("join", "--progress", "--timeout", "5")
        self.assertExit(p, 0)
        self.assertIn("0 unfinished, 0 done, joined after 0s", p.stderr)

    def test_bar_on_a_terminal(self):
        self.assertExit(self.cli("put", *"abcd"), 0)
        master, slave = pty.openpty()
        # A narrow terminal: the bar must fit it and leave the last column.
        fcntl.ioctl(slave, termios.TIOCSWINSZ,
                    struct.pack("HHHH", 24, 60, 0, 0))
        proc = subprocess.Popen(
            [jqtest.JOINQ, "-H", self.d.host, "-p", str(self.d.port),
             "-q", self.q, "join", "--progress"], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        out = b""
        try:
            # its first draw, before any task is finished
            deadline = time.monotonic() + TIMEOUT
            while b"\x1b[K" not in out and time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.1)
                if r:
                    out += os.read(master, 65536)
            finish(self.d, self.q, 4, pause=0.15)
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.1)
                if r:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:     # EIO: the terminal has no writer
                        break
                    if not chunk:
                        break
                    out += chunk
            self.assertEqual(proc.wait(TIMEOUT), 0, out)
            self.assertEqual(proc.stdout.read(), b"")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            os.close(master)
        text = out.decode()
        self.assertTrue(text.endswith("\r\x1b[K"), "the bar is wiped: %r"
                        % text[-80:])
        draws = [d[:-len("\x1b[K")] for d in text.split("\r")
                 if d.endswith("\x1b[K") and d != "\x1b[K"]
        self.assertGreaterEqual(len(draws), 3, text)
        bar = r"^\[([#.]+)\] (\d+) unfinished, (\d+) done, \S+/s, ETA \S+$"
        for draw in draws:
            self.assertRegex(draw, bar)
            self.assertLessEqual(len(draw), 59, draw)
        first = re.match(bar, draws[0])
        self.assertEqual(first.group(2, 3), ("4", "0"))
        self.assertNotIn("#", first.group(1), "nothing done yet")
        self.assertNotIn("\n", text, "a bar never ends a line")


class Inspect(SharedDaemon):
    def test_qsize_readable_and_json(self):
        self.assertExit(self.cli("put", "a", "b", "c"), 0)
        self.assertExit(self.cli("get", "--lease", "60"), 0)
        p = self.cli("qsize")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "qsize 2 maxsize 0 unfinished 3 "
                         "inflight 1 delayed 0 dead_lettered 0\n")
        p = self.cli("qsize", "--json")
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout),
                         {"qsize": 2, "maxsize": 0, "unfinished": 3,
                          "inflight": 1, "delayed": 0, "dead_lettered": 0,
                          "empty": False, "full": False})

    def test_qsize_shows_dead_lettered(self):
        with jqtest.Daemon("--max-deliveries", "1") as d:
            self.assertEqual(d.cli("-q", "jobs", "put", "x", "y").returncode,
                             0)
            for _ in range(2):
                p = d.cli("-q", "jobs", "get", "--lease", "60", "--show-task")
                self.assertEqual(p.returncode, 0, p.stderr)
                task = p.stdout.split("\t")[0]
                self.assertEqual(d.cli("release", task).returncode, 0)
            p = d.cli("-q", "jobs", "qsize")
            self.assertEqual((p.returncode, p.stdout),
                             (0, "qsize 0 maxsize 0 unfinished 0 inflight 0 "
                              "delayed 0 dead_lettered 2\n"), p.stderr)
            p = d.cli("-q", "jobs", "qsize", "--json")
            self.assertEqual(json.loads(p.stdout)["dead_lettered"], 2)
            p = d.cli("-q", "jobs.dead", "qsize")
            self.assertEqual(p.stdout, "qsize 2 maxsize 0 unfinished 2 "
                             "inflight 0 delayed 0 dead_lettered 0\n",
                             "a dead-letter queue is not itself limited")

    def test_empty_and_full(self):
        self.assertEqual(self.cli("empty").stdout, "true\n")
        self.assertEqual(self.cli("full").stdout, "false\n")
        self.assertExit(self.cli("put", "x"), 0)
        p = self.cli("empty")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "false\n")

    def test_full_on_bounded_queue(self):
        with jqtest.Daemon("--queue", "one:1") as d:
            self.assertEqual(d.cli("-q", "one", "full").stdout, "false\n")
            self.assertEqual(d.cli("-q", "one", "put", "x").returncode, 0)
            p = d.cli("-q", "one", "full")
            self.assertEqual((p.returncode, p.stdout), (0, "true\n"))

    def test_stats_readable(self):
        self.assertExit(self.cli("put", "a", "b"), 0)
        p = self.d.cli("stats")
        self.assertExit(p, 0)
        lines = p.stdout.splitlines()
        self.assertRegex(lines[0], r"^joinqd \d+\.\d+\.\d+ .*uptime \S+ "
                         r".*connections \d+")
        header = lines[1].split()
        self.assertEqual(header[:3], ["queue", "qsize", "maxsize"])
        rows = {l.split()[0]: l.split() for l in lines[2:]}
        self.assertIn(self.q, rows)
        row = dict(zip(header, rows[self.q]))
        self.assertEqual((row["qsize"], row["puts"]), ("2", "2"))
        widths = {len(l) for l in lines[1:]}
        self.assertEqual(len(widths), 1, "rows are aligned")

    def test_stats_json(self):
        self.assertExit(self.cli("put", "a"), 0)
        p = self.d.cli("stats", "--json")
        self.assertExit(p, 0)
        r = json.loads(p.stdout)
        self.assertOk(r)
        self.assertEqual(r["queues"][self.q]["qsize"], 1)
        self.assertNotIn("id", r)

    def test_ping(self):
        p = self.d.cli("ping")
        self.assertExit(p, 0)
        self.assertRegex(p.stdout,
                         r"^PONG joinqd \d+\.\d+\.\d+ protocol 1 in "
                         r"\d+\.\d\d ms\n$")


class Lifecycle(SharedDaemon):
    def test_declare(self):
        p = self.cli("declare", "--maxsize", "2", "--max-deliveries", "3",
                     "--dead-letter", "graves")
        self.assertExit(p, 0)
        self.assertEqual(p.stdout, "created maxsize 2 max_deliveries 3 "
                         "dead_letter graves\n")
        self.assertEqual(self.qsize()["maxsize"], 2)
        p = self.cli("declare", "--json", "--maxsize", "2")
        self.assertExit(p, 0)
        self.assertEqual(json.loads(p.stdout),
                         {"created": False, "maxsize": 2,
                          "max_deliveries": 3, "dead_letter": "graves"})
        p = self.cli("declare", udp=True)
        self.assertExit(p, 0)
        self.assertTrue(p.stdout.startswith("exists maxsize 2 "), p.stdout)
        # another setting: conflict, exit 7, the message names it
        for udp in (False, True):
            p = self.cli("declare", "--maxsize", "5", udp=udp)
            self.assertExit(p, 7)
            self.assertRegex(p.stderr, r"^joinq: conflict: .*'maxsize'")
            self.assertEqual(p.stdout, "")
        self.assertEqual(self.qsize()["maxsize"], 2)

    def test_declare_with_dead_letters_dropped(self):
        with jqtest.Daemon(config="[queue q]\ndead_letter = off\n") as d:
            p = d.cli("-q", "q", "declare")
            self.assertEqual((p.returncode, p.stdout),
                             (0, "created maxsize 0 max_deliveries 0 "
                              "dead_letter -\n"), p.stderr)
            p = d.cli("-q", "q", "declare", "--json")
            self.assertIsNone(json.loads(p.stdout)["dead_letter"])

    def test_purge_and_delete(self):
        self.assertExit(self.cli("put", "a", "b", "c"), 0)
        p = self.cli("get", "--lease", "60", "--show-task")
        self.assertExit(p, 0)
        task = p.stdout.split("\t")[0]
        p = self.cli("purge")
        self.assertEqual((p.returncode, p.stdout), (0, "purged 2\n"))
        self.assertEqual(self.cli("purge", udp=True).stdout, "purged 0\n")
        # one task in flight: delete is refused, exit 7
        for udp in (False, True):
            p = self.cli("delete", udp=udp)
            self.assertExit(p, 7)
            self.assertRegex(p.stderr,
                             r"^joinq: conflict: .*1 unfinished task")
        self.assertExit(self.cli("task_done", task), 0)
        p = self.cli("delete")
        self.assertEqual((p.returncode, p.stdout), (0, "deleted\n"))
        self.assertNotIn(self.q, self.d.request({"op": "stats"})["queues"])
        p = self.cli("delete", udp=True)
        self.assertEqual((p.returncode, p.stdout),
                         (0, "nothing to delete: no such queue\n"))

    def test_bad_settings_are_usage_errors(self):
        for args in (["declare", "--maxsize", "-1"],
                     ["declare", "--maxsize", "x"],
                     ["declare", "--max-deliveries", "4294967296"],
                     ["declare", "--dead-letter"],
                     ["purge", "--maxsize", "1"], ["delete", "x"]):
            p = self.cli(*args)
            self.assertExit(p, 2, args)
            self.assertEqual(p.stdout, "")
        p = self.cli("declare", "--dead-letter", "a b")
        self.assertExit(p, 1)
        self.assertIn("bad_queue", p.stderr)
        self.assertNotIn(self.q, self.d.request({"op": "stats"})["queues"])


class Udp(SharedDaemon):
    def test_put_get_qsize_ping_over_udp(self):
        p = self.cli("put", "--show-task", "u1", "u2", udp=True)
        self.assertExit(p, 0)
        ids = p.stdout.split()
        self.assertEqual(len(ids), 2)
        p = self.cli("qsize", udp=True)
        self.assertExit(p, 0)
        self.assertTrue(p.stdout.startswith("qsize 2 "))
        p = self.cli("get", "--show-task", udp=True)
        self.assertEqual(p.stdout, "%s\tu1\n" % ids[0])
        p = self.cli("get", udp=True)
        self.assertEqual((p.stdout, p.stderr), ("u2\n", "task %s\n" % ids[1]))
        self.assertExit(self.cli("get", "--nowait", udp=True), 3)
        p = self.d.cli("ping", udp=True)
        self.assertExit(p, 0)
        self.assertTrue(p.stdout.startswith("PONG joinqd "))

    def test_udp_get_has_a_lease(self):
        self.assertExit(self.cli("put", "leased", udp=True), 0)
        self.assertExit(self.cli("get", udp=True), 0)
        r = self.qsize()
        self.assertEqual((r["qsize"], r["inflight"]), (0, 1))

    def test_stdin_put_over_udp(self):
        p = self.cli("put", "--show-task", input="a\nb\nc\n", udp=True)
        self.assertExit(p, 0)
        self.assertEqual(len(p.stdout.split()), 3)
        items = [r["item"] for r in get_all(self.d, self.q, 3)]
        self.assertEqual(items, ["a", "b", "c"])

    def test_udp_task_done_join_stats(self):
        self.assertExit(self.cli("put", "w", udp=True), 0)
        task = self.cli("get", "--show-task", udp=True).stdout.split("\t")[0]
        self.assertExit(self.cli("join", "--nowait", udp=True), 5)
        self.assertExit(self.cli("task_done", task, udp=True), 0)
        self.assertExit(self.cli("join", "--timeout", "1", udp=True), 0)
        p = self.d.cli("stats", "--json", udp=True)
        self.assertExit(p, 0)
        self.assertNotIn("id", json.loads(p.stdout))


class Connection(jqtest.TestCase):
    def test_refused_exits_6_naming_the_address(self):
        port = free_port()
        p = run(port, "ping")
        self.assertEqual(p.returncode, 6)
        self.assertIn(b"127.0.0.1:%d" % port, p.stderr)
        self.assertIn(b"refused", p.stderr)
        self.assertTrue(p.stderr.startswith(b"joinq: "))

    def test_refused_over_udp_exits_6(self):
        port = free_port()
        p = run(port, "qsize", udp=True)
        self.assertEqual(p.returncode, 6, p.stderr)
        self.assertIn(b"127.0.0.1:%d" % port, p.stderr)

    def test_unknown_host_exits_6(self):
        p = run(7477, "ping", host="no-such-host.invalid")
        self.assertEqual(p.returncode, 6)
        self.assertIn(b"no-such-host.invalid", p.stderr)

    def test_connection_closed_exits_6(self):
        # A server that accepts and hangs up at once.
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.settimeout(TIMEOUT)

        def serve():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                pass
        t = threading.Thread(target=serve)
        t.start()
        try:
            p = run(srv.getsockname()[1], "qsize")
        finally:
            t.join(TIMEOUT)
            srv.close()
        self.assertEqual(p.returncode, 6, p.stderr)
        # EOF or a reset, as the timing falls: either way it is named.
        self.assertRegex(p.stderr, rb"^joinq: (127\.0\.0\.1:\d+ closed the "
                         rb"connection|the connection to 127\.0\.0\.1:\d+ is "
                         rb"lost: )")


class Usage(SharedDaemon):
    def test_help(self):
        p = self.d.cli("--help")
        self.assertExit(p, 0)
        for word in ("put", "get", "task_done", "release", "join", "qsize",
                     "empty", "full", "stats", "ping", "declare", "purge",
                     "delete", "Exit status"):
            self.assertIn(word, p.stdout)
        for status in range(8):
            self.assertRegex(p.stdout, r"\n  %d  " % status)

    def test_command_help(self):
        p = self.d.cli("get", "--help")
        self.assertExit(p, 0)
        self.assertIn("--lease", p.stdout)
        self.assertIn("task_done", p.stdout)
        self.assertIn("returns", p.stdout.replace("goes back", "returns"))
        for cmd in ("put", "task_done", "release", "join", "qsize", "empty",
                    "full", "stats", "ping", "declare", "purge", "delete"):
            p = self.d.cli(cmd, "--help")
            self.assertExit(p, 0, cmd)
            self.assertIn("usage: joinq", p.stdout)

    def test_version(self):
        p = self.d.cli("--version")
        self.assertExit(p, 0)
        self.assertRegex(p.stdout, r"^joinq \d+\.\d+\.\d+\n$")

    def test_usage_errors_exit_2(self):
        for args in ([], ["frob"], ["--frob", "ping"], ["put", "--frob"],
                     ["qsize", "--lease", "1"], ["ping", "extra"],
                     ["release"], ["get", "--timeout"]):
            p = self.d.cli(*args)
            self.assertExit(p, 2, args)
            self.assertTrue(p.stderr.startswith("joinq"), p.stderr)
            self.assertEqual(p.stdout, "")
        p = run("0", "ping")
        self.assertEqual(p.returncode, 2)

    def test_environment_defaults(self):
        env = {"JOINQ_HOST": "127.0.0.1", "JOINQ_PORT": str(self.d.port),
               "JOINQ_QUEUE": self.q}
        p = subprocess.run([jqtest.JOINQ, "put", "from-env"], env=dict(
            os.environ, **env), capture_output=True, text=True,
            timeout=TIMEOUT)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.qsize()["qsize"], 1)


class Token(jqtest.TestCase):
    def test_token_from_file_and_environment(self):
        secret = "s3cret-Token"
        d = jqtest.Daemon()
        with open(d.path("token"), "w") as f:
            f.write(secret + "\n")
        with open(d.path("wrong"), "w") as f:
            f.write("nope\n")
        d.args = ["--auth-token-file", d.path("token")]
        with d:
            p = d.cli("put", "x")
            self.assertEqual(p.returncode, 1)
            self.assertIn("unauthorized", p.stderr)
            p = d.cli("--token-file", d.path("wrong"), "qsize")
            self.assertEqual(p.returncode, 1)
            self.assertNotIn(secret, p.stderr)
            self.assertNotIn("nope", p.stderr)
            p = d.cli("--token-file", d.path("token"), "put", "x")
            self.assertEqual(p.returncode, 0, p.stderr)
            p = d.cli("put", "y", env={"JOINQ_TOKEN": secret})
            self.assertEqual(p.returncode, 0, p.stderr)
            p = d.cli("put", input="z\n", env={"JOINQ_TOKEN": secret})
            self.assertEqual(p.returncode, 0, p.stderr)
            p = d.cli("qsize", udp=True, env={"JOINQ_TOKEN": secret})
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.startswith("qsize 3 "))
            p = d.cli("qsize", udp=True)
            self.assertEqual(p.returncode, 1)
            self.assertEqual(d.cli("ping").returncode, 0,
                             "ping needs no token")


    def test_daemon_and_cli_read_a_token_file_alike(self):
        """One reader: the first line, the blanks around it trimmed.  A
        file that lets joinqd in lets joinq in."""
        for text in ("s3cret \n", "s3cret\r\n", " \ts3cret\n", "s3cret",
                     "s3cret\t \r\nsecond line\n"):
            with self.subTest(text=text):
                d = jqtest.Daemon()
                path = d.file("token", text)
                d.args = ["--auth-token-file", path]
                with d:
                    c = d.tcp()
                    try:
                        self.assertOk(c.request({"op": "auth",
                                                 "token": "s3cret"}))
                    finally:
                        c.close()
                    for udp in (False, True):
                        p = d.cli("--token-file", path, "put", "x", udp=udp)
                        self.assertEqual(p.returncode, 0, p.stderr)
                    p = d.cli("--token-file", path, "qsize")
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertTrue(p.stdout.startswith("qsize 2 "),
                                    p.stdout)

    def test_a_file_without_a_token_is_refused_by_both(self):
        too_long = "t" * 4097 + "\n"
        with jqtest.Daemon() as plain:
            for i, text in enumerate(("", " \t\r\n", "\nsecond line\n",
                                      too_long)):
                with self.subTest(text=text[:8]):
                    path = plain.file("token%d" % i, text)
                    why = "longer than 4096" if text == too_long else \
                          "holds no token"
                    # joinq: a usage error that names the file.
                    p = plain.cli("--token-file", path, "ping")
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("the token file %s" % path, p.stderr)
                    self.assertIn(why, p.stderr)
                    # joinqd: refuses to start without the token it was
                    # told to require.
                    d = jqtest.Daemon("--auth-token-file", path)
                    with self.assertRaises(RuntimeError) as cm:
                        d.start()
                    self.assertEqual(d.proc.returncode, 2)
                    self.assertIn("auth_token_file %s" % path,
                                  str(cm.exception))
                    self.assertIn(why, str(cm.exception))
            p = plain.cli("--token-file", plain.path("missing"), "ping")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("cannot read the token file", p.stderr)

if __name__ == "__main__":
    jqtest.main()
