"""Every op of PROTOCOL.md over TCP and UDP: exact reply fields and types,
every error code that can occur without a journal, id echo, the order of
checks, the "Details" section, queue creation and the blocking ops.

The classes ending in Tcp and Udp run the same tests over each transport.
`unavailable` needs the journal, which is not built yet: no test here can
provoke it (PROTOCOL.md: "the journal cannot be written").
"""
import json
import time

import jqtest

PUT_KEYS = {"ok", "task"}
GET_KEYS = {"ok", "item", "task", "deliveries"}
# qsize adds dead_lettered to PROTOCOL.md's fields (issue 3).
QSIZE_KEYS = {"ok", "qsize", "maxsize", "unfinished", "inflight", "delayed",
              "dead_lettered", "empty", "full"}
STATS_KEYS = {"ok", "version", "uptime", "connections", "queues", "role"}
JOURNAL_STATS_KEYS = {"store", "position", "lag", "takeovers"}
QUEUE_STATS_KEYS = {"qsize", "maxsize", "unfinished", "inflight", "delayed",
                    "puts", "gets", "task_dones", "releases", "redeliveries",
                    "dead_lettered"}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class Transport:
    """Mixin: self.conn(d) is a TCP or a UDP client of d."""
    UDP = False

    def conn(self, d):
        return d.udp() if self.UDP else d.tcp()


class Ping(jqtest.TestCase):
    def test_ping_tcp_and_udp(self):
        with jqtest.Daemon() as d:
            self.assertOk(d.request({"op": "ping"}))
            self.assertEqual(d.udp().request({"op": "ping"})["protocol"], 1)

    def test_role_active_with_and_without_journal(self):
        # PROTOCOL.md, Replication: "An active daemon's ping says
        # "role": "active"", and a daemon with no replicated log is active.
        for journal in (False, True):
            d = jqtest.Daemon()
            if journal:
                d.args += ["--journal", "on", "--state-dir", d.path("state")]
            with self.subTest(journal=journal), d:
                for c in (d.tcp(), d.udp()):
                    self.assertEqual(c.request({"op": "ping"})["role"],
                                     "active")


# ---- every op ---------------------------------------------------------------

