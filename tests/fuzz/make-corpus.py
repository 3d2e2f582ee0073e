#!/usr/bin/env python3
"""make-corpus.py - writes the seed corpora of the fuzz harnesses.

    python3 tests/fuzz/make-corpus.py [SRCDIR]

tests/fuzz/corpus/request/: the frames of PROTOCOL.md's examples, every
JSON-looking literal of tests/unit/test_proto.c and tests/integration/*.py,
and hand-made ones (bad UTF-8, deep nesting, \\u0000 in keys and values,
huge numbers, CRLF, pipelines, frames past a small max_frame).  Each input
is two settings bytes (max_frame, max_depth; see fuzz_request.c) and the
bytes a client sends.

tests/fuzz/corpus/engine/: short op programs for fuzz_engine.c.

tests/fuzz/corpus/journal/: journals for fuzz_journal.c, in the format of
daemon/record.c: whole ones (every record type, batches, a snapshot and
the records after it), a torn one, a damaged one and foreign files, each
after a mode byte (0: as they are; 1: the harness sets the checksums).

The files are named by their content, so running it again adds what is new
and keeps what libFuzzer added (a regression input, say).
"""
import ast
import hashlib
import os
import re
import struct
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..')
OUT = os.path.join(SRC, 'tests', 'fuzz', 'corpus')

DEFAULT = b'\x00\x3f'          # max_frame 1 MiB, max_depth 64


def write(kind, prefix, data):
    d = os.path.join(OUT, kind)
    os.makedirs(d, exist_ok=True)
    name = '%s-%s' % (prefix, hashlib.sha1(data).hexdigest()[:12])
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# ---- request frames ---------------------------------------------------------

def c_unescape(s):
    """The bytes of a C string literal's body."""
    out = bytearray()
    i = 0
    simple = {'n': 10, 'r': 13, 't': 9, '\\': 92, '"': 34, "'": 39,
              '0': 0, 'a': 7, 'b': 8, 'f': 12, 'v': 11, '?': 63}
    while i < len(s):
        c = s[i]
        if c != '\\':
            out += c.encode()
            i += 1
            continue
        e = s[i + 1]
        if e == 'x':
            m = re.match(r'[0-9a-fA-F]{1,2}', s[i + 2:])
            out.append(int(m.group(0), 16))
            i += 2 + len(m.group(0))
        else:
            out.append(simple[e])
            i += 2
    return bytes(out)


def from_test_proto():
    src = open(os.path.join(SRC, 'tests', 'unit', 'test_proto.c')).read()
    # adjacent literals ("a" "b") are one string in C
    src = re.sub(r'"\s*\n\s*"', '', src)
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"', src):
        body = m.group(1)
        if not body.lstrip(' \\t').startswith(('{', '[')):
            continue
        if re.search(r'%[-.*0-9]*[sdzul]|@', body):
            continue            # printf formats and templates
        frame = c_unescape(body)
        if b'"' not in frame:   # rows write ' for " (dq() in test_proto.c)
            frame = frame.replace(b"'", b'"')
        yield frame


