"""joinq work, the consumer pool, against a real joinqd.

Throughput with a join waiting, supervision (kill -9 of a worker, of a CMD;
the daemon restarting), dead letters and retry backoff, signals (graceful,
then hard, Ctrl-C), --exit-when-empty, --task-timeout and process groups,
--max-tasks, what CMD gets (argv {}, stdin, env, NUL, big items), exit
status, orphans and zombies, UDP.  Each pool runs in a session of its own,
so that every process it ever made can be found in /proc; every wait is
bounded."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import jqtest

TIMEOUT = jqtest.TIMEOUT
SLOW = jqtest.SLOW

# A CMD that records what it got: its argv, stdin and environment.
RECORDER = r"""
import json, os, sys
data = sys.stdin.buffer.read()
env = {k: v for k, v in os.environ.items() if k.startswith("JOINQ_")}
with open(os.path.join(os.environ["OUT"], os.environ["JOINQ_TASK"]), "w") as f:
    json.dump({"argv": sys.argv[1:], "stdin": data.hex(), "env": env}, f)
"""


# ---- /proc ------------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid, pgrp, session) of pid, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def processes():
    """pid -> (state, ppid, pgrp, session) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st:
                out[int(name)] = st
    return out


def in_session(sid):
    """pid -> state of every process of session sid."""
    return {pid: st[0] for pid, st in processes().items() if st[3] == sid}


def in_group(pgid):
    return {pid: st[0] for pid, st in processes().items() if st[2] == pgid}


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- the pool ---------------------------------------------------------------