class OpsMixin(Transport):
    def test_put(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            tasks = []
            for item in ("a", 1, None, [1, {"b": 2.5}]):
                r = c.request({"op": "put", "item": item})
                self.assertOk(r)
                self.assertEqual(set(r), PUT_KEYS, r)
                self.assertTrue(is_int(r["task"]), r)
                self.assertTrue(0 < r["task"] < 2 ** 53, r)
                tasks.append(r["task"])
            self.assertEqual(len(set(tasks)), 4, "task ids are unique")
            self.assertEqual(tasks, sorted(tasks))
            self.assertQsize(d.qsize(), qsize=4, unfinished=4, inflight=0)
            r = c.request({"op": "put", "queue": "other", "item": "x",
                           "id": 5})
            self.assertEqual(set(r), PUT_KEYS | {"id"}, r)
            self.assertEqual(r["id"], 5)
            self.assertQsize(d.qsize("other"), qsize=1)

    def test_get(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            item = {"k": [1, 2.5, "s", None, True, {"n": -3}]}
            t = c.request({"op": "put", "item": item})["task"]
            r = c.request({"op": "get"})
            self.assertOk(r)
            self.assertEqual(set(r), GET_KEYS, r)
            self.assertEqual(r["item"], item)
            self.assertEqual(r["task"], t)
            self.assertTrue(is_int(r["deliveries"]))
            self.assertEqual(r["deliveries"], 1)
            self.assertQsize(d.qsize(), qsize=0, inflight=1, unfinished=1)
            self.assertError(c.request({"op": "get", "block": False}),
                             "empty")

    def test_task_done(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            t1 = c.request({"op": "put", "item": 1})["task"]
            t2 = c.request({"op": "put", "item": 2})["task"]
            self.assertEqual(c.request({"op": "get"})["task"], t1)
            # t2 is still queued: not delivered, so unknown
            self.assertError(c.request({"op": "task_done", "task": t2}),
                             "unknown_task")
            r = c.request({"op": "task_done", "task": t1})
            self.assertOk(r)
            self.assertEqual(set(r), {"ok", "unfinished"}, r)
            self.assertTrue(is_int(r["unfinished"]))
            self.assertEqual(r["unfinished"], 1)
            # done already, and never issued
            self.assertError(c.request({"op": "task_done", "task": t1}),
                             "unknown_task")
            self.assertError(c.request({"op": "task_done", "task": 999}),
                             "unknown_task")
            self.assertQsize(d.qsize(), qsize=1, inflight=0, unfinished=1)
            # any client may finish any task; queue is ignored
            self.assertEqual(c.request({"op": "get"})["task"], t2)
            r = d.request({"op": "task_done", "task": t2,
                           "queue": "elsewhere"})
            self.assertEqual(r, {"ok": True, "unfinished": 0})

    def test_release(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            ta = c.request({"op": "put", "item": "a"})["task"]
            c.request({"op": "put", "item": "b"})
            self.assertEqual(c.request({"op": "get"})["task"], ta)
            r = c.request({"op": "release", "task": ta})
            self.assertEqual(r, {"ok": True})
            r = c.request({"op": "get"})
            self.assertEqual((r["item"], r["task"], r["deliveries"]),
                             ("a", ta, 2))
            self.assertError(c.request({"op": "release", "task": 12345}),
                             "unknown_task")
            # with a delay: counted as delayed
            r = c.request({"op": "release", "task": ta, "delay": 30,
                           "id": "x"})
            self.assertEqual(r, {"ok": True, "id": "x"})
            self.assertQsize(d.qsize(), qsize=1, delayed=1, inflight=0,
                             unfinished=2)
            self.assertError(c.request({"op": "release", "task": ta}),
                             "unknown_task")

    def test_join(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertEqual(c.request({"op": "join"}), {"ok": True})
            t = c.request({"op": "put", "item": 1})["task"]
            self.assertError(c.request({"op": "join", "block": False}),
                             "timeout")
            start = time.monotonic()
            self.assertError(c.request({"op": "join", "timeout": 0.2}),
                             "timeout")
            self.assertElapsed(start, 0.15, 3)
            c.request({"op": "get"})
            c.request({"op": "task_done", "task": t})
            self.assertEqual(c.request({"op": "join", "id": [1]}),
                             {"ok": True, "id": [1]})

    def test_qsize(self):
        with jqtest.Daemon("--queue", "small:3") as d:
            c = self.conn(d)
            r = c.request({"op": "qsize", "queue": "small"})
            self.assertEqual(set(r), QSIZE_KEYS, r)
            for k in QSIZE_KEYS - {"ok", "empty", "full"}:
                self.assertTrue(is_int(r[k]), (k, r))
            self.assertIs(r["empty"], True)
            self.assertIs(r["full"], False)
            self.assertQsize(r, qsize=0, maxsize=3, unfinished=0)
            for i in range(3):
                c.request({"op": "put", "queue": "small", "item": i})
            c.request({"op": "get", "queue": "small"})
            t = c.request({"op": "get", "queue": "small"})["task"]
            c.request({"op": "release", "task": t, "delay": 30})
            r = c.request({"op": "qsize", "queue": "small"})
            self.assertQsize(r, qsize=1, maxsize=3, inflight=1, delayed=1,
                             unfinished=3, empty=False, full=False)
            c.request({"op": "put", "queue": "small", "item": 4})
            c.request({"op": "put", "queue": "small", "item": 5})
            r = c.request({"op": "qsize", "queue": "small"})
            self.assertQsize(r, qsize=3, full=True, empty=False)
            self.assertQsize(c.request({"op": "qsize"}), maxsize=0)

    def test_empty(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            r = c.request({"op": "empty"})
            self.assertEqual(r, {"ok": True, "empty": True})
            c.request({"op": "put", "item": 1})
            self.assertEqual(c.request({"op": "empty", "id": 1}),
                             {"ok": True, "id": 1, "empty": False})
            c.request({"op": "get"})   # in flight is not queued
            self.assertEqual(c.request({"op": "empty"}),
                             {"ok": True, "empty": True})

    def test_full(self):
        with jqtest.Daemon("--queue", "one:1") as d:
            c = self.conn(d)
            self.assertEqual(c.request({"op": "full", "queue": "one"}),
                             {"ok": True, "full": False})
            c.request({"op": "put", "queue": "one", "item": 1})
            self.assertEqual(c.request({"op": "full", "queue": "one"}),
                             {"ok": True, "full": True})
            # unbounded queues are never full
            for i in range(5):
                c.request({"op": "put", "item": i})
            self.assertEqual(c.request({"op": "full"}),
                             {"ok": True, "full": False})

    def test_ping(self):
        with jqtest.Daemon() as d:
            r = self.conn(d).request({"op": "ping"})
            self.assertEqual(set(r), {"ok", "version", "protocol", "role"}, r)
            self.assertEqual(r["role"], "active")
            self.assertIs(r["ok"], True)
            self.assertRegex(r["version"], r"^\d+\.\d+\.\d+$")
            self.assertTrue(is_int(r["protocol"]))
            self.assertEqual(r["protocol"], 1)

    def test_stats(self):
        with jqtest.Daemon("--queue", "b:7") as d:
            c = self.conn(d)
            c.request({"op": "put", "queue": "a", "item": 1})
            c.request({"op": "put", "queue": "b", "item": 1})
            c.request({"op": "put", "queue": "b", "item": 2})
            t = c.request({"op": "get", "queue": "b"})["task"]
            c.request({"op": "task_done", "task": t})
            r = c.request({"op": "stats"})
            self.assertTrue(STATS_KEYS <= set(r), r)
            self.assertIs(r["ok"], True)
            self.assertRegex(r["version"], r"^\d+\.\d+\.\d+$")
            self.assertTrue(is_int(r["uptime"]) and r["uptime"] >= 0)
            self.assertTrue(is_int(r["connections"]))
            self.assertEqual(r["connections"], 0 if self.UDP else 1)
            self.assertEqual(set(r["queues"]), {"a", "b"})
            for name, q in r["queues"].items():
                self.assertTrue(QUEUE_STATS_KEYS <= set(q), q)
                for k in QUEUE_STATS_KEYS:
                    self.assertTrue(is_int(q[k]), (name, k, q))
                self.assertEqual(q["unfinished"],
                                 q["qsize"] + q["inflight"] + q["delayed"])
            b = r["queues"]["b"]
            self.assertEqual((b["qsize"], b["maxsize"], b["unfinished"],
                              b["puts"], b["gets"], b["task_dones"]),
                             (1, 7, 1, 2, 1, 1))
            # joinqd's own (doc/PROTOCOL.md, Notes): each queue's settings
            # as declare answers them, and what purge finished
            self.assertEqual((b["max_deliveries"], b["dead_letter"],
                              b["purged"]), (0, "b.dead", 0))
            self.assertEqual(r["queues"]["a"]["maxsize"], 0)
            self.assertEqual(r["role"], "active")
            if jqtest.JOURNAL == "nats":     # test_nats_suite.py's run
                self.assertTrue(r["journal"]["store"].startswith("nats:"), r)
            else:
                self.assertNotIn("journal", r,
                                 "no journal: no journal figures")

    def test_stats_with_journal(self):
        d = jqtest.Daemon()
        d.args += ["--journal", "on", "--state-dir", d.path("state")]
        with d:
            c = self.conn(d)
            r = c.request({"op": "stats"})
            self.assertOk(r)
            self.assertEqual(r["role"], "active")
            j = r["journal"]
            self.assertEqual(set(j), JOURNAL_STATS_KEYS, j)
            self.assertIsInstance(j["store"], str)
            self.assertTrue(j["store"], j)
            for k in ("position", "lag", "takeovers"):
                self.assertTrue(is_int(j[k]) and j[k] >= 0, (k, j))
            self.assertEqual(j["takeovers"], 0)
            # every change is a record: the position grows with them
            start = j["position"]
            t = c.request({"op": "put", "item": 1})["task"]
            after_put = c.request({"op": "stats"})["journal"]["position"]
            self.assertGreater(after_put, start)
            c.request({"op": "get", "lease": 30})
            c.request({"op": "task_done", "task": t})
            end = c.request({"op": "stats"})["journal"]
            self.assertGreater(end["position"], after_put)
            # what changes nothing writes nothing
            c.request({"op": "qsize"})
            self.assertEqual(c.request({"op": "stats"})["journal"]["position"],
                             end["position"])

    def test_task_done_and_release_ignore_queue(self):
        # "Task ids are unique across the daemon: task_done and release
        # find the task by id alone and ignore queue."
        with jqtest.Daemon() as d:
            c = self.conn(d)
            t1 = c.request({"op": "put", "queue": "q1", "item": "x"})["task"]
            t2 = c.request({"op": "put", "queue": "q2", "item": "y"})["task"]
            self.assertNotEqual(t1, t2, "task ids are unique across queues")
            self.assertEqual(c.request({"op": "get", "queue": "q1"})["task"],
                             t1)
            # released naming another queue: back at the head of q1
            self.assertEqual(c.request({"op": "release", "task": t1,
                                        "queue": "q2"}), {"ok": True})
            self.assertQsize(d.qsize("q1"), qsize=1, inflight=0,
                             unfinished=1)
            self.assertQsize(d.qsize("q2"), qsize=1, inflight=0,
                             unfinished=1)
            r = c.request({"op": "get", "queue": "q1"})
            self.assertEqual((r["task"], r["deliveries"]), (t1, 2))
            # finished with no queue at all (that is, "default"): U is q1's
            self.assertEqual(c.request({"op": "task_done", "task": t1}),
                             {"ok": True, "unfinished": 0})
            self.assertQsize(d.qsize("q1"), unfinished=0)
            self.assertQsize(d.qsize("q2"), qsize=1, unfinished=1)
            self.assertNotIn("default", d.request({"op": "stats"})["queues"])

    def test_auth_without_token_configured(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertEqual(c.request({"op": "auth"}), {"ok": True})
            self.assertEqual(c.request({"op": "auth", "token": "anything",
                                        "id": 2}), {"ok": True, "id": 2})
            self.assertEqual(c.request({"op": "put", "item": 1,
                                        "token": "whatever"})["task"], 1)

    # ---- declare, purge, delete ----------------------------------------

    def test_declare(self):
        # "Creates a queue with its settings, as JoinableQueue(maxsize=N)
        # does in Python ... the others from the configuration"
        with jqtest.Daemon("--default-maxsize", "5",
                           "--max-deliveries", "4") as d:
            c = self.conn(d)
            r = c.request({"op": "declare", "queue": "q", "maxsize": 2,
                           "id": 1})
            self.assertEqual(r, {"ok": True, "id": 1, "created": True,
                                 "maxsize": 2, "max_deliveries": 4,
                                 "dead_letter": "q.dead"})
            # the bound holds
            for i in range(2):
                self.assertOk(c.request({"op": "put", "queue": "q",
                                         "item": i}))
            self.assertError(c.request({"op": "put", "queue": "q",
                                        "item": 3, "block": False}), "full")
            self.assertQsize(d.qsize("q"), qsize=2, maxsize=2, full=True)
            # again: found, not made; what it does not name is not compared
            for req in ({"maxsize": 2}, {}, {"max_deliveries": 4},
                        {"dead_letter": "q.dead"},
                        {"maxsize": 2, "max_deliveries": 4,
                         "dead_letter": "q.dead"}):
                with self.subTest(req=req):
                    r = c.request(dict(req, op="declare", queue="q"))
                    self.assertEqual(r, {"ok": True, "created": False,
                                         "maxsize": 2, "max_deliveries": 4,
                                         "dead_letter": "q.dead"})
            # nothing named: the configuration's settings, and a queue that
            # put made is held to its own the same way
            r = c.request({"op": "declare", "queue": "p"})
            self.assertEqual((r["created"], r["maxsize"], r["max_deliveries"]),
                             (True, 5, 4))
            c.request({"op": "put", "queue": "byput", "item": 1})
            r = c.request({"op": "declare", "queue": "byput", "maxsize": 5})
            self.assertEqual((r["ok"], r["created"]), (True, False))
            self.assertError(c.request({"op": "declare", "queue": "byput",
                                        "maxsize": 6}), "conflict")
            # declare creates a queue: stats has it, with its settings
            q = d.request({"op": "stats"})["queues"]["q"]
            self.assertEqual((q["maxsize"], q["max_deliveries"],
                              q["dead_letter"]), (2, 4, "q.dead"))

    def test_declare_conflict_changes_nothing(self):
        # "When it exists, every setting the request names must equal the
        # queue's own, else conflict (naming the setting) and nothing
        # changes"
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "declare", "queue": "q",
                                     "maxsize": 1, "max_deliveries": 2,
                                     "dead_letter": "dl"}))
            c.request({"op": "put", "queue": "q", "item": "x"})
            before = d.request({"op": "stats"})["queues"]
            for field, value in (("maxsize", 3), ("maxsize", 0),
                                 ("max_deliveries", 0),
                                 ("max_deliveries", 3),
                                 ("dead_letter", "q.dead")):
                with self.subTest(field=field, value=value):
                    r = c.request({"op": "declare", "queue": "q",
                                   field: value, "id": "c"})
                    self.assertError(r, "conflict")
                    self.assertEqual(r["id"], "c")
                    self.assertIn("'%s'" % field, r["message"])
            # the first named setting that differs is the one named
            r = c.request({"op": "declare", "queue": "q", "maxsize": 1,
                           "max_deliveries": 5, "dead_letter": "zz"})
            self.assertIn("'max_deliveries'", r["message"])
            self.assertEqual(d.request({"op": "stats"})["queues"], before)

    def test_declared_max_deliveries_and_dead_letter(self):
        # max_deliveries "0 = unlimited"; dead_letter: where the tasks go
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "declare", "queue": "jobs",
                                     "max_deliveries": 1,
                                     "dead_letter": "failed"}))
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            self.assertEqual(c.request({"op": "get", "queue": "jobs"})["task"],
                             t)
            self.assertOk(c.request({"op": "release", "task": t}))
            self.assertQsize(d.qsize("jobs"), unfinished=0,
                             dead_lettered=1)
            r = c.request({"op": "get", "queue": "failed"})
            self.assertEqual((r["item"], r["deliveries"]), ("x", 1))
            self.assertOk(c.request({"op": "declare", "queue": "z",
                                     "max_deliveries": 0}))
            t = c.request({"op": "put", "queue": "z", "item": "y"})["task"]
            for n in range(1, 4):
                r = c.request({"op": "get", "queue": "z"})
                self.assertEqual((r["task"], r["deliveries"]), (t, n))
                self.assertOk(c.request({"op": "release", "task": t}))
            self.assertQsize(d.qsize("z"), qsize=1, dead_lettered=0)

    def test_declare_and_the_configuration_file(self):
        # "Settings given in the daemon's configuration file for that queue
        # are never changed by declare: a declare that names another value
        # for one of them gets conflict, whether or not the queue exists
        # yet."  maxsize: "the configuration file when it names that
        # queue, else from declare, else from default_maxsize".
        conf = ("default_maxsize = 9\n[queue cfg]\nmaxsize = 3\n"
                "max_deliveries = 2\ndead_letter = off\n")
        with jqtest.Daemon(config=conf) as d:
            c = self.conn(d)
            for exists in (False, True):
                for field, value in (("maxsize", 4), ("max_deliveries", 0),
                                     ("dead_letter", "cfg.dead")):
                    with self.subTest(exists=exists, field=field):
                        r = c.request({"op": "declare", "queue": "cfg",
                                       field: value})
                        self.assertError(r, "conflict")
                        self.assertIn("'%s'" % field, r["message"])
                        self.assertIn("configuration", r["message"])
                if not exists:
                    self.assertEqual(d.request({"op": "stats"})["queues"], {})
                    r = c.request({"op": "declare", "queue": "cfg",
                                   "maxsize": 3, "max_deliveries": 2})
                    self.assertEqual(r, {"ok": True, "created": True,
                                         "maxsize": 3, "max_deliveries": 2,
                                         "dead_letter": None})
            # declare over default_maxsize; the file's over declare
            r = c.request({"op": "declare", "queue": "other", "maxsize": 1})
            self.assertEqual(r["maxsize"], 1)
            self.assertQsize(d.qsize("other"), maxsize=1)
            self.assertQsize(d.qsize("fresh"), maxsize=9)

    def test_purge(self):
        # "Removes every queued task of the queue (not those in flight or
        # delayed); each is finished, so unfinished drops by the number
        # removed ... Purged tasks are not dead-lettered."
        with jqtest.Daemon("--queue", "q:0") as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "declare", "queue": "q",
                                     "max_deliveries": 2}))
            for i in range(5):
                c.request({"op": "put", "queue": "q", "item": i})
            held = c.request({"op": "get", "queue": "q", "lease": 60})
            later = c.request({"op": "get", "queue": "q"})["task"]
            c.request({"op": "release", "task": later, "delay": 60})
            self.assertQsize(d.qsize("q"), qsize=3, inflight=1, delayed=1)
            r = c.request({"op": "purge", "queue": "q", "id": 4})
            self.assertEqual(r, {"ok": True, "id": 4, "purged": 3})
            self.assertQsize(d.qsize("q"), qsize=0, inflight=1, delayed=1,
                             unfinished=2, dead_lettered=0)
            self.assertNotIn("q.dead", d.request({"op": "stats"})["queues"])
            self.assertEqual(c.request({"op": "task_done",
                                        "task": held["task"]}),
                             {"ok": True, "unfinished": 1})
            q = d.request({"op": "stats"})["queues"]["q"]
            self.assertEqual((q["purged"], q["task_dones"]), (3, 1))
            # nothing queued: 0; and it "does not create the queue"
            self.assertEqual(c.request({"op": "purge", "queue": "q"}),
                             {"ok": True, "purged": 0})
            self.assertEqual(c.request({"op": "purge", "queue": "ghost"}),
                             {"ok": True, "purged": 0})
            self.assertNotIn("ghost", d.request({"op": "stats"})["queues"])

    def test_delete(self):
        # "Only a queue with no unfinished task can be deleted; otherwise
        # conflict, and nothing changes ... Deleting a name that does not
        # exist is not an error."
        with jqtest.Daemon() as d:
            c = self.conn(d)
            c.request({"op": "declare", "queue": "q", "maxsize": 4})
            t = c.request({"op": "put", "queue": "q", "item": 1})["task"]
            for step in ("queued", "in flight", "delayed"):
                with self.subTest(step=step):
                    if step == "in flight":
                        c.request({"op": "get", "queue": "q"})
                    if step == "delayed":
                        c.request({"op": "release", "task": t, "delay": 0.3})
                    r = c.request({"op": "delete", "queue": "q", "id": 2})
                    self.assertError(r, "conflict")
                    self.assertEqual(r["id"], 2)
                    self.assertIn("unfinished", r["message"])
                    self.assertQsize(d.qsize("q"), maxsize=4, unfinished=1)
            self.assertTrue(jqtest.wait_until(
                lambda: d.qsize("q")["qsize"] == 1, 5 * jqtest.SLOW))
            t = c.request({"op": "get", "queue": "q"})["task"]
            c.request({"op": "task_done", "task": t})
            self.assertEqual(c.request({"op": "delete", "queue": "q",
                                        "id": 3}),
                             {"ok": True, "id": 3, "deleted": True})
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            self.assertEqual(c.request({"op": "delete", "queue": "q"}),
                             {"ok": True, "deleted": False})
            self.assertEqual(c.request({"op": "delete", "queue": "never"}),
                             {"ok": True, "deleted": False})
            # "Removes a queue and its settings": the name is free, and a
            # new queue of it has the configuration's settings
            self.assertQsize(d.qsize("q"), maxsize=0)
            t2 = c.request({"op": "put", "queue": "q", "item": 2})["task"]
            self.assertGreater(t2, t)       # task ids are never reused
            q = d.request({"op": "stats"})["queues"]["q"]
            self.assertEqual((q["maxsize"], q["puts"], q["gets"]), (0, 1, 0))


