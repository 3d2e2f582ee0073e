"""Load: deep pipelining on one connection and a thousand clients at once
(PROTOCOL.md: "a default install holds at least 1,000 clients at once").
"""
import resource
import threading
import time

import jqtest

N_PIPELINED = 10000
N_CLIENTS = 1000


def raise_nofile(want):
    """Raises this process's open-file limit to want if it may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Pipelined(jqtest.TestCase):
    def pipeline(self, c, reqs):
        """Writes every request from a thread while reading the replies
        here, so neither side waits on a full socket buffer."""
        data = b"".join(jqtest.encode(r) for r in reqs)
        errors = []

        def write():
            try:
                c.sock.sendall(data)
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=write)
        t.start()
        try:
            replies = [c.recv() for _ in reqs]
        finally:
            t.join(jqtest.TIMEOUT)
        self.assertEqual(errors, [])
        return replies

    def test_ten_thousand_pipelined_requests(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            start = time.monotonic()
            puts = [{"op": "put", "item": {"n": i}, "id": i}
                    for i in range(N_PIPELINED)]
            replies = self.pipeline(c, puts)
            self.assertEqual([r["id"] for r in replies],
                             list(range(N_PIPELINED)))
            tasks = [r["task"] for r in replies]
            self.assertEqual(len(set(tasks)), N_PIPELINED)
            self.assertEqual(tasks, sorted(tasks))

            gets = [{"op": "get", "id": "g%d" % i} for i in range(N_PIPELINED)]
            replies = self.pipeline(c, gets)
            self.assertEqual([r["id"] for r in replies],
                             ["g%d" % i for i in range(N_PIPELINED)])
            self.assertEqual([r["item"]["n"] for r in replies],
                             list(range(N_PIPELINED)))
            self.assertEqual([r["task"] for r in replies], tasks)
            self.assertQsize(d.qsize(), qsize=0, inflight=N_PIPELINED)

            dones = [{"op": "task_done", "task": t, "id": [t]} for t in tasks]
            replies = self.pipeline(c, dones)
            self.assertEqual([r["id"] for r in replies], [[t] for t in tasks])
            self.assertEqual([r["unfinished"] for r in replies],
                             list(range(N_PIPELINED - 1, -1, -1)))
            self.assertEqual(c.request({"op": "join"}), {"ok": True})
            self.assertElapsed(start, 0, 15)

    def test_mixed_pipeline_with_errors(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            reqs = []
            for i in range(3000):
                reqs.append({"op": "put", "item": i, "id": i})
                reqs.append({"op": "bogus", "id": -i})
                reqs.append({"op": "get", "block": False, "id": "x%d" % i})
            replies = self.pipeline(c, reqs)
            self.assertEqual([r.get("id") for r in replies],
                             [r["id"] for r in reqs])
            self.assertTrue(all(r["item"] == i for i, r in
                                enumerate(replies[2::3])))
            self.assertQsize(d.qsize(), qsize=0, inflight=3000)


    def test_default_max_queues(self):
        # max_queues defaults to 10,000: that many queues exist at once,
        # one more is too_many_queues.
        with jqtest.Daemon() as d:
            c = d.tcp()
            puts = [{"op": "put", "queue": "q%d" % i, "item": i}
                    for i in range(10001)]
            replies = self.pipeline(c, puts)
            self.assertTrue(all(r["ok"] for r in replies[:10000]))
            self.assertError(replies[10000], "too_many_queues")
            s = c.request({"op": "stats"})
            self.assertEqual(len(s["queues"]), 10000)
            self.assertQsize(c.request({"op": "qsize", "queue": "q9999"}),
                             qsize=1)


class ManyClients(jqtest.TestCase):
    def test_thousand_concurrent_connections(self):
        self.assertGreaterEqual(raise_nofile(N_CLIENTS + 200),
                                N_CLIENTS + 50)
        with jqtest.Daemon() as d:
            start = time.monotonic()
            conns = []
            try:
                for i in range(N_CLIENTS):
                    conns.append(d.tcp())
                # every client puts, then every one gets, then finishes
                for i, c in enumerate(conns):
                    c.send({"op": "put", "item": i, "id": i})
                for i, c in enumerate(conns):
                    r = c.recv()
                    self.assertEqual(r["id"], i)
                self.assertEqual(d.request({"op": "stats"})["connections"],
                                 N_CLIENTS + 1)
                for c in conns:
                    c.send({"op": "get"})
                got = [c.recv() for c in conns]
                self.assertEqual(sorted(r["item"] for r in got),
                                 list(range(N_CLIENTS)))
                self.assertEqual(len({r["task"] for r in got}), N_CLIENTS)
                self.assertQsize(d.qsize(), qsize=0, inflight=N_CLIENTS)
                for c, r in zip(conns, got):
                    c.send({"op": "task_done", "task": r["task"]})
                left = sorted(c.recv()["unfinished"] for c in conns)
                self.assertEqual(left, list(range(N_CLIENTS)))
                self.assertEqual(d.request({"op": "join",
                                            "timeout": 5 * jqtest.SLOW}),
                                 {"ok": True})
            finally:
                for c in conns:
                    c.close()
            self.assertTrue(jqtest.wait_until(
                lambda: d.request({"op": "stats"})["connections"] == 1))
            self.assertElapsed(start, 0, 15)

    def test_daemon_raises_its_open_file_limit(self):
        # Started with a soft limit of 256 descriptors, the daemon must
        # raise its own (the hard limit allows it) to hold 1,000 clients.
        raise_nofile(N_CLIENTS + 200)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        d = jqtest.Daemon()
        # valgrind pins the limit a program starts with (its own
        # descriptors sit above it): under it, start with room instead.
        if not jqtest.WRAPPER:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        try:
            with d:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                conns = []
                try:
                    for i in range(N_CLIENTS):
                        conns.append(d.tcp())
                    for c in conns:
                        c.send({"op": "ping"})
                    for c in conns:
                        self.assertOk(c.recv())
                    self.assertEqual(d.request({"op": "stats"})
                                     ["connections"], N_CLIENTS + 1)
                finally:
                    for c in conns:
                        c.close()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    def test_default_max_connections_is_10000(self):
        # "max_connections (default 10,000 ...)": 10,000 clients are
        # served at once, the next one gets too_many_connections.
        default = 10000
        if raise_nofile(default + 200) < default + 100:
            self.fail("this host's open-file limit is below %d: the test "
                      "cannot hold %d clients" % (default + 100, default))
        with jqtest.Daemon() as d:
            conns = []
            try:
                for n in range(0, default, 500):
                    batch = [d.tcp() for _ in range(500)]
                    for c in batch:
                        c.send({"op": "ping"})
                    for c in batch:
                        self.assertOk(c.recv())
                    conns += batch
                self.assertEqual(conns[0].request({"op": "stats"})
                                 ["connections"], default)
                extra = d.tcp()
                r = extra.recv()
                self.assertError(r, "too_many_connections")
                self.assertIn("max_connections", r["message"])
                self.assertTrue(extra.closed_by_peer())
                extra.close()
                self.assertOk(conns[-1].request({"op": "ping"}))
            finally:
                for c in conns:
                    c.close()

    def test_thousand_waiting_getters(self):
        raise_nofile(N_CLIENTS + 200)
        with jqtest.Daemon() as d:
            conns = []
            try:
                for i in range(N_CLIENTS):
                    c = d.tcp()
                    c.send({"op": "get", "timeout": 30})
                    conns.append(c)
                self.assertTrue(jqtest.wait_until(
                    lambda: d.request({"op": "stats"})["connections"] ==
                    N_CLIENTS + 1))
                p = d.tcp()
                for i in range(N_CLIENTS):
                    p.send({"op": "put", "item": i})
                for i in range(N_CLIENTS):
                    self.assertOk(p.recv())
                got = [c.recv()["item"] for c in conns]
                self.assertEqual(sorted(got), list(range(N_CLIENTS)))
            finally:
                for c in conns:
                    c.close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == N_CLIENTS))


if __name__ == "__main__":
    jqtest.main()
