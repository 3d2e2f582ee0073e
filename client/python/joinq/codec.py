"""Items and frames: how an item becomes JSON (the serializers), and the
request lines and replies of PROTOCOL.md.  No I/O here."""
from __future__ import annotations

import base64
import json
import pickle
from typing import Any

from .errors import ProtocolError


class Serializer:
    """How items travel.  ``encode(item)`` returns the item's JSON text;
    ``decode(value)`` turns the JSON value the daemon returned (already
    parsed) back into an item.  ``name`` is what a pickled queue keeps."""

    name = "?"

    def encode(self, item: Any) -> str:
        raise NotImplementedError

    def decode(self, value: Any) -> Any:
        raise NotImplementedError

    def __reduce__(self):
        return (serializer_named, (self.name,))


class JSONSerializer(Serializer):
    """Items are JSON values (the default): None, bool, int, float, str,
    and lists and dicts of them, dict keys strings.  A tuple comes back a
    list, a dict's int keys come back strings (as json.dumps writes
    them); anything JSON cannot hold (bytes, a set, a float NaN, an
    object, a string with a lone surrogate) is a TypeError at put, before
    anything is sent.  Any client, in any language, reads the items."""

    name = "json"
    _encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False,
                                separators=(",", ":"))

    def encode(self, item: Any) -> str:
        try:
            text = self._encoder.encode(item)
            text.encode("utf-8")        # a lone surrogate fails here
            return text
        except (TypeError, ValueError, RecursionError) as e:
            raise TypeError("a joinq item is a JSON value, and %s is not "
                            "one (%s); serializer='pickle' carries Python "
                            "objects" % (_short(item), e)) from None

    def decode(self, value: Any) -> Any:
        return value


class PickleSerializer(Serializer):
    """Items are any picklable Python object, sent as the JSON object
    ``{"pickle": "<base64 of the pickle>"}``; an item that is not such an
    object (put by another client as plain JSON) comes back as it is.

    Off by default, on purpose: unpickling runs code that the pickle
    names, so a consumer using it runs whatever any producer, or anyone
    who can reach the daemon, puts on the queue.  Use it only when every
    client of the queue is trusted (and the daemon wants a token)."""

    name = "pickle"

    def encode(self, item: Any) -> str:
        data = pickle.dumps(item, protocol=pickle.DEFAULT_PROTOCOL)
        return '{"pickle":"%s"}' % base64.b64encode(data).decode("ascii")

    def decode(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and \
                isinstance(value.get("pickle"), str):
            return pickle.loads(base64.b64decode(value["pickle"]))
        return value


_SERIALIZERS = {"json": JSONSerializer(), "pickle": PickleSerializer()}


def serializer_named(which: Any) -> Serializer:
    """None or "json": JSONSerializer; "pickle": PickleSerializer; a
    Serializer: itself."""
    if which is None:
        which = "json"
    if isinstance(which, Serializer):
        return which
    if which in _SERIALIZERS:
        return _SERIALIZERS[which]
    raise TypeError("serializer must be 'json', 'pickle' or a "
                    "joinq.Serializer, not %r" % (which,))


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 60 else text[:57] + "..."


def dumps(value: Any) -> str:
    """JSON text for a field the client builds (names, ids, tokens)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def wait_fields(block: bool, timeout: float | None) -> str:
    """The fields of a blocking op: nothing to wait forever, block false
    for *_nowait, else the timeout."""
    if not block:
        return ',"block":false'
    if timeout is None:
        return ""
    return ',"timeout":%r' % timeout


_scan = json.JSONDecoder().scan_once     # the C scanner, without loads' checks


def parse(line: bytes) -> dict[str, Any]:
    """A reply line as a dict; ProtocolError if it is not one."""
    try:
        reply = _scan(line.decode("utf-8"), 0)[0]
    except (StopIteration, ValueError):
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError("the daemon sent what is not a reply: %r"
                            % line[:200])
    return reply
