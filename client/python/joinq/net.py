"""Blocking sockets to the daemon: a TCP connection (one JSON line per
request and per reply, PROTOCOL.md "Transports"), the pool of them a queue
object keeps in each process, and a UDP socket.  The asyncio side is in
aio.py.

A connection is used by one caller at a time, for a whole exchange (its
requests written in one go, then every reply read), and goes back to the
pool only when every reply was read: one that broke, timed out or was
interrupted is closed, never reused, since its stream is out of step.
Closing a connection gives back to their queues the tasks it took
without a lease (the protocol's rule), so the pool never closes one of
its own accord: only close(), or a failure, does.
"""
from __future__ import annotations

import os
import select
import socket
import ssl
import threading
from typing import Any

from .codec import parse
from .errors import CannotConnect, ConnectionLost
from .settings import Address, Settings, addresses

def hostport(address: Address) -> str:
    host, port = address
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def close_fd_only(sock: socket.socket) -> None:
    """In a child after fork: closes this process's copy of the socket's
    file descriptor only.  No shutdown, no write, nothing sent: the
    socket is the parent's, and stays open there."""
    fd = sock.detach()
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def why_failed(address: Address, e: OSError) -> str:
    """One line on why connecting to address failed, TLS's reasons said
    so that a user can act on them."""
    where = hostport(address)
    if isinstance(e, ssl.SSLCertVerificationError):
        hint = ""
        if e.verify_code in (2, 19, 20, 21):    # no issuer known, or
            hint = " (name its CA: cafile= or $JOINQ_CACERT)"  # self-signed
        return "%s: TLS: the daemon's certificate was refused: %s%s" % (
            where, (e.verify_message or e.reason or "").rstrip("."), hint)
    if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or \
            (isinstance(e, ConnectionResetError) and
             getattr(e, "joinq_tls", False)):
        return ("%s: the daemon closed the connection during the TLS "
                "handshake: is %d its TLS port (tls_port)?"
                % (where, address[1]))
    return "%s: %s" % (where, tls_reason(e) or e.strerror or e)


def tls_reason(e: BaseException) -> str | None:
    """A TLS failure in words; None if e is not one.  An alert is the
    daemon refusing the session (a client certificate it wants, or one
    it does not trust): under TLS 1.3 it comes after the handshake, with
    the first reply."""
    if not isinstance(e, ssl.SSLError):
        return None
    reason = e.reason or ""
    for prefix in ("TLSV13_ALERT_", "TLSV1_ALERT_", "SSLV3_ALERT_"):
        if reason.startswith(prefix):
            return ("TLS: the daemon refused the session: %s"
                    % reason[len(prefix):].replace("_", " ").lower())
    return "TLS: %s" % (reason.replace("_", " ").lower() or e)


def lost(peer: str, e: BaseException, timed_out: bool,
         timeout: float | None, what: str) -> ConnectionLost:
    """The ConnectionLost for an error sending or reading."""
    if timed_out:
        return ConnectionLost("the daemon at %s %s for %.1f s"
                              % (peer, what, timeout or 0))
    return ConnectionLost("the connection to %s broke: %s"
                          % (peer, tls_reason(e) or
                             getattr(e, "strerror", None) or e))


def reply_of(peer: str, line: bytes) -> bytes:
    """A reply line read; a line cut short means the daemon closed."""
    if not line.endswith(b"\n"):
        raise ConnectionLost("the daemon at %s closed the connection" % peer)
    return line


class TcpConnection:
    """One TCP connection: writes whole batches, reads reply lines."""

    __slots__ = ("sock", "rfile", "peer", "authed", "lines", "owed",
                 "_timeout", "_poll")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.peer = peer
        self.authed = False
        self.owed: list[int] = []       # task_dones whose replies are due
        self.lines: list[bytes] = []      # the replies of an exchange
        self._timeout: Any = sock.gettimeout()
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    def send(self, data: bytes, timeout: float | None) -> None:
        self._settimeout(timeout)
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise lost(self.peer, e, isinstance(e, socket.timeout), timeout,
                       "took nothing") from None

    def roundtrip(self, data: bytes, timeout: float | None, n: int) -> None:
        """Writes data, then reads n reply lines into self.lines."""
        self.send(data, timeout)
        lines = self.lines
        for _ in range(n):
            lines.append(self.reply(timeout))

    def reply(self, timeout: float | None) -> bytes:
        """The next reply line; ConnectionLost when the connection closes
        or breaks, or no reply comes within timeout seconds (None: none)."""
        self._settimeout(timeout)
        try:
            line = self.rfile.readline()
        except OSError as e:
            raise lost(self.peer, e, isinstance(e, socket.timeout), timeout,
                       "sent no reply") from None
        return reply_of(self.peer, line)

    def _settimeout(self, timeout: float | None) -> None:
        # settimeout costs a system call: only when it changes.
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def gone(self) -> bool:
        """True if an idle connection is readable: the daemon closed it (or
        sent what nobody asked for); a request sent on it now would go
        nowhere (libjoinq's peer_gone)."""
        if self.owed:                   # a reply due makes it readable
            return False
        try:
            return bool(self._poll.poll(0))
        except OSError:
            return True

    def close(self) -> None:
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass

    def forget(self) -> None:
        close_fd_only(self.sock)


