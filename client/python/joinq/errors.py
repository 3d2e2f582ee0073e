"""joinq's exceptions.

Where Python's queues raise, joinq raises the same: ``queue.Full`` and
``queue.Empty`` (``asyncio.QueueFull`` and ``asyncio.QueueEmpty`` in
``joinq.aio``), ``ValueError`` for a negative timeout or a ``task_done()``
with no task outstanding.  Everything else joinq raises is an ``Error``::

    Error                       code and message of the daemon's reply
    +-- Conflict                declare: another setting; delete: unfinished
    +-- UnknownTask (ValueError)  task_done/release of a task not delivered
    +-- JoinTimeout (TimeoutError)  join(timeout=...) ran out
    +-- DeferredError           a request sent without waiting failed:
    |   +-- TaskDoneError       a task_done() (see below)
    |   +-- PutError            a blocking put() on an unbounded queue
    +-- Unauthorized, Unavailable, ShuttingDown, TooManyQueues,
    |   TooLarge, BadQueue (ValueError), ProtocolError
    +-- ConnectionFailed (ConnectionError)
        +-- CannotConnect       no daemon answered at any address
        +-- ConnectionLost      the connection broke, or no reply in time
            +-- OutcomeUnknown  ... after a put, task_done, release, purge
                                or delete went out: it may have taken effect

``code`` is the protocol's error code (``"conflict"``, ...) when the daemon
answered, else None; ``message`` the daemon's sentence or joinq's own.
"""
from __future__ import annotations

from typing import Any


class Error(Exception):
    """A joinq failure: ``code`` is the protocol's error code when the
    daemon answered (``"unknown_task"``, ...), else None; ``message`` is
    the daemon's sentence, or joinq's own; ``reply`` the daemon's reply
    (a dict) when there was one."""

    def __init__(self, message: str, code: str | None = None,
                 reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reply = reply

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message) if self.code \
            else self.message

    def __reduce__(self):
        # So that an error crosses a process boundary (multiprocessing
        # sends a Pool worker's exception back pickled) whole.
        return (_rebuild_error, (type(self), self.message, self.code,
                                 self.reply, self.__dict__))


def _rebuild_error(cls, message, code, reply, state):
    err = cls.__new__(cls, message)
    Error.__init__(err, message, code, reply)
    err.__dict__.update(state)
    return err


class ProtocolError(Error):
    """The daemon did not understand a request (bad_request, bad_json,
    unknown_op, frame_too_large, ...) or sent a reply joinq cannot read:
    a bug on one side, or an item bigger than the daemon's max_frame."""


class BadQueue(Error, ValueError):
    """The queue name is not valid (the daemon's bad_queue)."""


class TooManyQueues(Error):
    """Creating the queue would pass the daemon's max_queues."""


class UnknownTask(Error, ValueError):
    """task_done or release named a task that is not delivered and
    undone: never issued, still queued, delayed, or finished already (as
    Python's "task_done() called too many times", a ValueError)."""


class JoinTimeout(Error, TimeoutError):
    """join(timeout=...) ran out with tasks still unfinished."""


class TooLarge(Error):
    """A reply would not fit in one UDP datagram; nothing changed."""


class Unauthorized(Error):
    """The daemon wants a token, and the one given (token=, token_file=
    or $JOINQ_TOKEN) is missing or wrong."""


class Conflict(Error):
    """declare named a setting that differs from the queue's own, or delete
    found unfinished tasks; nothing was changed."""


class ShuttingDown(Error):
    """The daemon is stopping and takes no new work."""


class Unavailable(Error):
    """The daemon cannot store the change now (its journal fails, or it is
    a standby); nothing was changed.  ``active`` names the active daemon
    when the standby knows it."""

    @property
    def active(self) -> str | None:
        return (self.reply or {}).get("active")


class DeferredError(Error):
    """A request that joinq sent without waiting for its reply failed.
    It is raised by the next call on the same queue object in the same
    process (before that call sends anything), or by ``close()`` or
    ``flush()``; at the process's exit it is written to stderr.  ``task``
    is the task's id when known; ``code`` and ``message`` are the
    daemon's, or code None when the connection broke before the reply
    came (the request may or may not have taken effect)."""

    def __init__(self, message: str, code: str | None = None,
                 reply: dict[str, Any] | None = None,
                 task: int | None = None) -> None:
        super().__init__(message, code, reply)
        self.task = task


class TaskDoneError(DeferredError):
    """A ``task_done()`` whose request went out later, with the next
    request or from the flusher thread, failed: ``unknown_task`` when the
    task came back to its queue meanwhile (its lease ran out, say)."""


class PutError(DeferredError):
    """A blocking ``put()`` on an unbounded queue, which returns once its
    request is written (as multiprocessing's put returns before its
    feeder thread writes), failed: ``unauthorized``, ``unavailable``,
    ``frame_too_large``, ..., or its connection broke (code None)."""


class ConnectionFailed(Error, ConnectionError):
    """joinq could not talk to the daemon (a ConnectionError)."""


class CannotConnect(ConnectionFailed):
    """No daemon answered at any address given."""


class ConnectionLost(ConnectionFailed):
    """The connection broke, or the reply did not come within the op's own
    wait plus io_timeout.  The next call connects again."""


class OutcomeUnknown(ConnectionLost):
    """A request that changes something (put, task_done, release, purge,
    delete) went out and its reply was lost: it may or may not have taken
    effect, so joinq does not send it again."""


_BY_CODE = {
    "conflict": Conflict,
    "unknown_task": UnknownTask,
    "timeout": JoinTimeout,
    "too_large": TooLarge,
    "unauthorized": Unauthorized,
    "unavailable": Unavailable,
    "shutting_down": ShuttingDown,
    "too_many_queues": TooManyQueues,
    "bad_queue": BadQueue,
    "too_many_connections": CannotConnect,
}


def from_reply(reply: dict[str, Any]) -> Error:
    """The exception for an error reply (not for full and empty, which the
    queues turn into their standard library's exceptions)."""
    code = reply.get("error")
    message = reply.get("message") or "the daemon answered %r" % (reply,)
    cls = _BY_CODE.get(code, ProtocolError) if isinstance(code, str) \
        else ProtocolError
    return cls(message, code if isinstance(code, str) else None, reply)
