"""The daemon as a program: flags, the config file, signals, logging,
max_connections and authentication (PROTOCOL.md "Authentication",
"Limits").
"""
import json
import re
import signal
import socket
import subprocess
import time

import jqtest


def run_joinqd(*args, timeout=None):
    """Runs joinqd to completion (it must exit by itself)."""
    argv = jqtest.WRAPPER + [jqtest.JOINQD] + list(args)
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL,
                              timeout=timeout or jqtest.TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("joinqd %s did not exit: it started" %
                             " ".join(args)) from e


def log_lines(d):
    return [l for l in d.log().splitlines() if l.strip()]


class CommandLine(jqtest.TestCase):
    def test_help(self):
        for flag in ("--help", "-h"):
            with self.subTest(flag=flag):
                p = run_joinqd(flag)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("usage", p.stdout.lower())
                for name in ("--port", "--bind", "--config", "--queue",
                             "--max-connections", "--auth-token-file",
                             "--log-level", "--udp-max-reply"):
                    self.assertIn(name, p.stdout)

    def test_version(self):
        for flag in ("--version", "-V"):
            with self.subTest(flag=flag):
                p = run_joinqd(flag)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertRegex(p.stdout, r"\d+\.\d+\.\d+")
        with jqtest.Daemon() as d:
            self.assertIn(d.request({"op": "ping"})["version"], p.stdout)

    def test_bad_flags_exit_2_naming_the_flag(self):
        cases = [
            (["--max-queues", "0"], "--max-queues"),
            (["--max-queues=abc"], "--max-queues"),
            (["-p", "70000"], "-p"),
            (["--port", "x"], "--port"),
            (["--port", "-1"], "--port"),
            (["--default-maxsize", "-1"], "--default-maxsize"),
            (["--default-maxsize", "1.5"], "--default-maxsize"),
            (["--max-frame", "10"], "--max-frame"),
            (["--max-frame", "2T"], "--max-frame"),
            (["--max-depth", "0"], "--max-depth"),
            (["--udp-max-reply", "100"], "--udp-max-reply"),
            (["--udp-max-reply", "70000"], "--udp-max-reply"),
            (["--udp-lease", "0"], "--udp-lease"),
            (["--udp-lease", "soon"], "--udp-lease"),
            (["--max-connections", "0"], "--max-connections"),
            (["--log-level", "loud"], "--log-level"),
            (["--queue", "nocolon"], "--queue"),
            (["--queue", "bad name:1"], "--queue"),
            (["--queue", "q:many"], "--queue"),
            (["--bogus"], "--bogus"),
            (["--port"], "--port"),
            (["-c"], "'c'"),          # getopt: "requires an argument -- 'c'"
            (["extra-argument"], "extra-argument"),
        ]
        for args, name in cases:
            with self.subTest(args=args):
                p = run_joinqd("-p", "0", "-b", "127.0.0.1", *args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(name, p.stderr)
                self.assertEqual(p.stdout, "")

    def test_missing_files_exit_2(self):
        d = jqtest.Daemon()
        try:
            for args, name in ((["-c", d.path("none.conf")], "none.conf"),
                               (["--auth-token-file", d.path("none.tok")],
                                "none.tok")):
                with self.subTest(args=args):
                    p = run_joinqd("-p", "0", "-b", "127.0.0.1", *args)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn(name, p.stderr)
            empty = d.file("empty.tok", "\n")
            p = run_joinqd("-p", "0", "-b", "127.0.0.1",
                           "--auth-token-file", empty)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("empty.tok", p.stderr)
        finally:
            d.tmp.cleanup()

    def test_config_errors_name_file_and_line(self):
        cases = [
            ("port = 0\nbogus = 1\n", 2),
            ("max_queues = none\n", 1),
            ("# comment\n\nudp_max_reply = 1\n", 3),
            ("[server]\nport = 0\n", 2),
            ("[queue bad name]\nmaxsize = 1\n", 2),
            ("[queue jobs]\nmaxsize = -3\n", 2),
            ("[queue jobs]\ncolour = red\n", 2),
            ("[queue jobs]\ndead_letter = jobs\n", 2),
            ("[queue jobs]\nmax_deliveries = x\n", 2),
            ("log_level = chatty\n", 1),
            ("port = 0\nthis is not a setting\n", 2),
        ]
        d = jqtest.Daemon()
        try:
            for i, (text, line) in enumerate(cases):
                with self.subTest(config=text):
                    conf = d.file("bad%d.conf" % i, text)
                    p = run_joinqd("-p", "0", "-b", "127.0.0.1", "-c", conf)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("%s:%d" % (conf, line), p.stderr)
        finally:
            d.tmp.cleanup()

    def test_flags_win_over_the_config_file(self):
        with jqtest.Daemon("--default-maxsize", "1",
                           config="default_maxsize = 5\n") as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "item": 1}))
            self.assertError(c.request({"op": "put", "item": 2,
                                        "block": False}), "full")
            self.assertQsize(d.qsize(), maxsize=1)
        with jqtest.Daemon(config="default_maxsize = 5\n") as d:
            c = d.tcp()
            for i in range(5):
                self.assertOk(c.request({"op": "put", "item": i,
                                         "block": False}))
            self.assertError(c.request({"op": "put", "item": 5,
                                        "block": False}), "full")
        with jqtest.Daemon("--queue", "jobs:1",
                           config="[queue jobs]\nmaxsize = 5\n") as d:
            self.assertQsize(d.qsize("jobs"), maxsize=1)

    def test_queue_maxsize_from_config_and_flag(self):
        conf = "default_maxsize = 3\n[queue jobs]\nmaxsize = 2\n" \
               "[queue free]\nmaxsize = 0\n"
        with jqtest.Daemon("--queue", "small:1", "--queue", "a:b:4",
                           config=conf) as d:
            c = d.tcp()
            for name, size in (("jobs", 2), ("small", 1), ("a:b", 4),
                               ("other", 3), ("free", 0)):
                with self.subTest(queue=name):
                    self.assertQsize(c.request({"op": "qsize",
                                                "queue": name}),
                                     maxsize=size)
                    for i in range(size or 10):
                        self.assertOk(c.request({"op": "put", "queue": name,
                                                 "item": i, "block": False}))
                    r = c.request({"op": "put", "queue": name, "item": "x",
                                   "block": False})
                    if size:
                        self.assertError(r, "full")
                    else:
                        self.assertOk(r)

    def test_config_file_settings(self):
        conf = ("# every kind of line\n; a comment too\nport = 0\n"
                "max_queues = 2\nmax_frame = 1k\nudp_max_reply = 512\n"
                "log_level = debug\n")
        with jqtest.Daemon(config=conf) as d:
            c = d.tcp()
            c.request({"op": "put", "queue": "a", "item": 1})
            c.request({"op": "put", "queue": "b", "item": 1})
            self.assertError(c.request({"op": "put", "queue": "c",
                                        "item": 1}), "too_many_queues")
            self.assertOk(c.request({"op": "put", "queue": "a",
                                     "item": "x" * 900}))
            c.send_raw(b'{"op":"put","item":"' + b"x" * 1030 + b'"}\n')
            self.assertError(c.recv(), "frame_too_large")