def open_tcp(settings: Settings, address: Address) -> TcpConnection:
    """A new connection to address (OSError if none)."""
    sock = socket.create_connection(address, timeout=settings.connect_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        ctx = settings.ssl_context()
        if ctx is not None:
            # PROTOCOL.md "TLS": the same frames inside the session.
            try:
                sock = ctx.wrap_socket(
                    sock, server_hostname=settings.server_name(address))
            except ConnectionResetError as e:
                e.joinq_tls = True       # reset in the handshake
                raise
    except BaseException:
        sock.close()
        raise
    return TcpConnection(sock, hostport(address))


class Rotation:
    """Which daemon a new connection tries first, as failover.c does for
    the CLI: the active daemon a standby named (once), then every address
    from the one that answered last, or from the one after it when a
    connection to it just failed.  No I/O: the pools here and in aio.py
    connect."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cur = 0
        self.active: Address | None = None

    def candidates(self, after_failure: bool) -> list[tuple[int, Address]]:
        addrs = self.settings.addresses
        start = (self.cur + 1) % len(addrs) if after_failure else self.cur
        order = [(-1, self.active)] if self.active else []
        self.active = None
        return order + [((start + i) % len(addrs),
                         addrs[(start + i) % len(addrs)])
                        for i in range(len(addrs))]

    def answered(self, index: int) -> None:
        if index >= 0:
            self.cur = index

    def take_idle(self, idle: list[Any], conns: set[Any]) -> Any:
        """The most recently used idle connection that is still open (the
        others closed and forgotten), or None."""
        while idle:
            conn = idle.pop()
            if not conn.gone():
                return conn
            conns.discard(conn)
            conn.close()
        return None

    def name_active(self, active: Any) -> None:
        """Remembers the HOST:PORT a standby named as the active daemon."""
        try:
            self.active = addresses(str(active))[0]
        except ValueError:
            self.active = None

    def no_daemon(self, why: list[str]) -> CannotConnect:
        return CannotConnect("no daemon answers at %s (%s)"
                             % (", ".join(map(hostport,
                                              self.settings.addresses)),
                                "; ".join(why)))


class Pool(Rotation):
    """A queue object's TCP connections in one process.  borrow() gives a
    connection to one caller; give() takes it back when its exchange went
    well, discard() closes it when not."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.lock = threading.Lock()
        self.idle: list[TcpConnection] = []
        self.conns: set[TcpConnection] = set()
        self.closed = False

    def borrow(self, after_failure: bool = False) -> TcpConnection:
        with self.lock:
            conn = self.take_idle(self.idle, self.conns)
        return conn or self.connect(after_failure)

    def give(self, conn: TcpConnection) -> None:
        with self.lock:
            if not self.closed:
                self.idle.append(conn)
                return
            self.conns.discard(conn)
        conn.close()

    def discard(self, conn: TcpConnection) -> None:
        with self.lock:
            self.conns.discard(conn)
        conn.close()

    def connect(self, after_failure: bool = False) -> TcpConnection:
        """A new connection to the first daemon that answers; CannotConnect
        naming every address and why when none does."""
        why = []
        for index, address in self.candidates(after_failure):
            try:
                conn = open_tcp(self.settings, address)
            except OSError as e:
                why.append(why_failed(address, e))
                continue
            self.answered(index)
            with self.lock:
                if self.closed:
                    conn.close()
                    raise ConnectionLost("the queue was closed")
                self.conns.add(conn)
            return conn
        raise self.no_daemon(why)

    def close(self) -> None:
        """Closes the idle connections; those in use are shut down, so that
        a call waiting on one (a get in another thread) ends with
        ConnectionLost, and closed by their borrower."""
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
            self.conns.difference_update(idle)
            busy = list(self.conns)
        for conn in idle:
            conn.close()
        for conn in busy:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def forget(self) -> None:
        """After fork, in the child: drops every connection (the parent's)
        without touching the parent's side; nothing is locked, since the
        lock may have been held by a thread of the parent."""
        for conn in list(self.conns):
            conn.forget()
        self.conns, self.idle = set(), []


class UdpSocket:
    """A UDP socket to the first address that resolves (as libjoinq):
    one datagram per request; replies matched by id."""

    def __init__(self, settings: Settings) -> None:
        why = []
        for address in settings.addresses:
            try:
                infos = socket.getaddrinfo(address[0], address[1],
                                           type=socket.SOCK_DGRAM)
            except OSError as e:
                why.append("%s: %s" % (hostport(address), e.strerror or e))
                continue
            family, kind, proto, _, sockaddr = infos[0]
            self.sock = socket.socket(family, kind, proto)
            self.sock.connect(sockaddr)
            self.peer = hostport(address)
            self.next_id = 1
            return
        raise CannotConnect("no address resolves: %s" % "; ".join(why))

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as e:
            raise CannotConnect("cannot send to %s: %s"
                                % (self.peer, e.strerror or e)) from None

    def reply(self, timeout: float | None) -> dict[str, Any] | None:
        """The next reply datagram, None after timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            return parse(self.sock.recv(70000))
        except socket.timeout:
            return None
        except OSError as e:
            # Connected UDP: an ICMP "port unreachable" comes back here.
            raise CannotConnect("no daemon at %s: %s"
                                % (self.peer, e.strerror or e)) from None

    def close(self) -> None:
        self.sock.close()

    def forget(self) -> None:
        close_fd_only(self.sock)
