"""Delivery (PROTOCOL.md "Delivery", release, stats): redelivery on
disconnect, leases, release with and without delay, dead letters, and the
counters of stats.  Every qsize read checks U = Q + F + D.
"""
import time

import jqtest


def stats(d):
    return d.request({"op": "stats"})


def queue_stats(d, name="default"):
    return stats(d)["queues"][name]


class Redelivery(jqtest.TestCase):
    def test_unleased_task_returns_on_close(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            d.request({"op": "put", "item": "b"})
            a = d.tcp()
            r = a.request({"op": "get"})
            self.assertEqual((r["item"], r["deliveries"]), ("a", 1))
            self.assertQsize(d.qsize(), qsize=1, inflight=1, unfinished=2)
            a.close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["inflight"] == 0))
            self.assertQsize(d.qsize(), qsize=2, inflight=0, unfinished=2)
            r2 = d.request({"op": "get"})
            self.assertEqual((r2["item"], r2["task"], r2["deliveries"]),
                             ("a", r["task"], 2))

    def test_oldest_delivery_first_in_line_again(self):
        with jqtest.Daemon() as d:
            for x in "abcd":
                d.request({"op": "put", "item": x})
            a = d.tcp()
            got = [a.request({"op": "get"}) for _ in range(3)]
            a.close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == 4))
            c = d.tcp()
            again = [c.request({"op": "get"}) for _ in range(4)]
            self.assertEqual([r["item"] for r in again], list("abcd"))
            self.assertEqual([r["task"] for r in again[:3]],
                             [r["task"] for r in got])
            self.assertEqual([r["deliveries"] for r in again], [2, 2, 2, 1])

    def test_oldest_delivery_first_to_a_waiting_getter(self):
        # The returned tasks are "first in line" for a getter that waits
        # already, too: it must get the oldest delivery, not the newest.
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            d.request({"op": "put", "item": "b"})
            a = d.tcp()
            ta = a.request({"op": "get"})["task"]
            tb = a.request({"op": "get"})["task"]
            g = d.tcp()
            g.send({"op": "get"})
            self.assertTrue(g.nothing_for(0.1 * jqtest.SLOW))
            a.close()
            r = g.recv()
            self.assertEqual((r["item"], r["task"], r["deliveries"]),
                             ("a", ta, 2))
            r = g.request({"op": "get"})
            self.assertEqual((r["item"], r["task"]), ("b", tb))

    def test_task_done_and_release_by_another_connection(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            d.request({"op": "put", "item": "b"})
            a = d.tcp()
            ta = a.request({"op": "get"})["task"]
            tb = a.request({"op": "get"})["task"]
            other = d.tcp()
            self.assertEqual(other.request({"op": "task_done", "task": ta}),
                             {"ok": True, "unfinished": 1})
            self.assertEqual(other.request({"op": "release", "task": tb}),
                             {"ok": True})
            a.close()
            # nothing more comes back: a finished, b queued once
            self.assertTrue(jqtest.wait_until(
                lambda: stats(d)["connections"] == 2))
            self.assertQsize(d.qsize(), qsize=1, inflight=0, unfinished=1)

    def test_leased_task_survives_close_and_returns_after_lease(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            a = d.tcp()
            start = time.monotonic()
            r = a.request({"op": "get", "lease": 0.3})
            a.close()
            watcher = d.tcp()
            self.assertTrue(jqtest.wait_until(
                lambda: stats(d)["connections"] == 1 + 1))
            if time.monotonic() - start < 0.25:
                self.assertQsize(watcher.request({"op": "qsize"}), qsize=0,
                                 inflight=1)
            r2 = watcher.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertElapsed(start, 0.25, 3)
            self.assertEqual((r2["task"], r2["item"], r2["deliveries"]),
                             (r["task"], "a", 2))

    def test_unleased_tcp_task_stays_in_flight(self):
        # "A task delivered over TCP without a lease stays in flight until
        # task_done, release, or its connection closes": no lease, not even
        # udp_lease, ever sends it back while the connection is open.
        with jqtest.Daemon("--udp-lease", "0.1") as d:
            d.request({"op": "put", "item": "a"})
            c = d.tcp()
            t = c.request({"op": "get"})["task"]
            time.sleep(0.5)
            self.assertQsize(d.qsize(), qsize=0, inflight=1, unfinished=1)
            self.assertError(d.request({"op": "get", "block": False}),
                             "empty")
            # still delivered and undone: release and task_done know it
            self.assertEqual(c.request({"op": "release", "task": t}),
                             {"ok": True})
            t2 = c.request({"op": "get"})["task"]
            self.assertEqual(t2, t)
            self.assertEqual(c.request({"op": "task_done", "task": t}),
                             {"ok": True, "unfinished": 0})

    def test_default_udp_lease_is_30_seconds(self):
        # "every UDP delivery has one: lease, or the daemon's udp_lease,
        # default 30 s".  Takes 30 s.
        with jqtest.Daemon() as d:
            t = d.request({"op": "put", "item": "u"})["task"]
            start = time.monotonic()
            self.assertEqual(d.udp().request({"op": "get"})["task"], t)
            c = d.tcp()
            r = c.request({"op": "get", "timeout": 40},
                          timeout=40 * jqtest.SLOW)
            self.assertElapsed(start, 29.9, 33)
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_task_done_after_lease_expiry(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            c = d.tcp()
            t = c.request({"op": "get", "lease": 0.3})["task"]
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == 1))
            self.assertError(c.request({"op": "task_done", "task": t}),
                             "unknown_task")
            self.assertError(c.request({"op": "release", "task": t}),
                             "unknown_task")
            self.assertQsize(d.qsize(), qsize=1, inflight=0, unfinished=1)

    def test_task_done_within_lease(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            c = d.tcp()
            # the task_done must beat the lease: both scale
            lease = 0.3 * jqtest.SLOW
            t = c.request({"op": "get", "lease": lease})["task"]
            self.assertEqual(c.request({"op": "task_done", "task": t}),
                             {"ok": True, "unfinished": 0})
            time.sleep(lease + 0.1)   # past the lease: nothing may come back
            self.assertQsize(d.qsize(), qsize=0, unfinished=0)

    def test_every_udp_get_has_a_lease(self):
        with jqtest.Daemon("--udp-lease", "0.5") as d:
            d.request({"op": "put", "item": "u"})
            u = d.udp()
            start = time.monotonic()
            r = u.request({"op": "get"})
            self.assertQsize(d.qsize(), qsize=0, inflight=1)
            r2 = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertElapsed(start, 0.4, 3)
            self.assertEqual((r2["task"], r2["deliveries"]),
                             (r["task"], 2))

    def test_tiny_udp_lease_is_still_a_lease(self):
        with jqtest.Daemon("--udp-lease", "0.0004") as d:
            d.request({"op": "put", "item": "u"})
            t = d.udp().request({"op": "get"})["task"]
            r = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_tiny_lease_is_still_a_lease(self):
        # doc/PROTOCOL.md, Notes: waits are kept in milliseconds, rounded
        # up, "so a tiny positive value still waits": lease 1e-6 is a
        # lease of 1 ms, not a delivery without one.
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "u"})
            c = d.tcp()
            t = c.request({"op": "get", "lease": 1e-6})["task"]
            r = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_waiting_udp_get_has_a_lease(self):
        with jqtest.Daemon("--udp-lease", "0.3") as d:
            u = d.udp()
            u.send({"op": "get"})
            self.assertTrue(u.nothing_for(0.05 * jqtest.SLOW))
            start = time.monotonic()
            t = d.request({"op": "put", "item": "w"})["task"]
            self.assertEqual(u.recv()["task"], t)
            r = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertElapsed(start, 0.2, 3)
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_udp_get_lease_field_wins(self):
        with jqtest.Daemon() as d:   # udp_lease 30 s
            d.request({"op": "put", "item": "u"})
            u = d.udp()
            start = time.monotonic()
            t = u.request({"op": "get", "lease": 0.2})["task"]
            r = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertElapsed(start, 0.15, 3)
            self.assertEqual(r["task"], t)

    def test_udp_task_done_within_lease(self):
        # the task_done must beat the lease: both scale
        with jqtest.Daemon("--udp-lease", "%g" % (0.3 * jqtest.SLOW)) as d:
            d.request({"op": "put", "item": "u"})
            u = d.udp()
            t = u.request({"op": "get"})["task"]
            self.assertEqual(u.request({"op": "task_done", "task": t}),
                             {"ok": True, "unfinished": 0})
            self.assertEqual(u.request({"op": "join"}), {"ok": True})

    def test_redelivered_task_enters_a_full_queue(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            d.request({"op": "put", "item": "a"})
            a = d.tcp()
            a.request({"op": "get"})
            d.request({"op": "put", "item": "b"})     # full again
            a.close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == 2))
            self.assertQsize(d.qsize(), qsize=2, maxsize=1, full=True,
                             unfinished=2)
            self.assertEqual(d.request({"op": "get"})["item"], "a")

    def test_lease_expiry_enters_a_full_queue(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = d.tcp()
            c.request({"op": "put", "item": "a"})
            # the put must beat the lease: both scale
            c.request({"op": "get", "lease": 0.2 * jqtest.SLOW})
            c.request({"op": "put", "item": "b"})
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == 2))
            self.assertQsize(d.qsize(), qsize=2, maxsize=1, inflight=0)
            self.assertEqual(c.request({"op": "get"})["item"], "a")


