"""The exchange of requests and replies, with no I/O (sans-io): one
generator of steps that the blocking client (queues.py) drives with
blocking calls and the asyncio one (aio.py) with awaits, so that the rules
below are written once.

A TCP exchange borrows a connection, writes in one go the auth (on a new
connection with a token), the task_dones waiting in the Book and the
requests, and reads every reply in order: first those of the task_dones
written on it earlier without waiting (conn.owed), then the task_dones'
into the Book, the requests' returned.  With several addresses a lone request moves to
another daemon, as libjoinq's do (joinq.h, "Several addresses"): when the
connection is found closed, when it is lost after the request went out
and the request is harmless to send twice (RESENDABLE), and when a standby
refuses it (unavailable: nothing changed), the active daemon it names
first; all within core.Retry's budget.  A put, task_done, release, purge
or delete whose reply was lost is OutcomeUnknown, never sent twice.

The steps, yielded as tuples, and what the driver sends back:
    (BORROW, after_failure)          a connection
    (ROUNDTRIP, conn, data, timeout, n)   None: it writes data, then reads
                                     n reply lines into conn.lines (those
                                     read so far, if it fails)
    (SLEEP, seconds)                 None
    (USEND, sock, data)              None (UDP)
    (URECV, sock, timeout)           a reply, or None after timeout (UDP)
The driver throws into the generator what a step raised.
"""
from __future__ import annotations

from typing import Any, Generator

from .codec import parse
from .core import OK, RESENDABLE, Book, Frames, Retry, check
from .errors import CannotConnect, ConnectionLost, Error, OutcomeUnknown
from .settings import Settings

BORROW, ROUNDTRIP, SLEEP, USEND, URECV = range(5)

UDP_DATAGRAM_MAX = 65507       # the most a UDP datagram over IPv4 holds
UDP_WINDOW = 64                # datagrams awaiting a reply at once
UDP_IO_TIMEOUT = 5.0           # when io_timeout is None (libjoinq's UDP)

Steps = Generator[tuple, Any, Any]


def batch(auth: str | None, dones: list[int], ops: list[str]) -> bytes:
    """One write: the auth, the task_dones, the requests."""
    if not auth and not dones:
        return (ops[0] if len(ops) == 1 else "".join(ops)).encode()
    lines = [auth] if auth else []
    lines += [Frames.task_done(t) for t in dones]
    lines += ops
    return "".join(lines).encode()


