"""The journal (PROTOCOL.md "Durability"; joinqd's --journal, --fsync,
--state-dir, --check-journal, compaction): what a daemon answered survives
SIGKILL at any moment, a torn last write is cut off where it tears and
damage before it stops the daemon, compaction keeps every task while
clients run, a full disk refuses puts and nothing else, a write error
stops the daemon, and task ids never go back.

Faults come from tests/faults/fault.c, preloaded into joinqd
($JOINQ_FAULT_LIB, set by make check): while a control file exists,
fallocate fails with ENOSPC, or pwrite and fdatasync fail with EIO, or
fdatasync takes as long as the file says.

Figures worth a look (compaction stalls, recovery times) are printed as
TAP comments ("# ...") in tests/integration/test_journal.log.

The journal's format (daemon/record.c) is read here too, by a small model
that replays it record by record as joinqd does, so that a journal cut at
any byte can be compared with the state its surviving records describe.

$JOINQ_LONG=1 makes the crash test run longer (more kills); $JOINQ_SEED
picks its random moments (the seed is printed as a TAP comment).
"""
import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jqtest

BUILDDIR = os.path.abspath(os.environ.get("JOINQ_BUILDDIR") or os.getcwd())
LONG = os.environ.get("JOINQ_LONG", "") not in ("", "0")
SEED = int(os.environ.get("JOINQ_SEED") or 20261122)
JOURNAL = "joinq.journal"


def note(text):
    """A TAP comment: figures the report wants, outside the test lines."""
    for line in text.splitlines():
        sys.stdout.write("# " + line + "\n")
    sys.stdout.flush()


# ---- the journal's format, as daemon/record.c writes it -------------------

(HEADER, QUEUE, PUT, TASK, TAKE, DONE, BACK, DELAY, DEAD, NEXTID, BATCH,
 SETTINGS, PURGE, DROP) = range(1, 15)
NAMES = {HEADER: "HEADER", QUEUE: "QUEUE", PUT: "PUT", TASK: "TASK",
         TAKE: "TAKE", DONE: "DONE", BACK: "BACK", DELAY: "DELAY",
         DEAD: "DEAD", NEXTID: "NEXTID", BATCH: "BATCH",
         SETTINGS: "SETTINGS", PURGE: "PURGE", DROP: "DROP"}
MAGIC = b"joinq-journal\0"
DROPPED = 0xFFFFFFFF


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def record(payload):
    """A framed record: [u32 length][u32 CRC-32C][payload]."""
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def header_record(version=1):
    return record(bytes([HEADER]) + MAGIC + struct.pack("<I", version))


class Record:
    def __init__(self, off, size, payload):
        self.off, self.size, self.payload = off, size, payload
        self.type = payload[0]
        self.end = off + size

    def __repr__(self):
        return "%s@%d+%d" % (NAMES.get(self.type, "?"), self.off, self.size)


def records(data):
    """The sound records of a journal, from the start to the first one
    that does not frame."""
    out, off = [], 0
    while len(data) - off >= 9:
        length, crc = struct.unpack_from("<II", data, off)
        if length == 0 or length > len(data) - off - 8:
            break
        payload = data[off + 8:off + 8 + length]
        if crc32c(payload) != crc:
            break
        out.append(Record(off, 8 + length, payload))
        off += 8 + length
    return out


def batches(recs):
    """The records grouped by commit: [(BATCH record, [its records])]; a
    snapshot's records (before the first BATCH) come as (None, [...])."""
    out = []
    for r in recs:
        if r.type == BATCH:
            out.append((r, []))
        elif r.type == HEADER:
            continue
        elif not out:
            out.append((None, [r]))
        else:
            out[-1][1].append(r)
    return out


class Model:
    """The engine's state as a replay of the journal builds it (engine.c,
    engine_replay_*): queues by id (None: a free id), each a FIFO of
    [task, deliveries, item]; tasks out of their queue (in flight or
    delayed); next_id."""

    def __init__(self):
        self.queues = []               # names, by id; None: a free id
        self.fifo = []                 # by queue id
        self.out = {}                  # task -> [qid, deliveries, item, state]
        self.next_id = 1

    def note_id(self, task):
        self.next_id = max(self.next_id, task + 1)

    def apply(self, r):
        p, t = r.payload, r.type
        if t == HEADER or t == BATCH:
            return
        if t == QUEUE:
            # a new id, or a free one; an empty name: an id left free
            qid, = struct.unpack_from("<I", p, 1)
            name = p[5:].decode() or None
            if qid == len(self.queues):
                self.queues.append(None)
                self.fifo.append([])
            assert self.queues[qid] is None, r
            self.queues[qid] = name
        elif t == SETTINGS:
            qid, = struct.unpack_from("<I", p, 1)
            assert self.queues[qid] is not None, r
        elif t == PURGE:
            qid, = struct.unpack_from("<I", p, 1)
            assert self.fifo[qid], r
            self.fifo[qid] = []
        elif t == DROP:
            qid, = struct.unpack_from("<I", p, 1)
            assert not self.fifo[qid], r
            assert not any(v[0] == qid for v in self.out.values()), r
            self.queues[qid] = None
        elif t == PUT:
            qid, task = struct.unpack_from("<IQ", p, 1)
            self.fifo[qid].append([task, 0, p[13:].decode()])
            self.note_id(task)
        elif t == TASK:
            qid, task, dl, state, until = struct.unpack_from("<IQIBQ", p, 1)
            item = p[26:].decode()
            if state == 0:
                self.fifo[qid].append([task, dl, item])
            else:
                self.out[task] = [qid, dl, item,
                                  "inflight" if state == 1 else "delayed"]
            self.note_id(task)
        elif t == TAKE:
            qid, task = struct.unpack_from("<IQ", p, 1)
            head = self.fifo[qid].pop(0)
            assert head[0] == task, (r, head)
            self.out[task] = [qid, head[1] + 1, head[2], "inflight"]
        elif t == DONE:
            task, = struct.unpack_from("<Q", p, 1)
            assert self.out.pop(task)[3] == "inflight", r
        elif t == BACK:
            task, = struct.unpack_from("<Q", p, 1)
            qid, dl, item, _ = self.out.pop(task)
            self.fifo[qid].insert(0, [task, dl, item])
        elif t == DELAY:
            task, _until = struct.unpack_from("<QQ", p, 1)
            assert self.out[task][3] == "inflight", r
            self.out[task][3] = "delayed"
        elif t == DEAD:
            task, new, dqid = struct.unpack_from("<QQI", p, 1)
            qid, dl, item, state = self.out.pop(task)
            assert state == "inflight", r
            if dqid != DROPPED:
                self.fifo[dqid].append([new, 0, item])
                self.note_id(new)
        elif t == NEXTID:
            nxt, = struct.unpack_from("<Q", p, 1)
            self.next_id = max(self.next_id, nxt)
        else:
            raise AssertionError("unknown record %r" % r)

    def end(self):
        """engine_replay_end: what was in flight goes back to the head of
        its queue, the oldest (lowest id) first in line."""
        for task in sorted((t for t, v in self.out.items()
                            if v[3] == "inflight"), reverse=True):
            qid, dl, item, _ = self.out.pop(task)
            self.fifo[qid].insert(0, [task, dl, item])

    def state(self):
        """{queue: (queued [(task, deliveries, item)], delayed count)} and
        next_id, as a restarted daemon should show them."""
        delayed = {}
        for qid, _, _, st in self.out.values():
            if st == "delayed":
                delayed[qid] = delayed.get(qid, 0) + 1
        queues = {name: ([tuple(x) for x in self.fifo[qid]],
                         delayed.get(qid, 0))
                  for qid, name in enumerate(self.queues) if name}
        return queues, self.next_id


def model_of(recs, upto=None):
    """The state a replay of recs (those ending at or before upto) and its
    end gives."""
    m = Model()
    for r in recs:
        if upto is not None and r.end > upto:
            break
        m.apply(r)
    m.end()
    return m.state()


# ---- daemons on a state directory of their own ----------------------------

def journalled(*args, fsync="always", config=None, env=None):
    """A jqtest.Daemon with a journal in d.state (made in its temporary
    directory), which restart() keeps across restarts."""
    d = jqtest.Daemon(*args, config=config, env=env)
    d.state = d.path("state")
    d.old_logs = []
    d.args += ["--journal", "on", "--fsync", fsync, "--state-dir", d.state]
    return d


@contextlib.contextmanager
def running(d):
    """Like `with d:`, for a daemon that a test may kill or see exit: if
    it still runs at the end it must stop cleanly on SIGTERM; either way
    its log must be free of sanitizer reports."""
    d.start()
    ok = False
    try:
        yield d
        ok = True
    finally:
        try:
            alive = d.proc.poll() is None
            rc = d.stop()
            if ok and alive and rc != 0:
                raise AssertionError("joinqd exited with %d:\n%s"
                                     % (rc, d.log()))
        finally:
            d.errfile.close()
            d.tmp.cleanup()


def restart(d, sig=signal.SIGKILL, env=None):
    """Stops d with sig (if it runs) and starts it again on the same state
    directory (on a new port: jqtest passes -p 0).  The logs of earlier
    runs stay in d.old_logs."""
    d.stop(sig)
    d.old_logs.append(d.log())
    d.errfile.close()
    if env is not None:
        d.env = env
    return d.start()


def all_logs(d):
    return "".join(d.old_logs) + d.log()


def journal_path(d):
    return os.path.join(d.state, JOURNAL)


def journal_bytes(d):
    with open(journal_path(d), "rb") as f:
        return f.read()


fault_env = jqtest.fault_env


def run_joinqd(*args, env=None, timeout=None):
    """Runs joinqd to completion: it must exit by itself.  Returns the
    CompletedProcess (text)."""
    argv = jqtest.WRAPPER + [jqtest.JOINQD] + list(args)
    e = dict(os.environ)
    e.update(env or {})
    try:
        p = subprocess.run(argv, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, env=e,
                           timeout=timeout or jqtest.TIMEOUT)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError("joinqd %s did not exit" % " ".join(args)) \
            from ex
    for mark in jqtest.SANITIZER_MARKS:
        if mark in p.stderr:
            raise AssertionError("joinqd reported a memory error:\n" +
                                 p.stderr)
    return p


def start_on(state, *args, env=None):
    """Runs joinqd on state as a daemon would start; returns the
    CompletedProcess if it exited (within the wait), or None if it started
    (it is then stopped)."""
    argv = jqtest.WRAPPER + [jqtest.JOINQD, "-p", "0", "-b", "127.0.0.1",
                             "--journal", "on", "--state-dir", state] + \
        list(args)
    e = dict(os.environ)
    e.update(env or {})
    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, env=e)
        deadline = time.monotonic() + jqtest.TIMEOUT
        while time.monotonic() < deadline and p.poll() is None:
            err.seek(0)
            if jqtest.LISTEN_RE.search(err.read()):
                p.terminate()
                p.wait(jqtest.TIMEOUT)
                return None
            time.sleep(0.01)
        if p.poll() is None:
            p.kill()
            p.wait()
            raise AssertionError("joinqd neither started nor exited")
        err.seek(0)
        return subprocess.CompletedProcess(argv, p.returncode, "",
                                           err.read())