class OpsTcp(OpsMixin, jqtest.TestCase):
    UDP = False


class OpsUdp(OpsMixin, jqtest.TestCase):
    UDP = True


# ---- every error code -------------------------------------------------------
# `unavailable` is missing on purpose: it needs the journal ("the journal
# cannot be written"), which is not built yet.

class ErrorsMixin(Transport):
    def test_bad_json(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for frame in (b'{"op":"ping"', b"[]", b"42", b'"ping"', b"nul",
                          b'{"op":"ping"} {}'):
                with self.subTest(frame=frame):
                    self.assertError(c.request(frame + b"\n"), "bad_json")

    def test_bad_utf8(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertError(c.request(b'{"op":"put","item":"\xff"}\n'),
                             "bad_utf8")
            self.assertQsize(d.qsize(), qsize=0)

    def test_frame_too_large(self):
        with jqtest.Daemon("--max-frame", "100") as d:
            c = self.conn(d)
            frame = b'{"op":"put","item":"' + b"x" * 100 + b'"}\n'
            if self.UDP:
                self.assertError(c.request(frame), "frame_too_large")
                self.assertOk(c.request({"op": "ping"}))
            else:
                c.send_raw(frame)
                r = c.recv()
                self.assertError(r, "frame_too_large")
                self.assertIn("max_frame", r["message"])
                self.assertTrue(c.closed_by_peer())
            self.assertQsize(d.qsize(), qsize=0)

    def test_bad_request(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for req in ({"queue": "q"}, {"op": 1}, {"op": None},
                        {"op": "put"}, {"op": "task_done"},
                        {"op": "release"}, {"op": "get", "timeout": -1},
                        {"op": "ping", "noreply": "yes"}):
                with self.subTest(req=req):
                    r = c.request(dict(req, id="e"))
                    self.assertError(r, "bad_request")
                    self.assertEqual(r["id"], "e")

    def test_unknown_op(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for op in ("bogus", "PING", "Put", "", " ping", "get_nowait",
                       "ping\u0000x", "ping\u0000"):
                with self.subTest(op=op):
                    self.assertError(c.request({"op": op}), "unknown_op")

    def test_bad_queue(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for q in ("", "a b", "é", "a/b", "x" * 129, "a\u0000b", "q*",
                      "x" * 129 + ".dead", 7, True, ["q"], {"q": 1}):
                with self.subTest(queue=q):
                    self.assertError(c.request({"op": "put", "queue": q,
                                                "item": 1}), "bad_queue")
            # the longest names are fine: 128, and 133 ending in .dead
            for q in ("x" * 128, "y" * 128 + ".dead", "Az09_.:-"):
                with self.subTest(queue=q):
                    self.assertOk(c.request({"op": "put", "queue": q,
                                             "item": 1}))
            self.assertEqual(set(d.request({"op": "stats"})["queues"]),
                             {"x" * 128, "y" * 128 + ".dead", "Az09_.:-"})

    def test_too_many_queues(self):
        with jqtest.Daemon("--max-queues", "2") as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "put", "queue": "a", "item": 1}))
            self.assertOk(c.request({"op": "put", "queue": "b", "item": 1}))
            self.assertError(c.request({"op": "put", "queue": "c",
                                        "item": 1}), "too_many_queues")
            self.assertError(c.request({"op": "get", "queue": "c",
                                        "block": False}), "too_many_queues")
            self.assertError(c.request({"op": "get", "queue": "c",
                                        "timeout": 5 * jqtest.SLOW}),
                             "too_many_queues")
            # the existing ones still work; the others read as empty
            self.assertOk(c.request({"op": "put", "queue": "a", "item": 2}))
            self.assertQsize(c.request({"op": "qsize", "queue": "c"}),
                             qsize=0, unfinished=0)
            self.assertEqual(set(d.request({"op": "stats"})["queues"]),
                             {"a", "b"})

    def test_full(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = self.conn(d)
            c.request({"op": "put", "item": 1})
            self.assertError(c.request({"op": "put", "item": 2,
                                        "block": False}), "full")
            self.assertError(c.request({"op": "put", "item": 2,
                                        "timeout": 0}), "full")
            start = time.monotonic()
            self.assertError(c.request({"op": "put", "item": 2,
                                        "timeout": 0.2}), "full")
            self.assertElapsed(start, 0.15, 3)
            self.assertQsize(d.qsize(), qsize=1, unfinished=1)

    def test_empty(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertError(c.request({"op": "get", "block": False}),
                             "empty")
            self.assertError(c.request({"op": "get", "timeout": 0}), "empty")
            start = time.monotonic()
            self.assertError(c.request({"op": "get", "timeout": 0.2}),
                             "empty")
            self.assertElapsed(start, 0.15, 3)

    def test_timeout(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            c.request({"op": "put", "item": 1})
            self.assertError(c.request({"op": "join", "block": False}),
                             "timeout")
            self.assertError(c.request({"op": "join", "timeout": 0}),
                             "timeout")

    def test_conflict(self):
        # "conflict: declare names a setting that differs from the existing
        # queue's; delete of a queue that still has unfinished tasks;
        # nothing was changed"
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "declare", "queue": "q",
                                     "maxsize": 1}))
            c.request({"op": "put", "queue": "q", "item": 1})
            self.assertError(c.request({"op": "declare", "queue": "q",
                                        "maxsize": 2}), "conflict")
            self.assertError(c.request({"op": "delete", "queue": "q"}),
                             "conflict")
            self.assertQsize(d.qsize("q"), qsize=1, maxsize=1, unfinished=1)

    def test_unknown_task(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for op in ("task_done", "release"):
                for task in (1, 2 ** 53 - 1, 2 ** 62):
                    with self.subTest(op=op, task=task):
                        self.assertError(c.request({"op": op, "task": task}),
                                         "unknown_task")

    def test_unauthorized(self):
        d = jqtest.Daemon()
        d.args += ["--auth-token-file", d.file("token", "tok-123\n")]
        with d:
            c = self.conn(d)
            self.assertError(c.request({"op": "put", "item": 1}),
                             "unauthorized")
            self.assertError(c.request({"op": "put", "item": 1,
                                        "token": "nope"}), "unauthorized")
            self.assertOk(c.request({"op": "ping"}))
            self.assertQsize(c.request({"op": "qsize", "token": "tok-123"}),
                             qsize=0)

    def test_token_with_escapes(self):
        # json.dumps sends the token as "t\u00f6k\"1": escapes in the
        # field must compare as the characters they stand for.
        d = jqtest.Daemon()
        d.args += ["--auth-token-file", d.file("token", "t\u00f6k\"1\n")]
        with d:
            c = self.conn(d)
            self.assertQsize(c.request({"op": "qsize", "token": "t\u00f6k\"1"}),
                             qsize=0)
            for wrong in ("t\u00f6k\"", "t\u00f6k\"12", "t\u00f6k\"\u0000",
                          "tok\"1", "t\u00f6k\"1" * 40):
                with self.subTest(token=wrong):
                    self.assertError(c.request({"op": "qsize",
                                                "token": wrong}),
                                     "unauthorized")

    def test_shutting_down(self):
        d = jqtest.Daemon()
        with d:
            c = self.conn(d)
            c.send({"op": "get", "id": "w"})
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(d.stop(), 0)
            r = c.recv()
            self.assertError(r, "shutting_down")
            self.assertEqual(r["id"], "w")


    def test_messages_name_the_field_or_limit(self):
        cases = [
            ({"op": "put"}, "bad_request", "item"),
            ({"op": "put", "item": 1, "block": 1}, "bad_request", "block"),
            ({"op": "put", "item": 1, "timeout": -1}, "bad_request",
             "timeout"),
            ({"op": "get", "lease": 0}, "bad_request", "lease"),
            ({"op": "task_done"}, "bad_request", "task"),
            ({"op": "release", "task": 0}, "bad_request", "task"),
            ({"op": "release", "task": 1, "delay": -1}, "bad_request",
             "delay"),
            ({"op": "ping", "noreply": 1}, "bad_request", "noreply"),
            ({"op": 1}, "bad_request", "op"),
            ({}, "bad_request", "op"),
            ({"op": "nope"}, "unknown_op", "op"),
            ({"op": "ping", "queue": "a b"}, "bad_queue", "queue"),
            ({"op": "task_done", "task": 5}, "unknown_task", "task"),
            ({"op": "put", "queue": "third", "item": 1}, "too_many_queues",
             "max_queues"),
            ({"op": "declare", "maxsize": -1}, "bad_request", "maxsize"),
            ({"op": "declare", "max_deliveries": "x"}, "bad_request",
             "max_deliveries"),
            ({"op": "declare", "dead_letter": "a b"}, "bad_queue",
             "dead_letter"),
            ({"op": "declare", "queue": "one", "maxsize": 3}, "conflict",
             "maxsize"),
            ({"op": "declare", "queue": "one", "dead_letter": "x"},
             "conflict", "dead_letter"),
            ({"op": "delete", "queue": "one"}, "conflict", "unfinished"),
        ]
        with jqtest.Daemon("--max-queues", "2") as d:
            c = self.conn(d)
            c.request({"op": "put", "queue": "one", "item": 1})
            c.request({"op": "put", "queue": "two", "item": 1})
            for req, code, name in cases:
                with self.subTest(req=req):
                    r = c.request(req)
                    self.assertError(r, code)
                    self.assertIn(name, r["message"])


    def test_messages_name_the_limit(self):
        # "message is a human sentence that names the offending field or
        # limit": the limits a request can pass, and the token it lacks.
        d = jqtest.Daemon("--default-maxsize", "1", "--max-frame", "200",
                          "--max-depth", "3")
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        with d:
            c = self.conn(d)
            cases = [
                ({"op": "put", "item": 1, "token": TOKEN}, None, None),
                ({"op": "put", "item": 2, "block": False, "token": TOKEN},
                 "full", "maxsize"),
                ({"op": "put", "item": [[[1]]], "token": TOKEN},
                 ("bad_json", "bad_request"), "max_depth"),
                ({"op": "qsize"}, "unauthorized", "token"),
                ({"op": "qsize", "token": "wrong"}, "unauthorized", "token"),
            ]
            for req, code, name in cases:
                with self.subTest(req=req):
                    r = c.request(req)
                    if code is None:
                        self.assertOk(r)
                        continue
                    self.assertIn(r.get("error"), code if
                                  isinstance(code, tuple) else (code,), r)
                    self.assertError(r, r["error"])
                    self.assertIn(name, r["message"])
            # last: on TCP it closes the connection
            r = c.request(b'{"op":"ping","x":"' + b"x" * 200 + b'"}\n')
            self.assertError(r, "frame_too_large")
            self.assertIn("max_frame", r["message"])


class ErrorsTcp(ErrorsMixin, jqtest.TestCase):
    UDP = False

    def test_too_many_connections(self):
        with jqtest.Daemon("--max-connections", "2") as d:
            a, b = d.tcp(), d.tcp()
            self.assertOk(a.request({"op": "ping"}))
            self.assertOk(b.request({"op": "ping"}))
            c = d.tcp()
            r = c.recv()
            self.assertError(r, "too_many_connections")
            self.assertIn("max_connections", r["message"])
            self.assertTrue(c.closed_by_peer())
            self.assertOk(a.request({"op": "ping"}))


class ErrorsUdp(ErrorsMixin, jqtest.TestCase):
    UDP = True

    def test_too_large(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            u.request({"op": "put", "item": "x" * 1000})
            r = u.request({"op": "get"})
            self.assertError(r, "too_large")
            self.assertIn("udp_max_reply", r["message"])
            self.assertQsize(d.qsize(), qsize=1, inflight=0)


    def test_default_udp_max_reply_is_65000(self):
        # "udp_max_reply, default 65000 bytes": a get reply of exactly
        # 65000 bytes is sent, one of 65001 is too_large.
        def reply_len(item, task):
            return len(b'{"ok":true,"item":"' + item.encode() +
                       b'","task":%d,"deliveries":1}\n' % task)
        with jqtest.Daemon() as d:
            u = d.udp()
            fits = "f" * (65000 - reply_len("", 1))
            too = "t" * (65001 - reply_len("", 2))
            self.assertEqual(d.request({"op": "put", "item": fits})["task"],
                             1)
            self.assertEqual(d.request({"op": "put", "item": too})["task"],
                             2)
            u.send({"op": "get"})
            data = u.recv_raw()
            self.assertEqual(len(data), 65000)
            self.assertEqual(json.loads(data)["item"], fits)
            r = u.request({"op": "get"})
            self.assertError(r, "too_large")
            self.assertIn("udp_max_reply", r["message"])
            self.assertQsize(d.qsize(), qsize=1, inflight=1)

    def test_too_large_error_with_a_huge_id_has_no_id(self):
        # doc/PROTOCOL.md, Notes: "When even the too_large error would not
        # fit (an enormous id), it is sent without the id."
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            for req in ({"op": "bogus"}, {"op": "ping"},
                        {"op": "put", "item": 1}):
                with self.subTest(req=req):
                    u.send(dict(req, id="i" * 700))
                    data = u.recv_raw()
                    self.assertLessEqual(len(data), 600)
                    r = json.loads(data)
                    self.assertError(r, "too_large")
                    self.assertNotIn("id", r)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})


# ---- id ---------------------------------------------------------------------

IDS = [0, 7, -3, 2 ** 53, 2 ** 63 - 1, -2 ** 63, 1.5, -0.25, 1e300, "s", "",
       "é€😀", "a\u0000b", None, True, False, {}, [],
       {"a": [1, {"b": None}]}, [1, "x", None, 2.5, [[]]]]


class IdMixin(Transport):
    def check_id(self, reply, value):
        self.assertIn("id", reply)
        self.assertEqual(reply["id"], value)
        self.assertIs(type(reply["id"]), type(value), reply)

    def test_id_echoed_by_value(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for value in IDS:
                with self.subTest(id=value):
                    self.check_id(c.request({"op": "ping", "id": value}),
                                  value)
                    self.check_id(c.request({"op": "put", "item": 1,
                                             "id": value}), value)

    def test_id_written_differently_echoed_by_value(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for text, value in ((b"1", 1), (b"-0", 0), (b"1E2", 100.0),
                                (b'"\\u00e9"', "é"), (b'"\\ud83d\\ude00"',
                                                       "😀"),
                                (b"[ 1 , { } ]", [1, {}]), (b"null", None)):
                with self.subTest(text=text):
                    r = c.request(b'{"op":"ping","id":' + text + b"}\n")
                    self.check_id(r, value)

    def test_no_id_no_id_key(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for req in ({"op": "ping"}, {"op": "put", "item": 1},
                        {"op": "get"}, {"op": "bogus"},
                        {"op": "get", "block": False},
                        {"op": "qsize", "queue": "bad queue"}):
                with self.subTest(req=req):
                    self.assertNotIn("id", c.request(req))

    def test_id_on_errors(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for req, code in (({"op": "bogus"}, "unknown_op"),
                              ({"op": 3}, "bad_request"),
                              ({}, "bad_request"),
                              ({"op": "qsize", "queue": ""}, "bad_queue"),
                              ({"op": "put"}, "bad_request"),
                              ({"op": "get", "block": False}, "empty"),
                              ({"op": "task_done", "task": 9},
                               "unknown_task"),
                              ({"op": "release", "task": "x"},
                               "bad_request")):
                for value in (17, None, "s", {"k": [1]}):
                    with self.subTest(req=req, id=value):
                        r = c.request(dict(req, id=value))
                        self.assertError(r, code)
                        self.check_id(r, value)

    def test_id_on_a_reply_that_waited(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            c.send({"op": "get", "id": {"wait": 1}})
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))
            d.request({"op": "put", "item": "late"})
            r = c.recv()
            self.assertEqual(r["item"], "late")
            self.check_id(r, {"wait": 1})
            r = c.request({"op": "get", "timeout": 0.05, "id": 2 ** 40})
            self.assertError(r, "empty")
            self.check_id(r, 2 ** 40)


class IdTcp(IdMixin, jqtest.TestCase):
    UDP = False


class IdUdp(IdMixin, jqtest.TestCase):
    UDP = True


# ---- the order of checks ----------------------------------------------------

TOKEN = "order-token"


class CheckOrderMixin(Transport):
    def test_order_without_token(self):
        cases = [
            (b'{"op":"bogus","queue":"bad \xff"}', "bad_utf8"),
            (b'{"op":"bogus","queue":"bad q"', "bad_json"),
            (b'{"queue":"bad q"}', "bad_request"),
            (b'{"op":5,"queue":"bad q"}', "bad_request"),
            (b'{"op":"bogus","queue":"bad q"}', "unknown_op"),
            (b'{"op":"bogus","queue":"bad q","task":-1}', "unknown_op"),
            (b'{"op":"put","queue":"bad q"}', "bad_queue"),
            (b'{"op":"get","queue":"","timeout":-1}', "bad_queue"),
            (b'{"op":"task_done","queue":5}', "bad_queue"),
            (b'{"op":"release","queue":"a b","task":"x"}', "bad_queue"),
            (b'{"op":"ping","queue":"bad q"}', "bad_queue"),
            (b'{"op":"stats","queue":"bad q"}', "bad_queue"),
            (b'{"op":"auth","queue":"bad q"}', "bad_queue"),
            (b'{"op":"qsize","queue":["x"]}', "bad_queue"),
            (b'{"op":"put","queue":"q","block":1}', "bad_request"),
            (b'{"op":"put","queue":"q","item":1,"block":1}', "bad_request"),
            # declare's fields after the queue, in the order PROTOCOL.md
            # names them; a dead_letter that is no queue name: bad_queue
            (b'{"op":"declare","queue":"bad q","maxsize":-1}', "bad_queue"),
            (b'{"op":"declare","queue":"q","maxsize":-1,'
             b'"dead_letter":"bad q"}', "bad_request"),
            (b'{"op":"declare","queue":"q","dead_letter":"bad q",'
             b'"max_deliveries":"x"}', "bad_request"),
            (b'{"op":"declare","queue":"q","dead_letter":"bad q"}',
             "bad_queue"),
            (b'{"op":"declare","queue":"q","dead_letter":""}', "bad_queue"),
            (b'{"op":"declare","queue":"q","dead_letter":5}', "bad_request"),
            (b'{"op":"purge","queue":"bad q"}', "bad_queue"),
            (b'{"op":"delete","queue":"bad q"}', "bad_queue"),
            (b'{"op":"ping","queue":null}', None),
        ]
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for frame, code in cases:
                with self.subTest(frame=frame):
                    r = c.request(frame + b"\n")
                    if code:
                        self.assertError(r, code)
                    else:
                        self.assertOk(r)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_order_with_token(self):
        d = jqtest.Daemon()
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        right = json.dumps(TOKEN).encode()
        cases = [
            (b'[1]', "bad_json"),
            (b'{"op":"bogus","x":"\xc3"}', "bad_utf8"),
            (b'{"op":"bogus"}', "unauthorized"),
            (b'{"op":7}', "unauthorized"),
            (b'{}', "unauthorized"),
            (b'{"op":"put","queue":"bad q"}', "unauthorized"),
            (b'{"op":"ping\\u0000x"}', "unauthorized"),
            (b'{"op":"stats","queue":"bad q"}', "unauthorized"),
            (b'{"op":"ping","queue":"bad q"}', "bad_queue"),
            (b'{"op":"ping"}', None),
            (b'{"op":"bogus","token":' + right + b'}', "unknown_op"),
            (b'{"op":"put","queue":"bad q","token":' + right + b'}',
             "bad_queue"),
            (b'{"op":"put","token":' + right + b'}', "bad_request"),
        ]
        with d:
            c = self.conn(d)
            for frame, code in cases:
                with self.subTest(frame=frame):
                    r = c.request(frame + b"\n")
                    if code:
                        self.assertError(r, code)
                    else:
                        self.assertOk(r)


    def test_bad_queue_for_every_op(self):
        # "then queue when present (bad_queue, for every op, even those
        # that ignore it)": every op of protocol 1, its own fields valid.
        reqs = [{"op": "put", "item": 1}, {"op": "get", "block": False},
                {"op": "task_done", "task": 1}, {"op": "release", "task": 1},
                {"op": "join", "block": False}, {"op": "qsize"},
                {"op": "empty"}, {"op": "full"}, {"op": "ping"},
                {"op": "stats"}, {"op": "auth"}, {"op": "declare"},
                {"op": "purge"}, {"op": "delete"}]
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for req in reqs:
                for q in ("bad q", "", 5, ["q"]):
                    with self.subTest(req=req, queue=q):
                        r = c.request(dict(req, queue=q, id="b"))
                        self.assertError(r, "bad_queue")
                        self.assertEqual(r["id"], "b")
            self.assertEqual(d.request({"op": "stats"})["queues"], {})


class CheckOrderTcp(CheckOrderMixin, jqtest.TestCase):
    UDP = False


class CheckOrderUdp(CheckOrderMixin, jqtest.TestCase):
    UDP = True


# ---- "Details that implementations get wrong" -------------------------------

class DetailsMixin(Transport):
    def test_strict_json(self):
        bad = [b'{"op":"ping"} // c', b'/* c */ {"op":"ping"}',
               b'{"op":"ping",}', b"{'op':'ping'}", b'{op:"ping"}',
               b'{"op":"put","item":NaN}', b'{"op":"put","item":Infinity}',
               b'{"op":"put","item":-Infinity}', b'{"op":"put","item":01}',
               b'{"op":"put","item":-01}', b'{"op":"put","item":+1}',
               b'{"op":"put","item":.5}', b'{"op":"put","item":1.}',
               b'{"op":"put","item":0x10}', b'{"op":"put","item":1e}',
               b'{"op":"put","item":"a\tb"}', b'{"op":"put","item":"a\x01"}',
               b'{"op":"put","item":"\\x41"}', b'{"op":"put","item":"\\u12"}',
               b'{"op":"put","item":True}', b'{"op":"put","item":undefined}',
               b'{"op":"ping"}x', b'{"op":"ping"}{"op":"ping"}',
               b'{"op":"ping"}]', b'{"op":"ping"',
               b'{"op":"put","item":[1,]}', b'{"op" "ping"}',
               b'{"op":"put","item":"\'a\'",}']
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for frame in bad:
                with self.subTest(frame=frame):
                    self.assertError(c.request(frame + b"\n"), "bad_json")
            self.assertQsize(d.qsize(), qsize=0)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            # whitespace around the object (and inside) is fine
            for frame in (b' \t{"op":"ping"} \t', b'{ "op" : "ping" }',
                          b'\r{"op":\r"ping"}'):
                with self.subTest(frame=frame):
                    self.assertOk(c.request(frame + b"\n"))

    def test_escapes_mean_the_raw_character(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            r = c.request(b'{"\\u006fp":"\\u0070ing"}\n')
            self.assertOk(r)
            self.assertEqual(r["protocol"], 1)
            r = c.request(b'{"op":"put","\\u0069tem":"\\u00e9\\ud83d\\ude00",'
                          b'"queue":"\\u0071\\u002e1","id":"\\u00e9"}\n')
            self.assertOk(r)
            self.assertEqual(r["id"], "é")
            self.assertQsize(d.qsize("q.1"), qsize=1)
            r = c.request({"op": "get", "queue": "q.1"})
            self.assertEqual(r["item"], "é😀")
            r = c.request(b'{"op":"put","queue":"q","item":1,'
                          b'"\\u0062lock":"\\u0079"}\n')
            self.assertError(r, "bad_request")   # block, not a bool
            self.assertEqual(set(d.request({"op": "stats"})["queues"]),
                             {"q.1"})

    def test_nul_in_strings(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for op in ("ping\u0000x", "ping\u0000", "\u0000ping"):
                with self.subTest(op=op):
                    self.assertError(c.request({"op": op}), "unknown_op")
            for q in ("q\u0000", "default\u0000x", "\u0000"):
                with self.subTest(queue=q):
                    self.assertError(c.request({"op": "put", "queue": q,
                                                "item": 1}), "bad_queue")
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            for item in ("a\u0000b", "\u0000", ["\u0000", {"k": "\u0000"}]):
                with self.subTest(item=item):
                    c.request({"op": "put", "item": item})
                    self.assertEqual(c.request({"op": "get"})["item"], item)

    def test_nul_in_request_keys(self):
        # "\u0000 inside a string is data": object keys are strings too,
        # so a key holding it is just a field nobody knows.
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "ping", "x\u0000y": 1}))
            self.assertOk(c.request({"op": "ping", "op\u0000": "bogus"}))
            self.assertError(c.request({"o\u0000p": "ping"}), "bad_request")
            r = c.request({"op": "put", "item": 1, "queue\u0000": "a b",
                           "block\u0000": "x"})
            self.assertOk(r)
            self.assertQsize(d.qsize(), qsize=1)

    def test_nul_in_item_keys(self):
        # "an item holding it round-trips": keys inside an item too.
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for item in ({"a\u0000b": 1}, [{"\u0000": None}]):
                with self.subTest(item=item):
                    self.assertOk(c.request({"op": "put", "item": item}))
                    self.assertEqual(c.request({"op": "get"})["item"], item)

    def test_null_optional_fields_are_absent(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = self.conn(d)
            r = c.request({"op": "ping", "queue": None, "noreply": None,
                           "token": None})
            self.assertOk(r)
            r = c.request({"op": "put", "item": "a", "queue": None,
                           "block": None, "timeout": None})
            self.assertOk(r)
            self.assertQsize(d.qsize("default"), qsize=1)
            r = c.request({"op": "get", "block": None, "timeout": None,
                           "lease": None})
            self.assertEqual(r["item"], "a")
            t = r["task"]
            r = c.request({"op": "release", "task": t, "delay": None})
            self.assertEqual(r, {"ok": True})
            self.assertQsize(d.qsize(), qsize=1, delayed=0)
            r = c.request({"op": "join", "block": None, "timeout": 0.05})
            self.assertError(r, "timeout")
            # timeout null: waits for ever, so it blocks
            c.send({"op": "put", "item": "b", "timeout": None})
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))
            d.request({"op": "get"})
            self.assertOk(c.recv())
            # declare's settings null: not named, not compared
            r = c.request({"op": "declare", "maxsize": None,
                           "max_deliveries": None, "dead_letter": None})
            self.assertEqual((r["created"], r["maxsize"]), (False, 1))
            # id null is echoed as null
            r = c.request({"op": "ping", "id": None})
            self.assertIn("id", r)
            self.assertIsNone(r["id"])

    def test_null_item_is_an_item(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "put", "item": None}))
            r = c.request({"op": "get"})
            self.assertIn("item", r)
            self.assertIsNone(r["item"])

    def test_unknown_fields_ignored(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "ping", "foo": 1,
                                     "bar": {"x": [1, None]}}))
            r = c.request({"op": "put", "item": 3, "priority": 9,
                           "ttl": "x", "Block": "no"})
            self.assertOk(r)
            r = c.request({"op": "get", "extra": [1, 2], "nowait": "x"})
            self.assertEqual(r["item"], 3)

    def test_items_by_value_integers_stay_integers(self):
        items = [0, -1, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 1.0, 1.5,
                 -0.5, 1e300, 123456789012, [1, 2.0, {"n": 3}],
                 {"a": {"b": [True, False, None]}}, "", "\u20ac\U0001f600",
                 "\\\"\n\t\u001f"]
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for item in items:
                with self.subTest(item=item):
                    c.request({"op": "put", "item": item})
                    got = c.request({"op": "get"})["item"]
                    self.assertEqual(got, item)
                    self.assertEqual(json.dumps(got), json.dumps(item))
            # written differently, same value; integers stay integers
            for text, value in ((b"1.0e2", 100.0), (b"100", 100),
                                (b"-0", 0), (b"1E+2", 100.0),
                                (b"0.1", 0.1)):
                with self.subTest(text=text):
                    c.request(b'{"op":"put","item":' + text + b'}\n')
                    got = c.request({"op": "get"})["item"]
                    self.assertEqual(got, value)
                    self.assertIs(type(got), type(value))

    def test_wrong_typed_fields_do_nothing(self):
        bad = {
            "put": [{"block": "yes"}, {"block": 1}, {"block": None, "timeout":
                    -1}, {"timeout": -0.001}, {"timeout": "1"},
                    {"timeout": True}, {"timeout": [1]}, {"noreply": "no"},
                    {"noreply": 0}],
            "get": [{"lease": 0}, {"lease": -1}, {"lease": "1"},
                    {"lease": False}, {"block": "false"}, {"timeout": -1},
                    {"block": 0}, {"timeout": {}}],
            "join": [{"block": 0}, {"timeout": -5}, {"timeout": "x"}],
            "task_done": [{}, {"task": None}, {"task": 0}, {"task": -1},
                          {"task": 1.5}, {"task": "T"}, {"task": True},
                          {"task": [1]}, {"task": 1.0}],
            "release": [{}, {"task": 0}, {"task": "T"}, {"task": 2.5},
                        {"delay": -1}, {"delay": "1"}, {"delay": True},
                        {"delay": [0]}],
            "declare": [{"maxsize": -1}, {"maxsize": 1.0}, {"maxsize": "1"},
                        {"maxsize": True}, {"max_deliveries": -1},
                        {"max_deliveries": 2 ** 32}, {"max_deliveries": [1]},
                        {"dead_letter": 5}, {"dead_letter": ["x"]},
                        {"dead_letter": "q"}, {"maxsize": 5,
                                               "dead_letter": False}],
        }
        with jqtest.Daemon() as d:
            c = self.conn(d)
            c.request({"op": "put", "queue": "q", "item": "queued"})
            c.request({"op": "put", "queue": "q", "item": "held"})
            c.request({"op": "put", "queue": "q", "item": "queued2"})
            first = c.request({"op": "get", "queue": "q"})
            task = first["task"]
            before = self.qsize_of(d, "q")
            stats_before = d.request({"op": "stats"})["queues"]["q"]
            for op, cases in bad.items():
                for fields in cases:
                    req = {"op": op, "queue": "q"}
                    if op == "put":
                        req["item"] = "new"
                    if op in ("task_done", "release") and "task" not in \
                            fields and fields:
                        req["task"] = task
                    req.update(fields)
                    with self.subTest(req=req):
                        self.assertError(c.request(req), "bad_request")
                        self.assertEqual(self.qsize_of(d, "q"), before)
            # nothing happened: same counts, the held task still held
            self.assertEqual(d.request({"op": "stats"})["queues"]["q"],
                             stats_before)
            r = c.request({"op": "task_done", "task": task})
            self.assertEqual(r["unfinished"], 2)
            # a put with a bad field creates no queue
            self.assertError(c.request({"op": "put", "queue": "new",
                                        "item": 1, "timeout": -1}),
                             "bad_request")
            self.assertError(c.request({"op": "declare", "queue": "new",
                                        "maxsize": -1}), "bad_request")
            self.assertNotIn("new", d.request({"op": "stats"})["queues"])


    def raw_reply(self, c, frame):
        """The reply line (bytes, no LF) to frame, over either transport."""
        c.send(frame)
        if self.UDP:
            return c.recv_raw().rstrip(b"\n")
        return c.recv_line()

    def test_ids_and_items_travel_as_sent(self):
        # doc/PROTOCOL.md, Notes: joinqd keeps an id and an item as the
        # JSON text sent, whitespace between tokens removed.
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for text, want in ((b"1.0e2", b"1.0e2"), (b"-0", b"-0"),
                               (b"1E+2", b"1E+2"),
                               (b'"\\u00e9"', b'"\\u00e9"'),
                               (b'{ "a" : [ 1 , 2.50 ] }', b'{"a":[1,2.50]}'),
                               (b'{"k\\u0000":" a b "}',
                                b'{"k\\u0000":" a b "}')):
                with self.subTest(text=text):
                    raw = self.raw_reply(c, b'{"op":"ping","id":' + text +
                                         b'}\n')
                    self.assertIn(b'"id":' + want + b",", raw)
                    self.assertOk(json.loads(raw))
                    self.assertOk(c.request(b'{"op":"put","item":' + text +
                                            b'}\n'))
                    raw = self.raw_reply(c, {"op": "get"})
                    self.assertIn(b'"item":' + want + b",", raw)

    def test_integers_of_any_size_travel_as_sent(self):
        # doc/PROTOCOL.md, Notes: an integer beyond 64 bits is kept as
        # text in an id and an item (RFC 8259 sets no limit, and Python
        # sends them), byte for byte, as are reals jansson would round.
        big = str(2 ** 70).encode()
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for text in (big, b"-" + big, b"18446744073709551616",
                         b"9223372036854775808", b"-9223372036854775809",
                         b"0.1", b"1e300", b"[" + big + b",0.1]",
                         b'{"n":' + big + b',"r":1e300}', b"9" * 400):
                with self.subTest(text=text[:40]):
                    raw = self.raw_reply(c, b'{"op":"put","id":' + text +
                                         b',"item":' + text + b'}\n')
                    self.assertIn(b'"id":' + text + b",", raw)
                    self.assertOk(json.loads(raw))
                    raw = self.raw_reply(c, {"op": "get"})
                    self.assertIn(b'"item":' + text + b",", raw)
                    self.assertEqual(json.loads(raw)["item"],
                                     json.loads(text))
            # Python's own encoding of a big integer, as a client sends it
            r = c.request({"op": "put", "item": {"n": 2 ** 70}, "id": 2 ** 65})
            self.assertOk(r)
            self.assertEqual(r["id"], 2 ** 65)
            self.assertEqual(c.request({"op": "get"})["item"], {"n": 2 ** 70})

    def test_big_integers_in_fields_joinqd_reads_are_bad_json(self):
        # doc/PROTOCOL.md, Notes: where joinqd reads a number (timeout,
        # lease, delay, task) or any other field of its own, an integer
        # beyond 64 bits is bad_json, as before; nothing changes.
        big = str(2 ** 70).encode()
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for frame in (b'{"op":"get","timeout":' + big + b"}",
                          b'{"op":"get","lease":' + big + b"}",
                          b'{"op":"release","task":1,"delay":' + big + b"}",
                          b'{"op":"task_done","task":' + big + b"}",
                          b'{"op":"release","task":-' + big + b"}",
                          b'{"op":"put","item":1,"block":' + big + b"}",
                          b'{"op":' + big + b"}",
                          b'{"op":"put","item":1,"queue":' + big + b"}"):
                with self.subTest(frame=frame):
                    r = c.request(frame + b"\n")
                    self.assertError(r, "bad_json")
                    self.assertIn("beyond 64 bits", r["message"])
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            # a field joinqd does not know is ignored, big or not
            self.assertOk(c.request(b'{"op":"ping","x":' + big + b"}\n"))

    def test_numbers_beyond_the_parser(self):
        # doc/PROTOCOL.md, Notes: reals beyond a double and lone surrogates
        # are bad_json, even inside an item; task 3.0 is bad_request;
        # duplicate keys: the last one wins.
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for text in (b"1e400", b"-1e400",
                         b'"\\ud800"', b'"\\udc00x"', b"[1e999]"):
                for key in (b"item", b"id"):
                    with self.subTest(text=text, key=key):
                        r = c.request(b'{"op":"put","item":1,"' + key +
                                      b'2":0,"' + key + b'":' + text +
                                      b'}\n')
                        self.assertError(r, "bad_json")
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            self.assertOk(c.request(b'{"op":"put","item":9223372036854775807}'
                                    b'\n'))
            self.assertEqual(c.request({"op": "get"})["item"], 2 ** 63 - 1)
            t = c.request({"op": "put", "item": 1})["task"]
            c.request({"op": "get"})
            self.assertError(c.request(b'{"op":"task_done","task":%d.0}\n'
                                       % t), "bad_request")
            # duplicate keys: the last one wins, for op, item and id alike
            r = c.request(b'{"op":"bogus","op":"put","item":1,"item":2,'
                          b'"id":1,"id":"last"}\n')
            self.assertOk(r)
            self.assertEqual(r["id"], "last")
            self.assertEqual(c.request({"op": "get"})["item"], 2)
            self.assertError(c.request(b'{"op":"ping","op":"bogus"}\n'),
                             "unknown_op")


