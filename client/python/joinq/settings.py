"""Where the daemon is and how to talk to it: addresses, token, TLS,
timeouts, read as the joinq CLI reads them (joinq(1): -H/$JOINQ_HOST,
-p/$JOINQ_PORT, --token-file/$JOINQ_TOKEN, --tls/$JOINQ_TLS and its
files).  No I/O but the token file."""
from __future__ import annotations

import math
import os
import re
import ssl as _ssl
from dataclasses import dataclass, field
from typing import Any, Sequence, Tuple, Union

from .codec import Serializer, serializer_named

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7477
DEFAULT_TLS_PORT = 7478        # joinqd.conf(5)'s tls_port, as joinq --tls
TOKEN_MAX = 4096               # bytes of token, as joinqd's token.h
# Seconds a deferred task_done waits for a request to ride with before the
# flusher thread sends it alone.  Each wake-up of that thread costs the
# consumer the GIL: 5 ms keeps them to a few hundred a second.
LINGER = 0.005

# PROTOCOL.md: 1 to 128 bytes of [A-Za-z0-9_.:-]; a dead-letter queue's
# name, NAME.dead, may reach 133.  The daemon judges the rest.
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,133}\Z")

Address = Tuple[str, int]
HostSpec = Union[str, Sequence[Union[str, Address]], None]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("a queue name is 1 to 128 characters of "
                         "A-Z a-z 0-9 _ . : -, not %r" % (name,))
    return name


def _port(value: Any, what: str) -> int:
    text = str(value)
    if not (text.isdigit() and text.isascii() and 1 <= int(text) <= 65535):
        raise ValueError("%s must be a number from 1 to 65535, not %r"
                         % (what, value))
    return int(text)


def _entry(text: str, port: int) -> Address:
    """HOST, HOST:PORT or [IPV6]:PORT (a bare IPv6 address takes port),
    as proto/hostlist.c reads them."""
    entry = text.strip(" \t")
    host, p = entry, None
    if entry.startswith("["):
        close = entry.find("]")
        rest = entry[close + 1:] if close >= 0 else ""
        if close < 0 or (rest and not rest.startswith(":")):
            raise ValueError("%r is not HOST, HOST:PORT or [IPV6]:PORT"
                             % text)
        host, p = entry[1:close], rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, p = entry.split(":")
    if not host or p == "":
        raise ValueError("%r is not HOST, HOST:PORT or [IPV6]:PORT" % text)
    return host, _port(p, "the port in %r" % text) if p is not None else port


def addresses(host: HostSpec = None, port: int | str | None = None,
              default_port: int = DEFAULT_PORT) -> list[Address]:
    """The daemons to try, in order.  host: None ($JOINQ_HOST, else
    127.0.0.1), a string that may list several ("a:7477,b:7477"), or a
    list of such strings or (host, port) pairs.  port: for the addresses
    without one (None: $JOINQ_PORT, else default_port)."""
    if port is None or port == "":
        port = os.environ.get("JOINQ_PORT") or default_port
        what = "$JOINQ_PORT"
    else:
        what = "port"
    default_port = _port(port, what)
    if host is None or host == "":
        host = os.environ.get("JOINQ_HOST") or DEFAULT_HOST
    entries = host.split(",") if isinstance(host, str) else list(host)
    out = []
    for e in entries:
        if isinstance(e, str):
            out.append(_entry(e, default_port))
        else:
            h, p = e
            out.append((str(h), _port(p, "the port of %r" % (e,))))
    if not out:
        raise ValueError("no daemon address given")
    return out


def read_token_file(path: str | os.PathLike) -> str:
    """The token in the file at path, read as joinqd reads its
    auth_token_file and joinq its --token-file: the first line, without
    its line end and the blanks around it.  OSError when the file cannot
    be read; ValueError when it holds no token or a first line longer than
    4096 bytes, or the token is not UTF-8."""
    with open(path, "rb") as f:
        # Like token.c's fgets into TOKEN_MAX + 64 bytes.
        line = f.readline(TOKEN_MAX + 63)
    whole = len(line) < TOKEN_MAX + 63 or line.endswith(b"\n")
    token = line.strip(b" \t\r\n")
    if not whole or len(token) > TOKEN_MAX:
        raise ValueError("the token file %s: its first line is longer than "
                         "%d bytes, the longest token" % (path, TOKEN_MAX))
    if not token:
        raise ValueError("the token file %s holds no token" % (path,))
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the token in %s is not valid UTF-8"
                         % (path,)) from None


def resolve_token(token: str | None, token_file: str | os.PathLike | None
                  ) -> str | None:
    """token=, else the token in token_file=, else $JOINQ_TOKEN, else None
    (the CLI's order: --token-file before $JOINQ_TOKEN)."""
    if token is not None and token_file is not None:
        raise ValueError("give token= or token_file=, not both")
    if token is not None:
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string")
        return token
    if token_file is not None:
        return read_token_file(token_file)
    return os.environ.get("JOINQ_TOKEN") or None