def qsizes(d, names):
    c = d.tcp()
    try:
        return {n: c.request({"op": "qsize", "queue": n}) for n in names}
    finally:
        c.close()


def queue_names(d):
    return sorted(d.request({"op": "stats"})["queues"])


def drain(c, queue, n):
    """n non-blocking gets in one write: [(task, deliveries, item)] of
    those that delivered.  The tasks stay in flight on c."""
    if n == 0:
        return []
    c.sock.sendall(b"".join(jqtest.encode({"op": "get", "queue": queue,
                                           "block": False})
                            for _ in range(n)))
    got = []
    for _ in range(n):
        r = c.recv()
        if r.get("ok"):
            got.append((r["task"], r["deliveries"],
                        json.dumps(r["item"], separators=(",", ":"))))
    return got


def observed_state(d, names):
    """What a daemon holds, read without changing it for good: every
    queue's queued tasks in order (drained on one connection, which then
    closes and gives them back, deliveries one higher) and delayed count.
    Returns {queue: ([(task, deliveries, item)], delayed)} once the tasks
    are back (nothing else may be in flight)."""
    out = {}
    c = d.tcp()
    try:
        for name in names:
            q = c.request({"op": "qsize", "queue": name})
            got = drain(c, name, q["qsize"])
            out[name] = ([(t, dl - 1, item) for t, dl, item in got],
                         q["delayed"])
    finally:
        c.close()
    if not jqtest.wait_until(lambda: all(
            q["inflight"] == 0 for q in qsizes(d, names).values())):
        raise AssertionError("the drained tasks did not come back")
    return out


# ---- starting joinqd on a journal ----------------------------------------

def flip(data, i, bit=0):
    b = bytearray(data)
    b[i] ^= 1 << bit
    return bytes(b)


def write_state(data):
    """A state directory of its own holding data as its journal."""
    tmp = tempfile.mkdtemp(prefix="joinq-journal-")
    state = os.path.join(tmp, "state")
    os.mkdir(state, 0o700)
    with open(os.path.join(state, JOURNAL), "wb") as f:
        f.write(data)
    return tmp, state


def compare_states(expected, observed):
    """'' when equal, else what differs."""
    diffs = []
    for name in sorted(set(expected) | set(observed)):
        e, o = expected.get(name), observed.get(name)
        if e != o:
            diffs.append("queue %s: expected %r, got %r" % (name, e, o))
    return "; ".join(diffs)


def check_start(data, recs, cut_expected, extra_args=()):
    """Starts joinqd on a copy of data and compares what it holds with
    the model of recs up to cut_expected (the offset where joinqd must cut
    the file, warning, or None when it must start cleanly on all of it).
    Returns '' or what went wrong."""
    tmp, state = write_state(data)
    upto = len(data) if cut_expected is None else cut_expected
    want, next_id = model_of(recs, upto)
    d = jqtest.Daemon("--journal", "on", "--state-dir", state,
                      *extra_args)
    started = False
    try:
        try:
            d.start()
        except RuntimeError as e:
            errors = [l for l in str(e).splitlines() if "error:" in l]
            return "did not start: %s" % (errors or
                                          str(e).strip().splitlines())[-1]
        started = True
        log = d.log()
        m = re.search(r"at offset (\d+); cut off", log)
        if cut_expected is None and m:
            return "warned of a torn tail on a whole journal: " + m.group(0)
        if cut_expected is not None:
            if not m:
                return "no warning naming the offset"
            if int(m.group(1)) != cut_expected:
                return "warned of offset %s, expected %d" % (m.group(1),
                                                             cut_expected)
            if JOURNAL not in log[:m.end()].splitlines()[-1]:
                return "the warning does not name the file"
        names = queue_names(d)
        if names != sorted(want):
            return "queues %r, expected %r" % (names, sorted(want))
        got = observed_state(d, names)
        diff = compare_states(want, got)
        if diff:
            return diff
        r = d.request({"op": "put", "queue": "probe", "item": 0})
        if r.get("task") != next_id:
            return "the next task id is %r, expected %d" % (r.get("task"),
                                                            next_id)
        return ""
    finally:
        try:
            if d.proc:
                rc = d.stop()
                if started and rc != 0:
                    return "exited %d" % rc
        finally:
            if d.proc:
                d.errfile.close()
            d.tmp.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)


def run_checks(cases, workers=3):
    """cases: [(label, data, recs, cut_expected)].  Returns the failures
    as 'label: why' lines."""
    def one(case):
        label, data, recs, cut = case
        try:
            why = check_start(data, recs, cut)
        except Exception as e:        # a failure of one case, not all
            why = "%s: %s" % (type(e).__name__, e)
        return "%s: %s" % (label, why) if why else None
    with ThreadPoolExecutor(workers) as pool:
        return [r for r in pool.map(one, cases) if r]


# ---- recovery: the journal cut or damaged -------------------------------

class Helpers(jqtest.TestCase):
    """Requests that must succeed."""

    def put(self, c, item, queue="default"):
        r = c.request({"op": "put", "queue": queue, "item": item})
        self.assertOk(r)
        return r["task"]

    def get(self, c, queue="default", **kw):
        r = c.request(dict({"op": "get", "queue": queue, "block": False},
                           **kw))
        self.assertOk(r)
        return r

    def done(self, c, task):
        r = c.request({"op": "task_done", "task": task})
        self.assertOk(r)
        return r

    def release(self, c, task, **kw):
        r = c.request(dict({"op": "release", "task": task}, **kw))
        self.assertOk(r)
        return r