class Pool:
    """A `joinq work` in a session of its own (its pid is the session's
    id), its stdout and stderr in files."""

    def __init__(self, d, queue, *args, udp=False, env=None, port=None):
        argv = [jqtest.JOINQ, "-H", d.host, "-p", str(port or d.port)]
        if udp:
            argv.append("-u")
        argv += ["-q", queue, "work"] + list(args)
        e = dict(os.environ)
        e.update(env or {})
        n = len([f for f in os.listdir(d.tmp.name) if f.startswith("pool")])
        self.errpath = d.path("pool%d.err" % n)
        self.err = open(self.errpath, "wb")
        self.out = open(d.path("pool%d.out" % n), "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.err, env=e,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.watch = ZombieWatch(self.pid)
        self.watch.start()

    def stderr(self):
        with open(self.errpath, "rb") as f:
            return f.read().decode(errors="replace")

    def workers(self):
        """The live children of the parent: its workers."""
        return sorted(pid for pid, st in processes().items()
                      if st[1] == self.pid and st[0] != "Z")

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait(self, timeout=TIMEOUT, progress=None):
        """The exit status; the whole session is killed if it has not
        exited within timeout seconds (a scaled bound, like TIMEOUT).
        With progress, a function whose value changes while the pool
        works, timeout bounds each stretch without progress instead: a
        bound against a hang however slow the machine."""
        last = progress() if progress else None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.proc.wait(max(0.0, min(1.0, deadline -
                                                   time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            if progress and progress() != last:
                last = progress()
                deadline = time.monotonic() + timeout
            elif time.monotonic() >= deadline:
                self.kill_all()
                raise AssertionError("joinq work did not exit, nor make "
                                     "progress, within %.1f s:\n%s"
                                     % (timeout, self.stderr()))

    def left(self):
        """The processes of the pool's session still there."""
        return {pid: s for pid, s in in_session(self.pid).items()
                if pid != self.pid}

    def kill_all(self):
        for pid in in_session(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait(TIMEOUT)

    def close(self):
        if self.proc.poll() is None:
            self.kill_all()
        self.watch.finish()
        self.err.close()
        self.out.close()


class ZombieWatch(threading.Thread):
    """Samples the pool's session for zombies every 20 ms.  A process may
    be a zombie for the moment between its exit and its reaping; one still
    a zombie a second later was never reaped."""

    def __init__(self, sid):
        super().__init__(daemon=True)
        self.sid = sid
        self.samples = 0
        self.seen = 0               # zombies seen at all, reaped or not
        self.leaked = set()
        self.halt = threading.Event()

    def run(self):
        first = {}
        while not self.halt.is_set():
            now = time.monotonic()
            zombies = {pid for pid, s in in_session(self.sid).items()
                       if s == "Z" and pid != self.sid}
            for pid in zombies:
                if pid not in first:
                    self.seen += 1
                first.setdefault(pid, now)
                if now - first[pid] > 1.0 * SLOW:
                    self.leaked.add(pid)
            for pid in list(first):
                if pid not in zombies:
                    del first[pid]
            self.samples += 1
            self.halt.wait(0.02)

    def finish(self):
        self.halt.set()
        self.join(TIMEOUT)


class WorkTest(jqtest.TestCase):
    """Starts pools and always cleans up after them."""

    def setUp(self):
        self.pools = []

    def tearDown(self):
        for p in self.pools:
            p.close()

    def pool(self, d, queue, *args, **kw):
        p = Pool(d, queue, *args, **kw)
        self.pools.append(p)
        return p

    def outdir(self, d, name="out"):
        path = d.path(name)
        os.makedirs(path, exist_ok=True)
        return path

    def put(self, d, queue, *items, json_items=False):
        args = ["-q", queue, "put", "--show-task"]
        if json_items:
            args.append("--json")
        r = d.cli(*(args + ["--"] + list(items)))
        self.assertEqual(r.returncode, 0, r.stderr)
        return [int(t) for t in r.stdout.split()]

    def stats(self, d, queue):
        r = d.request({"op": "stats"})
        self.assertOk(r)
        return r["queues"].get(queue, {})

    def wait_for(self, predicate, what, timeout=TIMEOUT):
        self.assertTrue(jqtest.wait_until(predicate, timeout),
                        "waited %.1f s for %s" % (timeout, what))

    def wait_file(self, path, timeout=TIMEOUT):
        self.wait_for(lambda: os.path.exists(path) and
                      os.path.getsize(path) > 0, path, timeout)
        with open(path) as f:
            return f.read()

    def assertClean(self, pool):
        """Nothing of the pool is left, and no zombie outlived a second."""
        self.assertEqual(pool.left(), {}, "processes left behind")
        pool.watch.finish()
        self.assertGreater(pool.watch.samples, 0)
        self.assertEqual(pool.watch.leaked, set(), "zombies never reaped")


# ---- throughput -------------------------------------------------------------

class Throughput(WorkTest):
    def test_ten_thousand_tasks_four_workers_with_join(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            n = 10000
            r = d.cli("-q", "big", "put",
                      input="".join("%d\n" % i for i in range(n)))
            self.assertEqual(r.returncode, 0, r.stderr)

            # A join from before the pool: it must return only after the
            # last task_done.  Bounds against a hang, not a speed test
            # (joinq bench is): the pool is bounded by its progress, and
            # the join, which waits for the pool, by the pool's end.
            join = d.cli_start("-q", "big", "join")
            joined = {}

            def wait_join():
                join.wait()         # killed below if it outlives the pool
                joined["at"] = time.time()
                joined["unfinished"] = d.qsize("big")["unfinished"]
            t = threading.Thread(target=wait_join, daemon=True)
            t.start()

            pool = self.pool(d, "big", "-j", "4", "--exit-when-empty", "--",
                             "touch", out + "/{}")
            def dones():
                return self.stats(d, "big").get("task_dones")
            self.assertEqual(pool.wait(progress=dones), 0, pool.stderr())
            took = time.monotonic() - pool.started
            t.join(TIMEOUT)
            if t.is_alive():
                join.kill()
                t.join(TIMEOUT)
                self.fail("join did not return within %.1f s of the pool's "
                          "end" % TIMEOUT)
            join.stdout.close()
            join.stderr.close()

            names = os.listdir(out)
            self.assertEqual(set(names), {str(i) for i in range(n)},
                             "every item's CMD ran")
            self.assertEqual(self.stats(d, "big")["task_dones"], n)
            self.assertEqual(join.returncode, 0)
            self.assertEqual(joined["unfinished"], 0,
                             "join returned before the last task_done")
            last = max(os.stat(os.path.join(out, f)).st_mtime for f in names)
            self.assertGreaterEqual(joined["at"], last,
                                    "join returned before the last CMD ended")
            self.assertIn("10000 done, 0 failed", pool.stderr())
            jqtest.diag("10000 tasks, 4 workers: %.1f s" % took)
            self.assertClean(pool)


# ---- supervision ------------------------------------------------------------

# Writes "WORKER SHELL" (the worker is the shell's parent) when it starts,
# then works a second.
SLOW_CMD = ['sh', '-c', 'echo "$PPID $$" > "$OUT/start.$JOINQ_DELIVERIES"; '
            'sleep 1; echo ok > "$OUT/done.$JOINQ_DELIVERIES"']


class Supervision(WorkTest):
    def test_worker_killed_mid_task_task_done_later(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "sup", "x")
            pool = self.pool(d, "sup", "-j", "3", "--", *SLOW_CMD,
                             env={"OUT": out})
            worker, shell = map(int, self.wait_file(out + "/start.1").split())
            self.wait_for(lambda: len(pool.workers()) == 3, "3 workers")
            self.assertIn(worker, pool.workers())
            os.kill(worker, signal.SIGKILL)

            # The CMD of the dead worker dies with it, and all its group.
            self.wait_for(lambda: not in_group(shell), "CMD's group gone", 3)
            # Another worker does the task: its second delivery.
            self.wait_file(out + "/done.2")
            self.assertFalse(os.path.exists(out + "/done.1"))
            self.wait_for(lambda: self.stats(d, "sup").get("task_dones") == 1,
                          "task_done")
            self.assertGreaterEqual(self.stats(d, "sup")["redeliveries"], 1)
            # And the pool has 3 workers again, without the dead one.
            self.wait_for(lambda: len(pool.workers()) == 3 and
                          worker not in pool.workers(), "3 workers again")
            self.assertIn("worker %d was killed by signal 9" % worker,
                          pool.stderr())

            pool.signal(signal.SIGTERM)
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertClean(pool)

    def test_cmd_killed_mid_task_task_done_later(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "sup", "x")
            pool = self.pool(d, "sup", "-j", "3", "--", *SLOW_CMD,
                             env={"OUT": out})
            worker, shell = map(int, self.wait_file(out + "/start.1").split())
            self.wait_for(lambda: len(pool.workers()) == 3, "3 workers")
            workers = pool.workers()
            os.kill(shell, signal.SIGKILL)

            self.wait_file(out + "/done.2")
            self.wait_for(lambda: self.stats(d, "sup").get("task_dones") == 1,
                          "task_done")
            st = self.stats(d, "sup")
            self.assertGreaterEqual(st["redeliveries"], 1)
            self.assertEqual(st["releases"], 1)
            self.assertEqual(pool.workers(), workers,
                             "a CMD's death is not its worker's")
            self.assertIn("killed by signal 9", pool.stderr())

            pool.signal(signal.SIGTERM)
            self.assertEqual(pool.wait(), 1, "a CMD run failed")
            self.assertClean(pool)

    def test_leased_task_of_a_dead_worker_waits_for_its_lease(self):
        """With --lease the task outlives the worker's connection: it comes
        back when the lease runs out, and --exit-when-empty waits for it
        although the queue looks empty meanwhile."""
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "lease", "x")
            lease = 1.5 * SLOW
            pool = self.pool(d, "lease", "-j", "2", "--lease", "%g" % lease,
                             "--exit-when-empty", "--", *SLOW_CMD,
                             env={"OUT": out})
            worker, _ = map(int, self.wait_file(out + "/start.1").split())
            os.kill(worker, signal.SIGKILL)
            self.wait_for(lambda: self.qsize_of(d, "lease")["qsize"] == 0 and
                          self.qsize_of(d, "lease")["inflight"] == 1,
                          "the task held by its lease")
            time.sleep(0.5)
            self.assertIsNone(pool.proc.poll(), "exited with a task out")
            self.wait_file(out + "/start.2")
            # delivered after the pool started: the lease runs out later
            self.assertGreaterEqual(time.monotonic() - pool.started, lease,
                                    "back only when the lease ran out")
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertTrue(os.path.exists(out + "/done.2"))
            self.assertEqual(self.stats(d, "lease")["task_dones"], 1)
            self.assertIn("when its lease runs out", pool.stderr())
            self.assertClean(pool)

    def test_lease_running_out_before_cmd_ends(self):
        """Nothing renews a lease: a run longer than it loses its task,
        which another worker takes, and task_done says so."""
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "short", "x")
            pool = self.pool(d, "short", "-j", "2", "--lease", "0.3",
                             "--", *SLOW_CMD, env={"OUT": out})
            self.wait_file(out + "/done.1")
            self.wait_file(out + "/done.2")
            self.wait_for(lambda: "lease ran out" in pool.stderr(),
                          "the late task_done reported")
            pool.signal(signal.SIGTERM)
            pool.signal(signal.SIGTERM)
            pool.wait()
            self.assertIn("task_done failed: unknown_task", pool.stderr())
            self.assertIn("task_done refused for", pool.stderr())
            self.assertClean(pool)

    def test_daemon_restart_workers_come_back_with_backoff(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            pool = self.pool(d, "rs", "-j", "2", "--", "touch", out + "/{}")
            self.wait_for(lambda: len(pool.workers()) == 2, "2 workers")
            self.put(d, "rs", "before")
            self.wait_for(lambda: os.path.exists(out + "/before"), "a task")
            self.assertEqual(d.stop(), 0)
            self.wait_for(lambda: "cannot reach the daemon" in pool.stderr(),
                          "the workers notice")
            time.sleep(1.5)
            # Backoff: a few restarts in 1.5 s, not a fork bomb.
            restarts = pool.stderr().count("cannot reach the daemon")
            self.assertLess(restarts, 30, pool.stderr())

            with jqtest.Daemon("-p", str(d.port)) as d2:
                self.assertEqual(d2.port, d.port)
                self.put(d2, "rs", "after")
                self.wait_for(lambda: os.path.exists(out + "/after"),
                              "a task after the restart", 2 * TIMEOUT)
                pool.signal(signal.SIGTERM)
                self.assertEqual(pool.wait(), 0, pool.stderr())
                self.assertClean(pool)


# ---- dead letters and retries -----------------------------------------------

class DeadLetters(WorkTest):
    def test_failing_cmd_ends_in_dead_letters_spaced_by_retry_delay(self):
        with jqtest.Daemon(config="[queue jobs]\nmax_deliveries = 3\n") as d:
            out = self.outdir(d)
            tasks = self.put(d, "jobs", "a", "b")
            join = d.cli_start("-q", "jobs", "join")
            pool = self.pool(d, "jobs", "-j", "2", "--retry-delay", "0.2",
                             "--exit-when-empty", "--", "sh", "-c",
                             'date +%s.%N >> "$OUT/$JOINQ_TASK"; exit 1',
                             env={"OUT": out})
            self.assertEqual(pool.wait(), 1, pool.stderr())
            self.assertEqual(join.wait(TIMEOUT), 0, "join on the source")
            join.stdout.close()
            join.stderr.close()

            self.assertQsize(d.qsize("jobs"), unfinished=0)
            self.assertQsize(d.qsize("jobs.dead"), qsize=2)
            self.assertEqual(self.stats(d, "jobs")["dead_lettered"], 2)
            for t in tasks:
                with open("%s/%d" % (out, t)) as f:
                    times = [float(x) for x in f.read().split()]
                self.assertEqual(len(times), 3, "three deliveries")
                gap1, gap2 = times[1] - times[0], times[2] - times[1]
                self.assertGreaterEqual(gap1, 0.2)
                self.assertGreaterEqual(gap2, 0.4)
                self.assertGreater(gap2, gap1, "the delay doubles")
                self.assertLess(gap2, 0.4 + 2 * SLOW)
            err = pool.stderr()
            self.assertIn("back in 0.2 s", err)
            self.assertIn("back in 0.4 s", err)
            self.assertIn("exit status 1", err)
            self.assertIn("0 done, 6 failed", err)
            self.assertClean(pool)


# ---- signals ----------------------------------------------------------------

class Signals(WorkTest):
    def started_two(self, d, out, queue, cmd):
        self.put(d, queue, "a", "b", "c", "d")
        pool = self.pool(d, queue, "-j", "2", "--", *cmd, env={"OUT": out})
        self.wait_for(lambda: len([f for f in os.listdir(out)
                                   if f.startswith("start")]) == 2,
                      "two tasks started")
        return pool

    def test_sigterm_lets_running_tasks_finish(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            cmd = ["sh", "-c", 'touch "$OUT/start.$1"; sleep 1; '
                   'touch "$OUT/done.$1"', "sh", "{}"]
            pool = self.started_two(d, out, "sig", cmd)
            pool.signal(signal.SIGTERM)
            self.assertEqual(pool.wait(), 0, pool.stderr())
            started = sorted(f[6:] for f in os.listdir(out)
                             if f.startswith("start."))
            done = sorted(f[5:] for f in os.listdir(out)
                          if f.startswith("done."))
            self.assertEqual(done, started, "the running tasks finished")
            self.assertEqual(self.stats(d, "sig")["task_dones"], 2)
            self.assertQsize(d.qsize("sig"), qsize=2, inflight=0,
                             unfinished=2)
            self.assertIn("SIGTERM: stopping", pool.stderr())
            self.assertClean(pool)

    def test_second_sigterm_kills_cmds_and_releases_their_tasks(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            # CMD starts a child of its own: the whole group must die.
            cmd = ["sh", "-c", 'touch "$OUT/start.$1"; sleep 60 & wait',
                   "sh", "{}"]
            pool = self.started_two(d, out, "sig2", cmd)
            pool.signal(signal.SIGTERM)
            time.sleep(0.3)
            self.assertEqual(pool.proc.poll(), None, "tasks still running")
            pool.signal(signal.SIGTERM)
            self.assertEqual(pool.wait(), 1, pool.stderr())
            self.assertQsize(d.qsize("sig2"), qsize=4, inflight=0,
                             unfinished=4)
            st = self.stats(d, "sig2")
            self.assertEqual(st["task_dones"], 0)
            self.assertEqual(st["releases"], 2)
            deliveries = sorted(d.request({"op": "get", "queue": "sig2",
                                           "block": False, "lease": 10})
                                ["deliveries"] for _ in range(4))
            self.assertEqual(deliveries, [1, 1, 2, 2])
            self.assertIn("again: killing 2 running", pool.stderr())
            self.assertClean(pool)

    def test_ctrl_c_to_the_foreground_group_lets_tasks_finish(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            cmd = ["sh", "-c", 'touch "$OUT/start.$1"; sleep 1; '
                   'touch "$OUT/done.$1"', "sh", "{}"]
            pool = self.started_two(d, out, "ctrlc", cmd)
            # What a terminal does: SIGINT to the foreground group, which
            # holds the parent and its workers but not the CMDs.
            os.killpg(pool.pid, signal.SIGINT)
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertEqual(self.stats(d, "ctrlc")["task_dones"], 2)
            self.assertEqual(len([f for f in os.listdir(out)
                                  if f.startswith("done.")]), 2)
            self.assertIn("SIGINT: stopping", pool.stderr())
            self.assertClean(pool)

    def test_idle_pool_stops_at_once(self):
        for udp in (False, True):
            with self.subTest(udp=udp), jqtest.Daemon() as d:
                pool = self.pool(d, "idle", "-j", "3", "true", udp=udp)
                self.wait_for(lambda: len(pool.workers()) == 3, "workers")
                time.sleep(0.2)     # all waiting in get
                t0 = time.monotonic()
                pool.signal(signal.SIGTERM)
                self.assertEqual(pool.wait(), 0, pool.stderr())
                self.assertLess(time.monotonic() - t0, 1.0 * SLOW,
                                "a waiting get is cancelled")
                self.assertClean(pool)


# ---- --exit-when-empty ------------------------------------------------------

class SlowDeliveryProxy:
    """A TCP relay between joinq work and the daemon that holds back every
    get reply (the bytes that carry "task") for `delay` seconds: a
    delivery that is on its way for that long, as a large item on a busy
    machine is.  Half-closes are passed on, as the cancel of a get needs.
    Threads only; close() ends every socket."""

    def __init__(self, d, delay):
        self.d = d
        self.delay = delay
        self.socks = []
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def track(self, s):
        with self.lock:
            self.socks.append(s)

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return              # closed
            self.track(client)
            try:
                daemon = socket.create_connection((self.d.host, self.d.port),
                                                  TIMEOUT)
            except OSError:
                client.close()
                continue
            daemon.settimeout(None)
            self.track(daemon)
            threading.Thread(target=self.pump, args=(client, daemon, False),
                             daemon=True).start()
            threading.Thread(target=self.pump, args=(daemon, client, True),
                             daemon=True).start()

    def pump(self, src, dst, replies):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if replies and b'"task"' in data:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            return

    def close(self):
        self.listener.close()
        with self.lock:
            for s in self.socks:
                s.close()


class ExitWhenEmpty(WorkTest):
    def test_empty_queue_exits_zero_at_once(self):
        with jqtest.Daemon() as d:
            pool = self.pool(d, "none", "-j", "2", "--exit-when-empty", "true")
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertIn("0 done, 0 failed", pool.stderr())
            self.assertClean(pool)

    def test_delivery_on_its_way_is_not_drained(self):
        """A worker whose get is being answered waits in get as far as
        the pool can see, while the daemon counts its task in flight.
        The pool must not call that queue drained: it once stopped, took
        the task back from the worker, found it queued again and resumed,
        over and over while each delivery took longer than its check."""
        with jqtest.Daemon() as d:
            proxy = SlowDeliveryProxy(d, 1.0 * SLOW)
            try:
                self.put(d, "slow", "x")
                pool = self.pool(d, "slow", "-j", "1", "--exit-when-empty",
                                 "true", port=proxy.port)
                self.assertEqual(pool.wait(), 0, pool.stderr())
            finally:
                proxy.close()
            self.assertNotIn("resuming", pool.stderr())
            self.assertIn("1 done, 0 failed", pool.stderr())
            st = self.stats(d, "slow")
            self.assertEqual((st["gets"], st["task_dones"]), (1, 1),
                             "delivered once, done once")
            self.assertClean(pool)

    def test_task_held_by_another_consumer_is_not_drained(self):
        """A task another consumer holds may come back: the pool waits
        for it, and runs it when it does."""
        with jqtest.Daemon() as d:
            self.put(d, "held", "x")
            other = d.tcp()
            try:
                self.assertOk(other.request({"op": "get", "queue": "held"}))
                pool = self.pool(d, "held", "-j", "1", "--exit-when-empty",
                                 "true")
                self.wait_for(lambda: len(pool.workers()) == 1, "a worker")
                time.sleep(0.5 * SLOW)
                self.assertIsNone(pool.proc.poll(), "exited with a task out")
            finally:
                other.close()       # hands the task back
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertIn("1 done, 0 failed", pool.stderr())
            self.assertEqual(self.stats(d, "held")["task_dones"], 1)
            self.assertClean(pool)

    def test_waits_for_a_delayed_retry(self):
        with jqtest.Daemon() as d:
            self.put(d, "later", "x")
            # Fails the first time, works the second.
            pool = self.pool(d, "later", "-j", "2", "--retry-delay", "1",
                             "--exit-when-empty", "--", "sh", "-c",
                             '[ "$JOINQ_DELIVERIES" -ge 2 ]')
            self.assertEqual(pool.wait(), 1, "one run failed")
            self.assertGreaterEqual(time.monotonic() - pool.started, 1.0)
            self.assertEqual(self.stats(d, "later")["task_dones"], 1)
            self.assertQsize(d.qsize("later"), unfinished=0)
            self.assertIn("1 done, 1 failed", pool.stderr())
            self.assertClean(pool)

    def test_all_succeed_exits_zero(self):
        with jqtest.Daemon() as d:
            self.put(d, "ok", *[str(i) for i in range(50)])
            pool = self.pool(d, "ok", "-j", "3", "--exit-when-empty", "true")
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertEqual(self.stats(d, "ok")["task_dones"], 50)
            self.assertClean(pool)


# ---- timeouts ---------------------------------------------------------------

class TaskTimeout(WorkTest):
    def test_timeout_kills_cmd_and_its_children_and_releases(self):
        with jqtest.Daemon("--max-deliveries", "2") as d:
            out = self.outdir(d)
            self.put(d, "slow", "x")
            pool = self.pool(d, "slow", "-j", "1", "--task-timeout", "0.5",
                             "--exit-when-empty", "--", "sh", "-c",
                             'sleep 60 & echo $! > "$OUT/child.$JOINQ_DELIVERIES"'
                             '; sleep 60', env={"OUT": out})
            self.assertEqual(pool.wait(), 1, pool.stderr())
            took = time.monotonic() - pool.started
            self.assertGreaterEqual(took, 1.0, "two runs of 0.5 s")
            self.assertLess(took, 8 * SLOW)
            for n in (1, 2):
                child = int(self.wait_file("%s/child.%d" % (out, n)))
                self.assertFalse(alive(child), "CMD's child was killed")
            self.assertIn("timed out after 0.5 s", pool.stderr())
            self.assertQsize(d.qsize("slow"), unfinished=0)
            self.assertQsize(d.qsize("slow.dead"), qsize=1)
            self.assertClean(pool)

    def test_cmd_ignoring_sigterm_gets_sigkill(self):
        with jqtest.Daemon("--max-deliveries", "1") as d:
            self.put(d, "stubborn", "x")
            pool = self.pool(d, "stubborn", "-j", "1", "--task-timeout",
                             "0.3", "--exit-when-empty", "--", "sh", "-c",
                             'trap "" TERM; sleep 60; sleep 60')
            self.assertEqual(pool.wait(), 1, pool.stderr())
            took = time.monotonic() - pool.started
            self.assertGreaterEqual(took, 0.3 + 2.0, "SIGKILL after 2 s")
            self.assertLess(took, 8 * SLOW)
            self.assertQsize(d.qsize("stubborn.dead"), qsize=1)
            self.assertClean(pool)


# ---- --max-tasks ------------------------------------------------------------

class MaxTasks(WorkTest):
    def test_workers_retire_and_are_replaced(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "mt", *[str(i) for i in range(12)])
            counts = []
            halt = threading.Event()
            pool = self.pool(d, "mt", "-j", "2", "--max-tasks", "3", "--",
                             "sh", "-c", 'echo $PPID > "$OUT/$1"', "sh", "{}",
                             env={"OUT": out})

            def sample():
                while not halt.is_set():
                    counts.append(len(pool.workers()))
                    halt.wait(0.01)
            t = threading.Thread(target=sample)
            t.start()
            try:
                self.wait_for(lambda: len(os.listdir(out)) == 12, "12 tasks")
                self.wait_for(lambda: len(pool.workers()) == 2, "2 workers")
            finally:
                halt.set()
                t.join()
            by_worker = {}
            for name in os.listdir(out):
                with open(os.path.join(out, name)) as f:
                    pid = int(f.read())
                by_worker[pid] = by_worker.get(pid, 0) + 1
            self.assertGreaterEqual(len(by_worker), 4, by_worker)
            self.assertLessEqual(max(by_worker.values()), 3, by_worker)
            self.assertLessEqual(max(counts), 2, "never more than N")
            for pid in by_worker:
                self.assertFalse(alive(pid) and pid not in pool.workers())
            pool.signal(signal.SIGTERM)
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertNotIn("was killed", pool.stderr())
            self.assertClean(pool)


# ---- what CMD gets ----------------------------------------------------------

class WhatCmdGets(WorkTest):
    def records(self, out):
        recs = {}
        for name in os.listdir(out):
            with open(os.path.join(out, name)) as f:
                recs[int(name)] = json.load(f)
        return recs

    def test_argv_stdin_and_environment(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            strings = ["hello world", "two\nlines", "", "é ü"]
            t_str = self.put(d, "cmd", *strings)
            jsons = ['{"a": [1, 2]}', "42", "null", "[true]"]
            t_json = self.put(d, "cmd", *jsons, json_items=True)
            pool = self.pool(d, "cmd", "-j", "2", "--exit-when-empty", "--",
                             sys.executable, "-c", RECORDER, "A-{}-Z", "{}",
                             "{}{}", "plain", env={"OUT": out})
            self.assertEqual(pool.wait(), 0, pool.stderr())
            recs = self.records(out)
            self.assertEqual(len(recs), 8)
            for t, s in zip(t_str, strings):
                r = recs[t]
                self.assertEqual(r["argv"], ["A-%s-Z" % s, s, s + s, "plain"])
                self.assertEqual(bytes.fromhex(r["stdin"]), s.encode())
            compact = ['{"a":[1,2]}', "42", "null", "[true]"]
            for t, c in zip(t_json, compact):
                r = recs[t]
                self.assertEqual(r["argv"], ["A-%s-Z" % c, c, c + c, "plain"])
                self.assertEqual(bytes.fromhex(r["stdin"]), c.encode())
            for t in t_str + t_json:
                env = recs[t]["env"]
                self.assertEqual(env["JOINQ_TASK"], str(t))
                self.assertEqual(env["JOINQ_DELIVERIES"], "1")
                self.assertEqual(env["JOINQ_QUEUE"], "cmd")
                self.assertEqual(env["JOINQ_HOST"], "127.0.0.1")
                self.assertEqual(env["JOINQ_PORT"], str(d.port))
            self.assertClean(pool)

    def test_cmd_can_run_joinq_itself(self):
        with jqtest.Daemon() as d:
            tasks = self.put(d, "src", "a", "b", "c")
            pool = self.pool(d, "src", "-j", "2", "--exit-when-empty", "--",
                             jqtest.JOINQ, "-q", "results", "put",
                             "got-{}-$JOINQ_TASK")
            self.assertEqual(pool.wait(), 0, pool.stderr())
            got = sorted(d.request({"op": "get", "queue": "results",
                                    "block": False, "lease": 60})["item"]
                         for _ in tasks)
            self.assertEqual(got, ["got-a-$JOINQ_TASK", "got-b-$JOINQ_TASK",
                                   "got-c-$JOINQ_TASK"], "no shell between")

    def test_item_with_nul(self):
        with jqtest.Daemon("--max-deliveries", "1") as d:
            out = self.outdir(d)
            # On stdin it arrives whole.
            t = self.put(d, "nul", '"a\\u0000b"', json_items=True)[0]
            pool = self.pool(d, "nul", "-j", "1", "--exit-when-empty", "--",
                             sys.executable, "-c", RECORDER, env={"OUT": out})
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertEqual(bytes.fromhex(self.records(out)[t]["stdin"]),
                             b"a\x00b")
            # In an argument it cannot be: that run fails, and says why.
            self.put(d, "nul2", '"a\\u0000b"', json_items=True)
            pool = self.pool(d, "nul2", "-j", "1", "--exit-when-empty", "--",
                             "echo", "{}")
            self.assertEqual(pool.wait(), 1)
            self.assertIn("NUL", pool.stderr())
            self.assertQsize(d.qsize("nul2.dead"), qsize=1)

    def test_big_item_fed_without_blocking(self):
        with jqtest.Daemon("--max-frame", "4M") as d:
            out = self.outdir(d)
            big = "x" * (2 << 20)   # 2 MiB: far more than a pipe holds
            r = d.request({"op": "put", "queue": "big", "item": big})
            self.assertOk(r)
            pool = self.pool(d, "big", "-j", "1", "--exit-when-empty", "--",
                             "sh", "-c", 'wc -c > "$OUT/size"',
                             env={"OUT": out})
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertEqual(int(self.wait_file(out + "/size")), 2 << 20)
            # A CMD that never reads stdin: the worker must not hang on it,
            # nor die of SIGPIPE.
            for cmd in (["true"], ["sleep", "0.2"]):
                self.assertOk(d.request({"op": "put", "queue": "big2",
                                         "item": big}))
                pool = self.pool(d, "big2", "-j", "1", "--exit-when-empty",
                                 "--", *cmd)
                self.assertEqual(pool.wait(), 0, pool.stderr())
                self.assertNotIn("was killed", pool.stderr())
            self.assertEqual(self.stats(d, "big2")["task_dones"], 2)


# ---- exit status ------------------------------------------------------------

class ExitStatus(WorkTest):
    def test_one_when_some_run_failed(self):
        with jqtest.Daemon("--max-deliveries", "1") as d:
            self.put(d, "mix", "ok", "bad", "ok")
            pool = self.pool(d, "mix", "-j", "2", "--exit-when-empty", "--",
                             "sh", "-c", '[ "$1" = ok ]', "sh", "{}")
            self.assertEqual(pool.wait(), 1)
            err = pool.stderr()
            self.assertIn("2 done, 1 failed", err)
            self.assertIn("exit status 1", err)

    def test_quiet_prints_only_errors_and_summary_on_failure(self):
        with jqtest.Daemon("--max-deliveries", "1") as d:
            self.put(d, "q1", "ok")
            pool = self.pool(d, "q1", "--quiet", "--exit-when-empty", "true")
            self.assertEqual(pool.wait(), 0)
            self.assertEqual(pool.stderr(), "")
            self.put(d, "q2", "bad")
            pool = self.pool(d, "q2", "--quiet", "--exit-when-empty", "false")
            self.assertEqual(pool.wait(), 1)
            err = pool.stderr()
            self.assertIn("0 done, 1 failed", err)
            self.assertNotIn("exit status", err, "no line per task")

    def test_usage_errors_exit_2(self):
        with jqtest.Daemon() as d:
            for args in ([], ["-j", "0"], ["-j", "x"], ["-j", "1025"],
                         ["--lease", "0", "true"], ["--task-timeout", "-1",
                                                   "true"],
                         ["--retry-delay", "x", "true"],
                         ["--max-tasks", "0", "true"], ["--bogus", "true"],
                         ["no-such-command-xyz"], ["/nonexistent/cmd"]):
                with self.subTest(args=args):
                    r = d.cli("work", *args)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn("joinq work --help", r.stderr)
            r = d.cli("work", "no-such-command-xyz")
            self.assertIn("command not found", r.stderr)

    def test_no_daemon_exits_6(self):
        port = free_port()
        for udp in (False, True):
            with self.subTest(udp=udp):
                argv = [jqtest.JOINQ, "-p", str(port)] + (["-u"] if udp else
                                                         []) + ["work", "true"]
                r = subprocess.run(argv, capture_output=True, text=True,
                                   timeout=TIMEOUT)
                self.assertEqual(r.returncode, 6, r.stderr)
                self.assertIn("127.0.0.1", r.stderr, "says where")

    def test_bad_queue_exits_1(self):
        with jqtest.Daemon() as d:
            r = d.cli("-q", "bad queue!", "work", "true")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("bad_queue", r.stderr)

    def test_help_describes_everything(self):
        with jqtest.Daemon() as d:
            r = d.cli("work", "--help")
            self.assertEqual(r.returncode, 0)
            for word in ("--jobs", "--lease", "--task-timeout",
                         "--retry-delay", "--max-tasks", "--exit-when-empty",
                         "--quiet", "JOINQ_TASK", "JOINQ_DELIVERIES",
                         "JOINQ_QUEUE", "JOINQ_HOST", "JOINQ_PORT", "{}",
                         "stdin", "NUL", "SIGTERM", "SIGINT", "second signal",
                         "Exit status", "  6  ", "  2  ", "  1  "):
                self.assertIn(word, r.stdout)
            self.assertIn("work [-j N]", d.cli("--help").stdout)


# ---- orphans ----------------------------------------------------------------

class Orphans(WorkTest):
    def test_parent_killed_idle_workers_exit(self):
        with jqtest.Daemon() as d:
            pool = self.pool(d, "orph", "-j", "3", "true")
            self.wait_for(lambda: len(pool.workers()) == 3, "3 workers")
            workers = pool.workers()
            pool.signal(signal.SIGKILL)
            pool.wait()
            self.wait_for(lambda: not any(alive(w) for w in workers),
                          "the workers exit", 5)
            self.wait_for(lambda: not pool.left(), "nothing left", 5)

    def test_parent_killed_running_task_finishes_then_all_exit(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "orph2", "x")
            pool = self.pool(d, "orph2", "-j", "2", "--", "sh", "-c",
                             'touch "$OUT/start"; sleep 1; touch "$OUT/done"',
                             env={"OUT": out})
            self.wait_for(lambda: os.path.exists(out + "/start"), "started")
            pool.signal(signal.SIGKILL)
            pool.wait()
            self.wait_for(lambda: not pool.left(), "nothing left", 5)
            self.assertTrue(os.path.exists(out + "/done"))
            self.assertEqual(self.stats(d, "orph2")["task_dones"], 1)


# ---- UDP --------------------------------------------------------------------

class Udp(WorkTest):
    def test_small_pool_over_udp(self):
        with jqtest.Daemon() as d:
            out = self.outdir(d)
            self.put(d, "u", *[str(i) for i in range(40)])
            pool = self.pool(d, "u", "-j", "3", "--exit-when-empty", "--",
                             "touch", out + "/{}", udp=True)
            self.assertEqual(pool.wait(), 0, pool.stderr())
            self.assertEqual(len(os.listdir(out)), 40)
            self.assertEqual(self.stats(d, "u")["task_dones"], 40)
            self.assertClean(pool)


if __name__ == "__main__":
    jqtest.main()
