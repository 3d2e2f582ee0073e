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
is written at once on an idle connection of the object (the one its get
used, in a single thread), so that the daemon has it even if the process
is killed next, and its reply is read (and checked) by the next exchange
on that connection, before that exchange's own, or after `linger`
seconds by the process's flusher thread (background.py), or by close()
and the process's exit.  A consume() loop's task_done and a Queue's get's
wait in the object's Book instead, and go out in the same write as the
next request, or from the flusher within `linger` seconds.

A blocking put on an unbounded queue does not wait for its reply either
(put_later): the replies are read by the object's next other call, or
by the flusher.
"""
from __future__ import annotations

import os
import queue as _stdqueue
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from . import background, net
from .codec import parse
from .core import PUT_OK, Book, Frames, QueueBase, Scope, Task, check, \
    decoded, delivered, get_result, join_result, put_chunks, put_replies, \
    next_want, put_result, refill, release_order, task_id, wait_of
from .errors import ConnectionLost, Error, OutcomeUnknown, PutError, \
    from_reply
from .exchange import BORROW, ROUNDTRIP, URECV, USEND, Exchanger, Steps
from .settings import Settings, seconds

PIPE_WINDOW = 256       # puts written before their replies are read


class _ProcessState(Exchanger):
    """A queue object's connections and tasks in one process; it drives
    the exchanges (exchange.py) with blocking calls."""

    def __init__(self, settings: Settings, frames: Frames) -> None:
        self.pid = os.getpid()
        self.settings = settings
        self.frames = frames
        self.book = Book()
        self.pool = net.Pool(settings)
        self.udp: list[net.UdpSocket] = []
        self.udp_all: set[net.UdpSocket] = set()
        self.udp_lock = threading.Lock()
        # Puts that do not wait for their reply (put_later): on a
        # connection of their own, the pipe.  bounded: None until known.
        self.bounded: bool | None = True if len(settings.addresses) > 1 \
            else None
        self.pipe: net.TcpConnection | None = None
        self.pipe_lock = threading.Lock()
        self.unacked = 0
        self.pipe_auth = False          # an auth reply comes first
        self.pipe_since = 0.0           # when the last put went
        self.owed_since = 0.0           # when the last done_now went
        background.states.add(self)

    def give(self, conn: net.TcpConnection) -> None:
        self.pool.give(conn)

    def discard(self, conn: net.TcpConnection) -> None:
        self.pool.discard(conn)

    def name_active(self, active: Any) -> None:
        self.pool.name_active(active)

    def run(self, steps: Steps) -> Any:
        """Drives an exchange's steps with blocking calls."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None \
                    else steps.throw(error)
            except StopIteration as done:
                return done.value
            value = error = None
            try:
                kind = step[0]
                if kind == ROUNDTRIP:
                    step[1].roundtrip(step[2], step[3], step[4])
                elif kind == BORROW:
                    value = self.pool.borrow(step[1])
                elif kind == URECV:
                    value = step[1].reply(step[2])
                elif kind == USEND:
                    step[1].send(step[2])
                else:
                    time.sleep(step[1])
            except BaseException as e:
                error = e

    def exchange(self, ops: list[str], wait: float | None, op: str,
                 failover: bool = True) -> list[dict[str, Any]]:
        """See Exchanger.steps."""
        return self.run(self.steps(ops, wait, op, failover))

    def flush(self) -> None:
        """Sends the waiting task_dones now and reads the replies of the
        puts and task_dones that did not wait; failures go to the book."""
        self.ack()
        try:
            self.exchange([], 0, "task_done", failover=False)
        except Exception as e:                # noqa: BLE001 - kept, not lost
            self.book.lost(self.book.take(), e)
        self._read_owed()

    def _owing(self) -> bool:
        with self.pool.lock:
            return any(c.owed for c in self.pool.idle)

    def _read_owed(self) -> None:
        """Reads the replies of the task_dones written without waiting on
        the idle connections."""
        with self.pool.lock:
            owing = [c for c in self.pool.idle if c.owed]
            self.pool.idle = [c for c in self.pool.idle if not c.owed]
        for conn in owing:
            tids, conn.owed, conn.lines = conn.owed, [], []
            try:
                conn.roundtrip(b"", self.settings.io_timeout, len(tids))
            except Exception as e:            # noqa: BLE001 - kept, not lost
                self.discard(conn)
                self.settle(conn, None, tids, None, e)
                continue
            self.settle(conn, None, tids, None)
            self.give(conn)

    def _send(self, conn: net.TcpConnection, data: bytes, what: str,
              broke: Callable[[BaseException], None]) -> None:
        """Writes data without waiting for its reply; on a failure calls
        broke(e) and raises, a lost connection as OutcomeUnknown (what was
        written may or may not have taken effect)."""
        try:
            conn.send(data, self.settings.io_timeout)
        except BaseException as e:
            broke(e)
            if isinstance(e, ConnectionLost):
                raise OutcomeUnknown("%s; the %s may or may not have taken "
                                     "effect" % (e, what)) from None
            raise

    def done_now(self, tid: int) -> None:
        """Writes task_done(tid) on an idle connection (the one that got
        it, unless another thread took that one) and returns: its reply is
        read by the next exchange on that connection, or the flusher."""
        frame = Frames.task_done(tid)
        conn = self.pool.borrow()
        if not conn.authed and self.frames.auth:
            self.give(conn)               # a new connection: rare
            check(self.exchange([frame], 0, "task_done")[0])
            return
        self._send(conn, frame.encode(), "task_done",
                   lambda e: self.discard(conn))
        conn.owed.append(tid)
        self.owed_since = time.monotonic()
        self.give(conn)
        if self not in background.flusher.states:
            background.flusher.schedule(self)

    def due(self) -> float:
        """Seconds until the flusher should flush (inf: nothing waits)."""
        left = self.book.due(self.settings.linger)
        if self.unacked:
            left = min(left, self.pipe_since + self.settings.linger -
                       time.monotonic())
        if self._owing():
            left = min(left, self.owed_since + self.settings.linger -
                       time.monotonic())
        return left

    # ---- puts that do not wait ----------------------------------------------

    def put_later(self, frame: str) -> None:
        """Writes a blocking put on an unbounded queue and returns: its
        reply is read by the next other call (before it sends anything),
        when PIPE_WINDOW are unread, or by the flusher; a failure is a
        PutError then.  Puts keep their order; any later call of the
        object sees them done."""
        with self.pipe_lock:
            if self.unacked >= PIPE_WINDOW:
                self._ack()
            conn = self.pipe
            if conn is None:
                conn = self.pipe = self.pool.connect()
            data = frame.encode()
            if not conn.authed and self.frames.auth:
                data = self.frames.auth.encode() + data
                conn.authed = self.pipe_auth = True
            self._send(conn, data, "put", self._pipe_broke)
            first = not self.unacked
            self.unacked += 1
            self.pipe_since = time.monotonic()
        if first and self not in background.flusher.states:
            background.flusher.schedule(self)

    def ack(self) -> None:
        """Reads the replies of the puts that did not wait."""
        if self.unacked:
            with self.pipe_lock:
                self._ack()

    def _ack(self) -> None:
        conn, n = self.pipe, self.unacked
        if not n or conn is None:
            return
        io = self.settings.io_timeout
        failed, first = 0, None
        try:
            if self.pipe_auth:
                self.pipe_auth = False
                r = parse(conn.reply(io))
                if not r["ok"]:
                    conn.authed = False
                    failed, first = n, r
            while self.unacked:
                line = conn.reply(io)
                self.unacked -= 1
                if not line.startswith(PUT_OK) and first is None:
                    first = parse(line)
                    failed += 1
                elif not line.startswith(PUT_OK):
                    failed += 1
            broke = None
        except (ConnectionLost, Error) as e:
            broke = e
        except BaseException as e:            # interrupted: out of step
            self._pipe_broke(e)
            raise
        if failed:
            err = from_reply(first)
            self.book.failed(PutError(
                "%d of %d puts sent without waiting failed: %s"
                % (min(failed, n), n, err.message), err.code, first))
        if broke is not None:
            self._pipe_broke(broke)

    def _pipe_broke(self, why: Exception) -> None:
        if self.pipe is not None:
            self.pool.discard(self.pipe)
            self.pipe = None
        n, self.unacked, self.pipe_auth = self.unacked, 0, False
        if n:
            self.book.failed(PutError(
                "%d puts sent without waiting may or may not have been "
                "queued: %s" % (n, why)))

    def udp_puts(self, frames: list[str], wait: float | None
                 ) -> list[dict[str, Any] | None]:
        """See Exchanger.udp_steps; a socket of the object's own."""
        with self.udp_lock:
            sock = self.udp.pop() if self.udp else None
        if sock is None:
            sock = net.UdpSocket(self.settings)
            with self.udp_lock:
                self.udp_all.add(sock)
        try:
            out = self.run(self.udp_steps(sock, frames, wait))
        except BaseException:
            with self.udp_lock:
                self.udp_all.discard(sock)
            sock.close()
            raise
        with self.udp_lock:
            self.udp.append(sock)
        return out

    def close(self) -> None:
        with self.pipe_lock:
            if self.pipe is not None:
                self.pool.discard(self.pipe)
                self.pipe = None
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


