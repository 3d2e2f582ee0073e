"""Clients given several daemons (PROTOCOL.md, "Replication"; joinq.h,
"Several addresses"): libjoinq and the joinq CLI with `-H a,b` use the
first daemon that answers, move to the next when the connection is lost or
a standby refuses a request, send again only what is harmless to send twice
(a put whose reply was lost is reported, not sent twice), and give up in
bounded time when no daemon answers.

Two real joinqd on loopback, and small fake daemons in this process: a
standby (answers ping with "role":"standby" and everything else with
unavailable) and one that reads a request and closes without a reply.
"""
import json
import os
import signal
import socket
import subprocess
import threading

import jqtest

TIMEOUT = jqtest.TIMEOUT
BUILDDIR = os.path.abspath(os.environ.get("JOINQ_BUILDDIR") or
                           os.path.dirname(os.path.dirname(
                               os.path.abspath(jqtest.JOINQ))))
EXAMPLE = os.path.join(BUILDDIR, "doc/examples/cooks_and_eaters")


def dead_address():
    """HOST:PORT of a loopback port nobody listens on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "127.0.0.1:%d" % port


def addr(d):
    return "%s:%d" % (d.host, d.port)


def joinq(hosts, *args, input=None, timeout=TIMEOUT):
    """Runs the CLI with -H hosts; returns the CompletedProcess."""
    env = dict(os.environ)
    for name in ("JOINQ_HOST", "JOINQ_PORT", "JOINQ_TOKEN"):
        env.pop(name, None)
    return subprocess.run([jqtest.JOINQ, "-H", hosts] + list(args),
                          input=input, env=env, capture_output=True,
                          text=True, timeout=timeout)


class FakeDaemon:
    """A loopback TCP server in a thread that speaks just enough protocol:
    mode "standby" answers ping with role standby and every other request
    with unavailable (naming `active` if given); mode "drop" reads one
    request per connection and closes without a reply.  ops counts the
    requests it read, by op."""

    def __init__(self, mode, active=None):
        self.mode = mode
        self.active = active
        self.ops = {}
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def count(self, op):
        with self.lock:
            return self.ops.get(op, 0)

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.talk, args=(conn,),
                             daemon=True).start()

    def talk(self, conn):
        conn.settimeout(TIMEOUT)
        f = conn.makefile("rwb")
        try:
            for line in f:
                op = json.loads(line).get("op")
                with self.lock:
                    self.ops[op] = self.ops.get(op, 0) + 1
                if self.mode == "drop":
                    return
                if op == "ping":
                    reply = {"ok": True, "protocol": 1, "version": "fake",
                             "role": "standby"}
                else:
                    reply = {"ok": False, "error": "unavailable",
                             "message": "standby"}
                    if self.active:
                        reply["active"] = self.active
                f.write(jqtest.encode(reply))
                f.flush()
        except (OSError, ValueError):
            pass
        finally:
            f.close()
            conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.thread.join(TIMEOUT)
        self.listener.close()
        return False


class Failover(jqtest.TestCase):
    def assertRan(self, p, msg=None):
        self.assertEqual(p.returncode, 0, msg or "stdout %r stderr %r"
                         % (p.stdout, p.stderr))

    def assertPutThenGet(self, hosts, queue, *items):
        """Puts items through hosts and gets the first back, leased."""
        self.assertRan(joinq(hosts, "-q", queue, "put", *items))
        p = joinq(hosts, "-q", queue, "get", "--lease", "10")
        self.assertRan(p)
        self.assertEqual(p.stdout, items[0] + "\n")

    def with_one_to_kill(self, body):
        """Runs body(a, b) with two daemons; body kills a (SIGKILL)."""
        a = jqtest.Daemon().start()
        try:
            with jqtest.Daemon() as b:
                body(a, b)
        finally:
            a.stop(signal.SIGKILL)      # done already, unless a check failed
            a.errfile.close()
            a.tmp.cleanup()

    def test_a_dead_address_first_cli(self):
        with jqtest.Daemon() as d:
            hosts = dead_address() + "," + addr(d)
            self.assertRan(joinq(hosts, "ping"))
            self.assertPutThenGet(hosts, "f1", "a", "b")
            self.assertEqual(self.qsize_of(d, "f1")["qsize"], 1)

    def test_a_dead_address_first_libjoinq_example(self):
        with jqtest.Daemon() as d:
            env = dict(os.environ)
            env.pop("JOINQ_PORT", None)
            p = subprocess.run([EXAMPLE, dead_address() + "," + addr(d)],
                               env=env, capture_output=True, text=True,
                               timeout=3 * TIMEOUT)
            self.assertRan(p)
            self.assertIn("ate", p.stdout)

    def test_bench_uses_the_first_daemon_that_answers(self):
        with jqtest.Daemon() as d:
            p = joinq(dead_address() + "," + addr(d), "bench", "-n", "200",
                      "--queue", "f2", timeout=6 * TIMEOUT)
            self.assertRan(p)

    def test_killed_daemon_the_next_calls_go_to_the_other(self):
        self.with_one_to_kill(self.killed_daemon)

    def killed_daemon(self, a, b):
        """a dies (SIGKILL) between two puts of one producer and while a
        join waits on it."""
        hosts = addr(a) + "," + addr(b)
        env = dict(os.environ)
        env.pop("JOINQ_HOST", None)
        producer = subprocess.Popen([jqtest.JOINQ, "-H", hosts, "-q", "f3",
                                     "put"], env=env, text=True,
                                    stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        join = None
        try:
            producer.stdin.write("x\n")
            producer.stdin.flush()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(a, "f3")["unfinished"] == 1))
            # A join waiting on a: after a's death it is sent again to b,
            # where nothing is unfinished.
            join = subprocess.Popen([jqtest.JOINQ, "-H", hosts, "-q", "f3",
                                     "join"], env=env, text=True,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            self.assertTrue(jqtest.wait_until(
                lambda: a.request({"op": "stats"})["queues"]["f3"]
                ["waiting_joins"] == 1), "the join never waited on a")
            a.stop(signal.SIGKILL)
            _, err = join.communicate(timeout=TIMEOUT)
            self.assertEqual(join.returncode, 0, err)
            # The producer's connection is gone: its next puts go to b.
            _, err = producer.communicate("y\nz\n", timeout=TIMEOUT)
            self.assertEqual(producer.returncode, 0, err)
        finally:
            for p in (producer, join):
                if p and p.poll() is None:
                    p.kill()
                    p.communicate()
        # Later calls, each a new connection, go to b too.
        self.assertPutThenGet(hosts, "f3", "y")
        self.assertQsize(self.qsize_of(b, "f3"), qsize=2, unfinished=3)

    def test_a_standby_first_sends_requests_to_the_active_it_names(self):
        with jqtest.Daemon() as d, FakeDaemon("standby", addr(d)) as fake:
            hosts = fake.address + "," + dead_address()
            self.assertPutThenGet(hosts, "f4", "one", "two")
            self.assertQsize(self.qsize_of(d, "f4"), qsize=1, unfinished=2)
            self.assertGreaterEqual(fake.count("put"), 1)

    def test_a_standby_refusing_the_token_names_the_active(self):
        d = jqtest.Daemon()
        token = d.file("token", "s3cret\n")
        d.args += ["--auth-token-file", token]
        with d, FakeDaemon("standby", addr(d)) as fake:
            hosts = fake.address + "," + dead_address()
            self.assertRan(joinq(hosts, "--token-file", token, "-q", "f9",
                                 "put", "x"))
            self.assertEqual(fake.count("auth"), 1)
            p = joinq(addr(d), "--token-file", token, "-q", "f9", "qsize")
            self.assertRan(p)
            self.assertTrue(p.stdout.startswith("qsize 1 "), p.stdout)

    def test_a_standby_naming_no_active_sends_to_the_next(self):
        with jqtest.Daemon() as d, FakeDaemon("standby") as fake:
            hosts = fake.address + "," + addr(d)
            self.assertRan(joinq(hosts, "-q", "f5", "put", "one"))
            self.assertQsize(self.qsize_of(d, "f5"), qsize=1)
            self.assertEqual(fake.count("put"), 1)
            self.assertEqual(fake.count("ping"), 1)

    def test_a_put_whose_reply_was_lost_is_not_sent_twice(self):
        with jqtest.Daemon() as d, FakeDaemon("drop") as fake:
            p = joinq(fake.address + "," + addr(d), "-q", "f6", "put", "x")
            self.assertEqual(p.returncode, 6, p)
            self.assertIn("outcome unknown", p.stderr)
            self.assertIn(fake.address, p.stderr)
            self.assertEqual(fake.count("put"), 1)
            self.assertQsize(self.qsize_of(d, "f6"), qsize=0, unfinished=0)

    def test_a_get_whose_reply_was_lost_is_sent_to_the_next(self):
        with jqtest.Daemon() as d, FakeDaemon("drop") as fake:
            self.assertRan(d.cli("-q", "f7", "put", "item"))
            p = joinq(fake.address + "," + addr(d), "-q", "f7", "get",
                      "--lease", "10")
            self.assertRan(p)
            self.assertEqual(p.stdout, "item\n")
            self.assertEqual(fake.count("get"), 1)

    def test_work_pool_with_a_dead_address_first(self):
        with jqtest.Daemon() as d:
            n = 20
            self.assertRan(d.cli("-q", "f8", "put",
                                 input="".join("%d\n" % i for i in range(n))))
            p = joinq(dead_address() + "," + addr(d), "-q", "f8", "work",
                      "-j", "2", "--exit-when-empty", "--", "true",
                      timeout=6 * TIMEOUT)
            self.assertRan(p)
            self.assertQsize(self.qsize_of(d, "f8"), qsize=0, unfinished=0)

    def test_work_pool_carries_on_when_its_daemon_dies(self):
        self.with_one_to_kill(self.pool_survives)

    def pool_survives(self, a, b):
        """A pool working on a moves to b when a dies (SIGKILL) and drains
        b's queue: workers connect again and carry on."""
        n = 30
        items = "".join("%d\n" % i for i in range(n))
        self.assertRan(a.cli("-q", "f10", "put", input=items))
        self.assertRan(b.cli("-q", "f10", "put", input=items))
        env = dict(os.environ)
        env.pop("JOINQ_HOST", None)
        pool = subprocess.Popen([jqtest.JOINQ, "-H", addr(a) + "," + addr(b),
                                 "-q", "f10", "work", "-j", "2",
                                 "--exit-when-empty", "--", "sleep", "0.1"],
                                env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            # Killed with most of a's tasks still to do (each takes 0.1 s).
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(a, "f10")["unfinished"] <= n - 2))
            a.stop(signal.SIGKILL)
            _, err = pool.communicate(timeout=6 * TIMEOUT)
            self.assertEqual(pool.returncode, 0, err)
        finally:
            if pool.poll() is None:
                pool.kill()
                pool.communicate()
        self.assertQsize(self.qsize_of(b, "f10"), qsize=0, unfinished=0)

    def test_no_daemon_fails_in_bounded_time_naming_the_addresses(self):
        dead = [dead_address(), dead_address()]
        p = joinq(",".join(dead), "ping")
        self.assertEqual(p.returncode, 6, p)
        for a in dead:      # each address, with why it failed
            self.assertIn(a + ": Connection refused", p.stderr)

    def test_failing_over_in_a_call_is_bounded(self):
        """A get whose connections all close is sent again round after
        round, with pauses, until the budget ends: then it fails."""
        with FakeDaemon("drop") as fake:
            p = joinq(fake.address + "," + dead_address(), "get",
                      "--nowait", timeout=TIMEOUT)
            self.assertEqual(p.returncode, 6, p)
            self.assertIn(fake.address, p.stderr)
            # 50 ms doubling to 1 s over 5 s: about a dozen rounds, not a
            # busy loop.
            self.assertLess(fake.count("get"), 40)
            self.assertGreater(fake.count("get"), 1)


if __name__ == "__main__":
    jqtest.main()
