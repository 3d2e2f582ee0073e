"""The protocol suite against joinqd with journal = nats (issue 12, test 1):
the existing integration files, not copies of them, run against daemons
whose journal is a JetStream stream on a three-node NATS cluster.

One cluster (natscluster.py) for the whole run; each test class of each
file runs as a child (`python3 <file> <class>`) with
JOINQ_TEST_JOURNAL=nats and JOINQ_TEST_NATS=<its servers>, so that every
jqtest.Daemon that does not choose a journal itself gets a stream of its
own and is waited for until its ping says "role":"active" (jqtest.py).
The children's TAP lines are passed on, renumbered and named "nats:<file>:
<test>", so that `make check` counts each case; the plan comes last.  A
child that dies before its plan is done fails for the cases it did not
report.  Tests about the file journal itself are left out by jqtest
(@file_journal_only), each named in a diagnostic line.

Children, not files, run side by side: each daemon waits about half a
second for its new stream's three replicas to elect a leader (NATS's
campaign timer), so a file here is mostly waiting, and one child a class
lets several files' waits overlap.

$JOINQ_NATS_SUITE_FILES (names, space separated) chooses the files (a
sanitizer build runs fewer by default: see FILES);
$JOINQ_NATS_SUITE_JOBS how many children run side by side (default 6).
"""
import importlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import jqtest
import natscluster

HERE = os.path.dirname(os.path.abspath(__file__))
# Files about the protocol that need neither the file journal's files nor
# a restart that reads them.
# test_limits.py and test_cli.py pass in this mode too (run them with
# $JOINQ_NATS_SUITE_FILES); they test the transports' limits and the CLI,
# which the journal does not touch, and would add minutes to every run.
FILES = os.environ.get("JOINQ_NATS_SUITE_FILES", "").split() or [
    "test_ops.py", "test_delivery.py", "test_frames.py", "test_udp.py"]
# Under a sanitizer (or valgrind) every daemon is slower to start and the
# whole suite runs twice: there the frames stand for the rest, which the
# plain build runs in this mode; test_replicated.py, which drives the
# replicated journal hardest, runs in both.
if jqtest.SLOW > 1 and not os.environ.get("JOINQ_NATS_SUITE_FILES"):
    FILES = ["test_frames.py"]
JOBS = int(os.environ.get("JOINQ_NATS_SUITE_JOBS", "6"))
# A child's own bound: its cases, each daemon also taking over its stream.
FILE_TIMEOUT = 900 * jqtest.SLOW

RESULT_RE = re.compile(r"^(ok|not ok)\s+\d+\s*-?\s*(.*)$")
PLAN_RE = re.compile(r"^1\.\.(\d+)")


def classes(name):
    """The test classes of file name, each with how many cases it has, in
    the order unittest runs them."""
    module = importlib.import_module(name[:-3])
    found = []
    for suite in unittest.TestLoader().loadTestsFromModule(module):
        tests = list(suite)
        if tests:
            found.append((type(tests[0]).__name__, len(tests)))
    return found


