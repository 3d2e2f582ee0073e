"""CPython's own queue tests, unmodified, against the joinq package.

test.test_queue's BaseQueueTestMixin and BaseSimpleQueueTest, and
test._test_multiprocessing's _TestQueue under the fork, spawn and
forkserver start methods, run against joinq (imported from
$JOINQ_SRCDIR/client/python) on one real joinqd: each queue a test makes
is a fresh queue of a name of its own.  The classes come from the Python
running this file (`python3 -m test` finds them; Debian ships them apart,
in libpython3.X-testsuite, which scripts/deps installs): without them this
file fails, saying so.

The few tests about the standard library's own machinery are left out,
each named in LEFT_OUT with the reason and printed as a TAP comment; the
run fails if one of them no longer exists, so that a test renamed in a
newer CPython is noticed rather than silently run or silently lost.
"""
from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.util
import os
import queue
import signal
import sys
import unittest
from unittest import mock

import jqtest

sys.path.insert(0, jqtest.PYTHON_CLIENT)
import joinq  # noqa: E402  (the tree's, not an installed copy)

try:
    import test.test_queue as cpython_queue
    import test._test_multiprocessing as cpython_mp
except Exception as exc:  # ImportError, or a SkipTest raised at import
    if __name__ == "__main__":
        print("1..1\nnot ok 1 - CPython's test package: cannot import "
              "test.test_queue and test._test_multiprocessing with %s (%s: "
              "%s); on Debian it is the package libpython%d.%d-testsuite "
              "(scripts/deps installs it)"
              % (sys.executable, type(exc).__name__, exc,
                 sys.version_info[0], sys.version_info[1]), flush=True)
        sys.exit(1)
    raise

# What each left-out test checks that joinq's queue does not have.  Keys
# are Class.test (a class of this file); every one must still exist.
FEEDER = ("multiprocessing.Queue's own feeder thread (an item that cannot "
          "be pickled is dropped by that thread, put having returned); "
          "joinq's put raises TypeError at once for an item JSON cannot "
          "hold, and has no feeder thread")
FEEDER_HOOK = ("multiprocessing.queues.Queue's _on_queue_feeder_error, a "
               "hook of its feeder thread (the test builds that class "
               "itself); joinq has no feeder thread")
WEAKREF = ("weak references to Python objects: an item is a JSON value, "
           "sent to the daemon and decoded anew by get, so the queue never "
           "holds the caller's object (and the test's class C() instance "
           "is not JSON: TypeError at put)")
LEFT_OUT = {"SimpleQueueTest.test_references": WEAKREF}
for _method in ("Fork", "Spawn", "Forkserver"):
    LEFT_OUT["%sTestQueue.test_queue_feeder_donot_stop_onexc" % _method] = \
        FEEDER
    LEFT_OUT["%sTestQueue.test_queue_feeder_on_queue_feeder_error"
             % _method] = FEEDER_HOOK

# A test that has not ended in this many seconds is interrupted (the
# CPython tests wait without bounds, in get, put and join).
TEST_BOUND = 60 * jqtest.SLOW

DAEMON: jqtest.Daemon | None = None   # the run's joinqd (setUpModule)
_names = itertools.count(1)


def fresh(cls: type, maxsize: int = 0) -> joinq.Queue:
    """A new cls (joinq.Queue, joinq.JoinableQueue) on the run's daemon,
    under a name no other queue of the run has."""
    name = "cpython.%d.%d" % (os.getpid(), next(_names))
    return cls(name, maxsize, host=DAEMON.host, port=DAEMON.port)


def fresh_queue(maxsize: int = 0) -> joinq.Queue:
    """multiprocessing.Queue(maxsize), joinq's."""
    return fresh(joinq.Queue, maxsize)


def fresh_joinable(maxsize: int = 0) -> joinq.JoinableQueue:
    """multiprocessing.JoinableQueue(maxsize), joinq's."""
    return fresh(joinq.JoinableQueue, maxsize)


def setUpModule() -> None:
    global DAEMON
    DAEMON = jqtest.Daemon().start()
    signal.signal(signal.SIGALRM, _overrun)