class Queue(QueueBase):
    """A queue held by joinqd, used as ``multiprocessing.Queue``: ``get``
    removes an item for good (its task is finished for you, its
    task_done sent with the next request).  JoinableQueue adds task_done
    and join.

    ``name``: the queue's name (1 to 128 of A-Z a-z 0-9 _ . : -); an
    int in its place is the maxsize of the queue "default", so that
    ``JoinableQueue(10)`` reads as the standard library's.
    ``maxsize``: > 0 declares the queue with that bound (a ``declare``;
    ``joinq.Conflict`` if the queue exists with another one, or the
    daemon's configuration names another); 0 or less declares nothing,
    and the queue keeps the bound the daemon gives it.  ``max_deliveries``
    and ``dead_letter`` declare those settings too.

    ``host``: None ($JOINQ_HOST, else 127.0.0.1), "HOST", "HOST:PORT",
    "[IPV6]:PORT", or several, "a:7477,b:7477" or a list, tried in turn
    as the joinq CLI does (joinq(1), -H): a call moves to another daemon
    when its connection is lost or a standby refuses it; a get, qsize,
    join (any call that changes nothing) is sent again there, while a
    put, task_done, release, purge or delete whose reply was lost raises
    OutcomeUnknown.  ``port``: for addresses without one (None:
    $JOINQ_PORT, else 7477).  ``token``: the daemon's token;
    ``token_file``: a file holding it (its first line, blanks trimmed, as
    joinq --token-file reads it); neither: $JOINQ_TOKEN, else none.
    ``ssl``: TLS to the daemon's TLS port (default port 7478): True (the
    system's CAs, or $JOINQ_CACERT; a client certificate from $JOINQ_CERT
    and $JOINQ_KEY), a joinq.TLS(cafile=, certfile=, keyfile=,
    server_name=), or an ssl.SSLContext (which does not pickle); None
    (the default) is True when $JOINQ_TLS is 1; False is plain TCP.  The
    daemon's name is verified.

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
    ``linger`` (5 ms): seconds before the flusher thread reads the
    replies of the puts and task_dones that did not wait, and sends a
    deferred task_done (a consume() loop's, a Queue get's) that no
    request carried.  The object's
    ``maxsize`` attribute is the maxsize given.  Failures other than
    Python's own are joinq.Error (see joinq.errors).

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

    # ---- plumbing -----------------------------------------------------------

    def _state(self, raise_failed: bool = True, ack: bool = True
               ) -> _ProcessState:
        """This process's state, made afresh after a fork.  First it reads
        the replies of the puts that did not wait (unless ack is false),
        and raises the failure of a request that did not wait (see
        DeferredError)."""
        st = self._st
        if st is not None and st.pid == os.getpid():
            if ack and st.unacked:
                st.ack()
            if raise_failed:
                st.book.raise_failed()
            return st
        with background.state_lock:
            if self._closed:
                raise ValueError("%r is closed" % self)
            st = self._st
            if st is None or st.pid != os.getpid():
                if st is not None:
                    st.forget()       # forked without the at-fork hook
                st = self._st = _ProcessState(self._settings, self._frames)
                if self.maxsize > 0:
                    st.bounded = True
        return st

    def _call(self, frame: str, wait: float | None, op: str
              ) -> dict[str, Any]:
        return self._state().exchange([frame], wait, op)[0]

    def _finish_later(self, st: _ProcessState, tid: int) -> None:
        if st.book.defer(tid) and st not in background.flusher.states:
            background.flusher.schedule(st)

    # ---- the standard library's methods -------------------------------------

    def put(self, item: Any, block: bool = True,
            timeout: float | None = None) -> None:
        """Puts item at the tail, as Python's put: with block false or a
        timeout, raises queue.Full if the queue stays full; a negative
        timeout is a ValueError.  item must be a JSON value (a tuple
        comes back a list; anything else is a TypeError, raised before
        anything is sent) unless the queue uses serializer="pickle".

        A blocking put without a timeout on an unbounded queue (its bound
        is learnt with the object's first put in each process) returns
        once its request is written, as multiprocessing's put returns
        before its feeder thread writes: the puts of an object keep their
        order, every later call of the object sees them queued, and one
        that failed is raised as joinq.PutError by the object's next call
        (or close(), or written to stderr at exit).  On a bounded queue,
        or with several addresses, put waits for its reply."""
        block, timeout = wait_of(block, timeout)
        frame = self._frames.put(item, block, timeout)
        wait = timeout if block else 0
        if self._settings.udp:
            reply = self._state().udp_puts([frame], wait)[0]
            if reply is not None:
                put_result(reply, _stdqueue.Full)
            return
        if block and timeout is None:
            st = self._state(ack=False)
            if st.bounded is False:
                st.put_later(frame)
                return
            if st.bounded is None:
                # Learn the bound with the first put, in the same write.
                size, reply = st.exchange([self._frames.op("qsize"), frame],
                                          None, "put", failover=False)
                put_result(reply, _stdqueue.Full)
                st.bounded = check(size)["maxsize"] != 0
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
        return decoded(task, self._decode)

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
        with background.state_lock:
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

    # ---- joinq's own --------------------------------------------------------

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
        (ValueError if there is none); its request is written at once, on
        the connection its get used (the daemon has it when task_done
        returns, even if the process is killed next), and its reply is
        read later, by the object's next request on that connection or
        within linger seconds by the flusher thread; if it failed, the
        next call on this object raises joinq.TaskDoneError.  With a task (a Task or its id, got by any
        process) it is sent at once and joinq.UnknownTask raised if the
        task is not delivered and undone."""
        st = self._state()
        if task is None:
            st.done_now(st.book.oldest())
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
        want = prefetch
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
                        q._state().exchange(
                            refill(frames, timeout, lease, want), timeout,
                            "get", failover=False), _stdqueue.Empty)
                    want = next_want(len(tasks), prefetch)
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
                yield decoded(task, q._decode).item
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