class Child:
    """One test class of an integration file running against the cluster."""

    def __init__(self, name, cls, env):
        self.name = name
        self.cls = cls
        self.started = time.monotonic()
        # A file, not a pipe: a failing case may print a daemon's whole log.
        self.out = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, name), cls], env=env,
            stdin=subprocess.DEVNULL, stdout=self.out,
            stderr=subprocess.STDOUT, text=True)
        self.text = None
        self.took = None

    def wait(self):
        note = ""
        try:
            self.proc.wait(max(0, self.started + FILE_TIMEOUT -
                               time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            note = "# %s %s did not end within %.0f s\n" % (
                self.name, self.cls, FILE_TIMEOUT)
        self.took = time.monotonic() - self.started
        self.out.seek(0)
        self.text = self.out.read() + note
        self.out.close()
        return self


class Tap:
    """The renumbered TAP stream this file prints."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def line(self, ok, name, note=""):
        self.n += 1
        if not ok:
            self.failed += 1
        print("%s %d - %s%s" % ("ok" if ok else "not ok", self.n, name, note),
              flush=True)

    def report(self, child):
        """Passes on child's results; returns (passed, failed, left out)."""
        planned = None
        passed = failed = 0
        left_out = 0
        for raw in child.text.splitlines():
            m = PLAN_RE.match(raw)
            if m and planned is None:
                planned = int(m.group(1))
                continue
            m = RESULT_RE.match(raw)
            if m:
                ok = m.group(1) == "ok" and "# skipped" not in raw
                name = m.group(2).replace("__main__.", "")
                self.line(ok, "nats:%s: %s" % (child.name, name))
                passed += ok
                failed += not ok
                continue
            if raw.startswith("#"):
                if "not run with journal = nats" in raw:
                    left_out += 1
                print(raw, flush=True)
            elif raw.strip():
                print("# " + raw, flush=True)
        missing = (planned if planned is not None else 1) - passed - failed
        if missing > 0 or child.proc.returncode not in (0, 1):
            self.line(False, "nats:%s: %s: %d planned cases not reported "
                      "(exit status %s)" % (child.name, child.cls,
                                            max(missing, 0),
                                            child.proc.returncode))
            failed += 1
        elif child.proc.returncode != 0 and failed == 0:
            self.line(False, "nats:%s: %s: exit status %d with no failed "
                      "case" % (child.name, child.cls, child.proc.returncode))
            failed += 1
        return passed, failed, left_out


def run_all(pending, running, done, env):
    """Runs the (file, class) pairs JOBS at a time until every one has
    ended."""
    while pending or running:
        while pending and len(running) < JOBS:
            running.append(Child(*pending.pop(0), env))
        ended = [c for c in running if c.proc.poll() is not None]
        if not ended:
            time.sleep(0.2)
            if time.monotonic() - min(c.started for c in running) < \
                    FILE_TIMEOUT:
                continue
            ended = running[:1]
        for child in ended:
            running.remove(child)
            done[child.name, child.cls] = child.wait()


def main():
    # SIGTERM ends the run through the finally clauses below: the children
    # (told in turn) and the cluster are stopped.
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(128 + sig))
    tap = Tap()
    t0 = time.monotonic()
    try:
        cluster = natscluster.NatsCluster().start()
    except AssertionError as e:
        tap.line(False, "nats: a three-node NATS cluster starts")
        jqtest.diag(str(e))
        print("1..%d" % tap.n)
        sys.exit(1)
    try:
        jqtest.diag("NATS cluster %s healthy in %.1f s"
                    % (cluster.servers, time.monotonic() - t0))
        # Each daemon has a stream of its own and no standby, so nothing
        # can take it over: the shortest failover_timeout makes a new
        # stream's first daemon active soonest.
        env = dict(os.environ, JOINQ_TEST_JOURNAL="nats",
                   JOINQ_TEST_NATS=cluster.servers,
                   JOINQ_TEST_FAILOVER=os.environ.get("JOINQ_TEST_FAILOVER",
                                                      "0.2"),
                   PYTHONDONTWRITEBYTECODE="1")
        parts = {name: classes(name) for name in FILES}
        # The largest classes first, so that none starts last and alone.
        sizes = [(n, name, cls) for name in FILES for cls, n in parts[name]]
        pending = [(name, cls) for _, name, cls in
                   sorted(sizes, key=lambda size: -size[0])]
        running = []
        done = {}
        try:
            run_all(pending, running, done, env)
        finally:
            for child in running:
                if child.proc.poll() is None:
                    child.proc.terminate()
                    try:
                        child.proc.wait(60)
                    except subprocess.TimeoutExpired:
                        child.proc.kill()
                        child.proc.wait()
        for name in FILES:
            children = [done[name, cls] for cls, _ in parts[name]]
            counts = [tap.report(child) for child in children]
            passed, failed, left_out = [sum(c) for c in zip(*counts)]
            took = [child.took for child in children]
            jqtest.diag("%s with journal = nats: %d passed, %d failed, %d "
                        "left out (file journal only), %.1f s in %d classes "
                        "(the longest %.1f s)"
                        % (name, passed, failed, left_out, sum(took),
                           len(took), max(took)))
    finally:
        cluster.close()
    print("1..%d" % tap.n, flush=True)
    sys.exit(1 if tap.failed else 0)


if __name__ == "__main__":
    main()
