"""UDP specifics (PROTOCOL.md "Transports", noreply, too_large): one reply
datagram per request to its sender, noreply, the reply-size limit, raw
netcat probes, blocking over UDP, IPv6 loopback, and the batches (udp.c:
recvmmsg, GRO trains cut into datagrams, replies sent together, equal
ones as one GSO send).
"""
import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import jqtest


def ipv6_loopback():
    """True if this host can bind ::1 (TCP and UDP)."""
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            try:
                s.bind(("::1", 0))
            finally:
                s.close()
        return True
    except OSError:
        return False


def get_reply_len(item_json, task, deliveries=1):
    """Bytes of a get reply datagram as the daemon sends it (no id)."""
    return len(b'{"ok":true,"item":' + item_json + b',"task":' +
               str(task).encode() + b',"deliveries":' +
               str(deliveries).encode() + b"}\n")


class Replies(jqtest.TestCase):
    def test_one_reply_to_each_sender(self):
        with jqtest.Daemon() as d:
            a, b = d.udp(), d.udp()
            for i in range(20):
                a.send({"op": "ping", "id": "a%d" % i})
                b.send({"op": "put", "item": i, "id": "b%d" % i})
            got_a = [a.recv()["id"] for _ in range(20)]
            got_b = [b.recv()["id"] for _ in range(20)]
            self.assertEqual(sorted(got_a), sorted("a%d" % i
                                                   for i in range(20)))
            self.assertEqual(sorted(got_b), sorted("b%d" % i
                                                   for i in range(20)))
            self.assertTrue(a.nothing_for(0.1 * jqtest.SLOW))
            self.assertTrue(b.nothing_for(0.1 * jqtest.SLOW))
            self.assertQsize(d.qsize(), qsize=20)

    def test_reply_is_one_json_object_and_lf(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            u.send({"op": "ping"})
            data = u.recv_raw()
            self.assertTrue(data.endswith(b"\n"))
            self.assertEqual(data.count(b"\n"), 1)
            self.assertOk(json.loads(data))

    def test_trailing_lf_allowed(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            for frame in (b'{"op":"put","item":1}', b'{"op":"put","item":2}\n',
                          b'{"op":"put","item":3}\r\n'):
                with self.subTest(frame=frame):
                    self.assertOk(u.request(frame))
            self.assertEqual([u.request({"op": "get"})["item"]
                              for _ in range(3)], [1, 2, 3])

    def test_noreply_sends_nothing(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            u.send({"op": "put", "item": "quiet", "noreply": True})
            u.send({"op": "ping", "noreply": True})
            u.send({"op": "put", "item": "loud", "noreply": False, "id": 1})
            self.assertEqual(u.recv()["id"], 1)
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            self.assertQsize(u.request({"op": "qsize"}), qsize=2)
            self.assertEqual(u.request({"op": "get"})["item"], "quiet")

    def test_noreply_errors_send_nothing(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            for req in ({"op": "bogus"}, {"op": "task_done", "task": 5},
                        {"op": "put", "queue": "bad q", "item": 1},
                        {"op": "put"}, {"op": "get", "timeout": -1},
                        {"op": "release", "task": 9},
                        {"op": "join", "block": False, "queue": "x"}):
                u.send(dict(req, noreply=True))
            self.assertTrue(u.nothing_for(0.3 * jqtest.SLOW))
            self.assertEqual(u.request({"op": "ping", "id": "p"})["id"], "p")
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_noreply_put_that_waits(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            u, c = d.udp(), d.tcp()
            c.request({"op": "put", "item": 1})
            u.send({"op": "put", "item": 2, "noreply": True})
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            self.assertEqual(c.request({"op": "get"})["item"], 1)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == 1))
            self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(c.request({"op": "get"})["item"], 2)

    def test_get_with_noreply(self):
        # PROTOCOL.md: "A get with noreply is a bad_request" and, for
        # noreply, "no reply is sent; errors are only counted/logged".  So
        # no datagram comes back, and the item stays queued.
        with jqtest.Daemon() as d:
            u = d.udp()
            d.request({"op": "put", "item": "keep"})
            for block in (True, False):
                u.send({"op": "get", "noreply": True, "block": block})
            self.assertTrue(u.nothing_for(0.3 * jqtest.SLOW))
            self.assertQsize(d.qsize(), qsize=1, inflight=0)
            self.assertIn("bad_request", d.log())
            self.assertEqual(u.request({"op": "get"})["item"], "keep")

    def test_get_with_noreply_over_tcp(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.request({"op": "put", "item": "keep"})
            c.send({"op": "get", "noreply": True})
            self.assertEqual(c.request({"op": "ping", "id": 1})["id"], 1)
            self.assertQsize(d.qsize(), qsize=1, inflight=0)


class TooLarge(jqtest.TestCase):
    def test_get_too_large_item_stays_queued(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            item = "x" * 1000
            t = u.request({"op": "put", "item": item})["task"]
            r = u.request({"op": "get", "id": 3})
            self.assertError(r, "too_large")
            self.assertEqual(r["id"], 3)
            self.assertQsize(d.qsize(), qsize=1, inflight=0, unfinished=1)
            self.assertEqual(queue_gets(d), 0)
            r = d.request({"op": "get"})
            self.assertEqual((r["item"], r["task"], r["deliveries"]),
                             (item, t, 1))

    def test_get_reply_judged_exactly(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            # items whose get reply is exactly 600 and 601 bytes (a fresh
            # daemon numbers its tasks from 1)
            fits = "y" * (600 - get_reply_len(b'""', 1))
            self.assertEqual(u.request({"op": "put", "item": fits})["task"],
                             1)
            r = u.request({"op": "get"})
            self.assertOk(r)
            self.assertEqual(r["item"], fits)
            too = "z" * (601 - get_reply_len(b'""', 2))
            self.assertEqual(u.request({"op": "put", "item": too})["task"],
                             2)
            self.assertError(u.request({"op": "get"}), "too_large")
            self.assertQsize(d.qsize(), qsize=1, inflight=1)

    def test_waiting_get_answered_too_large(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            u.send({"op": "get", "id": "w"})
            self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
            d.request({"op": "put", "item": "x" * 1000})
            r = u.recv()
            self.assertError(r, "too_large")
            self.assertEqual(r["id"], "w")
            self.assertQsize(d.qsize(), qsize=1, inflight=0)
            self.assertEqual(len(d.request({"op": "get"})["item"]), 1000)

    def test_stats_too_large_with_many_queues(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            self.assertOk(u.request({"op": "stats"}))
            for i in range(10):
                d.request({"op": "put", "queue": "queue-%d" % i, "item": i})
            self.assertError(u.request({"op": "stats"}), "too_large")
            self.assertEqual(len(d.request({"op": "stats"})["queues"]), 10)

    def test_small_replies_judged_exactly(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            fixed = len(b'{"ok":true,"id":"","version":"%s","protocol":1,'
                        b'"role":"active"}\n'
                        % d.request({"op": "ping"})["version"].encode())
            r = u.request({"op": "ping", "id": "i" * (600 - fixed)})
            self.assertOk(r)
            self.assertError(u.request({"op": "ping",
                                        "id": "i" * (601 - fixed)}),
                             "too_large")
            fixed = len(b'{"ok":true,"id":"","empty":true}\n')
            self.assertOk(u.request({"op": "empty",
                                     "id": "e" * (600 - fixed)}))
            self.assertError(u.request({"op": "empty",
                                        "id": "e" * (601 - fixed)}),
                             "too_large")

    def test_change_replies_judged_exactly(self):
        # PROTOCOL.md, Details: "too_large is judged on the reply exactly
        # as the daemon would send it" - for put and task_done too.  A put
        # reply of exactly udp_max_reply bytes (task 1 on a fresh daemon)
        # and a task_done reply of exactly that size ("unfinished":0) fit;
        # one byte more is too_large and changes nothing.
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            fixed = len(b'{"ok":true,"id":"","task":1}\n')
            self.assertError(u.request({"op": "put", "item": 1,
                                        "id": "p" * (601 - fixed)}),
                             "too_large")
            self.assertQsize(d.qsize(), qsize=0, unfinished=0)
            u.send({"op": "put", "item": 1, "id": "p" * (600 - fixed)})
            data = u.recv_raw()
            self.assertOk(json.loads(data), data[:80])
            self.assertEqual(len(data), 600)
            self.assertEqual(json.loads(data)["task"], 1)
            t = d.request({"op": "get", "lease": 60})["task"]
            fixed = len(b'{"ok":true,"id":"","unfinished":0}\n')
            self.assertError(u.request({"op": "task_done", "task": t,
                                        "id": "d" * (601 - fixed)}),
                             "too_large")
            self.assertQsize(d.qsize(), inflight=1, unfinished=1)
            u.send({"op": "task_done", "task": t, "id": "d" * (600 - fixed)})
            data = u.recv_raw()
            self.assertOk(json.loads(data), data[:80])
            self.assertEqual(len(data), 600)
            self.assertQsize(d.qsize(), unfinished=0)

    def test_lifecycle_replies_judged_exactly(self):
        # declare, purge and delete change the queues: a reply that cannot
        # fit is too_large before the change; one of exactly udp_max_reply
        # bytes goes out.
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            declare = {"op": "declare", "queue": "q", "maxsize": 12,
                       "dead_letter": "dl"}
            fixed = len(b'{"ok":true,"id":"","created":true,"maxsize":12,'
                        b'"max_deliveries":0,"dead_letter":"dl"}\n')
            self.assertError(u.request(dict(declare, id="x" * (601 - fixed))),
                             "too_large")
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            u.send(dict(declare, id="x" * (600 - fixed)))
            data = u.recv_raw()
            self.assertEqual(len(data), 600)
            self.assertTrue(json.loads(data)["created"])
            for i in range(10):
                d.request({"op": "put", "queue": "q", "item": i})
            fixed = len(b'{"ok":true,"id":"","purged":10}\n')
            self.assertError(u.request({"op": "purge", "queue": "q",
                                        "id": "x" * (601 - fixed)}),
                             "too_large")
            self.assertQsize(d.qsize("q"), qsize=10)
            u.send({"op": "purge", "queue": "q", "id": "x" * (600 - fixed)})
            self.assertEqual(len(u.recv_raw()), 600)
            self.assertQsize(d.qsize("q"), qsize=0, unfinished=0)
            fixed = len(b'{"ok":true,"id":"","deleted":true}\n')
            self.assertError(u.request({"op": "delete", "queue": "q",
                                        "id": "x" * (601 - fixed)}),
                             "too_large")
            self.assertIn("q", d.request({"op": "stats"})["queues"])
            u.send({"op": "delete", "queue": "q", "id": "x" * (600 - fixed)})
            self.assertEqual(len(u.recv_raw()), 600)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_too_large_changes_nothing(self):
        # A put or task_done whose reply cannot fit is refused before it
        # runs, and changes nothing.
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            big = "i" * 600
            self.assertError(u.request({"op": "put", "item": 1, "id": big}),
                             "too_large")
            self.assertQsize(d.qsize(), qsize=0, unfinished=0)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})
            # a put whose reply fits even with the longest task id is fine
            fixed = len(b'{"ok":true,"id":"","task":9007199254740991}\n')
            self.assertOk(u.request({"op": "put", "item": 1,
                                     "id": "i" * (600 - fixed)}))
            c = d.tcp()
            t = c.request({"op": "get"})["task"]
            self.assertError(u.request({"op": "task_done", "task": t,
                                        "id": big}), "too_large")
            self.assertError(u.request({"op": "release", "task": t,
                                        "id": big}), "too_large")
            self.assertQsize(d.qsize(), qsize=0, inflight=1)

    def test_error_reply_with_a_huge_id(self):
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            u = d.udp()
            r = u.request({"op": "bogus", "id": "i" * 700})
            self.assertError(r, "too_large")
            self.assertEqual(u.request({"op": "ping", "id": 1})["id"], 1)


def queue_gets(d, name="default"):
    return d.request({"op": "stats"})["queues"][name]["gets"]


class Blocking(jqtest.TestCase):
    def test_udp_get_woken_by_tcp_put(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            u.send({"op": "get", "id": "g"})
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            t = d.request({"op": "put", "item": "x"})["task"]
            r = u.recv()
            self.assertEqual((r["id"], r["item"], r["task"]), ("g", "x", t))

    def test_udp_getters_in_arrival_order(self):
        with jqtest.Daemon() as d:
            us = [d.udp() for _ in range(3)]
            for u in us:
                u.send({"op": "get"})
                self.assertTrue(u.nothing_for(0.05 * jqtest.SLOW))
            for i in range(3):
                d.request({"op": "put", "item": i})
            self.assertEqual([u.recv()["item"] for u in us], [0, 1, 2])

    def test_udp_get_timeout(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            start = time.monotonic()
            self.assertError(u.request({"op": "get", "timeout": 0.2}),
                             "empty")
            self.assertElapsed(start, 0.15, 3)

    def test_udp_put_waits_for_room(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            u = d.udp()
            u.request({"op": "put", "item": 1})
            u.send({"op": "put", "item": 2, "id": "p"})
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            d.request({"op": "get"})
            self.assertEqual(u.recv()["id"], "p")

    def test_udp_join_waits(self):
        with jqtest.Daemon() as d:
            c, u = d.tcp(), d.udp()
            c.request({"op": "put", "item": 1})
            t = c.request({"op": "get"})["task"]
            u.send({"op": "join", "id": "j"})
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            c.request({"op": "task_done", "task": t})
            self.assertEqual(u.recv(), {"ok": True, "id": "j"})

    def test_udp_waiter_answered_at_shutdown(self):
        d = jqtest.Daemon()
        with d:
            u = d.udp()
            u.send({"op": "get", "id": 1})
            self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(d.stop(), 0)
            r = u.recv()
            self.assertError(r, "shutting_down")
            self.assertEqual(r["id"], 1)


def frames_of(objs, size=0):
    """Each request as one frame (no LF), padded with spaces (JSON
    whitespace) to size bytes."""
    return [jqtest.encode(o).rstrip(b"\n").ljust(size) for o in objs]


def gro_lines(u, n):
    """n reply datagrams to a UDP_GRO socket: each a line, and the largest
    number of them that came in one buffer."""
    lines, most = [], 0
    u.sock.settimeout(jqtest.TIMEOUT)
    while len(lines) < n:
        data, anc, _, _ = u.sock.recvmsg(70000, socket.CMSG_SPACE(4))
        seg = len(data)
        for level, kind, value in anc:
            if level == socket.SOL_UDP and kind == jqtest.UDP_GRO:
                seg = int.from_bytes(value[:4], sys.byteorder)
        parts = [data[i:i + seg] for i in range(0, len(data), seg)]
        most = max(most, len(parts))
        lines += parts
    return lines, most


class Batches(jqtest.TestCase):
    """A wake-up's datagrams are read together and their replies sent
    together: each still answered once, to its sender, in its order."""

    def test_burst_from_many_sockets(self):
        # The daemon is stopped while 8 senders send 12 each, so that each
        # batch it reads holds datagrams of every sender (96 small ones:
        # well inside a default receive buffer, so none is dropped).
        with jqtest.Daemon() as d:
            socks = [d.udp() for _ in range(8)]
            d.proc.send_signal(signal.SIGSTOP)
            try:
                for i in range(12):
                    for k, u in enumerate(socks):
                        u.send({"op": "put", "item": "%d.%d" % (k, i),
                                "id": "%d.%d" % (k, i)})
            finally:
                d.proc.send_signal(signal.SIGCONT)
            for k, u in enumerate(socks):
                got = [json.loads(u.recv_raw()) for _ in range(12)]
                for r in got:
                    self.assertOk(r)
                self.assertEqual([r["id"] for r in got],
                                 ["%d.%d" % (k, i) for i in range(12)])
            for u in socks:
                self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
            self.assertQsize(d.qsize(), qsize=96)

    def test_gso_train_is_cut_into_datagrams(self):
        # One send of 40 equal-sized puts reaches joinqd as one GRO buffer;
        # so does one whose last datagram is shorter.
        with jqtest.Daemon() as d:
            u = d.udp()
            trains = [
                frames_of({"op": "put", "item": "a%02d" % i, "id": "a%02d" % i}
                          for i in range(40)),
                frames_of([{"op": "put", "item": "b%02d" % i,
                            "id": "b%02d" % i} for i in range(39)] +
                          [{"op": "put", "item": 7, "id": "b"}]),
            ]
            self.assertEqual(len(set(map(len, trains[0]))), 1)
            self.assertLess(len(trains[1][-1]), len(trains[1][0]))
            for frames in trains:
                u.send_train(frames)
                got = [u.recv_raw() for _ in frames]
                self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
                want = [json.loads(f)["id"] for f in frames]
                self.assertEqual([json.loads(g)["id"] for g in got], want)
                for g in got:
                    self.assertOk(json.loads(g))
            c = d.tcp()
            items = [c.request({"op": "get"})["item"] for _ in range(80)]
            self.assertEqual(items, ["a%02d" % i for i in range(40)] +
                             ["b%02d" % i for i in range(39)] + [7])

    def test_equal_replies_are_separate_datagrams(self):
        # 30 pings of one size: their replies are of one size too, and go
        # out as one GSO send.  A plain socket gets 30 datagrams, each a
        # whole JSON line; a UDP_GRO socket gets them in one buffer whose
        # segment size cuts it into the same lines.
        with jqtest.Daemon() as d:
            frames = frames_of({"op": "ping", "id": "p%02d" % i}
                               for i in range(30))
            u = d.udp()
            u.send_train(frames)
            plain = [u.recv_raw() for _ in frames]
            self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
            g = d.udp()
            g.sock.setsockopt(socket.SOL_UDP, jqtest.UDP_GRO, 1)
            g.send_train(frames)
            lines, most = gro_lines(g, len(frames))
            self.assertTrue(g.nothing_for(0.1 * jqtest.SLOW))
            self.assertGreater(most, 1, "the replies came one by one")
            self.assertEqual(len(set(map(len, plain))), 1)
            for got in (plain, lines):
                self.assertEqual([json.loads(x)["id"] for x in got],
                                 ["p%02d" % i for i in range(30)])
                for x in got:
                    self.assertTrue(x.endswith(b"\n"))
                    self.assertEqual(x.count(b"\n"), 1)
                    self.assertOk(json.loads(x))

    def test_too_large_judged_per_reply_in_a_train(self):
        # Pings padded to one size, half of whose replies would pass
        # udp_max_reply by one byte: those, and only those, are too_large.
        with jqtest.Daemon("--udp-max-reply", "600") as d:
            fixed = len(b'{"ok":true,"id":"","version":"%s","protocol":1,'
                        b'"role":"active"}\n'
                        % d.request({"op": "ping"})["version"].encode())
            objs = [{"op": "ping", "id": chr(97 + i) * (600 - fixed + i % 2)}
                    for i in range(20)]
            frames = frames_of(objs, 700)
            u = d.udp()
            u.send_train(frames)
            got = [u.recv_raw() for _ in frames]
            self.assertTrue(u.nothing_for(0.1 * jqtest.SLOW))
            for o, g in zip(objs, got):
                r = json.loads(g)
                if len(o["id"]) == 600 - fixed:
                    self.assertEqual(len(g), 600)
                    self.assertEqual(r["id"], o["id"])
                else:
                    self.assertError(r, "too_large")
                    self.assertNotIn("id", r)

    def test_gso_refused(self):
        # A kernel or device that refuses GSO (the fault shim's EIO): the
        # replies go one by one, said once in the log; bench copes too.
        d = jqtest.Daemon("--log-level", "debug")
        d.env = jqtest.fault_env(no_gso=d.path("no-gso"))
        d.file("no-gso", "")
        with d:
            frames = frames_of({"op": "ping", "id": "p%02d" % i}
                               for i in range(30))
            g = d.udp()
            g.sock.setsockopt(socket.SOL_UDP, jqtest.UDP_GRO, 1)
            for _ in range(2):
                g.send_train(frames)
                lines, most = gro_lines(g, len(frames))
                self.assertEqual(most, 1)
                self.assertEqual([json.loads(x)["id"] for x in lines],
                                 ["p%02d" % i for i in range(30)])
            self.assertEqual(d.log().count("GSO refused"), 1, d.log())
            p = d.cli("bench", "--json", "-n", "2000", udp=True,
                      env=jqtest.fault_env(no_gso=d.path("no-gso")))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["items"], 2000)

    def test_denied_train_dropped_whole(self):
        with jqtest.Daemon("--udp-allow", "10.0.0.0/8") as d:
            u = d.udp()
            u.send_train(frames_of({"op": "put", "item": i, "id": i}
                                   for i in range(10, 40)))
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            self.assertTrue(jqtest.wait_until(
                lambda: d.request({"op": "stats"})["udp_denied"] == 30))
            self.assertQsize(d.qsize(), qsize=0, unfinished=0)


class Netcat(jqtest.TestCase):
    def nc(self, port, line):
        nc = shutil.which("nc")
        self.assertIsNotNone(nc, "nc (netcat-openbsd) is needed")
        return subprocess.run(
            "echo '%s' | %s -u -w1 127.0.0.1 %d" % (line, nc, port),
            shell=True, capture_output=True, timeout=jqtest.TIMEOUT)

    def test_netcat_probes(self):
        with jqtest.Daemon() as d:
            p = self.nc(d.port, '{"op":"ping"}')
            self.assertEqual(p.returncode, 0, p.stderr)
            r = json.loads(p.stdout.decode().strip())
            self.assertOk(r)
            self.assertEqual(r["protocol"], 1)
            p = self.nc(d.port, '{"op":"put","item":"hello"}')
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertOk(json.loads(p.stdout.decode().strip()))
            self.assertEqual(d.request({"op": "get"})["item"], "hello")


class Ipv6(jqtest.TestCase):
    def test_ipv6_loopback(self):
        # On a host without ::1 this runs over 127.0.0.1 only.
        host = "::1" if ipv6_loopback() else "127.0.0.1"
        with jqtest.Daemon(host=host) as d:
            if host == "::1":
                self.assertIn("[::1]:%d" % d.port, d.log())
            c, u = d.tcp(), d.udp()
            self.assertOk(c.request({"op": "ping"}))
            self.assertOk(u.request({"op": "put", "item": "six"}))
            r = c.request({"op": "get"})
            self.assertEqual(r["item"], "six")
            self.assertOk(u.request({"op": "task_done", "task": r["task"]}))
            self.assertEqual(c.request({"op": "join"}), {"ok": True})

    def test_both_loopbacks_at_once(self):
        if not ipv6_loopback():
            return   # nothing more to see than test_ipv6_loopback
        with jqtest.Daemon("-b", "127.0.0.1", "-b", "::1") as d:
            d.request({"op": "put", "item": 4})
            self.assertEqual(d.udp("::1").request({"op": "get"})["item"], 4)
            self.assertQsize(d.tcp("::1").request({"op": "qsize"}),
                             inflight=1)


if __name__ == "__main__":
    jqtest.main()
