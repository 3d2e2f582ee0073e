"""joinq.aio: the queues for asyncio, in the manner of asyncio.Queue.

    from joinq.aio import JoinableQueue

    async def eater(q):
        while True:
            dish = await q.get()
            print("eating", dish)
            q.task_done()

    async def main():
        async with JoinableQueue("dishes") as q:
            eaters = [asyncio.create_task(eater(q)) for _ in range(2)]
            await q.put_many("dish %d" % n for n in range(1, 21))
            await q.join()

Every method that talks to the daemon is a coroutine, put_nowait,
get_nowait, qsize, empty and full included; task_done() is not: as in
asyncio.Queue it returns at once, its request going out with the next
request on the object (or after linger seconds; ``await q.flush()`` sends
it now and raises its failure).  Errors are asyncio.QueueFull and
asyncio.QueueEmpty where asyncio.Queue raises them (and for a timeout
run out), ValueError and the joinq.Error family as in the blocking
queues (see joinq.JoinableQueue, whose arguments these take).  A maxsize
other than 0 is declared before the first call (or by ``async with``).

Each concurrent call borrows a connection of the object's pool in its
event loop.  A call cancelled while its reply is due (asyncio.wait_for
around a get, a task cancelled) does not lose a task: its connection is
half-closed, so that the daemon answers at once what was blocked there
(PROTOCOL.md, "Transports"), the replies still due are read in the
background, and a task a get delivered meanwhile is released to the
head of its queue.  A put cancelled so may have queued its item.
"""
from __future__ import annotations

import asyncio
import os
import socket
import weakref
from collections import deque
from typing import Any, AsyncIterator, Iterable

from . import background, net
from .codec import parse
from .core import Book, Frames, QueueBase, Scope, Task, check, decoded, \
    delivered, get_result, join_result, put_chunks, put_replies, \
    next_want, put_result, refill, release_order, task_id, wait_of
from .errors import CannotConnect, ConnectionLost, Error
from .exchange import BORROW, ROUNDTRIP, UDP_IO_TIMEOUT, URECV, USEND, \
    Exchanger, Steps
from .settings import Settings, seconds

READ_LIMIT = 1 << 26       # the longest reply line read (items of max_frame)

if hasattr(asyncio, "timeout"):                 # Python 3.11 and later
    async def _within(aw: Any, timeout: float | None) -> Any:
        async with asyncio.timeout(timeout):
            return await aw
else:                                           # pragma: no cover - 3.9/3.10
    async def _within(aw: Any, timeout: float | None) -> Any:
        return await asyncio.wait_for(aw, timeout)