class DetailsTcp(DetailsMixin, jqtest.TestCase):
    UDP = False


class DetailsUdp(DetailsMixin, jqtest.TestCase):
    UDP = True


# ---- queues: creation and max_queues ----------------------------------------

class QueuesMixin(Transport):
    def test_non_creating_ops_answer_as_empty(self):
        with jqtest.Daemon("--queue", "ghost2:4") as d:
            c = self.conn(d)
            r = c.request({"op": "qsize", "queue": "ghost"})
            self.assertEqual(r, {"ok": True, "qsize": 0, "maxsize": 0,
                                 "unfinished": 0, "inflight": 0,
                                 "delayed": 0, "dead_lettered": 0,
                                 "empty": True, "full": False})
            # a configured but unused queue answers with its maxsize
            r = c.request({"op": "qsize", "queue": "ghost2"})
            self.assertQsize(r, qsize=0, maxsize=4, unfinished=0)
            self.assertEqual(c.request({"op": "empty", "queue": "ghost"}),
                             {"ok": True, "empty": True})
            self.assertEqual(c.request({"op": "full", "queue": "ghost"}),
                             {"ok": True, "full": False})
            self.assertEqual(c.request({"op": "join", "queue": "ghost"}),
                             {"ok": True})
            self.assertEqual(c.request({"op": "join", "queue": "ghost",
                                        "block": False}), {"ok": True})
            self.assertError(c.request({"op": "task_done", "task": 1,
                                        "queue": "ghost"}), "unknown_task")
            self.assertError(c.request({"op": "release", "task": 1,
                                        "queue": "ghost"}), "unknown_task")
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_put_and_get_create(self):
        with jqtest.Daemon() as d:
            c = self.conn(d)
            c.request({"op": "put", "queue": "p", "item": 1})
            self.assertError(c.request({"op": "get", "queue": "g",
                                        "block": False}), "empty")
            self.assertEqual(list(d.request({"op": "stats"})["queues"]),
                             ["p", "g"])

    def test_max_queues(self):
        with jqtest.Daemon("--max-queues", "2") as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "put", "queue": "a", "item": 1}))
            self.assertError(c.request({"op": "get", "queue": "b",
                                        "block": False}), "empty")
            for req in ({"op": "put", "queue": "c", "item": 1},
                        {"op": "get", "queue": "c", "block": False}):
                with self.subTest(req=req):
                    self.assertError(c.request(req), "too_many_queues")
            for req in ({"op": "qsize", "queue": "c"},
                        {"op": "join", "queue": "c"},
                        {"op": "empty", "queue": "c"},
                        {"op": "full", "queue": "c"}):
                with self.subTest(req=req):
                    self.assertOk(c.request(req))
            self.assertEqual(set(d.request({"op": "stats"})["queues"]),
                             {"a", "b"})


    def test_ops_that_ignore_queue_never_create_it(self):
        # "the other ops never create one": ping, stats and auth with a
        # valid, new queue name create nothing either.
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for op in ("ping", "stats", "auth"):
                with self.subTest(op=op):
                    self.assertOk(c.request({"op": op, "queue": "fresh"}))
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_emptied_queues_still_count_against_max_queues(self):
        # doc/PROTOCOL.md, Notes: a queue is removed only by delete, never
        # by itself when it empties, so it counts against max_queues until
        # then.
        with jqtest.Daemon("--max-queues", "1") as d:
            c = self.conn(d)
            c.request({"op": "put", "queue": "a", "item": 1})
            t = c.request({"op": "get", "queue": "a"})["task"]
            c.request({"op": "task_done", "task": t})
            self.assertQsize(d.qsize("a"), qsize=0, unfinished=0)
            self.assertError(c.request({"op": "put", "queue": "b",
                                        "item": 1}), "too_many_queues")
            self.assertEqual(list(d.request({"op": "stats"})["queues"]),
                             ["a"])

    def test_declare_creates_purge_and_delete_do_not(self):
        # "put, get and declare create a queue on first use; the other ops
        # never create one"
        with jqtest.Daemon() as d:
            c = self.conn(d)
            for op in ("purge", "delete"):
                self.assertOk(c.request({"op": op, "queue": "ghost"}))
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            self.assertOk(c.request({"op": "declare", "queue": "made"}))
            self.assertEqual(list(d.request({"op": "stats"})["queues"]),
                             ["made"])

    def test_deleted_queues_leave_max_queues(self):
        # "A deleted queue no longer counts against max_queues and no
        # longer appears in stats"; declare "counts against max_queues".
        with jqtest.Daemon("--max-queues", "2") as d:
            c = self.conn(d)
            self.assertOk(c.request({"op": "declare", "queue": "a"}))
            self.assertOk(c.request({"op": "put", "queue": "b", "item": 1}))
            for req in ({"op": "declare", "queue": "c"},
                        {"op": "put", "queue": "c", "item": 1},
                        {"op": "get", "queue": "c", "block": False}):
                with self.subTest(req=req):
                    self.assertError(c.request(req), "too_many_queues")
            self.assertOk(c.request({"op": "declare", "queue": "a"}))
            self.assertEqual(c.request({"op": "delete", "queue": "a"}),
                             {"ok": True, "deleted": True})
            self.assertEqual(set(d.request({"op": "stats"})["queues"]), {"b"})
            self.assertOk(c.request({"op": "put", "queue": "c", "item": 1}))
            self.assertError(c.request({"op": "declare", "queue": "a"}),
                             "too_many_queues")
            self.assertOk(c.request({"op": "purge", "queue": "b"}))
            self.assertOk(c.request({"op": "delete", "queue": "b"}))
            r = c.request({"op": "declare", "queue": "a", "maxsize": 1})
            self.assertEqual((r["ok"], r["created"]), (True, True))
            self.assertEqual(set(d.request({"op": "stats"})["queues"]),
                             {"a", "c"})