class Recovery(Helpers):
    """A journal cut at every byte of its last records, or with a bit
    flipped, against the model of the records that survive."""

    def assertNoFailures(self, failures, n, what):
        if failures:
            self.fail("%d of %d %s wrong:\n%s" % (
                len(failures), n, what, "\n".join(failures[:15])))

    def make_history(self):
        """Runs a known history on a journalled daemon with max_deliveries
        2 and returns the journal it leaves after SIGKILL: puts on two
        queues, gets, task_dones, releases, a long delay, a lease, a dead
        letter, tasks left in flight, and a last batch of several records
        (one pipelined write)."""
        with running(journalled("--max-deliveries", "2")) as d:
            c1, c2, c3 = d.tcp(), d.tcp(), d.tcp()
            for i in range(1, 7):
                self.put(c1, "x%d" % i, "a")
            for i in range(1, 4):
                self.put(c1, {"y": i}, "b")
            self.done(c1, self.get(c1, "a")["task"])              # x1
            x2 = self.get(c1, "a")["task"]
            self.release(c1, x2)                                  # back
            self.assertEqual(self.get(c1, "a")["deliveries"], 2)
            self.release(c1, x2)                                  # dead
            self.assertQsize(d.qsize("a.dead"), qsize=1)
            self.release(c1, self.get(c1, "a")["task"], delay=3600)   # x3
            self.get(c2, "b", lease=3600)                         # y1
            self.get(c1, "a")                                     # x4 held
            self.put(c2, "x7", "a")
            self.done(c2, self.get(c2, "b")["task"])              # y2
            self.done(c2, self.get(c2, "a.dead")["task"])
            # a queue declared, purged and deleted; its id taken again
            # (max_deliveries 5: observed_state's gets must not reach it)
            self.assertOk(c2.request({"op": "declare", "queue": "d",
                                      "maxsize": 3, "max_deliveries": 5,
                                      "dead_letter": "a"}))
            self.put(c2, "d1", "d")
            self.put(c2, "d2", "d")
            self.assertEqual(c2.request({"op": "purge", "queue": "d"}),
                             {"ok": True, "purged": 2})
            self.assertEqual(c2.request({"op": "delete", "queue": "d"}),
                             {"ok": True, "deleted": True})
            self.put(c2, "z", "c")
            # The last batch: one write of several changes.
            burst = [{"op": "put", "queue": "a", "item": "last1"},
                     {"op": "get", "queue": "a", "block": False},
                     {"op": "put", "queue": "b", "item": {"y": "last"}},
                     {"op": "get", "queue": "b", "lease": 3600,
                      "block": False},
                     {"op": "get", "queue": "c", "block": False}]
            c3.sock.sendall(b"".join(jqtest.encode(x) for x in burst))
            for _ in burst:
                self.assertOk(c3.recv())
            d.stop(signal.SIGKILL)
            return journal_bytes(d)

    def history(self):
        if not hasattr(Recovery, "_history"):
            data = self.make_history()
            recs = records(data)
            self.assertEqual(recs[-1].end, len(data), "the journal of a "
                             "daemon killed after its replies is whole")
            Recovery._history = (data, recs)
        return Recovery._history

    def test_whole_journal_gives_the_state_it_recorded(self):
        data, recs = self.history()
        self.assertEqual(recs[0].type, HEADER)
        types = {r.type for r in recs}
        for t in (QUEUE, PUT, TAKE, DONE, BACK, DELAY, DEAD, BATCH, SETTINGS,
                  PURGE, DROP):
            self.assertIn(t, types, "the history has a %s record" % NAMES[t])
        self.assertEqual(run_checks([("whole", data, recs, None)]), [])

    def test_cut_at_every_byte_of_the_last_records(self):
        data, recs = self.history()
        last_batch = batches(recs)[-1][0]
        first = min(len(data) - 300, last_batch.off)
        self.assertGreater(first, recs[0].end)
        ends = {r.end for r in recs}
        # Every byte of the last 300 (and of the last batch); before them,
        # each record's first two bytes, its middle and its last byte.
        cuts = set(range(first, len(data)))
        for r in recs[1:]:
            if r.off < first:
                cuts |= {r.off, r.off + 1, r.off + r.size // 2, r.end - 1}
        cases = []
        for cut in sorted(cuts):
            if cut in ends:
                expect = None
            else:
                expect = max(e for e in ends if e <= cut)
            cases.append(("cut at %d" % cut, data[:cut], recs, expect))
        t0 = time.monotonic()
        failures = run_checks(cases)
        note("recovery: %d cuts (every byte from %d to %d of %d; the last "
             "batch starts at %d, %d records) in %.1f s" %
             (len(cases), first, len(data) - 1, len(data), last_batch.off,
              len(batches(recs)[-1][1]), time.monotonic() - t0))
        self.assertNoFailures(failures, len(cases), "cuts")


    def test_first_bytes_of_the_last_write_lost(self):
        # record.c: a power loss "may keep a later page of the last write
        # and lose an earlier one".  The last write's first bytes read as
        # zeros, its later records are whole: still the torn last write.
        data, recs = self.history()
        batch, inner = batches(recs)[-1]
        cases = []
        for upto in sorted({batch.off + 4, batch.end, inner[0].end,
                            inner[1].end}):
            lost = data[:batch.off] + bytes(upto - batch.off) + data[upto:]
            cases.append(("bytes %d to %d zeroed" % (batch.off, upto),
                          lost, recs, batch.off))
        failures = run_checks(cases)
        self.assertNoFailures(failures, len(cases), "lost pages")

    def test_bit_flipped_in_the_last_batch_is_a_torn_tail(self):
        # A crash (or a power loss) can only spoil the last write, the last
        # batch: any bad record in it, its BATCH record included, is cut
        # off with a warning, and joinqd starts on what is before it.
        data, recs = self.history()
        last_batch = batches(recs)[-1][0]
        cases = []
        for i in range(last_batch.off, len(data)):
            r = next(r for r in recs if r.off <= i < r.end)
            cases.append(("bit %d of byte %d (in %r)" % (i % 8, i, r),
                          flip(data, i, i % 8), recs, r.off))
        failures = run_checks(cases)
        self.assertNoFailures(failures, len(cases), "flips")

    def assertDamaged(self, data, i, recs):
        """A journal with byte i flipped: joinqd refuses it naming the file
        and the offset of the record that holds i; --check-journal says
        so; --repair cuts it there and joinqd then starts on the rest."""
        r = next(r for r in recs if r.off <= i < r.end)
        bad = flip(data, i, 3)
        tmp, state = write_state(bad)
        path = os.path.join(state, JOURNAL)
        try:
            p = start_on(state)
            self.assertIsNotNone(p, "joinqd started on a damaged journal "
                                 "(byte %d of %r flipped)" % (i, r))
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertRegex(p.stderr, r"%s.*offset %d\b" %
                             (re.escape(path), r.off))
            with open(path, "rb") as f:
                self.assertEqual(f.read(), bad, "a refused journal is left "
                                 "as it is")

            c = run_joinqd("--check-journal", "--state-dir", state)
            self.assertEqual(c.returncode, 1, c.stdout + c.stderr)
            self.assertIn("damaged", c.stdout)
            self.assertRegex(c.stdout, r"offset %d\b" % r.off)
            c = run_joinqd("--check-journal", "--repair", "--state-dir", state)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            self.assertEqual(os.path.getsize(path), r.off)
            c = run_joinqd("--check-journal", "--state-dir", state)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            self.assertIn("sound", c.stdout)
            with open(path, "rb") as f:
                repaired = f.read()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(run_checks([("repaired at %d" % r.off, repaired,
                                      recs, None)]), [])

    def test_bit_flipped_before_the_last_batch_is_damage(self):
        data, recs = self.history()
        bs = batches(recs)
        self.assertGreater(len(bs), 6)
        spots = [("the header", recs[0].off + 12)]
        for k in (1, len(bs) // 2, len(bs) - 2):
            batch, inner = bs[k]
            first = inner[0]
            spots += [
                ("batch %d: its BATCH record's length" % k, batch.off),
                ("batch %d: its BATCH record's payload" % k, batch.off + 10),
                ("batch %d: a record's length" % k, first.off + 1),
                ("batch %d: a record's CRC" % k, first.off + 5),
                ("batch %d: a record's payload" % k,
                 first.off + 8 + (first.size - 8) // 2),
                ("batch %d: its last record's last byte" % k,
                 inner[-1].end - 1),
            ]
        for what, i in spots:
            with self.subTest(flipped=what, byte=i):
                self.assertDamaged(data, i, recs)


# ---- declare, purge, delete -----------------------------------------------

class Lifecycle(Helpers):
    """PROTOCOL.md, declare: "Declared settings last as long as the queue,
    across restarts with a journal"; and what purge and delete did stays
    done: a clean restart, a SIGKILL, a compaction (a snapshot holds the
    settings and the queue ids a delete left free) then a SIGKILL."""

    def make_queues(self, d):
        c = d.tcp()
        # a: declared, then deleted with its settings, and made again
        self.assertOk(c.request({"op": "declare", "queue": "a",
                                 "maxsize": 7}))
        self.assertOk(c.request({"op": "delete", "queue": "a"}))
        # b: declared with every setting; tasks purged but one in flight
        self.assertOk(c.request({"op": "declare", "queue": "b", "maxsize": 2,
                                 "max_deliveries": 3, "dead_letter": "bad"}))
        for i in range(2):
            self.put(c, i, "b")
        held = self.get(c, "b", lease=3600)["task"]
        self.assertEqual(c.request({"op": "purge", "queue": "b"}),
                         {"ok": True, "purged": 1})
        # e1, e2: made by put, emptied and deleted after f was made: their
        # ids are free below f's, and a takes the first
        for name in ("e1", "e2"):
            t = self.put(c, name, name)
            self.done(c, self.get(c, name)["task"])
        self.assertOk(c.request({"op": "declare", "queue": "f",
                                 "max_deliveries": 0, "dead_letter": "g"}))
        for name in ("e1", "e2"):
            self.assertOk(c.request({"op": "delete", "queue": name}))
        self.assertOk(c.request({"op": "declare", "queue": "a"}))
        self.put(c, "kept", "f")
        c.close()
        return held, t

    def check(self, d, held, last, when):
        """What the queues must hold after a restart (when says which)."""
        stats = d.request({"op": "stats"})["queues"]
        self.assertEqual(set(stats), {"a", "b", "f"}, when)
        settings = {q: (stats[q]["maxsize"], stats[q]["max_deliveries"],
                        stats[q]["dead_letter"]) for q in stats}
        self.assertEqual(settings, {"a": (0, 0, "a.dead"),
                                    "b": (2, 3, "bad"),
                                    "f": (0, 0, "g")}, when)
        # the task in flight is back at the head, as after any restart
        self.assertQsize(d.qsize("b"), qsize=1, unfinished=1)
        self.assertQsize(d.qsize("f"), qsize=1)
        c = d.tcp()
        try:
            r = c.request({"op": "declare", "queue": "b", "maxsize": 2,
                           "max_deliveries": 3, "dead_letter": "bad"})
            self.assertEqual(r["created"], False, when)
            self.assertError(c.request({"op": "declare", "queue": "b",
                                        "maxsize": 3}), "conflict", when)
            self.assertError(c.request({"op": "declare", "queue": "a",
                                        "maxsize": 7}), "conflict", when)
            self.assertGreater(self.put(c, "new", "z"), max(held, last))
            self.assertOk(c.request({"op": "purge", "queue": "z"}))
            self.assertOk(c.request({"op": "delete", "queue": "z"}))
        finally:
            c.close()

    def test_settings_and_deletions_survive_restart_sigkill_and_compaction(
            self):
        config = "compact_size = 16k\ncompact_ratio = 2\n"
        with running(journalled(config=config)) as d:
            held, last = self.make_queues(d)
            restart(d, signal.SIGTERM)
            self.check(d, held, last, "after a clean restart")
            restart(d)
            self.check(d, held, last, "after SIGKILL")
            # the journal outgrows the live data: a snapshot (with the id
            # e2 left free), then a kill
            c = d.tcp()
            for n in range(40):
                self.put(c, "x" * 500, "a")
                self.done(c, self.get(c, "a")["task"])
            c.close()
            self.assertTrue(jqtest.wait_until(
                lambda: "journal: compacted" in d.log()), d.log()[-2000:])
            restart(d)
            self.check(d, held, last, "after a compaction and SIGKILL")
            self.assertNotIn("compacted", d.log())   # the snapshot read


# ---- crashes --------------------------------------------------------------

CRASH_QUEUES = ("q1", "q2")


class Ledger:
    """What the clients of the crash test know: every put they sent and
    what came of it, every task they finished, the deliveries they saw.
    Threads report here; the checks between runs read it alone."""

    def __init__(self):
        self.lock = threading.Lock()
        self.task_of = {}          # item -> task id (acknowledged or seen)
        self.item_of = {}          # task id -> item
        self.pending = set()       # items put, no reply yet
        self.unresolved = set()    # items whose put was cut by a kill
        self.vanished = set()      # ... and that recovery did not bring
        self.done = set()          # tasks finished (acknowledged)
        self.pending_done = set()  # task_done sent, no reply yet
        self.leased = set()        # tasks ever delivered with a lease
        self.deliveries = {}       # task -> most deliveries seen
        self.floor = 0             # every new id must be above it
        self.errors = []
        self.n = {"puts": 0, "gets": 0, "task_dones": 0, "releases": 0,
                  "delayed": 0, "leases": 0, "unknown_task": 0}

    def error(self, text):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(text)

    def sent_puts(self, items):
        with self.lock:
            self.pending.update(items)

    def put_reply(self, item, r):
        with self.lock:
            self.pending.discard(item)
            if not r.get("ok"):
                self.errors.append("put %s: %r" % (item, r))
                return
            t = r["task"]
            if t <= self.floor:
                self.errors.append("put %s got task %d, not above %d, the "
                                   "greatest id known before the restart"
                                   % (item, t, self.floor))
            if t in self.item_of and self.item_of[t] != item:
                self.errors.append("task id %d given to %s and %s" %
                                   (t, self.item_of[t], item))
            self.task_of[item] = t
            self.item_of[t] = item
            self.n["puts"] += 1

    def delivered(self, t, dl, item, leased):
        with self.lock:
            self.n["gets"] += 1
            if leased:
                self.leased.add(t)
                self.n["leases"] += 1
            self.deliveries[t] = max(self.deliveries.get(t, 0), dl)
            if item in self.vanished:
                self.errors.append("%s, never acknowledged and gone after a "
                                   "restart, delivered later as task %d" %
                                   (item, t))
            known = self.task_of.get(item)
            if known is None and (item in self.pending or
                                  item in self.unresolved):
                # A put whose reply was lost (or is yet to come) is in.
                self.task_of[item] = t
                self.item_of[t] = item
                self.unresolved.discard(item)
            elif known is None:
                self.errors.append("delivered an item never put: %r" % item)
            elif known != t:
                self.errors.append("%s delivered as task %d, put as %d" %
                                   (item, t, known))

    def sent_dones(self, tasks):
        with self.lock:
            self.pending_done.update(tasks)

    def done_reply(self, t, r):
        with self.lock:
            self.pending_done.discard(t)
            if r.get("ok"):
                if t in self.done:
                    self.errors.append("task %d finished twice" % t)
                self.done.add(t)
                self.n["task_dones"] += 1
            elif r.get("error") == "unknown_task" and t in self.leased:
                self.n["unknown_task"] += 1     # its lease ran out first
            else:
                self.errors.append("task_done %d: %r" % (t, r))

    def release_reply(self, t, r, delay):
        with self.lock:
            if r.get("ok"):
                self.n["releases"] += 1
                self.n["delayed"] += delay is not None
            elif r.get("error") == "unknown_task" and t in self.leased:
                self.n["unknown_task"] += 1
            else:
                self.errors.append("release %d: %r" % (t, r))

    def live(self):
        """Tasks acknowledged (or seen) and not finished."""
        return {t for t in self.item_of if t not in self.done}


def producer(port, name, stop, ledger, rng):
    try:
        c = jqtest.Conn("127.0.0.1", port)
    except OSError:
        return
    seq = 0
    try:
        while not stop.is_set():
            items, reqs = [], []
            for _ in range(rng.randint(1, 4)):     # pipelined a little
                item = "%s.%d" % (name, seq)
                seq += 1
                items.append(item)
                reqs.append({"op": "put", "queue": rng.choice(CRASH_QUEUES),
                             "item": item})
            while len(ledger.item_of) - len(ledger.done) > 300 and \
                    not stop.is_set():
                time.sleep(0.005)     # let the consumers catch up
            ledger.sent_puts(items)
            c.sock.sendall(b"".join(jqtest.encode(r) for r in reqs))
            for item in items:
                ledger.put_reply(item, c.recv(5))
    except (OSError, ConnectionError):
        pass                                        # killed
    finally:
        c.close()


def consumer(port, stop, ledger, rng):
    try:
        c = jqtest.Conn("127.0.0.1", port)
    except OSError:
        return
    try:
        while not stop.is_set():
            queue = rng.choice(CRASH_QUEUES)
            reqs = []
            for _ in range(rng.randint(1, 4)):
                r = {"op": "get", "queue": queue, "block": False}
                if rng.random() < 0.3:
                    r["lease"] = rng.choice((0.05, 0.2, 2))
                reqs.append(r)
            c.sock.sendall(b"".join(jqtest.encode(r) for r in reqs))
            got = []
            for req in reqs:
                r = c.recv(5)
                if r.get("ok"):
                    ledger.delivered(r["task"], r["deliveries"],
                                     r["item"], "lease" in req)
                    got.append(r["task"])
                elif r.get("error") != "empty":
                    ledger.error("get: %r" % r)
            if not got:
                time.sleep(0.002)
                continue
            acts = []
            for t in got:
                x = rng.random()
                if x < 0.6:
                    acts.append(("task_done", t, None))
                elif x < 0.72:
                    acts.append(("release", t, None))
                elif x < 0.85:
                    acts.append(("release", t, rng.choice((0.05, 0.15, 0.3))))
                # else kept: in flight until the lease runs out or the
                # connection goes
            if not acts:
                continue
            ledger.sent_dones([t for op, t, _ in acts if op == "task_done"])
            reqs = []
            for op, t, delay in acts:
                r = {"op": op, "task": t}
                if delay is not None:
                    r["delay"] = delay
                reqs.append(r)
            c.sock.sendall(b"".join(jqtest.encode(r) for r in reqs))
            for op, t, delay in acts:
                r = c.recv(5)
                if op == "task_done":
                    ledger.done_reply(t, r)
                else:
                    ledger.release_reply(t, r, delay)
    except (OSError, ConnectionError):
        pass
    finally:
        c.close()


class Crash(Helpers):
    def verify_after_restart(self, d, ledger, kill_no):
        """Right after a restart, before any client: the unfinished counts
        lie within what the clients can account for; then every queued
        task is read (and given back), and each acknowledged put is either
        finished or here, nothing finished is here, nothing is twice."""
        tag = "after kill %d: " % kill_no
        qs = qsizes(d, CRASH_QUEUES)
        for name, q in qs.items():
            self.assertQsize(q, inflight=0)
        u = sum(q["unfinished"] for q in qs.values())
        live = ledger.live()
        maybe_done = ledger.pending_done & live
        low = len(live) - len(maybe_done)
        high = len(live) + len(ledger.unresolved)
        self.assertTrue(low <= u <= high, tag + "%d unfinished; the clients "
                        "account for %d to %d (%d acknowledged and not "
                        "finished, %d task_dones and %d puts cut by the "
                        "kill)" % (u, low, high, len(live), len(maybe_done),
                                   len(ledger.unresolved)))
        self.assertTrue(jqtest.wait_until(
            lambda: all(q["delayed"] == 0 for q in
                        qsizes(d, CRASH_QUEUES).values())),
            tag + "delays did not end")
        c = d.tcp()
        drained = []
        for name in CRASH_QUEUES:
            drained += drain(c, name, qsizes(d, [name])[name]["qsize"])
        here = {}
        for t, dl, text in drained:
            item = json.loads(text)
            self.assertNotIn(t, here, tag + "task %d twice" % t)
            here[t] = item
            known = ledger.task_of.get(item)
            if known is None:
                self.assertIn(item, ledger.unresolved, tag + "task %d holds "
                              "%r, never put" % (t, item))
                ledger.unresolved.discard(item)
                ledger.task_of[item] = t
                ledger.item_of[t] = item
            else:
                self.assertEqual(known, t, tag + "%r came back as task %d, "
                                 "put as %d" % (item, t, known))
            self.assertNotIn(t, ledger.done, tag + "task %d (%r) was "
                             "finished, acknowledged, and came back" %
                             (t, item))
            self.assertGreaterEqual(dl - 1, ledger.deliveries.get(t, 0),
                                    tag + "task %d lost deliveries" % t)
            ledger.deliveries[t] = dl
        lost = (live - maybe_done) - set(here)
        self.assertFalse(lost, tag + "%d acknowledged tasks lost: %s" % (
            len(lost), sorted((t, ledger.item_of[t]) for t in lost)[:10]))
        # The kill's loose ends, now known.
        ledger.done |= maybe_done - set(here)
        ledger.pending_done.clear()
        ledger.vanished |= ledger.unresolved
        ledger.unresolved.clear()
        self.assertEqual(len(here), u, tag + "%d unfinished, %d tasks "
                         "queued once the delays ended" % (u, len(here)))
        ids = list(ledger.item_of) + list(here)
        ledger.floor = max(ids + [ledger.floor])
        c.close()                  # the drained tasks go back
        return len(here)

    def test_sigkill_at_random_moments(self):
        kills = 100 if LONG else 20
        rng = random.Random(SEED)
        note("crash: seed %d (JOINQ_SEED), %d kills" % (SEED, kills))
        ledger = Ledger()
        t0 = time.monotonic()
        config = "compact_size = 32k\ncompact_ratio = 2\n"
        with running(journalled(config=config)) as d:
            for kill in range(1, kills + 1):
                stop = threading.Event()
                threads = [threading.Thread(
                    target=producer, args=(d.port, "p%d.%d" % (i, kill),
                                           stop, ledger,
                                           random.Random(rng.random())))
                    for i in range(2)]
                threads += [threading.Thread(
                    target=consumer, args=(d.port, stop, ledger,
                                           random.Random(rng.random())))
                    for i in range(2)]
                for t in threads:
                    t.start()
                # Now and then at once, while the restart's own changes
                # go in; else while the clients run.
                time.sleep(rng.choice((0.0, 0.01)) if rng.random() < 0.15
                           else rng.uniform(0.05, 0.6))
                d.proc.kill()
                d.proc.wait()
                stop.set()
                for t in threads:
                    t.join(jqtest.TIMEOUT)
                    self.assertFalse(t.is_alive(), "a client hangs")
                self.assertEqual(ledger.errors, [], "after kill %d" % kill)
                with ledger.lock:
                    ledger.unresolved |= ledger.pending
                    ledger.pending.clear()
                restart(d)
                held = self.verify_after_restart(d, ledger, kill)
            log = all_logs(d)
        compactions = len(re.findall(r"journal: compacted", log))
        note("crash: %d kills in %.1f s: %d puts, %d deliveries (%d "
             "leased), %d task_dones, %d releases (%d delayed), %d "
             "unknown_task after a lease ran out, %d compactions; %d "
             "unfinished at the end; %d puts cut by a kill came back, "
             "%d did not" %
             (kills, time.monotonic() - t0, ledger.n["puts"],
              ledger.n["gets"], ledger.n["leases"], ledger.n["task_dones"],
              ledger.n["releases"], ledger.n["delayed"],
              ledger.n["unknown_task"], compactions, held,
              len(ledger.item_of) - ledger.n["puts"], len(ledger.vanished)))


# ---- compaction -------------------------------------------------------------

class Tally:
    """What the clients of a run without kills saw: exact."""

    def __init__(self):
        self.lock = threading.Lock()
        self.task_of = {}            # item -> task
        self.item_of = {}
        self.delivered = {}          # task -> deliveries seen
        self.released = {}           # task -> releases acknowledged
        self.done = {}               # task -> task_dones acknowledged
        self.put_bytes = 0           # PUT records' bytes, at the least
        self.errors = []

    def live(self):
        return len(self.item_of) - len(self.done)


def c_producer(port, name, stop, tally, rng, size=40):
    c = jqtest.Conn("127.0.0.1", port)
    seq = 0
    try:
        while not stop.is_set():
            if tally.live() > 500:
                time.sleep(0.002)
                continue
            items = []
            for _ in range(rng.randint(1, 4)):
                items.append("%s.%d.%s" % (name, seq, "x" * rng.randint(
                    0, size)))
                seq += 1
            c.sock.sendall(b"".join(jqtest.encode(
                {"op": "put", "queue": "c%d" % (len(it) % 2), "item": it})
                for it in items))
            for it in items:
                r = c.recv()
                with tally.lock:
                    if not r.get("ok"):
                        tally.errors.append("put: %r" % r)
                        continue
                    if r["task"] in tally.item_of:
                        tally.errors.append("task %d given twice" % r["task"])
                    tally.task_of[it] = r["task"]
                    tally.item_of[r["task"]] = it
                    tally.put_bytes += 8 + 13 + len(json.dumps(it))
    finally:
        c.close()


def c_consumer(port, stop, tally, rng):
    c = jqtest.Conn("127.0.0.1", port)
    try:
        while not stop.is_set():
            reqs = [{"op": "get", "queue": "c%d" % rng.randint(0, 1),
                     "block": False} for _ in range(rng.randint(1, 3))]
            c.sock.sendall(b"".join(jqtest.encode(r) for r in reqs))
            acts = []
            for _ in reqs:
                r = c.recv()
                if not r.get("ok"):
                    if r.get("error") != "empty":
                        tally.errors.append("get: %r" % r)
                    continue
                t = r["task"]
                with tally.lock:
                    n = tally.delivered[t] = tally.delivered.get(t, 0) + 1
                    if r["deliveries"] != n:
                        tally.errors.append("task %d: deliveries %d, %d seen"
                                            % (t, r["deliveries"], n))
                    if tally.task_of.get(r["item"], t) != t:
                        tally.errors.append("%r as task %d" % (r["item"], t))
                acts.append({"op": "release" if rng.random() < 0.1
                             else "task_done", "task": t})
            if not acts:
                time.sleep(0.002)
                continue
            c.sock.sendall(b"".join(jqtest.encode(a) for a in acts))
            for a in acts:
                r = c.recv()
                t = a["task"]
                with tally.lock:
                    if not r.get("ok"):
                        tally.errors.append("%s %d: %r" % (a["op"], t, r))
                    elif a["op"] == "release":
                        tally.released[t] = tally.released.get(t, 0) + 1
                    else:
                        tally.done[t] = tally.done.get(t, 0) + 1
    finally:
        c.close()


def pinger(port, stop, latencies, every=0.003):
    """Ping round trips, one every few ms: [(wall time, seconds)]."""
    c = jqtest.Conn("127.0.0.1", port)
    try:
        while not stop.is_set():
            wall, t0 = time.time(), time.monotonic()
            r = c.request({"op": "ping"})
            latencies.append((wall, time.monotonic() - t0))
            assert r["ok"]
            time.sleep(every)
    finally:
        c.close()


COMPACTED_RE = re.compile(r"journal: compacted \S+ from (\d+) to (\d+) bytes "
                          r"\(snapshot (\d+) ms, switch (\d+) ms\)")


LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) ")


def compaction_windows(log):
    """[(start, end)] wall times of the compactions the log tells of, from
    "compacting" (the fork) to "compacted" (the switch done)."""
    windows, start = [], None
    for line in log.splitlines():
        m = LOG_TIME_RE.match(line)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + \
            int(m.group(2)) / 1000
        if "journal: compacting " in line:
            start = t
        elif "journal: compacted " in line and start is not None:
            windows.append((start, t + 0.001))
            start = None
    return windows


def split_by_windows(latencies, windows, slack=0.005):
    """The pings sent during a compaction (or within slack of one), and
    the others."""
    inside, outside = [], []
    for wall, x in latencies:
        during = any(a - slack <= wall <= b + slack for a, b in windows)
        (inside if during else outside).append((wall, x))
    return inside, outside


def stall_figures(latencies):
    lat = sorted(x for _, x in latencies)
    if not lat:
        return "no pings"
    return "%d pings: median %.2f ms, p99 %.2f ms, max %.2f ms" % (
        len(lat), 1000 * lat[len(lat) // 2],
        1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1000 * lat[-1])


class Compaction(Helpers):
    def run_clients(self, d, seconds, tally, rng, producers=2, consumers=2,
                    until=None):
        """Runs the clients for seconds, then on until until() holds: a
        slow machine does less in a given time (a bound of 2 * TIMEOUT
        more against a hang)."""
        stop = threading.Event()
        latencies = []
        errors = []

        def guard(fn, *args):
            try:
                fn(*args)
            except Exception as e:           # reported by the test
                errors.append("%s: %s: %s" % (fn.__name__,
                                              type(e).__name__, e))
                stop.set()
        threads = [threading.Thread(target=guard, args=(
            c_producer, d.port, "p%d" % i, stop, tally,
            random.Random(rng.random()))) for i in range(producers)]
        threads += [threading.Thread(target=guard, args=(
            c_consumer, d.port, stop, tally, random.Random(rng.random())))
            for _ in range(consumers)]
        threads.append(threading.Thread(target=guard, args=(
            pinger, d.port, stop, latencies)))
        for t in threads:
            t.start()
        stop.wait(seconds)
        if until:
            jqtest.wait_until(lambda: stop.is_set() or until(),
                              2 * jqtest.TIMEOUT, 0.05)
        stop.set()
        for t in threads:
            t.join(jqtest.TIMEOUT)
            self.assertFalse(t.is_alive(), "a client hangs")
        self.assertEqual(errors, [])
        self.assertEqual(tally.errors, [])
        return latencies

    def test_compaction_while_clients_run(self):
        config = "compact_size = 16k\ncompact_ratio = 2\n"
        tally = Tally()
        with running(journalled(config=config)) as d:
            t0 = time.monotonic()
            latencies = self.run_clients(
                d, 3 * jqtest.SLOW, tally, random.Random(SEED),
                until=lambda: len(COMPACTED_RE.findall(d.log())) >= 3)
            took = time.monotonic() - t0
            compacted = [tuple(map(int, m)) for m in
                         COMPACTED_RE.findall(d.log())]
            self.assertGreaterEqual(len(compacted), 3, d.log()[-3000:])
            self.assertNotIn("compacting failed", d.log())
            for a, b, _, _ in compacted:
                self.assertLess(b, a, "a compaction from %d to %d bytes"
                                % (a, b))
            size = os.path.getsize(journal_path(d))
            self.assertLess(size, tally.put_bytes, "the journal (%d bytes) "
                            "holds less than the puts alone wrote (%d)" %
                            (size, tally.put_bytes))

            # Every acknowledged put finished exactly once or still here;
            # a task delivered n times was released n - 1 times (n if it
            # is still here).
            live = {t for t in tally.item_of if t not in tally.done}
            for t, n in tally.done.items():
                self.assertEqual(n, 1, "task %d finished %d times" % (t, n))
            for t, n in tally.delivered.items():
                self.assertEqual(n, tally.released.get(t, 0) +
                                 (t in tally.done), "task %d: %d deliveries, "
                                 "%d releases" % (t, n,
                                                  tally.released.get(t, 0)))
            names = queue_names(d)
            before = observed_state(d, names)
            here = {t for name in names for t, _, _ in before[name][0]}
            self.assertEqual(here, live)
            for name in names:
                for t, dl, item in before[name][0]:
                    self.assertEqual(json.loads(item), tally.item_of[t])
                    self.assertEqual(dl, tally.delivered.get(t, 0))
            self.assertTrue(jqtest.wait_until(lambda: all(
                q["inflight"] == 0 for q in qsizes(d, names).values())))

            restart(d)
            after = observed_state(d, names)
            for name in names:
                self.assertEqual(after[name][0], [(t, dl + 1, item) for
                                                  t, dl, item in
                                                  before[name][0]])
                self.assertEqual(after[name][1], before[name][1])
            snap = max(x[2] for x in compacted)
            switch = max(x[3] for x in compacted)
            inside, outside = split_by_windows(
                latencies, compaction_windows(all_logs(d)))
            note("compaction: %d compactions in %.0f s (largest from %d to "
                 "%d bytes; snapshot up to %d ms, switch up to %d ms); "
                 "%d puts, %d task_dones, %d releases" %
                 (len(compacted), took, max(compacted)[0],
                  max(compacted)[1], snap, switch, len(tally.item_of),
                  len(tally.done), sum(tally.released.values())))
            note("compaction: pings during compactions: %s; at other "
                 "times: %s" % (stall_figures(inside),
                                stall_figures(outside)))
            self.assertLess(max(x for _, x in latencies), 1.0 * jqtest.SLOW)


    def test_dead_letters_do_not_stop_compaction(self):
        # Every task goes to the dead-letter queue and is finished there:
        # nothing stays, so the journal must compact as it grows.
        config = "compact_size = 16k\ncompact_ratio = 2\n"
        with running(journalled("--max-deliveries", "1",
                                config=config)) as d:
            c = d.tcp()
            for n in range(60):
                t = self.put(c, "w" * 2000, "w")
                self.release(c, self.get(c, "w")["task"])
                dead = self.get(c, "w.dead")
                self.assertGreater(dead["task"], t)
                self.done(c, dead["task"])
            for name in ("w", "w.dead"):
                self.assertQsize(self.qsize_of(d, name), unfinished=0)
            # A compacting child starved on a busy machine lets the file
            # grow meanwhile; it shrinks at the next compaction after it.
            small = jqtest.wait_until(
                lambda: os.path.getsize(journal_path(d)) < 64 * 1024)
            size = os.path.getsize(journal_path(d))
            compacting = re.findall(r"journal: compact.*", d.log())
            self.assertTrue(compacting, "60 tasks of 2 kB came and went "
                            "and the journal, now %d bytes, never compacted"
                            % size)
            self.assertTrue(small, "the journal stays at %d bytes:\n%s"
                            % (size, "\n".join(compacting[-6:])))

    def test_sigkill_during_compaction(self):
        # The compacting child is held in fdatasync (the shim) when the
        # daemon is killed: a restart at once must find the journal whole
        # and free (no lock, no port held by the child), and the state as
        # it was.
        d = journalled(fsync="never",
                       config="compact_size = 4k\ncompact_ratio = 2\n")
        delay = d.path("delay")
        with open(delay, "w") as f:
            f.write("2000\n")
        d.env = fault_env(sync_delay=delay)
        with running(d):
            c = d.tcp()
            keep = [self.put(c, "keep%d" % n, "k") for n in range(5)]
            while "journal: compacting" not in d.log():
                self.put(c, "x" * 100)
                self.done(c, self.get(c)["task"])
            self.assertTrue(jqtest.wait_until(
                lambda: os.path.exists(journal_path(d) + ".new")))
            before = observed_state(d, ["k", "default"])
            port = d.port
            os.remove(delay)
            t0 = time.monotonic()
            restart(d)
            note("restart after SIGKILL during compaction: %.0f ms" %
                 (1000 * (time.monotonic() - t0)))
            self.assertEqual([t for t, _, _ in before["k"][0]], keep)
            after = observed_state(d, ["k", "default"])
            self.assertEqual(after["k"][0], [(t, dl + 1, i) for t, dl, i in
                                             before["k"][0]])
            self.assertEqual(after["default"], before["default"])
            # The snapshot the child left unfinished is cleared away.
            self.assertIn("removed %s.new" % journal_path(d), d.log())
            with self.assertRaises(OSError):
                jqtest.Conn("127.0.0.1", port, timeout=1)

    def test_event_loop_stall_with_a_large_state(self):
        # 20,000 queued tasks (some 9 MB live), then churn with large items
        # until the file passes twice the live data: one compaction of a
        # sizeable state, pinged every 2 ms meanwhile.
        config = "compact_size = 1m\ncompact_ratio = 2\n"
        with running(journalled(config=config)) as d:
            c = d.tcp()

            def burst(reqs):
                c.sock.sendall(b"".join(jqtest.encode(r) for r in reqs))
                return [c.recv() for _ in reqs]
            for _ in range(20):
                for r in burst([{"op": "put", "queue": "big",
                                 "item": "b" * 400}] * 1000):
                    self.assertOk(r)
            stop = threading.Event()
            latencies = []
            t = threading.Thread(target=pinger, args=(d.port, stop,
                                                      latencies, 0.002))
            t.start()
            try:
                t0 = time.monotonic()
                while not COMPACTED_RE.search(d.log()):
                    self.assertLess(time.monotonic() - t0, 30 * jqtest.SLOW,
                                    "no compaction:\n" + d.log()[-2000:])
                    got = burst([{"op": "put", "queue": "churn",
                                  "item": "c" * 2000}] * 50 +
                                [{"op": "get", "queue": "churn",
                                  "block": False}] * 50)
                    burst([{"op": "task_done", "task": r["task"]}
                           for r in got[50:]])
                time.sleep(0.1)
            finally:
                stop.set()
                t.join(jqtest.TIMEOUT)
            c.close()
            log = d.log()
            a, b, snap, switch = map(int, COMPACTED_RE.search(log).groups())
            live = re.search(r"compacting \S+ \((\d+) bytes, (\d+) live\)",
                             log)
            inside, outside = split_by_windows(latencies,
                                               compaction_windows(log))
            note("stall, large state: compacted from %d to %d bytes (%s "
                 "live; snapshot %d ms, switch %d ms); pings during the "
                 "compaction: %s; while churning before it: %s" %
                 (a, b, live.group(2) if live else "?", snap, switch,
                  stall_figures(inside), stall_figures(outside)))
            self.assertLess(b, a)
            self.assertLess(max(x for _, x in latencies), 1.0 * jqtest.SLOW)
            self.assertQsize(d.qsize("big"), qsize=20000)
            restart(d)
            self.assertQsize(d.qsize("big"), qsize=20000)
            self.assertQsize(d.qsize("churn"), qsize=0, unfinished=0)


# ---- faults -----------------------------------------------------------------

class DiskFull(Helpers):
    def test_full_disk_refuses_puts_and_nothing_else(self):
        d = journalled()
        full = d.path("full")
        d.env = fault_env(diskfull=full)
        with running(d):
            c = d.tcp()
            for x in "abcd":
                self.put(c, x)
            self.put(c, "p", "purged")
            t1 = self.get(c)["task"]
            t2 = self.get(c)["task"]
            open(full, "w").close()           # the disk is full from now
            # Space was reserved ahead: puts go in until it is used up.
            big = "x" * 200000
            for n in range(400):
                r = c.request({"op": "put", "item": big})
                if not r["ok"]:
                    break
            self.assertError(r, "unavailable")
            self.assertRegex(r["message"], "disk|space|journal")
            note("disk full: %d puts of 200 kB went in on the space reserved "
                 "ahead before the first unavailable" % n)
            before = self.qsize_of(d)
            for _ in range(20):
                self.assertError(c.request({"op": "put", "item": "more"}),
                                 "unavailable")
            # Not even a queue is made for a refused put, or declare.
            self.assertError(c.request({"op": "put", "queue": "fresh",
                                        "item": 1}), "unavailable")
            self.assertError(c.request({"op": "declare", "queue": "fresh",
                                        "maxsize": 3}), "unavailable")
            self.assertNotIn("fresh", queue_names(d))
            # A declare that changes nothing needs no room.
            self.assertOk(c.request({"op": "declare", "maxsize": 0}))
            self.assertEqual(self.qsize_of(d), before)
            # Small changes go on, and the engine's own.
            t3 = self.get(c)["task"]
            self.assertEqual(self.done(c, t1)["unfinished"],
                             before["unfinished"] - 1)
            self.release(c, t2)
            self.release(c, t3, delay=0.1)
            self.assertEqual(c.request({"op": "purge", "queue": "purged"}),
                             {"ok": True, "purged": 1})
            self.assertEqual(c.request({"op": "delete", "queue": "purged"}),
                             {"ok": True, "deleted": True})
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["delayed"] == 0))
            r = self.get(c, lease=0.05)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["inflight"] == 0))
            self.assertEqual(self.get(c)["task"], r["task"])
            log = d.log()
            self.assertEqual(log.count("cannot allocate space"), 1, log)
            self.assertNotIn("space is back", log)

            os.remove(full)                    # room again
            t0 = time.monotonic()
            while True:
                r = c.request({"op": "put", "item": "again"})
                if r["ok"] or time.monotonic() - t0 > 1.0 * jqtest.SLOW:
                    break
                self.assertError(r, "unavailable")
                time.sleep(0.01)
            self.assertOk(r, "puts refused for more than a second after "
                          "the disk had room again")
            note("disk full: puts taken again %.0f ms after the room came "
                 "back" % (1000 * (time.monotonic() - t0)))
            self.assertEqual(d.log().count("space is back"), 1)
            self.assertEqual(d.log().count("cannot allocate space"), 1)
            c.close()

            names = queue_names(d)
            self.assertTrue(jqtest.wait_until(lambda: all(
                q["inflight"] == 0 for q in qsizes(d, names).values())))
            before = observed_state(d, names)
            restart(d)
            after = observed_state(d, names)
            self.assertEqual(after, {n: ([(t, dl + 1, i) for t, dl, i in q],
                                         dly) for n, (q, dly) in
                                     before.items()})


