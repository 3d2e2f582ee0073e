"""joinq.Queue and joinq.JoinableQueue: the standard library's queues, the
queue itself held by joinqd.

Per process, each queue object keeps a small pool of TCP connections
(net.Pool); a call borrows one for its exchange, so threads never share a
stream and a blocked get holds only its own.  Everything per process lives
in a _ProcessState, made afresh in a child after fork (by the at-fork hook
and, as a second guard, by a pid check on every call): a child never
reads, writes, shuts down or closes the parent's connections; it closes
its copies of their file descriptors only.

task_done() with no argument costs no round trip of its own: the request
waits in the object's Book and goes out in the same write as the next
request on any connection of the object, its reply read (and checked)
before that request's.  If no request comes within `linger` seconds, the
process's flusher thread sends it (as nats.c's flusher does), so that an
idle consumer never holds up a join(); so does close(), and the process's
exit (atexit, and multiprocessing's exit for forked children, which skip
atexit).
"""
from __future__ import annotations

import atexit
import os
import queue as _stdqueue
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, Iterable, Iterator

from . import net
from .core import RESENDABLE, Book, Frames, QueueBase, Retry, Scope, Task, \
    check, delivered, get_result, join_result, put_chunks, put_replies, \
    put_result, release_order, task_id, wait_of
from .errors import CannotConnect, ConnectionLost, Error, OutcomeUnknown
from .settings import LINGER, Settings, seconds

UDP_WINDOW = 64         # put_many over UDP: datagrams awaiting a reply
UDP_IO_TIMEOUT = 5.0    # when io_timeout is None (libjoinq's UDP default)

_states: "weakref.WeakSet[_ProcessState]" = weakref.WeakSet()
_state_lock = threading.Lock()