class Signals(jqtest.TestCase):
    def check_stop(self, sig):
        d = jqtest.Daemon("--queue", "one:1")
        with d:
            g = d.tcp()
            g.send({"op": "get", "queue": "e", "id": "get"})
            p = d.tcp()
            p.request({"op": "put", "queue": "one", "item": 1})
            p.send({"op": "put", "queue": "one", "item": 2, "id": "put"})
            j = d.tcp()
            j.send({"op": "join", "queue": "one", "id": "join"})
            u = d.udp()
            u.send({"op": "get", "queue": "e", "id": "udp"})
            idle = d.tcp()
            self.assertOk(idle.request({"op": "ping"}))
            for c in (g, p, j, u):
                self.assertTrue(c.nothing_for(0.05 * jqtest.SLOW))
            self.assertEqual(d.stop(sig), 0)
            for c, name in ((g, "get"), (p, "put"), (j, "join"), (u, "udp")):
                r = c.recv()
                self.assertError(r, "shutting_down")
                self.assertEqual(r["id"], name)
            for c in (g, p, j, idle):
                self.assertTrue(c.closed_by_peer())
            with self.assertRaises(OSError):
                d.tcp()
            self.assertIn("stopped", d.log())

    def test_sigterm(self):
        self.check_stop(signal.SIGTERM)

    def test_sigint(self):
        self.check_stop(signal.SIGINT)

    def test_idle_daemon_stops_at_once(self):
        d = jqtest.Daemon()
        with d:
            d.request({"op": "put", "item": 1})
            start = time.monotonic()
            self.assertEqual(d.stop(), 0)
            self.assertElapsed(start, 0, 2)

    def test_new_connections_refused_while_stopping(self):
        # A client that does not read keeps the daemon in its stop grace:
        # meanwhile new TCP clients are refused and UDP ones told
        # shutting_down.
        with jqtest.Daemon() as d:
            p = d.tcp()
            big = "x" * 1000000
            for i in range(8):
                p.send({"op": "put", "item": big})
            for i in range(8):
                self.assertOk(p.recv())
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect(("127.0.0.1", d.port))
            slow.sendall(b'{"op":"get"}\n' * 8)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["inflight"] >= 2))
            d.proc.send_signal(signal.SIGTERM)
            self.assertTrue(jqtest.wait_until(
                lambda: "shutting down" in d.log()))
            self.assertIsNone(d.proc.poll(), "the daemon waits for slow")
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", d.port),
                                         timeout=jqtest.TIMEOUT)
            self.assertError(d.udp().request({"op": "put", "item": 1}),
                             "shutting_down")
            slow.settimeout(jqtest.TIMEOUT)
            while slow.recv(1 << 20):
                pass
            slow.close()
            self.assertEqual(d.stop(), 0)


    def test_requests_behind_a_blocked_one_answered_at_shutdown(self):
        # "Every request gets exactly one reply line (unless it sets
        # noreply), in the order the requests arrived on that connection";
        # doc/PROTOCOL.md, Notes: at SIGTERM "a TCP connection then gets
        # the replies it is owed and is closed".  The frames held back
        # behind a waiting get arrived complete: each is owed its reply
        # (shutting_down, since the daemon takes no new work, or ok).
        d = jqtest.Daemon()
        with d:
            c = d.tcp()
            c.send(b'{"op":"get","queue":"e","id":1}\n'
                   b'{"op":"ping","id":2}\n'
                   b'{"op":"put","queue":"behind","item":1,"id":3}\n'
                   b'{"op":"qsize","id":4}\n')
            self.assertTrue(c.nothing_for(0.2 * jqtest.SLOW))
            self.assertEqual(d.stop(), 0)
            replies = c.replies_until_close()
            self.assertEqual([r.get("id") for r in replies], [1, 2, 3, 4],
                             replies)
            self.assertError(replies[0], "shutting_down")
            for r in replies[1:]:
                if not r.get("ok"):
                    self.assertError(r, "shutting_down")

    def test_client_that_does_not_read_closed_within_grace(self):
        # doc/PROTOCOL.md, Notes: at SIGTERM a TCP connection gets the
        # replies it is owed and is closed "(within 5 seconds)", even if
        # its client never reads them.
        d = jqtest.Daemon()
        with d:
            p = d.tcp()
            big = "x" * 1000000
            for i in range(8):
                p.send({"op": "put", "item": big})
            for i in range(8):
                self.assertOk(p.recv())
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect(("127.0.0.1", d.port))
            slow.sendall(b'{"op":"get"}\n' * 8)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["inflight"] >= 2))
            start = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(5 + 2 * jqtest.SLOW)
            except subprocess.TimeoutExpired:
                self.fail("joinqd still runs %.1f s after SIGTERM"
                          % (time.monotonic() - start))
            finally:
                slow.close()
            self.assertEqual(d.stop(), 0)