class WriteError(Helpers):
    def eio_case(self, call, fsync="always", extra=()):
        d = journalled(*extra, fsync=fsync)
        eio = d.path("eio")
        d.env = fault_env(eio=eio, eio_only=call)
        with running(d):
            c = d.tcp()
            tasks = [self.put(c, "i%d" % n) for n in range(5)]
            self.done(c, self.get(c)["task"])
            held = self.get(c)["task"]
            open(eio, "w").close()
            c.send({"op": "put", "item": "doomed"})
            try:
                line = c.recv_line()
            except ConnectionResetError:
                line = None
            self.assertIsNone(line, "a reply for a change that was not "
                              "stored: %r" % line)
            d.proc.wait(jqtest.TIMEOUT)
            self.assertEqual(d.proc.returncode, 1, d.log())
            log = d.log()
            self.assertRegex(log, r"error: journal: cannot (write|sync) "
                             r"%s: Input/output error" %
                             re.escape(journal_path(d)))
            self.assertIn("stopping now", log)
            os.remove(eio)
            restart(d)
            q = self.qsize_of(d)
            # The acknowledged: four tasks, the held one back at the head.
            # The put that failed may be there if its write was not what
            # failed (the page cache has it), never otherwise.
            self.assertIn(q["qsize"], (4, 5) if call == "fdatasync" else (4,))
            c = d.tcp()
            got = [self.get(c) for _ in range(q["qsize"])]
            self.assertEqual([g["item"] for g in got[:4]],
                             ["i1", "i2", "i3", "i4"])
            self.assertEqual([g["task"] for g in got[:4]], tasks[1:])
            self.assertEqual(got[0]["task"], held)
            self.assertEqual(got[0]["deliveries"], 2)
            c.close()
            return log

    def test_write_error_stops_the_daemon(self):
        self.eio_case("pwrite")

    def test_sync_error_stops_the_daemon(self):
        self.eio_case("fdatasync")

    def test_sync_error_on_the_interval_timer_stops_the_daemon(self):
        # fsync=interval: replies go out once written; the timer's sync
        # fails later, and the daemon stops then.
        d = journalled("--fsync-interval", "50", fsync="interval")
        eio = d.path("eio")
        d.env = fault_env(eio=eio, eio_only="fdatasync")
        with running(d):
            c = d.tcp()
            tasks = [self.put(c, n) for n in range(3)]
            open(eio, "w").close()
            tasks.append(self.put(c, 3))        # written, not synced
            d.proc.wait(jqtest.TIMEOUT)
            self.assertEqual(d.proc.returncode, 1, d.log())
            self.assertIn("cannot sync", d.log())
            os.remove(eio)
            restart(d)
            # A daemon that stopped keeps what it wrote: the OS has it.
            c = d.tcp()
            got = [self.get(c)["task"] for _ in range(4)]
            self.assertEqual(got, tasks)
            c.close()


