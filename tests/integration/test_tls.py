"""TLS on TCP (issue 14, the daemon's side): tls_port and the tls_*
settings, with certificates made by tlscerts.py.

The protocol's essentials inside TLS, a real third-party client (openssl
s_client), mutual TLS, rotation by SIGHUP, the handshake under
frame_timeout and max_connections, a flood of handshakes beside a plain
client, the wrong client on each port, the client's verification of bad
server certificates, max_output, /metrics over TLS, and the start-up
errors.  Every wait is bounded (jqtest.TIMEOUT)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import jqtest
import tlscerts

TIMEOUT = jqtest.TIMEOUT
CERTS = tlscerts.shared()
PLAIN_ON_TLS = ("this port speaks TLS; connect with TLS or use the plain "
                "port")


def context(**kw) -> ssl.SSLContext:
    """A client context trusting the test CA (tls_context's arguments)."""
    kw.setdefault("ca", CERTS.ca)
    return jqtest.tls_context(**kw)


def hello_bytes() -> bytes:
    """A ClientHello, made through a memory BIO we hold."""
    outgoing = ssl.MemoryBIO()
    tls = context().wrap_bio(ssl.MemoryBIO(), outgoing,
                             server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


class TlsCase(jqtest.TestCase):

    def daemon(self, *more, config=None, certs=None) -> jqtest.Daemon:
        d = jqtest.Daemon(*jqtest.tls_args(certs or CERTS, *more),
                          config=config)
        d.tls_context = context()
        return d

    def refused(self, d, ctx) -> str:
        """Connects with ctx and asks for a ping: what failed (the
        exception's text, or "closed"), or fails the test if it worked."""
        try:
            c = d.tls(ctx)
            try:
                c.send({"op": "ping"})
                line = c.recv_line()
                if line is None:
                    return "closed"
                self.fail("served: %r" % line)
            finally:
                c.close()
        except (ssl.SSLError, ConnectionError) as e:
            return str(e)


class Essentials(TlsCase):
    """PROTOCOL.md's essentials, inside TLS."""

    def test_every_op(self):
        with self.daemon() as d:
            c = d.tls()
            self.assertIsNotNone(d.tls_port)
            self.assertNotEqual(d.tls_port, d.port)
            self.assertOk(c.request({"op": "ping"}))
            self.assertOk(c.request({"op": "declare", "queue": "q",
                                     "maxsize": 5}))
            self.assertOk(c.request({"op": "put", "queue": "q", "item": [1]}))
            self.assertQsize(c.request({"op": "qsize", "queue": "q"}),
                             qsize=1, maxsize=5)
            self.assertEqual(c.request({"op": "empty", "queue": "q"})
                             ["empty"], False)
            self.assertEqual(c.request({"op": "full", "queue": "q"})
                             ["full"], False)
            g = c.request({"op": "get", "queue": "q", "id": "x"})
            self.assertEqual((g["item"], g["id"]), ([1], "x"))
            self.assertOk(c.request({"op": "release", "task": g["task"]}))
            g = c.request({"op": "get", "queue": "q"})
            self.assertOk(c.request({"op": "task_done", "task": g["task"]}))
            self.assertOk(c.request({"op": "join", "queue": "q"}))
            self.assertOk(c.request({"op": "put", "queue": "q", "item": 2}))
            self.assertOk(c.request({"op": "purge", "queue": "q"}))
            self.assertOk(c.request({"op": "delete", "queue": "q"}))
            st = c.request({"op": "stats"})
            self.assertOk(st)
            self.assertEqual(st["connections"], 1)
            self.assertError(c.request({"op": "nope"}), "unknown_op")
            self.assertError(c.request(b"{oops\n"), "bad_json")
            self.assertRegex(d.log(), r"TLS handshake done: TLSv1\.[23] ")
            c.close()

    def test_pipelining_in_one_write(self):
        with self.daemon() as d:
            c = d.tls()
            n = 300
            c.send(b"".join(jqtest.encode({"op": "put", "item": i, "id": i})
                            for i in range(n)) +
                   b"".join(jqtest.encode({"op": "get", "id": n + i})
                            for i in range(n)))
            for i in range(n):
                r = c.recv()
                self.assertEqual((r["ok"], r["id"]), (True, i))
            for i in range(n):
                r = c.recv()
                self.assertEqual((r["item"], r["id"]), (i, n + i))
            c.close()

    def test_big_items_pipelined(self):
        # big frames and replies through the seal (replies are not sent
        # straight from where they are built under TLS), byte-exact
        with self.daemon() as d:
            c = d.tls()
            items = ["%d:" % i + chr(97 + i) * size for i, size in
                     enumerate((900000, 5000, 70000, 300000))]
            c.send(b"".join(jqtest.encode({"op": "put", "item": it,
                                           "id": i})
                            for i, it in enumerate(items)) +
                   b"".join(jqtest.encode({"op": "get", "id": 10 + i})
                            for i in range(len(items))))
            self.assertEqual([c.recv()["id"] for _ in items],
                             list(range(len(items))))
            got = [c.recv() for _ in items]
            self.assertEqual([(r["id"], r["item"]) for r in got],
                             [(10 + i, it) for i, it in enumerate(items)])
            c.close()

    def test_blocked_get_woken_by_a_put_on_another_connection(self):
        with self.daemon() as d:
            a, b = d.tls(), d.tls()
            a.send({"op": "get", "queue": "w", "id": 1})
            self.assertTrue(a.nothing_for(0.2))
            self.assertOk(b.request({"op": "put", "queue": "w",
                                     "item": "hi"}))
            g = a.recv()
            self.assertEqual((g["item"], g["id"]), ("hi", 1))
            a.close()
            b.close()

    def test_half_close_after_frames_is_answered(self):
        """close_notify then the TCP half-close, and the TCP half-close
        alone: the frames sent before are answered, then the daemon closes
        (with close_notify)."""
        with self.daemon() as d:
            for notify in (True, False):
                with self.subTest(close_notify=notify):
                    c = d.tls()
                    q = b'"queue":"h%d"' % notify
                    c.send(b'{"op":"put","item":1,"id":1,' + q + b'}\n'
                           b'{"op":"get","id":2,' + q + b'}\n'
                           b'{"op":"get","id":3,' + q + b'}\n')
                    if notify:
                        c.shutdown_write()
                    else:
                        c.sock.shutdown(socket.SHUT_WR)
                    replies = c.replies_until_close()
                    self.assertEqual([r["id"] for r in replies], [1, 2, 3])
                    self.assertEqual(replies[1]["item"], 1)
                    self.assertError(replies[2], "empty")
                    self.assertTrue(c.close_notify)
                    c.close()

    def test_openssl_s_client(self):
        """A real third-party client: openssl s_client verifying the
        server by the test CA, one frame, its reply."""
        with self.daemon() as d:
            p = subprocess.Popen(
                ["openssl", "s_client", "-connect",
                 "127.0.0.1:%d" % d.tls_port, "-CAfile", CERTS.ca,
                 "-servername", "localhost", "-verify_return_error",
                 "-quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
            try:
                p.stdin.write(b'{"op":"put","item":"s","id":7}\n')
                p.stdin.flush()
                r, _, _ = select.select([p.stdout], [], [], TIMEOUT)
                self.assertTrue(r, "no reply from s_client")
                reply = json.loads(p.stdout.readline())
                self.assertEqual((reply["ok"], reply["id"]), (True, 7))
            finally:
                p.kill()
                p.communicate(timeout=TIMEOUT)
            self.assertEqual(d.qsize()["qsize"], 1)

    def test_token_still_required(self):
        d = self.daemon()
        d.args += ["--auth-token-file", d.file("token", "s3cret\n")]
        with d:
            c = d.tls()
            self.assertError(c.request({"op": "put", "item": 1}),
                             "unauthorized")
            self.assertOk(c.request({"op": "auth", "token": "s3cret"}))
            self.assertOk(c.request({"op": "put", "item": 1}))
            c.close()

    def test_daemon_closes_with_close_notify(self):
        """A connection the daemon closes (frame_too_large here) ends with
        close_notify after its reply."""
        with self.daemon("--max-frame", "100") as d:
            c = d.tls()
            c.send(b'{"op":"put","item":"' + b"x" * 200 + b'"}\n')
            replies = c.replies_until_close()
            self.assertError(replies[0], "frame_too_large")
            self.assertTrue(c.close_notify)
            c.close()


class ClientCertificates(TlsCase):
    """tls_client_auth with tls_ca_file (mutual TLS)."""

    def test_require(self):
        with self.daemon("--tls-ca-file", CERTS.ca, "--tls-client-auth",
                         "require") as d:
            self.refused(d, context())
            self.refused(d, context(cert=CERTS.stranger_cert,
                                    key=CERTS.stranger_key))
            good = d.tls(context(cert=CERTS.client_cert,
                                 key=CERTS.client_key))
            self.assertOk(good.request({"op": "ping"}))
            good.close()
            log = d.log()
            self.assertIn("TLS handshake failed: peer did not return a "
                          "certificate", log)
            self.assertIn("TLS handshake failed: certificate verify failed",
                          log)

    def test_request(self):
        with self.daemon("--tls-ca-file", CERTS.ca, "--tls-client-auth",
                         "request") as d:
            for ctx in (context(), context(cert=CERTS.client_cert,
                                           key=CERTS.client_key)):
                c = d.tls(ctx)
                self.assertOk(c.request({"op": "ping"}))
                c.close()
            # a certificate it cannot verify is still refused
            self.refused(d, context(cert=CERTS.stranger_cert,
                                    key=CERTS.stranger_key))


class Rotation(TlsCase):
    """SIGHUP reloads the certificate and key."""

    def test_sighup_rotates_and_keeps_the_old_on_a_bad_pair(self):
        d = jqtest.Daemon()
        cert, key = d.path("cert.pem"), d.path("key.pem")
        shutil.copy(CERTS.server_cert, cert)
        shutil.copy(CERTS.server_key, key)
        d.config = ("tls_port = 0\ntls_cert_file = %s\ntls_key_file = %s\n"
                    % (cert, key))
        d.tls_context = context()
        with d:
            before = d.tls()
            self.assertEqual(tlscerts.serial_of_der(before.peer_cert()),
                             tlscerts.serial_of(CERTS.server_cert))
            self.assertOk(before.request({"op": "put", "item": 1}))

            new_cert, new_key = CERTS.server("rotated-%d" % os.getpid())
            shutil.copy(new_cert, cert)
            shutil.copy(new_key, key)
            d.proc.send_signal(signal.SIGHUP)
            self.assertTrue(jqtest.wait_until(
                lambda: "reload: TLS certificate" in d.log()), d.log())
            # connected before: still served
            g = before.request({"op": "get"})
            self.assertEqual(g["item"], 1)
            self.assertOk(before.request({"op": "task_done",
                                          "task": g["task"]}))
            after = d.tls()
            self.assertEqual(tlscerts.serial_of_der(after.peer_cert()),
                             tlscerts.serial_of(new_cert))
            self.assertOk(after.request({"op": "ping"}))

            # a pair that does not match: the rotated one stays
            other_cert, _ = CERTS.server("mismatch-%d" % os.getpid())
            shutil.copy(other_cert, cert)
            d.proc.send_signal(signal.SIGHUP)
            self.assertTrue(jqtest.wait_until(
                lambda: "the certificate in use stays" in d.log()), d.log())
            self.assertRegex(d.log(), r"warning: reload: tls_key_file \S+: "
                             r"key values mismatch; the certificate in use "
                             r"stays")
            third = d.tls()
            self.assertEqual(tlscerts.serial_of_der(third.peer_cert()),
                             tlscerts.serial_of(new_cert))
            for c in (before, after, third):
                self.assertOk(c.request({"op": "ping"}))
                c.close()


class Limits(TlsCase):
    """frame_timeout, max_connections and max_output hold for TLS."""

    def test_stalled_handshake_closed_after_frame_timeout(self):
        with self.daemon("--frame-timeout", "0.5") as d:
            hello = hello_bytes()
            for sent in (b"", hello[:len(hello) // 2]):
                with self.subTest(sent=len(sent)):
                    c = jqtest.Conn(d.host, d.tls_port)
                    start = time.monotonic()
                    c.send_raw(sent)
                    self.assertTrue(c.closed_by_peer(TIMEOUT))
                    self.assertElapsed(start, 0.4, 5)
                    c.close()
            self.assertIn("a TLS handshake unfinished for frame_timeout",
                          d.log())

    def test_handshake_flood_does_not_starve_a_plain_client(self):
        """200 TLS clients at once (half stall after their ClientHello, half
        complete) while a plain client's pings keep being answered."""
        with self.daemon("--frame-timeout", str(30 * jqtest.SLOW)) as d:
            plain = d.tcp()
            hello = hello_bytes()
            stalled = []
            done = []
            errors = []

            def complete(n):
                try:
                    for _ in range(n):
                        c = d.tls()
                        done.append(c.request({"op": "ping"})["ok"])
                        c.close()
                except (OSError, ssl.SSLError) as e:
                    errors.append(e)
            threads = [threading.Thread(target=complete, args=(25,))
                       for _ in range(4)]
            for t in threads:
                t.start()
            worst = 0.0
            for i in range(100):
                s = socket.create_connection((d.host, d.tls_port), TIMEOUT)
                s.sendall(hello)
                stalled.append(s)
                if i % 10 == 0:
                    start = time.monotonic()
                    self.assertOk(plain.request({"op": "ping"}))
                    worst = max(worst, time.monotonic() - start)
            for t in threads:
                t.join(TIMEOUT * 3)
            self.assertFalse(errors)
            self.assertEqual(done, [True] * 100)
            start = time.monotonic()
            self.assertOk(plain.request({"op": "ping"}))
            worst = max(worst, time.monotonic() - start)
            self.assertLess(worst, TIMEOUT)
            jqtest.diag("the slowest plain ping during the flood: %.3f s"
                        % worst)
            for s in stalled:
                s.close()
            plain.close()

    def test_max_connections_counts_both(self):
        with self.daemon("--max-connections", "2") as d:
            plain = d.tcp()
            self.assertOk(plain.request({"op": "ping"}))
            tls = d.tls()
            self.assertOk(tls.request({"op": "ping"}))
            # a third, plain: too_many_connections; TLS: closed, no handshake
            third = d.tcp()
            self.assertError(third.recv(), "too_many_connections")
            third.close()
            self.refused(d, context())
            self.assertIn("turned away (TLS, closed without a handshake)",
                          d.log())
            tls.close()
            self.assertTrue(jqtest.wait_until(
                lambda: plain.request({"op": "stats"})["connections"] == 1))
            again = d.tls()
            self.assertOk(again.request({"op": "ping"}))
            again.close()
            plain.close()

    def test_max_output_bounds_a_client_that_does_not_read(self):
        n, size = 200, 64 * 1024
        with self.daemon("--max-output", "256k") as d:
            feeder = d.tcp()
            item = "i" * size
            feeder.send(b"".join(jqtest.encode({"op": "put", "item": item})
                                 for _ in range(n)))
            for _ in range(n):
                self.assertOk(feeder.recv())
            reader = d.tls(rcvbuf=65536)
            reader.send(b"".join(jqtest.encode({"op": "get", "block": False,
                                                "id": i}) for i in range(n)))
            time.sleep(0.5)
            executed = n - feeder.request({"op": "qsize"})["qsize"]
            self.assertLess(executed, n, "every get ran without the client "
                            "reading")
            for i in range(n):
                r = reader.recv()
                self.assertEqual((r["id"], len(r["item"])), (i, size))
            self.assertEqual(feeder.request({"op": "qsize"})["qsize"], 0)
            jqtest.diag("gets run before the client read: %d of %d"
                        % (executed, n))
            reader.close()
            feeder.close()


class WrongPort(TlsCase):
    """The wrong client on each port: a clear end, never a hang."""

    def test_plain_client_on_the_tls_port(self):
        with self.daemon() as d:
            c = jqtest.Conn(d.host, d.tls_port)
            c.send({"op": "ping"})
            replies = c.replies_until_close()
            self.assertEqual(len(replies), 1)
            self.assertError(replies[0], "bad_request")
            self.assertEqual(replies[0]["message"], PLAIN_ON_TLS)
            c.close()
            self.assertIn("a plain frame on the TLS port; closing", d.log())
            # anything else that is not TLS: closed without a word
            c = jqtest.Conn(d.host, d.tls_port)
            c.send_raw(b"GET / HTTP/1.0\r\n\r\n")
            self.assertEqual(c.replies_until_close(), [])
            self.assertIn("not a TLS record (first byte 0x47)", d.log())

    def test_tls_client_on_the_plain_port(self):
        with self.daemon() as d:
            start = time.monotonic()
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                jqtest.TlsConn(d.host, d.port, context())
            self.assertElapsed(start, 0, 5)
            self.assertTrue(jqtest.wait_until(
                lambda: "a TLS handshake on the plain port; closing"
                in d.log()), d.log())
            self.assertOk(d.request({"op": "ping"}))


class ServerCertificates(TlsCase):
    """A verifying client refuses a bad server certificate; the daemon
    logs the failed handshake."""

    CASES = (
        ("expired", CERTS.expired_cert, CERTS.expired_key, "localhost",
         "certificate has expired"),
        ("not yet valid", CERTS.future_cert, CERTS.future_key, "localhost",
         "certificate is not yet valid"),
        ("another name", CERTS.other_cert, CERTS.other_key, "localhost",
         "Hostname mismatch"),
        ("another CA", CERTS.stranger_cert, CERTS.stranger_key, "localhost",
         "unable to get local issuer certificate"),
    )

    def test_bad_server_certificates(self):
        for name, cert, key, host, why in self.CASES:
            with self.subTest(name):
                d = jqtest.Daemon("--tls-port", "0", "--tls-cert-file", cert,
                                  "--tls-key-file", key)
                with d:
                    with self.assertRaises(ssl.SSLCertVerificationError) as e:
                        d.tls(context(), server_hostname=host)
                    self.assertIn(why, str(e.exception))
                    self.assertTrue(jqtest.wait_until(
                        lambda: "TLS handshake failed" in d.log()), d.log())
                    # verifying nothing, the same client gets through
                    c = d.tls(context(verify=False))
                    self.assertOk(c.request({"op": "ping"}))
                    c.close()

    def test_by_ip_address(self):
        """The server certificate names 127.0.0.1 too."""
        with self.daemon() as d:
            c = d.tls(server_hostname="127.0.0.1")
            self.assertOk(c.request({"op": "ping"}))
            c.close()


class Metrics(TlsCase):

    def test_metrics_over_tls(self):
        with self.daemon("--metrics-listen", "127.0.0.1:0", "--metrics-tls",
                         "yes") as d:
            self.assertOk(d.tls().request({"op": "put", "item": 1}))
            m = jqtest.re.search(r"metrics: serving https://127\.0\.0\.1:"
                                 r"(\d+)/metrics", d.log())
            self.assertIsNotNone(m, d.log())
            url = "https://localhost:%s/metrics" % m.group(1)
            body = urllib.request.urlopen(url, timeout=TIMEOUT,
                                          context=context()).read().decode()
            self.assertIn("joinq_queue_items{queue=\"default\"} 1", body)
            with self.assertRaises((urllib.error.URLError, OSError,
                                    ConnectionError)):
                urllib.request.urlopen(url.replace("https", "http"),
                                       timeout=TIMEOUT).read()


class StartErrors(TlsCase):
    """Bad TLS settings stop the start with one clear line."""

    def start_fails(self, *args) -> str:
        p = subprocess.run(jqtest.WRAPPER + [jqtest.JOINQD, "-p", "0", "-b",
                                             "127.0.0.1"] + list(args),
                           capture_output=True, text=True, timeout=TIMEOUT)
        self.assertIn(p.returncode, (1, 2), p.stderr)
        return p.stderr

    def test_start_errors(self):
        key_for_other = CERTS.other_key
        cases = (
            (["--tls-port", "0"], "tls_port needs tls_cert_file and "
             "tls_key_file"),
            (["--tls-port", "0", "--tls-cert-file", "/nonexistent.pem",
              "--tls-key-file", CERTS.server_key],
             "--tls-cert-file: /nonexistent.pem: cannot read the file"),
            (["--tls-port", "0", "--tls-cert-file", CERTS.server_cert,
              "--tls-key-file", key_for_other],
             "tls_key_file %s: key values mismatch" % key_for_other),
            (["--tls-port", "0", "--tls-cert-file", CERTS.server_cert,
              "--tls-key-file", CERTS.server_key, "--tls-client-auth",
              "require"], "tls_client_auth = require needs tls_ca_file"),
            (["--tls-port", "0", "--tls-cert-file", CERTS.ca,
              "--tls-key-file", CERTS.server_key, "--tls-ciphers",
              "NOPE"], "tls_ciphers NOPE: no cipher match"),
            (["--tls-min-version", "1.1"], "expected 1.2 or 1.3"),
            (["--tls-client-auth", "maybe"],
             "expected none, request or require"),
        )
        for args, why in cases:
            with self.subTest(args=args):
                self.assertIn(why, self.start_fails(*args))

    def test_min_version_13(self):
        with self.daemon("--tls-min-version", "1.3") as d:
            ctx = context()
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            self.assertIn("version", self.refused(d, ctx).lower())
            c = d.tls()
            self.assertEqual(c.tls.version(), "TLSv1.3")
            c.close()


class Readme(TlsCase):
    def test_the_readme_recipe(self):
        """README's "TLS": its openssl lines make a CA and a certificate
        that joinqd serves with its config lines, and that joinq --tls
        and Python's ssl verify."""
        recipe, conf = jqtest.readme_blocks("TLS", level=3)
        d = jqtest.Daemon()
        subprocess.run(["sh", "-e"], input=recipe, text=True,
                       cwd=d.tmp.name, check=True, capture_output=True,
                       timeout=TIMEOUT)
        conf = conf.replace("/etc/joinq/tls/", d.tmp.name + "/")
        self.assertIn("tls_port = 7478\n", conf)
        d.config = conf.replace("tls_port = 7478", "tls_port = 0")
        with d:
            ca = d.path("ca.crt")
            p = d.cli("--tls", "--cacert", ca, "-p", str(d.tls_port),
                      "put", "by the book")
            self.assertEqual(p.returncode, 0, p.stderr)
            c = d.tls(context(ca=ca), server_hostname="db1.example.com")
            self.assertEqual(c.request({"op": "get"})["item"], "by the book")
            c.close()


if __name__ == "__main__":
    jqtest.main()