def from_integration():
    d = os.path.join(SRC, 'tests', 'integration')
    for name in sorted(os.listdir(d)):
        if not name.endswith('.py'):
            continue
        tree = ast.parse(open(os.path.join(d, name)).read())
        docs = {id(n.value) for n in ast.walk(tree)
                if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or id(node) in docs:
                continue
            v = node.value
            if isinstance(v, str):
                try:
                    v = v.encode('utf-8', 'surrogateescape')
                except UnicodeEncodeError:   # a lone surrogate, as bytes
                    v = v.encode('utf-8', 'surrogatepass')
            if isinstance(v, bytes) and v.lstrip(b' \t\r\n').startswith(b'{') \
                    and b'%' not in v and b'{}' != v.strip():
                yield v


# PROTOCOL.md's examples and the details it says implementations get wrong
PROTOCOL = [
    b'{"op":"put","item":"hello"}',
    b'{"op": "put", "queue": "jobs", "id": 1, "item": {"n": 1}}',
    b'{"op": "get", "queue": "jobs", "id": "g", "lease": 30}',
    b'{"op": "get", "block": false}',
    b'{"op": "get", "timeout": 0.5}',
    b'{"op": "task_done", "task": 1}',
    b'{"op": "release", "task": 1, "delay": 2.5}',
    b'{"op": "join", "queue": "jobs", "timeout": 10}',
    b'{"op": "qsize", "queue": "jobs"}',
    b'{"op": "empty"}', b'{"op": "full"}', b'{"op": "ping"}',
    b'{"op": "stats"}', b'{"op": "auth", "token": "s3cret"}',
    b'{"op": "put", "item": 1, "noreply": true}',
    b'{"op": "get", "noreply": true}',
    b'{"op": "put", "item": 1, "token": "s3cret"}',
    b'{"op": "qsize", "queue": "jobs.dead"}',
    b'{"op": "qsize", "queue": "' + b'q' * 128 + b'"}',
    b'{"op": "qsize", "queue": "' + b'q' * 129 + b'"}',
    b'{"op": "qsize", "queue": "' + b'q' * 128 + b'.dead"}',
    b'{"op": "qsize", "queue": "' + b'q' * 129 + b'.dead"}',
    b'{"op":"ping\\u0000x"}',
    b'{"op":"put","queue":"a\\u0000","item":1}',
    b'{"op":"put","item":"a\\u0000b","id":"\\u0000"}',
    b'{"op":"put","item":{"k\\u0000":1},"id":{"\\u0000":[{"\\u0000":0}]}}',
    b'{"op":"put","item":"\\ud800"}',
    b'{"op":"put","item":"\\ud83d\\ude00","id":"\\udbff\\udfff"}',
    b'{"op":"put","item":1.0e2}',
    b'{"op":"put","item":1e400}',
    b'{"op":"put","item":-1e400}',
    b'{"op":"put","item":1e-400}',
    b'{"op":"put","item":18446744073709551616}',
    b'{"op":"put","item":9223372036854775807,"id":-9223372036854775808}',
    b'{"op":"put","item":-9223372036854775809}',
    b'{"op":"put","item":[1180591620717411303424,-1e2,0.1],'
    b'"id":-99999999999999999999999}',
    b'{"op":"put","item":{"k\\u0000":99999999999999999999},'
    b'"\\u0069d":12345678901234567890}',
    b'{"op":"get","timeout":1180591620717411303424}',
    b'{"op":"release","task":99999999999999999999,"delay":1}',
    b'{"op":"ping","x":-99999999999999999999,"op":"ping"}',
    b'{"op":"task_done","task":9007199254740992}',
    b'{"op":"task_done","task":3.0}',
    b'{"op":"get","timeout":1e9,"lease":1000000001}',
    b'{"op":"get","timeout":1e308,"lease":5e-324}',
    b'{"op":"release","task":1,"delay":-0.0}',
    b'{"op":"put","item":1,"id":null}',
    b'{"op":"put","item":1,"block":null,"timeout":null,"queue":null}',
    b'{"op":"put","item":1,"op":"get"}',
    b'{"op":"put","item":1} x',
    b'{"op":"put",}',
    b'{"op":"put","item":NaN}',
    b'{"op":"put","item":"\x01"}',
    b'// c\n{"op":"ping"}',
    b'{"op":"ping"}\x00',
    b'[{"op":"ping"}]', b'"ping"', b'null', b'1', b'{}',
]

UTF8 = [
    b'\xc0\x80', b'\xc1\xbf', b'\xe0\x80\x80', b'\xe0\x9f\xbf', b'\xed\xa0\x80',
    b'\xed\xbf\xbf', b'\xf0\x80\x80\x80', b'\xf0\x8f\xbf\xbf',
    b'\xf4\x90\x80\x80', b'\xf5\x80\x80\x80', b'\xf8\x88\x80\x80\x80',
    b'\xfe', b'\xff', b'\x80', b'\xbf', b'\xc2', b'\xe2\x82', b'\xf0\x9f\x98',
    b'\xc2\x41', b'\xe2\x28\xa1', b'\xef\xbf\xbf', b'\xf4\x8f\xbf\xbf',
    b'\xc3\xa9', b'\xf0\x9f\x98\x80', b'\xe2\x82\xac\xe2\x82',
]


def nest(depth, inner=b'1'):
    return b'[' * depth + inner + b']' * depth


def hand_made():
    """(settings, stream) pairs."""
    for bad in UTF8:
        yield DEFAULT, b'{"op":"put","item":"' + bad + b'"}\n'
        yield DEFAULT, b'{"op":"put","item":1,"' + bad + b'":1}\n'
        yield DEFAULT, b'{"op":"ping","id":"' + b'x' * 7 + bad + b'"}\n'
        yield DEFAULT, bad + b'{"op":"ping"}\n'
    # nesting: the object is depth 1, so an item 63 deep is 64
    for d in (62, 63, 64, 65):
        yield DEFAULT, b'{"op":"put","item":' + nest(d) + b'}\n'
    yield DEFAULT, b'{"op":"put","item":{"a":' * 40 + b'1' + b'}' * 40 + b'}\n'
    yield DEFAULT, b'{"op":"put","item":"' + b'[' * 100 + b'"}\n'
    yield DEFAULT, b'{"op":"put","item":' + nest(3000) + b'}\n'
    for depth in (1, 2, 3, 8):
        yield bytes([0, depth - 1]), b'{"op":"put","item":' + nest(depth) + b'}\n'
        yield bytes([0, depth - 1]), b'{"op":"put","item":' + nest(depth - 1) + b'}\n'
    # CRLF, blank lines, whitespace
    yield DEFAULT, b'{"op":"ping"}\r\n\r\n \t\r\n{"op":"ping","id":2}\r\n'
    yield DEFAULT, b'{"op":"ping"}\r\r\n'
    yield DEFAULT, b'\r{"op":\r"ping"}\n'
    yield DEFAULT, b'\n\n\n \n\t\n'
    yield DEFAULT, b'{"op":"ping"}'          # partial at close
    # pipelines
    yield DEFAULT, (b'{"op":"put","queue":"q","item":{"n":1},"id":1}\n'
                    b'{"op":"get","queue":"q","id":2}\n'
                    b'{"op":"task_done","task":1,"id":3}\n'
                    b'{"op":"join","queue":"q","id":4}\n'
                    b'{"op":"qsize","queue":"q","id":5}\n'
                    b'{"op":"stats","id":6}\n')
    yield DEFAULT, (b'{"op":"ping","id":1}\n{"op":"bogus","id":2}\n'
                    b'{"op":"put","id":3}\nnot json\n{"op":"ping"\n'
                    b'{"op":"ping","id":\xff}\n{"op":"ping","id":6}\n')
    yield DEFAULT, (b'{"op":"put","item":1,"noreply":true}\n' * 3 +
                    b'{"op":"get","noreply":true}\n{"op":"ping"}\n')
    # frames past a small max_frame: 16 bytes, and exactly at it
    yield b'\x10\x3f', b'{"op":"ping"}\n{"op":"ping","id":12345}\n'
    yield b'\x0d\x3f', b'{"op":"ping"}\n{"op":"ping"}\r\n'
    yield b'\x0e\x3f', b'{"op":"ping"}\r\n'
    yield b'\x04\x3f', b'          \n'
    yield b'\x04\x3f', b'  \n    \r\n'
    yield b'\x20\x3f', b'{"op":"put","item":"' + b'x' * 40 + b'"}\n{"op":"ping"}\n'
    # \u0000 in keys, values, op and queue
    yield DEFAULT, b'{"\\u0000":1,"op":"put","item":{"\\u0000":"\\u0000"},"id":{"a\\u0000b":[]}}\n'
    yield DEFAULT, b'{"op\\u0000":"ping","op":"ping","i\\u0000d":1,"id":"\\u0000"}\n'
    yield DEFAULT, b'{"op":"put","item":{"\\\\u0000":1,"\\\\\\u0000":2}}\n'
    yield DEFAULT, b'{"\\u0069d":1,"\\u006fp":"\\u0070ing","\\u0069tem":[1]}\n'
    # escapes of every kind
    yield DEFAULT, b'{"op":"put","item":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\\u00e9\\uffff"}\n'
    yield DEFAULT, b'{"op":"put","item":"\\u12"}\n'
    yield DEFAULT, b'{"op":"put","item":"\\q"}\n'
    # the wide string scan: a stop byte or a sequence on either side of a
    # 16- and 32-byte block boundary, in ASCII and non-ASCII items
    head = b'{"op":"put","item":"'
    for at in (11, 12, 27, 28, 43, 44):
        for b in (b'"', b'\\', b'\x01', b'\x7f', b'\x80', b'\xc3\xa9',
                  b'\xe2\x82\xac', b'\xf0\x9d\x84\x9e', b'\xed\xa0\x80'):
            s = b'a' * at + b + b'a' * (70 - at)
            yield DEFAULT, head + s + b'"}\n'
    yield DEFAULT, head + b'\xc3\xa9' * 100 + b'"}\n'
    yield DEFAULT, head + b'x' * 200 + b'\\n' + b'y' * 200 + b'"}\n'


def requests():
    n = 0
    seen = set()
    for src, frames in (('proto', from_test_proto()),
                        ('tests', from_integration()),
                        ('protocol', iter(PROTOCOL))):
        for f in frames:
            data = DEFAULT + f + (b'' if f.endswith(b'\n') else b'\n')
            if data not in seen:
                seen.add(data)
                write('request', src, data)
                n += 1
    for settings, stream in hand_made():
        data = settings + stream
        if data not in seen:
            seen.add(data)
            write('request', 'made', data)
            n += 1
    return n


# ---- engine programs -----------------------------------------------------------

(PUT, PUT_WAIT, GET, GET_WAIT, TASK_DONE, RELEASE, JOIN, JOIN_WAIT, ADVANCE,
 DROP_HOLDER, CANCEL, EXPIRE, CANCEL_ALL, REPLAY, DECLARE, PURGE,
 DELETE) = range(17)
A, B, C, D, E, A_DEAD, B_DEAD, D_DEAD = range(8)
FOREVER = 0xC0
LAST = 0          # task_done/release: the newest task id


def settings(max_queues=6, default_max_deliveries=0, near_never=False):
    return bytes([(max_queues - 2) | default_max_deliveries << 3 |
                  (0x80 if near_never else 0)])


def put(q, item=b'x', wait=False, timeout=FOREVER):
    b = bytes([PUT_WAIT if wait else PUT, q, len(item)]) + item
    return b + (bytes([timeout]) if wait else b'')


def get(q, holder=0, lease=None, fit=0, wait=False, timeout=FOREVER, long=False):
    how = holder | (4 if lease else 0) | (8 if long else 0) | fit << 4
    b = bytes([GET_WAIT if wait else GET, q, how])
    if lease:
        b += bytes([lease - 1])
    return b + (bytes([timeout]) if wait else b'')


def done(back=LAST):
    return bytes([TASK_DONE, back])


def release(back=LAST, delay=0):
    return bytes([RELEASE, back, 0x80 | delay if delay else 0])


def join(q, wait=False, timeout=FOREVER):
    return bytes([JOIN_WAIT, q, timeout]) if wait else bytes([JOIN, q])


def advance(ms):
    return bytes([ADVANCE, ms])


def declare(q, maxsize=None, max_deliveries=None, dead_letter=None,
            dry=False):
    how = ((maxsize is not None) | (max_deliveries is not None) << 1 |
           (dead_letter is not None) << 2 | dry << 3)
    return bytes([DECLARE, q, how, maxsize or 0, max_deliveries or 0,
                  dead_letter or 0])


def purge(q):
    return bytes([PURGE, q])


def delete(q):
    return bytes([DELETE, q])


PROGRAMS = {
    'basic': settings() + put(A) + get(A, holder=1) + done() + join(A) +
    bytes([REPLAY]),
    'blocking-get': settings() + get(A, wait=True) + put(A, b'hello') +
    done() + join(B, wait=True) + put(B) + get(B, lease=10) + done(),
    'full-queue': settings() + put(A, b'1') + put(A, b'2') +
    put(A, b'3', wait=True, timeout=10) + put(A, b'4') + get(A) +
    advance(50) + get(A, holder=2) + done() + done(1) + join(A, wait=True) +
    get(A) + done(),
    'lease-and-dead-letter': settings() + put(B, b'job') + get(B, lease=5) +
    advance(10) + get(B, lease=5) + release() + get(B_DEAD, holder=1) +
    done() + join(B),
    'dead-letter-into-full': settings() + put(D, b'd') + put(C, b'c') +
    get(C, holder=1) + bytes([DROP_HOLDER, 0]) + get(D) + get(D) +
    done() + done(1),
    'dropped-dead-letter': settings() + put(E, b'e') + get(E) + release() +
    join(E),
    'delay': settings() + put(A, b'later') + get(A, holder=2) +
    release(delay=50) + get(A, wait=True, timeout=10) + advance(20) +
    advance(40) + get(A) + done(),
    'waiters': settings() + get(A, wait=True, fit=2) + get(A, wait=True, fit=4) +
    get(A, wait=True, fit=3) + get(A, wait=True) + put(A, b'long item') +
    put(A, b'ok') + bytes([EXPIRE, 0, CANCEL, 0]) + join(A, wait=True) +
    put(B, wait=True) + bytes([CANCEL_ALL]),
    'near-never-clock': settings(near_never=True) + put(A) +
    get(A, lease=200, long=True) + put(A) + get(A, holder=1) +
    release(delay=0x7F) + bytes([RELEASE, 0, 0xFF]) + get(A, wait=True, timeout=3) +
    advance(0xFF) + advance(0xF8),
    'max-queues': settings(max_queues=2, default_max_deliveries=1) + put(A) +
    put(B) + put(C) + get(D) + get(A, holder=1) + bytes([DROP_HOLDER, 0]) +
    get(A_DEAD) + done(),
    'default-max-deliveries': settings(default_max_deliveries=2) + put(D) +
    get(D, lease=1) + advance(5) + get(D, lease=1) + advance(5) +
    get(D_DEAD) + done() + bytes([REPLAY]),
    'redelivery-to-waiter': settings() + put(A) + get(A, holder=3) +
    get(A, wait=True, holder=1) + bytes([DROP_HOLDER, 2]) + done() +
    join(A, wait=True, timeout=0) + advance(1),
    # declare, purge, delete: a free id taken again, settings of its own
    'lifecycle': settings(max_queues=3) + declare(E, maxsize=1) +
    put(E) + put(E, b'2', wait=True) + join(E, wait=True) + purge(E) +
    purge(E) + delete(E) + put(A) + declare(B, max_deliveries=1,
                                             dead_letter=D_DEAD) +
    get(B, wait=True) + delete(B) + put(B) + get(B) + release() +
    bytes([REPLAY]) + get(D_DEAD) + done() + delete(D_DEAD) + delete(A),
    'declare-conflicts': settings(max_queues=2) + declare(A, maxsize=3) +
    declare(A, maxsize=2, dry=True) + declare(C, dead_letter=A) +
    declare(D, maxsize=2, max_deliveries=2, dead_letter=B) + declare(D) +
    declare(B, dry=True) + declare(A_DEAD, max_deliveries=1,
                                   dead_letter=E) + bytes([REPLAY]),
}


def engines():
    for name, prog in PROGRAMS.items():
        write('engine', name, prog)
    return len(PROGRAMS)


# ---- journals -----------------------------------------------------------------

(J_HEADER, J_QUEUE, J_PUT, J_TASK, J_TAKE, J_DONE, J_BACK, J_DELAY, J_DEAD,
 J_NEXTID, J_BATCH, J_SETTINGS, J_PURGE, J_DROP) = range(1, 15)
J_DROPPED = 0xFFFFFFFF
J_WALL = 1764633600000          # a wall-clock time (ms) for delays


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def jrec(kind, fmt='', *fields, tail=b''):
    payload = bytes([kind]) + struct.pack('<' + fmt, *fields) + tail
    return struct.pack('<II', len(payload), crc32c(payload)) + payload


def jheader(version=1):
    return jrec(J_HEADER, tail=b'joinq-journal\0' + struct.pack('<I', version))


def jbatch(*records):
    body = b''.join(records)
    return jrec(J_BATCH, 'I', len(body)) + body


def jqueue(qid, name):
    return jrec(J_QUEUE, 'I', qid, tail=name)


def jput(qid, task, item=b'"x"'):
    return jrec(J_PUT, 'IQ', qid, task, tail=item)


def jtask(qid, task, deliveries, state, until, item=b'"x"'):
    return jrec(J_TASK, 'IQIBQ', qid, task, deliveries, state, until,
                tail=item)


def jtake(qid, task):
    return jrec(J_TAKE, 'IQ', qid, task)


def jdone(task):
    return jrec(J_DONE, 'Q', task)


def jback(task):
    return jrec(J_BACK, 'Q', task)


def jdelay(task, until):
    return jrec(J_DELAY, 'QQ', task, until)


def jdead(task, new_task, dqid):
    return jrec(J_DEAD, 'QQI', task, new_task, dqid)


def jnextid(n):
    return jrec(J_NEXTID, 'Q', n)


def jsettings(qid, maxsize=None, max_deliveries=None, dead_letter=None):
    named = ((maxsize is not None) | (max_deliveries is not None) << 1 |
             (dead_letter is not None) << 2)
    return jrec(J_SETTINGS, 'IBQI', qid, named, maxsize or 0,
                max_deliveries or 0, tail=dead_letter or b'')


def jpurge(qid):
    return jrec(J_PURGE, 'I', qid)


def jdrop(qid):
    return jrec(J_DROP, 'I', qid)


def journals():
    history = jheader() + jbatch(jqueue(0, b'jobs'), jput(0, 1, b'{"a":1}'),
                                 jput(0, 2), jput(0, 3, b'[1,2]')) + \
        jbatch(jtake(0, 1), jtake(0, 2)) + \
        jbatch(jdone(1), jback(2), jqueue(1, b'jobs.dead')) + \
        jbatch(jtake(0, 2), jdelay(2, J_WALL + 5000)) + \
        jbatch(jback(2), jtake(0, 2), jdead(2, 4, 1)) + \
        jbatch(jtake(0, 3), jdead(3, 0, J_DROPPED), jput(0, 5, b'null'))
    snapshot = jheader() + jqueue(0, b'a') + jqueue(1, b'b') + \
        jnextid(40) + jtask(0, 7, 0, 0, 0) + jtask(0, 9, 2, 0, 0, b'"y"') + \
        jtask(1, 12, 1, 1, 0) + jtask(1, 30, 3, 2, J_WALL + 60000) + \
        jtask(1, 31, 1, 2, 0xFFFFFFFFFFFFFFFF) + jbatch()
    after = snapshot + jbatch(jput(0, 40), jtake(0, 7)) + \
        jbatch(jdone(7), jback(12))
    # declare, purge, delete: settings, a free id taken again; a snapshot
    # with a free id below the highest in use
    lifecycle = jheader() + jbatch(jqueue(0, b'd'), jsettings(
        0, maxsize=2, max_deliveries=1, dead_letter=b'dl')) + \
        jbatch(jput(0, 1), jput(0, 2)) + jbatch(jpurge(0)) + \
        jbatch(jqueue(1, b'e'), jdrop(0)) + jbatch(jqueue(0, b'f')) + \
        jbatch(jput(0, 3), jtake(0, 3), jqueue(2, b'dl'), jdead(3, 4, 2))
    holes = jheader() + jqueue(0, b'a') + jqueue(1, b'') + \
        jqueue(2, b'c') + jsettings(2, maxsize=0) + jnextid(5) + \
        jtask(2, 4, 0, 0, 0) + jbatch() + jbatch(jqueue(1, b'b'))
    seeds = {
        'empty-journal': jheader(),
        'history': history,
        'snapshot': snapshot,
        'snapshot-and-tail': after,
        'torn-last-write': history[:-7],
        'torn-header': jheader()[:10],
        'damaged-early-batch': history[:40] + bytes([history[40] ^ 1]) +
        history[41:],
        'misfit-record': jheader() + jbatch(jdone(99)),
        'second-header': jheader() + jbatch(jheader()),
        'other-version': jheader(2) + jbatch(jqueue(0, b'q')),
        'foreign-sqlite': b'SQLite format 3\0' + bytes(84),
        'foreign-json': b'{"op": "put", "item": 1}\n',
        'foreign-empty-file': b'',
        # found by fuzzing: a task twice in a snapshot, an id used again
        'regress-duplicate-task': jheader() + jqueue(0, b'a') + jnextid(9) +
        jtask(0, 7, 0, 0, 0) + jtask(0, 7, 0, 0, 0) + jbatch(),
        'regress-put-of-a-live-id': jheader() + jqueue(0, b'a') +
        jnextid(9) + jtask(0, 7, 0, 0, 0) + jbatch() + jbatch(jput(0, 7)),
        'regress-queue-name-not-a-name': jheader() +
        jbatch(jqueue(0, b'\0')),
        'regress-task-after-the-snapshot': jheader() + jbatch(jqueue(0, b'a'),
                                                              jput(0, 1)) +
        jbatch(jtask(0, 1, 0, 0, 0)),
        'lifecycle': lifecycle,
        'snapshot-with-a-free-id': holes,
        'drop-of-a-busy-queue': jheader() + jbatch(jqueue(0, b'a'),
                                                   jput(0, 1), jdrop(0)),
        # found by fuzzing: a value for a setting the record does not name
        'regress-settings-unnamed-value': jheader() + jbatch(
            jqueue(0, b'a'), jrec(J_SETTINGS, 'IBQI', 0, 1, 3, 5)),
    }
    # the mode byte (fuzz_journal.c): 0 as they are; 1, checksums set
    for name, data in seeds.items():
        write('journal', name, b'\0' + data)
        write('journal', name + '-crc-set', b'\1' + data)
    return 2 * len(seeds)


if __name__ == '__main__':
    print('%d request inputs, %d engine programs, %d journals in %s' %
          (requests(), engines(), journals(), OUT))
