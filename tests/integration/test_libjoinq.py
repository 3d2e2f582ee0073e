"""libjoinq as a user meets it: the example doc/examples/cooks_and_eaters.c
(a cook puts dishes, two forked eaters get and task_done them, the main
program joins), run against a real joinqd as make check built it, and
built again from its source the way a user would, with
`pkg-config --cflags --libs libjoinq` and the C compiler; and
tests/unit/libjoinq_oom, libjoinq with an allocator that fails on demand.

make check says where the trees are: $JOINQ_BUILDDIR (default: the current
directory), $JOINQ_SRCDIR (default: the tree this file is in), $JOINQ_CC
(else $CC, else cc) and $JOINQ_SAN_CFLAGS (a sanitized libjoinq needs a
sanitized program).  A missing pkg-config or compiler fails the test: the
build instructions the README gives would fail the same way."""
import collections
import os
import re
import shlex
import shutil
import subprocess
import tempfile

import jqtest

BUILDDIR = os.path.abspath(os.environ.get("JOINQ_BUILDDIR") or os.getcwd())
SRCDIR = os.path.abspath(os.environ.get("JOINQ_SRCDIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CC = shlex.split(os.environ.get("JOINQ_CC") or os.environ.get("CC") or "cc")
SAN_CFLAGS = shlex.split(os.environ.get("JOINQ_SAN_CFLAGS", ""))
EXAMPLE = "doc/examples/cooks_and_eaters"
OOM = "tests/unit/libjoinq_oom"
DISHES, EATERS = 20, 2
RUN_TIMEOUT = 3 * jqtest.TIMEOUT

EATS_RE = re.compile(r'eater (\d+) eats "dish (\d+)"')
ATE_RE = re.compile(r"eater (\d+) ate (\d+) dishes")


class Example(jqtest.TestCase):
    def run_example(self, argv, env=None):
        e = dict(os.environ)
        for name in ("JOINQ_HOST", "JOINQ_PORT"):
            e.pop(name, None)
        e.update(env or {})
        try:
            return subprocess.run(argv, env=e, capture_output=True,
                                  text=True, timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self.fail("%s did not finish within %.0f s; output so far: %r"
                      % (argv[0], RUN_TIMEOUT, exc.stdout))

    def assertCooksAndEaters(self, d, p):
        """The example's run p against daemon d: exit 0, every dish eaten
        once, in the order join promises, and the daemon agrees."""
        self.assertEqual(p.returncode, 0, "stdout %r stderr %r"
                         % (p.stdout, p.stderr))
        self.assertEqual(p.stderr, "")
        lines = p.stdout.splitlines()

        eats = [EATS_RE.fullmatch(l) for l in lines]
        eats = [m for m in eats if m]
        self.assertEqual(sorted(int(m.group(2)) for m in eats),
                         list(range(1, DISHES + 1)),
                         "every dish eaten exactly once")
        per_eater = collections.Counter(int(m.group(1)) for m in eats)
        self.assertEqual(set(per_eater), set(range(1, EATERS + 1)),
                         "both eaters waited in get, so both ate")

        ate = [ATE_RE.fullmatch(l) for l in lines]
        ate = {int(m.group(1)): int(m.group(2)) for m in ate if m}
        self.assertEqual(ate, dict(per_eater), "each eater counts right")

        self.assertIn("cook put %d dishes on dishes" % DISHES, lines)
        joined = lines.index("joined: 0 unfinished")
        last_eat = max(i for i, l in enumerate(lines) if EATS_RE.fullmatch(l))
        first_total = min(i for i, l in enumerate(lines)
                          if ATE_RE.fullmatch(l))
        self.assertLess(last_eat, joined,
                        "join returned only after the last dish")
        self.assertLess(joined, first_total,
                        "the sentinels went in after the join")
        self.assertEqual(lines[-1], "all %d dishes eaten by %d eaters"
                         % (DISHES, EATERS))

        # Each dish and each eater's sentinel is a task, every one done.
        r = d.request({"op": "stats"})
        self.assertOk(r)
        q = r["queues"]["dishes"]
        tasks = DISHES + EATERS
        self.assertEqual((q["puts"], q["gets"], q["task_dones"]),
                         (tasks, tasks, tasks), q)
        self.assertEqual((q["qsize"], q["unfinished"], q["inflight"],
                          q["releases"], q["redeliveries"]),
                         (0, 0, 0, 0, 0), q)
        # The daemon notices closed connections in its own time.
        self.assertTrue(jqtest.wait_until(
            lambda: d.request({"op": "stats"})["connections"] == 1),
            "the example closed its connections (only the stats request's "
            "own is left)")

    def test_built_example_host_and_port_from_argv(self):
        with jqtest.Daemon() as d:
            p = self.run_example([os.path.join(BUILDDIR, EXAMPLE),
                                  d.host, str(d.port)])
            self.assertCooksAndEaters(d, p)

    def test_built_example_host_and_port_from_environment(self):
        with jqtest.Daemon() as d:
            p = self.run_example([os.path.join(BUILDDIR, EXAMPLE)],
                                 env={"JOINQ_HOST": d.host,
                                      "JOINQ_PORT": str(d.port)})
            self.assertCooksAndEaters(d, p)

    def test_example_fails_without_a_daemon(self):
        with jqtest.Daemon() as d:
            port = d.port
        p = self.run_example([os.path.join(BUILDDIR, EXAMPLE), "127.0.0.1",
                              str(port)])
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("127.0.0.1", p.stderr)

    def test_items_as_sent_and_every_allocation_may_fail(self):
        # tests/unit/libjoinq_oom.c: items come back byte for byte (0.1,
        # 1e300, integers beyond 64 bits), and with the allocation after
        # the first N failing, for every N, each call returns an error
        # (JQ_ERR_NOMEM) and nothing aborts; over TCP and UDP.
        with jqtest.Daemon() as d:
            p = self.run_example([os.path.join(BUILDDIR, OOM), d.host,
                                  str(d.port)])
        self.assertEqual(p.returncode, 0, "stdout %r stderr %r"
                         % (p.stdout, p.stderr))
        for transport in ("tcp", "udp"):
            self.assertRegex(p.stdout, r"(?m)^%s: items as put; \d+ "
                             r"sessions, .* [1-9]\d* allocations refused$"
                             % transport)

    def test_built_through_pkg_config(self):
        pkg_config = shutil.which("pkg-config")
        self.assertIsNotNone(pkg_config, "pkg-config is not installed")
        self.assertIsNotNone(shutil.which(CC[0]),
                             "no C compiler: %s" % CC[0])
        client = os.path.join(BUILDDIR, "client")
        env = dict(os.environ, PKG_CONFIG_PATH=client)
        flags = subprocess.run([pkg_config, "--cflags", "--libs",
                                "libjoinq"], env=env, capture_output=True,
                               text=True, timeout=jqtest.TIMEOUT)
        self.assertEqual(flags.returncode, 0, flags.stderr)
        flags = shlex.split(flags.stdout)
        self.assertIn("-L" + os.path.join(client, ".libs"), flags,
                      "pkg-config chose libjoinq-uninstalled.pc")
        self.assertIn("-ljoinq", flags)

        with tempfile.TemporaryDirectory(prefix="joinq-example-") as tmp:
            exe = os.path.join(tmp, "cooks_and_eaters")
            # Strict C99 and no warnings: joinq.h must suit any C program.
            cc = subprocess.run(
                CC + SAN_CFLAGS + ["-std=c99", "-pedantic", "-Wall",
                                   "-Wextra", "-Werror", "-o", exe,
                                   os.path.join(SRCDIR, EXAMPLE + ".c")]
                + flags, capture_output=True, text=True,
                timeout=6 * jqtest.TIMEOUT)
            self.assertEqual(cc.returncode, 0, "%s\n%s"
                             % (" ".join(cc.args), cc.stderr))
            libs = os.path.join(client, ".libs")
            with jqtest.Daemon() as d:
                p = self.run_example([exe, d.host, str(d.port)],
                                     env={"LD_LIBRARY_PATH": libs})
                self.assertCooksAndEaters(d, p)


if __name__ == "__main__":
    jqtest.main()