def tearDownModule() -> None:
    # multiprocessing's helpers (the forkserver, the resource tracker)
    # stopped as CPython's own test modules stop them.
    multiprocessing.util._cleanup_tests()
    DAEMON.__exit__(None, None, None)


def _overrun(signum: int, frame: object) -> None:
    raise TimeoutError("the test still runs after %.0f s" % TEST_BOUND)


class Bounded(unittest.TestCase):
    """Each test interrupted (TimeoutError in the main thread) once it has
    run TEST_BOUND seconds."""

    def setUp(self) -> None:
        signal.alarm(int(TEST_BOUND))
        self.addCleanup(signal.alarm, 0)
        super().setUp()


# test.test_queue: the module's own concrete classes bind queue (for Full
# and Empty) and type2test.  queue here is the standard library's module,
# so that joinq must raise exactly queue.Full and queue.Empty.


class Queue(joinq.JoinableQueue):
    """joinq.JoinableQueue by the name basic_queue_test looks its expected
    order up by: queue.Queue, which is joinable (task_done, join)."""


class QueueTest(cpython_queue.BaseQueueTestMixin, Bounded):
    queue = queue

    def setUp(self) -> None:
        self.type2test = lambda maxsize=0: fresh(Queue, maxsize)
        super().setUp()


class SimpleQueueTest(cpython_queue.BaseSimpleQueueTest, Bounded):
    queue = queue

    def setUp(self) -> None:
        self.type2test = fresh_joinable
        super().setUp()


# test._test_multiprocessing: a class per start method, made as
# install_tests_in_module_dict makes them (the test class, then a mixin),
# with ProcessesMixin's Queue and JoinableQueue made joinq's.  A spawned
# or forkserver child imports this file again (as __mp_main__) to find the
# test class its target belongs to.  The test methods that call
# multiprocessing.Queue and multiprocessing.JoinableQueue themselves get
# joinq's too, so that they test joinq rather than the standard library.

class JoinqProcessesMixin(cpython_mp.ProcessesMixin):
    START_METHOD = ""
    Queue = staticmethod(fresh_queue)
    JoinableQueue = staticmethod(fresh_joinable)

    @classmethod
    def setUpClass(cls) -> None:
        multiprocessing.set_start_method(cls.START_METHOD, force=True)
        super().setUpClass()

    def setUp(self) -> None:
        patch = mock.patch.multiple(multiprocessing, Queue=fresh_queue,
                                    JoinableQueue=fresh_joinable)
        patch.start()
        self.addCleanup(patch.stop)
        super().setUp()


class ForkTestQueue(cpython_mp._TestQueue, JoinqProcessesMixin, Bounded):
    START_METHOD = "fork"


class SpawnTestQueue(cpython_mp._TestQueue, JoinqProcessesMixin, Bounded):
    START_METHOD = "spawn"


class ForkserverTestQueue(cpython_mp._TestQueue, JoinqProcessesMixin,
                          Bounded):
    START_METHOD = "forkserver"


class LeftOut(unittest.TestCase):
    """LEFT_OUT names only tests that exist (main sets FOUND)."""
    FOUND: set[str] = set()

    def test_left_out_tests_exist(self) -> None:
        self.assertEqual(sorted(set(LEFT_OUT) - self.FOUND), [],
                         "LEFT_OUT names tests this CPython does not have")


def short_id(test: unittest.TestCase) -> str:
    """Class.test of a test of this file."""
    return ".".join(test.id().split(".")[-2:])


def leave_out(suite: unittest.TestSuite) -> unittest.TestSuite:
    """suite without the LEFT_OUT tests, each named in a TAP comment."""
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(leave_out(test))
        elif short_id(test) in LEFT_OUT:
            LeftOut.FOUND.add(short_id(test))
            jqtest.diag("not run: %s: %s" % (short_id(test),
                                             LEFT_OUT[short_id(test)]))
        else:
            kept.addTest(test)
    return kept


if __name__ == "__main__":
    # Children import this file as __mp_main__: the forkserver once, so
    # that the children it forks have it already.
    multiprocessing.set_forkserver_preload(["__main__"])
    jqtest.main(leave_out)