class _ProcessState:
    """A queue object's connections and tasks in one process."""

    def __init__(self, settings: Settings, frames: Frames) -> None:
        self.pid = os.getpid()
        self.settings = settings
        self.frames = frames
        self.book = Book()
        self.pool = net.Pool(settings)
        self.udp: list[net.UdpSocket] = []
        self.udp_all: set[net.UdpSocket] = set()
        self.udp_lock = threading.Lock()
        _states.add(self)

    # ---- TCP -------------------------------------------------------------

    def exchange(self, ops: list[str], wait: float | None, op: str,
                 failover: bool = True) -> list[dict[str, Any]]:
        """Sends the waiting task_dones and ops in one write on a borrowed
        connection, and returns the ops' replies.  wait: the longest the
        ops themselves may wait (None: forever); a reply may take
        io_timeout more.  op names what ops are (for what may be sent
        again); failover is for a lone request, which goes to another
        daemon, when several are given, as libjoinq's do."""
        s = self.settings
        several = failover and len(s.addresses) > 1
        retry = Retry(s) if several else None
        after_failure = False
        timeout = None if wait is None or s.io_timeout is None \
            else wait + s.io_timeout
        while True:
            if retry is not None and retry.wait:
                time.sleep(retry.wait)
            if not ops and not self.book.pending:
                return []
            try:
                conn = self.pool.borrow(after_failure)
            except CannotConnect:
                if retry is not None and retry.again(round_failed=True):
                    after_failure = True
                    continue
                raise
            dones = self.book.take() if self.book.pending else []
            auth = None if conn.authed else self.frames.auth
            refused: list[int] = []
            try:
                refusal, replies = self._roundtrip(
                    conn, auth, dones, ops, timeout,
                    refused if several else None)
            except ConnectionLost as e:
                self.pool.discard(conn)
                self._unanswered(conn, dones, e)
                if retry is not None and \
                        (op in RESENDABLE or not conn.sent) and \
                        retry.again():
                    after_failure = True
                    continue
                if conn.sent and op not in RESENDABLE:
                    raise OutcomeUnknown(
                        "%s; the %s may or may not have taken effect"
                        % (e, op)) from None
                raise
            except BaseException as e:
                # Interrupted, or a reply that does not parse: the stream
                # is out of step.
                self.pool.discard(conn)
                self._unanswered(conn, dones, e)
                raise
            if refusal is not None:
                # Every request behind a refused auth got the same
                # refusal: nothing was done.
                self.pool.discard(conn)
                self.book.give_back(dones)
                if retry is not None and self._standby(refusal) and \
                        retry.again():
                    after_failure = True
                    continue
                check(refusal)
            if refused:
                self.book.give_back(refused)
            if retry is not None and len(ops) == 1 and \
                    replies[0].get("error") == "unavailable" and \
                    self._standby(replies[0], conn, timeout) and \
                    retry.again():
                self.pool.discard(conn)
                after_failure = True
                continue
            self.pool.give(conn)
            return replies

    def _roundtrip(self, conn: net.TcpConnection, auth: str | None,
                   dones: list[int], ops: list[str], timeout: float | None,
                   refused: list[int] | None
                   ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """One write, then the replies: the auth's (returned when it was
        refused, and nothing more read), the task_dones' (into the book;
        into refused when a standby refused them, if given), the ops'.
        conn.sent and conn.answered say how far it went."""
        conn.sent = conn.answered = 0
        if auth or dones:
            lines = [auth] if auth else []
            lines += [Frames.task_done(t) for t in dones]
            lines += ops
            data = "".join(lines)
        else:
            data = ops[0] if len(ops) == 1 else "".join(ops)
        conn.send(data.encode(), timeout)
        conn.sent = 1
        if auth:
            r = conn.reply(timeout)
            if not r["ok"]:
                return r, []
            conn.authed = True
        for tid in dones:
            r = conn.reply(timeout)
            conn.answered += 1
            if refused is not None and r.get("error") == "unavailable":
                refused.append(tid)       # nothing changed: send it again
            else:
                self.book.answered(tid, r)
        if len(ops) == 1:
            return None, [conn.reply(timeout)]
        return None, [conn.reply(timeout) for _ in ops]

    def _unanswered(self, conn: net.TcpConnection, dones: list[int],
                    why: BaseException) -> None:
        if conn.sent:
            self.book.lost(dones[conn.answered:], why)
        else:
            self.book.give_back(dones)

    def _standby(self, reply: dict[str, Any], conn: Any = None,
                 timeout: float | None = None) -> bool:
        """True if an unavailable reply came from a standby (it names the
        active daemon, or its ping says so): nothing was changed, and the
        request may go to another daemon."""
        if reply.get("error") != "unavailable":
            return False
        if reply.get("active"):
            self.pool.name_active(reply["active"])
            return True
        if conn is None:
            return True
        try:
            conn.send(b'{"op":"ping"}\n', timeout)
            return conn.reply(timeout).get("role") == "standby"
        except (ConnectionLost, Error):
            return True

    def flush(self) -> None:
        """Sends the waiting task_dones now; failures go to the book."""
        try:
            self.exchange([], 0, "task_done", failover=False)
        except Exception as e:                # noqa: BLE001 - kept, not lost
            self.book.lost(self.book.take(), e)

    # ---- UDP -------------------------------------------------------------

    def udp_puts(self, frames: list[str], wait: float | None
                 ) -> list[dict[str, Any] | None]:
        """Puts as datagrams; their replies by id (None for each with
        noreply).  Never sent twice: a put with no reply in time is
        OutcomeUnknown."""
        s = self.settings
        with self.udp_lock:
            sock = self.udp.pop() if self.udp else None
        if sock is None:
            sock = net.UdpSocket(s)
            with self.udp_lock:
                self.udp_all.add(sock)
        try:
            out = self._udp_exchange(sock, frames, wait)
        except BaseException:
            with self.udp_lock:
                self.udp_all.discard(sock)
            sock.close()
            raise
        with self.udp_lock:
            self.udp.append(sock)
        return out

    def _udp_exchange(self, sock: net.UdpSocket, frames: list[str],
                      wait: float | None) -> list[dict[str, Any] | None]:
        s = self.settings
        if s.noreply:
            for f in frames:
                sock.send(self.frames.udp_frame(f, 0, True).encode())
            return [None] * len(frames)
        io = s.io_timeout if s.io_timeout is not None else UDP_IO_TIMEOUT
        limit = None if wait is None else wait + io
        replies: list[dict[str, Any] | None] = [None] * len(frames)
        first = sock.next_id
        sock.next_id += len(frames)
        todo = 0
        sent = 0
        while todo < len(frames):
            while sent < len(frames) and sent - todo < UDP_WINDOW:
                sock.send(self.frames.udp_frame(frames[sent], first + sent,
                                                False).encode())
                sent += 1
            r = sock.reply(limit)
            if r is None:
                raise OutcomeUnknown(
                    "no reply from %s within %.1f s: the put may or may not "
                    "have been queued (it is not sent again: it would be "
                    "two tasks)" % (sock.peer, limit or 0))
            i = r.get("id")
            if isinstance(i, int) and first <= i < first + len(frames) \
                    and replies[i - first] is None:
                replies[i - first] = r
                while todo < len(frames) and replies[todo] is not None:
                    todo += 1
        return replies

    # ---- the end ---------------------------------------------------------

    def close(self) -> None:
        self.pool.close()
        with self.udp_lock:
            socks, self.udp_all, self.udp = self.udp_all, set(), []
        for sock in socks:
            sock.close()

    def forget(self) -> None:
        """In a child after fork: lets go of the parent's sockets (see
        net.Pool.forget); the tasks and task_dones were the parent's."""
        self.pool.forget()
        for sock in list(self.udp_all):
            sock.forget()
        self.udp_all, self.udp = set(), []


class _Flusher:
    """The process's thread that sends the deferred task_dones nobody else
    carried within their queue's linger.  It is woken when it sleeps with
    no deadline, looks when the oldest waiting task_done is due, and after
    a look that found none waiting it looks once more a linger later
    before sleeping again: a consumer's next request takes its task_done
    first, and waking the thread for each would cost more (the GIL) than
    the flush saves."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.states: dict[_ProcessState, None] = {}
        self.thread: threading.Thread | None = None
        self.wake_at = float("inf")      # when the thread looks next
        self.tick = LINGER

    def schedule(self, st: _ProcessState) -> None:
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

    def _due(self) -> list[_ProcessState]:
        quiet = 0
        with self.cond:
            while True:
                soonest = float("inf")
                due = []
                for st in list(self.states):
                    left = st.book.due(st.settings.linger)
                    if left <= 0 or left == float("inf"):
                        del self.states[st]
                        if left <= 0:
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
                st.flush()


_flusher = _Flusher()


def _after_fork_in_child() -> None:
    """The at-fork hook: the child starts with no connection, no flusher
    and no lock of the parent's (another thread may have held one)."""
    global _flusher, _state_lock, _states
    _state_lock = threading.Lock()
    _flusher = _Flusher()
    old, _states = list(_states), weakref.WeakSet()
    for st in old:
        st.forget()


def _flush_at_exit() -> None:
    """Sends every waiting task_done before the process's sockets close
    (else their tasks would come back to their queues), and says so on
    stderr when one failed, since no later call will raise it."""
    for st in list(_states):
        if st.pid != os.getpid():
            continue
        st.flush()
        for err in st.book.failures:
            sys.stderr.write("joinq: at exit: %s\n" % err)
        st.book.failures = []


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


class Queue(QueueBase):
    """A queue held by joinqd, used as ``multiprocessing.Queue``: ``get``
    removes an item for good (its task is finished for you, its
    task_done sent with the next request).  JoinableQueue adds task_done
    and join.

    ``name``: the queue's name (1 to 128 of A-Z a-z 0-9 _ . : -).
    ``maxsize``: > 0 declares the queue with that bound (a ``declare``;
    ``joinq.Conflict`` if the queue exists with another one, or the
    daemon's configuration names another); 0 or less declares nothing,
    and the queue keeps the bound the daemon gives it.  ``max_deliveries``
    and ``dead_letter`` declare those settings too.

    ``host``: None ($JOINQ_HOST, else 127.0.0.1), "HOST", "HOST:PORT",
    "[IPV6]:PORT", or several, "a:7477,b:7477" or a list, tried in turn
    as the joinq CLI does (joinq(1), -H).  ``port``: for addresses without
    one (None: $JOINQ_PORT, else 7477).  ``token``: the daemon's token;
    ``token_file``: a file holding it (its first line, blanks trimmed, as
    joinq --token-file reads it); neither: $JOINQ_TOKEN, else none.
    ``ssl``: True or an ssl.SSLContext for a daemon's TLS port.

    ``udp=True``: puts go as UDP datagrams, every other call over TCP (a
    UDP get always has a lease, and a lost reply would hide its task until
    the lease ran out).  A put whose reply does not come within its own
    wait plus io_timeout raises OutcomeUnknown and is not sent again (it
    would be two tasks).  ``noreply=True`` (with udp) sends puts without
    asking for a reply: fire and forget, no Full, no error, at most one
    delivery of each datagram.

    ``serializer``: "json" (items are JSON values: a tuple comes back a
    list, an object JSON cannot hold is a TypeError at put) or "pickle"
    (any picklable object; off by default because unpickling runs code:
    see PickleSerializer).  ``io_timeout``: seconds a reply may take
    beyond the op's own wait (None: no limit); ``connect_timeout``;
    ``linger``: seconds a deferred task_done waits for a request to ride
    with before the flusher thread sends it alone.

    Safe to use from many threads (each call borrows a connection of its
    own); pickles (to its settings, token included) so that it passes to
    multiprocessing's Process and Pool under fork, spawn and forkserver,
    each process connecting on its own.  ``close()`` (or the end of a
    ``with`` block) sends what waits and closes the connections: tasks
    got without a lease and not finished go back to their queue.
    """

    def _setup(self, settings: Settings, maxsize: int) -> None:
        super()._setup(settings, maxsize)
        self._st: _ProcessState | None = None

    def _declare_first(self, frame: str) -> None:
        try:
            check(self._call(frame, 0, "declare"))
        except BaseException:
            self.close()
            raise

    # ---- plumbing --------------------------------------------------------

    def _state(self, raise_failed: bool = True) -> _ProcessState:
        """This process's state, made afresh after a fork; raises the
        failure of a deferred task_done first (see TaskDoneError)."""
        st = self._st
        if st is not None and st.pid == os.getpid():
            if raise_failed:
                st.book.raise_failed()
            return st
        with _state_lock:
            if self._closed:
                raise ValueError("%r is closed" % self)
            st = self._st
            if st is None or st.pid != os.getpid():
                if st is not None:
                    st.forget()       # forked without the at-fork hook
                st = self._st = _ProcessState(self._settings, self._frames)
        return st

    def _call(self, frame: str, wait: float | None, op: str
              ) -> dict[str, Any]:
        return self._state().exchange([frame], wait, op)[0]

    def _finish_later(self, st: _ProcessState, tid: int) -> None:
        if st.book.defer(tid):
            _flusher.schedule(st)

    # ---- the standard library's methods ----------------------------------

    def put(self, item: Any, block: bool = True,
            timeout: float | None = None) -> None:
        """Puts item at the tail, as Python's put: with block false or a
        timeout, raises queue.Full if the queue stays full; a negative
        timeout is a ValueError.  item must be a JSON value (a tuple
        comes back a list; anything else is a TypeError, raised before
        anything is sent) unless the queue uses serializer="pickle"."""
        block, timeout = wait_of(block, timeout)
        frame = self._frames.put(item, block, timeout)
        wait = timeout if block else 0
        if self._settings.udp:
            reply = self._state().udp_puts([frame], wait)[0]
            if reply is not None:
                put_result(reply, _stdqueue.Full)
            return
        put_result(self._call(frame, wait, "put"), _stdqueue.Full)

    def put_nowait(self, item: Any) -> None:
        """put(item, False)."""
        self.put(item, False)

    def get_task(self, block: bool = True, timeout: float | None = None
                 ) -> Task:
        """Like get, but returns the Task: item, id and deliveries."""
        return self._get_task(block, timeout, None)

    def _get_task(self, block: Any, timeout: Any, lease: Any) -> Task:
        block, timeout = wait_of(block, timeout)
        lease = seconds(lease, "lease", positive=True)
        st = self._state()
        reply = st.exchange([self._frames.get(block, timeout, lease)],
                            timeout if block else 0, "get")[0]
        task = get_result(reply, _stdqueue.Empty)
        if task is None:
            raise _stdqueue.Empty
        if self._joinable:
            st.book.got(task.id)
        else:
            self._finish_later(st, task.id)
        return task._replace(item=self._decode(task.item))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Removes and returns the item at the head, as Python's get: with
        block false or a timeout, raises queue.Empty if none comes; a
        negative timeout is a ValueError.  JSON items come back as JSON
        gives them: lists for tuples, str keys."""
        return self.get_task(block, timeout).item

    def get_nowait(self) -> Any:
        """get(False)."""
        return self.get(False)

    def qsize(self) -> int:
        """The number of items queued (not those delivered and undone)."""
        return check(self._call(self._frames.op("qsize"), 0, "qsize"))[
            "qsize"]

    def empty(self) -> bool:
        """True if no item is queued."""
        return check(self._call(self._frames.op("empty"), 0, "empty"))[
            "empty"]

    def full(self) -> bool:
        """True if the queue holds maxsize items (never when unbounded)."""
        return check(self._call(self._frames.op("full"), 0, "full"))["full"]

    def close(self) -> None:
        """Sends the task_dones still waiting and closes this process's
        connections; every later call raises ValueError.  Tasks this
        object got without a lease and did not finish go back to the head
        of their queue (the protocol's rule).  Raises the TaskDoneError of
        a deferred task_done that failed and was not raised yet."""
        with _state_lock:
            st, self._st = self._st, None
            self._closed = True
        if st is None or st.pid != os.getpid():
            return
        st.flush()
        st.close()
        st.book.raise_failed()

    def flush(self) -> None:
        """Sends the task_dones still waiting now, and raises TaskDoneError
        if one failed (this one or an earlier one not raised yet)."""
        st = self._state()
        st.flush()
        st.book.raise_failed()

    def join_thread(self) -> None:
        """multiprocessing.Queue's: nothing to wait for here (a put is on
        the daemon when it returns)."""

    def cancel_join_thread(self) -> None:
        """multiprocessing.Queue's: nothing to cancel here."""

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- joinq's own ---------------------------------------------------------

    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = None) -> list[int]:
        """Puts each item in turn, as put(item, block, timeout) would, many
        requests to a write (pipelined), and returns their task ids.  On
        the first failure nothing more is sent; the replies to what was
        sent are read, and the failure (queue.Full, TypeError, an Error)
        is raised with an attribute ``tasks``: for each item sent, its
        task id or None if it was not queued."""
        block, timeout = wait_of(block, timeout)
        wait = timeout if block else 0
        tasks: list[int | None] = []
        for chunk, failure in put_chunks(
                lambda item: self._frames.put(item, block, timeout), items):
            if chunk:
                st = self._state()
                replies = st.udp_puts(chunk, wait) if self._settings.udp \
                    else st.exchange(chunk, wait, "put", failover=False)
                failure = put_replies(replies, tasks, _stdqueue.Full) or \
                    failure
            if failure is not None:
                failure.tasks = tasks              # type: ignore[attr-defined]
                raise failure
        return tasks        # type: ignore[return-value]

    def consume(self, prefetch: int = 64, *, timeout: float | None = None,
                lease: float | None = None) -> "Consumer":
        """Items one by one, fast: ``for item in q.consume():``.  Each
        write asks for up to prefetch items at once (the first get waits
        up to timeout, the others not), and each item's task is finished
        when the loop asks for the next one, the task_done going out with
        the next request.  The loop ends when no item came within timeout
        (None: it waits for ever).  Left early, by break or an exception
        in its body, it releases the item in hand and those fetched and
        not yet handed out, back to the head of the queue in their order
        (they count as delivered: ``deliveries`` grows).  A break lands
        when the generator is dropped; ``with q.consume() as items:``
        makes it certain.  q.task_done() in the body finishes the item in
        hand at once.  Prefetched tasks are held by this consumer: other
        consumers do not get them meanwhile."""
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or \
                prefetch < 1:
            raise ValueError("prefetch must be an int >= 1")
        return Consumer(self, prefetch, seconds(timeout, "timeout"),
                        seconds(lease, "lease", positive=True))

    def declare(self, maxsize: int | None = None,
                max_deliveries: int | None = None,
                dead_letter: str | None = None) -> dict[str, Any]:
        """Declares the queue with the settings named (PROTOCOL.md
        "declare"); returns the daemon's reply (created, maxsize,
        max_deliveries, dead_letter).  joinq.Conflict if a setting named
        differs from the queue's own."""
        frame = self._frames.declare(maxsize, max_deliveries, dead_letter)
        return check(self._call(frame, 0, "declare"))

    def purge(self) -> int:
        """Removes every queued item (not those delivered or delayed), each
        finished; returns how many."""
        return check(self._call(self._frames.op("purge"), 0, "purge"))[
            "purged"]

    def delete(self) -> bool:
        """Removes the queue and its settings on the daemon; False if it did
        not exist.  joinq.Conflict while it has unfinished tasks.  The
        name may be used again: a put, get or declare makes a new queue."""
        return check(self._call(self._frames.op("delete"), 0, "delete"))[
            "deleted"]

    def stats(self) -> dict[str, Any]:
        """This queue's figures from the daemon's stats (qsize, maxsize,
        unfinished, inflight, delayed, puts, gets, task_dones, releases,
        redeliveries, dead_lettered); {} if the queue does not exist."""
        reply = check(self._call('{"op":"stats"}\n', 0, "stats"))
        return reply.get("queues", {}).get(self._settings.name, {})

    def ping(self) -> dict[str, Any]:
        """The daemon's ping reply (version, protocol, role)."""
        return check(self._call('{"op":"ping"}\n', 0, "ping"))


