"""What runs beside the caller in each process that uses the blocking
queues (queues.py): the flusher thread, which sends the task_dones and
reads the put replies nobody else carried within a queue's linger, and
the hooks at fork (the child lets go of everything of the parent's) and
at exit (what waits is sent before the sockets close).  A state here is
a queues._ProcessState: due(), flush(), forget(), pid and book."""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from typing import Any, Callable, Iterable

from .errors import DeferredError
from .settings import LINGER


class Flusher:
    """The process's thread that sends the deferred task_dones nobody else
    carried within their queue's linger.  It is woken when it sleeps with
    no deadline, looks when the oldest waiting task_done is due, and after
    a look that found none waiting it looks once more a linger later
    before sleeping again: a consumer's next request takes its task_done
    first, and waking the thread for each would cost more (the GIL) than
    the flush saves."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.states: dict[Any, None] = {}
        self.thread: threading.Thread | None = None
        self.wake_at = float("inf")      # when the thread looks next
        self.tick = LINGER

    def schedule(self, st: Any) -> None:
        at = time.monotonic() + st.settings.linger
        with self.cond:
            self.states[st] = None
            self.tick = max(st.settings.linger, 0.0005)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="joinq-flusher")
                self.thread.start()
            if at < self.wake_at:
                self.wake_at = at
                self.cond.notify()

    def _due(self) -> list[Any]:
        quiet = 0
        with self.cond:
            while True:
                soonest = float("inf")
                due = []
                for st in list(self.states):
                    left = st.due()
                    if left == float("inf"):
                        # Gone, unless one came meanwhile: schedule() does
                        # not wake a state this dict holds.
                        del self.states[st]
                        left = st.due()
                        if left == float("inf"):
                            continue
                        self.states[st] = None
                    if left <= 0:
                        del self.states[st]
                        due.append(st)
                    else:
                        soonest = min(soonest, left)
                if due:
                    return due
                quiet = quiet + 1 if soonest == float("inf") else 0
                wait = soonest if soonest != float("inf") else \
                    None if quiet > 1 else self.tick
                self.wake_at = float("inf") if wait is None \
                    else time.monotonic() + wait
                self.cond.wait(wait)

    def _run(self) -> None:
        while True:
            for st in self._due():
                try:
                    st.flush()
                except Exception as e:       # noqa: BLE001 - kept, not lost
                    st.book.failed(DeferredError("the flusher failed: %r"
                                                 % (e,)))


flusher = Flusher()
states: "weakref.WeakSet[Any]" = weakref.WeakSet()   # every _ProcessState
state_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """The at-fork hook: the child starts with no connection, no flusher
    and no lock of the parent's (another thread may have held one)."""
    global flusher, state_lock, states
    state_lock = threading.Lock()
    flusher = Flusher()
    old, states = list(states), weakref.WeakSet()
    for st in old:
        st.forget()


# More to send at exit: aio.py's states whose event loop ended.
exit_flushers: list[Callable[[], None]] = []


def flush_states(todo: Iterable[Any], flush: Callable[[Any], None]) -> None:
    """Flushes each state of this process in todo, and says on stderr
    what failed, since no later call will raise it."""
    for st in list(todo):
        if st.pid != os.getpid():
            continue
        flush(st)
        for err in st.book.failures:
            sys.stderr.write("joinq: at exit: %s\n" % err)
        st.book.failures = []


def _flush_at_exit() -> None:
    """Sends every waiting task_done and reads the replies of the puts
    that did not wait, before the process's sockets close (else their
    tasks would come back to their queues)."""
    flush_states(states, lambda st: st.flush())
    for flush in exit_flushers:
        flush()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_at_exit)
try:
    # A child that multiprocessing forks ends with os._exit, skipping
    # atexit: its own exit function runs the finalizers registered after
    # the fork.
    import multiprocessing.util as _mputil

    class _ExitHook:
        pass

    _exit_hook = _ExitHook()
    _mputil.register_after_fork(
        _exit_hook, lambda _: _mputil.Finalize(None, _flush_at_exit,
                                               exitpriority=100))
except ImportError:             # pragma: no cover - a Python without it
    pass
