"""joinq bench against the real joinqd: TCP pipelined and not, latency
mode, UDP, a prefill, a token; the --json report and its delivery check;
bad options; a daemon killed mid-run.  No assertion on speed: the figures
depend on the machine."""

import json
import os
import signal
import subprocess
import time

import jqtest

SLOW = jqtest.SLOW


def bench(d, *args, udp=False, timeout=60 * SLOW):
    """Runs `joinq bench --json ARGS` against d; (returncode, report
    dict or None, stderr)."""
    p = d.cli("bench", "--json", *args, udp=udp, timeout=timeout)
    report = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, report, p.stderr


class Runs(jqtest.TestCase):
    def check_clean(self, rc, r, err, items, prefill=0):
        self.assertEqual(rc, 0, err)
        self.assertTrue(r["ok"])
        self.assertEqual(r["exit_status"], 0)
        self.assertEqual(r["items"], items)
        self.assertEqual(r["items_done"], items)
        self.assertEqual(r["delivered"], items + prefill)
        self.assertEqual(r["missing"], 0)
        self.assertEqual(r["duplicates"], 0)
        self.assertEqual(r["foreign"], 0)
        self.assertEqual(r["errors"], 0)
        self.assertEqual(r["lost"], 0)
        self.assertGreater(r["elapsed_s"], 0)
        self.assertGreater(r["items_per_s"], 0)
        lat = r["latency_us"]
        self.assertEqual(set(lat), {"p50", "p99", "p999", "max", "count"})
        self.assertGreater(lat["count"], 0)
        self.assertLessEqual(lat["p50"], lat["p99"])
        self.assertLessEqual(lat["p99"], lat["p999"])
        self.assertLessEqual(lat["p999"], lat["max"])
        self.assertGreater(lat["p50"], 0)

    def assertQueueDrained(self, d, queue):
        self.assertQsize(d.qsize(queue), qsize=0, unfinished=0, inflight=0)

    def test_tcp_unpipelined(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "-n", "2000", "--queue", "b1")
            self.check_clean(rc, r, err, 2000)
            self.assertEqual(r["mode"], "throughput")
            self.assertEqual(r["transport"], "tcp")
            self.assertEqual(r["producers"], 4)
            self.assertEqual(r["consumers"], 4)
            self.assertEqual(r["pipeline"], 1)
            self.assertEqual(r["item_size"], 100)
            self.assertEqual(r["queue"], "b1")
            for op in ("put", "get", "task_done"):
                self.assertEqual(r["ops"][op]["count"], 2000, op)
            self.assertEqual(r["latency_us"]["count"], 6000)
            self.assertQueueDrained(d, "b1")
            stats = d.request({"op": "stats"})["queues"]["b1"]
            self.assertEqual(stats["puts"], 2000)
            self.assertEqual(stats["task_dones"], 2000)

    def test_tcp_pipelined(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "-n", "20000", "-P", "64", "--producers",
                               "2", "--consumers", "3", "-d", "10",
                               "--queue", "b2")
            self.check_clean(rc, r, err, 20000)
            self.assertEqual(r["pipeline"], 64)
            self.assertEqual(r["consumers"], 3)
            self.assertQueueDrained(d, "b2")

    def test_latency_mode(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "--mode", "latency", "-n", "500",
                               "--queue", "b3")
            self.check_clean(rc, r, err, 500)
            self.assertEqual(r["mode"], "latency")
            self.assertEqual(r["latency_us"]["count"], 500)
            self.assertQueueDrained(d, "b3")

    def test_udp(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "-n", "2000", "-P", "4", "--queue", "b4",
                               udp=True)
            self.check_clean(rc, r, err, 2000)
            self.assertEqual(r["transport"], "udp")
            self.assertQueueDrained(d, "b4")
            rc, r, err = bench(d, "--mode", "latency", "-n", "300",
                               "--queue", "b5", udp=True)
            self.check_clean(rc, r, err, 300)

    def test_prefill_is_drained_and_checked(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "-n", "1000", "--prefill", "3000", "-P",
                               "8", "--queue", "b6")
            self.check_clean(rc, r, err, 1000, prefill=3000)
            self.assertEqual(r["prefill"], 3000)
            self.assertQueueDrained(d, "b6")
            rc, r, err = bench(d, "--mode", "latency", "-n", "200",
                               "--prefill", "500", "--queue", "b7")
            self.check_clean(rc, r, err, 200, prefill=500)
            self.assertQueueDrained(d, "b7")

    def test_no_drain_leaves_the_rest(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "-n", "500", "--prefill", "2000",
                               "--no-drain", "--producers", "1",
                               "--consumers", "1", "--queue", "b9")
            self.assertEqual(rc, 0, err)
            self.assertEqual(r["items_done"], 500)
            self.assertEqual(r["missing"], 0)
            self.assertEqual(r["left"], 2500 - r["delivered"])
            q = d.qsize("b9")
            self.assertQsize(q, inflight=0)
            self.assertEqual(q["qsize"], r["left"])

    def test_default_queue_is_fresh(self):
        with jqtest.Daemon() as d:
            rc, r, err = bench(d, "-n", "100")
            self.check_clean(rc, r, err, 100)
            self.assertRegex(r["queue"], r"^bench-\d+$")
            self.assertQsize(d.qsize("default"), qsize=0, unfinished=0)

    def test_text_report(self):
        with jqtest.Daemon() as d:
            p = d.cli("bench", "-n", "300", timeout=60 * SLOW)
            self.assertEqual(p.returncode, 0, p.stderr)
            for word in ("items/s", "elapsed", "p50", "p99", "p99.9", "max",
                         "delivered 300 of 300: 0 missing, 0 duplicate",
                         "0 errors"):
                self.assertIn(word, p.stdout)

    def test_token(self):
        d = jqtest.Daemon()
        d.args += ["--auth-token-file", d.file("token", "s3cret\n")]
        with d:
            tok = d.file("client-token", "s3cret\n")
            for udp in (False, True):
                p = d.cli("--token-file", tok, "bench", "--json", "-n",
                          "200", udp=udp, timeout=60 * SLOW)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(json.loads(p.stdout)["errors"], 0)
            bad = d.file("bad-token", "nope\n")
            p = d.cli("--token-file", bad, "bench", "-n", "10",
                      timeout=60 * SLOW)
            self.assertEqual(p.returncode, 1)
            self.assertIn("unauthorized", p.stdout + p.stderr)

    def test_foreign_items_fail_the_check(self):
        with jqtest.Daemon() as d:
            d.request({"op": "put", "queue": "b8", "item": "not ours"})
            rc, r, err = bench(d, "-n", "50", "--queue", "b8")
            self.assertEqual(rc, 1)
            self.assertEqual(r["foreign"], 1)
            self.assertFalse(r["ok"])