class _Conn:
    """One connection: asyncio streams."""

    __slots__ = ("reader", "writer", "peer", "authed", "lines", "owed")

    def __init__(self, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: str) -> None:
        self.reader, self.writer, self.peer = reader, writer, peer
        self.authed = False
        self.owed: list[int] = []       # (the blocking client's)
        self.lines: list[bytes] = []

    async def send(self, data: bytes, timeout: float | None) -> None:
        try:
            self.writer.write(data)
            await _within(self.writer.drain(), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise net.lost(self.peer, e, isinstance(e, asyncio.TimeoutError),
                           timeout, "took nothing") from None

    async def roundtrip(self, data: bytes, timeout: float | None,
                        n: int) -> None:
        """Writes data, then reads n reply lines into self.lines."""
        await self.send(data, timeout)
        lines = self.lines
        for _ in range(n):
            lines.append(await self.reply(timeout))

    async def reply(self, timeout: float | None) -> bytes:
        try:
            line = await (self.reader.readline() if timeout is None else
                          _within(self.reader.readline(), timeout))
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            raise net.lost(self.peer, e, isinstance(e, asyncio.TimeoutError),
                           timeout, "sent no reply") from None
        return net.reply_of(self.peer, line)

    def gone(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


async def _open(settings: Settings, address: net.Address) -> _Conn:
    ctx = settings.ssl_context()
    try:
        reader, writer = await _within(asyncio.open_connection(
            address[0], address[1], ssl=ctx, limit=READ_LIMIT,
            server_hostname=settings.server_name(address) if ctx else None),
            settings.connect_timeout)
    except ConnectionResetError as e:
        if ctx is not None:
            e.joinq_tls = True           # reset in the handshake
        raise
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return _Conn(reader, writer, net.hostport(address))


class _Udp:
    """A UDP socket, non-blocking, to the first address that resolves."""

    def __init__(self, settings: Settings) -> None:
        blocking = net.UdpSocket(settings)
        self.sock, self.peer, self.next_id = blocking.sock, blocking.peer, 1
        self.sock.setblocking(False)

    async def reply(self, loop: asyncio.AbstractEventLoop,
                    timeout: float | None) -> dict[str, Any] | None:
        try:
            return parse(await _within(loop.sock_recv(self.sock, 70000),
                                       timeout))
        except asyncio.TimeoutError:
            return None
        except OSError as e:
            raise CannotConnect("no daemon at %s: %s"
                                % (self.peer, e.strerror or e)) from None


class _State(net.Rotation, Exchanger):
    """A queue object's connections and tasks in one process and event
    loop (see queues._ProcessState, its blocking twin)."""

    def __init__(self, settings: Settings, frames: Frames,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(settings)
        self.pid = os.getpid()
        self.frames = frames
        self.loop = loop
        self.book = Book()
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.udp: list[_Udp] = []
        self.background: set[asyncio.Task] = set()
        self.flush_timer: asyncio.TimerHandle | None = None

    # ---- connections --------------------------------------------------------

    async def borrow(self, after_failure: bool) -> _Conn:
        conn = self.take_idle(self.idle, self.conns)
        if conn is not None:
            return conn
        why = []
        for index, address in self.candidates(after_failure):
            try:
                conn = await _open(self.settings, address)
            except asyncio.TimeoutError:     # an OSError in 3.11
                why.append("%s: no answer" % net.hostport(address))
                continue
            except OSError as e:
                why.append(net.why_failed(address, e))
                continue
            self.answered(index)
            self.conns.add(conn)
            return conn
        raise self.no_daemon(why)

    def give(self, conn: _Conn) -> None:
        self.idle.append(conn)

    def discard(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        conn.close()

    async def run(self, steps: Steps) -> Any:
        """Drives an exchange's steps with awaits (queues.py's run, the
        blocking twin).  A cancellation is thrown into the steps too: see
        abandon."""
        value: Any = None
        error: BaseException | None = None
        loop = self.loop
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
                    await step[1].roundtrip(step[2], step[3], step[4])
                elif kind == BORROW:
                    value = await self.borrow(step[1])
                elif kind == URECV:
                    value = await step[1].reply(loop, step[2])
                elif kind == USEND:
                    await loop.sock_sendall(step[1].sock, step[2])
                else:
                    await asyncio.sleep(step[1])
            except BaseException as e:
                error = e

    async def exchange(self, ops: list[str], wait: float | None, op: str,
                       failover: bool = True) -> list[dict[str, Any]]:
        """See Exchanger.steps."""
        return await self.run(self.steps(ops, wait, op, failover))

    def abandon(self, conn: _Conn, auth: str | None, dones: list[int],
                ops: int, why: BaseException) -> None:
        """A cancelled exchange: its connection goes, and the replies still
        due are read in the background (see the module's docstring)."""
        if not isinstance(why, asyncio.CancelledError):
            super().abandon(conn, auth, dones, ops, why)
            return
        self.conns.discard(conn)
        read = len(conn.lines)
        got = max(0, read - (1 if auth else 0))   # of the dones' and ops'
        self.settle(conn, auth, dones[:got], None)
        task = self.loop.create_task(self._drain(
            conn, bool(auth) and not read, dones[got:],
            ops - max(0, got - len(dones))))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _drain(self, conn: _Conn, auth: bool, dones: list[int],
                     ops: int) -> None:
        """Half-closes a cancelled exchange's connection, so that what
        blocked there is answered at once (PROTOCOL.md, "Transports"),
        reads the replies still due, and releases any task a get got
        meanwhile: without a lease it came back as the connection closed
        anyway, with one it would wait for the lease to run out."""
        io = self.settings.io_timeout or UDP_IO_TIMEOUT
        got: list[int] = []
        try:
            if conn.writer.can_write_eof():
                conn.writer.write_eof()
                if auth:
                    await conn.reply(io)
                while dones:
                    self.book.answered(dones[0], await conn.reply(io))
                    dones = dones[1:]
                for _ in range(ops):
                    r = parse(await conn.reply(io))
                    if r["ok"] and "item" in r and "task" in r:
                        got.append(r["task"])
        except (ConnectionLost, Error) as e:
            self.book.lost(dones, e)
        finally:
            conn.close()
        if got:
            try:
                await self.exchange([Frames.release(t, None) for t in got],
                                    0, "release", failover=False)
            except (ConnectionLost, Error):
                pass

    # ---- deferred task_dones ------------------------------------------------

    def defer(self, tid: int) -> None:
        if self.book.defer(tid):
            _waiting.add(self)      # kept until sent, whatever becomes of q
            if self.flush_timer is None:
                self.flush_timer = self.loop.call_later(
                    self.settings.linger, self._flush_due)

    def _flush_due(self) -> None:
        self.flush_timer = None
        left = self.book.due(self.settings.linger)
        if left == float("inf"):
            return
        if left > 0:
            self.flush_timer = self.loop.call_later(left, self._flush_due)
            return
        task = self.loop.create_task(self.flush())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def flush(self) -> None:
        try:
            await self.exchange([], 0, "task_done", failover=False)
        except Exception as e:          # noqa: BLE001 - kept, not lost
            self.book.lost(self.book.take(), e)
        if not self.book.pending:
            _waiting.discard(self)

    def flush_blocking(self) -> None:
        """Sends the task_dones still waiting when this state's event loop
        has ended (asyncio.run returned before their flush came), with a
        blocking exchange; a failure stays in the book, to be raised."""
        dones = self.book.take()
        if not dones:
            return
        from .queues import _ProcessState
        st = _ProcessState(self.settings, self.frames)
        st.book.give_back(dones)
        st.flush()
        st.close()
        for err in st.book.failures:
            self.book.failed(err)
        _waiting.discard(self)

    # ---- UDP ----------------------------------------------------------------

    async def udp_puts(self, frames: list[str], wait: float | None
                       ) -> list[dict[str, Any] | None]:
        """See Exchanger.udp_steps, on a non-blocking socket."""
        sock = self.udp.pop() if self.udp else _Udp(self.settings)
        try:
            out = await self.run(self.udp_steps(sock, frames, wait))
        except BaseException:
            sock.sock.close()
            raise
        self.udp.append(sock)
        return out

    async def close(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        await self.flush()
        for task in list(self.background):
            try:
                await task
            except Exception:       # noqa: BLE001 - closing regardless
                pass
        for conn in list(self.conns):
            conn.close()
        self.conns, self.idle = set(), []
        for sock in self.udp:
            sock.sock.close()
        self.udp = []


_live: "weakref.WeakSet[Queue]" = weakref.WeakSet()
# The states with task_dones waiting, kept alive until they are sent: the
# queue object may be gone, and its event loop ended (asyncio.run).
_waiting: "set[_State]" = set()


def _after_fork_in_child() -> None:
    """A child starts with no state of the parent's: its connections are
    dropped unused (their file descriptors close as they are collected,
    without a shutdown), its tasks and task_dones stay the parent's."""
    _waiting.clear()
    for q in list(_live):
        q._states = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
# The task_dones of event loops that ended before their flush go at exit.
background.exit_flushers.append(
    lambda: background.flush_states(_waiting, _State.flush_blocking))


class Queue(QueueBase):
    """joinq.Queue for asyncio (get removes an item for good); see the
    module's docstring, and joinq.Queue for the arguments."""

    _module = "joinq.aio"

    def _setup(self, settings: Settings, maxsize: int) -> None:
        super()._setup(settings, maxsize)
        self._states: dict[asyncio.AbstractEventLoop, _State] = {}
        self._declaring: str | None = None
        _live.add(self)

    def _declare_first(self, frame: str) -> None:
        self._declaring = frame            # sent by the first call

    # ---- plumbing -----------------------------------------------------------

    def _state(self, raise_failed: bool = True) -> _State:
        """The state of this process and the running event loop; raises
        the failure of a deferred task_done first (see DeferredError)."""
        if self._closed:
            raise ValueError("%r is closed" % self)
        loop = asyncio.get_running_loop()
        st = self._states.get(loop)
        if st is None or st.pid != os.getpid():
            # A fork, or another event loop: what belongs to loops that
            # are closed (asyncio.run's before) is dropped, not closed.
            for gone in [s for l, s in self._states.items()
                         if s.pid == os.getpid() and l.is_closed()]:
                gone.flush_blocking()
            self._states = {l: s for l, s in self._states.items()
                            if s.pid == os.getpid() and not l.is_closed()}
            st = self._states[loop] = _State(self._settings, self._frames,
                                             loop)
        elif raise_failed:
            st.book.raise_failed()
        return st

    async def _ready(self) -> _State:
        """The state, the queue declared first if it is to be (concurrent
        first calls may each declare: the same settings, no harm)."""
        st = self._state()
        frame = self._declaring
        if frame is not None:
            check((await st.exchange([frame], 0, "declare"))[0])
            self._declaring = None
        return st

    async def _call(self, frame: str, wait: float | None, op: str
                    ) -> dict[str, Any]:
        return (await (await self._ready()).exchange([frame], wait, op))[0]

    # ---- asyncio.Queue's methods --------------------------------------------

    async def put(self, item: Any, block: bool = True,
                  timeout: float | None = None) -> None:
        """Puts item at the tail (see joinq.Queue.put); asyncio.QueueFull
        when block is false or the timeout runs out with the queue full."""
        block, timeout = wait_of(block, timeout)
        frame = self._frames.put(item, block, timeout)
        wait = timeout if block else 0
        if self._settings.udp:
            st = await self._ready()
            reply = (await st.udp_puts([frame], wait))[0]
            if reply is not None:
                put_result(reply, asyncio.QueueFull)
            return
        put_result(await self._call(frame, wait, "put"), asyncio.QueueFull)

    async def put_nowait(self, item: Any) -> None:
        """put(item, False): asyncio.QueueFull if the queue is full."""
        await self.put(item, False)

    async def get_task(self, block: bool = True,
                       timeout: float | None = None) -> Task:
        """Like get, but returns the Task: item, id and deliveries."""
        return await self._get_task(block, timeout, None)

    async def _get_task(self, block: Any, timeout: Any, lease: Any) -> Task:
        block, timeout = wait_of(block, timeout)
        lease = seconds(lease, "lease", positive=True)
        st = await self._ready()
        reply = (await st.exchange([self._frames.get(block, timeout, lease)],
                                   timeout if block else 0, "get"))[0]
        task = get_result(reply, asyncio.QueueEmpty)
        if task is None:
            raise asyncio.QueueEmpty
        if self._joinable:
            st.book.got(task.id)
        else:
            st.defer(task.id)
        return decoded(task, self._decode)

    async def get(self, block: bool = True,
                  timeout: float | None = None) -> Any:
        """Removes and returns the item at the head (see joinq.Queue.get);
        asyncio.QueueEmpty when block is false or the timeout runs out."""
        return (await self.get_task(block, timeout)).item

    async def get_nowait(self) -> Any:
        """get(False): asyncio.QueueEmpty if the queue is empty."""
        return await self.get(False)

    async def qsize(self) -> int:
        return check(await self._call(self._frames.op("qsize"), 0,
                                      "qsize"))["qsize"]

    async def empty(self) -> bool:
        return check(await self._call(self._frames.op("empty"), 0,
                                      "empty"))["empty"]

    async def full(self) -> bool:
        return check(await self._call(self._frames.op("full"), 0,
                                      "full"))["full"]

    async def flush(self) -> None:
        """Sends the task_dones still waiting now; raises TaskDoneError if
        one failed (this one or an earlier one not raised yet)."""
        st = self._state()
        await st.flush()
        st.book.raise_failed()

    async def close(self) -> None:
        """Sends what waits and closes this process's connections of the
        running event loop; later calls raise ValueError.  See
        joinq.Queue.close."""
        if self._closed:
            return
        self._closed = True
        st = self._states.get(asyncio.get_running_loop())
        self._states = {}
        if st is not None and st.pid == os.getpid():
            await st.close()
            st.book.raise_failed()

    async def __aenter__(self) -> "Queue":
        await self._ready()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- joinq's own --------------------------------------------------------

    async def put_many(self, items: Iterable[Any], block: bool = True,
                       timeout: float | None = None) -> list[int]:
        """See joinq.Queue.put_many."""
        block, timeout = wait_of(block, timeout)
        wait = timeout if block else 0
        tasks: list[int | None] = []
        for chunk, failure in put_chunks(
                lambda item: self._frames.put(item, block, timeout), items):
            if chunk:
                st = await self._ready()
                replies = await (st.udp_puts(chunk, wait)
                                 if self._settings.udp else
                                 st.exchange(chunk, wait, "put",
                                             failover=False))
                failure = put_replies(replies, tasks, asyncio.QueueFull) or \
                    failure
            if failure is not None:
                failure.tasks = tasks              # type: ignore[attr-defined]
                raise failure
        return tasks        # type: ignore[return-value]

    def consume(self, prefetch: int = 64, *, timeout: float | None = None,
                lease: float | None = None) -> "AsyncConsumer":
        """``async for item in q.consume():`` (see joinq.Queue.consume).
        An async generator left early releases what it holds when it is
        closed: ``async with q.consume() as items:`` closes it at once."""
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or \
                prefetch < 1:
            raise ValueError("prefetch must be an int >= 1")
        return AsyncConsumer(self, prefetch, seconds(timeout, "timeout"),
                             seconds(lease, "lease", positive=True))

    async def declare(self, maxsize: int | None = None,
                      max_deliveries: int | None = None,
                      dead_letter: str | None = None) -> dict[str, Any]:
        """See joinq.Queue.declare."""
        frame = self._frames.declare(maxsize, max_deliveries, dead_letter)
        return check(await self._call(frame, 0, "declare"))

    async def purge(self) -> int:
        return check(await self._call(self._frames.op("purge"), 0,
                                      "purge"))["purged"]

    async def delete(self) -> bool:
        return check(await self._call(self._frames.op("delete"), 0,
                                      "delete"))["deleted"]

    async def stats(self) -> dict[str, Any]:
        reply = check(await self._call('{"op":"stats"}\n', 0, "stats"))
        return reply.get("queues", {}).get(self._settings.name, {})

    async def ping(self) -> dict[str, Any]:
        return check(await self._call('{"op":"ping"}\n', 0, "ping"))


class JoinableQueue(Queue):
    """joinq.JoinableQueue for asyncio; see the module's docstring."""

    _joinable = True

    async def get_task(self, block: bool = True,
                       timeout: float | None = None, *,
                       lease: float | None = None) -> Task:
        return await self._get_task(block, timeout, lease)

    async def get(self, block: bool = True, timeout: float | None = None,
                  *, lease: float | None = None) -> Any:
        """See joinq.JoinableQueue.get."""
        return (await self.get_task(block, timeout, lease=lease)).item

    def task_done(self, task: Task | int | None = None) -> None:
        """Finishes the oldest task this object got (ValueError if none),
        or the task given: not a coroutine, as asyncio.Queue's.  The
        request goes out with the next one, or within linger seconds;
        ``await q.flush()`` sends it now and raises its failure; else the
        next call raises joinq.TaskDoneError if it failed."""
        st = self._state()
        if task is None:
            tid = st.book.oldest()
        else:
            tid = task_id(task)
            st.book.drop(tid)
        st.defer(tid)

    async def release(self, task: Task | int,
                      delay: float | None = None) -> None:
        """See joinq.JoinableQueue.release."""
        tid = task_id(task)
        frame = Frames.release(tid, seconds(delay, "delay"))
        st = await self._ready()
        st.book.drop(tid)
        check((await st.exchange([frame], 0, "release"))[0])

    async def join(self, timeout: float | None = None) -> None:
        """Waits until every task is finished; joinq.JoinTimeout (a
        TimeoutError) if the timeout runs out first."""
        t = seconds(timeout, "timeout")
        join_result(await self._call(self._frames.join(t), t, "join"))

    def task(self, block: bool = True, timeout: float | None = None, *,
             lease: float | None = None) -> "AsyncTaskScope":
        """``async with q.task() as item:`` (see joinq.JoinableQueue.task:
        the task_done is sent before the block is left)."""
        return AsyncTaskScope(self, block, timeout, lease)


class AsyncTaskScope(Scope):
    """See JoinableQueue.task."""

    async def __aenter__(self) -> Any:
        self.task = await self.q.get_task(self.block, self.timeout,
                                          lease=self.lease)
        return self.task.item

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert self.task is not None
        if exc_type is None:
            st = await self.q._ready()
            st.book.drop(self.task.id)
            check((await st.exchange([Frames.task_done(self.task.id)], 0,
                                     "task_done"))[0])
            return False
        try:
            await self.q.release(self.task)
        except Error:
            pass            # as TaskScope: the body's exception matters more
        return False


class AsyncConsumer:
    """What q.consume() returns: an async iterator, and an async context
    manager that releases what it holds on exit."""

    def __init__(self, q: Queue, prefetch: int, timeout: float | None,
                 lease: float | None) -> None:
        self._gen = self._run(q, prefetch, timeout, lease)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> "AsyncConsumer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    @staticmethod
    async def _run(q: Queue, prefetch: int, timeout: float | None,
                   lease: float | None) -> AsyncIterator[Any]:
        st = await q._ready()
        frames = q._frames
        ahead: deque[Task] = deque()
        current = 0
        want = prefetch
        try:
            while True:
                if current:
                    if st.book.drop(current):
                        st.defer(current)
                    current = 0
                if not ahead:
                    tasks, failure = delivered(
                        await q._state().exchange(
                            refill(frames, timeout, lease, want), timeout,
                            "get", failover=False), asyncio.QueueEmpty)
                    want = next_want(len(tasks), prefetch)
                    ahead.extend(tasks)
                    if failure is not None:
                        raise failure
                    if not ahead:
                        return
                task = ahead.popleft()
                if q._joinable:
                    st.book.got(task.id)
                    current = task.id
                else:
                    st.defer(task.id)
                yield decoded(task, q._decode).item
        except GeneratorExit:
            await AsyncConsumer._release(q, st, current, ahead)
            raise
        except BaseException:
            try:
                await AsyncConsumer._release(q, st, current, ahead)
            except Exception:       # noqa: BLE001 - the first error wins
                pass
            raise

    @staticmethod
    async def _release(q: Queue, st: _State, current: int,
                       ahead: deque[Task]) -> None:
        if st.pid == os.getpid() and not q._closed:
            tids = release_order(st.book, current, ahead)
            if tids:
                await st.exchange([Frames.release(t, None) for t in tids],
                                  0, "release", failover=False)