class QueuesTcp(QueuesMixin, jqtest.TestCase):
    UDP = False


class QueuesUdp(QueuesMixin, jqtest.TestCase):
    UDP = True


# ---- FIFO and the blocking ops (TCP: one connection per client) -------------

class Blocking(jqtest.TestCase):
    def test_fifo(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            for i in range(50):
                c.request({"op": "put", "item": i})
            got = [c.request({"op": "get"})["item"] for _ in range(50)]
            self.assertEqual(got, list(range(50)))

    def test_blocked_put_completes_when_get_frees_room(self):
        with jqtest.Daemon("--default-maxsize", "2") as d:
            p, g = d.tcp(), d.tcp()
            p.request({"op": "put", "item": 1})
            p.request({"op": "put", "item": 2})
            p.send({"op": "put", "item": 3, "id": "blocked"})
            self.assertTrue(p.nothing_for(0.2 * jqtest.SLOW))
            self.assertQsize(d.qsize(), qsize=2, full=True)
            self.assertEqual(g.request({"op": "get"})["item"], 1)
            r = p.recv()
            self.assertOk(r)
            self.assertEqual(r["id"], "blocked")
            self.assertIn("task", r)
            self.assertQsize(d.qsize(), qsize=2, inflight=1, unfinished=3)
            self.assertEqual([g.request({"op": "get"})["item"]
                              for _ in range(2)], [2, 3])

    def test_blocked_puts_in_arrival_order(self):
        with jqtest.Daemon("--queue", "b:1") as d:
            d.request({"op": "put", "queue": "b", "item": "first"})
            putters = []
            for i in range(4):
                p = d.tcp()
                p.send({"op": "put", "queue": "b", "item": i, "id": i})
                self.assertTrue(p.nothing_for(0.05 * jqtest.SLOW))
                putters.append(p)
            g = d.tcp()
            self.assertEqual(g.request({"op": "get", "queue": "b"})["item"],
                             "first")
            for i in range(4):
                self.assertEqual(putters[i].recv()["id"], i)
                for later in putters[i + 1:]:
                    self.assertTrue(later.nothing_for(0.02 * jqtest.SLOW))
                self.assertEqual(g.request({"op": "get",
                                            "queue": "b"})["item"], i)

    def test_maxsize_bounds_queued_items_only(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = d.tcp()
            c.request({"op": "put", "item": 1})
            t = c.request({"op": "get"})["task"]
            self.assertOk(c.request({"op": "put", "item": 2,
                                     "block": False}))
            c.request({"op": "release", "task": t, "delay": 30})
            t2 = c.request({"op": "get"})["task"]
            self.assertOk(c.request({"op": "put", "item": 3,
                                     "block": False}))
            self.assertQsize(d.qsize(), qsize=1, inflight=1,
                             delayed=1, unfinished=3, full=True)
            self.assertError(c.request({"op": "put", "item": 4,
                                        "block": False}), "full")
            self.assertTrue(t2 != t)

    def test_put_timeout_and_nonblocking(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = d.tcp()
            c.request({"op": "put", "item": 1})
            start = time.monotonic()
            self.assertError(c.request({"op": "put", "item": 2,
                                        "timeout": 0.2}), "full")
            self.assertElapsed(start, 0.15, 3)
            start = time.monotonic()
            self.assertError(c.request({"op": "put", "item": 2,
                                        "block": False}), "full")
            self.assertElapsed(start, 0, 0.5)
            # block false wins over a timeout
            self.assertError(c.request({"op": "put", "item": 2,
                                        "block": False, "timeout": 10}),
                             "full")
            self.assertElapsed(start, 0, 0.5)
            self.assertQsize(d.qsize(), qsize=1)

    def test_get_woken_by_put_from_another_connection(self):
        with jqtest.Daemon() as d:
            g, p = d.tcp(), d.tcp()
            g.send({"op": "get", "id": "g"})
            self.assertTrue(g.nothing_for(0.2 * jqtest.SLOW))
            t = p.request({"op": "put", "item": "x"})["task"]
            r = g.recv()
            self.assertEqual((r["id"], r["item"], r["task"]), ("g", "x", t))

    def test_getters_served_in_arrival_order(self):
        with jqtest.Daemon() as d:
            getters = []
            for i in range(4):
                g = d.tcp()
                g.send({"op": "get", "timeout": 30})
                self.assertTrue(g.nothing_for(0.05 * jqtest.SLOW))
                getters.append(g)
            p = d.tcp()
            for i in range(4):
                p.request({"op": "put", "item": i})
            self.assertEqual([g.recv()["item"] for g in getters],
                             [0, 1, 2, 3])

    def test_get_timeout_and_nonblocking(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            start = time.monotonic()
            self.assertError(c.request({"op": "get", "timeout": 0.2}),
                             "empty")
            self.assertElapsed(start, 0.15, 3)
            start = time.monotonic()
            self.assertError(c.request({"op": "get", "block": False,
                                        "timeout": 10}), "empty")
            self.assertElapsed(start, 0, 0.5)
            # a get that timed out took nothing: a later put stays queued
            c.request({"op": "put", "item": 1})
            self.assertQsize(d.qsize(), qsize=1, inflight=0)

    def test_join_across_connections(self):
        with jqtest.Daemon() as d:
            w, j = d.tcp(), d.tcp()
            for i in range(2):
                w.request({"op": "put", "item": i})
            tasks = [w.request({"op": "get"})["task"] for _ in range(2)]
            j.send({"op": "join", "id": "j"})
            self.assertTrue(j.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(w.request({"op": "task_done",
                                        "task": tasks[0]})["unfinished"], 1)
            self.assertTrue(j.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(w.request({"op": "task_done",
                                        "task": tasks[1]})["unfinished"], 0)
            self.assertEqual(j.recv(), {"ok": True, "id": "j"})

    def test_join_timeout_and_nonblocking(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.request({"op": "put", "item": 1})
            start = time.monotonic()
            self.assertError(c.request({"op": "join", "timeout": 0.2}),
                             "timeout")
            self.assertElapsed(start, 0.15, 3)
            start = time.monotonic()
            self.assertError(c.request({"op": "join", "block": False}),
                             "timeout")
            self.assertElapsed(start, 0, 0.5)
            # in flight and delayed tasks are unfinished too
            t = c.request({"op": "get"})["task"]
            self.assertError(c.request({"op": "join", "block": False}),
                             "timeout")
            c.request({"op": "release", "task": t, "delay": 30})
            self.assertError(c.request({"op": "join", "block": False}),
                             "timeout")

    def test_huge_waits_are_forever(self):
        # doc/PROTOCOL.md, Notes: "more than 10^9 seconds (about 31 years)
        # is forever": such a timeout waits, and such a lease holds.
        with jqtest.Daemon() as d:
            g, p = d.tcp(), d.tcp()
            g.send({"op": "get", "timeout": 1e300, "lease": 1e300, "id": 1})
            self.assertTrue(g.nothing_for(0.2 * jqtest.SLOW))
            t = p.request({"op": "put", "item": "x"})["task"]
            self.assertEqual(g.recv()["task"], t)
            g.close()   # leased: it stays in flight
            p.request({"op": "put", "item": "y"})
            j = d.tcp()
            j.send({"op": "join", "timeout": 2e9})
            self.assertTrue(j.nothing_for(0.2 * jqtest.SLOW))
            self.assertQsize(d.qsize(), qsize=1, inflight=1, unfinished=2)
            self.assertEqual(p.request({"op": "task_done", "task": t}),
                             {"ok": True, "unfinished": 1})

    def test_several_joiners_all_return(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.request({"op": "put", "item": 1})
            joiners = [d.tcp() for _ in range(3)]
            for j in joiners:
                j.send({"op": "join"})
            self.assertTrue(joiners[-1].nothing_for(0.1 * jqtest.SLOW))
            t = c.request({"op": "get"})["task"]
            c.request({"op": "task_done", "task": t})
            for j in joiners:
                self.assertEqual(j.recv(), {"ok": True})


    def test_purge_wakes_blocked_puts_and_joins(self):
        # purge: "blocked puts and joins are woken as by get and task_done"
        with jqtest.Daemon("--queue", "b:1") as d:
            d.request({"op": "put", "queue": "b", "item": "first"})
            p, j = d.tcp(), d.tcp()
            p.send({"op": "put", "queue": "b", "item": "second", "id": "p"})
            j.send({"op": "join", "queue": "b", "id": "j"})
            self.assertTrue(p.nothing_for(0.05 * jqtest.SLOW))
            self.assertEqual(d.request({"op": "purge", "queue": "b"}),
                             {"ok": True, "purged": 1})
            r = p.recv()
            self.assertEqual((r["ok"], r["id"]), (True, "p"))
            self.assertTrue(j.nothing_for(0.05 * jqtest.SLOW))
            self.assertQsize(d.qsize("b"), qsize=1, unfinished=1)
            self.assertEqual(d.request({"op": "purge", "queue": "b"}),
                             {"ok": True, "purged": 1})
            self.assertEqual(j.recv(), {"ok": True, "id": "j"})

    def test_delete_answers_waiting_getters_empty(self):
        # "Getters waiting on it are answered empty", over TCP and UDP;
        # "The name may be used again later"
        with jqtest.Daemon() as d:
            g, u = d.tcp(), d.udp()
            g.send({"op": "get", "queue": "q", "id": "t"})
            u.send({"op": "get", "queue": "q", "id": "u"})
            self.assertTrue(jqtest.wait_until(
                lambda: d.request({"op": "stats"})["queues"]["q"]
                ["waiting_gets"] == 2))
            self.assertEqual(d.request({"op": "delete", "queue": "q"}),
                             {"ok": True, "deleted": True})
            for c, id_ in ((g, "t"), (u, "u")):
                r = c.recv()
                self.assertError(r, "empty")
                self.assertEqual(r["id"], id_)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            # the name again: get creates a new queue
            g.send({"op": "get", "queue": "q", "id": "again"})
            self.assertTrue(g.nothing_for(0.05 * jqtest.SLOW))
            d.request({"op": "put", "queue": "q", "item": 7})
            r = g.recv()
            self.assertEqual((r["id"], r["item"], r["deliveries"]),
                             ("again", 7, 1))


if __name__ == "__main__":
    jqtest.main()
