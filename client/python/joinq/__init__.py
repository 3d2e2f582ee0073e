"""joinq: Python's JoinableQueue and Queue, the queue held by joinqd.

    from joinq import JoinableQueue        # instead of multiprocessing's
    q = JoinableQueue("dishes")            # $JOINQ_HOST, $JOINQ_PORT
    q.put("dish 1")
    dish = q.get(); q.task_done()
    q.join()

joinq.JoinableQueue and joinq.Queue have the standard library's methods
and behaviour (put, get, *_nowait, task_done, join, qsize, empty, full,
close; queue.Full and queue.Empty where Python raises them), pass to
multiprocessing's Process and Pool, and are safe in threads.  Items are
JSON values (a tuple comes back a list; anything JSON cannot hold is a
TypeError at put) unless serializer="pickle".  joinq.aio has the asyncio
versions.  Standard library only; Python 3.9 and later.
"""
from __future__ import annotations

from .codec import JSONSerializer, PickleSerializer, Serializer
from .core import Task
from .errors import BadQueue, CannotConnect, Conflict, ConnectionFailed, \
    ConnectionLost, DeferredError, Error, JoinTimeout, OutcomeUnknown, \
    ProtocolError, PutError, ShuttingDown, TaskDoneError, TooLarge, \
    TooManyQueues, Unauthorized, Unavailable, UnknownTask
from .queues import Consumer, JoinableQueue, Queue, TaskScope
from .settings import TLS, read_token_file

__version__ = "0.1.0"

__all__ = [
    "JoinableQueue", "Queue", "Task", "TaskScope", "Consumer",
    "Serializer", "JSONSerializer", "PickleSerializer", "read_token_file",
    "Error", "ProtocolError", "BadQueue", "TooManyQueues", "UnknownTask",
    "JoinTimeout", "TooLarge", "Unauthorized", "Conflict", "ShuttingDown",
    "Unavailable", "DeferredError", "TaskDoneError", "PutError",
    "ConnectionFailed", "CannotConnect",
    "ConnectionLost", "OutcomeUnknown",
]