class JoinableQueue(Queue):
    """A queue held by joinqd, used as ``multiprocessing.JoinableQueue`` or
    ``queue.Queue``: every item put is a task, unfinished until a
    task_done; join() waits until none is.  See Queue for the arguments.

    get() delivers a task and leaves it in flight until task_done(): if
    this process closes the queue or exits first, a task got without a
    lease goes back to the head of its queue, to be delivered again (with
    ``deliveries`` one higher); with ``get(lease=S)`` it comes back when
    the lease runs out, whatever becomes of the connection.
    """

    _joinable = True

    def get_task(self, block: bool = True, timeout: float | None = None,
                 *, lease: float | None = None) -> Task:
        """Like get, but returns the Task: item, id (for task_done(task)
        and release(task), from any process) and deliveries."""
        return self._get_task(block, timeout, lease)

    def get(self, block: bool = True, timeout: float | None = None, *,
            lease: float | None = None) -> Any:
        """Removes and returns the item at the head, as Python's get (see
        Queue.get); its task stays unfinished until task_done.  lease:
        seconds after which the task returns to the queue if not finished
        (without one it returns when this object's connections close)."""
        return self.get_task(block, timeout, lease=lease).item

    def task_done(self, task: Task | int | None = None) -> None:
        """Finishes a task.  With no argument, as Python's task_done: the
        oldest task this object got in this process and has not finished
        (ValueError if there is none); its request goes out with this
        object's next request, or within linger seconds from the flusher
        thread, and if it fails, the next call on this object raises
        joinq.TaskDoneError.  With a task (a Task or its id, got by any
        process) it is sent at once and joinq.UnknownTask raised if the
        task is not delivered and undone."""
        st = self._state()
        if task is None:
            self._finish_later(st, st.book.oldest())
            return
        tid = task_id(task)
        st.book.drop(tid)
        check(st.exchange([Frames.task_done(tid)], 0, "task_done")[0])

    def release(self, task: Task | int, delay: float | None = None) -> None:
        """Gives a delivered task back unfinished: to the head of its queue,
        or after delay seconds.  joinq.UnknownTask if it is not delivered
        and undone."""
        tid = task_id(task)
        frame = Frames.release(tid, seconds(delay, "delay"))
        st = self._state()
        st.book.drop(tid)
        check(st.exchange([frame], 0, "release")[0])

    def join(self, timeout: float | None = None) -> None:
        """Blocks until every task of the queue is finished, as Python's
        join.  With a timeout, raises joinq.JoinTimeout (a TimeoutError) if
        tasks are still unfinished when it runs out; a negative timeout is
        a ValueError."""
        t = seconds(timeout, "timeout")
        join_result(self._call(self._frames.join(t), t, "join"))

    def task(self, block: bool = True, timeout: float | None = None, *,
             lease: float | None = None) -> "TaskScope":
        """``with q.task() as item:`` gets an item (as get(block, timeout,
        lease=lease)); the task is finished when the block ends normally,
        and released to the head of the queue when it raises.  Its
        task_done is sent before the block is left, not deferred: a
        function built on it (a Pool worker, say) has finished its task
        when it returns, even if its process is killed next.  The Task is
        the scope's ``task`` attribute."""
        return TaskScope(self, block, timeout, lease)