class Release(jqtest.TestCase):
    def test_release_goes_to_the_head(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            for x in "abc":
                c.request({"op": "put", "item": x})
            r = c.request({"op": "get"})
            c.request({"op": "get"})   # b
            c.request({"op": "release", "task": r["task"]})
            self.assertQsize(d.qsize(), qsize=2, inflight=1, unfinished=3)
            r2 = c.request({"op": "get"})
            self.assertEqual((r2["item"], r2["task"], r2["deliveries"]),
                             ("a", r["task"], 2))
            c.request({"op": "release", "task": r["task"]})
            self.assertEqual(c.request({"op": "get"})["deliveries"], 3)
            q = queue_stats(d)
            self.assertEqual((q["releases"], q["redeliveries"], q["gets"]),
                             (2, 2, 4))

    def test_release_enters_a_full_queue(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = d.tcp()
            c.request({"op": "put", "item": "a"})
            t = c.request({"op": "get"})["task"]
            c.request({"op": "put", "item": "b"})
            c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize(), qsize=2, maxsize=1, full=True)
            self.assertEqual(c.request({"op": "get"})["item"], "a")

    def test_release_wakes_a_waiting_getter(self):
        with jqtest.Daemon() as d:
            c, g = d.tcp(), d.tcp()
            c.request({"op": "put", "item": "a"})
            t = c.request({"op": "get"})["task"]
            g.send({"op": "get"})
            self.assertTrue(g.nothing_for(0.1 * jqtest.SLOW))
            c.request({"op": "release", "task": t})
            r = g.recv()
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_release_with_delay(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            ta = c.request({"op": "put", "item": "a"})["task"]
            c.request({"op": "put", "item": "b"})
            self.assertEqual(c.request({"op": "get"})["task"], ta)
            start = time.monotonic()
            self.assertEqual(c.request({"op": "release", "task": ta,
                                        "delay": 0.4}), {"ok": True})
            self.assertQsize(c.request({"op": "qsize"}), qsize=1, delayed=1,
                             inflight=0, unfinished=2)
            # not delivered meanwhile, and not delivered-and-undone
            self.assertError(c.request({"op": "task_done", "task": ta}),
                             "unknown_task")
            self.assertError(c.request({"op": "release", "task": ta}),
                             "unknown_task")
            rb = c.request({"op": "get"})
            self.assertEqual(rb["item"], "b")
            self.assertError(c.request({"op": "get", "block": False}),
                             "empty")
            self.assertQsize(c.request({"op": "qsize"}), qsize=0, delayed=1,
                             inflight=1, unfinished=2)
            r = c.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertElapsed(start, 0.35, 3)
            self.assertEqual((r["item"], r["task"], r["deliveries"]),
                             ("a", ta, 2))
            self.assertQsize(c.request({"op": "qsize"}), qsize=0, delayed=0,
                             inflight=2)

    def test_delayed_task_returns_to_the_head(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            ta = c.request({"op": "put", "item": "a"})["task"]
            c.request({"op": "get"})
            c.request({"op": "release", "task": ta, "delay": 0.2})
            for x in "bc":
                c.request({"op": "put", "item": x})
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["delayed"] == 0))
            self.assertQsize(d.qsize(), qsize=3, delayed=0)
            self.assertEqual([c.request({"op": "get"})["item"]
                              for _ in range(3)], ["a", "b", "c"])

    def test_delayed_task_enters_a_full_queue(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            c = d.tcp()
            ta = c.request({"op": "put", "item": "a"})["task"]
            c.request({"op": "get"})
            c.request({"op": "put", "item": "b"})
            c.request({"op": "release", "task": ta, "delay": 0.2})
            self.assertError(c.request({"op": "put", "item": "c",
                                        "block": False}), "full")
            self.assertQsize(d.qsize(), qsize=1, delayed=1, full=True)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["delayed"] == 0))
            self.assertQsize(d.qsize(), qsize=2, maxsize=1, delayed=0,
                             full=True)
            self.assertEqual(c.request({"op": "get"})["item"], "a")
            self.assertEqual(c.request({"op": "get"})["item"], "b")

    def test_delayed_task_outlives_its_connection(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "a"})
            c = d.tcp()
            t = c.request({"op": "get"})["task"]
            c.request({"op": "release", "task": t, "delay": 0.2})
            c.close()
            r = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_delay_zero_is_no_delay(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.request({"op": "put", "item": "a"})
            t = c.request({"op": "get"})["task"]
            c.request({"op": "release", "task": t, "delay": 0})
            self.assertQsize(d.qsize(), qsize=1, delayed=0)

    def test_join_waits_for_delayed_tasks(self):
        with jqtest.Daemon() as d:
            c, j = d.tcp(), d.tcp()
            c.request({"op": "put", "item": "a"})
            t = c.request({"op": "get"})["task"]
            c.request({"op": "release", "task": t, "delay": 0.2})
            j.send({"op": "join"})
            self.assertTrue(j.nothing_for(0.1 * jqtest.SLOW))
            r = c.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            c.request({"op": "task_done", "task": r["task"]})
            self.assertEqual(j.recv(), {"ok": True})


DEAD = "[queue jobs]\nmax_deliveries = 2\n"


class DeadLetters(jqtest.TestCase):
    def check_dead(self, d, item, task):
        """jobs is finished and jobs.dead holds item as a new task."""
        self.assertQsize(d.qsize("jobs"), qsize=0, inflight=0, unfinished=0)
        self.assertEqual(d.request({"op": "join", "queue": "jobs",
                                    "block": False}), {"ok": True})
        self.assertQsize(d.qsize("jobs.dead"), qsize=1, unfinished=1)
        r = d.request({"op": "get", "queue": "jobs.dead"})
        self.assertEqual(r["item"], item)
        self.assertNotEqual(r["task"], task)
        self.assertEqual(r["deliveries"], 1)
        s = stats(d)["queues"]
        self.assertEqual(s["jobs"]["dead_lettered"], 1)
        self.assertEqual(s["jobs"]["task_dones"], 0)
        self.assertEqual(s["jobs.dead"]["puts"], 1)

    def test_after_max_deliveries_by_release(self):
        with jqtest.Daemon(config=DEAD) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs",
                           "item": {"job": 1}})["task"]
            for n in (1, 2):
                r = c.request({"op": "get", "queue": "jobs"})
                self.assertEqual((r["task"], r["deliveries"]), (t, n))
                c.request({"op": "release", "task": t})
            self.check_dead(d, {"job": 1}, t)
            self.assertEqual(queue_stats(d, "jobs")["releases"], 2)

    def test_after_max_deliveries_by_disconnect(self):
        with jqtest.Daemon(config=DEAD) as d:
            t = d.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            for n in (1, 2):
                c = d.tcp()
                r = c.request({"op": "get", "queue": "jobs",
                               "timeout": 5 * jqtest.SLOW})
                self.assertEqual((r["task"], r["deliveries"]), (t, n))
                c.close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d, "jobs.dead")["qsize"] == 1))
            self.check_dead(d, "x", t)

    def test_after_max_deliveries_by_lease(self):
        with jqtest.Daemon(config=DEAD) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs", "lease": 0.1})
            r = c.request({"op": "get", "queue": "jobs", "lease": 0.1,
                           "timeout": 5 * jqtest.SLOW})
            self.assertEqual(r["deliveries"], 2)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d, "jobs.dead")["qsize"] == 1))
            self.check_dead(d, "x", t)

    def test_delayed_release_after_last_delivery_dead_letters_at_once(self):
        with jqtest.Daemon(config=DEAD) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t})
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t, "delay": 30})
            self.check_dead(d, "x", t)

    def test_join_returns_when_dead_lettered(self):
        with jqtest.Daemon(config="[queue jobs]\nmax_deliveries = 1\n") as d:
            c, j = d.tcp(), d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            j.send({"op": "join", "queue": "jobs"})
            self.assertTrue(j.nothing_for(0.1 * jqtest.SLOW))
            c.request({"op": "release", "task": t})
            self.assertEqual(j.recv(), {"ok": True})
            self.assertQsize(d.qsize("jobs.dead"), qsize=1)

    def test_before_max_deliveries_nothing_dead(self):
        with jqtest.Daemon(config="[queue jobs]\nmax_deliveries = 3\n") as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            for n in (1, 2):
                c.request({"op": "get", "queue": "jobs"})
                c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize("jobs"), qsize=1, unfinished=1)
            self.assertNotIn("jobs.dead", stats(d)["queues"])
            # other queues have no limit
            c.request({"op": "put", "item": "y"})
            for n in range(5):
                t2 = c.request({"op": "get"})["task"]
                c.request({"op": "release", "task": t2})
            self.assertEqual(c.request({"op": "get"})["deliveries"], 6)

    def test_max_deliveries_zero_is_unlimited(self):
        # "a queue may set max_deliveries (config; 0 = unlimited)"
        with jqtest.Daemon(config="[queue jobs]\nmax_deliveries = 0\n") as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            for n in range(1, 8):
                r = c.request({"op": "get", "queue": "jobs"})
                self.assertEqual((r["task"], r["deliveries"]), (t, n))
                c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize("jobs"), qsize=1, unfinished=1)
            self.assertEqual(set(stats(d)["queues"]), {"jobs"})
            self.assertEqual(queue_stats(d, "jobs")["dead_lettered"], 0)

    def test_dead_letter_off_still_counted(self):
        # doc/PROTOCOL.md, Notes: "With dead_letter = off, a task past
        # max_deliveries is dropped; it is still counted in dead_lettered."
        conf = "[queue jobs]\nmax_deliveries = 1\ndead_letter = off\n"
        with jqtest.Daemon(config=conf) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t})
            q = queue_stats(d, "jobs")
            self.assertEqual((q["dead_lettered"], q["task_dones"],
                              q["unfinished"]), (1, 0, 0))
            self.assertError(c.request({"op": "task_done", "task": t}),
                             "unknown_task")

    def test_dead_letter_off(self):
        conf = "[queue jobs]\nmax_deliveries = 1\ndead_letter = off\n"
        with jqtest.Daemon(config=conf) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize("jobs"), qsize=0, unfinished=0)
            self.assertEqual(c.request({"op": "join", "queue": "jobs"}),
                             {"ok": True})
            self.assertEqual(set(stats(d)["queues"]), {"jobs"})

    def test_dead_letter_named_queue(self):
        conf = "[queue jobs]\nmax_deliveries = 1\ndead_letter = graveyard\n"
        with jqtest.Daemon(config=conf) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize("graveyard"), qsize=1)
            self.assertNotIn("jobs.dead", stats(d)["queues"])
            self.assertEqual(c.request({"op": "get", "queue": "graveyard"})
                             ["item"], "x")

    def test_dead_letter_enters_full_queue_and_past_max_queues(self):
        conf = ("[queue jobs]\nmax_deliveries = 1\n"
                "[queue jobs.dead]\nmaxsize = 1\n")
        with jqtest.Daemon("--max-queues", "1", config=conf) as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            self.assertError(c.request({"op": "put", "queue": "jobs.dead",
                                        "item": 0}), "too_many_queues")
            c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize("jobs.dead"), qsize=1, maxsize=1,
                             full=True)
            # and into a full one
            t = c.request({"op": "put", "queue": "jobs", "item": "y"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t})
            self.assertQsize(d.qsize("jobs.dead"), qsize=2, maxsize=1)

    def test_dead_letter_queue_is_ordinary(self):
        with jqtest.Daemon(config="[queue jobs]\nmax_deliveries = 1\n") as d:
            c = d.tcp()
            t = c.request({"op": "put", "queue": "jobs", "item": "x"})["task"]
            c.request({"op": "get", "queue": "jobs"})
            c.request({"op": "release", "task": t})
            r = c.request({"op": "get", "queue": "jobs.dead"})
            c.request({"op": "release", "task": r["task"]})
            r2 = c.request({"op": "get", "queue": "jobs.dead"})
            self.assertEqual(r2["deliveries"], 2)
            c.request({"op": "task_done", "task": r2["task"]})
            self.assertEqual(c.request({"op": "join", "queue": "jobs.dead"}),
                             {"ok": True})


    def bounce(self, d, queue, times):
        """Puts one item on queue and gives it back `times` times."""
        c = d.tcp()
        t = c.request({"op": "put", "queue": queue, "item": "x"})["task"]
        for _ in range(times):
            r = c.request({"op": "get", "queue": queue,
                           "timeout": 5 * jqtest.SLOW})
            self.assertEqual(r["task"], t)
            c.request({"op": "release", "task": t})
        c.close()
        return t

    def test_default_max_deliveries_from_flag_and_file(self):
        # The daemon-wide max_deliveries applies to every queue without
        # its own; a flag wins over the file.
        for args, config in ((["--max-deliveries", "2"], None),
                             ([], "max_deliveries = 2\n"),
                             (["--max-deliveries", "2"],
                              "max_deliveries = 9\n")):
            with self.subTest(args=args, config=config), \
                    jqtest.Daemon(*args, config=config) as d:
                t = self.bounce(d, "jobs", 2)
                self.check_dead(d, "x", t)
                self.assertEqual(d.qsize("jobs")["dead_lettered"], 1)

    def test_own_max_deliveries_wins_over_default(self):
        config = "max_deliveries = 1\n[queue jobs]\nmax_deliveries = 3\n"
        with jqtest.Daemon(config=config) as d:
            self.bounce(d, "jobs", 2)
            self.assertQsize(d.qsize("jobs"), qsize=1, unfinished=1)
            self.assertEqual(d.qsize("jobs")["dead_lettered"], 0)
            self.bounce(d, "other", 1)   # the default: gone at once
            self.assertEqual(d.qsize("other")["dead_lettered"], 1)
            self.assertQsize(d.qsize("other.dead"), qsize=1)

    def test_default_spares_dead_letter_queues(self):
        # A dead-letter queue has no limit of its own unless configured,
        # so letters do not cascade to NAME.dead.dead.
        with jqtest.Daemon("--max-deliveries", "1") as d:
            self.bounce(d, "fresh.dead", 5)
            self.assertQsize(d.qsize("fresh.dead"), qsize=1, unfinished=1)
            self.assertEqual(d.qsize("fresh.dead")["dead_lettered"], 0)
            self.assertNotIn("fresh.dead.dead", stats(d)["queues"])

    def test_qsize_counts_dead_letters(self):
        with jqtest.Daemon(config=DEAD) as d:
            self.assertEqual(d.qsize("jobs")["dead_lettered"], 0)
            for _ in range(3):
                self.bounce(d, "jobs", 2)
            r = d.qsize("jobs")
            self.assertEqual(r["dead_lettered"], 3)
            self.assertQsize(r, qsize=0, unfinished=0)
            self.assertEqual(queue_stats(d, "jobs")["dead_lettered"], 3)


