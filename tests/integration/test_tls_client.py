"""The C client over TLS (issue 14): every joinq command with --tls
against a real joinqd's tls_port (through libjoinq; bench through its own
connections), the environment defaults, mutual TLS, and each failure a
user must be able to act on: one clear line on stderr and a non-zero exit
within a time bound, never a hang.  Certificates come from tlscerts.py."""
from __future__ import annotations

import json
import os
import subprocess
import time

import jqtest
import tlscerts

TIMEOUT = jqtest.TIMEOUT
CONNECTION = 6      # joinq's exit status: cannot connect, lost
USAGE = 2


def joinq(port: int, *args: str, host: str = "127.0.0.1", env=None,
          input: str | None = None,
          timeout: float = 3 * TIMEOUT) -> subprocess.CompletedProcess:
    """joinq -H host -p port ARGS, with the JOINQ_* variables of the
    caller's environment removed (env adds some back)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("JOINQ_")}
    e.update(env or {})
    return subprocess.run([jqtest.JOINQ, "-H", host, "-p", str(port)] +
                          list(args), input=input, env=e, text=True,
                          capture_output=True, timeout=timeout)


class TlsCase(jqtest.TestCase):
    certs: tlscerts.Certs

    @classmethod
    def setUpClass(cls):
        cls.certs = tlscerts.shared()

    def tls(self, *more: str) -> list[str]:
        """--tls and the test CA, then more."""
        return ["--tls", "--cacert", self.certs.ca] + list(more)

    def assertFails(self, p, status: int, *lines: str):
        """p exited with status after one line on stderr holding each of
        lines (a usage error adds its 'Try' line)."""
        self.assertEqual(p.returncode, status, p.stderr)
        first = p.stderr.splitlines()[0] if p.stderr else ""
        for text in lines:
            self.assertIn(text, first, p.stderr)
        if status != USAGE:
            self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)


class Commands(TlsCase):
    """One daemon serving plain TCP and TLS; each test a queue of its own."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = jqtest.Daemon(*jqtest.tls_args(cls.certs)).start()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return joinq(self.d.tls_port, *self.tls(*args), **kw)

    def test_every_op(self):
        q = "ops"
        p = self.cli("-q", q, "declare", "--maxsize", "100", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(json.loads(p.stdout)["created"])
        self.assertEqual(self.cli("-q", q, "put", "a", "b", "c").returncode, 0)
        p = self.cli("-q", q, "get", "--lease", "60", "--show-task")
        self.assertEqual(p.returncode, 0, p.stderr)
        task, item = p.stdout.rstrip("\n").split("\t")
        self.assertEqual(item, "a")
        p = self.cli("-q", q, "task_done", "-v", task)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.cli("-q", q, "qsize", "--json")
        self.assertEqual(json.loads(p.stdout)["qsize"], 2, p.stderr)
        p = self.cli("stats", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(q, json.loads(p.stdout)["queues"])
        self.assertEqual(self.cli("ping").returncode, 0)
        p = self.cli("-q", q, "purge")
        self.assertEqual(p.stdout.strip(), "purged 2", p.stderr)
        p = self.cli("-q", q, "join", "--timeout", str(TIMEOUT))
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.cli("-q", q, "delete")
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "deleted"),
                         p.stderr)

    def test_pipelined_put_from_stdin(self):
        n = 20000
        p = self.cli("-q", "many", "put", "--join", "--join-timeout", "0",
                     input="".join("%d\n" % i for i in range(n)))
        self.assertEqual(p.returncode, 5, p.stderr)   # nobody takes them
        r = self.d.qsize("many")
        self.assertEqual(r["qsize"], n)
        p = self.cli("-q", "many", "purge")
        self.assertEqual(p.stdout.strip(), "purged %d" % n, p.stderr)

    def test_work_and_the_environment_of_cmd(self):
        self.assertEqual(self.cli("-q", "w", "put", "x", "y", "z").returncode,
                         0)
        # CMD's own joinq reaches the daemon with what the pool passes on.
        cmd = ('joinq -q w qsize --json >/dev/null && '
               'echo "$JOINQ_TLS $JOINQ_PORT"')
        env = {"PATH": os.path.dirname(os.path.abspath(jqtest.JOINQ)) +
               os.pathsep + os.environ.get("PATH", "")}
        p = self.cli("-q", "w", "work", "-j", "2", "--exit-when-empty",
                     "--", "sh", "-c", cmd, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.splitlines(),
                         ["1 %d" % self.d.tls_port] * 3, p.stderr)
        self.assertEqual(self.d.qsize("w")["unfinished"], 0)

    def test_bench(self):
        p = self.cli("bench", "-n", "2000", "-P", "16", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual((r["transport"], r["delivered"], r["ok"]),
                         ("tls", 2000, True))
        p = self.cli("bench", "-n", "20", "--mode", "latency", "--reconnect",
                     "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["delivered"], 20)

    def test_bench_reports_a_failed_handshake(self):
        p = joinq(self.d.tls_port, "--tls", "bench", "-n", "10")
        self.assertFails(p, CONNECTION, "unable to get local issuer")

    def test_environment_defaults_and_flags_win(self):
        env = {"JOINQ_TLS": "1", "JOINQ_CACERT": self.certs.ca,
               "JOINQ_TLS_SERVER_NAME": "localhost"}
        p = joinq(self.d.tls_port, "ping", env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = joinq(self.d.tls_port, "--cacert", self.certs.other_ca, "ping",
                  env=env)
        self.assertFails(p, CONNECTION, "unable to get local issuer",
                         "--cacert")
        p = joinq(self.d.port, "ping", env={"JOINQ_TLS": "0"})
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_wrong_ca(self):
        p = joinq(self.d.tls_port, "--tls", "--cacert", self.certs.other_ca,
                  "ping")
        self.assertFails(p, CONNECTION, "certificate verify failed",
                         "unable to get local issuer certificate", "--cacert")

    def test_name_mismatch_and_the_opt_out(self):
        p = self.cli("--tls-server-name", "other.example", "ping")
        self.assertFails(p, CONNECTION, "is for localhost, 127.0.0.1, not "
                         "other.example")
        p = self.cli("--tls-server-name", "other.example",
                     "--tls-insecure-any-name", "ping")
        self.assertEqual(p.returncode, 0, p.stderr)
        # The opt-out skips the name only: the chain is still checked.
        p = joinq(self.d.tls_port, "--tls", "--cacert", self.certs.other_ca,
                  "--tls-insecure-any-name", "ping")
        self.assertFails(p, CONNECTION, "unable to get local issuer")

    def test_tls_client_on_the_plain_port(self):
        p = joinq(self.d.port, *self.tls("ping"))
        self.assertFails(p, CONNECTION, "closed the connection during the "
                         "TLS handshake", "is %d its TLS port?" % self.d.port)

    def test_plain_client_on_the_tls_port(self):
        p = joinq(self.d.tls_port, "ping")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("bad_request: this port speaks TLS", p.stderr)

    def test_usage_errors(self):
        for args, text in (
                (["-u", "--tls", "ping"], "UDP) cannot carry TLS"),
                (["--cacert", self.certs.ca, "ping"], "--cacert is for TLS"),
                (["--tls", "--cert", self.certs.client_cert, "ping"],
                 "--cert without --key"),
                (["--tls", "--key", self.certs.client_key, "ping"],
                 "--key without --cert"),
                (["--tls", "--cacert", "/nonexistent/ca.pem", "ping"],
                 "cannot read the CA file /nonexistent/ca.pem"),
                (["--tls", "--cert", self.certs.client_cert, "--key",
                  self.certs.server_key, "ping"], "not the certificate's key")):
            with self.subTest(args=args):
                p = joinq(self.d.tls_port, *args)
                self.assertFails(p, USAGE, text)

    def test_failover_over_tls(self):
        with jqtest.Daemon(*jqtest.tls_args(self.certs)) as first:
            gone = first.tls_port
        hosts = "127.0.0.1:%d,127.0.0.1:%d" % (gone, self.d.tls_port)
        p = joinq(self.d.tls_port, *self.tls("-q", "fo", "put", "x"),
                  host=hosts)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.d.qsize("fo")["qsize"], 1)


class Certificates(TlsCase):
    """Daemons with a certificate that fails, or that want the client's."""

    def refused(self, cert: str, key: str, *args: str):
        """joinq's result against a daemon serving cert and key."""
        with jqtest.Daemon("--tls-port", "0", "--tls-cert-file", cert,
                           "--tls-key-file", key) as d:
            start = time.monotonic()
            p = joinq(d.tls_port, *self.tls(*args, "ping"))
            self.assertLess(time.monotonic() - start, 3 * TIMEOUT)
            return p

    def test_expired(self):
        p = self.refused(self.certs.expired_cert, self.certs.expired_key)
        self.assertFails(p, CONNECTION, "certificate has expired",
                         "not after Jan  1 00:00:00 2001 GMT")

    def test_not_yet_valid(self):
        p = self.refused(self.certs.future_cert, self.certs.future_key)
        self.assertFails(p, CONNECTION, "certificate is not yet valid",
                         "not before Jan  1 00:00:00 2099 GMT")

    def test_mutual_tls(self):
        with jqtest.Daemon(*jqtest.tls_args(
                self.certs, "--tls-ca-file", self.certs.ca,
                "--tls-client-auth", "require")) as d:
            p = joinq(d.tls_port, *self.tls("--cert", self.certs.client_cert,
                                            "--key", self.certs.client_key,
                                            "put", "x"))
            self.assertEqual(p.returncode, 0, p.stderr)
            p = joinq(d.tls_port, *self.tls("ping"))
            self.assertFails(p, CONNECTION, "refused the TLS",
                             "certificate required", "--cert")
            p = joinq(d.tls_port, *self.tls(
                "--cert", self.certs.stranger_cert, "--key",
                self.certs.stranger_key, "ping"))
            self.assertFails(p, CONNECTION, "refused the TLS", "unknown ca")
            # TLS 1.3 refuses the certificate after the client's side of
            # the handshake, with the first reply: the daemon read none of
            # the puts, and joinq says so.
            p = joinq(d.tls_port, *self.tls("put", "y", "z"))
            self.assertEqual(p.returncode, CONNECTION, p.stderr)
            self.assertIn("certificate required", p.stderr)
            self.assertIn("have not been queued", p.stderr)
            self.assertNotIn("may or may not", p.stderr)
            self.assertEqual(d.qsize()["qsize"], 1)
            env = {"JOINQ_CERT": self.certs.client_cert,
                   "JOINQ_KEY": self.certs.client_key}
            p = joinq(d.tls_port, *self.tls("qsize"), env=env)
            self.assertEqual(p.returncode, 0, p.stderr)

    def test_a_daemon_gone_mid_stream_is_no_sigpipe(self):
        # OpenSSL writes with write(): without the client's guard, the
        # write after the daemon's end would kill joinq with SIGPIPE.
        d = jqtest.Daemon(*jqtest.tls_args(self.certs)).start()
        try:
            e = {k: v for k, v in os.environ.items()
                 if not k.startswith("JOINQ_")}
            p = subprocess.Popen(
                [jqtest.JOINQ, "-p", str(d.tls_port)] + self.tls("put"),
                env=e, text=True, stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            p.stdin.write("first\n")
            p.stdin.flush()
            self.assertTrue(jqtest.wait_until(
                lambda: d.qsize()["qsize"] == 1), "the first item came")
        finally:
            d.__exit__(None, None, None)
        try:
            for _ in range(200):
                p.stdin.write("x" * 10000 + "\n")
            p.stdin.close()
        except BrokenPipeError:
            pass            # joinq has exited already: its status tells
        try:
            p.wait(3 * TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            err = p.stderr.read()
            p.stderr.close()
        self.assertEqual(p.returncode, CONNECTION, err)
        self.assertIn("127.0.0.1:%d" % d.tls_port, err)


if __name__ == "__main__":
    jqtest.main()