class BadOptions(jqtest.TestCase):
    def test_bad_options(self):
        cases = [
            (["-n", "0"], "-n wants"),
            (["-n", "ten"], "-n wants"),
            (["-P", "0"], "-P wants"),
            (["-d", "-1"], "-d wants"),
            (["--producers", "0"], "--producers wants"),
            (["--consumers", "x"], "--consumers wants"),
            (["--mode", "fast"], "--mode wants"),
            (["--queue", "a b"], "--queue wants"),
            (["--timeout", "0"], "--timeout wants"),
            (["--prefill", "-5"], "--prefill wants"),
            (["--bogus"], "unrecognized option"),
            (["extra"], "unexpected argument"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                p = subprocess.run([jqtest.JOINQ, "-p", "1", "bench"] + args,
                                   capture_output=True, text=True,
                                   timeout=jqtest.TIMEOUT)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(message, p.stderr)
                self.assertEqual(p.stdout, "")

    def test_udp_item_too_big(self):
        p = subprocess.run([jqtest.JOINQ, "-u", "-p", "1", "bench", "-d",
                            "65000"], capture_output=True, text=True,
                           timeout=jqtest.TIMEOUT)
        self.assertEqual(p.returncode, 2)
        self.assertIn("one datagram", p.stderr)

    def test_help(self):
        p = subprocess.run([jqtest.JOINQ, "bench", "--help"],
                           capture_output=True, text=True,
                           timeout=jqtest.TIMEOUT)
        self.assertEqual(p.returncode, 0)
        for opt in ("--producers", "--consumers", "-n", "-d", "-P", "--mode",
                    "--queue", "--prefill", "--timeout", "--json"):
            self.assertIn(opt, p.stdout)
        p = subprocess.run([jqtest.JOINQ, "--help"], capture_output=True,
                           text=True, timeout=jqtest.TIMEOUT)
        self.assertIn("bench", p.stdout)

    def test_no_daemon(self):
        p = subprocess.run([jqtest.JOINQ, "-p", "1", "bench", "-n", "10"],
                           capture_output=True, text=True,
                           timeout=jqtest.TIMEOUT)
        self.assertEqual(p.returncode, 6)
        self.assertIn("cannot connect", p.stderr)


class DaemonDies(jqtest.TestCase):
    def run_and_kill(self, udp):
        d = jqtest.Daemon()
        d.start()
        try:
            p = d.cli_start("bench", "--json", "-n", "100000000", "-P", "4",
                            "--timeout", "120", udp=udp)
            # Let it get going, then kill the daemon under it.
            def going():
                queues = d.request({"op": "stats"})["queues"].values()
                return sum(q["puts"] for q in queues) > 0
            self.assertTrue(jqtest.wait_until(going), "bench put nothing")
            d.proc.kill()
            d.proc.wait(jqtest.TIMEOUT)
            out, err = p.communicate(timeout=30 * SLOW)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            d.errfile.close()
            d.tmp.cleanup()
        self.assertEqual(p.returncode, 6, err)
        self.assertTrue(err.strip(), "bench must say why it stopped")
        r = json.loads(out)
        self.assertFalse(r["ok"])
        self.assertGreater(r["missing"], 0)
        self.assertIn("stopped", r)

    def test_tcp_daemon_killed(self):
        self.run_and_kill(udp=False)

    def test_udp_daemon_killed(self):
        self.run_and_kill(udp=True)

    def test_timeout_is_bounded(self):
        # A run far too long for its --timeout: bench reports what it did
        # and exits 5.
        with jqtest.Daemon() as d:
            start = time.monotonic()
            rc, r, err = bench(d, "-n", "100000000", "--timeout", "1")
            self.assertEqual(rc, 5, err)
            self.assertIn("--timeout", err)
            self.assertFalse(r["ok"])
            self.assertLess(time.monotonic() - start, 20 * SLOW)


if __name__ == "__main__":
    jqtest.main()
