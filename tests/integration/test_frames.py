"""Framing (PROTOCOL.md "Transports", "Details", "Limits"): bad frames,
frame sizes, nesting depth, blank lines, pipelining and half-close.

Over TCP every bad frame is followed by a good request on the same
connection, proving it is still usable, and by a check that no queue
changed; the same frames go over UDP where a datagram can carry them.
"""
import json
import time

import jqtest

MIB = 1024 * 1024

BAD_UTF8 = [
    b'{"op":"put","item":"\xff"}',             # never valid
    b'{"op":"put","item":"\xc0\x80"}',         # overlong NUL
    b'{"op":"put","item":"\xc1\xbf"}',         # overlong
    b'{"op":"put","item":"\xe0\x80\xaf"}',     # overlong 3 bytes
    b'{"op":"put","item":"\xf0\x80\x80\xaf"}', # overlong 4 bytes
    b'{"op":"put","item":"\xed\xa0\x80"}',     # a surrogate
    b'{"op":"put","item":"\xf4\x90\x80\x80"}', # above U+10FFFF
    b'{"op":"put","item":"\xf8\x88\x80\x80\x80"}',  # 5 bytes
    b'{"op":"put","item":"\x80"}',             # lone continuation
    b'{"op":"put","item":"\xe2\x82"}',         # cut short in a string
    b'{"op":"put","item":"a"}\xc3',            # cut short at the end
    b'{"op":"put","item":"\xc3\x28"}',         # bad continuation
    b'{"op":"put","\xfe":1,"item":1}',         # in a key
    b'{"op":"put",\xa0"item":1}',              # between tokens
]

NOT_AN_OBJECT = [b"[]", b'[{"op":"ping"}]', b"1", b"-2.5", b'"ping"',
                 b"null", b"true", b"false"]

TRUNCATED = [b"{", b'{"op":"pi', b'{"op":"put","item":',
             b'{"op":"put","item":[1,2', b'{"op":"ping",', b'{"op"',
             b'{"op":"ping"', b'{"op":"put","item":"ab']

NUL_BYTES = [b'{"op":"ping"}\x00', b'\x00{"op":"ping"}',
             b'{"op":"ping",\x00"id":1}', b'{"op":"put","item":"a\x00b"}',
             b'{"op":"pi\x00ng"}', b'{"op":"put","item":1}\x00\x00']

TRAILING = [b'{"op":"put","item":1} x', b'{"op":"put","item":1}{}',
            b'{"op":"put","item":1}}', b'{"op":"put","item":1},',
            b'{"op":"put","item":1} {"op":"put","item":2}']


# Frames past a max_frame of 100 that would fail a later check too: the
# frame's size is judged first ("the frame (frame_too_large, bad_utf8,
# bad_json), then unauthorized").
OVERSIZE_AND_BAD = [
    b"\xff" * 101,                                       # bad UTF-8
    b'{"op":"put","item":"\xff' + b"x" * 100 + b'"}',    # bad UTF-8 inside
    b"not json " * 12,                                    # bad JSON
    b'{"op":"put","item":"' + b"x" * 100 + b'"}',         # no token
]

TOKEN = "frame-token"


def nested(depth, open_="[", close="]"):
    """A put whose frame nests depth deep, the request object being 1."""
    inner = open_ * (depth - 1) + close * (depth - 1)
    if open_ == "{":
        inner = '{"a":' * (depth - 1) + "1" + "}" * (depth - 1)
    return ('{"op":"put","item":%s}' % inner).encode()


def put_line(total, cr=False):
    """A put frame whose bytes before the LF number exactly total."""
    head, tail = b'{"op":"put","item":"', b'"}'
    pad = total - len(head) - len(tail) - (1 if cr else 0)
    return head + b"x" * pad + tail + (b"\r" if cr else b"") + b"\n"