class Exchanger:
    """A queue object's state in one process (and event loop): its
    settings, frames and book, and the exchanges on its connections.  The
    subclass gives give(conn), discard(conn), name_active(address) and
    abandon(), and drives the steps."""

    settings: Settings
    frames: Frames
    book: Book

    def give(self, conn: Any) -> None:
        raise NotImplementedError

    def discard(self, conn: Any) -> None:
        raise NotImplementedError

    def name_active(self, active: Any) -> None:
        raise NotImplementedError

    def abandon(self, conn: Any, auth: str | None, dones: list[int],
                ops: int, why: BaseException) -> None:
        """An exchange interrupted by why (not ConnectionLost): its
        connection is out of step.  The blocking client closes it; the
        asyncio one, when why is a cancellation, reads what is still due
        in the background (aio.py)."""
        self.discard(conn)
        self.settle(conn, auth, dones, None, why)

    def steps(self, ops: list[str], wait: float | None, op: str,
              failover: bool = True) -> Steps:
        """An exchange of ops (with the waiting task_dones before them);
        returns their reply lines.  wait: the longest the ops themselves may
        wait (None: forever); a reply may take io_timeout more.  op: what
        the ops are (for what may be sent twice).  failover: a lone
        request that may move to another daemon."""
        s = self.settings
        retry = Retry(s) if failover and len(s.addresses) > 1 else None
        after_failure = False
        timeout = None if wait is None or s.io_timeout is None \
            else wait + s.io_timeout
        while True:
            if retry is not None and retry.wait:
                yield SLEEP, retry.wait
            if not ops and not self.book.pending:
                return []
            try:
                conn = yield BORROW, after_failure
            except CannotConnect:
                if retry is not None and retry.again(round_failed=True):
                    after_failure = True
                    continue
                raise
            dones = self.book.take() if self.book.pending else []
            auth = None if conn.authed else self.frames.auth
            owed, conn.owed = getattr(conn, "owed", []), []
            conn.lines = []
            data = batch(auth, dones, ops) if auth or dones or ops else b""
            # owed only on an authed connection: their replies come first.
            n = (1 if auth else 0) + len(dones) + len(ops)
            dones = owed + dones
            try:                # once writing starts, it may have gone out
                yield ROUNDTRIP, conn, data, timeout, len(owed) + n
            except ConnectionLost as e:
                self.discard(conn)
                self.settle(conn, auth, dones, None, e)
                if retry is not None and op in RESENDABLE and retry.again():
                    after_failure = True
                    continue
                if op not in RESENDABLE:
                    raise OutcomeUnknown(
                        "%s; the %s may or may not have taken effect"
                        % (e, op)) from None
                raise
            except BaseException as e:
                # Interrupted, or a reply that does not parse.
                self.abandon(conn, auth, dones, len(ops), e)
                raise
            refusal = self.settle(conn, auth, dones, retry)
            if refusal is not None:
                self.discard(conn)
                if retry is not None and self._named_active(refusal) and \
                        retry.again():
                    after_failure = True
                    continue
                check(refusal)
            replies = conn.lines[len(conn.lines) - len(ops):]
            if retry is not None and len(ops) == 1 and \
                    not replies[0].startswith(OK) and \
                    parse(replies[0]).get("error") == "unavailable":
                standby = self._named_active(parse(replies[0]))
                if not standby:
                    standby = yield from self._ping_says_standby(conn,
                                                                 timeout)
                if standby and retry.again():
                    self.discard(conn)
                    after_failure = True
                    continue
            self.give(conn)
            return replies

    def settle(self, conn: Any, auth: str | None, dones: list[int],
               retry: Retry | None, why: BaseException | None = None
               ) -> dict[str, Any] | None:
        """Reads what an exchange's replies (conn.lines, all of them, or
        those that came before why) say of the auth and the task_dones.
        Returns the auth's refusal, if it was refused: then nothing was
        done, and the task_dones wait again.  A task_done a standby
        refused (with retry: several addresses) waits again too; one with
        no reply is lost (TaskDoneError, outcome unknown)."""
        lines = conn.lines
        first = 0
        if auth and lines:
            r = parse(lines[0])
            if not r["ok"]:
                self.book.give_back(dones)
                return r
            conn.authed = True
            first = 1
        elif auth:
            first = 1
        refused = []
        for i, tid in enumerate(dones):
            if first + i >= len(lines):
                self.book.lost(dones[i:], why or ConnectionLost("no reply"))
                break
            line = lines[first + i]
            if line.startswith(OK):
                continue
            r = parse(line)
            if retry is not None and r.get("error") == "unavailable":
                refused.append(tid)           # nothing changed: again
            else:
                self.book.answered(tid, r)
        self.book.give_back(refused)
        return None

    def _named_active(self, reply: dict[str, Any]) -> bool:
        """True if an unavailable reply names the active daemon (noted, to
        be tried first): it came from a standby."""
        if reply.get("error") == "unavailable" and reply.get("active"):
            self.name_active(reply["active"])
            return True
        return False

    @staticmethod
    def _ping_says_standby(conn: Any, timeout: float | None) -> Steps:
        """An unavailable naming no active daemon came from a standby if
        its ping says so (failover.c's from_standby); else the daemon
        could not store the change, and that is the answer."""
        conn.lines = []
        try:
            yield ROUNDTRIP, conn, b'{"op":"ping"}\n', timeout, 1
            pong = parse(conn.lines[0])
        except (ConnectionLost, Error):
            return True
        return pong.get("role") == "standby"

    def udp_steps(self, sock: Any, frames: list[str], wait: float | None
                  ) -> Steps:
        """Puts as datagrams, UDP_WINDOW awaiting a reply at once, replies
        matched by id; None for each with noreply.  Never sent twice: a put
        with no reply within its wait plus io_timeout is OutcomeUnknown."""
        s = self.settings
        data = [self.frames.udp_frame(f, sock.next_id + i, s.noreply)
                .encode() for i, f in enumerate(frames)]
        for d in data:
            if len(d) > UDP_DATAGRAM_MAX:
                raise ValueError("the request is %d bytes, more than a UDP "
                                 "datagram holds (%d): put it over TCP"
                                 % (len(d), UDP_DATAGRAM_MAX))
        if s.noreply:
            for d in data:
                yield USEND, sock, d
            return [None] * len(frames)
        io = s.io_timeout if s.io_timeout is not None else UDP_IO_TIMEOUT
        limit = None if wait is None else wait + io
        replies: list[dict[str, Any] | None] = [None] * len(frames)
        first = sock.next_id
        sock.next_id += len(frames)
        todo = sent = 0
        while todo < len(frames):
            while sent < len(frames) and sent - todo < UDP_WINDOW:
                yield USEND, sock, data[sent]
                sent += 1
            r = yield URECV, sock, limit
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