class Stats(jqtest.TestCase):
    def test_counters(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            for i in range(3):
                c.request({"op": "put", "item": i})
            t0 = c.request({"op": "get"})["task"]
            t1 = c.request({"op": "get"})["task"]
            c.request({"op": "task_done", "task": t0})
            c.request({"op": "release", "task": t1})
            c.request({"op": "get"})      # t1 again: a redelivery
            c.request({"op": "get"})
            q = queue_stats(d)
            self.assertEqual({k: q[k] for k in (
                "qsize", "inflight", "delayed", "unfinished", "puts", "gets",
                "task_dones", "releases", "redeliveries", "dead_lettered")},
                dict(qsize=0, inflight=2, delayed=0, unfinished=2, puts=3,
                     gets=4, task_dones=1, releases=1, redeliveries=1,
                     dead_lettered=0))

    def test_redelivery_after_disconnect_counts(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": 1})
            a = d.tcp()
            a.request({"op": "get"})
            a.close()
            r = d.request({"op": "get", "timeout": 5 * jqtest.SLOW})
            self.assertEqual(r["deliveries"], 2)
            q = queue_stats(d)
            self.assertEqual((q["gets"], q["redeliveries"], q["releases"]),
                             (2, 1, 0))

    def test_connections_counts_open_tcp_connections(self):
        with jqtest.Daemon() as d:
            w = d.tcp()
            self.assertEqual(w.request({"op": "stats"})["connections"], 1)
            others = [d.tcp() for _ in range(4)]
            for o in others:
                o.request({"op": "ping"})
            self.assertEqual(w.request({"op": "stats"})["connections"], 5)
            # UDP clients are not connections
            d.udp().request({"op": "ping"})
            self.assertEqual(w.request({"op": "stats"})["connections"], 5)
            for o in others[:3]:
                o.close()
            self.assertTrue(jqtest.wait_until(
                lambda: w.request({"op": "stats"})["connections"] == 2))

    def test_uptime_and_version(self):
        with jqtest.Daemon() as d:
            s = stats(d)
            self.assertEqual(s["version"],
                             d.request({"op": "ping"})["version"])
            self.assertLessEqual(s["uptime"], 5 * jqtest.SLOW)

    def test_waiting_requests_counted(self):
        # doc/PROTOCOL.md, Notes: stats also gives, per queue,
        # waiting_puts, waiting_gets and waiting_joins.
        with jqtest.Daemon("--queue", "one:1") as d:
            d.request({"op": "put", "queue": "one", "item": 0})
            waiters = []
            for req in ({"op": "put", "queue": "one", "item": 1},
                        {"op": "put", "queue": "one", "item": 2},
                        {"op": "join", "queue": "one"},
                        {"op": "get", "queue": "e"}):
                c = d.tcp()
                c.send(req)
                waiters.append(c)
            u = d.udp()
            u.send({"op": "get", "queue": "e"})
            self.assertTrue(jqtest.wait_until(
                lambda: stats(d)["queues"]["e"]["waiting_gets"] == 2))
            s = stats(d)["queues"]
            self.assertEqual((s["one"]["waiting_puts"],
                              s["one"]["waiting_gets"],
                              s["one"]["waiting_joins"]), (2, 0, 1))
            self.assertEqual((s["e"]["waiting_puts"],
                              s["e"]["waiting_joins"]), (0, 0))
            d.request({"op": "get", "queue": "one"})
            self.assertOk(waiters[0].recv())
            self.assertEqual(queue_stats(d, "one")["waiting_puts"], 1)
            waiters[3].close()
            self.assertTrue(jqtest.wait_until(
                lambda: stats(d)["queues"]["e"]["waiting_gets"] == 1))

    def test_queues_listed_with_all_fields(self):
        with jqtest.Daemon("--queue", "q2:9") as d:
            d.request({"op": "put", "queue": "q1", "item": 1})
            d.request({"op": "put", "queue": "q2", "item": 1})
            s = stats(d)["queues"]
            self.assertEqual(set(s), {"q1", "q2"})
            self.assertEqual(s["q2"]["maxsize"], 9)


if __name__ == "__main__":
    jqtest.main()