class TaskScope(Scope):
    """See JoinableQueue.task."""

    def __enter__(self) -> Any:
        self.task = self.q.get_task(self.block, self.timeout,
                                    lease=self.lease)
        return self.task.item

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert self.task is not None
        if exc_type is None:
            self.q.task_done(self.task)
            return False
        try:
            self.q.release(self.task)
        except Error:
            # The body's exception matters more; the task comes back on
            # its own (lease, or its connection closing).
            pass
        return False


class Consumer:
    """The iterator q.consume() returns (see Queue.consume); also a
    context manager that releases what it holds on exit."""

    def __init__(self, q: Queue, prefetch: int, timeout: float | None,
                 lease: float | None) -> None:
        self._gen = self._run(q, prefetch, timeout, lease)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def _run(q: Queue, prefetch: int, timeout: float | None,
             lease: float | None) -> Iterator[Any]:
        st = q._state()
        joinable = q._joinable
        frames = q._frames
        ahead: deque[Task] = deque()
        current = 0
        refill = [frames.get(True, timeout, lease)] + \
            [frames.get(False, None, lease)] * (prefetch - 1)
        try:
            while True:
                if st.pid != os.getpid():
                    raise RuntimeError("a consume() loop cannot go on in a "
                                       "child process: its tasks are the "
                                       "parent's")
                if current:
                    if st.book.drop(current):
                        q._finish_later(st, current)
                    current = 0
                if not ahead:
                    tasks, failure = delivered(
                        q._state().exchange(refill, timeout, "get",
                                            failover=False), _stdqueue.Empty)
                    ahead.extend(tasks)
                    if failure is not None:
                        raise failure
                    if not ahead:
                        return
                task = ahead.popleft()
                if joinable:
                    st.book.got(task.id)
                    current = task.id
                else:
                    q._finish_later(st, task.id)
                yield q._decode(task.item)
        except GeneratorExit:
            Consumer._release(q, st, current, ahead)
            raise
        except BaseException:
            try:
                Consumer._release(q, st, current, ahead)
            except Exception:       # noqa: BLE001 - the first error wins
                pass
            raise

    @staticmethod
    def _release(q: Queue, st: _ProcessState, current: int,
                 ahead: deque[Task]) -> None:
        """Gives back the task in hand and those fetched ahead."""
        if st.pid != os.getpid() or q._closed:
            return
        tids = release_order(st.book, current, ahead)
        if tids:
            st.exchange([Frames.release(t, None) for t in tids],
                        0, "release", failover=False)