class BadFramesTcp(jqtest.TestCase):
    def check_table(self, frames, code, daemon_args=()):
        with jqtest.Daemon(*daemon_args) as d:
            c = d.tcp()
            for i, frame in enumerate(frames):
                with self.subTest(frame=frame):
                    self.assertError(c.request(frame + b"\n"), code)
                    r = c.request({"op": "ping", "id": i})
                    self.assertEqual(r["id"], i, "the connection still works")
                    self.assertQsize(d.qsize(), qsize=0, unfinished=0)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_bad_utf8(self):
        self.check_table(BAD_UTF8, "bad_utf8")

    def test_not_an_object(self):
        self.check_table(NOT_AN_OBJECT, "bad_json")

    def test_truncated(self):
        self.check_table(TRUNCATED, "bad_json")

    def test_raw_nul_bytes(self):
        self.check_table(NUL_BYTES, "bad_json")

    def test_bytes_after_the_object(self):
        self.check_table(TRAILING, "bad_json")

    def test_deep_nesting(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            for kind in (("[", "]"), ("{", "}")):
                with self.subTest(kind=kind):
                    r = c.request(nested(64, *kind) + b"\n")
                    self.assertOk(r)
                    got = c.request({"op": "get"})
                    self.assertEqual(json.dumps(got["item"],
                                                separators=(",", ":")),
                                     nested(64, *kind)[19:-1].decode())
                    r = c.request(nested(65, *kind) + b"\n")
                    self.assertIn(r.get("error"), ("bad_json", "bad_request"),
                                  r)
                    self.assertOk(c.request({"op": "ping"}))
                    self.assertQsize(d.qsize(), qsize=0)
            # brackets inside strings are not nesting
            item = "[" * 100 + "{" * 100
            self.assertOk(c.request({"op": "put", "item": item}))
            self.assertEqual(c.request({"op": "get"})["item"], item)
            # nor escaped quotes followed by brackets
            item = '\\"[[[[' * 30
            self.assertOk(c.request({"op": "put", "item": [item]}))
            self.assertEqual(c.request({"op": "get"})["item"], [item])
            # very deep (far past any parser's limit) is still an error
            r = c.request(nested(100000) + b"\n")
            self.assertIn(r.get("error"), ("bad_json", "bad_request"), r)
            self.assertOk(c.request({"op": "ping"}))

    def test_max_depth_3(self):
        with jqtest.Daemon("--max-depth", "3") as d:
            c = d.tcp()
            self.assertOk(c.request(nested(3) + b"\n"))
            self.assertOk(c.request(b'{"op":"put","item":{"a":1}}\n'))
            for frame in (nested(4), nested(4, "{", "}"),
                          b'{"op":"put","item":1,"x":[[[1]]]}'):
                with self.subTest(frame=frame):
                    r = c.request(frame + b"\n")
                    self.assertIn(r.get("error"), ("bad_json", "bad_request"),
                                  r)
                    self.assertOk(c.request({"op": "ping"}))
            self.assertQsize(d.qsize(), qsize=2)

    def test_max_depth_1(self):
        with jqtest.Daemon("--max-depth", "1") as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "item": 1}))
            r = c.request({"op": "put", "item": []})
            self.assertIn(r.get("error"), ("bad_json", "bad_request"), r)

    def test_crlf_accepted(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send(b'{"op":"put","item":1,"id":1}\r\n'
                   b'{"op":"ping","id":2}\r\n{"op":"qsize","id":3}\n')
            self.assertEqual([c.recv()["id"] for _ in range(3)], [1, 2, 3])
            self.assertQsize(d.qsize(), qsize=1)

    def test_blank_lines_ignored(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send(b"\n \n\t\n\r\n \t\r\n   \t  \n\n\n")
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))
            c.send(b'\n\r\n{"op":"ping","id":"first"}\n\n')
            self.assertEqual(c.recv()["id"], "first")
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_max_frame_exactly_accepted(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            line = put_line(MIB)
            self.assertEqual(len(line), MIB + 1)
            self.assertTrue(c.send_raw(line))
            self.assertOk(c.recv())
            # a CR counts, and with it the frame still fits
            self.assertTrue(c.send_raw(put_line(MIB, cr=True)))
            self.assertOk(c.recv())
            got = c.request({"op": "get"})["item"]
            self.assertEqual(len(got), MIB - len(b'{"op":"put","item":""}'))
            self.assertQsize(d.qsize(), qsize=1, inflight=1)

    def test_max_frame_plus_one(self):
        for cr in (False, True):
            with self.subTest(cr=cr), jqtest.Daemon() as d:
                c = d.tcp()
                c.send_raw(put_line(MIB + 1, cr=cr))
                self.assertError(c.recv(), "frame_too_large")
                self.assertTrue(c.closed_by_peer())
                self.assertQsize(d.qsize(), qsize=0)
                self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_frame_too_large_after_good_frames(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send_raw(b'{"op":"put","item":1,"id":1}\n' + put_line(MIB + 1)
                       + b'{"op":"put","item":2,"id":3}\n')
            self.assertEqual(c.recv()["id"], 1)
            self.assertError(c.recv(), "frame_too_large")
            self.assertTrue(c.closed_by_peer())
            self.assertQsize(d.qsize(), qsize=1)

    def test_oversize_answered_without_lf(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            self.assertTrue(c.send_raw(b'{"op":"put","item":"' +
                                       b"x" * (MIB + 100)))
            self.assertError(c.recv(), "frame_too_large")
            self.assertTrue(c.closed_by_peer())
            self.assertQsize(d.qsize(), qsize=0)

    def test_max_frame_100(self):
        with jqtest.Daemon("--max-frame", "100") as d:
            c = d.tcp()
            self.assertOk(c.request(put_line(100)))
            self.assertOk(c.request(put_line(100, cr=True)))
            c.send_raw(put_line(101))
            self.assertError(c.recv(), "frame_too_large")
            self.assertTrue(c.closed_by_peer())
            self.assertQsize(d.qsize(), qsize=2)
            c = d.tcp()
            c.send_raw(b"x" * 101)   # no LF at all
            self.assertError(c.recv(), "frame_too_large")
            self.assertTrue(c.closed_by_peer())


    def test_frame_too_large_judged_first(self):
        d = jqtest.Daemon("--max-frame", "100")
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        with d:
            for frame in OVERSIZE_AND_BAD:
                for end in (b"", b"\n"):
                    with self.subTest(frame=frame, end=end):
                        c = d.tcp()
                        c.send_raw(frame + end)
                        self.assertError(c.recv(), "frame_too_large")
                        self.assertTrue(c.closed_by_peer())
            self.assertEqual(d.request({"op": "stats", "token": TOKEN})
                             ["queues"], {})

    def test_long_blank_line_is_too_large(self):
        # doc/PROTOCOL.md, Notes: "Blank lines longer than max_frame are
        # frame_too_large: a line cannot be known to be blank before its
        # LF, and the limit does not wait for it."
        with jqtest.Daemon("--max-frame", "100") as d:
            for line in (b" " * 101 + b"\n", b" \t" * 50 + b"\r\n",
                         b" " * 200):
                with self.subTest(line=line):
                    c = d.tcp()
                    c.send_raw(line)
                    self.assertError(c.recv(), "frame_too_large")
                    self.assertTrue(c.closed_by_peer())
            # up to the limit it is blank, and ignored
            c = d.tcp()
            c.send_raw(b" " * 99 + b"\r\n")
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))
            self.assertEqual(c.request({"op": "ping", "id": 1})["id"], 1)


class BadFramesUdp(jqtest.TestCase):
    def check_table(self, frames, code, daemon_args=()):
        with jqtest.Daemon(*daemon_args) as d:
            u = d.udp()
            for i, frame in enumerate(frames):
                for end in (b"", b"\n"):
                    with self.subTest(frame=frame, end=end):
                        self.assertError(u.request(frame + end), code)
                        self.assertEqual(u.request({"op": "ping",
                                                    "id": i})["id"], i)
            self.assertQsize(d.qsize(), qsize=0)
            self.assertEqual(d.request({"op": "stats"})["queues"], {})

    def test_bad_utf8(self):
        self.check_table(BAD_UTF8, "bad_utf8")

    def test_not_an_object(self):
        self.check_table(NOT_AN_OBJECT, "bad_json")

    def test_truncated(self):
        self.check_table(TRUNCATED, "bad_json")

    def test_raw_nul_bytes(self):
        self.check_table(NUL_BYTES, "bad_json")

    def test_bytes_after_the_object(self):
        self.check_table(TRAILING + [b'{"op":"put","item":1}\n{"op":"ping"}',
                                     b'{"op":"put","item":1}\n\n{}'],
                         "bad_json")

    def test_deep_nesting(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            self.assertOk(u.request(nested(64)))
            r = u.request(nested(65))
            self.assertIn(r.get("error"), ("bad_json", "bad_request"), r)
            self.assertQsize(d.qsize(), qsize=1)

    def test_max_depth_3(self):
        with jqtest.Daemon("--max-depth", "3") as d:
            u = d.udp()
            self.assertOk(u.request(nested(3)))
            r = u.request(nested(4))
            self.assertIn(r.get("error"), ("bad_json", "bad_request"), r)
            self.assertQsize(d.qsize(), qsize=1)

    def test_crlf_and_lf_accepted(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            for end in (b"", b"\n", b"\r\n", b" \n", b"\n\n"):
                with self.subTest(end=end):
                    self.assertOk(u.request(b'{"op":"ping"}' + end))

    def test_blank_datagrams_ignored(self):
        with jqtest.Daemon() as d:
            u = d.udp()
            for blank in (b"", b"\n", b" ", b"\r\n", b" \t\r\n"):
                u.send(blank)
            self.assertTrue(u.nothing_for(0.2 * jqtest.SLOW))
            self.assertEqual(u.request({"op": "ping", "id": 1})["id"], 1)

    def test_max_frame_100(self):
        with jqtest.Daemon("--max-frame", "100") as d:
            u = d.udp()
            self.assertOk(u.request(put_line(100)))
            self.assertOk(u.request(put_line(100)[:-1]))    # no LF
            self.assertOk(u.request(put_line(100, cr=True)))
            self.assertError(u.request(put_line(101)), "frame_too_large")
            self.assertError(u.request(put_line(101)[:-1]),
                             "frame_too_large")
            # max_frame counts the CR: 100 bytes, a CR, a LF is too large
            self.assertError(u.request(put_line(101, cr=True)),
                             "frame_too_large")
            self.assertQsize(d.qsize(), qsize=3)


    def test_frame_too_large_judged_first(self):
        d = jqtest.Daemon("--max-frame", "100")
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        with d:
            u = d.udp()
            for frame in OVERSIZE_AND_BAD:
                for end in (b"", b"\n"):
                    with self.subTest(frame=frame, end=end):
                        self.assertError(u.request(frame + end),
                                         "frame_too_large")
            self.assertEqual(u.request({"op": "stats", "token": TOKEN})
                             ["queues"], {})

    def test_long_blank_datagram_is_too_large(self):
        # PROTOCOL.md, Limits: passing max_frame "gets a clear error, never
        # ... a silent drop"; doc/PROTOCOL.md, Notes: "Blank lines longer
        # than max_frame are frame_too_large" (as over TCP, where the same
        # bytes get frame_too_large).  Up to the limit a blank datagram is
        # ignored (test_blank_datagrams_ignored).
        with jqtest.Daemon("--max-frame", "100") as d:
            u = d.udp()
            for blank in (b" " * 101, b" " * 101 + b"\n",
                          b" \t" * 50 + b"\r\n"):
                with self.subTest(blank=blank):
                    u.send(blank)
                    self.assertFalse(u.nothing_for(0.5 * jqtest.SLOW),
                                     "no reply: a datagram past max_frame "
                                     "was dropped without an error")
                    self.assertError(u.recv(), "frame_too_large")


class Pipelining(jqtest.TestCase):
    def test_many_requests_in_one_write(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            reqs = []
            for i in range(200):
                reqs.append({"op": "put", "item": i, "id": i})
            reqs.append({"op": "bogus", "id": "bad"})
            reqs.append({"op": "qsize", "id": "q"})
            for i in range(200):
                reqs.append({"op": "get", "id": 1000 + i})
            c.send(b"".join(jqtest.encode(r) for r in reqs))
            replies = [c.recv() for _ in reqs]
            self.assertEqual([r.get("id") for r in replies],
                             [r["id"] for r in reqs])
            self.assertError(replies[200], "unknown_op")
            self.assertQsize(replies[201], qsize=200)
            self.assertEqual([r["item"] for r in replies[202:]],
                             list(range(200)))

    def test_frames_split_across_writes(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            data = b'{"op":"put","item":"ab","id":1}\n{"op":"get","id":2}\n'
            for i in range(len(data)):
                c.send(data[i:i + 1])
            self.assertEqual(c.recv()["id"], 1)
            self.assertEqual(c.recv()["item"], "ab")

    def test_blocked_request_holds_back_the_rest(self):
        with jqtest.Daemon() as d:
            a, b = d.tcp(), d.tcp()
            a.send(b'{"op":"get","id":"get"}\n{"op":"ping","id":"ping"}\n'
                   b'{"op":"put","queue":"behind","item":1,"id":"put"}\n')
            self.assertTrue(a.nothing_for(0.2 * jqtest.SLOW))
            # what waits behind the get is neither executed nor answered
            self.assertQsize(b.request({"op": "qsize", "queue": "behind"}),
                             qsize=0)
            self.assertNotIn("behind", b.request({"op": "stats"})["queues"])
            b.request({"op": "put", "item": "x"})
            r = a.recv()
            self.assertEqual((r["id"], r["item"]), ("get", "x"))
            self.assertEqual(a.recv()["id"], "ping")
            self.assertEqual(a.recv()["id"], "put")
            self.assertQsize(b.request({"op": "qsize", "queue": "behind"}),
                             qsize=1)

    def test_blocked_put_holds_back_the_rest(self):
        with jqtest.Daemon("--default-maxsize", "1") as d:
            a, b = d.tcp(), d.tcp()
            a.request({"op": "put", "item": 1})
            a.send(b'{"op":"put","item":2,"id":1}\n{"op":"qsize","id":2}\n')
            self.assertTrue(a.nothing_for(0.2 * jqtest.SLOW))
            b.request({"op": "get"})
            self.assertEqual(a.recv()["id"], 1)
            r = a.recv()
            self.assertEqual(r["id"], 2)
            self.assertQsize(r, qsize=1, inflight=1)

    def test_noreply_in_a_pipeline(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send(b'{"op":"put","item":1,"noreply":true}\n'
                   b'{"op":"bogus","noreply":true}\n'
                   b'{"op":"task_done","task":77,"noreply":true}\n'
                   b'{"op":"get","noreply":true}\n'
                   b'{"op":"put","item":2,"noreply":false,"id":"b"}\n'
                   b'{"op":"qsize","id":"q"}\n')
            self.assertEqual(c.recv()["id"], "b")
            r = c.recv()
            self.assertEqual(r["id"], "q")
            self.assertQsize(r, qsize=2, inflight=0)
            self.assertTrue(c.nothing_for(0.1 * jqtest.SLOW))


class HalfClose(jqtest.TestCase):
    def test_complete_frames_answered_then_closed(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send(b"".join(jqtest.encode({"op": "put", "item": i, "id": i})
                            for i in range(20)) +
                   b'{"op":"qsize","id":"q"}\n')
            c.shutdown_write()
            replies = c.replies_until_close()
            self.assertEqual([r["id"] for r in replies],
                             list(range(20)) + ["q"])
            self.assertQsize(replies[-1], qsize=20)

    def test_blocking_requests_answered_as_nonblocking(self):
        with jqtest.Daemon("--queue", "full:1") as d:
            d.request({"op": "put", "queue": "full", "item": 1})
            c = d.tcp()
            start = time.monotonic()
            c.send(b'{"op":"get","queue":"e","id":1}\n'
                   b'{"op":"get","queue":"e","timeout":30,"id":2}\n'
                   b'{"op":"put","queue":"full","item":2,"id":3}\n'
                   b'{"op":"join","queue":"full","id":4}\n'
                   b'{"op":"ping","id":5}\n')
            c.shutdown_write()
            replies = c.replies_until_close()
            self.assertElapsed(start, 0, 2)
            self.assertEqual([r["id"] for r in replies], [1, 2, 3, 4, 5])
            self.assertError(replies[0], "empty")
            self.assertError(replies[1], "empty")
            self.assertError(replies[2], "full")
            self.assertError(replies[3], "timeout")
            self.assertOk(replies[4])
            self.assertQsize(d.qsize("full"), qsize=1)

    def test_waiting_request_answered_at_close(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send(b'{"op":"get","id":1}\n{"op":"put","queue":"b",'
                   b'"item":1,"id":2}\n{"op":"get","queue":"z","id":3}\n')
            self.assertTrue(c.nothing_for(0.2 * jqtest.SLOW))
            c.shutdown_write()
            replies = c.replies_until_close()
            self.assertEqual([r["id"] for r in replies], [1, 2, 3])
            self.assertError(replies[0], "empty")
            self.assertOk(replies[1])
            self.assertError(replies[2], "empty")
            self.assertQsize(d.qsize("b"), qsize=1)
            self.assertQsize(d.qsize(), qsize=0)

    def test_close_noticed_behind_held_input(self):
        # Behind a waiting get the daemon stops reading once it holds
        # max_frame + some slack; the close must still answer the get
        # (its FIN is in the daemon's socket buffer, behind unread frames).
        with jqtest.Daemon("--max-frame", "100") as d:
            c = d.tcp()
            c.send({"op": "get", "id": "g"})
            self.assertTrue(c.nothing_for(0.05 * jqtest.SLOW))
            n = 8000   # 112 kB of pings: more than the daemon holds
            c.send_raw(b'{"op":"ping"}\n' * n)
            c.shutdown_write()
            r = c.recv()
            self.assertError(r, "empty")
            self.assertEqual(r["id"], "g")
            replies = c.replies_until_close()
            self.assertEqual(len(replies), n)
            self.assertTrue(all(r["ok"] for r in replies))

    def test_partial_frame_dropped(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.send(b'{"op":"put","item":1,"id":1}\n'
                   b'{"op":"put","item":2,"id":2}')
            c.shutdown_write()
            replies = c.replies_until_close()
            self.assertEqual([r["id"] for r in replies], [1])
            self.assertQsize(d.qsize(), qsize=1)

    def test_delivered_tasks_return_after_half_close(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "item": "x"})
            c = d.tcp()
            c.send({"op": "get"})
            c.shutdown_write()
            replies = c.replies_until_close()
            self.assertEqual(replies[0]["item"], "x")
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["qsize"] == 1))

    def test_every_frame_answered_with_a_large_backlog(self):
        # The replies (12 x 900 kB) pass what the daemon keeps unsent
        # before it pauses: the frames behind must still be executed.
        with jqtest.Daemon() as d:
            p = d.tcp()
            big = "x" * 900000
            for i in range(12):
                p.send({"op": "put", "item": big})
            for i in range(12):
                self.assertOk(p.recv())
            c = d.tcp()
            c.send(b"".join(jqtest.encode({"op": "get", "id": i})
                            for i in range(12)) + b'{"op":"ping","id":"p"}\n')
            c.shutdown_write()
            time.sleep(0.2)   # let the output back up before reading
            replies = c.replies_until_close()
            self.assertEqual([r["id"] for r in replies],
                             list(range(12)) + ["p"])
            self.assertTrue(all(r["item"] == big for r in replies[:12]))


class BigFrames(jqtest.TestCase):
    """Frames of up to a MiB arriving in small pieces, all at once, and
    pipelined: each answered once, in order, its item back byte for byte
    (conn.c completes a big frame in its own input buffer, resumes the
    search for its LF, and keeps a few emptied big buffers for reuse)."""

    def big(self, i: int, size: int) -> str:
        """An item of about size bytes that tells i apart."""
        return "%d:" % i + "".join(chr(97 + (i + k) % 26)
                                   for k in range(26)) * (size // 26)

    def test_big_frames_in_pieces_and_at_once(self):
        with jqtest.Daemon("--max-frame", "2M") as d:
            c = d.tcp()
            items = [self.big(i, s) for i, s in
                     enumerate((MIB, 5000, 70000, MIB - 100, 900000))]
            frames = [jqtest.encode({"op": "put", "item": it, "id": i})
                      for i, it in enumerate(items)]
            # in pieces of 4 KiB: the LF alone in the last piece, and
            # a CR before it in the piece ahead
            first = frames[0][:-1] + b"\r"
            for k in range(0, len(first), 4096):
                c.send(first[k:k + 4096])
            c.send(b"\n")
            self.assertEqual(c.recv()["id"], 0)
            # in uneven pieces that end mid-frame, across two frames
            data = frames[1] + frames[2]
            for k in range(0, len(data), 1500):
                c.send(data[k:k + 1500])
            self.assertEqual([c.recv()["id"] for _ in range(2)], [1, 2])
            # all at once, with small frames between them
            c.send(frames[3] + b'{"op":"ping","id":"p"}\n' + frames[4])
            self.assertEqual([c.recv()["id"] for _ in range(3)], [3, "p", 4])
            c.send(b"".join(jqtest.encode({"op": "get", "id": i})
                            for i in range(len(items))))
            got = [c.recv() for _ in items]
            self.assertEqual([(r["id"], r["item"]) for r in got],
                             list(enumerate(items)))
            for r in got:
                self.assertOk(c.request({"op": "task_done",
                                         "task": r["task"]}))

    def test_many_connections_send_big_frames_in_turn(self):
        # more connections than the daemon keeps spare buffers, each
        # completing a big frame a piece at a time, in turns
        with jqtest.Daemon() as d:
            conns = [d.tcp() for _ in range(6)]
            for rnd in range(2):
                frames = [jqtest.encode({"op": "put", "queue": "b%d" % k,
                                         "item": self.big(k + rnd,
                                                          300000 + k)})
                          for k in range(len(conns))]
                for off in range(0, max(map(len, frames)), 65536):
                    for c, f in zip(conns, frames):
                        if off < len(f):
                            c.send(f[off:off + 65536])
                for c in conns:
                    self.assertOk(c.recv())
            for k, c in enumerate(conns):
                for rnd in range(2):
                    r = c.request({"op": "get", "queue": "b%d" % k,
                                   "block": False})
                    self.assertEqual(r["item"], self.big(k + rnd, 300000 + k))
            for c in conns:
                c.close()

    def test_big_items_round_trip_every_way_back(self):
        """Items queued in their tasks' blocks (4 KiB and more) come back
        byte-exact after a release, a lease's expiry, a holder's close, a
        dead letter, and leave with a purge or at exit."""
        with jqtest.Daemon() as d:
            c = d.tcp()
            a, b = self.big(1, 4096), self.big(2, 200000)
            for it in (a, b, "small"):
                self.assertOk(c.request({"op": "put", "queue": "q",
                                         "item": it}))
            g = c.request({"op": "get", "queue": "q"})
            self.assertEqual((g["item"], g["deliveries"]), (a, 1))
            self.assertOk(c.request({"op": "release", "task": g["task"]}))
            g = c.request({"op": "get", "queue": "q", "lease": 0.05})
            self.assertEqual((g["item"], g["deliveries"]), (a, 2))
            h = d.tcp()
            g2 = h.request({"op": "get", "queue": "q"})
            self.assertEqual(g2["item"], b)
            h.close()   # b goes back to the head
            got = [c.request({"op": "get", "queue": "q", "timeout": 30})
                   for _ in range(3)]
            self.assertEqual(sorted((r["item"], r["deliveries"])
                                    for r in got),
                             sorted([(a, 3), (b, 2), ("small", 1)]))
            for r in got:
                self.assertOk(c.request({"op": "task_done",
                                         "task": r["task"]}))
            # max_deliveries 1: a release sends it to the dead letters
            self.assertOk(c.request({"op": "declare", "queue": "once",
                                     "max_deliveries": 1}))
            self.assertOk(c.request({"op": "put", "queue": "once",
                                     "item": b}))
            g = c.request({"op": "get", "queue": "once"})
            self.assertOk(c.request({"op": "release", "task": g["task"]}))
            g = c.request({"op": "get", "queue": "once.dead",
                           "block": False})
            self.assertEqual((g["item"], g["deliveries"]), (b, 1))
            for i in range(5):
                self.assertOk(c.request({"op": "put", "queue": "p",
                                         "item": self.big(i, 10000)}))
            self.assertOk(c.request({"op": "purge", "queue": "p"}))
            self.assertQsize(c.request({"op": "qsize", "queue": "p"}),
                             qsize=0)
            # left queued: freed with the queue at exit (sanitizer build)
            self.assertOk(c.request({"op": "put", "queue": "p",
                                     "item": self.big(9, 10000)}))


if __name__ == "__main__":
    jqtest.main()