class CompactionSyncError(Helpers):
    """A sync that fails while the journal compacts (the snapshot's in the
    child, the snapshot's in the parent as it switches, the directory's
    after the rename) stops joinqd with exit 1, as any failed sync does:
    it is never retried, since a failed fsync may have dropped the pages
    that a later one would then call safe ("fsyncgate")."""

    def sync_fault_case(self, path, who, call):
        d = journalled(fsync="always",
                       config="compact_size = 4k\ncompact_ratio = 2\n")
        eio = d.path("eio")
        d.env = fault_env(eio=eio, eio_only=call, eio_in=who,
                          eio_path=os.path.basename(path(d)))
        with running(d):
            c = d.tcp()
            keep = [self.put(c, "keep%d" % n, "k") for n in range(5)]
            held = self.get(c, "k")
            self.assertEqual(held["task"], keep[0])
            open(eio, "w").close()
            # Tasks put and finished until a compaction starts and the
            # daemon stops; what was answered is noted.
            pending, finished, cut_off = set(), set(), set()
            deadline = time.monotonic() + jqtest.TIMEOUT
            try:
                while time.monotonic() < deadline:
                    t = self.put(c, "x" * 100)
                    pending.add(t)
                    self.assertEqual(self.get(c)["task"], t)
                    cut_off = {t}   # done or not, if its reply is cut off
                    self.done(c, t)
                    cut_off = set()
                    pending.discard(t)
                    finished.add(t)
            except ConnectionError:
                pass
            d.proc.wait(jqtest.TIMEOUT)
            log = d.log()
            self.assertEqual(d.proc.returncode, 1, log)
            self.assertIn("journal: compacting", log)
            self.assertRegex(log, r"error: journal: cannot sync %s: "
                             r"Input/output error" % re.escape(path(d)))
            self.assertIn("stopping now", log)
            self.assertNotIn("trying again", log)
            os.remove(eio)
            restart(d)
            after = observed_state(d, ["k", "default"])
            # Every answered change is there: the five kept tasks (the held
            # one back at the head), no finished task, every unfinished one.
            self.assertEqual([(t, dl) for t, dl, _ in after["k"][0]],
                             [(keep[0], 1)] + [(t, 0) for t in keep[1:]])
            left = {t for t, _, _ in after["default"][0]}
            self.assertFalse(left & finished, "finished tasks came back")
            self.assertLessEqual(pending - cut_off, left)
            # at most the put whose reply the stop cut off
            self.assertLessEqual(len(left - pending), 1)
            return log

    def test_snapshot_sync_error_in_the_child_stops_the_daemon(self):
        self.sync_fault_case(lambda d: journal_path(d) + ".new", "child",
                             "fdatasync")

    def test_snapshot_sync_error_at_the_switch_stops_the_daemon(self):
        self.sync_fault_case(lambda d: journal_path(d) + ".new", "parent",
                             "fdatasync")

    def test_directory_sync_error_after_the_rename_stops_the_daemon(self):
        self.sync_fault_case(lambda d: d.state, "parent", "fsync")