def seconds(value: float | None, what: str, *, positive: bool = False
            ) -> float | None:
    """A wait in seconds as the protocol takes it: None stays None (wait
    forever), and so does infinity; negative (or 0 when positive) is a
    ValueError, as in Python's queues."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError("%s must be a number of seconds, not %r"
                        % (what, value)) from None
    if math.isnan(v) or v < 0 or (positive and v == 0):
        raise ValueError("'%s' must be a %s number" %
                         (what, "positive" if positive else "non-negative"))
    return None if math.isinf(v) else v


@dataclass(frozen=True)
class TLS:
    """How to speak TLS to a daemon's TLS port, in values that pickle (an
    ssl.SSLContext does not), so that a queue made with it passes to
    Process and Pool under every start method.

    ``cafile``: the CA that signed the daemon's certificate (None: the
    system's CAs).  ``certfile`` and ``keyfile``: this client's
    certificate and key, for a daemon that asks for one
    (tls_client_auth).  ``server_name``: the name the daemon's certificate
    must hold (None: the host of each address).  ``insecure_any_name``:
    accept a certificate for any name, as joinq --tls-insecure-any-name
    does; the chain is still verified, but anyone holding a certificate
    from that CA can then pose as the daemon."""
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name: str | None = None
    insecure_any_name: bool = False

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("a client certificate needs its key: give "
                             "certfile= and keyfile= together")

    @classmethod
    def from_env(cls) -> "TLS":
        """The CLI's environment defaults: $JOINQ_CACERT, $JOINQ_CERT,
        $JOINQ_KEY, $JOINQ_TLS_SERVER_NAME, $JOINQ_TLS_INSECURE_ANY_NAME
        (what joinq work gives its CMD)."""
        env = os.environ.get
        return cls(cafile=env("JOINQ_CACERT") or None,
                   certfile=env("JOINQ_CERT") or None,
                   keyfile=env("JOINQ_KEY") or None,
                   server_name=env("JOINQ_TLS_SERVER_NAME") or None,
                   insecure_any_name=env("JOINQ_TLS_INSECURE_ANY_NAME",
                                         "") not in ("", "0"))

    def context(self) -> _ssl.SSLContext:
        """A client context: TLS 1.2 or later, the chain and (unless
        insecure_any_name) the name verified.  OSError or ssl.SSLError
        when a file cannot be read."""
        ctx = _ssl.create_default_context(cafile=self.cafile)
        ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
        if self.insecure_any_name:
            ctx.check_hostname = False
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


@dataclass
class Settings:
    """What a queue object needs to reach its daemon; what pickles."""
    name: str = "default"
    addresses: list[Address] = field(default_factory=list)
    token: str | None = None
    udp: bool = False
    noreply: bool = False
    serializer: Serializer = field(default_factory=lambda:
                                   serializer_named("json"))
    connect_timeout: float = 5.0
    io_timeout: float | None = 5.0
    linger: float = LINGER
    ssl: Any = None        # None, a TLS or an ssl.SSLContext
    _context: Any = field(default=None, repr=False, compare=False)

    def ssl_context(self) -> _ssl.SSLContext | None:
        """The context connections wrap their sockets in (made once)."""
        if isinstance(self.ssl, TLS):
            if self._context is None:
                self._context = self.ssl.context()
            return self._context
        return self.ssl

    def server_name(self, address: Address) -> str:
        """The name the daemon at address must prove it holds."""
        if isinstance(self.ssl, TLS) and self.ssl.server_name:
            return self.ssl.server_name
        return address[0]

    def reduced(self) -> dict[str, Any]:
        """The settings as plain values for a pickle.  An SSLContext does
        not pickle: a queue made with one does not either (ssl=True and a
        joinq.TLS do)."""
        if isinstance(self.ssl, _ssl.SSLContext):
            raise TypeError("a joinq queue made with an ssl.SSLContext "
                            "does not pickle (an SSLContext does not); "
                            "ssl=True and ssl=joinq.TLS(...) do")
        d = dict(self.__dict__)
        d["_context"] = None
        return d


def tls_setting(ssl: Any) -> Any:
    """ssl= as given, with the CLI's environment defaults: None (TLS when
    $JOINQ_TLS is 1), False (plain TCP), True (a TLS from the environment),
    a TLS, or an ssl.SSLContext."""
    if ssl is None:
        ssl = os.environ.get("JOINQ_TLS", "") not in ("", "0")
    if ssl is False:
        return None
    if ssl is True:
        return TLS.from_env()
    if isinstance(ssl, (TLS, _ssl.SSLContext)):
        return ssl
    raise TypeError("ssl must be None, True, False, a joinq.TLS or an "
                    "ssl.SSLContext, not %r" % (ssl,))


def make_settings(name: str, host: HostSpec, port: int | str | None,
                  token: str | None, token_file: Any, udp: bool,
                  noreply: bool, serializer: Any, connect_timeout: float,
                  io_timeout: float | None, linger: float, ssl: Any
                  ) -> Settings:
    """The constructor's arguments checked, defaults taken from the
    environment; ValueError or TypeError naming what is wrong."""
    if noreply and not udp:
        raise ValueError("noreply=True needs udp=True: over TCP every "
                         "request is answered")
    tls = tls_setting(ssl) if not (udp and ssl is None) else None
    if tls is not None and udp:
        raise ValueError("TLS is for TCP: udp=True and ssl= do not mix")
    ct = seconds(connect_timeout, "connect_timeout", positive=True)
    return Settings(
        name=check_name(name),
        addresses=addresses(host, port, DEFAULT_TLS_PORT if tls is not None
                            else DEFAULT_PORT),
        token=resolve_token(token, token_file), udp=bool(udp),
        noreply=bool(noreply), serializer=serializer_named(serializer),
        connect_timeout=ct if ct is not None else 5.0,
        io_timeout=seconds(io_timeout, "io_timeout"),
        linger=seconds(linger, "linger") or 0.0, ssl=tls)