class Logging(jqtest.TestCase):
    def test_start_line_names_the_addresses(self):
        with jqtest.Daemon() as d:
            self.assertRegex(d.log(), r"listening on 127\.0\.0\.1:%d\b"
                             % d.port)
        try:
            socket.socket(socket.AF_INET6).bind(("::1", 0))
        except OSError:
            return   # no IPv6 loopback on this host
        with jqtest.Daemon("-b", "127.0.0.1", "-b", "::1") as d:
            line = [l for l in d.log().splitlines() if "listening" in l][0]
            self.assertIn("127.0.0.1:%d" % d.port, line)
            self.assertIn("[::1]:%d" % d.port, line)
            self.assertNotRegex(line, r":0\b")

    def test_default_bind_is_both_loopbacks(self):
        # Without -b the daemon serves 127.0.0.1 and ::1 (PROTOCOL.md,
        # "Transports"); where ::1 is missing it skips it with a warning.
        d = jqtest.Daemon()
        errpath = d.path("stderr")
        with open(errpath, "w") as err:
            argv = jqtest.WRAPPER + [jqtest.JOINQD, "-p", "0"]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)

        def log():
            with open(errpath) as f:
                return f.read()
        try:
            self.assertTrue(jqtest.wait_until(lambda: "listening" in log()))
            line = [l for l in log().splitlines() if "listening" in l][0]
            port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
            self.assertNotEqual(port, 0)
            try:
                socket.socket(socket.AF_INET6).bind(("::1", 0))
                has6 = True
            except OSError:
                has6 = False
            if has6:
                self.assertIn("[::1]:%d" % port, line)
                c = jqtest.Conn("::1", port)
                self.assertOk(c.request({"op": "ping"}))
                c.close()
            self.assertOk(jqtest.UdpConn("127.0.0.1", port)
                          .request({"op": "ping"}))
            self.assertNotIn("0.0.0.0", line)
        finally:
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(jqtest.TIMEOUT), 0)
            d.tmp.cleanup()

    def test_default_port_is_7477(self):
        # "Default port 7477, the same number for TCP and UDP."  Started
        # without -p.  Should something else hold 7477 here, the daemon
        # must fail naming that port rather than pick another.
        def free(kind):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", 7477))
                return True
            except OSError:
                return False
            finally:
                s.close()
        is_free = free(socket.SOCK_STREAM) and free(socket.SOCK_DGRAM)
        d = jqtest.Daemon()
        errpath = d.path("stderr")
        with open(errpath, "w") as err:
            argv = jqtest.WRAPPER + [jqtest.JOINQD, "-b", "127.0.0.1"]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)

        def log():
            with open(errpath) as f:
                return f.read()
        try:
            if not is_free:
                self.assertNotEqual(proc.wait(jqtest.TIMEOUT), 0)
                self.assertIn("7477", log())
                return
            self.assertTrue(jqtest.wait_until(lambda: "listening" in log()),
                            log())
            self.assertIn("listening on 127.0.0.1:7477", log())
            c = jqtest.Conn("127.0.0.1", 7477)
            self.assertOk(c.request({"op": "put", "item": "tcp"}))
            c.close()
            u = jqtest.UdpConn("127.0.0.1", 7477)
            self.assertEqual(u.request({"op": "get"})["item"], "tcp")
            u.close()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(jqtest.TIMEOUT), 0)
            d.tmp.cleanup()

    def test_info_level_logs_no_requests(self):
        with jqtest.Daemon("--log-level", "info") as d:
            c, u = d.tcp(), d.udp()
            for i in range(25):
                c.request({"op": "put", "item": i})
                c.request({"op": "bogus"})
                u.request({"op": "get"})
                u.request(b"not json\n")
            for i in range(20):
                d.request({"op": "ping"})
            c.close()
            lines = log_lines(d)
            self.assertLessEqual(len(lines), 2, lines)
            self.assertIn("listening", lines[0])
            d.stop()
            self.assertLessEqual(len(log_lines(d)), 4, log_lines(d))

    def test_debug_level_logs_protocol_errors(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            c.request(b"[1]\n")
            c.request({"op": "bogus"})
            d.udp().request({"op": "put", "queue": "bad q", "item": 1})
            log = d.log()
            self.assertIn("bad_json", log)
            self.assertIn("unknown_op", log)
            self.assertIn("bad_queue", log)


class MaxConnections(jqtest.TestCase):
    def test_one_too_many(self):
        with jqtest.Daemon("--max-connections", "2") as d:
            a, b = d.tcp(), d.tcp()
            self.assertOk(a.request({"op": "put", "item": 1}))
            self.assertOk(b.request({"op": "ping"}))
            c = d.tcp()
            line = c.recv_line()
            self.assertError(json.loads(line), "too_many_connections")
            self.assertEqual(c.replies_until_close(), [])
            # a client that writes first is turned away the same way
            e = d.tcp()
            e.send({"op": "ping"})
            try:
                r = e.recv()
                self.assertError(r, "too_many_connections")
            except ConnectionResetError:
                self.fail("the reply was lost to a reset")
            self.assertOk(a.request({"op": "get"}))
            self.assertOk(b.request({"op": "qsize"}))
            # UDP is not limited
            self.assertOk(d.udp().request({"op": "ping"}))
            a.close()
            self.assertTrue(jqtest.wait_until(
                lambda: self.fresh_ok(d)))

    def fresh_ok(self, d):
        c = d.tcp()
        try:
            return c.request({"op": "ping"}).get("ok") is True
        except (ConnectionError, OSError):
            return False
        finally:
            c.close()


TOKEN = "s3cr3t-T0ken-value"


class Auth(jqtest.TestCase):
    def daemon(self, *args):
        d = jqtest.Daemon(*args)
        d.args += ["--auth-token-file", d.file("token", TOKEN + "\n")]
        return d

    NEED_AUTH = [{"op": "put", "item": 1}, {"op": "get", "block": False},
                 {"op": "task_done", "task": 1}, {"op": "release", "task": 1},
                 {"op": "join"}, {"op": "qsize"}, {"op": "empty"},
                 {"op": "full"}, {"op": "stats"}, {"op": "auth"},
                 {"op": "bogus"}, {}]

    def test_tcp_without_token(self):
        with self.daemon() as d:
            c = d.tcp()
            for req in self.NEED_AUTH:
                with self.subTest(req=req):
                    r = c.request(dict(req, id=1))
                    self.assertError(r, "unauthorized")
                    self.assertEqual(r["id"], 1)
            self.assertOk(c.request({"op": "ping"}))
            self.assertEqual(c.request({"op": "stats", "token": TOKEN})
                             ["queues"], {}, "nothing changed")

    def test_tcp_auth_op(self):
        with self.daemon() as d:
            c, other = d.tcp(), d.tcp()
            self.assertError(c.request({"op": "auth", "token": "wrong"}),
                             "unauthorized")
            self.assertError(c.request({"op": "qsize"}), "unauthorized")
            self.assertEqual(c.request({"op": "auth", "token": TOKEN,
                                        "id": 1}), {"ok": True, "id": 1})
            self.assertOk(c.request({"op": "put", "item": 1}))
            self.assertQsize(c.request({"op": "qsize"}), qsize=1)
            # only this connection
            self.assertError(other.request({"op": "qsize"}), "unauthorized")
            # a failed auth or a wrong token leaves it authorised
            self.assertError(c.request({"op": "auth", "token": "wrong"}),
                             "unauthorized")
            self.assertError(c.request({"op": "auth"}), "unauthorized")
            self.assertError(c.request({"op": "auth", "token": 5}),
                             "unauthorized")
            self.assertError(c.request({"op": "qsize", "token": "wrong"}),
                             "unauthorized")
            self.assertError(c.request({"op": "put", "item": 2,
                                        "token": TOKEN + "x"}),
                             "unauthorized")
            self.assertQsize(c.request({"op": "qsize"}), qsize=1)
            # a new connection starts unauthorised
            c.close()
            self.assertError(d.tcp().request({"op": "qsize"}),
                             "unauthorized")

    def test_tcp_token_field_per_request(self):
        with self.daemon() as d:
            c = d.tcp()
            self.assertOk(c.request({"op": "put", "item": 1,
                                     "token": TOKEN}))
            self.assertError(c.request({"op": "get"}), "unauthorized")
            for wrong in ("", TOKEN[:-1], TOKEN + " ", " " + TOKEN,
                          TOKEN.upper(), TOKEN + "\u0000", 0, None, [TOKEN]):
                with self.subTest(token=wrong):
                    r = c.request({"op": "qsize", "token": wrong})
                    self.assertError(r, "unauthorized")
            r = c.request({"op": "get", "token": TOKEN})
            self.assertEqual(r["item"], 1)
            self.assertEqual(c.request({"op": "task_done", "task": r["task"],
                                        "token": TOKEN})["unfinished"], 0)

    def test_udp_token_on_every_request(self):
        with self.daemon() as d:
            u = d.udp()
            self.assertOk(u.request({"op": "ping"}))
            self.assertError(u.request({"op": "put", "item": 1}),
                             "unauthorized")
            self.assertError(u.request({"op": "auth", "token": "nope"}),
                             "unauthorized")
            self.assertEqual(u.request({"op": "auth", "token": TOKEN}),
                             {"ok": True})
            # auth authorises nothing further over UDP
            self.assertError(u.request({"op": "put", "item": 1}),
                             "unauthorized")
            self.assertOk(u.request({"op": "put", "item": 1,
                                     "token": TOKEN}))
            r = u.request({"op": "get", "token": TOKEN})
            self.assertEqual(r["item"], 1)
            self.assertError(u.request({"op": "task_done",
                                        "task": r["task"]}), "unauthorized")
            self.assertOk(u.request({"op": "task_done", "task": r["task"],
                                     "token": TOKEN}))

    def test_token_never_logged_nor_in_stats(self):
        with self.daemon() as d:
            c = d.tcp()
            c.request({"op": "auth", "token": TOKEN})
            c.request({"op": "put", "item": "x", "token": TOKEN})
            c.request({"op": "bogus", "token": TOKEN})
            c.request({"op": "put", "queue": "bad q", "token": TOKEN})
            c.request({"op": "auth", "token": TOKEN + "-wrong"})
            d.udp().request({"op": "put", "token": TOKEN})
            d.udp().request({"op": "qsize", "token": TOKEN[:5]})
            c.send({"op": "stats"})
            raw = c.recv_line()
            self.assertNotIn(TOKEN.encode(), raw)
            self.assertNotIn(TOKEN[:8].encode(), raw)
            self.assertEqual(d.stop(), 0)
            log = d.log()
            self.assertIn("unauthorized", log)   # debug logs the errors
            self.assertNotIn(TOKEN, log)
            self.assertNotIn(TOKEN[:8], log)

    def test_no_token_configured(self):
        with jqtest.Daemon() as d:
            c = d.tcp()
            self.assertEqual(c.request({"op": "auth"}), {"ok": True})
            self.assertEqual(c.request({"op": "auth", "token": "x"}),
                             {"ok": True})
            self.assertEqual(d.udp().request({"op": "auth", "token": 1}),
                             {"ok": True})
            self.assertOk(c.request({"op": "put", "item": 1}))

    def test_null_token_is_absent(self):
        # "An optional field set to null is absent": token null neither
        # authorises nor spoils an authorised connection.
        with self.daemon() as d:
            c = d.tcp()
            self.assertError(c.request({"op": "qsize", "token": None}),
                             "unauthorized")
            self.assertOk(c.request({"op": "auth", "token": TOKEN}))
            self.assertQsize(c.request({"op": "qsize", "token": None}),
                             qsize=0)
            self.assertOk(c.request({"op": "put", "item": 1,
                                     "token": None}))
            u = d.udp()
            self.assertError(u.request({"op": "qsize", "token": None}),
                             "unauthorized")

    def test_ping_answered_whatever_token(self):
        # doc/PROTOCOL.md, Notes: "ping is answered whatever token it
        # carries."
        with self.daemon() as d:
            c, u = d.tcp(), d.udp()
            for token in ("wrong", "", 5, [TOKEN], TOKEN):
                with self.subTest(token=token):
                    self.assertOk(c.request({"op": "ping", "token": token}))
                    self.assertOk(u.request({"op": "ping", "token": token}))
            self.assertError(c.request({"op": "qsize"}), "unauthorized")

    def test_token_is_the_first_line_trimmed(self):
        # doc/PROTOCOL.md, Notes: "The token is the first line of
        # auth_token_file, blanks around it removed".
        d = jqtest.Daemon()
        d.args += ["--auth-token-file",
                   d.file("token", " \t" + TOKEN + " \t\r\nsecond line\n")]
        with d:
            c = d.tcp()
            self.assertOk(c.request({"op": "qsize", "token": TOKEN}))
            for wrong in (" " + TOKEN, TOKEN + " \t", "second line",
                          TOKEN + "\nsecond line"):
                with self.subTest(token=wrong):
                    self.assertError(c.request({"op": "qsize",
                                                "token": wrong}),
                                     "unauthorized")

    def test_start_line_says_auth_required(self):
        with self.daemon() as d:
            self.assertIn("listening", d.log())
            self.assertNotIn(TOKEN, d.log())


if __name__ == "__main__":
    jqtest.main()