# ---- fsync policies and replies ---------------------------------------------

class Policies(Helpers):
    def test_acknowledged_changes_survive_sigkill_under_every_policy(self):
        # "never" and "interval" promise less than "always" against an OS
        # crash, but every policy writes each turn: a daemon crash loses
        # nothing acknowledged.
        for policy, extra in (("always", ()),
                              ("interval", ("--fsync-interval", "60000")),
                              ("never", ())):
            with self.subTest(fsync=policy):
                with running(journalled("--max-deliveries", "3", *extra,
                                        fsync=policy)) as d:
                    c, keep = d.tcp(), d.tcp()
                    a = [self.put(c, "a%d" % n, "a") for n in range(6)]
                    b = [self.put(c, {"b": n}, "b") for n in range(3)]
                    self.done(c, self.get(c, "a")["task"])          # a0
                    self.release(c, self.get(c, "a")["task"], delay=3600)
                    self.release(c, self.get(c, "b")["task"])       # b0 back
                    held = self.get(keep, "a")["task"]              # a2
                    leased = self.get(c, "a", lease=3600)["task"]   # a3
                    self.assertEqual((held, leased), (a[2], a[3]))
                    self.assertQsize(d.qsize("a"), qsize=2, inflight=2,
                                     delayed=1, unfinished=5)
                    restart(d)
                    self.assertQsize(d.qsize("a"), qsize=4, inflight=0,
                                     delayed=1, unfinished=5)
                    self.assertQsize(d.qsize("b"), qsize=3, unfinished=3)
                    c = d.tcp()
                    got = [self.get(c, "a") for _ in range(4)]
                    self.assertEqual([(g["task"], g["deliveries"])
                                      for g in got],
                                     [(a[2], 2), (a[3], 2), (a[4], 1),
                                      (a[5], 1)])
                    got = [self.get(c, "b") for _ in range(3)]
                    self.assertEqual([(g["task"], g["item"], g["deliveries"])
                                      for g in got],
                                     [(b[0], {"b": 0}, 2), (b[1], {"b": 1}, 1),
                                      (b[2], {"b": 2}, 1)])
                    new = self.put(c, "new", "a")
                    self.assertGreater(new, max(a + b))

    def test_reply_waits_for_the_sync(self):
        # The shim makes every fdatasync take 300 ms (scaled): under
        # fsync=always a change's reply comes after it, with the record in
        # the file; a reply that changes nothing does not wait; under
        # never, no wait.
        sync = 0.3 * jqtest.SLOW
        for policy in ("always", "never"):
            with self.subTest(fsync=policy):
                d = journalled(fsync=policy)
                delay = d.path("delay")
                d.env = fault_env(sync_delay=delay)
                with running(d):
                    c = d.tcp()
                    self.put(c, "warm")
                    with open(delay, "w") as f:
                        # rounded: 0.3 * 3 is 0.8999..., which %d makes
                        # 899 ms, less than the bound below
                        f.write("%d\n" % round(1000 * sync))
                    t0 = time.monotonic()
                    t = self.put(c, "x")
                    took_put = time.monotonic() - t0
                    ids = [struct.unpack_from("<Q", r.payload, 5)[0]
                           for r in records(journal_bytes(d))
                           if r.type == PUT]
                    self.assertIn(t, ids, "the reply came before the "
                                  "record was in the file")
                    t0 = time.monotonic()
                    g = self.get(c)
                    took_get = time.monotonic() - t0
                    t0 = time.monotonic()
                    self.assertOk(c.request({"op": "qsize"}))
                    took_qsize = time.monotonic() - t0
                    u = d.udp()
                    t0 = time.monotonic()
                    self.assertOk(u.request({"op": "put", "item": "u"}))
                    took_udp = time.monotonic() - t0
                    # ten puts in one GSO send: one batch, held as one
                    train = [jqtest.encode({"op": "put", "item": i, "id": i})
                             .rstrip(b"\n") for i in range(10, 20)]
                    t0 = time.monotonic()
                    u.send_train(train)
                    got = [u.recv() for _ in train]
                    took_train = time.monotonic() - t0
                    ids = [struct.unpack_from("<Q", r.payload, 5)[0]
                           for r in records(journal_bytes(d))
                           if r.type == PUT]
                    for r in got:
                        self.assertIn(r["task"], ids, "a UDP reply came "
                                      "before its record was in the file")
                    u.close()
                    os.remove(delay)
                    note("fsync=%s, fdatasync taking %.0f ms: put answered "
                         "in %.0f ms, get in %.0f ms, qsize in %.0f ms, a "
                         "put over UDP in %.0f ms" %
                         (policy, 1000 * sync, 1000 * took_put,
                          1000 * took_get, 1000 * took_qsize,
                          1000 * took_udp))
                    if policy == "always":
                        self.assertGreaterEqual(took_put, sync)
                        self.assertGreaterEqual(took_get, sync)
                        self.assertGreaterEqual(took_udp, sync)
                        self.assertGreaterEqual(took_train, sync)
                    else:
                        self.assertLess(took_put, sync)
                        self.assertLess(took_get, sync)
                        self.assertLess(took_udp, sync)
                        self.assertLess(took_train, sync)
                    self.assertLess(took_qsize, sync)
                    self.assertEqual(g["task"], self.put(c, "y") - 13)

    def test_group_commit(self):
        # Twenty clients put at once while fdatasync takes 200 ms (scaled):
        # the replies share a few syncs rather than taking 4 s in a row.
        sync = 0.2 * jqtest.SLOW
        d = journalled()
        delay = d.path("delay")
        d.env = fault_env(sync_delay=delay)
        with running(d):
            conns = [d.tcp() for _ in range(20)]
            with open(delay, "w") as f:
                f.write("%d\n" % round(1000 * sync))
            t0 = time.monotonic()
            for c in conns:
                c.send({"op": "put", "item": "g"})
            for c in conns:
                self.assertOk(c.recv())
            took = time.monotonic() - t0
            os.remove(delay)
            note("group commit: 20 puts answered in %.0f ms with %.0f ms "
                 "syncs" % (1000 * took, 1000 * sync))
            self.assertGreaterEqual(took, sync)
            self.assertLess(took, 7.5 * sync)
            for c in conns:
                c.close()


