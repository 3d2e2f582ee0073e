"""What the blocking queues (queues.py) and the asyncio ones (aio.py)
share, with no I/O: the requests each method sends, what each reply means,
and the book of tasks a queue object holds in one process."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from .codec import JSONSerializer, dumps, parse, wait_fields
from .errors import Error, JoinTimeout, ProtocolError, TaskDoneError, \
    from_reply
from .settings import LINGER, Settings, check_name, make_settings, \
    seconds

PUT_WINDOW = 512        # put_many: requests per write

BACKOFF_MIN = 0.05             # seconds between rounds that found no daemon
BACKOFF_MAX = 1.0              # (failover.h's FAILOVER_BACKOFF_*)
FAILOVER_BUDGET = 5.0          # when io_timeout is None

# Requests that may be sent again when their reply was lost (failover.c's
# list, and the other read-only ones): nothing of them happens twice.  A
# get's task comes back as after any disconnect.
RESENDABLE = frozenset(("get", "ping", "qsize", "stats", "join", "empty",
                        "full", "declare"))


class Retry:
    """How long a call with several addresses keeps looking for a daemon
    (failover.c, libjoinq's jqc_call_failover): io_timeout (5 s without
    one) from the first failure on, pausing 50 ms, doubling to 1 s, after
    each round of addresses that found none.  again() says whether to try
    once more, after sleeping wait (time.sleep or asyncio.sleep: the
    caller's)."""

    def __init__(self, settings: Settings) -> None:
        self.budget = settings.io_timeout or FAILOVER_BUDGET
        self.rounds = len(settings.addresses)
        self.until = 0.0
        self.pause = 0.0
        self.tries = 0
        self.wait = 0.0

    def again(self, round_failed: bool = False) -> bool:
        now = time.monotonic()
        self.wait = 0.0
        if not self.until:
            self.until = now + self.budget
        elif now > self.until:
            return False
        self.tries += 1
        if round_failed or self.tries > self.rounds:
            self.pause = BACKOFF_MIN if self.pause <= 0 else \
                min(self.pause * 2, BACKOFF_MAX)
            if now + self.pause > self.until:
                return False
            self.wait = self.pause
        return True


class Task(NamedTuple):
    """A delivered task: its item, its id (for task_done(task) and
    release(task), from any process), and how many times it has been
    delivered (1 the first time)."""
    item: Any
    id: int
    deliveries: int


def wait_of(block: Any, timeout: Any) -> tuple[bool, float | None]:
    """(block, timeout) as Python's queues read them: timeout matters only
    when blocking, and then a negative one is a ValueError."""
    if not block:
        return False, None
    return True, seconds(timeout, "timeout")


def task_id(task: Any) -> int:
    tid = task.id if isinstance(task, Task) else task
    if isinstance(tid, bool) or not isinstance(tid, int) or tid <= 0:
        raise TypeError("a task is a joinq.Task or its id (a positive int), "
                        "not %r" % (task,))
    return tid


class Frames:
    """The request lines of one queue (PROTOCOL.md "Ops"), as text with its
    LF.  Over UDP, udp_frame() adds the id and the token."""

    def __init__(self, settings: Settings) -> None:
        self.q = ',"queue":' + dumps(settings.name)
        self.encode = settings.serializer.encode
        self.token = settings.token
        self.auth = '{"op":"auth","token":%s}\n' % dumps(self.token) \
            if self.token else None

    def put(self, item: Any, block: bool, timeout: float | None) -> str:
        return '{"op":"put"%s,"item":%s%s}\n' % (
            self.q, self.encode(item), wait_fields(block, timeout))

    def get(self, block: bool, timeout: float | None,
            lease: float | None) -> str:
        extra = ',"lease":%r' % lease if lease is not None else ""
        return '{"op":"get"%s%s%s}\n' % (self.q, wait_fields(block, timeout),
                                        extra)

    @staticmethod
    def task_done(tid: int) -> str:
        return '{"op":"task_done","task":%d}\n' % tid

    @staticmethod
    def release(tid: int, delay: float | None) -> str:
        extra = ',"delay":%r' % delay if delay is not None else ""
        return '{"op":"release","task":%d%s}\n' % (tid, extra)

    def join(self, timeout: float | None) -> str:
        return '{"op":"join"%s%s}\n' % (self.q, wait_fields(True, timeout))

    def op(self, name: str) -> str:
        """qsize, empty, full, purge, delete: the queue and nothing else."""
        return '{"op":"%s"%s}\n' % (name, self.q)

    def declare(self, maxsize: Any, max_deliveries: Any,
                dead_letter: Any) -> str:
        fields = ""
        for key, value in (("maxsize", maxsize),
                           ("max_deliveries", max_deliveries)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) \
                        or value < 0:
                    raise ValueError("%s must be an int >= 0, not %r"
                                     % (key, value))
                fields += ',"%s":%d' % (key, value)
        if dead_letter is not None:
            fields += ',"dead_letter":' + dumps(check_name(dead_letter))
        return '{"op":"declare"%s%s}\n' % (self.q, fields)

    def udp_frame(self, frame: str, rid: int, noreply: bool) -> str:
        extra = ',"noreply":true' if noreply else ',"id":%d' % rid
        if self.token:
            extra += ',"token":' + dumps(self.token)
        return frame[:-2] + extra + "}\n"


class QueueBase:
    """What joinq's four queue classes (blocking and asyncio, Queue and
    JoinableQueue) share: their arguments, settings and pickling.  The
    arguments are documented on joinq.Queue; an int in name's place is
    the maxsize of the queue "default" (``JoinableQueue(10)``, as the
    standard library's queues take it)."""

    _joinable = False
    _module = "joinq"

    def __init__(self, name: str = "default", maxsize: int = 0, *,
                 host: Any = None, port: int | str | None = None,
                 token: str | None = None, token_file: Any = None,
                 udp: bool = False, noreply: bool = False,
                 serializer: Any = "json", max_deliveries: int | None = None,
                 dead_letter: str | None = None,
                 connect_timeout: float = 5.0,
                 io_timeout: float | None = 5.0,
                 linger: float = LINGER, ssl: Any = None) -> None:
        if isinstance(name, int) and not isinstance(name, bool):
            # JoinableQueue(10), as multiprocessing's and queue's take it.
            if maxsize:
                raise TypeError("maxsize given twice: %r and %r"
                                % (name, maxsize))
            name, maxsize = "default", name
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError("maxsize must be an int, not %r" % (maxsize,))
        self._setup(make_settings(name, host, port, token, token_file, udp,
                                  noreply, serializer, connect_timeout,
                                  io_timeout, linger, ssl), maxsize)
        if maxsize > 0 or max_deliveries is not None or \
                dead_letter is not None:
            self._declare_first(self._frames.declare(
                maxsize if maxsize > 0 else None, max_deliveries,
                dead_letter))

    def _setup(self, settings: Settings, maxsize: int) -> None:
        self._settings = settings
        self._frames = Frames(settings)
        decode = settings.serializer.decode
        # JSON items come back as the reply holds them: no call per item.
        self._decode = None if getattr(decode, "__func__", None) is \
            JSONSerializer.decode else decode
        self._closed = False
        self.maxsize = maxsize

    def _declare_first(self, frame: str) -> None:
        """Declares the queue made with a maxsize (or other settings)."""
        raise NotImplementedError

    def __reduce__(self):
        return (rebuild, (type(self), self._settings.reduced(),
                          self.maxsize))

    def __repr__(self) -> str:
        return "<%s.%s %r at %s%s>" % (
            self._module, type(self).__name__, self._settings.name,
            ",".join(("[%s]:%d" if ":" in h else "%s:%d") % (h, p)
                     for h, p in self._settings.addresses),
            " closed" if self._closed else "")

    @property
    def name(self) -> str:
        return self._settings.name


class Scope:
    """What ``with q.task()`` holds: how to get, then the Task got."""

    def __init__(self, q: Any, block: bool, timeout: Any, lease: Any
                 ) -> None:
        self.q, self.block, self.timeout, self.lease = q, block, timeout, lease
        self.task: Task | None = None


def rebuild(cls: type, settings: dict[str, Any], maxsize: int) -> Any:
    """Unpickles a queue: the same name, daemon and settings, connecting
    afresh in this process; no declare is sent again."""
    q = cls.__new__(cls)
    q._setup(Settings(**settings), maxsize)
    return q


def put_chunks(frame: Callable[[Any], str], items: Iterable[Any]
               ) -> Iterator[tuple[list[str], TypeError | None]]:
    """put_many's requests, PUT_WINDOW at a time; an item JSON cannot hold
    ends them, with the requests before it and its TypeError."""
    it = iter(items)
    while True:
        chunk: list[str] = []
        try:
            for item in it:
                chunk.append(frame(item))
                if len(chunk) == PUT_WINDOW:
                    break
        except TypeError as e:
            yield chunk, e
            return
        yield chunk, None
        if len(chunk) < PUT_WINDOW:
            return


def put_replies(replies: list[dict[str, Any] | None], tasks: list[Any],
                full: type) -> BaseException | None:
    """Adds each put's task id (None if it was not queued, or unknown with
    noreply) to tasks; returns the first failure."""
    failure = None
    for r in replies:
        try:
            tasks.append(None if r is None else put_result(r, full))
        except (Error, full) as e:
            tasks.append(None)
            failure = failure or e
    return failure


# ---- replies ----------------------------------------------------------------
# A reply comes as its line (TCP) or parsed (UDP, matched by id); the
# commonest are read without a JSON parse.

OK = b'{"ok":true'                 # how the daemon starts every success
PUT_OK = b'{"ok":true,"task":'
EMPTY = b'{"ok":false,"error":"empty"'


def as_reply(reply: bytes | dict[str, Any]) -> dict[str, Any]:
    return parse(reply) if reply.__class__ is bytes else reply


def check(reply: bytes | dict[str, Any]) -> dict[str, Any]:
    reply = as_reply(reply)
    if not reply["ok"]:
        raise from_reply(reply)
    return reply


def put_result(reply: bytes | dict[str, Any], full: type) -> int:
    if reply.__class__ is bytes and reply.startswith(PUT_OK):
        try:
            return int(reply[len(PUT_OK):-2])      # ...,"task":T}\n
        except ValueError:
            pass
    reply = as_reply(reply)
    if reply["ok"]:
        return reply["task"]
    if reply.get("error") == "full":
        raise full()
    raise from_reply(reply)


def get_result(reply: bytes | dict[str, Any], empty: type) -> Task | None:
    """The task a get delivered; None for an empty reply."""
    reply = as_reply(reply)
    if reply["ok"]:
        try:
            return Task(reply["item"], reply["task"], reply["deliveries"])
        except KeyError:
            raise ProtocolError("a get reply without its task: %r"
                                % (reply,)) from None
    if reply.get("error") == "empty":
        return None
    raise from_reply(reply)


def decoded(task: Task, decode: Callable[[Any], Any] | None) -> Task:
    return task if decode is None else task._replace(item=decode(task.item))


def delivered(replies: list[bytes], empty: type
              ) -> tuple[list[Task], Error | None]:
    """The tasks a batch of gets delivered, and its first failure."""
    tasks, failure = [], None
    for r in replies:
        if r.startswith(EMPTY):
            continue
        try:
            t = get_result(r, empty)
        except Error as e:
            failure = failure or e
            continue
        if t is not None:
            tasks.append(t)
    return tasks, failure


def refill(frames: Frames, timeout: float | None, lease: float | None,
           want: int) -> list[str]:
    """A consume loop's gets: the first waits up to timeout, the others
    take what is queued now."""
    return [frames.get(True, timeout, lease)] + \
        [frames.get(False, None, lease)] * (want - 1)


def next_want(got: int, prefetch: int) -> int:
    """How many gets a consume loop's next refill sends: twice what the
    last one got, up to prefetch, so that a queue drained as fast as it
    fills does not cost prefetch replies for each item."""
    return max(1, min(prefetch, 2 * got))


def release_order(book: "Book", current: int, ahead: "deque[Task]"
                  ) -> list[int]:
    """The tasks a consume loop gives back when it is left: the one in
    hand (if not finished meanwhile) and those fetched ahead, in the order
    to release them so that they stand at the head of the queue in the
    order they came (each release puts its task at the head)."""
    tids = [t.id for t in ahead]
    if current and book.drop(current):
        tids.insert(0, current)
    return tids[::-1]


def join_result(reply: bytes) -> None:
    if not reply.startswith(OK):
        err = from_reply(parse(reply))
        if isinstance(err, JoinTimeout):
            err.message = "join timed out: %s" % err.message
        raise err


# ---- the book of tasks ------------------------------------------------------

class Book:
    """A queue object's tasks in one process: those it got and has not
    finished (oldest first: task_done() with no argument finishes the
    oldest, like Python's counter), the task_dones deferred to go out with
    the next request, and the errors of those that went."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, None] = {}
        self.pending: list[int] = []
        self.since = 0.0                # when pending became non-empty
        self.failures: list[Error] = []

    def got(self, tid: int) -> None:
        with self.lock:
            self.held[tid] = None

    def oldest(self) -> int:
        with self.lock:
            if not self.held:
                raise ValueError("task_done() called too many times")
            tid = next(iter(self.held))
            del self.held[tid]
            return tid

    def drop(self, tid: int) -> bool:
        """Forgets a task held; False if it was not."""
        with self.lock:
            if tid not in self.held:
                return False
            del self.held[tid]
            return True

    def defer(self, tid: int) -> bool:
        """Queues a task_done; True if it is the first waiting."""
        with self.lock:
            first = not self.pending
            if first:
                self.since = time.monotonic()
            self.pending.append(tid)
            return first

    def take(self) -> list[int]:
        with self.lock:
            out, self.pending = self.pending, []
            return out

    def due(self, linger: float) -> float:
        """Seconds until the waiting task_dones are due (<= 0: now)."""
        with self.lock:
            if not self.pending:
                return float("inf")
            return self.since + linger - time.monotonic()

    def give_back(self, tids: list[int]) -> None:
        """task_dones that went nowhere (refused with nothing changed)."""
        if tids:
            with self.lock:
                if not self.pending:
                    self.since = time.monotonic()
                self.pending[:0] = tids

    def answered(self, tid: int, reply: bytes | dict[str, Any]) -> None:
        reply = as_reply(reply)
        if not reply["ok"]:
            err = from_reply(reply)
            self.failed(TaskDoneError(
                "task_done(%d), sent later, failed: %s" % (tid, err.message),
                err.code, reply, task=tid))

    def lost(self, tids: list[int], why: Exception) -> None:
        for tid in tids:
            self.failed(TaskDoneError(
                "task_done(%d), sent later, may not have been done: %s"
                % (tid, why), None, None, task=tid))

    def failed(self, err: Error) -> None:
        with self.lock:
            self.failures.append(err)

    def raise_failed(self) -> None:
        """Raises the first deferred task_done failure not yet raised."""
        if self.failures:
            with self.lock:
                err = self.failures.pop(0) if self.failures else None
            if err is not None:
                raise err