# ---- the state directory, --check-journal, the lock -----------------------

class StateDir(Helpers):
    def fill(self, d):
        c = d.tcp()
        for n in range(10):
            self.put(c, {"n": n}, "q%d" % (n % 3))
        self.done(c, self.get(c, "q0")["task"])
        c.close()

    def test_check_journal_on_a_sound_journal(self):
        d = journalled()
        with running(d):
            self.fill(d)
            c = run_joinqd("--check-journal", "--state-dir", d.state)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            data = journal_bytes(d)
            recs = records(data)
            self.assertRegex(c.stdout, r"^%s: sound: %d records, %d bytes; 3 "
                             r"queues, \d+ bytes of live tasks\n$" %
                             (re.escape(journal_path(d)), len(recs),
                              len(data)))
            self.assertEqual(journal_bytes(d), data, "checking changes "
                             "nothing")
            # --repair cuts only a journal that no joinqd holds.
            c = run_joinqd("--check-journal", "--repair", "--state-dir",
                           d.state)
            self.assertEqual(c.returncode, 2, c.stdout + c.stderr)
            self.assertRegex(c.stderr, "%s.*in use" %
                             re.escape(journal_path(d)))
            self.assertEqual(d.stop(), 0)
            data = journal_bytes(d)
            c = run_joinqd("--check-journal", "--repair", "--state-dir",
                           d.state)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            self.assertIn("sound", c.stdout)
            self.assertEqual(journal_bytes(d), data, "a sound journal is "
                             "not repaired")

    def test_check_journal_without_a_journal(self):
        tmp = tempfile.mkdtemp(prefix="joinq-journal-")
        try:
            for state in (tmp, os.path.join(tmp, "absent")):
                with self.subTest(state=state):
                    c = run_joinqd("--check-journal", "--state-dir", state)
                    self.assertEqual(c.returncode, 2, c.stdout + c.stderr)
                    self.assertIn(os.path.join(state, JOURNAL), c.stderr)
                    self.assertFalse(os.path.exists(os.path.join(state,
                                                                 JOURNAL)))
        finally:
            shutil.rmtree(tmp)

    def test_check_journal_on_a_torn_journal_and_repair(self):
        d = journalled()
        with running(d):
            self.fill(d)
            d.stop(signal.SIGKILL)
            data = journal_bytes(d)
            recs = records(data)
            torn = data[:-3]
            with open(journal_path(d), "wb") as f:
                f.write(torn)
            c = run_joinqd("--check-journal", "--state-dir", d.state)
            self.assertEqual(c.returncode, 1, c.stdout + c.stderr)
            self.assertIn("torn", c.stdout)
            self.assertIn("offset %d" % recs[-1].off, c.stdout)
            self.assertEqual(journal_bytes(d), torn)
            c = run_joinqd("--check-journal", "--repair", "--state-dir",
                           d.state)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            self.assertIn("cut at offset %d" % recs[-1].off, c.stdout)
            self.assertEqual(journal_bytes(d), data[:recs[-1].off])
            c = run_joinqd("--check-journal", "--state-dir", d.state)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            self.assertIn("sound", c.stdout)

    def test_second_joinqd_on_the_same_state_dir(self):
        with running(journalled()) as d:
            self.fill(d)
            p = start_on(d.state)
            self.assertIsNotNone(p, "a second joinqd started on the same "
                                 "state directory")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertRegex(p.stderr, r"%s.*in use" %
                             re.escape(journal_path(d)))
            # The first one goes on.
            self.assertQsize(self.qsize_of(d, "q1"), qsize=3)
            self.put(d.tcp(), "after", "q1")

    def test_lock_held_a_moment_by_a_dying_compaction_is_waited_for(self):
        # A compacting child of a joinqd killed a moment ago shares the
        # journal's lock until it has closed what it inherited; a restart
        # in that moment must wait for it, not refuse to start.  The test
        # holds the lock as such a child would, and lets go shortly.
        with running(journalled()) as d:
            self.fill(d)
            self.assertEqual(d.stop(), 0)
            fd = os.open(journal_path(d), os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            release = threading.Timer(0.3, os.close, [fd])
            release.start()
            try:
                p = start_on(d.state)
            finally:
                release.join()
            self.assertIsNone(p, p and p.stderr)

    def test_second_joinqd_leaves_a_running_compaction_alone(self):
        # The first joinqd is compacting (its child held in fdatasync by
        # the shim) when a second one is started on the same directory:
        # refused by the lock, the second must not touch the first one's
        # files, and the compaction ends well.
        d = journalled(fsync="never",
                       config="compact_size = 4k\ncompact_ratio = 2\n")
        delay = d.path("delay")
        with open(delay, "w") as f:
            f.write("1000\n")
        d.env = fault_env(sync_delay=delay)
        with running(d):
            c = d.tcp()
            deadline = time.monotonic() + jqtest.TIMEOUT
            while "journal: compacting" not in d.log():
                self.assertLess(time.monotonic(), deadline)
                self.put(c, "x" * 100)
                self.done(c, self.get(c)["task"])
            self.assertTrue(jqtest.wait_until(
                lambda: os.path.exists(journal_path(d) + ".new")))
            p = start_on(d.state)
            self.assertIsNotNone(p)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertTrue(jqtest.wait_until(
                lambda: "journal: compact" in d.log().split(
                    "journal: compacting", 1)[1]))
            log = d.log()
            self.assertNotIn("removed %s.new" % journal_path(d), p.stderr,
                             "the refused joinqd removed the running one's "
                             "snapshot")
            self.assertNotIn("compacting %s failed" % journal_path(d), log)
            self.assertIn("journal: compacted", log)

    def test_state_directory_is_the_default(self):
        tmp = tempfile.mkdtemp(prefix="joinq-journal-")
        try:
            first, second = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            env = {"STATE_DIRECTORY": first + ":" + second}
            with running(jqtest.Daemon("--journal", "on", env=env)) as d:
                t = self.put(d.tcp(), "kept")
                self.assertIn(os.path.join(first, JOURNAL), d.log())
            self.assertTrue(os.path.exists(os.path.join(first, JOURNAL)))
            self.assertFalse(os.path.exists(second))
            c = run_joinqd("--check-journal", env=env)
            self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
            self.assertIn(os.path.join(first, JOURNAL), c.stdout)
            with running(jqtest.Daemon("--journal", "on", env=env)) as d:
                r = d.request({"op": "get", "block": False})
                self.assertEqual((r["item"], r["task"]), ("kept", t))
            # --state-dir wins over it.
            other = os.path.join(tmp, "c")
            with running(jqtest.Daemon("--journal", "on", "--state-dir",
                                       other, env=env)) as d:
                self.assertQsize(self.qsize_of(d), qsize=0)
            self.assertTrue(os.path.exists(os.path.join(other, JOURNAL)))
        finally:
            shutil.rmtree(tmp)

    def refused(self, data, why):
        tmp, state = write_state(data)
        try:
            p = start_on(state)
            if p is None:
                self.fail("joinqd started on %s (%d bytes) and made it its "
                          "journal: the file has now %d bytes" % (
                              why, len(data), os.path.getsize(
                                  os.path.join(state, JOURNAL))))
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(os.path.join(state, JOURNAL), p.stderr)
            with open(os.path.join(state, JOURNAL), "rb") as f:
                self.assertEqual(f.read(), data, "the file was changed")
            c = run_joinqd("--check-journal", "--state-dir", state)
            self.assertEqual(c.returncode, 1, c.stdout + c.stderr)
            return p.stderr
        finally:
            shutil.rmtree(tmp)

    def test_another_format_is_refused(self):
        err = self.refused(header_record(version=2) +
                           record(bytes([QUEUE]) + b"\0\0\0\0default"),
                           "a journal of another version")
        self.assertIn("another version", err)
        err = self.refused(record(bytes([HEADER]) + b"other-format\0" +
                                  struct.pack("<I", 1)),
                           "a file of another format")
        self.assertIn("not a joinq journal", err)
        err = self.refused(record(bytes([PUT]) + bytes(12) + b'"x"'),
                           "a journal without its header")
        self.assertIn("not a joinq journal", err)

    def test_a_file_that_is_not_a_journal_is_refused(self):
        # Text or any other file where the journal should be: joinqd must
        # not take it for a torn journal and cut it to nothing.
        for what, data in (
                ("text", b"this is not a journal\n" * 50),
                ("a JSON document", json.dumps({"queues": list(range(300))})
                 .encode()),
                ("random bytes", random.Random(7).randbytes(4096))):
            with self.subTest(file=what):
                self.refused(data, what)


    def test_journal_off_keeps_nothing(self):
        d = journalled()
        d.args += ["--journal", "off"]        # the last flag wins
        with running(d):
            self.put(d.tcp(), "gone")
            self.assertFalse(os.path.exists(d.state))
            restart(d)
            self.assertQsize(self.qsize_of(d), qsize=0, unfinished=0)

    def test_journal_settings_are_checked(self):
        tmp = tempfile.mkdtemp(prefix="joinq-journal-")
        try:
            for text, key in (("compact_size = 4095\n", "compact_size"),
                              ("compact_size = 1k\n", "compact_size"),
                              ("compact_ratio = 1\n", "compact_ratio"),
                              ("fsync = sometimes\n", "fsync"),
                              ("fsync_interval = 0\n", "fsync_interval"),
                              ("journal = maybe\n", "journal")):
                with self.subTest(config=text):
                    conf = os.path.join(tmp, "joinqd.conf")
                    with open(conf, "w") as f:
                        f.write(text)
                    p = run_joinqd("-c", conf, "--state-dir", tmp)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn(key, p.stderr)
            for args in (("--fsync", "sometimes"), ("--journal", "yes"),
                         ("--fsync-interval", "0")):
                with self.subTest(args=args):
                    p = run_joinqd(*args)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn(args[0], p.stderr)
            # The smallest settings are taken.
            with open(conf, "w") as f:
                f.write("compact_size = 4k\ncompact_ratio = 2\n")
            with running(jqtest.Daemon("-c", conf, "--journal", "on",
                                       "--state-dir",
                                       os.path.join(tmp, "s"))) as d:
                self.assertOk(d.request({"op": "ping"}))
        finally:
            shutil.rmtree(tmp)


    def test_nats_settings_are_checked(self):
        """journal = nats's settings (joinqd.conf(5)): each bad value,
        in the file and as a flag, stops joinqd with exit 2 naming the
        setting; good ones start it."""
        tmp = tempfile.mkdtemp(prefix="joinq-nats-")
        try:
            readable = os.path.join(tmp, "readable")
            with open(readable, "w") as f:
                f.write("x\n")
            missing = os.path.join(tmp, "missing")
            bad = [("journal", "nats-ish"), ("journal", "NATS"),
                   ("nats_servers", "http://127.0.0.1:4222"),
                   ("nats_servers", "127.0.0.1:4222"),
                   ("nats_servers", "nats://"),
                   ("nats_servers", "nats://a:4222,tls://b:65536"),
                   ("nats_servers", "nats://a:0"),
                   ("nats_servers", "nats://a/path"),
                   ("nats_servers", "nats://[::1:4222"),
                   ("nats_servers", ","),
                   ("nats_servers", ",".join("nats://n%d" % i
                                             for i in range(33))),
                   ("nats_stream", "a.b"), ("nats_stream", "a*"),
                   ("nats_stream", "a>"), ("nats_stream", "a b"),
                   ("nats_stream", "a/b"), ("nats_stream", "x" * 33),
                   ("nats_replicas", "0"), ("nats_replicas", "6"),
                   ("nats_replicas", "three"),
                   ("failover_timeout", "0.1"), ("failover_timeout", "0"),
                   ("failover_timeout", "-1"), ("failover_timeout", "soon"),
                   ("failover_timeout", "3601"),
                   ("advertise", "db1"), ("advertise", "db1:"),
                   ("advertise", "db1:0"), ("advertise", "db1:70000"),
                   ("advertise", "::1:7477"), ("advertise", "[::1]"),
                   ("advertise", "[nope]:7477"), ("advertise", "a b:7477"),
                   ("nats_creds", missing), ("nats_tls_ca", missing),
                   ("nats_tls_cert", missing), ("nats_tls_key", missing)]
            for i, (key, value) in enumerate(bad):
                conf = os.path.join(tmp, "bad%d.conf" % i)
                with open(conf, "w") as f:
                    f.write("# journal = nats\n%s = %s\n" % (key, value))
                # a long value is shown cut, the reason after it whole
                shown = value if len(value) <= 100 else value[:100] + "..."
                why = "cannot read" if key in (
                    "nats_creds", "nats_tls_ca", "nats_tls_cert",
                    "nats_tls_key") else "expected"
                with self.subTest(config="%s = %s" % (key, value)):
                    p = run_joinqd("-c", conf, "--state-dir", tmp)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("%s:2: %s = %s: %s" % (conf, key, shown,
                                                         why), p.stderr)
                flag = "--" + key.replace("_", "-")
                with self.subTest(flag=flag, value=value):
                    p = run_joinqd(flag, value, "--state-dir", tmp)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("%s: %s: %s" % (flag, shown, why), p.stderr)
                    self.assertEqual(p.stdout, "")
            # A client certificate needs its key, and the other way round.
            for flag in ("--nats-tls-cert", "--nats-tls-key"):
                with self.subTest(alone=flag):
                    p = run_joinqd(flag, readable, "--state-dir", tmp)
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertIn("nats_tls_cert and nats_tls_key go "
                                  "together", p.stderr)
            # Good values, the smallest and largest, in the file and as
            # flags, are taken (the journal off: no NATS needed).
            conf = os.path.join(tmp, "good.conf")
            with open(conf, "w") as f:
                f.write("nats_servers = nats://u:p@nats1.example:4222, "
                        "tls://[::1]:4223,nats://10.0.0.3\n"
                        "nats_stream = Jobs_2-x\nnats_replicas = 1\n"
                        "failover_timeout = 0.2\n"
                        "advertise = [fd00::5]:7477\n"
                        "nats_creds = %s\nnats_tls_ca = %s\n"
                        "nats_tls_cert = %s\nnats_tls_key = %s\n"
                        % ((readable,) * 4))
            with running(jqtest.Daemon(
                    "-c", conf, "--nats-stream", "x" * 32,
                    "--nats-replicas", "5", "--failover-timeout", "3600",
                    "--advertise", "db-1.example.com:1",
                    "--nats-servers", "tls://nats.example:65535",
                    "--nats-creds", "", "--journal", "off")) as d:
                self.assertOk(d.request({"op": "ping"}))
        finally:
            shutil.rmtree(tmp)

    def test_nats_settings_take_effect_at_the_next_start(self):
        """A reload that changes a setting of journal = nats says it takes
        a restart, like the journal's other settings; one that changes
        none says nothing of them."""
        warning = "reload: the journal's settings take effect at the next " \
                  "start"
        conf = "nats_stream = one\nfailover_timeout = 2\n"
        with running(jqtest.Daemon(config=conf)) as d:
            path = d.path("joinqd.conf")

            def reload(text):
                with open(path, "w") as f:
                    f.write(text)
                n = d.log().count("reloaded")
                d.proc.send_signal(signal.SIGHUP)
                self.assertTrue(jqtest.wait_until(
                    lambda: d.log().count("reloaded") > n), d.log())

            reload(conf + "default_maxsize = 3\n")
            self.assertNotIn(warning, d.log())
            for i, change in enumerate((
                    "nats_stream = two\nfailover_timeout = 2\n",
                    "nats_stream = one\nfailover_timeout = 2.5\n",
                    conf + "advertise = db1:7477\n",
                    conf + "nats_servers = nats://10.0.0.1:4222\n",
                    conf + "nats_replicas = 1\n")):
                with self.subTest(change=change):
                    reload(change)
                    # the settings in effect are still the first ones
                    self.assertEqual(d.log().count(warning), i + 1)
            self.assertOk(d.request({"op": "ping"}))


class Delays(Helpers):
    def delay_across_restart(self, config=None):
        """A task released with a 1.5 s delay, the daemon killed 0.5 s
        later: after the restart it comes back 1.5 s after the release
        (the journal keeps the deadline as wall-clock time), not 1.5 s
        after the restart.  The durations scale with jqtest.SLOW, so that
        the compaction and the restart fit in them on a slow machine."""
        delay, kill_at = 1.5 * jqtest.SLOW, 0.5 * jqtest.SLOW
        with running(journalled(config=config)) as d:
            c = d.tcp()
            t = self.put(c, "later")
            self.get(c)
            released = time.monotonic()
            self.release(c, t, delay=delay)
            if config:            # a compaction writes it as a TASK record
                self.put(c, "x" * 100, "churn")
                while "journal: compacted" not in d.log():
                    self.assertLess(time.monotonic() - released,
                                    2 * kill_at)
                    self.done(c, self.get(c, "churn")["task"])
                    self.put(c, "x" * 100, "churn")
                self.assertIn(TASK, {r.type for r in
                                     records(journal_bytes(d))})
            time.sleep(max(0, kill_at - (time.monotonic() - released)))
            restart(d)
            self.assertQsize(self.qsize_of(d), qsize=0, delayed=1)
            self.assertTrue(jqtest.wait_until(
                lambda: self.qsize_of(d)["delayed"] == 0,
                timeout=delay + jqtest.TIMEOUT))
            back = time.monotonic() - released
            note("delay across a restart%s: released for %.1f s, back after "
                 "%.2f s" % (" and a compaction" if config else "", delay,
                             back))
            self.assertGreaterEqual(back, delay)
            self.assertLess(back, delay + kill_at)
            r = self.get(d.tcp())
            self.assertEqual((r["task"], r["deliveries"]), (t, 2))

    def test_delay_keeps_its_time_across_a_restart(self):
        self.delay_across_restart()

    def test_delay_keeps_its_time_across_a_compaction_and_restart(self):
        self.delay_across_restart("compact_size = 4k\ncompact_ratio = 2\n")


if __name__ == "__main__":
    jqtest.main()
